"""One decoder LM over shapes captions and the image tokens of a frozen VQ tokenizer
(mmjax/models/vq_lm.py): text-to-image and image-to-text in one sequence.

    python -m mmjax.train --config configs/vq.py:tiny --workdir /tmp/vq_tiny
    python -m mmjax.train --config configs/vq_lm.py:tiny --workdir /tmp/vq_lm_tiny \
        --config.init_from="('vq=/tmp/vq_tiny:',)"

The `vq` block must equal the tokenizer run's model (same preset); without init_from the
tokenizer stays at its random initialisation (fine for tests, useless for results).
Presets: tiny (the tiny LM over 8x8 = 64 image tokens of configs/vq.py:tiny), micro (tests).
"""

import importlib.util
import os

import ml_collections

import common
from mmjax.data import config as data_config

PRESETS = ("tiny", "micro")


def _sibling(name: str):
  """configs/NAME.py, loaded by path (config files are not a package)."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"mmjax_config_{name}_for_vq_lm", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  """The preset `arg`: tokenizer block, decoder block and the trainer on shapes captions."""
  if arg not in PRESETS:
    raise ValueError(f"unknown vq_lm preset {arg!r}; choose one of {PRESETS}")
  model = ml_collections.ConfigDict()
  # Registered model family (mmjax.models.vq_lm.VQLMFamily).
  model.family = "vq_lm"
  # Text vocabulary (the tokenizer's); image codes and <boi>/<eoi> follow it in the LM's table.
  model.vocab_size = 512
  # The text tokenizer's BOS / EOS / padding ids (shapes_sp).
  model.bos_id = 2
  model.eos_id = 3
  model.pad_id = 0
  # 'both' (even rows text-to-image, odd rows image-to-text), 't2i' or 'i2t'.
  model.directions = "both"
  # The frozen image tokenizer (configs/vq.py's fields; must match the run it is loaded from).
  model.vq = _sibling("vq").vq_model(arg)
  # The decoder (configs/lm.py's fields; its vocabulary is derived, so vocab_size is dropped).
  lm = _sibling("lm").lm_preset(arg)
  del lm["vocab_size"]
  if arg == "tiny":
    lm.max_len = 128  # text 40 + 64 image tokens + <boi>/<eoi>
  model.lm = lm
  config = common.root(model)
  text_length = 40 if arg == "tiny" else 16
  data = data_config.default_data_config(task="caption", image_size=model.vq.image_size,
                                         text_length=text_length)
  # The image must stay the one its caption describes, in the tokenizer's view of it.
  data.augment.random_resized_crop = False
  data.augment.flip = False
  return common.trainer(config, data=data, total_steps=1500 if arg == "tiny" else 20,
                        batch_size=32 if arg == "tiny" else 8,
                        learning_rate=3e-3 if arg == "tiny" else 1e-3,
                        warmup_steps=50 if arg == "tiny" else 2)
