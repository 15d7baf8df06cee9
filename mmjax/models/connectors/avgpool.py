"""Average-pooled patch tokens (MM1's "average pooling" connector, McKinzie et al. 2024, §3.2):
the patch grid is average-pooled to a chosen number of tokens, then linearly projected.

    [B, M, T, g*g, Dv] -> grid [g, g] -> adaptive average pool to [s, s] -> Linear(Dv, D)
    -> [B, M, T * s*s, D]        (s * s = num_tokens)

Adaptive pooling follows torch's `adaptive_avg_pool2d`: output cell i covers input rows
floor(i * g / s) .. ceil((i + 1) * g / s) - 1, so any g works (cells overlap when s does not
divide g).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmjax import parallel as P
from mmjax.models import layers

Array = jax.Array


def pooling_matrix(grid: int, size: int) -> np.ndarray:
  """[size, grid] averaging weights of 1-D adaptive average pooling (torch's bin edges)."""
  if size < 1 or size > grid:
    raise ValueError(f"cannot pool a grid of {grid} to {size} (need 1 <= size <= grid)")
  w = np.zeros((size, grid), np.float32)
  for i in range(size):
    lo, hi = (i * grid) // size, -(-((i + 1) * grid) // size)
    w[i, lo:hi] = 1.0 / (hi - lo)
  return w


def square_side(num_tokens: int, what: str) -> int:
  """The side of a square grid of `num_tokens` tokens, or a clear error naming `what`."""
  side = math.isqrt(num_tokens)
  if side * side != num_tokens:
    raise ValueError(f"{what}={num_tokens} is not a square number (tokens form a 2-D grid)")
  return side


class AvgPoolProjector(nn.Module):
  """[B, M, T, g*g, Dv] patch features -> [B, M, T * num_tokens, width].

  Attributes:
    num_tokens: visual tokens per image (frame); a square number <= the patch count.
    width: output width D (the LM width for decoder-only fusion).
    dtype / param_dtype: compute and storage dtypes.
  """
  num_tokens: int = 4
  width: int = 32
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, frame_mask: Array | None = None) -> Array:
    """`frame_mask` [B, M, T] (AnyRes `tile_mask`): the tokens of padded tiles come out zero."""
    if x.ndim != 5:
      raise ValueError(f"AvgPoolProjector expects media features [B, M, T, N, D], got {x.shape}")
    b, m, t, n, dv = x.shape
    grid = square_side(n, "number of patch tokens")
    side = square_side(self.num_tokens, "avgpool.num_tokens")
    if side > grid:
      raise ValueError(f"avgpool.num_tokens={self.num_tokens} exceeds the {n} patch tokens")
    pool = jnp.asarray(pooling_matrix(grid, side), self.dtype)
    x = x.astype(self.dtype).reshape(b, m, t, grid, grid, dv)
    x = jnp.einsum("ih,jw,bmthwd->bmtijd", pool, pool, x).reshape(b, m, t * self.num_tokens, dv)
    y = layers.dense(self.width, [None], [P.EMBED], name="proj", dtype=self.dtype,
                     param_dtype=self.param_dtype)(x)
    if frame_mask is not None:
      keep = jnp.repeat(frame_mask.astype(bool), self.num_tokens, axis=-1)
      y = y * keep[..., None].astype(y.dtype)
    return y
