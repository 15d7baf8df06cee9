"""VisualBERT (Li et al. 2019): one BERT over [text; visual] with segment embeddings
(mmjax/models/visualbert.py) on our ViT's patch tokens.

Presets: tiny, micro (MLM + ITM pre-training on shapes captions), tiny_vqa, micro_vqa (answer
classifier on shapes questions). The model block's defaults are BERT-base.
    python -m mmjax.train --config configs/visualbert.py:tiny --workdir /tmp/visualbert_tiny
"""

import ml_collections

import common
import vl_common

PRESETS = vl_common.PRESETS


def model(**overrides) -> ml_collections.ConfigDict:
  """VisualBERT model block; defaults are BERT-base (12 layers, width 768, 12 heads)."""
  c = vl_common.model("visualbert")
  # The single transformer's width, layers, heads and feed-forward width (None: 4 * width).
  c.width = 768
  c.depth = 12
  c.num_heads = 12
  c.mlp_dim = ml_collections.FieldReference(None, field_type=int)
  for key, value in overrides.items():
    c[key] = value
  return c


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  """The preset named `arg`."""
  if arg not in PRESETS:
    raise ValueError(f"unknown visualbert preset {arg!r}; choose one of {PRESETS}")
  if arg.startswith("micro"):
    m = model(vision=vl_common.vision(arg), max_length=16, width=32, depth=2, num_heads=2)
  else:
    m = model(vision=vl_common.vision(arg), width=128, depth=4, num_heads=4)
  return vl_common.with_trainer(common.root(m), arg)
