"""GGUF (llama.cpp) -> mmjax: the real SmolLM2-135M-Instruct (Q4_1) against transformers.

The file is fetched by scripts/fetch_weights.sh when absent (never skipped). transformers loads
the same file (`gguf_file=`, dequantised to float32); our model reads it with mmjax.convert.gguf.
Checked: logits on real sentences (max |diff| / max |ref|), 30 greedy tokens for a chat prompt
on our KV cache (steps whose reference top-2 margin exceeds the tolerance), and our tokenizer's
ids against transformers' GGUF tokenizer. A tiny synthetic file checks the q/k row permutation.
"""

import os
import subprocess

import jax
import numpy as np
import pytest
import transformers

import test_hf_lm as H
from mmjax.convert import common
from mmjax.convert import gguf as G
from mmjax.convert import hf_lm
from mmjax.data import tokenizers as tok_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SENTENCES = ["The quick brown fox jumps over the lazy dog.",
             "Flamingo models interleave images and text; the gated cross-attention starts at "
             "zero.",
             "In 1969, Apollo 11 landed on the Moon and returned 21.5 kg of samples."]
TOKENIZER_TEXTS = SENTENCES + [
    "", " leading space", "double  spaces\tand tabs\nnew\n\nlines",
    "Ünïcödé naïve café 東京 🚀",
    "def f(x):\n    return x ** 2  # 12345678", "<|im_start|>user\nHi!<|im_end|>\n",
    "<|endoftext|>text after special", "it's they're we'll I'd", "3.14159 and 1,000,000"]


def smollm2_dir() -> str:
  """The GGUF's directory, fetched by scripts/fetch_weights.sh if the file is missing."""
  data_dir = os.path.expanduser(os.environ.get("MMJAX_DATA_DIR") or "~/mmjax_data")
  path = os.path.join(data_dir, "weights", "SmolLM2-135M-Instruct-GGUF")
  if not os.path.exists(os.path.join(path, GGUF_NAME)):
    subprocess.run(["bash", os.path.join(REPO_ROOT, "scripts", "fetch_weights.sh"), data_dir],
                   check=True)
  return path


@pytest.fixture(scope="module")
def smollm2():
  path = smollm2_dir()
  metadata, tensors = G.read_gguf(os.path.join(path, GGUF_NAME))
  fields = dict(G.lm_fields(metadata, tensors.keys()), scan=True)
  params = hf_lm.to_mmjax(G.hf_state_dict(tensors, fields), fields)
  del tensors
  ref = transformers.AutoModelForCausalLM.from_pretrained(path, gguf_file=GGUF_NAME,
                                                          dtype="float32").eval()
  ref_tok = transformers.AutoTokenizer.from_pretrained(path, gguf_file=GGUF_NAME)
  return dict(metadata=metadata, fields=fields, params=params, ref=ref, ref_tok=ref_tok,
              tok=G.tokenizer(metadata))


def test_smollm2_config_is_our_preset(smollm2):
  from mmjax import config_lib  # pylint: disable=import-outside-toplevel
  preset = config_lib.load_config("configs/lm.py:smollm2_135m").model
  for key, value in smollm2["fields"].items():
    if key in preset and key not in ("norm_eps",):
      assert preset[key] == value, key
  assert abs(smollm2["fields"]["norm_eps"] - preset.norm_eps) < 1e-12
  assert hf_lm.lm_fields(smollm2["ref"].config.to_dict()) == {
      k: v for k, v in smollm2["fields"].items() if k != "scan"}


def test_smollm2_tokenizer_ids_equal_transformers(smollm2):
  tok, ref_tok = smollm2["tok"], smollm2["ref_tok"]
  assert (tok.vocab_size, tok.bos_id, tok.eos_id, tok.pad_id) == (
      len(ref_tok), ref_tok.bos_token_id, ref_tok.eos_token_id, ref_tok.pad_token_id)
  chat = ref_tok.apply_chat_template([{"role": "user", "content": "Name three colours."}],
                                     add_generation_prompt=True, tokenize=False)
  for text in TOKENIZER_TEXTS + [chat]:
    ids = tok.encode(text)
    assert ids == ref_tok(text, add_special_tokens=False)["input_ids"], text
    assert tok.decode(ids) == ref_tok.decode(ids), text
  print(f"SmolLM2 tokenizer: {len(TOKENIZER_TEXTS) + 1} texts, ids identical to transformers")
  # Flamingo's media tokens go after the 49152 pretrained ids (a copy: the fixture is shared).
  flamingo_tok = G.tokenizer(smollm2["metadata"])
  image, chunk = tok_lib.with_media_tokens(flamingo_tok).add_special_tokens(
      [tok_lib.IMAGE_TOKEN, tok_lib.END_OF_CHUNK_TOKEN])
  assert (image, chunk, flamingo_tok.vocab_size) == (49152, 49153, 49154)
  assert flamingo_tok.encode("<image>A cat.<|endofchunk|>") == [image] + tok.encode("A cat.") + [
      chunk]


