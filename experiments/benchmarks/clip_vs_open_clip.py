"""Train-step throughput of mmjax CLIP vs open_clip (torch) on the same architecture and data.

    python experiments/benchmarks/clip_vs_open_clip.py            # width 256, 6+6 layers, 64 px
    python experiments/benchmarks/clip_vs_open_clip.py --batch 16 --width 64 --layers 1

Both sides start from the same weights (open_clip's init, copied with mmjax.convert.open_clip),
train with AdamW of the same hyper-parameters (decay on matrices only) on the same batches, on
the same threads; the losses must agree for --check_steps steps before anything is timed. Ours
is the trainer's step (mmjax.train.make_train_step, jitted with the state donated). Prints both
sides' steps/s and the ratio as the last line; a missed target prints a per-part profile.
"""

from __future__ import annotations

import harness  # first: sets XLA flags before jax is imported  # pylint: disable=unused-import

import argparse
import sys
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import torch
import torch.nn.functional as F

from mmjax import optim
from mmjax import train as train_lib
from mmjax.convert import open_clip as oc_convert
from mmjax.convert import open_clip_config
from mmjax.models import family as family_lib

PEER = "open_clip"
TARGET = 1.1


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  """Sizes, optimizer, timing and threads (defaults: the issue's ~1 s step)."""
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--image_size", type=int, default=64)
  p.add_argument("--patch_size", type=int, default=8)
  p.add_argument("--width", type=int, default=256, help="width of both towers")
  p.add_argument("--layers", type=int, default=6, help="depth of each tower")
  p.add_argument("--head_width", type=int, default=64)
  p.add_argument("--embed_dim", type=int, default=256)
  p.add_argument("--context_length", type=int, default=32)
  p.add_argument("--vocab_size", type=int, default=1000)
  p.add_argument("--scan", choices=("on", "off"), default="on",
                 help="our towers' layers: scanned (one compiled body) or unrolled")
  harness.add_train_twin_args(p)
  return p.parse_args(argv)


