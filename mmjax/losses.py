"""Training objectives: contrastive (softmax CLIP, sigmoid SigLIP) and next-token cross-entropy.

Each loss is written the way the paper states it, on the *global* batch: under `jax.jit` with the
batch sharded over the data axes, `img @ txt.T` is the all-gathered similarity matrix that
open_clip builds with `gather_with_grad=True`, and XLA inserts the collectives.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

Array = jax.Array

CLIP_INIT_LOGIT_SCALE = math.log(1 / 0.07)  # CLIP: temperature 0.07 at init.
CLIP_MAX_LOGIT_SCALE = math.log(100.0)  # CLIP clamps the scale at 100.
SIGLIP_INIT_LOGIT_SCALE = math.log(10.0)  # SigLIP: t' = log 10.
SIGLIP_INIT_LOGIT_BIAS = -10.0  # SigLIP: b = -10.


def l2_normalize(x: Array, eps: float = 1e-12) -> Array:
  """x / ||x|| along the last axis, in float32 (as F.normalize)."""
  x = x.astype(jnp.float32)
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def softmax_contrastive_loss(image_emb: Array, text_emb: Array, logit_scale: Array,
                             text_neg_emb: Array | None = None
                             ) -> tuple[Array, dict[str, Array]]:
  """CLIP's symmetric InfoNCE on L2-normalised embeddings [B, D]; `logit_scale` is exp(t).

  loss = (CE(s * I T^T, diag) + CE(s * T I^T, diag)) / 2.
  With hard-negative texts `text_neg_emb` [B, D] (NegCLIP, Yuksekgonul et al. 2023), each
  image's softmax over texts also holds every negative: CE(s * I [T; N]^T, diag); the
  text-to-image term is unchanged.
  """
  logits = logit_scale * image_emb @ text_emb.T
  labels = jnp.arange(logits.shape[0])
  texts = logits
  if text_neg_emb is not None:
    texts = jnp.concatenate([logits, logit_scale * image_emb @ text_neg_emb.T], axis=1)
  i2t = optax.softmax_cross_entropy_with_integer_labels(texts, labels).mean()
  t2i = optax.softmax_cross_entropy_with_integer_labels(logits.T, labels).mean()
  loss = 0.5 * (i2t + t2i)
  accuracy = 0.5 * ((jnp.argmax(logits, 1) == labels).mean() +
                    (jnp.argmax(logits, 0) == labels).mean())
  return loss, {"contrastive_loss": loss, "i2t_accuracy": accuracy}


def sigmoid_contrastive_loss(image_emb: Array, text_emb: Array, logit_scale: Array,
                             logit_bias: Array, text_neg_emb: Array | None = None
                             ) -> tuple[Array, dict[str, Array]]:
  """SigLIP's pairwise sigmoid loss (Zhai et al. 2023, Alg. 1), normalised by the batch size.

  loss = -1/|B| sum_ij log sigmoid(z_ij (t x_i . y_j + b)), z_ij = 1 if i == j else -1.
  Hard-negative texts `text_neg_emb` [B, D] add B more columns, every pair a negative.
  """
  logits = logit_scale * image_emb @ text_emb.T + logit_bias
  labels = 2.0 * jnp.eye(logits.shape[0]) - 1.0
  loss = -jnp.sum(jax.nn.log_sigmoid(labels * logits)) / logits.shape[0]
  if text_neg_emb is not None:
    negatives = logit_scale * image_emb @ text_neg_emb.T + logit_bias
    loss += -jnp.sum(jax.nn.log_sigmoid(-negatives)) / logits.shape[0]
  accuracy = (jnp.argmax(logits, 1) == jnp.arange(logits.shape[0])).mean()
  return loss, {"contrastive_loss": loss, "i2t_accuracy": accuracy}


def chunked_sigmoid_contrastive_loss(image_emb: Array, text_emb: Array, logit_scale: Array,
                                     logit_bias: Array, num_chunks: int) -> Array:
  """The sigmoid loss computed over `num_chunks` blocks of texts, never materialising [B, B].

  Equals `sigmoid_contrastive_loss` exactly; for batches whose similarity matrix does not fit.
  """
  b = image_emb.shape[0]
  if b % num_chunks:
    raise ValueError(f"batch size {b} is not divisible by num_chunks {num_chunks}")
  chunk = b // num_chunks
  text_chunks = text_emb.reshape(num_chunks, chunk, -1)

  def body(total, inputs):
    k, txt = inputs
    logits = logit_scale * image_emb @ txt.T + logit_bias
    labels = 2.0 * (jnp.arange(b)[:, None] == (k * chunk + jnp.arange(chunk))[None]) - 1.0
    return total - jnp.sum(jax.nn.log_sigmoid(labels * logits)), None

  total, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32), (jnp.arange(num_chunks), text_chunks))
  return total / b


def next_token_loss(logits: Array, tokens: Array, loss_mask: Array
                    ) -> tuple[Array, dict[str, Array]]:
  """Mean cross-entropy of predicting tokens[:, t] from logits[:, t - 1], weighted by loss_mask.

  Follows the batch contract (mmjax/batch.py): `loss_mask[:, t]` weights target position t.
  Returns the weighted mean and metrics (loss, token accuracy, number of target tokens).
  """
  logits = logits[:, :-1].astype(jnp.float32)
  targets = tokens[:, 1:]
  weights = loss_mask[:, 1:].astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  denom = jnp.maximum(weights.sum(), 1e-8)
  loss = (ce * weights).sum() / denom
  correct = ((jnp.argmax(logits, -1) == targets) * weights).sum() / denom
  return loss, {"token_loss": loss, "token_accuracy": correct, "num_tokens": weights.sum()}
