"""`shapes`: single images with captions, VQA (10 answers each) and the scene description."""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from mmjax.data import shapes_world as world
from mmjax.data.builders import common


def generate_example(config: common.ShapesConfig, split: str, index: int,
                     render: bool = True) -> dict:
  """Example `index` of `split` as stored (image omitted when `render` is False)."""
  rng = common.example_rng(config, split, index)
  scene = world.sample_scene(rng, heldout=common.heldout_mode(split))
  caps = world.captions(scene, rng, styles=config.caption_styles)
  qas = world.questions(scene, rng)
  ex = {
      "captions": caps,
      "questions": [q.question for q in qas],
      "question_types": [q.kind for q in qas],
      "answer": [q.answer for q in qas],
      "answers": np.array([q.answers for q in qas], dtype=object),
      "scene": scene.to_json(),
      "num_objects": np.int32(len(scene.objects)),
  }
  if render:
    ex["image"] = world.png_bytes(world.render(scene, config.image_size))
  return ex


class Shapes(common.ProceduralBuilder):
  """CLEVR-like procedural scenes; see `mmjax.data.shapes_world`."""

  USES_CAPTION_STYLES = True

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": common.PNG,
            "captions": common.TEXTS,
            "questions": common.TEXTS,
            "question_types": common.TEXTS,
            "answer": common.TEXTS,  # Canonical (most common) answer per question.
            "answers": common.ANSWERS,
            "scene": tfds.features.Text(),  # JSON, see shapes_world.Scene.to_json.
            "num_objects": tfds.features.Scalar(dtype=np.int32),
        }),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Procedural: nothing to download.
    return {split: self._generate_examples(split, n)
            for split, n in common.split_sizes(self.builder_config).items()}

  def _generate_examples(self, split: str, num: int):
    for i in range(num):
      yield i, generate_example(self.builder_config, split, i)
