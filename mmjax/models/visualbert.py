"""VisualBERT (Li et al. 2019): one BERT over the concatenation [text; visual].

  text -> word + position + segment-0 embeddings
  regions -> dense(features) + segment-1 embedding + one learned visual position vector
  concat -> LayerNorm -> dropout -> BERT layers over both (padding masked) -> pooler on token 0

As transformers' VisualBertModel without `image_text_alignment`, where every region reads row 0 of
the visual position table: we store only that row (HF keeps `max_position_embeddings` rows).
Departure from the paper: the regions are our ViT's patch tokens, which carry their own position
embeddings, not detector features. `tests/models/test_vl_encoders.py` checks the forward pass
against transformers' VisualBertModel with copied weights.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax import parallel as P
from mmjax.models import family, layers, vl_heads, vl_layers

Array = jax.Array


class VisualBertEncoder(nn.Module):
  """`__call__(text, text_mask, feats, boxes, train, visual_mask=None)` -> dict(text [B, L, D],
  visual [B, N, D], pooled [B, D]). `boxes` are ignored (VisualBERT has no box input).

  Attributes:
    vocab_size / max_length / type_vocab_size: text embedding tables.
    width / depth / num_heads / mlp_dim: the single BERT's shape.
  """
  vocab_size: int
  max_length: int = 512
  type_vocab_size: int = 2
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_dim: Optional[int] = None
  dropout_rate: float = 0.0
  scan: bool = True
  remat: str = "none"
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, text: Array, text_mask: Array, feats: Array, boxes: Array,
               train: bool = False, visual_mask: Optional[Array] = None) -> dict[str, Array]:
    del boxes  # VisualBERT relies on the features alone.
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if self.type_vocab_size < 2:
      raise ValueError("VisualBERT needs type_vocab_size >= 2 (segment 1 marks visual tokens)")
    if visual_mask is None:
      visual_mask = jnp.ones(feats.shape[:2], bool)
    length = text.shape[1]
    txt = vl_layers.TextEmbeddings(self.vocab_size, self.max_length, self.type_vocab_size,
                                   self.width, name="embed", **kw)(text)
    init = layers.with_axes(nn.initializers.normal(0.02), P.VOCAB, P.EMBED)
    visual_type = self.param("visual_type_embed", init, (self.type_vocab_size, self.width),
                             self.param_dtype)
    visual_pos = self.param("visual_posemb", layers.with_axes(nn.initializers.normal(0.02),
                                                              P.EMBED), (self.width,),
                            self.param_dtype)
    vis = (layers.dense(self.width, [None], [P.EMBED], name="visual_proj", **kw)(feats)
           + (visual_type[1] + visual_pos).astype(self.dtype))
    x = jnp.concatenate([txt, vis.astype(txt.dtype)], axis=1)
    x = layers.norm_layer("layernorm", vl_layers.BERT_NORM_EPS, name="ln_embed", **kw)(x)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    keys = vl_layers.key_mask(jnp.concatenate([text_mask != 0, visual_mask != 0], axis=1))
    x = vl_layers.bert_stack(self.depth, width=self.width, num_heads=self.num_heads,
                             mlp_dim=self.mlp_dim, dropout_rate=self.dropout_rate, train=train,
                             scan=self.scan, remat=self.remat, name="layers", **kw)(x, keys)
    pooled = vl_layers.pooler(x, self.width, **kw)
    return {"text": x[:, :length], "visual": x[:, length:], "pooled": pooled}


def encoder_from_config(config: Any, common: dict) -> VisualBertEncoder:
  """A VisualBertEncoder from the `config.model` block of configs/visualbert.py."""
  return VisualBertEncoder(
      vocab_size=config.vocab_size, max_length=config.max_length,
      type_vocab_size=config.type_vocab_size, width=config.width, depth=config.depth,
      num_heads=config.num_heads, mlp_dim=config.mlp_dim, dropout_rate=config.dropout_rate,
      **common)


@family.register("visualbert")
class VisualBert(vl_heads.VisionLanguageFamily):
  """VisualBERT with MLM + ITM pre-training heads or the VQA answer head
  (config.model.objective)."""

  def make_encoder(self, config, common):
    return encoder_from_config(config, common)
