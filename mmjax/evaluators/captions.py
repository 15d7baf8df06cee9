"""Sample captions: greedy captions of held-out images, printed beside a reference caption.

For Flamingo-style families with the decode API; the prompt is `[BOS] <image>` (the training
format) and decoding stops at `<|endofchunk|>` or EOS. The scored version is `captioning`.
"""

from __future__ import annotations

from typing import Any

from mmjax.evaluators import EvalContext, captioning, common, register, require


@register("captions")
class CaptionSamples:
  """Greedy captions for the first `num_examples` images of `split`."""

  def __init__(self, name: str, config: Any, context: EvalContext):
    self.name, self.config, self.context = name, config, context
    require(name, context.family, "decode_step", "decode")

  def run(self, params: Any) -> dict[str, Any]:
    data = self.context.data_config
    n = self.config.get("num_examples", 4)
    records = common.load_records(data, self.config.get("split", "validation"), n)
    preds = captioning.generate_captions(self.context, params, common.images(records, data),
                                         "<image>", self.config.get("max_new_tokens", 24),
                                         batch_size=n)
    return {f"{self.name}/{i}": f"{pred!r}  (reference: {record['captions'][0]!r})"
            for i, (pred, record) in enumerate(zip(preds, records))}
