"""Each metric against hand-checked values (and pycocoevalcap on a known sample)."""

import math

import numpy as np
import pytest

from mmjax.evaluators import (captioning, fewshot, linear_probe, multiple_choice, perplexity,
                              reconstruction, retrieval, templates, vqa, zeroshot)


def test_vqa_normalisation():
  assert vqa.normalize_answer("Two") == "2"
  assert vqa.normalize_answer("the red Circle.") == "red circle"
  assert vqa.normalize_answer("dont") == "don't"
  assert vqa.normalize_answer("yes!") == "yes"
  assert vqa.normalize_answer("1,000") == "1000"


def test_vqa_accuracy_hand_checked():
  # 2 of 10 humans said "2": leaving out one of them leaves 1 match (1/3), else 2 (2/3):
  # (2 * 1/3 + 8 * 2/3) / 10 = 0.6.
  answers = ["2", "two"] + ["3"] * 8
  assert vqa.vqa_accuracy("2", answers) == pytest.approx(0.6)  # "two" normalises to "2"
  assert vqa.vqa_accuracy("2", ["2"] + ["3"] * 9) == pytest.approx(0.9 * (1 / 3))
  assert vqa.vqa_accuracy("3", ["3"] * 3 + ["4"] * 7) == pytest.approx((3 * 2 / 3 + 7) / 10)
  assert vqa.vqa_accuracy("three", ["3"] * 10) == 1.0
  assert vqa.vqa_accuracy("5", ["3"] * 10) == 0.0
  assert vqa.most_frequent_answer([{"answer": ["yes", "no"]}, {"answer": ["yes"]}]) == "yes"


def test_bleu_and_cider_with_pycocoevalcap_on_known_samples():
  # BLEU-1: all 5 candidate words match; brevity penalty exp(1 - 6/5) (closest ref length 6).
  scores = captioning.caption_scores({0: "A cat on the mat."},
                                     {0: ["a cat is on the mat", "a dog"]})
  assert scores["bleu1"] == pytest.approx(math.exp(1 - 6 / 5), rel=1e-6)
  # CIDEr-D: n-grams unique to one image have idf log 2, so an exact copy of the only reference
  # has cosine 1 at every n and scores 10; an image with no shared n-gram scores 0.
  refs = {0: ["red circle on white"], 1: ["blue star above green square"]}
  assert captioning.caption_scores({0: "red circle on white",
                                    1: "blue star above green square"}, refs)["cider"] == \
      pytest.approx(10.0)
  assert captioning.caption_scores({0: "red circle on white", 1: "nothing here at all"},
                                   refs)["cider"] == pytest.approx(5.0)
  assert captioning.tokenize("A Red, circle.") == "a red circle"
  assert captioning.unigram_caption(["a red b", "a red", "a x"]) == "a red"
  # Case and punctuation do not make a caption distinct; a collapsed model scores 1/N.
  assert captioning.distinct_fraction(["A red circle.", "a red circle", "a blue star"]) == 2 / 3
  assert captioning.distinct_fraction(["same"] * 4) == 0.25
  with pytest.raises(ValueError, match="at least one"):
    captioning.distinct_fraction([])


def test_recall_at_k_hand_checked():
  # 3 images, 2 captions each (text j belongs to image j // 2).
  owner = [0, 0, 1, 1, 2, 2]
  sim = np.array([[0.9, 0.1, 0.8, 0.0, 0.0, 0.0],    # image 0: its text 0 ranks first
                  [0.9, 0.0, 0.1, 0.2, 0.3, 0.0],    # image 1: best own text (0.2) ranks 3rd
                  [0.0, 0.5, 0.0, 0.0, 0.4, 0.6]])   # image 2: text 5 ranks first
  r = retrieval.recall_at_k(sim, owner, ks=(1, 3))
  assert r["i2t_recall@1"] == pytest.approx(2 / 3)
  assert r["i2t_recall@3"] == 1.0
  # Per text, its image's rank among the column: t0 -> img0 tied with img1 (0.9, 0.9): rank 0;
  # t1 -> img0 0.1 < 0.5: rank 1; t2 -> img1 0.1 < 0.8: rank 1; t3 -> 0.2 best: 0;
  # t4 -> img2 0.4 > 0.3: 0; t5 -> 0.6: 0.
  assert r["t2i_recall@1"] == pytest.approx(4 / 6)
  assert r["t2i_recall@3"] == 1.0
  rand = retrieval.random_recall(10, 2, ks=(1,))
  assert rand["i2t_recall@1"] == pytest.approx(2 / 20)
  assert rand["t2i_recall@1"] == pytest.approx(0.1)


