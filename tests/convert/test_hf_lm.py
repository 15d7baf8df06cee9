"""transformers GPT-2 / Llama <-> mmjax DecoderLM: logits, KV-cache greedy decoding, round trips.

Small randomised reference models (every parameter, norms included) check the mapping of every
key; parity is max |ours - theirs| / max |theirs| (fp32, 1e-4 allowed). Greedy decoding runs on
OUR KV cache (LMFamily.prefill / decode_step); the reference scores the same sequence in one
teacher-forced pass, and a step counts when the reference's top-2 logit margin exceeds the
tolerance (below it either token is a correct argmax).
"""

import json

import jax
import ml_collections
import numpy as np
import pytest
import torch
import transformers

import reference_models as R
from mmjax.convert import common
from mmjax.convert import hf_lm
from mmjax.models import family as family_lib

TOL = 1e-4
VOCAB = 96
STEPS = 20


def gpt2_config():
  return transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4,
                                 n_positions=48, bos_token_id=0, eos_token_id=0)


def llama_config(tied: bool, bias: bool):
  # GQA (4 query heads over 2 kv heads), a non-default rotary base and norm epsilon, so a
  # dropped config field shows up in the logits.
  return transformers.LlamaConfig(
      vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
      rope_theta=500.0, rms_norm_eps=1e-5, tie_word_embeddings=tied, attention_bias=bias,
      mlp_bias=bias, bos_token_id=0, eos_token_id=1, pad_token_id=None)


CONFIGS = {"gpt2": gpt2_config, "llama_gqa_tied": lambda: llama_config(True, False),
           "llama_gqa_untied_bias": lambda: llama_config(False, True)}


def reference(name: str, seed: int = 0):
  torch.manual_seed(seed)
  config = CONFIGS[name]()
  config._attn_implementation = "eager"  # pylint: disable=protected-access
  model = transformers.AutoModelForCausalLM.from_config(config)
  R.randomise(model)
  if config.tie_word_embeddings:
    model.tie_weights()
  return model.eval()


def rel_err(ours, theirs) -> float:
  theirs = np.asarray(theirs, np.float64)
  return float(np.max(np.abs(np.asarray(ours, np.float64) - theirs)) / np.max(np.abs(theirs)))


def family(fields: dict, scan: bool = True):
  model = ml_collections.ConfigDict(dict(fields, family="lm", scan=scan))
  return family_lib.build(model)


def random_params(fam, seed: int = 0):
  """Our params filled with numpy noise (std 0.2) at the shapes of `fam.init` (a jitted init
  compiles slowly on CPU; any values serve a bit-exact round trip)."""
  shapes = jax.eval_shape(fam.init, jax.random.key(0), fam.dummy_batch(1))["params"]
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: (0.2 * rng.standard_normal(s.shape)).astype(s.dtype), shapes,
                      is_leaf=lambda s: hasattr(s, "shape"))


