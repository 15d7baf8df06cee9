"""Grounding: do a Flamingo-style model's words refer to what its image shows?

CIDEr and VQA accuracy reward text that looks like the references; a model that writes the most
likely caption of the dataset, or guesses the most likely answer, scores well without looking.
This evaluator reads the shapes world's scene graphs instead:

  * caption attribute precision: each noun phrase of a greedy caption ("a large red circle") is
    checked against the scene; the fraction that name an object actually there (one object with
    every attribute named);
  * the same model on blank images (what it says without seeing), and VQA accuracy beside its
    blank-image version (what it answers without seeing);
  * distinct captions over captions, for the model and the references (mode collapse).

A contact sheet of images with the model's caption and answer beside the truth is written as
`samples.png` in the run's workdir, for a person to look at.
"""

from __future__ import annotations

import dataclasses
import os
import re
import textwrap
from typing import Any, Mapping, Sequence

import numpy as np

from mmjax.data import shapes_world as world
from mmjax.evaluators import EvalContext, captioning, common, register, require, vqa

VQA_PROMPT = "<image>Question: {question} Answer:"


def _plural(word: str) -> str:
  return word + ("es" if word.endswith(("s", "x", "ch", "sh")) else "s")


def _vocabulary(canonical: Sequence[str]) -> dict[str, str]:
  """Each word naming one of `canonical`, the world's synonyms included, to its canonical form."""
  synonyms = world._SYNONYMS  # pylint: disable=protected-access
  return {w: c for c in canonical for w in synonyms.get(c, (c,))}


_SIZES = _vocabulary(list(world.SIZES))
_SHADINGS = _vocabulary(world.SHADINGS)
_COLOURS = _vocabulary(list(world.COLOURS))
_SHAPES = _vocabulary(world.SHAPES)
_SHAPES.update({_plural(w): c for w, c in list(_SHAPES.items())})
# Punctuation stays a token of its own, so "large, red circle" names a red circle, not a large one.
_TOKEN = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def caption_mentions(caption: str) -> list[dict[str, str]]:
  """The noun phrases of a caption, each as the canonical attributes it names.

  A mention is [size] [shading] [colour] shape, consecutive words; synonyms (gray, box, ...)
  and plural shapes count: 'Two small gray boxes.' -> [{'size': 'small', 'colour': 'grey',
  'shape': 'square'}].
  """
  words = _TOKEN.findall(caption.lower())
  out = []
  for i, word in enumerate(words):
    if word not in _SHAPES:
      continue
    mention, j = {}, i - 1
    # Walk back from the shape over the optional words, nearest first.
    for key, vocab in (("colour", _COLOURS), ("shading", _SHADINGS), ("size", _SIZES)):
      if j >= 0 and words[j] in vocab:
        mention[key] = vocab[words[j]]
        j -= 1
    mention["shape"] = _SHAPES[word]
    out.append({k: mention[k] for k in ("size", "shading", "colour", "shape") if k in mention})
  return out


def _objects(scene: world.Scene | Mapping[str, Any]) -> list[Mapping[str, Any]]:
  if isinstance(scene, world.Scene):
    return [dataclasses.asdict(o) for o in scene.objects]
  return scene["objects"]


def mention_is_true(mention: Mapping[str, str], scene: world.Scene | Mapping[str, Any]) -> bool:
  """Whether one object of `scene` (a Scene or its parsed dict) has every attribute of
  `mention`. Plurals are not counted: 'two red circles' is true of one red circle."""
  return any(all(o[k] == v for k, v in mention.items()) for o in _objects(scene))


def attribute_precision(captions: Sequence[str],
                        scenes: Sequence[world.Scene | Mapping[str, Any]]) -> tuple[int, int]:
  """(true mentions, mentions) over captions of their scenes. A caption naming no object counts
  as one false mention, so that saying nothing ('There are three shapes.') cannot score."""
  if len(captions) != len(scenes):
    raise ValueError(f"{len(captions)} captions for {len(scenes)} scenes")
  true = total = 0
  for caption, scene in zip(captions, scenes):
    mentions = caption_mentions(caption)
    true += sum(mention_is_true(m, scene) for m in mentions)
    total += max(len(mentions), 1)
  return true, total


def distinct_ratio(captions: Sequence[str]) -> float:
  """Distinct captions (lower case, whitespace collapsed) over captions: 1/N when one sentence
  is written for every image."""
  if not captions:
    raise ValueError("distinct_ratio needs at least one caption")
  return len({" ".join(c.lower().split()) for c in captions}) / len(captions)


