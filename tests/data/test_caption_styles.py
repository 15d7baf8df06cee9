"""data.caption_styles: shapes captions drawn from a subset of the house styles (the tiny CLIP
tower trains on captions that name every object), under their own prepared-data name."""

import numpy as np
import pytest

from mmjax.data import datasets
from mmjax.data import shapes_world as world
from mmjax.data.builders import common

from conftest import SMALL  # pylint: disable=import-error


def test_listing_captions_name_every_object():
  for i in range(50):
    rng = np.random.default_rng([0, 0, i])
    scene = world.sample_scene(rng)
    caps = world.captions(scene, rng, styles=world.LISTING_STYLES)
    assert len(caps) == 3 and {world.caption_style(c) for c in caps} == set(world.LISTING_STYLES)
    for c in caps:
      for o in scene.objects:
        assert o.words() in c, (c, o)


def test_default_captions_are_unchanged_and_unknown_styles_fail():
  rng_a, rng_b = np.random.default_rng([0, 0, 3]), np.random.default_rng([0, 0, 3])
  scene = world.sample_scene(rng_a)
  world.sample_scene(rng_b)
  assert world.captions(scene, rng_a) == world.captions(scene, rng_b, styles=())
  with pytest.raises(ValueError, match="unknown caption style"):
    world.captions(scene, rng_a, styles=("haiku",))
  with pytest.raises(ValueError, match="data.caption_styles has unknown style"):
    common.make_config(caption_styles=("haiku",))


def test_prepared_data_is_named_after_its_caption_styles(data_dir):
  """Data prepared with other captions is never reused: the name carries the styles, and only
  for the builders whose captions follow them (the default name is the old one)."""
  assert common.make_config().name == "64px_n4096_e256_s0_t8_documents_k4"
  listing = datasets.get_builder("shapes", data_dir=data_dir, caption_styles=("picture_of",),
                                 **SMALL)
  assert listing.builder_config.name.endswith("_cpicture_of")
  plain = datasets.get_builder("shapes_interleaved", data_dir=data_dir,
                               caption_styles=("picture_of",), **SMALL)
  assert "_c" not in plain.builder_config.name.split("_k")[-1]
  src = datasets.load_source("shapes", "train", data_dir=data_dir,
                             caption_styles=("picture_of",), **SMALL)
  for i in range(len(src)):
    caps = [c.decode() for c in src[i]["captions"]]
    assert caps and all(c.startswith("A picture of ") for c in caps)


def test_swap_shape_makes_a_false_caption_that_differs_in_one_shape_word():
  for i in range(100):
    rng = np.random.default_rng([0, 0, i])
    scene = world.sample_scene(rng)
    caption = world.captions(scene, rng, num=1, styles=("picture_of",))[0]
    negative = world.swap_shape(caption, scene, rng)
    old, new = caption.split(), negative.split()
    changed = [(k, a, b) for k, (a, b) in enumerate(zip(old, new)) if a != b]
    assert len(old) == len(new) and len(changed) == 1, (caption, negative)
    k, before, after = changed[0]
    assert before.strip(",.") in world.SHAPES and after.strip(",.") in world.SHAPES
    # The swapped phrase (colour + new shape) names no object of the scene.
    colour = old[k - 1]
    assert not any(o.colour == colour and o.shape == after.strip(",.") for o in scene.objects)
  assert world.swap_shape("There are two shapes in this image.", scene) is None


def test_hard_negative_rows_and_their_checks(data_dir):
  from mmjax.data import config as data_config  # pylint: disable=import-outside-toplevel
  from mmjax.data import pipeline, tokenizers  # pylint: disable=import-outside-toplevel
  config = data_config.default_data_config(
      data_dir=data_dir, caption_styles=world.LISTING_STYLES, hard_negatives=True,
      batch_size=4, image_size=32, text_length=48, **{k: v for k, v in SMALL.items()
                                                      if k in ("num_train", "num_eval")})
  tok = tokenizers.get_tokenizer("shapes_sp", data_dir=data_dir)
  batch = next(iter(pipeline.make_pipeline(config, tokenizer=tok, train=True)))
  assert batch["text_neg"].shape == batch["text"].shape
  differ = (batch["text_neg"] != batch["text"]).sum(axis=1)
  assert np.all(differ >= 1) and np.all(differ <= 3), differ  # one word: a token or a few
  with pytest.raises(ValueError, match="data.hard_negatives .* needs data.task='caption'"):
    data_config.default_data_config(hard_negatives=True, task="vqa")
