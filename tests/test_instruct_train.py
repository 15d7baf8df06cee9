"""configs/flamingo.py:instruct_micro trains: packed ChatML conversations of shapes_instruct
through the one trainer, with the chat loss evaluator."""

import numpy as np
import pytest

from mmjax import config_lib, train

from test_train import losses_of  # noqa: E402  pylint: disable=wrong-import-position


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("instruct_data"))


def test_instruct_micro_trains_two_steps(data_dir, tmp_path):
  config = config_lib.load_config("configs/flamingo.py:instruct_micro")
  config.data.data_dir = data_dir
  config.data.num_train, config.data.num_eval = 32, 16
  config.data.batch_size = 8
  config.total_steps, config.optim.warmup_steps = 2, 1
  config.log.every_steps, config.log.tensorboard = 1, False
  config.checkpoint.async_save = False
  with config.unlocked():
    config.evals = {"chat": dict(type="loss", every_steps=1, split="validation",
                                 num_batches=1)}
  out = train.train_and_evaluate(config, str(tmp_path))
  losses = losses_of(str(tmp_path))
  # Two steps from a random init over 516 ids: the loss is near log(516) = 6.25.
  assert len(losses) == 2 and all(4.0 < x < 8.0 for x in losses)
  assert np.isfinite(out["chat/loss"])
