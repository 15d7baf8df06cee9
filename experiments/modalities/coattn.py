"""VQA accuracy of the pre-LLM vision-language encoders (ViLBERT, LXMERT, VisualBERT) on `shapes`
beside a text-only baseline, into experiments/results/modalities/coattn.{json,md}.

    python experiments/modalities/coattn.py [--workdir /tmp/mmjax_coattn] [--pretrain_steps 100]
                                            [--steps 150] [--size tiny]

Per encoder, through the one trainer: (1) pre-train `configs/<family>.py:<size>` with masked
language modelling + image-text matching on shapes captions; (2) fine-tune
`configs/<family>.py:<size>_vqa` (answer classifier over the train split's answers) with the ViT
and encoder initialised from (1); (3) evaluate with the `vqa_class` evaluator on every question
of the validation scenes. The baseline is the same VQA model from the same pre-trained weights,
fine-tuned with `model.blind=True` (images replaced by zeros: a question-only classifier);
`--baselines` names which encoders get one (default: visualbert, to fit the time budget). Each
stage resumes in its own sub-directory.

The regions. The papers read frozen Faster R-CNN features; we have no detector, so the regions
are ViT patch tokens: by default of the preset's small ViT, trained from scratch with the
encoder (the committed coattn.md). With `--clip_workdir DIR` they come from the image tower of a
CLIP run (trained there from configs/clip.py:SIZE when DIR holds no checkpoint), frozen in every
stage as the papers' detector is.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

# pylint: disable=wrong-import-position
import ml_collections  # noqa: E402

from mmjax import checkpoint, config_lib, evaluate, reporting, restore, train  # noqa: E402

NAME = "coattn"
ENCODERS = ("vilbert", "lxmert", "visualbert")
RESULTS = os.path.join(REPO, "experiments", "results", "modalities")


def run_stage(spec: str, workdir: str, overrides: list[str]) -> tuple[float, dict]:
  """Trains `spec` in `workdir` (resuming): (seconds, metrics); (0, {}) when the workdir already
  holds the final step's checkpoint (the trainer would still build and compile its step)."""
  steps = [o.split("=", 1)[1] for o in overrides if o.startswith("total_steps=")]
  if steps and os.path.isdir(os.path.join(workdir, "checkpoints", steps[-1])):
    return 0.0, {}
  start = time.time()
  config = config_lib.load_config(spec, overrides)
  metrics = train.train_and_evaluate(config, workdir)
  return time.time() - start, metrics


# The ViT fields a CLIP run's image tower fixes (the VL encoders' ViT must have its shape to
# receive its weights); pooling and projection stay the VL preset's (the encoders read tokens).
VISION_SHAPE = ("image_size", "patch_size", "width", "depth", "num_heads", "mlp_dim",
                "activation", "class_token", "patch_bias", "ln_pre", "norm_eps")


def ensure_clip(clip_dir: str, size: str, steps: int) -> float:
  """Reuses a checkpoint in `clip_dir`, else trains configs/clip.py:SIZE there; seconds spent."""
  if checkpoint.has_checkpoint(clip_dir):
    return 0.0
  return run_stage(f"configs/clip.py:{size}", clip_dir, stage_overrides(steps, None, []))[0]


def clip_vision_overrides(vision: ml_collections.ConfigDict) -> list[str]:
  """Overrides that give the encoders' ViT the shape of a CLIP run's image tower (`vision`, its
  model.vision) and freeze it (the papers' frozen detector); the pre-training stage also copies
  its weights (`init_from`)."""
  return [f"model.vision.{k}={vision[k]}" for k in VISION_SHAPE] + [
      "optim.frozen=('^vision/',)"]


def stage_overrides(steps: int, data_dir: str | None, extra: list[str]) -> list[str]:
  """Step count, a warmup that fits it, checkpoints only at the end, then `extra` overrides."""
  out = [f"total_steps={steps}", f"optim.warmup_steps={max(1, min(20, steps // 5))}",
         f"checkpoint.every_steps={steps}", "log.every_steps=10", "log.tensorboard=False"]
  if data_dir:
    out.append(f"data.data_dir={data_dir}")
  return out + list(extra)


def vqa_eval(workdir: str, num_examples: int | None) -> dict:
  """The vqa_class evaluator on the newest checkpoint of `workdir` (validation scenes), with every
  question also asked of another scene's image (`vqa/answers_changed`)."""
  config = restore.load_run_config(workdir)
  params, step = restore.load_params(workdir)
  evals = ml_collections.ConfigDict({"vqa": dict(type="vqa_class", split="validation",
                                                 num_examples=num_examples, swap_images=True)})
  return {"step": step, **evaluate.evaluate(config, params, evals, workdir)}


def pretrain_eval(workdir: str, batches: int) -> dict:
  """MLM and ITM accuracy on validation captions (a fixed corruption; chance ITM is 0.5)."""
  config = restore.load_run_config(workdir)
  params, step = restore.load_params(workdir)
  evals = ml_collections.ConfigDict({"pretrain": dict(type="loss", split="validation",
                                                      num_batches=batches)})
  return {"step": step, **evaluate.evaluate(config, params, evals, workdir)}


