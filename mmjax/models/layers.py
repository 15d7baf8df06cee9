"""Shared transformer layers: projections, attention, MLP, norms and the scanned layer stack.

Every parameter carries logical axis names from `mmjax.parallel`, every layer takes a compute
`dtype` and a `param_dtype`, and attention goes through `jax.nn.dot_product_attention` (XLA on
CPU/TPU, cuDNN flash attention on GPU when the shapes allow: attention_implementation). A
compute dtype of 'auto' is bfloat16 on GPU/TPU and float32 on CPU (auto_compute_dtype).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mmjax import parallel as P

Array = jax.Array
Dtype = Any

# torch's nn.Linear / nn.MultiheadAttention inits are not what we train with; these follow
# big_vision / open_clip's *intent* (xavier for projections, small normal for embeddings).
default_kernel_init = nn.initializers.xavier_uniform()
default_embed_init = nn.initializers.normal(stddev=0.02)


def with_axes(init: Callable[..., Array], *axes: Optional[str]) -> Callable[..., Array]:
  """An initializer whose parameter is annotated with logical axis names."""
  return nn.with_logical_partitioning(init, axes)


def constrain(x: Array, *axes: Optional[str]) -> Array:
  """Activation sharding hint by logical names (a no-op outside a mesh / rules context)."""
  return nn.with_logical_constraint(x, axes)


# ---- Activations ------------------------------------------------------------------------------

def quick_gelu(x: Array) -> Array:
  """OpenAI CLIP's sigmoid approximation of GELU."""
  return x * jax.nn.sigmoid(1.702 * x)


def squared_relu(x: Array) -> Array:
  """Squared ReLU (So et al. 2021), the Perceiver resampler's FFW activation in Flamingo."""
  return jnp.square(jax.nn.relu(x))


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),  # torch nn.GELU()
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),  # GPT-2 "gelu_new"
    "quick_gelu": quick_gelu,
    "relu": jax.nn.relu,
    "squared_relu": squared_relu,
    "silu": jax.nn.silu,
}
GATED = {"swiglu": "silu", "geglu": "gelu_tanh"}  # gated variants -> activation of the gate


def get_activation(name: str) -> Callable[[Array], Array]:
  """Activation by config name; gated names return the gate's activation."""
  name = GATED.get(name, name)
  if name not in ACTIVATIONS:
    raise ValueError(f"unknown activation {name!r}; choose one of "
                     f"{sorted(ACTIVATIONS) + sorted(GATED)}")
  return ACTIVATIONS[name]


# ---- Norms ------------------------------------------------------------------------------------

def norm_layer(kind: str = "layernorm", eps: float = 1e-5, dtype: Dtype = jnp.float32,
               param_dtype: Dtype = jnp.float32, name: Optional[str] = None,
               use_bias: bool = True) -> nn.Module:
  """LayerNorm or RMSNorm with logically-annotated (replicated) scale/bias."""
  if kind == "layernorm":
    return nn.LayerNorm(epsilon=eps, dtype=dtype, param_dtype=param_dtype, use_bias=use_bias,
                        scale_init=with_axes(nn.initializers.ones, P.NORM),
                        bias_init=with_axes(nn.initializers.zeros, P.NORM), name=name)
  if kind == "rmsnorm":
    return nn.RMSNorm(epsilon=eps, dtype=dtype, param_dtype=param_dtype,
                      scale_init=with_axes(nn.initializers.ones, P.NORM), name=name)
  raise ValueError(f"unknown norm {kind!r}; choose 'layernorm' or 'rmsnorm'")


# ---- Projections ------------------------------------------------------------------------------