def ref_logits(model, tokens: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model(torch.from_numpy(tokens.astype(np.int64))).logits.numpy()


def greedy_with_cache(fam, params, prompt: np.ndarray, lengths: np.ndarray, steps: int):
  """Our greedy continuation of right-padded prompts [B, T] (row b: lengths[b] tokens) on the
  KV cache: (prefill logits [B, T, V], tokens [B, steps], step logits [B, steps, V])."""
  cache = fam.init_cache(prompt.shape[0], prompt.shape[1] + steps)
  prefill_logits, cache = jax.jit(fam.prefill)(params, {"tokens": prompt.astype(np.int32)}, cache,
                                               lengths.astype(np.int32))
  step = jax.jit(fam.decode_step)
  tokens, all_logits = [], []
  last = np.asarray(prefill_logits)[np.arange(len(lengths)), lengths - 1]
  for _ in range(steps):
    all_logits.append(last)
    tokens.append(last.argmax(-1))
    logits, cache = step(params, tokens[-1][:, None].astype(np.int32), cache)
    last = np.asarray(logits[:, -1])
  return np.asarray(prefill_logits), np.stack(tokens, 1), np.stack(all_logits, 1)


def check_greedy(ref_model, fam, params, prompt, lengths, steps, tol=TOL):
  """Our cached greedy decoding vs the reference scoring the same tokens (teacher-forced).

  Returns (stats, prefill logits, generated tokens); a step is decisive when the reference's
  top-2 margin exceeds tol * max |reference logits|, and must then give the same token.
  """
  prefill, ours, our_logits = greedy_with_cache(fam, params, prompt, lengths, steps)
  theirs = np.stack([ref_logits(ref_model, np.concatenate([row[:n], gen])[None])[0, n - 1:-1]
                     for row, n, gen in zip(prompt, lengths, ours)])
  scale = np.abs(theirs).max()
  top2 = np.sort(theirs, axis=-1)[..., -2:]
  decisive = (top2[..., 1] - top2[..., 0]) > tol * scale
  agree = ours == theirs.argmax(-1)
  stats = {"cached_logits_rel_err": rel_err(our_logits, theirs),
           "decisive_steps": decisive.sum(1).tolist(), "of": steps,
           "mismatches": int((decisive & ~agree).sum())}
  return stats, prefill, ours


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_and_cached_greedy_match_transformers(name):
  ref = reference(name)
  fields = hf_lm.lm_fields(ref.config.to_dict())
  fam = family(fields)
  params = hf_lm.to_mmjax(ref.state_dict(), fields)
  rng = np.random.default_rng(0)
  tokens = rng.integers(0, VOCAB, (2, 16))
  err = rel_err(fam.module.apply({"params": params}, tokens.astype(np.int32)),
                ref_logits(ref, tokens))
  # Ragged prompts (6 and 4 tokens, right-padded) decode together on one cache.
  stats, _, _ = check_greedy(ref, fam, params, tokens[:, :6], np.array([6, 4]), STEPS)
  print(f"{name} parity: logits rel err {err:.2e}; greedy {stats}")
  assert err < TOL
  assert stats["cached_logits_rel_err"] < TOL, stats
  assert min(stats["decisive_steps"]) >= 0.9 * STEPS and stats["mismatches"] == 0, stats


@pytest.mark.parametrize("name", list(CONFIGS))
def test_round_trip_bit_exact_and_export_loads(name, tmp_path):
  ref = reference(name, seed=1)
  fields = hf_lm.lm_fields(ref.config.to_dict())
  fam = family(fields, scan=False)
  params = random_params(fam, seed=2)
  mine = common.flatten(params)
  state = hf_lm.from_mmjax(params, fields, scan=False)
  ref.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=True)
  back = common.flatten(hf_lm.to_mmjax(ref.state_dict(), fields, scan=False))
  assert back.keys() == mine.keys()
  for key, value in mine.items():
    assert back[key].dtype == value.dtype, key
    np.testing.assert_array_equal(back[key], value, err_msg=key)

  hf_lm.save_pretrained(params, dict(fields, scan=False), str(tmp_path))
  loaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
  assert hf_lm.lm_fields(json.loads((tmp_path / "config.json").read_text())) == fields
  tokens = np.random.default_rng(1).integers(0, VOCAB, (2, 12))
  err = rel_err(fam.module.apply({"params": params}, tokens.astype(np.int32)),
                ref_logits(loaded, tokens))
  print(f"{name} export parity (transformers from_pretrained): {err:.2e}")
  assert err < TOL
  re_fields, re_params = hf_lm.load_pretrained(str(tmp_path), scan=False)
  assert {k: v for k, v in re_fields.items() if k != "scan"} == fields
  for key, value in common.flatten(re_params).items():
    np.testing.assert_array_equal(value, mine[key], err_msg=key)


def test_new_tokens_are_the_last_hf_rows():
  ref = reference("llama_gqa_untied_bias")
  fields = hf_lm.lm_fields(ref.config.to_dict(), num_new_tokens=3)
  params = hf_lm.to_mmjax(ref.state_dict(), fields)
  assert fields["vocab_size"] == VOCAB - 3
  np.testing.assert_array_equal(params["new_embed"],
                                ref.model.embed_tokens.weight.detach().numpy()[-3:])
  np.testing.assert_array_equal(params["new_unembed"], ref.lm_head.weight.detach().numpy()[-3:].T)
  tokens = np.random.default_rng(0).integers(0, VOCAB, (2, 10))
  err = rel_err(family(fields).module.apply({"params": params}, tokens.astype(np.int32)),
                ref_logits(ref, tokens))
  assert err < TOL, err
  state = hf_lm.from_mmjax(params, fields)
  for key, value in common.state_dict_to_numpy(ref.state_dict()).items():
    np.testing.assert_array_equal(state[key], value, err_msg=key)


def test_mismatched_keys_and_untied_head_are_refused():
  ref = reference("llama_gqa_tied")
  fields = hf_lm.lm_fields(ref.config.to_dict())
  state = common.state_dict_to_numpy(ref.state_dict())
  bad = dict(state, **{"model.layers.0.self_attn.q_norm.weight": np.ones(8, np.float32)})
  del bad["model.layers.1.mlp.up_proj.weight"]
  with pytest.raises(common.KeyMismatchError) as err:
    hf_lm.to_mmjax(bad, fields)
  assert "q_norm" in str(err.value) and "layers.1.mlp.up_proj" in str(err.value)
  state["lm_head.weight"] = state["lm_head.weight"] + 1.0
  with pytest.raises(ValueError, match="tie_embeddings"):
    hf_lm.to_mmjax(state, fields)
  with pytest.raises(ValueError, match="rope scaling"):
    hf_lm.lm_fields(dict(ref.config.to_dict(), rope_parameters={"rope_type": "llama3",
                                                                 "rope_theta": 1.0}))
