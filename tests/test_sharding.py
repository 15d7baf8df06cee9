"""Every family runs under jax.jit with parameters sharded by the rule presets on 8 devices.

The loss on a (data=2, fsdp=2, tensor=2) mesh equals the single-device loss for each preset,
parameters are really split (shard shapes), and a golden file records which mesh axes each
parameter uses (regenerate with MMJAX_UPDATE_GOLDEN=1 after an intended change).
"""

import json
import os
import pathlib

import flax.linen as nn
import jax
import numpy as np
import pytest

from mmjax import config_lib, models
from mmjax import parallel as P
from mmjax import summary

GOLDEN = pathlib.Path(__file__).parent / "golden" / "sharding.json"
FAMILIES = ["clip", "siglip", "coca", "lm", "flamingo"]
PRESETS = ["dp", "fsdp", "tp", "fsdp_tp"]


def _random_batch(family, batch_size=8, seed=0):
  rng = np.random.default_rng(seed)
  batch = {}
  for key, value in family.dummy_batch(batch_size).items():
    if value.dtype == np.bool_:
      batch[key] = np.ones(value.shape, bool) if key == "media_mask" else \
          rng.uniform(size=value.shape) < 0.2
    elif np.issubdtype(value.dtype, np.integer):
      batch[key] = rng.integers(1, 200, size=value.shape).astype(np.int32)
    else:
      batch[key] = rng.uniform(-1, 1, size=value.shape).astype(np.float32)
  return batch


def _sharded_loss(family, variables, batch, mesh, rules):
  """Places the variables by the preset's shardings and evaluates the loss under jit."""
  shardings = P.abstract_shardings(variables, mesh, rules)
  params = jax.device_put(nn.unbox(variables), shardings)["params"]
  with P.sharding_context(mesh, rules):
    batch = {k: jax.device_put(v, P.data_sharding(mesh, v.ndim)) for k, v in batch.items()}
    loss = jax.jit(lambda p, b: family.loss(p, b, train=False)[0])(params, batch)
  return float(loss), params, shardings["params"]


@pytest.fixture(scope="module")
def mesh():
  assert jax.device_count() == 8, "tests/conftest.py must give 8 CPU devices"
  return P.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})


# Every preset on CLIP; the other families share its layers, so one mixed preset each.
CASES = [("clip", rules) for rules in PRESETS] + [(name, "fsdp_tp") for name in FAMILIES[1:]]


@pytest.mark.parametrize("name", FAMILIES)
def test_sharded_losses_match_single_device(name, mesh):
  family = models.build(config_lib.load_config(f"configs/{name}.py:micro").model)
  batch = _random_batch(family)
  variables = jax.jit(family.init)(jax.random.key(0), family.dummy_batch(1))
  reference = float(jax.jit(lambda p, b: family.loss(p, b, train=False)[0])(
      nn.unbox(variables)["params"], batch))
  for rules in [r for n, r in CASES if n == name]:
    loss, params, _ = _sharded_loss(family, variables, batch, mesh, rules)
    np.testing.assert_allclose(loss, reference, rtol=1e-5, err_msg=rules)
    # Parameters are really split: a weight's shard is smaller than the weight under fsdp/tp.
    flat = summary.flat_params(params)
    kernel = next(v for k, v in flat.items() if k.endswith("mlp/fc1/kernel") or
                  k.endswith("ffw/fc1/kernel") or k.endswith("fc1/kernel"))
    shard = P.shard_shape(kernel)
    if rules == "dp":
      assert shard == kernel.shape
    else:
      assert np.prod(shard) * 2 == np.prod(kernel.shape) or \
          np.prod(shard) * 4 == np.prod(kernel.shape), (rules, shard, kernel.shape)


def _golden_table():
  mesh = P.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  table = {}
  for name in FAMILIES:
    family = models.build(config_lib.load_config(f"configs/{name}.py:micro").model)
    abstract = jax.eval_shape(family.init, jax.random.key(0), family.dummy_batch(1))
    for rules in PRESETS:
      shardings = P.abstract_shardings(abstract, mesh, rules)["params"]
      for path, sharding in summary.flat_params(shardings).items():
        table[f"{name}/{rules}/{path}"] = [list(a) if isinstance(a, tuple) else a
                                           for a in P.mesh_axes_of(sharding)]
  return table


def test_golden_sharding():
  table = _golden_table()
  if os.environ.get("MMJAX_UPDATE_GOLDEN"):
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
  golden = json.loads(GOLDEN.read_text())
  assert sorted(table) == sorted(golden), "parameter set changed"
  changed = {k: (golden[k], table[k]) for k in table if table[k] != golden[k]}
  assert not changed, f"shardings changed (golden, now): {changed}"
  # Spot checks that pin the meaning of the presets.
  q = "clip/{}/image/blocks/attn/query/kernel"  # [layers, embed, heads, kv]
  assert golden[q.format("dp")] == [None, None, None, None]
  assert golden[q.format("fsdp")] == [None, "fsdp", None, None]
  assert golden[q.format("tp")] == [None, None, "tensor", None]
  assert golden[q.format("fsdp_tp")] == [None, "fsdp", "tensor", None]
