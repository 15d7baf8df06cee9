"""Conversations and the ChatML template: text equal to transformers' apply_chat_template with
the template stored in SmolLM2-135M-Instruct's GGUF, ids equal to tokenizing that text, the loss
only on assistant tokens, and packing of several conversations into one row, by hand."""

import os
import subprocess

import numpy as np
import pytest

from mmjax.convert import gguf as G
from mmjax.data import conversation as C
from mmjax.data import packing
from mmjax.data import tokenizers as tok_lib
from mmjax.data.packing import IMAGE, PROMPT, TARGET

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

CONVERSATIONS = [
    [{"role": "user", "content": "Name three colours."}],
    [{"role": "user", "content": "<image>\nHow many objects are there?"},
     {"role": "assistant", "content": "3"},
     {"role": "user", "content": "Are there more red than blue objects? Think step by step."},
     {"role": "assistant", "content": "Red objects: 2. Blue objects: 1. 2 is more than 1. "
                                      "Answer: yes"}],
    [{"role": "system", "content": "Answer questions about the image."},
     {"role": "user", "content": "Look at this picture: <image> and this one <image> Compare."},
     {"role": "assistant", "content": "The first has  two stars;\nthe second, none."}],
    [{"role": "system", "content": "You are terse."},
     {"role": "user", "content": "Say hi, in 2 words!"},
     {"role": "assistant", "content": "Hi there."},
     {"role": "user", "content": "Again?"}],
]


def smollm2_gguf() -> str:
  """The GGUF file, fetched by scripts/fetch_weights.sh when missing (as tests/convert)."""
  data_dir = os.path.expanduser(os.environ.get("MMJAX_DATA_DIR") or "~/mmjax_data")
  path = os.path.join(data_dir, "weights", "SmolLM2-135M-Instruct-GGUF", GGUF_NAME)
  if not os.path.exists(path):
    subprocess.run(["bash", os.path.join(REPO_ROOT, "scripts", "fetch_weights.sh"), data_dir],
                   check=True)
  return path


@pytest.fixture(scope="module")
def smollm2():
  """The GGUF's metadata only (chat template and tokenizer; no tensors dequantised), our
  tokenizer built from it and transformers' fast tokenizer over the same BPE."""
  import gguf  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  reader = gguf.GGUFReader(smollm2_gguf())
  metadata = {name: field.contents() for name, field in reader.fields.items()
              if not name.startswith("GGUF.")}
  tok = G.tokenizer(metadata)
  rust = tok._tok  # pylint: disable=protected-access
  ref = transformers.PreTrainedTokenizerFast(tokenizer_object=rust)
  return dict(template=G.chat_template(metadata), tok=tok, ref=ref)


@pytest.mark.parametrize("generation", [False, True])
def test_render_equals_smollm2_chat_template(smollm2, generation):
  assert "<|im_start|>" in smollm2["template"]
  for messages in CONVERSATIONS:
    ref = smollm2["ref"].apply_chat_template(messages, chat_template=smollm2["template"],
                                             tokenize=False, add_generation_prompt=generation)
    assert C.TEMPLATES["smollm2"].render(messages, add_generation_prompt=generation) == ref
  # Plain ChatML differs only by the default system turn.
  plain = C.TEMPLATES["chatml"].render(CONVERSATIONS[1])
  assert plain.startswith("<|im_start|>user\n<image>\nHow many") and plain.endswith(
      "Answer: yes<|im_end|>\n")
  assert C.TEMPLATES["chatml"].render(CONVERSATIONS[2]) == C.TEMPLATES["smollm2"].render(
      CONVERSATIONS[2])


def test_segment_ids_equal_tokenizing_the_rendered_text(smollm2):
  tok = smollm2["tok"]
  ids = C.chat_ids(tok)
  # SmolLM2 knows ChatML as control tokens 1 and 2: nothing is added to its vocabulary.
  assert (ids.im_start, ids.im_end, ids.image) == (1, 2, None)
  assert tok.vocab_size == len(smollm2["ref"])
  template = C.TEMPLATES["smollm2"]
  for messages in (CONVERSATIONS[0], CONVERSATIONS[3]):
    for generation in (False, True):
      segments = template.segments(messages, tok.encode, ids, add_generation_prompt=generation)
      text = smollm2["ref"].apply_chat_template(messages, chat_template=smollm2["template"],
                                                tokenize=False, add_generation_prompt=generation)
      flat = [i for seg, _ in segments for i in seg]
      assert flat == smollm2["ref"](text, add_special_tokens=False)["input_ids"]
  # Loss only on the assistant's content and its <|im_end|> (id 2), never on the newline (198).
  segments = template.segments(CONVERSATIONS[3], tok.encode, ids)
  targets = [i for seg, role in segments if role == TARGET for i in seg]
  assert targets == tok.encode("Hi there.") + [2]
  with pytest.raises(ValueError, match="no <image> id"):
    template.segments(CONVERSATIONS[1], tok.encode, ids)


