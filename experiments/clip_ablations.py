"""CLIP / SigLIP / CoCa ablations at small scale, into experiments/results/clip_ablations.{json,md}
(micro; clip_ablations_tiny.* for tiny) and two plots (zero-shot accuracy vs batch size, and vs
training compute). `--jobs N` shares the runs among N single-core worker processes
(sweep_jobs.py).

    python experiments/clip_ablations.py --scale micro --seeds 0,1 \
        [--sweeps loss_batch,prompts,coca_weight,patch_dropout,resolution] \
        [--examples 32768] [--workdir /tmp/mmjax_clip_ablations]
    python experiments/clip_ablations.py --from_json          # rewrite table and plots only
    python experiments/clip_ablations.py --scale tiny --jobs 2   # runs shared by 2 processes

Sweeps (each run trains on the same number of examples, so a bigger batch means fewer steps):
  loss_batch     softmax (CLIP, Radford et al. 2021) vs sigmoid (SigLIP, Zhai et al. 2023) loss
                 across batch sizes: SigLIP's claim is that sigmoid wins at small batches.
  prompts        one trained CLIP, zero-shot with the 5-template ensemble vs one template vs
                 the bare class name (CLIP §3.1.4: ensembling helps).
  coca_weight    CoCa's caption-loss weight (Yu et al. 2022 use 2 with contrastive weight 1).
  patch_dropout  share of patch tokens dropped in training (FLIP, Li et al. 2023: cheaper steps,
                 little loss in accuracy).
  resolution     image size / patch size (tokens per image) against training compute.
Training data: shapes captions plus, where the offline data is installed
(scripts/install_offline_data.sh), Noto emoji names and Tux Paint stamp descriptions. Held-out
evaluation: zero-shot shape / colour on shapes' `heldout` split (colour-shape pairs never seen in
training), and with the offline data, text-image retrieval on the Twemoji drawing style (never
seen in training) beside the Noto test split, and zero-shot Fashion-MNIST.
Runs resume in their directories and the JSON is rewritten after every run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# pylint: disable=wrong-import-position
import ml_collections  # noqa: E402

from mmjax import config_lib, evaluate, plan, reporting, restore, train  # noqa: E402
from mmjax.data import datasets  # noqa: E402

import evaluate_tiny  # noqa: E402  pylint: disable=import-error  (experiments/ is on sys.path)
import sweep_jobs  # noqa: E402  pylint: disable=import-error

RESULTS = os.path.join(REPO, "experiments", "results")
SWEEPS = ("loss_batch", "prompts", "coca_weight", "patch_dropout", "resolution")
PROMPTS = {"ensemble": "shapes", "one_template": ("a photo of a {}.",), "bare_name": ("{}",)}


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of a sweep: preset family, batch size and config overrides."""
  sweep: str
  name: str
  family: str  # 'clip' | 'siglip' | 'coca'
  batch_size: int
  overrides: tuple[str, ...] = ()
  x: float = 0.0  # the swept value (for the table / plots)


