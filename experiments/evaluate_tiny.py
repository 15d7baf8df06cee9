"""Train the tiny CLIP and the tiny Flamingo the paper's way and evaluate both on `shapes`, each
metric beside its baselines, into experiments/results/evaluate_tiny.{json,md}.

    python experiments/evaluate_tiny.py [--workdir /tmp/mmjax_eval_tiny] [--clip_steps 1000]
                                        [--flamingo_steps 1000] [--suite_size full]

Stage 1 trains configs/clip.py:tiny contrastively on shapes captions. Stage 2 trains
configs/flamingo.py:tiny (captions + VQA mixture) with its vision tower initialised from the CLIP
image tower and frozen, as Flamingo freezes its contrastively pre-trained encoder: trained from
scratch through the zero-initialised gates, the tower learns too slowly for the LM to use the
image. Each stage resumes (or is skipped when finished) in its own sub-directory, so an
interrupted run goes on where it stopped. Then `mmjax.evaluate --suite shapes` runs on both.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import ml_collections

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# pylint: disable=wrong-import-position
from mmjax import config_lib, evaluate, reporting, restore, train  # noqa: E402
from mmjax.evaluators import suites  # noqa: E402

RESULTS = os.path.join(REPO, "experiments", "results")

# (metric, [baselines]) rows of the report; a metric "beats" its baselines when it is higher.
ROWS = {
    "clip": [
        ("zeroshot_colour/top1", ["zeroshot_colour/baseline_most_frequent_top1",
                                  "zeroshot_colour/baseline_chance_top1"]),
        ("zeroshot_shape/top1", ["zeroshot_shape/baseline_most_frequent_top1",
                                 "zeroshot_shape/baseline_chance_top1"]),
        ("retrieval/i2t_recall@1", ["retrieval/baseline_random_i2t_recall@1"]),
        ("retrieval/t2i_recall@1", ["retrieval/baseline_random_t2i_recall@1"]),
        ("probe_colour/accuracy", ["probe_colour/baseline_most_frequent"]),
    ],
    "flamingo": [
        ("captioning/cider", ["captioning/baseline_unigram_cider",
                              "captioning/baseline_no_image_cider"]),
        ("captioning/bleu4", ["captioning/baseline_unigram_bleu4",
                              "captioning/baseline_no_image_bleu4"]),
        ("vqa/accuracy", ["vqa/baseline_most_frequent", "vqa/baseline_no_image"]),
        ("multiple_choice/accuracy", ["multiple_choice/baseline_chance",
                                      "multiple_choice/baseline_no_image"]),
        ("probe_shape/accuracy", ["probe_shape/baseline_most_frequent"]),
    ],
}


def release_compiled_programs() -> None:
  """Drops every program jax has compiled so far; sweeps call it before each run. A sweep runs
  many trainings in one process, each leaving its programs in jax's caches: 22 micro Flamingo
  runs with their evaluations exhausted vm.max_map_count (LLVM "Cannot allocate memory", then a
  segfault). Nothing compiled for an earlier run is reused."""
  jax.clear_caches()


def run_stage(spec: str, workdir: str, overrides: list[str], evals=None) -> float:
  """Trains `spec` in `workdir` (resuming; a finished run returns at once); seconds taken.
  `evals` replaces the config's training-time evaluators (an empty dict: none, for sweeps that
  evaluate afterwards)."""
  release_compiled_programs()
  start = time.time()
  config = config_lib.load_config(spec, overrides)
  if evals is not None:
    config.evals = ml_collections.ConfigDict(evals)
  train.train_and_evaluate(config, workdir)
  return time.time() - start


def evaluate_suite(workdir: str, family: str, size: str) -> dict:
  """The shapes suite on the newest checkpoint of `workdir`."""
  return evaluate_workdir(workdir, suites.get_suite("shapes", family, size),
                          max_len=512 if family == "flamingo" else None)


def evaluate_workdir(workdir: str, evals, max_len: int | None = None) -> dict:
  """`evals` (name -> evaluator config) on the newest checkpoint of `workdir`, with its step.
  `max_len` widens the LM context: few-shot prompts of 4+ images need more positions than
  training used, and rotary positions have no table, so it grows without new parameters."""
  config = restore.load_run_config(workdir)
  if max_len is not None:
    config.model.lm.max_len = max_len
  params, step = restore.load_params(workdir)
  results = evaluate.evaluate(config, params, evals, workdir)
  return {"step": step, **results}


def report(results: dict, timings: dict, command: str) -> str:
  """Markdown: every metric beside its baselines, and whether it beats them all."""
  lines = ["# Tiny models on `shapes`, each metric beside its baselines", "",
           f"Regenerate: `{command}`", ""]
  for family, rows in ROWS.items():
    r = results[family]
    spent = timings.get(family)
    spent = "n/a" if spent is None else f"{spent / 60:.1f} min"
    lines += [f"## {family} (step {r['step']}; training time in this invocation: {spent}, "
              "near 0 when it found the stage finished)", "",
              "| metric | model | baselines | beats all |", "|---|---|---|---|"]
    for metric, baselines in rows:
      base = ", ".join(f"{b.split('/')[-1]} {r[b]:.3f}" for b in baselines)
      beats = all(r[metric] > r[b] for b in baselines)
      lines.append(f"| {metric} | {r[metric]:.3f} | {base} | {'yes' if beats else 'no'} |")
    lines.append("")
  fewshot = {k: v for k, v in results["flamingo"].items() if k.startswith("fewshot")}
  lines += ["## Flamingo few-shot (mean over seeds; 'skipped' = prompt longer than max_len)", ""]
  lines += [f"- {k}: {v if isinstance(v, str) else f'{v:.3f}'}" for k, v in sorted(fewshot.items())
            if not k.endswith("_std")]
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default="/tmp/mmjax_eval_tiny")
  parser.add_argument("--clip_steps", type=int, default=1000)
  parser.add_argument("--flamingo_steps", type=int, default=3000)
  parser.add_argument("--suite_size", default="full", choices=("full", "small"))
  parser.add_argument("--output", default=RESULTS, help="directory of the JSON and markdown")
  parser.add_argument("--from_json", action="store_true",
                      help="only rewrite the markdown from OUTPUT/evaluate_tiny.json")
  args = parser.parse_args(argv)
  json_path = os.path.join(args.output, "evaluate_tiny.json")
  command = reporting.command_line("experiments/evaluate_tiny.py", argv)
  if args.from_json:
    with open(json_path, encoding="utf-8") as f:
      saved = json.load(f)
    text = report(saved, saved.get("timings_s", {}), saved.get("command", command))
    reporting.write_text(os.path.join(args.output, "evaluate_tiny.md"), text)
    print(text)
    return 0
  clip_dir = os.path.join(args.workdir, "clip")
  flamingo_dir = os.path.join(args.workdir, "flamingo")
  timings = {
      "clip": run_stage("configs/clip.py:tiny", clip_dir,
                        [f"total_steps={args.clip_steps}"]),
      "flamingo": run_stage("configs/flamingo.py:tiny", flamingo_dir, [
          f"total_steps={args.flamingo_steps}", f"init_from=('vision={clip_dir}:image',)",
          "model.freeze_vision=True"]),
  }
  results = {family: evaluate_suite(d, family, args.suite_size)
             for family, d in (("clip", clip_dir), ("flamingo", flamingo_dir))}
  os.makedirs(args.output, exist_ok=True)
  reporting.write_json(json_path, {**results, "timings_s": timings, "command": command})
  text = report(results, timings, command)
  reporting.write_text(os.path.join(args.output, "evaluate_tiny.md"), text)
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
