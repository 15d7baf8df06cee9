"""Chaos test of resumption: kill a training run at random steps, restart it, compare.

    PYTHONPATH=. python experiments/chaos.py --kills 5

Trains `configs/clip.py:micro` (tiny data) once without interruption, then again in another
workdir while killing it `--kills` times at random steps (SIGKILL and SIGTERM mixed, each after
a random delay so some land inside an asynchronous checkpoint save), re-running the very same
command after every kill until it finishes. Then compares the per-step losses of metrics.jsonl
(the last value of each step: steps after the last checkpoint are trained again after a
resume) and the final checkpoint's parameters, bit for bit. Ends with one line:

    chaos: ... kills=5 resumes=5 identical=yes

SIGTERM'd runs must exit with train.EXIT_PREEMPTED (75) after checkpointing their step.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from typing import Callable, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXIT_PREEMPTED = 75  # mmjax.train.EXIT_PREEMPTED (not imported: this process stays JAX-free
#                      until the final comparison).
STEP_LINE = re.compile(r"^step (\d+)/(\d+)")
RESUME_LINE = re.compile(r"^resumed from checkpoint step (\d+)")


def child_env(workroot: str) -> dict[str, str]:
  """The trainer's environment: this checkout first on the path, CPU, a shared compile cache."""
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join([REPO] + [p for p in
                                               env.get("PYTHONPATH", "").split(os.pathsep) if p])
  env.setdefault("JAX_PLATFORMS", "cpu")
  # Restarts recompile the same step: cache it (inside the experiment's own directory).
  env["JAX_COMPILATION_CACHE_DIR"] = os.path.join(workroot, "compile_cache")
  env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  env["PYTHONUNBUFFERED"] = "1"
  return env


def train_command(workdir: str, data_dir: str, steps: int, every: int) -> list[str]:
  """The one command every attempt runs (the same command resumes)."""
  return [sys.executable, "-m", "mmjax.train", "--config", "configs/clip.py:micro",
          "--workdir", workdir, f"--config.total_steps={steps}",
          f"--config.checkpoint.every_steps={every}", "--config.log.every_steps=1",
          "--config.log.tensorboard=False", f"--config.data.data_dir={data_dir}",
          "--config.data.num_train=64", "--config.data.num_eval=16",
          "--config.optim.warmup_steps=2"]


def run_once(cmd: list[str], env: dict[str, str], kill_after: Optional[int] = None,
             sig: int = signal.SIGKILL, delay: float = 0.0, timeout: float = 300.0) -> dict:
  """Runs `cmd`; after its `kill_after`-th progress line, waits `delay` s and sends `sig`.

  Returns the exit code, the step it resumed from (None: fresh start), the last step it
  reported, whether the signal was sent, and the output tail.
  """
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, bufsize=1)
  deadline = time.monotonic() + timeout
  resumed, last_step, lines, sent, tail = None, 0, 0, False, []
  try:
    for line in proc.stdout:
      tail = (tail + [line.rstrip()])[-30:]
      if time.monotonic() > deadline:
        raise TimeoutError(f"{cmd} ran over {timeout}s")
      m = RESUME_LINE.match(line)
      if m:
        resumed = int(m.group(1))
      m = STEP_LINE.match(line)
      if m:
        last_step, lines = int(m.group(1)), lines + 1
        if kill_after is not None and not sent and lines >= kill_after:
          time.sleep(delay)
          proc.send_signal(sig)
          sent = True
    rc = proc.wait(timeout=max(deadline - time.monotonic(), 1))
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  return {"rc": rc, "resumed": resumed, "last_step": last_step, "sent": sent, "tail": tail}


def final_losses(workdir: str) -> dict[int, float]:
  """Step -> loss, the last value logged for each step (re-trained steps overwrite)."""
  from mmjax import metric_writers  # pylint: disable=import-outside-toplevel
  return {row["step"]: row["loss"] for row in metric_writers.read_metrics(workdir)
          if "loss" in row}