def sweep_runs(sweep: str, batch: int) -> list[Run]:
  """The runs of `sweep` (`batch`: the batch size of every sweep but loss_batch)."""
  if sweep == "loss_batch":
    return [Run(sweep, f"{fam}_b{b}", fam, b, x=b) for fam in ("clip", "siglip")
            for b in (8, 16, 32, 64, 128)]
  if sweep == "prompts":  # one model; the prompt sets differ at evaluation only
    return [Run(sweep, "clip", "clip", batch)]
  if sweep == "coca_weight":
    return [Run(sweep, f"coca_w{w:g}", "coca", batch, (f"model.caption_weight={w}",), x=w)
            for w in (0.0, 0.5, 1.0, 2.0)]
  if sweep == "patch_dropout":
    return [Run(sweep, f"clip_pd{p:g}", "clip", batch, (f"model.vision.patch_dropout={p}",), x=p)
            for p in (0.0, 0.25, 0.5, 0.75)]
  if sweep == "resolution":
    return [Run(sweep, f"clip_{s}px_p{p}", "clip", batch,
                (f"model.vision.image_size={s}", f"model.vision.patch_size={p}",
                 f"data.image_size={s}"), x=(s // p) ** 2)
            for s, p in ((16, 8), (32, 16), (32, 8), (48, 8), (64, 8))]
  raise ValueError(f"unknown sweep {sweep!r}; choose from {SWEEPS}")


def offline_data_available(data_dir: str | None) -> bool:
  """Whether the Debian/npm files behind emoji / tuxpaint / fashion_mnist are installed."""
  try:
    for name in ("emoji", "tuxpaint", "fashion_mnist"):
      datasets.load_source(name, "test", data_dir=data_dir, max_examples=8, image_size=32)
    return True
  except Exception as e:  # pylint: disable=broad-except
    print(f"offline data not used ({type(e).__name__}: {str(e)[:120]})", flush=True)
    return False


def run_config(run: Run, scale: str, seed: int, examples: int, offline: bool
               ) -> ml_collections.ConfigDict:
  """The training config of `run`: same examples seen for every batch size."""
  steps = max(1, examples // run.batch_size)
  over = [f"seed={seed}", f"data.seed={seed}", f"data.batch_size={run.batch_size}",
          f"total_steps={steps}", f"optim.warmup_steps={steps // 10}"]
  if offline:
    over += ["data.datasets=('shapes','emoji','tuxpaint')", "data.weights=(2.0,1.0,1.0)"]
  over += list(run.overrides)
  config = config_lib.load_config(os.path.join(REPO, f"configs/{run.family}.py:{scale}"), over)
  with config.unlocked():
    config.evals = ml_collections.ConfigDict()  # evaluated after training, on held-out data
  return config


def held_out_evals(offline: bool, size: str, templates: Any = "shapes",
                   zeroshot_only: bool = False) -> ml_collections.ConfigDict:
  """Zero-shot / retrieval evaluators on what training never showed (`zeroshot_only`: the ones
  that read prompt templates)."""
  n = 32 if size == "small" else 128
  evals = {
      "heldout_shape": dict(type="zeroshot", split="heldout", attribute="shape",
                            templates=templates),
      "heldout_colour": dict(type="zeroshot", split="heldout", attribute="colour",
                             templates=templates),
  }
  if offline and not zeroshot_only:
    evals["twemoji"] = dict(type="retrieval", dataset="emoji", split="twemoji", num_examples=n,
                            captions_per_image=1)
    evals["noto_test"] = dict(type="retrieval", dataset="emoji", split="test", num_examples=n,
                              captions_per_image=1)
  if offline:
    evals["fashion_mnist"] = dict(type="zeroshot", dataset="fashion_mnist", split="test",
                                  num_examples=n * 4, templates=templates)
  return ml_collections.ConfigDict(evals)


def train_flops(config: ml_collections.ConfigDict) -> float:
  """Model FLOPs (forward + backward) of the whole run: per-step jaxpr count x steps."""
  p = plan.make_plan(config, {"data": 1, "fsdp": 1, "tensor": 1})
  return p.model_flops * config.total_steps


def execute(run: Run, seed: int, args, offline: bool) -> list[dict[str, Any]]:
  """Trains `run` (resuming) and evaluates it; one result row per prompt set for 'prompts'."""
  workdir = os.path.join(args.workdir, args.scale, run.sweep, f"{run.name}_seed{seed}")
  evaluate_tiny.release_compiled_programs()
  config = run_config(run, args.scale, seed, args.examples, offline)
  start = time.time()
  train.train_and_evaluate(config, workdir)
  seconds = time.time() - start
  config = restore.load_run_config(workdir)
  params, step = restore.load_params(workdir)
  flops = train_flops(config)
  # Zero-shot on shapes reads only the single-object scenes, ~11% of a split: the default 256
  # held-out scenes give 29 images (a standard error of ~0.07), too few to tell rows apart.
  config.data.num_eval = args.eval_scenes
  prompt_sets = PROMPTS if run.sweep == "prompts" else {"ensemble": "shapes"}
  rows = []
  for prompt, templates in prompt_sets.items():
    results = evaluate.evaluate(config, params, held_out_evals(
        offline, args.eval_size, templates, zeroshot_only=prompt != "ensemble"), workdir)
    rows.append({"sweep": run.sweep, "run": run.name, "family": run.family, "seed": seed,
                 "x": run.x, "batch_size": run.batch_size, "step": step, "prompts": prompt,
                 "train_s": seconds, "train_flops": flops,
                 **{k: float(v) for k, v in results.items() if isinstance(v, (int, float))}})
  return rows


# ---- Report ----------------------------------------------------------------------------------

COLUMNS = (("heldout_shape/top1", "held-out shape"), ("heldout_colour/top1", "held-out colour"),
           ("twemoji/i2t_recall@1", "Twemoji i2t R@1"), ("noto_test/i2t_recall@1",
                                                         "Noto i2t R@1"),
           ("fashion_mnist/top1", "Fashion-MNIST"))


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Mean and std over seeds per (sweep, run, prompts)."""
  groups: dict[tuple, list[dict[str, Any]]] = {}
  for r in rows:
    groups.setdefault((r["sweep"], r["run"], r["prompts"]), []).append(r)
  out = []
  for (sweep, run, prompts), rs in groups.items():
    entry = {"sweep": sweep, "run": run, "prompts": prompts, "seeds": len(rs),
             "family": rs[0]["family"], "x": rs[0]["x"], "batch_size": rs[0]["batch_size"],
             "train_flops": rs[0]["train_flops"],
             "train_s": sum(r["train_s"] for r in rs) / len(rs)}
    for key, _ in COLUMNS:
      values = [r[key] for r in rs if key in r]
      if values:
        entry[key], entry[key + "_std"] = reporting.mean_std(values)
    out.append(entry)
  return out


def report(table: list[dict[str, Any]], meta: dict[str, Any], stem: str = "clip_ablations") -> str:
  """One markdown table per sweep (`stem`: the file name the plots start with)."""
  columns = [(k, label) for k, label in COLUMNS if any(k in e for e in table)]
  lines = ["# CLIP / SigLIP / CoCa ablations at small scale", "",
           f"Regenerate: `{meta['command']}` ({meta.get('wall_min', 0):.0f} min wall for the "
           "runs in this file). Mean ± std over seeds; every run sees the same number of "
           "training examples.", ""]
  for sweep in SWEEPS:
    # By family, then swept value (workers of --jobs return rows in their own order).
    entries = sorted((e for e in table if e["sweep"] == sweep),
                     key=lambda e: (e["family"], e["x"]))
    if not entries:
      continue
    lines += [f"## {sweep}", "",
              "| run | prompts | seeds | train GFLOPs | " +
              " | ".join(label for _, label in columns) + " |",
              "|---|---|---|---|" + "---|" * len(columns)]
    for e in entries:
      cells = [f"{e[k]:.3f} ± {e[k + '_std']:.3f}" if k in e else "" for k, _ in columns]
      lines.append(f"| {e['run']} | {e['prompts']} | {e['seeds']} | "
                   f"{e['train_flops'] / 1e9:.1f} | " + " | ".join(cells) + " |")
    lines.append("")
  if any(e["sweep"] == "loss_batch" for e in table):
    lines += [f"![accuracy vs batch size]({stem}_batch.png)", ""]
  if any(e["sweep"] in ("resolution", "patch_dropout") for e in table):
    lines += [f"![accuracy vs compute]({stem}_compute.png)", ""]
  return "\n".join(lines) + "\n"


def held_out_score(entry: dict[str, Any]) -> float:
  """The plots' y: the mean of the held-out metrics the run has."""
  keys = [k for k, _ in COLUMNS if k in entry and not k.startswith("noto")]
  return sum(entry[k] for k in keys) / len(keys)


def plot(table: list[dict[str, Any]], output: str, stem: str = "clip_ablations") -> list[str]:
  """Accuracy vs batch size (softmax vs sigmoid) and vs training compute; the PNGs written
  (OUTPUT/STEM_batch.png, OUTPUT/STEM_compute.png)."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  written = []
  batch = [e for e in table if e["sweep"] == "loss_batch"]
  if batch:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for family, label in (("clip", "softmax (CLIP)"), ("siglip", "sigmoid (SigLIP)")):
      es = sorted((e for e in batch if e["family"] == family), key=lambda e: e["batch_size"])
      ax.plot([e["batch_size"] for e in es], [held_out_score(e) for e in es], "o-", label=label)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="batch size (same examples seen)", ylabel="mean held-out accuracy",
           title="Softmax vs sigmoid loss")
    ax.legend()
    fig.tight_layout()
    path = os.path.join(output, f"{stem}_batch.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path)
  compute = [e for e in table if e["sweep"] in ("resolution", "patch_dropout")]
  if compute:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for sweep in ("resolution", "patch_dropout"):
      es = sorted((e for e in compute if e["sweep"] == sweep), key=lambda e: e["train_flops"])
      if es:
        ax.plot([e["train_flops"] for e in es], [held_out_score(e) for e in es], "o-",
                label=sweep)
        for e in es:
          ax.annotate(e["run"].removeprefix("clip_"), (e["train_flops"], held_out_score(e)),
                      fontsize=6)
    ax.set_xscale("log")
    ax.set(xlabel="training FLOPs (forward + backward)", ylabel="mean held-out accuracy",
           title="Accuracy vs compute")
    ax.legend()
    fig.tight_layout()
    path = os.path.join(output, f"{stem}_compute.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path)
  return written


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default="/tmp/mmjax_clip_ablations")
  parser.add_argument("--scale", default="micro", choices=("micro", "tiny"))
  parser.add_argument("--seeds", default="0,1", help="comma-separated training/data seeds")
  parser.add_argument("--sweeps", default=",".join(SWEEPS))
  parser.add_argument("--examples", type=int, default=16384,
                      help="training examples seen by every run")
  parser.add_argument("--batch_size", type=int, default=32,
                      help="batch size of every sweep except loss_batch")
  parser.add_argument("--offline_data", default="auto", choices=("auto", "yes", "no"),
                      help="train/evaluate on emoji, tuxpaint, Fashion-MNIST too ('auto': if "
                      "installed)")
  parser.add_argument("--eval_size", default="full", choices=("full", "small"))
  parser.add_argument("--eval_scenes", type=int, default=2048,
                      help="scenes per shapes evaluation split (data.num_eval) at evaluation: "
                      "2048 give ~230 single-object held-out images for zero-shot")
  parser.add_argument("--output", default=RESULTS)
  parser.add_argument("--from_json", action="store_true")
  parser.add_argument("--jobs", type=int, default=1,
                      help="worker processes, one core each, that share the runs (sweep_jobs.py)")
  parser.add_argument("--shard", default=None,
                      help="K/N: run only every N-th run from the K-th (set by --jobs)")
  args = parser.parse_args(argv)
  sweeps = args.sweeps.split(",")
  for s in sweeps:
    if s not in SWEEPS:
      parser.error(f"unknown sweep {s!r}; choose from {SWEEPS}")
  # One results file per scale, so a tiny sweep never reuses (or mixes with) micro rows.
  stem = "clip_ablations" if args.scale == "micro" else f"clip_ablations_{args.scale}"
  json_path = os.path.join(args.output, f"{stem}.json")
  command = reporting.command_line("experiments/clip_ablations.py", argv)
  saved = {"rows": [], "command": command, "wall_min": 0.0}
  if os.path.exists(json_path):
    with open(json_path, encoding="utf-8") as f:
      saved = json.load(f)
  os.makedirs(args.output, exist_ok=True)
  if not args.from_json:
    saved["command"] = command
    offline = {"yes": True, "no": False}.get(args.offline_data)
    if offline is None:
      offline = offline_data_available(None)
    done = {(r["sweep"], r["run"], r["seed"]) for r in saved["rows"]}
    todo = [(sweep, run, seed) for sweep in sweeps for run in sweep_runs(sweep, args.batch_size)
            for seed in (int(s) for s in args.seeds.split(","))
            if (sweep, run.name, seed) not in done]

    def run_one(item):
      sweep, run, seed = item
      print(f"{sweep}: {run.name} seed {seed}", flush=True)
      return execute(run, seed, args, offline)

    sweep_jobs.run_sweep(
        todo, run_one, saved, "rows",
        lambda r: (r["sweep"], r["run"], r["seed"], r["prompts"]), jobs=args.jobs,
        shard=args.shard, script=os.path.abspath(__file__),
        argv=[*(sys.argv[1:] if argv is None else argv),
              "--offline_data", "yes" if offline else "no"],
        workdir=args.workdir, filename=f"{stem}.json",
        save=lambda: reporting.write_json(json_path, saved))
  saved["table"] = aggregate(saved["rows"])
  reporting.write_json(json_path, saved)
  text = report(saved["table"], saved, stem)
  reporting.write_text(os.path.join(args.output, f"{stem}.md"), text)
  plot(saved["table"], args.output, stem)
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
