"""BERT-style text encoder (Devlin et al. 2019): the locked text tower of LiT, the Q-Former base.

Word + learned position + token-type embeddings -> LayerNorm -> post-LN transformer layers
(x = ln1(x + attn(x)); x = ln2(x + mlp(x))) -> optional pooler (dense + tanh on the first token).
Sentence embeddings are the attention-masked mean of the final token states, as in
sentence-transformers' all-MiniLM-L6-v2 (which also L2-normalises them).
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax import parallel as P
from mmjax.models import layers

Array = jax.Array


def padding_mask(attention_mask: Array) -> Array:
  """[B, L] (1 = real token, 0 = padding) -> boolean key mask [B, 1, 1, L] for attention."""
  return (attention_mask != 0)[:, None, None, :]


def mean_pool(tokens: Array, attention_mask: Array) -> Array:
  """Mean of the token states [B, L, D] over real tokens (sentence-transformers' mean pooling).

  The count is clamped at 1e-9 as sentence-transformers does, so an all-padding row gives zeros.
  """
  weights = attention_mask.astype(tokens.dtype)[..., None]
  total = jnp.sum(tokens * weights, axis=1)
  return total / jnp.maximum(jnp.sum(weights, axis=1), 1e-9)


def sentence_embedding(tokens: Array, attention_mask: Array, normalize: bool = True) -> Array:
  """Mean-pooled (and by default L2-normalised, as all-MiniLM-L6-v2) sentence embeddings."""
  pooled = mean_pool(tokens, attention_mask)
  if not normalize:
    return pooled
  # torch.nn.functional.normalize: x / max(||x||, 1e-12).
  norm = jnp.linalg.norm(pooled, axis=-1, keepdims=True)
  return pooled / jnp.maximum(norm, 1e-12)


class Bert(nn.Module):
  """BERT encoder; `__call__(text, attention_mask, token_type_ids, train)` -> (pooled, tokens).

  `tokens` are the final hidden states [B, L, width]; `pooled` is tanh(dense(tokens[:, 0])) with
  `pooler=True`, else None. Padding keys (attention_mask == 0) are masked in every layer.

  Attributes:
    vocab_size: rows of the word embedding (30522 for bert-base-uncased's WordPiece).
    max_length: learned positions (BERT: 512).
    type_vocab_size: rows of the token-type (segment) embedding (BERT: 2).
    width / depth / num_heads / mlp_dim: transformer shape (mlp_dim default 4 * width).
    activation: MLP activation ('gelu' is BERT's exact erf GELU).
    norm_eps: LayerNorm epsilon (BERT: 1e-12).
    pooler: add the dense + tanh pooler on the first ([CLS]) token.
    dropout_rate: dropout on embeddings and residual branches in training.
    scan / remat: scan over layers, and the remat policy name (layers.REMAT_POLICIES).
    dtype / param_dtype: compute and storage dtypes.
  """
  vocab_size: int = 30522
  max_length: int = 512
  type_vocab_size: int = 2
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_dim: Optional[int] = None
  activation: str = "gelu"
  norm_eps: float = 1e-12
  pooler: bool = True
  dropout_rate: float = 0.0
  scan: bool = True
  remat: str = "none"
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  def _embed(self, num: int, name: str) -> nn.Embed:
    return nn.Embed(num, self.width, dtype=self.dtype, param_dtype=self.param_dtype,
                    embedding_init=layers.with_axes(nn.initializers.normal(0.02), P.VOCAB,
                                                    P.EMBED), name=name)

  @nn.compact
  def __call__(self, text: Array, attention_mask: Optional[Array] = None,
               token_type_ids: Optional[Array] = None,
               train: bool = False) -> tuple[Optional[Array], Array]:
    b, length = text.shape
    if length > self.max_length:
      raise ValueError(f"text length {length} exceeds the encoder's max_length {self.max_length}")
    if attention_mask is None:
      attention_mask = jnp.ones((b, length), jnp.int32)
    if token_type_ids is None:
      token_type_ids = jnp.zeros((b, length), jnp.int32)
    posemb = self.param("posemb", layers.with_axes(nn.initializers.normal(0.02), P.LENGTH,
                                                   P.EMBED), (self.max_length, self.width),
                        self.param_dtype)
    x = (self._embed(self.vocab_size, "token_embed")(text)
         + self._embed(self.type_vocab_size, "type_embed")(token_type_ids)
         + posemb[:length].astype(self.dtype)[None])
    x = layers.norm_layer("layernorm", self.norm_eps, self.dtype, self.param_dtype,
                          name="ln_embed")(x)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)

    x = layers.stack_layers(
        layers.TransformerBlock, self.depth, scan=self.scan, remat=self.remat, name="blocks",
        num_broadcast_args=1, num_heads=self.num_heads, mlp_dim=self.mlp_dim or 4 * self.width,
        activation=self.activation, norm_eps=self.norm_eps, post_norm=True,
        dropout_rate=self.dropout_rate, deterministic=not train, dtype=self.dtype,
        param_dtype=self.param_dtype)(x, padding_mask(attention_mask))

    pooled = None
    if self.pooler:
      pooled = jnp.tanh(layers.dense(self.width, [P.EMBED], [None], dtype=self.dtype,
                                     param_dtype=self.param_dtype, name="pooler")(x[:, 0]))
    return pooled, x


def from_config(config) -> Bert:
  """A Bert module from a `configs/bert_text.py:bert()` block (+ optional model_common fields)."""
  kwargs = dict(config)
  for key in ("dtype", "param_dtype"):
    if key in kwargs:
      kwargs[key] = layers.dtype_of(kwargs[key])
  return Bert(**kwargs)
