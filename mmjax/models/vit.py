"""Vision Transformer encoder (Dosovitskiy et al. 2021) as CLIP, SigLIP, CoCa and Flamingo use it.

Patch embedding (or a convolutional stem) -> (+ class token) -> learned position embeddings ->
[ln_pre] -> pre-LN blocks -> final norm -> pooling (class token, global average, or MAP attention pooling) -> [projection].
Position embeddings are stored for `image_size` and bilinearly resized when the model runs at
another resolution, so a model built at 224 px runs at 336 px.

`stem='conv'` replaces the single patch-embedding convolution by a convolutional stem (Xiao et
al. 2021, "Early convolutions help transformers see better"): log2(patch_size) 3x3 convolutions
with ReLU, each halving the resolution, by its stride or (`stem_downsample='maxpool'`, after the
first) by 2 x 2 max-pooling, then a 1x1 convolution to the width. It produces the same token grid
as the patch embedding (so resamplers and connectors see the same shapes), but each token's
features are built from local edges and corners, pooled so that they do not depend on where in
its patch an object sits. Supervised, the tiny ViT classifies shape at 0.92 with it and 0.37
with the patch stem; under the contrastive loss it learns too slowly at the tiny budget, so the
tiny presets keep the patch stem (experiments/README.md, "Why the tiny tower did not read
shape").
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax import parallel as P
from mmjax.models import layers

Array = jax.Array


def resize_posemb(posemb: Array, grid: tuple[int, int], new_grid: tuple[int, int]) -> Array:
  """Bilinear resize of [N, D] grid position embeddings from `grid` to `new_grid`."""
  if tuple(grid) == tuple(new_grid):
    return posemb
  d = posemb.shape[-1]
  image = posemb.reshape(*grid, d)
  resized = jax.image.resize(image, (*new_grid, d), method="bilinear", antialias=False)
  return resized.reshape(-1, d)


class MapHead(nn.Module):
  """Multihead attention pooling (MAP, Lee et al. 2019): a learned probe attends to all tokens.

  Same structure as big_vision's MAPHead and timm's AttentionPoolLatent (SigLIP).
  """
  num_heads: int
  mlp_dim: int
  norm_eps: float = 1e-6
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    width = x.shape[-1]
    probe = self.param("probe", layers.with_axes(nn.initializers.normal(width ** -0.5), None,
                                                  P.LATENTS, P.EMBED), (1, 1, width),
                       self.param_dtype)
    probe = jnp.tile(probe.astype(self.dtype), (x.shape[0], 1, 1))
    x = layers.Attention(self.num_heads, dtype=self.dtype, param_dtype=self.param_dtype,
                         name="attn")(probe, x)
    y = layers.norm_layer("layernorm", self.norm_eps, self.dtype, self.param_dtype, name="ln")(x)
    x = x + layers.Mlp(self.mlp_dim, "gelu", dtype=self.dtype, param_dtype=self.param_dtype,
                       name="mlp")(y)
    return x[:, 0]


class ConvStem(nn.Module):
  """A convolutional stem (Xiao et al. 2021): log2(patch_size) [3x3 conv -> ReLU] layers, each
  halving the resolution, then a 1x1 conv to `width`: the patch grid of a patch_size ViT, from
  local features. `downsample`: 'stride' (every conv has stride 2, the paper's) or 'maxpool'
  (the first conv has stride 2, later ones stride 1 and a 2 x 2 max-pool: features that do not
  move when an object shifts inside its cell, at ~4x the stem's cost; supervised shape 0.92 vs
  0.50 for 'stride', experiments/results/shape_diagnosis.md). Channels start at `stem_width`
  and double per layer up to `width`.

  The paper normalises each convolution with BatchNorm; here there is no normalisation inside
  the stem (a bias instead), so the tower keeps no batch statistics and behaves the same in
  training and evaluation. Not LayerNorm: over the channels of one pixel it is invariant to the
  scale of the first convolution's output, which is linear in the RGB value, so a flat region's
  brightness is lost and colours collapse (measured: zero-shot colour 0.14 with it, vs 0.99 for
  the patch stem on the same captions; experiments/README.md)."""
  width: int
  patch_size: int
  stem_width: Optional[int] = None
  use_bias: bool = False
  downsample: str = "stride"
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    num = self.patch_size.bit_length() - 1
    if self.patch_size < 2 or 2 ** num != self.patch_size:
      raise ValueError(f"ViT stem='conv' needs a power-of-two patch_size >= 2, got "
                       f"{self.patch_size}")
    channels = self.stem_width or max(self.width // 2 ** (num - 1), 1)
    for i in range(num):
      # Input channels of the first layer are the image's 3, later ones the stem's own width.
      pool = self.downsample == "maxpool" and i > 0
      x = nn.Conv(channels, (3, 3), strides=(1, 1) if pool else (2, 2),
                  padding=((1, 1), (1, 1)), use_bias=True,
                  dtype=self.dtype, param_dtype=self.param_dtype,
                  kernel_init=layers.with_axes(nn.initializers.he_normal(), None, None,
                                               P.CONV_IN, None),
                  bias_init=layers.with_axes(nn.initializers.zeros, None),
                  name=f"conv_{i}")(x)
      x = nn.relu(x)
      if pool:
        # 2 x 2 max-pooling as a reshape (XLA's CPU select-and-scatter gradient of
        # nn.max_pool is ~1.4x slower).
        b, h, w, c = x.shape
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
      channels = min(2 * channels, self.width)
    return nn.Conv(self.width, (1, 1), use_bias=self.use_bias, dtype=self.dtype,
                   param_dtype=self.param_dtype,
                   kernel_init=layers.with_axes(nn.initializers.lecun_normal(), None, None,
                                                P.CONV_IN, P.EMBED),
                   bias_init=layers.with_axes(nn.initializers.zeros, P.EMBED),
                   name="proj")(x)


class ViT(nn.Module):
  """ViT image encoder. `__call__(image, train)` returns `(pooled, tokens)`.

  `pooled` is [B, output_dim] (or [B, width] without projection); `tokens` are the final-normed
  patch tokens [B, N, width] (class token excluded) for resamplers and captioning decoders.
  With `pool='none'` the un-normed tokens of every position (class token included) are returned
  as `tokens` and `pooled` is None (CoCa's attentional pooler takes over from there).

  Attributes:
    image_size: resolution the position embeddings are built for.
    patch_size: side of the square patches.
    width / depth / num_heads / mlp_dim: transformer shape (mlp_dim default 4 * width).
    activation: MLP activation ('gelu' for open_clip, 'quick_gelu' for OpenAI weights).
    pool: 'tok' (class token), 'gap' (mean of patch tokens), 'max' (max of patch tokens),
      'map' (attention pooling), 'none'.
    stem: 'patch' (one patch_size x patch_size convolution, the paper's), 'conv' (ConvStem;
      patch_size must be a power of two) or 'patch_conv' (the two summed).
    stem_width: channels of the conv stem's first layer (doubling per layer up to width);
      None means width // 2 ** (layers - 1), so the last 3x3 layer has `width` channels.
    stem_downsample: how the conv stem halves the resolution: 'maxpool' or 'stride' (ConvStem).
    class_token: prepend a learned class token.
    patch_bias: bias on the patch-embedding convolution (timm/SigLIP yes, open_clip no).
    ln_pre: LayerNorm after adding position embeddings (open_clip yes, timm no).
    norm_eps: epsilon of every LayerNorm (open_clip 1e-5, SigLIP 1e-6).
    output_dim: width of the final linear projection; None for no projection.
    proj_bias: bias on that projection.
    patch_dropout: fraction of patch tokens dropped in training (FLIP / open_clip PatchDropout).
    scan / remat: scan over layers, and the remat policy name (layers.REMAT_POLICIES).
    dtype / param_dtype: compute and storage dtypes.
  """
  image_size: int = 224
  patch_size: int = 16
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_dim: Optional[int] = None
  activation: str = "gelu"
  pool: str = "tok"
  class_token: bool = True
  stem: str = "patch"
  stem_width: Optional[int] = None
  stem_downsample: str = "maxpool"
  patch_bias: bool = False
  ln_pre: bool = True
  norm_eps: float = 1e-5
  output_dim: Optional[int] = None
  proj_bias: bool = False
  patch_dropout: float = 0.0
  dropout_rate: float = 0.0
  scan: bool = True
  remat: str = "none"
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  def grid(self, image_size: Optional[int] = None) -> tuple[int, int]:
    """Patch grid (rows, cols) for a square image of `image_size` (default: self.image_size)."""
    size = image_size or self.image_size
    if size % self.patch_size:
      raise ValueError(f"image size {size} is not divisible by patch_size {self.patch_size}")
    return (size // self.patch_size,) * 2

  def _norm(self, name: str) -> nn.Module:
    return layers.norm_layer("layernorm", self.norm_eps, self.dtype, self.param_dtype, name=name)

  @nn.compact
  def __call__(self, image: Array, train: bool = False) -> tuple[Optional[Array], Array]:
    if image.ndim != 4 or image.shape[-1] != 3:
      raise ValueError(f"ViT expects images [B, H, W, 3], got {image.shape}")
    if image.shape[1] != image.shape[2]:
      raise ValueError(f"ViT expects square images, got {image.shape[1]}x{image.shape[2]}")
    self.grid(image.shape[1])  # raises unless the image divides into whole patches
    if self.pool not in ("tok", "gap", "max", "map", "none"):
      raise ValueError(f"unknown ViT pool {self.pool!r}; choose tok, gap, max, map or none")
    if self.pool == "tok" and not self.class_token:
      raise ValueError("ViT pool='tok' needs class_token=True")
    scale = self.width ** -0.5
    if self.stem not in ("patch", "conv", "patch_conv"):
      raise ValueError(f"unknown ViT stem {self.stem!r}; choose 'patch', 'conv' or 'patch_conv'")
    if self.stem in ("patch", "patch_conv"):
      x = nn.Conv(self.width, (self.patch_size,) * 2, strides=(self.patch_size,) * 2,
                  padding="VALID", use_bias=self.patch_bias, dtype=self.dtype,
                  param_dtype=self.param_dtype,
                  kernel_init=layers.with_axes(nn.initializers.lecun_normal(), None, None,
                                               P.CONV_IN, P.EMBED),
                  bias_init=layers.with_axes(nn.initializers.zeros, P.EMBED),
                  name="patch_embed")(image.astype(self.dtype))
    if self.stem in ("conv", "patch_conv"):
      conv = ConvStem(self.width, self.patch_size, self.stem_width, self.patch_bias,
                      self.stem_downsample, self.dtype, self.param_dtype,
                      name="stem")(image.astype(self.dtype))
      x = conv if self.stem == "conv" else x + conv
    b, h, w, d = x.shape
    x = x.reshape(b, h * w, d)

    num_prefix = 1 if self.class_token else 0
    base_grid = self.grid()
    posemb = self.param("posemb", layers.with_axes(nn.initializers.normal(scale), P.LENGTH,
                                                   P.EMBED),
                        (num_prefix + base_grid[0] * base_grid[1], d), self.param_dtype)
    grid_posemb = resize_posemb(posemb[num_prefix:], base_grid, (h, w))
    x = x + grid_posemb.astype(self.dtype)[None]
    if self.class_token:
      cls = self.param("cls", layers.with_axes(nn.initializers.normal(scale), P.EMBED), (d,),
                       self.param_dtype)
      cls = (cls + posemb[0]).astype(self.dtype)
      x = jnp.concatenate([jnp.broadcast_to(cls, (b, 1, d)), x], axis=1)

    if train and self.patch_dropout > 0:
      x = self._patch_dropout(x, num_prefix)
    if self.ln_pre:
      x = self._norm("ln_pre")(x)
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)

    x = layers.stack_layers(
        layers.TransformerBlock, self.depth, scan=self.scan, remat=self.remat, name="blocks",
        num_heads=self.num_heads, mlp_dim=self.mlp_dim or 4 * self.width,
        activation=self.activation, norm_eps=self.norm_eps, dropout_rate=self.dropout_rate,
        deterministic=not train, dtype=self.dtype, param_dtype=self.param_dtype)(x)

    if self.pool == "none":
      return None, x
    x = self._norm("ln_post")(x)
    tokens = x[:, num_prefix:]
    if self.pool == "tok":
      pooled = x[:, 0]
    elif self.pool == "gap":
      pooled = jnp.mean(tokens, axis=1)
    elif self.pool == "max":
      pooled = jnp.max(tokens, axis=1)
    else:
      pooled = MapHead(self.num_heads, self.mlp_dim or 4 * self.width, self.norm_eps,
                       self.dtype, self.param_dtype, name="map_head")(tokens)
    if self.output_dim is not None:
      pooled = layers.dense(self.output_dim, [P.EMBED], [None], use_bias=self.proj_bias,
                            dtype=self.dtype, param_dtype=self.param_dtype,
                            kernel_init=nn.initializers.normal(scale), name="proj")(pooled)
    return pooled, tokens

  def _patch_dropout(self, x: Array, num_prefix: int) -> Array:
    """Keeps a random (1 - patch_dropout) share of patch tokens per example (prefix kept)."""
    b, n, d = x.shape
    num_patches = n - num_prefix
    keep = max(1, int(num_patches * (1.0 - self.patch_dropout)))
    rng = self.make_rng("dropout")
    scores = jax.random.uniform(rng, (b, num_patches))
    idx = jnp.argsort(scores, axis=-1)[:, :keep]
    patches = jnp.take_along_axis(x[:, num_prefix:], idx[..., None], axis=1)
    return jnp.concatenate([x[:, :num_prefix], patches], axis=1)