class DenseGeneral(nn.Module):
  """y = x . W (+ b) contracting `axis` of x with W's leading axes; W is [*in, *features].

  Like nn.DenseGeneral, but the initializer sees the flattened (fan_in, fan_out) shape and the
  *reshaped* kernel is what gets its logical axis names (flax boxes the flat kernel, which breaks
  sharding constraints when parameters are created under a mesh).
  """
  features: tuple[int, ...]
  axis: tuple[int, ...] = (-1,)
  in_axes: tuple[Optional[str], ...] = ()
  out_axes: tuple[Optional[str], ...] = ()
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Callable[..., Array] = default_kernel_init

  @nn.compact
  def __call__(self, x: Array) -> Array:
    axis = tuple(a % x.ndim for a in self.axis)
    in_shape = tuple(x.shape[a] for a in axis)
    fan_in, fan_out = int(np.prod(in_shape)), int(np.prod(self.features))

    def init(rng, shape, dtype):
      return self.kernel_init(rng, (fan_in, fan_out), dtype).reshape(shape)

    kernel = self.param("kernel", with_axes(init, *self.in_axes, *self.out_axes),
                        in_shape + self.features, self.param_dtype)
    x = x.astype(self.dtype)
    y = jax.lax.dot_general(x, kernel.astype(self.dtype),
                            ((axis, tuple(range(len(axis)))), ((), ())))
    if self.use_bias:
      bias = self.param("bias", with_axes(nn.initializers.zeros, *self.out_axes), self.features,
                        self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y


def dense(features: int | Sequence[int], in_axes: Sequence[Optional[str]],
          out_axes: Sequence[Optional[str]], *, axis: int | Sequence[int] = -1,
          use_bias: bool = True, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
          kernel_init: Callable[..., Array] = default_kernel_init,
          name: Optional[str] = None) -> DenseGeneral:
  """A projection whose kernel is annotated (in_axes + out_axes) and bias (out_axes)."""
  features = (features,) if isinstance(features, int) else tuple(features)
  axis = (axis,) if isinstance(axis, int) else tuple(axis)
  if len(in_axes) != len(axis) or len(out_axes) != len(features):
    raise ValueError(f"dense {name}: {len(axis)} contracted axes need {len(axis)} in_axes names "
                     f"(got {in_axes}) and {len(features)} out_axes names (got {out_axes})")
  return DenseGeneral(features=features, axis=axis, in_axes=tuple(in_axes),
                      out_axes=tuple(out_axes), use_bias=use_bias, dtype=dtype,
                      param_dtype=param_dtype, kernel_init=kernel_init, name=name)


# ---- Rotary position embeddings ---------------------------------------------------------------

def rotary_embedding(x: Array, positions: Array, theta: float = 10000.0) -> Array:
  """Rotates [B, T, N, H] queries or keys by their absolute `positions` [B, T] (RoFormer).

  Uses the "rotate half" layout of Hugging Face Llama/GPT-NeoX (feature i pairs with i + H/2),
  so HF checkpoints load without permuting q/k rows. Angles are computed in float32.
  """
  head_dim = x.shape[-1]
  if head_dim % 2:
    raise ValueError(f"rotary embeddings need an even head_dim, got {head_dim}")
  half = head_dim // 2
  inv_freq = theta ** (-jnp.arange(half, dtype=jnp.float32) * 2.0 / head_dim)
  angle = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, H/2]
  sin, cos = jnp.sin(angle)[:, :, None, :], jnp.cos(angle)[:, :, None, :]
  x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)


# ---- Attention --------------------------------------------------------------------------------

# `implementation` values of attention(): 'auto' picks per backend and shapes (below).
ATTENTION_IMPLS = ("auto", "xla", "cudnn")


