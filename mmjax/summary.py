"""Parameter table of a config's model, from shapes alone (`jax.eval_shape`, no weights).

    python -m mmjax.summary --config configs/clip.py:vit_b32 [--depth 2] [--leaves]

Prints one row per module down to `--depth` (count, share of the total, trainable or frozen),
the logical axes of each leaf with `--leaves`, and ends with `total_params: N`.
"""

from __future__ import annotations

import argparse
import collections
import math
import re
import sys
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np

from mmjax import config_lib
from mmjax import paths
from mmjax.models import family as family_lib


def abstract_variables(family: family_lib.ModelFamily) -> Any:
  """Boxed ShapeDtypeStructs of the family's variables (no memory allocated)."""
  return jax.eval_shape(family.init, jax.random.key(0), family.dummy_batch(1))


def flat_params(params: Any) -> dict[str, Any]:
  """{'a/b/kernel': leaf} for a (possibly boxed) params tree."""
  flat = {}
  leaves = jax.tree_util.tree_flatten_with_path(
      params, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))[0]
  for path, leaf in leaves:
    flat[paths.path_str(path)] = leaf
  return flat


def leaf_shape(leaf: Any) -> tuple[int, ...]:
  """Shape of a boxed or plain leaf."""
  return tuple(nn.unbox(leaf).shape) if isinstance(leaf, nn.LogicallyPartitioned) else \
      tuple(leaf.shape)


def module_counts(params: Any, depth: int) -> "collections.OrderedDict[str, int]":
  """Parameter count per module path prefix of at most `depth` components."""
  counts: "collections.OrderedDict[str, int]" = collections.OrderedDict()
  for name, leaf in flat_params(params).items():
    parts = name.split("/")
    n = math.prod(leaf_shape(leaf))
    for d in range(1, min(depth, len(parts) - 1) + 1):
      key = "/".join(parts[:d])
      counts[key] = counts.get(key, 0) + n
    if len(parts) - 1 < depth:  # leaves directly under a shallow module
      counts[name] = counts.get(name, 0) + n
  return counts


def count_params(params: Any) -> int:
  """Total number of parameters."""
  return sum(math.prod(leaf_shape(x)) for x in flat_params(params).values())


def format_table(family: family_lib.ModelFamily, params: Any, depth: int = 2,
                 leaves: bool = False, frozen: Sequence[str] = ()) -> str:
  """The printed table (also used by tests); `frozen` are the config's optim.frozen regexes
  (e.g. LiT's locked text tower), which count as not trainable like the family's own."""
  total = count_params(params)
  family_fn = getattr(family, "is_trainable", lambda path: True)
  compiled = [re.compile(p) for p in frozen]
  # A module row is frozen when the regex matches its path (as it would every leaf under it).
  trainable_fn = lambda path: family_fn(path) and not any(  # noqa: E731
      c.search(path + "/") or c.search(path) for c in compiled)
  lines = [f"{'module':<56} {'params':>14} {'share':>7}  trainable"]
  for name, n in module_counts(params, depth).items():
    indent = "  " * (name.count("/"))
    trainable = "yes" if trainable_fn(name) else "no"
    lines.append(f"{indent + name.split('/')[-1]:<56} {n:>14,d} {100 * n / total:6.2f}%  {trainable}")
  if leaves:
    lines.append("")
    lines.append(f"{'parameter':<64} {'shape':<24} logical axes")
    for name, leaf in flat_params(params).items():
      axes = leaf.names if isinstance(leaf, nn.LogicallyPartitioned) else None
      lines.append(f"{name:<64} {str(leaf_shape(leaf)):<24} {axes}")
  groups = getattr(family, "param_groups", None)
  if groups is not None:
    lines.append("")
    lines.append(f"{'component':<40} {'params':>14}  trainable")
    flat = flat_params(params)
    for group, prefixes in groups().items():
      n = sum(math.prod(leaf_shape(v)) for k, v in flat.items()
              if any(k == p or k.startswith(p + "/") for p in prefixes))
      trainable = "yes" if all(trainable_fn(p) for p in prefixes) else "no"
      lines.append(f"{group:<40} {n:>14,d}  {trainable}")
  n_train = sum(math.prod(leaf_shape(v)) for k, v in flat_params(params).items()
                if trainable_fn(k))
  lines.append(f"trainable_params: {n_train}")
  lines.append(f"total_params: {total}")
  return "\n".join(lines)


def summarize(spec: str, overrides=(), depth: int = 2, leaves: bool = False) -> str:
  """Builds the config's model abstractly and returns its table."""
  config = config_lib.load_config(spec, overrides)
  family = family_lib.build(config.model)
  variables = abstract_variables(family)
  return format_table(family, variables["params"], depth=depth, leaves=leaves,
                      frozen=config.optim.frozen if "optim" in config else ())


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", required=True, help="configs/<family>.py:<preset>")
  parser.add_argument("--depth", type=int, default=2, help="module nesting depth of the table")
  parser.add_argument("--leaves", action="store_true", help="also list every parameter")
  args, rest = parser.parse_known_args(argv)
  overrides = [r.removeprefix("--") for r in rest]
  print(summarize(args.config, overrides, depth=args.depth, leaves=args.leaves))
  return 0


if __name__ == "__main__":
  sys.exit(main())
