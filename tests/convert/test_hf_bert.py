"""transformers BertModel <-> mmjax Bert: hidden states, pooler and sentence embeddings match.

A small randomised BertModel checks every parameter; the real all-MiniLM-L6-v2 (fetched by
scripts/fetch_weights.sh when absent, never skipped) checks sentence embeddings to 1e-5.
"""

import os
import subprocess

import jax
import numpy as np
import pytest
import torch
import transformers

import reference_models as R
from mmjax.convert import common
from mmjax.convert import hf_bert
from mmjax.models import bert

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def small_reference():
  torch.manual_seed(0)
  config = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=2, intermediate_size=48,
                                   max_position_embeddings=24, type_vocab_size=2)
  model = transformers.BertModel(config)
  R.randomise(model)
  return config, model.eval()


def inputs(batch=3, length=12, vocab=64, seed=0):
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, vocab, (batch, length))
  mask = np.ones((batch, length), np.int64)
  for i, n in enumerate([length, 5, 8][:batch]):
    mask[i, n:] = 0
  ids = ids * mask
  types = (rng.random((batch, length)) < 0.5).astype(np.int64) * mask
  return ids, mask, types


def rel_err(ours, theirs):
  theirs = np.asarray(theirs, np.float64)
  return float(np.max(np.abs(np.asarray(ours, np.float64) - theirs)) / np.max(np.abs(theirs)))


@pytest.mark.parametrize("scan", [True, False])
def test_small_bert_parity(scan):
  config, ref = small_reference()
  fields = hf_bert.bert_fields(config.to_dict())
  params = hf_bert.to_mmjax(ref.state_dict(), fields, scan=scan)
  ids, mask, types = inputs()
  with torch.no_grad():
    out = ref(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
              token_type_ids=torch.from_numpy(types))
  model = bert.Bert(**fields, scan=scan)
  pooled, tokens = model.apply({"params": params}, ids, mask, types)
  hidden = out.last_hidden_state.numpy()
  ref_mean = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
  errs = {"hidden": rel_err(tokens, hidden),
          "pooler": rel_err(pooled, out.pooler_output.numpy()),
          "mean_pool": rel_err(bert.mean_pool(tokens, mask), ref_mean)}
  print("bert parity (max abs diff / max abs ref):", errs)
  assert max(errs.values()) < 1e-5, errs


def test_bert_round_trip_is_bit_exact():
  config, ref = small_reference()
  fields = hf_bert.bert_fields(config.to_dict())
  model = bert.Bert(**fields)
  ids, mask, types = inputs()
  params = jax.device_get(model.init(jax.random.key(3), ids, mask, types)["params"])
  state = hf_bert.from_mmjax(params, fields)
  ref.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=True)
  back = common.flatten(hf_bert.to_mmjax(ref.state_dict(), fields))
  mine = common.flatten(params)
  assert back.keys() == mine.keys()
  for name, value in mine.items():
    np.testing.assert_array_equal(back[name], value, err_msg=name)


def test_bert_key_mismatch_is_named():
  config, ref = small_reference()
  fields = hf_bert.bert_fields(config.to_dict())
  state = common.state_dict_to_numpy(ref.state_dict())
  del state["encoder.layer.1.output.dense.bias"]
  state["cls.predictions.bias"] = np.zeros(64, np.float32)
  with pytest.raises(common.KeyMismatchError) as err:
    hf_bert.to_mmjax(state, fields)
  assert "encoder.layer.1.output.dense.bias" in str(err.value)
  assert "cls.predictions.bias" in str(err.value)


def minilm_dir() -> str:
  """all-MiniLM-L6-v2's files, fetched by scripts/fetch_weights.sh if they are missing."""
  # As mmjax.data.datasets.resolve_data_dir (not imported: it pulls in tensorflow_datasets).
  data_dir = os.path.expanduser(os.environ.get("MMJAX_DATA_DIR") or "~/mmjax_data")
  path = os.path.join(data_dir, "weights", "all-MiniLM-L6-v2")
  if not os.path.exists(os.path.join(path, "model.safetensors")):
    subprocess.run(["bash", os.path.join(REPO_ROOT, "scripts", "fetch_weights.sh"), data_dir],
                   check=True)
  return path


def test_minilm_sentence_embeddings():
  path = minilm_dir()
  tokenizer = transformers.AutoTokenizer.from_pretrained(path)
  ref = transformers.BertModel.from_pretrained(path).eval()
  sentences = ["A red cube sits left of a small blue sphere.",
               "Two green cylinders.", "mmjax converts weights with numerical parity, "
               "digit for digit, from torch to JAX."]
  enc = tokenizer(sentences, padding=True, return_tensors="np")
  assert (enc["attention_mask"] == 0).any()
  with torch.no_grad():
    hidden = ref(**{k: torch.from_numpy(v) for k, v in enc.items()}).last_hidden_state.numpy()
  mask = enc["attention_mask"]
  ref_mean = (hidden * mask[..., None]).sum(1) / np.clip(mask.sum(1, keepdims=True), 1e-9, None)
  ref_emb = ref_mean / np.linalg.norm(ref_mean, axis=-1, keepdims=True)

  fields = hf_bert.bert_fields(ref.config.to_dict())
  params = hf_bert.to_mmjax(common.load_state_dict(os.path.join(path, "model.safetensors")),
                            fields)
  _, tokens = bert.Bert(**fields).apply({"params": params}, enc["input_ids"], mask,
                                        enc["token_type_ids"])
  mean = np.asarray(bert.sentence_embedding(tokens, mask, normalize=False))
  emb = np.asarray(bert.sentence_embedding(tokens, mask))
  errs = {"mean_pool_abs": float(np.abs(mean - ref_mean).max()),
          "normalized_abs": float(np.abs(emb - ref_emb).max()),
          "mean_pool_rel": rel_err(mean, ref_mean)}
  print("all-MiniLM-L6-v2 parity:", errs)
  assert errs["mean_pool_abs"] < 1e-5 and errs["normalized_abs"] < 1e-5, errs
