"""The vqa_class task: the answer vocabulary (most frequent training answers first) and its rows
(image, question tokens, answer class; -1 outside the vocabulary)."""

import collections

import numpy as np

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
