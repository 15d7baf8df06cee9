"""VQ image tokenizer (mmjax/models/vqvae.py): conv encoder, VQ codebook or FSQ, conv decoder,
trained on `shapes` images by reconstruction.

    python -m mmjax.train --config configs/vq.py:tiny --workdir /tmp/vq_tiny
    python -m mmjax.train --config configs/vq.py:tiny --workdir /tmp/vq_codebook \
        --config.model.quantizer.kind=vq

Presets: tiny (64 px -> 8x8 tokens, FSQ levels (8, 5, 5, 5) = 1000 codes), micro (32 px -> 4x4
tokens, FSQ (4, 4) = 16 codes; seconds, for tests).
"""

import ml_collections

import common
from mmjax.data import config as data_config

PRESETS = ("tiny", "micro")


def quantizer(**overrides) -> ml_collections.ConfigDict:
  """The quantiser fields (mmjax.models.quantizers.QuantizerConfig)."""
  q = ml_collections.ConfigDict()
  # 'fsq' (finite scalar quantisation, no codebook to learn) or 'vq' (learned codebook with
  # codebook + commitment losses and the straight-through estimator).
  q.kind = "fsq"
  # VQ only: codebook rows and code width.
  q.codebook_size = 512
  q.code_dim = 16
  # VQ only: weight of the commitment loss (the paper's 0.25).
  q.beta = 0.25
  # VQ only: nearest code by cosine similarity (L2-normalised latents and codes).
  q.normalize = False
  # FSQ only: values per latent channel; the codebook size is their product.
  q.levels = (8, 5, 5, 5)
  q.update(overrides)
  return q


def vq_model(arg: str) -> ml_collections.ConfigDict:
  """The tokenizer fields of a preset (shared with configs/vq_lm.py, whose `vq` block must
  match the trained tokenizer it loads)."""
  m = ml_collections.ConfigDict()
  if arg == "tiny":
    # Input side, patchify stem, then one 2x downsampling: 64 px -> 16x16 -> 8x8 token grid.
    m.image_size = 64
    m.patch_size = 4
    # Conv width per resolution level.
    m.channels = (48, 64)
    q = quantizer()
  elif arg == "micro":
    m.image_size = 32
    m.patch_size = 4
    m.channels = (8, 8)
    q = quantizer(levels=(4, 4), codebook_size=16, code_dim=4)
  else:
    raise ValueError(f"unknown vq preset {arg!r}; choose one of {PRESETS}")
  # Residual blocks per level in the encoder and the decoder.
  m.num_res_blocks = 1
  # The quantiser (see `quantizer`).
  m.quantizer = q
  # Compute dtype ('auto': bfloat16 on GPU/TPU, float32 on CPU) and parameter dtype.
  m.dtype = "auto"
  m.param_dtype = "float32"
  return m


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  """The preset `arg`: the tokenizer trained on shapes images (the caption task's `image`)."""
  model = vq_model(arg)
  # Registered model family (mmjax.models.vqvae.VQFamily).
  model.family = "vq"
  config = common.root(model)
  # The caption task gives image rows; the family reads only `image`. No flips or crops: the
  # tokenizer should reproduce the image it is given, and the LM pairs it with its caption.
  data = data_config.default_data_config(task="caption", image_size=model.image_size,
                                         text_length=16)
  data.augment.random_resized_crop = False
  data.augment.flip = False
  config = common.trainer(config, data=data, total_steps=1000 if arg == "tiny" else 20,
                          batch_size=32 if arg == "tiny" else 8, learning_rate=2e-3,
                          warmup_steps=50 if arg == "tiny" else 2)
  config.optim.weight_decay = 0.0
  return config
