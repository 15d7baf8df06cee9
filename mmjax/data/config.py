"""The data config: one documented ConfigDict read by `mmjax.data.pipeline.make_pipeline`."""

from __future__ import annotations

import ml_collections

from mmjax.data import conversation, frames, mixing, preprocess

TASKS = ("caption", "interleaved", "vqa", "lm", "video")
TASKS += ("video_qa",)  # Video question answering rows (a task, so a mixture can hold both).
TASKS += ("chat",)  # Conversations (mmjax/data/conversation.py).
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
  # loss on the answer), 'lm' (tokens/loss_mask only), 'video' (media of num_frames frames),
  # 'video_qa' (video rows of question/answer pairs, like video with video_qa=True),
  # 'chat': conversations (shapes_instruct) as media rows, loss on the assistant turns only.
  c.task = "caption"
  # Per-dataset tasks for a mixture of tasks (one per entry of `datasets`, which may repeat a
  # dataset: ("shapes", "shapes") with ("caption", "vqa")); empty: every dataset uses `task`.
  # The rows must share one form, so mixing tasks needs media rows (as_media or interleaved).
  c.tasks = ()
  # How a mixture fills the batches: 'example' (rows drawn by weight), 'batch' (a fixed block
  # per dataset in every batch; with grad accumulation over the blocks: Flamingo's accumulation)
  # or 'round_robin' (whole batches from one dataset in turn); see mmjax/data/mixing.py.
  c.mixing = "example"
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
  # Frames each stored clip has (the builder renders that many; 0: num_frames). Clips longer than
  # num_frames are subsampled per frame_sampling, so the model's T and the data's S can differ.
  c.clip_frames = 0
  # How T frames are taken from a clip: 'uniform' (segment centres), 'random' (one per segment,
  # random in training only) or 'stride' (frame_stride apart; random start in training only);
  # see mmjax/data/frames.py.
  c.frame_sampling = "uniform"
  c.frame_stride = 1
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
  # shapes: the caption styles (mmjax/data/shapes_world.py:CAPTION_STYLES) the stored captions
  # are drawn from; empty: every style the scene has (the original data). LISTING_STYLES, each
  # naming every object, is what the tiny CLIP tower trains on (experiments/README.md). Part of
  # the prepared dataset's name, so data prepared with other captions is never reused.
  c.caption_styles = ()
  # shapes two-tower caption rows: also emit `text_neg`, the caption with one shape word swapped
  # so that it is false of the image (mmjax/data/shapes_world.py:swap_shape), which CLIP /
  # SigLIP add to every image's negatives (NegCLIP). In-batch negatives almost never share an
  # image's colours, so without them the contrastive loss is solved by colour alone
  # (experiments/results/shape_diagnosis.md). Needs captions that name a shape (caption_styles).
  # Measured at tiny: no shape gained yet (experiments/README.md), so off by default.
  c.hard_negatives = False
  # Real datasets (emoji, tuxpaint, fashion_mnist, text): cap on the examples prepared per split
  # (None: all of them), for tests and smoke runs; the generated datasets use num_train/num_eval.
  c.max_examples = None
  # shapes_interleaved: 'documents' (M3W-like), 'episodes' (few-shot, each caption in any
  # template), 'styled_episodes' (few-shot, an episode's captions in one house style) or
  # 'binding' (two colours named by new words, mmjax/evaluators/binding.py), and the support
  # examples per episode ('binding': per word).
  c.interleaved_kind = "documents"
  c.shots = 4
  # chat only (conversations, mmjax/data/conversation.py): the chat template ('chatml', or
  # 'smollm2' = ChatML with SmolLM2's default system message), the chain-of-thought variant of
  # shapes_instruct (step-by-step rationales ending in 'Answer: ...'), and how many
  # conversations are read per row and packed into it while they fit text_length and max_media
  # (1: one conversation per row; packing masks the loss only, see mmjax/data/packing.py).
  c.chat_template = "chatml"
  c.chain_of_thought = False
  c.pack_conversations = 1
  # vqa_class: classes = the most frequent answers of the train split (VQAv2 convention: 3129).
  c.max_answers = 3129
  # Tokenizer name for callers that build it (mmjax.data.tokenizers.get_tokenizer).
  c.tokenizer = "shapes_sp"
  # AnyRes / Monkey tiling (mmjax/data/anyres.py) of caption/vqa media rows (needs as_media):
  # the (rows, cols) grids to choose from by aspect ratio, e.g. ((2, 2),) or ((1, 2), (2, 1),
  # (2, 2)); empty: off (one image_size frame per image). When on, each image becomes its
  # thumbnail + rows * cols tiles of image_size px on the media frame axis, padded to
  # 1 + the largest grid, with `tile_mask` [B, M, T] marking the real ones.
  c.anyres_grids = ()
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


