"""Decoding with the KV cache: greedy for now (beam search and sampling build on the same API).

Works for every family with the decode API (`init_cache`, `prefill(params, batch, cache,
lengths)`, `decode_step(params, tokens, cache)`): the LM and Flamingo, whose media are encoded
once at prefill and whose cross-attention keys/values stay in the cache.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def greedy(family: Any, params: Any, batch: Mapping[str, Any], max_new_tokens: int,
           stop_ids: Sequence[int] = (), lengths: Any = None) -> np.ndarray:
  """Greedy continuation of right-padded prompts `batch['tokens']` [B, T].

  `lengths` [B] are the prompt lengths (default: all T). Returns [B, max_new_tokens] int32;
  after a stop id, a row keeps emitting that stop id.
  """
  tokens = jnp.asarray(batch["tokens"])
  b, t = tokens.shape
  lengths = jnp.full((b,), t, jnp.int32) if lengths is None else jnp.asarray(lengths, jnp.int32)
  cache = family.init_cache(b, t + max_new_tokens)
  prefill = jax.jit(family.prefill)
  step = jax.jit(family.decode_step)
  logits, cache = prefill(params, dict(batch), cache, lengths)
  last = jnp.take_along_axis(logits, (lengths - 1)[:, None, None], axis=1)[:, 0]
  stop = jnp.asarray(list(stop_ids) or [-1], jnp.int32)
  done = jnp.zeros((b,), bool)
  out = []
  for _ in range(max_new_tokens):
    nxt = jnp.argmax(last, axis=-1).astype(jnp.int32)
    nxt = jnp.where(done, out[-1] if out else nxt, nxt)
    out.append(nxt)
    done = done | jnp.isin(nxt, stop)
    if bool(jnp.all(done)):
      break
    logits, cache = step(params, nxt[:, None], cache)
    last = logits[:, -1]
  out = jnp.stack(out, axis=1)
  pad = max_new_tokens - out.shape[1]
  if pad:
    out = jnp.concatenate([out, jnp.repeat(out[:, -1:], pad, axis=1)], axis=1)
  return np.asarray(out)