def test_smollm2_logits_and_greedy_chat_match_transformers(smollm2):
  tok, ref = smollm2["tok"], smollm2["ref"]
  chat = smollm2["ref_tok"].apply_chat_template(
      [{"role": "user", "content": "What is the capital of France?"}],
      add_generation_prompt=True, tokenize=False)
  # One right-padded batch: the chat prompt and the sentences. The prefill's logits are the
  # full causal forward (padding comes after every real position), and all rows then decode
  # greedily on our cache (one compilation each for prefill and decode).
  rows = [tok.encode(chat)] + [tok.encode(s) for s in SENTENCES]
  lengths = np.array([len(r) for r in rows])
  tokens = np.full((len(rows), lengths.max()), tok.pad_id, np.int64)
  for i, r in enumerate(rows):
    tokens[i, :len(r)] = r
  valid = np.arange(tokens.shape[1])[None] < lengths[:, None]
  stats, prefill, generated = H.check_greedy(ref, H.family(smollm2["fields"]),
                                             smollm2["params"], tokens, lengths, 30)
  theirs = H.ref_logits(ref, tokens)
  err = H.rel_err(prefill[valid], theirs[valid])
  print(f"SmolLM2-135M-Instruct GGUF parity: logits rel err {err:.2e} on {int(valid.sum())} "
        f"positions (max |ref| {np.abs(theirs[valid]).max():.1f}); greedy 30 steps {stats}; "
        f"chat reply {tok.decode(generated[0])!r}")
  assert err < H.TOL
  assert stats["cached_logits_rel_err"] < H.TOL, stats
  assert stats["decisive_steps"][0] >= 25 and stats["mismatches"] == 0, stats


