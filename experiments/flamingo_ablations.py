"""The Flamingo paper's Table 3 ablations (Alayrac et al. 2022, §3.3), reproduced at small scale
on the procedural `shapes` data, into experiments/results/flamingo_ablations.{json,md} (micro)
or flamingo_ablations_tiny.{json,md} (tiny).

    python experiments/flamingo_ablations.py --scale micro --seeds 0,1,2 [--jobs 2] \
        [--workdir /tmp/mmjax_ablations] [--rows baseline,no_tanh_gating,...] [--steps N]
    python experiments/flamingo_ablations.py --from_json     # rewrite the table only

`--jobs N` shares the stage-3 runs among N single-core worker processes (sweep_jobs.py).

The recipe every row shares (the paper's, at our scale):
  stage 1  CLIP on shapes captions                    -> the frozen vision tower
  stage 2  a decoder LM on shapes text (captions, Q/A, documents, video descriptions)
                                                      -> the frozen language model
  stage 3  Flamingo on the mixture of interleaved documents (M3W-like), image-caption and
           image-question pairs, and video QA clips; towers frozen, resampler + gated blocks
           trained; the datasets fill fixed blocks of every batch and each block is its own
           gradient-accumulation micro-batch (the paper's accumulation over datasets).
Each row changes stage 3 (or swaps a stage-1/2 tower) and is trained with the same budget for
every seed. Our overall score is the paper's kind of normalised mean: the mean over shapes
captioning CIDEr, shapes VQA accuracy and shapes-video QA accuracy, each divided by the
baseline's mean over seeds (so the baseline scores 1 by construction). Beside it, the paper's
overall score and its ratio to the paper's baseline (70.7), and whether the direction agrees.

Every stage and run resumes in its own directory, and the results JSON is rewritten after each
evaluated run, so an interrupted sweep goes on where it stopped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from typing import Any, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# pylint: disable=wrong-import-position
import ml_collections  # noqa: E402

from mmjax import config_lib, reporting, restore  # noqa: E402
from mmjax.models import xattn  # noqa: E402

import evaluate_tiny  # noqa: E402  pylint: disable=import-error  (experiments/ is on sys.path)
import sweep_jobs  # noqa: E402  pylint: disable=import-error

RESULTS = os.path.join(REPO, "experiments", "results")
PAPER_BASELINE = 70.7
METRICS = ("captioning/cider", "vqa/accuracy", "video_vqa/accuracy")

# Stage-3 data: (dataset, task) blocks of every batch, in this order.
MIXTURE = (("shapes_interleaved", "interleaved"), ("shapes", "caption"), ("shapes", "vqa"),
           ("shapes_video", "video_qa"))


@dataclasses.dataclass(frozen=True)
class Row:
  """One Table 3 row: stage-3 config overrides, towers used, and the paper's overall score."""
  name: str
  paper: float | None  # the paper's overall score (baseline 70.7)
  what: str  # the paper's wording of the change
  overrides: tuple[str, ...] = ()
  drop: tuple[str, ...] = ()  # MIXTURE tasks left out ('interleaved', 'pairs', 'video')
  vision: str = "clip"  # the stage-1 run the vision tower comes from
  lm: str = "pretrained_frozen"  # 'pretrained_frozen' | 'pretrained_unfrozen' | 'scratch'


ROWS = (
    Row("baseline", 70.7, "the full recipe"),
    Row("no_tanh_gating", 66.5, "(iii) w/o tanh gating", ("model.xattn.gating=none",)),
    Row("xattn_every_2nd", 68.2, "(v) cross-attention every 2nd layer",
        ("model.xattn.cross_attn_every_n=2",)),
    Row("xattn_every_4th", 68.8, "(v) cross-attention every 4th layer",
        ("model.xattn.cross_attn_every_n=4",)),
    Row("xattn_single", 59.8, "(v) a single cross-attention layer in the middle", ()),
    Row("resampler_mlp", 66.6, "(vi) MLP instead of the Perceiver resampler",
        ("model.connector=mlp",)),
    Row("resampler_transformer", 66.7, "(vi) Transformer instead of the resampler",
        ("model.connector=transformer",)),
    Row("small_vision", 62.7, "(vii) a smaller vision encoder (NFNet-F0 for F6)",
        vision="clip_small"),
    Row("lm_unfrozen_scratch", 57.8, "(viii) LM unfrozen, random init", lm="scratch"),
    Row("lm_unfrozen_pretrained", 62.7, "(viii) LM unfrozen, pretrained",
        lm="pretrained_unfrozen"),
    Row("no_interleaved", 53.4, "(i) w/o M3W (interleaved documents)", drop=("interleaved",)),
    Row("no_pairs", 60.9, "(i) w/o image-text pairs", drop=("pairs",)),
    Row("no_video", 67.3, "(i) w/o video-text pairs", drop=("video",)),
    Row("round_robin", 62.9, "(ii) round robin across datasets instead of accumulation",
        ("data.mixing=round_robin", "optim.grad_accum_steps=1")),
)
ROW_NAMES = tuple(r.name for r in ROWS)


