"""llama.cpp GGUF checkpoints of Llama-family LMs -> mmjax DecoderLM params and tokenizer.

    metadata, tensors = read_gguf(path)          # dequantised float32 numpy, HF [out, in] layout
    fields, params = to_mmjax(path)              # our lm fields + DecoderLM params
    tok = tokenizer(metadata)                    # mmjax.data.tokenizers.HFTokenizer
    fields, params, tok = load(path)             # all three from one read

Weights are dequantised with `gguf.quants.dequantize` (Q4_1, Q8_0, F16, ... -> float32), renamed
to Hugging Face Llama keys and converted by `hf_lm` (strict one-to-one key checks on both steps).
llama.cpp's converter permutes the rows of attn_q / attn_k from HF's "rotate half" rotary layout
to its interleaved one (per head, rows [0, H/2, 1, H/2 + 1, ...]); we undo that so our rotary
(HF layout) applies unchanged. The tokenizer is rebuilt from tokenizer.ggml.* as a `tokenizers`
byte-level BPE, as llama.cpp and transformers build it.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from mmjax.convert import common
from mmjax.convert import hf_lm

ARCHITECTURES = ("llama",)
# GGUF tensor name (blk.{i}. prefix removed) -> HF LlamaForCausalLM key (model.layers.{i}.).
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight", "attn_q.bias": "self_attn.q_proj.bias",
    "attn_k.weight": "self_attn.k_proj.weight", "attn_k.bias": "self_attn.k_proj.bias",
    "attn_v.weight": "self_attn.v_proj.weight", "attn_v.bias": "self_attn.v_proj.bias",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_output.bias": "self_attn.o_proj.bias",
    "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GLOBAL_NAMES = {"token_embd.weight": "model.embed_tokens.weight",
                 "output_norm.weight": "model.norm.weight", "output.weight": "lm_head.weight"}
_BLOCK = re.compile(r"^blk\.(\d+)\.(.+)$")
# tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
CONTROL, USER_DEFINED = 3, 4
# tokenizer.ggml.pre values whose llama.cpp pre-tokenizer splits every digit before the GPT-2
# regex (SmolLM2's original tokenizer.json: Digits(individual_digits=True) + ByteLevel).
_DIGIT_SPLIT_PRE = ("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone")
_BYTE_LEVEL_PRE = ("default", "gpt2", "gpt-2") + _DIGIT_SPLIT_PRE


def _value(field: Any) -> Any:
  """A GGUFReader field's value (scalar, string, or list for arrays)."""
  return field.contents()


