"""Peak memory and step time of a train step under each remat policy.

    python experiments/benchmarks/remat.py [--spec configs/lm.py:tiny]

Memory is XLA's own: the compiled step's `memory_analysis()` (temporaries + arguments + outputs
- aliased donations), not a process measurement. Time is the median step, policies alternating
in rounds. The default is the medium LM of mfu.py with its remat field set per policy. The
issue sets no target; the last line reports what 'full' saves and costs against 'none'.
"""

from __future__ import annotations

import argparse
import statistics

import _scale_common as C  # pylint: disable=wrong-import-order

from mmjax.models import layers  # noqa: E402  pylint: disable=wrong-import-order


def peak_bytes(compiled) -> tuple[float, float]:
  """(peak bytes, temporary bytes) from XLA's memory analysis of a compiled step."""
  m = compiled.memory_analysis()
  peak = (m.temp_size_in_bytes + m.argument_size_in_bytes + m.output_size_in_bytes -
          m.alias_size_in_bytes)
  return float(peak), float(m.temp_size_in_bytes)


def main(argv=None) -> float:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--spec", default="configs/lm.py:tiny")
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--steps", type=int, default=3, help="timed steps per round and policy")
  args = parser.parse_args(argv)
  base = C.MEDIUM_LM if args.spec.startswith("configs/lm.py") else ()
  key = "model.remat" if args.spec.startswith(("configs/lm.py", "configs/clip.py")) else \
      "model.lm.remat"
  steps = {p: C.TrainStep(args.spec, [*base, f"{key}={p}"]) for p in layers.REMAT_POLICIES}
  memory, times = {}, {p: [] for p in steps}
  for policy, step in steps.items():
    memory[policy] = peak_bytes(step.compiled())
    step.run(1)  # warm up
  for _ in range(args.rounds):
    for policy, step in steps.items():
      times[policy].append(C.median_seconds(lambda s=step: s.run(1), args.steps, warmup=0))
  print(f"{args.spec} {' '.join(base)}, batch {steps['none'].batch_size}")
  print(f"{'policy':<15} {'peak MiB':>9} {'temp MiB':>9} {'ms/step':>9} {'hw GFLOP':>9}")
  for policy, step in steps.items():
    peak, temp = memory[policy]
    print(f"{policy:<15} {peak / 2**20:9.1f} {temp / 2**20:9.1f} "
          f"{statistics.median(times[policy]) * 1e3:9.1f} {step.hardware_flops() / 1e9:9.2f}")
  t = {p: statistics.median(v) for p, v in times.items()}
  saving = 1 - memory["full"][0] / memory["none"][0]
  print(f"remat 'full' vs 'none': peak memory {saving:.0%} lower, step time "
        f"x{t['full'] / t['none']:.2f}; 'dots' {1 - memory['dots'][0] / memory['none'][0]:.0%} "
        f"lower at x{t['dots'] / t['none']:.2f}")
  print(f"remat full/none peak memory: {memory['full'][0] / memory['none'][0]:.3g} (no target; "
        f"cost x{t['full'] / t['none']:.2f} step time): REPORTED")
  return saving


if __name__ == "__main__":
  main()
