"""Captioning: CIDEr(-D) and BLEU-4 of greedy (or beam) captions against all reference captions.

The scores are pycocoevalcap's own scorers (`cider.cider.Cider`, `bleu.bleu.Bleu`); texts are
tokenized here the way its PTB tokenizer does for these captions (lower case, punctuation
dropped), so no Java runs. Baselines: one "unigram caption" for every image (the most frequent
training words, in frequency order, as long as the median caption) and the model with blank
images (no-image model).
"""

from __future__ import annotations

import collections
import re
from typing import Any, Mapping, Sequence

import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

from mmjax import generate
from mmjax.evaluators import EvalContext, common, register, require

_PUNCT = re.compile(r"[^\w\s']")


def tokenize(text: str) -> str:
  """Lower case, punctuation removed, single spaces (PTBTokenizer's output for plain captions)."""
  return " ".join(_PUNCT.sub(" ", text.lower()).split())


def caption_scores(predictions: Mapping[Any, str],
                   references: Mapping[Any, Sequence[str]]) -> dict[str, float]:
  """{'cider', 'bleu4', 'bleu1'} of predictions (one per id) against references (several)."""
  if set(predictions) != set(references):
    raise ValueError("predictions and references must have the same ids")
  res = {k: [tokenize(v)] for k, v in predictions.items()}
  gts = {k: [tokenize(r) for r in refs] for k, refs in references.items()}
  cider, _ = Cider().compute_score(gts, res)
  bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
  return {"cider": float(cider), "bleu4": float(bleu[3]), "bleu1": float(bleu[0])}


def distinct_fraction(captions: Sequence[str]) -> float:
  """Distinct captions over captions (after `tokenize`): 1.0 when every image gets its own
  caption, 1/N when a model writes one sentence for every image (a collapse CIDEr alone hides,
  since one generic sentence still scores against generic references)."""
  if not captions:
    raise ValueError("distinct_fraction needs at least one caption")
  return len({tokenize(c) for c in captions}) / len(captions)


def unigram_caption(captions: Sequence[str]) -> str:
  """The most frequent words, most frequent first, as many as the median caption has."""
  words = [tokenize(c).split() for c in captions]
  counts = collections.Counter(w for ws in words for w in ws)
  length = int(np.median([len(ws) for ws in words]))
  return " ".join(w for w, _ in counts.most_common(length))


def generate_captions(context: EvalContext, params: Any, images: np.ndarray, prompt: str,
                      max_new_tokens: int, batch_size: int, num_beams: int = 1) -> list[str]:
  """Captions of a Flamingo-style family continuing `prompt` (with one `<image>`); `images`
  [N, H, W, 3], or clips [N, T, H, W, 3] (video)."""
  tok = context.tokenizer
  _, eoc_id = common.media_ids(tok)
  stops = (eoc_id, tok.eos_id)
  out = []
  for s in common.chunks(len(images), batch_size):
    batch = common.flamingo_batch(tok, [prompt] * len(images[s]), [im[None] for im in images[s]],
                                  max_length=context.family.lm_config.max_len - max_new_tokens)
    lengths = batch.pop("lengths")
    if num_beams > 1:
      ids = generate.beam_search(context.family, params, batch, max_new_tokens, num_beams,
                                 stop_ids=stops, lengths=lengths)
    else:
      ids = generate.greedy(context.family, params, batch, max_new_tokens, stop_ids=stops,
                            lengths=lengths)
    out += [tok.decode(generate.strip(row, stops)).strip() for row in ids.tolist()]
  return out


@register("captioning")
class CaptioningEvaluator:
  """CIDEr / BLEU-4 on the first `num_examples` images of `split` against all their captions.

  Config: dataset ('shapes'; 'shapes_video' captions clips of data.num_frames frames), split,
  num_examples, prompt ('<image>', the training format), max_new_tokens, num_beams, batch_size,
  baselines, single_frame (video: every clip is its middle frame repeated, the no-motion
  baseline of the same model).
  """

  def __init__(self, name: str, config: Any, context: EvalContext):
    self.name, self.config, self.context = name, config, context
    require(name, context.family, "decode_step", "decode")

  def run(self, params: Any) -> dict[str, Any]:
    cfg, data = self.config, self.context.data_config
    dataset = cfg.get("dataset", "shapes")  # Or coco_captions, flickr30k, nocaps, ...
    records = common.load_records(data, cfg.get("split", "validation"),
                                  cfg.get("num_examples", 64), dataset=dataset)
    imgs = common.visuals(records, data, cfg.get("single_frame", False))
    refs = {i: r["captions"] for i, r in enumerate(records)}
    args = (cfg.get("prompt", "<image>"), cfg.get("max_new_tokens", 24),
            cfg.get("batch_size", 64), cfg.get("num_beams", 1))
    preds = generate_captions(self.context, params, imgs, *args)
    results = {f"{self.name}/{k}": v
               for k, v in caption_scores(dict(enumerate(preds)), refs).items()}
    results[f"{self.name}/distinct"] = distinct_fraction(preds)
    results[f"{self.name}/example"] = f"{preds[0]!r} (reference: {refs[0][0]!r})"
    if cfg.get("baselines", False):
      train = common.load_records(data, "train", cfg.get("num_train_records", 512),
                                  dataset=dataset)
      unigram = unigram_caption([c for r in train for c in r["captions"]])
      for k, v in caption_scores({i: unigram for i in refs}, refs).items():
        results[f"{self.name}/baseline_unigram_{k}"] = v
      blank = generate_captions(self.context, params, np.zeros_like(imgs), *args)
      for k, v in caption_scores(dict(enumerate(blank)), refs).items():
        results[f"{self.name}/baseline_no_image_{k}"] = v
      results[f"{self.name}/baseline_no_image_distinct"] = distinct_fraction(blank)
    return results
