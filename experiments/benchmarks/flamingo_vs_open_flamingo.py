"""Train-step throughput of mmjax Flamingo vs OpenFlamingo (torch) on the same architecture.

    python experiments/benchmarks/flamingo_vs_open_flamingo.py
    python experiments/benchmarks/flamingo_vs_open_flamingo.py --batch 2 --lm_width 64 ...

The torch side is open_flamingo's `Flamingo` (its PerceiverResampler and GatedCrossAttentionBlock
inside a Hugging Face Llama via FlamingoLMMixin) around an open_clip ViT; ours is the Flamingo
family built to the same shapes. Both freeze the vision tower and the LM; the resampler, the
gated blocks and the new tokens' embedding rows train (ours keeps them in a separate table,
DESIGN.md; the torch twin gets the same split as `SplitEmbedding` / `SplitHead`, so the two
train the same parameters). Weights are copied torch -> ours with mmjax.convert.open_flamingo,
the losses must agree for --check_steps AdamW steps, then both are timed on the same threads.
"""

from __future__ import annotations

import harness  # first: sets XLA flags before jax is imported  # pylint: disable=unused-import

import argparse
import importlib.util
import os
import sys
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import torch
import torch.nn.functional as F

from mmjax import config_lib
from mmjax import optim
from mmjax import paths
from mmjax import train as train_lib
from mmjax.convert import open_flamingo as of_convert
from mmjax.models import family as family_lib

PEER = "open_flamingo"
TARGET = 1.1
NUM_NEW = 3  # <image>, <|endofchunk|>, <PAD>, appended by open_flamingo's factory


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  """Sizes, optimizer, timing and threads. open_flamingo fixes the resampler (6 layers, 8 heads
  x 64, 64 latents, FFW x4) and the gated blocks (8 heads x 64, FFW x4); the rest is free."""
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--length", type=int, default=64, help="tokens per row")
  p.add_argument("--media", type=int, default=2, help="images per row")
  p.add_argument("--image_size", type=int, default=64)
  p.add_argument("--patch_size", type=int, default=8)
  p.add_argument("--vision_width", type=int, default=256, help="also the resampler's width")
  p.add_argument("--vision_layers", type=int, default=4)
  p.add_argument("--lm_width", type=int, default=512)
  p.add_argument("--lm_layers", type=int, default=4)
  p.add_argument("--lm_heads", type=int, default=8)
  p.add_argument("--lm_kv_heads", type=int, default=4)
  p.add_argument("--lm_mlp", type=int, default=1376)
  p.add_argument("--vocab_size", type=int, default=4000, help="pretrained rows (+3 new tokens)")
  p.add_argument("--cross_attn_every_n", type=int, default=2)
  harness.add_train_twin_args(p)
  return p.parse_args(argv)


def model_config(a: argparse.Namespace) -> ml_collections.ConfigDict:
  """Our config.model for the open_flamingo twin (Llama LM, untied head, GQA)."""
  model = config_lib.load_config(os.path.join(harness.REPO_ROOT, "configs/flamingo.py:tiny")
                                 ).model
  model.freeze_vision = True
  model.freeze_lm = True
  model.vision.update(image_size=a.image_size, patch_size=a.patch_size, width=a.vision_width,
                      depth=a.vision_layers, num_heads=a.vision_width // 64,
                      mlp_dim=4 * a.vision_width, output_dim=a.vision_width)
  model.resampler.update(width=a.vision_width, depth=6, num_heads=8, head_dim=64,
                         num_latents=64, ff_mult=4, activation="gelu", max_frames=0)
  model.lm.update(vocab_size=a.vocab_size, width=a.lm_width, depth=a.lm_layers,
                  num_heads=a.lm_heads, num_kv_heads=a.lm_kv_heads,
                  head_dim=a.lm_width // a.lm_heads, mlp_dim=a.lm_mlp, norm_eps=1e-6,
                  tie_embeddings=False, num_new_tokens=NUM_NEW, max_len=max(a.length, 64))
  model.xattn.update(num_heads=8, head_dim=64, ff_mult=4, activation="gelu",
                     cross_attn_every_n=a.cross_attn_every_n)
  return model


