"""`fashion_mnist`: Zalando's Fashion-MNIST, 70,000 28x28 greyscale article images in 10 classes.

Source: Debian dataset-fashion-mnist (`usr/share/datasets/fashion-mnist/*-idx?-ubyte.gz`, the
upstream IDX files). Splits: 'train' = the first 50,000 official training images, 'validation'
= the last 10,000 of them, 'test' = the official 10,000 test images. Images are stored at their
own 28x28 (as RGB; the pipeline resizes), whatever data.image_size says. Records carry `label`
(0-9) and `class_name`, which the zero-shot and linear-probe evaluators read; `captions` ("a
photo of a sneaker.") let the caption pipeline train two-tower models on it.
"""

from __future__ import annotations

import gzip
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from mmjax.data.builders import common, offline

PACKAGE = "dataset-fashion-mnist"
ROOT = "usr/share/datasets/fashion-mnist"
# Upstream's label order (README of zalandoresearch/fashion-mnist).
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")
NUM_VALIDATION = 10_000  # Taken from the end of the official training set.
_MAGIC = {1: 2049, 3: 2051}  # IDX magic numbers of label (1-D) and image (3-D) files.


def read_idx(path: str) -> np.ndarray:
  """An IDX file (gzip) as a uint8 array; raises ValueError naming the file when malformed."""
  with gzip.open(path, "rb") as f:
    data = f.read()
  magic = int.from_bytes(data[:4], "big")
  ndim = data[3]
  if ndim not in _MAGIC or magic != _MAGIC[ndim]:
    raise ValueError(f"{path}: not an IDX uint8 file (magic {magic:#x})")
  shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
  body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
  if body.size != int(np.prod(shape)):
    raise ValueError(f"{path}: {body.size} bytes of data for shape {shape}")
  return body.reshape(shape)


def caption(label: int) -> str:
  """CLIP-style caption of a class."""
  return f"a photo of a {CLASS_NAMES[label].lower()}."


class FashionMnist(offline.OfflineBuilder, skip_registration=True):
  """Fashion-MNIST from the Debian package (see the module docstring)."""

  CLASS_NAMES = CLASS_NAMES

  @classmethod
  def make_builder_config(cls, **config: Any) -> offline.OfflineConfig:
    """Only max_examples applies: images keep their native 28x28."""
    return offline.make_config(image_size=0, max_examples=config.get("max_examples"))

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": common.PNG,  # 28x28 RGB (grey replicated).
            "label": tfds.features.Scalar(dtype=np.int32),  # Index into CLASS_NAMES.
            "class_name": tfds.features.Text(),
            "captions": common.TEXTS,
        }),
    )

  def _load(self, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(self.package_file(PACKAGE, f"{ROOT}/{prefix}-images-idx3-ubyte.gz"))
    labels = read_idx(self.package_file(PACKAGE, f"{ROOT}/{prefix}-labels-idx1-ubyte.gz"))
    if len(images) != len(labels) or images.shape[1:] != (28, 28):
      raise ValueError(f"{prefix}: {images.shape} images for {labels.shape} labels")
    return images, labels

  def _split_generators(self, dl_manager):
    del dl_manager  # Reads installed package files only.
    train_x, train_y = self._load("train")
    test_x, test_y = self._load("t10k")
    cut = len(train_x) - NUM_VALIDATION
    parts = {"train": (train_x[:cut], train_y[:cut], 0),
             "validation": (train_x[cut:], train_y[cut:], cut),
             "test": (test_x, test_y, 0)}
    return {split: self._generate_examples(self._items(x, y, start))
            for split, (x, y, start) in parts.items()}

  def _items(self, images: np.ndarray, labels: np.ndarray, start: int):
    n = len(images) if self.builder_config.max_examples is None else min(
        len(images), self.builder_config.max_examples)
    # Keys are the index in the official file, so records are traceable to the source.
    return zip(range(start, start + n), images[:n], labels[:n])

  def _example(self, item: tuple[int, np.ndarray, np.ndarray]) -> tuple[int, dict]:
    key, image, label = item
    label = int(label)
    png = offline.png_bytes(Image.fromarray(image, "L").convert("RGB"))
    return key, {"image": png, "label": np.int32(label), "class_name": CLASS_NAMES[label],
                 "captions": [caption(label)]}
