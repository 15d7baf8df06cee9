"""Pieces shared by the shapes builders: the size/seed config and per-example generators.

Every example is a pure function of (seed, split, index): its generator is
`np.random.default_rng([seed, SPLIT_IDS[split], index])`, so a split is reproducible, examples are
independent of generation order, and the tokenizer can regenerate the training text without images.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from mmjax.data import shapes_world as world

# Stable ids of the splits (part of every example's seed; never renumber).
SPLIT_IDS = {"train": 0, "validation": 1, "test": 2, "heldout": 3}

# Images and frames are stored as PNG bytes: tfds' Image feature decodes through TensorFlow,
# which we do not install; the grain pipeline decodes with Pillow.
PNG = tfds.features.Tensor(shape=(), dtype=np.object_)
TEXTS = tfds.features.Sequence(tfds.features.Text())
# Nested ragged sequences need TensorFlow to serialise, so the 10 answers per question are a
# rectangular [num_questions, 10] string tensor.
ANSWERS = tfds.features.Tensor(shape=(None, 10), dtype=np.object_)


# What shapes_interleaved holds: M3W-like documents, few-shot episodes of the shapes tasks (with
# each caption in any template, or, 'styled_episodes', every caption of an episode in one house
# style), or fast-binding episodes that name two colours with new words.
KINDS = ("documents", "episodes", "styled_episodes", "binding")


@dataclasses.dataclass(eq=False)
class ShapesConfig(tfds.core.BuilderConfig):
  """Size of the generated dataset. The config name encodes every field (see `make_config`)."""
  image_size: int = 64  # Side of the square images, in pixels.
  num_train: int = 4096  # Examples in the 'train' split.
  num_eval: int = 256  # Examples in each of 'validation', 'test' and 'heldout'.
  seed: int = 0  # Base seed of every split.
  num_frames: int = 8  # Frames per clip (shapes_video only).
  # shapes_interleaved only: one of KINDS (see shapes_interleaved.py).
  kind: str = "documents"
  # Support examples per few-shot episode (kind='episodes' / 'styled_episodes'), or per word
  # (kind='binding').
  shots: int = 4
  # shapes / shapes_small only: the caption styles (shapes_world.CAPTION_STYLES names) the
  # stored captions are drawn from; empty: every style the scene has (the original data).
  caption_styles: tuple[str, ...] = ()


def make_config(*, image_size: int = 64, num_train: int = 4096, num_eval: int = 256,
                seed: int = 0, num_frames: int = 8, kind: str = "documents",
                shots: int = 4, caption_styles: tuple[str, ...] = ()) -> ShapesConfig:
  """A config whose name spells out its fields, so different sizes or captions never share a
  directory (a default field adds nothing to the name, so existing prepared data keeps its
  name)."""
  if kind not in KINDS:
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
  caption_styles = tuple(caption_styles)
  unknown = sorted(set(caption_styles) - set(world.CAPTION_STYLES))
  if unknown:
    raise ValueError(f"data.caption_styles has unknown style(s) {unknown}; known: "
                     f"{world.CAPTION_STYLES}")
  for field, value in (("image_size", image_size), ("num_train", num_train),
                       ("num_eval", num_eval), ("num_frames", num_frames), ("shots", shots)):
    if value < 1:
      raise ValueError(f"{field} must be >= 1, got {value}")
  name = f"{image_size}px_n{num_train}_e{num_eval}_s{seed}_t{num_frames}_{kind}_k{shots}"
  if caption_styles:
    name += "_c" + "+".join(caption_styles)
  return ShapesConfig(name=name, image_size=image_size, num_train=num_train, num_eval=num_eval,
                      seed=seed, num_frames=num_frames, kind=kind, shots=shots,
                      caption_styles=caption_styles)


def split_sizes(config: ShapesConfig) -> dict[str, int]:
  """Examples per split."""
  return {"train": config.num_train, "validation": config.num_eval, "test": config.num_eval,
          "heldout": config.num_eval}


def example_rng(config: ShapesConfig, split: str, index: int) -> np.random.Generator:
  """The generator that determines example `index` of `split`."""
  return np.random.default_rng([config.seed, SPLIT_IDS[split], index])


def heldout_mode(split: str) -> str:
  """Held-out (colour, shape) pairs appear only, and always, in the 'heldout' split."""
  return "require" if split == "heldout" else "exclude"


class ProceduralBuilder(tfds.core.GeneratorBasedBuilder):
  """What every generated (shapes*) builder shares: version, config class, default config.

  Abstract (no `_info` / `_split_generators` / `_generate_examples`), so tfds does not register
  it as a dataset of its own.
  """

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIG_CLASS = ShapesConfig
  # tfds looks for a checksums file beside the builder's code through importlib_resources, which
  # it does not install; procedural builders download nothing, so there is no code path to read.
  code_path = None
  BUILDER_CONFIGS = [make_config()]
  # Whether the builder's captions follow data.caption_styles (only `shapes` and its variants
  # store shapes_world captions); the others drop the field so their names never change.
  USES_CAPTION_STYLES = False

  @classmethod
  def make_builder_config(cls, **config: Any) -> ShapesConfig:
    """The BuilderConfig for the data-config size fields (see `mmjax.data.datasets`);
    `max_examples` (a cap for the real datasets) does not apply to generated ones."""
    config.pop("max_examples", None)
    if not cls.USES_CAPTION_STYLES:
      config.pop("caption_styles", None)
    return make_config(**config)
