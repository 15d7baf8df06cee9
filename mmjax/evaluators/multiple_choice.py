"""Multiple-choice questions scored by log-likelihood (ScienceQA / MMMU style).

Each option is appended to the prompt and scored by the sum (or per-token mean) of its tokens'
log-probabilities under the model; the most likely option is the answer. On `shapes` the options
of a question are every answer of its kind (colours, shapes, counts 0-6, yes/no); datasets with
multiple-choice records (`scienceqa`, `mmmu`: `options`, `answer`, `context`) bring their own.
Baselines: chance (mean 1 / #options) and the same model with blank images.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from mmjax.data import shapes_world
from mmjax.evaluators import EvalContext, common, register, require

OPTIONS = {
    "colour": tuple(shapes_world.COLOURS),
    "shape": shapes_world.SHAPES,
    "count": tuple(str(i) for i in range(7)),
    "exist": ("yes", "no"), "relation": ("yes", "no"), "compare_count": ("yes", "no"),
}


def question_rows(records: Sequence[dict]) -> list[tuple[int, str, tuple[str, ...], str]]:
  """(record index, question, options, correct option) per question: a multiple-choice record
  (with `options`) is one question, its context (ScienceQA's hint) before it; a shapes record
  asks each of its questions with every answer of the question's kind as options."""
  rows = []
  for i, r in enumerate(records):
    if "options" in r:
      question = f"{r.get('context', '')} {r['question']}".strip()
      rows.append((i, question, tuple(r["options"]), r["answer"]))
    else:
      rows += [(i, q, OPTIONS[kind], a)
               for q, kind, a in zip(r["questions"], r["question_types"], r["answer"])]
  return rows


def choose(scores: np.ndarray, counts: np.ndarray, normalize: str = "sum") -> int:
  """Index of the best option from summed log-probs and token counts ('sum' or 'mean')."""
  if normalize not in ("sum", "mean"):
    raise ValueError(f"normalize must be 'sum' or 'mean', got {normalize!r}")
  values = scores / np.maximum(counts, 1) if normalize == "mean" else scores
  return int(np.argmax(values))


def option_scores(context: EvalContext, params: Any, image: np.ndarray, prompt: str,
                  options: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
  """Summed log p(option | prompt) and option token counts, one row per option."""
  tok = context.tokenizer
  # Padded to a fixed number of rows (repeating the last option) so one program serves all
  # (a question with more options than that compiles one more).
  rows = max(max(len(o) for o in OPTIONS.values()), len(options))
  padded = list(options) + [options[-1]] * (rows - len(options))
  texts = [f"{prompt} {o}" for o in padded]
  batch = common.flamingo_batch(tok, texts, [image[None]] * rows)
  prompt_len = 1 + len(tok.encode(prompt))
  scores, counts = common.continuation_logprobs(context.family, params, batch,
                                                np.full(rows, prompt_len))
  return scores[:len(options)], counts[:len(options)]


@register("multiple_choice")
class MultipleChoiceEvaluator:
  """Accuracy of log-likelihood answers. Config: dataset ('shapes', or a multiple-choice dataset),
  split, num_examples, prompt ('<image>Question: {question} Answer:'), normalize ('sum' /
  'mean'), baselines."""

  def __init__(self, name: str, config: Any, context: EvalContext):
    self.name, self.config, self.context = name, config, context
    require(name, context.family, "predict_logits", "score text")

  def _accuracy(self, params, imgs, rows) -> float:
    prompt = self.config.get("prompt", "<image>Question: {question} Answer:")
    correct = []
    for i, question, options, answer in rows:
      scores, counts = option_scores(self.context, params, imgs[i],
                                     prompt.format(question=question), options)
      pick = choose(scores, counts, self.config.get("normalize", "sum"))
      correct.append(options[pick] == answer)
    return float(np.mean(correct))

  def run(self, params: Any) -> dict[str, Any]:
    cfg, data = self.config, self.context.data_config
    records = common.load_records(data, cfg.get("split", "validation"),
                                  cfg.get("num_examples", 32),
                                  dataset=cfg.get("dataset", "shapes"))
    imgs = common.images(records, data)
    rows = question_rows(records)
    results = {f"{self.name}/accuracy": self._accuracy(params, imgs, rows),
               f"{self.name}/num_questions": len(rows)}
    if cfg.get("baselines", False):
      results[f"{self.name}/baseline_chance"] = float(
          np.mean([1.0 / len(options) for _, _, options, _ in rows]))
      results[f"{self.name}/baseline_no_image"] = self._accuracy(params, np.zeros_like(imgs),
                                                                 rows)
    return results
