"""Perceiver resampler: fixed output shape, parameter layout and count."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from mmjax.models import resampler


def _resampler(**kw):
  return resampler.PerceiverResampler(**{**dict(width=16, depth=2, num_heads=2, head_dim=8,
                                                num_latents=5, ff_mult=2, max_frames=3), **kw})


def test_output_shape_is_independent_of_tokens_and_frames():
  model = _resampler()
  params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((2, 2, 1, 4, 16)))
  apply = jax.jit(model.apply)
  shapes = set()
  for frames, tokens in [(1, 4), (3, 4), (2, 9)]:
    x = jax.random.normal(jax.random.key(frames * 10 + tokens), (2, 2, frames, tokens, 16))
    out = apply(params, x)
    shapes.add(out.shape)
    assert jnp.all(jnp.isfinite(out))
  assert shapes == {(2, 2, 5, 16)}


def test_time_embeddings_distinguish_frames_and_bound_them():
  model = _resampler()
  x = jax.random.normal(jax.random.key(0), (1, 1, 2, 4, 16))
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), x))
  apply = jax.jit(lambda p: jax.vmap(lambda y: model.apply(p, y))(jnp.stack([x, x[:, :, ::-1]])))
  # Without time embeddings the frames are an unordered set; with them, order matters.
  out = apply(params)
  assert not jnp.allclose(out[0], out[1], atol=1e-4)
  params["params"]["time_embed"] = jnp.zeros_like(params["params"]["time_embed"])
  out = apply(params)
  assert jnp.allclose(out[0], out[1], atol=1e-5)
  with pytest.raises(ValueError, match="max_frames"):
    model.apply(params, jnp.zeros((1, 1, 4, 4, 16)))


def test_structure_matches_open_flamingo_and_closed_form_count():
  model = _resampler(width=16, max_frames=3)
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 1, 1, 4, 24)))
  params = nn.unbox(variables["params"])
  assert sorted(params) == ["latents", "layers", "media_proj", "norm", "time_embed"]
  assert sorted(params["layers"]["attn"]) == ["key", "norm_latents", "norm_media", "out",
                                              "query", "value"]
  assert sorted(params["layers"]["ff"]) == ["fc1", "fc2", "norm"]
  assert "bias" not in params["layers"]["attn"]["query"]  # no biases, as open_flamingo
  n = sum(x.size for x in jax.tree.leaves(params))
  assert n == resampler.resampler_params_estimate(16, 2, 2, 8, 5, 2, 3, input_width=24)


def test_spatial_embeddings_break_token_permutation_invariance_and_bound_tokens():
  # Without spatial embeddings the latents see each frame's tokens as a set: permuting them
  # leaves the output unchanged. With them (max_patches), where a token sits matters.
  x = jax.random.normal(jax.random.key(1), (1, 1, 2, 6, 16))
  perm = jnp.array([3, 0, 5, 1, 4, 2])
  for max_patches, invariant in ((0, True), (6, False)):
    model = _resampler(max_patches=max_patches, spatial_embed_init_std=1.0)
    params = jax.jit(model.init)(jax.random.key(0), x)
    out, permuted = (jax.jit(model.apply)(params, y) for y in (x, x[:, :, :, perm]))
    assert bool(jnp.allclose(out, permuted, atol=1e-5)) == invariant
  params = nn.unbox(params)
  assert params["params"]["spatial_embed"].shape == (6, 16)
  n = sum(v.size for v in jax.tree.leaves(params))
  assert n == resampler.resampler_params_estimate(16, 2, 2, 8, 5, 2, 3, max_patches=6)
  with pytest.raises(ValueError, match="max_patches=6"):
    model.apply(params, jnp.zeros((1, 1, 2, 7, 16)))
