"""VQA as classification (ViLBERT / LXMERT / VisualBERT): the answer head's top class on every
question of the evaluation records, scored against the canonical answer (exact accuracy, overall
and per question kind) and with the VQAv2 metric against the annotators' answers.

    config.evals.vqa = dict(type="vqa_class", split="validation")

Fields: split, dataset ('shapes'), num_examples (records; None = all), batch_size (64),
swap_images (False: also ask every question of another record's image, the next one, and report
the share of answers that change, overall and per kind: how much the model reads the image,
0 for a question-only classifier).
Baseline: the most frequent training answer (the answer vocabulary's first class). The
question-only baseline is a model trained with `model.blind=True`
(experiments/modalities/coattn.py).
Unlike the `vqa_class` pipeline rows (one question per record), this reads every question.
"""

from __future__ import annotations

import collections
from typing import Any

import jax
import numpy as np

from mmjax import batch as B
from mmjax.data import answers as answers_lib
from mmjax.evaluators import EvalContext, common, register, require
from mmjax.evaluators.vqa import vqa_accuracy


@register("vqa_class")
class VqaClassEvaluator:
  """Answer-classifier accuracy on every question of `num_examples` records of `split`."""

  def __init__(self, name: str, config: Any, context: EvalContext):
    self.name, self.config, self.context = name, config, context
    require(name, context.family, "predict_answers", "classify answers")
    family = context.family
    self._predict = jax.jit(lambda p, b: family.predict_answers(p, b))

  def run(self, params: Any) -> dict[str, Any]:
    cfg, data, tok = self.config, self.context.data_config, self.context.tokenizer
    dataset = cfg.get("dataset", "shapes")
    vocab = answers_lib.answer_vocab(dataset, data)
    index = {a: k for k, a in enumerate(vocab)}
    records = common.load_records(data, cfg.get("split", "validation"), cfg.get("num_examples"),
                                  dataset=dataset)
    imgs = common.images(records, data)
    rows = [(i, q, a, r.get("question_types", [None] * len(r["questions"]))[k],
             r["answers"][k] if "answers" in r else [a] * 10)
            for i, r in enumerate(records)
            for k, (q, a) in enumerate(zip(r["questions"], r["answer"]))]
    idx = np.array([row[0] for row in rows])
    text = tok.pad_ids([row[1] for row in rows], int(data.text_length))
    preds = np.array(self._answers(params, imgs, idx, text))
    names = [vocab[p] if p < len(vocab) else "" for p in preds]  # classes beyond the vocabulary
    labels = np.array([answers_lib.answer_label(index, row[2]) for row in rows])
    correct = preds == labels
    out = {f"{self.name}/accuracy": float(np.mean(correct)),
           f"{self.name}/vqav2_accuracy": float(np.mean(
               [vqa_accuracy(name, row[4]) for name, row in zip(names, rows)])),
           f"{self.name}/baseline_most_frequent": float(np.mean(labels == 0)),
           f"{self.name}/num_questions": len(rows),
           f"{self.name}/example": f"Q: {rows[0][1]} -> {names[0]!r}"}
    by_kind = collections.defaultdict(list)  # question kind -> its rows' positions
    for k, row in enumerate(rows):
      if row[3] is not None:
        by_kind[row[3]].append(k)
    for kind, ks in sorted(by_kind.items()):
      out[f"{self.name}/accuracy_{kind}"] = float(np.mean(correct[ks]))
    if cfg.get("swap_images", False):
      if len(records) < 2:
        raise ValueError(f"evals.{self.name}.swap_images needs at least 2 records of the "
                         f"split; num_examples gave {len(records)}")
      # Shapes scenes are drawn independently, so the next record is another scene.
      swapped = np.array(self._answers(params, imgs, (idx + 1) % len(records), text))
      changed = swapped != preds
      out[f"{self.name}/answers_changed"] = float(np.mean(changed))
      for kind, ks in sorted(by_kind.items()):
        out[f"{self.name}/answers_changed_{kind}"] = float(np.mean(changed[ks]))
    return out

  def _answers(self, params: Any, imgs: np.ndarray, idx: np.ndarray,
               text: np.ndarray) -> list[int]:
    """The top class of each question `text[k]` asked of image `imgs[idx[k]]`."""
    batch_size = int(self.config.get("batch_size", 64))
    preds = []
    for s in common.chunks(len(idx), batch_size):
      n = s.stop - s.start
      image, ids = imgs[idx[s]], text[s]
      if n < batch_size:  # pad the last chunk to the compiled batch size
        image = np.concatenate([image, np.zeros((batch_size - n,) + image.shape[1:],
                                                image.dtype)])
        ids = np.concatenate([ids, np.zeros((batch_size - n, ids.shape[1]), ids.dtype)])
      logits = self._predict(params, self.context.shard_batch({B.IMAGE: image, B.TEXT: ids}))
      preds.extend(np.argmax(np.asarray(jax.device_get(logits)), -1)[:n].tolist())
    return preds
