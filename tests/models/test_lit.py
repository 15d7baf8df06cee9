"""LiT (configs/clip.py:lit_micro): the kind='bert' text tower, its lock, and the converter-backed
init_from source. The real all-MiniLM-L6-v2 is checked in tests/convert/test_lit_minilm.py."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from safetensors import numpy as safetensors_numpy

from mmjax import config_lib, losses, optim, restore, summary, train
from mmjax.convert import hf_bert, open_clip
from mmjax.models import bert as bert_lib
from mmjax.models import family as family_lib


@pytest.fixture(scope="module")
def lit():
  config = config_lib.load_config("configs/clip.py:lit_micro")
  family = family_lib.build(config.model)
  params = nn.unbox(jax.jit(family.init)(jax.random.key(0), family.dummy_batch(1)))["params"]
  return config, family, params


def batch(seed=0, size=8):
  rng = np.random.default_rng(seed)
  text = rng.integers(5, 400, (size, 16)).astype(np.int32)
  for row, length in enumerate(rng.integers(3, 16, size)):
    text[row, length:] = 0  # padding (pad_id 0)
  return {"image": rng.uniform(-1, 1, (size, 32, 32, 3)).astype(np.float32), "text": text}


def recording(tx):
  """`tx` whose state also keeps the last gradient it was given: the trainer's full gradient."""
  def init(params):
    return tx.init(params), jax.tree_util.tree_map(jnp.zeros_like, params)

  def update(grads, state, params=None):
    updates, inner = tx.update(grads, state[0], params)
    return updates, (inner, grads)
  return optax.GradientTransformation(init, update)


def test_text_tower_is_locked_and_the_rest_trains(lit):
  config, family, params = lit
  trainable = train.trainable_mask(config, family, params)
  assert not any(jax.tree_util.tree_leaves(trainable["text"]["bert"]))
  assert all(jax.tree_util.tree_leaves(trainable["text"]["proj"]))
  assert all(jax.tree_util.tree_leaves(trainable["image"]))
  inner, _ = optim.make_optimizer(config.optim, params, trainable)
  tx = recording(inner)
  data = batch()
  # Unlocked, the text embeddings do depend on the BERT weights: the lock is what zeroes their
  # gradient (the text side alone, to compile less).
  def text_sum(text_params):
    out = family.module.apply({"params": dict(params, text=text_params)}, text=data["text"])
    return jnp.sum(out["text_emb"] * jnp.arange(out["text_emb"].shape[-1]))
  free = jax.jit(jax.grad(text_sum))(params["text"])
  assert optax.tree.norm(free["bert"]) > 0
  step = jax.jit(train.make_train_step(family, tx, trainable, config))
  new, state, metrics = step(params, tx.init(params), data, jax.random.key(1), jnp.asarray(3))
  grads = state[1]
  assert np.isfinite(metrics["loss"])
  for leaf in jax.tree_util.tree_leaves(grads["text"]["bert"]):
    np.testing.assert_array_equal(leaf, 0)
  jax.tree_util.tree_map(np.testing.assert_array_equal, new["text"]["bert"],
                         params["text"]["bert"])
  for part in (("image", "patch_embed", "kernel"), ("image", "proj", "kernel"),
               ("text", "proj", "kernel")):
    before, after, grad = params, new, grads
    for key in part:
      before, after, grad = before[key], after[key], grad[key]
    assert np.abs(np.asarray(grad)).max() > 0, part
    assert not np.array_equal(after, before), part
  # Frozen leaves keep no Adam moments: mu / nu exist for the trainable leaves only.
  # (Counted over leaves of rank > 0, which leaves out Adam's step counts.)
  ranked = jax.tree_util.tree_leaves(jax.tree_util.tree_map(
      lambda t, p: bool(t) and p.ndim > 0, trainable, params))
  moments = [x for x in jax.tree_util.tree_leaves(state[0]) if x.ndim > 0]
  assert len(moments) == 2 * sum(ranked)


def test_text_embedding_is_projected_masked_mean_of_bert(lit):
  config, family, params = lit
  text = batch(1)["text"]
  out = family.predict_embeddings(params, {"text": text})["text_emb"]
  fields = {k: v for k, v in config.model.text.items()
            if k not in ("kind", "context_length", "pad_id", "proj_bias")}
  enc = bert_lib.Bert(**fields)
  mask = (text != 0).astype(np.int32)
  _, tokens = enc.apply({"params": params["text"]["bert"]}, text, mask)
  pooled = np.asarray(bert_lib.mean_pool(tokens, mask))
  want = losses.l2_normalize(pooled @ np.asarray(params["text"]["proj"]["kernel"]))
  np.testing.assert_allclose(out, want, atol=1e-5)
  # Padding is neither attended to nor pooled: a longer padded text embeds the same.
  longer = np.concatenate([text[:, :12], np.zeros((8, 4), np.int32)], 1)
  longer[:, :12] = np.where(np.arange(12) < (text != 0).sum(1)[:, None], text[:, :12], 0)
  short = (text != 0).sum(1) <= 12
  again = family.predict_embeddings(params, {"text": longer})["text_emb"]
  np.testing.assert_allclose(np.asarray(again)[short], np.asarray(out)[short], atol=1e-5)


