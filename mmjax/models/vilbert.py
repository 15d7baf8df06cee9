"""ViLBERT (Lu et al. 2019): two streams joined by co-attentional transformer layers.

  text -> BERT embeddings -> `text_depth` BERT layers
  regions -> LN(fc(features) + fc(5-number box)), with a leading IMG token (the mean region
    feature, box = the whole image) -> `visual_depth` transformer layers (own width/heads)
  `depth` blocks, each: a co-attention layer (text queries attend to visual keys/values and
    visual queries to text keys/values, simultaneously, each direction with its own weights and
    `co_width // co_heads` wide heads; then a feed-forward per stream), then one transformer
    layer per stream (the paper's Co-TRM -> TRM)
  pooled = relu(dense(text[:, 0])) * relu(dense(visual IMG token)) (ViLBERT's 'mul' fusion)

Departure from the paper: the regions are our ViT's patch tokens with their grid cells as boxes
(vl_layers.grid_boxes), not 10-36 Faster R-CNN detections.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax import parallel as P
from mmjax.models import family, layers, vl_heads, vl_layers

Array = jax.Array


class CoAttentionBlock(nn.Module):
  """Co-TRM then TRM on (text [B, L, Dt], visual [B, N, Dv]); returns `((text, visual), None)`.

  With `cross_attention=False` the co-attention sub-layers are skipped and the two streams never
  exchange information (an ablation for tests).
  """
  num_heads: int
  mlp_dim: int
  visual_heads: int
  visual_mlp_dim: int
  co_width: int
  co_heads: int
  dropout_rate: float = 0.0
  deterministic: bool = True
  cross_attention: bool = True
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, streams: tuple[Array, Array], text_mask: Array,
               visual_mask: Array) -> tuple[tuple[Array, Array], None]:
    text, visual = streams
    kw = dict(dropout_rate=self.dropout_rate, deterministic=self.deterministic, dtype=self.dtype,
              param_dtype=self.param_dtype)
    if self.co_width % self.co_heads:
      raise ValueError(f"co_width {self.co_width} is not divisible by co_heads {self.co_heads}")
    if self.cross_attention:
      co = dict(num_heads=self.co_heads, head_dim=self.co_width // self.co_heads, **kw)
      text, visual = (
          vl_layers.PostNormAttention(name="text_co_attn", **co)(text, visual, visual_mask),
          vl_layers.PostNormAttention(name="visual_co_attn", **co)(visual, text, text_mask))
    text = vl_layers.PostNormMlp(self.mlp_dim, name="text_co_ffn", **kw)(text)
    visual = vl_layers.PostNormMlp(self.visual_mlp_dim, name="visual_co_ffn", **kw)(visual)
    block = dict(activation="gelu", norm_eps=vl_layers.BERT_NORM_EPS, post_norm=True, **kw)
    text, _ = layers.TransformerBlock(self.num_heads, self.mlp_dim, name="text_layer",
                                      **block)(text, text_mask)
    visual, _ = layers.TransformerBlock(self.visual_heads, self.visual_mlp_dim,
                                        name="visual_layer", **block)(visual, visual_mask)
    return (text, visual), None


class VilbertEncoder(nn.Module):
  """`__call__(text, text_mask, feats, boxes [B, N, 5], train, visual_mask=None)` ->
  dict(text [B, L, width], visual [B, 1 + N, visual_width] (IMG token first), pooled
  [B, co_width]).

  Attributes:
    vocab_size / max_length / type_vocab_size: text embedding tables.
    width / num_heads / mlp_dim: text stream (BERT) shape.
    visual_width / visual_heads / visual_mlp_dim: visual stream shape (ViLBERT: 1024 / 8 / 1024).
    co_width / co_heads: the co-attention's inner width and heads (ViLBERT: 1024 / 8).
    text_depth / visual_depth: single-stream layers before the first co-attention block.
    depth: co-attention blocks (each Co-TRM + one TRM per stream).
    cross_attention: False drops every co-attention sub-layer.
  """
  vocab_size: int
  max_length: int = 512
  type_vocab_size: int = 2
  width: int = 768
  num_heads: int = 12
  mlp_dim: Optional[int] = None
  visual_width: int = 1024
  visual_heads: int = 8
  visual_mlp_dim: Optional[int] = None
  co_width: int = 1024
  co_heads: int = 8
  text_depth: int = 6
  visual_depth: int = 0
  depth: int = 6
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
    b = feats.shape[0]
    if boxes.shape[-1] != 5:
      raise ValueError(f"ViLBERT reads 5-number boxes (x1, y1, x2, y2, area), got {boxes.shape}")
    if visual_mask is None:
      visual_mask = jnp.ones(feats.shape[:2], bool)
    # The IMG token: mean of the real regions, box = the whole image.
    weights = visual_mask.astype(feats.dtype)[..., None]
    mean = jnp.sum(feats * weights, 1, keepdims=True) / jnp.maximum(
        jnp.sum(weights, 1, keepdims=True), 1.0)
    feats = jnp.concatenate([mean, feats], axis=1)
    whole = jnp.broadcast_to(jnp.asarray([0, 0, 1, 1, 1], boxes.dtype), (b, 1, 5))
    boxes = jnp.concatenate([whole, boxes], axis=1)
    visual_mask = jnp.concatenate([jnp.ones((b, 1), bool), visual_mask != 0], axis=1)
    text_keys, visual_keys = vl_layers.key_mask(text_mask), vl_layers.key_mask(visual_mask)

    txt = vl_layers.TextEmbeddings(self.vocab_size, self.max_length, self.type_vocab_size,
                                   self.width, name="embed", **kw)(text)
    txt = drop(norm("ln_embed")(txt))
    vis = (layers.dense(self.visual_width, [None], [P.EMBED], name="feat_fc", **kw)(feats) +
           layers.dense(self.visual_width, [None], [P.EMBED], name="box_fc", **kw)(
               boxes.astype(feats.dtype)))
    vis = drop(norm("ln_visual_embed")(vis))

    common = dict(dropout_rate=self.dropout_rate, train=train, scan=self.scan, remat=self.remat,
                  **kw)
    txt = vl_layers.bert_stack(self.text_depth, width=self.width, num_heads=self.num_heads,
                               mlp_dim=self.mlp_dim, name="text_layers", **common)(txt, text_keys)
    vis = vl_layers.bert_stack(self.visual_depth, width=self.visual_width,
                               num_heads=self.visual_heads, mlp_dim=self.visual_mlp_dim,
                               name="visual_layers", **common)(vis, visual_keys)
    if self.depth:
      txt, vis = layers.stack_layers(
          CoAttentionBlock, self.depth, scan=self.scan, remat=self.remat, name="co_blocks",
          num_broadcast_args=2, num_heads=self.num_heads, mlp_dim=self.mlp_dim or 4 * self.width,
          visual_heads=self.visual_heads,
          visual_mlp_dim=self.visual_mlp_dim or 4 * self.visual_width, co_width=self.co_width,
          co_heads=self.co_heads, dropout_rate=self.dropout_rate, deterministic=not train,
          cross_attention=self.cross_attention, **kw)((txt, vis), text_keys, visual_keys)
    relu = jax.nn.relu
    pooled = (vl_layers.pooler(txt, self.co_width, relu, name="text_pooler", **kw) *
              vl_layers.pooler(vis, self.co_width, relu, name="visual_pooler", **kw))
    return {"text": txt, "visual": vis, "pooled": pooled}


def encoder_from_config(config: Any, common: dict) -> VilbertEncoder:
  """A VilbertEncoder from the `config.model` block of configs/vilbert.py."""
  return VilbertEncoder(
      vocab_size=config.vocab_size, max_length=config.max_length,
      type_vocab_size=config.type_vocab_size, width=config.width, num_heads=config.num_heads,
      mlp_dim=config.mlp_dim, visual_width=config.visual_width, visual_heads=config.visual_heads,
      visual_mlp_dim=config.visual_mlp_dim, co_width=config.co_width, co_heads=config.co_heads,
      text_depth=config.text_depth, visual_depth=config.visual_depth, depth=config.depth,
      dropout_rate=config.dropout_rate, **common)


@family.register("vilbert")
class Vilbert(vl_heads.VisionLanguageFamily):
  """ViLBERT with MLM + ITM pre-training heads or the VQA answer head (config.model.objective)."""
  box_area = True

  def make_encoder(self, config, common):
    return encoder_from_config(config, common)
