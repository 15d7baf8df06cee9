"""The GPU fast path's choices (bf16 compute, cuDNN attention), decided per backend; on this CPU
the default path stays float32 + XLA attention, which is what runs here."""

import jax
import jax.numpy as jnp
import pytest

from mmjax import config_lib
from mmjax.models import family as family_lib
from mmjax.models import layers
from mmjax.models import lm as lm_lib


def qk(dtype=jnp.bfloat16, head_dim=64):
  return (jax.ShapeDtypeStruct((2, 16, 8, head_dim), dtype),
          jax.ShapeDtypeStruct((2, 16, 4, head_dim), dtype))


def test_auto_attention_takes_cudnn_only_where_it_applies():
  q, k = qk()
  assert layers.attention_implementation(q, k, backend="gpu") == "cudnn"
  assert layers.attention_implementation(q, k, backend="cpu") == "xla"
  assert layers.attention_implementation(q, k, backend="tpu") == "xla"
  assert layers.attention_implementation(*qk(jnp.float32), backend="gpu") == "xla"
  assert layers.attention_implementation(*qk(head_dim=256), backend="gpu") == "xla"
  assert layers.attention_implementation(*qk(head_dim=60), backend="gpu") == "xla"
  mask = jnp.ones((2, 1, 16, 16), bool)
  assert layers.attention_implementation(q, k, mask=mask, backend="gpu") == "xla"
  assert layers.attention_implementation(q, k, requested="xla", backend="gpu") == "xla"
  assert layers.attention_implementation(q, k, requested=None) == "xla"  # this CPU
  with pytest.raises(ValueError, match="unknown attention implementation 'flash'"):
    layers.attention_implementation(q, k, requested="flash")


def test_auto_dtype_is_bf16_on_accelerators_and_fp32_here():
  assert layers.auto_compute_dtype("gpu") == jnp.bfloat16
  assert layers.auto_compute_dtype("tpu") == jnp.bfloat16
  assert layers.auto_compute_dtype("cpu") == jnp.float32
  assert layers.dtype_of("auto") == jnp.float32  # tests run on CPU
  with pytest.raises(ValueError, match="unknown dtype 'bf17'"):
    layers.dtype_of("bf17")


def test_default_configs_compute_in_float32_on_cpu():
  config = config_lib.load_config("configs/lm.py:micro")
  assert config.model.dtype == "auto" and config.model.attention_impl == "auto"
  family = family_lib.build(config.model)
  batch = family.dummy_batch(2)
  params = jax.eval_shape(family.init, jax.random.key(0), batch)["params"]
  logits = jax.eval_shape(family.predict_logits, params, batch)
  assert logits.dtype == jnp.float32
  # 'auto' attention on CPU is XLA's and equals it exactly.
  q = jax.random.normal(jax.random.key(1), (2, 8, 4, 16))
  assert jnp.array_equal(layers.attention(q, q, q, is_causal=True),
                         layers.attention(q, q, q, is_causal=True, implementation="xla"))


def test_decoder_config_names_a_bad_attention_impl():
  with pytest.raises(ValueError, match="lm.attention_impl 'flash'"):
    lm_lib.DecoderConfig(vocab_size=8, width=8, depth=1, num_heads=2, attention_impl="flash")
