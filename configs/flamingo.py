"""Flamingo (Alayrac et al. 2022): frozen vision encoder -> Perceiver resampler -> frozen LM with
gated cross-attention (XATTN-DENSE) blocks, trained on interleaved image-text sequences.

    python -m mmjax.train --config configs/flamingo.py:tiny --workdir /tmp/flamingo_tiny
    python -m mmjax.summary --config configs/flamingo.py:3b

Connector zoo (mmjax/models/connectors): `model.connector` picks how vision features reach the
LM ('resampler' | 'mlp' | 'avgpool' | 'qwen_xattn' | 'qformer' | 'transformer', each configured
in its own `model.<name>` section) and `model.fusion` how they enter it ('xattn': gated cross-attention;
'decoder_only': visual tokens spliced after each <image>, LLaVA-style), e.g.

    python -m mmjax.train --config configs/flamingo.py:micro --config.model.connector=mlp \
        --config.model.fusion=decoder_only --workdir /tmp/llava_micro

Presets llava_tiny / llava_micro are tiny / micro with the LLaVA-1.5 recipe (MLP projector,
decoder-only). Presets video_tiny / video_micro train on shapes_video clips (captions + motion
questions, `with_video_trainer`), e.g. with the vision tower of a CLIP tiny run, frozen:

    python -m mmjax.train --config configs/flamingo.py:video_tiny --workdir /tmp/video_tiny \
        --config.init_from='("vision=/tmp/evt3/clip:image",)'

Presets instruct_tiny / instruct_micro are tiny / micro instruction-tuned on shapes_instruct
conversations (ChatML, loss on assistant turns, packed rows; see with_instruct). Preset smollm2:
the tiny vision tower + the real SmolLM2-135M-Instruct LM (experiments/recipe.py).
Presets: tiny / micro (seconds on CPU); 3b and 9b with the paper's Table 5 sizes for the
resampler (6 layers, width 1536, 16 heads x 128, 64 latents, FFW x4, Squared ReLU) and the gated
blocks (16 heads x 128, FFW x4; before every LM layer for 3B, every 4th for 9B). The paper's
NFNet-F6 is replaced by open_flamingo's ViT-L/14 (its 1024-d tokens are projected to the
resampler's 1536), and the Chinchilla LMs by Llama-style decoders of the paper's depth and width.
"""

import importlib.util
import os

import ml_collections

import common
from mmjax.data import config as data_config

PRESETS = ("tiny", "micro", "3b", "9b", "llava_tiny", "llava_micro")
PRESETS += ("video_tiny", "video_micro")  # Video: shapes_video captions + QA (with_video_trainer).
PRESETS += ("instruct_tiny", "instruct_micro")  # Instruction tuning (with_instruct).
PRESETS += ("smollm2",)  # The tiny ViT + SmolLM2-135M-Instruct (experiments/recipe.py).


