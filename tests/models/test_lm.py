"""Decoder LM: parameter counts of the real presets and KV-cache decoding parity."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import config_lib
from mmjax import summary
from mmjax.models import family
from mmjax.models import lm

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _spec(name):
  return os.path.join(ROOT, "configs", name)


@pytest.mark.parametrize("preset,total", [("smollm2_135m", 134515008), ("gpt2", 124439808)])
def test_summary_total_params(preset, total):
  table = summary.summarize(_spec(f"lm.py:{preset}"))
  assert table.splitlines()[-1] == f"total_params: {total}"


LLAMA = dict(vocab_size=61, width=32, depth=3, num_heads=4, num_kv_heads=2, head_dim=8,
             mlp_dim=48, activation="swiglu", norm="rmsnorm", positions="rotary", max_len=24,
             tie_embeddings=False)
GPT2 = dict(vocab_size=61, width=32, depth=2, num_heads=4, mlp_dim=64, activation="gelu_tanh",
            norm="layernorm", positions="learned", max_len=24, qkv_bias=True, out_bias=True,
            mlp_bias=True, num_new_tokens=2)


def _family(fields, **overrides):
  config = config_lib.load_config(_spec("lm.py:micro"))
  with config.unlocked():
    config.model.update({**fields, **overrides})
  return family.build(config.model)


def _init(fam, batch):
  """Unboxed parameters (jitted init: eager nn.scan is slow)."""
  return nn.unbox(jax.jit(fam.init)(jax.random.key(0), batch)["params"])


@pytest.mark.parametrize("fields,scan", [(LLAMA, True), (GPT2, True), (LLAMA, False)])
def test_kv_cache_decoding_matches_full_sequence(fields, scan):
  fam = _family(fields, scan=scan)
  vocab = fam.lm_config.total_vocab
  tokens = jax.random.randint(jax.random.key(1), (2, 11), 0, vocab)
  params = _init(fam, {"tokens": tokens})
  full = jax.jit(fam.predict_logits)(params, {"tokens": tokens})
  assert full.shape == (2, 11, vocab)

  cache = fam.init_cache(2, 16)
  logits, cache = jax.jit(fam.prefill)(params, {"tokens": tokens[:, :4]}, cache)
  steps = [logits]
  decode = jax.jit(fam.decode_step)
  for t in range(4, 11):
    logits, cache = decode(params, tokens[:, t:t + 1], cache)
    steps.append(logits)
  np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, atol=1e-5, rtol=0)
  np.testing.assert_array_equal(cache["index"], [11, 11])


def test_right_padded_prompts_decode_per_row():
  """Rows with different prompt lengths: prefill padded, then decode from each row's length."""
  fam = _family(LLAMA)
  tokens = jax.random.randint(jax.random.key(2), (2, 9), 0, 61)
  params = _init(fam, {"tokens": tokens})
  full = jax.jit(fam.predict_logits)(params, {"tokens": tokens})
  lengths = jnp.array([5, 3])
  prompt = jnp.where(jnp.arange(5)[None] < lengths[:, None], tokens[:, :5], 0)
  _, cache = jax.jit(fam.prefill)(params, {"tokens": prompt}, fam.init_cache(2, 16), lengths=lengths)
  decode = jax.jit(fam.decode_step)
  # Row 1 continues at position 3 (overwriting its padding), row 0 at position 5.
  for step in range(4):
    positions = lengths + step
    next_tokens = jnp.take_along_axis(tokens, positions[:, None], axis=1)
    logits, cache = decode(params, next_tokens, cache)
    want = jnp.take_along_axis(full, positions[:, None, None], axis=1)
    np.testing.assert_allclose(logits, want, atol=1e-5, rtol=0)


def test_loss_and_new_tokens():
  fam = _family(GPT2)
  batch = {"tokens": jnp.array([[1, 61, 5, 62, 7, 0]]),  # ids 61, 62 are the new tokens
           "loss_mask": jnp.array([[0, 1, 1, 1, 1, 0]], jnp.float32)}
  params = _init(fam, batch)
  assert params["new_embed"].shape == (2, 32)
  (loss, metrics), grads = jax.jit(jax.value_and_grad(
      lambda p: fam.loss(p, batch, jax.random.key(1), train=True), has_aux=True))(params)
  assert np.isfinite(loss) and metrics["num_tokens"] == 4
  # The new tokens' rows are their own parameter: their gradient is non-zero.
  assert jnp.abs(grads["new_embed"]).sum() > 0


def test_unknown_field_is_named():
  with pytest.raises(ValueError, match="bogus"):
    lm.decoder_config({"family": "lm", "vocab_size": 8, "width": 8, "depth": 1,
                       "num_heads": 1, "bogus": 1})
