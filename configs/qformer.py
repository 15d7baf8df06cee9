"""BLIP-2 stage 1 (Li et al. 2023): an image tower and the Q-Former trained with image-text
contrastive, image-text matching (hard negatives) and image-grounded generation losses on
caption pairs (mmjax/models/qformer_family.py; the Q-Former itself is
mmjax/models/connectors/qformer.py).

    python -m mmjax.train --config configs/qformer.py:tiny --workdir /tmp/qformer_tiny

BLIP-2 freezes a pre-trained image encoder; here it is the tiny CLIP run's image tower:
    --config.init_from='("vision=CLIP_WORKDIR:image",)' --config.model.freeze_vision=True
(without init_from the tower trains from scratch with the Q-Former). Presets: tiny, micro
(seconds on CPU, tests). The text is the shapes tokenizer's (BOS = [CLS]), plus one [DEC] row.
"""

import importlib.util
import os

import ml_collections

import common
from mmjax.data import config as data_config

PRESETS = ("tiny", "micro")


def _flamingo_config_module():
  """configs/flamingo.py, loaded by path (config files are not a package): its vision_model is
  the patch-token ViT without a projection that the connectors read."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "flamingo.py")
  spec = importlib.util.spec_from_file_location("mmjax_config_flamingo_for_qformer", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def stage1_model(*, num_queries: int, width: int, depth: int, num_heads: int, mlp_dim: int,
                 max_length: int, embed_dim: int, vocab_size: int) -> ml_collections.ConfigDict:
  """QFormerStage1 fields (mmjax/models/connectors/qformer.py), the Q-Former under `qformer`."""
  s = ml_collections.ConfigDict()
  # ITC embedding width (BLIP-2: 256).
  s.embed_dim = embed_dim
  # Epsilon of ln_vision, the LayerNorm on the image tokens (torch default).
  s.vision_norm_eps = 1e-5
  s.dtype = "auto"
  s.param_dtype = "float32"
  # The Q-Former BERT: learned queries (BLIP-2: 32), bert-base shape in BLIP-2 (768 / 12 / 12 /
  # 3072), image cross-attention every cross_attention_freq-th layer (BLIP-2: 2), word
  # embeddings for the tokenizer's ids + [DEC], text positions (>= data.text_length).
  s.qformer = ml_collections.ConfigDict(dict(
      num_queries=num_queries, width=width, depth=depth, num_heads=num_heads, mlp_dim=mlp_dim,
      cross_attention_freq=2, vocab_size=vocab_size, max_length=max_length, activation="gelu",
      norm_eps=1e-12, scan=True, remat="none", dtype="auto", param_dtype="float32"))
  return s


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  """The preset named `arg`."""
  vision_model = _flamingo_config_module().vision_model
  m = ml_collections.ConfigDict()
  # Registered model family (mmjax.models.qformer_family.QFormerFamily).
  m.family = "qformer"
  # Freeze the image tower (BLIP-2 does; set it with init_from a CLIP run).
  m.freeze_vision = False
  # Tokenizer ids: padding (masked out of every attention), and [DEC], which replaces the first
  # token (BOS, the [CLS]) of the ITG text: one row past the tokenizer's 512 ids.
  m.pad_id = 0
  m.dec_id = 512
  # Label smoothing of the ITC and ITG cross-entropies (LAVIS: 0.1).
  m.label_smoothing = 0.1
  if arg == "tiny":
    # configs/clip.py:tiny's image tower, so a CLIP run can initialise it.
    m.vision = vision_model(**common.TINY_VIT, mlp_dim=512)
    m.stage1 = stage1_model(num_queries=16, width=128, depth=2, num_heads=4, mlp_dim=256,
                            max_length=32, embed_dim=128, vocab_size=513)
  elif arg == "micro":
    m.vision = vision_model()  # 16 px, one layer of width 32
    m.stage1 = stage1_model(num_queries=4, width=32, depth=2, num_heads=2, mlp_dim=64,
                            max_length=16, embed_dim=32, vocab_size=513)
  else:
    raise ValueError(f"unknown qformer preset {arg!r}; choose one of {PRESETS}")
  config = common.root(m)
  # The CLIP pipeline's caption rows: `image` + `text` ([BOS] caption [EOS], padded).
  data = data_config.default_data_config(task="caption", image_size=m.vision.image_size,
                                         text_length=m.stage1.qformer.max_length)
  return common.trainer(config, data=data, total_steps=300 if arg == "tiny" else 20,
                        batch_size=32 if arg == "tiny" else 8, learning_rate=1e-3,
                        warmup_steps=30 if arg == "tiny" else 2)
