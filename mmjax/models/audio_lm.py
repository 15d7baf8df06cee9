"""Audio captioning / audio-conditioned LM: the Whisper encoder's tokens feed the SAME
connectors and fusions as Flamingo's images (mmjax/models/connectors, gated cross-attention or
decoder-only splicing), in the spirit of Flamingo-style audio LMs (Audio Flamingo, Kong et al.
2024) and Whisper-encoder LLMs (Qwen-Audio, SALMONN).

    audio [B, S] --WhisperEncoder--> [B, N, Dv] as [B, M=1, T=1, N, Dv] --connector--> [B, 1, n, D]
    tokens [B, L] + media_locations [B, L] --DecoderLM (gated xattn | spliced)--> logits

Why a family of its own (`audio_lm`) and not a `model.encoder` option of `flamingo`: the batch
key differs (`audio` [B, S] instead of `media` pixels), and so do the encoder's config section,
dummy batch and freeze group; everything after the encoder is Flamingo's own code (the family
subclasses FlamingoFamily: loss, freezing, KV-cache decoding), so flamingo.py is untouched. The
clip enters the sequence at the `<image>` token (the tokenizer's media token): one clip per row,
media_mask [B, 1]. Parameter tree: `audio/` (the encoder), `resampler/` or `connector/`, `lm/`.
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax import batch as B
from mmjax.models import clap
from mmjax.models import connectors
from mmjax.models import family as family_lib
from mmjax.models import flamingo
from mmjax.models import lm as lm_lib
from mmjax.models import resampler as resampler_lib
from mmjax.models import two_tower
from mmjax.models import whisper_encoder
from mmjax.models import xattn as xattn_lib

Array = jax.Array


class AudioLM(nn.Module):
  """`__call__(audio, media_mask, tokens, media_locations)` -> logits, as Flamingo's with a
  waveform [B, S] (one clip per row) in place of the media pixels.

  Attributes:
    audio: the Whisper encoder (parameters under `audio/`).
    resampler: the Perceiver resampler (the default connector), or None.
    lm: the decoder LM (with gated blocks for fusion 'xattn').
    connector: any other connector (parameters under `connector/`).
    fusion: 'xattn' or 'decoder_only' (see flamingo.Flamingo).
  """
  audio: whisper_encoder.WhisperEncoder
  resampler: Optional[resampler_lib.PerceiverResampler]
  lm: lm_lib.DecoderLM
  connector: Optional[nn.Module] = None
  fusion: str = "xattn"

  def encode_media(self, audio: Array, train: bool = False) -> Array:
    """[B, S] waveform -> [B, 1, n, D] audio tokens for the LM."""
    if audio.ndim != 2:
      raise ValueError(f"audio_lm expects audio [B, S], got {audio.shape}")
    tokens = self.audio(audio, train=train)[:, None, None]  # [B, M=1, T=1, N, Dv]
    return (self.resampler or self.connector)(tokens)

  def __call__(self, audio: Optional[Array], media_mask: Optional[Array], tokens: Array,
               media_locations: Optional[Array], train: bool = False, *,
               cache: Optional[lm_lib.Cache] = None,
               expanded: bool = False) -> Array | tuple[Array, lm_lib.Cache]:
    """Logits [B, L, vocab + new tokens] (and the cache when one is given); `audio` may be None
    when decoding from a prefilled cache."""
    visual = None if audio is None else self.encode_media(audio, train)
    if media_mask is None and audio is not None:
      media_mask = jnp.ones((audio.shape[0], 1), jnp.bool_)
    if self.fusion == "decoder_only":
      return self.lm(tokens, train, media_mask=media_mask, media_locations=media_locations,
                     cache=cache, visual=visual, expanded=expanded)
    return self.lm(tokens, train, media=visual, media_mask=media_mask,
                   media_locations=media_locations, cache=cache)


@family_lib.register("audio_lm")
class AudioLMFamily(flamingo.FlamingoFamily):
  """Next-token loss on [BOS] <image> caption <|endofchunk|> [EOS] rows with their clip;
  `model.freeze_audio` / `model.freeze_lm` freeze the towers (the connector, gated blocks and
  new-token embeddings always train). Decoding: FlamingoFamily's prefill / decode_step
  (fusion 'xattn')."""
  batch_keys = (B.AUDIO, "media_mask", "tokens", "media_locations", "loss_mask")

  def make_module(self, config: Any) -> AudioLM:
    self.lm_config = lm_lib.decoder_config(config.lm)
    self.connector_kind = connectors.check_kind(config.connector)
    self.fusion = config.fusion
    if self.fusion not in flamingo.FUSIONS:
      raise ValueError(f"unknown model.fusion {self.fusion!r}; choose one of {flamingo.FUSIONS}")
    if self.connector_kind in ("avgpool", "qwen_xattn"):
      raise ValueError(f"model.connector={self.connector_kind!r} assumes a square patch grid; "
                       "audio tokens are a 1-D sequence (use resampler, mlp or qformer)")
    if self.connector_kind not in config:
      raise ValueError(f"model.connector={self.connector_kind!r} needs the config section "
                       f"model.{self.connector_kind}")
    self.connector_config = config[self.connector_kind]
    self.tile_positions = 0  # audio has no AnyRes tiles
    if self.fusion == "xattn":
      self.xattn_config = lm_lib.config_from_dict(xattn_lib.XAttnConfig, config.xattn, "xattn")
      self.xattn_config.gated_layers(self.lm_config.depth)
    else:
      self.xattn_config = None
      width = connectors.output_width(self.connector_kind, self.connector_config)
      if width != self.lm_config.width:
        raise ValueError(f"model.fusion='decoder_only' splices the audio tokens into the LM: "
                         f"model.{self.connector_kind}.width={width} must equal "
                         f"model.lm.width={self.lm_config.width}")
    common = {k: v for k, v in two_tower.common_kwargs(config).items()}
    encoder = whisper_encoder.WhisperEncoder(**clap.encoder_fields(config.audio, common))
    resampler, connector = None, None
    if self.connector_kind == "resampler":
      resampler = resampler_lib.PerceiverResampler(
          **flamingo._fields(resampler_lib.PerceiverResampler, config.resampler, "resampler"))  # pylint: disable=protected-access
    else:
      connector = connectors.build(self.connector_kind, self.connector_config)
    return AudioLM(encoder, resampler, lm_lib.DecoderLM(self.lm_config, self.xattn_config),
                   connector=connector, fusion=self.fusion)

  def tokens_per_media(self, audio_shape: tuple[int, ...]) -> int:
    """Audio tokens per clip for audio of `audio_shape` [B, S]."""
    frames = self.module.audio.num_tokens(audio_shape[-1])
    return connectors.tokens_per_media(self.connector_kind, self.connector_config, frames)

  def module_inputs(self, batch: family_lib.Batch) -> dict[str, Array]:
    return {"audio": batch[B.AUDIO], "media_mask": batch.get("media_mask"),
            "tokens": batch["tokens"], "media_locations": batch["media_locations"]}

  def dummy_batch(self, batch_size: int) -> dict[str, Array]:
    length = min(16, self.lm_config.max_len)
    return {B.AUDIO: jnp.zeros((batch_size, self.config.audio.clip_samples), jnp.float32),
            "media_mask": jnp.ones((batch_size, 1), jnp.bool_),
            "tokens": jnp.zeros((batch_size, length), jnp.int32),
            "media_locations": jnp.zeros((batch_size, length), jnp.bool_),
            "loss_mask": jnp.ones((batch_size, length), jnp.float32)}

  def param_groups(self) -> dict[str, list[str]]:
    """Flamingo's components with the audio encoder in place of the vision tower."""
    groups = super().param_groups()
    del groups["vision"]
    return {"audio": ["audio"], **groups}

  def _group_trainable(self, group: str) -> bool:
    if group == "audio":
      return not self.config.freeze_audio
    return super()._group_trainable(group)

  def prefill(self, params, batch, cache, lengths=None):
    """FlamingoFamily.prefill for fusion 'xattn' (decoder-only audio decoding is not wired)."""
    if self.fusion != "xattn":
      raise ValueError("audio_lm decodes with model.fusion='xattn' only")
    return super().prefill(params, batch, cache, lengths)
