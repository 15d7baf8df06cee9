"""Documented building blocks shared by the family configs (every field explained once here).

Family files (`clip.py`, `siglip.py`, `coca.py`, ...) build their presets from these and change
only what differs from the defaults.
"""

import ml_collections


# The image tower of every tiny preset (CLIP, SigLIP, CoCa, LiT, Flamingo, Q-Former), so a CLIP
# tiny run can initialise any of them: 64 px images, an 8 x 8 grid of width-128 tokens, 4 layers.
# The patch stem: the conv stems (stem='conv') classify shape when supervised but learn the
# contrastive task too slowly at this budget (experiments/README.md, "Why the tiny tower did not
# read shape").
TINY_VIT = dict(image_size=64, patch_size=8, width=128, depth=4, num_heads=4, stem="patch")


def vit(**overrides) -> ml_collections.ConfigDict:
  """ViT image tower (mmjax/models/vit.py)."""
  c = ml_collections.ConfigDict()
  # Resolution the learned position embeddings are built for (other sizes are interpolated).
  c.image_size = 224
  # Side of the square patches; image_size must be divisible by it.
  c.patch_size = 16
  # Transformer width (residual stream), number of layers and attention heads.
  c.width = 768
  c.depth = 12
  c.num_heads = 12
  # Feed-forward hidden width; None means 4 * width.
  c.mlp_dim = ml_collections.FieldReference(None, field_type=int)
  # MLP activation: 'gelu' (open_clip), 'quick_gelu' (OpenAI CLIP weights), 'gelu_tanh'.
  c.activation = "gelu"
  # Pooling of the final tokens: 'tok' (class token), 'gap' (mean), 'max' (max over tokens),
  # 'map' (attention pooling).
  c.pool = "tok"
  # Prepend a learned class token.
  c.class_token = True
  # Patch embedding: 'patch' (one patch_size x patch_size convolution, the paper's), 'conv' (a
  # stem of 3x3 convolutions with the same token grid, mmjax/models/vit.py:ConvStem: what a tiny
  # ViT needs to classify shape, experiments/results/shape_diagnosis.md) or 'patch_conv' (both,
  # summed).
  c.stem = "patch"
  # Channels of the conv stem's first layer, doubling per layer up to width; None: width //
  # 2 ** (log2(patch_size) - 1).
  c.stem_width = ml_collections.FieldReference(None, field_type=int)
  # How the conv stem halves the resolution: 'maxpool' (stride-1 convs + 2 x 2 max-pooling
  # after the first, shift-tolerant) or 'stride' (stride-2 convs, Xiao et al.'s).
  c.stem_downsample = "maxpool"
  # Bias on the patch-embedding convolution (timm/SigLIP: yes; open_clip: no).
  c.patch_bias = False
  # LayerNorm right after the position embeddings (open_clip: yes; timm/SigLIP: no).
  c.ln_pre = True
  # Epsilon of every LayerNorm in the tower (open_clip 1e-5, SigLIP 1e-6).
  c.norm_eps = 1e-5
  # Project the pooled features into the joint embedding space (False: SigLIP's timm tower,
  # whose pooled width is the embedding, with no projection).
  c.project = True
  # Bias on the output projection into the joint embedding space.
  c.proj_bias = False
  # Share of patch tokens dropped during training (FLIP / open_clip patch dropout); 0 = off.
  c.patch_dropout = 0.0
  # Dropout on residual branches during training.
  c.dropout_rate = 0.0
  c.update(overrides)
  return c


def text(**overrides) -> ml_collections.ConfigDict:
  """Transformer text tower (mmjax/models/text.py). Two-tower models also take a BERT tower
  (LiT) through a block with kind='bert' (configs/clip.py:lit_text); this block has no `kind`
  field, which means 'transformer', so existing configs and checkpoints are unchanged."""
  c = ml_collections.ConfigDict()
  # Rows of the token embedding (49408 for CLIP's BPE, 32000 for SigLIP's sentencepiece).
  c.vocab_size = 49408
  # Number of learned positions = longest text the tower reads (CoCa: text length + 1 for CLS).
  c.context_length = 77
  # Transformer width, layers and heads.
  c.width = 512
  c.depth = 12
  c.num_heads = 8
  # Feed-forward hidden width; None means 4 * width.
  c.mlp_dim = ml_collections.FieldReference(None, field_type=int)
  # MLP activation ('gelu' or 'quick_gelu' for OpenAI weights).
  c.activation = "gelu"
  # Causal self-attention (CLIP, CoCa) or bidirectional (SigLIP).
  c.causal = True
  # Pooling: 'argmax' (the largest id, CLIP's end-of-text), 'last', 'first', 'eos'.
  c.pool = "argmax"
  # End-of-text id for pool='eos'.
  c.eos_id = 49407
  # Padding id of the tokenizer (masked out by CoCa's CLS token).
  c.pad_id = 0
  # CoCa only: use the unshifted padding mask instead of open_clip's legacy one.
  c.correct_cls_mask = False
  # LayerNorm epsilon (open_clip 1e-5, SigLIP 1e-6).
  c.norm_eps = 1e-5
  # Bias on the projection into the joint embedding space (SigLIP: yes).
  c.proj_bias = False
  # Dropout on residual branches during training.
  c.dropout_rate = 0.0
  c.update(overrides)
  return c


