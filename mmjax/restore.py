"""Parameters for inference and evaluation from a workdir, one checkpoint step, or a converted
weights file, and the run's config.

    params, step = load_params("/tmp/run")                       # newest step of a workdir
    params, step = load_params("/tmp/run/checkpoints/600")       # that step
    params, step = load_params("params.safetensors")             # mmjax.convert output (step None)

`config.init_from` sources are read by `load_init_source`: a run (workdir or checkpoints
directory), or a converter-backed pretrained model named `SCHEME:DIR` (PRETRAINED_SOURCES).
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Optional

import ml_collections

from mmjax import checkpoint as ckpt_lib
from mmjax import config_lib


def resolve_checkpoint(path: str) -> tuple[str, Optional[int]]:
  """(checkpoints directory, step or None for the newest) of a workdir / checkpoints dir / step."""
  path = os.path.abspath(path)
  if os.path.isdir(os.path.join(path, ckpt_lib.SUBDIR)):
    return os.path.join(path, ckpt_lib.SUBDIR), None
  base, name = os.path.split(path.rstrip("/"))
  if name.isdigit() and os.path.isdir(path):
    return base, int(name)
  if os.path.isdir(path) and any(n.isdigit() for n in os.listdir(path)):
    return path, None
  raise FileNotFoundError(f"{path} is neither a workdir (with {ckpt_lib.SUBDIR}/), a checkpoints "
                          "directory, nor one checkpoint step directory")


def load_params(path: str) -> tuple[Any, Optional[int]]:
  """Host parameters and their step from a workdir, checkpoint step or .safetensors/.npz file."""
  if path.endswith((".safetensors", ".npz")):
    from mmjax.convert.__main__ import read_params  # pylint: disable=import-outside-toplevel
    return read_params(path), None
  directory, step = resolve_checkpoint(path)
  checkpointer = ckpt_lib.Checkpointer(directory, async_save=False)
  try:
    step = checkpointer.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no complete checkpoint in {directory}")
    return checkpointer.restore_params(step=step), step
  finally:
    checkpointer.close()


def load_run_config(path: str, spec: Optional[str] = None, overrides=()) -> Any:
  """The config: from `spec` (configs/x.py:preset) if given, else the workdir's config.json."""
  if spec:
    return config_lib.load_config(spec, list(overrides))
  workdir = path
  for _ in range(3):  # workdir, workdir/checkpoints, workdir/checkpoints/<step>
    candidate = os.path.join(workdir, "config.json")
    if os.path.exists(candidate):
      with open(candidate, encoding="utf-8") as f:
        config = ml_collections.ConfigDict(json.load(f))
      for item in overrides:
        key, _, value = item.removeprefix("config.").partition("=")
        config_lib.set_by_path(config, key, config_lib.parse_value(value))
      return config
    workdir = os.path.dirname(os.path.abspath(workdir))
  raise FileNotFoundError(f"no config.json found at or above {path}; pass --config")


def _hf_bert(directory: str, scan: bool) -> tuple[dict, Any]:
  from mmjax.convert import hf_bert  # pylint: disable=import-outside-toplevel
  return hf_bert.load_pretrained(directory, scan=scan)


# `init_from` sources that are pretrained models converted on the fly rather than mmjax runs:
# scheme -> loader(directory, scan) -> (architecture fields, params tree). 'hf_bert': a Hugging
# Face BertModel directory (config.json + model.safetensors), e.g. all-MiniLM-L6-v2 for LiT.
PRETRAINED_SOURCES: dict[str, Callable[[str, bool], tuple[dict, Any]]] = {"hf_bert": _hf_bert}


def split_pretrained_source(source: str) -> Optional[tuple[str, str]]:
  """(scheme, directory) of a `SCHEME:DIR` pretrained source, or None for a run directory."""
  scheme, sep, directory = source.partition(":")
  if sep and scheme in PRETRAINED_SOURCES:
    return scheme, directory
  return None


def load_init_source(source: str, *, scan: bool = True, data_dir: Optional[str] = None
                     ) -> tuple[Any, Optional[dict]]:
  """(params, architecture fields or None) of one `init_from` source.

  `SCHEME:DIR` (a PRETRAINED_SOURCES scheme) converts the pretrained model in DIR to our layout
  (`scan`: layers stacked as the model's `scan` field says); a relative DIR is taken inside the
  data directory (`data_dir`, else $MMJAX_DATA_DIR, else ~/mmjax_data), so
  'hf_bert:weights/all-MiniLM-L6-v2' finds what scripts/fetch_weights.sh installs. Anything
  else is a run: its latest checkpoint's params (fields None).
  """
  if source in PRETRAINED_SOURCES:
    raise ValueError(f"config init_from source {source!r} names no directory: write "
                     f"'DST={source}:DIR:' (the final ':' selects the whole model)")
  pretrained = split_pretrained_source(source)
  if pretrained is not None:
    scheme, directory = pretrained
    directory = os.path.expanduser(directory)
    if not os.path.isabs(directory):
      from mmjax.data import datasets  # pylint: disable=import-outside-toplevel
      directory = os.path.join(datasets.resolve_data_dir(data_dir), directory)
    fields, params = PRETRAINED_SOURCES[scheme](directory, scan)
    return params, fields
  directory = source if os.path.basename(source.rstrip("/")) == ckpt_lib.SUBDIR else \
      ckpt_lib.checkpoint_dir(source)
  return ckpt_lib.Checkpointer(directory, async_save=False).restore_params(), None
