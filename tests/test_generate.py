"""Generation: greedy = argmax of repeated full forward passes (cached vs uncached), beam width 1 =
greedy, exhaustive beam = brute force, sampling filters, sharded = unsharded."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import config_lib
from mmjax import generate
from mmjax import parallel as P
from mmjax.models import family

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = 512  # the micro Flamingo's <image> id (vocab_size + 0)


def _random_params(fam, batch, seed=0, scale=0.3):
  """Random parameters with every gate open (so the media matter), filled with numpy."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name in ("attn_gate", "ff_gate"):
      return jnp.full(leaf.shape, 1.0, leaf.dtype)
    base = 1.0 if name == "scale" else 0.0
    return jnp.asarray(base + scale * rng.standard_normal(leaf.shape), leaf.dtype)

  shapes = nn.unbox(jax.eval_shape(fam.init, jax.random.key(seed), batch)["params"])
  return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope="module")
def lm_setup():
  config = config_lib.load_config(os.path.join(ROOT, "configs/lm.py:micro"))
  fam = family.build(config.model)
  params = _random_params(fam, fam.dummy_batch(1))
  # Right-padded prompts of lengths 5, 2 and 7 (padding 0).
  rng = np.random.default_rng(1)
  tokens = rng.integers(1, 512, size=(3, 7)).astype(np.int32)
  lengths = np.array([5, 2, 7], np.int32)
  tokens[np.arange(7)[None] >= lengths[:, None]] = 0
  return fam, params, {"tokens": tokens}, lengths


@pytest.fixture(scope="module")
def flamingo_setup():
  config = config_lib.load_config(os.path.join(ROOT, "configs/flamingo.py:micro"))
  fam = family.build(config.model)
  params = _random_params(fam, fam.dummy_batch(1))
  rng = np.random.default_rng(2)
  tokens = rng.integers(1, 512, size=(2, 6)).astype(np.int32)
  lengths = np.array([6, 3], np.int32)
  tokens[:, 1] = IMAGE
  tokens[np.arange(6)[None] >= lengths[:, None]] = 0
  batch = {"media": rng.uniform(-1, 1, (2, 1, 1, 16, 16, 3)).astype(np.float32),
           "media_mask": np.ones((2, 1), bool), "tokens": tokens,
           "media_locations": tokens == IMAGE}
  return fam, params, batch, lengths


def _uncached_greedy(fam, params, batch, lengths, steps):
  """Argmax of full forward passes (no cache) over prompt + generated tokens.

  Rows are right-padded to T + steps; attention is causal, so the padding after a row's last
  real token cannot change the logits read at that token.
  """
  logits_fn = jax.jit(fam.predict_logits)
  b, t = np.asarray(batch["tokens"]).shape
  tokens = np.zeros((b, t + steps), np.int32)
  tokens[:, :t] = batch["tokens"]
  out = np.zeros((b, steps), np.int32)
  for k in range(steps):
    full = dict(batch, tokens=tokens)
    if "media_locations" in batch:
      full["media_locations"] = tokens == IMAGE
    logits = np.asarray(logits_fn(params, full))
    for row, n in enumerate(lengths):
      out[row, k] = int(np.argmax(logits[row, n - 1 + k]))
      tokens[row, n + k] = out[row, k]
  return out


def _log_prob(fam, params, batch, row, length, continuation):
  """Sum of log p(continuation | prompt) by one full forward pass."""
  prompt = list(np.asarray(batch["tokens"])[row, :length])
  full = {k: np.asarray(v)[row:row + 1] for k, v in batch.items()}
  full["tokens"] = np.array([prompt + list(continuation)], np.int32)
  logp = jax.nn.log_softmax(fam.predict_logits(params, full)[0].astype(jnp.float32))
  return float(sum(logp[length - 1 + i, t] for i, t in enumerate(continuation)))


@pytest.mark.parametrize("setup", ["lm_setup", "flamingo_setup"])
def test_greedy_equals_argmax_of_full_forward_passes(setup, request):
  fam, params, batch, lengths = request.getfixturevalue(setup)
  cached = generate.greedy(fam, params, batch, 6, lengths=lengths)
  np.testing.assert_array_equal(cached, _uncached_greedy(fam, params, batch, lengths, 6))
  # The rows are not all alike (the test would pass vacuously on a constant model).
  assert len({tuple(r) for r in cached.tolist()}) == len(lengths)


def test_flamingo_greedy_depends_on_the_image(flamingo_setup):
  fam, params, batch, lengths = flamingo_setup
  other = dict(batch, media=-np.asarray(batch["media"]))
  a = generate.greedy(fam, params, batch, 6, lengths=lengths)
  b = generate.greedy(fam, params, other, 6, lengths=lengths)
  assert (a != b).any()


@pytest.mark.parametrize("setup", ["lm_setup", "flamingo_setup"])
def test_beam_width_one_is_greedy(setup, request):
  fam, params, batch, lengths = request.getfixturevalue(setup)
  greedy = generate.greedy(fam, params, batch, 6, lengths=lengths)
  # A stop id that greedy emits mid-way exercises the stop handling of both.
  stop = (int(greedy[0, 2]),)
  greedy_stop = generate.greedy(fam, params, batch, 6, stop_ids=stop, lengths=lengths)
  beam = generate.beam_search(fam, params, batch, 6, num_beams=1, stop_ids=stop, lengths=lengths)
  np.testing.assert_array_equal(beam, greedy_stop)
  assert (greedy_stop[0, 2:] == stop[0]).all()


