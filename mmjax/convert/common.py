"""Shared converter plumbing: flat parameter dicts, the strict key check, state-dict files.

A converter is a list of `Rule`s, each tying one or more of our flat parameter names
('image/blocks_0/attn/query/kernel') to one or more reference state-dict keys
('visual.transformer.resblocks.0.attn.in_proj_weight') with a function for each direction.
Rules name scanned layers unrolled (`blocks_3/...`); `stack_layers` / `unstack_layers` convert
to and from the scanned layout (a leading `layers` axis under `blocks`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

Flat = dict[str, np.ndarray]
SEP = "/"


class KeyMismatchError(KeyError):
  """A state dict's keys are not exactly the ones a converter expects."""

  def __str__(self) -> str:  # KeyError would print the message repr-quoted.
    return str(self.args[0])


def check_keys(expected: Iterable[str], given: Iterable[str], what: str) -> None:
  """Raises KeyMismatchError naming every unused and every missing key (one-to-one check)."""
  expected, given = set(expected), set(given)
  unused, missing = sorted(given - expected), sorted(expected - given)
  if unused or missing:
    lines = [f"{what}: keys do not match the converter's one-to-one mapping."]
    if unused:
      lines.append(f"  unused (present but not mapped) {len(unused)}: {unused}")
    if missing:
      lines.append(f"  missing (mapped but absent) {len(missing)}: {missing}")
    raise KeyMismatchError("\n".join(lines))


@dataclasses.dataclass(frozen=True)
class Rule:
  """`ours` names <-> `theirs` keys; `to_ours(*theirs) -> ours`, `to_theirs(*ours) -> theirs`."""
  ours: tuple[str, ...]
  theirs: tuple[str, ...]
  to_ours: Callable[..., Sequence[np.ndarray]]
  to_theirs: Callable[..., Sequence[np.ndarray]]


def identity(*xs: np.ndarray) -> tuple[np.ndarray, ...]:
  """Copies through unchanged."""
  return xs


def apply_to_ours(rules: Sequence[Rule], state: Mapping[str, np.ndarray], what: str) -> Flat:
  """Reference state dict -> our flat (unrolled) params, after the strict key check."""
  check_keys([k for r in rules for k in r.theirs], state.keys(), what)
  out: Flat = {}
  for rule in rules:
    values = rule.to_ours(*(state[k] for k in rule.theirs))
    out.update(zip(rule.ours, values, strict=True))
  return out


def apply_to_theirs(rules: Sequence[Rule], flat: Mapping[str, np.ndarray], what: str) -> Flat:
  """Our flat (unrolled) params -> reference state dict, after the strict key check."""
  check_keys([k for r in rules for k in r.ours], flat.keys(), what)
  out: Flat = {}
  for rule in rules:
    values = rule.to_theirs(*(flat[k] for k in rule.ours))
    out.update(zip(rule.theirs, values, strict=True))
  return out


# ---- Flat <-> nested parameter trees ----------------------------------------------------------

def flatten(tree: Mapping[str, Any], prefix: str = "") -> Flat:
  """Nested dict of arrays (flax params, boxed or not) -> {'a/b/c': np.ndarray}."""
  out: Flat = {}
  for key, value in tree.items():
    name = f"{prefix}{SEP}{key}" if prefix else str(key)
    if isinstance(value, Mapping):
      out.update(flatten(value, name))
    else:
      value = getattr(value, "value", value)  # nn.LogicallyPartitioned boxes.
      out[name] = np.asarray(value)
  return out


def unflatten(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """{'a/b/c': x} -> {'a': {'b': {'c': x}}}."""
  tree: dict[str, Any] = {}
  for name, value in flat.items():
    *parents, leaf = name.split(SEP)
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


def _layer_pattern(stack_names: Sequence[str]) -> re.Pattern:
  names = "|".join(re.escape(n) for n in stack_names)
  return re.compile(rf"^(?P<pre>(?:.*{SEP})?)(?P<stack>{names})_(?P<idx>\d+){SEP}(?P<rest>.*)$")


def stack_layers(flat: Mapping[str, np.ndarray], stack_names: Sequence[str]) -> Flat:
  """Unrolled `.../blocks_<i>/x` entries -> scanned `.../blocks/x` stacked on a leading axis."""
  pattern = _layer_pattern(stack_names)
  out: Flat = {}
  groups: dict[str, dict[int, np.ndarray]] = {}
  for name, value in flat.items():
    m = pattern.match(name)
    if m is None:
      out[name] = value
      continue
    stacked = f"{m['pre']}{m['stack']}{SEP}{m['rest']}"
    groups.setdefault(stacked, {})[int(m["idx"])] = value
  for stacked, by_index in groups.items():
    if sorted(by_index) != list(range(len(by_index))):
      raise ValueError(f"layers of {stacked!r} are not numbered 0..n-1: {sorted(by_index)}")
    out[stacked] = np.stack([by_index[i] for i in range(len(by_index))])
  return out


def unstack_layers(flat: Mapping[str, np.ndarray], stack_names: Sequence[str]) -> Flat:
  """Scanned `.../blocks/x` [L, ...] entries -> unrolled `.../blocks_<i>/x` (inverse of stack)."""
  names = set(stack_names)
  out: Flat = {}
  for name, value in flat.items():
    parts = name.split(SEP)
    hits = [i for i, p in enumerate(parts[:-1]) if p in names]
    if not hits:
      out[name] = value
      continue
    i = hits[0]
    for layer in range(value.shape[0]):
      unrolled = parts[:i] + [f"{parts[i]}_{layer}"] + parts[i + 1:]
      out[SEP.join(unrolled)] = value[layer]
  return out


# ---- State-dict files -------------------------------------------------------------------------

def _torch_to_numpy(tensor: Any) -> np.ndarray:
  """A CPU copy as numpy; bfloat16 goes through ml_dtypes (numpy has no bfloat16 of its own)."""
  import torch  # pylint: disable=import-outside-toplevel
  tensor = tensor.detach().cpu()
  if tensor.dtype == torch.bfloat16:
    import ml_dtypes  # pylint: disable=import-outside-toplevel
    return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
  return tensor.numpy()


def state_dict_to_numpy(state: Mapping[str, Any]) -> Flat:
  """{key: torch.Tensor | array} -> {key: np.ndarray}."""
  return {k: v if isinstance(v, np.ndarray) else _torch_to_numpy(v) for k, v in state.items()}


def load_state_dict(path: str) -> Flat:
  """Reads a state dict from .safetensors, or a torch file (torch.load with weights_only=True).

  Training checkpoints that wrap the weights (`{'state_dict': ...}`) and DistributedDataParallel
  prefixes (`module.`) are unwrapped, as open_clip's own loader does.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"state dict file {path!r} does not exist")
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
    return load_file(path)
  import torch  # pylint: disable=import-outside-toplevel
  state = torch.load(path, map_location="cpu", weights_only=True)
  if isinstance(state, Mapping) and "state_dict" in state:
    state = state["state_dict"]
  if not isinstance(state, Mapping):
    raise ValueError(f"{path!r} does not hold a state dict (got {type(state).__name__})")
  if state and all(k.startswith("module.") for k in state):
    state = {k[len("module."):]: v for k, v in state.items()}
  return state_dict_to_numpy(state)


def save_safetensors(flat: Mapping[str, np.ndarray], path: str,
                     metadata: Mapping[str, str] | None = None) -> None:
  """Writes {key: array} to a .safetensors file (contiguous copies, as the format needs)."""
  from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel
  save_file({k: np.ascontiguousarray(v) for k, v in flat.items()}, path,
            metadata=dict(metadata or {}))
