"""A few micro training steps, then `mmjax.evaluate --suite shapes` and the inference API on the
checkpoint: every metric is produced, in range, beside its baseline."""

import json

import numpy as np
import pytest

from mmjax import config_lib, evaluate, inference, train
from mmjax.data import datasets


def _micro(spec, data_dir, steps):
  config = config_lib.load_config(spec)
  config.data.data_dir = data_dir
  config.data.num_train = 64
  config.data.num_eval = 16
  config.total_steps = steps
  config.optim.total_steps = steps
  config.optim.warmup_steps = 1
  config.checkpoint.every_steps = steps
  config.log.tensorboard = False
  config.checkpoint.async_save = False
  with config.unlocked():
    config.evals = {}
  return config


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("eval_data"))


def _in_unit(results, keys):
  for key in keys:
    assert 0.0 <= results[key] <= 1.0, (key, results[key])


def test_flamingo_suite_and_api(data_dir, tmp_path):
  config = _micro("configs/flamingo.py:micro", data_dir, 2)
  train.train_and_evaluate(config, str(tmp_path))
  out = tmp_path / "eval.json"
  # The checkpoint step directory, with overrides reaching the run's data config.
  evaluate.main(["--checkpoint", str(tmp_path / "checkpoints" / "2"), "--suite", "shapes",
                 "--suite_size", "small", "--output", str(out),
                 f"--config.data.data_dir={data_dir}"])
  r = json.loads(out.read_text())
  assert r["step"] == 2
  _in_unit(r, ["vqa/accuracy", "vqa/baseline_most_frequent", "vqa/baseline_no_image",
               "multiple_choice/accuracy", "multiple_choice/baseline_chance",
               "captioning/bleu4", "captioning/distinct", "probe_shape/accuracy",
               "fewshot_vqa_rices/2shot_accuracy"])
  assert r["captioning/cider"] >= 0 and r["captioning/baseline_unigram_cider"] >= 0
  # Multiple choice over shapes' option sets: chance is the mean of 1/#options, in [1/8, 1/2].
  assert 1 / 8 <= r["multiple_choice/baseline_chance"] <= 1 / 2
  assert r["fewshot_captioning/0shot_cider_std"] >= 0 and "fewshot_captioning/2shot_cider" in r
  # A barely trained LM over 515 tokens: perplexity between 1 and the vocabulary size-ish.
  assert 1.0 < r["perplexity/perplexity"] < 2000
  model = inference.load(str(tmp_path), "configs/flamingo.py:micro",
                         [f"config.data.data_dir={data_dir}"])
  record = datasets.load_source("shapes", "validation", data_dir=data_dir, image_size=16,
                                num_train=64, num_eval=16)[0]
  caption = model.caption(record["image"], max_new_tokens=4)
  assert caption == model.caption(record["image"], max_new_tokens=4)
  assert isinstance(model.answer(record["image"], "What shape?",
                                 examples=[(record["image"], "What colour?", "red")]), str)


def test_clip_suite_and_api(data_dir, tmp_path):
  config = _micro("configs/clip.py:micro", data_dir, 2)
  train.train_and_evaluate(config, str(tmp_path))
  out = tmp_path / "eval.json"
  evaluate.main(["--checkpoint", str(tmp_path), "--config", "configs/clip.py:micro",
                 "--suite", "shapes", "--suite_size", "small", "--output", str(out),
                 f"--config.data.data_dir={data_dir}", "--config.data.num_train=64",
                 "--config.data.num_eval=16"])
  r = json.loads(out.read_text())
  _in_unit(r, ["zeroshot_shape/top1", "zeroshot_shape/top5", "retrieval/i2t_recall@1",
               "retrieval/t2i_recall@10", "probe_colour/accuracy"])
  assert r["zeroshot_shape/baseline_chance_top1"] == pytest.approx(1 / 5)
  assert r["zeroshot_shape/top5"] == 1.0  # 5 classes: the top 5 always holds the label
  assert r["retrieval/i2t_recall@10"] >= r["retrieval/i2t_recall@1"]
  model = inference.load(str(tmp_path))  # the run's own config.json
  source = datasets.load_source("shapes", "validation", data_dir=data_dir, image_size=32,
                                num_train=64, num_eval=16)
  images = [source[i]["image"] for i in range(3)]
  sim = model.similarity(images, ["a red circle.", "a blue star."])
  assert sim.shape == (3, 2) and np.all(np.abs(sim) <= 1 + 1e-5)
  np.testing.assert_allclose(np.linalg.norm(model.embed_images(images), axis=1), 1, rtol=1e-5)