def test_exhaustive_beam_finds_the_most_likely_continuation(lm_setup):
  fam, params, batch, lengths = lm_setup
  batch = {"tokens": batch["tokens"][:1]}
  lengths = lengths[:1]
  vocab = fam.lm_config.total_vocab
  # Beam width = vocabulary size over 2 steps is exhaustive: compare with brute force.
  out, score = generate.beam_search(fam, params, batch, 2, num_beams=vocab, lengths=lengths,
                                    return_scores=True)
  prompt = np.asarray(batch["tokens"][0, :lengths[0]])
  first = jax.nn.log_softmax(fam.predict_logits(params, {"tokens": prompt[None]})[0, -1])
  rows = np.concatenate([np.repeat(prompt[None], vocab, 0), np.arange(vocab)[:, None]], 1)
  second = jax.nn.log_softmax(fam.predict_logits(params, {"tokens": rows.astype(np.int32)})[:, -1])
  total = np.asarray(first[:, None] + second)
  best = np.unravel_index(np.argmax(total), total.shape)
  assert tuple(out[0]) == tuple(int(i) for i in best)
  np.testing.assert_allclose(score[0], total.max(), rtol=1e-5)


def test_beam_scores_are_length_normalised_log_probs(lm_setup):
  fam, params, batch, lengths = lm_setup
  greedy = generate.greedy(fam, params, batch, 5, lengths=lengths)
  stop = (int(greedy[1, 1]),)
  out, scores = generate.beam_search(fam, params, batch, 5, num_beams=3, stop_ids=stop,
                                     lengths=lengths, length_alpha=0.6, return_scores=True)
  for b in range(len(lengths)):
    gen = generate.strip(out[b].tolist(), stop)
    ended = len(gen) < 5
    continuation = gen + ([stop[0]] if ended else [])
    logp = _log_prob(fam, params, batch, b, lengths[b], continuation)
    expected = logp / ((5 + len(continuation)) / 6) ** 0.6
    np.testing.assert_allclose(scores[b], expected, rtol=1e-4)
  # Beam search never scores below greedy's own sequence on row 1 (which greedy stops early).
  gen = generate.strip(greedy[1].tolist(), stop) + [stop[0]]
  greedy_score = _log_prob(fam, params, batch, 1, lengths[1], gen) / ((5 + len(gen)) / 6) ** 0.6
  assert scores[1] >= greedy_score - 1e-5


def test_filter_logits_hand_checked():
  logits = jnp.log(jnp.array([[0.5, 0.2, 0.15, 0.1, 0.05]]))
  kept = lambda x: (np.asarray(x) > -1e29).astype(int).tolist()[0]
  assert kept(generate.filter_logits(logits, top_k=2)) == [1, 1, 0, 0, 0]
  # Mass before each token: 0, .5, .7, .85, .95 -> top_p=0.7 keeps the first two (0.7 < 0.7 no).
  assert kept(generate.filter_logits(logits, top_p=0.7)) == [1, 1, 0, 0, 0]
  assert kept(generate.filter_logits(logits, top_p=0.71)) == [1, 1, 1, 0, 0]
  assert kept(generate.filter_logits(logits, top_p=0.01)) == [1, 0, 0, 0, 0]
  np.testing.assert_allclose(generate.filter_logits(logits, temperature=2.0), logits / 2.0)
  # Order of the vocabulary does not matter.
  perm = jnp.array([[3, 0, 4, 1, 2]])
  shuffled = jnp.take_along_axis(logits, perm, axis=1)
  assert kept(generate.filter_logits(shuffled, top_p=0.71)) == [0, 1, 0, 1, 1]


def test_sampling(lm_setup):
  fam, params, batch, lengths = lm_setup
  greedy = generate.greedy(fam, params, batch, 6, lengths=lengths)
  key = jax.random.key(3)
  np.testing.assert_array_equal(
      generate.sample(fam, params, batch, 6, key, lengths=lengths, top_k=1), greedy)
  np.testing.assert_array_equal(
      generate.sample(fam, params, batch, 6, key, lengths=lengths, top_p=1e-6), greedy)
  a = generate.sample(fam, params, batch, 6, key, lengths=lengths, temperature=2.0)
  b = generate.sample(fam, params, batch, 6, key, lengths=lengths, temperature=2.0)
  c = generate.sample(fam, params, batch, 6, jax.random.key(4), lengths=lengths, temperature=2.0)
  np.testing.assert_array_equal(a, b)
  assert (a != c).any() and (a != greedy).any()


def test_sharded_equals_unsharded(lm_setup):
  fam, params, batch, lengths = lm_setup
  # 4 rows so that the batch splits over a 4-way data axis.
  batch4 = {"tokens": np.concatenate([batch["tokens"], batch["tokens"][:1]])}
  lengths4 = np.concatenate([lengths, lengths[:1]])
  mesh = P.make_mesh({"data": 4, "fsdp": 1, "tensor": 2}, jax.devices()[:8])
  single = generate.greedy(fam, params, batch4, 5, lengths=lengths4)
  sharded = generate.greedy(fam, params, batch4, 5, lengths=lengths4, mesh=mesh, rules="tp")
  np.testing.assert_array_equal(single, sharded)
  beam = generate.beam_search(fam, params, batch4, 4, num_beams=2, lengths=lengths4, mesh=mesh,
                              rules="tp")
  np.testing.assert_array_equal(beam, generate.beam_search(fam, params, batch4, 4, num_beams=2,
                                                           lengths=lengths4))
