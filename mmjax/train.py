"""The one trainer for every model family.

    python -m mmjax.train --config configs/flamingo.py:tiny --workdir /tmp/run [--config.x=v ...]

`train_and_evaluate(config, workdir)` reads top to bottom in phases: workdir and run record,
mesh, input, model and optimizer, sharded initialisation, restore, step function, evaluators,
loop. A workdir that already holds a checkpoint resumes from its newest complete one (model,
optimizer, step, RNG and data-iterator state), so the same command continues a stopped run
bit-exactly, after `kill -9` too. SIGTERM checkpoints the current step and exits with
EXIT_PREEMPTED (75): "preempted, run me again" (see mmjax/preemption.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mmjax import checkpoint as ckpt_lib
from mmjax import config_lib
from mmjax import flops as flops_lib
from mmjax import metric_writers
from mmjax import optim
from mmjax import parallel as P
from mmjax import paths
from mmjax import preemption
from mmjax import reporting
from mmjax import restore
from mmjax import stages
from mmjax import evaluators as eval_lib
from mmjax.data import pipeline
from mmjax.data import tokenizers
from mmjax.models import family as family_lib

log = logging.getLogger("mmjax.train")

# Exit code of a run stopped by SIGTERM after checkpointing: "preempted, run me again".
EXIT_PREEMPTED = preemption.EXIT_PREEMPTED
Preempted = preemption.Preempted


class NonFiniteError(FloatingPointError):
  """The loss or a gradient became NaN/Inf (config.on_nonfinite = 'halt')."""


# ---- Run record -------------------------------------------------------------------------------

def _git_commit() -> Optional[str]:
  try:
    return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.abspath(__file__)), check=True,
                          timeout=10).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return None


def write_run_record(config: Any, workdir: str, mesh: Any) -> None:
  """Resolved config, git commit, package versions and devices of this run, into the workdir."""
  os.makedirs(workdir, exist_ok=True)
  # Write-then-rename: a kill mid-write must not leave a truncated config.json, which the next
  # start compares against (check_workdir_model).
  reporting.write_text(os.path.join(workdir, "config.json"),
                       config.to_json_best_effort(indent=1, sort_keys=True))
  packages = {}
  for name in ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain",
               "tensorflow-datasets", "ml-collections", "numpy"):
    try:
      packages[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      packages[name] = None
  record = {"git_commit": _git_commit(), "packages": packages, "python": sys.version,
            "platform": platform.platform(), "devices": [str(d) for d in jax.devices()],
            "process_count": jax.process_count(), "mesh": dict(mesh.shape),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
  with open(os.path.join(workdir, "run.json"), "a", encoding="utf-8") as f:
    f.write(json.dumps(record) + "\n")


# ---- Checks before any compute ----------------------------------------------------------------

def check_vocab(model_config: Any, tokenizer: tokenizers.Tokenizer, prefix: str = "model") -> None:
  """Every `vocab_size` in the model config must hold the tokenizer's ids (with the block's
  `num_new_tokens` rows for added special tokens, which must then start right after the base
  vocabulary), and every `eos_id` / `pad_id` must be the tokenizer's."""
  for key, value in model_config.items():
    path = f"{prefix}.{key}"
    if hasattr(value, "items"):
      check_vocab(value, tokenizer, path)
    elif key == "vocab_size":
      new = model_config.get("num_new_tokens", 0)
      if value + new < tokenizer.vocab_size:
        raise ValueError(f"config {path}={value}{f' (+{new} new tokens)' if new else ''} is "
                         f"smaller than the tokenizer {tokenizer.name!r}'s vocabulary "
                         f"({tokenizer.vocab_size} ids incl. special tokens)")
      if new and value != tokenizer.base_vocab_size:
        raise ValueError(f"config {path}={value} must equal the tokenizer {tokenizer.name!r}'s "
                         f"base vocabulary ({tokenizer.base_vocab_size}) so that its special "
                         f"tokens fall in the {new} new-token rows")
    elif key in ("eos_id", "pad_id") and model_config.get("pool", "eos") in ("eos", None) \
        and value != getattr(tokenizer, key):
      raise ValueError(f"config {path}={value} but tokenizer {tokenizer.name!r} has "
                       f"{key}={getattr(tokenizer, key)}")


