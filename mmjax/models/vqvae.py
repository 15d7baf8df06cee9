"""VQ image tokenizer: conv encoder -> quantiser (VQ codebook or FSQ) -> conv decoder (VQ-VAE,
van den Oord et al. 2017; FSQ, Mentzer et al. 2023), the image side of SEED / Emu / Chameleon-
style models that put images and text in one token sequence.

    image [B, H, W, 3] -> patchify conv (stride p) -> (res blocks, stride-2 conv) per extra level
      -> res block -> 1x1 conv -> latents [B, h, w, D] -> quantiser -> tokens [B, h, w] / codes
      -> 3x3 conv -> res block -> (2x nearest upsample + conv, res blocks) per extra level
      -> 1x1 conv to p*p*3 channels -> depth-to-space -> image

The patchify stem and the depth-to-space head keep the full-resolution work out of the network
(the convs run at H/p and below), which is what makes it train in minutes on a CPU.

Loss: MSE reconstruction in the model's pixel range ([-1, 1]) plus the quantiser's codebook and
commitment terms (VQ; FSQ has none). Metrics: PSNR (over [-1, 1], i.e. max range 2), codebook
perplexity and the fraction of codes used in the batch.

The family `vq` trains on `image` rows (the `caption` task's images; the text is ignored) and
serves `predict_indices` / `decode_indices`, which `vq_lm` uses as its frozen image tokenizer.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.models import family as family_lib
from mmjax.models import layers
from mmjax.models import lm as lm_lib
from mmjax.models import quantizers

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class VQConfig:
  """Architecture of the tokenizer (the fields of a `vq` model config).

  Attributes:
    image_size: side of the square input images.
    patch_size: side of the patches the stem embeds (and the head emits).
    channels: conv width per resolution level: level 0 at image_size / patch_size, each further
      level halves the side, so the token grid is image_size / patch_size / 2^(len(channels) - 1)
      on a side (64 px, patch 4, 2 levels: 8x8 = 64 tokens).
    num_res_blocks: residual blocks per level (encoder and decoder).
    quantizer: the quantiser (mmjax.models.quantizers.QuantizerConfig fields).
    dtype / param_dtype: compute and storage dtype names ('auto' compute: bf16 on GPU/TPU).
  """
  image_size: int = 64
  patch_size: int = 4
  channels: tuple[int, ...] = (48, 64)
  num_res_blocks: int = 1
  quantizer: quantizers.QuantizerConfig = quantizers.QuantizerConfig()
  dtype: str = "float32"
  param_dtype: str = "float32"

  def __post_init__(self):
    if not self.channels or min(self.channels) < 1:
      raise ValueError(f"vq.channels must be positive widths, got {self.channels}")
    if self.image_size % self.downsample:
      raise ValueError(f"vq.image_size {self.image_size} is not divisible by patch_size * "
                       f"2^(len(channels) - 1) = {self.downsample}")

  @property
  def downsample(self) -> int:
    """Pixels per token along a side."""
    return self.patch_size * 2 ** (len(self.channels) - 1)

  @property
  def grid(self) -> int:
    """Side of the latent (token) grid."""
    return self.image_size // self.downsample

  @property
  def num_tokens(self) -> int:
    """Tokens per image."""
    return self.grid ** 2


def vq_config(model_config: Any) -> VQConfig:
  """VQConfig from a `vq` model config block (ignores `family`)."""
  fields = {k: v for k, v in dict(model_config).items() if k != "family"}
  if "quantizer" in fields:
    fields["quantizer"] = lm_lib.config_from_dict(quantizers.QuantizerConfig,
                                                  fields["quantizer"], "vq.quantizer")
  return lm_lib.config_from_dict(VQConfig, fields, "vq")


def _groups(channels: int) -> int:
  return next(g for g in (8, 4, 2, 1) if channels % g == 0)


class ResBlock(nn.Module):
  """x + conv(act(norm(conv(act(norm(x)))))) at a constant width."""
  dtype: Any
  param_dtype: Any

  @nn.compact
  def __call__(self, x: Array) -> Array:
    ch = x.shape[-1]
    conv = lambda name: nn.Conv(ch, (3, 3), dtype=self.dtype, param_dtype=self.param_dtype,
                                name=name)
    norm = lambda name: nn.GroupNorm(_groups(ch), dtype=self.dtype, param_dtype=self.param_dtype,
                                     name=name)
    h = conv("conv1")(nn.swish(norm("norm1")(x)))
    h = conv("conv2")(nn.swish(norm("norm2")(h)))
    return x + h


class Encoder(nn.Module):
  """image [B, H, W, 3] -> latents [B, h, w, out_dim]."""
  config: VQConfig
  out_dim: int

  @nn.compact
  def __call__(self, image: Array) -> Array:
    c = self.config
    dtype, param_dtype = layers.dtype_of(c.dtype), layers.dtype_of(c.param_dtype)
    p = (c.patch_size,) * 2
    x = nn.Conv(c.channels[0], p, strides=p, padding="VALID", dtype=dtype,
                param_dtype=param_dtype, name="stem")(image.astype(dtype))
    for i, ch in enumerate(c.channels):
      if i:
        x = nn.Conv(ch, (4, 4), strides=(2, 2), dtype=dtype, param_dtype=param_dtype,
                    name=f"down_{i}")(nn.swish(x))
      for j in range(c.num_res_blocks):
        x = ResBlock(dtype, param_dtype, name=f"res_{i}_{j}")(x)
    x = ResBlock(dtype, param_dtype, name="res_mid")(x)
    x = nn.GroupNorm(_groups(x.shape[-1]), dtype=dtype, param_dtype=param_dtype,
                     name="norm_out")(x)
    return nn.Conv(self.out_dim, (1, 1), dtype=dtype, param_dtype=param_dtype,
                   name="proj")(nn.swish(x)).astype(jnp.float32)


class Decoder(nn.Module):
  """codes [B, h, w, D] -> image [B, H, W, 3] (unbounded; trained towards [-1, 1])."""
  config: VQConfig

  @nn.compact
  def __call__(self, z: Array) -> Array:
    c = self.config
    dtype, param_dtype = layers.dtype_of(c.dtype), layers.dtype_of(c.param_dtype)
    x = nn.Conv(c.channels[-1], (3, 3), dtype=dtype, param_dtype=param_dtype,
                name="stem")(z.astype(dtype))
    x = ResBlock(dtype, param_dtype, name="res_mid")(x)
    for i, ch in reversed(list(enumerate(c.channels))):
      if i < len(c.channels) - 1:
        b, h, w, d = x.shape
        x = jax.image.resize(x, (b, 2 * h, 2 * w, d), "nearest")
        x = nn.Conv(ch, (3, 3), dtype=dtype, param_dtype=param_dtype, name=f"up_{i}")(x)
      for j in range(c.num_res_blocks):
        x = ResBlock(dtype, param_dtype, name=f"res_{i}_{j}")(x)
    x = nn.GroupNorm(_groups(x.shape[-1]), dtype=dtype, param_dtype=param_dtype,
                     name="norm_out")(x)
    p = c.patch_size
    x = nn.Conv(p * p * 3, (1, 1), dtype=dtype, param_dtype=param_dtype,
                name="out")(nn.swish(x)).astype(jnp.float32)
    b, h, w, _ = x.shape  # depth-to-space: each position emits its p x p x 3 patch.
    return x.reshape(b, h, w, p, p, 3).transpose(0, 1, 3, 2, 4, 5).reshape(b, h * p, w * p, 3)


class VQVAE(nn.Module):
  """Encoder + quantiser + decoder.

  `__call__(image) -> (reconstruction, indices, aux_loss, metrics)`; `encode(image) -> indices`
  [B, h, w]; `decode(indices) -> image`.
  """
  config: VQConfig

  def setup(self):
    q = self.config.quantizer
    self.encoder = Encoder(self.config, q.dim)
    self.quantizer = quantizers.Quantizer(q)
    self.decoder = Decoder(self.config)

  def __call__(self, image: Array, train: bool = False
               ) -> tuple[Array, Array, Array, dict[str, Array]]:
    del train  # No dropout.
    z_q, indices, aux, metrics = self.quantizer(self.encoder(image))
    return self.decoder(z_q), indices, aux, metrics

  def encode(self, image: Array) -> Array:
    """int32 token ids [B, h, w] of images [B, H, W, 3]."""
    return self.quantizer(self.encoder(image))[1]

  def decode(self, indices: Array) -> Array:
    """Images [B, H, W, 3] of token ids [B, h, w]."""
    return self.decoder(self.quantizer.codes(indices))


def psnr(reconstruction: Array, image: Array, max_range: float = 2.0) -> Array:
  """Mean over images of 10 log10(range^2 / MSE) (range 2 for [-1, 1] pixels)."""
  mse = jnp.mean((reconstruction.astype(jnp.float32) - image.astype(jnp.float32)) ** 2,
                 axis=(1, 2, 3))
  return jnp.mean(10 * jnp.log10(max_range ** 2 / jnp.maximum(mse, 1e-10)))


@family_lib.register("vq")
class VQFamily(family_lib.ModelFamily):
  """The image tokenizer: reconstruction + quantiser loss; token ids in and out."""
  batch_keys = ("image",)

  def make_module(self, config: Any) -> VQVAE:
    self.vq_config = vq_config(config)
    return VQVAE(self.vq_config)

  def dummy_batch(self, batch_size: int) -> dict[str, Array]:
    s = self.vq_config.image_size
    return {"image": jnp.zeros((batch_size, s, s, 3), jnp.float32)}

  def loss(self, params: Any, batch: family_lib.Batch, rng: Optional[Array] = None,
           train: bool = True) -> tuple[Array, family_lib.Metrics]:
    image = batch["image"]
    if image.shape[1:3] != (self.vq_config.image_size,) * 2:
      raise ValueError(f"vq expects {self.vq_config.image_size} px images (vq.image_size), "
                       f"got batch['image'] of shape {image.shape}")
    recon, _, aux, metrics = self.apply(params, batch, rng, train=train)
    mse = jnp.mean((recon - image) ** 2)
    loss = mse + aux
    return loss, {"recon_mse": mse, "psnr": psnr(recon, image), "quantizer_loss": aux,
                  **metrics}

  def predict_indices(self, params: Any, image: Array) -> Array:
    """int32 token ids [B, h, w] of images [B, H, W, 3]."""
    return self.module.apply({"params": params}, image, method=VQVAE.encode)

  def decode_indices(self, params: Any, indices: Array) -> Array:
    """Images [B, H, W, 3] (model pixel range) of token ids [B, h, w]."""
    return self.module.apply({"params": params}, indices, method=VQVAE.decode)

  def reconstruct(self, params: Any, image: Array) -> Array:
    """Encode, quantise and decode images."""
    return self.module.apply({"params": params}, image)[0]
