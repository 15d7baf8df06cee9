"""Zero-shot classification with class names and prompt-template ensembles (Radford et al. 2021).

A class embedding is the re-normalised mean of the normalised text embeddings of every template
filled with the class name; an image is classified by cosine similarity. On `shapes` the images
are the single-object scenes of the split and the label is the object's `shape` or `colour`; on
a labelled dataset (`dataset='fashion_mnist'`, `'imagenet'`) every record with its `label` and the
dataset's class names (`mmjax.data.datasets.class_names`).
Baselines: chance (1/C, k/C) and the most frequent class of the evaluated images.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from mmjax.data import datasets, shapes_world
from mmjax.evaluators import EvalContext, common, register
from mmjax.evaluators import embeddings as emb_lib
from mmjax.evaluators import templates as templates_lib


def class_embeddings(text_embed, class_names: Sequence[str],
                     templates: Sequence[str]) -> np.ndarray:
  """[C, D]: per class, the normalised mean of the normalised template embeddings."""
  texts = [t.format(c) for c in class_names for t in templates]
  emb = np.asarray(text_embed(texts), np.float64).reshape(len(class_names), len(templates), -1)
  emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
  mean = emb.mean(axis=1)
  return mean / np.linalg.norm(mean, axis=-1, keepdims=True)


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
  """Share of rows whose label is among the k largest logits (ties broken by index)."""
  k = min(k, logits.shape[1])
  top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
  return float(np.mean([label in row for row, label in zip(top, labels)]))


def single_object_labels(records: Sequence[dict], attribute: str
                         ) -> tuple[list[int], list[int], list[str]]:
  """(record indices, label ids, class names) of the single-object shapes scenes."""
  classes = list(shapes_world.SHAPES if attribute == "shape" else shapes_world.COLOURS)
  idx, labels = [], []
  for i, r in enumerate(records):
    objects = r["scene"]["objects"]
    if len(objects) == 1:
      idx.append(i)
      labels.append(classes.index(objects[0][attribute]))
  return idx, labels, classes


def dataset_labels(records: Sequence[dict], dataset: str, attribute: str = "shape",
                   data_config: Any = None) -> tuple[list[int], list[int], list[str]]:
  """(record indices, label ids, class names) of `dataset`'s records: shapes' single-object
  scenes by `attribute`, otherwise each record's `label` (attribute unused)."""
  if dataset == "shapes":
    return single_object_labels(records, attribute)
  where = datasets.source_kwargs(data_config) if data_config is not None else {}
  classes = datasets.class_names(dataset, **where)
  labels = [int(r["label"]) for r in records]
  return list(range(len(records))), labels, classes


@register("zeroshot")
class ZeroShotEvaluator:
  """Top-1/top-5 zero-shot accuracy. Config: dataset ('shapes' or a labelled one such as
  'fashion_mnist' or 'imagenet'), split, num_examples, attribute ('shape' / 'colour', shapes
  only), templates (a templates.TEMPLATES name or a list; default 'shapes' on shapes, else
  'openai_imagenet'), batch_size, baselines."""

  def __init__(self, name: str, config: Any, context: EvalContext):
    self.name, self.config, self.context = name, config, context
    self.embedder = emb_lib.Embedder(context.family, context.tokenizer,
                                     context.data_config.text_length,
                                     config.get("batch_size", 64))

  def run(self, params: Any) -> dict[str, Any]:
    cfg, data = self.config, self.context.data_config
    dataset = cfg.get("dataset", "shapes")
    records = common.load_records(data, cfg.get("split", "validation"), cfg.get("num_examples"),
                                  dataset=dataset)
    idx, labels, classes = dataset_labels(records, dataset, cfg.get("attribute", "shape"), data)
    if not idx:
      raise ValueError(f"evals.{self.name}: no labelled images in {dataset!r} split "
                       f"{cfg.get('split', 'validation')!r}")
    templates = cfg.get("templates", "shapes" if dataset == "shapes" else "openai_imagenet")
    templates = templates_lib.TEMPLATES[templates] if isinstance(templates, str) else templates
    image_emb = self.embedder.images(params, common.images([records[i] for i in idx], data))
    cls = class_embeddings(lambda t: self.embedder.texts(params, t), classes, templates)
    logits, labels = image_emb @ cls.T, np.asarray(labels)
    p = self.name
    results = {f"{p}/top1": topk_accuracy(logits, labels, 1),
               f"{p}/top5": topk_accuracy(logits, labels, 5),
               f"{p}/num_images": len(idx), f"{p}/num_classes": len(classes)}
    if cfg.get("baselines", False):
      results[f"{p}/baseline_chance_top1"] = 1.0 / len(classes)
      results[f"{p}/baseline_most_frequent_top1"] = float(
          np.bincount(labels, minlength=len(classes)).max() / len(labels))
    return results
