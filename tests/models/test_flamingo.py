"""Flamingo: gates at 0 are the bare LM, media masking, KV cache with media, freezing, sizes."""

import os
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import config_lib
from mmjax import summary
from mmjax.models import family
from mmjax.models import flamingo
from mmjax.models import lm
from mmjax.models import xattn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGE, EOC = 512, 513  # the micro preset's new tokens: vocab_size + 0, + 1


def _family(*overrides):
  config = config_lib.load_config(os.path.join(ROOT, "configs/flamingo.py:micro"), overrides)
  return family.build(config.model)


def _batch(seed=0, length=12):
  """Two rows with two images each: row 0 at positions 2 and 7, row 1 at 0 and 5."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, 256, size=(2, length))
  locations = np.zeros((2, length), bool)
  locations[0, [2, 7]] = True
  locations[1, [0, 5]] = True
  tokens[locations] = IMAGE
  return {"media": jnp.asarray(rng.uniform(-1, 1, (2, 2, 1, 16, 16, 3)), jnp.float32),
          "media_mask": jnp.ones((2, 2), bool),
          "tokens": jnp.asarray(tokens, jnp.int32),
          "media_locations": jnp.asarray(locations),
          "loss_mask": jnp.ones((2, length), jnp.float32)}


def _init(fam, batch, seed=0):
  """Random parameters of the family's shapes, gates at 0 as at init.

  Filled with numpy: compiling the real (jitted) init of the tiny Flamingo takes ~8 s on two
  CPU cores, and these tests are about the forward semantics. The real init is tested in
  test_gates_at_zero_give_the_bare_lm_exactly.
  """
  rng = np.random.default_rng(seed)
  def fill(path, leaf):
    name = path[-1].key
    if name in ("attn_gate", "ff_gate"):
      return jnp.zeros(leaf.shape, leaf.dtype)
    base = 1.0 if name == "scale" else 0.0
    return jnp.asarray(base + 0.2 * rng.standard_normal(leaf.shape), leaf.dtype)
  shapes = nn.unbox(jax.eval_shape(fam.init, jax.random.key(seed), batch)["params"])
  return jax.tree_util.tree_map_with_path(fill, shapes)


def _set_gates(params, value):
  """Every attn_gate / ff_gate set to `value` (a float, or a key for random values)."""
  def set_leaf(path, x):
    if path[-1].key not in ("attn_gate", "ff_gate"):
      return x
    if isinstance(value, float):
      return jnp.full_like(x, value)
    return jax.random.uniform(jax.random.fold_in(value, hash(str(path)) % 2**31), x.shape,
                              minval=0.3, maxval=1.0)
  return jax.tree_util.tree_map_with_path(set_leaf, params)


@pytest.mark.parametrize("overrides", [(), ("model.lm.scan=False",),
                                       ("model.xattn.cross_attn_layers=(0, 2)",)])
def test_gates_at_zero_give_the_bare_lm_exactly(overrides):
  fam = _family(*overrides)
  batch = _batch()
  if overrides:
    params = _init(fam, batch)
  else:  # The real init: its gates must be 0.
    params = nn.unbox(jax.jit(fam.init)(jax.random.key(0), batch)["params"])
  bare = lm.DecoderLM(fam.lm_config)
  bare_params = _init(family.get("lm")(_lm_model_config(fam)), {"tokens": batch["tokens"]}, 7)
  params["lm"] = flamingo.lm_params_to_flamingo(bare_params, fam.lm_config, fam.xattn_config,
                                                params["lm"])
  predict = jax.jit(fam.predict_logits)
  got = predict(params, batch)
  want = jax.jit(bare.apply)({"params": bare_params}, batch["tokens"])
  if fam.lm_config.scan:
    # XLA compiles a 3-layer scan and [a scanned group of 2 + a remainder] into differently
    # fused loops (~1e-7 relative); op by op every LM operation sees bit-identical inputs.
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-6)
    if not overrides:
      with jax.disable_jit():
        np.testing.assert_array_equal(fam.predict_logits(params, batch),
                                      bare.apply({"params": bare_params}, batch["tokens"]))
  else:
    np.testing.assert_array_equal(got, want)
  # The check can fail: open the gates and the logits move.
  opened = predict(_set_gates(params, 1.0), batch)
  assert np.abs(opened - want).max() > 1e-3


def _lm_model_config(fam):
  """A family-'lm' model config with the Flamingo LM's fields."""
  config = fam.config.lm.copy_and_resolve_references()
  with config.unlocked():
    config.family = "lm"
  return config


