"""Layers shared by the pre-LLM vision-language encoders (ViLBERT, LXMERT, VisualBERT).

BERT-style pieces in the post-LN form all three papers inherit from BERT (Devlin et al. 2019):
word + position + segment embeddings, an attention sub-layer `LN(x + attn(x, ctx))` whose keys and
values may come from the other modality (the co-/cross-attention of ViLBERT and LXMERT), and a
feed-forward sub-layer `LN(x + mlp(x))`. Also the "regions" our encoders see: the papers feed
Faster R-CNN region features with their boxes; we have no detector, so each ViT patch is a region
and its box is its grid cell (`grid_boxes`).
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmjax import parallel as P
from mmjax.models import layers

Array = jax.Array

# BERT's LayerNorm epsilon, kept by ViLBERT, LXMERT and VisualBERT.
BERT_NORM_EPS = 1e-12


def key_mask(mask: Array) -> Array:
  """[B, S] (True / 1 = attend) -> boolean key mask [B, 1, 1, S] for layers.attention."""
  return (mask != 0)[:, None, None, :]


def grid_boxes(rows: int, cols: int, with_area: bool = False) -> np.ndarray:
  """Normalised (x1, y1, x2, y2[, area]) boxes [rows * cols, 4 or 5] of a patch grid, row-major.

  The stand-in for detector boxes: LXMERT reads 4 box coordinates, ViLBERT 5 (plus the area).
  """
  ys, xs = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
  x1, y1 = xs.reshape(-1) / cols, ys.reshape(-1) / rows
  x2, y2 = x1 + 1.0 / cols, y1 + 1.0 / rows
  boxes = [x1, y1, x2, y2] + ([(x2 - x1) * (y2 - y1)] if with_area else [])
  return np.stack(boxes, axis=-1).astype(np.float32)


class TextEmbeddings(nn.Module):
  """Word + learned position + segment (token-type) embeddings, summed (no norm: callers add it,
  VisualBERT after appending the visual tokens).

  The word table has `vocab_size + 1` rows: the last row is the `[MASK]` token of masked language
  modelling (`mask_id == vocab_size`), which our tokenizers do not reserve. Parameter names follow
  mmjax/models/bert.py.

  Attributes:
    vocab_size: ids the tokenizer produces (the [MASK] row comes on top).
    max_length: learned positions.
    type_vocab_size: segment rows (BERT: 2).
    width: embedding width.
  """
  vocab_size: int
  max_length: int
  type_vocab_size: int
  width: int
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  def _embed(self, num: int, name: str) -> nn.Embed:
    return nn.Embed(num, self.width, dtype=self.dtype, param_dtype=self.param_dtype,
                    embedding_init=layers.with_axes(nn.initializers.normal(0.02), P.VOCAB,
                                                    P.EMBED), name=name)

  @nn.compact
  def __call__(self, text: Array, token_type_ids: Optional[Array] = None) -> Array:
    length = text.shape[1]
    if length > self.max_length:
      raise ValueError(f"text length {length} exceeds the encoder's max_length {self.max_length}")
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(text)
    posemb = self.param("posemb", layers.with_axes(nn.initializers.normal(0.02), P.LENGTH,
                                                   P.EMBED), (self.max_length, self.width),
                        self.param_dtype)
    return (self._embed(self.vocab_size + 1, "token_embed")(text)
            + self._embed(self.type_vocab_size, "type_embed")(token_type_ids)
            + posemb[:length].astype(self.dtype)[None])


class PostNormAttention(nn.Module):
  """`LN(x + dropout(attn(x, ctx)))`: BERT's attention sub-layer; with `ctx` from the other
  stream it is ViLBERT's co-attention / LXMERT's cross-attention (queries from x, keys and values
  from ctx; ctx may be wider or narrower than x).

  Attributes:
    num_heads: attention heads.
    head_dim: per-head width (default: width of x // num_heads; ViLBERT's co-attention uses its
      own `bi_hidden_size // heads`).
    norm_eps / dropout_rate / deterministic: the residual's LayerNorm and dropout.
  """
  num_heads: int
  head_dim: Optional[int] = None
  norm_eps: float = BERT_NORM_EPS
  dropout_rate: float = 0.0
  deterministic: bool = True
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, ctx: Optional[Array] = None,
               mask: Optional[Array] = None) -> Array:
    y = layers.Attention(self.num_heads, head_dim=self.head_dim, out_features=x.shape[-1],
                         dtype=self.dtype, param_dtype=self.param_dtype, name="attn")(
                             x, ctx, mask=mask)
    y = nn.Dropout(self.dropout_rate, deterministic=self.deterministic)(y)
    return layers.norm_layer("layernorm", self.norm_eps, self.dtype, self.param_dtype,
                             name="ln")(x + y)


class PostNormMlp(nn.Module):
  """`LN(x + dropout(fc2(act(fc1(x)))))`: BERT's feed-forward sub-layer."""
  mlp_dim: int
  activation: str = "gelu"
  norm_eps: float = BERT_NORM_EPS
  dropout_rate: float = 0.0
  deterministic: bool = True
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    y = layers.Mlp(self.mlp_dim, self.activation, dtype=self.dtype, param_dtype=self.param_dtype,
                   name="mlp")(x)
    y = nn.Dropout(self.dropout_rate, deterministic=self.deterministic)(y)
    return layers.norm_layer("layernorm", self.norm_eps, self.dtype, self.param_dtype,
                             name="ln")(x + y)


def bert_stack(depth: int, *, width: int, num_heads: int, mlp_dim: Optional[int],
               dropout_rate: float, train: bool, scan: bool, remat: str, name: str,
               dtype: layers.Dtype, param_dtype: layers.Dtype):
  """`f(x, key_mask) -> x`: `depth` post-LN BERT layers (layers.TransformerBlock), or the identity
  for depth 0 (an encoder without that stage, e.g. ViLBERT with no text-only layers)."""
  if depth == 0:
    return lambda x, mask: x
  return layers.stack_layers(
      layers.TransformerBlock, depth, scan=scan, remat=remat, name=name, num_broadcast_args=1,
      num_heads=num_heads, mlp_dim=mlp_dim or 4 * width, activation="gelu",
      norm_eps=BERT_NORM_EPS, post_norm=True, dropout_rate=dropout_rate,
      deterministic=not train, dtype=dtype, param_dtype=param_dtype)


def pooler(x: Array, width: int, activation=jnp.tanh, name: str = "pooler",
           dtype: layers.Dtype = jnp.float32, param_dtype: layers.Dtype = jnp.float32) -> Array:
  """BERT's pooler: activation(dense(first token)) -> [B, width]. Call inside a compact method."""
  return activation(layers.dense(width, [P.EMBED], [None], dtype=dtype, param_dtype=param_dtype,
                                 name=name)(x[:, 0]))