@pytest.fixture(scope="module")
def sp(sp_path):
  """shapes_sp (the session's model, 512 reserved ids) with the ChatML tokens added."""
  tok = tok_lib.SentencePieceTokenizer("shapes_sp", sp_path, reserve_vocab_size=512)
  return tok, C.chat_ids(tok)


def test_shapes_sp_gets_chatml_special_tokens(sp):
  tok, ids = sp
  assert (ids.image, ids.im_start, ids.im_end) == (512, 514, 515)
  assert tok.token_id(tok_lib.END_OF_CHUNK_TOKEN) == 513 and tok.vocab_size == 516
  assert tok.encode("<|im_start|>user") == [514] + tok.encode("user")
  assert tok.decode([514] + tok.encode("assistant") + [515]) == "<|im_start|>assistant<|im_end|>"
  assert C.chat_ids(tok) == ids and tok.vocab_size == 516  # Idempotent.


def test_segments_by_hand_loss_only_on_assistant_tokens(sp):
  tok, ids = sp
  e = tok.encode
  conv = [{"role": "system", "content": "Be brief."},
          {"role": "user", "content": "<image>\nHow many stars?"},
          {"role": "assistant", "content": "2"},
          {"role": "user", "content": "And circles?"},
          {"role": "assistant", "content": "none"}]
  segments = [([tok.bos_id], PROMPT)] + C.TEMPLATES["chatml"].segments(conv, e, ids)
  tokens, loss, locs, kept = packing.assemble(segments, 64, tok.pad_id)
  # shapes_sp normalises "\n" away, so the newline segments are empty and left out.
  expected = ([tok.bos_id, 514] + e("system\n") + e("Be brief.") + [515] +
              [514] + e("user\n") + [512] + e("\nHow many stars?") + [515] +
              [514] + e("assistant\n") + e("2") + [515] +
              [514] + e("user\n") + e("And circles?") + [515] +
              [514] + e("assistant\n") + e("none") + [515])
  n = len(expected)
  np.testing.assert_array_equal(tokens[:n], expected)
  assert (tokens[n:] == tok.pad_id).all() and kept == 1
  assert np.flatnonzero(locs).tolist() == [expected.index(512)]
  want = np.zeros(64, np.float32)
  a1 = expected.index(515, expected.index(512) + 2)  # the user turn's <|im_end|>
  first = a1 + 1 + 1 + len(e("assistant\n"))  # after [515] [514] assistant\n
  want[first:first + len(e("2")) + 1] = 1.0
  last = n - 1 - len(e("none"))
  want[last:n] = 1.0
  np.testing.assert_array_equal(loss, want)
  assert tokens[loss == 1].tolist() == e("2") + [515] + e("none") + [515]


def test_turn_validation_names_the_turn():
  with pytest.raises(ValueError, match="turn 1: a system turn may only come first"):
    C.turns([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}])
  with pytest.raises(ValueError, match="turn 1: <image> markers belong in user turns"):
    C.turns([{"role": "user", "content": "a"}, {"role": "assistant", "content": "<image>"}])
  with pytest.raises(ValueError, match="turn 0: role must be one of"):
    C.turns([{"role": "bot", "content": "a"}])
  with pytest.raises(ValueError, match="turn 1: expected a user turn"):
    C.turns([{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}])
  with pytest.raises(ValueError, match="at least one turn"):  # as apply_chat_template
    C.TEMPLATES["smollm2"].render([])
  with pytest.raises(ValueError, match="exactly 'role' and 'content'"):
    C.turns([{"role": "user", "text": "a"}])
  with pytest.raises(ValueError, match="data.chat_template must be one of"):
    C.get_template("llama3")
  assert C.final_answer("2 is more than 1. Answer: yes") == "yes"
  with pytest.raises(ValueError, match="no 'Answer: '"):
    C.final_answer("yes")


def test_pack_by_hand():
  def sample(n, images=0):
    return [([2], PROMPT)] + [([7], IMAGE)] * images + [([5] * (n - 1 - images), TARGET)]
  # Lengths 5, 4, 3 in 10 tokens: the first two fit (9), the third would make 12.
  assert packing.pack([sample(5), sample(4), sample(3)], 10, 4) == [0, 1]
  # In 8 tokens the second is skipped and the shorter third still fits.
  assert packing.pack([sample(5), sample(4), sample(3)], 8, 4) == [0, 2]
  # Media slots limit too: two one-image samples with max_media 1.
  assert packing.pack([sample(3, 1), sample(3, 1), sample(3)], 32, 1) == [0, 2]
  # An overlong first sample is still taken alone.
  assert packing.pack([sample(40), sample(3)], 32, 4) == [0]
  a, b = sample(5, 1), sample(4, 1)
  tokens, loss, locs, kept = packing.assemble(a + b, 12, 0)
  assert tokens.tolist() == [2, 7, 5, 5, 5, 2, 7, 5, 5, 0, 0, 0]
  assert loss.tolist() == [0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 0]
  assert np.flatnonzero(locs).tolist() == [1, 6] and kept == 2
