"""Open-ended VQA benchmarks from their official files: VQAv2, OK-VQA (questions + annotations
JSON over COCO 2014 images), GQA (balanced question dicts) and TextVQA.

One record per image with all its questions, the shapes record form that `tasks.py` and the VQA
evaluator read: `image` (PNG), `image_id`, `questions`, `question_ids`, `answer` (the canonical
answer: VQAv2's `multiple_choice_answer`, GQA's `answer`, otherwise the most common human
answer) and `answers` [num_questions, 10] (the human answers; GQA's single answer is repeated
10 times, which makes VQA accuracy exact match, GQA's metric). Every split whose question file
is present is built; splits without public answers (test-dev/test) are not read.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from typing import Callable

import numpy as np
import tensorflow_datasets as tfds

from mmjax.data.builders import common, manual

NUM_ANSWERS = 10


@dataclasses.dataclass
class Question:
  """One question as the builders store it."""
  image_id: str
  question_id: str
  question: str
  answer: str
  answers: list[str]


def ten_answers(answers: list[str], where: str) -> list[str]:
  """Exactly 10 answers: VQAv2/OK-VQA/TextVQA have 10; fewer (GQA's one) repeat cyclically,
  more are cut to the first 10."""
  if not answers:
    raise ValueError(f"{where}: no answers")
  return [answers[i % len(answers)] for i in range(NUM_ANSWERS)]


def most_common(answers: list[str]) -> str:
  """The most frequent answer (first seen wins ties)."""
  return collections.Counter(answers).most_common(1)[0][0]


def _load(path: str) -> dict | list:
  with open(path) as f:
    return json.load(f)


def read_vqav2(questions_path: str, annotations_path: str) -> list[Question]:
  """VQAv2 / OK-VQA: `questions[]` joined with `annotations[]` on question_id."""
  questions, annotations = _load(questions_path), _load(annotations_path)
  for path, data, key in ((questions_path, questions, "questions"),
                          (annotations_path, annotations, "annotations")):
    if key not in data:
      raise ValueError(f"{path}: no {key!r} list; is this an official VQA {key} file?")
  by_id = {a["question_id"]: a for a in annotations["annotations"]}
  out = []
  for q in questions["questions"]:
    ann = by_id.get(q["question_id"])
    if ann is None:
      raise ValueError(f"{annotations_path}: no annotation for question_id {q['question_id']} "
                       f"of {questions_path}")
    answers = [a["answer"] for a in ann["answers"]]
    where = f"{annotations_path} question_id {q['question_id']}"
    out.append(Question(str(q["image_id"]), str(q["question_id"]), q["question"],
                        ann.get("multiple_choice_answer") or most_common(answers),
                        ten_answers(answers, where)))
  return out


def read_gqa(questions_path: str) -> list[Question]:
  """GQA: a dict question_id -> {imageId, question, answer, ...}."""
  data = _load(questions_path)
  if not isinstance(data, dict):
    raise ValueError(f"{questions_path}: expected a dict of question_id -> question (GQA)")
  return [Question(str(q["imageId"]), str(qid), q["question"], q["answer"],
                   ten_answers([q["answer"]], f"{questions_path} {qid}"))
          for qid, q in data.items()]


def read_textvqa(path: str) -> list[Question]:
  """TextVQA: `data[]` with image_id, question, answers (10)."""
  data = _load(path)
  if "data" not in data:
    raise ValueError(f"{path}: no 'data' list; is this TextVQA_0.5.1_*.json?")
  return [Question(str(q["image_id"]), str(q["question_id"]), q["question"],
                   most_common(q["answers"]), ten_answers(q["answers"], f"{path} "
                                                          f"{q['question_id']}"))
          for q in data["data"]]


def by_image(questions: list[Question]) -> dict[str, list[Question]]:
  """Questions grouped per image, images in order of first appearance."""
  out: dict[str, list[Question]] = {}
  for q in questions:
    out.setdefault(q.image_id, []).append(q)
  return out


class _VQABuilder(manual.ManualBuilder, skip_registration=True):
  """Shared record form and split loop; subclasses fill SPLITS, `read` and `image_path`."""

  # Our split -> the files (relative to SUBDIR) that `read` takes, in order.
  SPLITS: dict[str, tuple[str, ...]] = {}
  read: Callable[..., list[Question]]

  def image_path(self, root: str, split: str, image_id: str) -> str:
    """Where image `image_id` of `split` lives."""
    raise NotImplementedError

  def _info(self) -> tfds.core.DatasetInfo:
    return self.make_info(__doc__, {
        "image": common.PNG, "image_id": tfds.features.Text(),
        "questions": common.TEXTS, "question_ids": common.TEXTS, "answer": common.TEXTS,
        "answers": common.ANSWERS})

  def _splits(self, dl_manager):
    root = self.root(dl_manager)
    present = {split: [os.path.join(root, f) for f in files]
               for split, files in self.SPLITS.items()
               if os.path.exists(os.path.join(root, files[0]))}
    if not present:
      split = "validation" if "validation" in self.SPLITS else next(iter(self.SPLITS))
      self.require(os.path.join(root, self.SPLITS[split][0]), "question file")
    for paths in present.values():
      for path in paths:
        self.require(path)
    return {split: self._generate_examples(root, split, type(self).read(*paths))
            for split, paths in present.items()}

  def _generate_examples(self, root: str, split: str, questions: list[Question]):
    for image_id, qs in by_image(questions).items():
      yield image_id, {
          "image": self.image(self.image_path(root, split, image_id)),
          "image_id": image_id,
          "questions": [q.question for q in qs],
          "question_ids": [q.question_id for q in qs],
          "answer": [q.answer for q in qs],
          "answers": np.array([q.answers for q in qs], dtype=object)}


_COCO_IMAGES = ("the COCO 2014 images (http://images.cocodataset.org/zips/train2014.zip, "
                "http://images.cocodataset.org/zips/val2014.zip) extracted as train2014/ and "
                "val2014/")
_COCO_FOLDERS = {"train": "train2014", "validation": "val2014"}


def coco_image_path(root: str, split: str, image_id: str) -> str:
  """`<root>/train2014/COCO_train2014_000000xxxxxx.jpg` (the 2014 file naming)."""
  folder = _COCO_FOLDERS[split]
  return os.path.join(root, folder, f"COCO_{folder}_{int(image_id):012d}.jpg")


class VQAv2(_VQABuilder, skip_registration=True):
  """VQAv2 (balanced real images, 2014 COCO): 'train' and 'validation'."""

  name = "vqav2"
  SUBDIR = "vqav2"
  SPLITS = {s: (f"v2_OpenEnded_mscoco_{f}_questions.json", f"v2_mscoco_{f}_annotations.json")
            for s, f in _COCO_FOLDERS.items()}
  read = staticmethod(read_vqav2)
  image_path = staticmethod(coco_image_path)
  DOWNLOAD = ("Download the VQAv2 questions and annotations from https://visualqa.org/download.html"
              " (v2_Questions_{Train,Val}_mscoco.zip, v2_Annotations_{Train,Val}_mscoco.zip) and "
              + _COCO_IMAGES + ".")


class OKVQA(_VQABuilder, skip_registration=True):
  """OK-VQA (outside-knowledge questions on 2014 COCO): 'train' and 'validation'."""

  name = "okvqa"
  SUBDIR = "okvqa"
  SPLITS = {s: (f"OpenEnded_mscoco_{f}_questions.json", f"mscoco_{f}_annotations.json")
            for s, f in _COCO_FOLDERS.items()}
  read = staticmethod(read_vqav2)
  image_path = staticmethod(coco_image_path)
  DOWNLOAD = ("Download the OK-VQA questions and annotations from https://okvqa.allenai.org/"
              "download.html (OpenEnded_mscoco_{train,val}2014_questions.json, "
              "mscoco_{train,val}2014_annotations.json) and " + _COCO_IMAGES + ".")


class GQA(_VQABuilder, skip_registration=True):
  """GQA balanced questions: 'train', 'validation' (val) and 'test' (testdev)."""

  name = "gqa"
  SUBDIR = "gqa"
  SPLITS = {"train": ("train_balanced_questions.json",),
            "validation": ("val_balanced_questions.json",),
            "test": ("testdev_balanced_questions.json",)}
  read = staticmethod(read_gqa)
  DOWNLOAD = ("Download the GQA balanced questions (questions1.2.zip) and images (images.zip) "
              "from https://cs.stanford.edu/people/dorarad/gqa/download.html, extracted as "
              "*_balanced_questions.json and images/.")

  @staticmethod
  def image_path(root: str, split: str, image_id: str) -> str:
    del split
    return os.path.join(root, "images", f"{image_id}.jpg")


class TextVQA(_VQABuilder, skip_registration=True):
  """TextVQA 0.5.1: 'train' and 'validation' (both over the train_images/ folder)."""

  name = "textvqa"
  SUBDIR = "textvqa"
  SPLITS = {"train": ("TextVQA_0.5.1_train.json",), "validation": ("TextVQA_0.5.1_val.json",)}
  read = staticmethod(read_textvqa)
  DOWNLOAD = ("Download TextVQA_0.5.1_{train,val}.json and train_val_images.zip from "
              "https://textvqa.org/dataset (extracted as train_images/).")

  @staticmethod
  def image_path(root: str, split: str, image_id: str) -> str:
    del split
    return os.path.join(root, "train_images", f"{image_id}.jpg")
