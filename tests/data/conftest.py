"""Fixtures of the data tests: one small prepared copy of every shapes dataset per session."""

import pytest

from mmjax.data import config as config_lib
from mmjax.data import tokenizers

SMALL = dict(image_size=32, num_train=64, num_eval=8, num_frames=4)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """A fresh data directory shared by the session (datasets are prepared into it on use)."""
  return str(tmp_path_factory.mktemp("mmjax_data"))


@pytest.fixture(scope="session")
def sp_path(data_dir):
  """The shapes sentencepiece model, trained once per session."""
  return tokenizers.shapes_sp(data_dir=data_dir).model_path


@pytest.fixture
def tok(sp_path):
  """A fresh shapes tokenizer (special tokens get added per pipeline)."""
  return tokenizers.SentencePieceTokenizer("shapes_sp", sp_path)


@pytest.fixture
def make_config(data_dir):
  """default_data_config for the small prepared datasets, with overrides."""
  def make(**overrides):
    kw = dict(SMALL, data_dir=data_dir, batch_size=8, text_length=48)
    kw.update(overrides)
    return config_lib.default_data_config(**kw)
  return make
