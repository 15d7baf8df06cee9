"""The connector zoo x fusion table (issue #12; MM1 / LLaVA / BLIP-2 / Qwen-VL ablations at toy
scale): every connector (`model.connector`) with gated cross-attention (`model.fusion='xattn'`)
and with decoder-only splicing (`'decoder_only'`), each trained with the same budget on `shapes`
and evaluated beside itself with blank images, into experiments/results/connectors.{json,md}.

    python experiments/connectors.py [--workdir /tmp/mmjax_connectors] [--steps 600]
        [--connectors resampler,mlp,avgpool,qwen_xattn,qformer,qformer_blip2,transformer]
        [--fusions xattn,decoder_only]
        [--clip_workdir /tmp/evt3/clip]

The recipe is experiments/evaluate_tiny.py's (trained from scratch, the tiny VLM barely uses the
image): CLIP stage 1 (configs/clip.py:tiny; reused from --clip_workdir when it holds a checkpoint,
trained there otherwise), then configs/flamingo.py:tiny with the chosen connector and fusion and
its vision tower initialised from the CLIP image tower and frozen. Each run resumes in its own
sub-directory and finished rows are kept in the JSON, so an interrupted sweep goes on where it
stopped. A row "beats no-image" when VQA accuracy and CIDEr are both above the same model's with
blank images (the captioning / vqa evaluators' `baseline_no_image` twins).

`qformer_blip2` is the Q-Former with BLIP-2's two-stage recipe (Li et al. 2023, §3.2): before
the shared budget, a Q-Former stage-1 run (configs/qformer.py:PRESET: image-text contrastive,
matching and image-grounded generation against the same frozen CLIP tower) initialises the
connector's `ln_vision` and `qformer`; the `qformer` rows train the same module from scratch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import ml_collections
import numpy as np

EXPERIMENTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(EXPERIMENTS)
sys.path.insert(0, EXPERIMENTS)

# pylint: disable=wrong-import-position
import evaluate_tiny  # noqa: E402  pylint: disable=import-error
from mmjax import checkpoint, config_lib, reporting  # noqa: E402
from mmjax.models import connectors as connectors_lib  # noqa: E402
from mmjax.models import family as family_lib  # noqa: E402
from mmjax import restore  # noqa: E402

FUSIONS = ("xattn", "decoder_only")


# Rows beyond model.connector's names -> the connector they build (qformer_blip2 adds its stage 1).
VARIANTS = {"qformer_blip2": "qformer"}


def combo_overrides(connector: str, fusion: str, steps: int, clip_dir: str,
                    extra: tuple[str, ...] = (), stage1_dir: str | None = None) -> list[str]:
  """Config overrides of one row: the connector and fusion, the shared budget, and the frozen
  CLIP vision tower (the recipe that makes the tiny VLM use the image); `stage1_dir`: a Q-Former
  stage-1 run that initialises the connector (qformer_blip2)."""
  inits = [f"vision={clip_dir}:image"]
  if stage1_dir:  # the Q-Former and its input norm; the projection into the LM starts fresh
    inits += [f"connector/{m}={stage1_dir}:stage1/{m}" for m in ("ln_vision", "qformer")]
  return [f"model.connector={VARIANTS.get(connector, connector)}", f"model.fusion={fusion}",
          f"total_steps={steps}", f"init_from={tuple(inits)!r}", "model.freeze_vision=True",
          *extra]


def qformer_stage1_overrides(preset: str, steps: int, clip_dir: str) -> list[str]:
  """configs/qformer.py:PRESET against the frozen CLIP tower, its Q-Former shaped as the
  Flamingo connector's (every shape field, incl. text positions and vocabulary rows) so the whole
  module carries over."""
  bert = config_lib.load_config(os.path.join(REPO, f"configs/flamingo.py:{preset}"),
                                ["model.connector=qformer"]).model.qformer.bert
  shape_fields = ("num_queries", "width", "depth", "num_heads", "mlp_dim", "cross_attention_freq",
                  "max_length", "vocab_size")
  return [f"total_steps={steps}", f"init_from=('vision={clip_dir}:image',)",
          "model.freeze_vision=True",
          *[f"model.stage1.qformer.{k}={bert[k]}" for k in shape_fields]]


def ensure_stage(spec: str, workdir: str, overrides: list[str]) -> float:
  """Reuses a checkpoint in `workdir`, else trains config `spec` there; seconds spent."""
  if checkpoint.has_checkpoint(workdir):
    return 0.0
  return evaluate_tiny.run_stage(spec, workdir, overrides)


def eval_suite(num_examples: int, max_new_tokens: int) -> ml_collections.ConfigDict:
  """Captioning (CIDEr) and VQA accuracy on unseen scenes, each with its blank-image twin."""
  return ml_collections.ConfigDict(dict(
      captioning=dict(type="captioning", num_examples=num_examples, baselines=True,
                      max_new_tokens=max_new_tokens),
      vqa=dict(type="vqa", num_examples=num_examples, baselines=True)))


def param_counts(workdir: str) -> tuple[int, int, int]:
  """(trainable parameters, all parameters, visual tokens per image) of the run in `workdir`,
  trainable under its freeze flags (the CLIP tower is frozen)."""
  config = restore.load_run_config(workdir)
  fam = family_lib.build(config.model)
  params, _ = restore.load_params(workdir)
  sizes = [int(np.size(x)) for x in jax.tree.leaves(params)]
  mask = [bool(m) for m in jax.tree.leaves(fam.trainable_mask(params))]
  size = config.model.vision.image_size
  tokens = fam.tokens_per_media((1, 1, 1, size, size, 3))
  return sum(s for s, m in zip(sizes, mask) if m), sum(sizes), int(tokens)


def step_time(workdir: str) -> float:
  """Median seconds per training step over the run's logged windows (the first, which holds the
  input pipeline's warm-up, is left out when there are others; evaluations are not counted)."""
  rates = []
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    for line in f:
      row = json.loads(line)
      if "steps_per_sec" in row:
        rates.append(1.0 / row["steps_per_sec"])
  if not rates:
    raise ValueError(f"{workdir}/metrics.jsonl has no steps_per_sec rows")
  return statistics.median(rates[1:] if len(rates) > 1 else rates)


