"""Image decoding and augmentation for the pipelines (Pillow + numpy, per example).

Evaluation preprocessing matches open_clip's `image_transform(size, is_train=False)`: bicubic
resize of the shorter side to `size`, centre crop, scale to [0, 1], normalise with mean/std.
Training uses open_clip's RandomResizedCrop (scale (0.9, 1.0) by default) plus an optional
horizontal flip, which the caller allows only when the text has no left/right words.
"""

from __future__ import annotations

import io
import math
import re
from typing import Sequence

import numpy as np
from PIL import Image

# Constants of the models whose weights we import (same values as open_clip.constants).
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# The batch contract's default: x / 127.5 - 1, i.e. [-1, 1].
UNIT_MEAN = (0.5, 0.5, 0.5)
UNIT_STD = (0.5, 0.5, 0.5)

_DIRECTION_WORDS = re.compile(r"\b(left|right)\b", re.IGNORECASE)


class BadExample(ValueError):
  """An example that cannot be used; `field` names the offending feature."""

  def __init__(self, field: str, reason: str):
    super().__init__(f"field {field!r}: {reason}")
    self.field = field


def decode_png(data: bytes, field: str = "image") -> Image.Image:
  """Decodes image bytes fully; raises BadExample for truncated/corrupt data or a non-RGB mode."""
  if not isinstance(data, (bytes, bytearray)) or not data:
    raise BadExample(field, "empty or not bytes")
  try:
    img = Image.open(io.BytesIO(data))
    img.load()  # Forces the full decode, so a truncated file fails here, not later.
  except (OSError, SyntaxError, ValueError) as e:  # PIL raises all three for corrupt files.
    raise BadExample(field, f"cannot decode image ({type(e).__name__}: {e})") from e
  if img.mode != "RGB":
    raise BadExample(field, f"image mode is {img.mode!r}, expected 'RGB'")
  return img


def flip_allowed(texts: Sequence[str]) -> bool:
  """A horizontal flip keeps the text true only when no text mentions left or right."""
  return not any(_DIRECTION_WORDS.search(t) for t in texts)


def resize_centre_crop(img: Image.Image, size: int) -> Image.Image:
  """open_clip eval transform geometry: torchvision Resize(size, BICUBIC) then CenterCrop(size)."""
  w, h = img.size
  short, long = (w, h) if w <= h else (h, w)
  if short != size:
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    img = img.resize((new_w, new_h), Image.BICUBIC)
  w, h = img.size
  # torchvision's CenterCrop rounds the offsets this way.
  top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
  return img.crop((left, top, left + size, top + size))


def random_resized_crop_box(width: int, height: int, rng: np.random.Generator,
                            scale: Sequence[float] = (0.9, 1.0),
                            ratio: Sequence[float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
  """torchvision RandomResizedCrop.get_params with a numpy generator: (left, top, w, h)."""
  area = width * height
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target_area = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(*log_ratio))
    w = int(round(math.sqrt(target_area * aspect)))
    h = int(round(math.sqrt(target_area / aspect)))
    if 0 < w <= width and 0 < h <= height:
      top = int(rng.integers(0, height - h + 1))
      left = int(rng.integers(0, width - w + 1))
      return left, top, w, h
  # Fallback to a centre crop of the clamped ratio, as torchvision does.
  in_ratio = width / height
  if in_ratio < min(ratio):
    w, h = width, int(round(width / min(ratio)))
  elif in_ratio > max(ratio):
    w, h = int(round(height * max(ratio))), height
  else:
    w, h = width, height
  return (width - w) // 2, (height - h) // 2, w, h


def to_array(img: Image.Image, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
  """[H, W, 3] float32: pixels / 255, then (x - mean) / std per channel."""
  x = np.asarray(img, dtype=np.float32) / 255.0
  return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def process_images(images: Sequence[Image.Image], size: int, *, train: bool,
                   rng: np.random.Generator | None, mean: Sequence[float], std: Sequence[float],
                   random_crop: bool = True, crop_scale: Sequence[float] = (0.9, 1.0),
                   flip: bool = False) -> np.ndarray:
  """[N, size, size, 3] from N images sharing one crop/flip draw (frames of a clip, or one image).

  `flip` says whether a flip is valid for this example; in training it then happens with p=0.5.
  """
  box, do_flip = None, False
  if train and rng is not None:
    if random_crop:
      box = random_resized_crop_box(*images[0].size, rng, crop_scale)
    do_flip = flip and rng.random() < 0.5
  out = []
  for img in images:
    if box is not None:
      left, top, w, h = box
      img = img.resize((size, size), Image.BICUBIC, box=(left, top, left + w, top + h))
    else:
      img = resize_centre_crop(img, size)
    if do_flip:
      img = img.transpose(Image.FLIP_LEFT_RIGHT)
    out.append(to_array(img, mean, std))
  return np.stack(out)
