"""Scale on paper: per-device memory, FLOPs per step and step time of a config on a mesh that
you do not have yet, so a mesh can be picked before renting a pod.

    python -m mmjax.plan --config configs/flamingo.py:9b --mesh data=16,fsdp=16 \\
        [--device tpu_v5p|h100|...] [--mfu 0.4] [--batch_size N] [--rules fsdp] [--config.x=v]

Nothing is allocated and nothing needs the devices: shapes come from `jax.eval_shape` and
`jax.make_jaxpr`, the mesh is a `jax.sharding.AbstractMesh` of the requested sizes.

How each figure is obtained:
- params: every parameter's shard under the config's real sharding rules (mmjax/parallel.py,
  the same `abstract_shardings` the trainer uses) on the abstract mesh, times its param_dtype
  size. A dimension its mesh axes do not divide is an error, as it is for `jax.jit`.
- optimizer state: `tx.init` of the config's optimizer (frozen parameters keep no state), each
  leaf sharded like the parameter it mirrors (`train.like_params`, what `init_train_state`
  does), the rest replicated.
- gradients: one shard per trainable parameter, in its param_dtype.
- activations: what the backward pass keeps. The model's `jax.vjp` residuals (frozen leaves
  closed over, as in the train step) are measured with `eval_shape` at batch 1 and 2; their
  difference is the per-example activation memory, exact for the config's remat policy (a
  policy changes what is saved, and so the residuals). Per device it is multiplied by the
  per-device batch (batch / (data * fsdp)) and divided by `tensor` (tensor parallelism splits
  heads / mlp activations; the residual stream itself is replicated over `tensor`, so this
  part is optimistic). XLA's transient buffers (one layer's recomputation under remat, fusion
  temporaries) come on top.
- FLOPs: mmjax/flops.py's jaxpr count of the train step at the global batch: model FLOPs (the
  step without remat, what MFU is defined on) and hardware FLOPs (with the recomputation).
- step time: model FLOPs / (devices * device peak * MFU).
A compute dtype 'auto' is resolved for --device (bf16 on TPU/GPU), not for the machine that runs
the plan.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from typing import Any, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AbstractMesh, AxisType

from mmjax import config_lib
from mmjax import flops as flops_lib
from mmjax import optim
from mmjax import parallel as P
from mmjax import paths
from mmjax import train
from mmjax.models import family as family_lib
from mmjax.models import layers

GiB = 1024 ** 3


@dataclasses.dataclass(frozen=True)
class Device:
  """One accelerator as JAX sees it (one device per chip)."""
  peak_flops: float  # dense bf16 matmul FLOP/s (vendor figure; fp32 measured for `cpu`)
  hbm_bytes: float  # memory per device
  note: str
  backend: str  # jax.default_backend() there: decides what compute dtype 'auto' becomes


# Vendor dense-bf16 peaks per JAX device (one per chip; a TPU v4/v5p chip's two TensorCores form
# one megacore device). GPU figures are the SXM parts without sparsity.
DEVICES: Mapping[str, Device] = {
    "tpu_v4": Device(275e12, 32 * GiB, "TPU v4 chip", "tpu"),
    "tpu_v5e": Device(197e12, 16 * GiB, "TPU v5e (v5litepod) chip", "tpu"),
    "tpu_v5p": Device(459e12, 95 * GiB, "TPU v5p chip", "tpu"),
    "tpu_v6e": Device(918e12, 32 * GiB, "TPU v6e (Trillium) chip", "tpu"),
    "a100": Device(312e12, 80 * GiB, "NVIDIA A100 80GB SXM", "gpu"),
    "h100": Device(989e12, 80 * GiB, "NVIDIA H100 80GB SXM", "gpu"),
    "h200": Device(989e12, 141 * GiB, "NVIDIA H200 141GB SXM", "gpu"),
    "cpu": Device(120e9, 24 * GiB, "this project's 2-core CPU machine (fp32, measured)", "cpu"),
}


@dataclasses.dataclass
class Plan:
  """Per-device bytes and per-step FLOPs of a config on a mesh (see the module docstring)."""
  mesh: dict[str, int]
  rules: str
  batch_size: int
  per_device_batch: int
  total_params: int
  trainable_params: int
  params_bytes: float
  optimizer_bytes: float
  gradient_bytes: float
  activation_bytes: float
  activation_bytes_per_example: float
  remat: tuple[str, ...]
  dtypes: tuple[str, ...]
  model_flops: float
  hardware_flops: float

  @property
  def num_devices(self) -> int:
    return math.prod(self.mesh.values())

  @property
  def total_bytes(self) -> float:
    """Per-device bytes of params + optimizer + gradients + saved activations."""
    return self.params_bytes + self.optimizer_bytes + self.gradient_bytes + \
        self.activation_bytes

  def step_seconds(self, device: Device, mfu: float) -> float:
    """Seconds per step when the model FLOPs run at `mfu` of the devices' peak."""
    return self.model_flops / (self.num_devices * device.peak_flops * mfu)


