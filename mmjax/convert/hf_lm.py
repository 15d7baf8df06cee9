"""Hugging Face causal LMs (GPT-2, Llama family) <-> mmjax.models.lm.DecoderLM params.

    fields = lm_fields(hf_config.to_dict())           # -> DecoderConfig / config.model.lm fields
    params = to_mmjax(model.state_dict(), fields)     # strict one-to-one key check
    state = from_mmjax(params, fields)                # numpy, the HF model's state_dict keys
    save_pretrained(params, fields, directory)        # config.json + model.safetensors
    fields, params = load_pretrained(directory)

GPT-2 (`GPT2LMHeadModel`): Conv1D weights are stored [in, out] (no transpose), `c_attn` fuses
q, k, v along the output, positions are a learned table, lm_head is tied to wte. Llama
(`LlamaForCausalLM`, SmolLM2): separate q/k/v/o (GQA: k/v have num_kv_heads heads), RMSNorm,
SwiGLU gate/up/down, rotary in the "rotate half" layout that our rotary uses too, tied or untied.

New tokens (`num_new_tokens`, Flamingo's <image> etc.) are the last rows of the HF embedding (and
lm_head) matrix, as `resize_token_embeddings` leaves them: HF vocab = vocab_size + num_new_tokens.
HF keeps `lm_head.weight` in the state dict of a tied model; it is checked equal to the embedding
on import and written on export (save_pretrained leaves it out, as HF does).
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

import numpy as np

from mmjax.convert import common
from mmjax.convert import torch_layers as T
from mmjax.convert.common import Rule
from mmjax.models import lm as lm_lib

STACK_NAMES = ("blocks",)
TIED_HEAD = "lm_head.weight"
# Causal-mask buffers that GPT-2 checkpoints of older transformers versions store per layer.
_GPT2_BUFFERS = (".attn.bias", ".attn.masked_bias")
_LLAMA_ACTIVATIONS = {"silu": "swiglu", "swish": "swiglu", "gelu_pytorch_tanh": "geglu"}
_GPT2_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu",
                     "relu": "relu", "silu": "silu", "swish": "silu"}


def decoder_config(cfg: Any) -> lm_lib.DecoderConfig:
  """A DecoderConfig from one, or from a dict / ConfigDict of its fields."""
  if isinstance(cfg, lm_lib.DecoderConfig):
    return cfg
  return lm_lib.decoder_config(cfg)


def architecture(cfg: Any) -> str:
  """'gpt2' or 'llama': which HF model family our config is; raises naming the field."""
  c = decoder_config(cfg)
  if c.positions == "learned":
    want = dict(norm="layernorm", qkv_bias=True, out_bias=True, mlp_bias=True,
                tie_embeddings=True)
    kind = "gpt2"
    if c.kv_heads != c.num_heads or c.dims_per_head * c.num_heads != c.width:
      raise ValueError("a GPT-2 export needs num_kv_heads == num_heads and head_dim * num_heads "
                       "== width")
    if c.activation not in _GPT2_ACTIVATIONS.values():
      raise ValueError(f"lm.activation {c.activation!r} has no GPT-2 equivalent")
  else:
    want = dict(norm="rmsnorm", out_bias=c.qkv_bias)
    kind = "llama"
    if c.activation not in _LLAMA_ACTIVATIONS.values():
      raise ValueError(f"lm.activation {c.activation!r} has no Llama equivalent "
                       f"(choose one of {sorted(set(_LLAMA_ACTIVATIONS.values()))})")
  for field, value in want.items():
    if getattr(c, field) != value:
      raise ValueError(f"lm.{field}={getattr(c, field)!r} has no {kind} equivalent "
                       f"(needs {value!r})")
  return kind


# ---- Config mapping ---------------------------------------------------------------------------

def _rope_theta(hf: Mapping[str, Any]) -> float:
  """Rotary base from `rope_parameters` (transformers >= 5) or `rope_theta` / `rope_scaling`."""
  params = hf.get("rope_parameters") or {}
  scaling = hf.get("rope_scaling") or {}
  rope_type = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type")
  if rope_type not in (None, "default"):
    raise ValueError(f"rope scaling {rope_type!r} is not supported (only plain rotary)")
  return float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))


def lm_fields(hf: Mapping[str, Any], num_new_tokens: int = 0) -> dict:
  """HF config (config.json or `config.to_dict()`) -> our lm fields (DecoderConfig names).

  `num_new_tokens`: how many of the HF vocabulary's last rows are new tokens (Flamingo's).
  """
  model_type = hf.get("model_type")
  if model_type == "gpt2":
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn",
                 "add_cross_attention"):
      if hf.get(flag):
        raise ValueError(f"GPT-2 config {flag}=True is not supported")
    if not hf.get("scale_attn_weights", True):
      raise ValueError("GPT-2 config scale_attn_weights=False is not supported")
    act = hf.get("activation_function", "gelu_new")
    if act not in _GPT2_ACTIVATIONS:
      raise ValueError(f"GPT-2 activation_function={act!r} is not supported; known: "
                       f"{sorted(_GPT2_ACTIVATIONS)}")
    if not hf.get("tie_word_embeddings", True):
      raise ValueError("GPT-2 with tie_word_embeddings=False is not supported")
    width, heads = hf["n_embd"], hf["n_head"]
    return dict(vocab_size=hf["vocab_size"] - num_new_tokens, width=width,
                depth=hf["n_layer"], num_heads=heads, num_kv_heads=heads,
                head_dim=width // heads, mlp_dim=hf.get("n_inner") or 4 * width,
                activation=_GPT2_ACTIVATIONS[act], norm="layernorm",
                norm_eps=hf.get("layer_norm_epsilon", 1e-5), positions="learned",
                max_len=hf["n_positions"], tie_embeddings=True, qkv_bias=True, out_bias=True,
                mlp_bias=True, num_new_tokens=num_new_tokens)
  if model_type == "llama":
    if hf.get("pretraining_tp", 1) != 1:
      raise ValueError("Llama config pretraining_tp != 1 is not supported")
    act = hf.get("hidden_act", "silu")
    if act not in _LLAMA_ACTIVATIONS:
      raise ValueError(f"Llama hidden_act={act!r} is not supported; known: "
                       f"{sorted(_LLAMA_ACTIVATIONS)}")
    width, heads = hf["hidden_size"], hf["num_attention_heads"]
    bias = bool(hf.get("attention_bias", False))
    return dict(vocab_size=hf["vocab_size"] - num_new_tokens, width=width,
                depth=hf["num_hidden_layers"], num_heads=heads,
                num_kv_heads=hf.get("num_key_value_heads") or heads,
                head_dim=hf.get("head_dim") or width // heads,
                mlp_dim=hf["intermediate_size"], activation=_LLAMA_ACTIVATIONS[act],
                norm="rmsnorm", norm_eps=hf.get("rms_norm_eps", 1e-6), positions="rotary",
                rope_theta=_rope_theta(hf), max_len=hf.get("max_position_embeddings", 2048),
                tie_embeddings=bool(hf.get("tie_word_embeddings", False)), qkv_bias=bias,
                out_bias=bias, mlp_bias=bool(hf.get("mlp_bias", False)),
                num_new_tokens=num_new_tokens)
  raise ValueError(f"HF model_type {model_type!r} is not supported (only 'gpt2' and 'llama')")


def hf_config(cfg: Any, **extra: Any) -> dict:
  """Our lm fields -> an HF config.json dict (GPT2LMHeadModel or LlamaForCausalLM)."""
  c = decoder_config(cfg)
  kind = architecture(c)
  vocab = c.total_vocab
  if kind == "gpt2":
    act = {v: k for k, v in _GPT2_ACTIVATIONS.items() if k != "gelu_pytorch_tanh"}
    act["silu"] = "silu"
    out = dict(architectures=["GPT2LMHeadModel"], model_type="gpt2", vocab_size=vocab,
               n_positions=c.max_len, n_embd=c.width, n_layer=c.depth, n_head=c.num_heads,
               n_inner=c.mlp_dim or 4 * c.width, activation_function=act[c.activation],
               layer_norm_epsilon=c.norm_eps, tie_word_embeddings=True, resid_pdrop=0.0,
               embd_pdrop=0.0, attn_pdrop=0.0)
  else:
    act = {"swiglu": "silu", "geglu": "gelu_pytorch_tanh"}[c.activation]
    out = dict(architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=vocab,
               hidden_size=c.width, intermediate_size=c.mlp_dim or 4 * c.width,
               num_hidden_layers=c.depth, num_attention_heads=c.num_heads,
               num_key_value_heads=c.kv_heads, head_dim=c.dims_per_head, hidden_act=act,
               max_position_embeddings=c.max_len, rms_norm_eps=c.norm_eps,
               rope_theta=c.rope_theta,
               rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta},
               attention_bias=c.qkv_bias, mlp_bias=c.mlp_bias,
               tie_word_embeddings=c.tie_embeddings, attention_dropout=0.0, pretraining_tp=1)
  out["dtype"] = c.param_dtype
  out.update(extra)
  return out


# ---- Rules --------------------------------------------------------------------------------------

def _split_rows(ours: tuple[str, str], theirs: str, new: int, transpose: bool) -> Rule:
  """[V + new, D] HF matrix <-> our (base, new-token) tables ([D, *] when `transpose`)."""
  t = (lambda a: a.T) if transpose else (lambda a: a)
  return Rule(ours, (theirs,), lambda w: (t(w[:w.shape[0] - new]), t(w[w.shape[0] - new:])),
              lambda base, extra: (np.concatenate([t(base), t(extra)]),))


def _tables(c: lm_lib.DecoderConfig, embed_key: str, head: str) -> list[Rule]:
  """Embedding (and untied output) matrices, with the new tokens as their last rows."""
  if c.num_new_tokens:
    rules = [_split_rows(("embed", "new_embed"), embed_key, c.num_new_tokens, False)]
    if not c.tie_embeddings:
      rules.append(_split_rows(("unembed", "new_unembed"), head, c.num_new_tokens, True))
    return rules
  rules = [T.copy("embed", embed_key)]
  if not c.tie_embeddings:
    rules.append(Rule(("unembed",), (head,), lambda w: (w.T,), lambda k: (k.T,)))
  return rules


def _conv1d(ours: str, theirs: str) -> list[Rule]:
  """GPT-2 Conv1D [in, out] (+ bias) <-> our dense kernel [in, out]: the same layout."""
  return [T.copy(f"{ours}/kernel", f"{theirs}.weight"), T.copy(f"{ours}/bias", f"{theirs}.bias")]


def _gpt2_attention(ours: str, theirs: str, heads: int) -> list[Rule]:
  """Fused Conv1D c_attn [D, 3D] + c_proj [D, D] <-> our query/key/value/out."""
  def w_to_ours(w):
    return tuple(p.reshape(p.shape[0], heads, -1) for p in np.split(w, 3, axis=1))

  def w_to_theirs(*kernels):
    return (np.concatenate([k.reshape(k.shape[0], -1) for k in kernels], axis=1),)

  names = tuple(f"{ours}/{p}" for p in T.QKV)
  return [
      Rule(tuple(f"{n}/kernel" for n in names), (f"{theirs}.c_attn.weight",), w_to_ours,
           w_to_theirs),
      Rule(tuple(f"{n}/bias" for n in names), (f"{theirs}.c_attn.bias",),
           lambda b: tuple(x.reshape(heads, -1) for x in np.split(b, 3)),
           lambda *bs: (np.concatenate([x.reshape(-1) for x in bs]),)),
      Rule((f"{ours}/out/kernel",), (f"{theirs}.c_proj.weight",),
           lambda w: (w.reshape(heads, -1, w.shape[1]),),
           lambda k: (k.reshape(-1, k.shape[-1]),)),
      T.copy(f"{ours}/out/bias", f"{theirs}.c_proj.bias"),
  ]


def gpt2_rules(c: lm_lib.DecoderConfig, prefix: str = "") -> list[Rule]:
  """GPT2LMHeadModel keys (under `prefix`) <-> ours (GPT-2 is tied: no lm_head rule)."""
  p = prefix + "transformer."
  rules = _tables(c, f"{p}wte.weight", prefix + TIED_HEAD)
  rules.append(T.copy("pos_embed", f"{p}wpe.weight"))
  for i in range(c.depth):
    o, t = f"blocks_{i}", f"{p}h.{i}"
    rules += T.layernorm(f"{o}/ln1", f"{t}.ln_1") + T.layernorm(f"{o}/ln2", f"{t}.ln_2")
    rules += _gpt2_attention(f"{o}/attn", f"{t}.attn", c.num_heads)
    rules += _conv1d(f"{o}/mlp/fc1", f"{t}.mlp.c_fc") + _conv1d(f"{o}/mlp/fc2", f"{t}.mlp.c_proj")
  return rules + T.layernorm("final_norm", f"{p}ln_f")


def llama_layer_rules(c: lm_lib.DecoderConfig, ours: str, theirs: str) -> list[Rule]:
  """One LlamaDecoderLayer (`theirs`) <-> our DecoderBlock (`ours`)."""
  o, t = ours, theirs
  bias = lambda name: f"{t}.self_attn.{name}.bias" if c.qkv_bias else None
  rules = [T.copy(f"{o}/ln1/scale", f"{t}.input_layernorm.weight"),
           T.copy(f"{o}/ln2/scale", f"{t}.post_attention_layernorm.weight")]
  rules += T.head_projection(f"{o}/attn/query", f"{t}.self_attn.q_proj.weight", bias("q_proj"),
                             c.num_heads)
  for ours_name, hf in (("key", "k_proj"), ("value", "v_proj")):
    rules += T.head_projection(f"{o}/attn/{ours_name}", f"{t}.self_attn.{hf}.weight", bias(hf),
                               c.kv_heads)
  rules += T.out_projection(f"{o}/attn/out", f"{t}.self_attn.o_proj.weight",
                            f"{t}.self_attn.o_proj.bias" if c.out_bias else None, c.num_heads)
  for ours_name, hf in (("fc1", "up_proj"), ("gate", "gate_proj"), ("fc2", "down_proj")):
    rules += T.linear(f"{o}/mlp/{ours_name}", f"{t}.mlp.{hf}", bias=c.mlp_bias)
  return rules


def llama_rules(c: lm_lib.DecoderConfig, prefix: str = "") -> list[Rule]:
  """LlamaForCausalLM keys (under `prefix`) <-> ours."""
  p = prefix
  rules = _tables(c, f"{p}model.embed_tokens.weight", p + TIED_HEAD)
  for i in range(c.depth):
    rules += llama_layer_rules(c, f"blocks_{i}", f"{p}model.layers.{i}")
  return rules + [T.copy("final_norm/scale", f"{p}model.norm.weight")]


def rules(cfg: Any, prefix: str = "") -> list[Rule]:
  """The conversion rules of our config's HF family (GPT-2 or Llama), keys under `prefix`."""
  c = decoder_config(cfg)
  if architecture(c) == "gpt2":
    return gpt2_rules(c, prefix)
  return llama_rules(c, prefix)