def source_frames(c) -> int:
  """Frames per stored clip: data.clip_frames, or data.num_frames when it is 0 (or absent, in
  configs written before the field existed)."""
  return int(c.get("clip_frames") or c.num_frames)


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
    media_rows = c.as_media or all(t in ("interleaved", "video", "video_qa", "chat")
                                   for t in c.tasks)
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
  mixing_mode = c.get("mixing", "example")
  if mixing_mode not in mixing.MIXINGS:
    raise ValueError(f"data.mixing must be one of {mixing.MIXINGS}, got {mixing_mode!r}")
  if mixing_mode == "batch":
    mixing.block_sizes(c.weights, c.batch_size)  # raises naming data.batch_size
  for field in ("batch_size", "image_size", "text_length", "max_media", "num_frames"):
    if c[field] < 1:
      raise ValueError(f"data.{field} must be >= 1, got {c[field]}")
  if c.clip_frames < 0:
    raise ValueError(f"data.clip_frames must be >= 0 (0: data.num_frames), got {c.clip_frames}")
  frames.check_config(source_frames(c), c.num_frames, c.frame_sampling, c.frame_stride)
  if c.max_examples is not None and c.max_examples < 1:
    raise ValueError(f"data.max_examples must be >= 1 or None, got {c.max_examples}")
  # .get: config.json files of runs from before the chat fields existed lack them.
  if c.get("chat_template", "chatml") not in conversation.TEMPLATES:
    raise ValueError(f"data.chat_template must be one of {sorted(conversation.TEMPLATES)}, "
                     f"got {c.chat_template!r}")
  if c.get("pack_conversations", 1) < 1:
    raise ValueError(f"data.pack_conversations must be >= 1, got {c.pack_conversations}")
  validate_anyres(c)
  if c.get("hard_negatives", False) and (c.as_media or set(dataset_tasks(c)) != {"caption"}):
    raise ValueError("data.hard_negatives adds negative captions to two-tower caption rows: it "
                     "needs data.task='caption' and data.as_media=False")
  if c.get("hard_negatives", False) and set(c.datasets) - {"shapes", "shapes_small"}:
    raise ValueError(f"data.hard_negatives swaps shapes in shapes captions; data.datasets "
                     f"{tuple(c.datasets)} has others")
  if len(c.mean) != 3 or len(c.std) != 3:
    raise ValueError("data.mean and data.std need 3 channel values each")


def anyres_max_tiles(c: ml_collections.ConfigDict) -> int:
  """T of AnyRes media rows: the thumbnail + the largest grid's tiles (0: tiling is off)."""
  grids = tuple(tuple(g) for g in c.get("anyres_grids", ()) or ())
  return 1 + max(r * k for r, k in grids) if grids else 0


def validate_anyres(c: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming data.anyres_grids when tiling is asked for where it cannot work."""
  grids = c.get("anyres_grids", ()) or ()
  if not grids:
    return
  for g in grids:
    if len(tuple(g)) != 2 or min(tuple(g)) < 1:
      raise ValueError(f"data.anyres_grids entries must be (rows, cols) with both >= 1, got "
                       f"{tuple(g)}")
  if any(t not in ("caption", "vqa") for t in dataset_tasks(c)):
    raise ValueError(f"data.anyres_grids tiles caption/vqa rows only; data tasks are "
                     f"{dataset_tasks(c)}")
  if not c.as_media:
    raise ValueError("data.anyres_grids puts the tiles on the media frame axis: set "
                     "data.as_media=True")