def attention_implementation(q: Array, k: Array, *, mask: Optional[Array] = None,
                             bias: Optional[Array] = None, requested: Optional[str] = "auto",
                             backend: Optional[str] = None) -> str:
  """'xla' or 'cudnn' for attention on these inputs.

  'auto' (or None) takes cuDNN's fused flash attention on a GPU when it applies: bf16/fp16
  inputs, a head_dim that is a multiple of 8 and at most 128, equal q/k head_dim, and no
  explicit mask or bias (causal masking is a flag it fuses); everything else (CPU, TPU, masks,
  fp32) gets XLA's implementation. 'xla' / 'cudnn' force one (cuDNN raises on shapes it cannot
  take). `backend` defaults to jax.default_backend().
  """
  requested = requested or "auto"
  if requested not in ATTENTION_IMPLS:
    raise ValueError(f"unknown attention implementation {requested!r}; choose one of "
                     f"{ATTENTION_IMPLS}")
  if requested != "auto":
    return requested
  backend = backend or jax.default_backend()
  head_dim = q.shape[-1]
  fits = (backend in ("gpu", "cuda") and q.dtype in (jnp.bfloat16, jnp.float16)
          and k.dtype == q.dtype and head_dim == k.shape[-1] and head_dim % 8 == 0
          and head_dim <= 128 and mask is None and bias is None)
  return "cudnn" if fits else "xla"


def attention(q: Array, k: Array, v: Array, *, mask: Optional[Array] = None,
              bias: Optional[Array] = None, is_causal: bool = False,
              implementation: Optional[str] = "auto") -> Array:
  """Scaled dot-product attention on [B, T, N, H] / [B, S, K, H] (K divides N: GQA).

  `mask` is boolean, broadcastable to [B, N, T, S], True where attending is allowed. With XLA's
  implementation the softmax is computed in float32 whatever the compute dtype, as every
  reference implementation does; cuDNN's fused kernel (see attention_implementation) keeps its
  own float32 accumulators.
  """
  implementation = attention_implementation(q, k, mask=mask, bias=bias,
                                            requested=implementation)
  dtype = q.dtype
  if dtype != jnp.float32 and implementation != "cudnn":
    q, k, v = (t.astype(jnp.float32) for t in (q, k, v))
  out = jax.nn.dot_product_attention(q, k, v, bias=bias, mask=mask, is_causal=is_causal,
                                     implementation=implementation)
  return out.astype(dtype)


class Attention(nn.Module):
  """Multi-head (or grouped-query) attention; self-attention unless `kv` is given.

  Attributes:
    num_heads: query heads.
    head_dim: per-head width (default: query width // num_heads).
    num_kv_heads: key/value heads for grouped-query attention (default: num_heads).
    out_features: output width (default: query width).
    qkv_bias: bias on the q/k/v projections.
    out_bias: bias on the output projection.
    dtype / param_dtype: compute and storage dtypes.
    implementation: 'auto' (cuDNN flash attention on GPU where it applies, else XLA), 'xla' or
      'cudnn' (see attention_implementation).
  """
  num_heads: int
  head_dim: Optional[int] = None
  num_kv_heads: Optional[int] = None
  out_features: Optional[int] = None
  qkv_bias: bool = True
  out_bias: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  implementation: Optional[str] = "auto"

  def project_qkv(self, x: Array, kv: Array) -> tuple[Array, Array, Array]:
    """q [B, T, N, H], k and v [B, S, K, H]."""
    width = x.shape[-1]
    if self.head_dim is None and width % self.num_heads:
      raise ValueError(f"{self.name}: width {width} is not divisible by num_heads {self.num_heads}")
    head_dim = self.head_dim or width // self.num_heads
    kv_heads = self.num_kv_heads or self.num_heads
    kw = dict(use_bias=self.qkv_bias, dtype=self.dtype, param_dtype=self.param_dtype)
    q = dense((self.num_heads, head_dim), [P.EMBED], [P.HEADS, P.KV], name="query", **kw)(x)
    k = dense((kv_heads, head_dim), [P.EMBED], [P.KV_HEADS, P.KV], name="key", **kw)(kv)
    v = dense((kv_heads, head_dim), [P.EMBED], [P.KV_HEADS, P.KV], name="value", **kw)(kv)
    return q, k, v

  def project_out(self, out: Array, width: int) -> Array:
    """[B, T, N, H] -> [B, T, out_features]."""
    out = constrain(out, P.BATCH, P.LENGTH, P.HEADS, P.KV)
    return dense(self.out_features or width, [P.HEADS, P.KV], [P.EMBED], axis=(-2, -1),
                 use_bias=self.out_bias, dtype=self.dtype, param_dtype=self.param_dtype,
                 name="out")(out)

  @nn.compact
  def __call__(self, x: Array, kv: Optional[Array] = None, *, mask: Optional[Array] = None,
               is_causal: bool = False) -> Array:
    q, k, v = self.project_qkv(x, x if kv is None else kv)
    out = attention(q, k, v, mask=mask, is_causal=is_causal, implementation=self.implementation)
    return self.project_out(out, x.shape[-1])