def final_params_equal(a: str, b: str) -> bool:
  """Whether the newest checkpoints of two workdirs hold bit-identical parameters."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from mmjax import checkpoint as ckpt_lib  # pylint: disable=import-outside-toplevel
  pa = ckpt_lib.Checkpointer(ckpt_lib.checkpoint_dir(a), async_save=False).restore_params()
  pb = ckpt_lib.Checkpointer(ckpt_lib.checkpoint_dir(b), async_save=False).restore_params()
  if jax.tree_util.tree_structure(pa) != jax.tree_util.tree_structure(pb):
    return False
  return all(np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree_util.tree_leaves(pa), jax.tree_util.tree_leaves(pb)))


def chaos(kills: int, workroot: str, steps: int = 40, every: int = 5, seed: int = 0,
          signals: Optional[list[int]] = None, log: Callable[[str], None] = print) -> dict:
  """Straight run, then a run killed `kills` times; returns the comparison and the attempts.

  `signals` fixes the signal of each kill (default: a random SIGKILL/SIGTERM mix that contains
  both when kills >= 2).
  """
  rng = random.Random(seed)
  if signals is None:
    signals = [rng.choice([signal.SIGKILL, signal.SIGTERM]) for _ in range(kills)]
    if kills >= 2 and len(set(signals)) == 1:
      signals[rng.randrange(kills)] = ({signal.SIGKILL, signal.SIGTERM} - set(signals)).pop()
  env = child_env(workroot)
  data_dir = os.path.join(workroot, "data")
  straight, chaotic = os.path.join(workroot, "straight"), os.path.join(workroot, "chaos")
  t0 = time.monotonic()
  log(f"chaos: uninterrupted run of {steps} steps ...")
  ref = run_once(train_command(straight, data_dir, steps, every), env)
  if ref["rc"] != 0:
    raise RuntimeError("uninterrupted run failed:\n" + "\n".join(ref["tail"]))
  cmd = train_command(chaotic, data_dir, steps, every)
  attempts = []
  for i, sig in enumerate(signals):
    # Kill after 1..2*every steps of this attempt (so before or after its next checkpoint),
    # plus a random delay that may land inside the step or the asynchronous save.
    kill_after = rng.randint(1, 2 * every)
    delay = rng.uniform(0.0, 0.1)
    out = run_once(cmd, env, kill_after=kill_after, sig=sig, delay=delay)
    out.update(signal=signal.Signals(sig).name, kill_after=kill_after)
    attempts.append(out)
    log(f"chaos: attempt {i + 1}: resumed from {out['resumed']}, {out['signal']} after "
        f"{kill_after} steps (+{delay:.2f}s), exit code {out['rc']}, last step "
        f"{out['last_step']}")
    if out["rc"] == 0:
      break  # finished before the signal took effect; the remaining kills cannot happen
  restarts = 0
  while attempts[-1]["rc"] != 0:
    out = run_once(cmd, env)
    out.update(signal=None, kill_after=None)
    attempts.append(out)
    restarts += 1
    log(f"chaos: resume {restarts}: resumed from {out['resumed']}, exit code {out['rc']}")
    if out["rc"] not in (0, EXIT_PREEMPTED) or restarts > 3:
      raise RuntimeError("resumed run failed:\n" + "\n".join(out["tail"]))
  n_kills = sum(1 for a in attempts if a["signal"] and a["sent"] and a["rc"] != 0)
  n_resumes = len(attempts) - 1
  codes_ok = all((a["rc"] == -signal.SIGKILL) if a["signal"] == "SIGKILL" else
                 (a["rc"] in (EXIT_PREEMPTED, 0)) for a in attempts if a["signal"])
  losses_ok = final_losses(straight) == final_losses(chaotic)
  params_ok = final_params_equal(straight, chaotic)
  return {"kills": n_kills, "resumes": n_resumes, "losses_identical": losses_ok,
          "params_identical": params_ok, "exit_codes_ok": codes_ok,
          "identical": losses_ok and params_ok, "attempts": attempts,
          "seconds": time.monotonic() - t0}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--kills", type=int, default=5)
  parser.add_argument("--steps", type=int, default=40)
  parser.add_argument("--every", type=int, default=5, help="checkpoint every N steps")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--workroot", default=None, help="default: a fresh temporary directory")
  args = parser.parse_args(argv)
  workroot = args.workroot or tempfile.mkdtemp(prefix="mmjax_chaos_")
  os.makedirs(workroot, exist_ok=True)
  if REPO not in sys.path:
    sys.path.insert(0, REPO)
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  result = chaos(args.kills, workroot, args.steps, args.every, args.seed)
  print(f"chaos: {result['seconds']:.0f}s in {workroot}; losses "
        f"{'identical' if result['losses_identical'] else 'DIFFER'}, final params "
        f"{'identical' if result['params_identical'] else 'DIFFER'}, exit codes "
        f"{'as documented' if result['exit_codes_ok'] else 'WRONG'}; "
        f"kills={result['kills']} resumes={result['resumes']} "
        f"identical={'yes' if result['identical'] and result['exit_codes_ok'] else 'no'}")
  return 0 if result["identical"] and result["exit_codes_ok"] else 1


if __name__ == "__main__":
  sys.exit(main())
