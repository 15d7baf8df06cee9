"""`shapes_small`: the `shapes` scenes with small objects on a large canvas, the case that
high-resolution tiling (AnyRes / Monkey, mmjax/data/anyres.py) is for.

Every example is the `shapes` example of the same (seed, split, index) — scene, captions,
questions and answers are identical — rendered on a CANVAS = 256 px canvas with each object's
radius multiplied by OBJECT_SCALE = 0.375: objects are ~14 px ('small') to ~25 px ('large')
across, 0.6-1% of the canvas area. Downsampled whole to 64 px they shrink to 4-6 px and shapes
blur together; a 2 x 2 grid of 64 px tiles sees them at 7-12 px, close to the 10-17 px at
which `shapes` shows them at 64 px (what the tiny CLIP tower is pre-trained on). The canvas size
is fixed (data.image_size is the tile / encoder size the pipeline produces, not the stored
size).
"""

from __future__ import annotations

from typing import Any

from mmjax.data import shapes_world as world
from mmjax.data.builders import common, shapes

CANVAS = 256  # Stored image side, pixels.
OBJECT_SCALE = 0.375  # Object radius relative to `shapes` (world.SIZES * CANVAS * this).


def generate_example(config: common.ShapesConfig, split: str, index: int,
                     render: bool = True) -> dict:
  """Example `index` of `split`: the `shapes` record with the small-object rendering."""
  ex = shapes.generate_example(config, split, index, render=False)
  if render:
    scene = world.Scene.from_json(ex["scene"])
    ex["image"] = world.png_bytes(world.render(scene, CANVAS, scale=OBJECT_SCALE))
  return ex


class ShapesSmall(shapes.Shapes):
  """`shapes` scenes, small objects on a 256 px canvas (see the module docstring)."""

  @classmethod
  def make_builder_config(cls, **config: Any) -> common.ShapesConfig:
    """As `shapes`, but the stored size is always CANVAS whatever data.image_size says."""
    config.pop("max_examples", None)
    config["image_size"] = CANVAS
    config["caption_styles"] = tuple(config.get("caption_styles", ()))
    return common.make_config(**config)

  def _generate_examples(self, split: str, num: int):
    for i in range(num):
      yield i, generate_example(self.builder_config, split, i)
