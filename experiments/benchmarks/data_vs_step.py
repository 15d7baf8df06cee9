"""Input pipeline examples/s (`mmjax.data.bench`) vs the examples/s the tiny Flamingo train step
consumes, measured alternately in the same run.

    python experiments/benchmarks/data_vs_step.py [--rounds 2]

Target: pipeline >= 3x the step, so the step never waits for data (with headroom for the
augmentations and a busier host). The datasets are generated first if missing (not timed).
"""

from __future__ import annotations

import argparse
import statistics

import _scale_common as C  # pylint: disable=wrong-import-order

from mmjax.data import bench  # noqa: E402  pylint: disable=wrong-import-order

TARGET = 3.0
SPEC = "configs/flamingo.py:tiny"


def main(argv=None) -> float:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--batches", type=int, default=30, help="pipeline batches per round")
  parser.add_argument("--steps", type=int, default=20, help="train steps per round")
  args = parser.parse_args(argv)
  step = C.TrainStep(SPEC)
  step.run(2)  # compile + warm up
  pipe_rates, step_rates = [], []
  for _ in range(args.rounds):
    pipe_rates.append(bench.main(["--config", SPEC, "--steps", str(args.batches)]))
    seconds = C.median_seconds(lambda: step.run(1), args.steps, warmup=0)
    step_rates.append(step.batch_size / seconds)
    print(f"train step ({SPEC}, batch {step.batch_size}): {step_rates[-1]:.1f} examples/s "
          f"({1 / seconds:.2f} steps/s)")
  pipe, consumed = statistics.median(pipe_rates), statistics.median(step_rates)
  print(f"pipeline {pipe:.1f} examples/s, step {consumed:.1f} examples/s (medians of "
        f"{args.rounds} rounds)")
  ratio = pipe / consumed
  print(C.verdict("pipeline / step examples/s", ratio, f">= {TARGET}", ratio >= TARGET))
  return ratio


if __name__ == "__main__":
  main()
