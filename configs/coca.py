"""CoCa (Yu et al. 2022) as open_clip builds it: contrastive + captioning.

Presets: tiny, micro, vit_b32 (open_clip coca_ViT-B-32: 253,560,065 parameters).
    python -m mmjax.summary --config configs/coca.py:vit_b32
"""

import math

import ml_collections

import clip
import common

PRESETS = ("tiny", "micro", "vit_b32")


def decoder(**overrides) -> ml_collections.ConfigDict:
  """The multimodal captioning decoder (mmjax/models/coca.py:MultimodalDecoder)."""
  c = ml_collections.ConfigDict()
  # Output vocabulary (the text tower's).
  c.vocab_size = 49408
  # Width, layers (each a self-attention and a cross-attention block) and heads.
  c.width = 512
  c.depth = 12
  c.num_heads = 8
  # Feed-forward hidden width; None means 4 * width.
  c.mlp_dim = ml_collections.FieldReference(None, field_type=int)
  # MLP activation ('gelu'; 'quick_gelu' for open_clip models built with quick_gelu=True).
  c.activation = "gelu"
  # LayerNorm epsilon.
  c.norm_eps = 1e-5
  c.update(overrides)
  return c


def model(**overrides) -> ml_collections.ConfigDict:
  """CoCa model block; defaults are open_clip's coca_ViT-B-32."""
  c = ml_collections.ConfigDict()
  # Registered model family (mmjax/models/coca.py).
  c.family = "coca"
  # Width of the joint embedding space and of the attentional pooler's queries.
  c.embed_dim = 512
  # Image tower (its pooling is replaced by the attentional pooler).
  c.vision = common.vit(patch_size=32)
  # Unimodal text tower; context_length counts the appended CLS token (76 text + 1).
  c.text = common.text(context_length=77)
  # Captioning decoder.
  c.decoder = decoder()
  # Heads and learned queries of the attentional pooler (query 0 feeds the contrastive loss).
  c.pooler_heads = 8
  c.pooler_queries = 256
  # Learned log temperature at init (CLIP's) and its clamp.
  c.init_logit_scale = math.log(1 / 0.07)
  c.max_logit_scale = math.log(100.0)
  # Loss mix: open_clip's CoCaLoss defaults.
  c.contrastive_weight = 1.0
  c.caption_weight = 2.0
  common.model_common(c)
  for key, value in overrides.items():
    c[key] = value
  return c


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  """The preset named `arg`."""
  if arg == "vit_b32":
    m = model()
  elif arg == "tiny":
    m = model(embed_dim=128, pooler_heads=4, pooler_queries=16,
              vision=common.vit(**common.TINY_VIT),
              text=common.text(vocab_size=1024, context_length=33, width=128, depth=4,
                               num_heads=4),
              decoder=decoder(vocab_size=1024, width=128, depth=2, num_heads=4))
  elif arg == "micro":
    m = model(embed_dim=32, pooler_heads=2, pooler_queries=8,
              vision=common.vit(image_size=32, patch_size=8, width=32, depth=2, num_heads=2),
              text=common.text(vocab_size=512, context_length=17, width=32, depth=2, num_heads=2),
              decoder=decoder(vocab_size=512, width=32, depth=2, num_heads=2))
  else:
    raise ValueError(f"unknown coca preset {arg!r}; choose one of {PRESETS}")
  return clip.with_trainer(common.root(m), arg)
