"""Captioning benchmarks from their official files: COCO and Flickr30k in Karpathy's split JSON,
NoCaps validation in COCO caption format.

Records: `image` (PNG), `captions` (all references of the image), `image_id`, `filename`
(NoCaps adds `domain`: in-domain / near-domain / out-domain). Karpathy's splits map to ours as
train + restval -> 'train', val -> 'validation', test -> 'test' (5000 images each for COCO,
1000 for Flickr30k); NoCaps has 'validation' only (its test references are private).
"""

from __future__ import annotations

import collections
import json
import os

import tensorflow_datasets as tfds

from mmjax.data.builders import common, manual

KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "validation", "test": "test"}

_FEATURES = {"image": common.PNG, "captions": common.TEXTS, "image_id": tfds.features.Text(),
             "filename": tfds.features.Text()}


def karpathy_splits(path: str) -> dict[str, list[dict]]:
  """Our split name -> Karpathy image entries of `dataset_*.json`."""
  with open(path) as f:
    data = json.load(f)
  if "images" not in data:
    raise ValueError(f"{path}: no 'images' list; is this Karpathy's dataset_*.json?")
  out = collections.defaultdict(list)
  for entry in data["images"]:
    if entry["split"] not in KARPATHY_SPLITS:
      raise ValueError(f"{path}: image {entry.get('filename')!r} has unknown split "
                       f"{entry['split']!r}; expected one of {sorted(KARPATHY_SPLITS)}")
    out[KARPATHY_SPLITS[entry["split"]]].append(entry)
  return dict(out)


class _Karpathy(manual.ManualBuilder, skip_registration=True):
  """Karpathy-split JSON + image folder (abstract: subclasses name the files)."""

  JSON = ""  # File name of the split JSON inside SUBDIR.
  IMAGE_FOLDER = None  # Folder of all images; None: each entry's `filepath` (COCO).

  def _info(self) -> tfds.core.DatasetInfo:
    return self.make_info(__doc__, _FEATURES)

  def _splits(self, dl_manager):
    root = self.root(dl_manager)
    splits = karpathy_splits(self.require(os.path.join(root, self.JSON)))
    return {split: self._generate_examples(root, entries) for split, entries in splits.items()}

  def _generate_examples(self, root: str, entries: list[dict]):
    for entry in entries:
      folder = self.IMAGE_FOLDER or entry.get("filepath", "")
      captions = [s["raw"].strip() for s in entry["sentences"]]
      image_id = entry.get("cocoid", entry.get("imgid"))
      yield entry["filename"], {
          "image": self.image(os.path.join(root, folder, entry["filename"])),
          "captions": captions, "image_id": str(image_id), "filename": entry["filename"]}


class CocoCaptions(_Karpathy, skip_registration=True):
  """COCO Captions (2014 images) in Karpathy's split."""

  name = "coco_captions"
  SUBDIR, JSON = "coco", "dataset_coco.json"
  DOWNLOAD = ("Download Karpathy's splits (dataset_coco.json, from "
              "https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip) and "
              "the COCO 2014 images (http://images.cocodataset.org/zips/train2014.zip, "
              "http://images.cocodataset.org/zips/val2014.zip), extracted as dataset_coco.json, "
              "train2014/ and val2014/.")


class Flickr30k(_Karpathy, skip_registration=True):
  """Flickr30k in Karpathy's split."""

  name = "flickr30k"
  SUBDIR, JSON, IMAGE_FOLDER = "flickr30k", "dataset_flickr30k.json", "flickr30k-images"
  DOWNLOAD = ("Download Karpathy's splits (dataset_flickr30k.json, from "
              "https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip) and "
              "the images (flickr30k-images/, requested at "
              "https://shannon.cs.illinois.edu/DenotationGraph/).")


def coco_format_captions(path: str) -> list[dict]:
  """Per image of a COCO-format caption file: its `images` entry plus `captions` (in
  annotation order), in the file's image order."""
  with open(path) as f:
    data = json.load(f)
  for key in ("images", "annotations"):
    if key not in data:
      raise ValueError(f"{path}: no {key!r} list; is this a COCO-format caption file?")
  captions = collections.defaultdict(list)
  for ann in data["annotations"]:
    captions[ann["image_id"]].append(ann["caption"].strip())
  return [dict(image, captions=captions[image["id"]]) for image in data["images"]]


class NoCaps(manual.ManualBuilder, skip_registration=True):
  """NoCaps validation (4500 Open Images, 10 references each) in COCO caption format."""

  name = "nocaps"
  SUBDIR, JSON, IMAGE_FOLDER = "nocaps", "nocaps_val_4500_captions.json", "validation"
  DOWNLOAD = ("Download nocaps_val_4500_captions.json from https://nocaps.org/download "
              "(https://s3.amazonaws.com/nocaps/nocaps_val_4500_captions.json) and the "
              "validation images it lists (Open Images, see nocaps.org) into validation/.")

  def _info(self) -> tfds.core.DatasetInfo:
    features = dict(_FEATURES, domain=tfds.features.Text())
    return self.make_info(__doc__, features)

  def _splits(self, dl_manager):
    root = self.root(dl_manager)
    images = coco_format_captions(self.require(os.path.join(root, self.JSON)))
    return {"validation": self._generate_examples(root, images)}

  def _generate_examples(self, root: str, images: list[dict]):
    for image in images:
      if not image["captions"]:
        raise ValueError(f"{self.name}: image {image['file_name']!r} has no captions")
      yield image["file_name"], {
          "image": self.image(os.path.join(root, self.IMAGE_FOLDER, image["file_name"])),
          "captions": image["captions"], "image_id": str(image["id"]),
          "filename": image["file_name"], "domain": image.get("domain", "")}
