"""The data config: one documented ConfigDict read by `mmjax.data.pipeline.make_pipeline`."""

from __future__ import annotations

import ml_collections

from mmjax.data import preprocess

TASKS = ("caption", "interleaved", "vqa", "lm", "video")
TASKS += ("vqa_class",)  # image + question `text` + answer-class `labels` (data/answers.py)
BAD_DATA_POLICIES = ("skip", "raise")


def default_data_config(**overrides) -> ml_collections.ConfigDict:
  """Defaults for the tiny shapes setup; `overrides` replace fields (unknown names raise)."""
  c = ml_collections.ConfigDict()
  # Datasets (names from mmjax.data.datasets.BUILDERS) and their sampling weights; with several,
  # examples are drawn from a weighted mixture (every dataset is converted to `task`'s format).
  c.datasets = ("shapes",)
  c.weights = (1.0,)
  # What rows contain: 'caption' (image + text + tokens/loss_mask), 'interleaved'
  # (media/media_mask/tokens/media_locations/loss_mask), 'vqa' (image + question-answer tokens,
  # loss on the answer), 'lm' (tokens/loss_mask only), 'video' (media of num_frames frames).
  c.task = "caption"
  # Per-dataset tasks for a mixture of tasks (one per entry of `datasets`, which may repeat a
  # dataset: ("shapes", "shapes") with ("caption", "vqa")); empty: every dataset uses `task`.
  # The rows must share one form, so mixing tasks needs media rows (as_media or interleaved).
  c.tasks = ()
  # caption/vqa only: emit `media` [B, 1, 1, H, W, 3] + `<image>` tokens (Flamingo) instead of
  # `image` [B, H, W, 3] (two-tower models).
  c.as_media = False
  # video only: train on question/answer pairs about motion instead of captions.
  c.video_qa = False
  # tfds split read ('train', 'validation', 'test', 'heldout' = unseen colour/shape pairs).
  c.split = "train"
  # Global batch size (all processes together); each process loads batch_size / process_count.
  c.batch_size = 32
  # Side of the square images fed to the model, in pixels.
  c.image_size = 64
  # Text length L of `tokens` / `text` (right-padded; longer text is truncated).
  c.text_length = 64
  # M: media slots per interleaved row (documents with more images keep the first M).
  c.max_media = 4
  # T: frames per clip of shapes_video (stills use T=1; mixed with video they repeat T times).
  c.num_frames = 8
  # Seed of shuffling, mixing and augmentation: same seed, same batches.
  c.seed = 0
  # grain multiprocess prefetch: worker processes (0 = decode in the main process) and the
  # elements each worker buffers ahead.
  c.num_workers = 0
  c.worker_buffer_size = 4
  # Bad data (undecodable/truncated image, non-RGB image, empty text): 'skip' drops and counts
  # it (iterator.stats()['skipped']); 'raise' stops with an error naming the record and field.
  c.on_bad_example = "skip"
  # Per-channel normalisation after scaling pixels to [0, 1]; the default maps to [-1, 1].
  # Use preprocess.OPENAI_CLIP_MEAN/STD for imported open_clip weights.
  c.mean = preprocess.UNIT_MEAN
  c.std = preprocess.UNIT_STD
  # Training augmentation (never applied when train=False).
  c.augment = ml_collections.ConfigDict()
  c.augment.random_resized_crop = True  # open_clip's RandomResizedCrop.
  c.augment.crop_scale = (0.9, 1.0)  # Area fraction range of the crop (open_clip's default).
  c.augment.flip = True  # Horizontal flip with p=0.5, only for examples without left/right words.
  # Where datasets and tokenizers live (None: $MMJAX_DATA_DIR, else ~/mmjax_data).
  c.data_dir = None
  # Where builders of user-supplied copies (COCO, VQAv2, webdataset shards, ...) find the
  # official files (None: DATA_DIR/downloads/manual); their errors say what to put there.
  c.manual_dir = None
  # Size of the generated datasets (prepared on first use): examples in 'train', and in each of
  # 'validation'/'test'/'heldout'; their images are rendered at image_size.
  c.num_train = 4096
  c.num_eval = 256
  # Real datasets (emoji, tuxpaint, fashion_mnist, text): cap on the examples prepared per split
  # (None: all of them), for tests and smoke runs; the generated datasets use num_train/num_eval.
  c.max_examples = None
  # shapes_interleaved: 'documents' (M3W-like) or 'episodes' (few-shot), and shots per episode.
  c.interleaved_kind = "documents"
  c.shots = 4
  # vqa_class: classes = the most frequent answers of the train split (VQAv2 convention: 3129).
  c.max_answers = 3129
  # Tokenizer name for callers that build it (mmjax.data.tokenizers.get_tokenizer).
  c.tokenizer = "shapes_sp"
  unknown = sorted(set(overrides) - set(c.keys()))
  if unknown:
    raise ValueError(f"unknown data config field(s) {unknown}; known: {sorted(c.keys())}")
  c.update(overrides)
  c.lock()  # Typos in later `config.data.x = ...` assignments fail instead of passing silently.
  validate(c)
  return c


def dataset_tasks(c: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The task of each entry of `c.datasets` (`c.tasks`, or `c.task` for all)."""
  return tuple(c.tasks) if c.tasks else (c.task,) * len(c.datasets)


def validate(c: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the first bad field."""
  if c.task not in TASKS:
    raise ValueError(f"data.task must be one of {TASKS}, got {c.task!r}")
  if c.tasks:
    if len(c.tasks) != len(c.datasets):
      raise ValueError(f"data.tasks {tuple(c.tasks)} needs one task per dataset in "
                       f"data.datasets {tuple(c.datasets)}")
    for t in c.tasks:
      if t not in TASKS:
        raise ValueError(f"data.tasks entries must be in {TASKS}, got {t!r}")
    media_rows = c.as_media or all(t in ("interleaved", "video") for t in c.tasks)
    if len(set(c.tasks)) > 1 and not media_rows:
      raise ValueError(f"data.tasks {tuple(c.tasks)} mixes tasks whose rows differ; set "
                       "data.as_media=True so every task emits media rows")
  if c.on_bad_example not in BAD_DATA_POLICIES:
    raise ValueError(f"data.on_bad_example must be one of {BAD_DATA_POLICIES}, "
                     f"got {c.on_bad_example!r}")
  if len(c.datasets) != len(c.weights) or not c.datasets:
    raise ValueError(f"data.datasets {tuple(c.datasets)} and data.weights {tuple(c.weights)} "
                     "must be non-empty and of equal length")
  if any(w <= 0 for w in c.weights):
    raise ValueError(f"data.weights must be positive, got {tuple(c.weights)}")
  for field in ("batch_size", "image_size", "text_length", "max_media", "num_frames"):
    if c[field] < 1:
      raise ValueError(f"data.{field} must be >= 1, got {c[field]}")
  if c.max_examples is not None and c.max_examples < 1:
    raise ValueError(f"data.max_examples must be >= 1 or None, got {c.max_examples}")
  if len(c.mean) != 3 or len(c.std) != 3:
    raise ValueError("data.mean and data.std need 3 channel values each")
