"""The `qformer` family (BLIP-2 stage 1): exact parameter count, freezing, and training steps
through the trainer's own step function."""

import math

import flax.linen as nn
import jax
import numpy as np
import pytest

from mmjax import config_lib, optim, train
from mmjax.models import family as family_lib
from mmjax.models import qformer_family


def _count(tree) -> int:
  return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(tree))


def _vit_count(width, depth, mlp_dim, patch, image_size, stem="patch") -> int:
  """open_clip VisionTransformer without projection: patch conv (no bias), class token,
  positions, ln_pre, depth x (ln_1, attn with biases, ln_2, mlp with biases), ln_post. The
  conv stem replaces the patch conv by 3x3 convs (with biases) 3 -> w/4 -> w/2 -> w (for
  patch 8) and a 1x1 conv w -> w (no bias)."""
  tokens = (image_size // patch) ** 2 + 1
  block = 2 * width + 4 * width * width + 4 * width + 2 * width + 2 * width * mlp_dim + mlp_dim \
      + width
  embed = patch * patch * 3 * width
  if stem == "conv":
    layers = patch.bit_length() - 1
    chans = [3] + [width // 2 ** (layers - 1 - i) for i in range(layers)]
    embed = sum(9 * a * b + b for a, b in zip(chans, chans[1:])) + width * width
  return embed + width + tokens * width + 2 * width + depth * block + 2 * width


@pytest.mark.parametrize("preset", ["micro", "tiny"])
def test_parameter_count_by_hand(preset):
  config = config_lib.load_config(f"configs/qformer.py:{preset}")
  family = family_lib.build(config.model)
  params = nn.unbox(jax.eval_shape(family.init, jax.random.key(0),
                                   family.dummy_batch(1))["params"])
  v, s, q = config.model.vision, config.model.stage1, config.model.stage1.qformer
  vit = _vit_count(v.width, v.depth, v.mlp_dim, v.patch_size, v.image_size, v.stem)
  stage1 = qformer_family.stage1_params_estimate(
      vision_width=v.width, num_queries=q.num_queries, width=q.width, depth=q.depth,
      mlp_dim=q.mlp_dim, cross_attention_freq=q.cross_attention_freq, vocab_size=q.vocab_size,
      max_length=q.max_length, embed_dim=s.embed_dim)
  assert _count(params["vision"]) == vit
  assert _count(params["stage1"]) == stage1
  assert _count(params) == {"micro": 15_008 + 50_884, "tiny": 826_624 + 586_500}[preset]


def test_train_steps_lower_every_loss_with_the_tower_frozen():
  # BLIP-2's setting: the image tower frozen, the Q-Former trained by the trainer's own step.
  config = config_lib.load_config("configs/qformer.py:micro", ["model.freeze_vision=True"])
  family = family_lib.build(config.model)
  params = jax.jit(lambda k: nn.unbox(family.init(k, family.dummy_batch(2))["params"]))(
      jax.random.key(0))
  rng = np.random.default_rng(0)
  # Four distinct captions of 6 tokens ([BOS] w w w w [EOS]) and padding, four images.
  text = np.zeros((4, 12), np.int32)
  text[:, 0], text[:, 5] = 2, 3
  text[:, 1:5] = rng.integers(10, 500, size=(4, 4))
  batch = {"image": rng.normal(size=(4, 16, 16, 3)).astype(np.float32), "text": text}
  trainable = train.trainable_mask(config, family, params)
  assert not any(jax.tree_util.tree_leaves(trainable["vision"]))
  assert all(jax.tree_util.tree_leaves(trainable["stage1"]))
  tx, _ = optim.make_optimizer(config.optim, params, trainable)
  step = jax.jit(train.make_train_step(family, tx, trainable, config))
  opt_state, new = tx.init(params), params
  history = []
  for i in range(6):
    new, opt_state, metrics = step(new, opt_state, batch, jax.random.key(1), np.int32(i))
    history.append({k: float(v) for k, v in metrics.items() if k.startswith("loss")})
  assert all(np.isfinite(list(h.values())).all() for h in history)
  first, last = history[0], history[-1]
  assert np.isclose(first["loss"], first["loss_itc"] + first["loss_itm"] + first["loss_itg"],
                    rtol=1e-5)
  assert last["loss"] < first["loss"] - 0.5
  assert last["loss_itg"] < first["loss_itg"]
  for a, b in zip(jax.tree_util.tree_leaves(params["vision"]),
                  jax.tree_util.tree_leaves(new["vision"])):
    np.testing.assert_array_equal(a, b)
  emb = jax.jit(family.predict_embeddings)(new, batch)
  assert emb["image_emb"].shape == (4, 4, 32) and emb["text_emb"].shape == (4, 32)
  np.testing.assert_allclose(np.linalg.norm(emb["text_emb"], axis=-1), 1.0, rtol=1e-5)


def test_dec_id_must_fit_the_vocabulary():
  config = config_lib.load_config("configs/qformer.py:micro", ["model.dec_id=513"])
  with pytest.raises(ValueError, match="model.dec_id=513"):
    family_lib.build(config.model)
