"""audio_lm: audio captioning with the Whisper encoder feeding Flamingo's connectors and gated
cross-attention into a decoder LM (mmjax/models/audio_lm.py), on `audio_events` clips.

    python -m mmjax.train --config configs/audio_lm.py:tiny --workdir /tmp/audio_lm_tiny
    python -m mmjax.train --config configs/audio_lm.py:micro --config.model.connector=mlp \
        --config.model.fusion=decoder_only --workdir /tmp/audio_lm_micro

Presets: tiny, micro. The connector and LM sections are configs/flamingo.py's (same fields,
same defaults at each size); the audio section is configs/clap.py:audio_model.
"""

import importlib.util
import os

import ml_collections

import common

PRESETS = ("tiny", "micro")


def _sibling(name: str):
  """configs/<name>.py, loaded by path (config files are not a package)."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"mmjax_config_{name}_for_audio_lm", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  """The preset named `arg`."""
  if arg not in PRESETS:
    raise ValueError(f"unknown audio_lm preset {arg!r}; choose one of {PRESETS}")
  flamingo_cfg, clap_cfg = _sibling("flamingo"), _sibling("clap")
  base = flamingo_cfg.get_config(arg).model
  m = ml_collections.ConfigDict()
  # Registered model family (mmjax.models.audio_lm.AudioLMFamily).
  m.family = "audio_lm"
  # Freeze the audio encoder / the LM; the connector, gated blocks and new tokens always train.
  # Nothing is pretrained at these sizes, so both train.
  m.freeze_audio = False
  m.freeze_lm = False
  # How the audio tokens reach the LM: 'resampler', 'mlp' or 'qformer' (avgpool and qwen_xattn
  # assume a square patch grid), each configured in model.<name> as in configs/flamingo.py.
  m.connector = "resampler"
  # 'xattn' (gated cross-attention) or 'decoder_only' (audio tokens spliced after <image>).
  m.fusion = "xattn"
  # Whisper encoder fields (configs/clap.py:audio_model), the tower of configs/clap.py:<arg>,
  # so a CLAP run can initialise it: --config.init_from='("audio=CLAP_WORKDIR:audio",)'.
  m.audio = clap_cfg.get_config(arg).model.audio
  # LM, gated cross-attention and connector sections: configs/flamingo.py's at this size.
  for key in ("lm", "xattn", "resampler", "mlp", "qformer"):
    m[key] = base[key]
  m.lm.max_len = 64
  common.model_common(m)
  config = common.root(m)
  data = clap_cfg.audio_data(24, as_media=True, max_media=1,
                             num_train=4096 if arg == "tiny" else 64,
                             num_eval=256 if arg == "tiny" else 16)
  common.trainer(config, data=data, total_steps=800 if arg == "tiny" else 20,
                 batch_size=32 if arg == "tiny" else 8, learning_rate=3e-3 if arg == "tiny"
                 else 1e-3, warmup_steps=30 if arg == "tiny" else 2)
  config.evals.validation = ml_collections.ConfigDict(dict(
      type="loss", every_steps=config.total_steps, split="validation", num_batches=4))
  return config
