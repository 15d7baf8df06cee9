"""Decoding with the KV cache: greedy, sampling (temperature, top-k, top-p) and beam search.

Works for every family with the decode API (`init_cache`, `prefill(params, batch, cache,
lengths)`, `decode_step(params, tokens, cache)`): the LM and Flamingo, whose media are resampled
once at prefill and whose cross-attention keys/values stay in the cache.

Prompts of different lengths are right-padded in `batch['tokens']` [B, T] with `lengths` [B]:
prefill writes the whole padded block, then each row's next token is written at its own position
`lengths[b]` (over its padding) and attends only to positions <= its own, so the padding is never
seen (per-row positions; no left padding needed).

Every decoder is one `jax.jit`-compiled program (prefill + a `lax.while_loop` of decode steps)
that stops early when every row has emitted a stop id. Pass `mesh` (and `rules`) to run sharded:
the batch is split over the mesh's data axes and the model's logical constraints resolve.

Output convention (all three): [B, max_new_tokens] int32; after a row's stop id the row repeats
that stop id, so `strip(ids, stop_ids)` recovers the text.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mmjax import parallel as P

Array = jax.Array
NEG_INF = -1e30


# ---- Shared pieces -------------------------------------------------------------------------------

def _prefill(family: Any, params: Any, batch: Mapping[str, Array], lengths: Array,
             max_new_tokens: int) -> tuple[Array, Any]:
  """Prefills a fresh cache; returns the logits at each row's last prompt token and the cache."""
  b, t = batch["tokens"].shape
  cache = family.init_cache(b, t + max_new_tokens)
  logits, cache = family.prefill(params, dict(batch), cache, lengths)
  last = jnp.take_along_axis(logits, (lengths - 1)[:, None, None], axis=1)[:, 0]
  return last.astype(jnp.float32), cache


def _is_stop(tokens: Array, stop_ids: tuple[int, ...]) -> Array:
  if not stop_ids:
    return jnp.zeros(tokens.shape, bool)
  return jnp.isin(tokens, jnp.asarray(stop_ids, jnp.int32))


def filter_logits(logits: Array, temperature: float = 1.0, top_k: int = 0,
                  top_p: float = 1.0) -> Array:
  """Logits [..., V] scaled by 1/temperature with tokens outside top-k / the top-p nucleus
  set to -inf-like. top_k=0 and top_p=1 disable the filters.

  Top-p keeps the smallest set of most likely tokens whose probability sums to >= top_p (the
  most likely token is always kept), as in Holtzman et al. 2020 / HF's TopPLogitsWarper.
  """
  if temperature <= 0:
    raise ValueError(f"temperature must be > 0 (use greedy for 0), got {temperature}")
  logits = logits.astype(jnp.float32) / temperature
  if top_k:
    kth = jax.lax.top_k(logits, min(top_k, logits.shape[-1]))[0][..., -1:]
    logits = jnp.where(logits < kth, NEG_INF, logits)
  if top_p < 1.0:
    order = jnp.argsort(-logits, axis=-1)
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    # A token stays when the mass strictly before it is < top_p (so the first always stays).
    before = jnp.cumsum(probs, axis=-1) - probs
    keep_sorted = before < top_p
    keep = jnp.zeros_like(keep_sorted).at[
        tuple(jnp.indices(order.shape)[:-1]) + (order,)].set(keep_sorted)
    logits = jnp.where(keep, logits, NEG_INF)
  return logits


def _check_prompt(batch: Mapping[str, Any], lengths: Any) -> tuple[dict, Array]:
  batch = {k: jnp.asarray(v) for k, v in batch.items()}
  b, t = batch["tokens"].shape
  lengths = (jnp.full((b,), t, jnp.int32) if lengths is None
             else jnp.asarray(lengths, jnp.int32))
  if lengths.shape != (b,):
    raise ValueError(f"lengths must have shape [{b}], got {lengths.shape}")
  if int(jnp.min(lengths)) < 1 or int(jnp.max(lengths)) > t:
    raise ValueError(f"prompt lengths must lie in [1, {t}], got {np.asarray(lengths)}")
  return batch, lengths