def test_zeroshot_pieces():
  logits = np.array([[0.1, 0.5, 0.2], [0.9, 0.0, 0.3], [0.0, 0.1, 0.2]])
  labels = np.array([1, 2, 0])
  assert zeroshot.topk_accuracy(logits, labels, 1) == pytest.approx(1 / 3)
  assert zeroshot.topk_accuracy(logits, labels, 2) == pytest.approx(2 / 3)
  assert zeroshot.topk_accuracy(logits, labels, 5) == 1.0
  # Ensemble: mean of normalised template embeddings, re-normalised.
  table = {"a x": [3.0, 0.0], "b x": [0.0, 1.0], "a y": [0.0, 2.0], "b y": [0.0, 5.0]}
  emb = zeroshot.class_embeddings(lambda ts: np.array([table[t] for t in ts]), ["x", "y"],
                                  ["a {}", "b {}"])
  np.testing.assert_allclose(emb, [[math.sqrt(0.5), math.sqrt(0.5)], [0.0, 1.0]])
  assert len(templates.OPENAI_IMAGENET_TEMPLATES) == 80
  assert templates.OPENAI_IMAGENET_TEMPLATES[0] == "a bad photo of a {}."
  records = [{"scene": {"objects": [{"shape": "star", "colour": "red"}]}},
             {"scene": {"objects": [{"shape": "star"}, {"shape": "circle"}]}},
             {"scene": {"objects": [{"shape": "circle", "colour": "blue"}]}}]
  idx, labels, classes = zeroshot.single_object_labels(records, "shape")
  assert idx == [0, 2] and [classes[i] for i in labels] == ["star", "circle"]


def test_linear_probe_on_separable_and_noise_features():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 3, 300)
  centres = np.array([[3.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 3.0, 0]])
  feats = centres[labels] + 0.3 * rng.standard_normal((300, 4))
  acc = linear_probe.probe_accuracy(feats[:200], labels[:200], feats[200:], labels[200:], 3)
  assert acc == 1.0
  noise = rng.standard_normal((300, 4))
  acc = linear_probe.probe_accuracy(noise[:200], labels[:200], noise[200:], labels[200:], 3)
  assert acc < 0.6


def test_perplexity_hand_checked():
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  # Uniform logits over 8 tokens: perplexity 8 whatever the tokens.
  logits = jnp.zeros((2, 5, 8))
  tokens = jnp.array([[1, 2, 3, 4, 5], [5, 4, 3, 2, 1]])
  mask = jnp.array([[0, 1, 1, 1, 0], [0, 1, 1, 1, 1]], jnp.float32)
  nll, count = perplexity.nll_sum_and_count(logits, tokens, mask)
  assert float(count) == 7 and perplexity.perplexity(float(nll), float(count)) == \
      pytest.approx(8.0)
  # Logits putting probability 1/2 on every next token: perplexity 2.
  logits = jnp.full((1, 3, 4), -1e9).at[0, jnp.arange(2), jnp.array([2, 3])].set(0.0)
  logits = logits.at[0, jnp.arange(2), jnp.array([0, 0])].set(0.0)
  nll, count = perplexity.nll_sum_and_count(logits, jnp.array([[1, 2, 3]]), jnp.ones((1, 3)))
  assert perplexity.perplexity(float(nll), float(count)) == pytest.approx(2.0)


def test_psnr_and_ssim():
  rng = np.random.default_rng(0)
  a = rng.uniform(0, 1, (2, 32, 32, 3))
  assert reconstruction.psnr(a, a) == math.inf
  # A constant error of 0.1 gives MSE 0.01, i.e. 20 dB.
  assert reconstruction.psnr(a, a + 0.1) == pytest.approx(20.0)
  assert reconstruction.ssim(a, a) == pytest.approx(1.0)
  # A constant shift only changes the luminance term: (2 mu (mu + d) + C1) / (mu^2 +
  # (mu + d)^2 + C1) on every window, whose mean we bound around the global-mean value.
  flat = np.full((1, 32, 32, 1), 0.5)
  expected = (2 * 0.5 * 0.6 + 0.01 ** 2) / (0.25 + 0.36 + 0.01 ** 2)
  assert reconstruction.ssim(flat, flat + 0.1) == pytest.approx(expected)
  assert reconstruction.ssim(a, rng.uniform(0, 1, a.shape)) < 0.1


def test_multiple_choice_and_fewshot_selection():
  assert multiple_choice.choose(np.array([-3.0, -4.0]), np.array([3, 8]), "sum") == 0
  assert multiple_choice.choose(np.array([-3.0, -4.0]), np.array([3, 8]), "mean") == 1
  q = np.array([[1.0, 0.0]])
  pool = np.array([[0.0, 1.0], [1.0, 0.1], [1.0, 1.0], [-1.0, 0.0]])
  np.testing.assert_array_equal(fewshot.rices_neighbours(q, pool, 2), [[2, 1]])
  demos = fewshot.random_demos(5, 10, 4, seed=0)
  assert demos.shape == (5, 4) and all(len(set(r)) == 4 for r in demos.tolist())
  np.testing.assert_array_equal(demos, fewshot.random_demos(5, 10, 4, seed=0))
