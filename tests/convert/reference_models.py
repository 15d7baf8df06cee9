"""Tiny randomised open_clip reference models (CLIP, SigLIP with a timm tower, CoCa) for tests."""

import functools

import numpy as np
import open_clip
import timm
import torch
from timm.models import vision_transformer

VOCAB = 100
TIMM_SIGLIP = "mmjax_test_siglip_micro"
TIMM_WIDTH = 48


def _register_timm_siglip():
  """A SigLIP-shaped timm ViT (MAP pooling, no class token, patch bias, LayerNorm eps 1e-6)."""
  if timm.models.is_model(TIMM_SIGLIP):
    return

  def create(pretrained=False, **kwargs):
    del pretrained
    keep = {k: v for k, v in kwargs.items()
            if k in ("num_classes", "global_pool", "drop_path_rate", "patch_drop_rate")}
    return vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=TIMM_WIDTH, depth=2, num_heads=2, mlp_ratio=3.0,
        class_token=False, norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6), **keep)
  create.__name__ = TIMM_SIGLIP
  timm.models.register_model(create)


def clip_config(quick_gelu: bool) -> dict:
  return dict(embed_dim=24, quick_gelu=quick_gelu,
              vision_cfg=dict(image_size=32, patch_size=8, width=32, layers=2, head_width=16),
              text_cfg=dict(context_length=16, vocab_size=VOCAB, width=32, heads=2, layers=2))


def siglip_config() -> dict:
  return dict(embed_dim=TIMM_WIDTH, init_logit_bias=-10.0, custom_text=True,
              vision_cfg=dict(image_size=32, timm_model_name=TIMM_SIGLIP, timm_pool="map",
                              timm_proj="none"),
              text_cfg=dict(context_length=16, vocab_size=VOCAB, width=32, heads=2, layers=2,
                            no_causal_mask=True, proj_bias=True, pool_type="last",
                            norm_kwargs={"eps": 1e-6}))


def coca_config() -> dict:
  # The decoder cross-attends to pooled image tokens of width embed_dim = decoder width; the
  # vision width differs so the pooler's attention has separate q/k/v projections in torch.
  return dict(embed_dim=32, custom_text=True,
              vision_cfg=dict(image_size=32, patch_size=8, width=48, layers=2, head_width=24,
                              attentional_pool=True, attn_pooler_heads=2, attn_pooler_queries=6,
                              output_tokens=True),
              text_cfg=dict(context_length=15, vocab_size=VOCAB, width=32, heads=2, layers=2,
                            embed_cls=True, output_tokens=True),
              multimodal_cfg=dict(context_length=15, vocab_size=VOCAB, width=32, heads=2,
                                  layers=2))


def build(kind: str, config: dict, seed: int = 0) -> torch.nn.Module:
  """The open_clip model for `config`, every parameter randomised, in eval mode."""
  torch.manual_seed(seed)
  if kind == "clip":
    model = open_clip.CLIP(**config)
  elif kind == "siglip":
    _register_timm_siglip()
    model = open_clip.CustomTextCLIP(**{k: v for k, v in config.items() if k != "custom_text"})
  elif kind == "coca":
    model = open_clip.CoCa(**{k: v for k, v in config.items() if k != "custom_text"})
  else:
    raise ValueError(kind)
  randomise(model)
  return model.eval()


def randomise(model: torch.nn.Module, std: float = 0.2) -> None:
  """Every parameter ~ N(0, std), LayerNorm / RMSNorm scales ~ N(1, std) (activations O(1))."""
  with torch.no_grad():
    for name, p in model.named_parameters():
      p.normal_(0.0, std)
      if p.ndim == 1 and _is_norm_weight(model, name):
        p.add_(1.0)


def _is_norm_weight(model: torch.nn.Module, name: str) -> bool:
  module_name, _, leaf = name.rpartition(".")
  module = model.get_submodule(module_name)
  # transformers' LlamaRMSNorm & co. are not torch.nn.RMSNorm subclasses: match by class name.
  return leaf == "weight" and (isinstance(module, (torch.nn.LayerNorm, torch.nn.RMSNorm))
                               or type(module).__name__.endswith("RMSNorm"))


def tokens(batch: int, length: int, seed: int = 0) -> np.ndarray:
  """open_clip.tokenize-like ids: [sot, words..., eot, 0 padding], eot = the largest id."""
  rng = np.random.default_rng(seed)
  sot, eot = VOCAB - 2, VOCAB - 1
  out = np.zeros((batch, length), np.int64)
  for i in range(batch):
    n = int(rng.integers(1, length - 1))  # words; row 0 gets the longest-but-one
    n = length - 2 if i == 0 else n
    out[i, :n + 2] = [sot, *rng.integers(1, VOCAB - 2, n), eot]
  return out


def images(batch: int, size: int = 32, seed: int = 0) -> np.ndarray:
  """[B, H, W, 3] float32 (ours); torch takes the NCHW transpose."""
  return np.random.default_rng(seed).standard_normal((batch, size, size, 3)).astype(np.float32)
