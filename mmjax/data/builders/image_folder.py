"""Classification data in ImageNet's class-folder layout, for zero-shot evaluation and probes:
`<split folder>/<wnid>/*.JPEG` plus a file of human-readable class names.

The label of a folder is its index among the sorted class folders of 'train' (torchvision's
ImageFolder order, which CLIP's published ImageNet class-name list follows). Class names come from
`classnames.txt` (one name per line, in that order; e.g. open_clip's IMAGENET_CLASSNAMES) or,
failing that, `LOC_synset_mapping.txt` (`n01440764 tench, Tinca tinca` per line; the first name
is used). Records: `image` (PNG), `label`, `class_name`, `wnid`, `filename`.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

from mmjax.data.builders import common, manual

IMAGE_SUFFIXES = (".JPEG", ".jpeg", ".jpg", ".JPG", ".png", ".PNG")


def read_class_names(root: str, wnids: list[str]) -> list[str]:
  """Names of the sorted `wnids` from classnames.txt or LOC_synset_mapping.txt under `root`."""
  plain = os.path.join(root, "classnames.txt")
  if os.path.exists(plain):
    with open(plain) as f:
      names = [line.strip() for line in f if line.strip()]
    if len(names) != len(wnids):
      raise ValueError(f"{plain} has {len(names)} names for {len(wnids)} class folders")
    return names
  mapping = os.path.join(root, "LOC_synset_mapping.txt")
  if not os.path.exists(mapping):
    raise manual.MissingDataError(
        f"class names: neither {plain} (one name per line, in sorted folder order) nor "
        f"{mapping} ('<wnid> <name>, <synonyms>' per line) exists")
  names = {}
  with open(mapping) as f:
    for line in f:
      if line.strip():
        wnid, _, rest = line.strip().partition(" ")
        names[wnid] = rest.split(",")[0].strip()
  missing = [w for w in wnids if w not in names]
  if missing:
    raise ValueError(f"{mapping} has no name for class folder(s) {missing[:5]}")
  return [names[w] for w in wnids]


class ImageNet(manual.ManualBuilder, skip_registration=True):
  """ImageNet-1k (or any ImageNet-layout copy): 'train' and 'validation' (folder val/)."""

  name = "imagenet"
  # The class names are the copy's own (its synset mapping), kept in the prepared metadata.
  CLASS_NAMES_IN_METADATA = True
  SUBDIR = "imagenet"
  SPLITS = {"train": "train", "validation": "val"}
  DOWNLOAD = ("Download ILSVRC2012 from https://image-net.org/download.php (or the Kaggle "
              "ImageNet Object Localization Challenge, which includes LOC_synset_mapping.txt), "
              "extract train/<wnid>/*.JPEG and val/<wnid>/*.JPEG (the validation images sorted "
              "into class folders, e.g. with the widely used valprep.sh), and add classnames.txt "
              "or LOC_synset_mapping.txt.")

  def _info(self) -> tfds.core.DatasetInfo:
    # metadata.json of the prepared copy keeps the full class-name list (label order), which
    # zero-shot classification needs even when a split holds only some classes.
    return self.make_info(__doc__, metadata=tfds.core.MetadataDict(), features={
        "image": common.PNG, "label": tfds.features.Scalar(dtype=np.int32),
        "class_name": tfds.features.Text(), "wnid": tfds.features.Text(),
        "filename": tfds.features.Text()})

  def _splits(self, dl_manager):
    root = self.root(dl_manager)
    train = self.require(os.path.join(root, "train"), "folder")
    wnids = sorted(d for d in os.listdir(train) if os.path.isdir(os.path.join(train, d)))
    if not wnids:
      raise manual.MissingDataError(f"{train} has no class folders. {self.DOWNLOAD}")
    names = read_class_names(root, wnids)
    self.info.metadata["class_names"] = names
    self.info.metadata["wnids"] = wnids
    out = {}
    for ours, folder in self.SPLITS.items():
      path = os.path.join(root, folder)
      if os.path.isdir(path):
        if not any(os.path.isdir(os.path.join(path, d)) for d in os.listdir(path)):
          # The official validation archive is flat (ILSVRC2012_val_*.JPEG): labels live in the
          # devkit, which this reader does not parse.
          raise ValueError(f"{self.name}: {path} has no <wnid>/ class folders; sort its images "
                           "into class folders (e.g. with valprep.sh) first")
        out[ours] = self._generate_examples(path, wnids, names)
    return out

  def _generate_examples(self, folder: str, wnids: list[str], names: list[str]):
    index = {w: i for i, w in enumerate(wnids)}
    for wnid in sorted(os.listdir(folder)):
      if not os.path.isdir(os.path.join(folder, wnid)):
        continue
      if wnid not in index:
        raise ValueError(f"{folder}/{wnid} is not a class folder of train/")
      for path in manual.files(os.path.join(folder, wnid), IMAGE_SUFFIXES):
        name = os.path.basename(path)
        yield f"{wnid}/{name}", {"image": self.image(path), "label": np.int32(index[wnid]),
                                 "class_name": names[index[wnid]], "wnid": wnid,
                                 "filename": name}
