"""Whisper's audio encoder (Radford et al. 2022), the audio tower of CLAP and audio_lm.

    waveform [B, S] --log-mel (models/audio/melspec.py)--> [B, T, n_mels]
    --conv1d k3 + GELU--> --conv1d k3 stride 2 + GELU--> [B, T / 2, width]
    + sinusoidal positions --> pre-LN transformer blocks (layers.TransformerBlock) --> LayerNorm

Same computation as transformers' `WhisperEncoder` (the parity test copies its weights; logits
agree to ~1e-5). Differences, all parameter-free or zero at import: Whisper's key projection has
no bias (ours is loaded with zeros), and its positions are a frozen sinusoid table of fixed
length 1500 while ours are computed for the clip's own length, so any clip length runs.
"""

from __future__ import annotations

import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmjax import parallel as P
from mmjax.models import layers
from mmjax.models.audio import melspec

Array = jax.Array


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> np.ndarray:
  """Whisper's position table [length, channels]: sin on the first half, cos on the second."""
  if channels % 2 or channels < 4:
    raise ValueError(f"sinusoidal positions need an even width >= 4, got {channels}")
  increment = math.log(max_timescale) / (channels // 2 - 1)
  inv_timescales = np.exp(-increment * np.arange(channels // 2))
  scaled = np.arange(length)[:, None] * inv_timescales[None, :]
  return np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1).astype(np.float32)


class WhisperEncoder(nn.Module):
  """`__call__(audio, train)` -> final-normed tokens [B, T // 2, width] (T = S // hop_length).

  `mel=` [B, T, n_mels] skips the front end (for features computed elsewhere, and the parity
  test); `audio` is then ignored and may be None.

  Attributes:
    n_mels / sample_rate / n_fft / hop_length: the log-mel front end (Whisper: 80, 16 kHz,
      400, 160).
    width / depth / num_heads / mlp_dim: transformer shape (mlp_dim default 4 * width).
    norm_eps: LayerNorm epsilon (Whisper 1e-5).
    dropout_rate: dropout after the positions and on residual branches (Whisper: 0).
    scan / remat: scan over layers, and the remat policy name (layers.REMAT_POLICIES).
  """
  n_mels: int = melspec.N_MELS
  sample_rate: int = melspec.SAMPLE_RATE
  n_fft: int = melspec.N_FFT
  hop_length: int = melspec.HOP_LENGTH
  width: int = 384
  depth: int = 4
  num_heads: int = 6
  mlp_dim: Optional[int] = None
  norm_eps: float = 1e-5
  dropout_rate: float = 0.0
  scan: bool = True
  remat: str = "none"
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  def num_tokens(self, num_samples: int) -> int:
    """Tokens the encoder emits for clips of `num_samples` samples."""
    return (melspec.num_frames(num_samples, self.hop_length) - 1) // 2 + 1

  def _conv(self, stride: int, name: str) -> nn.Conv:
    return nn.Conv(self.width, (3,), strides=(stride,), padding=((1, 1),), dtype=self.dtype,
                   param_dtype=self.param_dtype,
                   kernel_init=layers.with_axes(nn.initializers.lecun_normal(), None, None,
                                                P.EMBED),
                   bias_init=layers.with_axes(nn.initializers.zeros, P.EMBED), name=name)

  @nn.compact
  def __call__(self, audio: Optional[Array], train: bool = False, *,
               mel: Optional[Array] = None) -> Array:
    if mel is None:
      if audio is None:
        raise ValueError("WhisperEncoder needs `audio` [B, S] (or `mel` [B, T, n_mels])")
      mel = melspec.log_mel_spectrogram(audio, sample_rate=self.sample_rate, n_fft=self.n_fft,
                                        hop_length=self.hop_length, n_mels=self.n_mels)
    if mel.ndim != 3 or mel.shape[-1] != self.n_mels:
      raise ValueError(f"log-mel features must be [B, T, n_mels={self.n_mels}], got {mel.shape}")
    gelu = layers.get_activation("gelu")
    x = gelu(self._conv(1, "conv1")(mel.astype(self.dtype)))
    x = gelu(self._conv(2, "conv2")(x))
    x = x + jnp.asarray(sinusoids(x.shape[1], self.width), self.dtype)[None]
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    blocks = layers.stack_layers(
        layers.TransformerBlock, self.depth, scan=self.scan, remat=self.remat, name="blocks",
        num_heads=self.num_heads, mlp_dim=self.mlp_dim or 4 * self.width, activation="gelu",
        norm_eps=self.norm_eps, dropout_rate=self.dropout_rate, deterministic=not train,
        dtype=self.dtype, param_dtype=self.param_dtype)
    x = blocks(x)
    return layers.norm_layer("layernorm", self.norm_eps, self.dtype, self.param_dtype,
                             name="ln_final")(x)