def resolve_auto_dtypes(model_config: Any, backend: str) -> None:
  """Replaces every compute `dtype` 'auto' of a model config (in place) by what it becomes on
  `backend` (layers.auto_compute_dtype), so a plan made on a CPU counts a TPU's bf16."""
  for key, value in model_config.items():
    if hasattr(value, "items"):
      resolve_auto_dtypes(value, backend)
    elif key == "dtype" and value == "auto":
      model_config[key] = str(layers.auto_compute_dtype(backend))


def parse_mesh(text: str) -> dict[str, int]:
  """'data=16,fsdp=16' -> {'data': 16, 'fsdp': 16, 'tensor': 1}; every size explicit."""
  sizes = {axis: 1 for axis in P.MESH_AXES}
  for item in filter(None, (t.strip() for t in text.split(","))):
    axis, sep, value = item.partition("=")
    if not sep or axis not in P.MESH_AXES:
      raise ValueError(f"--mesh entry {item!r} must be AXIS=SIZE with AXIS one of {P.MESH_AXES}")
    try:
      sizes[axis] = int(value)
    except ValueError:
      raise ValueError(f"--mesh {axis}={value!r}: the size must be an integer") from None
    if sizes[axis] < 1:
      raise ValueError(f"--mesh {axis}={sizes[axis]}: sizes must be >= 1 (no -1 on paper)")
  return sizes


def abstract_mesh(sizes: Mapping[str, int]) -> AbstractMesh:
  """A (data, fsdp, tensor) mesh of these sizes without devices."""
  return AbstractMesh(tuple(sizes[a] for a in P.MESH_AXES), P.MESH_AXES,
                      axis_types=(AxisType.Auto,) * len(P.MESH_AXES))


def shard_bytes(tree: Any, shardings: Any, what: str) -> float:
  """Bytes of one device's shards of `tree` (ShapeDtypeStructs) under `shardings`."""
  total = 0.0
  bad = []
  for (path, leaf), sharding in zip(jax.tree_util.tree_flatten_with_path(tree)[0],
                                    jax.tree_util.tree_leaves(shardings)):
    try:
      shape = sharding.shard_shape(leaf.shape)
    except ValueError:
      bad.append(f"{paths.path_str(path)} {tuple(leaf.shape)} over {sharding.spec}")
      continue
    total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
  if bad:
    raise ValueError(f"{what}: {len(bad)} array(s) have a dimension their mesh axes do not "
                     f"divide (jax.jit would refuse them); change --mesh or the rules:\n  " +
                     "\n  ".join(bad[:10]))
  return total


def _fields(model_config: Any, name: str, prefix: str = "model") -> tuple[str, ...]:
  """'model.lm.remat=none', ... for every field called `name` in a model config."""
  out = []
  for key, value in model_config.items():
    if hasattr(value, "items"):
      out += _fields(value, name, f"{prefix}.{key}")
    elif key == name:
      out.append(f"{prefix}.{name}={value}")
  return tuple(out)


# Batch keys whose second dimension is the text length (mmjax/batch.py's contract).
_TEXT_KEYS = ("tokens", "media_locations", "loss_mask", "text")


def batch_spec(family: family_lib.ModelFamily, data: Any, size: int
               ) -> dict[str, jax.ShapeDtypeStruct]:
  """Shapes of a training batch of `size` examples as the input pipeline makes it from the
  data config (text_length, image_size, max_media, num_frames for video), keys and dtypes from
  the family's dummy batch."""
  out = {}
  frames = data.num_frames if data.task == "video" else 1
  for key, value in family.dummy_batch(1).items():
    shape = tuple(value.shape[1:])
    if key in _TEXT_KEYS:
      shape = (data.text_length,)
    elif key == "media":
      shape = (data.max_media, frames, data.image_size, data.image_size, shape[-1])
    elif key == "media_mask":
      shape = (data.max_media,)
    elif key == "image":
      shape = (data.image_size, data.image_size, shape[-1])
    out[key] = jax.ShapeDtypeStruct((size,) + shape, value.dtype)
  return out


