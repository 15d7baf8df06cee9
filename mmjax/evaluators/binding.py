"""Fast concept binding: a few-shot task whose answer only the demonstrations define.

Frozen (Tsimpoukelli et al. 2021, §4.2, open-ended miniImageNet) names the classes of each
episode with made-up words ("This is a dax.") and asks for the query's word. Here the episodes of
shapes_interleaved kind='binding' name two colours; the k-shot prompt holds the episode's last 2k
supports (k images of each word, in the shapes training format) and the query:

    <image>This is a dax.<|endofchunk|><image>This is a blicket.<|endofchunk|> ... <image>This is a

The answer is correct when the first generated word is the query colour's word. At 0 shots the
word cannot be known (a guess among the 12 words is right 1 time in 12); from 1 shot a model that
copies a word from the prompt without looking reaches 0.5; above that only binding the word to
the colour seen beside it helps. So, unlike the captioning and VQA curves, whose formats training
already teaches, this curve measures in-context learning alone. `either_word` reports how often
the answer is one of the episode's two words (the format learnt, whatever the image).
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from mmjax.data.builders import shapes_interleaved
from mmjax.evaluators import EvalContext, common, register, require

DEMO = "<image>{target}<|endofchunk|>"
QUERY = "<image>" + shapes_interleaved.BINDING_PREFIX


def first_word(text: str) -> str:
  """The first word of a generation, lower-cased and without punctuation ('' if none)."""
  words = text.strip().split()
  return words[0].strip(".,;:!?\"'").lower() if words else ""


def prompt(targets: list[str], shots: int) -> str:
  """The k-shot prompt of an episode whose `targets` end with the query's: its last 2k
  supports, then the query."""
  supports = targets[:-1][len(targets) - 1 - 2 * shots:]
  return "".join(DEMO.format(target=t) for t in supports) + QUERY


@register("binding")
class BindingEvaluator:
  """Config: shots ((0, 1, 2, 4): supports per word), split ('validation'; 'heldout': query
  objects of held-out colour-shape pairs), num_examples (episodes, 64), max_new_tokens (None: the
  tokens of the longest word and its full stop), batch_size (32)."""

  def __init__(self, name: str, config: Any, context: EvalContext):
    self.name, self.config, self.context = name, config, context
    require(name, context.family, "decode_step", "decode")
    shots = tuple(config.get("shots", (0, 1, 2, 4)))
    if not shots or min(shots) < 0:
      raise ValueError(f"evals.{name}.shots must be non-negative supports per word, got {shots}")

  def _data_config(self) -> Any:
    """The run's data config, pointed at the binding episodes with the most shots asked for."""
    data = ml_collections.ConfigDict(self.context.data_config.to_dict())
    data.interleaved_kind = "binding"
    data.shots = max(1, max(self.config.get("shots", (0, 1, 2, 4))))
    return data

  def run(self, params: Any) -> dict[str, Any]:
    cfg, tok, family = self.config, self.context.tokenizer, self.context.family
    data = self._data_config()
    _, eoc_id = common.media_ids(tok)
    stops = (eoc_id, tok.eos_id)
    # Room for the longest word and its full stop (character pieces in a small vocabulary).
    max_new = cfg.get("max_new_tokens") or max(
        len(tok.encode(f" {w}.")) for w in shapes_interleaved.BINDING_WORDS)
    records = common.load_records(data, cfg.get("split", "validation"),
                                  cfg.get("num_examples", 64), dataset="shapes_interleaved")
    words = [r["query_answers"][0] for r in records]
    named = [sorted({first_word(t[len(shapes_interleaved.BINDING_PREFIX):])
                     for t in r["targets"]}) for r in records]
    media_all = [common.images([{"image": b} for b in r["images"]], data) for r in records]
    results: dict[str, Any] = {}
    for shots in cfg.get("shots", (0, 1, 2, 4)):
      key = f"{self.name}/{shots}shot"
      prompts = [prompt(r["targets"], shots) for r in records]
      media = [m[len(m) - 1 - 2 * shots:] for m in media_all]
      max_len = family.lm_config.max_len
      if max(1 + len(tok.encode(p)) for p in prompts) + max_new > max_len:
        results[f"{key}_accuracy"] = f"skipped: prompt exceeds lm.max_len {max_len}"
        continue
      preds = [first_word(t) for t in common.greedy_texts(
          family, params, tok, prompts, media, max_new, stops, cfg.get("batch_size", 32))]
      results[f"{key}_accuracy"] = float(np.mean([p == w for p, w in zip(preds, words)]))
      results[f"{key}_either_word"] = float(np.mean([p in n for p, n in zip(preds, named)]))
    return results