# Model fields that change how the same parameters are computed or trained, not what they are:
# a resume may change them (e.g. turn on remat after an out-of-memory, or unfreeze a tower).
RESUMABLE_MODEL_FIELDS = frozenset({
    "remat", "dtype", "attention_impl", "dropout_rate", "attention_dropout", "patch_dropout",
    "freeze_vision", "freeze_lm", "freeze_text"})


# Stands for "a field this code has and the saved config lacks": a switch added to mmjax since the
# run was saved. New fields default to the behaviour that existed before them, so the resume goes on
# (logged); were the default to change the parameters, the restore's tree check still refuses it.
ADDED_FIELD = "<added field>"


def _differences(saved: Any, current: Any, path: str) -> list[tuple[str, str]]:
  """(field name, 'path: saved X, this run Y') for every differing leaf of two JSON trees, in
  key order; list items are named by their list's field."""
  if isinstance(saved, dict) and isinstance(current, dict):
    out = []
    for key in sorted(set(saved) | set(current)):
      if key not in saved:
        out.append((ADDED_FIELD, f"{path}.{key} exists only in this run"))
      elif key not in current:
        out.append((key, f"{path}.{key} exists only in the saved config"))
      else:
        out += [(key if name is None else name, text) for name, text in
                _differences(saved[key], current[key], f"{path}.{key}")]
    return out
  if isinstance(saved, list) and isinstance(current, list) and len(saved) == len(current):
    return [(None, text) for i, (a, b) in enumerate(zip(saved, current))
            for _, text in _differences(a, b, f"{path}[{i}]")]
  return [] if saved == current else [(None, f"{path}: saved {saved!r}, this run {current!r}")]


def check_workdir_model(config: Any, workdir: str) -> None:
  """A workdir with checkpoints must belong to this model: its config.json's `model` section
  must equal ours up to RESUMABLE_MODEL_FIELDS and fields added since it was saved (those
  differences are logged), else ValueError naming the first differing field. Nothing is written."""
  path = os.path.join(workdir, "config.json")
  if not ckpt_lib.has_checkpoint(workdir) or not os.path.exists(path):
    return
  try:
    with open(path, encoding="utf-8") as f:
      saved = json.load(f).get("model")
  except (OSError, ValueError) as e:
    # The parameter-tree check at restore still guards this workdir.
    log.warning("cannot read %s (%s); relying on the checkpoint's parameter tree", path, e)
    return
  current = json.loads(config.model.to_json_best_effort())
  diffs = _differences(saved, current, "model")
  allowed = RESUMABLE_MODEL_FIELDS | {ADDED_FIELD}
  for name, diff in diffs:
    if name in allowed:
      log.warning("resuming %s with a changed model field: %s", workdir, diff)
  blocking = [diff for name, diff in diffs if name not in allowed]
  if blocking:
    raise ValueError(f"workdir {workdir} holds checkpoints of another model ({blocking[0]}). Use "
                     "a new --workdir, or the saved config to resume it.")


def _find_fields(tree: Any, names: tuple[str, ...], prefix: str) -> list[tuple[str, int]]:
  out = []
  for key, value in tree.items():
    if hasattr(value, "items"):
      out += _find_fields(value, names, f"{prefix}.{key}")
    elif key in names and isinstance(value, int):
      out.append((f"{prefix}.{key}", value))
  return out


def check_text_length(config: Any) -> None:
  """data.text_length must fit every text context of the model (`context_length`, `max_len`);
  longer examples are truncated to data.text_length by the pipeline."""
  for path, limit in _find_fields(config.model, ("context_length", "max_len"), "model"):
    if config.data.text_length > limit:
      raise ValueError(f"config data.text_length={config.data.text_length} is longer than the "
                       f"model's context {path}={limit}")


def parse_init_from(specs) -> list[tuple[str, str, str]]:
  """'dst=workdir:src' strings -> (dst_path, workdir, src_path) triples."""
  out = []
  for spec in specs:
    dst, sep, rest = spec.partition("=")
    source, sep2, src = rest.rpartition(":")
    if not sep or not sep2 or not dst or not source:
      raise ValueError(f"config init_from entry {spec!r} must look like 'DST=WORKDIR:SRC' "
                       "(e.g. 'vision=/runs/clip:image')")
    out.append((dst.strip("/"), source, src.strip("/")))
  return out


