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
CONNECTORS = ("resampler", "mlp", "avgpool", "qwen_xattn", "qformer")


def _family(connector: str, tiles: int = 0):
  overrides = [f"model.connector={connector}", f"model.tile_positions={tiles}"]
  if connector == "resampler":
    overrides = ["model.connector=resampler", f"model.resampler.max_frames={T}"]
  return family_lib.build(config_lib.load_config("configs/flamingo.py:micro", overrides).model)


def _count(params) -> int:
  return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(params))


@pytest.fixture(scope="module")
def families():
  """{connector: (family, params)} with tile positions on (resampler: its time_embed)."""
  out = {}
  for connector in CONNECTORS:
    fam = _family(connector, T)
    out[connector] = fam, nn.unbox(fam.init(jax.random.key(0), fam.dummy_batch(1))["params"])
  return out


def _encode(fam, params, media, tile_mask=None):
  return fam.module.apply({"params": params}, media, False, tile_mask,
                          method=type(fam.module).encode_media)


def test_off_by_default_and_adds_one_row_per_tile():
  fam_off = _family("mlp")
  assert fam_off.config.tile_positions == 0
  off = nn.unbox(jax.eval_shape(fam_off.init, jax.random.key(0), fam_off.dummy_batch(1))["params"])
  assert "tile_embed" not in off
  fam_on = _family("mlp", T)
  on = nn.unbox(jax.eval_shape(fam_on.init, jax.random.key(0), fam_on.dummy_batch(1))["params"])
  width = fam_on.config.vision.width
  assert on["tile_embed"].shape == (T, width)
  assert _count(on) == _count(off) + T * width
  # It trains with the connector, also when the towers are frozen.
  assert fam_on.is_trainable("tile_embed") and fam_on.param_groups()["connector"][-1] == "tile_embed"
  with pytest.raises(ValueError, match="resampler's time_embed"):
    family_lib.build(config_lib.load_config(
        "configs/flamingo.py:micro", ["model.tile_positions=5"]).model)


def test_token_shapes_and_budget(families):
  media = jax.random.normal(jax.random.key(1), (2, 1, T, 16, 16, 3))
  patches = 4  # 16 px / patch 8 -> 2 x 2
  expected = {"resampler": 4, "mlp": T * patches, "avgpool": T * 4, "qwen_xattn": 16,
              "qformer": 8}
  for connector, (fam, params) in families.items():
    out = _encode(fam, params, media)
    assert out.shape == (2, 1, expected[connector], 32), connector
    assert fam.token_budget(media.shape) == {"frames": T, "vision_tokens": T * patches,
                                             "lm_tokens": expected[connector]}


def test_identical_tiles_get_different_tokens_per_position(families):
  one = jax.random.normal(jax.random.key(2), (1, 1, 1, 16, 16, 3))
  media = jnp.repeat(one, T, axis=2)  # the same pixels at every tile index
  fam, params = families["mlp"]
  out = np.asarray(_encode(fam, params, media)).reshape(T, 4, -1)
  for t in range(1, T):
    assert np.abs(out[t] - out[0]).max() > 1e-4
  # Without the table every tile of the same pixels maps to the same tokens.
  stripped = {k: v for k, v in params.items() if k != "tile_embed"}
  plain = _family("mlp")
  out_off = np.asarray(_encode(plain, stripped, media)).reshape(T, 4, -1)
  np.testing.assert_allclose(out_off[1:], np.broadcast_to(out_off[:1], out_off[1:].shape),
                             atol=1e-6)
  # Adding row t of the table is exactly what tile t's features get.
  np.testing.assert_allclose(out[0], np.asarray(_encode(fam, params, media[:, :, :1])).reshape(4, -1),
                             atol=1e-5)


def test_padded_tiles_are_masked(families):
  media = jax.random.normal(jax.random.key(3), (2, 1, T, 16, 16, 3))
  mask = np.ones((2, 1, T), bool)
  mask[1, 0, 3:] = False  # row 1: a 1 x 2 grid (3 tiles) padded to 5
  noisy = media.at[1, 0, 3:].set(5.0)
  for connector, (fam, params) in families.items():
    a = np.asarray(_encode(fam, params, media, jnp.asarray(mask)))
    b = np.asarray(_encode(fam, params, noisy, jnp.asarray(mask)))
    np.testing.assert_allclose(a, b, atol=1e-5, err_msg=connector)
    if connector in ("mlp", "avgpool"):  # per-tile tokens: the padded tiles' come out zero
      per_tile = a[1, 0].reshape(T, -1, a.shape[-1])
      assert np.all(per_tile[3:] == 0) and np.abs(per_tile[:3]).max() > 0
    else:  # pooled: the padded row differs from attending to all five tiles
      full = np.asarray(_encode(fam, params, media))
      assert np.abs(full[1] - a[1]).max() > 1e-4, connector
      np.testing.assert_allclose(full[0], a[0], atol=1e-5)
