"""Why the tiny CLIP tower did not read shape: each suspect with the measurement that settles it,
into experiments/results/shape_diagnosis.{json,md}.

    python experiments/shape_diagnosis.py --jobs 2 [--runs sup_cnn_max,...] [--seeds 0]
    python experiments/shape_diagnosis.py --from_json       # rewrite the markdown only

Data statistics (no training), over training scenes and their stored captions:
  captions   share of captions that name every object's shape / no shape at all, for the
             original caption styles and for the listing styles (shapes_world.LISTING_STYLES);
  negatives  share of in-batch negatives that colour alone cannot reject (their scene has the
             same set of colours as the image's), i.e. the only pairs whose loss asks for shape.
Training runs (configs/clip.py:tiny with the stem, the captions or hard negatives changed, at
             the budgets of experiments/README.md's table; --steps for the others). Each run
             reports zero-shot shape / colour on
             single-object validation and held-out scenes, zero-shot shape on small and large
             objects apart (object size vs patch size), and a linear probe of shape on the image
             features: a probe near chance says the image tower has no shape in it, whatever
             the text tower does; a probe far above zero-shot would blame the text side.
Supervised runs (sup_*): a shape classifier of single-object scenes trained directly: can the
             tower learn shape at all when the label says exactly what to learn?
`--jobs N` shares the runs among N single-core worker processes (sweep_jobs.py); runs resume in
their directories and the JSON is rewritten after every run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Any

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# pylint: disable=wrong-import-position
import ml_collections  # noqa: E402

from mmjax import config_lib, evaluate, reporting, restore, train  # noqa: E402
from mmjax.data import shapes_world as world  # noqa: E402
from mmjax.evaluators import common as eval_common  # noqa: E402

import evaluate_tiny  # noqa: E402  pylint: disable=import-error  (experiments/ is on sys.path)
import sweep_jobs  # noqa: E402  pylint: disable=import-error

RESULTS = os.path.join(REPO, "experiments", "results")
ALL_STYLES = "data.caption_styles=()"
LISTING = f"data.caption_styles={tuple(world.LISTING_STYLES)!r}"


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run: a name, what it tests, and its overrides of configs/clip.py:tiny."""
  name: str
  tests: str
  overrides: tuple[str, ...] = ()
  # A supervised shape classifier instead of CLIP: 'vit_patch', 'vit_stride_stem',
  # 'vit_maxpool_stem', 'cnn_mean' or 'cnn_max' (see `supervised`).
  supervised: str | None = None


RUNS = (
    Run("old_300", "the committed tower at its old budget", (
        "model.vision.stem=patch", ALL_STYLES)),
    Run("listing_patch_stem", "listing captions (configs/clip.py:tiny)", (
        "model.vision.stem=patch", LISTING)),
    Run("listing_stride_stem", "stride-2 conv stem", (
        "model.vision.stem=conv", "model.vision.stem_downsample=stride", LISTING)),
    Run("listing_maxpool_stem", "max-pooled conv stem", ("model.vision.stem=conv", LISTING)),
    Run("listing_maxpool_stem_max", "the same, max over tokens", (
        "model.vision.stem=conv", "model.vision.pool=max", "model.vision.class_token=False",
        LISTING)),
    Run("listing_maxpool_stem_negatives", "max-pooled conv stem + hard negatives", (
        "model.vision.stem=conv", LISTING, "data.hard_negatives=True")),
    Run("listing_patch_conv_negatives", "patch + conv stems summed + hard negatives", (
        "model.vision.stem=patch_conv", LISTING, "data.hard_negatives=True")),
    Run("listing_patch_negatives", "patch stem + hard negatives", (
        "model.vision.stem=patch", LISTING, "data.hard_negatives=True")),
    Run("listing_maxpool_stem_negatives_2500", "max-pooled conv stem + hard negatives, longer", (
        "model.vision.stem=conv", LISTING, "data.hard_negatives=True")),
)
# The budgets of experiments/README.md's table (others: --steps).
RUN_STEPS = {"old_300": 300, "listing_patch_stem": 600, "listing_stride_stem": 600,
             "listing_maxpool_stem": 900, "listing_maxpool_stem_max": 900,
             "listing_maxpool_stem_negatives": 900, "listing_patch_conv_negatives": 600,
             "listing_maxpool_stem_negatives_2500": 2500}