def head_key(prefix: str = "") -> str:
  """The lm_head key of a model whose keys start with `prefix`."""
  return prefix + TIED_HEAD


# ---- State dicts --------------------------------------------------------------------------------

def _embed_key(c: lm_lib.DecoderConfig, prefix: str) -> str:
  if architecture(c) == "gpt2":
    return f"{prefix}transformer.wte.weight"
  return f"{prefix}model.embed_tokens.weight"


def pop_tied_head(state: dict[str, np.ndarray], cfg: Any, prefix: str = "") -> None:
  """Removes a tied model's lm_head.weight from `state` after checking it equals the embedding
  (HF lists the shared tensor under both names)."""
  c = decoder_config(cfg)
  head = head_key(prefix)
  if c.tie_embeddings and head in state:
    tied = state.pop(head)
    if not np.array_equal(tied, state.get(_embed_key(c, prefix))):
      raise ValueError(f"lm.tie_embeddings=True but {head} differs from the input embedding")


def add_tied_head(state: dict[str, np.ndarray], cfg: Any, prefix: str = "") -> None:
  """Adds lm_head.weight (= the embedding) to a tied model's `state`, as HF's state_dict has."""
  c = decoder_config(cfg)
  if c.tie_embeddings:
    state[head_key(prefix)] = state[_embed_key(c, prefix)]


