"""AnyRes on the model side: tile-position embeddings (model.tile_positions) before the
non-resampler connectors, and padded tiles (batch key tile_mask) masked in every connector."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import config_lib
from mmjax.models import family as family_lib

T = 5  # thumbnail + a 2 x 2 grid
PATCHES = 4  # micro: 16 px images, patch 8
CONNECTORS = ("resampler", "mlp", "avgpool", "qwen_xattn", "qformer")
TOKENS = {"resampler": 4, "mlp": T * PATCHES, "avgpool": T * 4, "qwen_xattn": 16, "qformer": 8}


def _family(connector: str, tiles: int = 0):
  if connector == "resampler":  # its time_embed is the tile-position embedding
    overrides = [f"model.resampler.max_frames={T}"]
  else:
    overrides = [f"model.connector={connector}", f"model.tile_positions={tiles}"]
  return family_lib.build(config_lib.load_config("configs/flamingo.py:micro", overrides).model)


def _count(params) -> int:
  return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(params))


def _shapes(fam):
  return nn.unbox(jax.eval_shape(fam.init, jax.random.key(0), fam.dummy_batch(1))["params"])


def _encoder(fam):
  """jitted (params, media, tile_mask) -> visual tokens."""
  return jax.jit(lambda p, media, mask: fam.module.apply(
      {"params": p}, media, False, mask, method=type(fam.module).encode_media))


MEDIA = jax.random.normal(jax.random.key(3), (2, 1, T, 16, 16, 3))
MASK = np.ones((2, 1, T), bool)
MASK[1, 0, 3:] = False  # row 1: a 1 x 2 grid (3 tiles) padded to 5


@pytest.fixture(scope="module")
def encoded():
  """{connector: tokens [3, 2, 1, n, D]} for (MEDIA, MASK), (padding overwritten, MASK),
  (MEDIA, all tiles real), in one jitted call per connector."""
  noisy = MEDIA.at[1, 0, 3:].set(5.0)
  media = jnp.concatenate([MEDIA, noisy, MEDIA])
  mask = jnp.asarray(np.concatenate([MASK, MASK, np.ones_like(MASK)]))
  out = {}
  for connector in CONNECTORS:
    fam = _family(connector, T)
    params = jax.jit(lambda k, fam=fam: nn.unbox(fam.init(k, fam.dummy_batch(1))["params"]))(
        jax.random.key(0))
    tokens = np.asarray(_encoder(fam)(params, media, mask))
    out[connector] = tokens.reshape(3, 2, *tokens.shape[1:])
  return out


def test_off_by_default_and_adds_one_row_per_tile():
  fam_off, fam_on = _family("mlp"), _family("mlp", T)
  assert fam_off.config.tile_positions == 0
  off, on = _shapes(fam_off), _shapes(fam_on)
  assert "tile_embed" not in off
  width = fam_on.config.vision.width
  assert on["tile_embed"].shape == (T, width)
  assert _count(on) == _count(off) + T * width
  # It trains with the connector, also when the towers are frozen.
  assert fam_on.param_groups()["connector"] == ["connector", "tile_embed"]
  assert fam_on.is_trainable("tile_embed")
  with pytest.raises(ValueError, match="resampler's time_embed"):
    family_lib.build(config_lib.load_config("configs/flamingo.py:micro",
                                            ["model.tile_positions=5"]).model)


def test_token_shapes_and_budget(encoded):
  for connector, tokens in encoded.items():
    assert tokens.shape == (3, 2, 1, TOKENS[connector], 32), connector
  fam = _family("avgpool", T)
  assert fam.token_budget(MEDIA.shape) == {"frames": T, "vision_tokens": T * PATCHES,
                                           "lm_tokens": T * 4}


def test_padded_tiles_are_masked(encoded):
  for connector, (masked, noisy, full) in encoded.items():
    np.testing.assert_allclose(masked, noisy, atol=1e-5, err_msg=connector)
    np.testing.assert_allclose(masked[0], full[0], atol=1e-5, err_msg=connector)
    if connector in ("mlp", "avgpool"):  # per-tile tokens: the padded tiles' come out zero
      per_tile = masked[1, 0].reshape(T, -1, masked.shape[-1])
      assert np.all(per_tile[3:] == 0) and np.abs(per_tile[:3]).max() > 0
    else:  # pooled: differs from attending to all five tiles
      assert np.abs(full[1] - masked[1]).max() > 1e-4, connector


def test_identical_tiles_get_different_tokens_per_position():
  fam, plain = _family("mlp", T), _family("mlp")
  params = jax.jit(lambda k: nn.unbox(fam.init(k, fam.dummy_batch(1))["params"]))(
      jax.random.key(0))
  one = jax.random.normal(jax.random.key(2), (1, 1, 1, 16, 16, 3))
  media = jnp.repeat(one, T, axis=2)  # the same pixels at every tile index
  mask = jnp.ones((1, 1, T), bool)
  on = np.asarray(_encoder(fam)(params, media, mask)).reshape(T, PATCHES, -1)
  stripped = {k: v for k, v in params.items() if k != "tile_embed"}
  off = np.asarray(_encoder(plain)(stripped, media, mask)).reshape(T, PATCHES, -1)
  for t in range(1, T):
    assert np.abs(on[t] - on[0]).max() > 1e-4
    np.testing.assert_allclose(off[t], off[0], atol=1e-6)  # no table: all tiles alike
