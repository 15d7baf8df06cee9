"""LiT with the real all-MiniLM-L6-v2 (fetched by scripts/fetch_weights.sh when absent, never
skipped): configs/clip.py:lit_tiny's init_from loads it into the text tower through the hf_bert
source, the `minilm` tokenizer gives transformers' ids, and the tower's pooled features (before
the projection) equal sentence-transformers' mean pooling of transformers' BertModel."""

import os

import flax.linen as nn
import jax
import numpy as np
import pytest
import torch
import transformers

from mmjax import config_lib, train
from mmjax.data import tokenizers
from mmjax.models import family as family_lib

from test_hf_bert import minilm_dir, rel_err  # noqa: E402  pylint: disable=wrong-import-position

SENTENCES = ["A red cube sits LEFT of a small blue sphere.", "two green cylinders",
             "Héllo naïve café: a photo of 3 tux-paint stamps!!",
             "a very long caption " * 12]


@pytest.fixture(scope="module")
def minilm():
  path = minilm_dir()
  return path, transformers.AutoTokenizer.from_pretrained(path)


def test_minilm_tokenizer_matches_transformers(minilm):
  path, reference = minilm
  data_dir = os.path.dirname(os.path.dirname(path))  # DATA_DIR/weights/all-MiniLM-L6-v2
  tok = tokenizers.get_tokenizer("minilm", data_dir=data_dir)
  assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.vocab_size) == (0, 101, 102, 30522)
  ours = tok.pad_ids(SENTENCES, 32)
  theirs = reference(SENTENCES, padding="max_length", truncation=True, max_length=32,
                     return_tensors="np")["input_ids"]
  np.testing.assert_array_equal(ours, theirs)
  with pytest.raises(FileNotFoundError, match="fetch_weights.sh"):
    tokenizers.get_tokenizer("minilm", data_dir=os.path.join(data_dir, "nowhere"))


def test_lit_tiny_text_tower_is_minilm(minilm):
  path, reference = minilm
  config = config_lib.load_config("configs/clip.py:lit_tiny")
  assert config.init_from == ("text/bert=hf_bert:weights/all-MiniLM-L6-v2:",)
  family = family_lib.build(config.model)
  abstract = jax.eval_shape(family.init, jax.random.key(0), family.dummy_batch(1))["params"]
  # Zeros in the model's shapes (no init compile); init_from fills the text tower.
  params = jax.tree_util.tree_map(lambda x: np.zeros(x.shape, x.dtype), nn.unbox(abstract))
  shardings = jax.tree_util.tree_map(lambda _: jax.sharding.SingleDeviceSharding(
      jax.devices()[0]), params)
  data_dir = os.path.dirname(os.path.dirname(path))  # DATA_DIR/weights/all-MiniLM-L6-v2
  params = train.apply_init_from(params, config.init_from, shardings, family, data_dir=data_dir)
  assert "pooler" not in params["text"]["bert"]
  np.testing.assert_array_equal(params["text"]["proj"]["kernel"], 0)  # the head is ours
  tok = tokenizers.get_tokenizer("minilm", data_dir=data_dir)
  ids = tok.pad_ids(SENTENCES, config.data.text_length)
  assert (ids == 0).any() and (ids[-1] != 0).all()  # padded rows and a truncated one
  features = jax.jit(lambda p, t: family.module.apply(
      {"params": p}, t, method=lambda m, x: m.text_tower.features(x)[0]))(params, ids)
  ref = transformers.BertModel.from_pretrained(path).eval()
  mask = (ids != 0).astype(np.int64)
  with torch.no_grad():
    hidden = ref(input_ids=torch.from_numpy(ids.astype(np.int64)),
                 attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()
  want = (hidden * mask[..., None]).sum(1) / np.clip(mask.sum(1, keepdims=True), 1e-9, None)
  err = rel_err(features, want)
  print("LiT MiniLM text features vs transformers mean pooling (max abs diff / max abs):", err)
  assert err < 1e-5, err
