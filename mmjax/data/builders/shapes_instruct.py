"""`shapes_instruct`: multi-turn instruction conversations about one shapes scene each.

Record i uses the generator of `shapes` record i (same seed, split and index), so it shows the
same scene; the conversation comes from `mmjax.data.shapes_chat` (describe, count, compare,
spatial and reasoning questions, each also as a step-by-step rationale). Per-turn lists are
parallel: `roles`, `contents`, `cot_contents` (the chain-of-thought variant, chosen by
`data.chain_of_thought`), `kinds`, `turn_answers`; `images` holds one PNG per `<image>` marker.
"""

from __future__ import annotations

import tensorflow_datasets as tfds

from mmjax.data import shapes_chat
from mmjax.data import shapes_world as world
from mmjax.data.builders import common


def generate_example(config: common.ShapesConfig, split: str, index: int,
                     render: bool = True) -> dict:
  """Example `index` of `split` as stored (no images when `render` is False)."""
  rng = common.example_rng(config, split, index)
  scene = world.sample_scene(rng, heldout=common.heldout_mode(split))
  ex = dict(shapes_chat.conversation(scene, rng), scene=scene.to_json())
  ex["images"] = [world.png_bytes(world.render(scene, config.image_size))] if render else []
  return ex


class ShapesInstruct(common.ProceduralBuilder):
  """Instruction-tuning conversations over the shapes world; see `mmjax.data.shapes_chat`."""

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "images": tfds.features.Sequence(common.PNG),
            "roles": common.TEXTS,
            "contents": common.TEXTS,
            "cot_contents": common.TEXTS,
            "kinds": common.TEXTS,
            "turn_answers": common.TEXTS,
            "scene": tfds.features.Text(),  # JSON, see shapes_world.Scene.to_json.
        }),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Procedural: nothing to download.
    return {split: self._generate_examples(split, n)
            for split, n in common.split_sizes(self.builder_config).items()}

  def _generate_examples(self, split: str, num: int):
    for i in range(num):
      yield i, generate_example(self.builder_config, split, i)
