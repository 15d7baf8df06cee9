"""Weight conversion CLI: `python -m mmjax.convert FROM TO --input IN --output OUT [model]`.

    # open_clip checkpoint -> our params (flat 'a/b/c' keys) as .safetensors or .npz
    python -m mmjax.convert open_clip mmjax --open_clip_config ViT-B-32 \
        --input open_clip_model.safetensors --output params.safetensors
    # our params -> an open_clip state dict (.safetensors) that open_clip loads strictly
    python -m mmjax.convert mmjax open_clip --config configs/clip.py:vit_b32 \
        --input params.safetensors --output open_clip_model.safetensors
    # Hugging Face BertModel (config.json next to the weights) <-> our Bert
    python -m mmjax.convert hf_bert mmjax --input DIR/model.safetensors --output bert.npz
    # Hugging Face GPT-2 / Llama directory (config.json + *.safetensors) <-> our DecoderLM; the
    # export is a directory that transformers.AutoModelForCausalLM.from_pretrained loads
    python -m mmjax.convert hf_lm mmjax --input HF_DIR --output lm.safetensors
    python -m mmjax.convert mmjax hf_lm --config configs/lm.py:smollm2_135m \
        --input lm.safetensors --output HF_DIR
    # llama.cpp GGUF (Llama family) -> our DecoderLM (+ its tokenizer as tokenizer.json)
    python -m mmjax.convert gguf mmjax --input SmolLM2-135M-Instruct.Q4_1.gguf \
        --output lm.safetensors --tokenizer_output tokenizer.json
    # open_flamingo Flamingo state dict <-> our Flamingo (--no_vision: no vision_encoder.*)
    python -m mmjax.convert open_flamingo mmjax --config configs/flamingo.py:tiny \
        --input checkpoint.pt --output flamingo.safetensors

The model comes from `--config configs/<family>.py:<preset> [--config.x=y ...]` or, for
open_clip, `--open_clip_config NAME|FILE.json` (open_clip's model-config dict). Our params are
written by the WRITERS entry for the output's extension: an orbax checkpoint writer (the
trainer's `{params, ...}` layout) plugs in there once that layout exists.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Mapping

import numpy as np

from mmjax import config_lib
from mmjax.convert import common
from mmjax.convert import gguf
from mmjax.convert import hf_bert
from mmjax.convert import hf_lm
from mmjax.convert import open_clip as oc
from mmjax.convert import open_clip_config
from mmjax.convert import open_flamingo

FORMATS = ("open_clip", "hf_bert", "hf_lm", "gguf", "open_flamingo", "mmjax")


def write_safetensors(params: Mapping[str, Any], path: str, meta: Mapping[str, str]) -> None:
  """Our params as flat 'a/b/c' keys in a .safetensors file."""
  common.save_safetensors(common.flatten(params), path, meta)


def write_npz(params: Mapping[str, Any], path: str, meta: Mapping[str, str]) -> None:
  """Our params as flat 'a/b/c' keys in a .npz file (metadata under '__meta__' as JSON)."""
  np.savez(path, __meta__=np.array(json.dumps(dict(meta))), **common.flatten(params))


# Output extension -> writer(params_tree, path, metadata). An orbax writer goes here.
WRITERS: dict[str, Callable[[Mapping[str, Any], str, Mapping[str, str]], None]] = {
    ".safetensors": write_safetensors, ".npz": write_npz,
}


def read_params(path: str) -> dict[str, Any]:
  """Our params tree from a file WRITERS wrote (.safetensors or .npz)."""
  if path.endswith(".npz"):
    with np.load(path) as data:
      flat = {k: data[k] for k in data.files if k != "__meta__"}
  elif path.endswith(".safetensors"):
    flat = common.load_state_dict(path)
  else:
    raise ValueError(f"cannot read mmjax params from {path!r}: use .safetensors or .npz")
  return common.unflatten(flat)


def _writer(path: str):
  ext = os.path.splitext(path)[1]
  if ext not in WRITERS:
    raise ValueError(f"no writer for {path!r}; supported extensions: {sorted(WRITERS)}")
  return WRITERS[ext]


def open_clip_model_config(args: argparse.Namespace, overrides: list[str]) -> Any:
  """Our model block from --config (with overrides) or from --open_clip_config."""
  if args.config:
    return config_lib.load_config(args.config, overrides).model
  if not args.open_clip_config:
    raise ValueError("give --config configs/<family>.py:<preset> or --open_clip_config")
  if args.open_clip_config.endswith(".json"):
    with open(args.open_clip_config) as f:
      oc_config = json.load(f)
  else:
    import open_clip  # pylint: disable=import-outside-toplevel
    oc_config = open_clip.get_model_config(args.open_clip_config)
    if oc_config is None:
      raise ValueError(f"open_clip has no model config named {args.open_clip_config!r}")
  return open_clip_config.model_config(oc_config)


def bert_fields(args: argparse.Namespace) -> dict:
  """Our Bert fields from --hf_config (default: config.json beside the weights)."""
  path = args.hf_config or os.path.join(os.path.dirname(os.path.abspath(args.input)),
                                        "config.json")
  with open(path) as f:
    return hf_bert.bert_fields(json.load(f), pooler=not args.no_pooler)


def _need_config(args: argparse.Namespace) -> str:
  if not args.config:
    raise ValueError(f"{args.source} -> {args.target} needs --config configs/<family>.py:<preset>")
  return args.config


def lm_model_config(args: argparse.Namespace, overrides: list[str]) -> dict:
  """Our DecoderLM fields from --config, which must be an `lm` family config."""
  model = config_lib.load_config(_need_config(args), overrides).model
  if model.get("family") != "lm":
    raise ValueError(f"mmjax -> hf_lm needs an 'lm' family config (configs/lm.py:<preset>), "
                     f"got family {model.get('family')!r}")
  return {k: v for k, v in model.items() if k != "family"}


def convert(args: argparse.Namespace, overrides: list[str]) -> None:
  """Runs one conversion described by the parsed arguments."""
  meta = {"source": args.source, "input": os.path.basename(args.input)}
  if args.source == "open_clip" and args.target == "mmjax":
    model = open_clip_model_config(args, overrides)
    params = oc.to_mmjax(common.load_state_dict(args.input), model)
    _writer(args.output)(params, args.output, dict(meta, model=model.to_json()))
  elif args.source == "mmjax" and args.target == "open_clip":
    model = open_clip_model_config(args, overrides)
    common.save_safetensors(oc.from_mmjax(read_params(args.input), model), args.output)
  elif args.source == "hf_bert" and args.target == "mmjax":
    fields = bert_fields(args)
    params = hf_bert.to_mmjax(common.load_state_dict(args.input), fields, prefix=args.prefix)
    _writer(args.output)(params, args.output, dict(meta, model=json.dumps(fields)))
  elif args.source == "mmjax" and args.target == "hf_bert":
    fields = bert_fields(args)
    common.save_safetensors(hf_bert.from_mmjax(read_params(args.input), fields,
                                               prefix=args.prefix), args.output)
  elif args.source == "hf_lm" and args.target == "mmjax":
    fields, params = hf_lm.load_pretrained(args.input, args.num_new_tokens)
    _writer(args.output)(params, args.output, dict(meta, model=json.dumps(fields)))
  elif args.source == "mmjax" and args.target == "hf_lm":
    fields = lm_model_config(args, overrides)
    hf_lm.save_pretrained(read_params(args.input), fields, args.output)
  elif args.source == "gguf" and args.target == "mmjax":
    metadata, tensors = gguf.read_gguf(args.input)
    fields = dict(gguf.lm_fields(metadata, tensors.keys()), scan=True)
    params = hf_lm.to_mmjax(gguf.hf_state_dict(tensors, fields), fields)
    _writer(args.output)(params, args.output, dict(meta, model=json.dumps(fields)))
    if args.tokenizer_output:
      gguf.save_tokenizer(metadata, args.tokenizer_output)
  elif args.source == "open_flamingo" and args.target == "mmjax":
    model = config_lib.load_config(_need_config(args), overrides).model
    params = open_flamingo.to_mmjax(common.load_state_dict(args.input), model,
                                    vision=not args.no_vision)
    _writer(args.output)(params, args.output, dict(meta, model=model.to_json()))
  elif args.source == "mmjax" and args.target == "open_flamingo":
    model = config_lib.load_config(_need_config(args), overrides).model
    common.save_safetensors(open_flamingo.from_mmjax(read_params(args.input), model,
                                                     vision=not args.no_vision), args.output)
  else:
    raise ValueError(f"no conversion from {args.source!r} to {args.target!r}; supported: "
                     "open_clip, hf_bert, hf_lm, open_flamingo <-> mmjax; gguf -> mmjax")
  print(f"wrote {args.output}")


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("source", choices=FORMATS)
  parser.add_argument("target", choices=FORMATS)
  parser.add_argument("--input", required=True, help="state dict / params file to read")
  parser.add_argument("--output", required=True, help="file to write")
  parser.add_argument("--config", help="configs/<family>.py:<preset> (our model block)")
  parser.add_argument("--open_clip_config", help="open_clip model name or config .json")
  parser.add_argument("--hf_config", help="BertConfig config.json (default: beside --input)")
  parser.add_argument("--prefix", default="", help="BERT key prefix, e.g. 'bert.'")
  parser.add_argument("--no_pooler", action="store_true", help="BERT without the pooler")
  parser.add_argument("--num_new_tokens", type=int, default=0,
                      help="hf_lm: the last N vocabulary rows are new tokens (Flamingo's)")
  parser.add_argument("--tokenizer_output", help="gguf: also write its tokenizer.json here")
  parser.add_argument("--no_vision", action="store_true",
                      help="open_flamingo: the checkpoint has no vision_encoder.*")
  args, rest = parser.parse_known_args(argv)
  convert(args, [r.removeprefix("--") for r in rest])
  return 0


if __name__ == "__main__":
  sys.exit(main())