def ensure_clip(clip_dir: str, steps: int, overrides: tuple[str, ...] = (),
                preset: str = "tiny") -> float:
  """Stage 1: reuses a CLIP checkpoint in `clip_dir`, else trains configs/clip.py:PRESET there
  (`steps`, then `overrides`); seconds spent."""
  return ensure_stage(f"configs/clip.py:{preset}", clip_dir, [f"total_steps={steps}", *overrides])


def run_row(connector: str, fusion: str, args, clip_dir: str) -> dict:
  """Trains and evaluates one connector x fusion row; its JSON record."""
  workdir = os.path.join(args.workdir, f"{connector}_{fusion}")
  stage1_dir = None
  if connector == "qformer_blip2":
    stage1_dir = os.path.join(args.workdir, "qformer_stage1")
    ensure_stage(f"configs/qformer.py:{args.preset}", stage1_dir,
                 qformer_stage1_overrides(args.preset, args.qformer_stage1_steps, clip_dir))
  overrides = combo_overrides(connector, fusion, args.steps, clip_dir, tuple(args.override),
                              stage1_dir)
  train_s = evaluate_tiny.run_stage(f"configs/flamingo.py:{args.preset}", workdir, overrides,
                                    evals={})  # evaluated below, once
  start = time.time()
  r = evaluate_tiny.evaluate_workdir(workdir, eval_suite(args.eval_examples, args.max_new_tokens))
  trainable, total, tokens = param_counts(workdir)
  return {
      "connector": connector, "fusion": fusion, "step": r["step"], "tokens_per_image": tokens,
      "trainable_params": trainable, "total_params": total, "step_time_s": step_time(workdir),
      "vqa": r["vqa/accuracy"], "vqa_blank": r["vqa/baseline_no_image"],
      "vqa_most_frequent": r["vqa/baseline_most_frequent"],
      "cider": r["captioning/cider"], "cider_blank": r["captioning/baseline_no_image_cider"],
      "train_s": train_s, "eval_s": time.time() - start}


def beats(row: dict) -> str:
  """'yes' when both metrics beat the blank-image twin, else 'no' naming the ones that do not."""
  failed = [name for name, key in (("VQA", "vqa"), ("CIDEr", "cider"))
            if not row[key] > row[f"{key}_blank"]]
  return "yes" if not failed else f"no ({', '.join(failed)})"


