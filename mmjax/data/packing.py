"""Turning text segments into the batch contract's token rows.

A row is a list of segments `(ids, role)`; roles:
  'prompt'  tokens the model reads but is not trained to produce (loss 0),
  'target'  tokens the model is trained to produce (loss 1),
  'image'   one `<image>` token: `media_locations` True there, loss 0.
`assemble` concatenates, truncates to `length`, and right-pads with `pad_id`. `loss_mask[t]`
weights the loss of predicting tokens[t] (the batch contract's next-token convention), so it is 1
exactly at target tokens, 0 on prompts, `<image>` and padding, and t = 0 is always a prompt (BOS).

Interleaved rows follow open_flamingo's labels: no loss before the first `<image>`, none on
`<image>` itself, loss on the text after each image up to and including its `<|endofchunk|>`,
none between `<|endofchunk|>` and the next image (nor on the final EOS).

`pack` chooses which of several short samples (chat conversations) share one row: their segment
lists are concatenated in order, so a packed row is exactly the unpacked rows' tokens, loss masks
and `<image>` positions back to back. mmjax's LMs take no segment ids (models/lm.py: causal
attention over the whole row, positions counted from the row start), so attention does cross
sample boundaries; only the loss masking separates the samples, and each sample starts with BOS.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

PROMPT, TARGET, IMAGE = "prompt", "target", "image"


def assemble(segments: Sequence[tuple[Sequence[int], str]], length: int, pad_id: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
  """(tokens [L] int32, loss_mask [L] float32, media_locations [L] bool, images kept).

  Truncation drops whole `<image>` tokens past `length`; `images kept` tells the caller how
  many media items still have their token, so media and markers stay in step.
  """
  tokens = np.full((length,), pad_id, np.int32)
  loss = np.zeros((length,), np.float32)
  locs = np.zeros((length,), bool)
  t = 0
  for ids, role in segments:
    if role not in (PROMPT, TARGET, IMAGE):
      raise ValueError(f"segment role must be prompt/target/image, got {role!r}")
    if role == IMAGE and len(ids) != 1:
      raise ValueError(f"an image segment is exactly one <image> id, got {list(ids)}")
    n = min(len(ids), length - t)
    tokens[t:t + n] = ids[:n]
    if role == TARGET:
      loss[t:t + n] = 1.0
    elif role == IMAGE and n:
      locs[t] = True
    t += n
    if t >= length:
      break
  loss[0] = 0.0  # Nothing predicts position 0.
  return tokens, loss, locs, int(locs.sum())


def num_tokens(segments: Sequence[tuple[Sequence[int], str]]) -> int:
  """Tokens the segments take in a row."""
  return sum(len(ids) for ids, _ in segments)


def num_images(segments: Sequence[tuple[Sequence[int], str]]) -> int:
  """`<image>` segments (media items) among the segments."""
  return sum(role == IMAGE for _, role in segments)


def pack(samples: Sequence[Sequence[tuple[Sequence[int], str]]], length: int, max_media: int
         ) -> list[int]:
  """Indices of the `samples` (segment lists) that share one row, in order.

  The first sample is always taken (`assemble` truncates it if it alone is too long); each later
  one is taken when it fits whole in what is left of `length` tokens and `max_media` images, and
  skipped otherwise (a later, shorter one may still fit).
  """
  if not samples:
    raise ValueError("pack needs at least one sample")
  chosen = [0]
  used, images = num_tokens(samples[0]), num_images(samples[0])
  for k in range(1, len(samples)):
    n, m = num_tokens(samples[k]), num_images(samples[k])
    if used + n <= length and images + m <= max_media:
      chosen.append(k)
      used, images = used + n, images + m
  return chosen
