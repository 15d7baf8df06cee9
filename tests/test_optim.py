"""Optimizer: schedules, the weight-decay mask and frozen leaves without optimizer state."""

import jax
import jax.numpy as jnp
import numpy as np
import ml_collections
import optax
import pytest

from mmjax import optim


def cfg(**kw):
  c = ml_collections.ConfigDict(dict(
      name="adamw", learning_rate=1.0, warmup_steps=10, total_steps=110, schedule="cosine",
      end_lr_factor=0.0, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.1, no_decay=("embed",),
      clip_norm=0.0, grad_accum_steps=1, frozen=()))
  c.update(kw)
  return c


def test_warmup_then_cosine():
  s = optim.make_schedule(cfg())
  np.testing.assert_allclose([s(0), s(4), s(9)], [0.1, 0.5, 1.0], rtol=1e-6)
  np.testing.assert_allclose(s(60), 0.5, rtol=1e-6)  # halfway through the cosine
  np.testing.assert_allclose(s(110), 0.0, atol=1e-7)


def test_rsqrt_and_errors():
  s = optim.make_schedule(cfg(schedule="rsqrt"))
  np.testing.assert_allclose(s(39), 1.0 * np.sqrt(10 / 40), rtol=1e-6)
  with pytest.raises(ValueError, match="optim.schedule"):
    optim.make_schedule(cfg(schedule="step"))
  with pytest.raises(ValueError, match="warmup_steps"):
    optim.make_schedule(cfg(warmup_steps=200))


def test_frozen_leaves_have_no_state_and_no_decay_mask_applies():
  params = {"tower": {"w": jnp.ones((4, 4)), "b": jnp.ones((4,))},
            "token_embed": {"embedding": jnp.ones((8, 4))},
            "frozen": {"w": jnp.ones((100, 100))}}
  trainable = {"tower": {"w": True, "b": True}, "token_embed": {"embedding": True},
               "frozen": {"w": False}}
  tx, _ = optim.make_optimizer(cfg(schedule="constant", warmup_steps=0), params, trainable)
  state = tx.init(params)
  sizes = sum(x.size for x in jax.tree_util.tree_leaves(state))
  trainable_size = 16 + 4 + 32
  assert sizes <= 2 * trainable_size + 10  # two Adam moments for trainable leaves, counters
  grads = jax.tree_util.tree_map(jnp.zeros_like, params)
  updates, _ = tx.update(grads, state, params)
  # Zero gradients: the update is pure weight decay, only on rank-2 non-embedding leaves.
  np.testing.assert_allclose(updates["tower"]["w"], -0.1 * np.ones((4, 4)), rtol=1e-6)
  np.testing.assert_array_equal(updates["tower"]["b"], 0)
  np.testing.assert_array_equal(updates["token_embed"]["embedding"], 0)
  np.testing.assert_array_equal(updates["frozen"]["w"], 0)
  assert optax.tree.norm(updates["frozen"]) == 0
