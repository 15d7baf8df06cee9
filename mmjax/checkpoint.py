"""Checkpoints: the tree `{params, opt_state, step, rng, data_iter}` as named orbax items.

Every entry point (train, evaluate, convert, the reliability tools) reads this one layout:

  <workdir>/checkpoints/<step>/params      model parameters (StandardSave; sharded arrays)
                              /opt_state   optimizer state (StandardSave)
                              /step        {"step": int} (JSON)
                              /rng         the training key's raw uint32 data (StandardSave)
                              /data_iter   the grain iterator state (JSON)

Saving is asynchronous; orbax writes each step to a temporary directory and renames it when it
is complete, so a step directory that exists was written whole, and a `kill -9` during a save
leaves only a temporary directory (removed at the next start) next to the previous steps. Old
steps are deleted only after a newer one is finalised.

Restoring walks back from the newest step to the last one that loads, with a warning naming each
one it skips; the skipped (corrupt) steps are then moved to `<workdir>/checkpoints_corrupt/` so
the run can write those steps again, and kept there for inspection. A checkpoint whose parameter
tree differs from the model's is not corrupt but another model's: that raises
`CheckpointMismatchError` naming the parameter, and nothing is moved.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

from mmjax import paths

PARAMS, OPT_STATE, STEP, RNG, DATA_ITER = "params", "opt_state", "step", "rng", "data_iter"
ITEMS = (PARAMS, OPT_STATE, STEP, RNG, DATA_ITER)
SUBDIR = "checkpoints"

log = logging.getLogger(__name__)


class CheckpointMismatchError(ValueError):
  """The checkpoint belongs to another model (its parameter tree or shapes differ)."""


class NoRestorableCheckpointError(RuntimeError):
  """Checkpoints exist but none of them loads (training from scratch would overwrite them)."""


def checkpoint_dir(workdir: str) -> str:
  """Where a run's checkpoints live."""
  return os.path.join(os.path.abspath(workdir), SUBDIR)


def has_checkpoint(workdir: str) -> bool:
  """Whether `workdir` holds at least one saved step (complete or not: a directory per step)."""
  directory = checkpoint_dir(workdir)
  return os.path.isdir(directory) and any(n.isdigit() for n in os.listdir(directory))


def _empty(tree: Any) -> bool:
  return not jax.tree_util.tree_leaves(tree)


