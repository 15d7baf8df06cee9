"""CLIP (Radford et al. 2021): softmax contrastive image-text pre-training.

Presets: tiny, micro (seconds on CPU), vit_b32, vit_b16, vit_l14 (open_clip's sizes).
    python -m mmjax.summary --config configs/clip.py:vit_b32
"""

import math

import ml_collections

import common
from mmjax.data import config as data_config

PRESETS = ("tiny", "micro", "vit_b32", "vit_b16", "vit_l14")


def model(**overrides) -> ml_collections.ConfigDict:
  """CLIP model block; defaults are ViT-B/16 + the 12-layer 512-wide text tower."""
  c = ml_collections.ConfigDict()
  # Registered model family (mmjax/models/two_tower.py).
  c.family = "clip"
  # Width of the joint image-text embedding space.
  c.embed_dim = 512
  # Image tower fields (configs/common.py:vit).
  c.vision = common.vit()
  # Text tower fields (configs/common.py:text).
  c.text = common.text()
  # Learned log temperature t at init: CLIP's log(1 / 0.07).
  c.init_logit_scale = math.log(1 / 0.07)
  # SigLIP's learned bias at init; None means no bias (CLIP).
  c.init_logit_bias = ml_collections.FieldReference(None, field_type=float)
  # Clamp of t: the logit scale exp(t) never exceeds 100.
  c.max_logit_scale = math.log(100.0)
  common.model_common(c)
  for key, value in overrides.items():
    c[key] = value
  return c


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  """The preset named `arg`."""
  if arg == "vit_b32":
    m = model(vision=common.vit(patch_size=32))
  elif arg == "vit_b16":
    m = model()
  elif arg == "vit_l14":
    m = model(embed_dim=768,
              vision=common.vit(patch_size=14, width=1024, depth=24, num_heads=16),
              text=common.text(width=768, num_heads=12))
  elif arg == "tiny":
    m = model(embed_dim=128,
              vision=common.vit(image_size=64, patch_size=8, width=128, depth=4, num_heads=4),
              text=common.text(vocab_size=1024, context_length=32, width=128, depth=4,
                               num_heads=4, eos_id=3, pool="eos"))
  elif arg == "micro":
    m = model(embed_dim=32,
              vision=common.vit(image_size=32, patch_size=8, width=32, depth=2, num_heads=2),
              text=common.text(vocab_size=512, context_length=16, width=32, depth=2, num_heads=2,
                               eos_id=3, pool="eos"))
  else:
    raise ValueError(f"unknown clip preset {arg!r}; choose one of {PRESETS}")
  return with_trainer(common.root(m), arg)


def with_trainer(config: ml_collections.ConfigDict, arg: str) -> ml_collections.ConfigDict:
  """Trainer sections for two-tower presets: shapes image-caption pairs at the model's size."""
  m = config.model
  text_length = m.text.context_length - (1 if m.family == "coca" else 0)
  data = data_config.default_data_config(task="caption", image_size=m.vision.image_size,
                                         text_length=text_length)
  if arg in ("tiny", "micro"):
    return common.trainer(config, data=data, total_steps=300 if arg == "tiny" else 50,
                          batch_size=32 if arg == "tiny" else 16, learning_rate=1e-3,
                          warmup_steps=30 if arg == "tiny" else 5)
  # Paper sizes: CLIP's 32k batch and 5e-4 peak learning rate with 2k warmup steps.
  return common.trainer(config, data=data, total_steps=100_000, batch_size=32768,
                        learning_rate=5e-4, warmup_steps=2000)
