"""BLIP-2 Q-Former (mmjax/models/connectors/qformer.py): the three stage-1 attention masks
written out by hand, what each mask lets flow (checked on activations), the ITC loss by hand,
hard-negative mining, and gradients reaching every head."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmjax.models.connectors import qformer as qf

Q = 2  # queries
BERT = dict(num_queries=Q, width=16, depth=2, num_heads=2, mlp_dim=32, cross_attention_freq=2,
            vocab_size=50, max_length=8)


def test_masks_by_hand():
  text_mask = jnp.array([[1, 1, 0], [1, 1, 1]])  # row 0: last text token is padding
  # Rows / columns: q0 q1 t0 t1 t2 (t2 of row 0 is padding and is never a key).
  itc = np.array([[1, 1, 0, 0, 0],
                  [1, 1, 0, 0, 0],
                  [0, 0, 1, 1, 0],
                  [0, 0, 1, 1, 0],
                  [0, 0, 1, 1, 0]], bool)
  itm = np.array([[1, 1, 1, 1, 0]] * 5, bool)
  itg = np.array([[1, 1, 0, 0, 0],
                  [1, 1, 0, 0, 0],
                  [1, 1, 1, 0, 0],
                  [1, 1, 1, 1, 0],
                  [1, 1, 1, 1, 0]], bool)
  full_itc = itc.copy()
  full_itc[2:, 4] = True
  full_itg = itg.copy()
  full_itg[4, 4] = True
  expected = {"itc": (itc, full_itc), "itm": (itm, np.ones((5, 5), bool)),
              "itg": (itg, full_itg)}
  for mode, (padded, full) in expected.items():
    got = np.asarray(qf.MASKS[mode](Q, text_mask))
    assert got.shape == (2, 5, 5)
    np.testing.assert_array_equal(got[0], padded, err_msg=mode)
    np.testing.assert_array_equal(got[1], full, err_msg=mode)


@pytest.fixture(scope="module")
def stage1():
  module = qf.QFormerStage1(qformer=BERT, embed_dim=8)
  rng = np.random.default_rng(0)
  image = rng.standard_normal((4, 5, 12)).astype(np.float32)
  text = rng.integers(1, 50, size=(4, 6)).astype(np.int32)
  text_mask = np.ones((4, 6), np.int32)
  text_mask[1, 4:] = 0
  variables = jax.jit(lambda r: module.init(r, image, text, text_mask,
                                            method=qf.QFormerStage1.init_all))(jax.random.key(0))
  return module, nn.unbox(variables)["params"], image, text, text_mask


def test_what_each_mask_lets_through(stage1):
  module, params, image, text, text_mask = stage1
  other_text = (text + 7) % 50
  other_text[:, :3] = text[:, :3]  # differs from position 3 on
  other_image = -image

  @jax.jit
  def run(img, txt):
    return {mode: module.apply({"params": params}, img, txt, text_mask, mode)
            for mode in ("itc", "itm", "itg")}

  base, new_text, new_image = run(image, text), run(image, other_text), run(other_image, text)
  close = lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
  differ = lambda a, b: np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3
  # ITC: queries ignore the text, text ignores the image (and the queries).
  close(base["itc"][:, :Q], new_text["itc"][:, :Q])
  close(base["itc"][:, Q:], new_image["itc"][:, Q:])
  assert differ(base["itc"][:, :Q], new_image["itc"][:, :Q])
  # ITG: queries are exactly ITC's queries; text is causal and sees the image via the queries.
  close(base["itg"][:, :Q], base["itc"][:, :Q])
  close(base["itg"][:, Q:Q + 3], new_text["itg"][:, Q:Q + 3])
  assert differ(base["itg"][:, Q + 3:], new_text["itg"][:, Q + 3:])
  assert differ(base["itg"][:, Q:], new_image["itg"][:, Q:])
  # ITM: bidirectional, the queries see the text (all of it).
  assert differ(base["itm"][:, :Q], new_text["itm"][:, :Q])
  assert differ(base["itm"][:, Q:Q + 3], new_text["itm"][:, Q:Q + 3])


def test_itc_loss_by_hand():
  sim = np.array([[3.0, 1.0, 0.5], [0.2, 2.0, 0.1], [1.5, 0.3, 1.0]], np.float32)
  targets = 0.9 * np.eye(3) + 0.1 / 3
  logp = lambda s: s - np.log(np.exp(s).sum(1, keepdims=True))
  expected = (-(targets * logp(sim)).sum(1).mean() - (targets * logp(sim.T)).sum(1).mean()) / 2
  np.testing.assert_allclose(float(qf.itc_loss(jnp.asarray(sim), jnp.asarray(sim.T))), expected,
                             rtol=1e-5)
  # Similarity = the best query's cosine / temperature.
  feats = jnp.array([[[1.0, 0.0], [0.0, 1.0]], [[0.6, 0.8], [0.8, -0.6]]])  # [2 images, 2 q, 2]
  text = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  i2t, t2i = qf.itc_similarities(feats, text, 0.5)
  np.testing.assert_allclose(np.asarray(i2t), [[2.0, 2.0], [1.6, 1.6]], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(t2i), np.asarray(i2t).T)


def test_hard_negatives_never_pick_the_positive():
  sim = jnp.array([[5.0, 4.0, 1.0], [0.0, 5.0, 3.0], [2.0, 1.0, 5.0]])
  neg_text, neg_image = qf.hard_negatives(sim, sim.T, None)
  np.testing.assert_array_equal(neg_text, [1, 2, 0])  # hardest off-diagonal per row
  np.testing.assert_array_equal(neg_image, [2, 0, 1])  # per column of sim
  keys = jax.random.split(jax.random.key(0), 200)
  sampled_t, sampled_i = jax.vmap(lambda k: qf.hard_negatives(sim, sim.T, k))(keys)
  for sampled in (sampled_t, sampled_i):
    assert (np.asarray(sampled) != np.arange(3)[None]).all()
  # Sampling follows softmax(sim) off the diagonal: row 0 picks text 1 w.p. e^4/(e^4+e^1).
  np.testing.assert_allclose(np.mean(np.asarray(sampled_t)[:, 0] == 1),
                             np.exp(4) / (np.exp(4) + np.exp(1)), atol=0.05)


def test_stage1_losses_train_every_head(stage1):
  module, params, image, text, text_mask = stage1

  @jax.jit
  def grads(p):
    return jax.grad(lambda p: qf.stage1_losses(module, p, image, text, text_mask, bos_id=49,
                                               rng=jax.random.key(1)), has_aux=True)(p)

  g, metrics = grads(params)
  for name in ("loss_itc", "loss_itm", "loss_itg"):
    assert np.isfinite(float(metrics[name])) and float(metrics[name]) > 0, name
  # ITM has 1 positive per 2 negatives; ITG starts near log(vocab) with label smoothing.
  assert abs(float(metrics["loss_itg"]) - np.log(50)) < 1.5
  norm = lambda tree: float(sum(jnp.abs(x).sum() for x in jax.tree.leaves(tree)))
  for head in ("vision_proj", "text_proj", "itm_head", "lm_transform", "lm_bias", "temp",
               "ln_vision"):
    assert norm(g[head]) > 0, head
  q = g["qformer"]
  for name in ("query_tokens", "token_embed", "posemb"):
    assert norm(q[name]) > 0, name
  layer0 = q["groups"]["layer_0"]
  for name in ("attn", "cross", "mlp_query", "mlp"):
    assert norm(layer0[name]) > 0, name
  assert "cross" not in q["groups"]["layer_1"]  # cross-attention every other layer


def test_queries_only_forward_matches_transformers_blip2_qformer():
  """The connector path (queries, no text) against transformers' Blip2QFormerModel with the
  same random weights: BERT post-LN order, cross-attention in layers 0, 2, ..., query FFNs."""
  torch = pytest.importorskip("torch")
  from transformers import Blip2QFormerConfig, Blip2QFormerModel  # pylint: disable=import-outside-toplevel
  config = Blip2QFormerConfig(vocab_size=50, hidden_size=16, num_hidden_layers=4,
                              num_attention_heads=2, intermediate_size=32, hidden_act="gelu",
                              cross_attention_frequency=2, encoder_hidden_size=12,
                              layer_norm_eps=1e-12, max_position_embeddings=8,
                              use_qformer_text_input=True)
  torch.manual_seed(0)
  ref = Blip2QFormerModel(config).eval()
  with torch.no_grad():  # non-trivial norms
    for name, p in ref.named_parameters():
      if "LayerNorm" in name or "layernorm" in name:
        p.add_(0.1 * torch.randn_like(p))
  sd = {k: v.detach().numpy() for k, v in ref.state_dict().items()}
  heads, hd = 2, 8

  def dense(prefix, split_in=False, split_out=False):
    w, b = sd[prefix + ".weight"].T, sd[prefix + ".bias"]
    if split_out:
      w, b = w.reshape(w.shape[0], heads, hd), b.reshape(heads, hd)
    if split_in:
      w = w.reshape(heads, hd, w.shape[-1])
    return {"kernel": w, "bias": b}

  norm = lambda prefix: {"scale": sd[prefix + ".weight"], "bias": sd[prefix + ".bias"]}

  def attn(prefix):
    return {**{n: dense(f"{prefix}.attention.{n}", split_out=True)
               for n in ("query", "key", "value")},
            "out": dense(f"{prefix}.output.dense", split_in=True)}

  groups = {}
  for i in range(4):
    p = f"encoder.layer.{i}"
    layer = {"attn": attn(f"{p}.attention"), "ln_attn": norm(f"{p}.attention.output.LayerNorm"),
             "mlp_query": {"fc1": dense(f"{p}.intermediate_query.dense"),
                           "fc2": dense(f"{p}.output_query.dense")},
             "ln_mlp_query": norm(f"{p}.output_query.LayerNorm"),
             "mlp": {"fc1": dense(f"{p}.intermediate.dense"), "fc2": dense(f"{p}.output.dense")},
             "ln_mlp": norm(f"{p}.output.LayerNorm")}
    if i % 2 == 0:
      layer["cross"] = attn(f"{p}.crossattention")
      layer["ln_cross"] = norm(f"{p}.crossattention.output.LayerNorm")
    groups.setdefault(f"groups_{i // 2}", {})[f"layer_{i % 2}"] = layer
  module = qf.QFormer(num_queries=3, width=16, depth=4, num_heads=2, mlp_dim=32,
                      cross_attention_freq=2, vocab_size=50, max_length=8, scan=False)
  rng = np.random.default_rng(0)
  queries = rng.standard_normal((3, 16)).astype(np.float32)
  image = rng.standard_normal((2, 5, 12)).astype(np.float32)
  shapes = nn.unbox(jax.eval_shape(module.init, jax.random.key(0), image))["params"]
  params = {"query_tokens": queries, "ln_embed": norm("layernorm"),
            "token_embed": np.zeros(shapes["token_embed"].shape, np.float32),
            "posemb": np.zeros(shapes["posemb"].shape, np.float32), **groups}
  assert jax.tree.structure(params) == jax.tree.structure(shapes)
  ours = np.asarray(jax.jit(module.apply)({"params": params}, image))
  with torch.no_grad():
    expected = ref(query_embeds=torch.tensor(queries)[None].expand(2, -1, -1),
                   encoder_hidden_states=torch.tensor(image)).last_hidden_state.numpy()
  np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-4)
