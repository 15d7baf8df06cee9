"""BLIP-2's Querying Transformer (Li et al. 2023) and its stage-1 objectives, after Salesforce
LAVIS (`blip2_qformer.py`, `Qformer.py`).

The Q-Former is a BERT whose input is [learned queries; text]. Every layer runs self-attention
over the whole sequence (one set of weights), then the query positions alone cross-attend to the
(LayerNormed) image features — in every `cross_attention_freq`-th layer, starting with layer 0 —
and the query and text positions go through separate feed-forward blocks (LAVIS's
`intermediate_query` / `output_query` vs `intermediate` / `output`). Post-LN throughout (BERT).
Only the text positions get position embeddings; the embedding LayerNorm covers both.

The three stage-1 objectives differ only in the self-attention mask over [queries; text]
(`itc_mask`, `itm_mask`, `itg_mask`), so one joint forward serves all three. (LAVIS runs ITC's
query and text passes separately and ITG with the queries' cached keys/values; with the masks
below the joint forward computes the same activations.)

  ITC (image-text contrastive): queries and text do not see each other; text is bidirectional.
      sim(image i, text j) = max over queries of <vision_proj(q), text_proj(text CLS)> / temp.
  ITM (image-text matching): bidirectional over everything; a linear head on each query output,
      averaged over queries, classifies matched vs not; negatives are hard negatives sampled
      from the ITC similarities (`hard_negatives`).
  ITG (image-grounded generation): queries see queries only; text sees every query and the text
      at or before it (causal); the first text token is replaced by [DEC] (`bos_id`).

As a connector (`QFormerConnector`) only the queries run (no text): their outputs are projected
to the LM width, 32 visual tokens per image by default (BLIP-2's `opt_proj` / `llm_proj`).
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from mmjax import losses
from mmjax import parallel as P
from mmjax.models import layers

Array = jax.Array


# ---- Attention masks over [queries; text] ------------------------------------------------------

def _key_mask(num_queries: int, text_mask: Array) -> Array:
  """[B, 1, Q + L] True at real keys (every query, non-padded text)."""
  b = text_mask.shape[0]
  return jnp.concatenate([jnp.ones((b, num_queries), bool), text_mask.astype(bool)],
                         axis=1)[:, None, :]


def itc_mask(num_queries: int, text_mask: Array) -> Array:
  """[B, S, S] (S = Q + L): queries see only queries, text sees only (real) text."""
  s = num_queries + text_mask.shape[1]
  is_query = jnp.arange(s) < num_queries
  same = is_query[:, None] == is_query[None, :]
  return same[None] & _key_mask(num_queries, text_mask)


def itm_mask(num_queries: int, text_mask: Array) -> Array:
  """[B, S, S]: everything sees every real token (bidirectional)."""
  s = num_queries + text_mask.shape[1]
  return jnp.broadcast_to(_key_mask(num_queries, text_mask), (text_mask.shape[0], s, s))


def itg_mask(num_queries: int, text_mask: Array) -> Array:
  """[B, S, S]: queries see queries; text sees every query and real text at or before it."""
  s = num_queries + text_mask.shape[1]
  i, j = jnp.arange(s)[:, None], jnp.arange(s)[None, :]
  query_row = i < num_queries
  allowed = jnp.where(query_row, j < num_queries, (j < num_queries) | (j <= i))
  return allowed[None] & _key_mask(num_queries, text_mask)


MASKS = {"itc": itc_mask, "itm": itm_mask, "itg": itg_mask}


# ---- The network -------------------------------------------------------------------------------

class QFormerLayer(nn.Module):
  """One Q-Former (BERT) layer; `cross_attention` adds the queries' image cross-attention.

  `__call__(x, mask, image) -> (x, None)` with x [B, Q + L, D], mask [B, S, S], image [B, N, Dv].
  """
  num_queries: int
  num_heads: int
  mlp_dim: int
  cross_attention: bool
  activation: str = "gelu"
  norm_eps: float = 1e-12
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, mask: Array, image: Array, image_mask: Optional[Array] = None
               ) -> tuple[Array, None]:
    """`image_mask` [B, N] (optional): False at image tokens the queries must not attend to."""
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    norm = lambda name: layers.norm_layer("layernorm", self.norm_eps, self.dtype,
                                          self.param_dtype, name=name)
    mlp = lambda name: layers.Mlp(self.mlp_dim, self.activation, name=name, **kw)
    x = layers.constrain(x, P.BATCH, P.LENGTH, P.EMBED)
    x = norm("ln_attn")(x + layers.Attention(self.num_heads, name="attn", **kw)(
        x, mask=mask[:, None]))
    q, t = x[:, :self.num_queries], x[:, self.num_queries:]
    if self.cross_attention:
      cross_mask = None if image_mask is None else image_mask.astype(bool)[:, None, None, :]
      q = norm("ln_cross")(q + layers.Attention(self.num_heads, name="cross", **kw)(
          q, image, mask=cross_mask))
    q = norm("ln_mlp_query")(q + mlp("mlp_query")(q))
    if t.shape[1]:
      t = norm("ln_mlp")(t + mlp("mlp")(t))
    else:  # Create the text FFN's parameters even in a queries-only (connector) init.
      mlp("mlp")(q[:, :0]), norm("ln_mlp")(q[:, :0])
    return jnp.concatenate([q, t], axis=1), None


class QFormerGroup(nn.Module):
  """`size` layers, the first with cross-attention: the unit scanned over depth // size."""
  size: int
  layer: dict

  @nn.compact
  def __call__(self, x: Array, mask: Array, image: Array, image_mask: Optional[Array] = None
               ) -> tuple[Array, None]:
    for j in range(self.size):
      x, _ = QFormerLayer(cross_attention=j == 0, name=f"layer_{j}", **self.layer)(
          x, mask, image, image_mask)
    return x, None


