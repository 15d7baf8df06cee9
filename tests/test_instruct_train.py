"""configs/flamingo.py:instruct_micro trains: packed ChatML conversations of shapes_instruct
(prepared through its tfds builder) through the one trainer, then the chat evaluator."""

import numpy as np
import pytest

from mmjax import config_lib, metric_writers, train


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("instruct_data"))


def test_instruct_micro_trains_a_step(data_dir, tmp_path):
  config = config_lib.load_config("configs/flamingo.py:instruct_micro")
  assert (config.data.task, config.data.pack_conversations) == ("chat", 2)
  config.data.data_dir = data_dir
  config.data.num_train, config.data.num_eval = 16, 8
  config.data.batch_size = 8
  config.total_steps, config.optim.warmup_steps = 1, 0
  config.log.every_steps, config.log.tensorboard = 1, False
  config.checkpoint.async_save = False
  with config.unlocked():
    config.evals = {"chat": dict(type="chat", every_steps=1, num_examples=2, max_new_tokens=2,
                                 batch_size=8)}
  out = train.train_and_evaluate(config, str(tmp_path))
  rows = [r for r in metric_writers.read_metrics(str(tmp_path)) if "loss" in r]
  # One step from a random init over 516 ids: the assistant tokens' loss is near log(516) = 6.25.
  assert len(rows) == 1 and 4.0 < rows[0]["loss"] < 8.0
  # The chat evaluator replied to every assistant turn of 2 validation conversations (2-4 each).
  assert 4 <= out["chat/num_turns"] <= 8
  for key in ("chat/accuracy", "chat/baseline_no_image"):
    assert 0.0 <= out[key] <= 1.0