def test_rotary_row_permutation_is_undone():
  """A GGUF-permuted q/k projection, un-permuted, equals the HF (rotate-half) weight."""
  rng = np.random.default_rng(0)
  for heads, head_dim in ((3, 8), (1, 4)):
    w = rng.standard_normal((heads * head_dim, 5)).astype(np.float32)
    permuted = G.permute_rotary(w, heads)
    assert not np.array_equal(permuted, w)
    # llama.cpp interleaves the two halves of every head: row 2j is row j, row 2j+1 is H/2 + j.
    np.testing.assert_array_equal(permuted[1], w[head_dim // 2])
    np.testing.assert_array_equal(G.unpermute_rotary(permuted, heads), w)


# ---- A tiny synthetic GGUF written the way llama.cpp's converter writes one ---------------------

def tiny_vocab():
  """Byte alphabet + two merges + a control token (ids: bytes 0-255, 'Ġt', 'he', <|im_start|>)."""
  tokens = list(tok_lib._bytes_to_unicode().values())  # pylint: disable=protected-access
  tokens += ["Ġt", "he", "<|im_start|>"]
  return tokens, [1] * (len(tokens) - 1) + [G.CONTROL], ["Ġ t", "h e"]


def write_tiny_gguf(path, ref, tied: bool):
  """`ref` (a HF Llama) as an F32 GGUF: llama.* metadata, permuted q/k rows, tokenizer."""
  import gguf  # pylint: disable=import-outside-toplevel
  c = ref.config
  tokens, types, merges = tiny_vocab()
  w = gguf.GGUFWriter(str(path), "llama")
  w.add_block_count(c.num_hidden_layers)
  w.add_context_length(c.max_position_embeddings)
  w.add_embedding_length(c.hidden_size)
  w.add_feed_forward_length(c.intermediate_size)
  w.add_head_count(c.num_attention_heads)
  w.add_head_count_kv(c.num_key_value_heads)
  w.add_rope_freq_base(c.rope_parameters["rope_theta"])
  w.add_layer_norm_rms_eps(c.rms_norm_eps)
  w.add_rope_dimension_count(c.head_dim)
  w.add_vocab_size(c.vocab_size)
  w.add_tokenizer_model("gpt2")
  w.add_tokenizer_pre("default")
  w.add_token_list(tokens)
  w.add_token_types(types)
  w.add_token_merges(merges)
  w.add_bos_token_id(len(tokens) - 1)
  w.add_eos_token_id(0)
  names = {v: k for k, v in G._GLOBAL_NAMES.items()}  # pylint: disable=protected-access
  layer_names = {v: k for k, v in G._LAYER_NAMES.items()}  # pylint: disable=protected-access
  for key, value in common.state_dict_to_numpy(ref.state_dict()).items():
    if key == "lm_head.weight" and tied:
      continue
    if key.startswith("model.layers."):
      _, _, i, rest = key.split(".", 3)
      name = f"blk.{i}.{layer_names[rest]}"
      if rest.startswith("self_attn.q_proj"):
        value = G.permute_rotary(value, c.num_attention_heads)
      elif rest.startswith("self_attn.k_proj"):
        value = G.permute_rotary(value, c.num_key_value_heads)
    else:
      name = names[key]
    w.add_tensor(name, np.ascontiguousarray(value, np.float32))
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()


def tiny_reference(tied: bool):
  import torch  # pylint: disable=import-outside-toplevel
  import reference_models as R  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  config = H.llama_config(tied, False)
  config.vocab_size = len(tiny_vocab()[0])
  config._attn_implementation = "eager"  # pylint: disable=protected-access
  model = transformers.LlamaForCausalLM(config)
  R.randomise(model)
  if tied:
    model.tie_weights()
  return model.eval()


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_synthetic_gguf_matches_its_hf_source(tmp_path, tied):
  ref = tiny_reference(tied)
  write_tiny_gguf(tmp_path / "tiny.gguf", ref, tied)
  fields, params = G.to_mmjax(str(tmp_path / "tiny.gguf"))
  assert {k: v for k, v in fields.items() if k != "scan"} == dict(
      hf_lm.lm_fields(ref.config.to_dict()), norm_eps=fields["norm_eps"])
  mine = hf_lm.to_mmjax(ref.state_dict(), fields)
  for key, value in common.flatten(mine).items():  # F32 file: exactly the HF weights
    np.testing.assert_array_equal(common.flatten(params)[key], value, err_msg=key)
  tokens = np.random.default_rng(0).integers(0, ref.config.vocab_size, (2, 10))
  err = H.rel_err(H.family(fields).module.apply({"params": params}, tokens.astype(np.int32)),
                  H.ref_logits(ref, tokens))
  assert err < H.TOL, err
  metadata, _ = G.read_gguf(str(tmp_path / "tiny.gguf"))
  tok = G.tokenizer(metadata)
  ids = tok.encode("<|im_start|>the t")
  # "the" -> t + he (merge "h e"), " t" -> Ġt (merge "Ġ t"); printable bytes start at "!" = 0.
  assert ids == [258, ord("t") - ord("!"), 257, 256], ids
  assert tok.decode(ids) == "<|im_start|>the t"


def test_registered_smollm2_tokenizer_equals_transformers(smollm2):
  """`get_tokenizer('smollm2')` (the data pipeline's, via the tokenizer.json written from the
  GGUF) gives transformers' ids; <image> / <|endofchunk|> follow the LM's 49152 rows."""
  path = os.path.join(smollm2_dir(), GGUF_NAME)
  tok, ref_tok = tok_lib.get_tokenizer("smollm2", path=path), smollm2["ref_tok"]
  assert (tok.base_vocab_size, tok.bos_id, tok.eos_id, tok.pad_id) == (
      49152, ref_tok.bos_token_id, ref_tok.eos_token_id, ref_tok.pad_token_id)
  for text in TOKENIZER_TEXTS + ["Question: how many shapes are there? Answer: 3"]:
    assert tok.encode(text) == ref_tok(text, add_special_tokens=False)["input_ids"], text
  tok_lib.with_media_tokens(tok)
  ids = tok.encode("<image>a red circle<|endofchunk|>")
  assert (ids[0], ids[-1]) == (49152, 49153)
  assert ids[1:-1] == ref_tok("a red circle", add_special_tokens=False)["input_ids"]


def test_flamingo_smollm2_preset_starts_as_smollm2(smollm2):
  """configs/flamingo.py:smollm2 with its LM initialised from the GGUF (adapt_init_source, as
  the recipe's init_from 'lm=WORKDIR:' does): with the tanh gates at 0 the gated blocks add
  nothing, so on a sentence whose tokens all attend an image the logits are SmolLM2's."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  from mmjax import config_lib  # pylint: disable=import-outside-toplevel
  from mmjax.models import family as family_lib  # pylint: disable=import-outside-toplevel
  config = config_lib.load_config("configs/flamingo.py:smollm2")
  assert config.data.tokenizer == "smollm2"
  fam = family_lib.build(config.model)
  assert fam.xattn_config.gated_layers(30) == tuple(range(2, 30, 3))
  fresh = nn.meta.unbox(fam.init(jax.random.key(0), fam.dummy_batch(1)))["params"]
  lm = fam.adapt_init_source("lm", smollm2["params"], fresh["lm"])
  assert jax.tree.map(np.shape, lm) == jax.tree.map(np.shape, fresh["lm"])
  tokens = np.array([smollm2["tok"].encode(SENTENCES[1])])
  locations = np.zeros(tokens.shape, bool)
  locations[0, 0] = True  # every token attends the image (through a zero gate)
  media = np.random.default_rng(0).normal(size=(1, 1, 1, 64, 64, 3)).astype(np.float32)
  logits = fam.predict_logits({**fresh, "lm": lm}, {
      "media": media, "media_mask": np.ones((1, 1), bool), "tokens": tokens,
      "media_locations": locations})
  assert logits.shape == (1, tokens.shape[1], 49152 + 3)
  theirs = H.ref_logits(smollm2["ref"], tokens)
  assert H.rel_err(np.asarray(logits)[..., :49152], theirs) < H.TOL
