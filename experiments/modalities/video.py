"""Video Flamingo on `shapes_video`: does the model use several frames? Video QA accuracy (per
question type) and captioning CIDEr, zero- and few-shot, against the same trained model shown
each clip's middle frame repeated T times (the single-frame baseline), into
experiments/results/modalities/video.{json,md}.

    python experiments/modalities/video.py [--workdir /tmp/mmjax_video] [--steps 300] \\
        [--image_workdir /tmp/evt3/flamingo] [--clip_workdir /tmp/evt3/clip] [--suite_size full]

Trains configs/flamingo.py:video_tiny (captions + motion questions on clips of T=4 frames taken
from 8, frozen vision tower) through the one trainer, resuming in WORKDIR/flamingo. With
--image_workdir (an image Flamingo tiny run of experiments/evaluate_tiny.py, whose tower is the
CLIP one) every parameter but the time embeddings starts from that model, as Flamingo's video
ability comes from the image model plus frames; with --image_workdir '' only the vision tower
comes from the CLIP run (--clip_workdir). Then it runs the `shapes_video` suite
(mmjax/evaluators/suites.py). The motion
questions (direction, order, moves, count) cannot be answered from one frame, so the video
model should beat its single-frame self on them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

# pylint: disable=wrong-import-position
from mmjax import config_lib, evaluate, reporting, restore, train  # noqa: E402
from mmjax.evaluators import suites  # noqa: E402

RESULTS = os.path.join(REPO, "experiments", "results", "modalities")
NAME = "video"
SINGLE = "single frame (middle frame x T)"
# The suite's metrics that get a row: (metric of the video model, its single-frame twin).
# Per-type VQA rows are added for every question type the evaluation found.
METRICS = [("vqa/accuracy", "vqa_single_frame/accuracy"),
           ("captioning/cider", "captioning_single_frame/cider"),
           ("fewshot_vqa/0shot_accuracy", "fewshot_vqa_single_frame/0shot_accuracy")]
# Other baselines of the same metric (from the evaluators' baselines=True).
EXTRA_BASELINES = [("vqa/accuracy", "most frequent answer", "vqa/baseline_most_frequent"),
                   ("vqa/accuracy", "blank clips", "vqa/baseline_no_image"),
                   ("captioning/cider", "unigram caption", "captioning/baseline_unigram_cider"),
                   ("captioning/cider", "blank clips", "captioning/baseline_no_image_cider")]


def init_overrides(image_workdir: str, clip_workdir: str) -> list[str]:
  """init_from (and a fine-tuning learning rate) for starting from an image Flamingo run, else
  from a CLIP run's image tower, else nothing."""
  for flag, path in (("--image_workdir", image_workdir), ("--clip_workdir", clip_workdir)):
    if path and not os.path.isdir(path):
      raise FileNotFoundError(f"{flag} {path!r} is not a directory; train it (see "
                              "experiments/evaluate_tiny.py), or pass ''")
  if image_workdir:
    parts = ("vision", "lm", "resampler/latents", "resampler/layers", "resampler/norm")
    specs = ", ".join(f"'{p}={image_workdir}:{p}'" for p in parts)
    # Fine-tuning a trained model: a third of the from-scratch learning rate.
    return [f"init_from=({specs},)", "optim.learning_rate=1e-3"]
  if clip_workdir:
    return [f"init_from=('vision={clip_workdir}:image',)"]
  return []


def rows_of(results: dict, model: str) -> list[dict]:
  """The JSON rows: each metric beside the single-frame baseline, then the other baselines."""
  pairs = list(METRICS)
  kinds = sorted(k.split("accuracy_", 1)[1] for k in results if k.startswith("vqa/accuracy_"))
  pairs += [(f"vqa/accuracy_{k}", f"vqa_single_frame/accuracy_{k}") for k in kinds]
  shots = sorted({k.split("/")[1].split("shot")[0] for k in results
                  if k.startswith("fewshot_vqa/") and k.endswith("shot_accuracy")}, key=int)
  pairs += [(f"fewshot_vqa/{s}shot_accuracy", f"fewshot_vqa_single_frame/{s}shot_accuracy")
            for s in shots if s != "0"]
  rows = [(m, SINGLE, b) for m, b in pairs] + EXTRA_BASELINES
  out = []
  for metric, baseline, key in rows:
    value, base = results.get(metric), results.get(key)
    if not isinstance(value, (int, float)) or not isinstance(base, (int, float)):
      continue  # Skipped (prompt too long) or absent at this suite size.
    out.append({"model": model, "metric": metric, "value": float(value), "baseline": baseline,
                "baseline_value": float(base), "beats_baseline": bool(value > base)})
  return out


