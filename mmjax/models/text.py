"""Text towers of two-tower models: CLIP's (causal, EOT pooling), SigLIP's (bidirectional,
last-token pooling, projection with bias) and CoCa's unimodal text encoder (appended CLS token).

Mirrors open_clip's `TextTransformer`: token embedding + learned positions -> pre-LN blocks ->
final LayerNorm -> pooling -> projection.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax import parallel as P
from mmjax.models import layers

Array = jax.Array

POOLS = ("argmax", "last", "first", "eos", "none")


def cls_attention_mask(text: Array, pad_id: int, correct: bool = False) -> Array:
  """Causal mask over text + an appended CLS token with padding keys masked, as in open_clip.

  open_clip (3.x, `correct_cls_mask=False`, the layout its CoCa weights were trained with) builds
  the key-validity row as `[True, text != pad]`: shifted by one, so key j >= 1 is visible iff
  token j - 1 is not padding. `correct=True` gives `[text != pad, True]`. Both are combined with
  the causal mask for every query row. Returns [B, 1, L + 1, L + 1] booleans.
  """
  b, length = text.shape
  n = length + 1
  valid = text != pad_id
  ones = jnp.ones((b, 1), bool)
  keys = jnp.concatenate([valid, ones] if correct else [ones, valid], axis=1)  # [B, L + 1]
  causal = jnp.tril(jnp.ones((n, n), bool))
  return (causal[None] & keys[:, None, :])[:, None]


class TextTransformer(nn.Module):
  """Transformer text encoder; `__call__(text, train)` returns `(pooled, tokens)`.

  Attributes:
    vocab_size: rows of the token embedding.
    context_length: number of learned positions (text length; CoCa adds one for its CLS).
    width / depth / num_heads / mlp_dim: transformer shape (mlp_dim default 4 * width).
    activation: MLP activation ('gelu', or 'quick_gelu' for OpenAI weights).
    causal: causal self-attention (CLIP, CoCa) or bidirectional (SigLIP).
    pool: 'argmax' (token with the largest id: CLIP's EOT), 'last', 'first', 'eos' (first
      `eos_id`), 'none' (no pooled output).
    eos_id: token id for pool='eos'.
    embed_cls: append a learned CLS token and pool it (CoCa); its final norm is applied to the
      pooled vector only, and `tokens` are left un-normed, as in open_clip.
    pad_id: padding id (padding keys are masked when embed_cls is set).
    correct_cls_mask: with embed_cls, use the unshifted padding mask (see cls_attention_mask);
      False reproduces open_clip's CoCa.
    norm_eps: LayerNorm epsilon (open_clip 1e-5; SigLIP 1e-6).
    output_dim: projection width; None for no projection.
    proj_bias: bias on the projection (SigLIP yes, CLIP no).
  """
  vocab_size: int = 49408
  context_length: int = 77
  width: int = 512
  depth: int = 12
  num_heads: int = 8
  mlp_dim: Optional[int] = None
  activation: str = "gelu"
  causal: bool = True
  pool: str = "argmax"
  eos_id: int = 49407
  embed_cls: bool = False
  pad_id: int = 0
  correct_cls_mask: bool = False
  norm_eps: float = 1e-5
  output_dim: Optional[int] = 512
  proj_bias: bool = False
  dropout_rate: float = 0.0
  scan: bool = True
  remat: str = "none"
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, text: Array, train: bool = False) -> tuple[Optional[Array], Array]:
    if self.pool not in POOLS:
      raise ValueError(f"unknown text pool {self.pool!r}; choose one of {POOLS}")
    b, length = text.shape
    n = length + (1 if self.embed_cls else 0)
    if n > self.context_length:
      raise ValueError(f"text length {length} exceeds the tower's context_length "
                       f"{self.context_length}{' (with the CLS token)' if self.embed_cls else ''}")
    embed = nn.Embed(self.vocab_size, self.width, dtype=self.dtype, param_dtype=self.param_dtype,
                     embedding_init=layers.with_axes(nn.initializers.normal(0.02), P.VOCAB,
                                                     P.EMBED), name="token_embed")
    x = embed(text)
    if self.embed_cls:
      cls = self.param("cls", layers.with_axes(nn.initializers.normal(0.01), P.EMBED),
                       (self.width,), self.param_dtype)
      x = jnp.concatenate([x, jnp.broadcast_to(cls.astype(self.dtype), (b, 1, self.width))], 1)
    posemb = self.param("posemb", layers.with_axes(nn.initializers.normal(0.01), P.LENGTH,
                                                   P.EMBED), (self.context_length, self.width),
                        self.param_dtype)
    x = x + posemb[:n].astype(self.dtype)[None]
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)

    mask, is_causal = None, self.causal
    if self.embed_cls:
      mask, is_causal = cls_attention_mask(text, self.pad_id, self.correct_cls_mask), False
    blocks = layers.stack_layers(
        layers.TransformerBlock, self.depth, scan=self.scan, remat=self.remat, name="blocks",
        num_broadcast_args=1, num_heads=self.num_heads, mlp_dim=self.mlp_dim or 4 * self.width,
        activation=self.activation, norm_eps=self.norm_eps, causal=is_causal,
        dropout_rate=self.dropout_rate, deterministic=not train, dtype=self.dtype,
        param_dtype=self.param_dtype)
    x = blocks(x, mask)

    ln_final = layers.norm_layer("layernorm", self.norm_eps, self.dtype, self.param_dtype,
                                 name="ln_final")
    if self.embed_cls:
      pooled, tokens = ln_final(x[:, -1]), x[:, :-1]
    else:
      x = ln_final(x)
      tokens = x
      pooled = self._pool(x, text)
    if pooled is not None and self.output_dim is not None:
      pooled = layers.dense(self.output_dim, [P.EMBED], [None], use_bias=self.proj_bias,
                            dtype=self.dtype, param_dtype=self.param_dtype,
                            kernel_init=nn.initializers.normal(self.width ** -0.5),
                            name="proj")(pooled)
    return pooled, tokens

  def _pool(self, x: Array, text: Array) -> Optional[Array]:
    """The pooled vector [B, width] chosen by `self.pool`."""
    if self.pool == "none":
      return None
    if self.pool == "first":
      return x[:, 0]
    if self.pool == "last":
      return x[:, -1]
    if self.pool == "argmax":
      idx = jnp.argmax(text, axis=-1)
    else:  # 'eos': the first eos_id (the last position if a row has none).
      is_eos = text == self.eos_id
      idx = jnp.where(is_eos.any(-1), jnp.argmax(is_eos, axis=-1), text.shape[1] - 1)
    return jnp.take_along_axis(x, idx[:, None, None], axis=1)[:, 0]