class QFormer(nn.Module):
  """`__call__(image_feats, text=None, text_mask=None, mode='itc')` -> hidden [B, Q + L, width].

  Attributes:
    num_queries: learned queries (BLIP-2: 32).
    width / depth / num_heads / mlp_dim: the BERT shape (BLIP-2: bert-base, 768 / 12 / 12 / 3072).
    cross_attention_freq: queries cross-attend to the image every this many layers (BLIP-2: 2);
      must divide depth.
    vocab_size: word-embedding rows (bert-base-uncased + [DEC]: 30523).
    max_length: text positions.
    activation / norm_eps: BERT's exact GELU and LayerNorm eps 1e-12.
    scan / remat: scan over layer groups, and the remat policy name.
    dtype / param_dtype: compute and storage dtypes.
  """
  num_queries: int = 32
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  cross_attention_freq: int = 2
  vocab_size: int = 30523
  max_length: int = 512
  activation: str = "gelu"
  norm_eps: float = 1e-12
  scan: bool = True
  remat: str = "none"
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, image: Array, text: Optional[Array] = None,
               text_mask: Optional[Array] = None, mode: str = "itc",
               mask: Optional[Array] = None, image_mask: Optional[Array] = None) -> Array:
    """image [B, N, Dv] (already LayerNormed); text [B, L] int ids; text_mask [B, L] (1 = real).

    `mask` [B, S, S] overrides `mode`'s mask (rows of different modes in one batch).
    `image_mask` [B, N] (optional): image tokens the queries may attend to (padded AnyRes tiles
    are False).
    """
    if self.cross_attention_freq < 1 or self.depth % self.cross_attention_freq:
      raise ValueError(f"qformer.bert.cross_attention_freq={self.cross_attention_freq} must "
                       f"divide qformer.bert.depth={self.depth}")
    if mask is None and mode not in MASKS:
      raise ValueError(f"Q-Former mode {mode!r}; choose one of {sorted(MASKS)}")
    b = image.shape[0]
    init = layers.with_axes(nn.initializers.normal(0.02), P.LATENTS, P.EMBED)
    queries = self.param("query_tokens", init, (self.num_queries, self.width), self.param_dtype)
    x = jnp.broadcast_to(queries.astype(self.dtype), (b, self.num_queries, self.width))
    # Rows unnamed: BERT's 30523 (or the LM tokenizer's count + new tokens) rarely divides the
    # mesh, and the table is small; the width shards instead.
    word = self.param("token_embed", layers.with_axes(nn.initializers.normal(0.02), None,
                                                      P.EMBED),
                      (self.vocab_size, self.width), self.param_dtype)
    posemb = self.param("posemb", layers.with_axes(nn.initializers.normal(0.02), None, P.EMBED),
                        (self.max_length, self.width), self.param_dtype)
    if text is None:
      text = jnp.zeros((b, 0), jnp.int32)
    if text.shape[1] > self.max_length:
      raise ValueError(f"text length {text.shape[1]} exceeds qformer.max_length "
                       f"{self.max_length}")
    if text_mask is None:
      text_mask = jnp.ones(text.shape, bool)
    emb = jnp.take(word, text, axis=0) + posemb[None, :text.shape[1]]
    x = jnp.concatenate([x, emb.astype(self.dtype)], axis=1)
    x = layers.norm_layer("layernorm", self.norm_eps, self.dtype, self.param_dtype,
                          name="ln_embed")(x)
    if mask is None:
      mask = MASKS[mode](self.num_queries, text_mask)
    layer = dict(num_queries=self.num_queries, num_heads=self.num_heads, mlp_dim=self.mlp_dim,
                 activation=self.activation, norm_eps=self.norm_eps, dtype=self.dtype,
                 param_dtype=self.param_dtype)
    return layers.stack_layers(
        QFormerGroup, self.depth // self.cross_attention_freq, scan=self.scan, remat=self.remat,
        name="groups", num_broadcast_args=3, size=self.cross_attention_freq,
        layer=layer)(x, mask, image.astype(self.dtype), image_mask)


