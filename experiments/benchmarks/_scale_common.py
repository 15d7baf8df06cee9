"""Helpers of the scale benchmarks (mfu, compile, data_vs_step, remat): a real train step of a
config on synthetic data, the machine's measured matmul peak, and timing by medians.

Every benchmark prints absolute figures and ends with its ratio against the issue's target,
measured side by side in the same run because the machine is shared and noisy.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Any, Callable, Optional, Sequence

# XLA reads its flags once, before the backend starts: the oneDNN matmuls were 17% faster on this
# CPU (DESIGN.md); both sides of every ratio run with the same flags.
if "--xla_cpu_use_onednn" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_use_onednn=true").strip()

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO not in sys.path:
  sys.path.insert(0, REPO)
os.chdir(REPO)  # config specs are relative to the repository root

import flax.linen as nn  # noqa: E402  pylint: disable=wrong-import-position
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from mmjax import config_lib, flops, optim, plan, train  # noqa: E402
from mmjax.models import family as family_lib  # noqa: E402

# A "medium" decoder LM for CPU MFU: matrices large enough (512 x 2048, 2048 tokens per step)
# that XLA's matmuls run near the machine's peak, small enough for seconds per step on 2 cores.
MEDIUM_LM = ("model.width=512", "model.depth=4", "model.num_heads=8", "model.num_kv_heads=8",
             "model.head_dim=64", "model.mlp_dim=2048", "model.max_len=256",
             "data.text_length=256", "data.batch_size=8", "model.dtype=float32")


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
  """Median wall time of `fn()` (which must block until its result is ready)."""
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def matmul_peak(n: int = 2048, dtype: Any = jnp.float32, repeats: int = 5) -> float:
  """Measured FLOP/s of a large square `jnp.dot` (2 n^3 FLOPs) on the default device."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  dot = jax.jit(jnp.dot)
  seconds = median_seconds(lambda: dot(a, b).block_until_ready(), repeats)
  return 2.0 * n ** 3 / seconds


def synthetic_batch(family: family_lib.ModelFamily, config: Any, size: int,
                    seed: int = 0) -> dict[str, jax.Array]:
  """A batch of the pipeline's shapes (plan.batch_spec) with random pixels and tokens, one
  `<image>` per media item at position 1, every target in the loss."""
  spec = plan.batch_spec(family, config.data, size)
  rng = np.random.default_rng(seed)
  # Token ids below the decoder's vocabulary (an LM's or a Flamingo's), else the text tower's
  # (two-tower models such as CLIP have no decoder).
  decoder = getattr(family, "lm_config", None)
  vocab = decoder.vocab_size if decoder is not None else config.model.text.vocab_size
  out = {}
  for key, s in spec.items():
    if key == "media_locations":
      value = np.zeros(s.shape, bool)
      value[:, 1] = True
    elif np.dtype(s.dtype) == np.bool_:
      value = np.ones(s.shape, bool)
    elif np.issubdtype(np.dtype(s.dtype), np.integer):
      value = rng.integers(4, vocab, s.shape)
    elif key == "loss_mask":
      value = np.ones(s.shape)
    else:
      value = rng.uniform(-1, 1, s.shape)
    out[key] = jnp.asarray(value, s.dtype)
  return out


class TrainStep:
  """A config's real train step (train.make_train_step) with initialised state, jitted with
  donation like the trainer, on one device and a synthetic batch."""

  def __init__(self, spec: str, overrides: Sequence[str] = (), batch_size: Optional[int] = None):
    self.config = config_lib.load_config(spec, list(overrides))
    self.batch_size = batch_size or self.config.data.batch_size
    self.family = family_lib.build(self.config.model)
    abstract = nn.unbox(jax.eval_shape(self.family.init, jax.random.key(0),
                                       self.family.dummy_batch(1))["params"])
    self.trainable = train.trainable_mask(self.config, self.family, abstract)
    self.tx, _ = optim.make_optimizer(self.config.optim, abstract, self.trainable)
    self.step_fn = train.make_train_step(self.family, self.tx, self.trainable, self.config)
    self.batch = synthetic_batch(self.family, self.config, self.batch_size)
    self.rng = jax.random.key(0)
    self._state = None
    self._compiled = None

  def state(self):
    """(params, opt_state), initialised on first use."""
    if self._state is None:
      params = jax.jit(lambda k: nn.unbox(self.family.init(k, self.family.dummy_batch(1))[
          "params"]))(jax.random.key(0))
      self._state = (params, jax.jit(self.tx.init)(params))
    return self._state

  def lower(self):
    """The jitted step lowered on abstract arguments (nothing allocated)."""
    abstract = lambda t: jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), t)
    params = nn.unbox(jax.eval_shape(self.family.init, jax.random.key(0),
                                     self.family.dummy_batch(1))["params"])
    opt_state = jax.eval_shape(self.tx.init, params)
    return jax.jit(self.step_fn, donate_argnums=(0, 1)).lower(
        params, opt_state, abstract(self.batch), self.rng, jnp.asarray(0))

  def compiled(self):
    """The compiled step (compiled once)."""
    if self._compiled is None:
      self._compiled = self.lower().compile()
    return self._compiled

  def run(self, steps: int = 1) -> None:
    """Runs `steps` updates and waits for them."""
    compiled = self.compiled()
    params, opt_state = self.state()
    for i in range(steps):
      params, opt_state, metrics = compiled(params, opt_state, self.batch, self.rng,
                                            jnp.asarray(i))
    jax.block_until_ready(metrics["loss"])
    self._state = (params, opt_state)

  def model_flops(self) -> float:
    """Model FLOPs of one step (mmjax/flops.py: jaxpr count, remat excluded)."""
    return train.model_flops_per_step(self.config, self.tx, self.trainable, *self.state(),
                                      self.batch, self.rng, jnp.asarray(0))

  def hardware_flops(self) -> float:
    """FLOPs of one step as it runs (remat recomputation included)."""
    return flops.count_flops(self.step_fn, *self.state(), self.batch, self.rng, jnp.asarray(0))


def verdict(name: str, value: float, target: str, ok: bool) -> str:
  """The last line of every benchmark: 'name: value (target ...): MET / MISSED'."""
  return f"{name}: {value:.2f} (target {target}): {'MET' if ok else 'MISSED'}"
