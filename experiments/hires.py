"""High resolution by AnyRes tiling (LLaVA-NeXT / Monkey) on `shapes_small`, small objects on
256 px canvases: the tiny Flamingo (frozen CLIP-pretrained vision tower) trained on its VQA with
the whole image downsampled to one 64 px frame ('thumbnail') against the thumbnail plus a
2 x 2 grid of 64 px tiles on the media frame axis ('anyres'); the same steps, batch and
learning rate. Writes experiments/results/hires.{json,md}: VQA accuracy (per question kind),
the same model with blank images, tokens per image and step time.

    python experiments/hires.py [--workdir /tmp/mmjax_hires] [--clip_workdir /tmp/evt3/clip]
                                [--steps 500] [--eval_records 96]

Stage 1 (as experiments/evaluate_tiny.py): configs/clip.py:tiny trained contrastively on
`shapes` captions, reused from `--clip_workdir` when it holds a checkpoint, else trained there
for --clip_steps. Stage 2, per arm: configs/flamingo.py:tiny on `shapes_small` VQA with the
CLIP image tower loaded and frozen. The tiles reach the resampler as frames, whose learned
per-frame time embeddings (resampler.max_frames = 5) are the tile-position embeddings, so both
arms give the LM the same 16 visual tokens per image; the tiles cost the vision tower 5x the
patch tokens. Each arm resumes in its own sub-directory.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# pylint: disable=wrong-import-position
import jax  # noqa: E402
import ml_collections  # noqa: E402

from mmjax import checkpoint, config_lib, generate, reporting, restore, train  # noqa: E402
from mmjax.data import tasks  # noqa: E402
from mmjax.data import tokenizers as tok_lib  # noqa: E402
from mmjax.evaluators import common as eval_common  # noqa: E402
from mmjax.evaluators import vqa as vqa_lib  # noqa: E402
from mmjax.models import family as family_lib  # noqa: E402

RESULTS = os.path.join(REPO, "experiments", "results")
DATASET = "shapes_small"
# Arm name -> the data.anyres_grids it trains and evaluates with.
ARMS = {"thumbnail": (), "anyres": ((2, 2),)}


def arm_config(preset: str, grids: tuple, steps: int, clip_workdir: str | None,
               num_train: int, batch_size: int, num_eval: int = 256, fusion: str = "xattn"
               ) -> ml_collections.ConfigDict:
  """configs/flamingo.py:<preset> on shapes_small VQA, tiled by `grids` (empty: one frame)."""
  overrides = [f"total_steps={steps}", f"model.fusion={fusion}"]
  if clip_workdir:
    overrides += [f"init_from=('vision={clip_workdir}:image',)", "model.freeze_vision=True"]
  config = config_lib.load_config(f"configs/flamingo.py:{preset}", overrides)
  d = config.data
  d.datasets, d.tasks, d.weights = (DATASET,), ("vqa",), (1.0,)
  d.anyres_grids = grids
  d.num_train, d.num_eval, d.batch_size = num_train, num_eval, batch_size
  if grids:
    config.model.resampler.max_frames = 1 + max(r * c for r, c in grids)
  config.evals = ml_collections.ConfigDict()  # evaluated below, on every question kind
  config.checkpoint.every_steps = steps
  config.optim.warmup_steps = min(config.optim.warmup_steps, steps - 1)
  config.log.every_steps = min(config.log.every_steps, steps)
  return config


def vqa_rows(config, tokenizer, records: list[dict]) -> tuple[list[dict], list[tuple]]:
  """Every question of `records` as an evaluation row of the training format, cut before the
  answer, and (question kind, question, annotator answers) per row."""
  proc = tasks.ExampleProcessor(DATASET, 0, config.data, tokenizer, train=False,
                                frames_per_media=_frames(config.data), task="vqa")
  rows, meta = [], []
  for i, r in enumerate(records):
    for k, question in enumerate(r["questions"]):
      one = {"image": r["image"], "captions": r["captions"], "questions": [question],
             "answer": [r["answer"][k]], "question_types": [r["question_types"][k]]}
      row = proc(0, (i, one))
      if tasks.BAD_KEY in row:
        raise ValueError(row[tasks.BAD_KEY])
      start = int(np.argmax(row["loss_mask"] > 0))  # first answer token
      row["tokens"] = np.where(np.arange(len(row["tokens"])) < start, row["tokens"],
                               tokenizer.pad_id).astype(np.int32)
      row["loss_mask"] = np.zeros_like(row["loss_mask"])
      row["length"] = start
      rows.append(row)
      meta.append((r["question_types"][k], question, r["answers"][k]))
  return rows, meta


def _frames(data) -> int:
  grids = tuple(tuple(g) for g in data.anyres_grids)
  return 1 + max(r * c for r, c in grids) if grids else 1


def answer(family, params, rows: list[dict], tokenizer, blank: bool,
           batch_size: int = 64, max_new_tokens: int = 4) -> list[str]:
  """Greedy answers for the rows (images zeroed when `blank`)."""
  _, eoc_id = eval_common.media_ids(tokenizer)
  stops = (eoc_id, tokenizer.eos_id)
  out = []
  for s in eval_common.chunks(len(rows), batch_size):
    part = rows[s]
    batch = {k: np.stack([r[k] for r in part]) for k in part[0] if k not in ("length",
                                                                              "loss_mask")}
    if blank:
      batch["media"] = np.zeros_like(batch["media"])
    lengths = np.array([r["length"] for r in part], np.int32)
    ids = generate.greedy(family, params, batch, max_new_tokens, stop_ids=stops, lengths=lengths)
    out += [tokenizer.decode(generate.strip(row, stops)).strip() for row in ids.tolist()]
  return out


def evaluate_arm(workdir: str, eval_records: int) -> dict:
  """VQA accuracy (all, per question kind, blank images) and costs of one trained arm."""
  config = restore.load_run_config(workdir)
  params, step = restore.load_params(workdir)
  family = family_lib.build(config.model)
  tokenizer = tok_lib.get_tokenizer(config.data.tokenizer, data_dir=config.data.data_dir)
  records = eval_common.load_records(config.data, "validation", eval_records, dataset=DATASET)
  rows, meta = vqa_rows(config, tokenizer, records)
  out = {"step": step, "num_questions": len(rows)}
  for name, blank in (("", False), ("blank_", True)):
    preds = answer(family, params, rows, tokenizer, blank)
    scores = [vqa_lib.vqa_accuracy(p, answers) for p, (_, _, answers) in zip(preds, meta)]
    out[f"{name}accuracy"] = float(np.mean(scores))
    kinds = collections.defaultdict(list)
    for (kind, _, _), score in zip(meta, scores):
      kinds[kind].append(score)
    out[f"{name}accuracy_by_kind"] = {k: float(np.mean(v)) for k, v in sorted(kinds.items())}
    if not blank:
      out["example"] = f"Q: {meta[0][1]} -> {preds[0]!r} (answers {meta[0][2][:3]})"
  media_shape = rows[0]["media"][None].shape
  out["token_budget"] = family.token_budget(media_shape)
  out["steps_per_sec"] = _steps_per_sec(workdir)
  return out


def _steps_per_sec(workdir: str) -> float | None:
  """Median training steps/s of the run's progress reports after the first (compilation)."""
  rates = []
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    for line in f:
      record = json.loads(line)
      if "steps_per_sec" in record:
        rates.append(float(record["steps_per_sec"]))
  rates = rates[1:] or rates
  return float(np.median(rates)) if rates else None


