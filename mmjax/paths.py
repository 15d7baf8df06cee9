"""Parameter paths: the '/'-joined names ('image/blocks/attn/query/kernel') by which configs
(frozen / no-decay regexes), summaries, checkpoints and errors address leaves of a pytree."""

from __future__ import annotations

from typing import Any, Sequence

import jax


def path_str(path: Sequence[Any]) -> str:
  """'a/b/c' for a jax tree path (dict keys, attribute names or sequence indices)."""
  return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def tree_paths(tree: Any) -> Any:
  """A tree of the same structure whose leaves are their '/'-joined paths."""
  return jax.tree_util.tree_map_with_path(lambda p, _: path_str(p), tree)
