"""Dataset registry: where data lives, preparing a builder on first use, and loading a split as a
random-access source for grain.

`data_dir` resolution (first wins): the argument, env `MMJAX_DATA_DIR`, `~/mmjax_data`.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from typing import Any

import tensorflow_datasets as tfds

from mmjax.data import config as config_lib
from mmjax.data.builders import common, emoji, fashion_mnist, shapes, shapes_interleaved, \
    shapes_video, text, tuxpaint
from mmjax.data.builders import coco_captions, image_folder, interleaved_jsonl
from mmjax.data.builders import multiple_choice, vqa, webdataset
from mmjax.data.builders import audio_events
from mmjax.data.builders import shapes_instruct
from mmjax.data.builders import shapes_small

BUILDERS = {
    "shapes": shapes.Shapes,
    "shapes_interleaved": shapes_interleaved.ShapesInterleaved,
    "shapes_video": shapes_video.ShapesVideo,
    # Procedural sound-event clips with captions (2 s at 16 kHz; audio_world.py).
    "audio_events": audio_events.AudioEvents,
    "shapes_instruct": shapes_instruct.ShapesInstruct,
    "shapes_small": shapes_small.ShapesSmall,  # small objects on 256 px canvases (AnyRes)
    # Real data from installed Debian/npm packages (scripts/install_offline_data.sh).
    "emoji": emoji.Emoji,
    "tuxpaint": tuxpaint.Tuxpaint,
    "fashion_mnist": fashion_mnist.FashionMnist,
    "text": text.Text,
    # User-supplied copies in their official formats, read from data.manual_dir (README, "Bringing
    # your own data").
    "coco_captions": coco_captions.CocoCaptions,
    "flickr30k": coco_captions.Flickr30k,
    "nocaps": coco_captions.NoCaps,
    "vqav2": vqa.VQAv2,
    "okvqa": vqa.OKVQA,
    "gqa": vqa.GQA,
    "textvqa": vqa.TextVQA,
    "scienceqa": multiple_choice.ScienceQA,
    "mmmu": multiple_choice.MMMU,
    "imagenet": image_folder.ImageNet,
    "webdataset": webdataset.WebDataset,
    "mmc4": interleaved_jsonl.MMC4,
    "obelics": interleaved_jsonl.OBELICS,
}
SPLITS = tuple(common.SPLIT_IDS)
# The data-config size fields a builder may use (`source_kwargs` less the locations); each
# builder's make_builder_config takes the ones that apply to it and ignores the rest.
SIZE_FIELDS = frozenset({"image_size", "num_train", "num_eval", "num_frames", "kind", "shots",
                         "seed", "max_examples", "caption_styles"})


def resolve_data_dir(data_dir: str | None = None) -> str:
  """The data directory: `data_dir`, else $MMJAX_DATA_DIR, else ~/mmjax_data."""
  path = data_dir or os.environ.get("MMJAX_DATA_DIR") or "~/mmjax_data"
  return os.path.abspath(os.path.expanduser(path))


def get_builder(name: str, *, data_dir: str | None = None, **config: Any
                ) -> tfds.core.GeneratorBasedBuilder:
  """The builder for dataset `name` (not yet prepared).

  `config` holds the data-config size fields (`source_kwargs`); the builder class's
  `make_builder_config(**config)` picks the ones it uses and names its BuilderConfig after them.
  """
  if name not in BUILDERS:
    raise ValueError(f"unknown dataset {name!r}; known: {sorted(BUILDERS)}")
  unknown = sorted(set(config) - SIZE_FIELDS)
  if unknown:
    raise ValueError(f"unknown dataset size field(s) {unknown}; known: {sorted(SIZE_FIELDS)}")
  cls = BUILDERS[name]
  builder_config = cls.make_builder_config(**config)
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


def prepare(name: str, *, data_dir: str | None = None, manual_dir: str | None = None,
            **config: Any) -> tfds.core.GeneratorBasedBuilder:
  """Builds dataset `name` into array_record files unless already there; returns the builder.

  `manual_dir` is where builders of user-supplied copies (COCO, VQAv2, ...) read the official
  files from (tfds' manual_dir; None: DATA_DIR/downloads/manual).
  """
  tfds.disable_progress_bar()  # Keeps logs of training runs and CI readable.
  download_config = tfds.download.DownloadConfig(
      manual_dir=os.path.abspath(os.path.expanduser(manual_dir)) if manual_dir else None)
  # One process at a time builds a dataset (parallel sweep workers, several runs on one
  # machine): two concurrent builds would race on tfds' final rename. The builder is made under
  # the lock so a process that waited sees the other's files and reuses them.
  root = resolve_data_dir(data_dir)
  os.makedirs(root, exist_ok=True)
  with open(os.path.join(root, f".{name}.lock"), "w", encoding="utf-8") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      builder = get_builder(name, data_dir=data_dir, **config)
      # A no-op when the files exist (tfds checks the dataset_info in the versioned directory).
      builder.download_and_prepare(file_format="array_record", download_config=download_config)
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
  return builder


def source_kwargs(data_config: Any) -> dict[str, Any]:
  """The data-config fields that locate and size a dataset (for `load_source` / `prepare`)."""
  return dict(data_dir=data_config.data_dir, manual_dir=data_config.manual_dir,
              image_size=data_config.image_size, num_train=data_config.num_train,
              num_eval=data_config.num_eval, num_frames=config_lib.source_frames(data_config),
              kind=data_config.interleaved_kind, shots=data_config.shots,
              # .get: config.json files of runs from before the fields existed lack them.
              max_examples=data_config.get("max_examples"),
              caption_styles=tuple(data_config.get("caption_styles", ()) or ()))


def load_source(name: str, split: str, *, data_dir: str | None = None,
                manual_dir: str | None = None, **config: Any):
  """Split `split` of dataset `name` as a grain-compatible random-access source.

  Prepares the dataset on first use (generated ones need nothing but pip packages).
  """
  builder = prepare(name, data_dir=data_dir, manual_dir=manual_dir, **config)
  sources = builder.as_data_source()
  if split not in sources:
    raise ValueError(f"unknown split {split!r} for {name!r}; it has {sorted(sources)}")
  return sources[split]


def class_names(name: str, *, data_dir: str | None = None, manual_dir: str | None = None,
                **config: Any) -> list[str]:
  """Class names of a classification dataset in label order, for zero-shot classifiers and
  probes: a builder's fixed `CLASS_NAMES` (fashion_mnist), else its prepared copy's metadata
  (imagenet's class folders; prepared on first use)."""
  if name not in BUILDERS:
    raise ValueError(f"unknown dataset {name!r}; known: {sorted(BUILDERS)}")
  names = getattr(BUILDERS[name], "CLASS_NAMES", None)
  if names is not None:
    return list(names)
  if not getattr(BUILDERS[name], "CLASS_NAMES_IN_METADATA", False):
    labelled = sorted(n for n, b in BUILDERS.items() if getattr(b, "CLASS_NAMES", None) or
                      getattr(b, "CLASS_NAMES_IN_METADATA", False))
    raise ValueError(f"dataset {name!r} has no class labels; labelled datasets: {labelled}")
  builder = prepare(name, data_dir=data_dir, manual_dir=manual_dir, **config)
  metadata = builder.info.metadata or {}
  if "class_names" not in metadata:
    raise ValueError(f"dataset {name!r} has no class names (not a classification dataset)")
  return list(metadata["class_names"])
