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


def test_conv_stem_gives_the_patch_grid_with_counted_parameters():
  """stem='conv' (Xiao et al. 2021): log2(patch) stride-2 3x3 convs (3->32->64->128, biases)
  and a 1x1 conv to the width, the same 8 x 8 token grid as the 8-px patch embedding."""
  model = vit.ViT(image_size=64, patch_size=8, width=128, depth=1, num_heads=4, stem="conv")
  variables = model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  stem = nn.unbox(variables["params"]["stem"])
  counts = {k: sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(v))
            for k, v in stem.items()}
  assert counts == {"conv_0": 9 * 3 * 32 + 32, "conv_1": 9 * 32 * 64 + 64,
                    "conv_2": 9 * 64 * 128 + 128, "proj": 128 * 128}
  assert "patch_embed" not in variables["params"]
  image = jax.random.uniform(jax.random.key(1), (2, 64, 64, 3), minval=-1, maxval=1)
  pooled, tokens = model.apply(variables, image)
  assert tokens.shape == (2, 64, 128) and pooled.shape == (2, 128)
  # Each token sees only its neighbourhood before attention: a change in the top-left 8 x 8
  # patch moves the stem's output at grid cell (0, 0) and leaves the far corner alone.
  stem_out = lambda x: vit.ConvStem(128, 8).apply({"params": stem}, x)
  moved = image.at[:, :8, :8].add(0.5)
  diff = jnp.abs(stem_out(moved) - stem_out(image)).sum(-1)
  assert float(diff[:, 0, 0].min()) > 0 and float(diff[:, 4:, 4:].max()) == 0


def test_conv_stem_needs_a_power_of_two_patch():
  with pytest.raises(ValueError, match="power-of-two patch_size"):
    vit.ViT(image_size=48, patch_size=6, width=32, depth=1, num_heads=2, stem="conv").init(
        jax.random.key(0), jnp.zeros((1, 48, 48, 3)))
  with pytest.raises(ValueError, match="unknown ViT stem 'cnn'"):
    vit.ViT(image_size=32, patch_size=8, width=32, depth=1, num_heads=2, stem="cnn").init(
        jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
