"""Gated cross-attention dense blocks (XATTN-DENSE; Alayrac et al. 2022, §2.2 / Fig. 4).

A block inserted before a frozen LM layer lets text tokens attend to the resampled visual tokens:

    x = x + tanh(attn_gate) * MaskedCrossAttention(LayerNorm(x), media)
    x = x + tanh(ff_gate)  * FeedForward(x)            # FeedForward = LayerNorm, fc1, act, fc2

Both gates start at 0 (`gate_init`, the paper's), so at initialisation the model is exactly the
pretrained LM; `gate_values` reads how far they have opened.

Media masking (DESIGN.md, "Flamingo semantics"): `text_time = cumsum(media_locations)` counts
the `<image>` tokens at or before each position, so the `<image>` token itself already sees its
own image. In the paper's (default) mode a token attends only to media item `text_time` (the most
recent one); with `only_attend_immediate_media=False` it attends to every item <= text_time.
In both modes a token that may attend to no media (text_time == 0, i.e. before the first image,
or pointing at a padded media slot) gets a zero cross-attention output. open_flamingo zeroes
such tokens only in the immediate mode; in its "all media" mode they attend to every item.

Parameter names follow open_flamingo's `GatedCrossAttentionBlock` (helpers.py): attn.norm,
attn.to_q -> attn/query, attn.to_kv -> attn/key + attn/value (split along the output), attn.to_out
-> attn/out, attn_gate, ff.0/1/3 -> ff/norm, ff/fc1, ff/fc2, ff_gate. There are no biases.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmjax import parallel as P
from mmjax.models import layers
from mmjax.paths import path_str

Array = jax.Array


GATINGS = ("tanh", "none")


def gate_values(params) -> dict[str, list[float]]:
  """tanh of every gated block's `attn_gate` / `ff_gate` in a params tree, one value per block
  in tree order (scanned blocks stack theirs): how far each block has opened. A closed
  cross-attention gate (about 0) means the model does not read the image."""
  out: dict[str, list[float]] = {"attn_gate": [], "ff_gate": []}
  for p, leaf in jax.tree_util.tree_leaves_with_path(params):
    name = path_str(p).rsplit("/", 1)[-1]
    if name in out:
      out[name] += [float(v) for v in np.tanh(np.asarray(leaf, np.float64)).ravel()]
  return out


@dataclasses.dataclass(frozen=True)
class XAttnConfig:
  """Shape of the gated cross-attention blocks and where they sit in the LM.

  Attributes:
    num_heads: cross-attention heads.
    head_dim: per-head width (inner width = num_heads * head_dim).
    ff_mult: FFW hidden width as a multiple of the LM width.
    activation: FFW activation (open_flamingo: GELU).
    only_attend_immediate_media: the paper's masking (True) or "all previous media" (False).
    cross_attn_every_n: a block runs before LM layer i when (i + 1) % n == 0.
    cross_attn_layers: explicit LM layer indices instead (non-empty overrides every_n), e.g. (0,)
      for Table 3's "single layer" ablation.
    norm_eps: epsilon of the LayerNorms.
    gating: 'tanh' (the paper: residual branches scaled by tanh of a zero-initialised gate, so
      the model starts as the bare LM) or 'none' (branches added ungated: Table 3's "w/o tanh
      gating" ablation, which perturbs the frozen LM from the first step).
    gate_init: the initial alpha of both tanh gates. 0 (the paper): the model starts as the
      bare LM. But there the branch's weights get no gradient (it is scaled by tanh(alpha)),
      and alpha's comes only from the branch's random initial output, mostly noise at small
      batches; with a frozen LM the cross-attention gates can then stay closed for over a
      thousand steps (experiments/results/recipe_grounding.md).
  """
  num_heads: int = 8
  head_dim: int = 64
  ff_mult: int = 4
  activation: str = "gelu"
  only_attend_immediate_media: bool = True
  cross_attn_every_n: int = 1
  cross_attn_layers: tuple[int, ...] = ()
  norm_eps: float = 1e-5
  gating: str = "tanh"
  gate_init: float = 0.0

  def __post_init__(self):
    if self.gating not in GATINGS:
      raise ValueError(f"unknown xattn.gating {self.gating!r}; choose one of {GATINGS}")

  def gated_layers(self, depth: int) -> tuple[int, ...]:
    """Indices of the LM layers that a gated block precedes, validated against `depth`."""
    if self.cross_attn_layers:
      indices = tuple(sorted(set(int(i) for i in self.cross_attn_layers)))
      if indices[0] < 0 or indices[-1] >= depth:
        raise ValueError(f"xattn.cross_attn_layers {self.cross_attn_layers} must lie in "
                         f"[0, {depth}) (the LM has {depth} layers)")
      return indices
    n = self.cross_attn_every_n
    if n < 1 or n > depth:
      raise ValueError(f"xattn.cross_attn_every_n must be in [1, {depth}], got {n}")
    return tuple(i for i in range(depth) if (i + 1) % n == 0)


def text_time(media_locations: Array, offset: Optional[Array] = None) -> Array:
  """[B, T] int32: number of `<image>` tokens at or before each position (+ `offset` [B])."""
  count = jnp.cumsum(media_locations.astype(jnp.int32), axis=-1)
  return count if offset is None else count + offset[:, None]


def media_attention_mask(text_times: Array, media_mask: Array, latents_per_media: int,
                         only_attend_immediate_media: bool = True) -> Array:
  """[B, T, M * n] bool: which resampled media tokens each text token may attend to.

  Args:
    text_times: [B, T] from `text_time` (1-based index of the most recent media item, 0: none).
    media_mask: [B, M] True for real media slots.
    latents_per_media: n, the resampler's latents per media item.
    only_attend_immediate_media: attend to item == text_time only (else every item <= it).
  """
  media_time = jnp.arange(media_mask.shape[1], dtype=jnp.int32) + 1  # [M], 1-based like text_time
  tt = text_times[:, :, None]
  allowed = (tt == media_time) if only_attend_immediate_media else (tt >= media_time)
  allowed = allowed & media_mask[:, None, :]
  return jnp.repeat(allowed, latents_per_media, axis=-1)


class MaskedCrossAttention(nn.Module):
  """Text queries attend to the (flattened) media tokens under `media_attention_mask`.

  `__call__` returns the output and the media keys/values, which a KV cache keeps so that
  decoding projects the media only once (at prefill).
  """
  num_heads: int
  head_dim: int
  only_attend_immediate_media: bool = True
  norm_eps: float = 1e-5
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, text_times: Array, media_mask: Array,
               media: Optional[Array] = None, media_kv: Optional[tuple[Array, Array]] = None
               ) -> tuple[Array, tuple[Array, Array]]:
    """x [B, T, D]; media [B, M, n, Dv] (or cached `media_kv`, each [B, M * n, N, H])."""
    kw = dict(use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype)
    heads = (self.num_heads, self.head_dim)
    y = layers.norm_layer("layernorm", self.norm_eps, self.dtype, self.param_dtype,
                          name="norm")(x)
    q = layers.dense(heads, [P.EMBED], [P.HEADS, P.KV], name="query", **kw)(y)
    # Projecting the media is skipped only at apply time with a cache; init always has media.
    if media is not None:
      b, m, n, dv = media.shape
      flat = media.reshape(b, m * n, dv).astype(self.dtype)
      k = layers.dense(heads, [P.EMBED], [P.HEADS, P.KV], name="key", **kw)(flat)
      v = layers.dense(heads, [P.EMBED], [P.HEADS, P.KV], name="value", **kw)(flat)
    elif media_kv is not None:
      k, v = media_kv
    else:
      raise ValueError(f"{self.name}: cross-attention needs `media` or cached media keys/values")
    num_media = media_mask.shape[1]
    if k.shape[1] % num_media:
      raise ValueError(f"{self.name}: {k.shape[1]} media tokens do not split into "
                       f"{num_media} media items")
    allowed = media_attention_mask(text_times, media_mask, k.shape[1] // num_media,
                                   self.only_attend_immediate_media)
    out = layers.attention(q, k, v, mask=allowed[:, None])
    # A row with no allowed key would get a uniform average of all media: zero it instead.
    out = out * jnp.any(allowed, axis=-1)[:, :, None, None].astype(out.dtype)
    out = layers.constrain(out, P.BATCH, P.LENGTH, P.HEADS, P.KV)
    out = layers.dense(x.shape[-1], [P.HEADS, P.KV], [P.EMBED], axis=(-2, -1), name="out",
                       **kw)(out)
    return out, (k, v)


class GatedCrossAttentionBlock(nn.Module):
  """XATTN-DENSE: tanh-gated masked cross-attention, then a tanh-gated FFW (both residual).

  `__call__(x, text_times, media_mask, media=None, cache=None) -> (x, cache)`: with a cache
  (a dict, possibly empty at prefill) the media keys/values are returned in it for decoding.
  """
  config: XAttnConfig
  dtype: layers.Dtype = jnp.float32
  param_dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, text_times: Array, media_mask: Array,
               media: Optional[Array] = None, cache: Optional[dict] = None
               ) -> tuple[Array, Optional[dict]]:
    c = self.config
    if c.gating == "tanh":
      gate_init = layers.with_axes(nn.initializers.constant(c.gate_init), None)
      # Shape [1] like open_flamingo's nn.Parameter(torch.tensor([0.0])).
      attn_gate = jnp.tanh(self.param("attn_gate", gate_init, (1,), self.param_dtype))
      ff_gate = jnp.tanh(self.param("ff_gate", gate_init, (1,), self.param_dtype))
    else:  # No parameters at all: the ablation has nothing to learn here.
      attn_gate = ff_gate = jnp.ones((1,), self.param_dtype)
    media_kv = (cache["k"], cache["v"]) if cache and media is None else None
    attn_out, (k, v) = MaskedCrossAttention(
        c.num_heads, c.head_dim, c.only_attend_immediate_media, c.norm_eps, self.dtype,
        self.param_dtype, name="attn")(x, text_times, media_mask, media, media_kv)
    x = x + attn_gate.astype(self.dtype) * attn_out
    ff_out = layers.FeedForward(c.ff_mult * x.shape[-1], c.activation, use_bias=False,
                                norm_eps=c.norm_eps, dtype=self.dtype,
                                param_dtype=self.param_dtype, name="ff")(x)
    x = x + ff_gate.astype(self.dtype) * ff_out
    return x, (None if cache is None else {"k": k, "v": v})