def residual_bytes(family: family_lib.ModelFamily, params: Any, trainable: Any,
                   batch: Any) -> float:
  """Bytes of the `jax.vjp` residuals of the loss w.r.t. the trainable parameters on `batch`
  (ShapeDtypeStructs) (parameters that the backward pass reads are included)."""
  frozen = jax.tree_util.tree_map(lambda p, t: None if t else p, params, trainable)
  train_part = jax.tree_util.tree_map(lambda p, t: p if t else None, params, trainable)

  def residuals(train_params, frozen_params, batch):
    def loss(p):
      merged = jax.tree_util.tree_map(lambda t, a, b: a if t else b, trainable, p,
                                      frozen_params, is_leaf=lambda x: x is None)
      return family.loss(merged, batch, jax.random.key(0), train=True)[0]
    return jax.vjp(loss, train_params)[1]

  out = jax.eval_shape(residuals, train_part, frozen, batch)
  return float(sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize
                   for x in jax.tree_util.tree_leaves(out)))


def make_plan(config: Any, mesh_sizes: Mapping[str, int], batch_size: Optional[int] = None,
              rules: Optional[str] = None, compute: bool = True) -> Plan:
  """The Plan of `config` (a loaded run config) on a mesh of `mesh_sizes` (nothing allocated).

  `compute=False` skips the traces of the loss and the step (activations and FLOPs are then
  NaN): the parameter, optimizer and gradient shards alone, in a few seconds for 9B.
  """
  mesh_sizes = {a: int(mesh_sizes.get(a, 1)) for a in P.MESH_AXES}
  mesh = abstract_mesh(mesh_sizes)
  rules = rules or config.sharding_rules
  batch_size = batch_size or config.data.batch_size
  data_ways = mesh_sizes[P.DATA] * mesh_sizes[P.FSDP]
  if batch_size % data_ways:
    raise ValueError(f"batch size {batch_size} is not divisible by data * fsdp = {data_ways} "
                     "(the batch is split over both)")

  family = family_lib.build(config.model)
  abstract_vars = jax.eval_shape(family.init, jax.random.key(0), family.dummy_batch(1))
  params = nn.unbox(abstract_vars["params"])
  param_shardings = P.abstract_shardings(abstract_vars, mesh, rules)["params"]
  trainable = train.trainable_mask(config, family, params)
  tx, _ = optim.make_optimizer(config.optim, params, trainable)
  opt_state = jax.eval_shape(tx.init, params)
  opt_shardings = train.like_params(opt_state, params, param_shardings, P.replicated(mesh))
  grads = jax.tree_util.tree_map(lambda p, t: p if t else None, params, trainable)
  grad_shardings = jax.tree_util.tree_map(lambda s, t: s if t else None, param_shardings,
                                          trainable)

  # Shards first: a mesh that does not divide a parameter fails before the slow traces.
  state_bytes = dict(params_bytes=shard_bytes(params, param_shardings, "parameters"),
                     optimizer_bytes=shard_bytes(opt_state, opt_shardings, "optimizer state"),
                     gradient_bytes=shard_bytes(grads, grad_shardings, "gradients"))
  per_device_batch = batch_size // data_ways
  remat = _fields(config.model, "remat")
  per_example = model = hardware = float("nan")
  if compute:
    per_example = residual_bytes(family, params, trainable, batch_spec(family, config.data, 2)) \
        - residual_bytes(family, params, trainable, batch_spec(family, config.data, 1))
    step_args = (params, opt_state, batch_spec(family, config.data, batch_size),
                 jax.ShapeDtypeStruct((), jax.random.key(0).dtype),
                 jax.ShapeDtypeStruct((), jnp.int32))
    model = train.model_flops_per_step(config, tx, trainable, *step_args)
    hardware = model if all(r.endswith("=none") for r in remat) else flops_lib.count_flops(
        train.make_train_step(family, tx, trainable, config), *step_args)
  count = lambda tree: sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(tree))
  return Plan(
      mesh=mesh_sizes, rules=rules if isinstance(rules, str) else "custom",
      batch_size=batch_size, per_device_batch=per_device_batch,
      total_params=count(params), trainable_params=count(grads),
      **state_bytes,
      activation_bytes=per_example * per_device_batch / mesh_sizes[P.TENSOR],
      activation_bytes_per_example=per_example, remat=remat,
      dtypes=tuple(sorted({d.split('=')[1] for d in _fields(config.model, 'dtype')})),
      model_flops=model, hardware_flops=hardware)