def optim_config(a: argparse.Namespace) -> ml_collections.ConfigDict:
  """The trainer's config fields make_optimizer / make_train_step read: constant-lr AdamW."""
  return ml_collections.ConfigDict(dict(
      on_nonfinite="halt",
      optim=dict(name="adamw", learning_rate=a.lr, b1=0.9, b2=0.999, eps=1e-8,
                 weight_decay=a.weight_decay, schedule="constant", warmup_steps=0,
                 total_steps=1 << 30, end_lr_factor=0.0, no_decay=(), clip_norm=0.0,
                 grad_accum_steps=1, frozen=())))


def make_batches(a: argparse.Namespace, count: int = 2) -> list[dict[str, np.ndarray]]:
  """Interleaved rows: `media` images, each announced by an <image> token (id vocab_size) at
  evenly spaced positions (row 0 starts with text), random words elsewhere; every target
  position counts in the loss."""
  rng = np.random.default_rng(a.seed)
  image_id = a.vocab_size
  out = []
  for _ in range(count):
    tokens = rng.integers(0, a.vocab_size, (a.batch, a.length)).astype(np.int32)
    gap = a.length // a.media
    for m in range(a.media):
      tokens[:, m * gap + 1] = image_id
    media = rng.standard_normal((a.batch, a.media, 1, a.image_size, a.image_size, 3))
    out.append({"media": media.astype(np.float32),
                "media_mask": np.ones((a.batch, a.media), bool), "tokens": tokens,
                "media_locations": tokens == image_id,
                "loss_mask": np.ones((a.batch, a.length), np.float32)})
  return out


# ---- torch side -------------------------------------------------------------------------------

def _open_flamingo_modules():
  """open_flamingo's Flamingo, FlamingoLMMixin and extend_instance (the package __init__ is not
  imported: it builds models from the hub)."""
  spec = importlib.util.find_spec("open_flamingo")
  if spec is None:
    raise ImportError("open_flamingo is not installed: pip install --no-deps open-flamingo==2.0.1")
  from open_flamingo.src.flamingo import Flamingo  # pylint: disable=import-outside-toplevel
  # pylint: disable-next=import-outside-toplevel
  from open_flamingo.src.flamingo_lm import FlamingoLMMixin
  from open_flamingo.src.utils import extend_instance  # pylint: disable=import-outside-toplevel
  return Flamingo, FlamingoLMMixin, extend_instance


class SplitEmbedding(torch.nn.Module):
  """An embedding whose pretrained rows are frozen and whose new-token rows train (the torch
  form of our `embed` + `new_embed`)."""

  def __init__(self, weight: torch.Tensor, num_new: int):
    super().__init__()
    self.base = torch.nn.Parameter(weight[:-num_new].clone(), requires_grad=False)
    self.new = torch.nn.Parameter(weight[-num_new:].clone())

  def forward(self, ids: torch.Tensor) -> torch.Tensor:
    return F.embedding(ids, torch.cat([self.base, self.new]))


class SplitHead(torch.nn.Module):
  """An untied output layer with frozen pretrained rows and trainable new-token rows (our
  `unembed` + `new_unembed`)."""

  def __init__(self, weight: torch.Tensor, num_new: int):
    super().__init__()
    self.base = torch.nn.Parameter(weight[:-num_new].clone(), requires_grad=False)
    self.new = torch.nn.Parameter(weight[-num_new:].clone())

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, torch.cat([self.base, self.new]))


def next_token_loss(logits: torch.Tensor, tokens: torch.Tensor,
                    loss_mask: torch.Tensor) -> torch.Tensor:
  """mmjax.losses.next_token_loss in torch: mean CE of tokens[:, t] from logits[:, t - 1]."""
  ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                       tokens[:, 1:].reshape(-1), reduction="none")
  weights = loss_mask[:, 1:].reshape(-1)
  return (ce * weights).sum() / weights.sum().clamp_min(1e-8)


