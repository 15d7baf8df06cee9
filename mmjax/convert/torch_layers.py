"""Rules for the torch building blocks every converter meets: Linear, LayerNorm, Embedding,
Conv2d, torch's fused MultiheadAttention and timm's fused qkv attention.

Layouts: torch Linear weight [out, in] vs our DenseGeneral kernel [*in, *out]; attention
projections [D, heads, head_dim] (q/k/v) and [heads, head_dim, D] (out); conv OIHW vs HWIO.
Every transform is a transpose / reshape / split / concatenate, so conversions are bit-exact.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from mmjax.convert.common import Rule, identity

QKV = ("query", "key", "value")


def copy(ours: str, theirs: str) -> Rule:
  """Same array on both sides."""
  return Rule((ours,), (theirs,), identity, identity)


def scalar(ours: str, theirs: str) -> Rule:
  """A scalar parameter (logit scale/bias); a torch [1] tensor is read as a scalar too."""
  return Rule((ours,), (theirs,), lambda x: (np.reshape(x, ()),), identity)


def leading_ones(ours: str, theirs: str, extra: int) -> Rule:
  """Our array <-> the torch array with `extra` leading 1-axes (timm's [1, N, D] pos_embed)."""
  return Rule((ours,), (theirs,), lambda x: (x.reshape(x.shape[extra:]),),
              lambda x: (x.reshape((1,) * extra + x.shape),))


def linear(ours: str, theirs: str, bias: bool = True) -> list[Rule]:
  """torch Linear `theirs.weight` [out, in] (+ bias) <-> our dense `ours/kernel` [in, out]."""
  rules = [Rule((f"{ours}/kernel",), (f"{theirs}.weight",), lambda w: (w.T,), lambda k: (k.T,))]
  if bias:
    rules.append(copy(f"{ours}/bias", f"{theirs}.bias"))
  return rules


def layernorm(ours: str, theirs: str) -> list[Rule]:
  """torch LayerNorm weight/bias <-> flax LayerNorm scale/bias."""
  return [copy(f"{ours}/scale", f"{theirs}.weight"), copy(f"{ours}/bias", f"{theirs}.bias")]


def embedding(ours: str, theirs: str) -> Rule:
  """torch Embedding weight [V, D] <-> flax Embed embedding [V, D]."""
  return copy(f"{ours}/embedding", f"{theirs}.weight")


def conv(ours: str, theirs: str, bias: bool) -> list[Rule]:
  """torch Conv2d weight OIHW (+ bias) <-> flax Conv kernel HWIO."""
  rules = [Rule((f"{ours}/kernel",), (f"{theirs}.weight",),
                lambda w: (w.transpose(2, 3, 1, 0),), lambda k: (k.transpose(3, 2, 0, 1),))]
  if bias:
    rules.append(copy(f"{ours}/bias", f"{theirs}.bias"))
  return rules


def _heads_kernel(w: np.ndarray, heads: int) -> np.ndarray:
  """Linear weight [heads * head_dim, in] -> kernel [in, heads, head_dim]."""
  return w.T.reshape(w.shape[1], heads, w.shape[0] // heads)


def _heads_weight(k: np.ndarray) -> np.ndarray:
  """Inverse of _heads_kernel."""
  return k.reshape(k.shape[0], -1).T


def fused_projection(ours: str, parts: Sequence[str], weight: str, bias: str | None,
                     heads: int) -> list[Rule]:
  """One fused [len(parts) * E, in] weight (+ bias) <-> our `ours/<part>` head projections."""
  n = len(parts)

  def w_to_ours(w):
    return tuple(_heads_kernel(p, heads) for p in np.split(w, n, axis=0))

  def w_to_theirs(*kernels):
    return (np.concatenate([_heads_weight(k) for k in kernels], axis=0),)

  rules = [Rule(tuple(f"{ours}/{p}/kernel" for p in parts), (weight,), w_to_ours, w_to_theirs)]
  if bias is not None:
    rules.append(Rule(tuple(f"{ours}/{p}/bias" for p in parts), (bias,),
                      lambda b: tuple(x.reshape(heads, -1) for x in np.split(b, n)),
                      lambda *bs: (np.concatenate([x.reshape(-1) for x in bs]),)))
  return rules


def head_projection(ours: str, weight: str, bias: str | None, heads: int) -> list[Rule]:
  """A single q/k/v Linear [heads * head_dim, in] <-> our kernel [in, heads, head_dim]."""
  rules = [Rule((f"{ours}/kernel",), (weight,), lambda w: (_heads_kernel(w, heads),),
                lambda k: (_heads_weight(k),))]
  if bias is not None:
    rules.append(Rule((f"{ours}/bias",), (bias,), lambda b: (b.reshape(heads, -1),),
                      lambda b: (b.reshape(-1),)))
  return rules


def out_projection(ours: str, weight: str, bias: str | None, heads: int) -> list[Rule]:
  """Attention output Linear [D, heads * head_dim] <-> our kernel [heads, head_dim, D]."""
  rules = [Rule((f"{ours}/kernel",), (weight,),
                lambda w: (w.T.reshape(heads, w.shape[1] // heads, w.shape[0]),),
                lambda k: (k.reshape(-1, k.shape[-1]).T,))]
  if bias is not None:
    rules.append(copy(f"{ours}/bias", bias))
  return rules


def torch_mha(ours: str, theirs: str, heads: int, same_dims: bool = True) -> list[Rule]:
  """torch nn.MultiheadAttention (bias=True) <-> our Attention.

  With equal query/key/value widths torch stores one `in_proj_weight` [3E, E]; otherwise
  (kdim/vdim set, e.g. CoCa's attentional pooler) `q_proj_weight`, `k_proj_weight`,
  `v_proj_weight`, and the bias stays fused in `in_proj_bias` either way.
  """
  if same_dims:
    rules = fused_projection(ours, QKV, f"{theirs}.in_proj_weight", f"{theirs}.in_proj_bias",
                             heads)
  else:
    rules = [r for p, t in zip(QKV, "qkv")
             for r in head_projection(f"{ours}/{p}", f"{theirs}.{t}_proj_weight", None, heads)]
    rules.append(Rule(tuple(f"{ours}/{p}/bias" for p in QKV), (f"{theirs}.in_proj_bias",),
                      lambda b: tuple(x.reshape(heads, -1) for x in np.split(b, 3)),
                      lambda *bs: (np.concatenate([x.reshape(-1) for x in bs]),)))
  return rules + out_projection(f"{ours}/out", f"{theirs}.out_proj.weight",
                                f"{theirs}.out_proj.bias", heads)


def timm_attention(ours: str, theirs: str, heads: int) -> list[Rule]:
  """timm Attention (`qkv`, `proj`, qkv_bias=True) <-> our Attention."""
  return (fused_projection(ours, QKV, f"{theirs}.qkv.weight", f"{theirs}.qkv.bias", heads)
          + out_projection(f"{ours}/out", f"{theirs}.proj.weight", f"{theirs}.proj.bias", heads))
