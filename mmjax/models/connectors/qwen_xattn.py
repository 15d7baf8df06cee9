"""Qwen-VL's position-aware vision-language adapter (Bai et al. 2023, §2.1): one cross-attention
layer in which learned queries attend to the patch features, with 2-D sin-cos absolute
positions added to the queries and the keys (not the values).

    kv = LN_kv(kv_proj(x))                                # x: the g x g patch grid (per frame)
    out = MHA(q = LN_q(query) + pos(query grid), k = kv + pos(patch grid), v = kv)
    return LN_post(out) @ proj                            # [B, M, num_queries, D]

Follows Qwen-VL's `visual.py` (`Resampler` + the ViT's `ln_post` and `proj`): 256 queries
(a 16 x 16 grid) by default, trunc-normal(0.02) query init, LayerNorm eps 1e-6,
`nn.MultiheadAttention` with biases, `proj` initialised as D^-0.5 * randn.
Positions are fixed (not learned). Qwen-VL bicubically resizes the 16 x 16 query-grid table to
the patch grid for the keys; here the key table is the same sin-cos function sampled at the
patch centres in query-grid coordinates (patch i at i * G_q / G_k), which is what that resize
approximates and needs no resize. Video frames (T > 1) share the per-frame positions.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmjax import parallel as P
from mmjax.models import layers
from mmjax.models.connectors import avgpool

Array = jax.Array


def sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
  """[len(pos), dim] MAE-style 1-D sin-cos embedding: [sin(pos * w), cos(pos * w)]."""
  if dim % 2:
    raise ValueError(f"sin-cos embedding needs an even width, got {dim}")
  omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
  out = np.asarray(pos, np.float64).reshape(-1)[:, None] * omega[None]
  return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d(dim: int, grid: int, scale: float = 1.0) -> np.ndarray:
  """[grid * grid, dim] 2-D sin-cos positions, row-major over the grid (MAE's
  get_2d_sincos_pos_embed, used by Qwen-VL): the first half of the features encodes the column
  (MAE's grid[0] is w), the second half the row; coordinates are multiplied by `scale`."""
  if dim % 4:
    raise ValueError(f"2-D sin-cos embedding needs a width divisible by 4, got {dim}")
  coords = np.arange(grid, dtype=np.float64) * scale
  w, h = np.meshgrid(coords, coords)  # MAE: np.meshgrid(grid_w, grid_h), grid[0] = w
  return np.concatenate([sincos_1d(dim // 2, w), sincos_1d(dim // 2, h)], axis=1).astype(
      np.float32)


class CrossAttention(nn.Module):
  """torch's nn.MultiheadAttention with separate query / key / value inputs (biases on every
  projection): Qwen-VL adds positions to the queries and keys but not to the values."""
  num_heads: int
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, q: Array, k: Array, v: Array, key_mask: Array | None = None) -> Array:
    """q [B, n, D], k and v [B, S, D] -> [B, n, D]; `key_mask` [B, S]: False = not attended."""
    d = q.shape[-1]
    if d % self.num_heads:
      raise ValueError(f"qwen_xattn.width {d} is not divisible by num_heads {self.num_heads}")
    heads = (self.num_heads, d // self.num_heads)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    proj = lambda name, x: layers.dense(heads, [P.EMBED], [P.HEADS, P.KV], name=name, **kw)(x)
    mask = None if key_mask is None else key_mask.astype(bool)[:, None, None, :]
    out = layers.attention(proj("query", q), proj("key", k), proj("value", v), mask=mask)
    out = layers.constrain(out, P.BATCH, P.LENGTH, P.HEADS, P.KV)
    return layers.dense(d, [P.HEADS, P.KV], [P.EMBED], axis=(-2, -1), name="out", **kw)(out)


class QwenResampler(nn.Module):
  """[B, M, T, g*g, Dv] patch features -> [B, M, num_queries, width] (the queries attend to the
  patches of all T frames at once).

  Attributes:
    width: embed_dim of the adapter and its output D (Qwen-VL: 4096, the LM width).
    num_heads: attention heads (Qwen-VL: width // 128).
    num_queries: learned queries, a square number (Qwen-VL: 256).
    norm_eps: LayerNorm epsilon (Qwen-VL: 1e-6).
    dtype / param_dtype: compute and storage dtypes.
  """
  width: int = 32
  num_heads: int = 2
  num_queries: int = 256
  norm_eps: float = 1e-6
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, frame_mask: Array | None = None) -> Array:
    """`frame_mask` [B, M, T] (AnyRes `tile_mask`): queries do not attend to padded tiles."""
    if x.ndim != 5:
      raise ValueError(f"QwenResampler expects media features [B, M, T, N, D], got {x.shape}")
    b, m, t, n, dv = x.shape
    grid_k = avgpool.square_side(n, "number of patch tokens")
    grid_q = avgpool.square_side(self.num_queries, "qwen_xattn.num_queries")
    d = self.width
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    norm = lambda name: layers.norm_layer("layernorm", self.norm_eps, self.dtype,
                                          self.param_dtype, name=name)
    x = x.astype(self.dtype)
    if dv != d:
      x = layers.dense(d, [None], [P.EMBED], use_bias=False, name="kv_proj", **kw)(x)
    kv = norm("ln_kv")(x).reshape(b * m, t * n, d)
    pos_k = jnp.asarray(np.tile(sincos_2d(d, grid_k, grid_q / grid_k), (t, 1)), self.dtype)
    pos_q = jnp.asarray(sincos_2d(d, grid_q), self.dtype)
    query = self.param("query", layers.with_axes(nn.initializers.truncated_normal(0.02),
                                                 P.LATENTS, P.EMBED),
                       (self.num_queries, d), self.param_dtype)
    q = norm("ln_q")(query.astype(self.dtype)) + pos_q
    q = jnp.broadcast_to(q, (b * m, *q.shape))
    key_mask = None
    if frame_mask is not None:
      key_mask = jnp.repeat(frame_mask.astype(bool).reshape(b * m, t), n, axis=1)
    out = CrossAttention(self.num_heads, **kw, name="attn")(q, kv + pos_k, kv, key_mask)
    out = norm("ln_post")(out)
    proj = self.param("proj", layers.with_axes(nn.initializers.normal(d ** -0.5), None,
                                               P.EMBED), (d, d), self.param_dtype)
    out = out @ proj.astype(self.dtype)
    return out.reshape(b, m, self.num_queries, d)
