"""LXMERT (Tan & Bansal 2019): language, object-relationship and cross-modality encoders
(mmjax/models/lxmert.py) on our ViT's patch tokens.

Presets: tiny, micro (MLM + ITM pre-training on shapes captions), tiny_vqa, micro_vqa (answer
classifier on shapes questions). The model block's defaults are the paper's sizes.
    python -m mmjax.train --config configs/lxmert.py:tiny --workdir /tmp/lxmert_tiny
"""

import ml_collections

import common
import vl_common

PRESETS = vl_common.PRESETS


def model(**overrides) -> ml_collections.ConfigDict:
  """LXMERT model block; defaults are the paper's sizes (BERT-base width, 9/5/5 layers)."""
  c = vl_common.model("lxmert")
  # Width, heads and feed-forward width (None: 4 * width) of every layer.
  c.width = 768
  c.num_heads = 12
  c.mlp_dim = ml_collections.FieldReference(None, field_type=int)
  # Language, object-relationship and cross-modality layers.
  c.l_layers = 9
  c.r_layers = 5
  c.x_layers = 5
  for key, value in overrides.items():
    c[key] = value
  return c


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  """The preset named `arg`."""
  if arg not in PRESETS:
    raise ValueError(f"unknown lxmert preset {arg!r}; choose one of {PRESETS}")
  if arg.startswith("micro"):
    m = model(vision=vl_common.vision(arg), max_length=16, width=32, num_heads=2, l_layers=1,
              r_layers=1, x_layers=1)
  else:
    m = model(vision=vl_common.vision(arg), width=128, num_heads=4, l_layers=2, r_layers=1,
              x_layers=2)
  return vl_common.with_trainer(common.root(m), arg)
