"""SigLIP (Zhai et al. 2023): sigmoid-loss image-text pre-training.

Presets: tiny, micro, vit_b16 (open_clip's ViT-B-16-SigLIP: MAP head, text vocab 32000,
context 64, bidirectional text tower pooled at the last token, projection with bias).
    python -m mmjax.summary --config configs/siglip.py:vit_b16
"""

import math

import ml_collections

import clip
import common

PRESETS = ("tiny", "micro", "vit_b16")


def model(**overrides) -> ml_collections.ConfigDict:
  """SigLIP model block: CLIP's fields with the sigmoid loss's init and SigLIP's towers."""
  c = clip.model(
      family="siglip", embed_dim=768,
      vision=common.vit(pool="map", class_token=False, patch_bias=True, ln_pre=False,
                        norm_eps=1e-6, project=False),
      text=common.text(vocab_size=32000, context_length=64, width=768, num_heads=12,
                       causal=False, pool="last", proj_bias=True, norm_eps=1e-6, eos_id=1),
      init_logit_scale=math.log(10.0), init_logit_bias=-10.0)
  # SigLIP does not clamp its temperature.
  c.max_logit_scale = ml_collections.FieldReference(None, field_type=float)
  # Compute the sigmoid loss over this many blocks of texts (memory for huge batches); 1 = off.
  c.sigmoid_chunks = 1
  for key, value in overrides.items():
    c[key] = value
  return c


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  """The preset named `arg`."""
  base = model()
  if arg == "vit_b16":
    m = base
  elif arg == "tiny":
    m = model(embed_dim=128)
    m.vision.update(common.TINY_VIT)
    m.text.update(vocab_size=1024, context_length=32, width=128, depth=4, num_heads=4)
  elif arg == "micro":
    m = model(embed_dim=32)
    m.vision.update(image_size=32, patch_size=8, width=32, depth=2, num_heads=2)
    m.text.update(vocab_size=512, context_length=16, width=32, depth=2, num_heads=2)
  else:
    raise ValueError(f"unknown siglip preset {arg!r}; choose one of {PRESETS}")
  return clip.with_trainer(common.root(m), arg)
