"""Image and text embeddings of a two-tower family (CLIP, SigLIP, CoCa), batched."""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np


class Embedder:
  """`images(params, x)` / `texts(params, strings)` -> L2-normalised embeddings (numpy)."""

  def __init__(self, family: Any, tokenizer: Any, text_length: int, batch_size: int = 64):
    if not hasattr(family, "predict_embeddings"):
      raise ValueError(f"family {family.family_name!r} has no predict_embeddings (two-tower "
                       "families only)")
    self.tokenizer, self.text_length, self.batch_size = tokenizer, text_length, batch_size
    self._image = jax.jit(lambda p, x: family.predict_embeddings(p, {"image": x})["image_emb"])
    self._text = jax.jit(lambda p, t: family.predict_embeddings(p, {"text": t})["text_emb"])

  def images(self, params: Any, images: np.ndarray) -> np.ndarray:
    """[N, D] embeddings of preprocessed images [N, H, W, 3]."""
    return np.concatenate([np.asarray(self._image(params, images[i:i + self.batch_size]))
                           for i in range(0, len(images), self.batch_size)])

  def texts(self, params: Any, texts: Sequence[str]) -> np.ndarray:
    """[N, D] embeddings of strings (BOS + text + EOS, padded as in training)."""
    ids = self.tokenizer.pad_ids(list(texts), self.text_length)
    return np.concatenate([np.asarray(self._text(params, ids[i:i + self.batch_size]))
                           for i in range(0, len(ids), self.batch_size)])


def image_features(family: Any, params: Any, images: np.ndarray, batch_size: int = 64
                   ) -> np.ndarray:
  """[N, D] frozen image features: a two-tower family's normalised image embeddings, or a
  Flamingo family's vision-tower pooled output (its ViT, before the resampler)."""
  if hasattr(family, "predict_embeddings"):
    fn = jax.jit(lambda p, x: family.predict_embeddings(p, {"image": x})["image_emb"])
  elif hasattr(family.module, "vision"):
    fn = jax.jit(lambda p, x: family.module.apply(
        {"params": p}, x, method=lambda m, x: m.vision(x)[0]))
  else:
    raise ValueError(f"family {family.family_name!r} has no image tower")
  return np.concatenate([np.asarray(fn(params, images[i:i + batch_size]))
                         for i in range(0, len(images), batch_size)])