def _gib(x: float) -> str:
  """Bytes as GiB, or MiB below 1 GiB (small presets)."""
  return f"{x / GiB:8.2f} GiB" if x >= GiB else f"{x / 2**20:8.2f} MiB"


def format_plan(plan: Plan, device_name: str, mfu: float) -> str:
  """The printed report; the last lines are the step time and the fit verdict."""
  if device_name not in DEVICES:
    raise ValueError(f"unknown --device {device_name!r}; choose one of {sorted(DEVICES)}")
  if not 0 < mfu <= 1:
    raise ValueError(f"--mfu must be in (0, 1], got {mfu}")
  device = DEVICES[device_name]
  mesh = ",".join(f"{a}={s}" for a, s in plan.mesh.items())
  lines = [
      f"mesh {mesh} ({plan.num_devices} devices), rules {plan.rules}, batch {plan.batch_size} "
      f"({plan.per_device_batch} per device)",
      f"params {plan.total_params:,} ({plan.trainable_params:,} trainable); remat: "
      f"{', '.join(plan.remat) or 'n/a'}; compute dtype: {', '.join(plan.dtypes)}",
      "per-device memory:",
      f"  params          {_gib(plan.params_bytes)}",
      f"  optimizer state {_gib(plan.optimizer_bytes)}",
      f"  gradients       {_gib(plan.gradient_bytes)}",
      f"  activations     {_gib(plan.activation_bytes)}  "
      f"({plan.activation_bytes_per_example / 2**20:.1f} MiB per example, saved for backward)",
      f"  total           {_gib(plan.total_bytes)}  of {device.hbm_bytes / GiB:.0f} GiB "
      f"({device.note})",
      f"FLOPs per step: {plan.model_flops:.4g} model (forward + backward), "
      f"{plan.hardware_flops:.4g} hardware (with remat recomputation)",
      f"step time at MFU {mfu:.0%} of {device.peak_flops / 1e12:.4g} TFLOP/s per device: "
      f"{plan.step_seconds(device, mfu):.3g} s "
      f"({plan.batch_size / plan.step_seconds(device, mfu):,.0f} examples/s)",
  ]
  if plan.total_bytes > device.hbm_bytes:
    lines.append(f"WARNING: does not fit: {plan.total_bytes / GiB:.1f} GiB per device > "
                 f"{device.hbm_bytes / GiB:.0f} GiB on {device_name}; shard more (fsdp), "
                 "remat ('full'), or a smaller per-device batch")
  else:
    lines.append(f"fits: {plan.total_bytes / device.hbm_bytes:.0%} of {device_name} memory "
                 "(before XLA's temporaries)")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", required=True, help="configs/<family>.py:<preset>")
  parser.add_argument("--mesh", required=True, help="e.g. data=16,fsdp=16 (missing axes: 1)")
  parser.add_argument("--device", default="tpu_v5p", help=f"one of {sorted(DEVICES)}")
  parser.add_argument("--mfu", type=float, default=0.4, help="assumed model FLOPs utilisation")
  parser.add_argument("--batch_size", type=int, help="global batch (default: data.batch_size)")
  parser.add_argument("--rules", help="sharding rule preset (default: config.sharding_rules)")
  args, rest = parser.parse_known_args(argv)
  bad = [r for r in rest if not r.startswith("--config.")]
  if bad:
    parser.error(f"unrecognised arguments {bad}; overrides look like --config.model.remat=full")
  if args.device not in DEVICES:
    parser.error(f"unknown --device {args.device!r}; choose one of {sorted(DEVICES)}")
  config = config_lib.load_config(args.config, [r.removeprefix("--") for r in rest])
  resolve_auto_dtypes(config.model, DEVICES[args.device].backend)
  plan = make_plan(config, parse_mesh(args.mesh), args.batch_size, args.rules)
  print(f"{args.config} on {args.device}")
  print(format_plan(plan, args.device, args.mfu))
  return 0


if __name__ == "__main__":
  sys.exit(main())
