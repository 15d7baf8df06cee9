"""grain input pipelines: `make_pipeline(data_config, tokenizer=...)` -> a checkpointable iterator.

Per dataset (grain MapDataset, all random access, so everything is a function of the seed):
  array_record source -> tag records with their index -> [train] epoch-aware shuffle,
  repeat forever -> [chat with data.pack_conversations > 1: groups of that many records] ->
  decode/augment/tokenize (`tasks.ExampleProcessor`, seeded per stream index).
Then a weighted mixture over datasets (train) gives the *global* example stream; each process
reads rows [p * b, (p + 1) * b) of every global batch of B = P * b rows (`BatchSlice`), so the
global batches are the same whatever the number of processes (disjoint, covering shards), and
only the examples a process needs are decoded there. Then an IterDataset with threaded reads, optional
multiprocess prefetch (`num_workers`), and batching in `DataIterator`, which drops and counts
bad examples, stacks rows and, given a mesh, assembles global `jax.Array`s sharded over the
mesh's data axes with `jax.make_array_from_process_local_data` (multi-host ready).

Evaluation (`train=False`): one pass in stored order, no augmentation, first caption/question,
remainder that does not fill a global batch dropped; a single dataset only.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Mapping, Sequence

import grain
import numpy as np

from mmjax import batch as batch_lib
from mmjax.data import config as config_lib
from mmjax.data import datasets, mixing, tasks
from mmjax.data import tokenizers as tok_lib

# Mesh axes that split the batch: the names of parallel.py's batch rule (data/ does not import
# parallel.py, per the dependency direction in DESIGN.md).
DEFAULT_DATA_AXES = ("data", "fsdp")
_STATE_VERSION = 1


def _tag(index: int, record: Any) -> tuple[int, Any]:
  # Module-level (not a lambda) so it pickles into grain worker processes.
  return index, record


def _frames_per_media(config) -> int:
  tiles = config_lib.anyres_max_tiles(config)
  if tiles:  # AnyRes: thumbnail + tiles on the frame axis.
    return tiles
  for name, task in zip(config.datasets, config_lib.dataset_tasks(config)):
    if task in ("video", "video_qa") or (task == "interleaved" and name == "shapes_video"):
      return int(config.num_frames)
  return 1


def load_sources(config) -> dict[str, Any]:
  """Random-access sources for `config.datasets` (prepared on first use)."""
  return {name: datasets.load_source(name, config.split, **datasets.source_kwargs(config))
          for name in dict.fromkeys(config.datasets)}


def build_dataset(config, tokenizer: tok_lib.Tokenizer, *, process_index: int,
                  process_count: int, train: bool,
                  sources: Mapping[str, Sequence] | None = None) -> grain.MapDataset:
  """The per-example MapDataset of this process (rows, or bad-example markers)."""
  config_lib.validate(config)
  dataset_tasks = config_lib.dataset_tasks(config)
  for name, task in zip(config.datasets, dataset_tasks):
    tasks.check_supported(name, task)
  if not train and len(config.datasets) > 1:
    raise ValueError(f"evaluation reads one dataset at a time; data.datasets is "
                     f"{tuple(config.datasets)}")
  sources = dict(sources) if sources is not None else load_sources(config)
  frames = _frames_per_media(config)
  per_dataset = []
  for k, name in enumerate(config.datasets):
    if name not in sources:
      raise ValueError(f"no source given for dataset {name!r}")
    ds = grain.MapDataset.source(sources[name]).map_with_index(_tag)
    if len(ds) < config.batch_size and not train:
      raise ValueError(f"dataset {name!r} split {config.split!r} has {len(ds)} records, fewer "
                       f"than one global batch of data.batch_size={config.batch_size}")
    if train:
      # Shuffle before repeat: grain reshuffles each epoch with seed + epoch.
      ds = ds.shuffle(seed=(int(config.seed) * 7919 + k) % 2**32).repeat()
    pack = int(config.get("pack_conversations", 1))  # .get: configs from before the field.
    if dataset_tasks[k] == "chat" and pack > 1:
      # Consecutive records in groups: the processor packs each group into one row.
      ds = ds.batch(pack, batch_fn=list)
    ds = ds.map_with_index(tasks.ExampleProcessor(
        name, k, config, tokenizer, train=train, frames_per_media=frames,
        task=dataset_tasks[k]))
    per_dataset.append(ds)
  if len(per_dataset) == 1:
    stream = per_dataset[0]
  elif config.get("mixing", "example") == "example":
    # Weighted mixture: a deterministic interleaving in proportion to the weights.
    stream = grain.MapDataset.mix(per_dataset, [float(w) for w in config.weights])
  else:  # Whole-batch mixing (Flamingo's accumulation / round robin), see mixing.py.
    stream = mixing.BatchMixture(per_dataset, [float(w) for w in config.weights],
                                 int(config.batch_size), config.mixing)
  return BatchSlice(stream, int(config.batch_size), process_index, process_count)


class BatchSlice(grain.MapDataset):
  """This process's rows of every global batch: rows [p * b, (p + 1) * b) of each block of
  B = P * b consecutive elements (P processes, b = B / P). Of a finite parent's last, partial
  block a process keeps the rows that exist (spares for skipped bad examples)."""

  _MUTATES_ELEMENT_SPEC = False

  def __init__(self, parent: grain.MapDataset, global_batch: int, process_index: int,
               process_count: int):
    super().__init__(parent)
    if global_batch % process_count:
      raise ValueError(f"data.batch_size {global_batch} is not divisible by the "
                       f"{process_count} processes")
    self._global = global_batch
    self._local = global_batch // process_count
    self._offset = process_index * self._local
    parent_len = len(parent)
    full, rest = divmod(parent_len, global_batch)
    self._length = parent_len if parent_len >= sys.maxsize else \
        full * self._local + min(max(rest - self._offset, 0), self._local)

  def __len__(self) -> int:
    return self._length

  def _parent_index(self, index: int) -> int:
    batch, row = divmod(index, self._local)
    return batch * self._global + self._offset + row

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return self._parent[self._parent_index(index)]

  def _getitems(self, indices: Sequence[int]):
    return self._parent._getitems([self._parent_index(i) for i in indices])  # pylint: disable=protected-access

  def __str__(self) -> str:
    return f"BatchSlice(rows {self._offset}:{self._offset + self._local} of {self._global})"


class DataIterator:
  """Batches of the batch contract; `get_state`/`set_state` resume exactly (JSON-able dict)."""

  def __init__(self, dataset: grain.IterDataset, *, local_batch_size: int, on_bad_example: str,
               mesh=None, data_axes: Sequence[str] = DEFAULT_DATA_AXES,
               max_consecutive_bad: int = 1000):
    self._dataset = dataset
    self._it = iter(dataset)
    self._local_batch_size = local_batch_size
    self._policy = on_bad_example
    self._mesh = mesh
    self._data_axes = tuple(a for a in data_axes if mesh is not None and a in mesh.axis_names)
    self._max_bad = max_consecutive_bad
    self._skipped = 0
    self._batches = 0
    self._validated = False

  def __iter__(self) -> "DataIterator":
    return self

  def __next__(self) -> dict[str, Any]:
    rows, bad_run = [], 0
    while len(rows) < self._local_batch_size:
      row = next(self._it)  # StopIteration ends evaluation; a partial batch is dropped.
      if tasks.BAD_KEY in row:
        self._skipped += 1
        bad_run += 1
        if self._skipped <= 10:
          logging.warning("skipping bad example (%d so far): %s", self._skipped,
                          row[tasks.BAD_KEY])
        if bad_run > self._max_bad:
          raise RuntimeError(f"{bad_run} bad examples in a row (last: {row[tasks.BAD_KEY]}); "
                             "the data is broken, not noisy")
        continue
      bad_run = 0
      rows.append(row)
    local = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
    if not self._validated:
      batch_lib.validate_batch(local)
      self._validated = True
    self._batches += 1
    return self._globalise(local) if self._mesh is not None else local

  def _globalise(self, local: dict[str, np.ndarray]) -> dict[str, Any]:
    import jax  # pylint: disable=import-outside-toplevel
    from jax.sharding import NamedSharding, PartitionSpec  # pylint: disable=import-outside-toplevel
    spec = PartitionSpec(self._data_axes or None)
    sharding = NamedSharding(self._mesh, spec)
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}

  def get_state(self) -> dict[str, Any]:
    """The position after the last batch returned, as a JSON-serialisable dict."""
    return {"version": _STATE_VERSION, "grain": self._it.get_state(),
            "skipped": self._skipped, "batches": self._batches}

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Restores a `get_state()` result: the next batch is the one that followed it."""
    if state.get("version") != _STATE_VERSION:
      raise ValueError(f"data iterator state version {state.get('version')!r} is not "
                       f"{_STATE_VERSION}")
    self._it.set_state(state["grain"])
    self._skipped, self._batches = int(state["skipped"]), int(state["batches"])

  def stats(self) -> dict[str, int]:
    """Counters for logging: batches returned and bad examples skipped."""
    return {"batches": self._batches, "skipped": self._skipped}

  def close(self) -> None:
    """Stops prefetch workers (also done at garbage collection)."""
    close = getattr(self._it, "close", None)
    if close is not None:
      close()