# ---- Feed-forward -----------------------------------------------------------------------------

class Mlp(nn.Module):
  """Transformer feed-forward block: fc1 -> activation -> fc2 (gated: act(gate) * fc1 -> fc2).

  Attributes:
    mlp_dim: hidden width.
    activation: a name from ACTIVATIONS, or 'swiglu' / 'geglu' for gated units.
    out_features: output width (default: input width).
    use_bias: biases on both projections.
  """
  mlp_dim: int
  activation: str = "gelu"
  out_features: Optional[int] = None
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kw = dict(use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype)
    act = get_activation(self.activation)
    h = dense(self.mlp_dim, [P.EMBED], [P.MLP], name="fc1", **kw)(x)
    if self.activation in GATED:
      h = act(dense(self.mlp_dim, [P.EMBED], [P.MLP], name="gate", **kw)(x)) * h
    else:
      h = act(h)
    h = constrain(h, P.BATCH, P.LENGTH, P.MLP)
    return dense(self.out_features or x.shape[-1], [P.MLP], [P.EMBED], name="fc2", **kw)(h)


class FeedForward(nn.Module):
  """Pre-norm feed-forward without the residual: norm -> fc1 -> act -> fc2.

  open_flamingo's `FeedForward` (LayerNorm, Linear, GELU, Linear; no biases), used by the Perceiver
  resampler and the gated cross-attention blocks. Converter mapping: ff.0 -> norm, ff.1 -> fc1,
  ff.3 -> fc2.

  Attributes:
    mlp_dim: hidden width.
    activation: a name from ACTIVATIONS, or 'swiglu' / 'geglu' (adds a `gate` projection).
    use_bias: biases on the projections (open_flamingo: none).
    norm / norm_eps: the input norm.
  """
  mlp_dim: int
  activation: str = "gelu"
  use_bias: bool = False
  norm: str = "layernorm"
  norm_eps: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    kw = dict(use_bias=self.use_bias, dtype=self.dtype, param_dtype=self.param_dtype)
    act = get_activation(self.activation)
    y = norm_layer(self.norm, self.norm_eps, self.dtype, self.param_dtype, name="norm")(x)
    h = dense(self.mlp_dim, [P.EMBED], [P.MLP], name="fc1", **kw)(y)
    if self.activation in GATED:
      h = act(dense(self.mlp_dim, [P.EMBED], [P.MLP], name="gate", **kw)(y)) * h
    else:
      h = act(h)
    return dense(x.shape[-1], [P.MLP], [P.EMBED], name="fc2", **kw)(h)


# ---- The pre-LN (or post-LN) transformer block ------------------------------------------------