def to_mmjax(state_dict: Mapping[str, Any], cfg: Any, scan: bool | None = None,
             prefix: str = "") -> dict[str, Any]:
  """HF causal-LM state dict (torch or numpy) -> our DecoderLM params tree (numpy, unboxed).

  A bare GPT2Model's keys (no 'transformer.') are accepted too. `scan` defaults to cfg.scan.
  """
  c = decoder_config(cfg)
  state = dict(common.state_dict_to_numpy(state_dict))
  if architecture(c) == "gpt2":
    if f"{prefix}wte.weight" in state:  # GPT2Model (e.g. the original 'gpt2' checkpoint).
      state = {f"{prefix}transformer.{k[len(prefix):]}" if k.startswith(prefix) else k: v
               for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.endswith(_GPT2_BUFFERS)}
  pop_tied_head(state, c, prefix)
  flat = common.apply_to_ours(rules(c, prefix), state, "HF causal-LM state dict")
  if c.scan if scan is None else scan:
    flat = common.stack_layers(flat, STACK_NAMES)
  return common.unflatten(flat)


def from_mmjax(params: Mapping[str, Any], cfg: Any, scan: bool | None = None,
               prefix: str = "", tied_head: bool = True) -> dict[str, np.ndarray]:
  """Our DecoderLM params (boxed or not) -> the HF model's state dict (numpy).

  `tied_head`: include lm_head.weight (= the embedding) for a tied model, as HF's
  `state_dict()` does, so `load_state_dict(strict=True)` accepts the result.
  """
  c = decoder_config(cfg)
  flat = common.flatten(params)
  if c.scan if scan is None else scan:
    flat = common.unstack_layers(flat, STACK_NAMES)
  state = common.apply_to_theirs(rules(c, prefix), flat, "mmjax LM params")
  if tied_head:
    add_tied_head(state, c, prefix)
  return state


def save_pretrained(params: Mapping[str, Any], cfg: Any, directory: str,
                    **config_extra: Any) -> None:
  """Writes `config.json` + `model.safetensors` that AutoModelForCausalLM.from_pretrained loads."""
  os.makedirs(directory, exist_ok=True)
  state = from_mmjax(params, cfg, tied_head=False)
  common.save_safetensors(state, os.path.join(directory, "model.safetensors"),
                          {"format": "pt"})
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(hf_config(cfg, **config_extra), f, indent=2)


def load_pretrained(directory: str, num_new_tokens: int = 0, scan: bool = True
                    ) -> tuple[dict, dict[str, Any]]:
  """(our lm fields, params) from an HF directory with config.json and *.safetensors."""
  with open(os.path.join(directory, "config.json")) as f:
    fields = dict(lm_fields(json.load(f), num_new_tokens), scan=scan)
  files = sorted(n for n in os.listdir(directory) if n.endswith(".safetensors"))
  if not files:
    raise FileNotFoundError(f"no .safetensors weights in {directory!r}")
  state: dict[str, np.ndarray] = {}
  for name in files:
    state.update(common.load_state_dict(os.path.join(directory, name)))
  return fields, to_mmjax(state, fields)
