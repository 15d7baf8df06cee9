"""`text`: an English corpus for language-model pre-training: WordNet glosses and Jane Austen.

Sources (both Debian packages):
- wordnet-base, `usr/share/wordnet/data.{noun,verb,adj,adv}`: one synset per line,
  `offset lex_filenum ss_type w_cnt word lex_id ... | gloss` (wndb(5WN)). A synset becomes
  "dog, domestic dog, Canis familiaris: a member of the genus Canis ...; \"the dog barked all
  night\"" (its words, then its gloss with the usage examples WordNet quotes): 117,659 documents.
- r-cran-janeaustenr, the six novels as R character vectors (one per printed line) in an R
  lazy-load database, read without R by `rdata.py`. A paragraph (lines up to a blank line, joined
  by spaces) becomes a document; paragraphs of fewer than MIN_AUSTEN_WORDS words (headings such
  as "CHAPTER I") are dropped.
Splits are hashed on each document's key ('wordnet:noun:00001740', 'austen:emma:12'): 96%
'train', 2% 'validation', 2% 'test'. `documents()` lists the same documents without tfds (the
`text_sp` tokenizer trains on its 'train' part).
"""

from __future__ import annotations

import os
import re
from typing import Iterator

import tensorflow_datasets as tfds

from mmjax.data.builders import offline, rdata

PACKAGE = "wordnet-base"
ROOT = "usr/share/wordnet"
AUSTEN_PACKAGE = "r-cran-janeaustenr"
AUSTEN_RDX = "usr/lib/R/site-library/janeaustenr/data/Rdata.rdx"
AUSTEN_BOOKS = ("sensesensibility", "prideprejudice", "mansfieldpark", "emma",
                "northangerabbey", "persuasion")  # Publication order, as austen_books() lists.
MIN_AUSTEN_WORDS = 4
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


def paragraphs(lines: list[str | None]) -> list[str]:
  """Blank-line separated paragraphs of `lines`, each joined by single spaces."""
  out, current = [], []
  for line in lines + [""]:
    line = (line or "").strip()
    if line:
      current.append(line)
    elif current:
      out.append(" ".join(current))
      current = []
  return out


def austen(rdx_path: str) -> Iterator[tuple[str, str]]:
  """(book, paragraph) of the six novels with at least MIN_AUSTEN_WORDS words, in order."""
  books = rdata.lazyload(rdx_path)
  for book in AUSTEN_BOOKS:
    if book not in books:
      raise ValueError(f"{rdx_path}: no novel {book!r} (has {sorted(books)})")
    for paragraph in paragraphs(books[book]):
      if len(paragraph.split()) >= MIN_AUSTEN_WORDS:
        yield book, paragraph


def documents(wordnet_dir: str, austen_rdx: str) -> Iterator[tuple[str, str, str]]:
  """(key, source, text) of every document: the WordNet synsets, then Austen's paragraphs."""
  for pos, offset, words, gloss in glosses(wordnet_dir):
    yield f"wordnet:{pos}:{offset}", "wordnet-3.0", document(words, gloss)
  counts: dict[str, int] = {}
  for book, paragraph in austen(austen_rdx):
    counts[book] = counts.get(book, 0) + 1
    yield f"austen:{book}:{counts[book] - 1}", f"austen:{book}", paragraph


def split_of(key: str) -> str:
  """The split of document `key`."""
  return offline.hashed_split(key, SPLIT_PERCENT)


def source_paths(data_dir: str) -> tuple[str, str]:
  """(WordNet dict directory, Austen .rdx) under `data_dir`; MissingOfflineData names the
  package when either is absent."""
  for name in POS_FILES.values():
    offline.package_file(data_dir, PACKAGE, f"{ROOT}/{name}")
  rdx = offline.package_file(data_dir, AUSTEN_PACKAGE, AUSTEN_RDX)
  offline.package_file(data_dir, AUSTEN_PACKAGE, AUSTEN_RDX[:-4] + ".rdb")
  return offline.package_file(data_dir, PACKAGE, ROOT), rdx


class Text(offline.OfflineBuilder, skip_registration=True):
  """WordNet glosses and Austen's paragraphs as LM text (see the module docstring)."""

  @classmethod
  def make_builder_config(cls, **config) -> offline.OfflineConfig:
    """Only max_examples applies (no images)."""
    return offline.make_config(image_size=0, max_examples=config.get("max_examples"))

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "text": tfds.features.Text(),  # What the LM reads.
            "source": tfds.features.Text(),  # 'wordnet-3.0' or 'austen:<book>'.
            "key": tfds.features.Text(),  # e.g. 'wordnet:noun:00001740', 'austen:emma:12'.
        }),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Reads installed package files only.
    splits = {"train": [], "validation": [], "test": []}
    for key, source, text in documents(*source_paths(self.data_dir_root)):
      splits[split_of(key)].append((key, source, text))
    return {split: self._generate_examples(offline.cap(items, self.builder_config))
            for split, items in splits.items()}

  def _example(self, item: tuple[str, str, str]) -> tuple[str, dict]:
    key, source, text = item
    return key, {"text": text, "source": source, "key": key}