def _parse_absl_flags_defensively() -> None:
  # grain's worker code reads absl flags; under pytest or a plain script nobody parsed them.
  from absl import flags  # pylint: disable=import-outside-toplevel
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def make_pipeline(data_config, *, tokenizer: tok_lib.Tokenizer, mesh=None,
                  process_index: int | None = None, process_count: int | None = None,
                  train: bool = True, sources: Mapping[str, Sequence] | None = None,
                  data_axes: Sequence[str] = DEFAULT_DATA_AXES) -> DataIterator:
  """The input pipeline of `data_config` (see `mmjax.data.config.default_data_config`).

  Args:
    data_config: the data ConfigDict.
    tokenizer: a `mmjax.data.tokenizers.Tokenizer`; `<image>` and `<|endofchunk|>` are added to it
      (after its base vocabulary) when the task needs them, so build the model's vocabulary from
      `tokenizer.vocab_size` after this call.
    mesh: when given, batches are global jax.Arrays sharded over its `data_axes`.
    process_index, process_count: this process's shard (default: jax's).
    train: shuffle/repeat/augment (True) or one deterministic pass (False).
    sources: dataset name -> random-access records, replacing the prepared tfds splits (tests).
    data_axes: mesh axes that split the batch (those absent from the mesh are ignored).
  """
  if process_index is None or process_count is None:
    import jax  # pylint: disable=import-outside-toplevel
    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
  if data_config.batch_size % process_count:
    raise ValueError(f"data.batch_size {data_config.batch_size} is not divisible by the "
                     f"{process_count} processes")
  if mesh is not None:
    shards = int(np.prod([mesh.shape[a] for a in data_axes if a in mesh.axis_names]))
    if data_config.batch_size % shards:
      raise ValueError(f"data.batch_size {data_config.batch_size} is not divisible by the "
                       f"{shards} data-parallel shards of the mesh {dict(mesh.shape)}")
  ds = build_dataset(data_config, tokenizer, process_index=process_index,
                     process_count=process_count, train=train, sources=sources)
  local_batch = data_config.batch_size // process_count
  it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=4,
                                               prefetch_buffer_size=2 * local_batch))
  if data_config.num_workers > 0:
    _parse_absl_flags_defensively()
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=int(data_config.num_workers),
        per_worker_buffer_size=int(data_config.worker_buffer_size)))
  return DataIterator(it_ds, local_batch_size=local_batch,
                      on_bad_example=data_config.on_bad_example, mesh=mesh, data_axes=data_axes)
