"""A training run writes only inside its workdir and the configured data_dir, and opens no
network connection (every file-system write and connect() is traced with strace)."""

import pathlib
import os
import re
import shutil
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


WRITE_CALLS = "openat,open,creat,mkdir,mkdirat,rename,renameat,renameat2,link,linkat,symlink,connect"
# Kernel and device files every process touches; nothing persists there.
SYSTEM = ("/dev/", "/proc/")


def _written_paths(trace):
  """Paths a traced process created or opened for writing, and its connect() lines."""
  written, connects = set(), []
  for line in trace.splitlines():
    call = re.match(r"^\d+\s+(\w+)\((.*)", line)
    if not call or "ENOENT" in line or "ENXIO" in line:
      continue
    name, args = call.groups()
    if name == "connect":
      connects.append(line)
      continue
    paths = re.findall(r'"([^"]*)"', args)
    if name in ("open", "openat", "creat"):
      if name != "creat" and not re.search(r"O_WRONLY|O_RDWR|O_CREAT", args):
        continue
      written.add(paths[0] if paths else "")
    elif name.startswith(("rename", "link", "symlink")):
      written.add(paths[-1] if paths else "")
    else:
      written.add(paths[0] if paths else "")
  return written, connects


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace")
def test_training_writes_only_workdir_and_data_dir(tmp_path):
  workdir, data_dir = tmp_path / "work", tmp_path / "data"
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT),
                                                     os.environ.get("PYTHONPATH", "")]),
             JAX_PLATFORMS="cpu", PYTHONDONTWRITEBYTECODE="1")  # .pyc caches are Python's
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  trace_file = tmp_path / "trace.txt"
  cmd = ["strace", "-f", "-qq", "-e", f"trace={WRITE_CALLS}", "-o", str(trace_file),
         sys.executable, "-m", "mmjax.train", "--config", "configs/clip.py:micro",
         "--workdir", str(workdir), f"--config.data.data_dir={data_dir}",
         "--config.data.num_train=64", "--config.data.num_eval=16", "--config.total_steps=2",
         "--config.optim.warmup_steps=1", "--config.checkpoint.every_steps=1"]
  out = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                       timeout=240, check=False)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  written, connects = _written_paths(trace_file.read_text())
  assert connects == []
  allowed = (str(workdir) + "/", str(data_dir) + "/") + SYSTEM
  outside = sorted(p for p in written
                   if not os.path.abspath(os.path.join(REPO_ROOT, p)).startswith(allowed)
                   and os.path.abspath(p) not in (str(workdir), str(data_dir)))
  assert outside == []
  assert (workdir / "checkpoints" / "2").is_dir() and (workdir / "metrics.jsonl").exists()
  assert any(p.startswith(str(data_dir) + "/") for p in written)