def _get_path(tree: Any, path: str, what: str) -> Any:
  node = tree
  for part in path.split("/") if path else []:
    if not isinstance(node, dict) or part not in node:
      raise KeyError(f"{what}: no sub-tree {path!r} (at {part!r}; keys: "
                     f"{sorted(node) if isinstance(node, dict) else type(node).__name__})")
    node = node[part]
  return node


def _restrict_to(source: Any, target: Any, where: str) -> Any:
  """`source` without the sub-trees `target` lacks (e.g. a CLIP tower's projection head when a
  Flamingo vision tower has none), logged; a parameter the target has and the source lacks is
  left for the shape check to report."""
  if not (isinstance(source, dict) and isinstance(target, dict)):
    return source
  dropped = sorted(set(source) - set(target))
  if dropped:
    log.info("init_from %s: not copying %s (this model has no such parameters)", where, dropped)
  return {k: _restrict_to(v, target[k], f"{where}/{k}") for k, v in source.items() if k in target}


def apply_init_from(params: Any, specs, shardings: Any, family: Any = None,
                    data_dir: Optional[str] = None) -> Any:
  """Copies sub-trees of other runs' latest checkpoints, or of converter-backed pretrained models
  ('text/bert=hf_bert:DIR:', restore.load_init_source; relative DIRs inside `data_dir`), into
  `params` (shapes must agree; source parameters this model lacks, such as a projection head or
  BERT's pooler, are skipped). `family` may first re-lay a source out
  (`ModelFamily.adapt_init_source`: a plain LM run into Flamingo's LM) and must accept a
  pretrained source's architecture (`ModelFamily.check_init_fields`)."""
  params = jax.tree_util.tree_map(lambda x: x, params)  # a fresh dict tree we may mutate
  scan = bool(family.config.get("scan", True)) if family is not None else True
  for dst, source, src in parse_init_from(specs):
    restored, fields = restore.load_init_source(source, scan=scan, data_dir=data_dir)
    if fields is not None and family is not None:
      family.check_init_fields(dst, fields, source)
    sub = _get_path(restored, src, f"init_from source {source}")
    target = _get_path(params, dst, "init_from destination (this model)")
    if family is not None:
      sub = family.adapt_init_source(dst, sub, target)
    sub = _restrict_to(sub, target, f"{source}:{src}")
    src_shapes = jax.tree_util.tree_map(np.shape, sub)
    dst_shapes = jax.tree_util.tree_map(np.shape, target)
    if src_shapes != dst_shapes:
      raise ValueError(f"init_from {dst}={source}:{src}: shapes differ\n source {src_shapes}\n "
                       f"target {dst_shapes}")
    sub = jax.device_put(sub, _get_path(shardings, dst, "shardings"))
    parent = _get_path(params, "/".join(dst.split("/")[:-1]), "init_from destination")
    parent[dst.split("/")[-1]] = jax.tree_util.tree_map(
        lambda new, old: new.astype(old.dtype), sub, target)
    log.info("initialised %s from %s:%s", dst, source, src)
  return params


# ---- Initial state ----------------------------------------------------------------------------

def init_train_state(family: family_lib.ModelFamily, tx: optax.GradientTransformation,
                     param_shardings: Any, mesh: Any, key: jax.Array) -> tuple[Any, Any, Any]:
  """(params, opt_state, opt_state shardings), created directly in their shardings.

  An optimizer-state leaf whose path ends with a parameter's path and has its shape (Adam's mu
  and nu of that parameter) is sharded like the parameter; everything else (counters, masked
  leaves of frozen parameters) is replicated. XLA's propagation is not relied on: zeros do not
  depend on the parameters' values, and it leaves them replicated.
  """
  def init_params(k):
    return nn.unbox(family.init(k, family.dummy_batch(1))["params"])

  params = jax.jit(init_params, out_shardings=param_shardings)(key)
  opt_shardings = like_params(jax.eval_shape(tx.init, params), params, param_shardings,
                              P.replicated(mesh))
  opt_state = jax.jit(tx.init, out_shardings=opt_shardings)(params)
  return params, opt_state, opt_shardings


