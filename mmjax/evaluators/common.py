"""What the task evaluators share: reading evaluation records with their strings, preprocessing
images exactly as the eval pipeline does, Flamingo prompts, and batched model calls.

The batch contract has no string keys, so references, answers and labels come from the tfds
records themselves (`mmjax.data.datasets.load_source`), and their images go through
`mmjax.data.preprocess.process_images(train=False)` with the run's size/mean/std, which is what
`pipeline.make_pipeline(..., train=False)` does.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mmjax import generate
from mmjax.data import datasets, preprocess
from mmjax.data import frames as frames_lib
from mmjax.data import tokenizers as tok_lib


def load_records(data_config: Any, split: str, limit: int | None = None,
                 dataset: str = "shapes") -> list[dict]:
  """The first `limit` records of `split` (all when None), as plain dicts with str texts."""
  source = datasets.load_source(dataset, split, **datasets.source_kwargs(data_config))
  n = len(source) if limit is None else min(int(limit), len(source))
  return [_plain(source[i]) for i in range(n)]


def _plain(record: dict) -> dict:
  def text(v):
    return v.decode("utf-8") if isinstance(v, bytes) else v
  out = {}
  for key, value in record.items():
    if key == "image":
      out[key] = value
    elif key in ("frames", "images"):  # A clip's or an episode's PNG bytes, one per image.
      out[key] = list(value)
    elif key == "answers":
      out[key] = [[text(a) for a in row] for row in value]
    elif isinstance(value, (list, tuple, np.ndarray)) and np.ndim(value) == 1:
      out[key] = [text(v) for v in value]
    else:
      out[key] = text(value)
  if "scene" in out:
    out["scene"] = json.loads(out["scene"])
  return out


def images(records: Sequence[dict], data_config: Any) -> np.ndarray:
  """[N, H, W, 3] float32 images, preprocessed as the evaluation pipeline does."""
  out = [preprocess.process_images([preprocess.decode_png(r["image"])], data_config.image_size,
                                   train=False, rng=None, mean=data_config.mean,
                                   std=data_config.std)[0] for r in records]
  return np.stack(out)


def clips(records: Sequence[dict], data_config: Any, single_frame: bool = False) -> np.ndarray:
  """[N, T, H, W, 3] clips of video records (`frames`), T = data.num_frames taken as the eval
  pipeline does (frame_sampling with no generator); `single_frame`: each clip's middle frame
  repeated T times (the baseline that sees no motion)."""
  out = []
  for r in records:
    keep = frames_lib.sample_indices(len(r["frames"]), int(data_config.num_frames),
                                     data_config.get("frame_sampling", "uniform"),
                                     stride=int(data_config.get("frame_stride", 1)))
    clip = preprocess.process_images(
        [preprocess.decode_png(r["frames"][i], "frames") for i in keep], data_config.image_size,
        train=False, rng=None, mean=data_config.mean, std=data_config.std)
    out.append(frames_lib.middle_frame_clip(clip) if single_frame else clip)
  return np.stack(out)


def visuals(records: Sequence[dict], data_config: Any, single_frame: bool = False) -> np.ndarray:
  """What each record shows the model: `clips` [N, T, H, W, 3] for video records (with
  `frames`), else `images` [N, H, W, 3]; `single_frame` applies to video only."""
  if records and "frames" in records[0]:
    return clips(records, data_config, single_frame)
  if single_frame:
    raise ValueError("single_frame=True needs video records (a dataset with frames)")
  return images(records, data_config)


def batched(fn: Callable[..., Any], arrays: Sequence[np.ndarray], batch_size: int) -> Any:
  """`fn(*chunk)` over chunks of the leading axis, results concatenated (numpy)."""
  n = len(arrays[0])
  outs = [jax.device_get(fn(*[a[i:i + batch_size] for a in arrays]))
          for i in range(0, n, batch_size)]
  return jax.tree.map(lambda *x: np.concatenate(x), *outs)


def chunks(n: int, size: int) -> Iterator[slice]:
  """Slices of range(n) of at most `size`."""
  for i in range(0, n, size):
    yield slice(i, min(i + size, n))


# ---- Flamingo prompts ---------------------------------------------------------------------------

def media_ids(tok: tok_lib.Tokenizer) -> tuple[int, int]:
  """(<image>, <|endofchunk|>) ids, added in the pipeline's order if missing."""
  image_id, eoc_id = tok.add_special_tokens([tok_lib.IMAGE_TOKEN, tok_lib.END_OF_CHUNK_TOKEN])
  return image_id, eoc_id


