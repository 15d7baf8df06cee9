"""experiments/sweep_jobs.py: shards split a sweep's runs without overlap or loss, and run_workers
merges the workers' rows with the rows already done (which the workers are told to skip)."""

import json
import os
import sys
import textwrap

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "experiments"))
import sweep_jobs  # noqa: E402  pylint: disable=wrong-import-position,import-error


def test_shards_partition_the_runs():
  items = list(range(11))
  shards = [sweep_jobs.shard_items(items, f"{k}/3") for k in range(3)]
  assert shards == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
  assert sweep_jobs.shard_items(items, None) == items
  for bad in ("3/3", "1", "a/b", "-1/2"):
    with pytest.raises(ValueError, match="--shard"):
      sweep_jobs.parse_shard(bad)


# A stand-in sweep: runs 0..5 in its shard, skipping the runs already in its results file, and
# records which core it was pinned to.
WORKER = textwrap.dedent("""
    import json, os, sys
    args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
    k, n = (int(x) for x in args["--shard"].split("/"))
    path = os.path.join(args["--output"], "sweep.json")
    saved = json.load(open(path))
    done = {r["run"] for r in saved["rows"]}
    for run in range(6)[k::n]:
      if run not in done:
        saved["rows"].append({"run": run, "by": k, "cores": sorted(os.sched_getaffinity(0))})
    json.dump(saved, open(path, "w"))
    """)


def test_run_workers_merges_and_skips_done_runs(tmp_path):
  script = tmp_path / "worker.py"
  script.write_text(WORKER)
  done = [{"run": 1, "by": "earlier"}]
  rows = sweep_jobs.run_workers(str(script), ["--extra", "x"], 2, str(tmp_path / "wd"), done,
                                "sweep.json", "rows", key=lambda r: (r["run"],))
  assert sorted(r["run"] for r in rows) == list(range(6))
  assert rows[0] == {"run": 1, "by": "earlier"}  # not rerun
  assert {r["run"]: r["by"] for r in rows[1:]} == {0: 0, 2: 0, 4: 0, 3: 1, 5: 1}
  for r in rows[1:]:
    assert len(r["cores"]) == 1  # each worker pinned to one core
  # A second call finds everything done in the workers' files and adds nothing.
  again = sweep_jobs.run_workers(str(script), [], 2, str(tmp_path / "wd"), rows, "sweep.json",
                                 "rows", key=lambda r: (r["run"],))
  assert again == rows
  with open(tmp_path / "wd" / "shard0of2" / "sweep.json", encoding="utf-8") as f:
    assert len(json.load(f)["rows"]) == 6


def test_failed_worker_is_reported(tmp_path):
  script = tmp_path / "worker.py"
  script.write_text("import sys; sys.exit(3)")
  with pytest.raises(sweep_jobs.WorkersFailed, match="shard1of2"):
    sweep_jobs.run_workers(str(script), [], 2, str(tmp_path), [], "s.json", "rows",
                           key=lambda r: (r["run"],))


def test_run_sweep_in_process_saves_after_each_run_and_counts_time():
  saved = {"rows": [{"run": 0}], "wall_min": 1.0}
  saves = []
  sweep_jobs.run_sweep([1, 2, 3, 4], lambda i: [{"run": i}, {"run": i, "part": 2}], saved,
                       "rows", lambda r: (r["run"],), jobs=1, shard="1/2", script="unused",
                       argv=[], workdir="unused", filename="unused",
                       save=lambda: saves.append(len(saved["rows"])))
  # Shard 1/2 of the todo list is items 2 and 4; every row a run returns is kept.
  assert [r["run"] for r in saved["rows"]] == [0, 2, 2, 4, 4]
  assert saves == [3, 5] and saved["wall_min"] >= 1.0


def test_run_sweep_with_jobs_merges_the_workers(tmp_path):
  script = tmp_path / "worker.py"
  script.write_text(WORKER)
  saved = {"rows": [{"run": 1, "by": "earlier"}]}
  sweep_jobs.run_sweep([0, 2, 3, 4, 5], lambda i: pytest.fail("ran in the parent"), saved,
                       "rows", lambda r: (r["run"],), jobs=2, shard=None, script=str(script),
                       argv=[], workdir=str(tmp_path / "wd"), filename="sweep.json",
                       save=lambda: pytest.fail("workers save their own files"))
  assert sorted(r["run"] for r in saved["rows"]) == list(range(6))
  assert saved["wall_min"] > 0.0


def test_run_sweep_saves_what_finished_when_a_worker_fails(tmp_path):
  # Worker 1 dies at once; worker 0's runs must reach the sweep's own results (saved), so a
  # rerun shares only the remaining runs among all workers.
  script = tmp_path / "worker.py"
  script.write_text('import sys\nif "1/2" in sys.argv: sys.exit(3)\n' + WORKER)
  saved = {"rows": [{"run": 1, "by": "earlier"}]}
  saves = []
  with pytest.raises(sweep_jobs.WorkersFailed, match="shard1of2"):
    sweep_jobs.run_sweep([0, 2, 3, 4, 5], lambda i: pytest.fail("ran in the parent"), saved,
                         "rows", lambda r: (r["run"],), jobs=2, shard=None, script=str(script),
                         argv=[], workdir=str(tmp_path / "wd"), filename="sweep.json",
                         save=lambda: saves.append(sorted(r["run"] for r in saved["rows"])))
  assert saves == [[0, 1, 2, 4]] and saved["wall_min"] > 0.0