def _block_outputs(only_immediate, media_list):
  """GatedCrossAttentionBlock (gates at 1) on 8 tokens with <image> at positions 2 and 5."""
  cfg = xattn.XAttnConfig(num_heads=2, head_dim=8, ff_mult=2,
                          only_attend_immediate_media=only_immediate)
  block = xattn.GatedCrossAttentionBlock(cfg)
  x = jax.random.normal(jax.random.key(0), (1, 8, 16))
  locations = jnp.zeros((1, 8), bool).at[0, jnp.array([2, 5])].set(True)
  times = xattn.text_time(locations)
  mask = jnp.ones((1, 2), bool)
  params = nn.unbox(block.init(jax.random.key(1), x, times, mask, media_list[0]))
  params = _set_gates(params, 1.0)
  apply = jax.jit(lambda m: block.apply(params, x, times, mask, m)[0][0])
  return [np.asarray(apply(m)) for m in media_list]


def _media(seed):
  return jax.random.normal(jax.random.key(seed), (1, 2, 3, 12))  # [B, M, latents, Dv]


def test_immediate_media_masking():
  base = _media(0)
  image1_changed = base.at[:, 0].set(_media(1)[:, 0])
  image2_changed = base.at[:, 1].set(_media(1)[:, 1])
  out, out1, out2 = _block_outputs(True, [base, image1_changed, image2_changed])
  changed = lambda a, b: np.abs(a - b).max(-1) > 1e-6
  # Tokens 0, 1 precede the first image: nothing changes them.
  assert not changed(out, out1)[:2].any() and not changed(out, out2)[:2].any()
  # Image 1 reaches exactly its own <image> token (2) and the tokens up to image 2 (3, 4).
  np.testing.assert_array_equal(changed(out, out1), [0, 0, 1, 1, 1, 0, 0, 0])
  # Image 2 reaches its own <image> token (5) and the tokens after it.
  np.testing.assert_array_equal(changed(out, out2), [0, 0, 0, 0, 0, 1, 1, 1])


def test_all_previous_media_masking():
  base = _media(0)
  image1_changed = base.at[:, 0].set(_media(1)[:, 0])
  out, out1 = _block_outputs(False, [base, image1_changed])
  changed = np.abs(out - out1).max(-1) > 1e-6
  # Every token from image 1 on sees it; tokens before the first image still see nothing.
  np.testing.assert_array_equal(changed, [0, 0, 1, 1, 1, 1, 1, 1])


def test_media_masking_end_to_end():
  """Through the whole model (gates at 1): only tokens from an image on depend on it."""
  fam = _family()
  batch = _batch()
  params = _set_gates(_init(fam, batch), 1.0)
  predict = jax.jit(fam.predict_logits)
  out = predict(params, batch)
  first_changed = dict(batch, media=batch["media"].at[:, 0].multiply(-1.0))
  second_changed = dict(batch, media=batch["media"].at[:, 1].multiply(-1.0))
  moved1 = np.abs(predict(params, first_changed) - out).max(-1) > 1e-6
  moved2 = np.abs(predict(params, second_changed) - out).max(-1) > 1e-6
  # Row 0: images at 2 and 7. Self-attention carries image 1 forward, so every position from
  # its <image> token on moves; image 2 moves exactly positions 7...
  np.testing.assert_array_equal(moved1[0], np.arange(12) >= 2)
  np.testing.assert_array_equal(moved2[0], np.arange(12) >= 7)
  # Row 1: the first <image> token is position 0, and it sees its own image.
  assert moved1[1, 0] and not moved2[1, :5].any()


@pytest.mark.parametrize("overrides", [(), ("model.lm.scan=False",),
                                       ("model.xattn.only_attend_immediate_media=False",)])
