"""`tuxpaint`: Tux Paint's photo and drawing cut-outs, each with its one-sentence description.

Source: Debian tuxpaint-stamps-default, `usr/share/tuxpaint/stamps/<category>/.../<stamp>.png`
beside `<stamp>.txt`, whose first line is the English description ("A frog."); the other lines
are translations. The 785 PNG stamps with a description are used (SVG-only stamps need an SVG
renderer and are left out). Cut-outs are composited on white and padded to a square, so the
pipeline's centre crop keeps the whole object. Splits 'train' / 'validation' / 'test' (80/10/10)
are hashed on the stamp's path without a trailing '-N' / '_N' variant number, so the variants
of one stamp (frog-1, frog) share a split.
"""

from __future__ import annotations

import os
import re

import tensorflow_datasets as tfds
from PIL import Image

from mmjax.data.builders import common, offline

PACKAGE = "tuxpaint-stamps-default"
STAMPS = "usr/share/tuxpaint/stamps"
_VARIANT = re.compile(r"[-_]?\d+$")


def description(txt_path: str) -> str:
  """The English description: the first line of the stamp's .txt (UTF-8, stripped)."""
  with open(txt_path, encoding="utf-8", errors="replace") as f:
    return f.readline().strip()


def stamp_index(stamps_dir: str) -> list[tuple[str, str]]:
  """(path relative to `stamps_dir` without '.png', description) of every PNG stamp with a
  non-empty description, sorted by path."""
  out = []
  for root, _, files in os.walk(stamps_dir):
    for name in files:
      if not name.endswith(".png"):
        continue
      stem = os.path.join(root, name[:-4])
      if os.path.exists(stem + ".txt"):
        text = description(stem + ".txt")
        if text:
          out.append((os.path.relpath(stem, stamps_dir), text))
  return sorted(out)


def split_key(relpath: str) -> str:
  """What a stamp's split is hashed on: its path without a trailing variant number."""
  return _VARIANT.sub("", relpath)


class Tuxpaint(offline.OfflineBuilder, skip_registration=True):
  """Tux Paint stamps with their English descriptions (see the module docstring)."""

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": common.PNG,
            "captions": common.TEXTS,  # [the English description].
            "stamp": tfds.features.Text(),  # Path under stamps/, e.g. 'animals/amphibians/frog'.
            "category": tfds.features.Text(),  # Its directory, e.g. 'animals/amphibians'.
        }),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Reads installed package files only.
    stamps_dir = self.package_file(PACKAGE, STAMPS)
    index = stamp_index(stamps_dir)
    if not index:
      raise offline.MissingOfflineData(f"no PNG stamps with descriptions under {stamps_dir}; "
                                       f"reinstall {PACKAGE} with {offline.INSTALL_SCRIPT}")
    splits = {"train": [], "validation": [], "test": []}
    for relpath, text in index:
      splits[offline.hashed_split(split_key(relpath))].append((relpath, text))
    self._stamps_dir = stamps_dir  # pylint: disable=attribute-defined-outside-init
    return {split: self._generate_examples(offline.cap(items, self.builder_config))
            for split, items in splits.items()}

  def _example(self, item: tuple[str, str]) -> tuple[str, dict]:
    relpath, text = item
    with Image.open(os.path.join(self._stamps_dir, relpath + ".png")) as img:
      png = offline.fit_square_png(img, self.builder_config.image_size)
    return relpath, {"image": png, "captions": [text], "stamp": relpath,
                     "category": os.path.dirname(relpath)}
