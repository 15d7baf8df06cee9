"""Answer vocabularies for VQA as classification (the VQAv2 convention of ViLBERT / LXMERT /
VisualBERT: the most frequent answers of the training split become the classes).

`answer_vocab(dataset, data_config)` counts the canonical answer (`answer` field) of every
question in the dataset's *train* split, whatever split is being read, so training and evaluation
share one label space; answers outside it get label -1 (`answer_label`).
"""

from __future__ import annotations

import collections
import functools
from typing import Any

from mmjax.data import datasets


def _decode(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


@functools.lru_cache(maxsize=16)
def _vocab(dataset: str, max_answers: int, kwargs_items: tuple) -> tuple[str, ...]:
  source = datasets.load_source(dataset, "train", **dict(kwargs_items))
  counts: collections.Counter = collections.Counter()
  for i in range(len(source)):
    record = source[i]
    if "answer" not in record:
      raise ValueError(f"dataset {dataset!r} records have no 'answer' field; the vqa_class task "
                       "needs question/answer records")
    counts.update(_decode(a).strip() for a in record["answer"])
  if not counts:
    raise ValueError(f"dataset {dataset!r} train split has no answers to build a vocabulary from")
  # Most frequent first; ties in alphabetical order, so the vocabulary is deterministic.
  ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
  return tuple(answer for answer, _ in ranked[:max_answers])


def answer_vocab(dataset: str, data_config: Any) -> tuple[str, ...]:
  """The `data_config.max_answers` most frequent training answers of `dataset` (label order)."""
  kwargs = datasets.source_kwargs(data_config)
  return _vocab(dataset, int(data_config.max_answers), tuple(sorted(kwargs.items())))


def answer_label(vocab_index: dict[str, int], answer: str) -> int:
  """Class index of `answer`, or -1 when it is outside the vocabulary (never a training target,
  always wrong at evaluation)."""
  return vocab_index.get(answer.strip(), -1)
