"""LLaVA-1.5's MLP projector (Liu et al. 2023, "Improved Baselines with Visual Instruction
Tuning"): every patch token is mapped to the LM width by two linear layers with a GELU between.

    [B, M, T, N, Dv] --fc1 (Dv -> D), GELU, fc2 (D -> D)--> [B, M, T * N, D]

No token reduction: an image costs as many LM tokens as it has patches (576 for ViT-L/14 at
336 px). LLaVA's `mlp2x_gelu` is `nn.Sequential(Linear(Dv, D), GELU(), Linear(D, D))`, both with
biases; here fc1 / fc2 are its `0` / `2`.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax import parallel as P
from mmjax.models import layers

Array = jax.Array


class MlpProjector(nn.Module):
  """[B, M, T, N, Dv] patch features -> [B, M, T * N, width] visual tokens.

  Attributes:
    width: output width D (the LM width for decoder-only fusion).
    activation: the activation between the layers (LLaVA-1.5: exact GELU).
    dtype / param_dtype: compute and storage dtypes.
  """
  width: int = 32
  activation: str = "gelu"
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, frame_mask: Array | None = None) -> Array:
    """`frame_mask` [B, M, T] (AnyRes `tile_mask`): the tokens of padded tiles come out zero."""
    if x.ndim != 5:
      raise ValueError(f"MlpProjector expects media features [B, M, T, N, D], got {x.shape}")
    b, m, t, n, _ = x.shape
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    # fc1's input axis is the vision width: named `embed` like every other width so that FSDP
    # shards it; its output is the hidden (`mlp`) axis as in a transformer MLP.
    h = layers.dense(self.width, [P.EMBED], [P.MLP], name="fc1", **kw)(x.astype(self.dtype))
    h = layers.get_activation(self.activation)(h)
    y = layers.dense(self.width, [P.MLP], [P.EMBED], name="fc2", **kw)(h)
    if frame_mask is not None:
      y = y * frame_mask[..., None, None].astype(y.dtype)
    return y.reshape(b, m, t * n, self.width)
