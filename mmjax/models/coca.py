"""CoCa: Contrastive Captioners (Yu et al. 2022), as open_clip builds it.

Image: ViT tokens -> one attentional pooler with `num_queries` (256) learned queries -> LayerNorm;
query 0 is projected for the contrastive loss, queries 1.. feed the captioning decoder.
Text: unimodal causal text layers with an appended CLS token (its final state is the text
embedding). Decoder: multimodal layers, each a causal self-attention block followed by a
cross-attention block over the image tokens, then LayerNorm and a vocabulary projection.
Loss: contrastive (softmax) * 1.0 + captioning cross-entropy * 2.0 (open_clip's CoCaLoss).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mmjax import batch as B
from mmjax import losses
from mmjax import parallel as P
from mmjax.models import family
from mmjax.models import layers
from mmjax.models import text as text_lib
from mmjax.models import two_tower
from mmjax.models import vit as vit_lib

Array = jax.Array


class AttentionalPooler(nn.Module):
  """Learned queries cross-attend to LayerNorm'd context tokens (open_clip AttentionalPooler)."""
  width: int
  num_heads: int = 8
  num_queries: int = 256
  norm_eps: float = 1e-5
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, context: Array) -> Array:
    query = self.param("query", layers.with_axes(nn.initializers.normal(1.0), P.LATENTS, P.EMBED),
                       (self.num_queries, self.width), self.param_dtype)
    norm = lambda name: layers.norm_layer("layernorm", self.norm_eps, self.dtype,
                                          self.param_dtype, name=name)
    context = norm("ln_k")(context)
    q = norm("ln_q")(query.astype(self.dtype))
    q = jnp.broadcast_to(q, (context.shape[0], *q.shape))
    return layers.Attention(self.num_heads, dtype=self.dtype, param_dtype=self.param_dtype,
                            name="attn")(q, context)


class CrossAttentionBlock(nn.Module):
  """x + attn(ln_q(x), ln_kv(ctx)); x + mlp(ln2(x)): open_clip's cross-attention resblock."""
  num_heads: int
  mlp_dim: int
  activation: str = "gelu"
  norm_eps: float = 1e-5
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, context: Array) -> Array:
    norm = lambda name: layers.norm_layer("layernorm", self.norm_eps, self.dtype,
                                          self.param_dtype, name=name)
    x = x + layers.Attention(self.num_heads, dtype=self.dtype, param_dtype=self.param_dtype,
                             name="attn")(norm("ln_q")(x), norm("ln_kv")(context))
    return x + layers.Mlp(self.mlp_dim, self.activation, dtype=self.dtype,
                          param_dtype=self.param_dtype, name="mlp")(norm("ln2")(x))


class DecoderLayer(nn.Module):
  """One multimodal layer: causal self-attention block, then cross-attention block."""
  num_heads: int
  mlp_dim: int
  activation: str = "gelu"
  norm_eps: float = 1e-5
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, image_tokens: Array) -> tuple[Array, None]:
    kw = dict(num_heads=self.num_heads, mlp_dim=self.mlp_dim, activation=self.activation,
              norm_eps=self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype)
    x, _ = layers.TransformerBlock(causal=True, name="self_block", **kw)(x)
    return CrossAttentionBlock(name="cross_block", **kw)(x, image_tokens), None


class MultimodalDecoder(nn.Module):
  """CoCa's captioning decoder: layers of (self, cross) blocks -> LayerNorm -> vocab logits."""
  vocab_size: int = 49408
  width: int = 512
  depth: int = 12
  num_heads: int = 8
  mlp_dim: Optional[int] = None
  activation: str = "gelu"  # MLP activation ('quick_gelu' when open_clip's quick_gelu is set).
  norm_eps: float = 1e-5
  scan: bool = True
  remat: str = "none"
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, tokens: Array, image_tokens: Array) -> Array:
    x = layers.stack_layers(
        DecoderLayer, self.depth, scan=self.scan, remat=self.remat, name="layers",
        num_broadcast_args=1, num_heads=self.num_heads, mlp_dim=self.mlp_dim or 4 * self.width,
        activation=self.activation, norm_eps=self.norm_eps, dtype=self.dtype,
        param_dtype=self.param_dtype)(tokens,
                                                                                image_tokens)
    x = layers.norm_layer("layernorm", self.norm_eps, self.dtype, self.param_dtype,
                          name="ln_final")(x)
    return layers.dense(self.vocab_size, [P.EMBED], [P.VOCAB], use_bias=False, dtype=self.dtype,
                        param_dtype=self.param_dtype,
                        kernel_init=nn.initializers.normal(self.width ** -0.5),
                        name="lm_head")(x)