def _run(fn, mesh: Any, rules: str, batch: dict, *args) -> np.ndarray:
  """Calls the jitted `fn(batch, *args)`, sharded over `mesh` when one is given."""
  if mesh is None:
    return fn(batch, *args)
  batch = {k: jax.device_put(v, P.data_sharding(mesh, v.ndim)) for k, v in batch.items()}
  with P.sharding_context(mesh, rules):
    return fn(batch, *args)


# ---- Greedy and sampling -------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames=("family", "max_new_tokens", "stop_ids",
                                             "temperature", "top_k", "top_p", "greedy_mode"))
def _decode(batch, lengths, rng, params, *, family, max_new_tokens, stop_ids, temperature, top_k,
            top_p, greedy_mode):
  b = batch["tokens"].shape[0]
  last, cache = _prefill(family, params, batch, lengths, max_new_tokens)
  out = jnp.zeros((b, max_new_tokens), jnp.int32)

  def cond(state):
    i, _, _, _, done, _ = state
    return (i < max_new_tokens) & ~jnp.all(done)

  def body(state):
    i, last, cache, out, done, rng = state
    rng, key = jax.random.split(rng)
    if greedy_mode:
      nxt = jnp.argmax(last, axis=-1).astype(jnp.int32)
    else:
      nxt = jax.random.categorical(key, filter_logits(last, temperature, top_k, top_p))
      nxt = nxt.astype(jnp.int32)
    previous = out[:, jnp.maximum(i - 1, 0)]
    nxt = jnp.where(done, previous, nxt)
    out = out.at[:, i].set(nxt)
    done = done | _is_stop(nxt, stop_ids)
    logits, cache = family.decode_step(params, nxt[:, None], cache)
    return i + 1, logits[:, -1].astype(jnp.float32), cache, out, done, rng

  state = (jnp.int32(0), last, cache, out, jnp.zeros((b,), bool), rng)
  i, _, _, out, _, _ = jax.lax.while_loop(cond, body, state)
  # Rows stopped early: fill the steps never run with their stop id.
  steps = jnp.arange(max_new_tokens)[None]
  return jnp.where(steps < i, out, out[:, jnp.maximum(i - 1, 0)][:, None])


def greedy(family: Any, params: Any, batch: Mapping[str, Any], max_new_tokens: int,
           stop_ids: Sequence[int] = (), lengths: Any = None, *, mesh: Any = None,
           rules: str = "dp") -> np.ndarray:
  """Greedy continuation of right-padded prompts `batch['tokens']` [B, T].

  `batch` also holds the family's other prefill inputs (Flamingo: media, media_mask,
  media_locations). `lengths` [B] are the prompt lengths (default: all T).
  Returns [B, max_new_tokens] int32; after a stop id a row keeps emitting that stop id.
  """
  batch, lengths = _check_prompt(batch, lengths)
  fn = functools.partial(_decode, family=family, max_new_tokens=int(max_new_tokens),
                         stop_ids=tuple(int(s) for s in stop_ids), temperature=1.0, top_k=0,
                         top_p=1.0, greedy_mode=True)
  return np.asarray(_run(fn, mesh, rules, batch, lengths, jax.random.key(0), params))


