"""`text`: an English text corpus for language-model pre-training: the WordNet 3.0 glosses.

Source: Debian wordnet-base, `usr/share/wordnet/data.{noun,verb,adj,adv}`: one synset per line,
`offset lex_filenum ss_type w_cnt word lex_id ... | gloss` (wndb(5WN)). Each record is one synset
written as "dog, domestic dog, Canis familiaris: a member of the genus Canis ...; \"the dog
barked all night\"" (its words, then its gloss with the usage examples WordNet quotes). 117,659
synsets; splits hashed on (part of speech, offset): 96% 'train', 2% 'validation', 2% 'test'.
(Austen's novels, also offline in r-cran-janeaustenr, would need an R lazy-load reader: not done.)
"""

from __future__ import annotations

import os
import re
from typing import Iterator

import tensorflow_datasets as tfds

from mmjax.data.builders import common, offline

PACKAGE = "wordnet-base"
ROOT = "usr/share/wordnet"
POS_FILES = {"noun": "data.noun", "verb": "data.verb", "adj": "data.adj", "adv": "data.adv"}
SPLIT_PERCENT = {"test": 2, "validation": 2}
_ADJ_MARKER = re.compile(r"\((a|p|ip)\)$")  # Syntactic markers on adjectives: outback(a).


def parse_line(line: str) -> tuple[str, list[str], str]:
  """(offset, words, gloss) of one data-file line; raises ValueError on a malformed line."""
  head, sep, gloss = line.partition(" | ")
  fields = head.split()
  if not sep or len(fields) < 6:
    raise ValueError(f"not a WordNet data line: {line[:80]!r}")
  count = int(fields[3], 16)  # w_cnt is two hexadecimal digits.
  words = [_ADJ_MARKER.sub("", w).replace("_", " ") for w in fields[4:4 + 2 * count:2]]
  return fields[0], words, gloss.strip()


def glosses(wordnet_dir: str) -> Iterator[tuple[str, str, list[str], str]]:
  """(pos, offset, words, gloss) of every synset, file by file in POS_FILES order."""
  for pos, name in POS_FILES.items():
    with open(os.path.join(wordnet_dir, name), encoding="utf-8") as f:
      for line in f:
        if line.startswith("  "):  # The licence header's lines start with two spaces.
          continue
        offset, words, gloss = parse_line(line)
        yield pos, offset, words, gloss


def document(words: list[str], gloss: str) -> str:
  """The training text of one synset."""
  return f"{', '.join(words)}: {gloss}"


class Text(offline.OfflineBuilder, skip_registration=True):
  """WordNet glosses as LM text (see the module docstring)."""

  @classmethod
  def make_builder_config(cls, **config) -> offline.OfflineConfig:
    """Only max_examples applies (no images)."""
    return offline.make_config(image_size=0, max_examples=config.get("max_examples"))

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "text": tfds.features.Text(),  # What the LM reads (see `document`).
            "words": common.TEXTS,
            "gloss": tfds.features.Text(),
            "pos": tfds.features.Text(),  # 'noun', 'verb', 'adj' or 'adv'.
            "source": tfds.features.Text(),  # 'wordnet-3.0'.
        }),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Reads installed package files only.
    wordnet_dir = os.path.dirname(self.package_file(PACKAGE, f"{ROOT}/data.noun"))
    for name in POS_FILES.values():
      self.package_file(PACKAGE, f"{ROOT}/{name}")
    splits = {"train": [], "validation": [], "test": []}
    for pos, offset, words, gloss in glosses(wordnet_dir):
      splits[offline.hashed_split(f"{pos}:{offset}", SPLIT_PERCENT)].append(
          (f"{pos}:{offset}", pos, words, gloss))
    return {split: self._generate_examples(offline.cap(items, self.builder_config))
            for split, items in splits.items()}

  def _example(self, item: tuple[str, str, list[str], str]) -> tuple[str, dict]:
    key, pos, words, gloss = item
    return key, {"text": document(words, gloss), "words": words, "gloss": gloss, "pos": pos,
                 "source": "wordnet-3.0"}
