"""Two-tower contrastive models: CLIP (Radford et al. 2021) and SigLIP (Zhai et al. 2023).

An image tower (ViT) and a text tower map their inputs into a shared `embed_dim` space; the
embeddings are L2-normalised and compared with a learned temperature (and, for SigLIP, a bias).
The text tower is CLIP's transformer (`model.text.kind='transformer'`, the default) or LiT's
pretrained BERT with a trainable head (`kind='bert'`, mmjax/models/bert_tower.py).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmjax import batch as B
from mmjax import losses
from mmjax.models import bert_tower
from mmjax.models import family
from mmjax.models import layers
from mmjax.models import text as text_lib
from mmjax.models import vit as vit_lib

Array = jax.Array


def tower_kwargs(config: Any, embed_dim: Optional[int], common: Mapping[str, Any]) -> dict:
  """Module kwargs of a tower from its config block plus the model-wide fields."""
  kwargs = dict(config)
  kind = kwargs.pop("kind", "transformer")
  if kind != "transformer":
    raise ValueError(f"config text.kind={kind!r} is only supported by the clip / siglip "
                     "families; this tower takes 'transformer'")
  kwargs.update(common)
  if embed_dim is None:
    kwargs.pop("project", None)
  elif kwargs.pop("project", True):
    kwargs["output_dim"] = embed_dim
  elif kwargs["width"] != embed_dim:
    raise ValueError(f"a tower with project=False must have width == embed_dim, got width "
                     f"{kwargs['width']} and embed_dim {embed_dim}")
  return kwargs


def common_kwargs(config: Any) -> dict:
  """Model-wide fields shared by every tower: dtypes, scan and remat."""
  return dict(dtype=layers.dtype_of(config.dtype), param_dtype=layers.dtype_of(config.param_dtype),
              scan=config.scan, remat=config.remat)


class TwoTower(nn.Module):
  """Image and text towers plus the learned logit scale (and bias, for SigLIP).

  `text_kind` picks the text tower: 'transformer' (text.TextTransformer) or 'bert'
  (bert_tower.BertTextTower); `text` holds that module's kwargs.

  `__call__(image=None, text=None, train)` returns a dict with the L2-normalised `image_emb`
  and/or `text_emb` [B, embed_dim], `logit_scale` (= exp(t), clamped at `max_logit_scale`)
  and `logit_bias` (0 without a bias).
  """
  vision: Mapping[str, Any]
  text: Mapping[str, Any]
  init_logit_scale: float = losses.CLIP_INIT_LOGIT_SCALE
  init_logit_bias: Optional[float] = None
  max_logit_scale: Optional[float] = losses.CLIP_MAX_LOGIT_SCALE
  text_kind: str = "transformer"

  def setup(self):
    self.image_tower = vit_lib.ViT(**self.vision, name="image")
    if self.text_kind == "bert":
      self.text_tower = bert_tower.BertTextTower(**self.text, name="text")
    else:
      self.text_tower = text_lib.TextTransformer(**self.text, name="text")
    self.logit_scale = self.param("logit_scale", layers.with_axes(
        nn.initializers.constant(self.init_logit_scale)), (), jnp.float32)
    if self.init_logit_bias is not None:
      self.logit_bias = self.param("logit_bias", layers.with_axes(
          nn.initializers.constant(self.init_logit_bias)), (), jnp.float32)

  def embed_image(self, image: Array, train: bool = False) -> Array:
    """L2-normalised image embeddings [B, embed_dim]."""
    return losses.l2_normalize(self.image_tower(image, train=train)[0])

  def embed_text(self, text: Array, train: bool = False) -> Array:
    """L2-normalised text embeddings [B, embed_dim]."""
    return losses.l2_normalize(self.text_tower(text, train=train)[0])

  def scale_and_bias(self) -> tuple[Array, Array]:
    """exp(t) clamped at exp(max_logit_scale), and the bias b (0 for CLIP)."""
    t = self.logit_scale
    if self.max_logit_scale is not None:
      t = jnp.minimum(t, self.max_logit_scale)
    bias = self.logit_bias if self.init_logit_bias is not None else jnp.zeros((), jnp.float32)
    return jnp.exp(t), bias

  def __call__(self, image: Optional[Array] = None, text: Optional[Array] = None,
               train: bool = False, text_neg: Optional[Array] = None) -> dict[str, Array]:
    out = {}
    if image is not None:
      out["image_emb"] = self.embed_image(image, train)
    if text is not None and text_neg is not None:
      # One pass of the text tower over the captions and their hard negatives.
      both = self.embed_text(jnp.concatenate([text, text_neg]), train)
      out["text_emb"], out["text_neg_emb"] = jnp.split(both, 2)
    elif text is not None:
      out["text_emb"] = self.embed_text(text, train)
    out["logit_scale"], out["logit_bias"] = self.scale_and_bias()
    return out


class _TwoTowerFamily(family.ModelFamily):
  """Shared network/loss plumbing of CLIP and SigLIP. A batch with `text_neg` (one hard-negative
  caption per row, data.hard_negatives) adds those texts as negatives of every image."""
  batch_keys = (B.IMAGE, B.TEXT, B.TEXT_NEG)

  def make_module(self, config: Any) -> nn.Module:
    common = common_kwargs(config)
    kind = bert_tower.text_kind(config.text)
    text_kwargs = (bert_tower.tower_kwargs if kind == "bert" else tower_kwargs)(
        config.text, config.embed_dim, common)
    return TwoTower(
        vision=tower_kwargs(config.vision, config.embed_dim, common), text=text_kwargs,
        init_logit_scale=config.init_logit_scale, init_logit_bias=config.init_logit_bias,
        max_logit_scale=config.max_logit_scale, text_kind=kind)

  def check_init_fields(self, dst: str, fields: Mapping[str, Any], source: str) -> None:
    """A pretrained BERT for `text/bert` must have the architecture of `model.text` (shapes are
    checked later; this catches what shapes cannot: activation, norm_eps, heads)."""
    if dst != "text/bert" or bert_tower.text_kind(self.config.text) != "bert":
      raise ValueError(f"init_from {dst}={source}: a pretrained BERT can only initialise the "
                       "text tower of a model.text.kind='bert' model (DST 'text/bert')")
    text = self.config.text
    ours = dict(text, mlp_dim=text.mlp_dim or 4 * text.width)  # None means 4 * width
    for key, value in fields.items():
      if key != "pooler" and ours.get(key) != value:
        raise ValueError(f"init_from {dst}={source}: the checkpoint has {key}={value!r} but "
                         f"config model.text.{key}={text.get(key)!r}")

  def dummy_batch(self, batch_size: int) -> dict[str, Array]:
    size = self.config.vision.image_size
    return {B.IMAGE: jnp.zeros((batch_size, size, size, 3), jnp.float32),
            B.TEXT: jnp.zeros((batch_size, self.config.text.context_length), jnp.int32)}

  def predict_embeddings(self, params: Any, batch: Mapping[str, Array]) -> dict[str, Array]:
    """Normalised `image_emb` / `text_emb` for whichever of `image` / `text` the batch has."""
    return self.module.apply({"params": params}, image=batch.get(B.IMAGE),
                             text=batch.get(B.TEXT), train=False)

  def contrastive(self, out: Mapping[str, Array]) -> tuple[Array, dict[str, Array]]:
    raise NotImplementedError

  def loss(self, params, batch, rng=None, train=True):
    out = self.apply(params, batch, rng, train=train)
    loss, metrics = self.contrastive(out)
    metrics["logit_scale"] = out["logit_scale"]
    return loss, metrics


@family.register("clip")
class CLIP(_TwoTowerFamily):
  """CLIP: softmax InfoNCE, temperature initialised at 0.07 and clamped at 1/100."""

  def contrastive(self, out):
    return losses.softmax_contrastive_loss(out["image_emb"], out["text_emb"], out["logit_scale"],
                                           out.get("text_neg_emb"))


@family.register("siglip")
class SigLIP(_TwoTowerFamily):
  """SigLIP: pairwise sigmoid loss with t' = log 10 and b = -10 at init."""

  def contrastive(self, out):
    chunks = self.config.get("sigmoid_chunks", 1)
    if "text_neg_emb" in out:
      return losses.sigmoid_contrastive_loss(out["image_emb"], out["text_emb"],
                                             out["logit_scale"], out["logit_bias"],
                                             out["text_neg_emb"])
    if chunks > 1:
      loss = losses.chunked_sigmoid_contrastive_loss(out["image_emb"], out["text_emb"],
                                                     out["logit_scale"], out["logit_bias"], chunks)
      return loss, {"contrastive_loss": loss}
    return losses.sigmoid_contrastive_loss(out["image_emb"], out["text_emb"], out["logit_scale"],
                                           out["logit_bias"])
