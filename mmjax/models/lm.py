"""Decoder-only language model with a KV cache (GPT-2 and Llama families), optionally with gated
cross-attention blocks interleaved (the Flamingo LM).

    tokens -> embed (+ learned positions) -> blocks -> final norm -> logits (tied or untied)
    block: x += attn(norm(x)) (causal, rotary or not, MHA or GQA); x += mlp(norm(x))

GPT-2: layernorm, learned positions, biases, gelu_tanh MLP, tied embeddings.
Llama / SmolLM2: rmsnorm, rotary positions, grouped-query attention, swiglu, no biases.

One module does full-sequence training, prefill and one-token decode: pass `cache` (from
`init_cache`) and it returns `(logits, new_cache)`. The cache holds, per layer, keys and values
for `max_len` positions plus a per-row write index, so rows may have different lengths (right-
padded prompts: prefill, then set `cache['index']` to the prompt lengths).

Layer layout (DESIGN.md): a gated XATTN-DENSE block runs before LM layer i when
`(i + 1) % cross_attn_every_n == 0` (or for explicit indices). With scanning, layers form
`groups` of n (blocks block_0..block_{n-1}, the gated block before the last) scanned over
depth // n, then a scanned remainder `blocks`. Without cross-attention the LM is one scanned
stack `blocks` [depth, ...]; `flamingo.lm_params_to_flamingo` maps between the layouts.

HF mapping (for the converters): embed_tokens -> embed, layers.i.input_layernorm -> ln1,
self_attn.{q,k,v,o}_proj -> attn/{query,key,value,out}, post_attention_layernorm -> ln2,
mlp.{up,gate,down}_proj -> mlp/{fc1,gate,fc2}, norm -> final_norm, lm_head -> unembed.
GPT-2: wte -> embed, wpe -> pos_embed, h.i.ln_1 -> ln1, attn.c_attn (split) -> query/key/value,
attn.c_proj -> out, ln_2 -> ln2, mlp.c_fc -> fc1, mlp.c_proj -> fc2, ln_f -> final_norm.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax import losses
from mmjax import parallel as P
from mmjax.models import family as family_lib
from mmjax.models import layers
from mmjax.models import splice as splice_lib
from mmjax.models import xattn as xattn_lib

Array = jax.Array
Cache = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
  """Architecture of the decoder LM (the fields of `config.model` / `config.model.lm`).

  Attributes:
    vocab_size: rows of the (pretrained) embedding table.
    width: residual-stream width.
    depth: number of decoder layers.
    num_heads: query heads.
    num_kv_heads: key/value heads (grouped-query attention); None: num_heads.
    head_dim: per-head width; None: width // num_heads.
    mlp_dim: hidden width of the MLP; None: 4 * width.
    activation: MLP activation ('gelu_tanh' GPT-2, 'swiglu' Llama, any layers.ACTIVATIONS name).
    norm: 'layernorm' (GPT-2) or 'rmsnorm' (Llama).
    norm_eps: epsilon of every norm.
    positions: 'learned' (absolute table of max_len rows) or 'rotary'.
    rope_theta: rotary base frequency.
    max_len: longest sequence (size of the learned table; upper bound for caches).
    tie_embeddings: logits = x @ embed^T (else a separate `unembed` matrix).
    qkv_bias / out_bias / mlp_bias: biases of the attention and MLP projections.
    num_new_tokens: extra tokens (Flamingo's <image>, <|endofchunk|>, <PAD>) with ids
      vocab_size.. in a separate `new_embed` table (and `new_unembed` output rows when untied),
      so the pretrained matrices can stay frozen while these train.
    dropout_rate: dropout on the residual branches and the embeddings when training.
    scan / remat: scan over layers, and the remat policy name (layers.REMAT_POLICIES).
    dtype / param_dtype: compute and storage dtype names ('auto' compute: bf16 on GPU/TPU).
    attention_impl: 'auto' (cuDNN flash attention on GPU where it applies, else XLA), 'xla' or
      'cudnn' (layers.attention_implementation).
  """
  vocab_size: int
  width: int
  depth: int
  num_heads: int
  num_kv_heads: Optional[int] = None
  head_dim: Optional[int] = None
  mlp_dim: Optional[int] = None
  activation: str = "gelu_tanh"
  norm: str = "layernorm"
  norm_eps: float = 1e-5
  positions: str = "learned"
  rope_theta: float = 10000.0
  max_len: int = 1024
  tie_embeddings: bool = True
  qkv_bias: bool = False
  out_bias: bool = False
  mlp_bias: bool = False
  num_new_tokens: int = 0
  dropout_rate: float = 0.0
  scan: bool = True
  remat: str = "none"
  dtype: str = "float32"
  param_dtype: str = "float32"
  attention_impl: str = "auto"

  def __post_init__(self):
    if self.positions not in ("learned", "rotary"):
      raise ValueError(f"lm.positions must be 'learned' or 'rotary', got {self.positions!r}")
    if self.head_dim is None and self.width % self.num_heads:
      raise ValueError(f"lm.width {self.width} is not divisible by lm.num_heads "
                       f"{self.num_heads}; set lm.head_dim")
    if self.num_heads % self.kv_heads:
      raise ValueError(f"lm.num_heads {self.num_heads} is not a multiple of lm.num_kv_heads "
                       f"{self.kv_heads}")
    if self.attention_impl not in layers.ATTENTION_IMPLS:
      raise ValueError(f"lm.attention_impl {self.attention_impl!r} is not one of "
                       f"{layers.ATTENTION_IMPLS}")
    if self.remat not in layers.REMAT_POLICIES:
      raise ValueError(f"lm.remat {self.remat!r} is not one of {sorted(layers.REMAT_POLICIES)}")

  @property
  def kv_heads(self) -> int:
    """Key/value heads actually used."""
    return self.num_kv_heads or self.num_heads

  @property
  def dims_per_head(self) -> int:
    """Per-head width actually used."""
    return self.head_dim or self.width // self.num_heads

  @property
  def total_vocab(self) -> int:
    """Logit columns: the pretrained vocabulary plus the new tokens."""
    return self.vocab_size + self.num_new_tokens


def config_from_dict(cls: type, fields: Any, where: str) -> Any:
  """`cls(**fields)` for a frozen dataclass, naming unknown keys (tuples for list values)."""
  fields = dict(fields)
  known = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(fields) - known)
  if unknown:
    raise ValueError(f"unknown {where} field(s) {unknown}; known: {sorted(known)}")
  return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})


# ---- Layer plan: which layers are scanned together, where gated blocks sit ---------------------

@dataclasses.dataclass(frozen=True)
class Segment:
  """A run of `repeat` identical units, scanned as one module called `name`.

  A unit is one decoder block (`group_size == 0`), or a group of `group_size` blocks with a gated
  cross-attention block before the last one. Unit r covers LM layers
  start + r * max(group_size, 1) ... (+ group_size - 1).
  """
  name: str
  start: int
  repeat: int
  group_size: int = 0


def layer_plan(depth: int, xattn: Optional[xattn_lib.XAttnConfig]) -> tuple[Segment, ...]:
  """The segments that cover `depth` layers (DESIGN.md's placement of the gated blocks)."""
  if xattn is None:
    return (Segment("blocks", 0, depth),)
  if not xattn.cross_attn_layers:
    n = xattn.cross_attn_every_n
    xattn.gated_layers(depth)  # validates n
    plan = [Segment("groups", 0, depth // n, n)]
    if depth % n:
      plan.append(Segment("blocks", depth - depth % n, depth % n))
    return tuple(plan)
  # Explicit indices: plain runs between them, a one-block group at each index.
  plan, start = [], 0
  for i in xattn.gated_layers(depth):
    if i > start:
      plan.append(Segment(f"blocks_{start}", start, i - start))
    plan.append(Segment(f"xattn_{i}", i, 1, 1))
    start = i + 1
  if start < depth:
    plan.append(Segment(f"blocks_{start}", start, depth - start))
  return tuple(plan)


def segment_layers(segment: Segment) -> list[list[int]]:
  """LM layer indices per unit of `segment` ([[i], ...] for plain runs)."""
  size = max(segment.group_size, 1)
  return [[segment.start + r * size + j for j in range(size)] for r in range(segment.repeat)]


# ---- Modules -----------------------------------------------------------------------------------

def _write(cache: Array, update: Array, start: Array) -> Array:
  """Writes update [B, T, ...] into cache [B, S, ...] at per-row offsets start [B]."""
  return jax.vmap(lambda c, u, i: jax.lax.dynamic_update_slice_in_dim(c, u, i, axis=0))(
      cache, update.astype(cache.dtype), start)


class CausalSelfAttention(layers.Attention):
  """Causal self-attention with optional rotary positions and a KV cache.

  `__call__(x, positions, cache=None) -> (out, cache)`. Without a cache: causal attention over
  x. With a cache {'k', 'v'} [B, S, K, H]: the new keys/values are written at `positions` and the
  queries attend to every cached position <= their own, which covers prefill (T > 1) and decode
  (T = 1) alike. Callers keep positions + T <= S (XLA clamps out-of-range writes).

  Attributes (besides layers.Attention's):
    rotary: apply rotary embeddings to q and k.
    rope_theta: rotary base frequency.
  """
  rotary: bool = False
  rope_theta: float = 10000.0

  @nn.compact
  def __call__(self, x: Array, positions: Array,  # pytype: disable=signature-mismatch
               cache: Optional[Cache] = None) -> tuple[Array, Optional[Cache]]:
    q, k, v = self.project_qkv(x, x)
    if self.rotary:
      q = layers.rotary_embedding(q, positions, self.rope_theta)
      k = layers.rotary_embedding(k, positions, self.rope_theta)
    if cache is None:
      out = layers.attention(q, k, v, is_causal=True, implementation=self.implementation)
      return self.project_out(out, x.shape[-1]), None
    k = _write(cache["k"], k, positions[:, 0])
    v = _write(cache["v"], v, positions[:, 0])
    key_pos = jnp.arange(k.shape[1], dtype=positions.dtype)
    mask = key_pos[None, None, None, :] <= positions[:, None, :, None]  # [B, 1, T, S]
    out = layers.attention(q, k, v, mask=mask, implementation=self.implementation)
    return self.project_out(out, x.shape[-1]), {"k": k, "v": v}


class DecoderBlock(nn.Module):
  """Pre-norm decoder layer: x += attn(ln1(x)); x += mlp(ln2(x)).

  `__call__(x, cache, ctx) -> (x, cache)` so that it scans with per-layer caches; `ctx` holds the
  broadcast inputs (`positions` [B, T]).
  """
  config: DecoderConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: Array, cache: Optional[Cache], ctx: dict[str, Any]
               ) -> tuple[Array, Optional[Cache]]:
    c = self.config
    dtype, param_dtype = layers.dtype_of(c.dtype), layers.dtype_of(c.param_dtype)
    norm = lambda name: layers.norm_layer(c.norm, c.norm_eps, dtype, param_dtype, name=name)
    drop = nn.Dropout(c.dropout_rate, deterministic=self.deterministic)
    x = layers.constrain(x, P.BATCH, P.LENGTH, P.EMBED)
    h, cache = CausalSelfAttention(
        c.num_heads, head_dim=c.dims_per_head, num_kv_heads=c.kv_heads, qkv_bias=c.qkv_bias,
        out_bias=c.out_bias, dtype=dtype, param_dtype=param_dtype,
        implementation=c.attention_impl, rotary=c.positions == "rotary", rope_theta=c.rope_theta, name="attn")(
            norm("ln1")(x), ctx["positions"], cache)
    x = x + drop(h)
    h = layers.Mlp(c.mlp_dim or 4 * c.width, c.activation, use_bias=c.mlp_bias, dtype=dtype,
                   param_dtype=param_dtype, name="mlp")(norm("ln2")(x))
    return x + drop(h), cache


class GatedGroup(nn.Module):
  """`size` decoder blocks with a gated XATTN-DENSE block before the last: one scan unit.

  `ctx` also holds `text_times` [B, T], `media_mask` [B, M] and `media` [B, M, n, Dv] (None when
  decoding from a cache that holds the media keys/values).
  """
  config: DecoderConfig
  xattn: xattn_lib.XAttnConfig
  size: int
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: Array, cache: Optional[Cache], ctx: dict[str, Any]
               ) -> tuple[Array, Optional[Cache]]:
    c = self.config
    new_cache = {}
    for j in range(self.size):
      if j == self.size - 1:
        x, new_cache["gated"] = xattn_lib.GatedCrossAttentionBlock(
            self.xattn, layers.dtype_of(c.dtype), layers.dtype_of(c.param_dtype), name="gated")(
                x, ctx["text_times"], ctx["media_mask"], ctx["media"],
                None if cache is None else cache.get("gated", {}))
      x, new_cache[f"block_{j}"] = DecoderBlock(c, self.deterministic, name=f"block_{j}")(
          x, None if cache is None else cache[f"block_{j}"], ctx)
    return x, (None if cache is None else new_cache)


def _run_segment(segment: Segment, config: DecoderConfig, xattn: Optional[xattn_lib.XAttnConfig],
                 deterministic: bool, x: Array, cache: Optional[Cache], ctx: dict[str, Any]
                 ) -> tuple[Array, Optional[Cache]]:
  """Applies a segment (scanned, or unrolled as name_0, name_1, ...) inside a compact method.

  Per-unit caches are stacked on a leading axis in both cases, so the cache layout does not
  depend on `scan`.
  """
  if segment.group_size:
    cls, kwargs = GatedGroup, dict(config=config, xattn=xattn, size=segment.group_size,
                                   deterministic=deterministic)
  else:
    cls, kwargs = DecoderBlock, dict(config=config, deterministic=deterministic)
  if config.remat != "none":
    cls = nn.remat(cls, policy=layers.REMAT_POLICIES[config.remat], prevent_cse=not config.scan)
  if config.scan:
    scanned = nn.scan(
        cls, variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True},
        in_axes=(0, nn.broadcast), out_axes=0, length=segment.repeat,
        metadata_params={nn.PARTITION_NAME: P.LAYERS})(**kwargs, name=segment.name)
    return scanned(x, cache, ctx)
  outs = []
  for r in range(segment.repeat):
    unit_cache = None if cache is None else jax.tree.map(lambda a, r=r: a[r], cache)
    x, unit_cache = cls(**kwargs, name=f"{segment.name}_{r}")(x, unit_cache, ctx)
    outs.append(unit_cache)
  if cache is None:
    return x, None
  return x, jax.tree.map(lambda *a: jnp.stack(a), *outs)


class DecoderLM(nn.Module):
  """The decoder LM. `__call__(tokens, ...)` -> logits [B, T, total_vocab] (or (logits, cache)).

  Attributes:
    config: the architecture.
    xattn: gated cross-attention blocks (Flamingo); None for a plain LM.
  """
  config: DecoderConfig
  xattn: Optional[xattn_lib.XAttnConfig] = None

  def plan(self) -> tuple[Segment, ...]:
    """The layer segments of this LM."""
    return layer_plan(self.config.depth, self.xattn)

  @nn.compact
  def __call__(self, tokens: Array, train: bool = False, *, media: Optional[Array] = None,
               media_mask: Optional[Array] = None, media_locations: Optional[Array] = None,
               cache: Optional[Cache] = None, visual: Optional[Array] = None,
               expanded: bool = False) -> Array | tuple[Array, Cache]:
    """Logits for `tokens` [B, T].

    Args:
      tokens: int token ids; ids >= vocab_size index the new-token table.
      train: enables dropout.
      media: [B, M, n, Dv] resampled visual tokens (LMs with xattn; None when decoding from a
        cache filled by a prefill that had media).
      media_mask: [B, M] real media slots (default: all; from the cache when decoding).
      media_locations: [B, T] bool, True at `<image>` tokens (default: none).
      cache: from `init_cache`; then returns (logits, updated cache).
      visual: [B, M, n, D] visual tokens to splice after each `<image>` (decoder-only fusion,
        mmjax/models/splice.py; LMs without xattn). The sequence runs expanded to
        L + M * n positions and the logits come back at the L text positions.
      expanded: with `visual`, return the logits of every expanded position instead.
    """
    c = self.config
    dtype, param_dtype = layers.dtype_of(c.dtype), layers.dtype_of(c.param_dtype)
    tables = self._tables(param_dtype)
    x = self._embed(tokens, tables, dtype)
    lay = None
    if visual is not None:
      if self.xattn is not None:
        raise ValueError("`visual` splices tokens into a decoder-only LM; this LM fuses media "
                         "by gated cross-attention (pass `media`)")
      if media_locations is None:
        raise ValueError("decoder-only fusion needs media_locations (the <image> tokens)")
      if media_mask is None:
        media_mask = jnp.ones(visual.shape[:2], jnp.bool_)
      lay = splice_lib.layout(media_locations, media_mask, visual.shape[2])
      x = splice_lib.splice(x, visual.astype(dtype), lay)
    b, t = x.shape[:2]
    if cache is None:
      if t > c.max_len:
        raise ValueError(f"sequence length {t} exceeds lm.max_len {c.max_len}"
                         + ("" if lay is None else f" (text {tokens.shape[1]} + visual tokens "
                            f"{t - tokens.shape[1]})"))
      index = jnp.zeros((b,), jnp.int32)
    else:
      index = cache["index"]
    positions = index[:, None] + jnp.arange(t, dtype=jnp.int32)[None]
    if c.positions == "learned":
      pos_embed = self.param("pos_embed", layers.with_axes(layers.default_embed_init, None,
                                                           P.EMBED),
                             (c.max_len, c.width), param_dtype)
      x = x + jnp.take(pos_embed, positions, axis=0).astype(dtype)
    x = nn.Dropout(c.dropout_rate, deterministic=not train)(x)

    ctx = {"positions": positions}
    new_cache = {}
    if self.xattn is not None:
      ctx.update(self._media_context(b, t, media, media_mask, media_locations, cache))
      new_cache.update(text_time=ctx["text_times"][:, -1], media_mask=ctx["media_mask"])
    layer_caches = {}
    for segment in self.plan():
      x, layer_caches[segment.name] = _run_segment(
          segment, c, self.xattn, not train, x,
          None if cache is None else cache["layers"].get(segment.name), ctx)
    x = layers.norm_layer(c.norm, c.norm_eps, dtype, param_dtype, name="final_norm")(x)
    logits = self._logits(x, tables, dtype, param_dtype)
    if lay is not None and not expanded:
      logits = splice_lib.gather(logits, lay)
    if cache is None:
      return logits
    new_cache.update(index=index + t, layers=layer_caches)
    return logits, new_cache

  def _tables(self, param_dtype: Any) -> dict[str, Array]:
    """The embedding tables: `embed` [V, D] and, with new tokens, `new_embed` [N_new, D]."""
    c = self.config
    init = layers.with_axes(layers.default_embed_init, P.VOCAB, P.EMBED)
    tables = {"embed": self.param("embed", init, (c.vocab_size, c.width), param_dtype)}
    if c.num_new_tokens:
      # Its own (unsharded) parameter so that it trains while `embed` stays frozen.
      init = layers.with_axes(layers.default_embed_init, None, P.EMBED)
      tables["new_embed"] = self.param("new_embed", init, (c.num_new_tokens, c.width),
                                       param_dtype)
    return tables

  def _embed(self, tokens: Array, tables: dict[str, Array], dtype: Any) -> Array:
    """Token embeddings; ids >= vocab_size come from the `new_embed` table."""
    c = self.config
    x = jnp.take(tables["embed"], jnp.clip(tokens, 0, c.vocab_size - 1), axis=0)
    if c.num_new_tokens:
      new_ids = jnp.clip(tokens - c.vocab_size, 0, c.num_new_tokens - 1)
      x = jnp.where((tokens >= c.vocab_size)[..., None],
                    jnp.take(tables["new_embed"], new_ids, axis=0), x)
    return x.astype(dtype)

  def _logits(self, x: Array, tables: dict[str, Array], dtype: Any, param_dtype: Any) -> Array:
    """[B, T, vocab_size + num_new_tokens] logits, tied to the embeddings or not."""
    c = self.config
    if c.tie_embeddings:
      unembed = tables["embed"].T
    else:
      unembed = self.param("unembed", layers.with_axes(layers.default_kernel_init, P.EMBED,
                                                       P.VOCAB),
                           (c.width, c.vocab_size), param_dtype)
    if c.num_new_tokens:
      if c.tie_embeddings:
        new_unembed = tables["new_embed"].T
      else:
        new_unembed = self.param("new_unembed", layers.with_axes(layers.default_kernel_init,
                                                                 P.EMBED, None),
                                 (c.width, c.num_new_tokens), param_dtype)
      unembed = jnp.concatenate([unembed, new_unembed], axis=1)
    logits = jnp.einsum("btd,dv->btv", x, unembed.astype(dtype))
    return layers.constrain(logits, P.BATCH, P.LENGTH, P.VOCAB)

  def _media_context(self, b: int, t: int, media: Optional[Array], media_mask: Optional[Array],
                     media_locations: Optional[Array], cache: Optional[Cache]) -> dict[str, Any]:
    """text_times, media_mask and media for the gated blocks (see xattn.py for the masking)."""
    if media is None and (cache is None or "media_mask" not in cache):
      raise ValueError("an LM with gated cross-attention needs `media` (or a cache filled by a "
                       "prefill with media)")
    if media_mask is None:
      media_mask = (cache["media_mask"] if media is None else
                    jnp.ones(media.shape[:2], jnp.bool_))
    if media_locations is None:
      media_locations = jnp.zeros((b, t), jnp.bool_)
    offset = None if cache is None else cache["text_time"]
    return {"text_times": xattn_lib.text_time(media_locations, offset),
            "media_mask": media_mask.astype(jnp.bool_), "media": media}


def init_cache(config: DecoderConfig, xattn: Optional[xattn_lib.XAttnConfig], batch_size: int,
               max_len: int) -> Cache:
  """An empty KV cache for `max_len` positions (prefill and decode with `DecoderLM`).

  Layout: {'index': [B] next write position, 'layers': {segment: per-unit caches stacked on a
  leading axis}}; an LM with gated blocks adds 'text_time' [B] (the <image> count so far), and
  its prefill adds 'media_mask' and each gated block's media keys/values.
  """
  if max_len > config.max_len:
    raise ValueError(f"cache length {max_len} exceeds lm.max_len {config.max_len}")
  dtype = layers.dtype_of(config.dtype)
  kv = lambda n: {name: jnp.zeros((n, batch_size, max_len, config.kv_heads,
                                   config.dims_per_head), dtype) for name in ("k", "v")}
  caches = {}
  for segment in layer_plan(config.depth, xattn):
    if segment.group_size:
      caches[segment.name] = {f"block_{j}": kv(segment.repeat)
                              for j in range(segment.group_size)}
    else:
      caches[segment.name] = kv(segment.repeat)
  cache = {"index": jnp.zeros((batch_size,), jnp.int32), "layers": caches}
  if xattn is not None:
    cache["text_time"] = jnp.zeros((batch_size,), jnp.int32)
  return cache


# ---- Model family ------------------------------------------------------------------------------

def decoder_config(model_config: Any) -> DecoderConfig:
  """DecoderConfig from `config.model` (family 'lm') or `config.model.lm` (Flamingo)."""
  fields = {k: v for k, v in dict(model_config).items() if k != "family"}
  return config_from_dict(DecoderConfig, fields, "lm")


@family_lib.register("lm")
class LMFamily(family_lib.ModelFamily):
  """Text-only decoder LM: next-token loss, logits, and the KV-cache decode API.

  Decode API (what generation builds greedy / beam / sampling on):
    cache = family.init_cache(batch_size, max_len)
    logits, cache = family.prefill(params, {"tokens": tokens}, cache, lengths=None)
    logits, cache = family.decode_step(params, next_tokens[:, None], cache)
  """
  batch_keys = ("tokens", "loss_mask")

  def make_module(self, config: Any) -> DecoderLM:
    self.lm_config = decoder_config(config)
    return DecoderLM(self.lm_config)

  def module_inputs(self, batch: family_lib.Batch) -> dict[str, Array]:
    return {"tokens": batch["tokens"]}

  def dummy_batch(self, batch_size: int) -> dict[str, Array]:
    # Parameter shapes do not depend on the length; a short one keeps init cheap.
    length = min(16, self.lm_config.max_len)
    return {"tokens": jnp.zeros((batch_size, length), jnp.int32),
            "loss_mask": jnp.ones((batch_size, length), jnp.float32)}

  def predict_logits(self, params: Any, batch: family_lib.Batch) -> Array:
    """[B, L, vocab] next-token logits of a full sequence."""
    return self.apply(params, batch)

  def loss(self, params: Any, batch: family_lib.Batch, rng: Optional[Array] = None,
           train: bool = True) -> tuple[Array, family_lib.Metrics]:
    logits = self.apply(params, batch, rng, train=train)
    return losses.next_token_loss(logits, batch["tokens"], batch["loss_mask"])

  def init_cache(self, batch_size: int, max_len: int) -> Cache:
    """An empty KV cache for `max_len` positions."""
    return init_cache(self.lm_config, None, batch_size, max_len)

  def prefill(self, params: Any, batch: family_lib.Batch, cache: Cache,
              lengths: Optional[Array] = None) -> tuple[Array, Cache]:
    """Runs a (right-padded) prompt `batch['tokens']` [B, T] into the cache; logits [B, T, V].

    The same signature as Flamingo's prefill (a batch dict), so generation serves both.
    With `lengths` [B], the next decode step of row b writes at position lengths[b] (over the
    padding), so rows of different prompt lengths decode together.
    """
    logits, cache = self.module.apply({"params": params}, batch["tokens"], cache=cache)
    return logits, set_cache_lengths(cache, lengths)

  def decode_step(self, params: Any, tokens: Array, cache: Cache) -> tuple[Array, Cache]:
    """One step: tokens [B, 1] -> logits [B, 1, vocab] and the advanced cache."""
    return self.module.apply({"params": params}, tokens, cache=cache)


def set_cache_lengths(cache: Cache, lengths: Optional[Array]) -> Cache:
  """The cache with its write index moved to `lengths` (no-op for None)."""
  if lengths is None:
    return cache
  return dict(cache, index=jnp.asarray(lengths, jnp.int32))
