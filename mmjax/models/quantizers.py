"""Quantisers of image latents into discrete tokens: a learned VQ codebook (VQ-VAE, van den Oord et
al. 2017) and finite scalar quantisation (FSQ, Mentzer et al. 2023, "Finite Scalar Quantization:
VQ-VAE Made Simple").

Both map latents z [..., D] to (z_q, indices [...], losses, metrics):
- z_q carries the straight-through estimator: its value is the quantised latent, its gradient with
  respect to z is the identity, so the reconstruction loss trains the encoder through the
  non-differentiable lookup / rounding.
- `indices` are int32 token ids in [0, codebook_size), the image tokens a multimodal LM models;
  `codes_from_indices` maps them back to the latents the decoder reads.

VQ: nearest codebook row under the L2 distance (optionally between L2-normalised vectors, as in
ViT-VQGAN, which keeps more codes alive); loss = ||sg(z) - e||^2 + beta ||z - sg(e)||^2 (codebook
and commitment terms). FSQ: each of the D = len(levels) channels is bounded to `levels[i]` values
by a shifted tanh and rounded; the codebook is implicit (prod(levels) codes), there is no
auxiliary loss and no codebook to collapse.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
KINDS = ("vq", "fsq")


@dataclasses.dataclass(frozen=True)
class QuantizerConfig:
  """The quantiser (the `quantizer` block of a `vq` model config).

  Attributes:
    kind: 'vq' (learned codebook) or 'fsq' (finite scalar quantisation).
    codebook_size: VQ rows of the codebook (FSQ: ignored, prod(levels) is the size).
    code_dim: VQ width of a code (FSQ: len(levels)).
    beta: VQ weight of the commitment term (0.25 in the paper).
    normalize: VQ look-up between L2-normalised latents and codes (cosine similarity).
    levels: FSQ values per channel (the paper's [8, 5, 5, 5] is ~2^10 codes).
  """
  kind: str = "fsq"
  codebook_size: int = 512
  code_dim: int = 16
  beta: float = 0.25
  normalize: bool = False
  levels: tuple[int, ...] = (8, 5, 5, 5)

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"vq quantizer.kind must be one of {KINDS}, got {self.kind!r}")
    if self.kind == "fsq" and (not self.levels or min(self.levels) < 2):
      raise ValueError(f"vq quantizer.levels must be values >= 2, got {self.levels}")
    if self.kind == "vq" and (self.codebook_size < 2 or self.code_dim < 1):
      raise ValueError(f"vq quantizer.codebook_size must be >= 2 and code_dim >= 1, got "
                       f"{self.codebook_size} and {self.code_dim}")

  @property
  def dim(self) -> int:
    """Channels of the latent the encoder must produce."""
    return len(self.levels) if self.kind == "fsq" else self.code_dim

  @property
  def size(self) -> int:
    """Number of distinct tokens (the image vocabulary of an LM)."""
    return fsq_codebook_size(self.levels) if self.kind == "fsq" else self.codebook_size


def straight_through(x: Array, quantized: Array) -> Array:
  """Value `quantized`, gradient of the identity in `x` (the straight-through estimator)."""
  return x + jax.lax.stop_gradient(quantized - x)


def usage_metrics(indices: Array, size: int) -> dict[str, Array]:
  """Codebook perplexity exp(H(p)) of the batch's code histogram p and the fraction of codes
  used at least once (how much of the codebook the tokens really exercise)."""
  counts = jnp.zeros((size,), jnp.float32).at[indices.reshape(-1)].add(1.0)
  p = counts / jnp.maximum(counts.sum(), 1.0)
  entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
  return {"codebook_perplexity": jnp.exp(entropy),
          "codebook_usage": jnp.mean((counts > 0).astype(jnp.float32))}


# ---- FSQ ---------------------------------------------------------------------------------------

def fsq_codebook_size(levels: Sequence[int]) -> int:
  """Size of FSQ's implicit codebook: the product of the levels."""
  return int(math.prod(levels))


def _fsq_constants(levels: Sequence[int]) -> tuple[Array, Array]:
  levels_a = jnp.asarray(levels, jnp.float32)
  basis = jnp.asarray(np.concatenate([[1], np.cumprod(levels[:-1])]), jnp.int32)
  return levels_a, basis


def fsq_bound(z: Array, levels: Sequence[int], eps: float = 1e-3) -> Array:
  """The paper's bound f(z): channel i squashed to (-(L-1)/2, (L-1)/2) (shifted by 1/2 for even
  L, so rounding gives exactly L values)."""
  levels_a, _ = _fsq_constants(levels)
  half_l = (levels_a - 1) * (1 + eps) / 2
  offset = jnp.where(levels_a % 2 == 0, 0.5, 0.0)
  shift = jnp.arctanh(offset / half_l)
  return jnp.tanh(z + shift) * half_l - offset


def fsq_quantize(z: Array, levels: Sequence[int]) -> Array:
  """Rounded bounded latents scaled to [-1, 1] (straight-through), the codes the decoder reads."""
  bounded = fsq_bound(z, levels)
  quantized = straight_through(bounded, jnp.round(bounded))
  half_width = jnp.asarray([lv // 2 for lv in levels], jnp.float32)
  return quantized / half_width


def fsq_codes_to_indices(codes: Array, levels: Sequence[int]) -> Array:
  """Codes [..., D] in [-1, 1] -> int32 indices [...] (mixed-radix digits of the levels)."""
  _, basis = _fsq_constants(levels)
  half_width = jnp.asarray([lv // 2 for lv in levels], jnp.float32)
  digits = jnp.round(codes * half_width + half_width).astype(jnp.int32)
  return jnp.sum(digits * basis, axis=-1).astype(jnp.int32)


def fsq_indices_to_codes(indices: Array, levels: Sequence[int]) -> Array:
  """Inverse of `fsq_codes_to_indices`: int indices [...] -> codes [..., D] in [-1, 1]."""
  _, basis = _fsq_constants(levels)
  levels_i = jnp.asarray(levels, jnp.int32)
  half_width = jnp.asarray([lv // 2 for lv in levels], jnp.float32)
  digits = (indices[..., None] // basis) % levels_i
  return (digits.astype(jnp.float32) - half_width) / half_width


# ---- Modules -----------------------------------------------------------------------------------

class Quantizer(nn.Module):
  """`__call__(z [..., D]) -> (z_q, indices, loss, metrics)`; `codes(indices) -> z_q`."""
  config: QuantizerConfig

  def setup(self):
    c = self.config
    if c.kind == "vq":
      # Uniform init in +-1/K as in the paper's reference code (sonnet's VectorQuantizer).
      scale = 1.0 / c.codebook_size
      self.codebook = self.param(
          "codebook", lambda k, s: jax.random.uniform(k, s, jnp.float32, -scale, scale),
          (c.codebook_size, c.code_dim))

  def _table(self) -> Array:
    table = self.codebook
    if self.config.normalize:
      table = table / jnp.maximum(jnp.linalg.norm(table, axis=-1, keepdims=True), 1e-6)
    return table

  def __call__(self, z: Array) -> tuple[Array, Array, Array, dict[str, Array]]:
    c = self.config
    z = z.astype(jnp.float32)
    if z.shape[-1] != c.dim:
      raise ValueError(f"quantizer expects latents with {c.dim} channels, got shape {z.shape}")
    if c.kind == "fsq":
      z_q = fsq_quantize(z, c.levels)
      indices = fsq_codes_to_indices(z_q, c.levels)
      loss = jnp.zeros((), jnp.float32)
      metrics = {}
    else:
      if c.normalize:
        z = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-6)
      table = self._table()
      flat = z.reshape(-1, c.code_dim)
      dist = (jnp.sum(flat ** 2, -1, keepdims=True) - 2 * flat @ table.T
              + jnp.sum(table ** 2, -1)[None])
      indices = jnp.argmin(dist, axis=-1).astype(jnp.int32).reshape(z.shape[:-1])
      e = jnp.take(table, indices, axis=0)
      codebook_loss = jnp.mean((jax.lax.stop_gradient(z) - e) ** 2)
      commitment = jnp.mean((z - jax.lax.stop_gradient(e)) ** 2)
      loss = codebook_loss + c.beta * commitment
      z_q = straight_through(z, e)
      metrics = {"codebook_loss": codebook_loss, "commitment_loss": commitment}
    metrics.update(usage_metrics(indices, c.size))
    return z_q, indices, loss, metrics

  def codes(self, indices: Array) -> Array:
    """Decoder-side latents [..., D] of int token ids [...]."""
    if self.config.kind == "fsq":
      return fsq_indices_to_codes(indices, self.config.levels)
    return jnp.take(self._table(), indices, axis=0)