# Supervised shape classification of single-object scenes: can the tower learn shape at all in
# a few hundred steps, when the label says exactly what to learn?
SUPERVISED = (
    Run("sup_vit_patch", "ViT, patch stem (the old tower)", supervised="vit_patch"),
    Run("sup_vit_stride_stem", "ViT, stride-2 conv stem", supervised="vit_stride_stem"),
    Run("sup_vit_maxpool_stem", "ViT, max-pool conv stem (stem='conv')",
        supervised="vit_maxpool_stem"),
    Run("sup_cnn_mean", "3-layer CNN (max-pooled), global mean pooling", supervised="cnn_mean"),
    Run("sup_cnn_max", "the same CNN, global max pooling", supervised="cnn_max"),
)
SUPERVISED_STEPS = 450


# ---- Data statistics -------------------------------------------------------------------------

def caption_statistics(records: list[dict]) -> dict[str, float]:
  """Shares of the stored captions naming every object's shape, and naming no shape."""
  every, none, total = 0, 0, 0
  for r in records:
    shapes = [o["shape"] for o in r["scene"]["objects"]]
    for caption in r["captions"]:
      words = caption.lower().replace(",", " ").replace(".", " ").split()
      named = [s for s in set(shapes) if s in words]
      # Every object: each shape named as often as it occurs (a listing names each object).
      every += all(words.count(s) >= shapes.count(s) for s in set(shapes))
      none += not named
      total += 1
  return {"names_every_shape": every / total, "names_no_shape": none / total,
          "captions": total}


def negative_statistics(records: list[dict], batch_size: int, batches: int,
                        seed: int = 0) -> dict[str, float]:
  """In random batches: the share of (image, other caption) negatives whose scene has the same
  colour set as the image's (colour alone cannot reject them), and whose colour and shape sets
  both match (nothing in a listing caption rejects them but counts and sizes)."""
  rng = np.random.default_rng(seed)
  colours = [frozenset(o["colour"] for o in r["scene"]["objects"]) for r in records]
  pairs = [frozenset((o["colour"], o["shape"]) for o in r["scene"]["objects"]) for r in records]
  same_colour = same_both = total = 0
  for _ in range(batches):
    idx = rng.choice(len(records), batch_size, replace=False)
    for i in idx:
      for j in idx:
        if i != j:
          total += 1
          same_colour += colours[i] == colours[j]
          same_both += pairs[i] == pairs[j]
  return {"same_colour_set": same_colour / total, "same_colour_shape_pairs": same_both / total,
          "batch_size": batch_size}


def data_statistics(batch_size: int) -> dict[str, Any]:
  """Caption and negative statistics of the original and the listing-caption training data."""
  out = {}
  for name, styles in (("all_styles", ()), ("listing_styles", tuple(world.LISTING_STYLES))):
    data = config_lib.load_config(os.path.join(REPO, "configs/clip.py:tiny")).data
    with data.unlocked():
      data.caption_styles = styles
    records = eval_common.load_records(data, "train", 2048)
    out[name] = caption_statistics(records)
  out["negatives"] = negative_statistics(records, batch_size, batches=64)
  singles = sum(len(r["scene"]["objects"]) == 1 for r in records)
  out["single_object_share"] = singles / len(records)
  return out


# ---- Runs ------------------------------------------------------------------------------------

def diagnosis_evals() -> ml_collections.ConfigDict:
  """Zero-shot shape/colour on validation and held-out pairs, and the shape linear probe."""
  evals = {}
  for split, tag in (("validation", "val"), ("heldout", "heldout")):
    for attribute in ("shape", "colour"):
      # The templates of mmjax.evaluate's shapes suite, so rows compare with its figures.
      evals[f"{tag}_{attribute}"] = dict(
          type="zeroshot", split=split, attribute=attribute,
          templates="shapes" if attribute == "shape" else "openai_imagenet")
  evals["probe_shape"] = dict(type="linear_probe", attribute="shape", train_records=1024)
  return ml_collections.ConfigDict(evals)


