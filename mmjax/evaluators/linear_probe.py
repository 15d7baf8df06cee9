"""Linear probe on frozen features: multinomial logistic regression on any (features, labels).

Features are standardised with the training set's statistics; the weights are fit full-batch by
L-BFGS (optax) with an L2 penalty. The evaluator probes a family's image features on `shapes`
single-object scenes for `shape` or `colour` labels, or on a labelled dataset's `label`
(`dataset='fashion_mnist'`); baseline: the most frequent training class.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mmjax.evaluators import EvalContext, common, register
from mmjax.evaluators import embeddings as emb_lib
from mmjax.evaluators import zeroshot


def fit_linear_probe(features: np.ndarray, labels: np.ndarray, num_classes: int,
                     l2: float = 1e-3, steps: int = 200) -> tuple[np.ndarray, np.ndarray, Any]:
  """Weights [D, C], bias [C] and the standardisation (mean, std) fit on (features, labels)."""
  x = np.asarray(features, np.float32)
  mean, std = x.mean(0), x.std(0) + 1e-6
  x = jnp.asarray((x - mean) / std)
  y = jnp.asarray(labels, jnp.int32)

  def loss(theta):
    logits = x @ theta["w"] + theta["b"]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return ce + l2 * jnp.sum(theta["w"] ** 2)

  theta = {"w": jnp.zeros((x.shape[1], num_classes)), "b": jnp.zeros((num_classes,))}
  opt = optax.lbfgs()
  value_and_grad = optax.value_and_grad_from_state(loss)

  @jax.jit
  def run(theta):
    def body(carry, _):
      theta, state = carry
      value, grad = value_and_grad(theta, state=state)
      updates, state = opt.update(grad, state, theta, value=value, grad=grad, value_fn=loss)
      return (optax.apply_updates(theta, updates), state), None
    (theta, _), _ = jax.lax.scan(body, (theta, opt.init(theta)), None, length=steps)
    return theta

  theta = run(theta)
  return np.asarray(theta["w"]), np.asarray(theta["b"]), (mean, std)


def probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                   test_y: np.ndarray, num_classes: int | None = None, **kwargs) -> float:
  """Test accuracy of a linear probe fit on the training features."""
  num_classes = num_classes or int(max(train_y.max(), test_y.max()) + 1)
  w, b, (mean, std) = fit_linear_probe(train_x, train_y, num_classes, **kwargs)
  pred = np.argmax(((np.asarray(test_x) - mean) / std) @ w + b, axis=1)
  return float(np.mean(pred == np.asarray(test_y)))


@register("linear_probe")
class LinearProbeEvaluator:
  """Probe accuracy of the family's frozen image features. Config: dataset ('shapes' or a
  labelled one), attribute (shapes only), train_records, split, num_examples, l2, steps,
  batch_size, baselines."""

  def __init__(self, name: str, config: Any, context: EvalContext):
    self.name, self.config, self.context = name, config, context

  def _features(self, params, split, limit):
    dataset = self.config.get("dataset", "shapes")
    records = common.load_records(self.context.data_config, split, limit, dataset=dataset)
    idx, labels, classes = zeroshot.dataset_labels(records, dataset,
                                                   self.config.get("attribute", "shape"),
                                                   self.context.data_config)
    imgs = common.images([records[i] for i in idx], self.context.data_config)
    feats = emb_lib.image_features(self.context.family, params, imgs,
                                   self.config.get("batch_size", 64))
    return feats, np.asarray(labels), classes

  def run(self, params: Any) -> dict[str, Any]:
    cfg = self.config
    train_x, train_y, classes = self._features(params, "train", cfg.get("train_records", 1024))
    test_x, test_y, _ = self._features(params, cfg.get("split", "validation"),
                                       cfg.get("num_examples"))
    acc = probe_accuracy(train_x, train_y, test_x, test_y, len(classes), l2=cfg.get("l2", 1e-3),
                         steps=cfg.get("steps", 200))
    results = {f"{self.name}/accuracy": acc, f"{self.name}/num_train": len(train_y),
               f"{self.name}/num_test": len(test_y)}
    if cfg.get("baselines", False):
      majority = np.argmax(np.bincount(train_y, minlength=len(classes)))
      results[f"{self.name}/baseline_most_frequent"] = float(np.mean(test_y == majority))
    return results
