"""ViLBERT (Lu et al. 2019): text and visual streams joined by co-attentional transformer layers
(mmjax/models/vilbert.py) on our ViT's patch tokens.

Presets: tiny, micro (MLM + ITM pre-training on shapes captions), tiny_vqa, micro_vqa (answer
classifier on shapes questions). The model block's defaults are the paper's sizes.
    python -m mmjax.train --config configs/vilbert.py:tiny --workdir /tmp/vilbert_tiny
"""

import ml_collections

import common
import vl_common

PRESETS = vl_common.PRESETS


def model(**overrides) -> ml_collections.ConfigDict:
  """ViLBERT model block; defaults are the paper's (BERT-base text stream, 1024-wide visual
  stream and co-attention, 6 text-only layers then 6 co-attention blocks)."""
  c = vl_common.model("vilbert")
  # Text stream: width, heads, feed-forward width (None: 4 * width).
  c.width = 768
  c.num_heads = 12
  c.mlp_dim = ml_collections.FieldReference(None, field_type=int)
  # Visual stream: width, heads, feed-forward width (None: 4 * visual_width).
  c.visual_width = 1024
  c.visual_heads = 8
  c.visual_mlp_dim = ml_collections.FieldReference(None, field_type=int)
  # Co-attention: inner width and heads of both directions.
  c.co_width = 1024
  c.co_heads = 8
  # Single-stream layers before the first co-attention block, and the co-attention blocks.
  c.text_depth = 6
  c.visual_depth = 0
  c.depth = 6
  for key, value in overrides.items():
    c[key] = value
  return c


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  """The preset named `arg`."""
  if arg not in PRESETS:
    raise ValueError(f"unknown vilbert preset {arg!r}; choose one of {PRESETS}")
  if arg.startswith("micro"):
    m = model(vision=vl_common.vision(arg), max_length=16, width=32, num_heads=2,
              visual_width=32, visual_heads=2, co_width=32, co_heads=2, text_depth=1,
              visual_depth=0, depth=1)
  else:
    m = model(vision=vl_common.vision(arg), width=128, num_heads=4, visual_width=128,
              visual_heads=4, co_width=128, co_heads=4, text_depth=1, visual_depth=1, depth=2)
  return vl_common.with_trainer(common.root(m), arg)
