"""Runs the independent training runs of a sweep in parallel worker processes, one CPU core each.

A sweep script (clip_ablations.py, flamingo_ablations.py) given `--jobs N` first does its shared
work itself (the towers every row reads), then starts N copies of itself with `--shard K/N`: copy K
runs every N-th run from the K-th on, in its own results file under the sweep's workdir, pinned
to core K mod (cores). The parent merges the copies' rows into its own JSON when they finish.

Why processes and one core each: at these model sizes XLA's CPU backend keeps a second core
mostly idle inside one process, so two single-core processes finish a sweep in about half the
wall time of one two-core process. Every worker resumes like the sweep itself (its runs'
directories and its results file survive an interruption), so a killed `--jobs` sweep restarts
where it stopped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any, Callable, Sequence, TypeVar

T = TypeVar("T")


def parse_shard(spec: str | None) -> tuple[int, int]:
  """'K/N' -> (K, N) with 0 <= K < N; None -> (0, 1), the whole sweep."""
  if not spec:
    return 0, 1
  try:
    k, n = (int(x) for x in spec.split("/"))
  except ValueError as e:
    raise ValueError(f"--shard must look like K/N (e.g. 0/2), got {spec!r}") from e
  if not 0 <= k < n:
    raise ValueError(f"--shard {spec!r}: need 0 <= K < N")
  return k, n


def shard_items(items: Sequence[T], spec: str | None) -> list[T]:
  """The items of shard `spec` ('K/N'): every N-th from the K-th on (all for None)."""
  k, n = parse_shard(spec)
  return list(items[k::n])


def shard_output(workdir: str, k: int, n: int) -> str:
  """Where worker K of N writes its results file (inside the sweep's workdir)."""
  return os.path.join(workdir, f"shard{k}of{n}")


_PIN_AND_EXEC = ("import os, sys; os.sched_setaffinity(0, {int(sys.argv[1])}); "
                 "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])")


class WorkersFailed(RuntimeError):
  """Some workers of run_workers exited non-zero; `rows` holds every run that did finish."""

  def __init__(self, message: str, rows: list[dict[str, Any]]):
    super().__init__(message)
    self.rows = rows


def run_workers(script: str, argv: Sequence[str], jobs: int, workdir: str,
                rows: list[dict[str, Any]], filename: str, field: str,
                key: Callable[[dict[str, Any]], tuple]) -> list[dict[str, Any]]:
  """Runs `python script *argv --shard K/jobs --jobs 1 --output DIR_K` for K < jobs, each pinned
  to one core, waits for all, and returns `rows` plus the workers' new rows.

  The sweep's results file is `filename`, its list of result rows `field`, and `key(row)` names
  a run; each worker's file is first given the rows already done (`rows`), so it skips them.
  Raises WorkersFailed if a worker fails, after the others finish, with their merged rows.
  """
  cores = sorted(os.sched_getaffinity(0))
  procs = []
  for k in range(jobs):
    out = shard_output(workdir, k, jobs)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, filename)
    saved = {field: []}
    if os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        saved = json.load(f)
    saved[field] = _union(saved.get(field, []), rows, key)
    with open(path, "w", encoding="utf-8") as f:
      json.dump(saved, f)
    core = cores[k % len(cores)]
    # The child pins itself, then execs the script: a preexec_fn would run Python between fork
    # and exec in a parent whose JAX threads may hold locks.
    cmd = [sys.executable, "-c", _PIN_AND_EXEC, str(core), script, *argv,
           "--shard", f"{k}/{jobs}", "--jobs", "1", "--output", out]
    print(f"worker {k}/{jobs} on core {core}, log: {out}/log.txt", flush=True)
    log = open(os.path.join(out, "log.txt"), "a", encoding="utf-8")  # pylint: disable=consider-using-with
    procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log, out))
  failed = []
  merged = list(rows)
  for k, (proc, log, out) in enumerate(procs):
    if proc.wait() != 0:
      failed.append(out)
    log.close()
    path = os.path.join(out, filename)
    if os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        merged = _union(merged, json.load(f).get(field, []), key)
  if failed:
    raise WorkersFailed(f"sweep workers failed, see log.txt in {failed}; finished runs are "
                        "kept, rerun the same command to resume", merged)
  return merged


def run_sweep(todo: Sequence[T], run_one: Callable[[T], list[dict[str, Any]]],
              saved: dict[str, Any], field: str, key: Callable[[dict[str, Any]], tuple], *,
              jobs: int, shard: str | None, script: str, argv: Sequence[str], workdir: str,
              filename: str, save: Callable[[], None]) -> None:
  """Runs a sweep's `todo` items into `saved[field]`, the loop every sweep script shares.

  jobs > 1: `jobs` single-core copies of `script` (run_workers with `argv`, `workdir`,
  `filename`, `key`) run them and their rows join saved[field]; if a worker fails, the rows
  that did finish are saved first, so that a rerun shares only the rest among all workers
  (not the failed worker's share left to one core). Otherwise this process runs its
  `shard` of them one by one, appending run_one(item)'s rows and calling save() after each, so
  an interrupted sweep resumes after its last finished run. Both add their time to
  saved['wall_min'].
  """
  start = time.time()

  def add_wall_time() -> None:
    nonlocal start
    saved["wall_min"] = saved.get("wall_min", 0.0) + (time.time() - start) / 60
    start = time.time()

  if jobs > 1 and todo:
    try:
      saved[field] = run_workers(script, argv, jobs, workdir, saved[field], filename, field, key)
    except WorkersFailed as e:
      saved[field] = e.rows
      add_wall_time()
      save()
      raise
    add_wall_time()
    return
  for item in shard_items(todo, shard):
    saved[field].extend(run_one(item))
    add_wall_time()
    save()


def _union(rows: list[dict[str, Any]], more: list[dict[str, Any]],
           key: Callable[[dict[str, Any]], tuple]) -> list[dict[str, Any]]:
  """`rows` plus the rows of `more` whose key is not among them, in order."""
  seen = {key(r) for r in rows}
  out = list(rows)
  for r in more:
    if key(r) not in seen:
      seen.add(key(r))
      out.append(r)
  return out
