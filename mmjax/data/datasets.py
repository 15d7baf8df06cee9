"""Dataset registry: where data lives, preparing a builder on first use, and loading a split as a
random-access source for grain.

`data_dir` resolution (first wins): the argument, env `MMJAX_DATA_DIR`, `~/mmjax_data`.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import tensorflow_datasets as tfds

from mmjax.data.builders import common, shapes, shapes_interleaved, shapes_video

BUILDERS = {
    "shapes": shapes.Shapes,
    "shapes_interleaved": shapes_interleaved.ShapesInterleaved,
    "shapes_video": shapes_video.ShapesVideo,
}
SPLITS = tuple(common.SPLIT_IDS)


def resolve_data_dir(data_dir: str | None = None) -> str:
  """The data directory: `data_dir`, else $MMJAX_DATA_DIR, else ~/mmjax_data."""
  path = data_dir or os.environ.get("MMJAX_DATA_DIR") or "~/mmjax_data"
  return os.path.abspath(os.path.expanduser(path))


def get_builder(name: str, *, data_dir: str | None = None, **config: Any
                ) -> tfds.core.GeneratorBasedBuilder:
  """The builder for dataset `name` with `common.make_config(**config)` (not yet prepared)."""
  if name not in BUILDERS:
    raise ValueError(f"unknown dataset {name!r}; known: {sorted(BUILDERS)}")
  builder_config = common.make_config(**config)
  cls = BUILDERS[name]
  # tfds refuses a custom config named like one of the class's own: pass that one by name.
  if builder_config.name in {c.name for c in getattr(cls, "BUILDER_CONFIGS", [])}:
    builder_config = builder_config.name
  root = resolve_data_dir(data_dir)
  # tfds makes (and leaves) a scratch directory via tempfile while it builds an unprepared
  # builder's info; keep it inside the data directory the user named, not in /tmp.
  scratch = os.path.join(root, "tmp")
  os.makedirs(scratch, exist_ok=True)
  previous, tempfile.tempdir = tempfile.tempdir, scratch
  try:
    return cls(config=builder_config, data_dir=root, file_format="array_record")
  finally:
    tempfile.tempdir = previous


def prepare(name: str, *, data_dir: str | None = None, **config: Any
            ) -> tfds.core.GeneratorBasedBuilder:
  """Builds dataset `name` into array_record files unless already there; returns the builder."""
  builder = get_builder(name, data_dir=data_dir, **config)
  tfds.disable_progress_bar()  # Keeps logs of training runs and CI readable.
  # A no-op when the files exist (tfds checks the dataset_info in the versioned directory).
  builder.download_and_prepare(file_format="array_record")
  return builder


def load_source(name: str, split: str, *, data_dir: str | None = None, **config: Any):
  """Split `split` of dataset `name` as a grain-compatible random-access source.

  Prepares the dataset on first use, which needs nothing but pip packages.
  """
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r} for {name!r}; known: {SPLITS}")
  return prepare(name, data_dir=data_dir, **config).as_data_source()[split]
