"""Model switches of the Flamingo Table 3 ablations (experiments/flamingo_ablations.py):
ungated cross-attention (`xattn.gating='none'`), the plain-Transformer connector, and a plain LM
run initialising the Flamingo LM (the recipe's frozen / unfrozen pretrained LM rows)."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mmjax import config_lib
from mmjax.models import family, xattn
from mmjax.models.connectors import transformer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGE = 512  # the micro LM's <image> id


def _family(*overrides):
  config = config_lib.load_config(os.path.join(ROOT, "configs/flamingo.py:micro"),
                                  [f"model.{o}" for o in overrides])
  return family.build(config.model)


def _batch():
  rng = np.random.default_rng(0)
  tokens = rng.integers(1, 512, size=(2, 8)).astype(np.int32)
  tokens[:, 1] = IMAGE
  return {"media": rng.uniform(-1, 1, (2, 1, 1, 16, 16, 3)).astype(np.float32),
          "media_mask": np.ones((2, 1), bool), "tokens": tokens,
          "media_locations": tokens == IMAGE, "loss_mask": np.ones((2, 8), np.float32)}


def _names(tree):
  return {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)}


def test_ungated_xattn_has_no_gates_and_equals_fully_open_tanh_gates():
  batch = _batch()
  gated, ungated = _family(), _family("xattn.gating=none")
  # Jitted: one compilation each instead of thousands of eagerly dispatched ops.
  p_gated = nn.unbox(jax.jit(gated.init)(jax.random.key(0), batch)["params"])
  p_ungated = nn.unbox(jax.jit(ungated.init)(jax.random.key(0), batch)["params"])
  gates = {n for n in _names(p_gated) if "_gate" in n}
  assert gates and _names(p_ungated) == _names(p_gated) - gates
  # tanh(20) == 1.0 in float32, so gates at 20 make the gated model the ungated one.
  opened = jax.tree_util.tree_map_with_path(
      lambda p, x: jnp.full_like(x, 20.0) if "_gate" in jax.tree_util.keystr(p) else x, p_gated)
  logits = lambda fam, p: jax.jit(fam.predict_logits)(p, batch)  # noqa: E731
  np.testing.assert_allclose(logits(ungated, p_ungated), logits(gated, opened), atol=1e-6)
  # At init the gated model is the bare LM; the ungated one is not.
  assert not np.allclose(logits(ungated, p_ungated), logits(gated, p_gated), atol=1e-4)


def test_gate_init_sets_every_gate_and_zero_is_the_bare_lm():
  batch = _batch()
  fam = _family("xattn.gate_init=0.25")
  params = nn.unbox(jax.jit(fam.init)(jax.random.key(0), batch)["params"])
  gates = [x for p, x in jax.tree_util.tree_leaves_with_path(params)
           if "_gate" in jax.tree_util.keystr(p)]
  assert gates and all(np.all(np.asarray(g) == 0.25) for g in gates)
  values = xattn.gate_values(params)
  assert len(values["attn_gate"]) == len(values["ff_gate"]) == sum(g.size for g in gates) // 2
  np.testing.assert_allclose(values["attn_gate"], np.tanh(0.25), rtol=1e-6)
  # The same weights with the gates zeroed are the default init, the bare LM.
  zeroed = jax.tree_util.tree_map_with_path(
      lambda p, x: jnp.zeros_like(x) if "_gate" in jax.tree_util.keystr(p) else x, params)
  default = _family()
  assert jax.tree_util.tree_all(jax.tree_util.tree_map(
      np.array_equal, zeroed, nn.unbox(jax.jit(default.init)(jax.random.key(0), batch)["params"])))
  logits = lambda p: jax.jit(fam.predict_logits)(p, batch)  # noqa: E731
  assert not np.allclose(logits(params), logits(zeroed), atol=1e-4)


def test_gate_values_reads_tanh_of_every_gate():
  params = {"lm": {"xattn_0": {"attn_gate": np.array([0.5]), "ff_gate": np.array([-1.0]),
                               "attn": {"query": {"kernel": np.ones((2, 2))}}},
                   "xattn_1": {"attn_gate": np.array([0.0]), "ff_gate": np.array([2.0])}}}
  got = xattn.gate_values(jax.tree_util.tree_map(np.asarray, params))
  np.testing.assert_allclose(got["attn_gate"], np.tanh([0.5, 0.0]))
  np.testing.assert_allclose(got["ff_gate"], np.tanh([-1.0, 2.0]))
  # Stacked (scanned) blocks: one gate per layer.
  assert len(xattn.gate_values({"blocks": {"attn_gate": np.zeros((3, 1)),
                                  "ff_gate": np.zeros((3, 1))}})["attn_gate"]) == 3


def test_bad_gating_names_the_field():
  with pytest.raises(ValueError, match="xattn.gating"):
    _family("xattn.gating=sigmoid")


def _connector(**kw):
  module = transformer.TransformerConnector(width=8, depth=2, num_heads=2, mlp_dim=16,
                                            max_frames=2, **kw)
  x = jax.random.normal(jax.random.key(1), (2, 1, 2, 4, 6))  # [B, M, T=2, N=4, Dv=6]
  return module, x, module.init(jax.random.key(0), x)


def test_transformer_connector_parameter_count_by_hand():
  _, _, variables = _connector()
  d, dv, mlp, depth = 8, 6, 16, 2
  layer = 4 * (d * d + d) + (d * mlp + mlp) + (mlp * d + d) + 2 * 2 * d
  expected = (dv * d + d) + 2 * d + depth * layer + 2 * d
  assert sum(x.size for x in jax.tree.leaves(nn.unbox(variables))) == expected


def test_transformer_connector_is_patch_equivariant_and_time_aware():
  module, x, variables = _connector()
  out = module.apply(variables, x)
  assert out.shape == (2, 1, 8, 8)
  # No positions within a frame: permuting the patches permutes the output tokens.
  perm = np.array([2, 0, 3, 1])
  out_perm = module.apply(variables, x[:, :, :, perm])
  expected = out.reshape(2, 1, 2, 4, 8)[:, :, :, perm].reshape(2, 1, 8, 8)
  np.testing.assert_allclose(out_perm, expected, atol=1e-5)
  # Time embeddings tell the frames apart: swapping them is not a mere re-ordering ...
  swapped = module.apply(variables, x[:, :, ::-1])
  reordered = out.reshape(2, 1, 2, 4, 8)[:, :, ::-1].reshape(2, 1, 8, 8)
  assert not np.allclose(swapped, reordered, atol=1e-4)
  # ... and without them it is.
  plain, _, v0 = _connector(**{})
  v0 = jax.tree_util.tree_map_with_path(
      lambda p, a: jnp.zeros_like(a) if "time_embed" in jax.tree_util.keystr(p) else a, v0)
  np.testing.assert_allclose(
      plain.apply(v0, x[:, :, ::-1]),
      plain.apply(v0, x).reshape(2, 1, 2, 4, 8)[:, :, ::-1].reshape(2, 1, 8, 8), atol=1e-5)
  with pytest.raises(ValueError, match="transformer.max_frames=2"):
    module.apply(variables, jnp.ones((1, 1, 3, 4, 6)))


@pytest.mark.parametrize("xattn", ["xattn.cross_attn_every_n=2", "xattn.cross_attn_layers=(1,)"])
def test_a_plain_lm_run_initialises_the_flamingo_lm(xattn):
  """The recipe's stage 2 -> 3: init_from a text-only LM regroups its layers around the gated
  blocks; with the gates at 0 the Flamingo LM then computes exactly the source LM's logits."""
  flamingo = _family(xattn)
  lm_fields = flamingo.config.lm.to_dict()
  lm_fields.update(family="lm", num_new_tokens=0)  # pre-trained without Flamingo's tokens
  lm = family.build(ml_collections.ConfigDict(lm_fields))
  batch = _batch()
  batch["tokens"] = np.minimum(batch["tokens"], 511)  # plain-vocabulary text only
  batch["media_locations"] = np.zeros_like(batch["media_locations"])
  lm_params = nn.unbox(lm.init(jax.random.key(3), {"tokens": batch["tokens"]})["params"])
  target = nn.unbox(flamingo.init(jax.random.key(0), batch)["params"])
  adapted = flamingo.adapt_init_source("lm", lm_params, target["lm"])
  assert jax.tree.map(np.shape, adapted) == jax.tree.map(np.shape, target["lm"])
  params = {**target, "lm": adapted}
  np.testing.assert_allclose(flamingo.predict_logits(params, batch)[..., :512],
                             lm.predict_logits(lm_params, {"tokens": batch["tokens"]}),
                             atol=1e-5)
  # Sub-trees already in our layout, and other destinations, pass through unchanged.
  assert flamingo.adapt_init_source("lm", target["lm"], target["lm"]) is target["lm"]
  assert flamingo.adapt_init_source("vision", lm_params, target["vision"]) is lm_params
