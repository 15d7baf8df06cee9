"""Discrete image tokens on `shapes` (issue #13): train the VQ image tokenizer (FSQ, and a learned
VQ codebook for comparison), then one LM over captions + the frozen FSQ tokens, and measure each
against a baseline into experiments/results/modalities/vq.{json,md} plus a text-to-image grid.

    python experiments/modalities/vq.py [--workdir /tmp/mmjax_modalities_vq] [--steps 1000]

Rows:
- reconstruction PSNR (validation, pixels in [0, 1]) of each tokenizer vs the mean training
  image and vs bicubic down/up-sampling to the largest square RGB thumbnail (8 bits a value)
  that fits in the same number of bits as the tokens (N log2 K);
- codebook usage (fraction of the K codes the validation images use; perplexity in the JSON);
- the LM's image-token perplexity given the caption (text-to-image rows) vs a unigram model of
  the training images' tokens (add-one smoothed);
- text-to-image faithfulness: the most frequent object colour among the generated pixels (each
  pixel mapped to the nearest colour of the shapes palette) is one of the caption's colours, vs
  the same images scored against another row's caption (what an image that ignores its caption
  gets); the real images' score is the metric's ceiling.
Stages resume in their sub-directories (a finished stage returns at once); `--from_json` only
rewrites the markdown.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

# pylint: disable=wrong-import-position
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from mmjax import config_lib, reporting, restore, train  # noqa: E402
from mmjax.data import pipeline, shapes_world, tokenizers  # noqa: E402
from mmjax.evaluators import reconstruction  # noqa: E402
from mmjax.models import family as family_lib  # noqa: E402

RESULTS = os.path.join(REPO, "experiments", "results", "modalities")
NAME = "vq"
# Object colours and the backgrounds, the palette generated pixels are classified into.
PALETTE = {**shapes_world.COLOURS, **{f"bg_{k}": v for k, v in shapes_world.BACKGROUNDS.items()}}
COLOUR_WORDS = {**{c: c for c in shapes_world.COLOURS}, "gray": "grey", "violet": "purple"}


# ---- Stages ------------------------------------------------------------------------------------

def load(spec: str, overrides: list[str], steps: int):
  """The config of `spec` for `steps` steps with `key=value` overrides (warmup kept shorter
  than the run, so a smoke run of 2 steps is valid)."""
  config = config_lib.load_config(spec, overrides + [f"total_steps={steps}"])
  config.optim.warmup_steps = min(config.optim.warmup_steps, max(steps - 1, 0))
  return config


def run_stage(config, workdir: str) -> float:
  """Trains `config` in `workdir` (resuming; a finished run returns at once); seconds taken."""
  start = time.time()
  train.train_and_evaluate(config, workdir)
  return time.time() - start


def batches(config, split: str, num_batches: int, tokenizer) -> list[dict]:
  """The first `num_batches` un-augmented batches of `split` (numpy)."""
  data = config.data.copy_and_resolve_references()
  with data.unlocked():
    data.split = split
  it = pipeline.make_pipeline(data, tokenizer=tokenizer, train=False)
  out = []
  for _ in range(num_batches):
    try:
      out.append({k: np.asarray(v) for k, v in next(it).items()})
    except StopIteration:
      break
  return out


def unit(x) -> np.ndarray:
  """Model pixels in [-1, 1] -> [0, 1]."""
  return np.clip((np.asarray(x, np.float32) + 1) / 2, 0, 1)


# ---- Tokenizer metrics -------------------------------------------------------------------------

def bicubic(images: np.ndarray, side: int) -> np.ndarray:
  """[B, H, W, 3] in [0, 1] down to side x side (8-bit) and back up with bicubic filtering."""
  out = []
  for im in images:
    pil = Image.fromarray(np.round(im * 255).astype(np.uint8))
    small = pil.resize((side, side), Image.BICUBIC)
    out.append(np.asarray(small.resize(pil.size, Image.BICUBIC), np.float32) / 255)
  return np.stack(out)


def tokenizer_report(family, params, train_batches, val_batches) -> dict:
  """PSNR/SSIM of reconstructions and baselines, codebook usage, the unigram of train tokens."""
  k = family.vq_config.quantizer.size
  n = family.vq_config.num_tokens
  encode = jax.jit(family.predict_indices)
  recon = jax.jit(family.reconstruct)
  train_counts = np.zeros(k, np.int64)
  mean_image = np.zeros_like(unit(train_batches[0]["image"][0]), np.float64)
  seen = 0
  for b in train_batches:
    train_counts += np.bincount(np.asarray(encode(params, b["image"])).ravel(), minlength=k)
    mean_image += unit(b["image"]).sum(0)
    seen += len(b["image"])
  mean_image /= seen
  real, rec, val_counts = [], [], np.zeros(k, np.int64)
  for b in val_batches:
    real.append(unit(b["image"]))
    rec.append(unit(recon(params, b["image"])))
    val_counts += np.bincount(np.asarray(encode(params, b["image"])).ravel(), minlength=k)
  real, rec = np.concatenate(real), np.concatenate(rec)
  bits = n * math.log2(k)
  side = max(1, int(math.sqrt(bits / 24)))
  p = val_counts / val_counts.sum()
  return {
      "codebook_size": k, "tokens_per_image": n, "bits_per_image": bits,
      "psnr": reconstruction.psnr(rec, real), "ssim": reconstruction.ssim(rec, real),
      "psnr_mean_image": reconstruction.psnr(np.broadcast_to(mean_image, real.shape), real),
      "bicubic_side": side, "bicubic_bits": side * side * 24,
      "psnr_bicubic": reconstruction.psnr(bicubic(real, side), real),
      "codebook_usage": float(np.mean(val_counts > 0)),
      "codebook_perplexity": float(np.exp(-np.sum(p[p > 0] * np.log(p[p > 0])))),
      "val_images": int(len(real)), "train_counts": train_counts.tolist(),
  }


# ---- LM metrics --------------------------------------------------------------------------------

def lm_perplexity(family, params, val_batches, train_counts) -> dict:
  """Image-token NLL of text-to-image rows vs the add-one unigram of the training tokens."""
  loss = jax.jit(lambda p, b: family.loss(p, b, train=False,
                                          t2i=jnp.ones((b["tokens"].shape[0],), bool))[1])
  loss_i2t = jax.jit(lambda p, b: family.loss(p, b, train=False,
                                              t2i=jnp.zeros((b["tokens"].shape[0],), bool))[1])
  unigram = (np.asarray(train_counts) + 1.0) / (np.sum(train_counts) + len(train_counts))
  nll = tokens = uni = text = text_rows = 0.0
  for b in val_batches:
    m = loss(params, {"image": b["image"], "tokens": b["tokens"]})
    count = float(m["image_tokens"])
    nll += float(m["image_nll"]) * count
    tokens += count
    ids = np.asarray(family.predict_image_ids(params, b["image"]))
    uni += -np.sum(np.log(unigram[ids]))
    text += float(loss_i2t(params, {"image": b["image"], "tokens": b["tokens"]})["text_nll"])
    text_rows += 1
  return {"image_nll": nll / tokens, "image_perplexity": math.exp(nll / tokens),
          "unigram_image_perplexity": math.exp(uni / tokens), "image_tokens": tokens,
          "i2t_caption_nll": text / max(text_rows, 1)}


def caption_colours(text: str) -> set[str]:
  """Canonical colour names a caption mentions."""
  return {COLOUR_WORDS[w] for w in re.findall(r"[a-z]+", text.lower()) if w in COLOUR_WORDS}


def dominant_colour(image: np.ndarray) -> str | None:
  """The object colour most pixels of `image` ([H, W, 3] in [0, 1]) are nearest to (None when
  every pixel is nearest to a background colour)."""
  names = list(PALETTE)
  rgb = np.asarray([PALETTE[n] for n in names], np.float32) / 255
  dist = np.sum((image.reshape(-1, 1, 3) - rgb[None]) ** 2, axis=-1)
  counts = np.bincount(np.argmin(dist, axis=1), minlength=len(names))
  objects = [(counts[i], n) for i, n in enumerate(names) if not n.startswith("bg_")]
  best = max(objects)
  return best[1] if best[0] > 0 else None


def faithfulness(images: np.ndarray, colours: list[set[str]]) -> float:
  """Fraction of images whose dominant object colour is one their caption names."""
  hits = [dominant_colour(im) in c for im, c in zip(images, colours)]
  return float(np.mean(hits)) if hits else float("nan")


def t2i_report(family, params, val_batches, tokenizer, num_rows: int, rng) -> dict:
  """Samples one image per coloured validation caption; faithfulness and its baselines."""
  tokens, real, colours, texts = [], [], [], []
  for b in val_batches:
    for t, im in zip(b["tokens"], b["image"]):
      text = tokenizer.decode([int(x) for x in t if x not in (tokenizer.pad_id,)])
      if caption_colours(text) and len(tokens) < num_rows:
        tokens.append(t)
        real.append(unit(im))
        colours.append(caption_colours(text))
        texts.append(text)
  generated = []
  for start in range(0, len(tokens), 32):
    rng, key = jax.random.split(rng)
    _, pixels = family.generate_images(params, np.stack(tokens[start:start + 32]), key)
    generated.append(unit(pixels))
  generated = np.concatenate(generated)
  shifted = colours[1:] + colours[:1]
  return {"faithfulness": faithfulness(generated, colours),
          "faithfulness_other_caption": faithfulness(generated, shifted),
          "faithfulness_real_images": faithfulness(np.stack(real), colours),
          "t2i_rows": len(tokens)}, (tokens, texts, np.stack(real))


def save_grid(path: str, family, params, tokens, texts, real, rows: int, samples: int,
              rng, scale: int = 2) -> None:
  """PNG (Pillow): one row per caption (its text above), the real image then `samples`
  generated images, each upscaled `scale` times with nearest neighbours."""
  from PIL import ImageDraw  # pylint: disable=import-outside-toplevel
  rows = min(rows, len(tokens))
  batch = np.repeat(np.stack(tokens[:rows]), samples, axis=0)
  _, pixels = family.generate_images(params, batch, rng)
  pixels = unit(pixels).reshape(rows, samples, *pixels.shape[1:])
  side = real.shape[1] * scale
  pad, text_h = 4, 14
  width = (samples + 1) * (side + pad) + pad
  height = text_h + rows * (side + text_h + pad) + pad
  canvas = Image.new("RGB", (width, height), (255, 255, 255))
  draw = ImageDraw.Draw(canvas)
  draw.text((pad, 1), "reference | samples of vq_lm (FSQ tokens) given the caption", fill=(0, 0, 0))
  for r in range(rows):
    top = text_h + r * (side + text_h + pad)
    draw.text((pad, top + 1), texts[r][:110], fill=(0, 0, 0))
    for c in range(samples + 1):
      image = real[r] if c == 0 else pixels[r, c - 1]
      tile = Image.fromarray(np.round(image * 255).astype(np.uint8)).resize((side, side),
                                                                            Image.NEAREST)
      canvas.paste(tile, (pad + c * (side + pad), top + text_h))
  canvas.save(path)


# ---- Report ------------------------------------------------------------------------------------

def rows_of(results: dict) -> list[dict]:
  """The rows of the shared modalities table."""
  rows = []
  for name, r in results["tokenizers"].items():
    rows.append(dict(model=f"vq {name}", metric="reconstruction PSNR (dB)", value=r["psnr"],
                     baseline="mean training image", baseline_value=r["psnr_mean_image"]))
    rows.append(dict(model=f"vq {name}", metric="reconstruction PSNR (dB)", value=r["psnr"],
                     baseline=f"bicubic {r['bicubic_side']}x{r['bicubic_side']} "
                              f"({r['bicubic_bits']} bits <= {r['bits_per_image']:.0f})",
                     baseline_value=r["psnr_bicubic"]))
    rows.append(dict(model=f"vq {name}", metric="codebook usage (fraction of codes)",
                     value=r["codebook_usage"], baseline="one code (collapse)",
                     baseline_value=1.0 / r["codebook_size"]))
  lm = results["lm"]
  rows.append(dict(model="vq_lm", metric="image-token perplexity given caption",
                   value=lm["image_perplexity"], baseline="unigram of training tokens",
                   baseline_value=lm["unigram_image_perplexity"], lower_is_better=True))
  t2i = results["t2i"]
  rows.append(dict(model="vq_lm", metric="t2i colour faithfulness", value=t2i["faithfulness"],
                   baseline="same images vs another caption",
                   baseline_value=t2i["faithfulness_other_caption"]))
  for row in rows:
    lower = row.pop("lower_is_better", False)
    row["beats_baseline"] = bool(row["value"] < row["baseline_value"] if lower
                                 else row["value"] > row["baseline_value"])
  return rows


def markdown(results: dict) -> str:
  """The md report: command, wall time, the table and the extra figures."""
  lines = ["# Discrete image tokens on `shapes` (vq)", "", f"Command: `{results['command']}`", "",
           f"Wall time: {results['wall_s'] / 60:.1f} min (stages: " +
           ", ".join(f"{k} {v / 60:.1f} min" for k, v in results["timings_s"].items()) + ")", "",
           "| model | metric | value | baseline | baseline value | beats |",
           "|---|---|---|---|---|---|"]
  for r in results["rows"]:
    lines.append(f"| {r['model']} | {r['metric']} | {r['value']:.3f} | {r['baseline']} | "
                 f"{r['baseline_value']:.3f} | {'yes' if r['beats_baseline'] else 'no'} |")
  lines += [""]
  for name, r in results["tokenizers"].items():
    lines.append(f"- tokenizer {name}: {r['tokens_per_image']} tokens of {r['codebook_size']} "
                 f"codes per image; SSIM {r['ssim']:.3f}; codebook perplexity "
                 f"{r['codebook_perplexity']:.1f}; {r['val_images']} validation images")
  lm, t2i = results["lm"], results["t2i"]
  lines += [f"- vq_lm: image NLL {lm['image_nll']:.3f} nats/token over {lm['image_tokens']:.0f} "
            f"tokens; caption NLL given the image (i2t) {lm['i2t_caption_nll']:.3f}",
            f"- faithfulness over {t2i['t2i_rows']} captions that name a colour; the real images "
            f"score {t2i['faithfulness_real_images']:.3f} (the metric's ceiling)",
            f"- grid: `{results.get('grid', 'n/a')}` (rows = captions; reference, then samples)"]
  # Free-text remarks kept in the JSON (e.g. how an interrupted run was resumed).
  lines += [f"- note: {n}" for n in results.get("notes", [])]
  return "\n".join(lines) + "\n"


def write(results: dict, output: str) -> None:
  os.makedirs(output, exist_ok=True)
  reporting.write_json(os.path.join(output, f"{NAME}.json"), results)
  with open(os.path.join(output, f"{NAME}.md"), "w", encoding="utf-8") as f:
    f.write(markdown(results))


def main(argv=None) -> dict:
  """Runs (or, with --from_json, re-reports) the experiment; returns the results dict."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default="/tmp/mmjax_modalities_vq")
  parser.add_argument("--steps", type=int, default=1000, help="LM steps")
  parser.add_argument("--vq_steps", type=int, default=None,
                      help="steps of each tokenizer (default: steps // 2)")
  parser.add_argument("--preset", default="tiny", choices=("tiny", "micro"))
  parser.add_argument("--codebook", action=argparse.BooleanOptionalAction, default=True,
                      help="also train the learned-codebook tokenizer (comparison rows)")
  parser.add_argument("--eval_batches", type=int, default=8, help="validation batches")
  parser.add_argument("--t2i_rows", type=int, default=64, help="captions for faithfulness")
  parser.add_argument("--grid_rows", type=int, default=6)
  parser.add_argument("--grid_samples", type=int, default=4)
  parser.add_argument("--data_dir", default=None, help="data.data_dir (default: the config's)")
  parser.add_argument("--num_train", type=int, default=None, help="data.num_train override")
  parser.add_argument("--output", default=RESULTS)
  parser.add_argument("--from_json", action="store_true",
                      help="only rewrite the markdown from OUTPUT/vq.json")
  args = parser.parse_args(argv)
  argv_list = list(argv if argv is not None else sys.argv[1:])
  command = reporting.command_line("experiments/modalities/vq.py", argv_list)
  if args.from_json:
    with open(os.path.join(args.output, f"{NAME}.json"), encoding="utf-8") as f:
      results = json.load(f)
    write(results, args.output)
    return results
  start = time.time()
  vq_steps = args.vq_steps or max(args.steps // 2, 1)
  data = [f"data.data_dir={args.data_dir}"] if args.data_dir else []
  if args.num_train:
    data += [f"data.num_train={args.num_train}", f"data.num_eval={args.num_train}"]
  common = data + ["checkpoint.async_save=False", "log.tensorboard=False"]
  kinds = ("fsq", "vq") if args.codebook else ("fsq",)
  timings, tokenizers_out = {}, {}
  tokenizer = None
  for kind in kinds:
    config = load(f"configs/vq.py:{args.preset}",
                  common + [f"model.quantizer.kind={kind}"], vq_steps)
    workdir = os.path.join(args.workdir, f"tokenizer_{kind}")
    timings[f"tokenizer_{kind}"] = run_stage(config, workdir)
    tokenizer = tokenizer or tokenizers.get_tokenizer(config.data.tokenizer,
                                                      data_dir=config.data.data_dir)
    family = family_lib.build(config.model)
    params, _ = restore.load_params(workdir)
    train_b = batches(config, "train", args.eval_batches, tokenizer)
    val_b = batches(config, "validation", args.eval_batches, tokenizer)
    tokenizers_out[kind] = tokenizer_report(family, params, train_b, val_b)
  fsq_dir = os.path.join(args.workdir, "tokenizer_fsq")
  lm_config = load(f"configs/vq_lm.py:{args.preset}",
                   common + [f"init_from=('vq={fsq_dir}:',)"], args.steps)
  lm_dir = os.path.join(args.workdir, "vq_lm")
  timings["vq_lm"] = run_stage(lm_config, lm_dir)
  family = family_lib.build(lm_config.model)
  params, lm_step = restore.load_params(lm_dir)
  val_b = batches(lm_config, "validation", args.eval_batches, tokenizer)
  lm = lm_perplexity(family, params, val_b, tokenizers_out["fsq"].pop("train_counts"))
  for r in tokenizers_out.values():
    r.pop("train_counts", None)
  rng = jax.random.key(0)
  t2i, (tokens, texts, real) = t2i_report(family, params, val_b, tokenizer, args.t2i_rows, rng)
  os.makedirs(args.output, exist_ok=True)
  grid = os.path.join(args.output, "vq_t2i_grid.png")
  save_grid(grid, family, params, tokens, texts, real, args.grid_rows, args.grid_samples,
            jax.random.key(1))
  results = {"component": NAME, "command": command, "wall_s": time.time() - start,
             "timings_s": timings, "lm_step": lm_step, "tokenizers": tokenizers_out, "lm": lm,
             "t2i": t2i, "grid": os.path.relpath(grid, REPO) if grid.startswith(REPO) else grid}
  results["rows"] = rows_of(results)
  write(results, args.output)
  print(markdown(results))
  return results


if __name__ == "__main__":
  main()
