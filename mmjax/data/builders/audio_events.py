"""`audio_events`: 2 s clips at 16 kHz of 1-3 tones, chirps, clicks and noise bursts in
sequence, with captions ("a rising chirp followed by two clicks") and the exact events; see
`mmjax.data.audio_world`. Clips are stored as int16 PCM."""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from mmjax.data import audio_world as world
from mmjax.data.builders import common


def generate_example(config: common.ShapesConfig, split: str, index: int,
                     render: bool = True) -> dict:
  """Example `index` of `split` as stored (audio omitted when `render` is False)."""
  rng = common.example_rng(config, split, index)
  events = world.sample_events(rng, heldout=common.heldout_mode(split))
  ex = {"captions": world.captions(events), "events": world.events_json(events),
        "num_events": np.int32(len(events))}
  if render:
    ex["audio"] = world.to_pcm16(world.render(events, rng))
  return ex


class AudioEvents(common.ProceduralBuilder):
  """Procedural sound-event clips; see `mmjax.data.audio_world`."""

  @classmethod
  def make_builder_config(cls, **config) -> common.ShapesConfig:
    """Only the split sizes and the seed apply (the clip length and rate are fixed), so runs of
    different image sizes share one prepared copy."""
    return common.make_config(num_train=config.get("num_train", 4096),
                              num_eval=config.get("num_eval", 256), seed=config.get("seed", 0))

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "audio": tfds.features.Tensor(shape=(world.NUM_SAMPLES,), dtype=np.int16),
            "captions": common.TEXTS,
            "events": tfds.features.Text(),  # JSON, see audio_world.events_json.
            "num_events": tfds.features.Scalar(dtype=np.int32),
        }),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Procedural: nothing to download.
    return {split: self._generate_examples(split, n)
            for split, n in common.split_sizes(self.builder_config).items()}

  def _generate_examples(self, split: str, num: int):
    for i in range(num):
      yield i, generate_example(self.builder_config, split, i)
