"""The grounding evaluator: noun phrases of captions checked by hand against hand-made scenes,
caption diversity, the contact sheet, and a run on a micro Flamingo with random parameters."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from PIL import Image

from mmjax import config_lib
from mmjax.data import shapes_world as world
from mmjax.data import tokenizers
from mmjax.evaluators import EvalContext, build, grounding


def _obj(size, shading, colour, shape, x=0.5, y=0.5):
  return dict(size=size, shading=shading, colour=colour, shape=shape, x=x, y=y)


SCENE_A = dict(background="white", objects=[_obj("large", "matte", "red", "circle", 0.3),
                                             _obj("small", "shiny", "blue", "square", 0.7)])
SCENE_B = dict(background="slate", objects=[_obj("small", "matte", "green", "star")])
SCENE_C = dict(background="beige", objects=[_obj("small", "matte", "grey", "square", 0.3),
                                            _obj("large", "shiny", "purple", "diamond", 0.7)])

# (caption, scene, (true, total)), each worked out by hand.
CASES = [
    ("A picture of a large red circle, a small blue square.", SCENE_A, (2, 2)),
    ("A picture of a large blue circle.", SCENE_A, (0, 1)),  # blue is the small square
    ("There are two shapes in this image.", SCENE_A, (0, 1)),  # no mention: one false
    ("A small gray box is in the picture.", SCENE_C, (1, 1)),  # synonyms of grey, square
    ("Two red circles.", SCENE_A, (1, 1)),  # plural; one red circle is enough
    ("A large shiny red circle.", SCENE_A, (0, 1)),  # the red circle is matte
    ("A shiny violet rhombus above a matte green star.", SCENE_C, (1, 2)),
    ("A small green star on a slate background.", SCENE_B, (1, 1)),
    ("Three discs.", SCENE_B, (0, 1)),
]


def test_caption_mentions_by_hand():
  assert grounding.caption_mentions("A picture of a large red circle, a small blue square.") == [
      {"size": "large", "colour": "red", "shape": "circle"},
      {"size": "small", "colour": "blue", "shape": "square"}]
  assert grounding.caption_mentions("Two small shiny GRAY Boxes!") == [
      {"size": "small", "shading": "shiny", "colour": "grey", "shape": "square"}]
  # Words must be consecutive and in order: punctuation or another word breaks the phrase.
  assert grounding.caption_mentions("a large, red disc") == [{"colour": "red", "shape": "circle"}]
  assert grounding.caption_mentions("a red large circle") == [{"size": "large",
                                                               "shape": "circle"}]
  assert grounding.caption_mentions("matte rhombuses. violet triangles") == [
      {"shading": "matte", "shape": "diamond"}, {"colour": "purple", "shape": "triangle"}]
  assert grounding.caption_mentions("There are three shapes in this image.") == []
  assert grounding.caption_mentions("red objects") == []


def test_attribute_precision_by_hand():
  for caption, scene, expected in CASES:
    assert grounding.attribute_precision([caption], [scene]) == expected, caption
  captions, scenes, per_caption = zip(*CASES)
  assert grounding.attribute_precision(captions, scenes) == (
      sum(t for t, _ in per_caption), sum(n for _, n in per_caption)) == (6, 11)
  # A Scene works as well as its parsed dict.
  scene = world.Scene.from_dict(SCENE_C)
  assert grounding.mention_is_true({"colour": "grey", "shape": "square"}, scene)
  assert not grounding.mention_is_true({"colour": "grey", "shape": "diamond"}, scene)
  assert grounding.mention_is_true({"shape": "diamond"}, SCENE_C)
  assert grounding.attribute_precision([], []) == (0, 0)
  with pytest.raises(ValueError):
    grounding.attribute_precision(["a red circle"], [])


def test_distinct_ratio():
  assert grounding.distinct_ratio(["A b", "a  B", "c"]) == pytest.approx(2 / 3)
  assert grounding.distinct_ratio(["same"] * 4) == 0.25
  with pytest.raises(ValueError):
    grounding.distinct_ratio([])


def test_contact_sheet_writes_a_png(tmp_path):
  images = np.random.default_rng(0).uniform(-1, 1, (4, 16, 16, 3)).astype(np.float32)
  panels = [[f"model: a caption {i} " * 4, "Q: What colour? -> red (true: blue)",
             "refs: a | b"] for i in range(4)]
  path = str(tmp_path / "samples.png")
  assert grounding.contact_sheet(path, images, panels, (0.5,) * 3, (0.5,) * 3) == path
  with Image.open(path) as im:
    assert im.format == "PNG" and im.size[0] >= 300 and im.size[1] >= 200
  assert os.listdir(tmp_path) == ["samples.png"]  # no temporary file left behind
  with pytest.raises(ValueError):
    grounding.contact_sheet(path, images, panels[:3], (0.5,) * 3, (0.5,) * 3)


def _random_params(family, seed=0, scale=0.3):
  """Random parameters (numpy, no init compile) with the gates open, so the images matter."""
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name in ("attn_gate", "ff_gate"):
      return jnp.ones(leaf.shape, leaf.dtype)
    base = 1.0 if name == "scale" else 0.0
    return jnp.asarray(base + scale * rng.standard_normal(leaf.shape), leaf.dtype)

  shapes = jax.eval_shape(family.init, jax.random.key(seed), family.dummy_batch(1))
  return jax.tree_util.tree_map_with_path(fill, nn.unbox(shapes["params"]))


def test_evaluator_on_a_micro_flamingo(tmp_path_factory):
  from mmjax.models import family as family_lib  # pylint: disable=import-outside-toplevel
  config = config_lib.load_config("configs/flamingo.py:micro")
  config.data.data_dir = str(tmp_path_factory.mktemp("grounding_data"))
  config.data.num_train, config.data.num_eval = 16, 8
  tok = tokenizers.with_media_tokens(tokenizers.get_tokenizer(
      config.data.tokenizer, data_dir=config.data.data_dir))
  family = family_lib.build(config.model)
  workdir = str(tmp_path_factory.mktemp("grounding_run"))
  context = EvalContext(family=family, data_config=config.data, tokenizer=tok, workdir=workdir)
  cfg = ml_collections.ConfigDict(dict(type="grounding", num_captions=4, num_vqa_records=2,
                                       num_samples=2, max_new_tokens=8, batch_size=16,
                                       splits=("validation", "heldout")))
  results = build("final", cfg, context).run(_random_params(family))

  for prefix in ("final/", "final/heldout/"):
    for key in ("vqa_accuracy", "vqa_accuracy_blank", "caption_attribute_precision",
                "caption_attribute_precision_blank", "caption_distinct",
                "caption_distinct_references"):
      assert 0.0 <= results[prefix + key] <= 1.0, (prefix + key, results[prefix + key])
    assert results[prefix + "vqa_num_questions"] > 0
    assert results[prefix + "caption_mentions_per_caption"] >= 0
    assert isinstance(results[prefix + "caption_example"], str)
    assert results[prefix + "vqa_example"].startswith("Q: ")
  # References are generated from scenes, never all alike.
  assert results["final/caption_distinct_references"] > 0.25
  assert results["final/samples_png"] == os.path.join(workdir, "samples.png")
  assert "final/heldout/samples_png" not in results
  with Image.open(results["final/samples_png"]) as im:
    assert im.size[0] > 100
