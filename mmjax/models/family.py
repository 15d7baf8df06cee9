"""The model-family interface: the network, its loss and its metrics behind one small class.

The trainer and the evaluators only ever talk to a `ModelFamily`; they never branch on the
family's name. A family is registered by name and built from the `config.model` ConfigDict:

    family = mmjax.models.build(config.model)
    params = family.init(rng, family.dummy_batch(2))['params']
    loss, metrics = family.loss(params, batch, rng, train=True)

`predict_*` methods are the inference entry points of a family (e.g. `predict_embeddings` for
two-tower models, `predict_logits` for LMs); evaluators look them up by the capability they need.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, ClassVar, Mapping

import flax.linen as nn
import jax

Array = jax.Array
Batch = Mapping[str, Array]
Metrics = dict[str, Array]

_REGISTRY: dict[str, type["ModelFamily"]] = {}


def register(name: str) -> Callable[[type["ModelFamily"]], type["ModelFamily"]]:
  """Class decorator that registers a family under `name` (the value of config.model.family)."""
  def wrap(cls):
    if name in _REGISTRY and _REGISTRY[name] is not cls:
      raise ValueError(f"model family {name!r} is registered twice")
    _REGISTRY[name] = cls
    cls.family_name = name
    return cls
  return wrap


def registered() -> list[str]:
  """Names of every registered family."""
  return sorted(_REGISTRY)


def get(name: str) -> type["ModelFamily"]:
  """The family class registered under `name`, with a clear error otherwise."""
  if name not in _REGISTRY:
    raise ValueError(f"unknown model family {name!r}; registered families: {registered()}")
  return _REGISTRY[name]


class ModelFamily(abc.ABC):
  """Network + loss + metrics of one model family.

  Subclasses set `batch_keys` (the batch-contract keys `loss` reads) and implement `make_module`,
  `dummy_batch` and `loss`. `config` is the `config.model` ConfigDict.
  """
  family_name: ClassVar[str] = "?"
  batch_keys: ClassVar[tuple[str, ...]] = ()

  def __init__(self, config: Any):
    self.config = config
    self.module: nn.Module = self.make_module(config)

  @abc.abstractmethod
  def make_module(self, config: Any) -> nn.Module:
    """Builds the Flax module from the model config."""

  @abc.abstractmethod
  def dummy_batch(self, batch_size: int) -> dict[str, Array]:
    """A batch of zeros with the shapes `init`/`loss` expect (for eval_shape and tests)."""

  def init(self, rng: Array, batch: Batch) -> Any:
    """Variables (`{'params': ...}`, boxed with logical axis names) for `batch`'s shapes."""
    return self.module.init({"params": rng, "dropout": rng}, **self.module_inputs(batch),
                            train=False)

  def module_inputs(self, batch: Batch) -> dict[str, Array]:
    """The keyword arguments of the module's `__call__`, taken from the batch."""
    return {k: batch[k] for k in self.batch_keys if k in batch}

  def apply(self, params: Any, batch: Batch, rng: Array | None = None, train: bool = False,
            **kwargs) -> Any:
    """Runs the module's forward pass on a batch."""
    rngs = {"dropout": rng} if rng is not None else {}
    return self.module.apply({"params": params}, **self.module_inputs(batch), train=train,
                             rngs=rngs, **kwargs)

  def adapt_init_source(self, dst: str, source: Any, target: Any) -> Any:
    """`source` (another run's sub-tree, unboxed) in the layout of our sub-tree `dst` for
    `config.init_from`; by default unchanged (the layouts already agree)."""
    del dst, target
    return source

  def check_init_fields(self, dst: str, fields: Mapping[str, Any], source: str) -> None:
    """Refuses a converter-backed `init_from` source (restore.PRETRAINED_SOURCES) whose
    architecture `fields` do not fit our sub-tree `dst`; by default no family takes one."""
    raise ValueError(f"init_from {dst}={source}: model family {self.family_name!r} takes no "
                     "pretrained converter source (only workdirs / checkpoint directories)")

  @abc.abstractmethod
  def loss(self, params: Any, batch: Batch, rng: Array | None = None,
           train: bool = True) -> tuple[Array, Metrics]:
    """Scalar training loss and a dict of scalar metrics (already averaged over the batch)."""


def build(config: Any) -> ModelFamily:
  """The family named by `config.family`, constructed from `config`."""
  # Importing the package registers every family.
  import mmjax.models  # noqa: F401  pylint: disable=import-outside-toplevel
  return get(config.family)(config)