class QFormerConnector(nn.Module):
  """[B, M, T, N, Dv] features -> [B, M, num_queries, width]: ln_vision, queries-only Q-Former,
  linear projection to the LM width (BLIP-2's `ln_vision`, `Qformer`, `llm_proj`).

  Attributes:
    width: output width D (the LM width for decoder-only fusion).
    bert: the QFormer fields (a dict; `config.model.qformer.bert`).
    dtype / param_dtype: compute and storage dtypes of the projection and ln_vision.
  """
  width: int = 32
  bert: Any = None
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, frame_mask: Optional[Array] = None) -> Array:
    """`frame_mask` [B, M, T] (AnyRes `tile_mask`): queries do not attend to padded tiles."""
    if x.ndim != 5:
      raise ValueError(f"QFormerConnector expects media features [B, M, T, N, D], got {x.shape}")
    b, m, t, n, dv = x.shape
    x = layers.norm_layer("layernorm", 1e-5, self.dtype, self.param_dtype, name="ln_vision")(
        x.astype(self.dtype).reshape(b * m, t * n, dv))
    qformer = QFormer(**dict(self.bert or {}), name="qformer")
    image_mask = None
    if frame_mask is not None:
      image_mask = jnp.repeat(frame_mask.astype(bool).reshape(b * m, t), n, axis=1)
    hidden = qformer(x, image_mask=image_mask)
    out = layers.dense(self.width, [None], [P.EMBED], name="proj", dtype=self.dtype,
                       param_dtype=self.param_dtype)(hidden)
    return out.reshape(b, m, qformer.num_queries, self.width)


# ---- Stage 1: representation learning with the three objectives --------------------------------