def _lm_config_module():
  """configs/lm.py, loaded by path (config files are not a package)."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lm.py")
  spec = importlib.util.spec_from_file_location("mmjax_config_lm_for_flamingo", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def vision_model(**overrides) -> ml_collections.ConfigDict:
  """ViT fields (mmjax.models.vit.ViT): configs/common.py:vit's documented tower, tiny by
  default, plus the fields Flamingo sets per component; then `overrides`."""
  # `project` belongs to two-tower models (a projection into the joint space); Flamingo reads
  # the patch tokens, so its tower has no projection (output_dim None) and pooling is unused.
  v = ml_collections.ConfigDict({k: x for k, x in common.vit(
      image_size=16, patch_size=8, width=32, depth=1, num_heads=2, mlp_dim=64).items()
                                 if k != "project"})
  # The ViT's own output projection width: none, Flamingo uses the tokens.
  v.output_dim = ml_collections.FieldReference(None, field_type=int)
  # Scan over layers and the remat policy name; compute ('auto': bf16 on GPU/TPU, fp32 on CPU)
  # and parameter dtypes.
  v.scan = True
  v.remat = "none"
  v.dtype = "auto"
  v.param_dtype = "float32"
  v.update(overrides)
  return v


def resampler_model(**overrides) -> ml_collections.ConfigDict:
  """PerceiverResampler fields; tiny by default, then `overrides`."""
  r = ml_collections.ConfigDict()
  # Working width of latents and output (vision tokens are projected to it if they differ).
  r.width = 32
  # Layers, attention heads and per-head width.
  r.depth = 1
  r.num_heads = 2
  r.head_dim = 16
  # Visual tokens per media item.
  r.num_latents = 4
  # FFW hidden width as a multiple of the width, and its activation (paper: Squared ReLU).
  r.ff_mult = 2
  r.activation = "squared_relu"
  # Learned time embeddings: the most frames per media item (video); 0 disables them.
  r.max_frames = 2
  # Std of their initialisation (open_flamingo's torch.randn: 1.0; the video presets use it).
  r.time_embed_init_std = 0.02
  # Learned spatial embeddings, one per patch token of a frame (shared by all frames), and the
  # std of their initialisation; 0: none (the paper's, and every preset's). Why one may want
  # them for video: the resampler's docstring and experiments/results/modalities/motion_probe.md.
  r.max_patches = 0
  r.spatial_embed_init_std = 0.02
  # LayerNorm epsilon.
  r.norm_eps = 1e-5
  # Scan over layers and the remat policy name; compute ('auto': bf16 on GPU/TPU, fp32 on CPU)
  # and parameter dtypes.
  r.scan = True
  r.remat = "none"
  r.dtype = "auto"
  r.param_dtype = "float32"
  r.update(overrides)
  return r


def xattn_model(**overrides) -> ml_collections.ConfigDict:
  """Gated cross-attention fields (mmjax.models.xattn.XAttnConfig); tiny, then `overrides`."""
  x = ml_collections.ConfigDict()
  # Cross-attention heads and per-head width.
  x.num_heads = 2
  x.head_dim = 16
  # FFW hidden width as a multiple of the LM width, and its activation (open_flamingo: GELU).
  x.ff_mult = 2
  x.activation = "gelu"
  # Paper masking: each token sees only the most recent preceding image (False: all previous).
  x.only_attend_immediate_media = True
  # A gated block runs before LM layer i when (i + 1) % cross_attn_every_n == 0 ...
  x.cross_attn_every_n = 2
  # ... or before these explicit layer indices when non-empty (e.g. (0,): a single layer).
  x.cross_attn_layers = ()
  # LayerNorm epsilon.
  x.norm_eps = 1e-5
  # 'tanh': zero-initialised tanh gates (the paper); 'none': ungated (Table 3 ablation).
  x.gating = "tanh"
  # Initial alpha of the tanh gates: 0, the paper's (the model starts as the bare LM). At
  # small batches a frozen LM's cross-attention gates can stay closed from 0 for over a
  # thousand steps; a small value starts the branch learning (experiments/results/recipe_grounding.md).
  x.gate_init = 0.0
  x.update(overrides)
  return x


def connector_models(width: int, vocab_size: int, **overrides
                     ) -> dict[str, ml_collections.ConfigDict]:
  """The non-default connectors' sections, each emitting visual tokens of `width` (the LM width,
  which decoder-only fusion requires); the Q-Former's text vocabulary is `vocab_size` (its
  stage-1 text uses the run's tokenizer, not BERT's WordPiece); `overrides` = {name: {field:
  value}}."""
  sections = {}
  # LLaVA-1.5 projector: Linear(Dv, width) -> GELU -> Linear(width, width) on every patch token.
  sections["mlp"] = ml_collections.ConfigDict(dict(
      width=width, activation="gelu", dtype="float32", param_dtype="float32"))
  # MM1 average pooling: the patch grid pooled to num_tokens (a square) per image, then linear.
  sections["avgpool"] = ml_collections.ConfigDict(dict(
      num_tokens=4, width=width, dtype="float32", param_dtype="float32"))
  # Qwen-VL adapter: one cross-attention layer, num_queries learned queries (a square; Qwen-VL
  # 256), 2-D sin-cos positions on queries and keys; num_heads must divide width.
  sections["qwen_xattn"] = ml_collections.ConfigDict(dict(
      width=width, num_heads=2, num_queries=16, norm_eps=1e-6, dtype="float32",
      param_dtype="float32"))
  # BLIP-2 Q-Former: `bert` is the Q-Former itself (BLIP-2: bert-base, 32 queries, image
  # cross-attention every cross_attention_freq-th layer), `width` its output projection.
  sections["qformer"] = ml_collections.ConfigDict(dict(
      width=width, dtype="float32", param_dtype="float32",
      bert=dict(num_queries=8, width=32, depth=2, num_heads=2, mlp_dim=64,
                cross_attention_freq=2, vocab_size=vocab_size, max_length=64, activation="gelu",
                norm_eps=1e-12, scan=True, remat="none", dtype="float32",
                param_dtype="float32")))
  # Flamingo Table 3's plain Transformer over all patch tokens (no latents), resampler-sized.
  sections["transformer"] = ml_collections.ConfigDict(dict(
      width=width, depth=1, num_heads=2, mlp_dim=2 * width, activation="squared_relu",
      max_frames=2, norm_eps=1e-5, scan=True, remat="none", dtype="float32",
      param_dtype="float32"))
  for name, fields in overrides.items():
    sections[name].update(fields)
  return sections


def get_config(arg: str = "tiny") -> ml_collections.ConfigDict:
  """The config of preset `arg` (only `config.model`; the trainer adds the rest)."""
  lm_configs = _lm_config_module()
  m = ml_collections.ConfigDict()
  # Registered model family (mmjax.models.flamingo.FlamingoFamily).
  m.family = "flamingo"
  # Freeze the vision tower / the pretrained LM (the paper freezes both). The resampler, the
  # gated blocks and the new tokens' embeddings always train.
  m.freeze_vision = True
  m.freeze_lm = True
  # How the vision features reach the LM: 'resampler' (Flamingo's Perceiver resampler, section
  # model.resampler), 'mlp' (LLaVA-1.5), 'avgpool' (MM1), 'qwen_xattn' (Qwen-VL) or 'qformer'
  # (BLIP-2), each configured in model.<name>.
  m.connector = "resampler"
  # How the visual tokens enter the LM: 'xattn' (gated cross-attention blocks, model.xattn) or
  # 'decoder_only' (spliced into the input sequence after each <image> token; the connector's
  # width must equal lm.width and each image costs the LM its n visual positions).
  m.fusion = "xattn"
  # AnyRes tiling (data.anyres_grids): learned tile-position embeddings added to the vision
  # features before a non-resampler connector, one per tile index (0: thumbnail, 1 + r * cols
  # + c: tile (r, c)); set it to 1 + the largest grid. 0: off (no parameter). The resampler's
  # time_embed already is one: set resampler.max_frames instead.
  m.tile_positions = 0
  video = arg.startswith("video_")
  arg = arg.removeprefix("video_")
  llava = arg.startswith("llava_")
  instruct = arg.startswith("instruct_")
  arg = arg.removeprefix("instruct_")
  if llava:
    # LLaVA-1.5 recipe on the tiny / micro towers: MLP projector, decoder-only.
    arg = arg.removeprefix("llava_")
    m.connector = "mlp"
    m.fusion = "decoder_only"
  if arg == "micro":
    # Seconds on CPU (tests): 16 px images, one layer each.
    m.vision = vision_model()
    m.resampler = resampler_model()
    m.lm = lm_configs.lm_model(vocab_size=512, depth=3, num_new_tokens=3)
    m.xattn = xattn_model()
    m.update(connector_models(m.lm.width, m.lm.vocab_size + m.lm.num_new_tokens))
  elif arg == "tiny":
    # The README's main job: captions of and answers about 64 px shapes scenes in minutes on 2
    # CPU cores, the paper's way: the vision tower is configs/clip.py:tiny's, pre-trained
    # contrastively by the same command (config.pretrain, see with_trainer) and frozen; no
    # pretrained LM exists at this size, so the LM trains from scratch with the resampler and
    # the gated blocks. An experiment brings its own tower with
    # --config.init_from='("vision=CLIP_WORKDIR:image",)' (the pre-training stage is then
    # skipped).
    m.freeze_lm = False
    m.vision = vision_model(**common.TINY_VIT, mlp_dim=512)
    m.resampler = resampler_model(width=128, depth=1, num_heads=4, head_dim=32, num_latents=16)
    m.lm = lm_configs.lm_model(vocab_size=512, width=128, depth=4, num_heads=4, num_kv_heads=2,
                               head_dim=32, mlp_dim=384, max_len=128, num_new_tokens=3)
    # Gates start open at alpha = 0.1: at batch 32 the paper's closed gates stay closed for
    # over a thousand steps and the captions ignore the image (experiments/results/
    # recipe_grounding.md); experiments that reproduce the paper pass gate_init=0.
    m.xattn = xattn_model(num_heads=4, head_dim=32, ff_mult=2, cross_attn_every_n=2,
                          gate_init=0.1)
    # 64 patch tokens per 64 px image: pooled / queried down to 16.
    m.update(connector_models(m.lm.width, m.lm.vocab_size + m.lm.num_new_tokens,
                              avgpool=dict(num_tokens=16),
                              qwen_xattn=dict(num_heads=4, num_queries=16),
                              qformer=dict(bert=dict(num_queries=16, width=128, num_heads=4,
                                                     mlp_dim=256))))
  elif arg == "smollm2":
    # experiments/recipe.py --scale smollm2: the tiny CLIP vision tower (stage 1) and the real
    # SmolLM2-135M-Instruct (configs/lm.py:smollm2_135m, loaded from its GGUF) as the frozen LM,
    # tokenised by the `smollm2` tokenizer (its 49152 ids, then <image>, <|endofchunk|>).
    m.vision = vision_model(**common.TINY_VIT, mlp_dim=512)
    m.resampler = resampler_model(width=128, depth=1, num_heads=4, head_dim=32, num_latents=16)
    m.lm = lm_configs.lm_preset("smollm2_135m")
    m.lm.num_new_tokens = 3
    # The KV cache bound: 32-shot prompts of shapes captions / questions fit in 1024 tokens.
    m.lm.max_len = 1024
    # A gated block before every 3rd of the 30 layers (10 blocks, as the 9B model's every 4th of
    # 40): a third of the 3B model's every-layer cost on CPU, still spread over the whole depth.
    m.xattn = xattn_model(num_heads=8, head_dim=64, ff_mult=2, cross_attn_every_n=3)
    m.update(connector_models(m.lm.width, m.lm.vocab_size + m.lm.num_new_tokens,
                              avgpool=dict(num_tokens=16),
                              qwen_xattn=dict(num_heads=9, num_queries=16)))
  elif arg in ("3b", "9b"):
    # open_flamingo's ViT-L/14 (open_clip), 224 px: 256 patch tokens of width 1024.
    m.vision = vision_model(image_size=224, patch_size=14, width=1024, depth=24, num_heads=16,
                            mlp_dim=4096)
    # Table 5: 6 layers, width 1536, 16 heads x 128, 64 latents, FFW x4, Squared ReLU; 8
    # time embeddings for the 8-frame video clips of VTP.
    m.resampler = resampler_model(width=1536, depth=6, num_heads=16, head_dim=128,
                                  num_latents=64, ff_mult=4, max_frames=8)
    if arg == "3b":
      # Table 5: 24 layers of width 2048 (Chinchilla 1.4B-class); untied 32k SentencePiece vocab.
      m.lm = lm_configs.lm_model(vocab_size=32000, width=2048, depth=24, num_heads=16,
                                 num_kv_heads=16, head_dim=128, mlp_dim=8192, activation="gelu",
                                 max_len=2048, tie_embeddings=False, num_new_tokens=3)
      m.xattn = xattn_model(num_heads=16, head_dim=128, ff_mult=4, cross_attn_every_n=1)
    else:
      # Table 5: 40 layers of width 4096 (Chinchilla 7B-class).
      m.lm = lm_configs.lm_model(vocab_size=32000, width=4096, depth=40, num_heads=32,
                                 num_kv_heads=32, head_dim=128, mlp_dim=16384, activation="gelu",
                                 max_len=2048, tie_embeddings=False, num_new_tokens=3)
      m.xattn = xattn_model(num_heads=16, head_dim=128, ff_mult=4, cross_attn_every_n=4)
    # The published shapes: 256 Qwen-VL queries (width // 128 heads), 64 pooled tokens, a
    # bert-base Q-Former with 32 queries (its vocabulary is the LM tokenizer's, not BERT's 30523).
    m.update(connector_models(m.lm.width, m.lm.vocab_size + m.lm.num_new_tokens,
                              avgpool=dict(num_tokens=64),
                              qwen_xattn=dict(num_heads=m.lm.width // 128, num_queries=256),
                              qformer=dict(bert=dict(num_queries=32, width=768, depth=12,
                                                     num_heads=12, mlp_dim=3072,
                                                     max_length=512))))
  else:
    raise ValueError(f"unknown flamingo preset {arg!r}; choose one of {PRESETS}")
  if llava:
    # The LM trains with the projector (LLaVA's stage 2; no pretrained LM at this size anyway).
    m.freeze_lm = False
  if video:
    return with_video_trainer(common.root(m), arg)
  if instruct:
    return with_instruct(common.root(m), arg)
  return with_trainer(common.root(m), arg)


def with_trainer(config: ml_collections.ConfigDict, arg: str) -> ml_collections.ConfigDict:
  """Trainer sections: a mixture of shapes captions and visual questions, each as a one-image
  interleaved row ([BOS] <image> caption <|endofchunk|> [EOS]; [BOS] <image> Question: q Answer:
  a <|endofchunk|> [EOS], loss on the answer); evaluation of each task on unseen scenes and on
  held-out colour-shape pairs, with images and with images blanked, plus printed samples."""
  m = config.model
  small = arg in ("tiny", "micro", "smollm2")
  data = data_config.default_data_config(
      datasets=("shapes", "shapes"), tasks=("caption", "vqa"), weights=(1.0, 1.0),
      as_media=True, image_size=m.vision.image_size, max_media=1,
      text_length=32 if small else 256,
      num_train=4096 if arg in ("tiny", "smollm2") else 512,
      # SmolLM2's own BPE (mmjax/data/tokenizers.py:smollm2), so its embedding rows apply.
      tokenizer="smollm2" if arg == "smollm2" else "shapes_sp")
  common.trainer(config, data=data,
                 total_steps={"tiny": 1000, "micro": 30, "smollm2": 1000}.get(arg, 100_000),
                 batch_size=32 if small else 8192, learning_rate=3e-3 if small else 1e-4,
                 warmup_steps={"tiny": 30, "micro": 5, "smollm2": 30}.get(arg, 5000))
  every = config.total_steps // 2
  # Each task's loss on unseen scenes ('validation') and unseen colour-shape pairs ('heldout'),
  # beside the same model with its images blanked: the gap is what the image is worth.
  for task in ("caption", "vqa"):
    for split in ("validation", "heldout"):
      for blank in (False, True):
        config.evals[f"{task}_{split}{'_blank' if blank else ''}"] = ml_collections.ConfigDict(
            dict(type="loss", every_steps=every, split=split, datasets=("shapes",), task=task,
                 num_batches=4, blank_images=blank))
  config.evals.samples = ml_collections.ConfigDict(dict(
      type="captions", every_steps=every, split="heldout", num_examples=4, max_new_tokens=24,
      answers=True))
  if arg == "tiny":
    # The paper's stage 1 inside the README's one command: configs/clip.py:tiny trained
    # contrastively in WORKDIR/pretrain_clip (for fewer steps than its own preset, to fit the
    # main job's 10 minutes), its image tower then initialises this model's, frozen.
    config.pretrain.clip = ml_collections.ConfigDict(dict(
        config="configs/clip.py:tiny", overrides=(f"total_steps={TINY_CLIP_STEPS}",),
        init=("vision=image",)))
    # What the main job shows at its end (the last record of metrics.jsonl, and samples.png):
    # do its captions name objects that are there, do they differ between images, and do its
    # answers beat the same model shown blank images (mmjax/evaluators/grounding.py)?
    config.evals.final = ml_collections.ConfigDict(dict(
        type="grounding", every_steps=0, splits=("validation", "heldout"), num_captions=64,
        num_vqa_records=64, max_new_tokens=24, samples_png=True, num_samples=8))
  return config


# Contrastive pre-training steps of the tiny main job's vision tower (config.pretrain.clip).
TINY_CLIP_STEPS = 600

# Frames (T) the video presets feed the model, and frames (S) their stored clips have.
VIDEO_FRAMES = {"tiny": (4, 8), "micro": (2, 4)}


def with_video_trainer(config: ml_collections.ConfigDict, arg: str) -> ml_collections.ConfigDict:
  """Trainer sections for video: a mixture of shapes_video captions and motion questions, each
  row [BOS] <image> caption-or-Q/A <|endofchunk|> [EOS] with one clip of T frames taken from S
  (TSN-style 'random' sampling in training, segment centres in evaluation). The vision tower is
  frozen, as in the paper; give it trained weights with init_from (see the module docstring).
  Each frame goes through the ViT alone; the resampler adds a learned time embedding per frame
  (max_frames = T) before it pools all T x patches tokens into the visual tokens."""
  if arg not in VIDEO_FRAMES:
    raise ValueError(f"unknown flamingo video preset 'video_{arg}'; choose one of "
                     f"{tuple('video_' + k for k in VIDEO_FRAMES)}")
  m = config.model
  m.freeze_vision = True
  num_frames, clip_frames = VIDEO_FRAMES[arg]
  m.resampler.max_frames = num_frames
  # open_flamingo's scale: frames are told apart from the first step (see the resampler).
  m.resampler.time_embed_init_std = 1.0
  data = data_config.default_data_config(
      datasets=("shapes_video", "shapes_video"), tasks=("video", "video_qa"), weights=(1.0, 1.0),
      image_size=m.vision.image_size, max_media=1, text_length=48 if arg == "tiny" else 32,
      num_frames=num_frames, clip_frames=clip_frames, frame_sampling="random",
      num_train=4096 if arg == "tiny" else 256, num_eval=256 if arg == "tiny" else 32)
  common.trainer(config, data=data, total_steps={"tiny": 1000, "micro": 30}[arg], batch_size=32,
                 learning_rate=3e-3, warmup_steps={"tiny": 30, "micro": 5}[arg])
  every = config.total_steps // 2
  # Each task's loss on unseen clips, beside the same model with its frames blanked.
  for task in ("video", "video_qa"):
    for blank in (False, True):
      config.evals[f"{task}_validation{'_blank' if blank else ''}"] = ml_collections.ConfigDict(
          dict(type="loss", every_steps=every, split="validation", datasets=("shapes_video",),
               task=task, num_batches=4 if arg == "tiny" else 1, blank_images=blank))
  return config


def with_instruct(config: ml_collections.ConfigDict, arg: str) -> ml_collections.ConfigDict:
  """Instruction tuning on shapes_instruct: multi-turn ChatML conversations, loss on assistant
  turns only, several conversations packed per row (mmjax/data/conversation.py, packing.py).

  Fusion stays Flamingo's gated cross-attention: packed rows hold one image per conversation,
  and with the paper's immediate-media masking each conversation's text after its `<image>`
  attends to its own image only, while the LM's sequence stays `text_length` however many images
  a row packs (decoder-only fusion, --config.model.fusion=decoder_only, adds every packed
  image's visual tokens to the LM's sequence, so lm.max_len must cover them; not exercised by
  the tests). The LM has no segment ids, so self-attention crosses conversation boundaries;
  only the loss is masked."""
  m = config.model
  if arg not in ("tiny", "micro"):
    raise ValueError(f"unknown flamingo preset 'instruct_{arg}'; choose one of {PRESETS}")
  # ChatML's <|im_start|> / <|im_end|> join <image> and <|endofchunk|> as new tokens (512-515).
  m.lm.num_new_tokens = 4
  m.qformer.bert.vocab_size = m.lm.vocab_size + m.lm.num_new_tokens
  # A shapes conversation is ~105 tokens (median; 5-95%: 52-163) in shapes_sp, its
  # chain-of-thought form ~277 (143-419): tiny packs up to 3 plain ones into 256 tokens.
  length, pack = (256, 3) if arg == "tiny" else (128, 2)
  m.lm.max_len = length
  data = data_config.default_data_config(
      datasets=("shapes_instruct",), task="chat", image_size=m.vision.image_size,
      max_media=pack, pack_conversations=pack, text_length=length,
      num_train=4096 if arg == "tiny" else 512)
  common.trainer(config, data=data, total_steps={"tiny": 1000, "micro": 30}[arg],
                 batch_size=32, learning_rate=3e-3, warmup_steps={"tiny": 30, "micro": 5}[arg])
  every = config.total_steps // 2
  # Loss on the assistant turns of unseen scenes and of unseen colour-shape pairs, beside the
  # same model with its images blanked: the gap is what the image is worth.
  for split in ("validation", "heldout"):
    for blank in (False, True):
      config.evals[f"chat_{split}{'_blank' if blank else ''}"] = ml_collections.ConfigDict(
          dict(type="loss", every_steps=every, split=split, num_batches=4, blank_images=blank))
  # Exact-match accuracy of greedy replies in context, per question kind, and with blank images
  # (raise max_new_tokens to ~160 with data.chain_of_thought: replies are rationales).
  config.evals.chat = ml_collections.ConfigDict(dict(
      type="chat", every_steps=every, split="validation", num_examples=32, max_new_tokens=24))
  return config
