"""The trainer end to end on the micro CLIP config: logs, checkpoints, bit-exact resume,
sharding equivalence on the 8 CPU devices, frozen sub-trees and init-from."""

import json
import os

import jax
import numpy as np
import pytest

from mmjax import checkpoint as ckpt_lib
from mmjax import config_lib, metric_writers, train


def micro_config(data_dir, **overrides):
  """A 16-example-batch CLIP that trains in seconds."""
  config = config_lib.load_config("configs/clip.py:micro")
  config.data.data_dir = data_dir
  config.data.num_train = 64
  config.data.num_eval = 16
  config.data.augment.random_resized_crop = False
  config.log.every_steps = 1
  config.log.tensorboard = False
  config.checkpoint.async_save = False
  config.optim.warmup_steps = 1
  for key, value in overrides.items():
    config_lib.set_by_path(config, key, value)
  return config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("train_data"))


def losses_of(workdir):
  return [row["loss"] for row in metric_writers.read_metrics(workdir) if "loss" in row]


def test_trains_logs_and_checkpoints(data_dir, tmp_path):
  config = micro_config(data_dir, total_steps=8, **{"checkpoint.every_steps": 4})
  with config.unlocked():
    config.evals.val = dict(type="loss", every_steps=8, split="validation", num_batches=1)
  out = train.train_and_evaluate(config, str(tmp_path))
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["4", "8"]
  rows = metric_writers.read_metrics(str(tmp_path))
  assert [r["step"] for r in rows if "loss" in r] == list(range(1, 9))
  assert {"steps_per_sec", "examples_per_sec", "eta_sec", "mfu", "learning_rate"} <= set(rows[0])
  assert "val/loss" in out and np.isfinite(out["val/loss"])
  assert json.loads((tmp_path / "config.json").read_text())["model"]["family"] == "clip"
  run = json.loads((tmp_path / "run.json").read_text().splitlines()[0])
  assert run["packages"]["jax"] == jax.__version__ and run["mesh"]["data"] == 8


def test_resume_is_bit_exact(data_dir, tmp_path):
  straight = tmp_path / "straight"
  train.train_and_evaluate(micro_config(data_dir, total_steps=6), str(straight))
  resumed = tmp_path / "resumed"
  config = micro_config(data_dir, total_steps=3)
  config.optim.total_steps = 6  # same schedule as the straight run
  train.train_and_evaluate(config, str(resumed))
  train.train_and_evaluate(micro_config(data_dir, total_steps=6), str(resumed))
  assert losses_of(str(resumed)) == losses_of(str(straight))
  a = ckpt_lib.Checkpointer(str(straight / "checkpoints")).restore_params()
  b = ckpt_lib.Checkpointer(str(resumed / "checkpoints")).restore_params()
  jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


@pytest.fixture(scope="module")
def one_device_losses(data_dir, tmp_path_factory):
  """Losses of 3 steps on a single device: the reference for every sharded run."""
  workdir = tmp_path_factory.mktemp("one_device")
  config = micro_config(data_dir, total_steps=3, **{"mesh.data": 1})
  train.train_and_evaluate(config, str(workdir), devices=jax.devices()[:1])
  return losses_of(str(workdir))


@pytest.mark.parametrize("mesh,rules", [({"data": 8}, "dp"), ({"fsdp": 8}, "fsdp"),
                                        ({"data": 4, "tensor": 2}, "tp"),
                                        ({"data": 2, "fsdp": 2, "tensor": 2}, "fsdp_tp")])
def test_sharded_training_matches_one_device(data_dir, one_device_losses, tmp_path, mesh,
                                             rules):
  sizes = {**dict(data=1, fsdp=1, tensor=1), **mesh}
  config = micro_config(data_dir, total_steps=3, sharding_rules=rules,
                        **{f"mesh.{k}": v for k, v in sizes.items()})
  train.train_and_evaluate(config, str(tmp_path / "many"))
  np.testing.assert_allclose(losses_of(str(tmp_path / "many")), one_device_losses, rtol=1e-5)


