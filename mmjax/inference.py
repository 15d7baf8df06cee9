"""The inference API: load a run, caption, answer with in-context examples, embed and score.

    from mmjax import inference
    model = inference.load("/tmp/mmjax_tiny")                   # workdir, step dir or .safetensors
    model.caption(image)                                         # Flamingo-style families
    model.answer(image, "What colour is the star?", examples=[(img, "What shape ...?", "star")])
    model.embed_images(images); model.embed_texts(texts)         # two-tower families
    model.similarity(images, texts)                              # [N_images, N_texts] cosine

Images are PIL images, file paths, PNG bytes or uint8 arrays [H, W, 3]; they are preprocessed
as the run's evaluation pipeline does. The CLI does the same from a shell:

    python -m mmjax.inference --checkpoint /tmp/mmjax_tiny caption scene.png
"""

from __future__ import annotations

import argparse
import io
import sys
from typing import Any, Optional, Sequence

import numpy as np
from PIL import Image

from mmjax import generate
from mmjax import restore
from mmjax.data import preprocess
from mmjax.data import tokenizers
from mmjax.evaluators import common
from mmjax.evaluators import embeddings as emb_lib
from mmjax.models import family as family_lib


def _to_pil(image: Any) -> Image.Image:
  if isinstance(image, Image.Image):
    return image.convert("RGB")
  if isinstance(image, (bytes, bytearray)):
    return Image.open(io.BytesIO(image)).convert("RGB")
  if isinstance(image, str):
    return Image.open(image).convert("RGB")
  array = np.asarray(image)
  if array.dtype != np.uint8 or array.ndim != 3:
    raise ValueError(f"expected a uint8 [H, W, 3] array, got {array.dtype} {array.shape}")
  return Image.fromarray(array)


class Model:
  """A restored model with its tokenizer and preprocessing (see the module docstring)."""

  def __init__(self, config: Any, params: Any):
    self.config, self.params = config, params
    self.family = family_lib.build(config.model)
    self.tokenizer = tokenizers.get_tokenizer(config.data.tokenizer,
                                              data_dir=config.data.data_dir)
    self._can_decode = hasattr(self.family, "decode_step")
    if self._can_decode:
      tokenizers.with_media_tokens(self.tokenizer)
    self._embedder = None

  def preprocess(self, images: Sequence[Any]) -> np.ndarray:
    """[N, H, W, 3] float32 model inputs (evaluation preprocessing of the run's data config)."""
    d = self.config.data
    return np.stack([preprocess.process_images([_to_pil(im)], d.image_size, train=False,
                                               rng=None, mean=d.mean, std=d.std)[0]
                     for im in images])

  def _decode(self, images: Sequence[Any], prompt: str, max_new_tokens: int,
              num_beams: int) -> str:
    if not self._can_decode:
      raise ValueError(f"family {self.family.family_name!r} does not generate text")
    tok = self.tokenizer
    _, eoc_id = common.media_ids(tok)
    stops = (eoc_id, tok.eos_id)
    batch = common.flamingo_batch(tok, [prompt], [self.preprocess(images)],
                                  max_length=self.family.lm_config.max_len - max_new_tokens)
    lengths = batch.pop("lengths")
    if num_beams > 1:
      ids = generate.beam_search(self.family, self.params, batch, max_new_tokens, num_beams,
                                 stop_ids=stops, lengths=lengths)
    else:
      ids = generate.greedy(self.family, self.params, batch, max_new_tokens, stop_ids=stops,
                            lengths=lengths)
    return tok.decode(generate.strip(ids[0].tolist(), stops)).strip()

  def caption(self, image: Any, max_new_tokens: int = 24, num_beams: int = 1,
              prompt: str = "<image>") -> str:
    """A caption of `image` (prompt '<image>' is the shapes training format)."""
    return self._decode([image], prompt, max_new_tokens, num_beams)

  def answer(self, image: Any, question: str,
             examples: Sequence[tuple[Any, str, str]] = (), max_new_tokens: int = 4,
             template: str = "<image>Question: {q} Answer:") -> str:
    """Answer to `question` about `image`, after k in-context (image, question, answer)
    examples, each written `template` + ' answer<|endofchunk|>'."""
    demos = "".join(template.format(q=q) + f" {a}<|endofchunk|>" for _, q, a in examples)
    images = [im for im, _, _ in examples] + [image]
    return self._decode(images, demos + template.format(q=question), max_new_tokens, 1)

  def _embedding(self) -> emb_lib.Embedder:
    if self._embedder is None:
      self._embedder = emb_lib.Embedder(self.family, self.tokenizer,
                                        self.config.data.text_length)
    return self._embedder

  def embed_images(self, images: Sequence[Any]) -> np.ndarray:
    """[N, D] L2-normalised image embeddings (two-tower families)."""
    return self._embedding().images(self.params, self.preprocess(images))

  def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
    """[N, D] L2-normalised text embeddings (two-tower families)."""
    return self._embedding().texts(self.params, texts)

  def similarity(self, images: Sequence[Any], texts: Sequence[str]) -> np.ndarray:
    """[N_images, N_texts] cosine similarities (CLIP-style scores)."""
    return self.embed_images(images) @ self.embed_texts(texts).T


def load(checkpoint: str, config: Optional[str] = None, overrides: Sequence[str] = ()) -> Model:
  """A `Model` from a workdir / checkpoint step / converted file; the config is the run's
  config.json unless `config` (configs/x.py:preset) is given."""
  run_config = restore.load_run_config(checkpoint, config, overrides)
  params, _ = restore.load_params(checkpoint)
  return Model(run_config, params)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description="Caption, answer, or score images and texts.")
  parser.add_argument("--checkpoint", required=True)
  parser.add_argument("--config", help="configs/<family>.py:<preset> (default: the run's)")
  sub = parser.add_subparsers(dest="command", required=True)
  sub.add_parser("caption").add_argument("image")
  ask = sub.add_parser("answer")
  ask.add_argument("image")
  ask.add_argument("question")
  score = sub.add_parser("similarity")
  score.add_argument("image")
  score.add_argument("texts", nargs="+")
  args = parser.parse_args(argv)
  model = load(args.checkpoint, args.config)
  if args.command == "caption":
    print(model.caption(args.image))
  elif args.command == "answer":
    print(model.answer(args.image, args.question))
  else:
    for text, value in zip(args.texts, model.similarity([args.image], args.texts)[0]):
      print(f"{value:+.4f}  {text}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
