"""One decoder LM over text and discrete image tokens (the SEED / Emu / Chameleon direction):
images become tokens of a FROZEN VQ tokenizer (mmjax/models/vqvae.py) and share one sequence and
one vocabulary with the caption.

Vocabulary: [text ids 0..V-1 | image codes V..V+K-1 | <boi> V+K | <eoi> V+K+1]. From a `caption`
row (`image`, `tokens` = [BOS] caption [EOS] pad...) the model builds, per row, either

    text-to-image  [BOS] caption <boi> img_1 .. img_N <eoi> [EOS]   loss on img, <eoi>, EOS
    image-to-text  [BOS] <boi> img_1 .. img_N <eoi> caption [EOS]   loss on caption, EOS

(`directions`: 'both' alternates them by row parity, or 't2i' / 'i2t' for every row), right-
padded to L + N + 2 positions. The tokenizer's parameters live under `vq/` (load them with
`init_from=('vq=VQ_WORKDIR:',)`); `is_trainable` keeps them out of the optimizer and the loss
sees them through stop_gradient, so no gradient reaches them (the image ids are integers anyway).

Generation (`generate_images`): the prompt is [BOS] caption <boi>; `generate.sample` draws N
tokens through `ImageSpanDecoder`, which masks every logit outside the image-code range, and
the frozen VQ decoder turns them into pixels.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmjax import generate as generate_lib
from mmjax import losses
from mmjax.models import family as family_lib
from mmjax.models import lm as lm_lib
from mmjax.models import vqvae

Array = jax.Array
DIRECTIONS = ("both", "t2i", "i2t")


@dataclasses.dataclass(frozen=True)
class Vocabulary:
  """Where text, image codes and the two image delimiters sit in the joint vocabulary."""
  text_vocab: int
  num_codes: int
  bos_id: int
  eos_id: int
  pad_id: int

  @property
  def code_offset(self) -> int:
    """Id of image code 0."""
    return self.text_vocab

  @property
  def boi_id(self) -> int:
    """<boi>, the token before an image's codes."""
    return self.text_vocab + self.num_codes

  @property
  def eoi_id(self) -> int:
    """<eoi>, the token after an image's codes."""
    return self.boi_id + 1

  @property
  def size(self) -> int:
    """Rows of the LM's embedding table."""
    return self.eoi_id + 1


def caption_lengths(tokens: Array, vocab: Vocabulary) -> Array:
  """Caption tokens per row of right-padded [BOS] caption [EOS] rows (BOS/EOS/pad excluded)."""
  body = (tokens != vocab.pad_id) & (tokens != vocab.bos_id) & (tokens != vocab.eos_id)
  return jnp.sum(body, axis=1).astype(jnp.int32)


def build_sequences(tokens: Array, image_ids: Array, t2i: Array, vocab: Vocabulary
                    ) -> dict[str, Array]:
  """Joint sequences from caption rows `tokens` [B, L] and image ids [B, N] (0..K-1).

  Returns `tokens` [B, L + N + 2], `loss_mask` (batch-contract weights of each target position),
  and bool masks `image_target` / `text_target` (positions whose token is an image code of a
  text-to-image row / a caption token or EOS of an image-to-text row).
  """
  b, length = tokens.shape
  n_img = image_ids.shape[1]
  total = length + n_img + 2
  n = caption_lengths(tokens, vocab)[:, None]  # [B, 1]
  t2i = jnp.asarray(t2i, bool).reshape(b, 1)
  p = jnp.arange(total, dtype=jnp.int32)[None]  # [1, S]
  codes = image_ids.astype(jnp.int32) + vocab.code_offset
  take_text = lambda i: jnp.take_along_axis(tokens, jnp.clip(i, 0, length - 1), axis=1)
  take_img = lambda i: jnp.take_along_axis(codes, jnp.clip(i, 0, n_img - 1), axis=1)
  pad = jnp.full((b, total), vocab.pad_id, jnp.int32)

  def layout(text_start, img_start, eos_at):
    """Token ids given where the caption, the image codes and EOS start."""
    out = pad
    out = jnp.where(p == 0, vocab.bos_id, out)
    out = jnp.where((p >= text_start) & (p < text_start + n), take_text(p - text_start + 1), out)
    out = jnp.where(p == img_start - 1, vocab.boi_id, out)
    out = jnp.where((p >= img_start) & (p < img_start + n_img), take_img(p - img_start), out)
    out = jnp.where(p == img_start + n_img, vocab.eoi_id, out)
    out = jnp.where(p == eos_at, vocab.eos_id, out)
    return out

  # Text-to-image: caption at 1..n, <boi> at n+1, codes from n+2, <eoi>, EOS at n+N+3.
  t2i_img = n + 2
  seq_t2i = layout(jnp.ones_like(n), t2i_img, t2i_img + n_img + 1)
  # Image-to-text: <boi> at 1, codes from 2, <eoi> at N+2, caption from N+3, EOS after it.
  i2t_text = jnp.full_like(n, n_img + 3)
  seq_i2t = layout(i2t_text, jnp.full_like(n, 2), i2t_text + n)
  seq = jnp.where(t2i, seq_t2i, seq_i2t)
  image_target = t2i & (p >= t2i_img) & (p < t2i_img + n_img)
  t2i_loss = t2i & (p >= t2i_img) & (p <= t2i_img + n_img + 1)  # codes, <eoi>, EOS
  text_target = ~t2i & (p >= i2t_text) & (p <= i2t_text + n)  # caption, EOS
  return {"tokens": seq, "loss_mask": (t2i_loss | text_target).astype(jnp.float32),
          "image_target": image_target, "text_target": text_target}


