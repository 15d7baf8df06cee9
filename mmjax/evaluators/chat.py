"""Instruction following: exact-match accuracy of greedy replies inside conversations.

For every assistant turn of the first `num_examples` records of a conversation dataset
(shapes_instruct), the model reads the conversation up to that turn in the run's chat template,
ending with the generation prompt `<|im_start|>assistant\\n`, and replies greedily until
`<|im_end|>`. A reply is right when it equals the recorded answer (under `data.chain_of_thought`,
when the answer after its last 'Answer: ' does), so later turns are scored with the true earlier
answers in context (teacher forcing, as in the training rows). Reported: accuracy overall and
per question kind, and the same model with blank images (what the image is worth).

    config.evals.chat = dict(type="chat", every_steps=500, split="validation", num_examples=32)
"""

from __future__ import annotations

import collections
from typing import Any, Sequence

import numpy as np

from mmjax import generate
from mmjax.data import conversation, datasets, preprocess
from mmjax.evaluators import EvalContext, common, register, require


def _text(value: Any) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def prompts(context: EvalContext, records: Sequence[dict], max_length: int
            ) -> list[tuple[list[int], np.ndarray, str, str]]:
  """(prompt ids, its images [M, H, W, 3], answer, kind) per assistant turn of `records` whose
  prompt fits `max_length` tokens."""
  data, tok = context.data_config, context.tokenizer
  template = conversation.get_template(data.get("chat_template", "chatml"))
  ids = conversation.chat_ids(tok)
  cot = bool(data.get("chain_of_thought", False))
  out = []
  for r in records:
    contents = r["cot_contents" if cot else "contents"]
    turns = conversation.turns([{"role": _text(a), "content": _text(c)}
                                for a, c in zip(r["roles"], contents)])
    images = [preprocess.process_images(
        [preprocess.decode_png(b, "images")], data.image_size, train=False, rng=None,
        mean=data.mean, std=data.std)[0] for b in r["images"]]
    for k, t in enumerate(turns):
      if t.role != conversation.ASSISTANT:
        continue
      segments = template.segments(turns[:k], tok.encode, ids, add_generation_prompt=True)
      row = [tok.bos_id] + [i for seg, _ in segments for i in seg]
      if len(row) <= max_length:
        m = conversation.num_images(turns[:k])
        media = np.stack(images[:m]) if m else np.zeros((0,) + images[0].shape, np.float32)
        out.append((row, media, _text(r["turn_answers"][k]), _text(r["kinds"][k])))
  return out


def _batch(rows: Sequence[list[int]], media: Sequence[np.ndarray], image_id: int, pad_id: int,
           max_media: int, max_length: int) -> dict[str, np.ndarray]:
  """Right-padded prompts with their media; the length is rounded up to 16 (few compiled
  shapes) but not past `max_length` (the room the KV cache leaves after the reply)."""
  length = min(-(-max(len(r) for r in rows) // 16) * 16, max_length)
  size = media[0].shape[1:]
  tokens = np.full((len(rows), length), pad_id, np.int32)
  out_media = np.zeros((len(rows), max_media, 1) + tuple(size), np.float32)
  mask = np.zeros((len(rows), max_media), bool)
  for b, (row, m) in enumerate(zip(rows, media)):
    tokens[b, :len(row)] = row
    out_media[b, :len(m), 0] = m
    mask[b, :len(m)] = True
  return {"tokens": tokens, "media": out_media, "media_mask": mask,
          "media_locations": tokens == image_id,
          "lengths": np.array([len(r) for r in rows], np.int32)}


def reply(context: EvalContext, params: Any, items: Sequence[tuple], max_new_tokens: int,
          batch_size: int, blank: bool = False) -> list[str]:
  """Greedy replies (text before `<|im_end|>`) to the prompts of `prompts(...)`."""
  tok = context.tokenizer
  ids = conversation.chat_ids(tok)
  max_media = max(max(len(m) for _, m, _, _ in items), 1)
  out = []
  for s in common.chunks(len(items), batch_size):
    chunk = items[s]
    media = [np.zeros_like(m) if blank else m for _, m, _, _ in chunk]
    batch = _batch([r for r, _, _, _ in chunk], media, ids.image, tok.pad_id, max_media,
                   context.family.lm_config.max_len - max_new_tokens)
    lengths = batch.pop("lengths")
    gen = generate.greedy(context.family, params, batch, max_new_tokens,
                          stop_ids=(ids.im_end, tok.eos_id), lengths=lengths)
    out += [tok.decode(generate.strip(row, (ids.im_end, tok.eos_id))).strip()
            for row in gen.tolist()]
  return out


def score(replies: Sequence[str], answers: Sequence[str], cot: bool) -> list[bool]:
  """Exact match of each reply (its final answer under chain of thought) with the answer."""
  out = []
  for r, a in zip(replies, answers):
    if cot:
      r = conversation.final_answer(r) if conversation.ANSWER_PREFIX in r else ""
    out.append(r.strip() == a)
  return out


@register("chat")
class ChatEvaluator:
  """Exact-match accuracy of greedy assistant replies (see the module docstring).

  Config: dataset ('shapes_instruct'), split ('validation'), num_examples (32 records),
  max_new_tokens (8; raise it for chain of thought), batch_size (32), baselines (True: the same
  model with blank images).
  """

  def __init__(self, name: str, config: Any, context: EvalContext):
    self.name, self.config, self.context = name, config, context
    require(name, context.family, "decode_step", "decode")

  def run(self, params: Any) -> dict[str, Any]:
    cfg, data = self.config, self.context.data_config
    source = datasets.load_source(cfg.get("dataset", "shapes_instruct"),
                                  cfg.get("split", "validation"),
                                  **datasets.source_kwargs(data))
    records = [source[i] for i in range(min(int(cfg.get("num_examples", 32)), len(source)))]
    new = int(cfg.get("max_new_tokens", 8))
    items = prompts(self.context, records, self.context.family.lm_config.max_len - new)
    if not items:
      raise ValueError(f"evals.{self.name}: no assistant turn whose prompt fits "
                       f"lm.max_len - max_new_tokens")
    answers, kinds = [a for _, _, a, _ in items], [k for _, _, _, k in items]
    cot = bool(data.get("chain_of_thought", False))
    args = (new, int(cfg.get("batch_size", 32)))
    preds = reply(self.context, params, items, *args)
    right = score(preds, answers, cot)
    results = {f"{self.name}/accuracy": float(np.mean(right)),
               f"{self.name}/num_turns": len(items),
               f"{self.name}/example": f"{answers[0]!r} -> {preds[0]!r}"}
    by_kind = collections.defaultdict(list)
    for kind, ok in zip(kinds, right):
      by_kind[kind].append(ok)
    for kind, oks in sorted(by_kind.items()):
      results[f"{self.name}/accuracy_{kind}"] = float(np.mean(oks))
    if cfg.get("baselines", True):
      blank = reply(self.context, params, items, *args, blank=True)
      results[f"{self.name}/baseline_no_image"] = float(np.mean(score(blank, answers, cot)))
    return results