def test_frozen_tower_does_not_move(data_dir, tmp_path):
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  from mmjax.models import family as family_lib  # pylint: disable=import-outside-toplevel
  config = micro_config(data_dir, total_steps=2, **{"optim.frozen": ("^image/",)})
  train.train_and_evaluate(config, str(tmp_path / "run"))
  params = ckpt_lib.Checkpointer(str(tmp_path / "run" / "checkpoints")).restore_params()
  family = family_lib.build(config.model)
  init_rng = jax.random.split(jax.random.key(config.seed))[0]
  init_params = nn.unbox(jax.jit(family.init)(init_rng, family.dummy_batch(1)))["params"]
  jax.tree_util.tree_map(np.testing.assert_array_equal, params["image"], init_params["image"])
  assert not np.array_equal(params["text"]["proj"]["kernel"],
                            init_params["text"]["proj"]["kernel"])


def test_init_from_copies_a_subtree(data_dir, tmp_path):
  source = tmp_path / "source"
  train.train_and_evaluate(micro_config(data_dir, total_steps=2), str(source))
  src_params = ckpt_lib.Checkpointer(str(source / "checkpoints")).restore_params()
  config = micro_config(data_dir, total_steps=1, seed=7,
                        init_from=(f"image={source}:image",), **{"optim.learning_rate": 0.0})
  config.optim.warmup_steps = 0
  train.train_and_evaluate(config, str(tmp_path / "target"))
  dst_params = ckpt_lib.Checkpointer(str(tmp_path / "target" / "checkpoints")).restore_params()
  jax.tree_util.tree_map(np.testing.assert_array_equal, dst_params["image"], src_params["image"])
  assert not np.array_equal(dst_params["text"]["proj"]["kernel"],
                            src_params["text"]["proj"]["kernel"])


def test_config_errors_before_compute(data_dir, tmp_path):
  with pytest.raises(ValueError, match="model.text.vocab_size=8 is smaller"):
    train.train_and_evaluate(micro_config(data_dir, **{"model.text.vocab_size": 8}),
                             str(tmp_path / "a"))
  with pytest.raises(ValueError, match="needs 16 devices but 8"):
    train.train_and_evaluate(micro_config(data_dir, **{"mesh.data": 16}), str(tmp_path / "b"))
  with pytest.raises(ValueError, match="init_from entry 'image' must look like"):
    train.parse_init_from(["image"])


def test_init_from_skips_source_parameters_the_model_lacks():
  """A CLIP image tower (with `proj`) initialises a Flamingo vision tower (without one)."""
  source = {"blocks": {"w": np.ones((2, 3))}, "cls": np.zeros(3), "proj": {"kernel": np.ones(3)}}
  target = {"blocks": {"w": np.zeros((2, 3))}, "cls": np.ones(3)}
  got = train._restrict_to(source, target, "clip:image")  # pylint: disable=protected-access
  assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(target)
  np.testing.assert_array_equal(got["blocks"]["w"], source["blocks"]["w"])


def test_has_checkpoint_needs_a_step_directory(tmp_path):
  """The "reuse a finished stage" check of the experiment scripts and the trainer's workdir check:
  no checkpoints directory, an empty one, or one with only non-step entries is no checkpoint."""
  assert not ckpt_lib.has_checkpoint(tmp_path)
  (tmp_path / ckpt_lib.SUBDIR).mkdir()
  assert not ckpt_lib.has_checkpoint(tmp_path)
  (tmp_path / ckpt_lib.SUBDIR / "checkpoints_corrupt").mkdir()
  assert not ckpt_lib.has_checkpoint(tmp_path)
  (tmp_path / ckpt_lib.SUBDIR / "20").mkdir()
  assert ckpt_lib.has_checkpoint(str(tmp_path))
