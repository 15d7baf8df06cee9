"""Metrics out of a run: JSON lines (`metrics.jsonl`) and TensorBoard event files in the workdir,
plus the one-line progress report (steps/s, examples/s, ETA, MFU).

Only process 0 writes; other processes get a writer that drops everything.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Mapping, Optional

import numpy as np


def _scalar(value: Any) -> Optional[float]:
  try:
    value = float(np.asarray(value))
  except (TypeError, ValueError):
    return None
  return value


class MetricWriter:
  """Appends `{"step": s, "name": value, ...}` lines to metrics.jsonl and TensorBoard scalars."""

  def __init__(self, workdir: str, enabled: bool = True, tensorboard: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._tb = None
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      _drop_partial_last_line(self.path)
      if tensorboard:
        from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, metrics: Mapping[str, Any]) -> None:
    """Records scalar metrics for `step` (non-scalars are skipped)."""
    if not self.enabled:
      return
    row = {"step": int(step)}
    for name, value in metrics.items():
      scalar = _scalar(value)
      if scalar is not None:
        row[name] = scalar if math.isfinite(scalar) else str(scalar)
        if self._tb is not None:
          self._tb.add_scalar(name, scalar, int(step))
    with open(self.path, "a", encoding="utf-8") as f:
      f.write(json.dumps(row) + "\n")

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def _drop_partial_last_line(path: str) -> None:
  """A run killed mid-write leaves a line without its newline; cut it so appends stay JSON."""
  if not os.path.exists(path):
    return
  with open(path, "rb+") as f:
    data = f.read()
    if data and not data.endswith(b"\n"):
      f.truncate(data.rfind(b"\n") + 1)


def read_metrics(workdir: str) -> list[dict]:
  """All rows of a run's metrics.jsonl (for tests, plots and experiment tables)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


class Progress:
  """Measures throughput between reports and formats the progress line."""

  def __init__(self, total_steps: int, batch_size: int, flops_per_step: Optional[float],
               peak_flops: Optional[float], start_step: int = 0):
    self.total_steps = total_steps
    self.batch_size = batch_size
    self.flops_per_step = flops_per_step
    self.peak_flops = peak_flops
    self._last_time = time.perf_counter()
    self._last_step = start_step

  def restart(self, step: int) -> None:
    """Starts the next throughput window now (e.g. after an evaluation)."""
    self._last_time, self._last_step = time.perf_counter(), step

  def measure(self, step: int) -> dict[str, float]:
    """Throughput since the previous call: steps/s, examples/s, ETA seconds, MFU."""
    now = time.perf_counter()
    steps = step - self._last_step
    elapsed = max(now - self._last_time, 1e-9)
    self._last_time, self._last_step = now, step
    out = {"steps_per_sec": steps / elapsed, "examples_per_sec": steps * self.batch_size / elapsed}
    out["eta_sec"] = (self.total_steps - step) / max(out["steps_per_sec"], 1e-9)
    if self.flops_per_step and self.peak_flops:
      out["mfu"] = self.flops_per_step * out["steps_per_sec"] / self.peak_flops
    return out

  def line(self, step: int, loss: float, rates: Mapping[str, float]) -> str:
    """'step 120/600  loss 2.3451  3.1 steps/s  99 ex/s  ETA 2m35s  MFU 41.2%'."""
    eta = int(rates["eta_sec"])
    parts = [f"step {step}/{self.total_steps}", f"loss {loss:.4f}",
             f"{rates['steps_per_sec']:.2f} steps/s", f"{rates['examples_per_sec']:.0f} ex/s",
             f"ETA {eta // 60}m{eta % 60:02d}s"]
    if "mfu" in rates:
      parts.append(f"MFU {100 * rates['mfu']:.1f}%")
    return "  ".join(parts)
