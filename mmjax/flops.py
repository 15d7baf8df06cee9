"""FLOPs of a step, counted from its jaxpr: the one count that the progress line's MFU, the
`mmjax.plan` CLI and the MFU benchmark share.

Why not `compiled.cost_analysis()['flops']`: XLA's cost analysis counts the body of a while
loop once, so a model whose layers are scanned (`nn.scan`, our default) is reported as if it
had one layer (tiny Flamingo: 5.0 GFLOP/step counted against 8.1 real). Counting the jaxpr
multiplies every `scan` body by its length. Only matrix products and convolutions are counted
(2 FLOPs per multiply-add), the convention of MFU (PaLM appendix B); elementwise work is a few
percent on top.

Model FLOPs vs hardware FLOPs: with a remat policy the backward pass recomputes part of the
forward, and the jaxpr holds that recomputation. MFU is defined on model FLOPs, so count a step
built from `without_remat(config.model)`; the same step with remat gives the hardware FLOPs.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import ml_collections


def _dot_flops(eqn: Any) -> float:
  """2 * (output elements) * (contracted size) for a dot_general."""
  (lhs_contract, _), _ = eqn.params["dimension_numbers"]
  lhs = eqn.invars[0].aval.shape
  out = eqn.outvars[0].aval.shape
  return 2.0 * math.prod(out) * math.prod(lhs[i] for i in lhs_contract)


def _conv_flops(eqn: Any) -> float:
  """2 * (output elements) * (kernel taps * input features per group) for a convolution."""
  rhs = eqn.invars[1].aval.shape
  dims = eqn.params["dimension_numbers"]
  out = eqn.outvars[0].aval.shape
  out_features = rhs[dims.rhs_spec[0]]
  return 2.0 * math.prod(out) * math.prod(rhs) / out_features


def _sub_jaxprs(value: Any):
  """Jaxprs held by an equation parameter (closed or open, alone or in a tuple)."""
  if hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):
    yield value.jaxpr
  elif hasattr(value, "eqns"):
    yield value
  elif isinstance(value, (tuple, list)):
    for item in value:
      yield from _sub_jaxprs(item)


def jaxpr_flops(jaxpr: Any) -> float:
  """Matmul + convolution FLOPs of a (closed) jaxpr; `scan` bodies count `length` times,
  `cond` its most expensive branch, `while` bodies once (their trip count is not static)."""
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  total = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "dot_general":
      total += _dot_flops(eqn)
    elif name == "conv_general_dilated":
      total += _conv_flops(eqn)
    elif name == "scan":
      total += eqn.params["length"] * jaxpr_flops(eqn.params["jaxpr"])
    elif name == "cond":
      total += max(jaxpr_flops(b) for b in eqn.params["branches"])
    else:  # jit, remat (checkpoint), custom_jvp/vjp calls, while bodies, shard_map, ...
      for value in eqn.params.values():
        for sub in _sub_jaxprs(value):
          total += jaxpr_flops(sub)
  return total


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
  """FLOPs of one call `fn(*args)`; args may be arrays or `jax.ShapeDtypeStruct`s (nothing runs
  and nothing is allocated: the function is only traced)."""
  return jaxpr_flops(jax.make_jaxpr(fn)(*args, **kwargs))


def without_remat(model_config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A copy of a model config with every `remat` field (any nesting depth) set to 'none', for
  counting model FLOPs without the backward pass's recomputation."""
  config = ml_collections.ConfigDict(model_config.to_dict())

  def clear(node):
    for key in list(node.keys()):
      if isinstance(node[key], ml_collections.ConfigDict):
        clear(node[key])
      elif key == "remat":
        node[key] = "none"
  clear(config)
  return config