# Bumped when the evaluation changes, so older saved results are recomputed.
EVAL_VERSION = 2


def cached(path: str, compute, *workdirs: str) -> dict:
  """`compute()`, saved at `path` and reused while the `workdirs`' newest checkpoints are the
  ones it evaluated (so invocations that trained different encoders in parallel combine cheaply)
  and EVAL_VERSION is the one that wrote it."""
  key = [sorted(int(n) for n in os.listdir(os.path.join(w, "checkpoints")) if n.isdigit())
         for w in workdirs] + [EVAL_VERSION]
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      saved = json.load(f)
    if saved.get("checkpoints") == key:
      return saved["results"]
  results = compute()
  reporting.write_json(path, {"checkpoints": key, "results": results})
  return results


def rows_of(results: dict) -> list[dict]:
  """The combined table's rows: VQA accuracy vs the text-only baseline and the most frequent
  answer, the share of answers that depend on the image, ITM accuracy vs chance."""
  rows = []
  for enc in ENCODERS:
    if enc not in results:
      continue
    r = results[enc]
    # Its own blind twin when it has one (same pre-trained weights); else the first baseline's.
    base = ({"encoder": enc, **results[f"{enc}_blind"]} if f"{enc}_blind" in results
            else results.get("baseline", {}))
    acc = r["vqa"]["vqa/accuracy"]
    if base:
      rows.append(dict(model=enc, metric="VQA accuracy (shapes validation, all questions)",
                       value=acc, baseline=f"text-only {base['encoder']} (blind images)",
                       baseline_value=base["vqa"]["vqa/accuracy"],
                       beats_baseline=bool(acc > base["vqa"]["vqa/accuracy"])))
    most = r["vqa"]["vqa/baseline_most_frequent"]
    rows.append(dict(model=enc, metric="VQA accuracy (shapes validation, all questions)",
                     value=acc, baseline="most frequent answer", baseline_value=most,
                     beats_baseline=bool(acc > most)))
    if "vqa/answers_changed" in r["vqa"]:
      changed = r["vqa"]["vqa/answers_changed"]
      rows.append(dict(model=enc, metric="VQA answers changed by another scene's image",
                       value=changed, baseline="a question-only classifier", baseline_value=0.0,
                       beats_baseline=bool(changed > 0.0)))
    itm = r["pretrain"]["pretrain/itm_accuracy"]
    rows.append(dict(model=enc, metric="ITM accuracy after pre-training (validation captions)",
                     value=itm, baseline="chance", baseline_value=0.5,
                     beats_baseline=bool(itm > 0.5)))
  return rows


