"""Held-out loss: the family's training objective on an evaluation split (no augmentation).

With `blank_images=True` every image / media pixel is replaced by 0 (mid-grey after the
[-1, 1] normalisation): the gap between the two losses shows how much the model uses the image.
"""

from __future__ import annotations

import collections
from typing import Any

import jax
import numpy as np

from mmjax import batch as B
from mmjax.data import pipeline
from mmjax.evaluators import EvalContext, register


def eval_data_config(config: Any, context: EvalContext):
  """The run's data config with this evaluator's split/task/batch overrides (no augmentation)."""
  data = context.data_config.copy_and_resolve_references()
  data.unlock()
  data.split = config.get("split", "validation")
  for key in ("task", "tasks", "batch_size", "datasets", "weights", "as_media", "video_qa",
              "interleaved_kind", "shots"):
    if config.get(key) is not None:
      data[key] = config[key]
  if config.get("datasets") is not None and config.get("weights") is None:
    data.weights = (1.0,) * len(data.datasets)
  if (config.get("datasets") is not None or config.get("task") is not None) and \
      config.get("tasks") is None:
    data.tasks = ()  # The run's per-dataset tasks described the run's mixture, not this one.
  return data


@register("loss")
class LossEvaluator:
  """Mean of the family's loss and metrics over `num_batches` batches of `split`."""

  def __init__(self, name: str, config: Any, context: EvalContext):
    self.name, self.config, self.context = name, config, context
    family = context.family
    self._loss = jax.jit(lambda p, b: family.loss(p, b, None, train=False))
    self._keys = family.batch_keys

  def run(self, params: Any) -> dict[str, Any]:
    data = eval_data_config(self.config, self.context)
    it = pipeline.make_pipeline(data, tokenizer=self.context.tokenizer, train=False)
    sums, count = collections.defaultdict(float), 0
    try:
      for i, batch in enumerate(it):
        if i >= self.config.get("num_batches", 8):
          break
        batch = {k: v for k, v in batch.items() if k in self._keys}
        if self.config.get("blank_images", False):
          for key in (B.IMAGE, B.MEDIA):
            if key in batch:
              batch[key] = np.zeros_like(batch[key])
        loss, metrics = self._loss(params, self.context.shard_batch(batch))
        sums["loss"] += float(loss)
        for k, v in metrics.items():
          if np.ndim(v) == 0:
            sums[k] += float(v)
        count += 1
    finally:
      it.close()
    if not count:
      raise ValueError(f"evals.{self.name}: split {data.split!r} gave no full batch of "
                       f"{data.batch_size}; lower batch_size or raise data.num_eval")
    return {f"{self.name}/{k}": v / count for k, v in sums.items()}