def like_params(tree: Any, params: Any, per_param: Any, default: Any) -> Any:
  """For each leaf of `tree` (an optimizer state), the `per_param` entry of the parameter it
  mirrors (its path ends with the parameter's path and it has its shape: Adam's mu and nu),
  else `default`. Used for shardings here and for mesh-axis specs by `mmjax.plan`."""
  by_path = {paths.path_str(p): (x.shape, v) for (p, x), v in zip(
      jax.tree_util.tree_flatten_with_path(params)[0], jax.tree_util.tree_leaves(
          per_param, is_leaf=lambda x: x is None))}

  def pick(path, leaf):
    name = paths.path_str(path)
    for param_path, (shape, value) in by_path.items():
      if (name == param_path or name.endswith("/" + param_path)) and leaf.shape == shape:
        return value
    return default
  return jax.tree_util.tree_map_with_path(pick, tree)


def trainable_mask(config: Any, family: family_lib.ModelFamily, params: Any) -> Any:
  """Bool tree over `params`: False for leaves frozen by `config.optim.frozen` or by the
  family's `is_trainable` (e.g. Flamingo's frozen towers)."""
  frozen = optim.regex_mask(params, config.optim.frozen)
  is_trainable = getattr(family, "is_trainable", None)
  if is_trainable is not None:
    frozen = jax.tree_util.tree_map(lambda f, path: f or not is_trainable(path), frozen,
                                    paths.tree_paths(params))
  return jax.tree_util.tree_map(lambda f: not f, frozen)


def model_flops_per_step(config: Any, tx: optax.GradientTransformation, trainable: Any,
                         *step_args: Any) -> float:
  """Model FLOPs of one train step on `step_args` (arrays or ShapeDtypeStructs): the step of
  the same model without remat, counted from its jaxpr (mmjax/flops.py says why not XLA's
  cost analysis)."""
  family = family_lib.build(flops_lib.without_remat(config.model))
  return flops_lib.count_flops(make_train_step(family, tx, trainable, config), *step_args)


# ---- The step ---------------------------------------------------------------------------------

def make_train_step(family: family_lib.ModelFamily, tx: optax.GradientTransformation,
                    trainable: Any, config: Any):
  """The pure update `(params, opt_state, batch, rng, step) -> (params, opt_state, metrics)`.

  Gradients are taken only with respect to trainable leaves; frozen leaves enter the loss as
  constants. With grad_accum_steps = k the batch is split into k micro-batches whose gradients
  are averaged in a `lax.scan` (one optimizer update per step).
  """
  accum = config.optim.grad_accum_steps
  skip_nonfinite = config.on_nonfinite == "skip"

  def split(params):
    train = jax.tree_util.tree_map(lambda p, t: p if t else None, params, trainable)
    frozen = jax.tree_util.tree_map(lambda p, t: None if t else p, params, trainable)
    return train, frozen

  def merge(train, frozen):
    return jax.tree_util.tree_map(lambda t, a, b: a if t else b, trainable, train, frozen,
                                  is_leaf=lambda x: x is None)

  def loss_fn(train, frozen, batch, rng):
    return family.loss(merge(train, frozen), batch, rng, train=True)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def step_fn(params, opt_state, batch, rng, step):
    rng = jax.random.fold_in(rng, step)
    train, frozen = split(params)
    if accum == 1:
      (loss, metrics), grads = grad_fn(train, frozen, batch, rng)
    else:
      micro = jax.tree_util.tree_map(
          lambda x: x.reshape(accum, x.shape[0] // accum, *x.shape[1:]), batch)

      def body(carry, inputs):
        i, mb = inputs
        (l, m), g = grad_fn(train, frozen, mb, jax.random.fold_in(rng, i))
        return jax.tree_util.tree_map(jnp.add, carry, (l, m, g)), None

      zeros = jax.tree_util.tree_map(jnp.zeros_like, jax.eval_shape(
          grad_fn, train, frozen, jax.tree_util.tree_map(lambda x: x[0], micro), rng))
      zeros = (zeros[0][0], zeros[0][1], zeros[1])
      (loss, metrics, grads), _ = jax.lax.scan(body, zeros, (jnp.arange(accum), micro))
      loss, metrics, grads = jax.tree_util.tree_map(lambda x: x / accum, (loss, metrics, grads))
    full_grads = merge(grads, jax.tree_util.tree_map(jnp.zeros_like, frozen))
    updates, new_opt_state = tx.update(full_grads, opt_state, params)
    new_params = optax.apply_updates(params, updates)
    finite_groups = {k: jnp.all(jnp.array([jnp.all(jnp.isfinite(x))
                                           for x in jax.tree_util.tree_leaves(v)] or [True]))
                     for k, v in grads.items() if v is not None}
    finite = jnp.isfinite(loss) & jnp.all(jnp.stack(list(finite_groups.values())))
    if skip_nonfinite:
      keep = lambda new, old: jnp.where(finite, new, old)
      new_params = jax.tree_util.tree_map(keep, new_params, params)
      new_opt_state = jax.tree_util.tree_map(keep, new_opt_state, opt_state)
    metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads),
                   finite=finite, **{f"finite/{k}": v for k, v in finite_groups.items()})
    return new_params, new_opt_state, metrics

  return step_fn