def test_kv_cache_with_media_matches_full_sequence(overrides):
  fam = _family(*overrides)
  batch = _batch(seed=3)
  params = _set_gates(_init(fam, batch), jax.random.key(5))
  full = jax.jit(fam.predict_logits)(params, batch)
  # Prefill the first 4 tokens (row 0: one image so far; row 1: one), decode the rest, passing
  # each step's media_locations so the second image's <image> token advances text_time.
  prompt = {k: (v[:, :4] if k in ("tokens", "media_locations") else v) for k, v in batch.items()}
  logits, cache = jax.jit(fam.prefill)(params, prompt, fam.init_cache(2, 16))
  steps = [logits]
  decode = jax.jit(fam.decode_step)
  for t in range(4, 12):
    logits, cache = decode(params, batch["tokens"][:, t:t + 1], cache,
                           batch["media_locations"][:, t:t + 1])
    steps.append(logits)
  np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, atol=1e-5, rtol=0)
  np.testing.assert_array_equal(cache["text_time"], [2, 2])


def test_gradients_reach_resampler_gates_and_new_tokens_only():
  fam = _family()  # tiny: freeze_vision = freeze_lm = True
  batch = _batch()
  # Open the gates, or the resampler's gradient is zero (the gates multiply its output).
  params = _set_gates(_init(fam, batch), 0.5)
  grads = jax.jit(jax.grad(lambda p: fam.loss(p, batch, jax.random.key(0))[0]))(params)
  norms = {k: float(sum(jnp.abs(g).sum() for g in v))
           for k, v in _grouped(fam, grads).items()}
  assert norms["vision"] == 0.0 and norms["lm"] == 0.0
  assert norms["resampler"] > 0 and norms["gated_xattn"] > 0
  assert norms["new_token_embeddings"] > 0
  for name in ("attn_gate", "ff_gate"):
    gate = grads["lm"]["groups"]["gated"][name]
    assert jnp.all(gate != 0), name
  # Unfrozen, the towers get gradients too.
  fam_open = _family("model.freeze_vision=False", "model.freeze_lm=False")
  grads = jax.jit(jax.grad(lambda p: fam_open.loss(p, batch)[0]))(params)
  norms = {k: float(sum(jnp.abs(g).sum() for g in v))
           for k, v in _grouped(fam_open, grads).items()}
  assert norms["vision"] > 0 and norms["lm"] > 0


def _grouped(fam, params):
  """{component: [leaves]} via param_groups; checks the groups partition the parameters."""
  flat = {"/".join(str(k.key) for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
  out = {}
  seen = set()
  for group, prefixes in fam.param_groups().items():
    names = [k for k in flat if any(k == p or k.startswith(p + "/") for p in prefixes)]
    assert not seen & set(names), f"{group} overlaps another component"
    seen |= set(names)
    out[group] = [flat[k] for k in names]
  assert seen == set(flat), f"parameters in no component: {set(flat) - seen}"
  return out


def test_trainable_mask_follows_freeze_flags():
  fam = _family()
  params = jax.eval_shape(fam.init, jax.random.key(0), fam.dummy_batch(1))["params"]
  mask = fam.trainable_mask(nn.unbox(params))
  assert not any(jax.tree.leaves(mask["vision"]))
  assert all(jax.tree.leaves(mask["resampler"]))
  assert all(jax.tree.leaves(mask["lm"]["groups"]["gated"]))
  assert mask["lm"]["new_embed"] and not mask["lm"]["embed"]
  assert not any(jax.tree.leaves(mask["lm"]["groups"]["block_0"]))
  assert not fam.is_trainable("lm/groups") and fam.is_trainable("lm/groups/gated")


def _components(spec):
  table = summary.summarize(os.path.join(ROOT, spec))
  rows = dict(re.findall(r"^(\w+)\s+([\d,]+)\s+(?:yes|no)$", table, re.M))
  return {k: int(v.replace(",", "")) for k, v in rows.items()}, table


@pytest.mark.parametrize("preset,gated_billions", [("3b", 1.2), ("9b", 1.6)])
def test_paper_sizes(preset, gated_billions):
  counts, table = _components(f"configs/flamingo.py:{preset}")
  # Table 5: a 194M resampler (within 5%) and the gated blocks as the paper rounds them.
  assert abs(counts["resampler"] / 194e6 - 1) < 0.05, counts
  assert round(counts["gated_xattn"] / 1e9, 1) == gated_billions, counts
  assert re.search(r"^gated_xattn\s+[\d,]+\s+yes$", table, re.M)
  assert re.search(r"^vision\s+[\d,]+\s+no$", table, re.M)
  assert re.search(r"^lm\s+[\d,]+\s+no$", table, re.M)
  assert sum(counts[k] for k in ("vision", "resampler", "gated_xattn", "lm",
                                 "new_token_embeddings")) == \
      int(table.splitlines()[-1].split()[-1])