def direction_mask(batch_size: int, directions: str) -> Array:
  """[B] True for text-to-image rows ('both': even rows)."""
  if directions == "both":
    return jnp.arange(batch_size) % 2 == 0
  return jnp.full((batch_size,), directions == "t2i")


class VQLM(nn.Module):
  """The frozen tokenizer `vq` and the decoder `lm` under one parameter tree.

  `__call__(image, tokens, t2i=None)` -> (logits, sequences from `build_sequences`).
  """
  vq_config: vqvae.VQConfig
  lm_config: lm_lib.DecoderConfig
  vocab: Vocabulary
  directions: str = "both"

  def setup(self):
    self.vq = vqvae.VQVAE(self.vq_config)
    self.lm = lm_lib.DecoderLM(self.lm_config)

  def __call__(self, image: Array, tokens: Array, train: bool = False,
               t2i: Optional[Array] = None) -> tuple[Array, dict[str, Array]]:
    ids = self.encode_image(image)
    if self.is_initializing():
      self.decode_image(ids)  # creates the decoder's parameters (generation needs them)
    if t2i is None:
      t2i = direction_mask(tokens.shape[0], self.directions)
    seq = build_sequences(tokens, ids, t2i, self.vocab)
    return self.lm(seq["tokens"], train), seq

  def encode_image(self, image: Array) -> Array:
    """Image token ids [B, N] (0..K-1, row-major over the grid)."""
    ids = self.vq.encode(image)
    return ids.reshape(ids.shape[0], -1)

  def decode_image(self, ids: Array) -> Array:
    """Images [B, H, W, 3] of image token ids [B, N]."""
    g = self.vq_config.grid
    return self.vq.decode(ids.reshape(ids.shape[0], g, g))

  def lm_forward(self, tokens: Array, cache: Optional[lm_lib.Cache] = None) -> Any:
    """The decoder alone on joint-vocabulary ids (prefill / decode with a cache)."""
    return self.lm(tokens, cache=cache)


def _masked_mean(values: Array, mask: Array) -> Array:
  mask = mask.astype(jnp.float32)
  return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


