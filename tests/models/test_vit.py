"""ViT: resolution changes through position-embedding interpolation, pooling heads, shapes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.models import vit

SMALL = dict(patch_size=16, width=32, depth=2, num_heads=2, output_dim=16)


def test_built_at_224_runs_at_336():
  model = vit.ViT(image_size=224, **SMALL)
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 224, 224, 3)))
  assert variables["params"]["posemb"].value.shape == (1 + 14 * 14, 32)
  image = jax.random.uniform(jax.random.key(1), (2, 336, 336, 3), minval=-1, maxval=1)
  pooled, tokens = jax.jit(model.apply)(variables, image)
  assert pooled.shape == (2, 16) and tokens.shape == (2, 21 * 21, 32)
  assert np.all(np.isfinite(pooled))


def test_resize_posemb_is_identity_at_same_grid_and_bilinear_otherwise():
  posemb = jnp.arange(4 * 4 * 2, dtype=jnp.float32).reshape(16, 2)
  np.testing.assert_array_equal(vit.resize_posemb(posemb, (4, 4), (4, 4)), posemb)
  big = vit.resize_posemb(posemb, (4, 4), (8, 8)).reshape(8, 8, 2)
  # A linear ramp stays a linear ramp in the interior under bilinear resizing.
  grid = posemb.reshape(4, 4, 2)
  assert big[0, 0, 0] == grid[0, 0, 0] and big[-1, -1, 0] == grid[-1, -1, 0]
  np.testing.assert_allclose(np.diff(big[2:6, 3, 0]), np.diff(big[2:6, 3, 0])[0])


@pytest.mark.parametrize("pool,class_token,n_tokens", [("tok", True, 4), ("gap", False, 4),
                                                       ("map", False, 4)])
def test_pools(pool, class_token, n_tokens):
  model = vit.ViT(image_size=32, pool=pool, class_token=class_token, **SMALL)
  variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  image = jax.random.uniform(jax.random.key(1), (3, 32, 32, 3))
  pooled, tokens = model.apply(variables, image)
  assert pooled.shape == (3, 16) and tokens.shape == (3, n_tokens, 32)
  # Pooled features depend on each example alone (no mixing across the batch).
  pooled_0, _ = model.apply(variables, image[:1])
  np.testing.assert_allclose(pooled[:1], pooled_0, atol=1e-5)


def test_patch_dropout_keeps_the_class_token_and_drops_patches():
  model = vit.ViT(image_size=32, patch_size=8, width=16, depth=1, num_heads=2, patch_dropout=0.5,
                  pool="tok")
  variables = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  image = jnp.ones((2, 32, 32, 3))
  _, train_tokens = model.apply(variables, image, train=True, rngs={"dropout": jax.random.key(2)})
  _, eval_tokens = model.apply(variables, image, train=False)
  assert train_tokens.shape == (2, 8, 16) and eval_tokens.shape == (2, 16, 16)


def test_bad_input_names_the_problem():
  model = vit.ViT(image_size=32, **SMALL)
  with pytest.raises(ValueError, match="divisible by patch_size"):
    model.init(jax.random.key(0), jnp.zeros((1, 40, 40, 3)))
  with pytest.raises(ValueError, match=r"\[B, H, W, 3\]"):
    model.init(jax.random.key(0), jnp.zeros((1, 32, 32)))


def test_params_carry_logical_axes():
  model = vit.ViT(image_size=32, **SMALL)
  variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  specs = nn.get_partition_spec(variables)["params"]
  assert tuple(specs["blocks"]["attn"]["query"]["kernel"]) == ("layers", "embed", "heads", "kv")
  assert tuple(specs["blocks"]["mlp"]["fc1"]["kernel"]) == ("layers", "embed", "mlp")
