"""Bad input gives one clear error before any damage: unknown or mistyped config fields, a mesh
larger than the devices, a text length beyond the model's context, undecodable images (or a
counted skip when data.on_bad_example='skip')."""

import os

import pytest

from mmjax import config_lib, metric_writers, train
from mmjax.data import datasets, pipeline, preprocess
from test_train import micro_config  # pylint: disable=wrong-import-order


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("bad_input_data"))


def _cli(workdir, *overrides):
  return train.main(["--config", "configs/clip.py:micro", "--workdir", str(workdir),
                     *overrides])


def test_unknown_or_mistyped_config_field_fails_before_the_workdir_exists(tmp_path):
  with pytest.raises(KeyError, match=r"unknown config key 'optim.learning_rat'"):
    _cli(tmp_path / "a", "--config.optim.learning_rat=1e-4")
  with pytest.raises(KeyError, match=r"unknown config key 'optimizer'"):
    _cli(tmp_path / "a", "--config.optimizer.learning_rate=1e-4")
  with pytest.raises(TypeError, match=r"config key 'total_steps' expects int, got 'ten'"):
    _cli(tmp_path / "a", "--config.total_steps=ten")
  with pytest.raises(ValueError, match=r"on_nonfinite must be 'halt' or 'skip'"):
    _cli(tmp_path / "a", "--config.on_nonfinite=ignore")
  assert not (tmp_path / "a").exists()


def test_mesh_and_text_length_errors_before_the_workdir_exists(data_dir, tmp_path):
  with pytest.raises(ValueError, match="needs 16 devices but 8"):
    train.train_and_evaluate(micro_config(data_dir, **{"mesh.data": 16}), str(tmp_path / "a"))
  with pytest.raises(ValueError, match=r"data.text_length=24 is longer than the model's "
                                       r"context model.text.context_length=16"):
    train.train_and_evaluate(micro_config(data_dir, **{"data.text_length": 24}),
                             str(tmp_path / "a"))
  assert not (tmp_path / "a").exists()


def _with_broken_images(monkeypatch, data_dir):
  """Serves the train split with every 8th image truncated to 40 bytes."""
  real = pipeline.load_sources

  def load_sources(config):
    sources = real(config)
    records = [dict(r) for r in sources["shapes"]]
    for i in range(0, len(records), 8):
      records[i]["image"] = records[i]["image"][:40]
    return {"shapes": records}

  monkeypatch.setattr(pipeline, "load_sources", load_sources)


def test_undecodable_images_are_counted_or_raise_naming_the_record(data_dir, tmp_path,
                                                                   monkeypatch):
  _with_broken_images(monkeypatch, data_dir)
  out = train.train_and_evaluate(micro_config(data_dir, total_steps=4), str(tmp_path / "skip"))
  assert out["data_skipped"] >= 4  # 64 examples seen at least, 1 in 8 broken
  assert metric_writers.read_metrics(str(tmp_path / "skip"))[-1]["data_skipped"] >= 4
  config = micro_config(data_dir, total_steps=4, **{"data.on_bad_example": "raise"})
  with pytest.raises(preprocess.BadExample, match=r"record \d+: field 'image'"):
    train.train_and_evaluate(config, str(tmp_path / "raise"))
  assert not os.path.exists(tmp_path / "raise" / "checkpoints" / "4")