@family_lib.register("vq_lm")
class VQLMFamily(family_lib.ModelFamily):
  """Text + image-token LM on caption rows; the VQ tokenizer under `vq/` is frozen."""
  batch_keys = ("image", "tokens")

  def make_module(self, config: Any) -> VQLM:
    if config.directions not in DIRECTIONS:
      raise ValueError(f"vq_lm directions must be one of {DIRECTIONS}, got "
                       f"{config.directions!r}")
    self.vq_config = vqvae.vq_config(config.vq)
    self.vocab = Vocabulary(text_vocab=config.vocab_size,
                            num_codes=self.vq_config.quantizer.size, bos_id=config.bos_id,
                            eos_id=config.eos_id, pad_id=config.pad_id)
    lm_fields = dict(config.lm)
    if "vocab_size" in lm_fields:
      raise ValueError("vq_lm lm.vocab_size is derived (vocab_size + codebook + 2); set "
                       "model.vocab_size (the text vocabulary) instead")
    self.lm_config = lm_lib.config_from_dict(lm_lib.DecoderConfig,
                                             dict(lm_fields, vocab_size=self.vocab.size), "lm")
    return VQLM(self.vq_config, self.lm_config, self.vocab, config.directions)

  def dummy_batch(self, batch_size: int) -> dict[str, Array]:
    s = self.vq_config.image_size
    return {"image": jnp.zeros((batch_size, s, s, 3), jnp.float32),
            "tokens": jnp.zeros((batch_size, 8), jnp.int32)}

  def is_trainable(self, path: str) -> bool:
    """Everything but the tokenizer trains."""
    return not (path == "vq" or path.startswith("vq/"))

  def _frozen(self, params: Any) -> Any:
    return dict(params, vq=jax.lax.stop_gradient(params["vq"]))

  def loss(self, params: Any, batch: family_lib.Batch, rng: Optional[Array] = None,
           train: bool = True, t2i: Optional[Array] = None
           ) -> tuple[Array, family_lib.Metrics]:
    rngs = {"dropout": rng} if rng is not None else {}
    logits, seq = self.module.apply({"params": self._frozen(params)}, batch["image"],
                                    batch["tokens"], train=train, t2i=t2i, rngs=rngs)
    loss, metrics = losses.next_token_loss(logits, seq["tokens"], seq["loss_mask"])
    ce = losses_per_token(logits, seq["tokens"])
    image_nll = _masked_mean(ce, seq["image_target"][:, 1:])
    text_nll = _masked_mean(ce, seq["text_target"][:, 1:])
    metrics.update(image_nll=image_nll, image_perplexity=jnp.exp(image_nll),
                   text_nll=text_nll, image_tokens=jnp.sum(seq["image_target"]))
    return loss, metrics

  # ---- Inference -------------------------------------------------------------------------------
  def predict_image_ids(self, params: Any, image: Array) -> Array:
    """The frozen tokenizer's ids [B, N] of images."""
    return self.module.apply({"params": params}, image, method=VQLM.encode_image)

  def decode_image_ids(self, params: Any, ids: Array) -> Array:
    """Pixels [B, H, W, 3] (model range) of image ids [B, N]."""
    return self.module.apply({"params": params}, ids, method=VQLM.decode_image)

  def init_cache(self, batch_size: int, max_len: int) -> lm_lib.Cache:
    """An empty KV cache for `max_len` positions."""
    return lm_lib.init_cache(self.lm_config, None, batch_size, max_len)

  def prefill(self, params: Any, batch: family_lib.Batch, cache: lm_lib.Cache,
              lengths: Optional[Array] = None) -> tuple[Array, lm_lib.Cache]:
    """Runs joint-vocabulary prompts `batch['tokens']` into the cache (generate.py's API)."""
    logits, cache = self.module.apply({"params": params}, batch["tokens"], cache,
                                      method=VQLM.lm_forward)
    return logits, lm_lib.set_cache_lengths(cache, lengths)

  def decode_step(self, params: Any, tokens: Array, cache: lm_lib.Cache
                  ) -> tuple[Array, lm_lib.Cache]:
    """One step: tokens [B, 1] -> logits [B, 1, vocab] and the advanced cache."""
    return self.module.apply({"params": params}, tokens, cache, method=VQLM.lm_forward)

  def t2i_prompts(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[BOS] caption <boi> prompts (right-padded, [B, L + 1]) and their lengths."""
    tokens = np.asarray(tokens)
    n = np.asarray(caption_lengths(jnp.asarray(tokens), self.vocab))
    prompts = np.full((tokens.shape[0], tokens.shape[1] + 1), self.vocab.pad_id, np.int32)
    for b, length in enumerate(n):
      prompts[b, :length + 1] = tokens[b, :length + 1]
      prompts[b, length + 1] = self.vocab.boi_id
    return prompts, n + 2

  def generate_images(self, params: Any, tokens: np.ndarray, rng: Array, *,
                      temperature: float = 1.0, top_k: int = 0
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Samples image ids [B, N] for caption rows `tokens` and decodes them: (ids, pixels)."""
    prompts, lengths = self.t2i_prompts(tokens)
    out = generate_lib.sample(ImageSpanDecoder(self), params, {"tokens": prompts},
                              self.vq_config.num_tokens, rng, lengths=lengths,
                              temperature=temperature, top_k=top_k)
    ids = out - self.vocab.code_offset
    return ids, np.asarray(self.decode_image_ids(params, jnp.asarray(ids)))


def losses_per_token(logits: Array, tokens: Array) -> Array:
  """[B, S-1] cross-entropy of predicting tokens[:, t] from logits[:, t - 1]."""
  logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
  return -jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]


@dataclasses.dataclass(frozen=True)
class ImageSpanDecoder:
  """The decode API of a `vq_lm` family with every logit outside the image codes masked, so
  sampling inside an image span yields only image tokens (hashable: a static jit argument)."""
  family: VQLMFamily

  def _restrict(self, logits: Array) -> Array:
    v = self.family.vocab
    col = jnp.arange(logits.shape[-1])
    inside = (col >= v.code_offset) & (col < v.code_offset + v.num_codes)
    return jnp.where(inside, logits, generate_lib.NEG_INF)

  def init_cache(self, batch_size: int, max_len: int) -> lm_lib.Cache:
    return self.family.init_cache(batch_size, max_len)

  def prefill(self, params, batch, cache, lengths=None):
    logits, cache = self.family.prefill(params, batch, cache, lengths)
    return self._restrict(logits), cache

  def decode_step(self, params, tokens, cache):
    logits, cache = self.family.decode_step(params, tokens, cache)
    return self._restrict(logits), cache
