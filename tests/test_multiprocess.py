"""Two processes on 127.0.0.1 (4 CPU devices each) train like one process with 8 devices, share
one checkpoint directory, resume, and exit with an error in bounded time when the other dies."""

import pathlib
import os
import signal
import subprocess
import sys
import time

import numpy as np
import portpicker
import pytest

from mmjax import checkpoint as ckpt_lib
from mmjax import metric_writers, train
from test_train import micro_config  # pylint: disable=wrong-import-order

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]

# Overrides matching test_train.micro_config, for the command line.
CLI_OVERRIDES = ["--config.data.num_train=64", "--config.data.num_eval=16",
                 "--config.data.augment.random_resized_crop=False", "--config.log.every_steps=1",
                 "--config.log.tensorboard=False", "--config.checkpoint.async_save=False",
                 "--config.optim.warmup_steps=1", "--config.checkpoint.every_steps=2"]
HEARTBEAT_S = 10


def _launch(workdir, data_dir, total_steps):
  port = portpicker.pick_unused_port()
  procs = []
  for i in range(2):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT),
                                                       os.environ.get("PYTHONPATH", "")]),
               JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4 "
               "--xla_backend_optimization_level=0",  # as tests/conftest.py: compile-bound
               MMJAX_COORDINATOR=f"127.0.0.1:{port}", MMJAX_NUM_PROCESSES="2",
               MMJAX_PROCESS_ID=str(i), MMJAX_HEARTBEAT_TIMEOUT_S=str(HEARTBEAT_S),
               PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "mmjax.train", "--config", "configs/clip.py:micro",
           "--workdir", str(workdir), f"--config.data.data_dir={data_dir}",
           f"--config.total_steps={total_steps}", *CLI_OVERRIDES]
    log = open(os.path.join(os.path.dirname(workdir), f"p{i}.log"), "w", encoding="utf-8")
    procs.append(subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT))
  return procs


def _wait_all(procs, timeout):
  deadline = time.monotonic() + timeout
  try:
    return [p.wait(timeout=max(deadline - time.monotonic(), 1)) for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()


def _tail(path):
  with open(path, encoding="utf-8", errors="replace") as f:
    return "".join(f.readlines()[-30:])


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("multiprocess_data"))


def test_two_processes_match_one_and_survivor_exits_when_peer_dies(data_dir, tmp_path):
  import jax  # pylint: disable=import-outside-toplevel
  ref = tmp_path / "one" / "run"
  config = micro_config(data_dir, total_steps=4, **{"checkpoint.every_steps": 2})
  train.train_and_evaluate(config, str(ref))  # also prepares the data for the children
  multi = tmp_path / "two" / "run"
  os.makedirs(multi.parent)
  codes = _wait_all(_launch(multi, data_dir, 4), timeout=240)
  assert codes == [0, 0], _tail(multi.parent / "p0.log") + _tail(multi.parent / "p1.log")
  ref_losses = [r["loss"] for r in metric_writers.read_metrics(str(ref))]
  multi_losses = [r["loss"] for r in metric_writers.read_metrics(str(multi))]
  np.testing.assert_allclose(multi_losses, ref_losses, rtol=1e-5)
  assert sorted(os.listdir(multi / "checkpoints")) == ["2", "4"]
  a = ckpt_lib.Checkpointer(str(ref / "checkpoints"), async_save=False).restore_params()
  b = ckpt_lib.Checkpointer(str(multi / "checkpoints"), async_save=False).restore_params()
  # atol 1e-5: the two runs sum gradients in different orders, and Adam divides by sqrt(v), so
  # an embedding row whose gradient is ~0 (a rare token) moves by reduction noise (seen: 2e-6).
  jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5),
                         a, b)

  # Resume both processes from step 4, then kill -9 process 1 mid-run.
  procs = _launch(multi, data_dir, 200)
  log0 = multi.parent / "p0.log"
  deadline = time.monotonic() + 180
  while "step 6/200" not in log0.read_text(errors="replace"):
    assert time.monotonic() < deadline and procs[0].poll() is None, _tail(log0)
    time.sleep(0.2)
  assert "resumed from checkpoint step 4" in log0.read_text()
  procs[1].send_signal(signal.SIGKILL)
  killed_at = time.monotonic()
  codes = _wait_all(procs, timeout=HEARTBEAT_S + 60)
  waited = time.monotonic() - killed_at
  assert codes[1] == -signal.SIGKILL
  assert codes[0] != 0, _tail(log0)
  assert waited < HEARTBEAT_S + 60, waited
  print(f"survivor exited with {codes[0]} {waited:.1f}s after its peer died")
