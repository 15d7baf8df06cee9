"""Trainer options beyond the basic loop: gradient accumulation, every family's config trains,
and restoring a checkpoint onto a different mesh."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import config_lib, metric_writers, optim, train
from mmjax import parallel as P
from mmjax.models import family as family_lib

from test_train import losses_of, micro_config  # noqa: E402  pylint: disable=wrong-import-position


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("train_options_data"))


def test_grad_accumulation_averages_micro_batch_gradients():
  config = config_lib.load_config("configs/clip.py:micro")
  config.optim.grad_accum_steps = 2
  family = family_lib.build(config.model)
  params = nn.unbox(jax.jit(family.init)(jax.random.key(0), family.dummy_batch(1)))["params"]
  trainable = jax.tree_util.tree_map(lambda _: True, params)
  tx, _ = optim.make_optimizer(config.optim, params, trainable)
  rng = np.random.default_rng(0)
  half = {"image": rng.uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32),
          "text": rng.integers(1, 500, (4, 16)).astype(np.int32)}
  doubled = {k: np.concatenate([v, v]) for k, v in half.items()}
  step_accum = jax.jit(train.make_train_step(family, tx, trainable, config))
  config.optim.grad_accum_steps = 1
  step_plain = jax.jit(train.make_train_step(family, tx, trainable, config))
  key, step = jax.random.key(1), jnp.asarray(0)
  # Two identical micro-batches average to the gradient of one of them.
  p_accum, _, m_accum = step_accum(params, tx.init(params), doubled, key, step)
  p_plain, _, m_plain = step_plain(params, tx.init(params), half, key, step)
  np.testing.assert_allclose(m_accum["loss"], m_plain["loss"], rtol=1e-6)
  jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                         p_accum, p_plain)


@pytest.mark.parametrize("spec", ["configs/coca.py:micro",
                                  "configs/lm.py:micro", "configs/flamingo.py:micro"])
def test_every_family_trains(spec, data_dir, tmp_path):
  config = config_lib.load_config(spec)
  base = micro_config(data_dir)
  for key in ("data_dir", "num_train", "num_eval"):
    config.data[key] = base.data[key]
  config.data.augment.random_resized_crop = False
  config.data.batch_size = 16
  config.total_steps, config.optim.warmup_steps = 4, 1
  config.log.every_steps, config.log.tensorboard = 1, False
  config.checkpoint.async_save = False
  with config.unlocked():
    config.evals = {}
  train.train_and_evaluate(config, str(tmp_path))
  losses = losses_of(str(tmp_path))
  assert len(losses) == 4 and all(np.isfinite(losses))


def test_checkpoint_restores_onto_another_mesh(data_dir, tmp_path):
  config = micro_config(data_dir, total_steps=2, **{"mesh.data": 8})
  train.train_and_evaluate(config, str(tmp_path))
  config = micro_config(data_dir, total_steps=4, sharding_rules="fsdp_tp",
                        **{"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2})
  train.train_and_evaluate(config, str(tmp_path))
  straight = tmp_path / "straight"
  train.train_and_evaluate(micro_config(data_dir, total_steps=4), str(straight))
  resumed = {r["step"]: r["loss"] for r in metric_writers.read_metrics(str(tmp_path))}
  np.testing.assert_allclose([resumed[s] for s in range(1, 5)], losses_of(str(straight)),
                             rtol=1e-5)


def test_optimizer_moments_are_sharded_like_their_parameters():
  mesh = P.make_mesh({"fsdp": 8})
  config = config_lib.load_config("configs/clip.py:micro")
  family = family_lib.build(config.model)
  abstract = jax.eval_shape(family.init, jax.random.key(0), family.dummy_batch(1))
  shardings = P.abstract_shardings(abstract, mesh, "fsdp")["params"]
  params_abstract = nn.unbox(abstract["params"])
  trainable = jax.tree_util.tree_map(lambda _: True, params_abstract)
  tx, _ = optim.make_optimizer(config.optim, params_abstract, trainable)
  params, opt_state, _ = train.init_train_state(family, tx, shardings, mesh, jax.random.key(0))
  kernel = params["image"]["blocks"]["mlp"]["fc1"]["kernel"]
  assert P.shard_shape(kernel) != kernel.shape  # fsdp splits it...
  moments = [x for x in jax.tree_util.tree_leaves(opt_state) if x.shape == kernel.shape]
  assert moments  # ... and Adam's mu / nu of that shape are split the same way.
  for m in moments:
    assert P.shard_shape(m) == P.shard_shape(kernel), m.sharding