def test_transformer_kind_is_the_default_and_unchanged():
  plain = config_lib.load_config("configs/clip.py:micro")
  assert "kind" not in plain.model.text
  named = plain.model.copy_and_resolve_references()
  with named.unlocked():
    named.text.kind = "transformer"
  shapes = [jax.eval_shape(f.init, jax.random.key(0), f.dummy_batch(1))["params"]
            for f in (family_lib.build(plain.model), family_lib.build(named))]
  assert jax.tree_util.tree_structure(shapes[0]) == jax.tree_util.tree_structure(shapes[1])
  assert "token_embed" in shapes[0]["text"] and "bert" not in shapes[0]["text"]
  named.text.kind = "gpt"
  with pytest.raises(ValueError, match="model.text.kind='gpt'"):
    family_lib.build(named)
  lit_model = config_lib.load_config("configs/clip.py:lit_micro").model
  with pytest.raises(ValueError, match="model.text.kind='bert'.*no open_clip layout"):
    open_clip.rules_for(lit_model)


@pytest.fixture(scope="module")
def small_bert_dir(tmp_path_factory, lit):
  """A random BERT shaped like lit_micro's encoder (with a pooler) saved as a Hugging Face
  BertModel directory: config.json + model.safetensors (the converter's parity with
  transformers is tests/convert/test_hf_bert.py's; the real MiniLM is test_lit_minilm.py's)."""
  text = lit[0].model.text
  hf = dict(vocab_size=text.vocab_size, hidden_size=text.width, num_hidden_layers=text.depth,
            num_attention_heads=text.num_heads, intermediate_size=4 * text.width,
            max_position_embeddings=text.max_length, type_vocab_size=text.type_vocab_size,
            hidden_act="gelu", layer_norm_eps=text.norm_eps, model_type="bert")
  fields = hf_bert.bert_fields(hf)
  ids = np.ones((1, 4), np.int32)
  params = jax.jit(bert_lib.Bert(**fields).init)(jax.random.key(5), ids)["params"]
  params = jax.tree_util.tree_map(np.asarray, jax.device_get(nn.unbox(params)))
  path = tmp_path_factory.mktemp("small_bert")
  safetensors_numpy.save_file({k: np.ascontiguousarray(v) for k, v in
                               hf_bert.from_mmjax(params, fields).items()},
                              str(path / "model.safetensors"))
  (path / "config.json").write_text(json.dumps(hf), encoding="utf-8")
  return str(path), params


def test_init_from_hf_bert_source(lit, small_bert_dir):
  config, family, params = lit
  path, want = small_bert_dir
  shardings = jax.tree_util.tree_map(lambda _: jax.sharding.SingleDeviceSharding(
      jax.devices()[0]), params)
  got = train.apply_init_from(params, (f"text/bert=hf_bert:{path}:",), shardings, family)
  assert "pooler" in want and "pooler" not in got["text"]["bert"]  # LiT pools the tokens
  want = {k: v for k, v in want.items() if k != "pooler"}
  jax.tree_util.tree_map(np.testing.assert_array_equal, got["text"]["bert"], want)
  jax.tree_util.tree_map(np.testing.assert_array_equal, got["image"], params["image"])
  jax.tree_util.tree_map(np.testing.assert_array_equal, got["text"]["proj"],
                         params["text"]["proj"])


def test_hf_bert_source_errors(lit, small_bert_dir, tmp_path):
  config, family, params = lit
  shardings = jax.tree_util.tree_map(lambda _: None, params)
  with pytest.raises(FileNotFoundError, match="fetch_weights.sh") as err:
    train.apply_init_from(params, (f"text/bert=hf_bert:{tmp_path}:",), shardings, family)
  assert "model.safetensors" in str(err.value) and "config.json" in str(err.value)
  with pytest.raises(FileNotFoundError, match=str(tmp_path / "data" / "weights")):
    restore.load_init_source("hf_bert:weights/x", data_dir=str(tmp_path / "data"))
  with pytest.raises(ValueError, match="'DST=hf_bert:DIR:'"):
    train.apply_init_from(params, ("text/bert=hf_bert:",), shardings, family)
  other = config.model.copy_and_resolve_references()
  other.text.activation = "gelu_tanh"
  with pytest.raises(ValueError, match="config model.text.activation='gelu_tanh'"):
    train.apply_init_from(params, (f"text/bert=hf_bert:{small_bert_dir[0]}:",), shardings,
                          family_lib.build(other))
  with pytest.raises(ValueError, match="only initialise the text tower"):
    train.apply_init_from(params, (f"image=hf_bert:{small_bert_dir[0]}:",), shardings, family)


def test_summary_counts_the_locked_tower_as_frozen(lit):
  _, _, params = lit
  table = summary.summarize("configs/clip.py:lit_micro")
  n_bert = sum(np.size(x) for x in jax.tree_util.tree_leaves(params["text"]["bert"]))
  n_all = sum(np.size(x) for x in jax.tree_util.tree_leaves(params))
  assert f"trainable_params: {n_all - n_bert}" in table and f"total_params: {n_all}" in table
  assert any(line.split()[:1] == ["bert"] and line.endswith("no") for line in table.splitlines())
