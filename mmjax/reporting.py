"""What an experiment script records beside its numbers: the command that regenerates them, the
JSON / markdown files themselves (written whole, so a reader never sees half a table), and the
mean ± std over seeds its tables print."""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
from typing import Any, Optional, Sequence

# Flags that only re-render saved results: the recorded command must regenerate them instead.
RENDER_ONLY_FLAGS = ("--from_json",)


def command_line(script: str, argv: Optional[Sequence[str]] = None) -> str:
  """`python SCRIPT ARGS...` as typed into a shell (quoted where needed), without render-only
  flags; `argv` defaults to this process's arguments."""
  args = [a for a in (sys.argv[1:] if argv is None else argv) if a not in RENDER_ONLY_FLAGS]
  return shlex.join(["python", script, *args])


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample std (n - 1; 0 for one value) of per-seed results."""
  mean = sum(values) / len(values)
  return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1))


def write_text(path: str, text: str) -> None:
  """Writes `text` to `path` through a temporary file, creating the directory."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  # One temporary name per process: two processes writing the same file (sweep workers
  # resuming one shared stage) must not rename each other's half-written temporary away.
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write(text)
  os.replace(tmp, path)


def read_json(path: str) -> Any:
  """The JSON at `path` (a results file of write_json), for an experiment's --from_json."""
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def write_report(path: str, text: str) -> None:
  """An experiment's markdown report at `path`, and the same text on stdout."""
  write_text(path, text)
  print(text)


def write_json(path: str, obj: Any) -> None:
  """`obj` as indented, key-sorted JSON (stable diffs of committed results) at `path`."""
  write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")