class QFormerStage1(nn.Module):
  """The Q-Former with BLIP-2's stage-1 heads. `__call__(image_feats, text, text_mask, mode)`
  returns the hidden states of that mode's forward; `heads` computes what the losses need.

  Attributes:
    qformer: the QFormer fields (dict).
    embed_dim: the ITC embedding width (BLIP-2: 256).
    vision_norm_eps: epsilon of ln_vision (torch LayerNorm default).
  """
  qformer: Any
  embed_dim: int = 256
  vision_norm_eps: float = 1e-5
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  def setup(self):
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    self.ln_vision = layers.norm_layer("layernorm", self.vision_norm_eps, name="ln_vision", **kw)
    self.qformer_module = QFormer(**dict(self.qformer), name="qformer")
    self.vision_proj = layers.dense(self.embed_dim, [P.EMBED], [None], name="vision_proj", **kw)
    self.text_proj = layers.dense(self.embed_dim, [P.EMBED], [None], name="text_proj", **kw)
    self.itm_head = layers.dense(2, [P.EMBED], [None], name="itm_head", **kw)
    width = self.qformer_module.width
    self.lm_transform = layers.dense(width, [None], [P.EMBED], name="lm_transform", **kw)
    self.lm_norm = layers.norm_layer("layernorm", self.qformer_module.norm_eps, name="lm_norm",
                                     **kw)
    self.lm_bias = self.param("lm_bias", layers.with_axes(nn.initializers.zeros, None),
                              (self.qformer_module.vocab_size,), self.param_dtype)
    self.temp = self.param("temp", layers.with_axes(nn.initializers.constant(0.07)), (),
                           self.param_dtype)

  def __call__(self, image: Array, text: Array, text_mask: Array, mode: str = "itc",
               mask: Optional[Array] = None) -> Array:
    return self.qformer_module(self.ln_vision(image), text, text_mask, mode, mask)

  def itc_features(self, hidden: Array) -> tuple[Array, Array]:
    """Normalised query embeddings [B, Q, E] and text CLS embeddings [B, E] of an ITC forward."""
    q = self.qformer_module.num_queries
    return (losses.l2_normalize(self.vision_proj(hidden[:, :q])),
            losses.l2_normalize(self.text_proj(hidden[:, q])))

  def itm_logits(self, hidden: Array) -> Array:
    """[B, 2] matching logits: the head on each query output, averaged over queries."""
    return self.itm_head(hidden[:, :self.qformer_module.num_queries]).mean(axis=1)

  def lm_logits(self, hidden: Array) -> Array:
    """[B, L, vocab] logits of the text positions (BERT LM head, output tied to the words)."""
    h = hidden[:, self.qformer_module.num_queries:]
    h = self.lm_norm(layers.get_activation("gelu")(self.lm_transform(h)))
    word = nn.unbox(self.qformer_module.variables["params"]["token_embed"])
    return h @ word.T.astype(h.dtype) + self.lm_bias.astype(h.dtype)

  def init_all(self, image: Array, text: Array, text_mask: Array) -> Array:
    """Touches every parameter (for `init`): one forward and every head."""
    hidden = self(image, text, text_mask, "itm")
    return (sum(f.sum() for f in self.itc_features(hidden)) + self.itm_logits(hidden).sum()
            + self.lm_logits(hidden).sum() + self.temperature())

  def temperature(self) -> Array:
    """The learned ITC temperature, clamped to [0.001, 0.5] as LAVIS does."""
    return jnp.clip(self.temp, 0.001, 0.5)


def itc_similarities(image_feats: Array, text_feat: Array, temp: Array) -> tuple[Array, Array]:
  """sim_i2t [B_img, B_txt] and sim_t2i [B_txt, B_img]: the best query's cosine / temp."""
  sim = jnp.einsum("iqe,te->itq", image_feats, text_feat).max(axis=-1) / temp
  return sim, sim.T


def itc_loss(sim_i2t: Array, sim_t2i: Array, label_smoothing: float = 0.1) -> Array:
  """Symmetric cross-entropy with targets on the diagonal (label smoothing 0.1 as LAVIS)."""
  def ce(logits):
    n = logits.shape[0]
    targets = optax.smooth_labels(jax.nn.one_hot(jnp.arange(n), logits.shape[1]),
                                  label_smoothing)
    return optax.softmax_cross_entropy(logits, targets).mean()
  return (ce(sim_i2t) + ce(sim_t2i)) / 2


