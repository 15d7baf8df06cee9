"""Image-text retrieval: recall@1/5/10 in both directions (each image has several captions).

image->text: an image counts at k when any of its captions ranks in the top k texts;
text->image: a caption counts when its image ranks in the top k images. Baseline: the expected
recall of a random ranking.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from mmjax.evaluators import EvalContext, common, register
from mmjax.evaluators import embeddings as emb_lib


def recall_at_k(sim: np.ndarray, text_to_image: Sequence[int],
                ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
  """Recall@k of a similarity matrix [num_images, num_texts] in both directions."""
  text_to_image = np.asarray(text_to_image)
  n_img, n_txt = sim.shape
  # Rank of the best correct item: the count of items scoring strictly higher.
  correct = text_to_image[None, :] == np.arange(n_img)[:, None]  # [I, T]
  best_text = np.max(np.where(correct, sim, -np.inf), axis=1)
  i2t_rank = np.sum(sim > best_text[:, None], axis=1)
  own = sim[text_to_image, np.arange(n_txt)]
  t2i_rank = np.sum(sim > own[None, :], axis=0)
  out = {}
  for k in ks:
    out[f"i2t_recall@{k}"] = float(np.mean(i2t_rank < k))
    out[f"t2i_recall@{k}"] = float(np.mean(t2i_rank < k))
  return out


def random_recall(num_images: int, captions_per_image: int, ks: Sequence[int] = (1, 5, 10)
                  ) -> dict[str, float]:
  """Expected recall@k of a random ranking (hypergeometric for image->text)."""
  n_txt = num_images * captions_per_image
  out = {}
  for k in ks:
    # P(none of the image's c captions in a random top k of n_txt).
    miss = np.prod([(n_txt - captions_per_image - j) / (n_txt - j) for j in range(min(k, n_txt))])
    out[f"i2t_recall@{k}"] = float(1 - max(miss, 0.0))
    out[f"t2i_recall@{k}"] = min(k / num_images, 1.0)
  return out


@register("retrieval")
class RetrievalEvaluator:
  """Recall@1/5/10 over the first `num_examples` images of `split` and their
  `captions_per_image` first captions. Config also: dataset ('shapes', or a captioning dataset:
  coco_captions, flickr30k, nocaps, webdataset), batch_size, baselines."""

  def __init__(self, name: str, config: Any, context: EvalContext):
    self.name, self.config, self.context = name, config, context
    self.embedder = emb_lib.Embedder(context.family, context.tokenizer,
                                     context.data_config.text_length,
                                     config.get("batch_size", 64))

  def run(self, params: Any) -> dict[str, Any]:
    cfg, data = self.config, self.context.data_config
    records = common.load_records(data, cfg.get("split", "validation"),
                                  cfg.get("num_examples", 128),
                                  dataset=cfg.get("dataset", "shapes"))
    per = cfg.get("captions_per_image", 5)
    texts = [c for r in records for c in r["captions"][:per]]
    owner = [i for i, r in enumerate(records) for _ in r["captions"][:per]]
    sim = (self.embedder.images(params, common.images(records, data)) @
           self.embedder.texts(params, texts).T)
    results = {f"{self.name}/{k}": v for k, v in recall_at_k(sim, owner).items()}
    if cfg.get("baselines", False):
      mean_per = len(texts) // len(records)
      results.update({f"{self.name}/baseline_random_{k}": v
                      for k, v in random_recall(len(records), mean_per).items()})
    return results
