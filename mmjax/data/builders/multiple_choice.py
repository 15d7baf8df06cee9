"""Multiple-choice benchmarks from their official files: ScienceQA (`problems.json` +
`pid_splits.json` + `images/<split>/<pid>/image.png`) and MMMU (the per-subject parquet files of
its Hugging Face release, read with pyarrow).

Records: `image` (PNG), `id`, `question`, `context` (ScienceQA's hint; empty for MMMU), `options`
(the choices' texts), `answer_index` and `answer` (the correct option's text), `subject`.
Only questions with an image are kept (ScienceQA's IMG subset; MMMU's `image_1`, the first image
its question refers to); MMMU's open questions (no options) are left out.
"""

from __future__ import annotations

import ast
import json
import os
import string

import numpy as np
import tensorflow_datasets as tfds

from mmjax.data.builders import common, manual

_FEATURES = {"image": common.PNG, "id": tfds.features.Text(), "question": tfds.features.Text(),
             "context": tfds.features.Text(), "options": common.TEXTS,
             "answer_index": tfds.features.Scalar(dtype=np.int32),
             "answer": tfds.features.Text(), "subject": tfds.features.Text()}


class _MultipleChoice(manual.ManualBuilder, skip_registration=True):
  """The shared record form."""

  def _info(self) -> tfds.core.DatasetInfo:
    return self.make_info(__doc__, _FEATURES)


class ScienceQA(_MultipleChoice, skip_registration=True):
  """ScienceQA, image questions: 'train', 'validation' (val), 'test'."""

  name = "scienceqa"
  SUBDIR = "scienceqa"
  SPLITS = {"train": "train", "validation": "val", "test": "test"}
  DOWNLOAD = ("Download problems.json and pid_splits.json (data/scienceqa/ of "
              "https://github.com/lupantech/ScienceQA) and the images (train.zip, val.zip, "
              "test.zip from https://scienceqa.github.io/, extracted as images/train/<pid>/"
              "image.png, ...).")

  def _splits(self, dl_manager):
    root = self.root(dl_manager)
    with open(self.require(os.path.join(root, "problems.json"))) as f:
      problems = json.load(f)
    with open(self.require(os.path.join(root, "pid_splits.json"))) as f:
      pid_splits = json.load(f)
    for theirs in self.SPLITS.values():
      if theirs not in pid_splits:
        raise ValueError(f"{root}/pid_splits.json has no {theirs!r} list")
    return {ours: self._generate_examples(root, theirs, pid_splits[theirs], problems)
            for ours, theirs in self.SPLITS.items()}

  def _generate_examples(self, root: str, split: str, pids: list[str], problems: dict):
    for pid in pids:
      p = problems[pid]
      if not p.get("image"):
        continue  # Text-only question.
      path = os.path.join(root, "images", split, pid, p["image"])
      choices = [str(c) for c in p["choices"]]
      answer = int(p["answer"])
      if not 0 <= answer < len(choices):
        raise ValueError(f"{root}/problems.json {pid}: answer {answer} outside "
                         f"{len(choices)} choices")
      yield pid, {"image": self.image(path), "id": pid, "question": p["question"],
                  "context": p.get("hint") or "", "options": choices,
                  "answer_index": np.int32(answer), "answer": choices[answer],
                  "subject": p.get("subject", "")}


def mmmu_options(value: str, where: str) -> list[str]:
  """MMMU stores the options as the text of a Python list ("['a', 'b']")."""
  try:
    options = ast.literal_eval(value)
  except (ValueError, SyntaxError) as e:
    raise ValueError(f"{where}: options {value!r} is not a list literal") from e
  if not isinstance(options, list):
    raise ValueError(f"{where}: options {value!r} is not a list")
  return [str(o) for o in options]


class MMMU(_MultipleChoice, skip_registration=True):
  """MMMU multiple-choice questions: 'dev' (5 few-shot examples per subject) and 'validation'
  (the test split's answers are hidden)."""

  name = "mmmu"
  SUBDIR = "mmmu"
  SPLITS = {"dev": "dev", "validation": "validation"}
  DOWNLOAD = ("Download the MMMU parquet files (https://huggingface.co/datasets/MMMU/MMMU, one "
              "folder per subject: <Subject>/dev-00000-of-00001.parquet, "
              "<Subject>/validation-00000-of-00001.parquet).")

  def _splits(self, dl_manager):
    root = self.root(dl_manager)
    self.require(root, "folder")
    subjects = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    found = {ours: [os.path.join(root, s, n) for s in subjects
                    for n in sorted(os.listdir(os.path.join(root, s)))
                    if n.startswith(f"{theirs}-") and n.endswith(".parquet")]
             for ours, theirs in self.SPLITS.items()}
    if not found["validation"]:
      self.require(os.path.join(root, "<Subject>", "validation-00000-of-00001.parquet"),
                   "parquet file")
    return {split: self._generate_examples(paths) for split, paths in found.items() if paths}

  def _generate_examples(self, paths: list[str]):
    try:
      import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise ImportError("reading MMMU's parquet files needs pyarrow: pip install pyarrow") from e
    for path in paths:
      subject = os.path.basename(os.path.dirname(path))
      for row in pq.read_table(path).to_pylist():
        if row.get("question_type", "multiple-choice") != "multiple-choice":
          continue
        where = f"{path} id {row['id']}"
        options = mmmu_options(row["options"], where)
        letter = str(row["answer"]).strip()
        if not options or letter not in string.ascii_uppercase[:len(options)]:
          raise ValueError(f"{where}: answer {letter!r} is not one of the "
                           f"{len(options)} option letters")
        image = row.get("image_1")
        if not image or not image.get("bytes"):
          continue  # No image to ask about.
        index = string.ascii_uppercase.index(letter)
        yield row["id"], {"image": self.image_bytes(image["bytes"], where), "id": row["id"],
                          "question": row["question"], "context": "", "options": options,
                          "answer_index": np.int32(index), "answer": options[index],
                          "subject": subject}
