"""Image-text pairs in webdataset tar shards (LAION / CC3M / CC12M as img2dataset writes them):
`<split>/*.tar`, each sample the files `<key>.jpg|jpeg|png|webp`, `<key>.txt` (the caption) and
optionally `<key>.json` (metadata), stored next to each other.

Read with the standard library's tarfile (the `webdataset` package is not needed to read;
the tests write their shards with `webdataset.TarWriter`). As webdataset does, a sample's key is
the member path up to the first '.' of its file name, and consecutive members with the same key
form one sample. Samples without an image or a caption are dropped and counted (web-scale
copies routinely lose some downloads). Records: `image` (PNG), `captions` ([the txt]), `key`
(`<shard>/<key>`), `meta` (the json text, or '').
"""

from __future__ import annotations

import itertools
import logging
import os
import tarfile
from typing import Iterator

import tensorflow_datasets as tfds

from mmjax.data.builders import common, manual

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")  # tarfile reads the compressed ones transparently.


def split_key(member_name: str) -> tuple[str, str]:
  """(key, extension) of a shard member, webdataset's rule: split at the first '.' of the
  file name (so `dir/a.b.jpg` is key `dir/a`, extension `b.jpg`)."""
  folder, name = os.path.split(member_name)
  stem, _, ext = name.partition(".")
  return os.path.join(folder, stem), ext.lower()


def read_shard(path: str) -> Iterator[tuple[str, dict[str, bytes]]]:
  """(key, {extension: bytes}) per sample of tar shard `path`, in stored order."""
  with tarfile.open(path, "r:*") as tar:
    members = (m for m in tar if m.isfile())
    for key, group in itertools.groupby(members, key=lambda m: split_key(m.name)[0]):
      sample = {}
      for m in group:
        sample[split_key(m.name)[1]] = tar.extractfile(m).read()
      yield key, sample


class WebDataset(manual.ManualBuilder, skip_registration=True):
  """Captioned images in webdataset shards: 'train' and, if present, 'validation'."""

  name = "webdataset"
  SUBDIR = "webdataset"
  SPLITS = ("train", "validation")
  DOWNLOAD = ("Write shards of image+caption pairs with img2dataset (https://github.com/rom1504/"
              "img2dataset, --output_format webdataset) from LAION / CC3M / CC12M url lists, "
              "into train/*.tar (and optionally validation/*.tar).")

  def _info(self) -> tfds.core.DatasetInfo:
    return self.make_info(__doc__, {
        "image": common.PNG, "captions": common.TEXTS, "key": tfds.features.Text(),
        "meta": tfds.features.Text()})

  def _splits(self, dl_manager):
    root = self.root(dl_manager)
    train = self.require(os.path.join(root, "train"), "folder of .tar shards")
    if not manual.files(train, SHARD_SUFFIXES):
      raise manual.MissingDataError(f"{self.name}: {train} holds no .tar (.tar.gz, .tgz) "
                                    f"shards. {self.DOWNLOAD}")
    return {split: self._generate_examples(
        manual.files(os.path.join(root, split), SHARD_SUFFIXES))
            for split in self.SPLITS if os.path.isdir(os.path.join(root, split))}

  def _generate_examples(self, shards: list[str]):
    dropped = 0
    for shard in shards:
      for key, sample in read_shard(shard):
        ext = next((e for e in IMAGE_EXTENSIONS if e in sample), None)
        caption = sample.get("txt", b"").decode("utf-8").strip()
        if ext is None or not caption:
          dropped += 1
          continue
        name = f"{os.path.basename(shard)}/{key}"
        yield name, {"image": self.image_bytes(sample[ext], name), "captions": [caption],
                     "key": name, "meta": sample.get("json", b"").decode("utf-8")}
    if dropped:
      logging.warning("%s: dropped %d samples without an image or a caption", self.name, dropped)
    self.missing_images += dropped