def first_nonfinite_group(metrics: dict) -> str:
  """Name of the first parameter group whose gradient was not finite (or 'loss')."""
  for key, value in metrics.items():
    if key.startswith("finite/") and not bool(value):
      return key.removeprefix("finite/")
  return "loss"


# ---- Main -------------------------------------------------------------------------------------

def train_and_evaluate(config: Any, workdir: str, devices: Optional[list] = None
                       ) -> dict[str, Any]:
  """Trains `config` in `workdir` (resuming if it holds a checkpoint); returns final metrics.

  `devices` restricts the mesh to some devices (tests compare 1 device with 8); default all.
  """
  # ---- Pre-training stages (config.pretrain), then workdir, mesh and run record ----
  workdir = os.path.abspath(workdir)
  config = stages.prepare(config, workdir, train_and_evaluate)
  is_chief = jax.process_index() == 0
  mesh = P.make_mesh(dict(config.mesh), devices)
  rules = config.sharding_rules
  P.get_rules(rules)  # fail on a bad preset before any work
  if config.on_nonfinite not in ("halt", "skip"):
    raise ValueError(f"config on_nonfinite must be 'halt' or 'skip', got {config.on_nonfinite!r}")
  check_text_length(config)
  check_workdir_model(config, workdir)  # before write_run_record overwrites config.json
  log.info("mesh %s, rules %s, workdir %s", P.mesh_summary(mesh), rules, workdir)

  # ---- Input ----
  tokenizer = tokenizers.get_tokenizer(config.data.tokenizer, data_dir=config.data.data_dir)
  train_iter = pipeline.make_pipeline(config.data, tokenizer=tokenizer, mesh=mesh, train=True)
  check_vocab(config.model, tokenizer)

  # ---- Model and optimizer ----
  family = family_lib.build(config.model)
  batch_keys = family.batch_keys
  abstract_vars = jax.eval_shape(family.init, jax.random.key(0), family.dummy_batch(1))
  abstract_params = abstract_vars["params"]
  trainable = trainable_mask(config, family, nn.unbox(abstract_params))
  tx, schedule = optim.make_optimizer(config.optim, nn.unbox(abstract_params), trainable)

  # ---- Sharded initialisation (nothing is materialised unsharded) ----
  param_shardings = P.abstract_shardings(abstract_vars, mesh, rules)["params"]
  rng = jax.random.key(config.seed)
  init_rng, train_rng = jax.random.split(rng)

  params, opt_state, opt_shardings = init_train_state(family, tx, param_shardings, mesh,
                                                      init_rng)

  # ---- Restore, or initialise sub-trees from other runs ----
  checkpointer = ckpt_lib.Checkpointer(ckpt_lib.checkpoint_dir(workdir),
                                       config.checkpoint.keep_last, config.checkpoint.keep_every,
                                       config.checkpoint.async_save)
  start_step = 0
  as_abstract = lambda tree, shardings: jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
  restored = None
  if checkpointer.latest_step() is not None:
    restored = checkpointer.restore(as_abstract(params, param_shardings),
                                    as_abstract(opt_state, opt_shardings))
  if restored is not None:
    params, opt_state = restored[ckpt_lib.PARAMS], restored[ckpt_lib.OPT_STATE]
    train_rng, start_step = restored[ckpt_lib.RNG], restored[ckpt_lib.STEP]
    if restored[ckpt_lib.DATA_ITER]:
      train_iter.set_state(restored[ckpt_lib.DATA_ITER])
    log.info("resumed from step %d in %s", start_step, checkpointer.directory)
    print(f"resumed from checkpoint step {start_step}", flush=True)
  elif config.init_from:
    params = apply_init_from(params, config.init_from, param_shardings, family,
                             config.data.get("data_dir"))
  # Recorded only now that the workdir's checkpoints are known to be this model's.
  if is_chief:
    write_run_record(config, workdir, mesh)

  # ---- Step function (sharded, donated) ----
  step_fn = make_train_step(family, tx, trainable, config)
  batch_shardings = {k: P.data_sharding(mesh, len(v.shape))
                     for k, v in family.dummy_batch(1).items()}
  with P.sharding_context(mesh, rules):
    train_step = jax.jit(step_fn, donate_argnums=(0, 1),
                         out_shardings=(param_shardings, opt_shardings, None))

  def shard_batch(batch):
    # Keys the dummy batch lacks (AnyRes `tile_mask`) are split over the batch axis the same way.
    return {k: (v if isinstance(v, jax.Array) else jax.device_put(
        v, batch_shardings.get(k) or P.data_sharding(mesh, np.ndim(v))))
            for k, v in batch.items() if k in batch_keys}

  # ---- Evaluators ----
  context = eval_lib.EvalContext(family=family, data_config=config.data, tokenizer=tokenizer,
                                 mesh=mesh, shard_batch=shard_batch, workdir=workdir)
  evaluators = {name: eval_lib.build(name, cfg, context) for name, cfg in config.evals.items()}

  # ---- Loop ----
  writer = metric_writers.MetricWriter(workdir, enabled=is_chief,
                                       tensorboard=config.log.tensorboard)
  total = config.total_steps
  first_batch = shard_batch(next(train_iter))
  with P.sharding_context(mesh, rules):
    compiled = train_step.lower(params, opt_state, first_batch, train_rng,
                                jnp.asarray(start_step)).compile()
  flops = model_flops_per_step(config, tx, trainable, params, opt_state, first_batch, train_rng,
                               jnp.asarray(start_step))
  log.info("train step: %.3g model GFLOP/step", flops / 1e9)
  progress = metric_writers.Progress(total, config.data.batch_size, flops,
                                     config.log.peak_flops * jax.device_count(), start_step)
  last_metrics: dict[str, Any] = {}
  # Finite flags of the steps since the last report stay on the device (no per-step host sync
  # under 'skip'); they are summed at each report, so every skipped step is counted.
  skipped, pending_finite = 0, []
  saved_step = start_step if restored is not None else None
  batch = first_batch
  step = start_step
  profiling = False
  with preemption.PreemptionGuard(config.checkpoint.preemption_grace_s) as guard:
    while step < total:
      if guard.should_stop(step):
        _stop_for_preemption(checkpointer, step, saved_step, start_step, params, opt_state,
                             train_rng, train_iter, writer)
      if batch is None:  # fetched here, after the stop check, so the iterator state is `step`'s
        batch = shard_batch(next(train_iter))
      if step in config.log.profile_steps and not profiling:
        jax.profiler.start_trace(os.path.join(workdir, "profile"))
        profiling = True
      params, opt_state, metrics = compiled(params, opt_state, batch, train_rng,
                                            jnp.asarray(step))
      step += 1
      if profiling and step - 1 not in config.log.profile_steps:
        jax.profiler.stop_trace()
        profiling = False
      if config.on_nonfinite == "halt" and not bool(metrics["finite"]):
        checkpointer.close()
        writer.close()
        raise NonFiniteError(
            f"non-finite loss or gradient at step {step} (first bad parameter group: "
            f"{first_nonfinite_group(jax.device_get(metrics))!r}); the last good checkpoint "
            f"is step {checkpointer.latest_step()}. Lower the learning rate or set "
            "config.on_nonfinite='skip'.")
      pending_finite.append(metrics["finite"])
      if step % config.log.every_steps == 0 or step == total:
        skipped += sum(not bool(f) for f in jax.device_get(pending_finite))
        pending_finite = []
        host = {k: v for k, v in jax.device_get(metrics).items() if not k.startswith("finite")}
        rates = progress.measure(step)
        host.update(rates, learning_rate=float(schedule(step - 1)), nonfinite_skipped=skipped,
                    data_skipped=train_iter.stats().get("skipped", 0))
        writer.write(step, host)
        if is_chief:
          print(progress.line(step, float(host["loss"]), rates), flush=True)
        last_metrics = host
      if step % config.checkpoint.every_steps == 0 or step == total:
        # The iterator has produced exactly `step` batches here: its state matches the params.
        checkpointer.save(step, params, opt_state, train_rng, train_iter.get_state())
        saved_step = step
      # One record per evaluation step, so the run's last metrics.jsonl line holds every
      # final evaluation.
      step_results: dict[str, Any] = {}
      for name, evaluator in evaluators.items():
        every = config.evals[name].get("every_steps", 0)
        if (every and step % every == 0) or step == total:
          results = evaluator.run(params)
          if is_chief:
            for key, value in results.items():
              print(f"  eval {key}: {value}", flush=True)
          step_results.update(results)
      if step_results:
        writer.write(step, step_results)
        last_metrics.update(step_results)
        progress.restart(step)  # evaluation time is not training throughput
      batch = None
    checkpointer.close()
  writer.close()
  train_iter.close()
  return last_metrics


