"""Non-finite loss or gradients: 'halt' names the step and the first bad parameter group and
keeps the last good checkpoint; 'skip' drops those updates and counts every one of them."""

import math
import os

import jax
import numpy as np
import pytest

from mmjax import checkpoint as ckpt_lib
from mmjax import metric_writers, train
from test_train import micro_config  # pylint: disable=wrong-import-order


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("nonfinite_data"))


def exploding(data_dir, **overrides):
  """Adam with a 1e30 learning rate: parameters reach ~1e30 in one step, then the loss is
  no longer finite."""
  config = micro_config(data_dir, total_steps=6, **{"optim.learning_rate": 1e30,
                                                    "optim.clip_norm": 0.0,
                                                    "checkpoint.every_steps": 1}, **overrides)
  config.optim.warmup_steps = 0
  return config


def _all_finite(tree):
  return all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(tree))


def test_halt_names_step_and_group_and_keeps_last_good_checkpoint(data_dir, tmp_path):
  with pytest.raises(train.NonFiniteError,
                     match=r"at step (\d+) \(first bad parameter group: '(image|text|loss|"
                           r"logit_scale)'\); the last good checkpoint is step \d+") as info:
    train.train_and_evaluate(exploding(data_dir), str(tmp_path))
  bad_step = int(info.value.args[0].split("at step ")[1].split(" ")[0])
  assert bad_step >= 2
  checkpointer = ckpt_lib.Checkpointer(ckpt_lib.checkpoint_dir(str(tmp_path)), async_save=False)
  assert checkpointer.latest_step() == bad_step - 1
  assert _all_finite(checkpointer.restore_params())
  losses = [r["loss"] for r in metric_writers.read_metrics(str(tmp_path))]
  assert len(losses) == bad_step - 1 and all(math.isfinite(x) for x in losses)


def test_skip_counts_every_skipped_step_and_keeps_finite_params(data_dir, tmp_path):
  out = train.train_and_evaluate(exploding(data_dir, on_nonfinite="skip"), str(tmp_path / "a"))
  rows = metric_writers.read_metrics(str(tmp_path / "a"))
  bad = sum(1 for r in rows if not math.isfinite(float(r["loss"])))
  assert bad >= 2 and out["nonfinite_skipped"] == bad == rows[-1]["nonfinite_skipped"]
  params = ckpt_lib.Checkpointer(ckpt_lib.checkpoint_dir(str(tmp_path / "a")),
                                 async_save=False).restore_params()
  assert _all_finite(params)
  # Logging only every 3rd step must not lose the skips between reports.
  out = train.train_and_evaluate(exploding(data_dir, on_nonfinite="skip",
                                           **{"log.every_steps": 3}), str(tmp_path / "b"))
  assert out["nonfinite_skipped"] == bad
