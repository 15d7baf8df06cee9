"""Whisper's log-mel spectrogram (Radford et al. 2022, "Robust Speech Recognition via
Large-Scale Weak Supervision"), in jnp inside the model.

    waveform [B, S] at 16 kHz --STFT (hann 400, hop 160)--> |.|^2 --80 slaney mels--> log10
    --clamp to (max - 8)--> (x + 4) / 4 --> [B, S // hop, 80]

Why in the model and not in the data pipeline: the batch then carries the raw signal (`audio`,
like `image` carries pixels), so the front end's parameters travel with the model config and its
checkpoints (an imported Whisper encoder needs exactly Whisper's front end), and the FFTs run on
the accelerator with the rest of the step instead of on the input hosts' CPUs. The filter bank is
a constant built once in numpy. No JAX audio library is installed here (librosa is numpy,
torchaudio torch); `jax.scipy.signal.stft` scales by the window sum and pads differently, so the
framing is written out to follow Whisper's `torch.stft` call line by line. Matches transformers' `WhisperFeatureExtractor` (numpy path) to
~1e-5 (tests/models/test_audio.py).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# Whisper's front end: 16 kHz audio, 25 ms windows every 10 ms, 80 mel bins.
SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
N_MELS = 80
# log10 floor of the mel power and the dynamic range kept below each example's maximum.
LOG_FLOOR = 1e-10
DYNAMIC_RANGE = 8.0


def _hz_to_mel(freq: np.ndarray) -> np.ndarray:
  """Slaney's mel scale: linear below 1 kHz, logarithmic above (librosa's htk=False)."""
  freq = np.asarray(freq, np.float64)
  mels = 3.0 * freq / 200.0
  log_region = freq >= 1000.0
  return np.where(log_region, 15.0 + np.log(np.maximum(freq, 1e-12) / 1000.0)
                  * (27.0 / np.log(6.4)), mels)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
  """Inverse of `_hz_to_mel`."""
  mels = np.asarray(mels, np.float64)
  freq = 200.0 * mels / 3.0
  return np.where(mels >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (mels - 15.0)), freq)


@functools.lru_cache(maxsize=8)
def mel_filter_bank(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS,
                    f_min: float = 0.0, f_max: float | None = None) -> np.ndarray:
  """Triangular slaney-normalised mel filters [n_fft // 2 + 1, n_mels] (librosa / Whisper's
  `mel_filters`, transformers' `mel_filter_bank(norm='slaney', mel_scale='slaney')`)."""
  f_max = sample_rate / 2 if f_max is None else f_max
  if not 0 <= f_min < f_max <= sample_rate / 2:
    raise ValueError(f"mel range must satisfy 0 <= f_min < f_max <= sample_rate / 2, got "
                     f"f_min={f_min}, f_max={f_max}, sample_rate={sample_rate}")
  fft_freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
  mel_points = np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2)
  filter_freqs = _mel_to_hz(mel_points)
  diffs = np.diff(filter_freqs)
  slopes = filter_freqs[None, :] - fft_freqs[:, None]  # [F, n_mels + 2]
  down = -slopes[:, :-2] / diffs[:-1]
  up = slopes[:, 2:] / diffs[1:]
  filters = np.maximum(0.0, np.minimum(down, up))
  # Slaney normalisation: each filter has unit area in Hz.
  filters *= 2.0 / (filter_freqs[2:n_mels + 2] - filter_freqs[:n_mels])
  return filters.astype(np.float32)


def hann_window(n_fft: int) -> np.ndarray:
  """The periodic Hann window (torch.hann_window / scipy 'hann', sym=False)."""
  return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


def num_frames(num_samples: int, hop_length: int = HOP_LENGTH) -> int:
  """Frames of the log-mel spectrogram of `num_samples` samples (Whisper drops the last STFT
  frame of the centred STFT, leaving num_samples // hop_length)."""
  return num_samples // hop_length


def log_mel_spectrogram(waveform: Array, *, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT,
                        hop_length: int = HOP_LENGTH, n_mels: int = N_MELS) -> Array:
  """Whisper's normalised log-mel features [B, S // hop_length, n_mels] of `waveform` [B, S].

  Centred STFT (reflect padding by n_fft // 2), power spectrum, mel filters, log10 with a floor
  of 1e-10, the last frame dropped, values clamped to each example's maximum minus 8 (80 dB),
  then (x + 4) / 4. Computed in float32 whatever the model's compute dtype.
  """
  if waveform.ndim != 2:
    raise ValueError(f"audio must be a waveform [B, S], got shape {waveform.shape}")
  if waveform.shape[1] <= n_fft // 2:
    raise ValueError(f"audio of {waveform.shape[1]} samples is too short for n_fft={n_fft} "
                     "(reflect padding needs more than n_fft // 2 samples)")
  x = jnp.pad(waveform.astype(jnp.float32), ((0, 0), (n_fft // 2, n_fft // 2)), mode="reflect")
  frames = 1 + (x.shape[1] - n_fft) // hop_length
  index = (np.arange(frames)[:, None] * hop_length + np.arange(n_fft)[None, :])
  segments = x[:, index] * jnp.asarray(hann_window(n_fft))  # [B, frames, n_fft]
  power = jnp.abs(jnp.fft.rfft(segments, axis=-1)) ** 2  # [B, frames, n_fft // 2 + 1]
  filters = jnp.asarray(mel_filter_bank(sample_rate, n_fft, n_mels))
  mel = jnp.einsum("btf,fm->btm", power, filters, precision=jax.lax.Precision.HIGHEST)
  log_spec = jnp.log10(jnp.maximum(mel, LOG_FLOOR))[:, :-1]
  peak = jnp.max(log_spec, axis=(1, 2), keepdims=True)
  log_spec = jnp.maximum(log_spec, peak - DYNAMIC_RANGE)
  return (log_spec + 4.0) / 4.0