def model_common(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Fields every model config has: dtypes, layer scanning and rematerialisation."""
  # Compute dtype of activations and matmuls: 'float32', 'bfloat16', or 'auto' (bfloat16 on
  # GPU/TPU, float32 on CPU; mmjax/models/layers.py:auto_compute_dtype).
  c.dtype = "auto"
  # Storage dtype of parameters (fp32 master weights by default).
  c.param_dtype = "float32"
  # Scan over layers (one compiled layer body; compile time independent of depth).
  c.scan = True
  # Rematerialisation policy per layer: 'none', 'full', 'dots', 'dots_no_batch'.
  c.remat = "none"
  return c


def root(model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The top-level config around a model block (the trainer adds its own sections)."""
  config = ml_collections.ConfigDict()
  # The network, its loss and its metrics (see mmjax/models/family.py).
  config.model = model
  return config


def optim(**overrides) -> ml_collections.ConfigDict:
  """Optimizer and schedule (mmjax/optim.py)."""
  c = ml_collections.ConfigDict()
  # 'adamw' (default) or 'sgd' (momentum = b1).
  c.name = "adamw"
  # Peak learning rate, reached after warmup_steps of linear warmup.
  c.learning_rate = 1e-3
  c.warmup_steps = 50
  # Decay after warmup: 'cosine', 'linear', 'rsqrt' or 'constant'; end_lr_factor is the final
  # learning rate as a fraction of the peak (cosine / linear).
  c.schedule = "cosine"
  c.end_lr_factor = 0.0
  # Adam moments and epsilon.
  c.b1 = 0.9
  c.b2 = 0.98
  c.eps = 1e-6
  # Decoupled weight decay. Parameters of rank < 2 (norms, biases, gates, temperatures, class
  # tokens) never decay; no_decay lists further paths (regexes) without decay: embeddings,
  # position embeddings and learned queries.
  c.weight_decay = 0.1
  c.no_decay = (r"token_embed", r"posemb", r"time_embed", r"latents", r"probe", r"/query$")
  # Clip gradients to this global norm (0: off).
  c.clip_norm = 1.0
  # Split each batch into this many micro-batches and sum their gradients (one update per step).
  c.grad_accum_steps = 1
  # Parameter paths (regexes) that are frozen: no gradient, no optimizer state.
  c.frozen = ()
  c.update(overrides)
  return c


def trainer(config: ml_collections.ConfigDict, *, data: ml_collections.ConfigDict,
            total_steps: int, batch_size: int, learning_rate: float,
            warmup_steps: int) -> ml_collections.ConfigDict:
  """Adds the trainer's sections (mmjax/train.py) to a root config."""
  # Seed of parameter initialisation and dropout (data order has its own data.seed).
  config.seed = 0
  # Optimizer updates to run.
  config.total_steps = total_steps
  # Input pipeline (mmjax/data/config.py documents every field).
  config.data = data
  config.data.batch_size = batch_size
  # Optimizer and learning-rate schedule.
  config.optim = optim(learning_rate=learning_rate, warmup_steps=warmup_steps)
  # The schedule's length follows total_steps (a reference: overriding one changes both).
  config.optim.total_steps = config.get_ref("total_steps")
  # Device mesh (data, fsdp, tensor); -1 takes the remaining devices.
  config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1))
  # Logical-axis rule preset: 'dp', 'fsdp', 'tp', 'fsdp_tp' (mmjax/parallel.py).
  config.sharding_rules = "fsdp"
  # Initialise sub-trees from other runs: "DST_PATH=WORKDIR_OR_CKPT:SRC_PATH" strings, e.g.
  # "vision=/runs/clip:image" copies the CLIP run's image tower into our `vision` sub-tree.
  config.init_from = ()
  # Pre-training stages the same command runs first (mmjax/stages.py), by name: dict(
  # config='configs/F.py:preset', overrides=('field=value', ...), init=('DST=SRC', ...)). Each
  # trains in WORKDIR/pretrain_<name> (resumed, or skipped when finished) and its SRC sub-tree
  # initialises this model's DST; a stage whose DSTs init_from already covers is not run.
  # Empty: none.
  config.pretrain = ml_collections.ConfigDict()
  # Non-finite loss or gradients: 'halt' (stop, naming the step and the first bad parameter
  # group; the last good checkpoint stays) or 'skip' (drop the update, counted in metrics).
  config.on_nonfinite = "halt"
  # Checkpointing: every N steps (and at the end), keep the last K, plus every M-th step.
  # On SIGTERM the current step is saved and the run exits with code 75 (train.EXIT_PREEMPTED);
  # if that save takes longer than preemption_grace_s seconds, it exits with 75 anyway (the
  # previous complete checkpoint stays valid).
  config.checkpoint = ml_collections.ConfigDict(dict(
      every_steps=100, keep_last=3, keep_every=0, async_save=True, preemption_grace_s=120.0))
  # Evaluators: name -> dict(type=..., every_steps=..., fields of that evaluator); see
  # mmjax/evaluators/. Empty: no evaluation.
  config.evals = ml_collections.ConfigDict()
  # Logging: progress line and metrics every N steps; peak FLOP/s of one device for MFU
  # (default: this project's measured 2-core CPU fp32 peak); steps to trace with the profiler.
  config.log = ml_collections.ConfigDict(dict(
      every_steps=10, peak_flops=120e9, profile_steps=(), tensorboard=True))
  return config
