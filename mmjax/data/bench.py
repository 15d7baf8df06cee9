"""Throughput of the training input pipeline, in examples/s.

  python -m mmjax.data.bench --config configs/flamingo.py:tiny
  python -m mmjax.data.bench --dataset shapes --task caption --batch_size 32 --image_size 64

With --config, the file's `get_config(arg)` must return a config with a `data` field (a data
config as from `mmjax.data.config.default_data_config`); the other flags then override it.
The datasets are prepared first (not timed); the first --warmup batches are not timed either.
"""

from __future__ import annotations

import argparse
import time

from mmjax import config_lib as run_configs
from mmjax.data import config as config_lib
from mmjax.data import pipeline, tokenizers


def load_config_file(spec: str):
  """`path.py:arg` -> get_config(arg).data, loaded as the trainer loads it (mmjax.config_lib)."""
  cfg = run_configs.load_config(spec)
  if "data" not in cfg:
    raise ValueError(f"--config {spec}: the config has no 'data' field")
  return cfg.data


def parse_args(argv=None) -> argparse.Namespace:
  """Command-line flags (argparse: grain workers re-import this module, absl flags would not be
  parsed there)."""
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--config", help="configs/<family>.py:<preset> with a `data` field")
  p.add_argument("--dataset", help="comma-separated dataset names (equal weights)")
  p.add_argument("--task", choices=config_lib.TASKS)
  p.add_argument("--batch_size", type=int)
  p.add_argument("--image_size", type=int)
  p.add_argument("--num_workers", type=int)
  p.add_argument("--num_train", type=int)
  p.add_argument("--data_dir")
  p.add_argument("--tokenizer")
  p.add_argument("--steps", type=int, default=30, help="timed batches")
  p.add_argument("--warmup", type=int, default=3, help="untimed batches first")
  return p.parse_args(argv)


def main(argv=None) -> float:
  """Runs the benchmark; prints and returns examples/s."""
  args = parse_args(argv)
  data = load_config_file(args.config) if args.config else config_lib.default_data_config()
  data = data.copy_and_resolve_references()
  data.unlock()
  if args.dataset:
    data.datasets = tuple(args.dataset.split(","))
    data.weights = (1.0,) * len(data.datasets)
  for field in ("task", "batch_size", "image_size", "num_workers", "num_train", "data_dir",
                "tokenizer"):
    if getattr(args, field) is not None:
      data[field] = getattr(args, field)
  if args.task == "video" and not args.dataset:
    data.datasets, data.weights = ("shapes_video",), (1.0,)
  config_lib.validate(data)
  tok = tokenizers.get_tokenizer(data.tokenizer, **(
      {"data_dir": data.data_dir} if data.tokenizer in ("shapes_sp", "text_sp", "gpt2") else {}))
  pipeline.load_sources(data)  # Prepare datasets outside the timed region.
  it = pipeline.make_pipeline(data, tokenizer=tok, process_index=0, process_count=1)
  for _ in range(args.warmup):
    next(it)
  start = time.perf_counter()
  for _ in range(args.steps):
    next(it)
  seconds = time.perf_counter() - start
  it.close()
  rate = args.steps * data.batch_size / seconds
  print(f"datasets={','.join(data.datasets)} task={data.task} batch={data.batch_size} "
        f"image={data.image_size}px workers={data.num_workers}: {rate:.1f} examples/s "
        f"({args.steps / seconds:.2f} batches/s)")
  return rate


if __name__ == "__main__":
  main()
