"""A plain Transformer over the patch tokens: the "Transformer" row of the Flamingo paper's
Table 3 resampler ablation (Alayrac et al. 2022, §3.3; Perceiver resampler 70.7 overall vs
vanilla Transformer 66.7 vs MLP 66.6).

    [B, M, T, N, Dv] --Linear(Dv, D) + time embedding--> [B*M, T*N, D]
    --depth x pre-LN self-attention + MLP, final LayerNorm--> [B, M, T * N, D]

Unlike the resampler it keeps every token (no learned latents), so the LM sees T * N visual
tokens per media item and its cross-attention cost grows with the patch count; with the same
depth and width its parameter count matches the resampler's up to the latents.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax import parallel as P
from mmjax.models import layers

Array = jax.Array


class TransformerConnector(nn.Module):
  """[B, M, T, N, Dv] patch features -> [B, M, T * N, width].

  Attributes:
    width: token width D (the LM width for decoder-only fusion).
    depth / num_heads / mlp_dim: the Transformer's layers, heads and MLP hidden width.
    activation: MLP activation (the resampler's Squared ReLU by default, like for like).
    max_frames: learned time embeddings (frames per media item); 0 disables them.
    norm_eps: LayerNorm epsilon.
    scan / remat: scan over layers and its remat policy (layers.stack_layers).
    dtype / param_dtype: compute and storage dtypes.
  """
  width: int = 32
  depth: int = 1
  num_heads: int = 2
  mlp_dim: int = 64
  activation: str = "squared_relu"
  max_frames: int = 2
  norm_eps: float = 1e-5
  scan: bool = True
  remat: str = "none"
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, frame_mask: Array | None = None) -> Array:
    """`frame_mask` [B, M, T] (AnyRes `tile_mask`): no token attends to the tokens of padded
    tiles, and theirs come out zero."""
    if x.ndim != 5:
      raise ValueError(f"TransformerConnector expects media features [B, M, T, N, D], got "
                       f"{x.shape}")
    b, m, t, n, _ = x.shape
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    # Input axis left unnamed: `embed` may appear once per weight (see connectors/__init__).
    h = layers.dense(self.width, [None], [P.EMBED], name="proj", **kw)(x.astype(self.dtype))
    if self.max_frames:
      if t > self.max_frames:
        raise ValueError(f"media have {t} frames but the transformer connector has time "
                         f"embeddings for transformer.max_frames={self.max_frames}")
      time = self.param("time_embed", layers.with_axes(nn.initializers.normal(0.02), None,
                                                       P.EMBED),
                        (self.max_frames, self.width), self.param_dtype)
      h = h + time[:t].astype(self.dtype)[None, None, :, None, :]
    h = h.reshape(b * m, t * n, self.width)
    keys = None
    if frame_mask is not None:
      keys = jnp.repeat(frame_mask.astype(bool).reshape(b * m, t), n, axis=1)
    h = layers.stack_layers(
        layers.TransformerBlock, self.depth, scan=self.scan, remat=self.remat, name="blocks",
        num_broadcast_args=1, num_heads=self.num_heads, mlp_dim=self.mlp_dim,
        activation=self.activation, norm_eps=self.norm_eps, **kw)(
            h, None if keys is None else keys[:, None, None, :])
    h = layers.norm_layer("layernorm", self.norm_eps, self.dtype, self.param_dtype,
                          name="final_norm")(h)
    if keys is not None:
      h = h * keys[..., None].astype(h.dtype)
    return h.reshape(b, m, t * n, self.width)
