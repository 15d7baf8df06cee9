"""Optimizer from config: AdamW with a weight-decay mask, warmup + decay schedules, global-norm
clipping, and frozen sub-trees that get no optimizer state at all.

Parameters are addressed by their '/'-joined path (e.g. 'image/blocks/attn/query/kernel'), and
config fields hold regular expressions matched with `re.search` against those paths.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import optax

from mmjax.paths import tree_paths

SCHEDULES = ("cosine", "rsqrt", "constant", "linear")


def regex_mask(tree: Any, patterns: Sequence[str]) -> Any:
  """Bool tree: True where a leaf's path matches any pattern."""
  compiled = [re.compile(p) for p in patterns]
  return jax.tree_util.tree_map(lambda path: any(c.search(path) for c in compiled),
                                tree_paths(tree))


def make_schedule(config: Any) -> Callable[[jax.Array], jax.Array]:
  """Learning rate per step: linear warmup, then cosine / rsqrt / linear decay or constant."""
  lr, warmup, total = config.learning_rate, config.warmup_steps, config.total_steps
  if config.schedule not in SCHEDULES:
    raise ValueError(f"optim.schedule must be one of {SCHEDULES}, got {config.schedule!r}")
  if warmup >= total and config.schedule in ("cosine", "linear"):
    raise ValueError(f"optim.warmup_steps ({warmup}) must be below total_steps ({total})")
  end = lr * config.end_lr_factor

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warm = lr * jnp.minimum(1.0, (step + 1) / max(warmup, 1))
    frac = jnp.clip((step - warmup) / max(total - warmup, 1), 0.0, 1.0)
    if config.schedule == "cosine":
      decayed = end + (lr - end) * 0.5 * (1 + jnp.cos(jnp.pi * frac))
    elif config.schedule == "linear":
      decayed = lr + (end - lr) * frac
    elif config.schedule == "rsqrt":
      decayed = lr * jnp.sqrt(max(warmup, 1) / jnp.maximum(step + 1, max(warmup, 1)))
    else:
      decayed = jnp.asarray(lr, jnp.float32)
    return jnp.where(step < warmup, warm, decayed)
  return schedule


def make_optimizer(config: Any, params: Any, trainable: Any
                   ) -> tuple[optax.GradientTransformation, Callable]:
  """(optimizer, schedule) for `params`; `trainable` is a bool tree (False: frozen).

  Frozen leaves go through `optax.set_to_zero()`, which keeps no state, so a frozen 9B-LM costs
  no Adam moments.
  """
  schedule = make_schedule(config)
  decay = jax.tree_util.tree_map(lambda no_decay, p: not no_decay and p.ndim >= 2,
                                 regex_mask(params, config.no_decay), params)
  if config.name == "adamw":
    inner = optax.adamw(schedule, b1=config.b1, b2=config.b2, eps=config.eps,
                        weight_decay=config.weight_decay, mask=decay)
  elif config.name == "sgd":
    inner = optax.chain(optax.add_decayed_weights(config.weight_decay, mask=decay),
                        optax.sgd(schedule, momentum=config.b1 or None))
  else:
    raise ValueError(f"optim.name must be 'adamw' or 'sgd', got {config.name!r}")
  if config.clip_norm:
    inner = optax.chain(optax.clip_by_global_norm(config.clip_norm), inner)
  labels = jax.tree_util.tree_map(lambda t: "train" if t else "frozen", trainable)
  tx = optax.multi_transform({"train": inner, "frozen": optax.set_to_zero()}, labels)
  return tx, schedule