def shape_by_size(config, params) -> dict[str, float]:
  """Zero-shot shape top-1 on single-object validation scenes, small and large objects apart."""
  from mmjax.data import tokenizers  # pylint: disable=import-outside-toplevel
  from mmjax.evaluators import embeddings, templates, zeroshot  # pylint: disable=import-outside-toplevel
  from mmjax.models import family as family_lib  # pylint: disable=import-outside-toplevel
  records = eval_common.load_records(config.data, "validation")
  idx, labels, classes = zeroshot.single_object_labels(records, "shape")
  family = family_lib.build(config.model)
  tok = tokenizers.get_tokenizer(config.data.tokenizer, data_dir=config.data.data_dir)
  emb = embeddings.Embedder(family, tok, config.data.text_length)
  images = emb.images(params, eval_common.images([records[i] for i in idx], config.data))
  cls = zeroshot.class_embeddings(lambda t: emb.texts(params, t), classes,
                                  templates.TEMPLATES["shapes"])
  correct = np.argmax(images @ cls.T, axis=1) == np.asarray(labels)
  sizes = np.array([records[i]["scene"]["objects"][0]["size"] for i in idx])
  return {f"val_shape_{s}/top1": float(correct[sizes == s].mean()) for s in world.SIZES}


def supervised(kind: str, seed: int, steps: int = SUPERVISED_STEPS) -> dict[str, float]:
  """Test accuracy (500 images) of a shape classifier trained on 4,096 single-object 64 px
  scenes (batch 32, AdamW 1e-3, cosine), at each quarter of `steps`."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from mmjax.models import vit  # pylint: disable=import-outside-toplevel

  def data(n: int, split: int):
    images, labels = [], []
    for i in range(n):
      rng = np.random.default_rng([seed, split, i])
      scene = world.sample_scene(rng, max_objects=1)
      images.append(np.asarray(world.render(scene, 64), np.float32) / 127.5 - 1)
      labels.append(world.SHAPES.index(scene.objects[0].shape))
    return np.stack(images), np.asarray(labels)

  class Classifier(nn.Module):
    @nn.compact
    def __call__(self, x):
      if kind.startswith("cnn"):
        for c in (32, 64, 128):
          x = nn.max_pool(nn.relu(nn.Conv(c, (3, 3), padding="SAME")(x)), (2, 2), (2, 2))
        x = x.max(axis=(1, 2)) if kind == "cnn_max" else x.mean(axis=(1, 2))
      else:
        stem = {"vit_patch": {}, "vit_stride_stem": dict(stem="conv", stem_downsample="stride"),
                "vit_maxpool_stem": dict(stem="conv")}[kind]
        x, _ = vit.ViT(image_size=64, patch_size=8, width=128, depth=4, num_heads=4, **stem)(x)
      return nn.Dense(len(world.SHAPES))(x)

  train_x, train_y = data(4096, 0)
  test_x, test_y = data(500, 1)
  model = Classifier()
  params = nn.unbox(model.init(jax.random.key(seed), train_x[:2])["params"])
  tx = optax.adamw(optax.warmup_cosine_decay_schedule(0.0, 1e-3, 30, steps), b2=0.98,
                   weight_decay=0.1)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, x, y):
    loss = lambda p: optax.softmax_cross_entropy_with_integer_labels(
        model.apply({"params": p}, x), y).mean()
    grads = jax.grad(loss)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt

  predict = jax.jit(lambda p, x: model.apply({"params": p}, x).argmax(-1))
  order = np.random.default_rng(seed)
  out = {}
  for s in range(1, steps + 1):
    idx = order.choice(len(train_x), 32, replace=False)
    params, opt = step(params, opt, train_x[idx], train_y[idx])
    if s % (steps // 3) == 0 or s == steps:
      pred = np.concatenate([np.asarray(predict(params, test_x[i:i + 100]))
                             for i in range(0, len(test_x), 100)])
      out[f"supervised_shape@{s}"] = float(np.mean(pred == test_y))
  return out


def execute(run: Run, seed: int, args) -> list[dict[str, Any]]:
  """Trains `run` (resuming) and evaluates it."""
  if run.supervised:
    evaluate_tiny.release_compiled_programs()
    start = time.time()
    results = supervised(run.supervised, seed)
    return [{"run": run.name, "seed": seed, "train_s": time.time() - start, **results}]
  workdir = os.path.join(args.workdir, f"{run.name}_seed{seed}")
  evaluate_tiny.release_compiled_programs()
  steps = RUN_STEPS.get(run.name, args.steps)
  over = [f"seed={seed}", f"data.seed={seed}", f"total_steps={steps}", *run.overrides]
  config = config_lib.load_config(os.path.join(REPO, "configs/clip.py:tiny"), over)
  with config.unlocked():
    config.evals = ml_collections.ConfigDict()
  start = time.time()
  train.train_and_evaluate(config, workdir)
  seconds = time.time() - start
  config = restore.load_run_config(workdir)
  params, step = restore.load_params(workdir)
  config.data.num_eval = args.eval_scenes
  results = evaluate.evaluate(config, params, diagnosis_evals(), workdir)
  results.update(shape_by_size(config, params))
  return [{"run": run.name, "seed": seed, "step": step, "train_s": seconds,
           **{k: float(v) for k, v in results.items() if isinstance(v, (int, float))}}]


# ---- Report ----------------------------------------------------------------------------------

COLUMNS = (("val_shape/top1", "shape"), ("val_shape_small/top1", "small"),
           ("val_shape_large/top1", "large"), ("heldout_shape/top1", "held-out shape"),
           ("val_colour/top1", "colour"), ("heldout_colour/top1", "held-out colour"),
           ("probe_shape/accuracy", "shape probe"))


def report(saved: dict[str, Any]) -> str:
  """The markdown: data statistics, then one row per run (mean ± std over seeds)."""
  stats = saved.get("data", {})
  lines = ["# Why the tiny CLIP tower did not read shape", "",
           f"Regenerate: `{saved['command']}` ({saved.get('wall_min', 0):.0f} min wall for the "
           "runs in this file, --jobs workers on 2 cores).", ""]
  if stats:
    a, l, n = stats["all_styles"], stats["listing_styles"], stats["negatives"]
    lines += ["## Data (2,048 training scenes, no training)", "",
              "| captions | name every object's shape | name no shape |", "|---|---|---|",
              f"| every style (old) | {a['names_every_shape']:.2f} | {a['names_no_shape']:.2f} |",
              f"| listing styles (new) | {l['names_every_shape']:.2f} | "
              f"{l['names_no_shape']:.2f} |", "",
              f"In-batch negatives (batch {n['batch_size']}): {n['same_colour_set']:.4f} share "
              "the image's colour set (only these need shape to be told apart), "
              f"{n['same_colour_shape_pairs']:.4f} share its colour-shape pairs. Single-object "
              f"scenes: {stats['single_object_share']:.2f} of the training data.", ""]
  clip_rows = [r for r in saved["rows"] if not r["run"].startswith("sup_")]
  if clip_rows:
    lines += ["## Runs (zero-shot top-1 on single-object scenes; chance: shape 0.20, colour "
              "0.125)", "", "| run | tests | steps | train min | seeds | "
              + " | ".join(label for _, label in COLUMNS) + " |",
              "|---|---|---|---|---|" + "---|" * len(COLUMNS)]
  by_run: dict[str, list[dict]] = {}
  for r in saved["rows"]:
    if not r["run"].startswith("sup_"):
      by_run.setdefault(r["run"], []).append(r)
  for run in RUNS:
    rs = by_run.get(run.name)
    if not rs:
      continue
    cells = []
    for key, _ in COLUMNS:
      mean, std = reporting.mean_std([r[key] for r in rs])
      cells.append(f"{mean:.2f}" + (f" ± {std:.2f}" if len(rs) > 1 else ""))
    minutes = sum(r["train_s"] for r in rs) / len(rs) / 60
    lines.append(f"| {run.name} | {run.tests} | {rs[0]['step']} | {minutes:.1f} | {len(rs)} | "
                 + " | ".join(cells) + " |")
  sup = [r for r in saved["rows"] if r["run"].startswith("sup_")]
  if sup:
    steps = sorted({int(k.split("@")[1]) for r in sup for k in r if k.startswith("supervised")})
    lines += ["", f"## Supervised shape classification (single-object scenes, batch 32, test "
              "accuracy on 500 images; chance 0.20)", "",
              "| classifier | train min | " + " | ".join(f"step {s}" for s in steps) + " |",
              "|---|---|" + "---|" * len(steps)]
    for run in SUPERVISED:
      rs = [r for r in sup if r["run"] == run.name]
      if rs:
        cells = [f"{np.mean([r[f'supervised_shape@{s}'] for r in rs]):.2f}" for s in steps]
        lines.append(f"| {run.tests} | {np.mean([r['train_s'] for r in rs]) / 60:.1f} | "
                     + " | ".join(cells) + " |")
  rows = [r for r in saved["rows"] if not r["run"].startswith("sup_")]
  n = rows[0].get("val_shape/num_images") if rows else None
  if n:
    lines += ["", f"{int(n)} single-object validation images per run (data.num_eval "
              f"{saved.get('eval_scenes')})."]
  return "\n".join(lines) + "\n"


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default="/tmp/mmjax_shape_diagnosis")
  parser.add_argument("--steps", type=int, default=1500, help="training steps of every run but "
                      "old_300")
  parser.add_argument("--seeds", default="0")
  parser.add_argument("--runs", default=",".join(r.name for r in RUNS + SUPERVISED))
  parser.add_argument("--eval_scenes", type=int, default=2048,
                      help="scenes per evaluation split (~1/6 of them single-object)")
  parser.add_argument("--output", default=RESULTS)
  parser.add_argument("--from_json", action="store_true")
  parser.add_argument("--jobs", type=int, default=1)
  parser.add_argument("--shard", default=None, help="K/N (set by --jobs)")
  args = parser.parse_args(argv)
  json_path = os.path.join(args.output, "shape_diagnosis.json")
  command = reporting.command_line("experiments/shape_diagnosis.py", argv)
  saved = {"rows": [], "command": command, "wall_min": 0.0}
  if os.path.exists(json_path):
    with open(json_path, encoding="utf-8") as f:
      saved = json.load(f)
  if not args.from_json:
    saved["command"], saved["eval_scenes"] = command, args.eval_scenes
    if args.shard is None and "data" not in saved:
      saved["data"] = data_statistics(batch_size=32)
    names = args.runs.split(",")
    every = RUNS + SUPERVISED
    unknown = sorted(set(names) - {r.name for r in every})
    if unknown:
      parser.error(f"unknown run(s) {unknown}; choose from {[r.name for r in every]}")
    done = {(r["run"], r["seed"]) for r in saved["rows"]}
    todo = [(run, int(s)) for run in every if run.name in names for s in args.seeds.split(",")
            if (run.name, int(s)) not in done]
    sweep_jobs.run_sweep(
        todo, lambda item: execute(item[0], item[1], args), saved, "rows",
        lambda r: (r["run"], r["seed"]), jobs=args.jobs, shard=args.shard,
        script=os.path.abspath(__file__), argv=sys.argv[1:] if argv is None else argv,
        workdir=args.workdir, filename="shape_diagnosis.json",
        save=lambda: reporting.write_json(json_path, saved))
  reporting.write_json(json_path, saved)
  text = report(saved)
  reporting.write_text(os.path.join(args.output, "shape_diagnosis.md"), text)
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
