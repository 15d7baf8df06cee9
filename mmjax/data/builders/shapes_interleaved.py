"""`shapes_interleaved`: M3W-like documents of 2-8 images with text between them, and few-shot
episodes (k support image/answer pairs + a query) for captioning and VQA.

Config kind 'documents': `texts` has one more entry than `images`: texts[0] comes before the first
image and texts[i + 1] follows image i (the pipeline writes `<image>` before image i's chunk and
`<|endofchunk|>` after it). Config kind 'episodes': `images[:shots]` are the support examples with
`prompts` (the question, or '' for captioning) and `targets` (caption or answer);
the last image is the query. Config kind 'styled_episodes': the same, except that every caption
of a captioning episode is written in one house style (`style`, one of
shapes_world.ALWAYS_STYLES, drawn per episode), as the pages of one web site or the captions of
one benchmark are. In 'episodes' each caption takes any template, so the demonstrations say
nothing about the query's; here they say which style it is in, the thing a model must learn
from context to write a benchmark's style (mmjax/evaluators/fewshot.py's `house_style`).

Config kind 'binding' (fast concept binding, Tsimpoukelli et al. 2021, "Frozen" §4.2): two
colours get two new words, in the same fields as 'episodes'. `shots` pairs of supports ("This is
a dax.", "This is a blicket.", one image of each colour per pair, in random order), then a query
of one of the two colours. The word exists only in the episode, so only the demonstrations can
tell the model the query's answer: the few-shot task whose accuracy measures in-context learning
alone (mmjax/evaluators/binding.py). Colours, not shapes, are the concepts because colour is
what the small frozen towers reliably encode (experiments/README.md: held-out shape is at chance
in zero-shot, colour is not). Every suffix of 2k supports holds k images of each word.
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

from mmjax.data import shapes_world as world
from mmjax.data.builders import common

MIN_IMAGES, MAX_IMAGES = 2, 8
# Question kinds every scene has an answer for, so all items of a VQA episode ask the same kind.
_EPISODE_KINDS = ("exist", "count", "compare_count")
# Made-up words for the binding episodes: none is a word of the shapes world, and each survives
# the shapes_sp tokenizer (tests/data/test_binding.py).
BINDING_WORDS = ("dax", "blicket", "wug", "toma", "fep", "zup", "kiki", "tufa", "moop", "gazzer",
                 "lorp", "pim")
BINDING_PREFIX = "This is a"
_PREAMBLES = ("", "A few pictures of shapes.", "My collection of drawings.",
              "Here are some scenes.")


def _compare(n: int, prev: int) -> str:
  if n == prev:
    return "It has as many objects as the previous picture."
  return f"It has {'more' if n > prev else 'fewer'} objects than the previous picture."


def generate_document(config: common.ShapesConfig, split: str, index: int) -> dict:
  """A document: images, the text chunks around them and the scenes."""
  rng = common.example_rng(config, split, index)
  n = int(rng.integers(MIN_IMAGES, MAX_IMAGES + 1))
  scenes = [world.sample_scene(rng, heldout=common.heldout_mode(split) if i == 0 else "exclude")
            for i in range(n)]
  texts = [_PREAMBLES[int(rng.integers(len(_PREAMBLES)))]]
  for i, scene in enumerate(scenes):
    chunk = world.captions(scene, rng, num=1)[0]
    if i > 0 and rng.random() < 0.5:
      # Cross-image statements need the earlier image: what interleaving is for.
      chunk += " " + _compare(len(scene.objects), len(scenes[i - 1].objects))
    texts.append(chunk)
  return {
      "images": [world.png_bytes(world.render(s, config.image_size)) for s in scenes],
      "texts": texts,
      "scenes": [s.to_json() for s in scenes],
  }


def generate_episode(config: common.ShapesConfig, split: str, index: int) -> dict:
  """A few-shot episode; even indices are captioning, odd ones VQA. kind='styled_episodes':
  one caption style per captioning episode ('' for VQA)."""
  rng = common.example_rng(config, split, index)
  task = "caption" if index % 2 == 0 else "vqa"
  kind = _EPISODE_KINDS[int(rng.integers(len(_EPISODE_KINDS)))]
  styled = config.kind == "styled_episodes"
  style = world.pick(rng, world.ALWAYS_STYLES) if styled and task == "caption" else ""
  images, prompts, targets, answers = [], [], [], []
  for i in range(config.shots + 1):
    # Only the query may carry a held-out pair: support examples come from the training world.
    mode = common.heldout_mode(split) if i == config.shots else "exclude"
    scene = world.sample_scene(rng, heldout=mode)
    images.append(world.png_bytes(world.render(scene, config.image_size)))
    if task == "caption":
      cap = world.styled_captions(scene, rng)[style] if style else \
          world.captions(scene, rng, num=1)[0]
      prompts.append("")
      targets.append(cap)
      answers.append([cap] * world.NUM_ANSWERS)
    else:
      qa = next(q for q in world.questions(scene, rng) if q.kind == kind)
      prompts.append(qa.question)
      targets.append(qa.answer)
      answers.append(list(qa.answers))
  episode = {"images": images, "prompts": prompts, "targets": targets, "task": task,
             "query_answers": np.array(answers[-1], dtype=object)}
  if styled:
    episode["style"] = style
  return episode


def _binding_scene(rng: np.random.Generator, colour: str, heldout: bool) -> world.Scene:
  """One object of `colour`, any shape, size, shading, place and background; its (colour,
  shape) pair is held out exactly when `heldout`."""
  shapes = [s for s in world.SHAPES if ((colour, s) in world.HELDOUT_PAIRS) == heldout]
  size = world.pick(rng, list(world.SIZES))
  r = world.SIZES[size]
  x, y = rng.uniform(r + 0.02, 1 - r - 0.02, size=2)
  obj = world.Obj(world.pick(rng, shapes), colour, size, world.pick(rng, world.SHADINGS), float(x),
                  float(y))
  return world.Scene(world.pick(rng, list(world.BACKGROUNDS)), (obj,))


def generate_binding(config: common.ShapesConfig, split: str, index: int) -> dict:
  """A fast-binding episode: `config.shots` pairs of named supports, then the query."""
  rng = common.example_rng(config, split, index)
  heldout = split == "heldout"
  # On held-out pairs the query's colour must have a held-out shape (the supports never do).
  colours = sorted({c for c, _ in world.HELDOUT_PAIRS}) if heldout else list(world.COLOURS)
  query_colour = world.pick(rng, colours)
  other = world.pick(rng, [c for c in world.COLOURS if c != query_colour])
  pair = [query_colour, other] if rng.random() < 0.5 else [other, query_colour]
  words = [str(w) for w in rng.choice(BINDING_WORDS, size=2, replace=False)]
  # One image of each word per pair, so the last 2k supports hold k of each (k-shot prompts).
  named = [int(k) for _ in range(config.shots) for k in rng.permutation(2)]
  query = pair.index(query_colour)
  scenes = [_binding_scene(rng, pair[k], heldout=False) for k in named]
  scenes.append(_binding_scene(rng, query_colour, heldout=heldout))
  targets = [f"{BINDING_PREFIX} {words[k]}." for k in named + [query]]
  return {"images": [world.png_bytes(world.render(s, config.image_size)) for s in scenes],
          "prompts": [""] * len(targets), "targets": targets, "task": "binding",
          "query_answers": np.array([words[query]] * world.NUM_ANSWERS, dtype=object),
          "scenes": [s.to_json() for s in scenes]}


class ShapesInterleaved(common.ProceduralBuilder):
  """Interleaved image-text documents, few-shot episodes and fast-binding episodes over the
  shapes world."""

  BUILDER_CONFIGS = [common.make_config(kind=k) for k in common.KINDS]

  def _info(self) -> tfds.core.DatasetInfo:
    if self.builder_config.kind == "documents":
      features = {"images": tfds.features.Sequence(common.PNG), "texts": common.TEXTS,
                  "scenes": common.TEXTS}
    else:
      features = {"images": tfds.features.Sequence(common.PNG), "prompts": common.TEXTS,
                  "targets": common.TEXTS, "task": tfds.features.Text(),
                  "query_answers": tfds.features.Tensor(shape=(world.NUM_ANSWERS,),
                                                        dtype=np.object_)}
      if self.builder_config.kind == "binding":
        features["scenes"] = common.TEXTS
      if self.builder_config.kind == "styled_episodes":
        features["style"] = tfds.features.Text()  # The captions' style; '' for VQA.
    return tfds.core.DatasetInfo(builder=self, description=__doc__,
                                 features=tfds.features.FeaturesDict(features))

  def _split_generators(self, dl_manager):
    del dl_manager  # Procedural: nothing to download.
    return {split: self._generate_examples(split, n)
            for split, n in common.split_sizes(self.builder_config).items()}

  def _generate_examples(self, split: str, num: int):
    gen = {"documents": generate_document, "episodes": generate_episode,
           "styled_episodes": generate_episode,
           "binding": generate_binding}[self.builder_config.kind]
    for i in range(num):
      yield i, gen(self.builder_config, split, i)
