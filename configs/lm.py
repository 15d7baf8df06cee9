"""Decoder-only LM pre-training (GPT-2 / Llama family; the LM inside Flamingo).

    python -m mmjax.train --config configs/lm.py:tiny --workdir /tmp/lm_tiny
    python -m mmjax.summary --config configs/lm.py:smollm2_135m   # total_params: 134515008

Presets: tiny / micro (seconds on CPU), gpt2 (124M), smollm2_135m (SmolLM2-135M, Llama
architecture with grouped-query attention; the one pretrained LM installable here).
"""

import ml_collections

import common
from mmjax.data import config as data_config

PRESETS = ("tiny", "micro", "gpt2", "smollm2_135m")


def lm_model(**overrides) -> ml_collections.ConfigDict:
  """The decoder fields (mmjax.models.lm.DecoderConfig), tiny by default, then `overrides`."""
  m = ml_collections.ConfigDict()
  # Rows of the pretrained embedding table.
  m.vocab_size = 256
  # Residual-stream width.
  m.width = 32
  # Number of decoder layers.
  m.depth = 2
  # Query heads.
  m.num_heads = 4
  # Key/value heads (grouped-query attention); equal to num_heads for multi-head attention.
  m.num_kv_heads = 2
  # Per-head width (width // num_heads for the usual shapes).
  m.head_dim = 8
  # MLP hidden width.
  m.mlp_dim = 64
  # MLP activation: 'gelu_tanh' (GPT-2), 'swiglu' (Llama), or any layers.ACTIVATIONS name.
  m.activation = "swiglu"
  # 'layernorm' (GPT-2) or 'rmsnorm' (Llama).
  m.norm = "rmsnorm"
  # Epsilon of every norm.
  m.norm_eps = 1e-5
  # 'learned' absolute position table or 'rotary' embeddings.
  m.positions = "rotary"
  # Rotary base frequency.
  m.rope_theta = 10000.0
  # Longest sequence (learned table size; upper bound of KV caches).
  m.max_len = 128
  # Output layer shares the embedding matrix.
  m.tie_embeddings = True
  # Biases on the q/k/v projections, the attention output and the MLP.
  m.qkv_bias = False
  m.out_bias = False
  m.mlp_bias = False
  # Extra tokens in a separate trainable table (Flamingo: <image>, <|endofchunk|>, <PAD>).
  m.num_new_tokens = 0
  # Dropout on embeddings and residual branches in training.
  m.dropout_rate = 0.0
  # Scan over layers (compile time independent of depth) and the remat policy name.
  m.scan = True
  m.remat = "none"
  # Compute dtype ('auto': bfloat16 on GPU/TPU, float32 on CPU) and parameter dtype.
  m.dtype = "auto"
  m.param_dtype = "float32"
  # Self-attention kernel: 'auto' (cuDNN flash attention on GPU when dtype and head_dim allow,
  # else XLA), 'xla' or 'cudnn'.
  m.attention_impl = "auto"
  m.update(overrides)
  return m


def lm_preset(arg: str) -> ml_collections.ConfigDict:
  """The decoder fields of a preset (shared with configs/flamingo.py)."""
  if arg == "micro":
    return lm_model(vocab_size=512)
  if arg == "tiny":
    return lm_model(vocab_size=512, width=128, depth=4, num_heads=4, num_kv_heads=2,
                    head_dim=32, mlp_dim=384, max_len=256)
  if arg == "gpt2":
    # GPT-2 small: 124,439,808 parameters.
    return lm_model(vocab_size=50257, width=768, depth=12, num_heads=12, num_kv_heads=12,
                    head_dim=64, mlp_dim=3072, activation="gelu_tanh", norm="layernorm",
                    positions="learned", max_len=1024, qkv_bias=True, out_bias=True,
                    mlp_bias=True, dropout_rate=0.1)
  if arg == "smollm2_135m":
    # HuggingFaceTB/SmolLM2-135M: Llama architecture, 134,515,008 parameters.
    return lm_model(vocab_size=49152, width=576, depth=30, num_heads=9, num_kv_heads=3,
                    head_dim=64, mlp_dim=1536, rope_theta=100000.0, max_len=8192)
  raise ValueError(f"unknown lm preset {arg!r}; choose one of {PRESETS}")


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  """The config of preset `arg`: the decoder and its trainer sections (text-only LM data)."""
  model = lm_preset(arg)
  # Registered model family (mmjax.models.lm.LMFamily).
  model.family = "lm"
  config = common.root(model)
  small = arg in ("tiny", "micro")
  data = data_config.default_data_config(task="lm", text_length=64 if small else 2048)
  return common.trainer(config, data=data, total_steps=(300 if arg == "tiny" else 50) if small
                        else 100_000, batch_size=32 if small else 256,
                        learning_rate=3e-3 if small else 3e-4,
                        warmup_steps=20 if small else 2000)
