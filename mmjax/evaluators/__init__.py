"""Evaluators, declared in the config and run by the trainer at intervals or by mmjax.evaluate.

    config.evals.heldout = dict(type="loss", every_steps=100, split="heldout")

Each evaluator module registers a class with `@register(type)`; its constructor takes the
evaluator's ConfigDict and an `EvalContext` (family, data config, tokenizer, mesh), and
`run(params)` returns a dict of named scalar (or string) results.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

_REGISTRY: dict[str, type] = {}


@dataclasses.dataclass
class EvalContext:
  """What every evaluator may use."""
  family: Any  # mmjax.models.family.ModelFamily
  data_config: Any  # the run's config.data (evaluators override split, task, ...)
  tokenizer: Any  # mmjax.data.tokenizers.Tokenizer (special tokens already added)
  mesh: Any = None  # jax Mesh, or None on one device
  shard_batch: Callable[[Mapping[str, Any]], Mapping[str, Any]] = lambda b: b
  workdir: str | None = None


def require(name: str, family: Any, method: str, what: str) -> None:
  """Fails fast (naming evaluator and family) unless `family` has the `method` it needs."""
  if not hasattr(family, method):
    raise ValueError(f"evals.{name}: family {family.family_name!r} cannot {what}")


def register(name: str):
  """Class decorator registering an evaluator type."""
  def wrap(cls):
    _REGISTRY[name] = cls
    return cls
  return wrap


def build(name: str, config: Any, context: EvalContext):
  """The evaluator for `config.type`, with an error listing the known types."""
  # Importing the modules registers them.
  # pylint: disable=import-outside-toplevel,unused-import
  from mmjax.evaluators import (captioning, captions, fewshot, linear_probe, loss,  # noqa: F401
                                multiple_choice, perplexity, retrieval, vqa, zeroshot)
  from mmjax.evaluators import binding, chat, grounding  # noqa: F401
  from mmjax.evaluators import vqa_class  # noqa: F401
  if config.type not in _REGISTRY:
    raise ValueError(f"evals.{name}.type {config.type!r} is unknown; known types: "
                     f"{sorted(_REGISTRY)}")
  return _REGISTRY[config.type](name, config, context)