class TransformerBlock(nn.Module):
  """One transformer layer: [norm] self-attention and MLP (CoCa's cross-attention layers are
  coca.CrossAttentionBlock).

  Pre-LN (ViT, CLIP, GPT): x + attn(ln1(x)); x + mlp(ln2(x)).
  Post-LN (BERT): ln1(x + attn(x)); ln2(x + mlp(x)).
  Returns `(x, None)` so that it can be scanned over layers with `nn.scan`.
  """
  num_heads: int
  mlp_dim: int
  activation: str = "gelu"
  norm: str = "layernorm"
  norm_eps: float = 1e-5
  post_norm: bool = False
  causal: bool = False
  dropout_rate: float = 0.0
  deterministic: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def _norm(self, name: str) -> nn.Module:
    return norm_layer(self.norm, self.norm_eps, self.dtype, self.param_dtype, name=name)

  @nn.compact
  def __call__(self, x: Array, mask: Optional[Array] = None) -> tuple[Array, None]:
    x = constrain(x, P.BATCH, P.LENGTH, P.EMBED)
    drop = nn.Dropout(self.dropout_rate, deterministic=self.deterministic)
    attn = Attention(self.num_heads, dtype=self.dtype, param_dtype=self.param_dtype, name="attn")
    mlp = Mlp(self.mlp_dim, self.activation, dtype=self.dtype, param_dtype=self.param_dtype,
              name="mlp")
    if self.post_norm:
      x = self._norm("ln1")(x + drop(attn(x, mask=mask, is_causal=self.causal)))
      x = self._norm("ln2")(x + drop(mlp(x)))
      return x, None
    x = x + drop(attn(self._norm("ln1")(x), mask=mask, is_causal=self.causal))
    x = x + drop(mlp(self._norm("ln2")(x)))
    return x, None


# ---- Stacks of layers: scanned (one compiled body) or unrolled --------------------------------

REMAT_POLICIES: dict[str, Any] = {
    "none": None,  # no remat
    "full": jax.checkpoint_policies.nothing_saveable,  # recompute everything
    "dots": jax.checkpoint_policies.checkpoint_dots,  # keep matmul outputs
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def stack_layers(block_cls: type[nn.Module], num_layers: int, *, scan: bool = True,
                 remat: str = "none", name: str = "blocks",
                 num_broadcast_args: int = 0, **block_kwargs) -> Callable[..., Array]:
  """Applies `num_layers` copies of `block_cls` (call: `(x, *broadcast) -> (x, None)`).

  With `scan=True` the parameters are stacked on a leading `layers` axis and the layer is
  compiled once (compile time does not grow with depth); `remat` picks a REMAT_POLICIES entry.
  Must be called inside a parent's `@nn.compact` method. Returns `f(x, *broadcast_args) -> x`.
  """
  if remat not in REMAT_POLICIES:
    raise ValueError(f"unknown remat policy {remat!r}; choose one of {sorted(REMAT_POLICIES)}")
  cls = block_cls
  if remat != "none":
    cls = nn.remat(cls, policy=REMAT_POLICIES[remat], prevent_cse=not scan)
  if scan:
    scanned = nn.scan(
        cls, variable_axes={"params": 0, "intermediates": 0}, split_rngs={"params": True,
                                                                          "dropout": True},
        in_axes=(nn.broadcast,) * num_broadcast_args, length=num_layers,
        metadata_params={nn.PARTITION_NAME: P.LAYERS})(**block_kwargs, name=name)

    def apply_scanned(x, *args):
      x, _ = scanned(x, *args)
      return x
    return apply_scanned
  layers = [cls(**block_kwargs, name=f"{name}_{i}") for i in range(num_layers)]

  def apply_unrolled(x, *args):
    for layer in layers:
      x, _ = layer(x, *args)
    return x
  return apply_unrolled


def auto_compute_dtype(backend: Optional[str] = None) -> Any:
  """The compute dtype 'auto' stands for: bfloat16 on GPU and TPU (their matrix units' fast
  path; parameters stay in param_dtype), float32 on CPU (no bf16 units here, and the parity
  tests compare float32). `backend` defaults to jax.default_backend()."""
  backend = backend or jax.default_backend()
  return jnp.dtype(jnp.bfloat16) if backend in ("gpu", "cuda", "rocm", "tpu") else \
      jnp.dtype(jnp.float32)


def dtype_of(name: str | Any) -> Any:
  """jnp dtype from a config string ('float32', 'bfloat16', ...; 'auto': auto_compute_dtype,
  meant for compute dtypes, not param_dtype)."""
  if not isinstance(name, str):
    return name
  if name == "auto":
    return auto_compute_dtype()
  try:
    return jnp.dtype(name)
  except TypeError as e:
    raise ValueError(f"unknown dtype {name!r}; use e.g. 'float32', 'bfloat16' or 'auto'") from e
