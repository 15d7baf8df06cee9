"""Loading and checking ml-collections configs: `configs/<family>.py:<preset>`.

Every config file defines `get_config(arg)`, where `arg` is a preset name ('tiny', 'micro',
'vit_b32', ...). The returned ConfigDict is locked, so an override of an unknown key fails with
a message naming it, and ml-collections refuses an override of the wrong type.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any, Iterable, Sequence

import ml_collections

PRESETS_ALWAYS = ("tiny", "micro")  # every family has these (seconds on CPU).


def split_spec(spec: str) -> tuple[str, str | None]:
  """'configs/clip.py:vit_b32' -> ('configs/clip.py', 'vit_b32')."""
  path, _, arg = spec.partition(":")
  return path, (arg or None)


def load_module(path: str):
  """Imports a config file by path (configs are files, not package modules)."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"config file {path!r} does not exist")
  # Config files import their shared helpers (configs/common.py) as top-level modules.
  config_dir = os.path.dirname(os.path.abspath(path))
  if config_dir not in sys.path:
    sys.path.insert(0, config_dir)
  name = "mmjax_config_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise AttributeError(f"config file {path!r} has no get_config(arg) function")
  return module


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """Loads `path:preset` and applies `key.sub=value` overrides (values parsed as Python)."""
  path, arg = split_spec(spec)
  module = load_module(path)
  config = module.get_config(arg) if arg is not None else module.get_config()
  config.lock()
  for item in overrides:
    key, _, value = item.partition("=")
    set_by_path(config, key.removeprefix("--").removeprefix("config."), value)
  return config


def parse_value(text: str) -> Any:
  """'3' -> 3, 'true' -> True, 'a' -> 'a', '(1,2)' -> (1, 2)."""
  import ast  # pylint: disable=import-outside-toplevel
  lowered = text.strip()
  if lowered.lower() in ("true", "false"):
    return lowered.lower() == "true"
  if lowered.lower() in ("none", "null"):
    return None
  try:
    return ast.literal_eval(lowered)
  except (ValueError, SyntaxError):
    return lowered


def set_by_path(config: ml_collections.ConfigDict, dotted: str, value: Any) -> None:
  """Sets `config.a.b.c = value`, failing with the full key name when it does not exist.

  A string `value` from the command line is parsed as a Python literal unless the field holds
  a string (so `--config.model.remat=none` stays the string 'none').
  """
  parts = dotted.split(".")
  node = config
  for i, part in enumerate(parts[:-1]):
    if part not in node:
      raise KeyError(f"unknown config key {'.'.join(parts[:i + 1])!r} (from override {dotted!r})")
    node = node[part]
  if parts[-1] not in node:
    known = ", ".join(sorted(node.keys()))
    raise KeyError(f"unknown config key {dotted!r}; keys at this level: {known}")
  current = node[parts[-1]]
  if isinstance(value, str) and not isinstance(current, str):
    value = parse_value(value)
  if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  try:
    node[parts[-1]] = value
  except TypeError as e:
    raise TypeError(f"config key {dotted!r} expects {type(current).__name__}, got "
                    f"{value!r} ({type(value).__name__})") from e


def presets_of(path: str) -> Iterable[str]:
  """Preset names a config file declares in its module-level PRESETS tuple."""
  return getattr(load_module(path), "PRESETS", PRESETS_ALWAYS)
