"""mmjax.reporting: the recorded command regenerates the results when pasted into a shell."""

import json
import math
import multiprocessing
import shlex

from mmjax import reporting


def test_command_line_quotes_and_drops_render_only_flags():
  argv = ["--override", "data.datasets=('shapes', 'emoji')", "--steps", "10", "--from_json"]
  command = reporting.command_line("experiments/connectors.py", argv)
  assert command.startswith("python experiments/connectors.py --override ")
  # The shell splits it back into exactly the arguments that produce the results.
  assert shlex.split(command) == ["python", "experiments/connectors.py"] + argv[:-1]


def test_write_json_is_sorted_and_leaves_no_temporary(tmp_path):
  path = tmp_path / "deep" / "r.json"
  reporting.write_json(str(path), {"b": 1, "a": [1.5]})
  assert path.read_text() == '{\n "a": [\n  1.5\n ],\n "b": 1\n}\n'
  assert json.loads(path.read_text()) == {"a": [1.5], "b": 1}
  assert sorted(p.name for p in path.parent.iterdir()) == ["r.json"]
  assert reporting.read_json(str(path)) == {"a": [1.5], "b": 1}


def _write_many(path: str, text: str) -> None:
  for _ in range(300):
    reporting.write_text(path, text)


def test_processes_writing_one_file_side_by_side_never_fail(tmp_path):
  # Sweep workers resuming one shared stage rewrite its config.json at the same time; with one
  # shared temporary name, one process renamed the other's away (FileNotFoundError).
  path = str(tmp_path / "config.json")
  ctx = multiprocessing.get_context("spawn")
  workers = [ctx.Process(target=_write_many, args=(path, f"writer {k}\n")) for k in range(2)]
  for w in workers:
    w.start()
  for w in workers:
    w.join(120)
  assert [w.exitcode for w in workers] == [0, 0]
  assert open(path, encoding="utf-8").read() in ("writer 0\n", "writer 1\n")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_write_report_writes_the_markdown_and_prints_it(tmp_path, capsys):
  path = tmp_path / "new" / "r.md"
  reporting.write_report(str(path), "# Title\n\n| a |\n")
  assert path.read_text() == "# Title\n\n| a |\n"
  assert capsys.readouterr().out == "# Title\n\n| a |\n\n"


def test_mean_std_is_the_sample_std_and_zero_for_one_value():
  assert not math.isnan(reporting.mean_std([1.0, 3.0])[1])
  assert reporting.mean_std([1.0, 3.0]) == (2.0, math.sqrt(2.0))
  assert reporting.mean_std([0.5]) == (0.5, 0.0)
