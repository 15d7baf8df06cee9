"""The text + image-token LM (mmjax/models/vq_lm.py): the exact joint sequences, a frozen
tokenizer (zero gradient, unchanged by a train step), image-span generation and parameter
counts of the micro preset."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import config_lib, optim, train
from mmjax.models import family as family_lib
from mmjax.models import vq_lm


@pytest.fixture(scope="module")
def micro():
  config = config_lib.load_config("configs/vq_lm.py:micro")
  family = family_lib.build(config.model)
  params = nn.unbox(jax.jit(family.init)(jax.random.key(0), family.dummy_batch(2))["params"])
  tokens = np.zeros((2, 8), np.int32)
  tokens[0, :5] = [2, 10, 11, 12, 3]  # [BOS] three caption tokens [EOS]
  tokens[1, :4] = [2, 20, 21, 3]
  batch = {"image": jax.random.uniform(jax.random.key(1), (2, 32, 32, 3), minval=-1, maxval=1),
           "tokens": jnp.asarray(tokens)}
  return config, family, params, batch


def test_build_sequences_exact():
  vocab = vq_lm.Vocabulary(text_vocab=10, num_codes=4, bos_id=2, eos_id=3, pad_id=0)
  assert (vocab.code_offset, vocab.boi_id, vocab.eoi_id, vocab.size) == (10, 14, 15, 16)
  tokens = jnp.array([[2, 5, 6, 3, 0], [2, 7, 3, 0, 0]])
  image = jnp.array([[0, 1, 2], [3, 3, 1]])
  seq = jax.jit(vq_lm.build_sequences, static_argnums=3)(tokens, image,
                                                        jnp.array([True, False]), vocab)
  # t2i: BOS caption <boi> codes <eoi> EOS; i2t: BOS <boi> codes <eoi> caption EOS.
  np.testing.assert_array_equal(seq["tokens"], [
      [2, 5, 6, 14, 10, 11, 12, 15, 3, 0],
      [2, 14, 13, 13, 11, 15, 7, 3, 0, 0]])
  # Targets: t2i the codes, <eoi> and EOS; i2t the caption and EOS.
  np.testing.assert_array_equal(seq["loss_mask"], [
      [0, 0, 0, 0, 1, 1, 1, 1, 1, 0],
      [0, 0, 0, 0, 0, 0, 1, 1, 0, 0]])
  np.testing.assert_array_equal(seq["image_target"][0], [0, 0, 0, 0, 1, 1, 1, 0, 0, 0])
  assert not np.any(seq["image_target"][1]) and not np.any(seq["text_target"][0])
  np.testing.assert_array_equal(seq["text_target"][1], [0, 0, 0, 0, 0, 0, 1, 1, 0, 0])


def test_frozen_tokenizer_gets_no_gradient_and_no_update(micro):
  config, family, params, batch = micro
  grads = jax.jit(jax.grad(lambda p: family.loss(p, batch, train=False)[0]))(params)
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads["vq"]))
  assert float(jnp.abs(grads["lm"]["embed"]).max()) > 0
  # The trainer's step: the tokenizer is not trainable, so it is bit-identical afterwards.
  trainable = train.trainable_mask(config, family, params)
  assert not any(jax.tree.leaves(trainable["vq"])) and all(jax.tree.leaves(trainable["lm"]))
  tx, _ = optim.make_optimizer(config.optim, params, trainable)
  step = jax.jit(train.make_train_step(family, tx, trainable, config))
  new, _, metrics = step(params, tx.init(params), batch, jax.random.key(2), jnp.asarray(0))
  assert np.isfinite(float(metrics["loss"]))
  jax.tree.map(np.testing.assert_array_equal, new["vq"], params["vq"])
  assert float(jnp.abs(new["lm"]["embed"] - params["lm"]["embed"]).max()) > 0


def test_loss_metrics_and_parameter_counts(micro):
  _, family, params, batch = micro
  assert family.vocab.size == 512 + 16 + 2
  counts = {k: sum(x.size for x in jax.tree.leaves(v)) for k, v in params.items()}
  # The tokenizer is configs/vq.py:micro (9,842, tests/models/test_vq.py); the LM is the micro
  # decoder (width 32, 2 layers, GQA 4/2 heads of 8, swiglu 64) over 530 ids:
  # 530*32 embed + 2 * (1024 + 512 + 512 + 1024 + 3 * 2048 + 64) + 32 final norm.
  assert counts == {"vq": 9842, "lm": 530 * 32 + 2 * 9280 + 32}
  loss, metrics = jax.jit(lambda p, b: family.loss(p, b, train=False))(params, batch)
  # Row 0 is text-to-image (16 image targets), row 1 image-to-text.
  assert float(metrics["image_tokens"]) == 16
  # Loss targets: 16 codes + <eoi> + EOS of row 0, 2 caption tokens + EOS of row 1.
  assert float(metrics["num_tokens"]) == 18 + 3
  np.testing.assert_allclose(metrics["image_perplexity"], np.exp(metrics["image_nll"]),
                             rtol=1e-6)


def test_generation_stays_in_the_image_span(micro):
  _, family, params, batch = micro
  prompts, lengths = family.t2i_prompts(np.asarray(batch["tokens"]))
  boi = family.vocab.boi_id
  np.testing.assert_array_equal(prompts, [[2, 10, 11, 12, boi, 0, 0, 0, 0],
                                          [2, 20, 21, boi, 0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(lengths, [5, 4])
  ids, pixels = family.generate_images(params, np.asarray(batch["tokens"]), jax.random.key(0))
  assert ids.shape == (2, 16) and pixels.shape == (2, 32, 32, 3)
  assert ids.min() >= 0 and ids.max() < 16
  # The span decoder leaves the image columns as they are and masks every other column.
  span = vq_lm.ImageSpanDecoder(family)
  cache = family.init_cache(2, 16)
  raw, _ = family.prefill(params, {"tokens": jnp.asarray(prompts)}, cache)
  masked, _ = span.prefill(params, {"tokens": jnp.asarray(prompts)}, cache)
  lo, hi = family.vocab.code_offset, family.vocab.code_offset + family.vocab.num_codes
  np.testing.assert_array_equal(masked[..., lo:hi], raw[..., lo:hi])
  assert float(jnp.max(masked[..., :lo])) < -1e29 and float(jnp.max(masked[..., hi:])) < -1e29


def test_bad_config_names_the_field():
  config = config_lib.load_config("configs/vq_lm.py:micro", ["model.directions=both_ways"])
  with pytest.raises(ValueError, match="directions"):
    family_lib.build(config.model)
