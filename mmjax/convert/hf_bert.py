"""Hugging Face transformers BertModel state dicts <-> mmjax.models.bert.Bert params.

    fields = bert_fields(hf_config.to_dict())        # -> configs/bert_text.py:bert(**fields)
    params = to_mmjax(bert_model.state_dict(), cfg)   # strict one-to-one key check
    state = from_mmjax(params, cfg)                   # numpy, BertModel's keys
    fields, params = load_pretrained(DIR)             # config.json + model.safetensors, no torch

`cfg` is a bert block (fields of configs/bert_text.py:bert, plus `scan`). Checkpoints of
BertFor* heads keep the encoder under `bert.`: pass prefix='bert.' (heads are not converted).
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import numpy as np

from mmjax.convert import common
from mmjax.convert import torch_layers as T
from mmjax.convert.common import Rule

STACK_NAMES = ("blocks",)
# A non-trainable buffer older checkpoints save (arange(max_positions)); checked, not converted.
POSITION_IDS = "embeddings.position_ids"

_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                "relu": "relu", "silu": "silu", "swish": "silu"}


def bert_fields(hf: Mapping[str, Any], pooler: bool = True) -> dict:
  """BertConfig (as a dict: `config.to_dict()` or config.json) -> configs/bert_text.py fields."""
  if hf.get("position_embedding_type", "absolute") != "absolute":
    raise ValueError(f"position_embedding_type={hf['position_embedding_type']!r} is not "
                     "supported (only 'absolute')")
  if hf.get("is_decoder") or hf.get("add_cross_attention"):
    raise ValueError("BERT decoders / cross-attention are not supported")
  act = hf.get("hidden_act", "gelu")
  if act not in _ACTIVATIONS:
    raise ValueError(f"hidden_act={act!r} is not supported; known: {sorted(_ACTIVATIONS)}")
  return dict(vocab_size=hf["vocab_size"], max_length=hf.get("max_position_embeddings", 512),
              type_vocab_size=hf.get("type_vocab_size", 2), width=hf["hidden_size"],
              depth=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
              mlp_dim=hf.get("intermediate_size", 4 * hf["hidden_size"]),
              activation=_ACTIVATIONS[act], norm_eps=hf.get("layer_norm_eps", 1e-12),
              pooler=pooler)


def rules(cfg: Mapping[str, Any], prefix: str = "") -> list[Rule]:
  """Conversion rules for a BERT encoder with `cfg`'s depth, num_heads and pooler (dict or
  ConfigDict)."""
  p, h = prefix, cfg["num_heads"]
  out = [T.embedding("token_embed", f"{p}embeddings.word_embeddings"),
         T.copy("posemb", f"{p}embeddings.position_embeddings.weight"),
         T.embedding("type_embed", f"{p}embeddings.token_type_embeddings")]
  out += T.layernorm("ln_embed", f"{p}embeddings.LayerNorm")
  for i in range(cfg["depth"]):
    o, t = f"blocks_{i}", f"{p}encoder.layer.{i}"
    for name in T.QKV:
      out += T.head_projection(f"{o}/attn/{name}", f"{t}.attention.self.{name}.weight",
                               f"{t}.attention.self.{name}.bias", h)
    out += T.out_projection(f"{o}/attn/out", f"{t}.attention.output.dense.weight",
                            f"{t}.attention.output.dense.bias", h)
    out += T.layernorm(f"{o}/ln1", f"{t}.attention.output.LayerNorm")
    out += T.linear(f"{o}/mlp/fc1", f"{t}.intermediate.dense")
    out += T.linear(f"{o}/mlp/fc2", f"{t}.output.dense")
    out += T.layernorm(f"{o}/ln2", f"{t}.output.LayerNorm")
  if cfg["pooler"]:
    out += T.linear("pooler", f"{p}pooler.dense")
  return out


def to_mmjax(state_dict: Mapping[str, Any], cfg: Any, prefix: str = "",
             scan: bool = True) -> dict[str, Any]:
  """BertModel state dict (torch tensors or numpy) -> our Bert params tree (numpy)."""
  state = common.state_dict_to_numpy(state_dict)
  ids_key = prefix + POSITION_IDS
  if ids_key in state:
    ids = state.pop(ids_key)
    if not np.array_equal(ids.reshape(-1), np.arange(ids.size)):
      raise ValueError(f"{ids_key} is not arange({ids.size}); such checkpoints are unsupported")
  flat = common.apply_to_ours(rules(cfg, prefix), state, "BERT state dict")
  if scan:
    flat = common.stack_layers(flat, STACK_NAMES)
  return common.unflatten(flat)


def from_mmjax(params: Mapping[str, Any], cfg: Any, prefix: str = "",
               scan: bool = True) -> dict[str, np.ndarray]:
  """Our Bert params tree (boxed or not) -> BertModel state dict (numpy, no position_ids)."""
  flat = common.flatten(params)
  if scan:
    flat = common.unstack_layers(flat, STACK_NAMES)
  return common.apply_to_theirs(rules(cfg, prefix), flat, "mmjax BERT params")


# What a pretrained BERT directory must hold (all-MiniLM-L6-v2 as scripts/fetch_weights.sh
# installs it, or any Hugging Face BertModel save).
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def load_pretrained(directory: str, scan: bool = True) -> tuple[dict, dict[str, Any]]:
  """(configs/bert_text.py fields, our Bert params tree in numpy) of a Hugging Face BertModel
  directory: its config.json and model.safetensors, read with numpy only (no torch, no hub).
  Raises FileNotFoundError naming the missing file and scripts/fetch_weights.sh."""
  paths = {name: os.path.join(directory, name) for name in (CONFIG_FILE, WEIGHTS_FILE)}
  missing = [path for path in paths.values() if not os.path.exists(path)]
  if missing:
    raise FileNotFoundError(f"pretrained BERT directory {directory} lacks {missing}; "
                            "scripts/fetch_weights.sh DATA_DIR installs all-MiniLM-L6-v2 into "
                            "DATA_DIR/weights/all-MiniLM-L6-v2")
  with open(paths[CONFIG_FILE], encoding="utf-8") as f:
    fields = bert_fields(json.load(f))
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  state = load_file(paths[WEIGHTS_FILE])
  # BertFor* checkpoints keep the encoder under `bert.`; BertModel / sentence-transformers saves
  # (all-MiniLM-L6-v2) have no prefix. The pooler is converted when present.
  prefix = "bert." if any(k.startswith("bert.") for k in state) else ""
  fields["pooler"] = f"{prefix}pooler.dense.weight" in state
  state = {k: v for k, v in state.items() if k.startswith(prefix)} if prefix else state
  return fields, to_mmjax(state, fields, prefix=prefix, scan=scan)
