"""CLAP (Elizalde et al. 2023): contrastive audio-text pre-training on `audio_events` clips,
with a Whisper-style audio tower (mmjax/models/clap.py, mmjax/models/whisper_encoder.py).

    python -m mmjax.train --config configs/clap.py:tiny --workdir /tmp/clap_tiny

Presets: tiny, micro (seconds on CPU). `audio_model()` documents the audio tower's fields; the
audio_lm configs use it too.
"""

import math

import ml_collections

import common
from mmjax.data import config as data_config

PRESETS = ("tiny", "micro")


def audio_model(**overrides) -> ml_collections.ConfigDict:
  """Whisper encoder fields (mmjax.models.whisper_encoder.WhisperEncoder), tiny by default."""
  a = ml_collections.ConfigDict()
  # Log-mel front end (Whisper: 80 mel bins of 400-sample windows every 160 samples at 16 kHz).
  a.n_mels = 80
  a.sample_rate = 16000
  a.n_fft = 400
  a.hop_length = 160
  # Transformer width, layers and heads; feed-forward width (None: 4 * width).
  a.width = 128
  a.depth = 4
  a.num_heads = 4
  a.mlp_dim = ml_collections.FieldReference(None, field_type=int)
  # LayerNorm epsilon (Whisper 1e-5) and dropout after the positions / on residual branches.
  a.norm_eps = 1e-5
  a.dropout_rate = 0.0
  # Samples of the zero clips that initialise the model (audio_events: 2 s at 16 kHz); real
  # clips of any length run.
  a.clip_samples = 32000
  a.update(overrides)
  return a


def model(**overrides) -> ml_collections.ConfigDict:
  """CLAP model block."""
  c = ml_collections.ConfigDict()
  # Registered model family (mmjax/models/clap.py).
  c.family = "clap"
  # Width of the joint audio-text embedding space.
  c.embed_dim = 128
  # Audio tower fields (audio_model above).
  c.audio = audio_model()
  # Text tower fields (configs/common.py:text).
  c.text = common.text()
  # Learned log temperature at init (CLIP's log(1 / 0.07)) and its clamp (scale <= 100).
  c.init_logit_scale = math.log(1 / 0.07)
  c.max_logit_scale = math.log(100.0)
  common.model_common(c)
  for key, value in overrides.items():
    c[key] = value
  return c


def audio_data(text_length: int, **overrides) -> ml_collections.ConfigDict:
  """audio_events caption rows tokenized with audio_sp (the audio models' data section)."""
  fields = dict(datasets=("audio_events",), task="caption", text_length=text_length,
                tokenizer="audio_sp", num_train=4096, num_eval=256)
  fields.update(overrides)
  return data_config.default_data_config(**fields)


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  """The preset named `arg`."""
  if arg == "tiny":
    m = model(embed_dim=128, audio=audio_model(width=128, depth=4, num_heads=4),
              text=common.text(vocab_size=512, context_length=24, width=128, depth=4,
                               num_heads=4, eos_id=3, pool="eos"))
  elif arg == "micro":
    m = model(embed_dim=32, audio=audio_model(width=32, depth=2, num_heads=2),
              text=common.text(vocab_size=512, context_length=24, width=32, depth=2,
                               num_heads=2, eos_id=3, pool="eos"))
  else:
    raise ValueError(f"unknown clap preset {arg!r}; choose one of {PRESETS}")
  config = common.root(m)
  common.trainer(config, data=audio_data(m.text.context_length, num_train=4096 if arg == "tiny"
                                         else 64, num_eval=256 if arg == "tiny" else 16),
                 total_steps=600 if arg == "tiny" else 20, batch_size=32 if arg == "tiny" else 8,
                 learning_rate=1e-3, warmup_steps=30 if arg == "tiny" else 2)
  config.evals.validation = ml_collections.ConfigDict(dict(
      type="loss", every_steps=config.total_steps, split="validation", num_batches=4))
  return config
