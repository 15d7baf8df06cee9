"""Shared model and trainer fields of the pre-LLM vision-language encoders (configs/vilbert.py,
configs/lxmert.py, configs/visualbert.py; models in mmjax/models/{vilbert,lxmert,visualbert}.py).

Each family file adds its encoder's shape fields to `model()` and picks sizes per preset.
Presets: `tiny` / `micro` pre-train (MLM + ITM on shapes captions); `tiny_vqa` / `micro_vqa`
fine-tune the answer classifier on shapes questions (data.task='vqa_class').
"""

import ml_collections

import common
from mmjax.data import config as data_config

PRESETS = ("tiny", "micro", "tiny_vqa", "micro_vqa")


def model(family: str, **overrides) -> ml_collections.ConfigDict:
  """Fields every vision-language encoder family has (encoder shapes come from `overrides`)."""
  c = ml_collections.ConfigDict()
  # Registered model family (vilbert, lxmert, visualbert).
  c.family = family
  # 'pretrain': masked language modelling with vision + image-text matching heads;
  # 'vqa': the answer classifier over data.max_answers classes (reads `labels`).
  c.objective = "pretrain"
  # Tokenizer ids: the word table has vocab_size + 1 rows (the last is [MASK]); padding is never
  # attended; pad/bos/eos are never masked for MLM.
  c.vocab_size = 512
  c.pad_id = 0
  c.bos_id = 2
  c.eos_id = 3
  # Learned text positions (= data.text_length) and segment types (text 0, visual 1).
  c.max_length = 32
  c.type_vocab_size = 2
  # Answer classes of the VQA head (tied to data.max_answers by with_trainer).
  c.num_answers = 32
  # MLM: share of text tokens corrupted and predicted (BERT: 0.15).
  c.mlm_probability = 0.15
  # ITM: share of rows whose image is swapped for another row's, and the ITM loss weight.
  c.itm_negative_probability = 0.5
  c.itm_weight = 1.0
  # Text-only baseline: every image is replaced by zeros before the ViT.
  c.blind = False
  # Dropout on embeddings and residual branches during training.
  c.dropout_rate = 0.0
  # The ViT whose patch tokens are the encoder's regions (no class token, no projection).
  c.vision = common.vit(pool="gap", class_token=False, project=False)
  common.model_common(c)
  for key, value in overrides.items():
    c[key] = value
  return c


def vision(preset: str) -> ml_collections.ConfigDict:
  """The region ViT of a preset size."""
  if preset.startswith("micro"):
    return common.vit(image_size=32, patch_size=8, width=32, depth=1, num_heads=2, pool="gap",
                      class_token=False, project=False)
  return common.vit(image_size=64, patch_size=16, width=128, depth=2, num_heads=4, pool="gap",
                    class_token=False, project=False)


def with_trainer(config: ml_collections.ConfigDict, preset: str) -> ml_collections.ConfigDict:
  """Trainer sections: shapes captions (pre-training) or shapes questions (VQA fine-tuning)."""
  m = config.model
  micro = preset.startswith("micro")
  vqa = preset.endswith("_vqa")
  m.objective = "vqa" if vqa else "pretrain"
  data = data_config.default_data_config(task="vqa_class" if vqa else "caption",
                                         image_size=m.vision.image_size,
                                         text_length=m.max_length, max_answers=32)
  # Peak learning rate 1e-4, as ViLBERT and LXMERT pre-train: these post-LN BERT stacks at our
  # usual 1e-3 never learn image-text matching (ITM at chance after 100-500 steps, also on frozen
  # CLIP regions), while at 1e-4 VisualBERT reaches 0.59 ITM accuracy in 600 steps with MLM on.
  config = common.trainer(config, data=data, total_steps=50 if micro else 500,
                          batch_size=16 if micro else 32, learning_rate=1e-4,
                          warmup_steps=5 if micro else 50)
  # The head has exactly as many classes as the answer vocabulary.
  config.model.num_answers = config.data.get_ref("max_answers")
  return config
