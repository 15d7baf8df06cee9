"""Compile time of the tiny Flamingo train step at LM depth 4 vs depth 32, layers scanned.

    python experiments/benchmarks/compile.py [--unrolled]

Each depth is lowered and compiled from scratch (no persistent cache) twice, alternating, and
the medians are compared. Target: depth 32 / depth 4 <= 1.5, i.e. compile time does not grow
with depth because `nn.scan` compiles one layer group. `--unrolled` also times the same two
depths with `scan=False`, for contrast (slow: every layer is compiled separately).
"""

from __future__ import annotations

import argparse
import statistics
import time

import _scale_common as C  # pylint: disable=wrong-import-order

TARGET = 1.5
SPEC = "configs/flamingo.py:tiny"


def compile_seconds(depth: int, scan: bool) -> tuple[float, float]:
  """(trace + lower seconds, XLA compile seconds) of the train step at this LM depth."""
  step = C.TrainStep(SPEC, [f"model.lm.depth={depth}", f"model.lm.scan={scan}"])
  start = time.perf_counter()
  lowered = step.lower()
  mid = time.perf_counter()
  lowered.compile()
  return mid - start, time.perf_counter() - mid


def measure(scan: bool, rounds: int) -> dict[int, float]:
  """Median total (lower + compile) seconds per depth, depths alternating."""
  totals: dict[int, list[float]] = {4: [], 32: []}
  for _ in range(rounds):
    for depth in totals:
      lower_s, compile_s = compile_seconds(depth, scan)
      totals[depth].append(lower_s + compile_s)
      print(f"  scan={scan} depth {depth:2d}: lower {lower_s:6.2f} s, compile {compile_s:6.2f} s")
  return {d: statistics.median(v) for d, v in totals.items()}


def main(argv=None) -> float:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--unrolled", action="store_true", help="also time scan=False")
  args = parser.parse_args(argv)
  C.jax.config.update("jax_enable_compilation_cache", False)
  scanned = measure(True, args.rounds)
  print(f"scanned: depth 4 {scanned[4]:.2f} s, depth 32 {scanned[32]:.2f} s (median lower + "
        f"compile of {SPEC} train step)")
  if args.unrolled:
    unrolled = measure(False, 1)
    print(f"unrolled: depth 4 {unrolled[4]:.2f} s, depth 32 {unrolled[32]:.2f} s "
          f"(ratio {unrolled[32] / unrolled[4]:.2f})")
  ratio = scanned[32] / scanned[4]
  print(C.verdict("compile time depth 32 / depth 4 (scanned)", ratio, f"<= {TARGET}",
                  ratio <= TARGET))
  return ratio


if __name__ == "__main__":
  main()
