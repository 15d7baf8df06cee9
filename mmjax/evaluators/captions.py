"""Sample captions: greedy captions of held-out images, printed beside a reference caption.

For Flamingo-style families with the decode API; the prompt is `[BOS] <image>` and decoding
stops at `<|endofchunk|>` or EOS.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmjax import generate
from mmjax.data import pipeline
from mmjax.data import tokenizers as tok_lib
from mmjax.evaluators import EvalContext, register, require
from mmjax.evaluators.loss import eval_data_config


@register("captions")
class CaptionSamples:
  """Greedy captions for the first `num_examples` images of `split`."""

  def __init__(self, name: str, config: Any, context: EvalContext):
    self.name, self.config, self.context = name, config, context
    require(name, context.family, "decode_step", "decode")

  def run(self, params: Any) -> dict[str, Any]:
    tok = self.context.tokenizer
    data = eval_data_config(self.config, self.context)
    data.task, data.as_media = "caption", True
    it = pipeline.make_pipeline(data, tokenizer=tok, train=False)
    try:
      batch = next(it)
    finally:
      it.close()
    n = min(self.config.get("num_examples", 4), batch["tokens"].shape[0])
    image_id, eoc_id = tok.token_id(tok_lib.IMAGE_TOKEN), tok.token_id(tok_lib.END_OF_CHUNK_TOKEN)
    prompt = np.array([[tok.bos_id, image_id]] * n, np.int32)
    prompt_batch = {"media": batch["media"][:n, :1], "media_mask": batch["media_mask"][:n, :1],
                    "tokens": prompt, "media_locations": prompt == image_id}
    out = generate.greedy(self.context.family, params, prompt_batch,
                          self.config.get("max_new_tokens", 24), stop_ids=(eoc_id, tok.eos_id))
    results = {}
    for i in range(n):
      pred = [t for t in out[i].tolist() if t not in (eoc_id, tok.eos_id)]
      ref = [t for t in batch["tokens"][i].tolist()
             if t not in (tok.bos_id, image_id, eoc_id, tok.eos_id, tok.pad_id)]
      results[f"{self.name}/{i}"] = f"{tok.decode(pred)!r}  (reference: {tok.decode(ref)!r})"
    return results
