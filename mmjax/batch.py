"""The batch contract: the one table of keys, shapes and dtypes that pipelines produce and
models consume.

Every pipeline in `mmjax.data` yields dicts whose keys are a subset of `BATCH_SPEC`, and every
model family declares which keys it needs (`ModelFamily.batch_keys`). Shapes use these letters:

  B  batch            L  text length (tokens)      H, W  image height / width
  M  media per row    T  frames per media item     C = 3 colour channels
  S  audio samples (16 kHz)

| key              | shape             | dtype   | meaning                                                 |
|------------------|-------------------|---------|---------------------------------------------------------|
| image            | [B, H, W, 3]      | float32 | one image per row, normalised per the model's preprocessing (default: [-1, 1]) |
| media            | [B, M, T, H, W, 3]| float32 | interleaved images / video frames (T=1 for stills), same normalisation |
| media_mask       | [B, M]            | bool    | True where media slot m holds a real item (rows have up to M media)      |
| text             | [B, L]            | int32   | text-tower input of two-tower models (CLIP/SigLIP/CoCa), right-padded with `pad_id` |
| text_neg         | [B, L]            | int32   | a hard-negative text per row (data.hard_negatives: the caption with one shape swapped), like `text` |
| tokens           | [B, L]            | int32   | decoder-LM input sequence (LM, Flamingo), right-padded |
| media_locations  | [B, L]            | bool    | True at the `<image>` token of each media item, in order of `media` |
| loss_mask        | [B, L]            | float32 | weight of the next-token loss for predicting tokens[:, t] from positions < t; 0 on padding, prompts and t = 0 |
| labels           | [B]               | int32   | class index (classification, linear probe)             |
| audio            | [B, S]            | float32 | one mono waveform per row in [-1, 1] at 16 kHz; models compute their log-mel features (models/audio/melspec.py) |
| tile_mask        | [B, M, T]         | bool    | AnyRes tiling only (data.anyres_grids): True at real tiles on the frame axis (0: thumbnail), False at padding |

The next-token convention: logits at position t predict `tokens[:, t + 1]`; the loss for target
position t (t >= 1) is weighted by `loss_mask[:, t]`. `loss_mask[:, 0]` is therefore always ignored.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

IMAGE = "image"
MEDIA = "media"
MEDIA_MASK = "media_mask"
TEXT = "text"
TEXT_NEG = "text_neg"
TOKENS = "tokens"
MEDIA_LOCATIONS = "media_locations"
LOSS_MASK = "loss_mask"
LABELS = "labels"
AUDIO = "audio"
TILE_MASK = "tile_mask"


@dataclasses.dataclass(frozen=True)
class KeySpec:
  """Rank and dtype kind of one batch entry (sizes vary by config)."""
  dims: str  # One letter per axis, as in the module docstring table.
  dtype: str  # numpy dtype name the pipelines produce.
  doc: str


BATCH_SPEC: Mapping[str, KeySpec] = {
    IMAGE: KeySpec("BHWC", "float32", "one image per row, normalised"),
    MEDIA: KeySpec("BMTHWC", "float32", "interleaved images / video frames"),
    MEDIA_MASK: KeySpec("BM", "bool", "real media slots"),
    TEXT: KeySpec("BL", "int32", "text-tower tokens, right-padded"),
    TEXT_NEG: KeySpec("BL", "int32", "hard-negative text-tower tokens, right-padded"),
    TOKENS: KeySpec("BL", "int32", "decoder-LM tokens, right-padded"),
    MEDIA_LOCATIONS: KeySpec("BL", "bool", "<image> token positions"),
    LOSS_MASK: KeySpec("BL", "float32", "next-token loss weight per target"),
    LABELS: KeySpec("B", "int32", "class index"),
    AUDIO: KeySpec("BS", "float32", "mono waveform at 16 kHz"),
    TILE_MASK: KeySpec("BMT", "bool", "real AnyRes tiles on the media frame axis"),
}


class BatchError(ValueError):
  """A batch that breaks the contract; the message names the key."""


def validate_batch(batch: Mapping[str, object], required: Sequence[str] = ()) -> None:
  """Checks keys, ranks, dtypes and a shared batch size; raises BatchError naming the key.

  Cheap (shape metadata only), so pipelines and the trainer call it on the first batch.
  """
  missing = [k for k in required if k not in batch]
  if missing:
    raise BatchError(f"batch is missing key(s) {missing}; it has {sorted(batch)}")
  batch_size = None
  lengths = {}
  for key, value in batch.items():
    if key not in BATCH_SPEC:
      raise BatchError(f"unknown batch key {key!r}; known keys are {sorted(BATCH_SPEC)}")
    spec = BATCH_SPEC[key]
    shape = tuple(np.shape(value))
    if len(shape) != len(spec.dims):
      raise BatchError(f"batch[{key!r}] must have shape [{', '.join(spec.dims)}] "
                       f"(rank {len(spec.dims)}), got {shape}")
    dtype = np.dtype(getattr(value, "dtype", np.asarray(value).dtype))
    want = np.dtype(spec.dtype)
    if dtype.kind != want.kind:
      raise BatchError(f"batch[{key!r}] must be {spec.dtype}, got {dtype}")
    if spec.dims.endswith("C") and shape[-1] != 3:
      raise BatchError(f"batch[{key!r}] must have 3 colour channels last, got shape {shape}")
    if batch_size is None:
      batch_size = shape[0]
    elif shape[0] != batch_size:
      raise BatchError(f"batch[{key!r}] has batch size {shape[0]}, other keys have {batch_size}")
    if "L" in spec.dims:
      lengths[key] = shape[spec.dims.index("L")]
  lm_lengths = {k: v for k, v in lengths.items() if k != TEXT}
  if len(set(lm_lengths.values())) > 1:
    raise BatchError(f"tokens, media_locations and loss_mask must share length L, got {lm_lengths}")