def report(saved: dict) -> str:
  """Markdown: command, wall time, the table, per-kind accuracies."""
  lines = ["# Pre-LLM vision-language encoders: VQA on `shapes` vs a text-only baseline", "",
           f"Command: `{saved['command']}`", "",
           f"Wall time: {saved['wall_s'] / 60:.1f} min (training and evaluation of every stage; "
           "with --prior_wall_s, including the earlier invocations whose stages it reused).", "",
           "| model | metric | value | baseline | baseline value | beats |",
           "|---|---|---|---|---|---|"]
  for row in saved["rows"]:
    lines.append(f"| {row['model']} | {row['metric']} | {row['value']:.3f} | {row['baseline']} "
                 f"| {row['baseline_value']:.3f} | {'yes' if row['beats_baseline'] else 'no'} |")
  kinds = saved.get("kinds", [])
  for title, prefix in (("exact accuracy", "vqa/accuracy_"),
                        ("share of answers changed by another scene's image",
                         "vqa/answers_changed_")):
    if not any(k.startswith(prefix) for r in saved["results"].values() for k in r["vqa"]):
      continue  # results saved before the measure existed
    lines += ["", f"Per question kind ({title}):", "",
              "| model | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds)]
    for name, r in saved["results"].items():
      lines.append(f"| {name} | " + " | ".join(
          f"{r['vqa'].get(prefix + k, float('nan')):.3f}" for k in kinds) + " |")
  lines += ["", "Setup: " + saved.get("setup", "")]
  if saved.get("note"):
    lines += ["", "Reading: " + saved["note"]]
  return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default="/tmp/mmjax_coattn")
  parser.add_argument("--pretrain_steps", type=int, default=100)
  parser.add_argument("--steps", type=int, default=150, help="VQA fine-tuning steps")
  parser.add_argument("--size", default="tiny", choices=("tiny", "micro"))
  parser.add_argument("--encoders", default=",".join(ENCODERS))
  parser.add_argument("--baselines", default="visualbert",
                      help="encoders that also train a blind (text-only) VQA twin")
  parser.add_argument("--clip_workdir", default=None,
                      help="CLIP run whose image tower gives the frozen regions (trained there "
                           "when it has no checkpoint); default: a ViT trained from scratch "
                           "with each encoder")
  parser.add_argument("--clip_steps", type=int, default=1000,
                      help="steps of the CLIP run when it has to be trained")
  parser.add_argument("--eval_examples", type=int, default=None,
                      help="validation scenes read by the VQA evaluation (None: all)")
  parser.add_argument("--data_dir", default=None, help="data.data_dir of every stage")
  parser.add_argument("--override", action="append", default=[],
                      help="config override for every stage, e.g. data.num_train=64 (repeatable)")
  parser.add_argument("--prior_wall_s", type=float, default=0.0,
                      help="wall seconds of earlier invocations whose stages this one reuses "
                           "(e.g. encoders trained in parallel), added to wall_s")
  parser.add_argument("--note", default="", help="how to read this run's numbers (in the report)")
  parser.add_argument("--output", default=RESULTS)
  parser.add_argument("--from_json", action="store_true",
                      help="only rewrite the markdown from OUTPUT/coattn.json")
  args = parser.parse_args(argv)
  json_path = os.path.join(args.output, f"{NAME}.json")
  command = reporting.command_line("experiments/modalities/coattn.py", argv)
  if args.from_json:
    saved = reporting.read_json(json_path)
  else:
    start = time.time()
    encoders = [e for e in args.encoders.split(",") if e]
    unknown = sorted(set(encoders) - set(ENCODERS))
    if unknown:
      parser.error(f"unknown --encoders {unknown}; choose from {ENCODERS}")
    results, timings = {}, {}
    clip_dir = None
    vision, pre_init = [], []
    if args.clip_workdir:
      clip_dir = os.path.abspath(args.clip_workdir)
      timings["clip"] = ensure_clip(clip_dir, args.size, args.clip_steps)
      vision = clip_vision_overrides(restore.load_run_config(clip_dir).model.vision)
      pre_init = [f"init_from=('vision={clip_dir}:image',)"]
    for enc in encoders:
      pre_dir = os.path.join(args.workdir, enc, "pretrain")
      vqa_dir = os.path.join(args.workdir, enc, "vqa")
      timings[f"{enc}/pretrain"], _ = run_stage(
          f"configs/{enc}.py:{args.size}", pre_dir,
          stage_overrides(args.pretrain_steps, args.data_dir, vision + pre_init + args.override))
      timings[f"{enc}/vqa"], _ = run_stage(
          f"configs/{enc}.py:{args.size}_vqa", vqa_dir,
          stage_overrides(args.steps, args.data_dir, vision + args.override) +
          [f"init_from=('vision={pre_dir}:vision', 'encoder={pre_dir}:encoder')"])
      results[enc] = cached(
          os.path.join(args.workdir, enc, f"eval_{args.eval_examples}.json"),
          lambda: {"pretrain": pretrain_eval(pre_dir, 4),
                   "vqa": vqa_eval(vqa_dir, args.eval_examples)}, pre_dir, vqa_dir)
    baselines = [e for e in args.baselines.split(",") if e]
    for enc in baselines:
      blind_dir = os.path.join(args.workdir, enc, "vqa_blind")
      pre_dir = os.path.join(args.workdir, enc, "pretrain")
      if not os.path.isdir(pre_dir):
        parser.error(f"--baselines {enc} needs {enc} in --encoders (its pre-trained weights)")
      timings[f"{enc}/vqa_blind"], _ = run_stage(
          f"configs/{enc}.py:{args.size}_vqa", blind_dir,
          stage_overrides(args.steps, args.data_dir, vision + args.override) + [
              "model.blind=True",
              f"init_from=('vision={pre_dir}:vision', 'encoder={pre_dir}:encoder')"])
      results[f"{enc}_blind"] = cached(
          os.path.join(args.workdir, enc, f"eval_blind_{args.eval_examples}.json"),
          lambda: {"vqa": vqa_eval(blind_dir, args.eval_examples)}, blind_dir)
    if baselines:
      results["baseline"] = {"encoder": baselines[0], **results[f"{baselines[0]}_blind"]}
    kinds = sorted({k.split("accuracy_")[1] for r in results.values() if "vqa" in r
                    for k in r["vqa"] if "/accuracy_" in k})
    saved = {"component": NAME, "command": command,
             "wall_s": time.time() - start + args.prior_wall_s,
             "rows": rows_of(results), "results": {k: v for k, v in results.items()
                                                   if k != "baseline"},
             "baseline": results.get("baseline", {}).get("encoder"),
             "timings_s": timings, "kinds": kinds, "note": args.note,
             "clip_workdir": clip_dir,
             "setup": (f"configs/<family>.py:{args.size} pre-trained {args.pretrain_steps} steps "
                       f"(MLM + ITM on shapes captions), then :{args.size}_vqa {args.steps} steps "
                       "from it; regions = ViT patch tokens (grid-cell boxes), not detector "
                       "regions, " + (f"from the frozen image tower of the CLIP run {clip_dir} "
                                      "(the papers' frozen detector)" if clip_dir else
                                      "from a ViT trained from scratch with the encoder") +
                       "; text-only baseline = the same VQA config and pre-trained weights "
                       "fine-tuned with model.blind=True (every image zeroed) for the same steps.")}
    reporting.write_json(json_path, saved)
  reporting.write_report(os.path.join(args.output, f"{NAME}.md"), report(saved))
  return saved


if __name__ == "__main__":
  main()
