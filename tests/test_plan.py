"""mmjax.plan's arithmetic against what JAX itself reports on the 8 CPU devices.

- Parameter and optimizer bytes per device equal the shards that `train.init_train_state`
  really creates on a data=2,fsdp=4 mesh (micro Flamingo, whose LM is frozen: no Adam moments).
- FLOPs: the jaxpr count (mmjax/flops.py) of the micro train step with every stack unrolled
  is within [1.0, 1.25] of XLA's compiled cost analysis (which adds elementwise FLOPs on top of
  the matmuls); with scanned stacks XLA counts each loop body once, so it reports less.
- 9B on 256 devices (data=16, fsdp=16, tpu_v5p, batch 8192 of 256 tokens): 10,382,257,172
  parameters, 1,763,537,940 trainable (resampler, gated blocks, new tokens); per device 2.42
  GiB of fp32 parameters (1/16 of 38.7 GiB: the `fsdp` rules shard weights over fsdp only),
  842.5 MiB of Adam moments, 421.3 MiB of gradients; 9.19e16 model FLOPs per step (1.12e13 per
  example: the frozen LM's forward 2 * 8.3e9 * 256 = 4.3e12, its backward for activations
  alone as much again, the trainable gated blocks 3x their forward).
"""

import math

import jax
import numpy as np
import pytest

from mmjax import config_lib, flops, optim, plan, train
from mmjax import parallel as P
from mmjax.models import family as family_lib


def load_micro(*overrides):
  """Micro Flamingo (the preset's warmup equals its 30 steps, which the schedule refuses)."""
  return config_lib.load_config("configs/flamingo.py:micro",
                                ["optim.warmup_steps=2", *overrides])


@pytest.fixture(scope="module")
def micro():
  return load_micro()


def _real_shard_bytes(tree):
  return sum(x.addressable_shards[0].data.nbytes for x in jax.tree_util.tree_leaves(tree))


def test_param_and_optimizer_bytes_match_real_shards(micro):
  sizes = {"data": 2, "fsdp": 4, "tensor": 1}
  p = plan.make_plan(micro, sizes, batch_size=8, compute=False)
  mesh = P.make_mesh(sizes)
  family = family_lib.build(micro.model)
  abstract_vars = jax.eval_shape(family.init, jax.random.key(0), family.dummy_batch(1))
  shardings = P.abstract_shardings(abstract_vars, mesh, micro.sharding_rules)["params"]
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  params_abs = nn.unbox(abstract_vars["params"])
  trainable = train.trainable_mask(micro, family, params_abs)
  tx, _ = optim.make_optimizer(micro.optim, params_abs, trainable)
  params, opt_state, _ = train.init_train_state(family, tx, shardings, mesh, jax.random.key(0))
  assert p.params_bytes == _real_shard_bytes(params)
  assert p.optimizer_bytes == _real_shard_bytes(opt_state)
  trainable_bytes = sum(x.addressable_shards[0].data.nbytes for x, t in zip(
      jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(trainable)) if t)
  assert p.gradient_bytes == trainable_bytes
  # Sharding really splits: at least a quarter less than the unsharded parameters.
  assert p.params_bytes < 0.75 * sum(x.nbytes for x in jax.tree_util.tree_leaves(params))
  assert p.total_params == sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(params))
  assert p.per_device_batch == 1


def test_flops_match_compiled_cost_analysis(micro):
  config = load_micro("model.vision.scan=False", "model.resampler.scan=False",
                      "model.lm.scan=False")
  p = plan.make_plan(config, {"data": 1}, batch_size=4)
  family = family_lib.build(config.model)
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  params = nn.unbox(jax.eval_shape(family.init, jax.random.key(0), family.dummy_batch(1))["params"])
  trainable = train.trainable_mask(config, family, params)
  tx, _ = optim.make_optimizer(config.optim, params, trainable)
  step = train.make_train_step(family, tx, trainable, config)
  batch = plan.batch_spec(family, config.data, 4)
  assert batch["tokens"].shape == (4, config.data.text_length)
  args = (params, jax.eval_shape(tx.init, params), batch, jax.random.key(0), np.int32(0))
  cost = jax.jit(step).lower(*args).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  assert p.model_flops == p.hardware_flops  # no remat in micro
  assert 1.0 <= cost["flops"] / p.model_flops <= 1.25, (cost["flops"], p.model_flops)


def test_remat_lowers_activations_and_adds_recompute():
  # The micro LM: the cheapest model to trace twice.
  base = plan.make_plan(config_lib.load_config("configs/lm.py:micro"), {"data": 1}, batch_size=4)
  remat = plan.make_plan(config_lib.load_config("configs/lm.py:micro", ["model.remat=full"]),
                         {"data": 1}, batch_size=4)
  assert remat.activation_bytes < base.activation_bytes
  assert remat.model_flops == base.model_flops
  assert remat.hardware_flops > remat.model_flops
  report = plan.format_plan(remat, "h100", 0.5)
  seconds = remat.model_flops / (plan.DEVICES["h100"].peak_flops * 0.5)
  assert f"step time at MFU 50% of 989 TFLOP/s per device: {seconds:.3g} s" in report
  assert report.splitlines()[-1].startswith("fits:")


def test_flamingo_9b_on_256_devices():
  config = config_lib.load_config("configs/flamingo.py:9b")
  p = plan.make_plan(config, plan.parse_mesh("data=16,fsdp=16"), compute=False)
  assert p.num_devices == 256 and p.per_device_batch == 32
  assert p.total_params == 10_382_257_172
  # fp32 parameters split 16 ways over fsdp (every 9B matrix has an embed, vocab or mlp
  # dimension that 16 divides; only norms and gates stay whole), replicated over data.
  assert p.params_bytes == pytest.approx(4 * p.total_params / 16, rel=0.01)
  assert p.optimizer_bytes == pytest.approx(2 * 4 * p.trainable_params / 16, rel=0.01)
  assert p.gradient_bytes == pytest.approx(4 * p.trainable_params / 16, rel=0.01)
  assert p.trainable_params == 1_763_537_940
  state = p.params_bytes + p.optimizer_bytes + p.gradient_bytes
  assert state < plan.DEVICES["tpu_v5p"].hbm_bytes / 20  # the state alone is a small share


def test_bad_input_is_named():
  with pytest.raises(ValueError, match="--mesh entry 'model=2'"):
    plan.parse_mesh("data=2,model=2")
  micro = load_micro()
  with pytest.raises(ValueError, match="not divisible by data \\* fsdp = 8"):
    plan.make_plan(micro, {"data": 8}, batch_size=12)
  p = plan.make_plan(micro, {"data": 1}, batch_size=2, compute=False)
  with pytest.raises(ValueError, match="unknown --device 'tpu_v9'"):
    plan.format_plan(p, "tpu_v9", 0.4)


def test_without_remat_clears_every_level():
  config = load_micro("model.lm.remat=full", "model.vision.remat=dots")
  cleared = flops.without_remat(config.model)
  assert cleared.lm.remat == cleared.vision.remat == cleared.resampler.remat == "none"
  assert config.model.lm.remat == "full"


def test_indivisible_parameter_is_named():
  # micro's LM width 32 does not split 64 ways: the plan names the parameter, as jit would fail.
  micro = load_micro()
  with pytest.raises(ValueError, match="parameters: .* do not divide"):
    plan.make_plan(micro, {"fsdp": 64}, batch_size=64, compute=False)
