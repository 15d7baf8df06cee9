"""open_clip model-config dicts (`open_clip.get_model_config(name)`) -> our `config.model` block.

The block is built with the family builders in `configs/` (clip.py, siglip.py, coca.py), so it
carries every documented field. Options our modules do not implement (layer scale, qk-norm,
custom attention blocks, HF text towers, ...) raise instead of converting to a different model.
A timm vision tower is described by inspecting the timm model, built on torch's meta device.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

import ml_collections

from mmjax import config_lib

CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "configs")

# open_clip options that change the network in ways our modules do not reproduce; each must be
# absent or equal to its default here.
_UNSUPPORTED = {
    "ls_init_value": None, "block_type": None, "qk_norm": False, "scaled_cosine_attn": False,
    "scale_heads": False, "scale_attn_inner": False, "scale_attn": False, "scale_fc": False,
    "act_kwargs": None, "final_ln_after_pool": False, "hf_model_name": None,
    "pos_embed_type": "learnable", "use_pad_mask": False,
}


def _common():
  import common  # pylint: disable=import-outside-toplevel,import-error  (configs/ is on sys.path)
  return common


def _check_supported(cfg: Mapping[str, Any], where: str) -> None:
  for key, default in _UNSUPPORTED.items():
    if cfg.get(key, default) != default:
      raise ValueError(f"open_clip {where}.{key}={cfg[key]!r} is not supported by mmjax's "
                       f"modules (only {default!r})")


def _norm_eps(cfg: Mapping[str, Any]) -> float:
  kwargs = dict(cfg.get("norm_kwargs") or {})
  eps = kwargs.pop("eps", 1e-5)  # open_clip's LayerNorm default
  if kwargs:
    raise ValueError(f"open_clip norm_kwargs {sorted(kwargs)} are not supported (only eps)")
  return eps


def _mlp_dim(width: int, ratio: float) -> int:
  return int(width * ratio)


def vision_fields(v: Mapping[str, Any], quick_gelu: bool, attentional_pool: bool) -> dict:
  """Fields of configs/common.py:vit for open_clip's own VisionTransformer."""
  _check_supported(v, "vision_cfg")
  if isinstance(v.get("layers", 12), (tuple, list)):
    raise ValueError("open_clip ModifiedResNet vision towers are not supported")
  if bool(v.get("attentional_pool", False)) != attentional_pool:
    raise ValueError("vision_cfg.attentional_pool must be set for CoCa and only for CoCa "
                     "(string modes 'parallel' / 'cascade' are not supported)")
  if isinstance(v.get("attentional_pool"), str):
    raise ValueError(f"attentional_pool={v['attentional_pool']!r} is not supported")
  width = v.get("width", 768)
  pool = {"tok": "tok", "avg": "gap"}.get(v.get("pool_type", "tok"))
  if pool is None:
    raise ValueError(f"vision_cfg.pool_type={v['pool_type']!r} is not supported")
  return dict(image_size=v.get("image_size", 224), patch_size=v.get("patch_size", 16),
              width=width, depth=v.get("layers", 12),
              num_heads=width // v.get("head_width", 64),
              mlp_dim=_mlp_dim(width, v.get("mlp_ratio", 4.0)),
              activation="quick_gelu" if quick_gelu else "gelu", pool=pool, class_token=True,
              patch_bias=False, ln_pre=not v.get("no_ln_pre", False), norm_eps=_norm_eps(v),
              patch_dropout=v.get("patch_dropout", 0.0))


def timm_vision_fields(v: Mapping[str, Any], trunk: Any = None) -> dict:
  """Fields of configs/common.py:vit for a timm VisionTransformer tower (SigLIP).

  `trunk` is the timm model if already built (tests build tiny ones), else it is created by
  name on torch's meta device (shapes only, no memory).
  """
  if v.get("timm_proj", "linear") not in ("none", "linear"):
    raise ValueError(f"timm_proj={v['timm_proj']!r} is not supported (only 'none', 'linear')")
  if trunk is None:
    import timm  # pylint: disable=import-outside-toplevel
    import torch  # pylint: disable=import-outside-toplevel
    with torch.device("meta"):
      trunk = timm.create_model(v["timm_model_name"], pretrained=False, num_classes=0,
                                global_pool=v.get("timm_pool", "avg"))
  pool = {"map": "map", "token": "tok", "avg": "gap"}.get(trunk.global_pool)
  if pool is None:
    raise ValueError(f"timm global_pool={trunk.global_pool!r} is not supported")
  block = trunk.blocks[0]
  for name in ("ls1", "ls2"):
    if type(getattr(block, name)).__name__ != "Identity":
      raise ValueError("timm towers with layer scale are not supported")
  if type(trunk.fc_norm).__name__ != "Identity" or type(block.attn.q_norm).__name__ != "Identity":
    raise ValueError("timm towers with fc_norm or qk-norm are not supported")
  if getattr(trunk, "no_embed_class", False) and trunk.cls_token is not None:
    raise ValueError("timm towers with no_embed_class are not supported")
  act = type(block.mlp.act).__name__
  if act != "GELU" or getattr(block.mlp.act, "approximate", "none") != "none":
    raise ValueError(f"timm MLP activation {block.mlp.act} is not supported (only nn.GELU())")
  width = trunk.embed_dim
  return dict(image_size=trunk.patch_embed.img_size[0], patch_size=trunk.patch_embed.patch_size[0],
              width=width, depth=len(trunk.blocks), num_heads=block.attn.num_heads,
              mlp_dim=block.mlp.fc1.out_features, activation="gelu", pool=pool,
              class_token=trunk.cls_token is not None,
              patch_bias=trunk.patch_embed.proj.bias is not None,
              ln_pre=type(trunk.norm_pre).__name__ != "Identity", norm_eps=trunk.norm.eps,
              project=v.get("timm_proj", "linear") == "linear",
              proj_bias=v.get("timm_proj_bias", False))


