"""BERT-style text encoder (mmjax/models/bert.py): LiT's locked text tower, the Q-Former base.

Presets: micro (seconds on CPU), minilm_l6 (all-MiniLM-L6-v2: 6 layers, width 384, 12 heads),
bert_base (bert-base-uncased). Other modules embed `bert(...)` as a tower block.
"""

import ml_collections

import common

PRESETS = ("micro", "minilm_l6", "bert_base")


def bert(**overrides) -> ml_collections.ConfigDict:
  """BERT encoder fields (the kwargs of mmjax.models.bert.Bert); defaults are bert-base."""
  c = ml_collections.ConfigDict()
  # Rows of the word embedding (30522 for bert-base-uncased's WordPiece vocabulary).
  c.vocab_size = 30522
  # Number of learned positions = longest text the encoder reads.
  c.max_length = 512
  # Rows of the token-type (segment A/B) embedding.
  c.type_vocab_size = 2
  # Transformer width, layers and heads.
  c.width = 768
  c.depth = 12
  c.num_heads = 12
  # Feed-forward hidden width; None means 4 * width.
  c.mlp_dim = ml_collections.FieldReference(None, field_type=int)
  # MLP activation ('gelu' = BERT's exact erf GELU; 'gelu_tanh' = HF's 'gelu_new').
  c.activation = "gelu"
  # LayerNorm epsilon (BERT: 1e-12).
  c.norm_eps = 1e-12
  # Dense + tanh pooler on the first ([CLS]) token (BertModel's pooler_output).
  c.pooler = True
  # Dropout on embeddings and residual branches during training.
  c.dropout_rate = 0.0
  c.update(overrides)
  return c


def get_config(arg: str = "micro") -> ml_collections.ConfigDict:
  """The preset named `arg` (a model block with dtypes / scan / remat)."""
  if arg == "bert_base":
    m = bert()
  elif arg == "minilm_l6":
    m = bert(width=384, depth=6, num_heads=12, mlp_dim=1536)
  elif arg == "micro":
    m = bert(vocab_size=256, max_length=32, width=32, depth=2, num_heads=2)
  else:
    raise ValueError(f"unknown bert preset {arg!r}; choose one of {PRESETS}")
  return common.root(common.model_common(m))