def read_gguf(path: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
  """(metadata {key: value}, tensors {gguf name: float32 array in numpy/HF [out, in] order})."""
  import gguf  # pylint: disable=import-outside-toplevel
  reader = gguf.GGUFReader(path)
  metadata = {name: _value(field) for name, field in reader.fields.items()
              if not name.startswith("GGUF.")}
  tensors = {}
  for t in reader.tensors:
    # ne0 (the contiguous, input axis) comes first in t.shape: numpy order is reversed.
    shape = tuple(int(n) for n in reversed(t.shape.tolist()))
    values = gguf.quants.dequantize(t.data, t.tensor_type)
    tensors[t.name] = np.asarray(values, np.float32).reshape(shape)
  return metadata, tensors


def _architecture(metadata: Mapping[str, Any]) -> str:
  arch = metadata.get("general.architecture")
  if arch not in ARCHITECTURES:
    raise ValueError(f"GGUF general.architecture={arch!r} is not supported; known: "
                     f"{ARCHITECTURES}")
  return arch


def lm_fields(metadata: Mapping[str, Any], tensor_names: Any) -> dict:
  """GGUF metadata (llama.*) and the tensor names -> our lm fields (DecoderConfig names)."""
  arch = _architecture(metadata)
  get = lambda key, default=None: metadata.get(f"{arch}.{key}", default)
  scaling = get("rope.scaling.type", "none")
  if scaling not in ("none", None) or "rope_freqs.weight" in tensor_names:
    raise ValueError(f"GGUF rope scaling ({scaling!r} / rope_freqs) is not supported")
  width, heads = int(get("embedding_length")), int(get("attention.head_count"))
  head_dim = int(get("attention.key_length", width // heads))
  if int(get("rope.dimension_count", head_dim)) != head_dim:
    raise ValueError(f"partial rotary ({arch}.rope.dimension_count="
                     f"{get('rope.dimension_count')} of head_dim {head_dim}) is not supported")
  vocab = get("vocab_size")
  if vocab is None:
    vocab = len(metadata["tokenizer.ggml.tokens"])
  bias = "blk.0.attn_q.bias" in tensor_names
  return dict(vocab_size=int(vocab), width=width, depth=int(get("block_count")),
              num_heads=heads, num_kv_heads=int(get("attention.head_count_kv", heads)),
              head_dim=head_dim, mlp_dim=int(get("feed_forward_length")),
              activation="swiglu", norm="rmsnorm",
              norm_eps=float(get("attention.layer_norm_rms_epsilon")), positions="rotary",
              rope_theta=float(get("rope.freq_base", 10000.0)),
              max_len=int(get("context_length", 2048)),
              tie_embeddings="output.weight" not in tensor_names, qkv_bias=bias,
              out_bias="blk.0.attn_output.bias" in tensor_names, mlp_bias=False,
              num_new_tokens=0)


def unpermute_rotary(w: np.ndarray, heads: int) -> np.ndarray:
  """Inverse of llama.cpp's `permute` of q/k rows: per head, interleaved -> rotate-half.

  llama.cpp: w.reshape(heads, 2, H/2, in).swapaxes(1, 2) (row j of half h goes to 2j + h).
  """
  rows = w.shape[0]
  return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def permute_rotary(w: np.ndarray, heads: int) -> np.ndarray:
  """llama.cpp's `permute` (HF rotate-half rows -> GGUF interleaved rows); for tests/export."""
  rows = w.shape[0]
  return w.reshape(heads, 2, rows // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def hf_state_dict(tensors: Mapping[str, np.ndarray], fields: Mapping[str, Any]
                  ) -> dict[str, np.ndarray]:
  """GGUF tensors -> HF LlamaForCausalLM state dict (q/k rows un-permuted); names every tensor
  it cannot place."""
  out, unknown = {}, []
  for name, value in tensors.items():
    m = _BLOCK.match(name)
    if m and m[2] in _LAYER_NAMES:
      key = f"model.layers.{m[1]}.{_LAYER_NAMES[m[2]]}"
      if m[2].startswith("attn_q."):
        value = unpermute_rotary(value, fields["num_heads"])
      elif m[2].startswith("attn_k."):
        value = unpermute_rotary(value, fields["num_kv_heads"])
      out[key] = value
    elif name in _GLOBAL_NAMES:
      out[_GLOBAL_NAMES[name]] = value
    else:
      unknown.append(name)
  if unknown:
    raise common.KeyMismatchError(f"GGUF tensors with no Llama mapping: {sorted(unknown)}")
  return out


def to_mmjax(path: str, scan: bool = True) -> tuple[dict, dict[str, Any]]:
  """(our lm fields incl. `scan`, DecoderLM params in float32) from a GGUF file."""
  fields, params, _ = load(path, scan, with_tokenizer=False)
  return fields, params


def load(path: str, scan: bool = True, with_tokenizer: bool = True) -> tuple[dict, dict, Any]:
  """(lm fields, params, tokenizer or None) from one read of a GGUF file."""
  metadata, tensors = read_gguf(path)
  fields = dict(lm_fields(metadata, tensors.keys()), scan=scan)
  params = hf_lm.to_mmjax(hf_state_dict(tensors, fields), fields)
  return fields, params, tokenizer(metadata) if with_tokenizer else None


# ---- Tokenizer ---------------------------------------------------------------------------------

def tokenizer(metadata: Mapping[str, Any], name: str = "gguf"):
  """The BPE tokenizer stored in the file as an `mmjax.data.tokenizers.HFTokenizer`.

  Control tokens (token_type 3, e.g. <|im_start|>) are matched whole in text, as llama.cpp and
  transformers do; ids never gain BOS/EOS in `encode` (see Tokenizer.pad_ids for that).
  """
  from tokenizers import AddedToken  # pylint: disable=import-outside-toplevel
  from tokenizers import Tokenizer as RustTokenizer  # pylint: disable=import-outside-toplevel
  from tokenizers import decoders, models, pre_tokenizers  # pylint: disable=import-outside-toplevel
  from mmjax.data import tokenizers as tok_lib  # pylint: disable=import-outside-toplevel
  model = metadata.get("tokenizer.ggml.model")
  pre = metadata.get("tokenizer.ggml.pre", "default")
  if model != "gpt2" or pre not in _BYTE_LEVEL_PRE:
    raise ValueError(f"GGUF tokenizer model={model!r} pre={pre!r} is not supported (byte-level "
                     f"BPE 'gpt2' with pre in {_BYTE_LEVEL_PRE})")
  tokens = list(metadata["tokenizer.ggml.tokens"])
  types = list(metadata.get("tokenizer.ggml.token_type") or [1] * len(tokens))
  spelling = tok_lib._bytes_to_unicode()  # pylint: disable=protected-access
  alphabet = set(spelling.values())
  # Tokens outside the byte alphabet (control tokens may be) are respelled byte by byte, as
  # transformers' GGUF loader does, so every vocabulary entry is byte-level.
  vocab = {t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8")): i
           for i, t in enumerate(tokens)}
  merges = []
  for merge in metadata["tokenizer.ggml.merges"]:
    parts = merge.split(" ")
    if len(parts) != 2:
      raise ValueError(f"malformed GGUF merge {merge!r}")
    merges.append(tuple(parts))
  tok = RustTokenizer(models.BPE(vocab, merges))
  byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  if pre in _DIGIT_SPLIT_PRE:
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), byte_level])
  else:
    tok.pre_tokenizer = byte_level
  tok.decoder = decoders.ByteLevel()
  control = [AddedToken(t, special=True, normalized=False)
             for t, kind in zip(tokens, types) if kind == CONTROL and set(t) <= alphabet]
  user = [AddedToken(t, special=False, normalized=False)
          for t, kind in zip(tokens, types) if kind == USER_DEFINED and t in vocab]
  tok.add_special_tokens(control)
  tok.add_tokens(user)
  eos = int(metadata["tokenizer.ggml.eos_token_id"])
  bos = int(metadata.get("tokenizer.ggml.bos_token_id", eos))
  pad = int(metadata.get("tokenizer.ggml.padding_token_id", eos))
  return tok_lib.HFTokenizer(name, tok, pad_id=pad, bos_id=bos, eos_id=eos)


def chat_template(metadata: Mapping[str, Any]) -> str | None:
  """The Jinja chat template stored in the file (tokenizer.chat_template), if any."""
  return metadata.get("tokenizer.chat_template")


def save_tokenizer(metadata: Mapping[str, Any], path: str) -> None:
  """Writes the file's tokenizer as a Hugging Face tokenizer.json (tokenizers.Tokenizer.save)."""
  tokenizer(metadata)._tok.save(path)  # pylint: disable=protected-access