def text_fields(t: Mapping[str, Any], quick_gelu: bool) -> dict:
  """Fields of configs/common.py:text for open_clip's TextTransformer."""
  _check_supported(t, "text_cfg")
  width = t.get("width", 512)
  embed_cls = t.get("embed_cls", False)
  return dict(vocab_size=t.get("vocab_size", 49408),
              context_length=t.get("context_length", 77) + (1 if embed_cls else 0),
              width=width, depth=t.get("layers", 12), num_heads=t.get("heads", 8),
              mlp_dim=_mlp_dim(width, t.get("mlp_ratio", 4.0)),
              activation="quick_gelu" if quick_gelu else "gelu",
              causal=not t.get("no_causal_mask", False), pool=t.get("pool_type", "argmax"),
              eos_id=t.get("eos_id", 2), pad_id=t.get("pad_id", 0),
              correct_cls_mask=t.get("correct_cls_mask", False), norm_eps=_norm_eps(t),
              proj_bias=t.get("proj_bias", False))


def model_config(oc: Mapping[str, Any], timm_trunk: Any = None,
                 family: Optional[str] = None) -> ml_collections.ConfigDict:
  """Our `config.model` block for an open_clip model-config dict.

  `family` defaults to 'coca' with a multimodal_cfg, 'siglip' with an init_logit_bias, else
  'clip'. `timm_trunk` describes a timm vision tower without building one by name.
  """
  if family is None:
    family = ("coca" if "multimodal_cfg" in oc else
              "siglip" if oc.get("init_logit_bias") is not None else "clip")
  module = config_lib.load_module(os.path.join(CONFIG_DIR, f"{family}.py"))
  common = _common()
  quick_gelu = oc.get("quick_gelu", False)
  v, t = oc["vision_cfg"], oc["text_cfg"]
  vision = (timm_vision_fields(v, timm_trunk) if v.get("timm_model_name") else
            vision_fields(v, quick_gelu, attentional_pool=family == "coca"))
  text = text_fields(t, quick_gelu)
  if family == "coca":
    if not t.get("embed_cls", False):
      raise ValueError("an open_clip CoCa text tower must have embed_cls=True")
    mm = oc["multimodal_cfg"]
    _check_supported(mm, "multimodal_cfg")
    if _norm_eps(v) != 1e-5:
      # open_clip's AttentionalPooler ignores norm_kwargs; ours shares the vision tower's eps.
      raise ValueError("CoCa vision norm_kwargs are not supported")
    dec_width = mm.get("width", 512)
    m = module.model(
        embed_dim=oc["embed_dim"], vision=common.vit(**vision), text=common.text(**text),
        decoder=module.decoder(vocab_size=t.get("vocab_size", 49408), width=dec_width,
                               depth=mm.get("layers", 12), num_heads=mm.get("heads", 8),
                               mlp_dim=_mlp_dim(dec_width, mm.get("mlp_ratio", 4)),
                               activation="quick_gelu" if quick_gelu else "gelu",
                               norm_eps=_norm_eps(mm)),
        pooler_heads=v.get("attn_pooler_heads", 8),
        pooler_queries=v.get("attn_pooler_queries", 256))
  else:
    m = module.model(embed_dim=oc["embed_dim"], vision=common.vit(**vision),
                     text=common.text(**text))
    if oc.get("init_logit_bias") is not None:
      m.init_logit_bias = float(oc["init_logit_bias"])
  if oc.get("init_logit_scale") is not None:
    m.init_logit_scale = float(oc["init_logit_scale"])
  return m

