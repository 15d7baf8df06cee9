"""CLAP: contrastive language-audio pre-training (Elizalde et al. 2023; Wu et al. 2023,
LAION-CLAP), with a Whisper-style audio tower.

    audio [B, S] --WhisperEncoder--> tokens [B, N, width] --mean--> --linear--> audio_emb
    text  [B, L] --TextTransformer (models/text.py)--> text_emb
    loss: CLIP's symmetric InfoNCE (losses.softmax_contrastive_loss) with a learned temperature

CLAP's papers use HTS-AT / CNN14 audio towers and a two-layer MLP projection; the Whisper
encoder (models/whisper_encoder.py) and a linear projection are this codebase's choices, so the
same audio tower feeds the contrastive model and audio_lm.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax import batch as B
from mmjax import losses
from mmjax import parallel as P
from mmjax.models import family
from mmjax.models import layers
from mmjax.models import text as text_lib
from mmjax.models import two_tower
from mmjax.models import whisper_encoder

Array = jax.Array


def encoder_fields(config: Any, common: Mapping[str, Any], where: str = "audio") -> dict:
  """WhisperEncoder fields from the model's audio section (its `clip_samples` is the dummy
  clip length, not a module field) plus the model-wide `common` fields; unknown keys named."""
  fields = {k: v for k, v in dict(config).items() if k != "clip_samples"}
  fields.update(common)
  known = {f.name for f in dataclasses.fields(whisper_encoder.WhisperEncoder)} - {"parent", "name"}
  unknown = sorted(set(fields) - known)
  if unknown:
    raise ValueError(f"unknown model.{where} field(s) {unknown}; known: {sorted(known)}")
  for key in ("dtype", "param_dtype"):
    fields[key] = layers.dtype_of(fields[key])
  return fields


class Clap(nn.Module):
  """Audio and text towers plus CLIP's learned logit scale.

  `__call__(audio=None, text=None, train)` returns the L2-normalised `audio_emb` and/or
  `text_emb` [B, embed_dim] and `logit_scale` (= exp(t), clamped at exp(max_logit_scale)).
  """
  audio: Mapping[str, Any]
  text: Mapping[str, Any]
  embed_dim: int
  init_logit_scale: float = losses.CLIP_INIT_LOGIT_SCALE
  max_logit_scale: Optional[float] = losses.CLIP_MAX_LOGIT_SCALE

  def setup(self):
    self.audio_tower = whisper_encoder.WhisperEncoder(**self.audio, name="audio")
    self.audio_proj = layers.dense(
        self.embed_dim, [P.EMBED], [None], use_bias=False, dtype=self.audio["dtype"],
        param_dtype=self.audio["param_dtype"],
        kernel_init=nn.initializers.normal(self.audio["width"] ** -0.5), name="audio_proj")
    self.text_tower = text_lib.TextTransformer(**self.text, name="text")
    self.logit_scale = self.param("logit_scale", layers.with_axes(
        nn.initializers.constant(self.init_logit_scale)), (), jnp.float32)

  def embed_audio(self, audio: Array, train: bool = False) -> Array:
    """L2-normalised audio embeddings [B, embed_dim]: mean of the encoder tokens, projected."""
    tokens = self.audio_tower(audio, train=train)
    return losses.l2_normalize(self.audio_proj(jnp.mean(tokens, axis=1)))

  def embed_text(self, text: Array, train: bool = False) -> Array:
    """L2-normalised text embeddings [B, embed_dim]."""
    return losses.l2_normalize(self.text_tower(text, train=train)[0])

  def __call__(self, audio: Optional[Array] = None, text: Optional[Array] = None,
               train: bool = False) -> dict[str, Array]:
    out = {}
    if audio is not None:
      out["audio_emb"] = self.embed_audio(audio, train)
    if text is not None:
      out["text_emb"] = self.embed_text(text, train)
    t = self.logit_scale
    if self.max_logit_scale is not None:
      t = jnp.minimum(t, self.max_logit_scale)
    out["logit_scale"] = jnp.exp(t)
    return out


@family.register("clap")
class ClapFamily(family.ModelFamily):
  """CLAP: softmax InfoNCE between audio clips and their captions."""
  batch_keys = (B.AUDIO, B.TEXT)

  def make_module(self, config: Any) -> nn.Module:
    common = two_tower.common_kwargs(config)
    return Clap(audio=encoder_fields(config.audio, common),
                text=two_tower.tower_kwargs(config.text, config.embed_dim, common),
                embed_dim=config.embed_dim, init_logit_scale=config.init_logit_scale,
                max_logit_scale=config.max_logit_scale)

  def dummy_batch(self, batch_size: int) -> dict[str, Array]:
    return {B.AUDIO: jnp.zeros((batch_size, self.config.audio.clip_samples), jnp.float32),
            B.TEXT: jnp.zeros((batch_size, self.config.text.context_length), jnp.int32)}

  def predict_embeddings(self, params: Any, batch: Mapping[str, Array]) -> dict[str, Array]:
    """Normalised `audio_emb` / `text_emb` for whichever of `audio` / `text` the batch has."""
    return self.module.apply({"params": params}, audio=batch.get(B.AUDIO),
                             text=batch.get(B.TEXT), train=False)

  def loss(self, params, batch, rng=None, train=True):
    out = self.apply(params, batch, rng, train=train)
    loss, metrics = losses.softmax_contrastive_loss(out["audio_emb"], out["text_emb"],
                                                    out["logit_scale"])
    metrics["a2t_accuracy"] = metrics.pop("i2t_accuracy")
    metrics["logit_scale"] = out["logit_scale"]
    return loss, metrics
