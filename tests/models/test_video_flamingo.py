"""Flamingo on video (configs/flamingo.py:video_micro): each frame is encoded alone, and only the
resampler's learned time embeddings tell frame order apart; time-embedding rows of frames a clip
lacks get no gradient; the video presets' exact parameter counts."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmjax import config_lib
from mmjax.models import family, resampler

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGE = 512  # video_micro's <image>: vocab_size + 0


def _family(preset="video_micro"):
  config = config_lib.load_config(os.path.join(ROOT, f"configs/flamingo.py:{preset}"), ())
  return family.build(config.model)


def _batch(frames=2, seed=0):
  """Two rows of one clip each (T frames of 16 px), the <image> at position 1."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, 256, size=(2, 10))
  tokens[:, 1] = IMAGE
  return {"media": jnp.asarray(rng.uniform(-1, 1, (2, 1, frames, 16, 16, 3)), jnp.float32),
          "media_mask": jnp.ones((2, 1), bool), "tokens": jnp.asarray(tokens, jnp.int32),
          "media_locations": jnp.asarray(tokens == IMAGE),
          "loss_mask": jnp.ones((2, 10), jnp.float32)}


def _params(fam, batch):
  """Random parameters with the gates open (at 0 the media would not reach the logits)."""
  rng = np.random.default_rng(0)
  def fill(path, leaf):
    name = path[-1].key
    if name in ("attn_gate", "ff_gate"):
      return jnp.full(leaf.shape, 0.5, leaf.dtype)
    return jnp.asarray((name == "scale") + 0.2 * rng.standard_normal(leaf.shape), leaf.dtype)
  shapes = nn.unbox(jax.eval_shape(fam.init, jax.random.key(0), batch)["params"])
  return jax.tree_util.tree_map_with_path(fill, shapes)


def test_frame_order_matters_only_through_time_embeddings():
  fam = _family()
  batch = _batch()
  reversed_batch = dict(batch, media=batch["media"][:, :, ::-1])
  params = _params(fam, batch)
  logits = jax.jit(lambda p, b: jax.vmap(lambda m: fam.predict_logits(p, dict(b, media=m)))(
      jnp.stack([batch["media"], reversed_batch["media"]])))
  out = logits(params, batch)
  assert float(jnp.max(jnp.abs(out[0] - out[1]))) > 1e-3  # Time embeddings: order is seen.
  # The image token and text before it see no media, so they agree either way.
  np.testing.assert_allclose(out[0][:, :1], out[1][:, :1], atol=1e-5)
  params["resampler"]["time_embed"] = jnp.zeros_like(params["resampler"]["time_embed"])
  out = logits(params, batch)
  # Without them the T x N frame tokens are an unordered set to the resampler.
  np.testing.assert_allclose(out[0], out[1], atol=2e-5)


def test_time_embedding_rows_beyond_t_get_no_gradient():
  # A clip of T=2 frames in a resampler with max_frames=4 (as video_tiny with shorter clips):
  # rows 0 and 1 learn, rows 2 and 3 get exactly zero gradient. (The frozen tower's zero
  # gradient is tests/models/test_flamingo.py's; media of T frames take the same path.)
  model = resampler.PerceiverResampler(width=16, depth=1, num_heads=2, head_dim=8,
                                       num_latents=3, ff_mult=2, max_frames=4)
  x = jax.random.normal(jax.random.key(0), (2, 1, 2, 5, 16))
  params = nn.unbox(jax.jit(model.init)(jax.random.key(1), x))
  grads = jax.jit(jax.grad(lambda p: jnp.sum(model.apply(p, x) ** 2)))(params)
  rows = jnp.abs(grads["params"]["time_embed"]).sum(1)
  assert bool(jnp.all(rows[:2] > 0)) and bool(jnp.all(rows[2:] == 0))


def _count(fam):
  shapes = jax.eval_shape(fam.init, jax.random.key(0), fam.dummy_batch(1))["params"]
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.unbox(shapes)))


def test_video_presets_add_exactly_the_time_embeddings():
  # video_tiny = tiny with max_frames 4 instead of 2: 2 more rows of width 128.
  assert _count(_family("video_tiny")) - _count(_family("tiny")) == 2 * 128
  assert _count(_family("video_micro")) == _count(_family("micro"))  # Both keep 2 frames.
