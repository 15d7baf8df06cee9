"""Pre-training and VQA heads around a two-stream or single-stream vision-language encoder, and
the model-family plumbing ViLBERT, LXMERT and VisualBERT share.

`VisionLanguageModel` runs our ViT over the image (its patch tokens are the "regions", see
vl_layers.grid_boxes), hands text + regions to an encoder (vilbert.py, lxmert.py, visualbert.py)
and puts heads on its outputs:
  objective='pretrain': masked language modelling with vision (BERT's 15% corruption: 80% [MASK],
    10% random token, 10% unchanged; predicted from the text stream) and image-text matching (a
    2-way classifier on the pooled output; half the rows get another row's image, by rolling the
    batch, ViLBERT/LXMERT's mismatched pairs). MLM counts only on matched rows, as in LXMERT.
  objective='vqa': an answer classifier over the training split's answer vocabulary (LXMERT's
    2-layer answer head), softmax cross-entropy on `labels`; labels of -1 (answers outside the
    vocabulary) are left out of the loss and counted wrong in `vqa_accuracy`.
"""

from __future__ import annotations

import abc
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mmjax import batch as B
from mmjax import parallel as P
from mmjax.models import family, layers, vl_layers
from mmjax.models import vit as vit_lib

Array = jax.Array
OBJECTIVES = ("pretrain", "vqa")


class MlmHead(nn.Module):
  """BERT's LM prediction head: dense -> GELU -> LayerNorm -> vocabulary logits (no [MASK] row)."""
  vocab_size: int
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = layers.dense(x.shape[-1], [P.EMBED], [None], name="transform", **kw)(x)
    h = layers.norm_layer("layernorm", vl_layers.BERT_NORM_EPS, name="ln", **kw)(
        layers.get_activation("gelu")(h))
    return layers.dense(self.vocab_size, [P.EMBED], [P.VOCAB], name="decoder", **kw)(h)


class AnswerHead(nn.Module):
  """LXMERT's answer head: dense(2w) -> GELU -> LayerNorm -> dense(num_answers)."""
  num_answers: int
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    h = layers.dense(2 * x.shape[-1], [P.EMBED], [P.MLP], name="fc1", **kw)(x)
    h = layers.norm_layer("layernorm", vl_layers.BERT_NORM_EPS, name="ln", **kw)(
        layers.get_activation("gelu")(h))
    return layers.dense(self.num_answers, [P.MLP], [None], name="fc2", **kw)(h)


class VisionLanguageModel(nn.Module):
  """ViT patch features -> `encoder` (text + regions) -> heads of `objective`.

  `__call__(image, text, train)` returns the encoder's dict (`text` [B, L, Dt], `visual`
  [B, N, Dv], `pooled` [B, Dp]) plus `mlm_logits` [B, L, V] and `itm_logits` [B, 2]
  (pretrain) or `vqa_logits` [B, num_answers] (vqa).

  Attributes:
    encoder: the fusion encoder, called as encoder(text, text_mask, feats, boxes, train=...).
    vision: keyword arguments of the ViT (pool 'gap', no class token, no projection).
    vocab_size / pad_id: tokenizer ids (padding is never attended).
    objective: 'pretrain' (MLM + ITM heads) or 'vqa' (answer head).
    num_answers: rows of the answer classifier.
    blind: replace every image by zeros (mid-grey) before the ViT: the text-only baseline, the
      same network that can only read the question.
    box_area: give the encoder 5-number boxes with the area (ViLBERT) instead of 4 (LXMERT).
  """
  encoder: nn.Module
  vision: Mapping[str, Any]
  vocab_size: int
  pad_id: int = 0
  objective: str = "pretrain"
  num_answers: int = 2
  blind: bool = False
  box_area: bool = False
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, image: Array, text: Array, train: bool = False) -> dict[str, Array]:
    if self.objective not in OBJECTIVES:
      raise ValueError(f"model.objective must be one of {OBJECTIVES}, got {self.objective!r}")
    if self.blind:
      image = jnp.zeros_like(image)
    vit = vit_lib.ViT(**self.vision, name="vision")
    _, feats = vit(image, train=train)
    rows, cols = vit.grid(image.shape[1])
    boxes = jnp.broadcast_to(vl_layers.grid_boxes(rows, cols, self.box_area),
                             (image.shape[0], rows * cols, 5 if self.box_area else 4))
    out = dict(self.encoder(text, text != self.pad_id, feats, boxes, train=train))
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    if self.objective == "pretrain":
      out["mlm_logits"] = MlmHead(self.vocab_size, name="mlm_head", **kw)(out["text"])
      out["itm_logits"] = layers.dense(2, [P.EMBED], [None], name="itm_head", **kw)(out["pooled"])
    else:
      out["vqa_logits"] = AnswerHead(self.num_answers, name="answer_head", **kw)(out["pooled"])
    return out