# ---- Configs of the three stages -----------------------------------------------------------

def _fields(section: ml_collections.ConfigDict, names: Sequence[str]) -> dict[str, Any]:
  return {n: section[n] for n in names}


VISION_SHAPE = ("image_size", "patch_size", "width", "depth", "num_heads", "mlp_dim")
LM_SHAPE = ("vocab_size", "width", "depth", "num_heads", "num_kv_heads", "head_dim", "mlp_dim",
            "activation", "norm", "positions", "tie_embeddings")


# Shared by stages 2 and 3 at every scale: 4 LM layers (so "every 4th layer" exists), 4 frames
# per clip (the resampler's time embeddings), rows long enough for documents of 4 images, and a
# batch that splits into equal blocks for 4, 3 or 2 datasets.
COMMON = {"lm.depth": 4, "num_frames": 4, "text_length": 64, "batch_size": 24}


def _flamingo_base(scale: str) -> ml_collections.ConfigDict:
  return config_lib.load_config(os.path.join(REPO, f"configs/flamingo.py:{scale}"),
                                [f"model.lm.depth={COMMON['lm.depth']}"])


def clip_overrides(scale: str, small: bool, steps: int) -> tuple[str, list[str]]:
  """Stage 1: configs/clip.py:SCALE with the Flamingo preset's vision tower (halved: small)."""
  v = _flamingo_base(scale).model.vision
  shape = _fields(v, VISION_SHAPE)
  if small:
    shape.update(width=max(16, shape["width"] // 2), depth=max(1, shape["depth"] // 2),
                 num_heads=max(1, shape["num_heads"] // 2),
                 mlp_dim=max(32, shape["mlp_dim"] // 2))
  over = [f"model.vision.{k}={val}" for k, val in shape.items()]
  over += [f"data.image_size={shape['image_size']}", f"total_steps={steps}",
           f"optim.warmup_steps={steps // 10}"]
  return f"configs/clip.py:{scale}", over


def lm_overrides(scale: str, steps: int) -> tuple[str, list[str]]:
  """Stage 2: configs/lm.py:SCALE shaped like the Flamingo preset's LM (no new tokens), on the
  text of every shapes dataset."""
  lm = _flamingo_base(scale).model.lm
  over = [f"model.{k}={lm[k]}" for k in LM_SHAPE]
  over += ["model.num_new_tokens=0", f"total_steps={steps}", f"optim.warmup_steps={steps // 10}",
           f"data.text_length={COMMON['text_length']}", f"data.num_frames={COMMON['num_frames']}",
           "data.datasets=('shapes','shapes_interleaved','shapes_video')",
           "data.weights=(1.0,1.0,1.0)", "data.task=lm"]
  return f"configs/lm.py:{scale}", over


def flamingo_overrides(scale: str, row: Row, seed: int, steps: int, stage_dirs: dict[str, str]
                       ) -> list[str]:
  """Stage 3 for `row`: the mixture, the frozen towers' init_from, then the row's changes."""
  base = _flamingo_base(scale)
  spec, clip_over = clip_overrides(scale, row.vision == "clip_small", 1)
  vision = _fields(config_lib.load_config(os.path.join(REPO, spec), clip_over).model.vision,
                   VISION_SHAPE)
  mixture = [(d, t) for d, t in MIXTURE
             if not ("interleaved" in row.drop and t == "interleaved")
             and not ("pairs" in row.drop and t in ("caption", "vqa"))
             and not ("video" in row.drop and t == "video_qa")]
  depth = base.model.lm.depth
  over = [f"model.vision.{k}={val}" for k, val in vision.items()]
  over += [
      f"seed={seed}", f"data.seed={seed}", f"total_steps={steps}",
      f"optim.warmup_steps={steps // 10}",
      f"data.datasets={tuple(d for d, _ in mixture)!r}",
      f"data.tasks={tuple(t for _, t in mixture)!r}",
      f"data.weights={tuple(1.0 for _ in mixture)!r}",
      "data.as_media=True", f"data.image_size={vision['image_size']}",
      "data.max_media=4", f"data.num_frames={COMMON['num_frames']}",
      f"data.text_length={COMMON['text_length']}", f"data.batch_size={COMMON['batch_size']}",
      f"model.lm.depth={depth}", f"model.resampler.max_frames={COMMON['num_frames']}",
      # open_flamingo's time-embedding scale: at the default 0.02 the frames stay alike for
      # hundreds of steps (experiments/results/modalities/video.md).
      "model.resampler.time_embed_init_std=1.0",
      f"model.transformer.max_frames={COMMON['num_frames']}",
      "data.mixing=batch", f"optim.grad_accum_steps={len(mixture)}",
      # The paper's baseline: a gated block before every LM layer.
      "model.xattn.cross_attn_every_n=1",
      "model.freeze_vision=True", f"model.freeze_lm={row.lm == 'pretrained_frozen'}",
  ]
  init = [f"vision={stage_dirs[row.vision]}:image"]
  if row.lm != "scratch":
    init.append(f"lm={stage_dirs['lm']}:")
  over.append(f"init_from={tuple(init)!r}")
  if row.name == "xattn_single":
    over.append(f"model.xattn.cross_attn_layers=({depth // 2},)")
  over += list(row.overrides)
  return over


def score_evals(size: str) -> ml_collections.ConfigDict:
  """The three benchmarks of the overall score."""
  n = 8 if size == "small" else 64
  return ml_collections.ConfigDict({
      "captioning": dict(type="captioning", num_examples=n, max_new_tokens=24),
      "vqa": dict(type="vqa", num_examples=n),
      "video_vqa": dict(type="vqa", num_examples=n, dataset="shapes_video"),
  })


# ---- Running -------------------------------------------------------------------------------

def train_stage(spec: str, overrides: list[str], workdir: str) -> float:
  """Trains (or resumes, or finds finished) one run; seconds taken (spec relative to REPO)."""
  return evaluate_tiny.run_stage(os.path.join(REPO, spec), workdir, overrides)


def run_row(row: Row, seed: int, args, stage_dirs: dict[str, str]) -> dict[str, Any]:
  """Stage 3 of `row` with `seed`, then its score benchmarks and how far its cross-attention
  gates opened (the largest |tanh(alpha)|; None when the row has no gates)."""
  gate = f"_gate{args.gate_init:g}" if args.gate_init else ""  # runs of their own
  workdir = os.path.join(args.workdir, args.scale, f"rows{gate}", f"{row.name}_seed{seed}")
  over = flamingo_overrides(args.scale, row, seed, args.steps, stage_dirs)
  # Always explicit: configs/flamingo.py:tiny's own default (0.1, the README main job's) is not
  # the paper's 0 that these tables use unless --gate_init says otherwise.
  over.append(f"model.xattn.gate_init={args.gate_init}")
  seconds = train_stage(f"configs/flamingo.py:{args.scale}", over, workdir)
  results = evaluate_tiny.evaluate_workdir(workdir, score_evals(args.eval_size))
  attn_gates = xattn.gate_values(restore.load_params(workdir)[0])["attn_gate"]
  return {"row": row.name, "seed": seed, "step": results["step"], "train_s": seconds,
          "attn_gate_max": max(map(abs, attn_gates)) if attn_gates else None,
          **{m: float(results[m]) for m in METRICS}}


# A row's direction is read only when its mean score differs from the baseline's by more than
# this many standard errors of the difference (seed-to-seed noise of both; ~95% two-sided for
# a normal difference, optimistic with 3 seeds per side).
DIRECTION_SE = 2.0


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Per row: each metric's mean, the overall score per seed (metric / baseline mean, averaged
  over the metrics) with mean and std over seeds, and the paper's direction beside ours: 'down'
  or 'up' when the difference from the baseline exceeds DIRECTION_SE standard errors (`diff_se`,
  from both rows' seed std), else 'within noise'."""
  by_row: dict[str, list[dict[str, Any]]] = {}
  for r in runs:
    by_row.setdefault(r["row"], []).append(r)
  base = by_row.get("baseline")
  if not base:
    return []
  base_mean = {m: sum(r[m] for r in base) / len(base) for m in METRICS}

  def scores_of(rs):
    return [sum(r[m] / base_mean[m] for m in METRICS if base_mean[m] > 0) /
            max(1, sum(base_mean[m] > 0 for m in METRICS)) for r in rs]

  base_score, base_std = reporting.mean_std(scores_of(base))
  table = []
  for row in ROWS:
    rs = by_row.get(row.name)
    if not rs:
      continue
    mean, std = reporting.mean_std(scores_of(rs))
    paper_ratio = None if row.paper is None else row.paper / PAPER_BASELINE
    entry = {"row": row.name, "what": row.what, "seeds": len(rs), "score_mean": mean,
             "score_std": std, "paper": row.paper, "paper_ratio": paper_ratio,
             **{f"{m}_mean": sum(r[m] for r in rs) / len(rs) for m in METRICS}}
    gates = [r["attn_gate_max"] for r in rs if r.get("attn_gate_max") is not None]
    if gates:
      entry["attn_gate_max_mean"] = sum(gates) / len(gates)
    if row.name != "baseline" and paper_ratio is not None:
      se = math.sqrt(std ** 2 / len(rs) + base_std ** 2 / len(base))
      diff = mean - base_score
      entry["diff_se"] = se
      if len(rs) < 2 or len(base) < 2:  # one seed has no std: any difference would "clear" 0
        entry["direction"] = "needs 2+ seeds"
      else:
        ours = ("down" if diff < -DIRECTION_SE * se else "up" if diff > DIRECTION_SE * se
                else "within noise")
        entry["direction"] = ours
        entry["reproduced"] = ours == ("down" if paper_ratio < 1 else "up")
    table.append(entry)
  return table


def report(table: list[dict[str, Any]], meta: dict[str, Any]) -> str:
  """The markdown table."""
  gates = any("attn_gate_max_mean" in e for e in table)
  gate_init = (f" Every row's tanh gates start at alpha = {meta['gate_init']:g}, where the "
               "paper's start at 0." if meta.get("gate_init") else "")
  lines = ["# Flamingo Table 3 ablations at small scale", "",
           f"Regenerate: `{meta['command']}` ({meta.get('wall_min', 0):.0f} min wall for the runs "
           f"in this file).{gate_init}", "",
           "Score = mean over captioning CIDEr, VQA accuracy and video-QA accuracy, each divided "
           "by the baseline's mean over seeds (mean ± std over seeds). 'direction' is down or up "
           f"when the row's mean differs from the baseline's by more than {DIRECTION_SE:g} "
           "standard errors of the difference (± se column, from both rows' seed std), else "
           "within noise (with one seed there is no std, and it reads 'needs 2+ seeds'); "
           "'reproduced' compares it with the paper's direction." +
           (" 'gate' is the largest |tanh(alpha)| of a cross-attention gate at the end, mean "
            "over seeds: near 0 the row did not read the image through its gated blocks."
            if gates else ""), "",
           "| row | change | seeds | CIDEr | VQA | video QA | score | ± se | paper | "
           "paper / 70.7 | direction | reproduced |" + (" gate |" if gates else ""),
           "|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if gates else "")]
  for e in table:
    paper = "" if e["paper"] is None else f"{e['paper']:.1f}"
    ratio = "" if e["paper_ratio"] is None else f"{e['paper_ratio']:.3f}"
    lines.append(
        f"| {e['row']} | {e['what']} | {e['seeds']} | {e['captioning/cider_mean']:.3f} | "
        f"{e['vqa/accuracy_mean']:.3f} | {e['video_vqa/accuracy_mean']:.3f} | "
        f"{e['score_mean']:.3f} ± {e['score_std']:.3f} | "
        f"{'' if 'diff_se' not in e else format(e['diff_se'], '.3f')} | {paper} | {ratio} | "
        f"{e.get('direction', '')} | "
        f"{'' if 'reproduced' not in e else ('yes' if e['reproduced'] else 'no')} |" +
        (f" {format(e['attn_gate_max_mean'], '.3f') if 'attn_gate_max_mean' in e else ''} |"
         if gates else ""))
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default="/tmp/mmjax_ablations")
  parser.add_argument("--scale", default="micro", choices=("micro", "tiny"))
  parser.add_argument("--seeds", default="0,1,2", help="comma-separated training/data seeds")
  parser.add_argument("--rows", default=",".join(ROW_NAMES), help="comma-separated row names")
  parser.add_argument("--steps", type=int, default=300, help="stage-3 steps of every run")
  parser.add_argument("--gate_init", type=float, default=0.0,
                      help="every row's initial tanh-gate alpha (0: the paper's; its own results "
                      "file and run directories otherwise; see results/recipe_grounding.md)")
  parser.add_argument("--clip_steps", type=int, default=500)
  parser.add_argument("--lm_steps", type=int, default=500)
  parser.add_argument("--eval_size", default="full", choices=("full", "small"))
  parser.add_argument("--output", default=RESULTS, help="directory of the JSON and markdown")
  parser.add_argument("--from_json", action="store_true",
                      help="only rewrite the markdown from OUTPUT/flamingo_ablations.json")
  parser.add_argument("--jobs", type=int, default=1,
                      help="worker processes, one core each, that share the stage-3 runs "
                      "(sweep_jobs.py); stages 1-2 are trained first, once")
  parser.add_argument("--shard", default=None,
                      help="K/N: run only every N-th stage-3 run from the K-th (set by --jobs; "
                      "stages 1-2 must already be trained in --workdir)")
  args = parser.parse_args(argv)
  rows = [r for r in ROWS if r.name in args.rows.split(",")]
  unknown = sorted(set(args.rows.split(",")) - set(ROW_NAMES))
  if unknown:
    parser.error(f"unknown --rows {unknown}; known: {ROW_NAMES}")
  seeds = [int(s) for s in args.seeds.split(",")]
  # One results file per scale, so a tiny sweep never reuses (or mixes with) micro runs.
  stem = "flamingo_ablations" if args.scale == "micro" else f"flamingo_ablations_{args.scale}"
  if args.gate_init:
    stem += f"_gate{args.gate_init:g}"
  json_path = os.path.join(args.output, f"{stem}.json")
  md_path = os.path.join(args.output, f"{stem}.md")
  command = reporting.command_line("experiments/flamingo_ablations.py", argv)
  saved = {"runs": [], "command": command, "wall_min": 0.0}
  if os.path.exists(json_path):
    with open(json_path, encoding="utf-8") as f:
      saved = json.load(f)
  if not args.from_json:
    saved.update(command=command, gate_init=args.gate_init)
    start = time.time()
    stage_dirs = {name: os.path.join(args.workdir, args.scale, name)
                  for name in ("clip", "clip_small", "lm")}
    need = {"clip"} | {r.vision for r in rows} | ({"lm"} if any(r.lm != "scratch" for r in rows)
                                                  else set())
    # --jobs workers find stages 1-2 trained by their parent: resuming them in every worker
    # would only rewrite the same run records side by side.
    for name in ("clip", "clip_small") if args.shard is None else ():
      if name in need:
        print(f"stage 1: {name}", flush=True)
        train_stage(*clip_overrides(args.scale, name == "clip_small", args.clip_steps),
                    stage_dirs[name])
    if "lm" in need and args.shard is None:
      print("stage 2: lm", flush=True)
      train_stage(*lm_overrides(args.scale, args.lm_steps), stage_dirs["lm"])
    saved["wall_min"] = saved.get("wall_min", 0.0) + (time.time() - start) / 60
    done = {(r["row"], r["seed"]) for r in saved["runs"]}
    todo = [(row, seed) for row in rows for seed in seeds if (row.name, seed) not in done]

    def run_one(item):
      row, seed = item
      print(f"stage 3: {row.name} seed {seed}", flush=True)
      return [run_row(row, seed, args, stage_dirs)]

    os.makedirs(args.output, exist_ok=True)
    sweep_jobs.run_sweep(
        todo, run_one, saved, "runs", lambda r: (r["row"], r["seed"]), jobs=args.jobs,
        shard=args.shard, script=os.path.abspath(__file__),
        argv=sys.argv[1:] if argv is None else argv, workdir=args.workdir,
        filename=f"{stem}.json", save=lambda: reporting.write_json(json_path, saved))
  saved["table"] = summarise(saved["runs"])
  text = report(saved["table"], saved)
  os.makedirs(args.output, exist_ok=True)
  reporting.write_json(json_path, saved)
  reporting.write_text(md_path, text)
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
