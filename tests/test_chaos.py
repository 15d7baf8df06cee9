"""kill -9 and SIGTERM at random steps, then the same command again: the resumed run's losses
(last value per step) and final parameters equal an uninterrupted run's, bit for bit, and
SIGTERM exits with train.EXIT_PREEMPTED after checkpointing its step."""

import importlib.util
import pathlib
import signal

from mmjax import train

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def _chaos_module():
  spec = importlib.util.spec_from_file_location("chaos", REPO_ROOT / "experiments" / "chaos.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_killed_and_preempted_run_is_bit_identical(tmp_path):
  chaos = _chaos_module()
  assert chaos.EXIT_PREEMPTED == train.EXIT_PREEMPTED
  result = chaos.chaos(kills=2, workroot=str(tmp_path), steps=16, every=4, seed=1,
                       signals=[signal.SIGTERM, signal.SIGKILL], log=lambda _: None)
  attempts = result["attempts"]
  assert [a["signal"] for a in attempts[:2]] == ["SIGTERM", "SIGKILL"]
  preempted, killed = attempts[0], attempts[1]
  assert preempted["rc"] == train.EXIT_PREEMPTED
  assert any(line.startswith(f"preempted at step {preempted['last_step']}; checkpoint saved")
             for line in preempted["tail"])
  # The preempted step was checkpointed: the next attempt resumes exactly there.
  assert killed["resumed"] == preempted["last_step"]
  assert killed["rc"] == -signal.SIGKILL
  assert attempts[-1]["rc"] == 0 and result["kills"] == 2 and result["resumes"] == 2
  assert result["losses_identical"] and result["params_identical"]