class TorchTwin:
  """open_flamingo Flamingo (open_clip ViT, HF Llama) + torch AdamW on the trainable parts."""

  def __init__(self, a: argparse.Namespace, batches: list[dict[str, np.ndarray]]):
    import open_clip  # pylint: disable=import-outside-toplevel
    import transformers  # pylint: disable=import-outside-toplevel
    flamingo_cls, mixin, extend_instance = _open_flamingo_modules()
    torch.manual_seed(a.seed)
    clip = open_clip.CLIP(embed_dim=a.vision_width,
                          vision_cfg=dict(image_size=a.image_size, patch_size=a.patch_size,
                                          width=a.vision_width, layers=a.vision_layers,
                                          head_width=64),
                          text_cfg=dict(context_length=8, vocab_size=16, width=64, heads=1,
                                        layers=1))
    clip.visual.output_tokens = True
    config = transformers.LlamaConfig(
        vocab_size=a.vocab_size + NUM_NEW, hidden_size=a.lm_width, intermediate_size=a.lm_mlp,
        num_hidden_layers=a.lm_layers, num_attention_heads=a.lm_heads,
        num_key_value_heads=a.lm_kv_heads, head_dim=a.lm_width // a.lm_heads,
        max_position_embeddings=max(a.length, 64), rms_norm_eps=1e-6,
        tie_word_embeddings=False, bos_token_id=0, eos_token_id=1, pad_token_id=None)
    lang = transformers.AutoModelForCausalLM.from_config(config)
    self.attn_implementation = lang.config._attn_implementation  # pylint: disable=protected-access
    extend_instance(lang, mixin)
    lang.set_decoder_layers_attr_name("model.layers")
    self.model = flamingo_cls(clip, lang, eoc_token_id=a.vocab_size + 1,
                              media_token_id=a.vocab_size, vis_dim=a.vision_width,
                              cross_attn_every_n_layers=a.cross_attn_every_n)
    with torch.no_grad():  # Open gates: the gated branches weigh in from the first step.
      for layer in lang.gated_cross_attn_layers:
        if layer is not None:
          layer.attn_gate.fill_(0.5)
          layer.ff_gate.fill_(0.5)
    self.model.train()
    self.batches = [(torch.from_numpy(b["media"].transpose(0, 1, 2, 5, 3, 4)).contiguous(),
                     torch.from_numpy(b["tokens"].astype(np.int64)),
                     torch.from_numpy(b["loss_mask"])) for b in batches]

  def split_new_tokens(self) -> None:
    """Freezes everything but the resampler, the gated blocks and the new-token rows (call
    after copying the weights: it changes the state-dict keys of the embeddings)."""
    lang = self.model.lang_encoder
    self.model.requires_grad_(False)
    self.model.perceiver.requires_grad_(True)
    for layer in lang.gated_cross_attn_layers:
      if layer is not None:
        layer.requires_grad_(True)
    lang.set_input_embeddings(SplitEmbedding(lang.get_input_embeddings().weight.detach(),
                                             NUM_NEW))
    lang.set_output_embeddings(SplitHead(lang.get_output_embeddings().weight.detach(), NUM_NEW))

  def make_optimizer(self, a: argparse.Namespace) -> None:
    """AdamW over the trainable parameters (decay on matrices only, as ours)."""
    params = [p for p in self.model.parameters() if p.requires_grad]
    self.opt = torch.optim.AdamW(
        [{"params": [p for p in params if p.ndim >= 2], "weight_decay": a.weight_decay},
         {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
        lr=a.lr, betas=(0.9, 0.999), eps=1e-8)
    self.num_trainable = sum(p.numel() for p in params)

  def loss(self, i: int) -> torch.Tensor:
    """Next-token loss on batch i."""
    media, tokens, mask = self.batches[i % len(self.batches)]
    logits = self.model(media, tokens).logits
    return next_token_loss(logits, tokens, mask)

  def step(self, i: int) -> float:
    """One AdamW step on batch i; the loss before the update."""
    self.opt.zero_grad(set_to_none=True)
    loss = self.loss(i)
    loss.backward()
    self.opt.step()
    return float(loss.detach())

  def parts(self) -> dict:
    """Blocking callables of the step's parts, for the profile."""
    media, _, _ = self.batches[0]

    def vision():
      with torch.no_grad():
        self.model.vision_encoder(media.flatten(0, 2))

    def forward():
      with torch.no_grad():
        self.loss(0)

    def forward_backward():
      self.opt.zero_grad(set_to_none=True)
      self.loss(0).backward()

    return {"vision tower (frozen)": vision, "forward": forward,
            "forward+backward": forward_backward, "optimizer update": self.opt.step}


# ---- mmjax side -------------------------------------------------------------------------------

class JaxTwin:
  """mmjax Flamingo from the torch twin's weights + the trainer's jitted, donated AdamW step."""

  def __init__(self, a: argparse.Namespace, batches: list[dict[str, np.ndarray]],
               state_dict: dict):
    self.model_config = model_config(a)
    self.family = family_lib.build(self.model_config)
    config = optim_config(a)
    params = of_convert.to_mmjax(state_dict, self.model_config)
    trainable = jax.tree.map(self.family.is_trainable, paths.tree_paths(params))
    self.tx, _ = optim.make_optimizer(config.optim, params, trainable)
    self.params = jax.device_put(params)
    self.opt_state = self.tx.init(self.params)
    self.num_trainable = sum(x.size for x, t in zip(jax.tree.leaves(params),
                                                     jax.tree.leaves(trainable)) if t)
    step_fn = train_lib.make_train_step(self.family, self.tx, trainable, config)
    self.train_step = jax.jit(step_fn, donate_argnums=(0, 1))
    self.batches = [jax.device_put({k: jnp.asarray(v) for k, v in b.items()}) for b in batches]
    self.rng = jax.random.key(a.seed)
    self.count = 0

  def step(self, i: int) -> float:
    """One step on batch i (blocks until done); the loss before the update."""
    return float(self.step_async(i))

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
    batch = self.batches[0]
    loss_fn = lambda p, b: self.family.loss(p, b, None, train=True)[0]
    vision = jax.jit(lambda p, m: self.family.module.apply(
        {"params": p}, m, method=lambda mod, x: mod.vision(
            x.reshape(-1, *x.shape[3:]))[1]))
    fwd = jax.jit(loss_fn)
    grad = jax.jit(jax.grad(loss_fn))
    grads = grad(self.params, batch)

    def update(g, s, p):
      u, s = self.tx.update(g, s, p)
      return optax.apply_updates(p, u), s
    upd = jax.jit(update)
    return {"vision tower (frozen)": lambda: jax.block_until_ready(
                vision(self.params, batch["media"])),
            "forward": lambda: jax.block_until_ready(fwd(self.params, batch)),
            "forward+backward": lambda: jax.block_until_ready(grad(self.params, batch)),
            "optimizer update": lambda: jax.block_until_ready(
                upd(grads, self.opt_state, self.params))}


def main(argv: Optional[Sequence[str]] = None) -> float:
  """Runs the benchmark; returns the ratio (mmjax steps/s over open_flamingo's)."""
  a = parse_args(argv)
  harness.pin_threads(a.threads)
  batches = make_batches(a)
  theirs = TorchTwin(a, batches)
  ours = JaxTwin(a, batches, theirs.model.state_dict())
  theirs.split_new_tokens()
  theirs.make_optimizer(a)
  print(f"Flamingo train step, batch {a.batch} x {a.length} tokens, {a.media} images of "
        f"{a.image_size} px; ViT {a.vision_width}x{a.vision_layers} (frozen), resampler 6 layers, "
        f"Llama {a.lm_width}x{a.lm_layers} (frozen, GQA {a.lm_heads}/{a.lm_kv_heads}) with a "
        f"gated block every {a.cross_attn_every_n}; AdamW, fp32, {a.threads} threads; "
        f"transformers attention {theirs.attn_implementation!r}; "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS')}")
  if ours.num_trainable != theirs.num_trainable:
    raise harness.LossMismatchError(f"trainable parameters differ: mmjax {ours.num_trainable:,}, "
                                    f"torch {theirs.num_trainable:,}")
  print(f"trainable parameters: {ours.num_trainable:,} (both sides)")

  timings = harness.agree_then_time_training(ours, theirs, a, PEER)

  def profile():
    harness.print_parts(harness.time_parts(ours.parts()), harness.time_parts(theirs.parts()),
                        PEER)
  return harness.report(timings["mmjax"], timings[PEER], "steps/s", 1.0, PEER, TARGET, profile)


if __name__ == "__main__":
  main(sys.argv[1:])
