"""`shapes_video`: clips of `num_frames` frames with moving objects, captions and questions
about motion and order (which way, whether, how many, which first)."""

from __future__ import annotations

import json

import numpy as np
import tensorflow_datasets as tfds

from mmjax.data import shapes_world as world
from mmjax.data.builders import common


def generate_clip(config: common.ShapesConfig, split: str, index: int) -> dict:
  """Clip `index` of `split`: PNG frames plus text and the scene/motion description."""
  rng = common.example_rng(config, split, index)
  # At most 4 objects: fewer collisions while moving, and order questions stay readable.
  scene = world.sample_scene(rng, max_objects=4, heldout=common.heldout_mode(split))
  motions = world.sample_motions(scene, rng, config.num_frames)
  frames = [world.png_bytes(world.render(
      scene, config.image_size, world.positions_at(scene, motions, t, config.num_frames)))
            for t in range(config.num_frames)]
  caps, qas = world.video_text(scene, motions, rng)
  return {
      "frames": frames,
      "captions": caps,
      "questions": [q.question for q in qas],
      "question_types": [q.kind for q in qas],
      "answer": [q.answer for q in qas],
      "answers": np.array([q.answers for q in qas], dtype=object),
      "scene": scene.to_json(),
      "motions": json.dumps([[m.direction, m.start] for m in motions]),
  }


class ShapesVideo(common.ProceduralBuilder):
  """Moving shapes; see `mmjax.data.shapes_world.sample_motions`."""

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "frames": tfds.features.Sequence(common.PNG),
            "captions": common.TEXTS,
            "questions": common.TEXTS,
            "question_types": common.TEXTS,
            "answer": common.TEXTS,
            "answers": common.ANSWERS,
            "scene": tfds.features.Text(),
            "motions": tfds.features.Text(),  # JSON [[direction or null, start frame], ...].
        }),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Procedural: nothing to download.
    return {split: self._generate_examples(split, n)
            for split, n in common.split_sizes(self.builder_config).items()}

  def _generate_examples(self, split: str, num: int):
    for i in range(num):
      yield i, generate_clip(self.builder_config, split, i)
