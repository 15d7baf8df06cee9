"""CLIP (Radford et al. 2021): softmax contrastive image-text pre-training.

Presets: tiny, micro (seconds on CPU), vit_b32, vit_b16, vit_l14 (open_clip's sizes), and LiT
(Zhai et al. 2022) with the towers' roles swapped: locked text, unlocked image. The paper's LiT
is "Lu" in its two-letter (image, text) notation, a locked pretrained image tower and a text
tower from scratch; no pretrained vision weights exist here, so this is "uL": the pretrained
all-MiniLM-L6-v2 text tower is locked (a trainable linear head on top) and the ViT trains from
scratch against it: lit_tiny (the real MiniLM, `scripts/fetch_weights.sh` first), lit_micro
(a random micro BERT and a WordPiece vocab trained on shapes; for tests).
    python -m mmjax.summary --config configs/clip.py:vit_b32
    python -m mmjax.train --config configs/clip.py:lit_tiny --workdir /tmp/lit
"""

import math

import ml_collections

import bert_text
import common
from mmjax.data import config as data_config
from mmjax.data import shapes_world

# Training steps of the tiny presets (~9 minutes on 2 idle cores with data generation).
TINY_STEPS = 1500

PRESETS = ("tiny", "micro", "vit_b32", "vit_b16", "vit_l14", "lit_tiny", "lit_micro")
# LiT's locked text tower: the BERT encoder under `text/bert` (its head `text/proj` trains).
LIT_FROZEN = (r"^text/bert/",)
# Where scripts/fetch_weights.sh puts all-MiniLM-L6-v2, relative to the data directory
# (mmjax.restore.load_init_source resolves a relative pretrained DIR there).
MINILM_INIT = "text/bert=hf_bert:weights/all-MiniLM-L6-v2:"


def lit_text(**overrides) -> ml_collections.ConfigDict:
  """A `model.text` block of kind 'bert' (mmjax/models/bert_tower.py): the BERT encoder fields of
  configs/bert_text.py:bert plus the tower's own fields below; defaults are all-MiniLM-L6-v2."""
  c = bert_text.bert(width=384, depth=6, num_heads=12, mlp_dim=1536,
                     # LiT pools the token states (mean over non-padding tokens), not [CLS]:
                     # no pooler parameters (a checkpoint's pooler is skipped by init_from).
                     pooler=False)
  # Text tower kind: 'bert' (this block) or 'transformer' (configs/common.py:text; blocks
  # without the field are 'transformer').
  c.kind = "bert"
  # Length of the token ids the pipeline gives the tower (data.text_length); <= max_length.
  c.context_length = 32
  # Padding id of the tokenizer: keys with it are masked and left out of the mean (BERT: 0).
  c.pad_id = 0
  # Bias on the trainable projection into the joint embedding space.
  c.proj_bias = False
  c.update(overrides)
  return c


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
              vision=common.vit(**common.TINY_VIT),
              text=common.text(vocab_size=1024, context_length=32, width=128, depth=4,
                               num_heads=4, eos_id=3, pool="eos"))
  elif arg == "micro":
    m = model(embed_dim=32,
              vision=common.vit(image_size=32, patch_size=8, width=32, depth=2, num_heads=2),
              text=common.text(vocab_size=512, context_length=16, width=32, depth=2, num_heads=2,
                               eos_id=3, pool="eos"))
  elif arg in ("lit_tiny", "lit_micro"):
    return lit(arg)
  else:
    raise ValueError(f"unknown clip preset {arg!r}; choose one of {PRESETS}")
  config = with_trainer(common.root(m), arg)
  if arg == "tiny":
    # Captions that name every object: with one object of up to six named, or none, the tower
    # did not read colour well (experiments/README.md, "Why the tiny tower did not read
    # shape"); 2,048 scenes per evaluation split hold ~340 single-object ones for zero-shot
    # shape / colour; the 15-minute budget's steps.
    config.data.caption_styles = shapes_world.LISTING_STYLES
    config.data.num_eval = 2048
    config.total_steps = TINY_STEPS
  return config


def lit(arg: str) -> ml_collections.ConfigDict:
  """LiT ("uL": locked text, image from scratch) at tiny / micro size: CLIP's loss and ViT, the
  locked BERT text tower, its tokenizer; lit_tiny loads all-MiniLM-L6-v2 through init_from."""
  if arg == "lit_tiny":
    m = model(embed_dim=128,
              vision=common.vit(**common.TINY_VIT),
              text=lit_text(context_length=32))
  else:
    m = model(embed_dim=32,
              vision=common.vit(image_size=32, patch_size=8, width=32, depth=2, num_heads=2),
              # Random init; 512 rows hold the shapes WordPiece vocab (tokenizer bert_wordpiece).
              text=lit_text(vocab_size=512, max_length=32, width=32, depth=2, num_heads=2,
                            mlp_dim=None, context_length=16))
  config = with_trainer(common.root(m), arg.removeprefix("lit_"))
  config.optim.frozen = LIT_FROZEN
  if arg == "lit_tiny":
    config.init_from = (MINILM_INIT,)
    config.data.tokenizer = "minilm"
  else:
    config.data.tokenizer = "bert_wordpiece"
  return config


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
