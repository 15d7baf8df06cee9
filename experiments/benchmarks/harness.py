"""Shared pieces of the side-by-side benchmarks (mmjax vs a torch peer, in one process).

Import this module BEFORE jax: it fixes the thread count of both sides (XLA's CPU thread pool
is sized from XLA_FLAGS when the backend starts; torch's with `torch.set_num_threads`) and
switches XLA's oneDNN matmuls on (see `XLA_DEFAULTS`). It also puts this checkout first on
sys.path, so a benchmark measures the code next to it, not an installed copy.
Each script prints the load average at start and end: this machine is shared, and torch's
OpenMP threads suffer more than XLA's from oversubscription, so a loaded run favours mmjax.

What every benchmark does with it:
  pin_threads(n)                  both sides on the same n threads
  assert_losses_agree(a, b, ...)  the twins start from the same weights and train the same
  Timer / interleaved(...)        warm-up, then alternating rounds, median seconds per call
  report(...)                     both sides' absolute figures, then the ratio as the last line
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
import time
from typing import Any, Callable, Optional, Sequence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO_ROOT not in sys.path:
  sys.path.insert(0, REPO_ROOT)

# Threads for both sides unless a script's --threads says otherwise (this machine has 2 cores).
DEFAULT_THREADS = 2
# XLA CPU flags the benchmarks add to XLA_FLAGS. None: with jax 0.10.2 XLA already sends dots to
# YNNPACK fusions, and --xla_cpu_use_onednn=true (17% faster on older jax) changed nothing
# measurable (CLIP step 3.65 vs 3.73 CPU-s). Kept as the one place to add a flag for both sides.
XLA_DEFAULTS: tuple[str, ...] = ()


def _set_xla_flags() -> None:
  """Adds XLA_DEFAULTS to XLA_FLAGS unless the flag is already given (before jax starts)."""
  flags = os.environ.get("XLA_FLAGS", "")
  for flag in XLA_DEFAULTS:
    if flag.split("=")[0] not in flags:
      flags = f"{flags} {flag}".strip()
  os.environ["XLA_FLAGS"] = flags
  os.environ.setdefault("JAX_PLATFORMS", "cpu")


if "jax" not in sys.modules:
  _set_xla_flags()


def pin_threads(threads: int) -> None:
  """Both sides on `threads` threads: torch's intra-op pool (and its inter-op pool, when it has
  not started yet) and XLA's intra-op pool (the CPU backend starts with this count)."""
  import torch  # pylint: disable=import-outside-toplevel
  if threads < 1:
    raise ValueError(f"--threads must be >= 1, got {threads}")
  torch.set_num_threads(threads)
  try:
    torch.set_num_interop_threads(threads)
  except RuntimeError:  # already started (e.g. a second benchmark in one process)
    pass
  print(f"load average at start: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
  available = len(os.sched_getaffinity(0))
  if threads > available:
    print(f"warning: --threads {threads} exceeds the {available} cores of this process")


class LossMismatchError(AssertionError):
  """The two sides' losses differ: they do not compute the same thing, so no ratio is shown."""


def assert_losses_agree(ours: Sequence[float], theirs: Sequence[float], rtol: float,
                        what: str = "loss") -> float:
  """Raises LossMismatchError unless every step's values agree to `rtol`; returns the largest
  relative difference. Printed either way so the log shows how close the twins are."""
  if len(ours) != len(theirs) or not ours:
    raise LossMismatchError(f"{what}: {len(ours)} values vs {len(theirs)}")
  rel = [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(ours, theirs)]
  for i, (a, b, r) in enumerate(zip(ours, theirs, rel)):
    print(f"  step {i}: {what} mmjax {a:.6f}  torch {b:.6f}  rel diff {r:.1e}")
  worst = max(rel)
  if worst > rtol:
    raise LossMismatchError(f"{what} disagrees: max relative difference {worst:.2e} > {rtol:g}; "
                            "the benchmark would compare different computations")
  print(f"{what} agreement over {len(rel)} steps: max rel diff {worst:.1e} (<= {rtol:g})")
  return worst


@dataclasses.dataclass
class Timing:
  """Seconds of every timed call of one side, and the same grouped by round."""
  name: str
  seconds: list
  rounds: list = dataclasses.field(default_factory=list)

  @property
  def median(self) -> float:
    """Median seconds per call (robust to the other users of this shared machine)."""
    return statistics.median(self.seconds)

  def spread(self) -> str:
    """min / median / max, for the log."""
    return (f"min {min(self.seconds) * 1e3:.1f} ms, median {self.median * 1e3:.1f} ms, "
            f"max {max(self.seconds) * 1e3:.1f} ms over {len(self.seconds)} calls")


def interleaved(sides: dict[str, Callable[[], None]], warmup: int, steps: int,
                rounds: int) -> dict[str, Timing]:
  """Times each side's `fn()` (which must block until its work is done) `steps` times per round,
  the sides alternating round by round so load from other users hits both alike.

  Each side first runs `warmup` untimed calls (compilation, allocator warm-up).
  """
  if steps < 1 or rounds < 1:
    raise ValueError(f"--steps and --rounds must be >= 1, got {steps} and {rounds}")
  for fn in sides.values():
    for _ in range(warmup):
      fn()
  out = {name: Timing(name, []) for name in sides}
  for _ in range(rounds):
    for name, fn in sides.items():
      this_round = []
      for _ in range(steps):
        start = time.perf_counter()
        fn()
        this_round.append(time.perf_counter() - start)
      out[name].seconds.extend(this_round)
      out[name].rounds.append(this_round)
  return out


def add_train_twin_args(p) -> None:
  """The flags every train-step twin benchmark shares: AdamW settings, the agreement check
  (`agree_then_time_training`), the timing protocol, threads and seed."""
  p.add_argument("--lr", type=float, default=1e-4)
  p.add_argument("--weight_decay", type=float, default=0.1)
  p.add_argument("--check_steps", type=int, default=5, help="steps whose losses must agree")
  p.add_argument("--rtol", type=float, default=1e-4)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--steps", type=int, default=1, help="timed steps per round and side")
  p.add_argument("--rounds", type=int, default=12)
  p.add_argument("--threads", type=int, default=DEFAULT_THREADS)
  p.add_argument("--seed", type=int, default=0)


def agree_then_time_training(ours: Any, theirs: Any, args: Any, peer: str) -> dict[str, Timing]:
  """The train-step twins' protocol: `args.check_steps` steps whose losses must agree (rtol
  `args.rtol`), then interleaved timing of the following steps. `ours.step(i)` / `theirs.step(i)`
  return step i's loss; `ours.step_async(i)` dispatches it (ours keeps one step in flight, as
  the trainer does)."""
  assert_losses_agree([ours.step(i) for i in range(args.check_steps)],
                      [theirs.step(i) for i in range(args.check_steps)], args.rtol)
  counter = {"ours": args.check_steps, "theirs": args.check_steps}

  def run_ours():
    ours.step_async(counter["ours"])
    counter["ours"] += 1

  def run_theirs():
    theirs.step(counter["theirs"])
    counter["theirs"] += 1

  return interleaved({"mmjax": run_ours, peer: run_theirs}, args.warmup, args.steps, args.rounds)


def paired_ratio(ours: Timing, theirs: Timing) -> float:
  """Median over rounds of (their median / our median) within the round: adjacent rounds see
  about the same load from other users, so this is steadier than a ratio of overall medians."""
  return statistics.median(statistics.median(t) / statistics.median(o)
                           for o, t in zip(ours.rounds, theirs.rounds))


def report(ours: Timing, theirs: Timing, unit: str, work: float, peer: str,
           target: Optional[float] = None,
           profile: Optional[Callable[[], None]] = None, label: str = "") -> float:
  """Prints both sides' absolute figures (`work` units per call / median seconds), then, if
  the ratio misses `target`, says so and runs `profile()` (where the time goes), and last the
  line `ratio (mmjax / PEER)[ label]: R.RRx`. Returns the ratio of rates (ours / theirs)."""
  rate_ours, rate_theirs = work / ours.median, work / theirs.median
  tag = f" {label}" if label else ""
  print(f"mmjax{tag}: {rate_ours:.2f} {unit} ({ours.spread()})")
  print(f"{peer}{tag}: {rate_theirs:.2f} {unit} ({theirs.spread()})")
  ratio = paired_ratio(ours, theirs)
  print(f"ratio of overall medians {rate_ours / rate_theirs:.2f}x, of fastest calls "
        f"{min(theirs.seconds) / min(ours.seconds):.2f}x; paired by round (reported) "
        f"{ratio:.2f}x")
  if target is not None:
    met = ratio >= target
    print(f"target >= {target:.2f}x{tag}: {'met' if met else 'MISSED'}")
    if not met and profile is not None:
      print("profile (where the time goes):")
      profile()
  print(f"load average now: {os.getloadavg()[0]:.1f}")
  print(f"ratio (mmjax / {peer}){tag}: {ratio:.2f}x", flush=True)
  return ratio


def time_parts(parts: dict[str, Callable[[], None]], warmup: int = 1, steps: int = 3
               ) -> dict[str, float]:
  """Median seconds of each named blocking callable (the per-part profile of a step)."""
  out = {}
  for name, fn in parts.items():
    for _ in range(warmup):
      fn()
    times = []
    for _ in range(steps):
      start = time.perf_counter()
      fn()
      times.append(time.perf_counter() - start)
    out[name] = statistics.median(times)
  return out


def print_parts(ours: dict[str, float], theirs: dict[str, float], peer: str) -> None:
  """The two sides' per-part medians side by side (ms) with the ratio theirs / ours."""
  print(f"  {'part':<28}{'mmjax ms':>10}{peer + ' ms':>16}{'ratio':>8}")
  for name in ours:
    a, b = ours[name], theirs.get(name, float("nan"))
    print(f"  {name:<28}{a * 1e3:>10.1f}{b * 1e3:>16.1f}{b / a:>7.2f}x")


def rel_diff(a, b) -> float:
  """max |a - b| / max |b| of two arrays (numpy or anything np.asarray takes)."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))