def contact_sheet(path: str, images: np.ndarray, panels: Sequence[Sequence[str]],
                  mean: Sequence[float], std: Sequence[float], columns: int = 4) -> str:
  """Writes a PNG grid of `images` [N, H, W, 3] (normalised as the model sees them, undone with
  `mean`/`std`), each above its `panels[i]` lines of text, atomically to `path`; returns path."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")  # Training machines have no display.
  from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel
  if len(images) != len(panels) or len(images) == 0:
    raise ValueError(f"{len(images)} images for {len(panels)} panels")
  pixels = np.clip(np.asarray(images, np.float32) * np.asarray(std) + np.asarray(mean), 0, 1)
  cols = min(columns, len(images))
  rows = -(-len(images) // cols)
  # Each cell (inches): a 3 x 3 image, then its text in the 1.8 below (about 12 lines).
  cell_w, cell_h, side, text_h = 3.3, 5.0, 3.0, 1.8
  # A Figure outside pyplot: nothing is kept alive in a global registry after saving.
  fig = Figure(figsize=(cell_w * cols, cell_h * rows))
  for k, (image, lines) in enumerate(zip(pixels, panels)):
    row, col = divmod(k, cols)
    left = (col * cell_w + 0.15) / (cell_w * cols)
    bottom = ((rows - 1 - row) * cell_h + text_h) / (cell_h * rows)
    ax = fig.add_axes((left, bottom, side / (cell_w * cols), side / (cell_h * rows)))
    ax.imshow(image, interpolation="nearest")
    ax.axis("off")
    # An untrained model writes control characters, and '$' would start mathtext.
    text = "\n".join(textwrap.fill("".join(c if c.isprintable() else "?" for c in line), 44)
                     for line in lines)
    ax.text(0.0, -0.03, text, transform=ax.transAxes, va="top", ha="left", fontsize=7,
            parse_math=False)
  # A reader (a dashboard, a person) never sees a half-written file.
  tmp = f"{path}.tmp{os.getpid()}"
  fig.savefig(tmp, format="png", dpi=100)
  os.replace(tmp, path)
  return path


@register("grounding")
class GroundingEvaluator:
  """Attribute precision of greedy captions and VQA accuracy, each beside its blank-image
  version, and caption diversity, on each split (for Flamingo-style families, shapes data).

  Config:
    splits: splits evaluated (("validation", "heldout")); results are `{name}/<metric>` for
      validation and `{name}/<split>/<metric>` for the others.
    num_captions: records whose greedy caption is scored (64).
    num_vqa_records: records whose every question is asked (64; ~5.5 questions each on shapes).
    max_new_tokens: caption length limit (24); answers get 4 tokens.
    batch_size: generation batch (64).
    samples_png: write `samples.png` (first split) into the context's workdir (True).
    num_samples: images on the contact sheet (8; at most num_captions and num_vqa_records,
      whose generations it shows).
  """

  def __init__(self, name: str, config: Any, context: EvalContext):
    self.name, self.config, self.context = name, config, context
    require(name, context.family, "decode_step", "decode")

  def run(self, params: Any) -> dict[str, Any]:
    """Every split's results, and `{name}/samples_png` (the path) when the sheet is written."""
    results = {}
    for i, split in enumerate(self.config.get("splits", ("validation", "heldout"))):
      prefix = f"{self.name}/" if split == "validation" else f"{self.name}/{split}/"
      out, panels = self._split(params, split)
      results.update({prefix + k: v for k, v in out.items()})
      if i == 0 and self.config.get("samples_png", True) and self.context.workdir is not None:
        data = self.context.data_config
        images, lines = panels
        results[f"{self.name}/samples_png"] = contact_sheet(
            os.path.join(self.context.workdir, "samples.png"), images, lines, data.mean, data.std)
    return results

  def _split(self, params: Any, split: str) -> tuple[dict[str, Any], tuple[np.ndarray, list]]:
    """The split's results (unprefixed) and its contact-sheet images and text."""
    cfg, ctx, data = self.config, self.context, self.context.data_config
    num_caps, num_vqa = cfg.get("num_captions", 64), cfg.get("num_vqa_records", 64)
    batch_size = cfg.get("batch_size", 64)
    records = common.load_records(data, split, max(num_caps, num_vqa))
    imgs = common.images(records, data)

    rows = [(i, q, a) for i, r in enumerate(records[:num_vqa])
            for q, a in zip(r["questions"], r["answers"])]
    idx = np.array([i for i, _, _ in rows])
    questions = [q for _, q, _ in rows]
    answer = lambda images: vqa.answer_questions(ctx, params, images, questions, VQA_PROMPT, 4,
                                                 batch_size)
    accuracy = lambda preds: float(np.mean([vqa.vqa_accuracy(p, a)
                                            for p, (_, _, a) in zip(preds, rows)]))
    preds = answer(imgs[idx])

    cap_records, cap_imgs = records[:num_caps], imgs[:num_caps]
    scenes = [r["scene"] for r in cap_records]
    caption = lambda images: captioning.generate_captions(
        ctx, params, images, "<image>", cfg.get("max_new_tokens", 24), batch_size)
    precision = lambda caps: np.divide(*attribute_precision(caps, scenes))
    caps = caption(cap_imgs)
    mentions = sum(len(caption_mentions(c)) for c in caps)
    refs = [r["captions"][0] for r in cap_records]
    out = {
        "vqa_accuracy": accuracy(preds),
        "vqa_accuracy_blank": accuracy(answer(np.zeros_like(imgs[idx]))),
        "vqa_num_questions": len(rows),
        "caption_attribute_precision": float(precision(caps)),
        "caption_attribute_precision_blank": float(precision(caption(np.zeros_like(cap_imgs)))),
        "caption_distinct": distinct_ratio(caps),
        "caption_distinct_references": distinct_ratio(refs),
        "caption_mentions_per_caption": mentions / len(caps),
        "caption_example": f"{caps[0]!r} (reference: {refs[0]!r})",
        "vqa_example": f"Q: {questions[0]} -> {preds[0]!r} (true: {records[0]['answer'][0]!r})",
    }
    # Record i's first question is row `first[i]` of the VQA pass, so its answer is reused.
    first = np.cumsum([0] + [len(r["questions"]) for r in records[:num_vqa]])
    n = min(cfg.get("num_samples", 8), len(caps), len(first) - 1)
    panels = [[f"model: {caps[i]}",
               f"Q: {records[i]['questions'][0]} -> {preds[first[i]]} "
               f"(true: {records[i]['answer'][0]})",
               "refs: " + " | ".join(records[i]["captions"][:2])] for i in range(n)]
    return out, (imgs[:n], panels)
