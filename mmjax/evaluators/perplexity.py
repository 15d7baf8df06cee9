"""Perplexity: exp of the mean next-token negative log-likelihood over the loss-masked tokens.

Per the batch contract, logits at t predict tokens[t + 1] and loss_mask[:, 0] is never used.
Works for every family with `predict_logits` (LM, Flamingo) on an evaluation split.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.data import pipeline
from mmjax.evaluators import EvalContext, register
from mmjax.evaluators.loss import eval_data_config


def nll_sum_and_count(logits: jax.Array, tokens: jax.Array, loss_mask: jax.Array
                      ) -> tuple[jax.Array, jax.Array]:
  """Sum of -log p(tokens[t + 1] | <= t) weighted by loss_mask[:, t + 1], and the weight sum."""
  logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
  picked = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
  mask = loss_mask[:, 1:].astype(jnp.float32)
  return -jnp.sum(picked * mask), jnp.sum(mask)


def perplexity(nll_sum: float, count: float) -> float:
  """exp(nll_sum / count)."""
  return float(np.exp(nll_sum / count))


@register("perplexity")
class PerplexityEvaluator:
  """Perplexity over `num_batches` batches of `split` (task/datasets overridable)."""

  def __init__(self, name: str, config: Any, context: EvalContext):
    self.name, self.config, self.context = name, config, context
    family = context.family
    if not hasattr(family, "predict_logits"):
      raise ValueError(f"evals.{name}: family {family.family_name!r} has no predict_logits")
    keys = family.batch_keys
    self._score = jax.jit(lambda p, b: nll_sum_and_count(
        family.predict_logits(p, {k: v for k, v in b.items() if k in keys}), b["tokens"],
        b["loss_mask"]))

  def run(self, params: Any) -> dict[str, Any]:
    data = eval_data_config(self.config, self.context, self.name)
    it = pipeline.make_pipeline(data, tokenizer=self.context.tokenizer, train=False)
    total, count = 0.0, 0.0
    try:
      for i, batch in enumerate(it):
        if i >= self.config.get("num_batches", 8):
          break
        batch = {k: v for k, v in batch.items() if k in self.context.family.batch_keys}
        nll, n = self._score(params, self.context.shard_batch(batch))
        total, count = total + float(nll), count + float(n)
    finally:
      it.close()
    if not count:
      raise ValueError(f"evals.{self.name}: no tokens scored on split {data.split!r}")
    return {f"{self.name}/perplexity": perplexity(total, count),
            f"{self.name}/tokens": int(count)}
