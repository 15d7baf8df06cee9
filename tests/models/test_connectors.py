"""The connector zoo (mmjax/models/connectors) and decoder-only fusion (mmjax/models/splice.py):
shapes per connector, parity with the reference formulas (LLaVA MLP, torch adaptive pooling,
MAE sin-cos), splicing positions and loss masks by hand, decoder-only == bare LM where the image
cannot matter, KV-cache greedy == full-forward argmax, frozen towers, logical axes and sharding."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from mmjax import config_lib, generate, losses
from mmjax import parallel as P
from mmjax.models import connectors, family, lm as lm_lib, splice
from mmjax.models.connectors import avgpool, mlp, qwen_xattn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGE = 512  # the micro LM's <image> id (vocab_size + 0)
KINDS = ["resampler", "mlp", "avgpool", "qwen_xattn", "qformer", "transformer"]


def _family(*overrides):
  config = config_lib.load_config(os.path.join(ROOT, "configs/flamingo.py:micro"),
                                  [f"model.{o}" for o in overrides])
  return family.build(config.model)


def _random_params(fam, batch, seed=0, scale=0.3):
  """Random parameters (norm scales around 1, gates open) so every path matters."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name in ("attn_gate", "ff_gate"):
      return jnp.ones(leaf.shape, leaf.dtype)
    base = 1.0 if name == "scale" else 0.0
    return jnp.asarray(base + scale * rng.standard_normal(leaf.shape), leaf.dtype)

  shapes = nn.unbox(jax.eval_shape(fam.init, jax.random.key(seed), batch)["params"])
  return jax.tree_util.tree_map_with_path(fill, shapes)