def open_clip_model_config(a: argparse.Namespace) -> dict:
  """open_clip's CLIP(**config) for the sizes in `a` (GELU, class-token pooling, causal text)."""
  return dict(embed_dim=a.embed_dim,
              vision_cfg=dict(image_size=a.image_size, patch_size=a.patch_size, width=a.width,
                              layers=a.layers, head_width=a.head_width),
              text_cfg=dict(context_length=a.context_length, vocab_size=a.vocab_size,
                            width=a.width, heads=a.width // a.head_width, layers=a.layers))


def optim_config(a: argparse.Namespace) -> ml_collections.ConfigDict:
  """The trainer's config fields make_optimizer / make_train_step read: constant-lr AdamW."""
  return ml_collections.ConfigDict(dict(
      on_nonfinite="halt",
      optim=dict(name="adamw", learning_rate=a.lr, b1=0.9, b2=0.98, eps=1e-6,
                 weight_decay=a.weight_decay, schedule="constant", warmup_steps=0,
                 total_steps=1 << 30, end_lr_factor=0.0, no_decay=(), clip_norm=0.0,
                 grad_accum_steps=1, frozen=())))


def train_flops(a: argparse.Namespace) -> float:
  """Matmul FLOPs of one training step (3x the forward: forward, input and weight gradients),
  counted from the shapes: 12 D^2 per token and layer (q, k, v, out, 4x MLP), attention
  4 T^2 D per example and layer, the patch embedding. (XLA's cost_analysis leaves out the dots
  it hands to YNNPACK, so it undercounts.)"""
  def tower(tokens_per_example: int) -> float:
    t, d = tokens_per_example, a.width
    return a.layers * a.batch * (2 * t * 12 * d * d + 4 * t * t * d)
  patches = (a.image_size // a.patch_size) ** 2
  forward = (tower(patches + 1) + tower(a.context_length)
             + 2 * a.batch * patches * a.patch_size ** 2 * 3 * a.width)
  return 3.0 * forward


def make_batches(a: argparse.Namespace, count: int = 2) -> list[dict[str, np.ndarray]]:
  """`count` batches of images [B, H, W, 3] and open_clip-style token rows (sot, words, eot =
  the largest id, zero padding; CLIP pools the argmax id)."""
  rng = np.random.default_rng(a.seed)
  sot, eot = a.vocab_size - 2, a.vocab_size - 1
  out = []
  for _ in range(count):
    text = np.zeros((a.batch, a.context_length), np.int32)
    for row in text:
      n = int(rng.integers(1, a.context_length - 1))
      row[:n + 2] = [sot, *rng.integers(1, a.vocab_size - 2, n), eot]
    image = rng.standard_normal((a.batch, a.image_size, a.image_size, 3)).astype(np.float32)
    out.append({"image": image, "text": text})
  return out


# ---- torch side -------------------------------------------------------------------------------

class TorchTwin:
  """open_clip CLIP + torch AdamW; `step(i)` trains on batch i and returns the loss."""

  def __init__(self, a: argparse.Namespace, batches: list[dict[str, np.ndarray]]):
    import open_clip  # pylint: disable=import-outside-toplevel
    torch.manual_seed(a.seed)
    self.model = open_clip.CLIP(**open_clip_model_config(a)).train()
    params = [p for p in self.model.parameters() if p.requires_grad]
    self.opt = torch.optim.AdamW(
        [{"params": [p for p in params if p.ndim >= 2], "weight_decay": a.weight_decay},
         {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
        lr=a.lr, betas=(0.9, 0.98), eps=1e-6)
    self.batches = [(torch.from_numpy(b["image"].transpose(0, 3, 1, 2)).contiguous(),
                     torch.from_numpy(b["text"].astype(np.int64))) for b in batches]

  def loss(self, i: int) -> torch.Tensor:
    """CLIP's symmetric InfoNCE on batch i (open_clip's ClipLoss on one process)."""
    image, text = self.batches[i % len(self.batches)]
    img = self.model.encode_image(image, normalize=True)
    txt = self.model.encode_text(text, normalize=True)
    logits = self.model.logit_scale.exp() * img @ txt.T
    labels = torch.arange(logits.shape[0])
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))

  def step(self, i: int) -> float:
    """One AdamW step on batch i; the loss before the update."""
    self.opt.zero_grad(set_to_none=True)
    loss = self.loss(i)
    loss.backward()
    self.opt.step()
    return float(loss.detach())

  def parts(self) -> dict:
    """Blocking callables of the step's parts, for the profile."""
    def forward():
      with torch.no_grad():
        self.loss(0)

    def forward_backward():
      self.opt.zero_grad(set_to_none=True)
      self.loss(0).backward()

    return {"forward": forward, "forward+backward": forward_backward,
            "optimizer update": self.opt.step}


# ---- mmjax side -------------------------------------------------------------------------------

class JaxTwin:
  """mmjax CLIP from the torch twin's weights + the trainer's jitted, donated AdamW step."""

  def __init__(self, a: argparse.Namespace, batches: list[dict[str, np.ndarray]],
               state_dict: dict):
    oc_cfg = open_clip_model_config(a)
    self.model_config = open_clip_config.model_config(oc_cfg)
    self.model_config.scan = a.scan == "on"
    self.family = family_lib.build(self.model_config)
    config = optim_config(a)
    params = oc_convert.to_mmjax(state_dict, self.model_config)
    trainable = jax.tree.map(lambda _: True, params)
    self.tx, _ = optim.make_optimizer(config.optim, params, trainable)
    self.params = jax.device_put(params)
    self.opt_state = self.tx.init(self.params)
    step_fn = train_lib.make_train_step(self.family, self.tx, trainable, config)
    self.train_step = jax.jit(step_fn, donate_argnums=(0, 1))
    self.batches = [jax.device_put({k: jnp.asarray(v) for k, v in b.items()}) for b in batches]
    self.rng = jax.random.key(a.seed)
    self.count = 0

  def step(self, i: int) -> float:
    """One step on batch i (blocks until done); the loss before the update."""
    loss = self.step_async(i)
    return float(loss)

  def step_async(self, i: int) -> jax.Array:
    """The step, returning once the updated state is computed."""
    self.params, self.opt_state, metrics = self.train_step(
        self.params, self.opt_state, self.batches[i % len(self.batches)], self.rng,
        jnp.int32(self.count))
    self.count += 1
    jax.block_until_ready((self.params, self.opt_state))
    return metrics["loss"]

  def parts(self) -> dict:
    """Blocking callables of the step's parts (each jitted alone), for the profile."""
    loss_fn = lambda p, b: self.family.loss(p, b, None, train=True)[0]
    fwd = jax.jit(loss_fn)
    grad = jax.jit(jax.grad(loss_fn))
    grads = grad(self.params, self.batches[0])

    def update(g, s, p):
      u, s = self.tx.update(g, s, p)
      return optax.apply_updates(p, u), s
    upd = jax.jit(update)
    return {"forward": lambda: jax.block_until_ready(fwd(self.params, self.batches[0])),
            "forward+backward": lambda: jax.block_until_ready(grad(self.params,
                                                                   self.batches[0])),
            "optimizer update": lambda: jax.block_until_ready(
                upd(grads, self.opt_state, self.params))}


def main(argv: Optional[Sequence[str]] = None) -> float:
  """Runs the benchmark; returns the ratio (mmjax steps/s over open_clip's)."""
  a = parse_args(argv)
  harness.pin_threads(a.threads)
  print(f"CLIP train step, batch {a.batch}, {a.image_size} px / patch {a.patch_size}, width "
        f"{a.width}, {a.layers}+{a.layers} layers, text {a.context_length} tokens, AdamW, fp32, "
        f"{a.threads} threads; jax {jax.__version__} (XLA_FLAGS={harness.os.environ.get('XLA_FLAGS')}), "
        f"torch {torch.__version__}")
  batches = make_batches(a)
  theirs = TorchTwin(a, batches)
  ours = JaxTwin(a, batches, theirs.model.state_dict())
  n_params = sum(p.numel() for p in theirs.model.parameters())
  print(f"parameters: {n_params:,} (both sides)")

  timings = harness.agree_then_time_training(ours, theirs, a, PEER)
  flops = train_flops(a)
  for name, t in timings.items():
    print(f"{name}: {flops / min(t.seconds) / 1e9:.1f} GFLOP/s in its fastest step "
          f"({flops / 1e9:.1f} GFLOP of matmuls per step)")

  def profile():
    harness.print_parts(harness.time_parts(ours.parts()), harness.time_parts(theirs.parts()),
                        PEER)
  return harness.report(timings["mmjax"], timings[PEER], "steps/s", 1.0, PEER, TARGET, profile)


if __name__ == "__main__":
  main(sys.argv[1:])
