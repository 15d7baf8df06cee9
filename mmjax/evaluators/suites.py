"""Named evaluator suites for `mmjax.evaluate --suite NAME`: every task that fits a family on
`shapes`, each with its baselines. `size` scales the example counts ('full' / 'small')."""

from __future__ import annotations

from typing import Any

import ml_collections

SUITES = ("shapes",)
SUITES += ("shapes_video",)  # Flamingo on clips: video_suite.

# The shapes tasks' own training formats (mmjax/data/tasks.py), so in-context demonstrations look
# like what the model saw; the papers' "Output:" / "Short answer:" forms are fewshot's defaults.
SHAPES_FORMATS = {
    "captioning": dict(demo="<image>{caption}<|endofchunk|>", query="<image>"),
    "vqa": dict(demo="<image>Question: {question} Answer: {answer}<|endofchunk|>",
                query="<image>Question: {question} Answer:"),
}


def shapes_suite(family: str, size: str = "full") -> ml_collections.ConfigDict:
  """The evaluators of `family` on shapes."""
  small = size == "small"
  n = 8 if small else 64
  evals: dict[str, dict[str, Any]] = {}
  if family in ("clip", "siglip", "coca"):
    # Zero-shot shape and colour of the single-object scenes of unseen scenes ('validation')
    # and of held-out colour-shape pairs ('heldout': a tower that reads shape and colour apart
    # names shapes it never saw in that colour).
    for split, tag in (("validation", ""), ("heldout", "_heldout")):
      evals[f"zeroshot_shape{tag}"] = dict(type="zeroshot", attribute="shape",
                                           templates="shapes", split=split, baselines=True)
      evals[f"zeroshot_colour{tag}"] = dict(
          type="zeroshot", attribute="colour", split=split, baselines=True,
          templates="openai_imagenet" if not small else "simple")
    evals["retrieval"] = dict(type="retrieval", num_examples=16 if small else 128,
                              baselines=True)
    for attribute in ("shape", "colour"):
      evals[f"probe_{attribute}"] = dict(type="linear_probe", attribute=attribute,
                                         train_records=64 if small else 1024, baselines=True)
  if family in ("lm", "flamingo"):
    # One dataset and task: a run may train on a mixture (configs/flamingo.py).
    evals["perplexity"] = dict(type="perplexity", num_batches=1 if small else 4,
                               batch_size=8 if small else None, datasets=("shapes",),
                               task="caption" if family == "flamingo" else None)
  if family == "flamingo":
    evals["captioning"] = dict(type="captioning", num_examples=n, baselines=True,
                               max_new_tokens=8 if small else 24)
    evals["vqa"] = dict(type="vqa", num_examples=4 if small else 32, baselines=True)
    evals["multiple_choice"] = dict(type="multiple_choice", num_examples=2 if small else 16,
                                    baselines=True)
    evals["fewshot_captioning"] = dict(
        type="fewshot", task="captioning", shots=(0, 2) if small else (0, 4, 8, 16, 32),
        seeds=(0, 1) if small else (0, 1, 2), num_examples=4 if small else 32,
        pool_size=16 if small else 256, max_new_tokens=8 if small else 16,
        **SHAPES_FORMATS["captioning"])
    evals["fewshot_vqa_rices"] = dict(
        type="fewshot", task="vqa", selection="rices", shots=(0, 2) if small else (0, 4, 8),
        seeds=(0,) if small else (0, 1, 2), num_examples=4 if small else 32,
        pool_size=16 if small else 256, **SHAPES_FORMATS["vqa"])
    evals["probe_shape"] = dict(type="linear_probe", attribute="shape",
                                train_records=64 if small else 1024, baselines=True)
  if not evals:
    raise ValueError(f"no shapes suite for family {family!r}")
  return ml_collections.ConfigDict(evals)


def video_suite(family: str, size: str = "full") -> ml_collections.ConfigDict:
  """Flamingo on shapes_video clips (data.num_frames frames each): captioning CIDEr and VQA
  accuracy per question type, zero- and few-shot (demonstrations are clips), each beside the
  same model shown every clip's middle frame repeated (`single_frame`: motion questions need
  several frames) and the blank-clip / prior baselines."""
  if family != "flamingo":
    raise ValueError(f"no shapes_video suite for family {family!r} (flamingo only)")
  small = size == "small"
  video = dict(dataset="shapes_video")
  evals: dict[str, dict[str, Any]] = {}
  for single in (False, True):
    tag = "_single_frame" if single else ""
    evals[f"captioning{tag}"] = dict(type="captioning", num_examples=4 if small else 64,
                                     baselines=not single, single_frame=single,
                                     max_new_tokens=8 if small else 40, **video)
    evals[f"vqa{tag}"] = dict(type="vqa", num_examples=4 if small else 64,
                              baselines=not single, single_frame=single, **video)
    evals[f"fewshot_vqa{tag}"] = dict(
        type="fewshot", task="vqa", shots=(0, 2) if small else (0, 4), seeds=(0,) if small
        else (0, 1), num_examples=4 if small else 32, pool_size=8 if small else 64,
        single_frame=single, **video, **SHAPES_FORMATS["vqa"])
  evals["fewshot_captioning"] = dict(
      type="fewshot", task="captioning", shots=(0, 2) if small else (0, 4),
      seeds=(0,) if small else (0, 1), num_examples=4 if small else 32,
      pool_size=8 if small else 64, max_new_tokens=8 if small else 40, **video,
      **SHAPES_FORMATS["captioning"])
  return ml_collections.ConfigDict(evals)


def get_suite(name: str, family: str, size: str = "full") -> ml_collections.ConfigDict:
  """Suite `name` for `family`."""
  if name == "shapes_video":
    return video_suite(family, size)
  if name != "shapes":
    raise ValueError(f"unknown evaluation suite {name!r}; known: {SUITES}")
  return shapes_suite(family, size)