def _batch(num_media=2, length=10, seed=0):
  """Two rows: row 0 has images at 1 and 5, row 1 one image at 2 (its second slot unused)."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, 512, size=(2, length)).astype(np.int32)
  tokens[0, [1, 5]] = IMAGE
  tokens[1, 2] = IMAGE
  media_mask = np.array([[True, True], [True, False]])[:, :num_media]
  return {"media": rng.uniform(-1, 1, (2, num_media, 1, 16, 16, 3)).astype(np.float32),
          "media_mask": media_mask, "tokens": tokens, "media_locations": tokens == IMAGE,
          "loss_mask": np.ones((2, length), np.float32)}


# ---- Shapes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_connector_output_shapes_and_token_counts(kind):
  fam = _family(f"connector={kind}", "fusion=decoder_only")
  batch = _batch()
  params = _random_params(fam, batch)
  visual = jax.jit(lambda p, m: fam.module.apply({"params": p}, m,
                                                 method=fam.module.encode_media))(
                                                     params, batch["media"])
  n = fam.tokens_per_media(batch["media"].shape)
  assert visual.shape == (2, 2, n, fam.lm_config.width)
  assert n == {"resampler": 4, "mlp": 4, "avgpool": 4, "qwen_xattn": 16, "qformer": 8,
               "transformer": 4}[kind]
  assert np.isfinite(np.asarray(visual)).all()


def test_grid_connectors_on_video_frames():
  x = jnp.ones((2, 3, 2, 16, 24))  # [B, M, T=2 frames, 4x4 patches, Dv]
  for module, shape in [(mlp.MlpProjector(width=8), (2, 3, 32, 8)),
                        (avgpool.AvgPoolProjector(num_tokens=4, width=8), (2, 3, 8, 8)),
                        (qwen_xattn.QwenResampler(width=8, num_heads=2, num_queries=9),
                         (2, 3, 9, 8))]:
    out = jax.eval_shape(module.init_with_output, jax.random.key(0), x)[0]
    assert out.shape == shape, type(module).__name__


def test_bad_connector_config_names_the_field():
  with pytest.raises(ValueError, match="model.connector"):
    _family("connector=linear")
  with pytest.raises(ValueError, match="model.fusion"):
    _family("fusion=prefix")
  with pytest.raises(ValueError, match=r"model.mlp.width=16 must equal model.lm.width=32"):
    _family("connector=mlp", "fusion=decoder_only", "mlp.width=16")
  with pytest.raises(ValueError, match="not a square"):
    avgpool.AvgPoolProjector(num_tokens=3).init(jax.random.key(0), jnp.ones((1, 1, 1, 16, 4)))


# ---- Parity with the reference formulas --------------------------------------------------------

def test_mlp_projector_matches_llava_torch():
  module = mlp.MlpProjector(width=6)
  x = np.random.default_rng(0).standard_normal((1, 1, 1, 5, 4)).astype(np.float32)
  params = _random_params_module(module, x)
  ours = np.asarray(module.apply({"params": params}, x))[0, 0]
  ref = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.GELU(), torch.nn.Linear(6, 6))
  with torch.no_grad():
    for i, name in ((0, "fc1"), (2, "fc2")):
      ref[i].weight.copy_(torch.tensor(np.asarray(params[name]["kernel"]).T))
      ref[i].bias.copy_(torch.tensor(np.asarray(params[name]["bias"])))
    expected = ref(torch.tensor(x[0, 0, 0])).numpy()
  np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)


def _random_params_module(module, *inputs):
  rng = np.random.default_rng(1)
  shapes = nn.unbox(jax.eval_shape(module.init, jax.random.key(0), *inputs)["params"])
  return jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape), s.dtype), shapes)


@pytest.mark.parametrize("grid,size", [(4, 2), (7, 3), (5, 5)])
def test_avgpool_matches_torch_adaptive_avg_pool(grid, size):
  x = np.random.default_rng(0).standard_normal((grid, grid)).astype(np.float32)
  w = avgpool.pooling_matrix(grid, size)
  expected = torch.nn.functional.adaptive_avg_pool2d(torch.tensor(x)[None, None], size)[0, 0]
  np.testing.assert_allclose(w @ x @ w.T, expected.numpy(), rtol=1e-6, atol=1e-6)


def test_qwen_sincos_positions_by_hand():
  d, g = 8, 3
  pos = qwen_xattn.sincos_2d(d, g)
  assert pos.shape == (g * g, d)
  omega = 1.0 / 10000 ** (np.arange(2) / 2.0)
  for row in range(g):
    for col in range(g):
      expected = np.concatenate([np.sin(col * omega), np.cos(col * omega),
                                 np.sin(row * omega), np.cos(row * omega)])
      np.testing.assert_allclose(pos[row * g + col], expected, rtol=1e-6, atol=1e-7)
  # Keys of a 6x6 grid sit at half steps of the 3x3 query grid.
  np.testing.assert_allclose(qwen_xattn.sincos_2d(d, 6, 0.5)[2 * 6 + 2], pos[1 * 3 + 1],
                             atol=1e-7)


def test_qwen_adapter_is_position_aware():
  """Positions go into queries and keys: swapping two patches changes the output (it would not
  for plain attention pooling, which is permutation invariant over keys)."""
  module = qwen_xattn.QwenResampler(width=8, num_heads=2, num_queries=4)
  x = np.random.default_rng(0).standard_normal((1, 1, 1, 4, 8)).astype(np.float32)
  params = _random_params_module(module, x)
  swapped = x[:, :, :, [1, 0, 2, 3]]
  a, b = jax.jit(jax.vmap(lambda v: module.apply({"params": params}, v)))(np.stack([x, swapped]))
  assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3


# ---- Decoder-only splicing ---------------------------------------------------------------------

def test_splice_layout_by_hand():
  batch = _batch()
  lay = jax.jit(splice.layout, static_argnums=2)(batch["media_locations"], batch["media_mask"], 3)
  assert lay.length == 10 + 2 * 3
  # Row 0: <image> at 1 and 5 -> 3 visual tokens after each; row 1: one image at 2.
  np.testing.assert_array_equal(lay.text_pos[0], [0, 1, 5, 6, 7, 8, 12, 13, 14, 15])
  np.testing.assert_array_equal(lay.read_pos[0], [0, 4, 5, 6, 7, 11, 12, 13, 14, 15])
  np.testing.assert_array_equal(lay.text_pos[1], [0, 1, 2, 6, 7, 8, 9, 10, 11, 12])
  np.testing.assert_array_equal(lay.visual_positions()[0], [[2, 3, 4], [9, 10, 11]])
  np.testing.assert_array_equal(lay.visual_positions()[1, 0], [3, 4, 5])
  assert int(lay.visual_start[1, 1]) == lay.length  # the unused slot writes nowhere
  is_visual = np.asarray(lay.is_visual())
  np.testing.assert_array_equal(np.flatnonzero(is_visual[0]), [2, 3, 4, 9, 10, 11])
  np.testing.assert_array_equal(np.flatnonzero(is_visual[1]), [3, 4, 5])

  # The spliced embeddings: text rows at text_pos, media item m's tokens at its positions.
  x = jnp.arange(2 * 10, dtype=jnp.float32).reshape(2, 10, 1) + 1
  visual = -jnp.arange(1, 2 * 2 * 3 + 1, dtype=jnp.float32).reshape(2, 2, 3, 1)
  out = np.asarray(splice.splice(x, visual, lay))[..., 0]
  np.testing.assert_array_equal(out[0], [1, 2, -1, -2, -3, 3, 4, 5, 6, -4, -5, -6, 7, 8, 9, 10])
  np.testing.assert_array_equal(out[1], [11, 12, 13, -7, -8, -9, 14, 15, 16, 17, 18, 19, 20,
                                         0, 0, 0])
  # The loss mask on the expanded sequence is 0 on every visual position.
  mask = np.asarray(splice.expand_loss_mask(jnp.ones((2, 10)), lay))
  assert (mask[is_visual] == 0).all() and mask.sum() == 20
  np.testing.assert_array_equal(mask[1, 13:], 0)  # the tail of unused positions, too


@pytest.fixture(scope="module")
def decoder_only():
  fam = _family("connector=mlp", "fusion=decoder_only")
  batch = _batch()
  params = _random_params(fam, batch)
  return fam, params, batch


def test_decoder_only_loss_is_the_expanded_loss_without_visual_positions(decoder_only):
  fam, params, batch = decoder_only
  loss, logits, expanded = jax.jit(lambda p, b: (
      fam.loss(p, b, train=False)[0], fam.predict_logits(p, b),
      fam.module.apply({"params": p}, **fam.module_inputs(b), expanded=True)))(params, batch)
  lay = splice.layout(jnp.asarray(batch["media_locations"]), jnp.asarray(batch["media_mask"]),
                      fam.tokens_per_media(batch["media"].shape))
  assert expanded.shape[1] == lay.length == 10 + 2 * 4
  tokens = splice.expand_text(jnp.asarray(batch["tokens"]), lay)
  mask = splice.expand_loss_mask(jnp.asarray(batch["loss_mask"]), lay)
  ref, metrics = losses.next_token_loss(expanded, tokens, mask)
  np.testing.assert_allclose(float(loss), float(ref), rtol=1e-6)
  assert float(metrics["num_tokens"]) == 2 * 9
  # The gathered logits are the expanded ones at read_pos.
  np.testing.assert_allclose(np.asarray(logits), np.asarray(splice.gather(expanded, lay)))


def test_decoder_only_equals_the_bare_lm_where_the_image_cannot_matter(decoder_only):
  fam, params, batch = decoder_only
  bare = lm_lib.DecoderLM(fam.lm_config)
  ref = np.asarray(jax.jit(bare.apply)({"params": params["lm"]}, batch["tokens"]))
  logits_fn = jax.jit(fam.predict_logits)
  # No <image> token: nothing is spliced, every text position equals the bare LM.
  no_image = dict(batch, media_locations=np.zeros_like(batch["media_locations"]))
  np.testing.assert_allclose(np.asarray(logits_fn(params, no_image)), ref, rtol=1e-5, atol=1e-5)
  # With images: positions before the first <image> are unchanged (causal), later ones differ.
  logits = np.asarray(logits_fn(params, batch))
  np.testing.assert_allclose(logits[0, :1], ref[0, :1], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(logits[1, :2], ref[1, :2], rtol=1e-5, atol=1e-5)
  assert np.abs(logits[0, 1:] - ref[0, 1:]).max() > 1e-3
  # The visual tokens really carry the image: other pixels, other logits after the <image>.
  other = np.asarray(logits_fn(params, dict(batch, media=-batch["media"])))
  np.testing.assert_allclose(other[0, :1], logits[0, :1], rtol=1e-6, atol=1e-6)
  assert np.abs(other[0, 1:] - logits[0, 1:]).max() > 1e-3


def test_decoder_only_kv_cache_greedy_equals_full_forward_argmax():
  fam = _family("connector=qwen_xattn", "fusion=decoder_only")
  batch = _batch(length=7, seed=3)
  lengths = np.array([7, 4], np.int32)
  tokens = batch["tokens"].copy()
  tokens[np.arange(7)[None] >= lengths[:, None]] = 0
  prompt = {"media": batch["media"], "media_mask": batch["media_mask"], "tokens": tokens,
            "media_locations": tokens == IMAGE}
  params = _random_params(fam, batch)
  steps = 5
  cached = generate.greedy(fam, params, prompt, steps, lengths=lengths)
  logits_fn = jax.jit(fam.predict_logits)
  full = np.zeros((2, 7 + steps), np.int32)
  full[:, :7] = tokens
  expected = np.zeros((2, steps), np.int32)
  for k in range(steps):
    logits = np.asarray(logits_fn(params, dict(prompt, tokens=full,
                                               media_locations=full == IMAGE)))
    for row, n in enumerate(lengths):
      expected[row, k] = int(np.argmax(logits[row, n - 1 + k]))
      full[row, n + k] = expected[row, k]
  np.testing.assert_array_equal(cached, expected)
  assert (cached[0] != cached[1]).any()


def test_frozen_towers_get_no_gradient_decoder_only(decoder_only):
  fam, params, batch = decoder_only
  frozen = _family("connector=mlp", "fusion=decoder_only", "freeze_lm=True")
  grads = jax.jit(jax.grad(lambda p: frozen.loss(p, batch)[0]))(params)
  norm = lambda tree: float(sum(jnp.abs(g).sum() for g in jax.tree.leaves(tree)))
  assert norm(grads["vision"]) == 0.0
  assert norm({k: v for k, v in grads["lm"].items() if k != "new_embed"}) == 0.0
  assert norm(grads["connector"]) > 0 and norm(grads["lm"]["new_embed"]) > 0
  groups = frozen.param_groups()
  assert set(groups) == {"vision", "connector", "gated_xattn", "lm", "new_token_embeddings"}
  assert groups["gated_xattn"] == [] and "lm/blocks" in groups["lm"]
  assert frozen.is_trainable("connector/fc1/kernel") and not frozen.is_trainable("lm/blocks")


# ---- Logical axes and sharding -----------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS[1:])
def test_every_connector_parameter_has_logical_axes(kind):
  fam = _family(f"connector={kind}")
  boxed = jax.eval_shape(fam.init, jax.random.key(0), fam.dummy_batch(1))["params"]
  leaves = jax.tree.leaves(boxed["connector"],
                           is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
  assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
  for leaf in leaves:
    assert len(leaf.names) == len(leaf.value.shape)
    assert all(n is None or n in P.LOGICAL_AXES for n in leaf.names), leaf.names


# Two cases keep the time down; the axes test above covers every connector's names.
@pytest.mark.parametrize("kind,fusion", [("mlp", "decoder_only"), ("qformer", "xattn")])
def test_sharded_loss_equals_single_device(kind, fusion):
  fam = _family(f"connector={kind}", f"fusion={fusion}")
  mesh = P.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  batch = {k: np.concatenate([v] * 4) for k, v in _batch().items()}  # 8 rows
  variables = jax.eval_shape(fam.init, jax.random.key(0), batch)
  params = _random_params(fam, batch)
  loss_fn = jax.jit(lambda p, b: fam.loss(p, b, train=False)[0])
  reference = float(loss_fn(params, batch))
  shardings = P.abstract_shardings(variables, mesh, "fsdp_tp")["params"]
  sharded = jax.device_put(params, shardings)
  with P.sharding_context(mesh, "fsdp_tp"):
    placed = {k: jax.device_put(v, P.data_sharding(mesh, v.ndim)) for k, v in batch.items()}
    loss = float(jax.jit(lambda p, b: fam.loss(p, b, train=False)[0])(sharded, placed))
  np.testing.assert_allclose(loss, reference, rtol=1e-5)
  # The connector's weights are really split under fsdp_tp.
  split = [k for k, s in jax.tree_util.tree_leaves_with_path(shardings["connector"])
           if any(a is not None for a in s.spec)]
  assert split, "no connector parameter is sharded"