def report(saved: dict) -> str:
  """Markdown: command, wall time, the table, and the few-shot captioning figures."""
  lines = [f"# Video: {saved['model']} vs its single-frame self on shapes_video", "",
           f"Regenerate: `{saved['command']}`", "",
           f"Wall time: {saved['wall_s'] / 60:.1f} min (training {saved['train_s'] / 60:.1f} min "
           f"in this invocation, near 0 when it found the run finished; step {saved['step']}).",
           "", "| metric | model | baseline | baseline value | beats |", "|---|---|---|---|---|"]
  for r in saved["rows"]:
    lines.append(f"| {r['metric']} | {r['value']:.3f} | {r['baseline']} | "
                 f"{r['baseline_value']:.3f} | {'yes' if r['beats_baseline'] else 'no'} |")
  res = saved["results"]
  counts = ", ".join(f"{k.split('num_')[1]} {v}" for k, v in sorted(res.items())
                     if k.startswith("vqa/num_") and k != "vqa/num_questions")
  lines += ["", f"Questions per type: {counts} (of {res.get('vqa/num_questions')}).", "",
            "Few-shot captioning CIDEr (demonstrations are clips): " + ", ".join(
                f"{k.split('/')[1]} {v if isinstance(v, str) else f'{v:.3f}'}"
                for k, v in sorted(res.items())
                if k.startswith("fewshot_captioning/") and not k.endswith("_std")), "",
            f"Samples: {res.get('captioning/example')}; {res.get('vqa/example')}"]
  if saved.get("notes"):
    lines += ["", "Notes:", ""] + [f"- {n}" for n in saved["notes"]]
  return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
  """Trains (or resumes) and evaluates; returns the saved JSON dict."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default="/tmp/mmjax_video")
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--preset", default="video_tiny", help="configs/flamingo.py preset")
  parser.add_argument("--clip_workdir", default="/tmp/evt3/clip",
                      help="CLIP run whose image tower initialises the frozen vision tower "
                      "('' : none, e.g. for video_micro whose tower is smaller)")
  parser.add_argument("--image_workdir", default="/tmp/evt3/flamingo",
                      help="image Flamingo run (configs/flamingo.py:tiny) to start every "
                      "parameter but the time embeddings from ('': none)")
  parser.add_argument("--suite_size", default="full", choices=("full", "small"))
  parser.add_argument("--only", default="",
                      help="comma-separated entries of the shapes_video suite to run (default: "
                      "all), e.g. vqa,vqa_single_frame for a quick check")
  parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                      help="extra config override (repeatable), e.g. data.num_train=64")
  parser.add_argument("--note", action="append", default=[],
                      help="a line for the report's notes (repeatable), e.g. an earlier run")
  parser.add_argument("--output", default=RESULTS, help="directory of the JSON and markdown")
  parser.add_argument("--from_json", action="store_true",
                      help="only rewrite the markdown from OUTPUT/video.json")
  args = parser.parse_args(argv)
  json_path = os.path.join(args.output, f"{NAME}.json")
  command = reporting.command_line("experiments/modalities/video.py", argv)
  if args.from_json:
    saved = reporting.read_json(json_path)
  else:
    start = time.time()
    overrides = [f"total_steps={args.steps}"] + list(args.set)
    overrides += init_overrides(args.image_workdir, args.clip_workdir)
    workdir = os.path.join(args.workdir, "flamingo")
    config = config_lib.load_config(f"configs/flamingo.py:{args.preset}", overrides)
    train.train_and_evaluate(config, workdir)
    train_s = time.time() - start
    config = restore.load_run_config(workdir)
    # Few-shot prompts hold several clips; rotary positions have no table, so the context
    # grows without new parameters.
    config.model.lm.max_len = 512
    params, step = restore.load_params(workdir)
    suite = suites.get_suite("shapes_video", "flamingo", args.suite_size)
    if args.only:
      unknown = sorted(set(args.only.split(",")) - set(suite))
      if unknown:
        raise ValueError(f"--only names {unknown}, not in the suite {sorted(suite)}")
      suite = {k: v for k, v in suite.items() if k in args.only.split(",")}
    results = evaluate.evaluate(config, params, suite, workdir)
    model = (f"flamingo {args.preset} (T={config.data.num_frames} of "
             f"{config.data.clip_frames or config.data.num_frames} frames)")
    saved = {"component": NAME, "command": command, "wall_s": time.time() - start,
             "train_s": train_s, "step": step, "model": model,
             "rows": rows_of(results, model), "results": results, "notes": list(args.note)}
    reporting.write_json(json_path, saved)
  reporting.write_report(os.path.join(args.output, f"{NAME}.md"), report(saved))
  return saved


if __name__ == "__main__":
  main()