class Checkpointer:
  """A thin wrapper around `ocp.CheckpointManager` with our item names and restore policy.

  Args:
    directory: checkpoint root (usually `checkpoint_dir(workdir)`).
    keep_last: how many recent checkpoints to keep.
    keep_every: additionally keep every step that is a multiple of this (0: none).
    async_save: write in a background thread (the train loop goes on).
  """

  def __init__(self, directory: str, keep_last: int = 3, keep_every: int = 0,
               async_save: bool = True):
    self.directory = directory
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep_last, keep_period=keep_every or None, create=True,
        enable_async_checkpointing=async_save,
        # Temporary directories of saves cut short (kill -9) are removed at start-up.
        cleanup_tmp_directories=True)
    self.manager = ocp.CheckpointManager(directory, options=options, item_names=ITEMS)

  def latest_step(self) -> Optional[int]:
    """The newest complete step, or None."""
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    """Complete steps, oldest first."""
    return sorted(self.manager.all_steps())

  def save(self, step: int, params: Any, opt_state: Any, rng: jax.Array,
           data_iter: Optional[dict] = None, force: bool = False) -> bool:
    """Starts saving `step` (async); returns whether a save was started."""
    args = ocp.args.Composite(**{
        PARAMS: ocp.args.StandardSave(params),
        OPT_STATE: ocp.args.StandardSave(opt_state if not _empty(opt_state) else {}),
        STEP: ocp.args.JsonSave({"step": int(step)}),
        # As numpy: the key lives on one local device, which orbax cannot save from several
        # processes (every process holds the same key; process 0 writes it).
        RNG: ocp.args.StandardSave({"key_data": np.asarray(jax.random.key_data(rng))}),
        DATA_ITER: ocp.args.JsonSave(data_iter or {}),
    })
    return self.manager.save(int(step), args=args, force=force)

  def wait(self) -> None:
    """Blocks until pending async saves are complete."""
    self.manager.wait_until_finished()

  def restore(self, abstract_params: Any, abstract_opt_state: Any,
              step: Optional[int] = None) -> Optional[dict[str, Any]]:
    """Restores `step` (default: the newest that loads) onto the given abstract shardings.

    `abstract_*` are trees of `jax.ShapeDtypeStruct` with `.sharding` set (the target mesh may
    differ from the one that saved). Returns a dict keyed by ITEMS, or None if there is no
    checkpoint. Raises `CheckpointMismatchError` if a checkpoint holds another model's
    parameters and `NoRestorableCheckpointError` if checkpoints exist but none loads.
    """
    if step is not None:
      self.check_params_match(step, abstract_params)
      return self._restore_step(step, abstract_params, abstract_opt_state)
    steps = list(reversed(self.all_steps()))
    corrupt = []
    for s in steps:
      try:
        self.check_params_match(s, abstract_params)
        restored = self._restore_step(s, abstract_params, abstract_opt_state)
      except CheckpointMismatchError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        # Anything else that stops a step from loading (truncated or missing files, bad JSON)
        # is damage to that step: fall back to the previous one.
        log.warning("checkpoint step %d in %s does not restore (%s: %s); falling back to the "
                    "previous one", s, self.directory, type(e).__name__, str(e)[:500])
        corrupt.append(s)
        continue
      if corrupt:
        self._set_aside(corrupt)
      return restored
    if steps:
      raise NoRestorableCheckpointError(
          f"none of the checkpoint steps {sorted(steps)} in {self.directory} restores (see the "
          "warnings above); refusing to start from scratch over them. Move the directory away "
          "to start a new run.")
    return None

  def check_params_match(self, step: int, abstract_params: Any) -> None:
    """Raises `CheckpointMismatchError` naming the first parameter whose path, shape or dtype
    differs between checkpoint `step` and `abstract_params` (a tree of shapes)."""
    saved = {paths.path_str(p): (tuple(m.shape), np.dtype(m.dtype))
             for p, m in jax.tree_util.tree_leaves_with_path(self._metadata(step, PARAMS))}
    wanted = {paths.path_str(p): (tuple(x.shape), np.dtype(x.dtype))
              for p, x in jax.tree_util.tree_leaves_with_path(abstract_params)}
    where = f"checkpoint step {step} in {self.directory}"
    for name in sorted(set(saved) | set(wanted)):
      if name not in wanted:
        raise CheckpointMismatchError(
            f"{where} belongs to another model: it has parameter {name!r} {saved[name][0]} "
            "that this model does not have. Use a new --workdir for a different model.")
      if name not in saved:
        raise CheckpointMismatchError(
            f"{where} belongs to another model: this model's parameter {name!r} "
            f"{wanted[name][0]} is not in it. Use a new --workdir for a different model.")
      if saved[name] != wanted[name]:
        raise CheckpointMismatchError(
            f"{where} belongs to another model: parameter {name!r} is "
            f"{saved[name][0]} {saved[name][1]} there but {wanted[name][0]} {wanted[name][1]} "
            "in this model. Use a new --workdir for a different model.")

  def _metadata(self, step: int, item: str) -> Any:
    """The saved tree of `item` with an ArrayMetadata (shape, dtype) per leaf."""
    metadata = ocp.PyTreeCheckpointer().metadata(self._step_path(step, item))
    metadata = getattr(metadata, "item_metadata", metadata)
    return getattr(metadata, "tree", metadata)

  def _step_path(self, step: int, item: str) -> str:
    return os.path.join(self.directory, str(step), item)

  def _set_aside(self, steps: list[int]) -> None:
    """Moves corrupt steps to `<parent>/checkpoints_corrupt/<step>-<time>` (process 0 only)."""
    if jax.process_index() == 0:
      target_root = os.path.join(os.path.dirname(self.directory.rstrip("/")),
                                 SUBDIR + "_corrupt")
      os.makedirs(target_root, exist_ok=True)
      for s in steps:
        target = os.path.join(target_root, f"{s}-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.move(os.path.join(self.directory, str(s)), target)
        log.warning("moved corrupt checkpoint step %d to %s", s, target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
      multihost_utils.sync_global_devices("mmjax_checkpoint_set_aside")
    self.manager.reload()

  def _restore_step(self, step: int, abstract_params: Any, abstract_opt_state: Any) -> dict:
    args = ocp.args.Composite(**{
        PARAMS: ocp.args.StandardRestore(abstract_params),
        OPT_STATE: ocp.args.StandardRestore(
            abstract_opt_state if not _empty(abstract_opt_state) else {}),
        STEP: ocp.args.JsonRestore(),
        RNG: ocp.args.StandardRestore(),
        DATA_ITER: ocp.args.JsonRestore(),
    })
    restored = self.manager.restore(step, args=args)
    opt_state = restored[OPT_STATE] if not _empty(abstract_opt_state) else abstract_opt_state
    return {
        PARAMS: restored[PARAMS],
        OPT_STATE: opt_state,
        STEP: int(restored[STEP]["step"]),
        RNG: jax.random.wrap_key_data(np.asarray(restored[RNG]["key_data"])),
        DATA_ITER: restored[DATA_ITER] or None,
    }

  def restore_params(self, abstract_params: Any = None, step: Optional[int] = None) -> Any:
    """Only the parameters (for evaluation, conversion and init-from another run)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    if abstract_params is None:
      return self.restore_item(PARAMS, step)
    args = ocp.args.Composite(**{PARAMS: ocp.args.StandardRestore(abstract_params)})
    return self.manager.restore(step, args=args)[PARAMS]

  def restore_item(self, item: str, step: Optional[int] = None) -> Any:
    """One saved array item (PARAMS, OPT_STATE) of `step` (default: the newest), onto one local
    device whatever mesh or process count saved it (the saved sharding may name devices this
    process does not have): for evaluation, conversion and diagnostics."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree_util.tree_map(
        lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device),
        self._metadata(step, item))
    args = ocp.args.Composite(**{item: ocp.args.StandardRestore(abstract)})
    return self.manager.restore(step, args=args)[item]

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    self.manager.wait_until_finished()
    self.manager.close()