def report(results: dict, command: str) -> str:
  """Markdown table of both arms."""
  kinds = sorted({k for r in results["arms"].values() for k in r["accuracy_by_kind"]})
  lines = ["# AnyRes tiling on `shapes_small` (small objects on 256 px canvases)", "",
           f"Regenerate: `{command}`", "",
           f"Tiny Flamingo ({results['fusion']} fusion), frozen CLIP tower "
           f"({results['clip']}), VQA only, "
           f"{results['steps']} steps of batch {results['batch_size']} per arm, evaluated on "
           "every question of the first "
           f"{results['eval_records']} validation scenes (greedy, VQAv2 accuracy). Steps/s: "
           "median of the progress reports on the shared, loaded 2-core machine (noisy).", "",
           "| arm | frames per image | vision tokens / image | LM visual tokens / image | "
           "VQA acc | blank-image acc | steps/s |", "|---|---|---|---|---|---|---|"]
  for name, r in results["arms"].items():
    t = r["token_budget"]
    rate = "n/a" if r["steps_per_sec"] is None else f"{r['steps_per_sec']:.2f}"
    lines.append(f"| {name} | {t['frames']} | {t['vision_tokens']} | {t['lm_tokens']} | "
                 f"{r['accuracy']:.3f} | {r['blank_accuracy']:.3f} | {rate} |")
  lines += ["", "VQA accuracy per question kind (blank images in brackets):", "",
            "| kind | " + " | ".join(results["arms"]) + " |",
            "|---|" + "---|" * len(results["arms"])]
  for kind in kinds:
    cells = [f"{r['accuracy_by_kind'].get(kind, float('nan')):.3f} "
             f"({r['blank_accuracy_by_kind'].get(kind, float('nan')):.3f})"
             for r in results["arms"].values()]
    lines.append(f"| {kind} | " + " | ".join(cells) + " |")
  lines += ["", "Samples: " + "; ".join(f"{n}: {r['example']}"
                                        for n, r in results["arms"].items())]
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default="/tmp/mmjax_hires")
  parser.add_argument("--clip_workdir", default=None,
                      help="CLIP run whose image tower initialises the vision tower (reused when "
                      "it has a checkpoint, else trained there); default WORKDIR/clip; '' for "
                      "none (the tower then trains from scratch: smoke tests)")
  parser.add_argument("--clip_steps", type=int, default=1000)
  parser.add_argument("--preset", default="tiny", choices=("tiny", "micro"))
  parser.add_argument("--steps", type=int, default=500)
  parser.add_argument("--batch_size", type=int, default=32)
  parser.add_argument("--num_train", type=int, default=4096, help="shapes_small train scenes")
  parser.add_argument("--num_eval", type=int, default=256,
                      help="shapes_small scenes per evaluation split")
  parser.add_argument("--eval_records", type=int, default=96)
  parser.add_argument("--fusion", default="xattn", choices=("xattn", "decoder_only"),
                      help="how the visual tokens enter the LM (model.fusion)")
  parser.add_argument("--arms", default=",".join(ARMS),
                      help="arms to train and evaluate now (comma-separated; others are read "
                      "from WORKDIR/<arm>/result.json when there, so arms can run in parallel "
                      "processes and a final `--arms ''` writes the joint report)")
  parser.add_argument("--output", default=RESULTS, help="directory of the JSON and markdown")
  args = parser.parse_args(argv)
  todo = [a for a in args.arms.split(",") if a]
  unknown = sorted(set(todo) - set(ARMS))
  if unknown:
    raise ValueError(f"unknown --arms {unknown}; choose from {sorted(ARMS)}")
  command = reporting.command_line("experiments/hires.py", argv)
  clip_dir = os.path.join(args.workdir, "clip") if args.clip_workdir is None else \
      args.clip_workdir
  timings = {}
  if todo and clip_dir and not checkpoint.has_checkpoint(clip_dir):
    start = time.time()
    train.train_and_evaluate(config_lib.load_config(
        "configs/clip.py:tiny", [f"total_steps={args.clip_steps}"]), clip_dir)
    timings["clip"] = time.time() - start
  arms = {}
  for name, grids in ARMS.items():
    workdir = os.path.join(args.workdir, name)
    result_path = os.path.join(workdir, "result.json")
    if name in todo:
      start = time.time()
      train.train_and_evaluate(arm_config(args.preset, grids, args.steps, clip_dir or None,
                                          args.num_train, args.batch_size, args.num_eval,
                                          args.fusion), workdir)
      result = evaluate_arm(workdir, args.eval_records)
      result["wall_s"] = time.time() - start
      reporting.write_json(result_path, result)
      print(name, json.dumps(result), flush=True)
    if os.path.exists(result_path):
      with open(result_path, encoding="utf-8") as f:
        arms[name] = json.load(f)
  if not arms:
    raise ValueError(f"no arm results under {args.workdir}; run with --arms first")
  results = {"arms": arms, "timings_s": timings, "command": command, "steps": args.steps,
             "batch_size": args.batch_size, "eval_records": args.eval_records,
             "fusion": args.fusion, "clip": clip_dir or "none", "devices": jax.device_count()}
  os.makedirs(args.output, exist_ok=True)
  reporting.write_json(os.path.join(args.output, "hires.json"), results)
  text = report(results, command)
  reporting.write_text(os.path.join(args.output, "hires.md"), text)
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
