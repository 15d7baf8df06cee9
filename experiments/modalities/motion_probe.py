"""Can motion direction be read through the video Flamingo's temporal path? A probe with the
language model taken out, into experiments/results/modalities/motion_probe.{json,md}.

    python experiments/modalities/motion_probe.py [--clip_workdir /tmp/evt3/clip] \\
        [--train 3072] [--test 1024] [--steps 1200] [--rows flat:tokens,...]

`modalities/video.py` finds the video Flamingo at chance on "Which way does X move?" (at 1000
steps it gives one answer to every such question). This script asks where along the way the direction is lost. Clips are `shapes_video`'s
(mmjax/data/shapes_world.py: same scenes, speed and T=4 of S=8 frames at the segment centres)
with exactly one object moving, so the label (left / right / up / down) needs no question. A
small head is trained to predict the direction from one of two inputs:

  tokens      the final-normed patch tokens [T, N, D] of the frozen CLIP tiny image tower, frame
              by frame, as configs/flamingo.py:video_tiny feeds its resampler
  pixels      the raw pixel patches of the same grid [T, N, 3 * patch^2] (no tower)

Heads:

  flat                 a per-token linear map, then an MLP over all T x N tokens in grid order:
                       each token's place is known from where it sits (no pooling)
  resampler            video_tiny's Perceiver resampler shape (depth 1, 16 latents, 4 heads of
                       32, time embeddings at std 1.0; FFW x4 where video_tiny has x2), then an
                       MLP over its latents: the way the video Flamingo's LM sees a clip
  resampler_64x2       the same with Flamingo's 64 latents and 2 layers
  resampler_spatial    the resampler with learned spatial embeddings (resampler.max_patches)

Each row is also trained and tested on the single-frame clips the video suite uses as its
baseline (the middle frame repeated T times), which hold no motion, so what a row gains over its
single-frame twin is read from motion. Chance is 0.25.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

# pylint: disable=wrong-import-position
from mmjax import reporting, restore  # noqa: E402
from mmjax.data import frames as frames_lib  # noqa: E402
from mmjax.data import preprocess  # noqa: E402
from mmjax.data import shapes_world as world  # noqa: E402
from mmjax.models import resampler as resampler_lib  # noqa: E402
from mmjax.models import two_tower  # noqa: E402
from mmjax.models import vit as vit_lib  # noqa: E402

RESULTS = os.path.join(REPO, "experiments", "results", "modalities")
NAME = "motion_probe"
LABELS = tuple(world.DIRECTIONS)  # left, right, up, down
CLIP_FRAMES, NUM_FRAMES = 8, 4  # configs/flamingo.py VIDEO_FRAMES["tiny"]


def one_mover_clip(rng: np.random.Generator, size: int, mean, std
                   ) -> tuple[np.ndarray, int, float]:
  """[T, size, size, 3] frames of a shapes_video scene with one moving object, its direction's
  label index, and how far (pixels) the object travels between the first and last kept frame."""
  scene = world.sample_scene(rng, max_objects=4)
  mover = int(rng.integers(len(scene.objects)))
  label = int(rng.integers(len(LABELS)))
  # Starts as in world.sample_motions (frames 0 .. S/2 - 1).
  start = int(rng.integers(CLIP_FRAMES // 2))
  motions = [world.Motion(LABELS[label] if k == mover else None, start if k == mover else 0)
             for k in range(len(scene.objects))]
  keep = frames_lib.sample_indices(CLIP_FRAMES, NUM_FRAMES, "uniform")
  positions = [world.positions_at(scene, motions, int(t), CLIP_FRAMES) for t in keep]
  frames = np.stack([preprocess.to_array(world.render(scene, size, p), mean, std)
                     for p in positions])
  travel = float(np.abs(np.subtract(positions[-1][mover], positions[0][mover])).sum() * size)
  return frames, label, travel


def pixel_patches(clips: np.ndarray, patch: int) -> np.ndarray:
  """[B, T, N, patch * patch * 3] raw pixel patches in the tower's grid order (no tower)."""
  b, t, h, w, c = clips.shape
  x = clips.reshape(b, t, h // patch, patch, w // patch, patch, c).transpose(0, 1, 2, 4, 3, 5, 6)
  return x.reshape(b, t, (h // patch) * (w // patch), patch * patch * c)


def tower_encoder(config, clip_workdir: str):
  """Jitted images [B, H, W, 3] -> final-normed patch tokens [B, N, D] of the image tower of the
  CLIP run (`config`: its run config) in `clip_workdir`."""
  params, _ = restore.load_params(clip_workdir)
  model = config.model
  vit = vit_lib.ViT(**two_tower.tower_kwargs(model.vision, model.embed_dim,
                                             two_tower.common_kwargs(model)))
  return jax.jit(lambda x: vit.apply({"params": params["image"]}, x)[1])


def tower_tokens(encode, clips: np.ndarray, batch: int = 256) -> np.ndarray:
  """[B, T, N, D] tokens of `encode` (tower_encoder), frame by frame."""
  b, t = clips.shape[:2]
  flat = clips.reshape(b * t, *clips.shape[2:])
  out = np.concatenate([np.asarray(encode(flat[i:i + batch]))
                        for i in range(0, len(flat), batch)])
  return out.reshape(b, t, *out.shape[1:])


class FlatHead(nn.Module):
  """Per-token linear map, then an MLP over every token in grid order (positions by index)."""
  features: int = 16
  hidden: int = 256

  @nn.compact
  def __call__(self, tokens):
    x = nn.Dense(self.features)(tokens)
    x = nn.gelu(nn.Dense(self.hidden)(x.reshape(x.shape[0], -1)))
    return nn.Dense(len(LABELS))(x)


class ResamplerHead(nn.Module):
  """The video Flamingo's resampler over [B, T, N, D] tokens, then an MLP over its latents."""
  depth: int = 1
  num_latents: int = 16
  spatial: bool = False  # resampler.max_patches = N (learned spatial embeddings, std 1.0)
  hidden: int = 256

  @nn.compact
  def __call__(self, tokens):
    latents = resampler_lib.PerceiverResampler(
        width=tokens.shape[-1], depth=self.depth, num_heads=4, head_dim=32,
        num_latents=self.num_latents, ff_mult=4, max_frames=tokens.shape[1],
        time_embed_init_std=1.0, max_patches=tokens.shape[2] if self.spatial else 0,
        spatial_embed_init_std=1.0, scan=False)(tokens[:, None])
    x = nn.gelu(nn.Dense(self.hidden)(latents.reshape(latents.shape[0], -1)))
    return nn.Dense(len(LABELS))(x)


HEADS = {"flat": FlatHead(), "resampler": ResamplerHead(),
         "resampler_64x2": ResamplerHead(depth=2, num_latents=64),
         "resampler_spatial": ResamplerHead(spatial=True)}
INPUTS = ("tokens", "pixels")
ROWS = ("flat:tokens", "resampler:tokens", "resampler_spatial:tokens", "resampler:pixels",
        "resampler_spatial:pixels")


def fit(head: nn.Module, train_x, train_y, test_x, test_y, steps: int, seed: int,
        batch: int = 64, lr: float = 1e-3) -> dict:
  """AdamW on cross-entropy at a constant rate after a short warmup (the resampler heads sit on
  a loss plateau at ln 4 for the first few hundred steps; a decaying rate can stall them there);
  train and test accuracy at the end."""
  params = head.init(jax.random.PRNGKey(seed), train_x[:2])
  tx = optax.adamw(optax.warmup_constant_schedule(0.0, lr, steps // 20), weight_decay=1e-4)
  opt = tx.init(params)

  def loss_fn(p, x, y):
    return optax.softmax_cross_entropy_with_integer_labels(head.apply(p, x), y).mean()

  @jax.jit
  def step(p, o, x, y):
    loss, g = jax.value_and_grad(loss_fn)(p, x, y)
    updates, o = tx.update(g, o, p)
    return optax.apply_updates(p, updates), o, loss

  predict = jax.jit(lambda p, x: jnp.argmax(head.apply(p, x), -1))
  rng = np.random.default_rng(seed)
  for _ in range(steps):
    idx = rng.integers(len(train_x), size=batch)
    params, opt, loss = step(params, opt, train_x[idx], train_y[idx])

  def accuracy(x, y):
    pred = np.concatenate([np.asarray(predict(params, x[i:i + 256]))
                           for i in range(0, len(x), 256)])
    return float((pred == y).mean())

  return {"train_accuracy": accuracy(train_x, train_y), "test_accuracy": accuracy(test_x, test_y),
          "final_loss": float(loss)}


def report(saved: dict) -> str:
  """Markdown: one row per head, motion clips beside their single-frame twins."""
  lines = ["# Motion direction through the video Flamingo's temporal path (LM taken out)", "",
           f"Regenerate: `{saved['command']}`", "",
           f"Wall time: {saved['wall_s'] / 60:.1f} min. {saved['num_train']} training and "
           f"{saved['num_test']} test clips (one moving object, T={NUM_FRAMES} of "
           f"{CLIP_FRAMES} frames, frozen tower of `{saved['clip_workdir']}`), "
           f"{saved['steps']} steps per head; chance 0.25. The mover travels "
           f"{saved['travel_median_px']:.1f} px (median; 10th percentile "
           f"{saved['travel_p10_px']:.1f} px) between the first and last kept frame of "
           f"{saved['image_size']} px frames."]
  if "token_std_within_frame" in saved:
    lines += ["", f"Tower tokens: std {saved['token_std_within_frame']:.3f} between the patches "
              f"of one frame, {saved['token_std_across_clips']:.3f} between clips at one patch "
              "(per feature, averaged)."]
  lines += ["",
           "| head | input | test accuracy (motion) | test accuracy (single frame) | "
           "train accuracy (motion) |", "|---|---|---|---|---|"]
  # The JSON's keys are sorted: order rows by input, then head, as the docstring lists them.
  order = lambda row: (INPUTS.index(row.split(":")[1]), list(HEADS).index(row.split(":")[0]))
  for row in sorted(saved["rows"], key=order):
    r, (head, source) = saved["rows"][row], row.split(":")
    lines.append(f"| {head} | {source} | {r['motion']['test_accuracy']:.3f} | "
                 f"{r['single_frame']['test_accuracy']:.3f} | "
                 f"{r['motion']['train_accuracy']:.3f} |")
  if saved.get("notes"):
    lines += ["", "Notes:", ""] + [f"- {n}" for n in saved["notes"]]
  return "\n".join(lines) + "\n"


def probe(args: argparse.Namespace, command: str) -> dict:
  """Makes the clips, encodes them, fits every row on both inputs; the dict to save."""
  rows = args.rows.split(",")
  bad = [r for r in rows if r.count(":") != 1 or r.split(":")[0] not in HEADS
         or r.split(":")[1] not in INPUTS]
  if bad:
    raise ValueError(f"--rows {bad}: each must be HEAD:INPUT with HEAD in {sorted(HEADS)} and "
                     f"INPUT in {INPUTS}")
  start = time.time()
  config = restore.load_run_config(args.clip_workdir)
  size = int(config.model.vision.image_size)
  mean, std = config.data.mean, config.data.std
  rng = np.random.default_rng(args.seed)
  made = [one_mover_clip(rng, size, mean, std) for _ in range(args.train + args.test)]
  clips = np.stack([m[0] for m in made])
  labels = np.array([m[1] for m in made])
  travel = np.array([m[2] for m in made])
  single = np.stack([frames_lib.middle_frame_clip(c) for c in clips])
  patch = int(config.model.vision.patch_size)
  inputs = {"tokens": {}, "pixels": {}}
  encode = (tower_encoder(config, args.clip_workdir) if any(r.endswith(":tokens") for r in rows)
            else None)
  for kind, x in (("motion", clips), ("single_frame", single)):
    inputs["pixels"][kind] = pixel_patches(x, patch)
    if encode is not None:
      print(f"encoding {len(x)} {kind} clips", flush=True)
      inputs["tokens"][kind] = tower_tokens(encode, x)
  spread = {}
  if inputs["tokens"]:
    # Where the tokens vary: between the patches of one frame (what pooling must keep) against
    # between clips at one patch (global content such as background and colours).
    tok = inputs["tokens"]["motion"]
    spread = {"token_std_within_frame": float(tok.std(axis=2).mean()),
              "token_std_across_clips": float(tok.std(axis=0).mean())}
  n = args.train
  results = {}
  for row in rows:
    head, source = row.split(":")
    results[row] = {}
    for kind, x in inputs[source].items():
      results[row][kind] = fit(HEADS[head], x[:n], labels[:n], x[n:], labels[n:], args.steps,
                               args.seed)
      print(row, kind, results[row][kind], flush=True)
  return {"component": NAME, "command": command, "wall_s": time.time() - start,
          "clip_workdir": args.clip_workdir, "image_size": size, "num_train": n,
          "num_test": args.test, "steps": args.steps,
          "travel_median_px": float(np.median(travel)),
          "travel_p10_px": float(np.percentile(travel, 10)), **spread, "rows": results,
          "notes": list(args.note)}



def main(argv=None) -> dict:
  """Runs the probe (or rereads its JSON) and writes the JSON and markdown; the saved dict."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--clip_workdir", default="/tmp/evt3/clip",
                      help="CLIP run (configs/clip.py:tiny) whose frozen image tower encodes")
  parser.add_argument("--train", type=int, default=3072, help="training clips")
  parser.add_argument("--test", type=int, default=1024, help="test clips")
  parser.add_argument("--steps", type=int, default=1200, help="optimizer steps per head")
  parser.add_argument("--rows", default=",".join(ROWS),
                      help="comma-separated HEAD:INPUT rows to fit (module docstring)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--note", action="append", default=[], help="a line for the notes")
  parser.add_argument("--output", default=RESULTS, help="directory of the JSON and markdown")
  parser.add_argument("--from_json", action="store_true",
                      help="only rewrite the markdown from OUTPUT/motion_probe.json")
  args = parser.parse_args(argv)
  json_path = os.path.join(args.output, f"{NAME}.json")
  if args.from_json:
    saved = reporting.read_json(json_path)
  else:
    saved = probe(args, reporting.command_line("experiments/modalities/motion_probe.py", argv))
    reporting.write_json(json_path, saved)
  reporting.write_report(os.path.join(args.output, f"{NAME}.md"), report(saved))
  return saved


if __name__ == "__main__":
  main()