def sample(family: Any, params: Any, batch: Mapping[str, Any], max_new_tokens: int,
           rng: Array, stop_ids: Sequence[int] = (), lengths: Any = None, *,
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, mesh: Any = None,
           rules: str = "dp") -> np.ndarray:
  """Ancestral sampling from `filter_logits(logits, temperature, top_k, top_p)`.

  Same prompts and output convention as `greedy`; `rng` is a jax PRNG key.
  """
  batch, lengths = _check_prompt(batch, lengths)
  if not 0.0 < top_p <= 1.0:
    raise ValueError(f"top_p must lie in (0, 1], got {top_p}")
  if top_k < 0:
    raise ValueError(f"top_k must be >= 0, got {top_k}")
  fn = functools.partial(_decode, family=family, max_new_tokens=int(max_new_tokens),
                         stop_ids=tuple(int(s) for s in stop_ids), temperature=float(temperature),
                         top_k=int(top_k), top_p=float(top_p), greedy_mode=False)
  return np.asarray(_run(fn, mesh, rules, batch, lengths, rng, params))


# ---- Beam search ---------------------------------------------------------------------------------

def length_penalty(length: Array, alpha: float) -> Array:
  """GNMT length normalisation ((5 + length) / 6) ** alpha (Wu et al. 2016); alpha=0: none."""
  return ((5.0 + length.astype(jnp.float32)) / 6.0) ** alpha


def gather_cache(cache: Any, index: Array) -> Any:
  """The cache with its batch rows reordered by `index` [B'] (beam parents).

  Per-layer caches are stacked over scan units, so their batch axis is 1; everything else
  ('index', 'text_time', 'media_mask') has batch first.
  """
  out = {}
  for key, value in cache.items():
    axis = 1 if key == "layers" else 0
    out[key] = jax.tree.map(lambda a, axis=axis: jnp.take(a, index, axis=axis), value)
  return out


@functools.partial(jax.jit, static_argnames=("family", "max_new_tokens", "stop_ids",
                                             "num_beams", "alpha"))
def _beam(batch, lengths, params, *, family, max_new_tokens, stop_ids, num_beams, alpha):
  b, w, n = batch["tokens"].shape[0], num_beams, max_new_tokens
  last, cache = _prefill(family, params, batch, lengths, n)
  # Every beam starts from the same prefilled row.
  tile = jnp.repeat(jnp.arange(b), w)
  cache, last = gather_cache(cache, tile), last[tile]
  vocab = last.shape[-1]
  # Only beam 0 is live at first, so the W initial candidates are distinct.
  alive_logp = jnp.tile(jnp.array([0.0] + [NEG_INF] * (w - 1), jnp.float32), (b, 1))
  alive_seq = jnp.zeros((b, w, n), jnp.int32)
  fin_seq = jnp.zeros((b, w, n), jnp.int32)
  fin_score = jnp.full((b, w), NEG_INF, jnp.float32)
  # Enough candidates that at least W of them do not stop (each beam has <= S stop tokens).
  k = min(w * (len(stop_ids) + 1), w * vocab)
  steps = jnp.arange(n)

  def cond(state):
    i, alive_logp, fin_score = state[0], state[3], state[6]
    # Scores only fall as beams grow, and lp(n) is the largest normaliser (alpha >= 0), so no
    # live beam can beat a full finished pool once its best bound is below the pool's worst.
    bound = jnp.max(alive_logp, axis=1) / length_penalty(jnp.int32(n), alpha)
    settled = jnp.min(fin_score, axis=1) >= bound
    return (i < n) & ~jnp.all(settled)

  def step(state):
    i, last, cache, alive_logp, alive_seq, fin_seq, fin_score = state
    logprobs = jax.nn.log_softmax(last, axis=-1).reshape(b, w, vocab)
    cand = (alive_logp[..., None] + logprobs).reshape(b, w * vocab)
    top_logp, top_idx = jax.lax.top_k(cand, k)  # [B, K]
    parent, token = top_idx // vocab, (top_idx % vocab).astype(jnp.int32)
    seq = jnp.take_along_axis(alive_seq, parent[..., None], axis=1)  # [B, K, N]
    # Write the token at step i and, for a stopped beam, repeat it to the end (the convention).
    stop = _is_stop(token, stop_ids)
    fill = jnp.where(stop[..., None], steps >= i, steps == i)  # [B, K, N]
    seq = jnp.where(fill, token[..., None], seq)
    # Finished pool: the best W among the old pool and the candidates that just stopped.
    new_fin = jnp.where(stop, top_logp / length_penalty(i + 1, alpha), NEG_INF)
    pool_score = jnp.concatenate([fin_score, new_fin], axis=1)
    pool_seq = jnp.concatenate([fin_seq, seq], axis=1)
    fin_score, pick = jax.lax.top_k(pool_score, w)
    fin_seq = jnp.take_along_axis(pool_seq, pick[..., None], axis=1)
    # Alive beams: the best W candidates that did not stop.
    live = jnp.where(stop, NEG_INF, top_logp)
    alive_logp, pick = jax.lax.top_k(live, w)
    alive_seq = jnp.take_along_axis(seq, pick[..., None], axis=1)
    rows = jnp.take_along_axis(parent, pick, axis=1)  # [B, W] parent beam of each new beam
    cache = gather_cache(cache, (jnp.arange(b)[:, None] * w + rows).reshape(-1))
    tokens = jnp.take_along_axis(token, pick, axis=1).reshape(-1, 1)
    logits, cache = family.decode_step(params, tokens, cache)
    return (i + 1, logits[:, -1].astype(jnp.float32), cache, alive_logp, alive_seq, fin_seq,
            fin_score)

  state = (jnp.int32(0), last, cache, alive_logp, alive_seq, fin_seq, fin_score)
  i, _, _, alive_logp, alive_seq, fin_seq, fin_score = jax.lax.while_loop(cond, step, state)
  # Beams still alive at the length limit compete as they are (normalised at length i).
  alive_score = jnp.where(alive_logp > NEG_INF / 2,
                          alive_logp / length_penalty(i, alpha), NEG_INF)
  scores = jnp.concatenate([fin_score, alive_score], axis=1)
  seqs = jnp.concatenate([fin_seq, alive_seq], axis=1)
  best = jnp.argmax(scores, axis=1)
  out = jnp.take_along_axis(seqs, best[:, None, None], axis=1)[:, 0]
  return out, jnp.max(scores, axis=1)


