"""Per-example conversion of stored records into one row of the batch contract, per task.

`ExampleProcessor` runs inside grain (possibly in worker processes, so it pickles): it decodes,
augments and tokenizes one record, and returns either a dict of numpy arrays (one batch row) or,
under `on_bad_example='skip'`, a marker `{BAD_KEY: message}` that the iterator drops and counts.

Supported (dataset, task) pairs are in `SUPPORTED`; text formats:
  caption      [BOS] caption [EOS]                (loss on caption + EOS); `text` is CLIP-style
  vqa          [BOS] Question: q Answer: | a [EOS] (loss on the answer + EOS)
  vqa_class    `image`, `text` = [BOS] q [EOS] (padded), `labels` = the answer's index in the train
               split's answer vocabulary, -1 outside it (answers.py; VQA as classification)
  lm           [BOS] all captions and Q/A of the record (`text` of the text dataset) [EOS]
               (loss on everything after BOS)
  interleaved  [BOS] preamble (<image> chunk <|endofchunk|>)* [EOS]   (see packing.py)
  video        [BOS] <image> caption-or-Q/A <|endofchunk|> [EOS]
With `as_media`, caption/vqa rows use the interleaved form with one image.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from mmjax.data import answers as answers_lib
from mmjax.data import packing, preprocess
from mmjax.data import tokenizers as tok_lib
from mmjax.data.packing import IMAGE, PROMPT, TARGET

BAD_KEY = "_bad"
SUPPORTED = {
    "shapes": ("caption", "vqa", "lm", "interleaved"),
    "shapes_interleaved": ("interleaved", "lm"),
    "shapes_video": ("video", "interleaved", "lm"),
    # Real offline data: image + captions records, and plain text.
    "emoji": ("caption", "lm"),
    "tuxpaint": ("caption", "lm"),
    "fashion_mnist": ("caption",),
    "text": ("lm",),
    # User-supplied official formats (mmjax/data/builders/{coco_captions,vqa,...}.py).
    "coco_captions": ("caption", "lm"),
    "flickr30k": ("caption", "lm"),
    "nocaps": ("caption", "lm"),
    "webdataset": ("caption", "lm"),
    "imagenet": ("caption",),
    "vqav2": ("vqa", "lm"),
    "okvqa": ("vqa", "lm"),
    "gqa": ("vqa", "lm"),
    "textvqa": ("vqa", "lm"),
    "scienceqa": ("vqa", "lm"),
    "mmmu": ("vqa", "lm"),
    "mmc4": ("interleaved", "lm"),
    "obelics": ("interleaved", "lm"),
}
# VQA as classification over an answer vocabulary (ViLBERT / LXMERT / VisualBERT heads).
for _name in ("shapes", "vqav2", "okvqa", "gqa", "textvqa"):
  SUPPORTED[_name] += ("vqa_class",)
# Datasets whose records are `image` + `captions` (the first caption is the evaluation one).
CAPTIONED = ("emoji", "tuxpaint", "fashion_mnist")
# Record form of each user-supplied dataset -> the ExampleProcessor method that reads it.
RECORD_FORMS = {
    "coco_captions": "_captioned", "flickr30k": "_captioned",
    "nocaps": "_captioned", "webdataset": "_captioned",
    "imagenet": "_class_record",
    "vqav2": "_vqa_record", "okvqa": "_vqa_record", "gqa": "_vqa_record",
    "textvqa": "_vqa_record",
    "scienceqa": "_choice_record", "mmmu": "_choice_record",
    "mmc4": "_interleaved", "obelics": "_interleaved",
}
# Caption of a classification record (CLIP's ImageNet template), for contrastive training.
CLASS_CAPTION = "a photo of a {}."
OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def check_supported(dataset: str, task: str) -> None:
  """Raises ValueError naming the dataset when it cannot feed `task`."""
  if dataset not in SUPPORTED:
    raise ValueError(f"unknown dataset {dataset!r}; known: {sorted(SUPPORTED)}")
  if task not in SUPPORTED[dataset]:
    raise ValueError(f"dataset {dataset!r} cannot feed task {task!r}; it supports "
                     f"{SUPPORTED[dataset]}")


def _text(value: Any, field: str) -> str:
  text = value.decode("utf-8") if isinstance(value, bytes) else str(value)
  if not text.strip():
    raise preprocess.BadExample(field, "empty text")
  return text


def _texts(values: Sequence[Any], field: str, allow_empty: bool = False) -> list[str]:
  if len(values) == 0:
    raise preprocess.BadExample(field, "no entries")
  out = []
  for v in values:
    if allow_empty:
      out.append(v.decode("utf-8") if isinstance(v, bytes) else str(v))
    else:
      out.append(_text(v, field))
  return out


class ExampleProcessor:
  """Callable `(index, (record_index, record)) -> row` for `MapDataset.map_with_index`.

  `index` is the position in this dataset's (shuffled, repeated) stream, so augmentation differs
  per epoch yet is a pure function of (seed, dataset, index): resuming replays it exactly.
  """

  def __init__(self, dataset: str, dataset_id: int, config, tokenizer: tok_lib.Tokenizer, *,
               train: bool, frames_per_media: int, task: str | None = None):
    """`task` overrides `config.task` (a mixture's per-dataset task, `config.tasks`)."""
    task = task or config.task
    check_supported(dataset, task)
    self.dataset, self.dataset_id, self.train = dataset, dataset_id, train
    self.task, self.split = task, config.split
    self.as_media = config.as_media or task in ("interleaved", "video")
    self.video_qa = config.video_qa
    self.policy = config.on_bad_example
    self.seed = int(config.seed)
    self.size, self.length = int(config.image_size), int(config.text_length)
    self.max_media, self.frames = int(config.max_media), int(frames_per_media)
    self.mean, self.std = tuple(config.mean), tuple(config.std)
    self.augment = dict(config.augment)
    self.tok = tokenizer
    if self.as_media:
      self.image_id, self.eoc_id = tokenizer.add_special_tokens(
          [tok_lib.IMAGE_TOKEN, tok_lib.END_OF_CHUNK_TOKEN])
    if task == "vqa_class":
      vocab = answers_lib.answer_vocab(dataset, config)
      self.answer_index = {a: k for k, a in enumerate(vocab)}

  # ---- entry point ------------------------------------------------------------------------------
  def __call__(self, index: int, tagged: tuple[int, dict]) -> dict:
    record_index, record = tagged
    rng = np.random.default_rng([self.seed, self.dataset_id, index]) if self.train else None
    try:
      return self._process(record, rng)
    except preprocess.BadExample as e:
      message = f"{self.dataset}/{self.split} record {record_index}: {e}"
      if self.policy == "raise":
        raise preprocess.BadExample(e.field, message) from e
      return {BAD_KEY: message}

  def _process(self, record: dict, rng) -> dict:
    if self.dataset in RECORD_FORMS:
      return getattr(self, RECORD_FORMS[self.dataset])(record, rng)
    if self.dataset == "shapes":
      return self._shapes(record, rng)
    if self.dataset == "shapes_interleaved":
      return self._interleaved(record, rng)
    if self.dataset in CAPTIONED:
      return self._captioned(record, rng)
    if self.dataset == "text":
      return self._lm_row([_text(record["text"], "text")])
    return self._video(record, rng)

  # ---- helpers ----------------------------------------------------------------------------------
  def _choose(self, n: int, rng) -> int:
    # Training samples among the texts; evaluation always uses the first one.
    return int(rng.integers(n)) if rng is not None else 0

  def _images(self, blobs: Sequence[bytes], field: str, texts: Sequence[str], rng) -> np.ndarray:
    imgs = [preprocess.decode_png(b, field) for b in blobs]
    return preprocess.process_images(
        imgs, self.size, train=self.train, rng=rng, mean=self.mean, std=self.std,
        random_crop=self.augment["random_resized_crop"],
        crop_scale=tuple(self.augment["crop_scale"]),
        flip=self.augment["flip"] and preprocess.flip_allowed(texts))

  def _enc(self, text: str) -> list[int]:
    return self.tok.encode(text)

  def _bos(self) -> tuple[list[int], str]:
    return [self.tok.bos_id], PROMPT

  def _media_row(self, segments, image_groups: Sequence[np.ndarray]) -> dict:
    """Assembles tokens and the media tensor; media whose <image> was truncated are dropped."""
    tokens, loss, locs, kept = packing.assemble(segments, self.length, self.tok.pad_id)
    media = np.zeros((self.max_media, self.frames, self.size, self.size, 3), np.float32)
    for m in range(kept):
      frames = image_groups[m]
      # Stills in a batch of T-frame media repeat along time (a static clip).
      media[m] = frames if len(frames) == self.frames else np.repeat(frames[:1], self.frames, 0)
    mask = np.zeros((self.max_media,), bool)
    mask[:kept] = True
    return {"media": media, "media_mask": mask, "tokens": tokens, "media_locations": locs,
            "loss_mask": loss}

  def _lm_row(self, texts: Sequence[str]) -> dict:
    segments = [self._bos(), (self._enc(" ".join(texts)), TARGET), ([self.tok.eos_id], TARGET)]
    tokens, loss, _, _ = packing.assemble(segments, self.length, self.tok.pad_id)
    return {"tokens": tokens, "loss_mask": loss}

  def _prompt_target(self, prompt: str | None, target: str, extra: int) -> list:
    """Prompt and target segments; an overlong prompt loses its start so the target (and the
    `extra` special tokens around them) still fit: a VQA row never loses its answer."""
    target_ids = self._enc(target)
    if not prompt:
      return [(target_ids, TARGET)]
    budget = max(self.length - extra - len(target_ids), 0)
    prompt_ids = self._enc(prompt)
    return [(prompt_ids[max(len(prompt_ids) - budget, 0):] if budget else [], PROMPT),
            (target_ids, TARGET)]

  def _single(self, image: np.ndarray, prompt: str | None, target: str) -> dict:
    """caption/vqa row: `image` + tokens, or (as_media) the one-image interleaved form."""
    body = self._prompt_target(prompt, target, extra=3 if self.as_media else 2)
    if self.as_media:
      segments = ([self._bos(), ([self.image_id], IMAGE)] + body +
                  [([self.eoc_id], TARGET), ([self.tok.eos_id], PROMPT)])
      return self._media_row(segments, [image])
    segments = [self._bos()] + body + [([self.tok.eos_id], TARGET)]
    tokens, loss, _, _ = packing.assemble(segments, self.length, self.tok.pad_id)
    return {"image": image[0], "tokens": tokens, "loss_mask": loss}

  # ---- datasets ---------------------------------------------------------------------------------
  def _shapes(self, r: dict, rng) -> dict:
    captions = _texts(r["captions"], "captions")
    if self.task == "lm":
      qa = [f"Question: {q} Answer: {a}" for q, a in
            zip(_texts(r["questions"], "questions"), _texts(r["answer"], "answer"))]
      return self._lm_row(captions + qa)
    if self.task == "vqa":
      questions, answers = _texts(r["questions"], "questions"), _texts(r["answer"], "answer")
      i = self._choose(len(questions), rng)
      return self._qa_row(f"Question: {questions[i]} Answer:", answers[i], r["image"], rng)
    if self.task == "vqa_class":
      return self._vqa_class_row(r, rng)
    return self._caption_row(captions, r["image"], rng)

  def _caption_row(self, captions: Sequence[str], blob: bytes, rng) -> dict:
    caption = captions[self._choose(len(captions), rng)]
    image = self._images([blob], "image", [caption], rng)
    row = self._single(image, None, caption)
    if self.task == "caption" and not self.as_media:
      # Two-tower text: BOS + caption + EOS, truncated keeping EOS (open_clip.tokenize).
      row["text"] = self.tok.pad_ids([caption], self.length)[0]
    return row

  def _qa_row(self, prompt: str, target: str, blob: bytes, rng) -> dict:
    """vqa task row: `prompt` (ends in 'Answer:') then the target with a leading space."""
    image = self._images([blob], "image", [prompt, target], rng)
    return self._single(image, prompt, " " + target)

  def _vqa_class_row(self, r: dict, rng) -> dict:
    """vqa_class row: one question (sampled in training, the first at evaluation) as `text`,
    its canonical answer's class index as `labels`."""
    questions, answers = _texts(r["questions"], "questions"), _texts(r["answer"], "answer")
    if len(questions) != len(answers):
      raise preprocess.BadExample("answer", f"{len(answers)} answers for {len(questions)} "
                                  "questions")
    i = self._choose(len(questions), rng)
    image = self._images([r["image"]], "image", [questions[i], answers[i]], rng)
    return {"image": image[0], "text": self.tok.pad_ids([questions[i]], self.length)[0],
            "labels": np.int32(answers_lib.answer_label(self.answer_index, answers[i]))}

  def _captioned(self, r: dict, rng) -> dict:
    """`image` + `captions` records (offline real data and user-supplied caption sets)."""
    captions = _texts(r["captions"], "captions")
    if self.task == "lm":
      return self._lm_row(captions)
    return self._caption_row(captions, r["image"], rng)

  def _class_record(self, r: dict, rng) -> dict:
    caption = CLASS_CAPTION.format(_text(r["class_name"], "class_name"))
    return self._caption_row([caption], r["image"], rng)

  def _vqa_record(self, r: dict, rng) -> dict:
    questions, answers = _texts(r["questions"], "questions"), _texts(r["answer"], "answer")
    if len(questions) != len(answers):
      raise preprocess.BadExample("answer", f"{len(answers)} answers for {len(questions)} "
                                  "questions")
    if self.task == "lm":
      return self._lm_row([f"Question: {q} Answer: {a}" for q, a in zip(questions, answers)])
    if self.task == "vqa_class":
      return self._vqa_class_row(r, rng)
    i = self._choose(len(questions), rng)
    return self._qa_row(f"Question: {questions[i]} Answer:", answers[i], r["image"], rng)

  def _choice_record(self, r: dict, rng) -> dict:
    """Multiple choice as open-ended VQA: the lettered options are part of the prompt and the
    target is the correct option's text."""
    options = _texts(r["options"], "options")
    if len(options) > len(OPTION_LETTERS):
      raise preprocess.BadExample("options", f"{len(options)} options, at most 26 supported")
    context = r["context"].decode("utf-8") if isinstance(r["context"], bytes) else r["context"]
    listed = " ".join(f"{OPTION_LETTERS[k]}. {o}" for k, o in enumerate(options))
    prompt = f"{context.strip()} Question: {_text(r['question'], 'question')} " \
             f"Options: {listed} Answer:".strip()
    answer = _text(r["answer"], "answer")
    if self.task == "lm":
      return self._lm_row([f"{prompt} {answer}"])
    return self._qa_row(prompt, answer, r["image"], rng)

  def _interleaved(self, r: dict, rng) -> dict:
    blobs = list(r["images"])
    if "texts" in r:  # kind='documents'
      texts = _texts(r["texts"], "texts", allow_empty=True)
      if len(texts) != len(blobs) + 1:
        raise preprocess.BadExample("texts", f"{len(texts)} chunks for {len(blobs)} images, "
                                    "expected one more chunk than images")
      if not any(t.strip() for t in texts[1:]):
        raise preprocess.BadExample("texts", "empty text")
      if self.task == "lm":
        return self._lm_row([t for t in texts if t.strip()])
      n = min(len(blobs), self.max_media)
      segments = [self._bos()] + ([(self._enc(texts[0]), PROMPT)] if texts[0].strip() else [])
      for i in range(n):
        segments += [([self.image_id], IMAGE), (self._enc(texts[i + 1]), TARGET),
                     ([self.eoc_id], TARGET)]
      used_texts, used_blobs = texts, blobs[:n]
    else:  # kind='episodes': the last item is the query; keep it and the nearest supports.
      prompts = _texts(r["prompts"], "prompts", allow_empty=True)
      targets = _texts(r["targets"], "targets")
      if self.task == "lm":
        return self._lm_row([f"{p} {t}".strip() for p, t in zip(prompts, targets)])
      start = max(0, len(blobs) - self.max_media)
      segments = [self._bos()]
      for i in range(start, len(blobs)):
        segments.append(([self.image_id], IMAGE))
        if prompts[i].strip():
          segments.append((self._enc(f"Question: {prompts[i]} Answer:"), PROMPT))
          segments.append((self._enc(" " + targets[i]), TARGET))
        else:
          segments.append((self._enc(targets[i]), TARGET))
        segments.append(([self.eoc_id], TARGET))
      used_texts, used_blobs = prompts + targets, blobs[start:]
    segments.append(([self.tok.eos_id], PROMPT))
    # One augmentation draw per document keeps its images comparable ("more objects than...").
    images = self._images(used_blobs, "images", used_texts, rng)
    return self._media_row(segments, [im[None] for im in images])

  def _video(self, r: dict, rng) -> dict:
    captions = _texts(r["captions"], "captions")
    if self.task == "lm":
      return self._lm_row(captions)
    if self.video_qa:
      questions, answers = _texts(r["questions"], "questions"), _texts(r["answer"], "answer")
      i = self._choose(len(questions), rng)
      body = self._prompt_target(f"Question: {questions[i]} Answer:", " " + answers[i], extra=4)
      texts = [questions[i], answers[i]]
    else:
      caption = captions[self._choose(len(captions), rng)]
      body, texts = [(self._enc(caption), TARGET)], [caption]
    frames = list(r["frames"])
    if len(frames) != self.frames:
      raise preprocess.BadExample("frames", f"{len(frames)} frames, data.num_frames is "
                                  f"{self.frames}")
    clip = self._images(frames, "frames", texts, rng)
    segments = ([self._bos(), ([self.image_id], IMAGE)] + body +
                [([self.eoc_id], TARGET), ([self.tok.eos_id], PROMPT)])
    return self._media_row(segments, [clip])
