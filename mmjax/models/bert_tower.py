"""LiT's text tower (Zhai et al. 2022, "LiT: Zero-Shot Transfer with Locked-image text Tuning"):
a pretrained BERT sentence encoder (all-MiniLM-L6-v2) with a trainable linear head.

The paper locks a pretrained image tower ("Lu" in its (image, text) notation); here the text
tower is the locked pretrained one and the ViT trains from scratch ("uL"), since no pretrained
vision weights exist offline (configs/clip.py:lit_tiny).

The tower is the `text` sub-tree of a two-tower model whose `model.text.kind` is 'bert'
(configs/clip.py:lit_text): `text/bert/...` holds mmjax.models.bert.Bert (initialised from the
Hugging Face checkpoint through `init_from=('text/bert=hf_bert:DIR:',)` and locked with
`optim.frozen=('^text/bert/',)`), `text/proj` the projection into the joint embedding space,
which trains. The sentence feature is sentence-transformers' mean of the final token states over
the non-padding tokens; the L2 normalisation all-MiniLM-L6-v2 adds is left out because the
two-tower model L2-normalises the projected embedding, and a bias-free linear map commutes with
a positive per-example scale, so it would change nothing.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import flax.linen as nn
import jax

from mmjax import parallel as P
from mmjax.models import bert as bert_lib
from mmjax.models import layers

Array = jax.Array

KINDS = ("transformer", "bert")
# Fields of a kind='bert' text block that are the tower's own, not the encoder's.
TOWER_FIELDS = ("kind", "context_length", "pad_id", "proj_bias", "project")


def text_kind(config: Any) -> str:
  """`model.text.kind`: 'transformer' (mmjax.models.text) or 'bert' (this file). Blocks written
  before the field existed (old runs' config.json, open_clip conversions) are 'transformer'."""
  kind = config.get("kind", "transformer")
  if kind not in KINDS:
    raise ValueError(f"config model.text.kind={kind!r}; choose one of {KINDS}")
  return kind


def tower_kwargs(config: Any, embed_dim: Optional[int], common: Mapping[str, Any]) -> dict:
  """BertTextTower kwargs from a kind='bert' text block plus the model-wide fields."""
  fields = dict(config)
  context_length = fields.pop("context_length")
  if context_length > fields["max_length"]:
    raise ValueError(f"config model.text.context_length={context_length} exceeds the encoder's "
                     f"model.text.max_length={fields['max_length']}")
  if not fields.pop("project", True):
    raise ValueError("config model.text.project=False: LiT's BERT tower always has a trainable "
                     "projection head (set embed_dim instead)")
  if embed_dim is None:
    raise ValueError("a kind='bert' text tower needs the model's embed_dim")
  tower = dict(pad_id=fields.pop("pad_id"), proj_bias=fields.pop("proj_bias"),
               output_dim=embed_dim)
  fields.pop("kind")
  fields.update(common)
  return dict(tower, bert=fields)


class BertTextTower(nn.Module):
  """BERT encoder -> masked mean pooling -> linear projection; `__call__(text, train)` returns
  `(projected [B, output_dim], tokens [B, L, width])`, like text.TextTransformer.

  Attributes:
    bert: kwargs of mmjax.models.bert.Bert (the fields of configs/bert_text.py:bert plus dtypes,
      scan and remat).
    pad_id: padding id; tokens equal to it are neither attended to nor pooled (BERT: 0).
    output_dim: width of the joint embedding space (the projection's output).
    proj_bias: bias on the projection.
  """
  bert: Mapping[str, Any]
  pad_id: int = 0
  output_dim: int = 512
  proj_bias: bool = False

  def setup(self):
    self.encoder = bert_lib.Bert(**self.bert, name="bert")
    self.proj = layers.dense(self.output_dim, [P.EMBED], [None], use_bias=self.proj_bias,
                             dtype=self.encoder.dtype, param_dtype=self.encoder.param_dtype,
                             kernel_init=nn.initializers.normal(self.encoder.width ** -0.5),
                             name="proj")

  def features(self, text: Array, train: bool = False) -> tuple[Array, Array]:
    """(mean-pooled sentence features [B, width] before the projection, token states)."""
    mask = (text != self.pad_id).astype("int32")
    _, tokens = self.encoder(text, mask, train=train)
    return bert_lib.mean_pool(tokens, mask), tokens

  def __call__(self, text: Array, train: bool = False) -> tuple[Array, Array]:
    pooled, tokens = self.features(text, train)
    return self.proj(pooled), tokens