def mask_tokens(rng: Array, text: Array, *, vocab_size: int, special_ids: tuple[int, ...],
                probability: float = 0.15) -> tuple[Array, Array]:
  """BERT's MLM corruption of `text` [B, L]: (corrupted text, bool [B, L] of predicted tokens).

  Each non-special token is picked with `probability`; a picked token becomes [MASK]
  (id `vocab_size`) with p 0.8, a random token with p 0.1, or stays with p 0.1.
  """
  pick_rng, kind_rng, random_rng = jax.random.split(rng, 3)
  real = jnp.ones(text.shape, bool)
  for i in special_ids:
    real &= text != i
  picked = real & (jax.random.uniform(pick_rng, text.shape) < probability)
  kind = jax.random.uniform(kind_rng, text.shape)
  random_ids = jax.random.randint(random_rng, text.shape, 0, vocab_size, text.dtype)
  corrupted = jnp.where(picked & (kind < 0.8), vocab_size, text)
  corrupted = jnp.where(picked & (kind >= 0.8) & (kind < 0.9), random_ids, corrupted)
  return corrupted, picked


def mismatch_images(rng: Array, image: Array, probability: float = 0.5) -> tuple[Array, Array]:
  """ITM negatives: each row, with `probability`, gets the image of another row (the batch rolled
  by a random shift in [1, B)). Returns (images, int32 labels [B]: 1 = matched, 0 = not)."""
  b = image.shape[0]
  if b < 2:
    raise ValueError("image-text matching needs a batch of at least 2 rows to draw negatives")
  swap_rng, shift_rng = jax.random.split(rng)
  swapped = jax.random.uniform(swap_rng, (b,)) < probability
  shift = jax.random.randint(shift_rng, (), 1, b)
  others = jnp.roll(image, shift, axis=0)
  images = jnp.where(swapped[:, None, None, None], others, image)
  return images, (~swapped).astype(jnp.int32)


def _masked_mean(values: Array, weights: Array) -> Array:
  return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


