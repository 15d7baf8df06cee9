"""Checkpoint recovery: a damaged newest step falls back to the previous one (named in a
warning, then set aside), and a workdir of another model is refused before anything changes."""

import json
import logging
import os

import jax
import numpy as np
import pytest

from mmjax import checkpoint as ckpt_lib
from mmjax import train
from test_train import micro_config  # pylint: disable=wrong-import-order


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("recovery_data"))


def _truncate_largest_file(step_dir):
  """Halves every array-data file (what a disk-full or a cut copy leaves behind); which single
  file a restore reads first depends on the layout, so all are cut."""
  files = [os.path.join(root, f) for root, _, names in os.walk(step_dir) for f in names
           if "ocdbt.process_" in root]
  for path in files:
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)
  return files


def _listing(workdir):
  return sorted(os.path.relpath(os.path.join(root, f), workdir)
                for root, _, names in os.walk(workdir) for f in names)


def test_truncated_newest_checkpoint_falls_back_and_retrains_bit_exactly(data_dir, tmp_path,
                                                                         caplog):
  config = micro_config(data_dir, total_steps=8, **{"checkpoint.every_steps": 4})
  train.train_and_evaluate(config, str(tmp_path))
  directory = ckpt_lib.checkpoint_dir(str(tmp_path))
  expected = ckpt_lib.Checkpointer(directory, async_save=False).restore_params()
  _truncate_largest_file(os.path.join(directory, "8", "params"))
  with caplog.at_level(logging.WARNING):
    train.train_and_evaluate(config, str(tmp_path))
  assert any("checkpoint step 8" in r.getMessage() and "falling back" in r.getMessage()
             for r in caplog.records)
  assert [n.split("-")[0] for n in os.listdir(tmp_path / "checkpoints_corrupt")] == ["8"]
  assert sorted(os.listdir(directory)) == ["4", "8"]
  # Steps 5..8 were trained again from step 4's state: the same parameters, bit for bit.
  again = ckpt_lib.Checkpointer(directory, async_save=False).restore_params()
  jax.tree_util.tree_map(np.testing.assert_array_equal, again, expected)


def test_no_restorable_checkpoint_refuses_to_start_over(data_dir, tmp_path):
  config = micro_config(data_dir, total_steps=2, **{"checkpoint.every_steps": 2})
  train.train_and_evaluate(config, str(tmp_path))
  _truncate_largest_file(os.path.join(tmp_path, "checkpoints", "2", "params"))
  before = _listing(str(tmp_path))
  with pytest.raises(ckpt_lib.NoRestorableCheckpointError, match=r"steps \[2\]"):
    train.train_and_evaluate(config, str(tmp_path))
  assert "checkpoints/2" in " ".join(_listing(str(tmp_path)))
  assert set(before) <= set(_listing(str(tmp_path)))


def test_workdir_of_another_model_is_refused_before_any_write(data_dir, tmp_path):
  train.train_and_evaluate(micro_config(data_dir, total_steps=2), str(tmp_path))
  other = micro_config(data_dir, total_steps=2, **{"model.vision.width": 48})
  saved_config = (tmp_path / "config.json").read_text()
  before = {p: os.path.getmtime(tmp_path / p) for p in _listing(str(tmp_path))}
  with pytest.raises(ValueError, match=r"another model \(model\.vision\.width: saved 32, "
                                       r"this run 48\)"):
    train.train_and_evaluate(other, str(tmp_path))
  assert (tmp_path / "config.json").read_text() == saved_config
  assert {p: os.path.getmtime(tmp_path / p) for p in _listing(str(tmp_path))} == before
  # Without config.json the checkpoint's own parameter tree names the difference.
  os.remove(tmp_path / "config.json")
  with pytest.raises(ckpt_lib.CheckpointMismatchError,
                     match=r"belongs to another model: parameter 'image/"):
    train.train_and_evaluate(other, str(tmp_path))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]
  assert not (tmp_path / "checkpoints_corrupt").exists()
  assert not (tmp_path / "config.json").exists()


def test_resume_may_change_how_the_same_parameters_are_computed(data_dir, tmp_path):
  """A remat policy or dtype change keeps the parameters, so the resume is allowed (logged)."""
  train.train_and_evaluate(micro_config(data_dir, total_steps=2), str(tmp_path))
  resumed = micro_config(data_dir, total_steps=3, **{"model.remat": "full"})
  train.train_and_evaluate(resumed, str(tmp_path))
  assert "3" in os.listdir(tmp_path / "checkpoints")
  steps = [json.loads(line)["step"] for line in
           (tmp_path / "metrics.jsonl").read_text().splitlines() if '"step"' in line]
  assert min(steps) >= 1 and max(steps) == 3


def test_fields_added_since_the_run_was_saved_do_not_block_its_resume(data_dir, tmp_path):
  """A run saved before a model switch existed resumes (the switch's default is the old model);
  a field the code no longer has still refuses it."""
  config = micro_config(data_dir, total_steps=2)
  train.train_and_evaluate(config, str(tmp_path))
  path = tmp_path / "config.json"
  saved = json.loads(path.read_text())
  width = saved["model"]["vision"].pop("width")  # as if `width` were added after this run
  path.write_text(json.dumps(saved))
  train.check_workdir_model(config, str(tmp_path))  # no error
  saved["model"]["vision"]["width"] = width
  saved["model"]["vision"]["retired_switch"] = 1
  path.write_text(json.dumps(saved))
  with pytest.raises(ValueError, match=r"model\.vision\.retired_switch exists only in the saved"):
    train.check_workdir_model(config, str(tmp_path))
