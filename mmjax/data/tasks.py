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
  video_qa     [BOS] <image> Question: q Answer: | a <|endofchunk|> [EOS]  (video with Q/A)
  audio_events caption rows carry `audio` [S] instead of an image; with `as_media` the
               `<image>` token marks where the clip enters the LM (audio_lm)
Video rows take data.num_frames frames of each stored clip per data.frame_sampling (frames.py).
  chat         [BOS] conversation in the chat template (conversation.py; loss on assistant
               contents and their <|im_end|>); data.pack_conversations > 1 packs several
               conversations ([BOS] conv [BOS] conv ...) into one row (packing.pack)
With `as_media`, caption/vqa rows use the interleaved form with one image.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from mmjax.data import answers as answers_lib
from mmjax.data import frames as frames_lib
from mmjax.data import anyres, audio_world, conversation, packing, preprocess
from mmjax.data import shapes_world as world
from mmjax.data import tokenizers as tok_lib
from mmjax.data.packing import IMAGE, PROMPT, TARGET

BAD_KEY = "_bad"
SUPPORTED = {
    "shapes": ("caption", "vqa", "lm", "interleaved"),
    "shapes_interleaved": ("interleaved", "lm"),
    "shapes_video": ("video", "interleaved", "lm", "video_qa"),
    "audio_events": ("caption", "lm"),
    "shapes_instruct": ("chat", "lm"),
    "shapes_small": ("caption", "vqa", "lm"),
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
    self.as_media = config.as_media or task in ("interleaved", "video", "video_qa", "chat")
    self.video_qa = config.video_qa or task == "video_qa"
    # .get: run configs written before frame sampling existed lack these fields.
    self.frame_sampling = config.get("frame_sampling", "uniform")
    self.frame_stride = int(config.get("frame_stride", 1))
    self.policy = config.on_bad_example
    self.seed = int(config.seed)
    self.size, self.length = int(config.image_size), int(config.text_length)
    self.max_media, self.frames = int(config.max_media), int(frames_per_media)
    self.mean, self.std = tuple(config.mean), tuple(config.std)
    self.augment = dict(config.augment)
    # .get: data configs of runs from before the field existed lack it.
    self.hard_negatives = bool(config.get("hard_negatives", False))
    self.tok = tokenizer
    # AnyRes tiling of caption/vqa images (config.anyres_grids; validated in data/config.py).
    self.grids = tuple(tuple(int(v) for v in g) for g in config.get("anyres_grids", ()) or ())
    if self.as_media:
      self.image_id, self.eoc_id = tokenizer.add_special_tokens(
          [tok_lib.IMAGE_TOKEN, tok_lib.END_OF_CHUNK_TOKEN])
    if task == "chat":
      # .get: data configs of runs from before the chat fields existed lack them.
      self.template = conversation.get_template(config.get("chat_template", "chatml"))
      self.chat_ids = conversation.chat_ids(tokenizer)
      self.cot = bool(config.get("chain_of_thought", False))
    if task == "vqa_class":
      vocab = answers_lib.answer_vocab(dataset, config)
      self.answer_index = {a: k for k, a in enumerate(vocab)}

  # ---- entry point ------------------------------------------------------------------------------
  def __call__(self, index: int, tagged: tuple[int, dict] | list[tuple[int, dict]]) -> dict:
    if isinstance(tagged, list):  # A group of records to pack into one row (chat).
      record_index = ", ".join(str(i) for i, _ in tagged)
      record = [r for _, r in tagged]
    else:
      record_index, record = tagged
    rng = np.random.default_rng([self.seed, self.dataset_id, index]) if self.train else None
    try:
      return self._process(record, rng)
    except preprocess.BadExample as e:
      message = f"{self.dataset}/{self.split} record {record_index}: {e}"
      if self.policy == "raise":
        raise preprocess.BadExample(e.field, message) from e
      return {BAD_KEY: message}

  def _process(self, record: dict | list[dict], rng) -> dict:
    if self.task == "chat":
      return self._chat(record if isinstance(record, list) else [record], rng)
    if self.dataset in RECORD_FORMS:
      return getattr(self, RECORD_FORMS[self.dataset])(record, rng)
    if self.dataset == "shapes_small":  # the same records, small objects on a 256 px canvas
      return self._shapes(record, rng)
    if self.dataset == "shapes":
      return self._shapes(record, rng)
    if self.dataset == "shapes_interleaved":
      return self._interleaved(record, rng)
    if self.dataset in CAPTIONED:
      return self._captioned(record, rng)
    if self.dataset == "text":
      return self._lm_row([_text(record["text"], "text")])
    if self.dataset == "audio_events":
      return self._audio_events(record, rng)
    if self.dataset == "shapes_instruct":  # task 'lm': the conversation's text.
      return self._lm_row([c.replace(tok_lib.IMAGE_TOKEN, "").strip() for c in
                           _texts(record["contents"], "contents")])
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

  def _tiles(self, blob: bytes, texts: Sequence[str], rng) -> np.ndarray:
    """AnyRes: [1 + rows * cols, size, size, 3] normalised thumbnail + tiles of one image.

    Training augments the full-resolution image before tiling (the same random resized crop
    and flip draw as `_images`, at the source resolution), so thumbnail and tiles agree.
    """
    img = preprocess.decode_png(blob, "image")
    if self.train and rng is not None:
      if self.augment["random_resized_crop"]:
        left, top, w, h = preprocess.random_resized_crop_box(
            *img.size, rng, tuple(self.augment["crop_scale"]))
        img = img.crop((left, top, left + w, top + h))
      if self.augment["flip"] and preprocess.flip_allowed(texts) and rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    tiles = anyres.tile_image(img, self.size, self.grids)
    return np.stack([preprocess.to_array(t, self.mean, self.std) for t in tiles])

  def _enc(self, text: str) -> list[int]:
    return self.tok.encode(text)

  def _bos(self) -> tuple[list[int], str]:
    return [self.tok.bos_id], PROMPT

  def _media_row(self, segments, image_groups: Sequence[np.ndarray]) -> dict:
    """Assembles tokens and the media tensor; media whose <image> was truncated are dropped."""
    tokens, loss, locs, kept = packing.assemble(segments, self.length, self.tok.pad_id)
    media = np.zeros((self.max_media, self.frames, self.size, self.size, 3), np.float32)
    tile_mask = np.zeros((self.max_media, self.frames), bool)
    for m in range(kept):
      frames = image_groups[m]
      if self.grids:  # AnyRes tiles: zero padding up to T, masked by tile_mask.
        media[m], tile_mask[m] = anyres.pad_tiles(frames, self.frames)
      else:
        # Stills in a batch of T-frame media repeat along time (a static clip).
        media[m] = frames if len(frames) == self.frames else np.repeat(frames[:1], self.frames,
                                                                       0)
    mask = np.zeros((self.max_media,), bool)
    mask[:kept] = True
    row = {"media": media, "media_mask": mask, "tokens": tokens, "media_locations": locs,
           "loss_mask": loss}
    if self.grids:
      row["tile_mask"] = tile_mask
    return row

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
    negative = None
    if self.hard_negatives:
      scene = world.Scene.from_json(_text(r["scene"], "scene"))
      negative = lambda caption: world.swap_shape(caption, scene, rng)
    return self._caption_row(captions, r["image"], rng, negative)

  def _caption_row(self, captions: Sequence[str], blob: bytes, rng,
                   negative: Callable[[str], str | None] | None = None) -> dict:
    """caption row; `negative(caption)`: the two-tower row's hard-negative text (`text_neg`)."""
    caption = captions[self._choose(len(captions), rng)]
    image = (self._tiles(blob, [caption], rng) if self.grids else
             self._images([blob], "image", [caption], rng))
    row = self._single(image, None, caption)
    if self.task == "caption" and not self.as_media:
      # Two-tower text: BOS + caption + EOS, truncated keeping EOS (open_clip.tokenize).
      row["text"] = self.tok.pad_ids([caption], self.length)[0]
      if negative is not None:
        text_neg = negative(caption)
        if text_neg is None:
          raise preprocess.BadExample("captions", f"data.hard_negatives: caption {caption!r} "
                                      "names no shape to swap (use data.caption_styles that "
                                      "name objects, e.g. shapes_world.LISTING_STYLES)")
        row["text_neg"] = self.tok.pad_ids([text_neg], self.length)[0]
    return row

  def _qa_row(self, prompt: str, target: str, blob: bytes, rng) -> dict:
    """vqa task row: `prompt` (ends in 'Answer:') then the target with a leading space."""
    image = (self._tiles(blob, [prompt, target], rng) if self.grids else
             self._images([blob], "image", [prompt, target], rng))
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

  def _audio_events(self, r: dict, rng) -> dict:
    """`audio` [S] float32 + caption tokens (and `text` for CLAP); with as_media the one-clip
    interleaved form [BOS] <image> caption <|endofchunk|> [EOS] (media_mask [1]) for audio_lm."""
    captions = _texts(r["captions"], "captions")
    if self.task == "lm":
      return self._lm_row(captions)
    pcm = np.asarray(r["audio"])
    if pcm.ndim != 1 or pcm.dtype != np.int16 or pcm.size == 0:
      raise preprocess.BadExample("audio", f"expected int16 PCM [S], got {pcm.dtype} "
                                  f"{pcm.shape}")
    audio = audio_world.from_pcm16(pcm)
    caption = captions[self._choose(len(captions), rng)]
    if self.as_media:
      segments = [self._bos(), ([self.image_id], IMAGE), (self._enc(caption), TARGET),
                  ([self.eoc_id], TARGET), ([self.tok.eos_id], PROMPT)]
      tokens, loss, locs, kept = packing.assemble(segments, self.length, self.tok.pad_id)
      return {"audio": audio, "media_mask": np.array([kept > 0]), "tokens": tokens,
              "media_locations": locs, "loss_mask": loss}
    segments = [self._bos(), (self._enc(caption), TARGET), ([self.tok.eos_id], TARGET)]
    tokens, loss, _, _ = packing.assemble(segments, self.length, self.tok.pad_id)
    return {"audio": audio, "tokens": tokens, "loss_mask": loss,
            "text": self.tok.pad_ids([caption], self.length)[0]}

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
      items = []
      for prompt, target in zip(prompts, targets):
        item = [([self.image_id], IMAGE)]
        if prompt.strip():
          item += [(self._enc(f"Question: {prompt} Answer:"), PROMPT),
                   (self._enc(" " + target), TARGET)]
        else:
          item.append((self._enc(target), TARGET))
        items.append(item + [([self.eoc_id], TARGET)])
      # Supports are dropped from the front, never the query from the end: a row cut at
      # text_length would otherwise train on episodes without their query (and, with 4 shots
      # of captions in 64 tokens, did so for a quarter of them).
      start, used = len(items) - 1, 2 + packing.num_tokens(items[-1])  # + BOS and EOS
      while (start > 0 and len(items) - start < self.max_media
             and used + packing.num_tokens(items[start - 1]) <= self.length):
        start -= 1
        used += packing.num_tokens(items[start])
      segments = [self._bos()] + [seg for item in items[start:] for seg in item]
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
    try:
      keep = frames_lib.sample_indices(len(frames), self.frames, self.frame_sampling,
                                       stride=self.frame_stride, rng=rng)
    except ValueError as e:
      raise preprocess.BadExample("frames", f"clip of {len(frames)} frames: {e}") from e
    clip = self._images([frames[i] for i in keep], "frames", texts, rng)
    segments = ([self._bos(), ([self.image_id], IMAGE)] + body +
                [([self.eoc_id], TARGET), ([self.tok.eos_id], PROMPT)])
    return self._media_row(segments, [clip])

  def _conversation(self, r: dict) -> tuple[list[tuple[list[int], str]], list[bytes], list[str]]:
    """A conversation record's segments ([BOS] + template), the PNGs of its kept images and the
    kept turns' texts.

    An overlong conversation loses whole trailing exchanges until it fits `text_length` (its
    first exchange stays, then `assemble` truncates it)."""
    roles = _texts(r["roles"], "roles")
    contents = _texts(r["cot_contents" if self.cot else "contents"],
                      "cot_contents" if self.cot else "contents")
    if len(roles) != len(contents):
      raise preprocess.BadExample("contents", f"{len(contents)} contents for {len(roles)} roles")
    try:
      turns = conversation.turns([{"role": a, "content": c} for a, c in zip(roles, contents)])
    except ValueError as e:
      raise preprocess.BadExample("roles", str(e)) from e
    blobs = list(r["images"])
    if conversation.num_images(turns) != len(blobs):
      raise preprocess.BadExample("images", f"{len(blobs)} images for "
                                  f"{conversation.num_images(turns)} <image> markers")
    ends = [k + 1 for k, t in enumerate(turns) if t.role == conversation.ASSISTANT]
    if not ends:
      raise preprocess.BadExample("roles", "no assistant turn to train on")
    for n, end in enumerate(reversed(ends)):
      kept = turns[:end]
      segments = [self._bos()] + self.template.segments(kept, self._enc, self.chat_ids)
      if packing.num_tokens(segments) <= self.length or n == len(ends) - 1:
        break
    return segments, blobs[:conversation.num_images(kept)], [t.content for t in kept]

  def _chat(self, records: Sequence[dict], rng) -> dict:
    """One row of one conversation, or of several packed (`packing.pack`)."""
    convs = [self._conversation(r) for r in records]
    chosen = packing.pack([c[0] for c in convs], self.length, self.max_media)
    if len(convs[0][1]) > self.max_media:
      raise preprocess.BadExample("images", f"{len(convs[0][1])} images in one conversation, "
                                  f"data.max_media is {self.max_media}")
    segments = [seg for k in chosen for seg in convs[k][0]]
    blobs = [b for k in chosen for b in convs[k][1]]
    texts = [t for k in chosen for t in convs[k][2]]
    # One augmentation draw per row: a conversation's answers ("left of") must stay true.
    images = self._images(blobs, "images", texts, rng) if blobs else np.zeros(
        (0, self.size, self.size, 3), np.float32)
    return self._media_row(segments, [im[None] for im in images])
