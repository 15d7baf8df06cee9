"""Preemption: turn SIGTERM into "checkpoint this step, then exit with EXIT_PREEMPTED".

A preemptible VM (or a scheduler) sends SIGTERM and kills the process some seconds later. The
trainer asks `PreemptionGuard.should_stop(step)` after every step; once it says yes, the trainer
saves the current step and raises `Preempted`, and the CLI exits with `EXIT_PREEMPTED` (75,
EX_TEMPFAIL: "temporary failure, run me again"). A watchdog bounds the time between the signal
and the exit: if saving hangs past `grace_s`, the process exits with the same code anyway (the
previous complete checkpoint is intact, so resuming is still correct).

With several processes, every process must stop at the same step (saving is collective), so the
decision comes from JAX's preemption sync manager, which the coordination service runs once
`jax.distributed.initialize` is called (it listens to SIGTERM itself).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Optional

import jax

# sysexits.h EX_TEMPFAIL: the run was preempted after checkpointing; run the same command again.
EXIT_PREEMPTED = 75

log = logging.getLogger(__name__)


class Preempted(Exception):
  """Raised by the trainer after it checkpointed `step` in response to SIGTERM."""

  def __init__(self, step: int):
    super().__init__(f"preempted (SIGTERM); checkpointed step {step}; run the same command to "
                     "resume")
    self.step = step


class PreemptionGuard:
  """Context manager that records SIGTERM (single process) and answers `should_stop(step)`.

  Args:
    grace_s: seconds after the signal before the watchdog exits the process with
      EXIT_PREEMPTED even if the checkpoint is not written yet (0: no watchdog).
  """

  def __init__(self, grace_s: float = 120.0):
    self.grace_s = grace_s
    self._event = threading.Event()
    self._previous = None
    self._installed = False
    self._multi = jax.process_count() > 1

  def __enter__(self) -> "PreemptionGuard":
    # Python signal handlers can only be installed from the main thread; in other threads
    # (some test runners) and with several processes (JAX's own handler) we leave SIGTERM be.
    if not self._multi and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_signal)
      self._installed = True
    return self

  def __exit__(self, *exc) -> None:
    if self._installed:
      signal.signal(signal.SIGTERM, self._previous)
      self._installed = False

  def _on_signal(self, signum, frame) -> None:  # pylint: disable=unused-argument
    # Only set a flag here: the handler runs between bytecodes of the main thread, which may be
    # inside orbax or grain; the train loop acts on the flag at the next step boundary.
    if self._event.is_set():
      return
    self._event.set()
    log.warning("SIGTERM received: checkpointing at the next step boundary, then exiting with "
                "code %d", EXIT_PREEMPTED)
    if self.grace_s > 0:
      timer = threading.Timer(self.grace_s, _hard_exit, args=(self.grace_s,))
      timer.daemon = True
      timer.start()

  def request(self) -> None:
    """Asks for a stop as if SIGTERM had arrived (tests, schedulers with other signals)."""
    self._on_signal(signal.SIGTERM, None)

  def should_stop(self, step: int) -> bool:
    """Whether to checkpoint `step` and stop (the same answer on every process)."""
    if self._multi:
      from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
      return bool(multihost_utils.reached_preemption_sync_point(step))
    return self._event.is_set()


def _hard_exit(grace_s: Optional[float]) -> None:
  log.error("checkpoint after SIGTERM not finished within %ss; exiting with code %d (the "
            "previous complete checkpoint is intact)", grace_s, EXIT_PREEMPTED)
  logging.shutdown()
  os._exit(EXIT_PREEMPTED)  # pylint: disable=protected-access
