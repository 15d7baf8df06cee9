"""Interleaved image-text documents in JSON lines: MMC4 and OBELICS, stored in the
`shapes_interleaved` document form (`images`, and `texts` with one more chunk than images:
texts[0] precedes the first image, texts[i + 1] follows image i), which `tasks.py` turns into
`<image> chunk <|endofchunk|>` sequences.

MMC4 (`docs_shard_*_v2.jsonl` or the official `.jsonl.zip`): `text_list` (sentences) and
`image_info` (`image_name`, `matched_text_index`); as in OpenFlamingo's MMC4 loader, an image is
placed before the sentence it was matched to. Image files: `images/<image_name>`.
OBELICS (`*.jsonl`): `texts` and `images`, equal-length lists where each position holds either a
text or an image (the other entry None). An image entry is a path relative to `images/`, or a URL,
whose last path component is looked up there (name your downloaded files that way).
Missing images are dropped and counted (dead links are routine at this scale); documents left
without images or text are skipped. Records: `images`, `texts`, `url`.
"""

from __future__ import annotations

import io
import json
import os
import urllib.parse
import zipfile
from typing import Iterator

import tensorflow_datasets as tfds

from mmjax.data.builders import common, manual

SUFFIXES = (".jsonl", ".jsonl.zip")


def read_jsonl(path: str) -> Iterator[dict]:
  """The documents of a .jsonl file, or of every .jsonl inside a .jsonl.zip (MMC4's shards)."""
  if path.endswith(".zip"):
    with zipfile.ZipFile(path) as z:
      for name in sorted(n for n in z.namelist() if n.endswith(".jsonl")):
        with z.open(name) as f:
          yield from _lines(io.TextIOWrapper(f, encoding="utf-8"), f"{path}:{name}")
  else:
    with open(path, encoding="utf-8") as f:
      yield from _lines(f, path)


def _lines(f, where: str) -> Iterator[dict]:
  for n, line in enumerate(f, 1):
    if line.strip():
      try:
        yield json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{where} line {n}: not JSON ({e})") from e


def mmc4_layout(doc: dict) -> tuple[list[str], list[str]]:
  """(image names in reading order, text chunks, one more than images) of an MMC4 document."""
  sentences = doc["text_list"]
  info = sorted(doc["image_info"], key=lambda i: i["matched_text_index"])  # Stable on ties.
  bounds = [i["matched_text_index"] for i in info] + [len(sentences)]
  texts = [" ".join(sentences[:bounds[0]])]
  texts += [" ".join(sentences[bounds[k]:bounds[k + 1]]) for k in range(len(info))]
  return [i["image_name"] for i in info], texts


def obelics_layout(doc: dict) -> tuple[list[str], list[str]]:
  """(image entries in order, text chunks, one more than images) of an OBELICS document."""
  if len(doc["texts"]) != len(doc["images"]):
    raise ValueError(f"OBELICS document has {len(doc['texts'])} texts and "
                     f"{len(doc['images'])} images; they must be equal-length lists")
  images, texts = [], [[]]
  for text, image in zip(doc["texts"], doc["images"]):
    if image is not None:
      images.append(image)
      texts.append([])
    elif text is not None:
      texts[-1].append(text)
  return images, ["\n\n".join(chunk) for chunk in texts]


def merge_missing(names: list[str], texts: list[str], present: list[bool]
                  ) -> tuple[list[str], list[str]]:
  """Drops absent images, joining the chunk after each onto the chunk before it."""
  kept, chunks = [], [texts[0]]
  for name, chunk, ok in zip(names, texts[1:], present):
    if ok:
      kept.append(name)
      chunks.append(chunk)
    else:
      chunks[-1] = " ".join(c for c in (chunks[-1], chunk) if c)
  return kept, chunks


class _InterleavedJsonl(manual.ManualBuilder, skip_registration=True):
  """Documents from `<split>/*.jsonl[.zip]` with images in `images/`."""

  SPLITS = ("train", "validation")

  def layout(self, doc: dict) -> tuple[list[str], list[str]]:
    """(image references, text chunks) of one document."""
    raise NotImplementedError

  def image_file(self, images: str, ref: str) -> str:
    """The file of image reference `ref`."""
    return os.path.join(images, ref)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.make_info(__doc__, {
        "images": tfds.features.Sequence(common.PNG), "texts": common.TEXTS,
        "url": tfds.features.Text()})

  def _splits(self, dl_manager):
    root = self.root(dl_manager)
    train = self.require(os.path.join(root, "train"), "folder of .jsonl documents")
    if not manual.files(train, SUFFIXES):
      raise manual.MissingDataError(f"{self.name}: {train} holds no .jsonl or .jsonl.zip "
                                    f"files. {self.DOWNLOAD}")
    images = self.require(os.path.join(root, "images"), "image folder")
    return {split: self._generate_examples(manual.files(os.path.join(root, split), SUFFIXES),
                                           images)
            for split in self.SPLITS if os.path.isdir(os.path.join(root, split))}

  def _generate_examples(self, paths: list[str], images: str):
    for path in paths:
      for n, doc in enumerate(read_jsonl(path)):
        refs, texts = self.layout(doc)
        blobs = [self.image(self.image_file(images, r), missing_ok=True) for r in refs]
        refs, texts = merge_missing(refs, texts, [b is not None for b in blobs])
        blobs = [b for b in blobs if b is not None]
        if not blobs or not any(t.strip() for t in texts):
          continue
        yield f"{os.path.basename(path)}/{n}", {"images": blobs, "texts": texts,
                                                "url": str(doc.get("url") or "")}


class MMC4(_InterleavedJsonl, skip_registration=True):
  """MMC4 documents (sentences + CLIP-matched images)."""

  name = "mmc4"
  SUBDIR = "mmc4"
  DOWNLOAD = ("Download MMC4 document shards (docs_shard_*_v2.jsonl.zip) from "
              "https://github.com/allenai/mmc4 into train/, and the images they name (their "
              "raw_url, downloaded under image_name) into images/.")

  def layout(self, doc: dict) -> tuple[list[str], list[str]]:
    return mmc4_layout(doc)


class OBELICS(_InterleavedJsonl, skip_registration=True):
  """OBELICS documents (web pages as alternating texts and images)."""

  name = "obelics"
  SUBDIR = "obelics"
  DOWNLOAD = ("Export OBELICS rows (https://huggingface.co/datasets/HuggingFaceM4/OBELICS; "
              "columns texts, images) as JSON lines into train/, and download their images "
              "into images/, named by the last path component of each URL.")

  def layout(self, doc: dict) -> tuple[list[str], list[str]]:
    return obelics_layout(doc)

  def image_file(self, images: str, ref: str) -> str:
    if "://" in ref:
      ref = os.path.basename(urllib.parse.urlparse(ref).path)
    return os.path.join(images, ref)