def report(saved: dict) -> str:
  """Markdown table of the saved rows, with the command and the wall time."""
  rows = saved["rows"]
  lines = [
      f"# Connectors x fusion on `shapes` ({saved['preset']}, frozen CLIP tower), each beside "
      "its no-image twin",
      "", f"Regenerate: `{saved['command']}`", "",
      f"Budget: {saved['steps']} steps per row (configs/flamingo.py:{saved['preset']}, CLIP tower "
      f"from `{saved['clip_workdir']}`, frozen). Evaluation: {saved['eval_examples']} unseen "
      "scenes for CIDEr and for VQA accuracy, then the same model with blank images. Wall time "
      f"of the sweep: {saved['wall_s'] / 60:.1f} min (this invocation; rows already in the JSON "
      "are not re-run). Step time: median seconds per training step on a shared 2-core CPU "
      "(noisy; compare within the table only).", "",
      "| connector | fusion | tokens/image | params (trainable) | step time (s) | "
      "VQA acc (image / blank) | CIDEr (image / blank) | beats no-image |",
      "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(
        f"| {r['connector']} | {r['fusion']} | {r['tokens_per_image']} | "
        f"{r['trainable_params']:,} | {r['step_time_s']:.3f} | {r['vqa']:.3f} / "
        f"{r['vqa_blank']:.3f} | {r['cider']:.3f} / {r['cider_blank']:.3f} | {beats(r)} |")
  if rows:
    won = sum(beats(r) == "yes" for r in rows)
    lines += ["", f"Rows that beat their no-image twin on both metrics: {won} of {len(rows)}. "
              f"VQA most-frequent-answer baseline: {rows[0]['vqa_most_frequent']:.3f}."]
  if saved.get("notes"):
    lines += ["", saved["notes"]]
  return "\n".join(lines) + "\n"


def _names(text: str, known, flag: str) -> list[str]:
  """A comma list of `known` names; a clear error naming the flag otherwise."""
  names = [n for n in text.split(",") if n]
  unknown = [n for n in names if n not in known]
  if unknown or not names:
    raise ValueError(f"{flag}: unknown {unknown or 'empty list'}; choose from {sorted(known)}")
  return names


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default="/tmp/mmjax_connectors")
  parser.add_argument("--preset", default="tiny", choices=("tiny", "micro"),
                      help="configs/{clip,flamingo}.py preset: tiny (the table), micro (tests)")
  parser.add_argument("--steps", type=int, default=600, help="training steps of every row")
  parser.add_argument("--connectors", default=",".join([*connectors_lib.CONNECTORS, *VARIANTS]),
                      help="model.connector names, and qformer_blip2 (the Q-Former after its "
                           "BLIP-2 stage 1)")
  parser.add_argument("--qformer_stage1_steps", type=int, default=300,
                      help="steps of qformer_blip2's stage 1 (configs/qformer.py's preset)")
  parser.add_argument("--fusions", default=",".join(FUSIONS))
  parser.add_argument("--clip_workdir", default=None,
                      help="CLIP stage-1 run to reuse (trained there when it has no checkpoint; "
                           "default WORKDIR/clip)")
  parser.add_argument("--clip_steps", type=int, default=1000)
  parser.add_argument("--eval_examples", type=int, default=64)
  parser.add_argument("--max_new_tokens", type=int, default=24, help="caption length")
  parser.add_argument("--override", action="append", default=[],
                      help="extra config override for every row, e.g. optim.learning_rate=1e-3")
  parser.add_argument("--clip_override", action="append", default=[],
                      help="extra config override of the CLIP stage when it trains")
  parser.add_argument("--output", default=evaluate_tiny.RESULTS,
                      help="directory of connectors.json and connectors.md")
  parser.add_argument("--from_json", action="store_true",
                      help="only rewrite the markdown from OUTPUT/connectors.json")
  args = parser.parse_args(argv)
  json_path = os.path.join(args.output, "connectors.json")
  md_path = os.path.join(args.output, "connectors.md")
  if args.from_json:
    with open(json_path, encoding="utf-8") as f:
      text = report(json.load(f))
    reporting.write_text(md_path, text)
    print(text)
    return 0
  start = time.time()
  connectors = _names(args.connectors, [*connectors_lib.CONNECTORS, *VARIANTS], "--connectors")
  fusions = _names(args.fusions, FUSIONS, "--fusions")
  clip_dir = os.path.abspath(args.clip_workdir or os.path.join(args.workdir, "clip"))
  command = reporting.command_line("experiments/connectors.py", argv)
  previous = {}
  if os.path.exists(json_path):
    with open(json_path, encoding="utf-8") as f:
      old = json.load(f)
    if old.get("steps") == args.steps and old.get("workdir") == args.workdir:
      previous = {(r["connector"], r["fusion"]): r for r in old["rows"]}
  saved = {"command": command, "steps": args.steps, "preset": args.preset, "workdir": args.workdir,
           "clip_workdir": clip_dir, "eval_examples": args.eval_examples, "rows": [],
           "clip_train_s": ensure_clip(clip_dir, args.clip_steps, tuple(args.clip_override),
                                   args.preset), "wall_s": 0.0}
  os.makedirs(args.output, exist_ok=True)
  for connector in connectors:
    for fusion in fusions:
      row = previous.get((connector, fusion)) or run_row(connector, fusion, args, clip_dir)
      saved["rows"].append(row)
      saved["wall_s"] = time.time() - start
      reporting.write_json(json_path, saved)  # after every row: a crash keeps them
      reporting.write_text(md_path, report(saved))
      print(f"{connector} x {fusion}: {row}", flush=True)
  text = report(saved)
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
