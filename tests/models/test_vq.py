"""The VQ image tokenizer (mmjax/models/quantizers.py, vqvae.py): FSQ levels and its implicit
codebook, codes <-> indices round trips, the straight-through gradient reaching the encoder, the
VQ loss terms, shapes and exact parameter counts of the micro preset."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import config_lib
from mmjax.models import family as family_lib
from mmjax.models import quantizers as Q


def _family(kind="fsq", preset="micro"):
  config = config_lib.load_config(f"configs/vq.py:{preset}", [f"model.quantizer.kind={kind}"])
  return family_lib.build(config.model)


@pytest.fixture(scope="module")
def micro():
  # FSQ only: the learned codebook's gradients are checked on the quantizer alone below, which
  # keeps the compiled model tests to one (they dominate this file's time).
  family = _family("fsq")
  # One compiled init instead of dozens of eagerly compiled ops.
  params = nn.unbox(jax.jit(family.init)(jax.random.key(0), family.dummy_batch(2))["params"])
  image = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3), minval=-1, maxval=1)
  return "fsq", family, params, image


def test_fsq_implicit_codebook_and_round_trip():
  levels = (8, 5, 5, 5)
  assert Q.fsq_codebook_size(levels) == 1000
  assert Q.QuantizerConfig(kind="fsq", levels=levels).size == 1000
  assert Q.QuantizerConfig(kind="fsq", levels=levels).dim == 4
  codes = Q.fsq_indices_to_codes(jnp.arange(1000), levels)
  assert codes.shape == (1000, 4)
  # Every index has its own code, and each channel takes exactly its L values (d - L//2)/(L//2).
  assert len({tuple(c) for c in np.asarray(codes).tolist()}) == 1000
  np.testing.assert_array_equal(np.unique(codes[:, 0]), (np.arange(8) - 4) / 4)
  np.testing.assert_array_equal(np.unique(codes[:, 1]), (np.arange(5) - 2) / 2)
  np.testing.assert_array_equal(Q.fsq_codes_to_indices(codes, levels), np.arange(1000))
  # Mixed radix, first level fastest: index 1 is the second value of channel 0 only.
  np.testing.assert_array_equal(codes[1], [-0.75, -1, -1, -1])
  np.testing.assert_array_equal(codes[8], [-1, -0.5, -1, -1])


def test_fsq_quantize_values():
  levels = (8, 5)
  # z = 0 sits on the middle level of each channel: code 0, index 4 * 1 + 2 * 8 = 20.
  zero = Q.fsq_quantize(jnp.zeros((1, 2)), levels)
  np.testing.assert_array_equal(zero, [[0.0, 0.0]])
  assert int(Q.fsq_codes_to_indices(zero, levels)[0]) == 20
  # Large |z| saturates at the extreme levels; a sweep reaches every level exactly.
  z = jnp.stack([jnp.linspace(-6, 6, 2001)] * 2, axis=-1)
  q = np.asarray(Q.fsq_quantize(z, levels))
  np.testing.assert_array_equal(np.unique(q[:, 0]), (np.arange(8) - 4) / 4)
  np.testing.assert_array_equal(np.unique(q[:, 1]), (np.arange(5) - 2) / 2)


def test_straight_through_is_identity_gradient():
  z = jax.random.normal(jax.random.key(0), (5, 4))
  w = jax.random.normal(jax.random.key(1), (5, 4))
  grad = jax.grad(lambda z: jnp.sum(Q.fsq_quantize(z, (8, 5, 5, 5)) * w))(z)
  # d quantize / d z is the derivative of the tanh bound (the rounding passes gradients).
  bound_grad = jax.grad(lambda z: jnp.sum(Q.fsq_bound(z, (8, 5, 5, 5)) / jnp.asarray(
      [4.0, 2.0, 2.0, 2.0]) * w))(z)
  np.testing.assert_allclose(grad, bound_grad, rtol=1e-6)
  np.testing.assert_array_equal(jax.grad(lambda x: jnp.sum(Q.straight_through(
      x, jnp.round(x)) * w))(z), w)


def test_vq_codebook_round_trip_and_losses():
  cfg = Q.QuantizerConfig(kind="vq", codebook_size=6, code_dim=3, beta=0.25)
  module = Q.Quantizer(cfg)
  z = jax.random.normal(jax.random.key(0), (2, 4, 3))
  params = jax.jit(module.init)(jax.random.key(1), z)["params"]
  table = params["codebook"]
  # Each code is its own nearest neighbour: codes -> indices -> codes is exact.
  _, idx, _, _ = module.apply({"params": params}, table[None])
  np.testing.assert_array_equal(idx[0], np.arange(6))
  np.testing.assert_array_equal(module.apply({"params": params}, idx, method=Q.Quantizer.codes),
                                table[None])
  z_q, idx, loss, metrics = module.apply({"params": params}, z)
  e = table[idx]
  dist = np.sum((np.asarray(z)[..., None, :] - np.asarray(table)) ** 2, -1)
  np.testing.assert_array_equal(idx, np.argmin(dist, -1))
  np.testing.assert_allclose(z_q, e, atol=1e-6)
  mse = float(np.mean((np.asarray(z) - np.asarray(e)) ** 2))
  np.testing.assert_allclose(loss, 1.25 * mse, rtol=1e-5)
  np.testing.assert_allclose(metrics["commitment_loss"], mse, rtol=1e-5)
  # The codebook term moves only the codes; the commitment term only the latents.
  g_z = jax.grad(lambda z: module.apply({"params": params}, z)[2])(z)
  np.testing.assert_allclose(g_z, 0.25 * 2 * (z - e) / z.size, rtol=1e-5, atol=1e-7)
  g_t = jax.grad(lambda p: module.apply({"params": p}, z)[2])(params)["codebook"]
  want = np.zeros((6, 3))
  np.add.at(want, np.asarray(idx).ravel(), (2 * (e - z) / z.size).reshape(-1, 3))
  np.testing.assert_allclose(g_t, want, rtol=1e-5, atol=1e-7)


def test_usage_metrics():
  m = Q.usage_metrics(jnp.array([0, 0, 1, 1, 2, 2, 3, 3]), 8)
  np.testing.assert_allclose(m["codebook_perplexity"], 4.0, rtol=1e-6)
  assert float(m["codebook_usage"]) == 0.5


def test_shapes_and_reconstruction_gradient_reaches_encoder(micro):
  kind, family, params, image = micro

  @jax.jit
  def run(params, image):
    ids = family.predict_indices(params, image)
    recon_loss = lambda p: jnp.mean((family.reconstruct(p, image) - image) ** 2)
    return (ids, family.decode_indices(params, ids), family.reconstruct(params, image),
            jax.grad(recon_loss)(params), family.loss(params, {"image": image}, train=False))

  ids, decoded, recon, grads, (loss, metrics) = run(params, image)
  assert ids.shape == (2, 4, 4) and ids.dtype == jnp.int32
  assert 0 <= int(ids.min()) and int(ids.max()) < 16
  assert decoded.shape == (2, 32, 32, 3)
  # Decoding the ids equals the full forward pass (codes <-> indices agree inside the model).
  np.testing.assert_allclose(decoded, recon, rtol=1e-5, atol=1e-5)
  # The straight-through estimator carries the reconstruction gradient into the encoder.
  for name in ("stem", "proj"):
    assert float(jnp.abs(grads["encoder"][name]["kernel"]).max()) > 0, (kind, name)
  recon, image = np.asarray(recon, np.float64), np.asarray(image, np.float64)
  mse = np.mean((recon - image) ** 2)
  np.testing.assert_allclose(metrics["recon_mse"], mse, rtol=1e-5)
  psnr = np.mean(10 * np.log10(4 / np.mean((recon - image) ** 2, axis=(1, 2, 3))))
  np.testing.assert_allclose(metrics["psnr"], psnr, rtol=1e-5)
  np.testing.assert_allclose(loss, mse + float(metrics["quantizer_loss"]), rtol=1e-5)


@pytest.mark.parametrize("kind", ["fsq", "vq"])
def test_parameter_counts(kind):
  family = _family(kind)
  params = jax.eval_shape(family.init, jax.random.key(0), family.dummy_batch(1))["params"]
  n = sum(x.size for x in jax.tree.leaves(nn.unbox(params)))
  # micro: patch 4, channels (8, 8), one res block per level, latent D = 2 (FSQ (4, 4)) or 4
  # (VQ code_dim 4, plus the 16 x 4 codebook). A res block is 2 GroupNorms (16) + 2 3x3 convs
  # (584): 1200. Encoder: stem 4*4*3*8+8 = 392, 3 res blocks, down 4*4*8*8+8 = 1032, norm 16,
  # proj 8D+D. Decoder: stem 9*D*8+8, 3 res blocks, up 584, norm 16, out 8*48+48 = 432.
  d = 2 if kind == "fsq" else 4
  want = (392 + 3 * 1200 + 1032 + 16 + 9 * d) + (72 * d + 8 + 3 * 1200 + 584 + 16 + 432)
  want += 64 if kind == "vq" else 0
  assert n == want == {"fsq": 9842, "vq": 10068}[kind]


def test_bad_config_names_the_field():
  with pytest.raises(ValueError, match="quantizer.kind"):
    Q.QuantizerConfig(kind="lfq")
  config = config_lib.load_config("configs/vq.py:micro", ["model.image_size=36"])
  with pytest.raises(ValueError, match="vq.image_size 36"):
    family_lib.build(config.model)
