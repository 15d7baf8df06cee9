"""Sample captions: greedy captions of held-out images, printed beside a reference caption, and
(with `answers=True`) greedy answers to each image's first question beside the true answer.

For Flamingo-style families with the decode API; the prompts are the training formats,
`[BOS] <image>` and `[BOS] <image>Question: q Answer:`, and decoding stops at `<|endofchunk|>`
or EOS. The scored versions are `captioning` and `vqa`.
"""

from __future__ import annotations

from typing import Any

from mmjax.evaluators import EvalContext, captioning, common, register, require, vqa


@register("captions")
class CaptionSamples:
  """Greedy captions (and answers) for the first `num_examples` images of `split`."""

  def __init__(self, name: str, config: Any, context: EvalContext):
    self.name, self.config, self.context = name, config, context
    require(name, context.family, "decode_step", "decode")

  def run(self, params: Any) -> dict[str, Any]:
    data = self.context.data_config
    n = self.config.get("num_examples", 4)
    records = common.load_records(data, self.config.get("split", "validation"), n)
    images = common.images(records, data)
    preds = captioning.generate_captions(self.context, params, images, "<image>",
                                         self.config.get("max_new_tokens", 24), batch_size=n)
    out = {f"{self.name}/{i}": f"{pred!r}  (reference: {record['captions'][0]!r})"
           for i, (pred, record) in enumerate(zip(preds, records))}
    if self.config.get("answers", False):
      questions = [r["questions"][0] for r in records]
      answers = vqa.answer_questions(self.context, params, images, questions,
                                     "<image>Question: {question} Answer:", 4, n)
      out.update({f"{self.name}/qa{i}": f"{q} -> {a!r}  (answer: {r['answer'][0]!r})"
                  for i, (q, a, r) in enumerate(zip(questions, answers, records))})
    return out