class CoCa(nn.Module):
  """The CoCa network. `__call__(image, text, train)` -> embeddings, caption logits, scale.

  `text` is [B, L] (L = text context, 76 for the paper size); logits are [B, L - 1, vocab] and
  predict text[:, 1:] (teacher forcing, as open_clip).
  """
  vision: Mapping[str, Any]
  text: Mapping[str, Any]
  decoder: Mapping[str, Any]
  embed_dim: int = 512
  pooler_heads: int = 8
  pooler_queries: int = 256
  init_logit_scale: float = losses.CLIP_INIT_LOGIT_SCALE
  max_logit_scale: Optional[float] = losses.CLIP_MAX_LOGIT_SCALE
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  def setup(self):
    vision = dict(self.vision, pool="none", output_dim=None)
    self.image_tower = vit_lib.ViT(**vision, name="image")
    self.pooler = AttentionalPooler(self.embed_dim, self.pooler_heads, self.pooler_queries,
                                    self.vision.get("norm_eps", 1e-5), self.dtype,
                                    self.param_dtype, name="image_pooler")
    self.ln_pooled = layers.norm_layer("layernorm", self.vision.get("norm_eps", 1e-5),
                                       self.dtype, self.param_dtype, name="image_ln_post")
    self.image_proj = layers.dense(self.embed_dim, [P.EMBED], [None], use_bias=False,
                                   dtype=self.dtype, param_dtype=self.param_dtype,
                                   kernel_init=nn.initializers.normal(self.embed_dim ** -0.5),
                                   name="image_proj")
    self.text_tower = text_lib.TextTransformer(**dict(self.text, embed_cls=True,
                                                      output_dim=self.embed_dim), name="text")
    self.text_decoder = MultimodalDecoder(**self.decoder, name="decoder")
    self.logit_scale = self.param("logit_scale", layers.with_axes(
        nn.initializers.constant(self.init_logit_scale)), (), jnp.float32)

  def encode_image(self, image: Array, train: bool = False) -> tuple[Array, Array]:
    """(normalised contrastive embedding [B, D], decoder image tokens [B, Q - 1, D])."""
    _, tokens = self.image_tower(image, train=train)
    pooled = self.ln_pooled(self.pooler(tokens))
    return losses.l2_normalize(self.image_proj(pooled[:, 0])), pooled[:, 1:]

  def encode_text(self, text: Array, train: bool = False) -> tuple[Array, Array]:
    """(normalised contrastive embedding [B, D], unimodal token states [B, L, width])."""
    pooled, tokens = self.text_tower(text, train=train)
    return losses.l2_normalize(pooled), tokens

  def caption_logits(self, text_tokens: Array, image_tokens: Array) -> Array:
    """Decoder logits from unimodal text states and image tokens."""
    return self.text_decoder(text_tokens, image_tokens)

  def __call__(self, image: Optional[Array] = None, text: Optional[Array] = None,
               train: bool = False) -> dict[str, Array]:
    out = {}
    t = self.logit_scale
    if self.max_logit_scale is not None:
      t = jnp.minimum(t, self.max_logit_scale)
    out["logit_scale"] = jnp.exp(t)
    if image is not None:
      out["image_emb"], image_tokens = self.encode_image(image, train)
    if text is not None:
      out["text_emb"], text_tokens = self.encode_text(text, train)
    if image is not None and text is not None:
      out["logits"] = self.caption_logits(text_tokens[:, :-1], image_tokens)
    return out


@family.register("coca")
class CoCaFamily(family.ModelFamily):
  """CoCa = contrastive loss * contrastive_weight + caption loss * caption_weight."""
  batch_keys = (B.IMAGE, B.TEXT)

  def make_module(self, config: Any) -> nn.Module:
    common = two_tower.common_kwargs(config)
    dtypes = dict(dtype=common["dtype"], param_dtype=common["param_dtype"])
    return CoCa(vision=two_tower.tower_kwargs(config.vision, None, common),
                text=two_tower.tower_kwargs(config.text, None, common),
                decoder=dict(config.decoder, scan=config.scan, remat=config.remat, **dtypes),
                embed_dim=config.embed_dim, pooler_heads=config.pooler_heads,
                pooler_queries=config.pooler_queries, init_logit_scale=config.init_logit_scale,
                max_logit_scale=config.max_logit_scale, **dtypes)

  def dummy_batch(self, batch_size: int) -> dict[str, Array]:
    size = self.config.vision.image_size
    return {B.IMAGE: jnp.zeros((batch_size, size, size, 3), jnp.float32),
            B.TEXT: jnp.zeros((batch_size, self.config.text.context_length - 1), jnp.int32)}

  def predict_embeddings(self, params: Any, batch: Mapping[str, Array]) -> dict[str, Array]:
    """Normalised `image_emb` / `text_emb` for whichever of `image` / `text` the batch has."""
    out = self.module.apply({"params": params}, image=batch.get(B.IMAGE), text=None)
    if B.TEXT in batch:
      out.update(self.module.apply({"params": params}, image=None, text=batch[B.TEXT]))
    return out

  def loss(self, params, batch, rng=None, train=True):
    out = self.apply(params, batch, rng, train=train)
    contrastive, metrics = losses.softmax_contrastive_loss(out["image_emb"], out["text_emb"],
                                                           out["logit_scale"])
    caption = caption_loss(out["logits"], batch[B.TEXT][:, 1:], self.config.text.pad_id)
    loss = (self.config.contrastive_weight * contrastive + self.config.caption_weight * caption)
    metrics.update(caption_loss=caption, logit_scale=out["logit_scale"])
    return loss, metrics


def caption_loss(logits: Array, labels: Array, pad_id: int) -> Array:
  """Mean cross-entropy over non-padding labels (torch CrossEntropyLoss(ignore_index=pad_id))."""
  ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
  weights = (labels != pad_id).astype(jnp.float32)
  return (ce * weights).sum() / jnp.maximum(weights.sum(), 1.0)