def flamingo_batch(tok: tok_lib.Tokenizer, texts: Sequence[str],
                   media: Sequence[np.ndarray], length_multiple: int = 16,
                   max_length: int | None = None) -> dict[str, np.ndarray]:
  """Right-padded prompts `[BOS] text` (texts contain `<image>` markers) with their media.

  media[b] is [M_b, H, W, 3] (images) or [M_b, T, H, W, 3] (clips of T frames), one item per
  `<image>` of texts[b]. Returns the batch (media padded to the largest M; T = 1 for images) and
  `lengths` [B]. The token length is rounded up
  to `length_multiple` so that jitted callers compile few shapes, but not past `max_length`
  (callers that generate pass lm.max_len - max_new_tokens, the room the KV cache has).
  """
  image_id, _ = media_ids(tok)
  ids = [[tok.bos_id] + tok.encode(t) for t in texts]
  for t, row, m in zip(texts, ids, media):
    if row.count(image_id) != len(m):
      raise ValueError(f"prompt {t!r} has {row.count(image_id)} <image> tokens for {len(m)} images")
  longest = max(len(r) for r in ids)
  length = -(-longest // length_multiple) * length_multiple
  if max_length is not None:
    if longest > max_length:
      raise ValueError(f"prompt of {longest} tokens exceeds the {max_length} that fit")
    length = min(length, max_length)
  max_m = max(max(len(m) for m in media), 1)
  media = [m if np.ndim(m) == 5 else np.asarray(m)[:, None] for m in media]
  if len({m.shape[1:] for m in media}) > 1:
    raise ValueError(f"media items differ in [T, H, W, 3]: {sorted({m.shape[1:] for m in media})}")
  b = len(texts)
  tokens = np.full((b, length), tok.pad_id, np.int32)
  out_media = np.zeros((b, max_m) + tuple(media[0].shape[1:]), np.float32)
  mask = np.zeros((b, max_m), bool)
  for i, (row, m) in enumerate(zip(ids, media)):
    tokens[i, :len(row)] = row
    if len(m):
      out_media[i, :len(m)] = m
      mask[i, :len(m)] = True
  return {"tokens": tokens, "media": out_media, "media_mask": mask,
          "media_locations": tokens == image_id,
          "lengths": np.array([len(r) for r in ids], np.int32)}


def greedy_texts(family: Any, params: Any, tok: tok_lib.Tokenizer, prompts: Sequence[str],
                 media: Sequence[np.ndarray], max_new_tokens: int, stop_ids: Sequence[int],
                 batch_size: int = 32) -> list[str]:
  """Greedy continuations of Flamingo prompts (flamingo_batch's texts and media), decoded and
  stripped, in batches of `batch_size`; the KV cache bounds prompt + max_new_tokens."""
  out = []
  for s in chunks(len(prompts), batch_size):
    batch = flamingo_batch(tok, prompts[s], media[s],
                           max_length=family.lm_config.max_len - max_new_tokens)
    lengths = batch.pop("lengths")
    ids = generate.greedy(family, params, batch, max_new_tokens, stop_ids=stop_ids,
                          lengths=lengths)
    out += [tok.decode(generate.strip(r, stop_ids)).strip() for r in ids.tolist()]
  return out


@functools.lru_cache(maxsize=None)
def _jitted_logits(family: Any) -> Callable[..., Any]:
  return jax.jit(family.predict_logits)


def continuation_logprobs(family: Any, params: Any, batch: dict[str, np.ndarray],
                          prompt_lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Sum and count of log p(tokens[t] | tokens[<t]) over positions prompt_length <= t < length.

  `batch['tokens']` holds prompt + continuation right-padded; `batch['lengths']` their lengths.
  """
  inputs = {k: v for k, v in batch.items() if k != "lengths"}
  logits = _jitted_logits(family)(params, inputs)
  logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
  tokens = jnp.asarray(batch["tokens"])
  picked = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
  t = jnp.arange(1, tokens.shape[1])[None]
  mask = (t >= jnp.asarray(prompt_lengths)[:, None]) & (t < jnp.asarray(batch["lengths"])[:, None])
  return (np.asarray(jnp.sum(jnp.where(mask, picked, 0.0), axis=1)),
          np.asarray(jnp.sum(mask, axis=1)))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and (population) standard deviation."""
  arr = np.asarray(values, np.float64)
  return float(arr.mean()), float(arr.std())
