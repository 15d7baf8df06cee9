"""Each loss equals a direct numpy evaluation of the paper's formula on a small batch."""

import numpy as np
import jax.numpy as jnp
import pytest

from mmjax import losses
from mmjax.models import coca


def _emb(rng, b, d):
  x = rng.normal(size=(b, d))
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def _log_softmax(z, axis):
  z = z - z.max(axis=axis, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def test_softmax_contrastive_matches_infonce_formula():
  rng = np.random.default_rng(0)
  img, txt, scale = _emb(rng, 6, 8), _emb(rng, 6, 8), 1 / 0.07
  logits = scale * img @ txt.T
  i2t = -np.mean(np.diag(_log_softmax(logits, 1)))
  t2i = -np.mean(np.diag(_log_softmax(logits, 0)))
  loss, metrics = losses.softmax_contrastive_loss(jnp.asarray(img), jnp.asarray(txt), scale)
  np.testing.assert_allclose(loss, (i2t + t2i) / 2, rtol=1e-6)
  assert 0.0 <= float(metrics["i2t_accuracy"]) <= 1.0


def test_sigmoid_loss_matches_siglip_formula():
  rng = np.random.default_rng(1)
  img, txt = _emb(rng, 5, 8), _emb(rng, 5, 8)
  t, b = np.exp(np.log(10.0)), -10.0
  total = 0.0
  for i in range(5):
    for j in range(5):
      z = 1.0 if i == j else -1.0
      total += np.log1p(np.exp(-z * (t * img[i] @ txt[j] + b)))  # -log sigmoid(z x)
  loss, _ = losses.sigmoid_contrastive_loss(jnp.asarray(img), jnp.asarray(txt), t, b)
  np.testing.assert_allclose(loss, total / 5, rtol=1e-6)
  chunked = losses.chunked_sigmoid_contrastive_loss(jnp.asarray(img), jnp.asarray(txt), t, b, 5)
  np.testing.assert_allclose(chunked, total / 5, rtol=1e-6)


def test_coca_loss_is_weighted_sum_of_clip_and_caption_ce():
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(3, 4, 11))
  labels = np.array([[3, 4, 0, 0], [1, 2, 3, 5], [7, 0, 0, 0]])
  logp = _log_softmax(logits, -1)
  nll = [-logp[b, t, labels[b, t]] for b in range(3) for t in range(4) if labels[b, t] != 0]
  got = coca.caption_loss(jnp.asarray(logits), jnp.asarray(labels), pad_id=0)
  np.testing.assert_allclose(got, np.mean(nll), rtol=1e-6)


def test_next_token_loss_follows_batch_contract():
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(2, 5, 7))
  tokens = rng.integers(0, 7, size=(2, 5))
  mask = np.array([[0, 1, 1, 0, 1], [0, 0, 1, 1, 1]], np.float32)
  logp = _log_softmax(logits, -1)
  nll = [-logp[b, t - 1, tokens[b, t]] for b in range(2) for t in range(1, 5) if mask[b, t]]
  loss, metrics = losses.next_token_loss(jnp.asarray(logits), jnp.asarray(tokens),
                                         jnp.asarray(mask))
  np.testing.assert_allclose(loss, np.mean(nll), rtol=1e-6)
  assert float(metrics["num_tokens"]) == len(nll)


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_initial_temperature(family):
  from mmjax import config_lib, models  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  fam = models.build(config_lib.load_config(f"configs/{family}.py:micro").model)
  params = fam.init(jax.random.key(0), fam.dummy_batch(2))["params"]
  out = fam.module.apply({"params": params},
                         **fam.module_inputs(fam.dummy_batch(2)))
  if family == "clip":
    np.testing.assert_allclose(out["logit_scale"], 1 / 0.07, rtol=1e-5)
    np.testing.assert_allclose(out["logit_bias"], 0.0)
  else:
    np.testing.assert_allclose(out["logit_scale"], 10.0, rtol=1e-5)
    np.testing.assert_allclose(out["logit_bias"], -10.0)


def test_hard_negatives_join_each_images_softmax_and_sigmoid_negatives():
  """NegCLIP: image i's softmax is over the B captions and the B hard negatives; the
  text-to-image direction is unchanged. The sigmoid loss adds every negative pair."""
  L = losses
  rng = np.random.default_rng(0)
  norm = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
  img, txt, neg = (norm(rng.normal(size=(4, 8))) for _ in range(3))
  s = 10.0
  loss, _ = L.softmax_contrastive_loss(img, txt, s, neg)
  logits = s * img @ np.concatenate([txt, neg]).T
  i2t = np.mean(-logits[np.arange(4), np.arange(4)] + np.log(np.exp(logits).sum(1)))
  t2i_logits = s * txt @ img.T
  t2i = np.mean(-np.diag(t2i_logits) + np.log(np.exp(t2i_logits).sum(1)))
  np.testing.assert_allclose(loss, (i2t + t2i) / 2, rtol=1e-5)
  plain, _ = L.softmax_contrastive_loss(img, txt, s)
  assert float(loss) > float(plain)
  sig, _ = L.sigmoid_contrastive_loss(img, txt, s, -1.0, neg)
  sig_plain, _ = L.sigmoid_contrastive_loss(img, txt, s, -1.0)
  extra = -np.log(1 / (1 + np.exp(s * img @ neg.T - 1.0))).sum() / 4
  np.testing.assert_allclose(sig, sig_plain + extra, rtol=1e-5)
