"""Why the recipe's stage 3 writes one caption for every image: single-factor arms around
experiments/recipe.py's stage 3, each evaluated beside itself with blank images, into
experiments/results/recipe_grounding.{json,md}.

    python experiments/recipe_grounding.py [--workdir /tmp/mmjax_recipe] [--steps 1000]
        [--arms baseline,pairs_only,...] [--seeds 0] [--jobs 2]
    python experiments/recipe_grounding.py --from_json

recipe.md's stage 3 (frozen stage-1 tower, frozen stage-2 LM, the four-task mixture) captions
every held-out image with the same sentence, while experiments/evaluate_tiny.py's Flamingo
(a tower frozen, the LM trained from scratch, captions + VQA only, 3000 steps) reads the
image. The two differ in several things at once; each arm below changes one of them (or two, as
a control), or the gates (results/recipe_grounding.md: they are the cause):

  baseline           recipe.py's stage 3: mixture of episodes, captions, VQA and video QA
                     (each a quarter of every batch), frozen pretrained LM, 500-step tower
  pairs_only         the mixture without episodes and video: captions and VQA, half a batch each
  lm_unfrozen        the pretrained LM trains too (Table 3's "unfrozen pretrained")
  pairs_lm_unfrozen  both changes: evaluate_tiny's set-up but for the LM's initialisation
  no_gating          the gated blocks' branches added without tanh gates (Table 3's "w/o tanh
                     gating"), so cross-attention reaches the frozen LM from the first step
  adam_eps_1e-8      Adam's epsilon 1e-8 (torch's default, open_flamingo's) instead of our
                     optimizer's 1e-6 (open_clip's): behind a closed gate the branch's gradients
                     are tanh(alpha) times smaller, below 1e-6, where epsilon mutes their updates
  steps_3000         the baseline trained 3000 steps (warmup 300) whatever --steps says: the
                     budget at which evaluate_tiny's Flamingo reads the image
  gate_init_0.1      both tanh gates start at alpha = 0.1 instead of 0 (model.xattn.gate_init):
                     the branches start nearly closed, but off alpha = 0's saddle

The stage-1 tower (workdir/clip) and stage-2 LM (workdir/lm) are recipe.py's own: a recipe
workdir is reused, and missing stages are trained here with recipe.py's configs. Every arm
reads the same 128 unseen scenes: CIDEr and the share of distinct captions (1/128: one sentence
for every image), VQA accuracy, each with the same model's blank-image twin, and the gates
tanh(alpha) of its cross-attention and FFW branches (0: the branch is off, as at init).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from typing import Any

import jax
import ml_collections
import numpy as np

EXPERIMENTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(EXPERIMENTS)
sys.path.insert(0, EXPERIMENTS)
sys.path.insert(0, REPO)

# pylint: disable=wrong-import-position
import clip_ablations as ca  # noqa: E402  pylint: disable=import-error
import flamingo_ablations as fa  # noqa: E402  pylint: disable=import-error
import recipe  # noqa: E402  pylint: disable=import-error
import sweep_jobs  # noqa: E402  pylint: disable=import-error
from mmjax import checkpoint, evaluate, reporting, restore, train  # noqa: E402
from mmjax.models import xattn  # noqa: E402
from mmjax.paths import path_str  # noqa: E402

RESULTS = os.path.join(REPO, "experiments", "results")
_BASE = fa.ROWS[0]
# name -> the flamingo_ablations row it trains (vision: the stage-1 directory under --workdir).
ARMS: dict[str, fa.Row] = {
    "baseline": _BASE,
    "pairs_only": fa.Row("pairs_only", None, "captions + VQA only", drop=("interleaved", "video")),
    "lm_unfrozen": fa.Row("lm_unfrozen", None, "LM trains", lm="pretrained_unfrozen"),
    "pairs_lm_unfrozen": fa.Row("pairs_lm_unfrozen", None, "captions + VQA only, LM trains",
                                drop=("interleaved", "video"), lm="pretrained_unfrozen"),
    "no_gating": fa.Row("no_gating", None, "branches ungated", ("model.xattn.gating=none",)),
    "adam_eps_1e-8": fa.Row("adam_eps_1e-8", None, "Adam epsilon 1e-8", ("optim.eps=1e-8",)),
    "steps_3000": fa.Row("steps_3000", None, "3000 steps",
                         ("total_steps=3000", "optim.warmup_steps=300")),
    "gate_init_0.1": fa.Row("gate_init_0.1", None, "gates start at 0.1",
                            ("model.xattn.gate_init=0.1",)),
}
METRICS = ("captioning/cider", "captioning/baseline_no_image_cider", "captioning/distinct",
           "captioning/baseline_no_image_distinct", "vqa/accuracy", "vqa/baseline_no_image",
           "vqa/baseline_most_frequent")


def arm_evals(num_examples: int) -> ml_collections.ConfigDict:
  """Captioning and VQA on unseen scenes, each with its blank-image twin."""
  return ml_collections.ConfigDict({
      "captioning": dict(type="captioning", num_examples=num_examples, max_new_tokens=24,
                         baselines=True),
      "vqa": dict(type="vqa", num_examples=num_examples, baselines=True),
  })


# Adam's second moments (nu) of the gated blocks' kernels: cross-attention, FFW.
_NU = {"xattn": re.compile(r"/nu/.*gated.*/attn/(query|key|value|out)/kernel$"),
       "ffw": re.compile(r"/nu/.*gated.*/ff/fc\d/kernel$")}


def gradient_rms(workdir: str, step: int, eps: float) -> dict[str, float]:
  """Median over entries of sqrt(nu), Adam's running RMS of each gradient entry, for the gated
  blocks' cross-attention and FFW kernels at checkpoint `step`, and the share of entries below
  `eps`, where Adam's update nu-normalises no more: m / (sqrt(nu) + eps) shrinks with the
  gradient instead of keeping its size."""
  ckpt = checkpoint.Checkpointer(checkpoint.checkpoint_dir(workdir), async_save=False)
  try:
    state = ckpt.restore_item(checkpoint.OPT_STATE, step)
  finally:
    ckpt.close()
  rms: dict[str, list[np.ndarray]] = {k: [] for k in _NU}
  for p, leaf in jax.tree_util.tree_leaves_with_path(state):
    for kind, pattern in _NU.items():
      if pattern.search(path_str(p)):
        rms[kind].append(np.sqrt(np.asarray(leaf, np.float64)).ravel())
  out = {}
  for kind, parts in rms.items():
    if not parts:
      raise ValueError(f"{workdir} step {step}: no Adam second moments of the gated blocks' {kind} kernels")
    values = np.concatenate(parts)
    out[f"{kind}_grad_rms"] = float(np.median(values))
    out[f"{kind}_below_eps"] = float(np.mean(values < eps))
  return out


def run_arm(name: str, seed: int, args, stage_dirs: dict[str, str]) -> dict[str, Any]:
  """Trains (resumes, finds finished) arm `name` with `seed`, then evaluates it."""
  workdir = os.path.join(args.workdir, "grounding", f"{name}_seed{seed}")
  config = recipe.stage3_config(args.scale, seed, args.steps, stage_dirs, row=ARMS[name])
  start = time.time()
  train.train_and_evaluate(config, workdir)
  train_s = time.time() - start
  params, step = restore.load_params(workdir)
  results = evaluate.evaluate(config, params, arm_evals(args.eval_examples), workdir)
  return {"arm": name, "seed": seed, "step": step, "train_s": train_s,
          "sample": results["captioning/example"], "adam_eps": config.optim.eps,
          **xattn.gate_values(params),
          **gradient_rms(workdir, step, config.optim.eps),
          **{m: float(results[m]) for m in METRICS}}


def report(saved: dict[str, Any]) -> str:
  """Markdown: one row per arm (mean over seeds), then each run's sample caption."""
  lines = ["# Why the recipe's stage 3 does not read the image: single-factor arms", "",
           f"Regenerate: `{saved['command']}` ({saved.get('wall_min', 0.0):.0f} min wall for "
           "the runs in this file).", "",
           "Each arm: stage 3 of experiments/recipe.py with one change (the docstring of "
           "experiments/recipe_grounding.py), "
           f"trained for the table's steps, evaluated on {saved.get('eval_examples', '?')} "
           "unseen scenes beside the same model with blank images. 'distinct': distinct "
           "captions over captions (1/N: one sentence for every image). Gates: tanh(alpha) of "
           "the cross-attention / FFW branches, min-max over the gated blocks. Grad RMS: the "
           "median over entries of sqrt(nu), Adam's running RMS of the gradient, of the gated "
           "blocks' cross-attention (query/key/value/out) and FFW kernels at the last step, "
           "with the share of entries below Adam's epsilon (there the update shrinks with the "
           "gradient instead of keeping its size).", "",
           "| arm | seeds | steps | CIDEr (image / blank) | distinct (image / blank) | VQA (image / blank) "
           "| tanh attn gate | tanh ff gate | xattn grad RMS (< eps) | FFW grad RMS (< eps) "
           "| train min |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
  by_arm: dict[str, list[dict[str, Any]]] = {}
  for r in saved["runs"]:
    by_arm.setdefault(r["arm"], []).append(r)

  def mean(rs, key):
    return sum(r[key] for r in rs) / len(rs)

  def span(rs, key):
    values = [v for r in rs for v in r[key]]
    return f"{min(values):+.3f} .. {max(values):+.3f}" if values else "n/a"

  def rms(rs, kind):
    return (f"{mean(rs, kind + '_grad_rms'):.1e} ({mean(rs, kind + '_below_eps'):.2f} < "
            f"{rs[0]['adam_eps']:.0e})")

  for name in ARMS:
    rs = by_arm.get(name)
    if not rs:
      continue
    lines.append(
        f"| {name} | {len(rs)} | {rs[0]['step']} | {mean(rs, 'captioning/cider'):.3f} / "
        f"{mean(rs, 'captioning/baseline_no_image_cider'):.3f} | "
        f"{mean(rs, 'captioning/distinct'):.3f} / "
        f"{mean(rs, 'captioning/baseline_no_image_distinct'):.3f} | "
        f"{mean(rs, 'vqa/accuracy'):.3f} / {mean(rs, 'vqa/baseline_no_image'):.3f} | "
        f"{span(rs, 'attn_gate')} | {span(rs, 'ff_gate')} | {rms(rs, 'xattn')} | "
        f"{rms(rs, 'ffw')} | {mean(rs, 'train_s') / 60:.1f} |")
  most = [r["vqa/baseline_most_frequent"] for r in saved["runs"]]
  if most:
    lines += ["", f"VQA most-frequent-answer baseline: {most[0]:.3f}."]
  lines += ["", "Sample captions (the first unseen scene):", ""]
  lines += [f"- {r['arm']} seed {r['seed']}: {r['sample']}" for r in saved["runs"]]
  if saved.get("notes"):
    lines += ["", saved["notes"]]
  return "\n".join(lines) + "\n"


def ensure_stages(args) -> dict[str, str]:
  """recipe.py's stage-1 tower and stage-2 LM, trained where missing."""
  dirs = {name: os.path.join(args.workdir, name) for name in ("clip", "lm")}
  offline = {"yes": True, "no": False}.get(args.offline_data)
  if offline is None:
    offline = ca.offline_data_available(None)
  print("stage 1: clip", flush=True)
  train.train_and_evaluate(recipe.stage1_config(args.scale, "clip", args.clip_steps, offline,
                                                args.max_examples), dirs["clip"])
  print("stage 2: lm", flush=True)
  train.train_and_evaluate(recipe.stage2_config(args.scale, args.lm_steps, offline,
                                                args.max_examples), dirs["lm"])
  return dirs


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default="/tmp/mmjax_recipe",
                      help="recipe.py's workdir (its clip/ and lm/ are reused)")
  parser.add_argument("--arms", default=",".join(ARMS), help="comma-separated arm names")
  parser.add_argument("--seeds", default="0", help="comma-separated stage-3 seeds")
  parser.add_argument("--steps", type=int, default=1000, help="stage-3 steps of every arm")
  parser.add_argument("--scale", default="tiny", choices=("micro", "tiny"))
  parser.add_argument("--clip_steps", type=int, default=500,
                      help="stage 1, when it trains here")
  parser.add_argument("--lm_steps", type=int, default=500, help="stage 2, when it trains here")
  parser.add_argument("--offline_data", default="auto", choices=("auto", "yes", "no"),
                      help="stages 1-2: emoji / tuxpaint / text ('auto': if installed)")
  parser.add_argument("--max_examples", type=int, default=None,
                      help="cap on the real datasets' examples of stages 1-2 (smoke runs)")
  parser.add_argument("--eval_examples", type=int, default=128)
  parser.add_argument("--output", default=RESULTS)
  parser.add_argument("--name", default="recipe_grounding", help="OUTPUT/NAME.{json,md}")
  parser.add_argument("--from_json", action="store_true")
  parser.add_argument("--jobs", type=int, default=1,
                      help="worker processes, one core each, that share the arms (sweep_jobs.py)")
  parser.add_argument("--shard", default=None, help="K/N: every N-th run (set by --jobs)")
  args = parser.parse_args(argv)
  names = args.arms.split(",")
  unknown = sorted(set(names) - set(ARMS))
  if unknown:
    parser.error(f"unknown --arms {unknown}; known: {tuple(ARMS)}")
  json_path = os.path.join(args.output, f"{args.name}.json")
  command = reporting.command_line("experiments/recipe_grounding.py", argv)
  saved: dict[str, Any] = {"runs": [], "command": command, "wall_min": 0.0}
  if os.path.exists(json_path):
    saved = reporting.read_json(json_path)
  if not args.from_json:
    saved.update(command=command, steps=args.steps, eval_examples=args.eval_examples)
    start = time.time()
    stage_dirs = ensure_stages(args) if args.shard is None else {
        name: os.path.join(args.workdir, name) for name in ("clip", "lm")}
    saved["wall_min"] = saved.get("wall_min", 0.0) + (time.time() - start) / 60
    done = {(r["arm"], r["seed"]) for r in saved["runs"]}
    todo = [(n, int(s)) for n in names for s in args.seeds.split(",") if (n, int(s)) not in done]

    def run_one(item):
      name, seed = item
      print(f"stage 3: {name} seed {seed}", flush=True)
      return [run_arm(name, seed, args, stage_dirs)]

    sweep_jobs.run_sweep(
        todo, run_one, saved, "runs", lambda r: (r["arm"], r["seed"]), jobs=args.jobs,
        shard=args.shard, script=os.path.abspath(__file__),
        argv=sys.argv[1:] if argv is None else argv, workdir=args.workdir,
        filename=f"{args.name}.json", save=lambda: reporting.write_json(json_path, saved))
  order = list(ARMS)
  saved["runs"].sort(key=lambda r: (order.index(r["arm"]), r["seed"]))
  reporting.write_json(json_path, saved)
  reporting.write_report(os.path.join(args.output, f"{args.name}.md"), report(saved))
  return 0


if __name__ == "__main__":
  sys.exit(main())
