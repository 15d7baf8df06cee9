"""Mesh, logical axis names and the rule presets that map them onto the mesh.

Models name every parameter and activation axis with a *logical* name from this module
(`nn.with_logical_partitioning` / `nn.with_logical_constraint`). One table of rules maps logical
names to the physical mesh axes `(data, fsdp, tensor)`, so data parallelism, FSDP (ZeRO-3) and
tensor parallelism are rule changes, not code changes.

Rules are read in order; a mesh axis already used by an earlier dimension of the same array is
skipped (flax semantics), so e.g. `embed -> fsdp` shards weights but not activations whose batch
dimension already took `fsdp`.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

# ---- Mesh axes --------------------------------------------------------------------------------
DATA = "data"
FSDP = "fsdp"
TENSOR = "tensor"
MESH_AXES = (DATA, FSDP, TENSOR)

# ---- Logical axis names (parameters and activations) -------------------------------------------
BATCH = "batch"  # examples; activations only.
LENGTH = "length"  # sequence / token positions; activations only.
EMBED = "embed"  # model width (residual stream).
MLP = "mlp"  # hidden width of feed-forward layers.
HEADS = "heads"  # attention query heads.
KV_HEADS = "kv_heads"  # key/value heads (grouped-query attention).
KV = "kv"  # per-head feature dimension.
VOCAB = "vocab"  # vocabulary rows of embeddings and output layers.
LAYERS = "layers"  # the stacked axis of scanned layers.
CONV_IN = "conv_in"  # input channels of patch embeddings (spatial taps are unnamed).
LATENTS = "latents"  # learned queries (resampler latents, pooler queries).
NORM = "norm"  # scale/bias vectors of norms (never sharded).

LOGICAL_AXES = (BATCH, LENGTH, EMBED, MLP, HEADS, KV_HEADS, KV, VOCAB, LAYERS, CONV_IN, LATENTS,
                NORM)

Rules = Sequence[tuple[str, Any]]

# Activation batch always spans data *and* fsdp: FSDP is data parallel for activations.
_BATCH_RULE = (BATCH, (DATA, FSDP))

RULE_PRESETS: Mapping[str, Rules] = {
    # Pure data parallelism: parameters replicated, batch split.
    "dp": (_BATCH_RULE,),
    # FSDP / ZeRO-3: additionally shard every weight on its embed (else vocab / mlp) dimension.
    "fsdp": (_BATCH_RULE, (EMBED, FSDP), (VOCAB, FSDP), (MLP, FSDP)),
    # Megatron-style tensor parallelism: heads, mlp and vocab split over `tensor`.
    "tp": (_BATCH_RULE, (HEADS, TENSOR), (KV_HEADS, TENSOR), (MLP, TENSOR), (VOCAB, TENSOR)),
    # Both: the usual recipe beyond one host.
    "fsdp_tp": (_BATCH_RULE, (HEADS, TENSOR), (KV_HEADS, TENSOR), (MLP, TENSOR), (VOCAB, TENSOR),
                (EMBED, FSDP)),
}


def get_rules(rules: str | Rules) -> tuple[tuple[str, Any], ...]:
  """A rule preset by name, or an explicit list of (logical, mesh axes) pairs, validated."""
  if isinstance(rules, str):
    if rules not in RULE_PRESETS:
      raise ValueError(f"unknown sharding rule preset {rules!r}; choose one of {sorted(RULE_PRESETS)}")
    rules = RULE_PRESETS[rules]
  out = []
  for item in rules:
    logical, mesh_axes = item
    if logical not in LOGICAL_AXES:
      raise ValueError(f"sharding rule names unknown logical axis {logical!r}; known: {LOGICAL_AXES}")
    for axis in (mesh_axes if isinstance(mesh_axes, (tuple, list)) else [mesh_axes]):
      if axis is not None and axis not in MESH_AXES:
        raise ValueError(f"sharding rule {logical!r} -> {mesh_axes!r} names unknown mesh axis "
                         f"{axis!r}; mesh axes are {MESH_AXES}")
    out.append((logical, tuple(mesh_axes) if isinstance(mesh_axes, list) else mesh_axes))
  return tuple(out)


def resolve_mesh_shape(shape: Mapping[str, int], num_devices: int) -> tuple[int, int, int]:
  """Mesh sizes (data, fsdp, tensor) from a config with at most one -1 ("the rest")."""
  sizes = [int(shape.get(a, 1)) for a in MESH_AXES]
  unknown = [a for a, s in zip(MESH_AXES, sizes) if s == -1]
  if len(unknown) > 1:
    raise ValueError(f"mesh: at most one axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
  for a, s in zip(MESH_AXES, sizes):
    if s == 0 or s < -1:
      raise ValueError(f"mesh.{a} must be a positive size or -1, got {s}")
  known = math.prod(s for s in sizes if s != -1)
  if unknown:
    if num_devices % known:
      raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))}: {num_devices} devices are not "
                       f"divisible by the fixed axes' product {known}")
    sizes[MESH_AXES.index(unknown[0])] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices but "
                     f"{num_devices} are available; set one axis to -1 to use the rest")
  return tuple(sizes)


def make_mesh(shape: Mapping[str, int] | None = None, devices: Sequence[Any] | None = None) -> Mesh:
  """The (data, fsdp, tensor) mesh. `shape` maps axis -> size (-1: the rest; default data=-1)."""
  devices = list(devices) if devices is not None else jax.devices()
  sizes = resolve_mesh_shape(shape or {DATA: -1}, len(devices))
  return jax.make_mesh(sizes, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def logical_to_sharding(logical_tree: Any, mesh: Mesh, rules: str | Rules) -> Any:
  """NamedShardings for a pytree of logical PartitionSpecs (from `nn.get_partition_spec`)."""
  return nn.logical_to_mesh_sharding(logical_tree, mesh, list(get_rules(rules)))


def abstract_shardings(abstract_variables: Any, mesh: Mesh, rules: str | Rules) -> Any:
  """Shardings for the (boxed) variables that `jax.eval_shape(model.init, ...)` returns."""
  return logical_to_sharding(nn.get_partition_spec(abstract_variables), mesh, rules)


def replicated(mesh: Mesh) -> NamedSharding:
  """A fully replicated sharding on `mesh`."""
  return NamedSharding(mesh, PartitionSpec())


def data_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
  """Sharding for a batch array of rank `ndim`: leading axis over (data, fsdp)."""
  return NamedSharding(mesh, PartitionSpec((DATA, FSDP), *([None] * (ndim - 1))))


def mesh_axes_of(sharding: NamedSharding) -> tuple[Any, ...]:
  """The mesh axes each dimension uses, for golden-sharding tests and the summary table."""
  return tuple(sharding.spec)


def shard_shape(array: jax.Array) -> tuple[int, ...]:
  """Shape of the first addressable shard (to check that parameters are really split)."""
  return tuple(array.addressable_shards[0].data.shape)


def device_count_flags(n: int) -> str:
  """XLA_FLAGS value giving `n` virtual CPU devices (set before JAX starts)."""
  return f"--xla_force_host_platform_device_count={n}"


def mesh_summary(mesh: Mesh) -> str:
  """One line describing the mesh, for logs."""
  return " x ".join(f"{name}={size}" for name, size in mesh.shape.items()) + \
      f" ({np.prod(list(mesh.shape.values()))} devices)"


class sharding_context:  # pylint: disable=invalid-name
  """`with sharding_context(mesh, rules):` makes logical activation constraints concrete.

  Sets the mesh for `jax.jit` tracing and flax's logical axis rules together, so modules'
  `nn.with_logical_constraint` calls resolve to mesh axes.
  """

  def __init__(self, mesh: Mesh, rules: str | Rules):
    self._mesh_cm = jax.set_mesh(mesh)
    self._rules_cm = nn.logical_axis_rules(list(get_rules(rules)))

  def __enter__(self):
    self._mesh_cm.__enter__()
    self._rules_cm.__enter__()
    return self

  def __exit__(self, *exc):
    self._rules_cm.__exit__(*exc)
    return self._mesh_cm.__exit__(*exc)