class VisionLanguageFamily(family.ModelFamily):
  """Family plumbing of the vision-language encoders; subclasses give `make_encoder`.

  Batch: `image` + `text` (pretrain: the caption task's rows; vqa: the `vqa_class` task's rows,
  question in `text`, answer index in `labels`).
  """
  batch_keys = (B.IMAGE, B.TEXT, B.LABELS)
  box_area = False  # ViLBERT reads 5-number boxes.

  @abc.abstractmethod
  def make_encoder(self, config: Any, common: dict) -> nn.Module:
    """The fusion encoder module from `config.model` (common: dtypes, scan, remat)."""

  def make_module(self, config: Any) -> nn.Module:
    if config.objective not in OBJECTIVES:
      raise ValueError(f"model.objective must be one of {OBJECTIVES}, got {config.objective!r}")
    dtype, param_dtype = layers.dtype_of(config.dtype), layers.dtype_of(config.param_dtype)
    common = dict(dtype=dtype, param_dtype=param_dtype, scan=config.scan, remat=config.remat)
    vision = dict(config.vision)
    if vision.pop("project", False):
      raise ValueError("model.vision.project must be False: the encoder reads the ViT's patch "
                       "tokens, not a pooled projection")
    vision.update(common)
    return VisionLanguageModel(
        encoder=self.make_encoder(config, common), vision=vision, vocab_size=config.vocab_size,
        pad_id=config.pad_id, objective=config.objective, num_answers=config.num_answers,
        blind=config.blind, box_area=self.box_area, dtype=dtype, param_dtype=param_dtype)

  def module_inputs(self, batch: Mapping[str, Array]) -> dict[str, Array]:
    return {B.IMAGE: batch[B.IMAGE], B.TEXT: batch[B.TEXT]}

  def dummy_batch(self, batch_size: int) -> dict[str, Array]:
    size = self.config.vision.image_size
    out = {B.IMAGE: jnp.zeros((batch_size, size, size, 3), jnp.float32),
           B.TEXT: jnp.zeros((batch_size, self.config.max_length), jnp.int32)}
    if self.config.objective == "vqa":
      out[B.LABELS] = jnp.zeros((batch_size,), jnp.int32)
    return out

  def predict_answers(self, params: Any, batch: Mapping[str, Array]) -> Array:
    """Answer logits [B, num_answers] (objective 'vqa')."""
    return self.apply(params, batch)["vqa_logits"]

  def loss(self, params, batch, rng=None, train=True):
    if self.config.objective == "vqa":
      return self._vqa_loss(params, batch, rng, train)
    return self._pretrain_loss(params, batch, rng, train)

  def _vqa_loss(self, params, batch, rng, train):
    logits = self.apply(params, batch, rng, train=train)["vqa_logits"].astype(jnp.float32)
    labels = batch[B.LABELS]
    known = labels >= 0
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(known, labels, 0))
    loss = _masked_mean(nll, known.astype(jnp.float32))
    correct = (jnp.argmax(logits, -1) == labels) & known
    return loss, {"vqa_loss": loss, "vqa_accuracy": jnp.mean(correct.astype(jnp.float32))}

  def _pretrain_loss(self, params, batch, rng, train):
    # Evaluation (rng None) uses a fixed corruption, so held-out losses are comparable.
    corrupt_rng = rng if rng is not None else jax.random.key(0)
    mlm_rng, itm_rng, dropout_rng = jax.random.split(corrupt_rng, 3)
    c = self.config
    text = batch[B.TEXT]
    masked, picked = mask_tokens(mlm_rng, text, vocab_size=c.vocab_size,
                                 special_ids=(c.pad_id, c.bos_id, c.eos_id),
                                 probability=c.mlm_probability)
    images, matched = mismatch_images(itm_rng, batch[B.IMAGE], c.itm_negative_probability)
    out = self.apply(params, {B.IMAGE: images, B.TEXT: masked},
                     dropout_rng if rng is not None else None, train=train)
    mlm_logits = out["mlm_logits"].astype(jnp.float32)
    weights = (picked & (matched[:, None] == 1)).astype(jnp.float32)
    mlm_nll = optax.softmax_cross_entropy_with_integer_labels(mlm_logits, text)
    mlm_loss = _masked_mean(mlm_nll, weights)
    mlm_acc = _masked_mean((jnp.argmax(mlm_logits, -1) == text).astype(jnp.float32), weights)
    itm_logits = out["itm_logits"].astype(jnp.float32)
    itm_loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(itm_logits, matched))
    itm_acc = jnp.mean((jnp.argmax(itm_logits, -1) == matched).astype(jnp.float32))
    loss = mlm_loss + c.itm_weight * itm_loss
    return loss, {"mlm_loss": mlm_loss, "mlm_accuracy": mlm_acc, "itm_loss": itm_loss,
                  "itm_accuracy": itm_acc}