def _stop_for_preemption(checkpointer, step, saved_step, start_step, params, opt_state, rng,
                         train_iter, writer) -> None:
  """Checkpoints `step` (unless it is saved or nothing was trained), waits, raises Preempted."""
  # At start_step the iterator already produced the batch the step was compiled with, so its
  # state is one ahead; nothing was trained since the restore (or init), so nothing is saved.
  if saved_step != step and step != start_step:
    checkpointer.save(step, params, opt_state, rng, train_iter.get_state(), force=True)
  checkpointer.close()
  writer.close()
  train_iter.close()
  log.warning("preempted: checkpoint of step %d complete; exiting with code %d", step,
              EXIT_PREEMPTED)
  print(f"preempted at step {step}; checkpoint saved; exit code {EXIT_PREEMPTED}", flush=True)
  raise Preempted(step)


def maybe_initialize_distributed() -> None:
  """Multi-host: `jax.distributed.initialize` from MMJAX_COORDINATOR / _NUM_PROCESSES /
  _PROCESS_ID, or with no arguments on a cluster JAX detects itself (TPU pods, SLURM).

  MMJAX_HEARTBEAT_TIMEOUT_S (default 100, JAX's) bounds how long the survivors of a dead
  process wait before the coordination service stops them with an error instead of hanging.
  On CPU, cross-process collectives need gloo (the default has none).
  """
  heartbeat = int(os.environ.get("MMJAX_HEARTBEAT_TIMEOUT_S", "100"))
  if os.environ.get("MMJAX_COORDINATOR") or os.environ.get("MMJAX_DISTRIBUTED") == "auto":
    if "cpu" in os.environ.get("JAX_PLATFORMS", "") or os.environ.get("MMJAX_CPU_COLLECTIVES"):
      jax.config.update("jax_cpu_collectives_implementation",
                        os.environ.get("MMJAX_CPU_COLLECTIVES", "gloo"))
  if os.environ.get("MMJAX_COORDINATOR"):
    jax.distributed.initialize(coordinator_address=os.environ["MMJAX_COORDINATOR"],
                               num_processes=int(os.environ["MMJAX_NUM_PROCESSES"]),
                               process_id=int(os.environ["MMJAX_PROCESS_ID"]),
                               heartbeat_timeout_seconds=heartbeat)
  elif os.environ.get("MMJAX_DISTRIBUTED") == "auto":
    jax.distributed.initialize(heartbeat_timeout_seconds=heartbeat)


def main(argv=None) -> int:
  """CLI entry point; returns 0, or EXIT_PREEMPTED after a SIGTERM checkpoint."""
  parser = argparse.ArgumentParser(description="Train any mmjax model family from a config.")
  parser.add_argument("--config", required=True, help="configs/<family>.py:<preset>")
  parser.add_argument("--workdir", required=True, help="run directory (resumes if it exists)")
  args, rest = parser.parse_known_args(argv)
  bad = [r for r in rest if not r.startswith("--config.")]
  if bad:
    parser.error(f"unrecognised arguments {bad}; overrides look like --config.optim.learning_rate=1e-4")
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
  # Config errors (unknown or mistyped fields) surface before any distributed set-up or writes.
  config = config_lib.load_config(args.config, [r.removeprefix("--") for r in rest])
  maybe_initialize_distributed()
  try:
    train_and_evaluate(config, args.workdir)
  except Preempted as e:
    log.warning("%s", e)
    return EXIT_PREEMPTED
  return 0


if __name__ == "__main__":
  sys.exit(main())
