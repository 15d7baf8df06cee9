"""Open-ended VQA accuracy with the VQAv2 metric (Antol et al. 2015; the official vqaEval.py).

    acc(pred, answers) = mean over the 10 choose-9 subsets of min(#matches in subset / 3, 1)

after the official answer normalisation (punctuation, number words -> digits, articles dropped,
contractions restored). The evaluator generates answers greedily with a Flamingo-style family
from `<image>Question: q Answer:` prompts and reports, beside the model, two baselines: the most
frequent training answer, and the same model with blank images (no-image model).
"""

from __future__ import annotations

import collections
import re
from typing import Any, Sequence

import numpy as np

from mmjax import generate
from mmjax.evaluators import EvalContext, common, register, require

# ---- The official normalisation (VQA/PythonEvaluationTools/vqaEvaluation/vqaEval.py) ------------

_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "didnt": "didn't", "doesnt": "doesn't", "dont": "don't",
    "hadnt": "hadn't", "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've",
    "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itll": "it'll", "let's": "let's",
    "maam": "ma'am", "mightnt": "mightn't", "mightve": "might've", "mustnt": "mustn't",
    "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock",
    "oughtnt": "oughtn't", "shant": "shan't", "shed": "she'd", "shes": "she's",
    "shouldve": "should've", "shouldnt": "shouldn't", "somebodys": "somebody's",
    "someones": "someone's", "somethings": "something's", "thats": "that's", "thered": "there'd",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyll": "they'll",
    "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed": "we'd",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "wholl": "who'll",
    "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's",
    "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't", "yall": "y'all",
    "youd": "you'd", "youll": "you'll", "youre": "you're", "youve": "you've",
}
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
            "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = ("a", "an", "the")
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
_PUNCT = (";", r"/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@",
          "`", ",", "?", "!")


def _punctuation(text: str) -> str:
  out = text
  for p in _PUNCT:
    if (p + " " in text or " " + p in text) or re.search(_COMMA_STRIP, text) is not None:
      out = out.replace(p, "")
    else:
      out = out.replace(p, " ")
  return _PERIOD_STRIP.sub("", out, re.UNICODE)


def _digits_articles(text: str) -> str:
  words = []
  for word in text.lower().split():
    word = _NUMBERS.get(word, word)
    if word not in _ARTICLES:
      words.append(word)
  return " ".join(_CONTRACTIONS.get(w, w) for w in words)


def normalize_answer(answer: str) -> str:
  """The official VQA answer normalisation."""
  answer = answer.replace("\n", " ").replace("\t", " ").strip()
  return _digits_articles(_punctuation(answer))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
  """VQAv2 accuracy of one prediction against its (10) human answers."""
  pred = normalize_answer(prediction)
  gts = [normalize_answer(a) for a in answers]
  accs = []
  for i in range(len(gts)):
    others = gts[:i] + gts[i + 1:]
    accs.append(min(sum(g == pred for g in others) / 3.0, 1.0))
  return float(np.mean(accs))


def most_frequent_answer(records: Sequence[dict]) -> str:
  """The most common canonical training answer (the prior baseline)."""
  counts = collections.Counter(normalize_answer(a) for r in records for a in r["answer"])
  return counts.most_common(1)[0][0]


def per_type_accuracy(name: str, preds: Sequence[str], answers: Sequence[Sequence[str]],
                      kinds: Sequence[str | None]) -> dict[str, float]:
  """{name}/accuracy_<type> and {name}/num_<type> per question type (none when untyped): a
  motion question needing several frames shows up as its own row."""
  out = {}
  for kind in sorted({k for k in kinds if k is not None}):
    picked = [vqa_accuracy(p, a) for p, a, k in zip(preds, answers, kinds) if k == kind]
    out[f"{name}/accuracy_{kind}"] = float(np.mean(picked))
    out[f"{name}/num_{kind}"] = len(picked)
  return out


# ---- The evaluator ------------------------------------------------------------------------------

def answer_questions(context: EvalContext, params: Any, images: np.ndarray,
                     questions: Sequence[str], prompt: str, max_new_tokens: int,
                     batch_size: int) -> list[str]:
  """Greedy answers of a Flamingo-style family to `prompt.format(question=q)` about images
  [N, H, W, 3] or clips [N, T, H, W, 3]."""
  tok = context.tokenizer
  _, eoc_id = common.media_ids(tok)
  out = []
  for s in common.chunks(len(questions), batch_size):
    batch = common.flamingo_batch(tok, [prompt.format(question=q) for q in questions[s]],
                                  [im[None] for im in images[s]],
                                  max_length=context.family.lm_config.max_len - max_new_tokens)
    lengths = batch.pop("lengths")
    ids = generate.greedy(context.family, params, batch, max_new_tokens,
                          stop_ids=(eoc_id, tok.eos_id), lengths=lengths)
    out += [tok.decode(generate.strip(row, (eoc_id, tok.eos_id))).strip() for row in ids.tolist()]
  return out


@register("vqa")
class VQAEvaluator:
  """VQAv2 accuracy of greedy answers on `split` (every question of the first `num_examples`).

  Config: dataset ('shapes'; 'shapes_video' asks about clips of data.num_frames frames), split,
  num_examples, prompt ('<image>Question: {question} Answer:'), max_new_tokens, batch_size,
  baselines (True: most-frequent answer and blank-image model), single_frame (video: every clip
  is its middle frame repeated). Records with `question_types` also get accuracy_<type> (and
  num_<type>) per type, e.g. direction / order for video.
  """

  def __init__(self, name: str, config: Any, context: EvalContext):
    self.name, self.config, self.context = name, config, context
    require(name, context.family, "decode_step", "decode")

  def run(self, params: Any) -> dict[str, Any]:
    cfg, data = self.config, self.context.data_config
    # `dataset`: any dataset with VQA records (shapes, vqav2, okvqa, gqa, textvqa).
    dataset = cfg.get("dataset", "shapes")
    records = common.load_records(data, cfg.get("split", "validation"),
                                  cfg.get("num_examples", 64), dataset=dataset)
    imgs = common.visuals(records, data, cfg.get("single_frame", False))
    rows = [(i, q, answers) for i, r in enumerate(records)
            for q, answers in zip(r["questions"], r["answers"])]
    kinds = [k for r in records for k in r.get("question_types", [None] * len(r["questions"]))]
    idx = np.array([i for i, _, _ in rows])
    questions = [q for _, q, _ in rows]
    prompt = cfg.get("prompt", "<image>Question: {question} Answer:")
    args = (prompt, cfg.get("max_new_tokens", 4), cfg.get("batch_size", 64))
    preds = answer_questions(self.context, params, imgs[idx], questions, *args)
    acc = lambda ps: float(np.mean([vqa_accuracy(p, a) for p, (_, _, a) in zip(ps, rows)]))
    results = {f"{self.name}/accuracy": acc(preds), f"{self.name}/num_questions": len(rows),
               f"{self.name}/example": f"Q: {questions[0]} -> {preds[0]!r}"}
    results.update(per_type_accuracy(self.name, preds, [a for _, _, a in rows], kinds))
    if cfg.get("baselines", False):
      train = common.load_records(data, "train", cfg.get("num_train_records", 512),
                                  dataset=dataset)
      prior = most_frequent_answer(train)
      results[f"{self.name}/baseline_most_frequent"] = acc([prior] * len(rows))
      blank = answer_questions(self.context, params, np.zeros_like(imgs[idx]), questions, *args)
      results[f"{self.name}/baseline_no_image"] = acc(blank)
    return results