def beam_search(family: Any, params: Any, batch: Mapping[str, Any], max_new_tokens: int,
                num_beams: int = 4, stop_ids: Sequence[int] = (), lengths: Any = None, *,
                length_alpha: float = 0.0, return_scores: bool = False, mesh: Any = None,
                rules: str = "dp") -> np.ndarray | tuple[np.ndarray, np.ndarray]:
  """Beam search with GNMT length normalisation and early stopping.

  A beam that emits a stop id moves to a pool of finished hypotheses scored
  log p / ((5 + len) / 6) ** length_alpha (len counts the stop token); the search ends when no
  live beam can beat the pool's worst, or at `max_new_tokens` (then live beams compete too).
  Same prompts and output convention as `greedy`; `num_beams=1` is greedy decoding.
  Returns [B, max_new_tokens] int32 (and the best normalised scores [B]).
  """
  if num_beams < 1:
    raise ValueError(f"num_beams must be >= 1, got {num_beams}")
  if length_alpha < 0:
    raise ValueError(f"length_alpha must be >= 0, got {length_alpha}")
  batch, lengths = _check_prompt(batch, lengths)
  fn = functools.partial(_beam, family=family, max_new_tokens=int(max_new_tokens),
                         stop_ids=tuple(int(s) for s in stop_ids), num_beams=int(num_beams),
                         alpha=float(length_alpha))
  out, scores = _run(fn, mesh, rules, batch, lengths, params)
  out, scores = np.asarray(out), np.asarray(scores)
  return (out, scores) if return_scores else out


def strip(ids: Sequence[int], stop_ids: Sequence[int]) -> list[int]:
  """Generated ids up to (not including) the first stop id."""
  out = []
  for t in ids:
    if t in stop_ids:
      break
    out.append(int(t))
  return out
