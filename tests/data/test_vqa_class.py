"""The vqa_class task: the answer vocabulary (most frequent training answers first) and its rows
(image, question tokens, answer class; -1 outside the vocabulary)."""

import collections

import numpy as np
import pytest

from mmjax.batch import validate_batch
from mmjax.data import answers, datasets, pipeline


def _records(config, split):
  source = datasets.load_source("shapes", split, **datasets.source_kwargs(config))
  return [source[i] for i in range(len(source))]


def test_answer_vocab_ranks_training_answers(make_config):
  config = make_config(task="vqa_class", max_answers=5)
  counts = collections.Counter(a.decode() for r in _records(config, "train") for a in r["answer"])
  want = [a for a, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
  assert answers.answer_vocab("shapes", config) == tuple(want[:5])
  assert answers.answer_vocab("shapes", make_config(task="vqa_class")) == tuple(want)
  assert answers.answer_label({"yes": 0}, "maybe") == -1


def test_vqa_class_rows(make_config, tok):
  config = make_config(task="vqa_class", split="validation", max_answers=4, text_length=16)
  vocab = answers.answer_vocab("shapes", config)
  batch = next(pipeline.make_pipeline(config, tokenizer=tok, train=False, process_index=0,
                                      process_count=1))
  validate_batch(batch)
  assert set(batch) == {"image", "text", "labels"}
  assert batch["image"].shape == (8, 32, 32, 3) and batch["labels"].dtype == np.int32
  # Evaluation rows ask each record's first question.
  for k, record in enumerate(_records(config, "validation")[:8]):
    question, answer = record["questions"][0].decode(), record["answer"][0].decode()
    np.testing.assert_array_equal(batch["text"][k], tok.pad_ids([question], 16)[0])
    assert batch["labels"][k] == (vocab.index(answer) if answer in vocab else -1)
  assert (batch["labels"] >= -1).all() and (batch["labels"] < 4).all()


class _Family:
  """A stand-in answer classifier: class 0 or 1 by the image's brightness (reads_image) or by
  the question's first token (question only)."""
  family_name = "stand_in"

  def __init__(self, reads_image):
    self.reads_image = reads_image

  def predict_answers(self, params, batch):
    del params
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
    if self.reads_image:
      score = batch["image"].mean(axis=(1, 2, 3)) - 0.5
    else:
      score = (batch["text"][:, 1] % 2).astype(jnp.float32) - 0.5
    return jnp.stack([score, -score], axis=-1)


def test_swap_images_counts_answers_that_depend_on_the_image(make_config, tok):
  """`swap_images`: a question-only classifier changes no answer when every question is asked of
  another scene's image; one that reads the image changes some, and the per-kind shares average
  (weighted by questions) to the overall share."""
  from mmjax import evaluators  # pylint: disable=import-outside-toplevel
  import ml_collections  # pylint: disable=import-outside-toplevel
  config = make_config(task="vqa_class", split="validation")
  spec = ml_collections.ConfigDict(dict(type="vqa_class", swap_images=True, batch_size=8))
  results = {}
  for reads in (False, True):
    context = evaluators.EvalContext(family=_Family(reads), data_config=config, tokenizer=tok)
    results[reads] = evaluators.build("vqa", spec, context).run(params=None)
  blind, seeing = results[False], results[True]
  kinds = [k.split("answers_changed_")[1] for k in seeing if "answers_changed_" in k]
  assert blind["vqa/answers_changed"] == 0.0 and len(kinds) >= 3
  assert all(blind[f"vqa/answers_changed_{k}"] == 0.0 for k in kinds)
  assert 0.0 < seeing["vqa/answers_changed"] < 1.0
  records = _records(config, "validation")
  counts = collections.Counter(t.decode() for r in records for t in r["question_types"])
  weighted = sum(counts[k] * seeing[f"vqa/answers_changed_{k}"] for k in kinds) / sum(
      counts.values())
  np.testing.assert_allclose(weighted, seeing["vqa/answers_changed"], rtol=1e-6)
  spec.num_examples = 1
  context = evaluators.EvalContext(family=_Family(True), data_config=config, tokenizer=tok)
  with pytest.raises(ValueError, match="swap_images needs at least 2 records"):
    evaluators.build("vqa", spec, context).run(params=None)