def hard_negatives(sim_i2t: Array, sim_t2i: Array, rng: Optional[Array]) -> tuple[Array, Array]:
  """Indices of a negative text for each image and a negative image for each text.

  Sampled from softmax(similarity) with the positive (diagonal) excluded, as LAVIS does with
  torch.multinomial; with `rng=None`, the hardest negative (argmax) instead. Needs B >= 2.
  """
  n = sim_i2t.shape[0]
  if n < 2:
    raise ValueError("hard-negative mining needs a batch of at least 2 image-text pairs")
  off = ~jnp.eye(n, dtype=bool)
  logits_i2t = jnp.where(off, jax.lax.stop_gradient(sim_i2t), -jnp.inf)
  logits_t2i = jnp.where(off, jax.lax.stop_gradient(sim_t2i), -jnp.inf)
  if rng is None:
    return jnp.argmax(logits_i2t, axis=1), jnp.argmax(logits_t2i, axis=1)
  r1, r2 = jax.random.split(rng)
  return (jax.random.categorical(r1, logits_i2t, axis=1),
          jax.random.categorical(r2, logits_t2i, axis=1))


def stage1_losses(module: QFormerStage1, params: Any, image: Array, text: Array,
                  text_mask: Array, bos_id: int, rng: Optional[Array] = None,
                  label_smoothing: float = 0.1) -> tuple[Array, dict[str, Array]]:
  """ITC + ITM + ITG (equal weights, as BLIP-2) on a batch of matched pairs.

  image [B, N, Dv] vision features; text [B, L] ids whose first token is [CLS] (replaced by
  `bos_id` for ITG); text_mask [B, L] (1 = real). Returns the total and each loss.
  """
  run = lambda method, *a: module.apply({"params": params}, *a, method=method)
  image, text, text_mask = (jnp.asarray(a) for a in (image, text, text_mask))
  b, q = image.shape[0], module.qformer["num_queries"]
  # ITC and ITG in one forward of 2B rows, each row with its mode's mask: ITC's queries and
  # text do not see each other; ITG's text is [DEC] + caption, causal, seeing every query.
  dec = text.at[:, 0].set(bos_id)
  both = run(module.__call__, jnp.concatenate([image, image]), jnp.concatenate([text, dec]),
             jnp.concatenate([text_mask, text_mask]), "itc",
             jnp.concatenate([itc_mask(q, text_mask), itg_mask(q, text_mask)]))
  image_feats, text_feat = run(QFormerStage1.itc_features, both[:b])
  temp = run(QFormerStage1.temperature)
  sim_i2t, sim_t2i = itc_similarities(image_feats, text_feat, temp)
  loss_itc = itc_loss(sim_i2t, sim_t2i, label_smoothing)
  # ITM: [pos pairs; each image with a hard-negative text; each text with a hard-negative image].
  neg_text, neg_image = hard_negatives(sim_i2t, sim_t2i, rng)
  images = jnp.concatenate([image, image, image[neg_image]], axis=0)
  texts = jnp.concatenate([text, text[neg_text], text], axis=0)
  masks = jnp.concatenate([text_mask, text_mask[neg_text], text_mask], axis=0)
  itm = run(QFormerStage1.itm_logits, run(module.__call__, images, texts, masks, "itm"))
  labels = jnp.concatenate([jnp.ones((b,), jnp.int32), jnp.zeros((2 * b,), jnp.int32)])
  loss_itm = optax.softmax_cross_entropy_with_integer_labels(itm.astype(jnp.float32),
                                                             labels).mean()
  # ITG: next-token loss on the caption after [DEC].
  logits = run(QFormerStage1.lm_logits, both[b:])
  targets = optax.smooth_labels(jax.nn.one_hot(dec[:, 1:], logits.shape[-1]), label_smoothing)
  ce = optax.softmax_cross_entropy(logits[:, :-1].astype(jnp.float32), targets)
  weights = text_mask[:, 1:].astype(jnp.float32)
  loss_itg = (ce * weights).sum() / jnp.maximum(weights.sum(), 1.0)
  total = loss_itc + loss_itm + loss_itg
  return total, {"loss_itc": loss_itc, "loss_itm": loss_itm, "loss_itg": loss_itg,
                 "itm_accuracy": jnp.mean(jnp.argmax(itm, -1) == labels)}
