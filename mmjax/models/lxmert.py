"""LXMERT (Tan & Bansal 2019): language encoder, object-relationship encoder, cross-modality
encoder.

  text -> BERT embeddings -> `l_layers` BERT layers                  (language encoder)
  regions -> (LN(fc(features)) + LN(fc(boxes))) / 2 -> `r_layers`    (object-relationship encoder)
  `x_layers` cross-modality layers, each: cross-attention both ways with ONE shared attention
    sub-layer (language queries visual, visual queries language, both from the layer's input),
    then self-attention per stream, then a feed-forward per stream    (cross-modality encoder)
  pooled = tanh(dense(language[:, 0]))

Departure from the paper: the regions are our ViT's patch tokens with their grid cells as boxes,
not Faster R-CNN detections (vl_layers.grid_boxes); `tests/models/test_vl_encoders.py` checks the
cross-modality layer and the whole encoder against transformers' LxmertModel with copied weights.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.models import family, layers, vl_heads, vl_layers

Array = jax.Array


class CrossModalityLayer(nn.Module):
  """LXMERT's LxmertXLayer on (lang [B, L, D], visual [B, N, D]) -> the same shapes.

  Returns `((lang, visual), None)` so it can be scanned. With `cross_attention=False` the
  cross-attention step is skipped (the streams never meet: an ablation for tests).
  """
  num_heads: int
  mlp_dim: int
  dropout_rate: float = 0.0
  deterministic: bool = True
  cross_attention: bool = True
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, streams: tuple[Array, Array], lang_mask: Array,
               visual_mask: Array) -> tuple[tuple[Array, Array], None]:
    lang, visual = streams
    kw = dict(dropout_rate=self.dropout_rate, deterministic=self.deterministic, dtype=self.dtype,
              param_dtype=self.param_dtype)
    if self.cross_attention:
      cross = vl_layers.PostNormAttention(self.num_heads, name="cross_attn", **kw)
      lang, visual = cross(lang, visual, visual_mask), cross(visual, lang, lang_mask)
    lang = vl_layers.PostNormAttention(self.num_heads, name="lang_self_attn", **kw)(
        lang, mask=lang_mask)
    visual = vl_layers.PostNormAttention(self.num_heads, name="visual_self_attn", **kw)(
        visual, mask=visual_mask)
    lang = vl_layers.PostNormMlp(self.mlp_dim, name="lang_ffn", **kw)(lang)
    visual = vl_layers.PostNormMlp(self.mlp_dim, name="visual_ffn", **kw)(visual)
    return (lang, visual), None


class LxmertEncoder(nn.Module):
  """`__call__(text, text_mask, feats, boxes, train, visual_mask=None)` -> dict(text [B, L, D],
  visual [B, N, D], pooled [B, D]).

  Attributes:
    vocab_size / max_length / type_vocab_size: text embedding tables (see vl_layers.TextEmbeddings).
    width / num_heads / mlp_dim: shared by every layer (mlp_dim default 4 * width).
    l_layers / r_layers / x_layers: language, object-relationship and cross-modality layers
      (LXMERT: 9, 5, 5).
    cross_attention: False drops the cross-attention step of every cross-modality layer.
  """
  vocab_size: int
  max_length: int = 512
  type_vocab_size: int = 2
  width: int = 768
  num_heads: int = 12
  mlp_dim: Optional[int] = None
  l_layers: int = 9
  r_layers: int = 5
  x_layers: int = 5
  dropout_rate: float = 0.0
  cross_attention: bool = True
  scan: bool = True
  remat: str = "none"
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, text: Array, text_mask: Array, feats: Array, boxes: Array,
               train: bool = False, visual_mask: Optional[Array] = None) -> dict[str, Array]:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    drop = nn.Dropout(self.dropout_rate, deterministic=not train)
    norm = lambda name: layers.norm_layer("layernorm", vl_layers.BERT_NORM_EPS, name=name, **kw)
    dense = lambda name: layers.dense(self.width, [None], ["embed"], name=name, **kw)
    if visual_mask is None:
      visual_mask = jnp.ones(feats.shape[:2], bool)
    lang_keys, visual_keys = vl_layers.key_mask(text_mask), vl_layers.key_mask(visual_mask)

    lang = vl_layers.TextEmbeddings(self.vocab_size, self.max_length, self.type_vocab_size,
                                    self.width, name="embed", **kw)(text)
    lang = drop(norm("ln_embed")(lang))
    visual = (norm("ln_feat")(dense("feat_fc")(feats)) +
              norm("ln_box")(dense("box_fc")(boxes.astype(feats.dtype)))) / 2
    visual = drop(visual)

    stack = dict(width=self.width, num_heads=self.num_heads, mlp_dim=self.mlp_dim,
                 dropout_rate=self.dropout_rate, train=train, scan=self.scan, remat=self.remat,
                 **kw)
    lang = vl_layers.bert_stack(self.l_layers, name="lang_layers", **stack)(lang, lang_keys)
    visual = vl_layers.bert_stack(self.r_layers, name="visual_layers", **stack)(visual,
                                                                                visual_keys)
    if self.x_layers:
      lang, visual = layers.stack_layers(
          CrossModalityLayer, self.x_layers, scan=self.scan, remat=self.remat,
          name="cross_layers", num_broadcast_args=2, num_heads=self.num_heads,
          mlp_dim=self.mlp_dim or 4 * self.width, dropout_rate=self.dropout_rate,
          deterministic=not train, cross_attention=self.cross_attention, **kw)(
              (lang, visual), lang_keys, visual_keys)
    pooled = vl_layers.pooler(lang, self.width, **kw)
    return {"text": lang, "visual": visual, "pooled": pooled}


def encoder_from_config(config: Any, common: dict) -> LxmertEncoder:
  """An LxmertEncoder from the `config.model` block of configs/lxmert.py."""
  return LxmertEncoder(
      vocab_size=config.vocab_size, max_length=config.max_length,
      type_vocab_size=config.type_vocab_size, width=config.width, num_heads=config.num_heads,
      mlp_dim=config.mlp_dim, l_layers=config.l_layers, r_layers=config.r_layers,
      x_layers=config.x_layers, dropout_rate=config.dropout_rate, **common)


@family.register("lxmert")
class Lxmert(vl_heads.VisionLanguageFamily):
  """LXMERT with MLM + ITM pre-training heads or the VQA answer head (config.model.objective)."""

  def make_encoder(self, config, common):
    return encoder_from_config(config, common)
