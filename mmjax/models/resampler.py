"""Perceiver resampler (Alayrac et al. 2022, §2.1 and Fig. 4).

Maps a variable number of visual features per media item (patch tokens x frames) to a fixed
number of visual tokens: learned latents cross-attend to the media features, with the keys and
values computed from the concatenation [media features; latents]. Learned time embeddings are
added per frame before the frames are flattened, so a video of T frames and a still image
(T = 1) go through the same module.

    x = media + time_embed[:T]                 # [B, M, T, N, D] -> flatten -> [B, M, T*N, D]
        (+ spatial_embed[:N], optional)
    latents = broadcast(latents)               # [B, M, n, D]
    repeat depth times:
      latents += attn(q = LN(latents), kv = [LN(x); LN(latents)])
      latents += FeedForward(latents)          # LayerNorm, fc1, Squared ReLU, fc2
    return LayerNorm(latents)

Parameter names follow open_flamingo's `PerceiverResampler` (helpers.py): latents, layers.i.0
(PerceiverAttention: norm_media, norm_latents, to_q, to_kv, to_out) -> layers/attn/{norm_media,
norm_latents, query, key + value, out}, layers.i.1 (FeedForward) -> layers/ff/{norm, fc1, fc2},
norm -> norm. `time_embed` corresponds to open_flamingo's `frame_embs` (our T is its F).
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax import parallel as P
from mmjax.models import layers

Array = jax.Array


class PerceiverAttention(layers.Attention):
  """Latents attend to [LN(media); LN(latents)]; no biases (open_flamingo PerceiverAttention).

  Attributes (besides layers.Attention's):
    norm_eps: epsilon of the two LayerNorms.
  """
  qkv_bias: bool = False
  out_bias: bool = False
  norm_eps: float = 1e-5

  @nn.compact
  def __call__(self, media: Array, latents: Array,  # pytype: disable=signature-mismatch
               media_mask: Optional[Array] = None) -> Array:
    """media [B', S, D], latents [B', n, D] -> [B', n, D] (B' = batch x media items).

    `media_mask` [B', S] (optional): False at media positions the latents must not attend to
    (padded AnyRes tiles); the latents themselves are always keys.
    """
    norm = lambda name: layers.norm_layer("layernorm", self.norm_eps, self.dtype,
                                          self.param_dtype, name=name)
    media = norm("norm_media")(media)
    latents = norm("norm_latents")(latents)
    q, k, v = self.project_qkv(latents, jnp.concatenate([media, latents], axis=1))
    mask = None
    if media_mask is not None:
      keys = jnp.concatenate([media_mask.astype(bool),
                              jnp.ones(latents.shape[:2], bool)], axis=1)
      mask = keys[:, None, None, :]
    out = layers.attention(q, k, v, mask=mask, implementation=self.implementation)
    return self.project_out(out, latents.shape[-1])


class PerceiverLayer(nn.Module):
  """One resampler layer: residual PerceiverAttention, then residual FeedForward."""
  num_heads: int
  head_dim: int
  mlp_dim: int
  activation: str = "squared_relu"
  norm_eps: float = 1e-5
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, latents: Array, media: Array, media_mask: Optional[Array] = None
               ) -> tuple[Array, None]:
    latents = latents + PerceiverAttention(
        self.num_heads, head_dim=self.head_dim, norm_eps=self.norm_eps, dtype=self.dtype,
        param_dtype=self.param_dtype, name="attn")(media, latents, media_mask)
    latents = latents + layers.FeedForward(
        self.mlp_dim, self.activation, use_bias=False, norm_eps=self.norm_eps, dtype=self.dtype,
        param_dtype=self.param_dtype, name="ff")(latents)
    return latents, None


class PerceiverResampler(nn.Module):
  """[B, M, T, N, Dv] media features -> [B, M, num_latents, width] visual tokens.

  Attributes:
    width: working width D of latents and output. When the vision features are wider or
      narrower (Dv != D), a bias-free `media_proj` maps them to D first (open_flamingo has
      D = Dv and no projection).
    depth: number of layers.
    num_heads / head_dim: attention shape (inner width num_heads * head_dim).
    num_latents: n, the visual tokens per media item.
    ff_mult: FFW hidden width as a multiple of `width`.
    activation: FFW activation (paper: Squared ReLU; open_flamingo: GELU).
    max_frames: number of learned time embeddings (the most frames T a media item may have);
      0 disables them (open_flamingo's default).
    time_embed_init_std: std of their normal initialisation. open_flamingo's frame_embs are
      torch.randn (1.0), on the scale of the vision tokens, so frames differ from the first step;
      at 0.02 they are ~2% of a token and a short video fine-tune barely moves them.
    max_patches: number of learned spatial embeddings, one per token index n < N, shared by
      every frame; 0 (default, the paper's and open_flamingo's) disables them. The latents see
      the tokens as an unordered set, so without them a token's place is known only from what
      the vision tower left of its own position embedding in its features; a frozen contrastive
      tower keeps little (experiments/results/modalities/motion_probe.md), and motion is a
      change of place across frames.
    spatial_embed_init_std: std of their normal initialisation.
    norm_eps: epsilon of the LayerNorms.
    scan / remat: scan over layers, and the remat policy name (layers.REMAT_POLICIES).
    dtype / param_dtype: compute and storage dtypes.
  """
  width: int = 1536
  depth: int = 6
  num_heads: int = 16
  head_dim: int = 128
  num_latents: int = 64
  ff_mult: int = 4
  activation: str = "squared_relu"
  max_frames: int = 1
  time_embed_init_std: float = 0.02
  max_patches: int = 0
  spatial_embed_init_std: float = 0.02
  norm_eps: float = 1e-5
  scan: bool = True
  remat: str = "none"
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, frame_mask: Optional[Array] = None) -> Array:
    """x [B, M, T, N, Dv] -> [B, M, num_latents, width]; `frame_mask` [B, M, T] (optional, AnyRes
    `tile_mask`): the latents do not attend to the tokens of frames where it is False."""
    if x.ndim != 5:
      raise ValueError(f"PerceiverResampler expects media features [B, M, T, N, D], got "
                       f"{x.shape}")
    b, m, t, n, dv = x.shape
    x = x.astype(self.dtype)
    if dv != self.width:
      x = layers.dense(self.width, [None], [P.EMBED], use_bias=False, dtype=self.dtype,
                       param_dtype=self.param_dtype, name="media_proj")(x)
    if self.max_frames:
      if t > self.max_frames:
        raise ValueError(f"media have {t} frames but the resampler has time embeddings for "
                         f"resampler.max_frames={self.max_frames}")
      time_embed = self.param(
          "time_embed", layers.with_axes(nn.initializers.normal(self.time_embed_init_std), None,
                                         P.EMBED),
          (self.max_frames, self.width), self.param_dtype)
      x = x + time_embed[:t].astype(self.dtype)[:, None, :]
    if self.max_patches:
      if n > self.max_patches:
        raise ValueError(f"media have {n} tokens per frame but the resampler has spatial "
                         f"embeddings for resampler.max_patches={self.max_patches}")
      spatial_embed = self.param(
          "spatial_embed", layers.with_axes(nn.initializers.normal(self.spatial_embed_init_std),
                                            None, P.EMBED),
          (self.max_patches, self.width), self.param_dtype)
      x = x + spatial_embed[:n].astype(self.dtype)
    # Media items are independent: fold them into the batch for rank-4 attention.
    x = x.reshape(b * m, t * n, self.width)
    media_mask = None
    if frame_mask is not None:
      media_mask = jnp.repeat(frame_mask.astype(bool).reshape(b * m, t), n, axis=1)
    # Unit-variance latents as in open_flamingo (torch.randn); they are LayerNormed before use.
    latents = self.param("latents", layers.with_axes(nn.initializers.normal(1.0), P.LATENTS,
                                                     P.EMBED),
                         (self.num_latents, self.width), self.param_dtype)
    latents = jnp.broadcast_to(latents.astype(self.dtype), (b * m, *latents.shape))
    latents = layers.stack_layers(
        PerceiverLayer, self.depth, scan=self.scan, remat=self.remat, name="layers",
        num_broadcast_args=2, num_heads=self.num_heads, head_dim=self.head_dim,
        mlp_dim=self.ff_mult * self.width, activation=self.activation, norm_eps=self.norm_eps,
        dtype=self.dtype, param_dtype=self.param_dtype)(latents, x, media_mask)
    latents = layers.norm_layer("layernorm", self.norm_eps, self.dtype, self.param_dtype,
                                name="norm")(latents)
    return latents.reshape(b, m, self.num_latents, self.width)


def resampler_params_estimate(width: int, depth: int, num_heads: int, head_dim: int,
                              num_latents: int, ff_mult: int, max_frames: int,
                              input_width: Optional[int] = None, max_patches: int = 0) -> int:
  """Closed-form parameter count (checks the module against the paper's Table 5 by hand)."""
  inner = num_heads * head_dim
  attn = 4 * width + 4 * width * inner  # two LayerNorms; q, k, v, out
  ff = 2 * width + 2 * width * ff_mult * width
  proj = 0 if input_width in (None, width) else input_width * width
  return (depth * (attn + ff) + num_latents * width + (max_frames + max_patches) * width
          + 2 * width + proj)
