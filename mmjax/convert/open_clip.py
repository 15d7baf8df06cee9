"""open_clip CLIP / SigLIP (timm vision tower) / CoCa state dicts <-> mmjax params, both ways.

    params = to_mmjax(model.state_dict(), config.model)          # torch tensors or numpy
    state = from_mmjax(params, config.model)                      # numpy, open_clip's keys

The mapping is one-to-one and strict: every state-dict key is used exactly once and every
parameter of ours is produced, otherwise `common.KeyMismatchError` names the offending keys.
`config.model` is our model block (configs/clip.py, siglip.py, coca.py); `open_clip_config`
builds it from an open_clip model-config dict. Which torch layout a tower has (open_clip's own
ViT or a timm trunk; CLIP's top-level text tower or CustomTextCLIP's `text.`) is a `Layout`,
inferred from the family unless given.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

import numpy as np

from mmjax.convert import common
from mmjax.convert import torch_layers as T
from mmjax.convert.common import Rule

# Names of scanned layer stacks in our modules (layers.stack_layers `name=`).
STACK_NAMES = ("blocks", "layers")


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where open_clip keeps the towers.

  Attributes:
    timm_vision: the image tower is a timm VisionTransformer under `visual.trunk`
      (SigLIP) rather than open_clip's VisionTransformer under `visual`.
    text_prefix: '' for CLIP's top-level text tower, 'text.' for CustomTextCLIP and CoCa.
  """
  timm_vision: bool = False
  text_prefix: str = ""

  @classmethod
  def infer(cls, model_config: Any) -> "Layout":
    """open_clip's layout for one of our families: SigLIP is timm + CustomTextCLIP."""
    family = model_config.family
    if family == "clip":
      return cls(timm_vision=False, text_prefix="")
    if family == "siglip":
      return cls(timm_vision=True, text_prefix="text.")
    if family == "coca":
      return cls(timm_vision=False, text_prefix="text.")
    raise ValueError(f"no open_clip layout for model family {family!r}")

  @classmethod
  def from_open_clip(cls, oc_config: Mapping[str, Any]) -> "Layout":
    """The layout an open_clip model-config dict builds."""
    custom = bool(oc_config.get("custom_text")) or "multimodal_cfg" in oc_config
    return cls(timm_vision=bool(oc_config["vision_cfg"].get("timm_model_name")),
               text_prefix="text." if custom else "")


# ---- Towers -----------------------------------------------------------------------------------

def _mlp(ours: str, theirs: str, fc1: str, fc2: str) -> list[Rule]:
  return T.linear(f"{ours}/fc1", f"{theirs}.{fc1}") + T.linear(f"{ours}/fc2", f"{theirs}.{fc2}")


def resblock(ours: str, theirs: str, heads: int) -> list[Rule]:
  """open_clip ResidualAttentionBlock <-> our pre-LN TransformerBlock."""
  return (T.layernorm(f"{ours}/ln1", f"{theirs}.ln_1") + T.torch_mha(f"{ours}/attn",
                                                                      f"{theirs}.attn", heads)
          + T.layernorm(f"{ours}/ln2", f"{theirs}.ln_2")
          + _mlp(f"{ours}/mlp", f"{theirs}.mlp", "c_fc", "c_proj"))


def _projection(ours: str, theirs: str, bias: bool) -> list[Rule]:
  """A projection open_clip stores as a Parameter [in, out] (no bias) or an nn.Linear (bias)."""
  if bias:
    return T.linear(ours, theirs)
  return [T.copy(f"{ours}/kernel", theirs)]


def vit_rules(ours: str, theirs: str, vision: Any, projects: bool) -> list[Rule]:
  """open_clip VisionTransformer (`visual.`) <-> our ViT; `projects`: has `proj`.

  With pool='none' (CoCa) ln_post and the projection belong to the CoCa module, not the tower.
  """
  rules = T.conv(f"{ours}/patch_embed", f"{theirs}.conv1", bias=vision.patch_bias)
  rules += [T.copy(f"{ours}/cls", f"{theirs}.class_embedding"),
            T.copy(f"{ours}/posemb", f"{theirs}.positional_embedding")]
  if vision.ln_pre:
    rules += T.layernorm(f"{ours}/ln_pre", f"{theirs}.ln_pre")
  for i in range(vision.depth):
    rules += resblock(f"{ours}/blocks_{i}", f"{theirs}.transformer.resblocks.{i}",
                      vision.num_heads)
  if vision.pool != "none":
    rules += T.layernorm(f"{ours}/ln_post", f"{theirs}.ln_post")
  if projects:
    rules += _projection(f"{ours}/proj", f"{theirs}.proj", vision.proj_bias)
  return rules


def timm_vit_rules(ours: str, theirs: str, vision: Any, projects: bool) -> list[Rule]:
  """open_clip TimmModel around a timm VisionTransformer (`visual.`) <-> our ViT."""
  trunk = f"{theirs}.trunk"
  rules = T.conv(f"{ours}/patch_embed", f"{trunk}.patch_embed.proj", bias=vision.patch_bias)
  rules.append(T.leading_ones(f"{ours}/posemb", f"{trunk}.pos_embed", 1))
  if vision.class_token:
    rules.append(T.leading_ones(f"{ours}/cls", f"{trunk}.cls_token", 2))
  if vision.ln_pre:
    rules += T.layernorm(f"{ours}/ln_pre", f"{trunk}.norm_pre")
  heads = vision.num_heads
  for i in range(vision.depth):
    o, t = f"{ours}/blocks_{i}", f"{trunk}.blocks.{i}"
    rules += (T.layernorm(f"{o}/ln1", f"{t}.norm1") + T.timm_attention(f"{o}/attn", f"{t}.attn",
                                                                        heads)
              + T.layernorm(f"{o}/ln2", f"{t}.norm2") + _mlp(f"{o}/mlp", f"{t}.mlp", "fc1", "fc2"))
  rules += T.layernorm(f"{ours}/ln_post", f"{trunk}.norm")
  if vision.pool == "map":
    o, t = f"{ours}/map_head", f"{trunk}.attn_pool"
    rules.append(T.copy(f"{o}/probe", f"{t}.latent"))
    rules += T.head_projection(f"{o}/attn/query", f"{t}.q.weight", f"{t}.q.bias", heads)
    rules += T.fused_projection(f"{o}/attn", ("key", "value"), f"{t}.kv.weight", f"{t}.kv.bias",
                                heads)
    rules += T.out_projection(f"{o}/attn/out", f"{t}.proj.weight", f"{t}.proj.bias", heads)
    rules += T.layernorm(f"{o}/ln", f"{t}.norm") + _mlp(f"{o}/mlp", f"{t}.mlp", "fc1", "fc2")
  if projects:  # TimmModel's head: Dropout + Linear (timm_proj='linear').
    rules += T.linear(f"{ours}/proj", f"{theirs}.head.proj", bias=vision.proj_bias)
  return rules


def text_rules(ours: str, theirs: str, text: Any, projects: bool, embed_cls: bool) -> list[Rule]:
  """open_clip TextTransformer (keys prefixed by `theirs`) <-> our TextTransformer."""
  rules = [T.embedding(f"{ours}/token_embed", f"{theirs}token_embedding"),
           T.copy(f"{ours}/posemb", f"{theirs}positional_embedding")]
  if embed_cls:
    rules.append(T.copy(f"{ours}/cls", f"{theirs}cls_emb"))
  for i in range(text.depth):
    rules += resblock(f"{ours}/blocks_{i}", f"{theirs}transformer.resblocks.{i}", text.num_heads)
  rules += T.layernorm(f"{ours}/ln_final", f"{theirs}ln_final")
  if projects:
    rules += _projection(f"{ours}/proj", f"{theirs}text_projection", text.proj_bias)
  return rules


def _projects(tower: Any, embed_dim: Optional[int]) -> bool:
  return embed_dim is not None and tower.get("project", True)


# ---- Whole models -----------------------------------------------------------------------------

def two_tower_rules(model: Any, layout: Layout) -> list[Rule]:
  """CLIP / SigLIP (open_clip CLIP or CustomTextCLIP) <-> our TwoTower."""
  vit = timm_vit_rules if layout.timm_vision else vit_rules
  rules = vit("image", "visual", model.vision, _projects(model.vision, model.embed_dim))
  rules += text_rules("text", layout.text_prefix, model.text,
                      _projects(model.text, model.embed_dim), embed_cls=False)
  rules.append(T.scalar("logit_scale", "logit_scale"))
  if model.init_logit_bias is not None:
    rules.append(T.scalar("logit_bias", "logit_bias"))
  return rules


def coca_rules(model: Any, layout: Layout) -> list[Rule]:
  """open_clip CoCa <-> our CoCa."""
  if layout.timm_vision:
    raise ValueError("open_clip CoCa with a timm vision tower is not supported")
  vision = dict(model.vision, pool="none")
  rules = vit_rules("image", "visual", _Fields(vision), projects=False)
  pool, heads = "visual.attn_pool", model.pooler_heads
  rules.append(T.copy("image_pooler/query", f"{pool}.query"))
  rules += T.torch_mha("image_pooler/attn", f"{pool}.attn", heads,
                       same_dims=model.vision.width == model.embed_dim)
  rules += T.layernorm("image_pooler/ln_q", f"{pool}.ln_q")
  rules += T.layernorm("image_pooler/ln_k", f"{pool}.ln_k")
  rules += T.layernorm("image_ln_post", "visual.ln_post")
  rules.append(T.copy("image_proj/kernel", "visual.proj"))
  rules += text_rules("text", layout.text_prefix, model.text, projects=True, embed_cls=True)
  dec = model.decoder
  for i in range(dec.depth):
    o, t = f"decoder/layers_{i}", "text_decoder"
    rules += resblock(f"{o}/self_block", f"{t}.resblocks.{i}", dec.num_heads)
    c = f"{t}.cross_attn.{i}"
    rules += (T.layernorm(f"{o}/cross_block/ln_q", f"{c}.ln_1")
              + T.layernorm(f"{o}/cross_block/ln_kv", f"{c}.ln_1_kv")
              + T.torch_mha(f"{o}/cross_block/attn", f"{c}.attn", dec.num_heads)
              + T.layernorm(f"{o}/cross_block/ln2", f"{c}.ln_2")
              + _mlp(f"{o}/cross_block/mlp", f"{c}.mlp", "c_fc", "c_proj"))
  rules += T.layernorm("decoder/ln_final", "text_decoder.ln_final")
  rules.append(T.copy("decoder/lm_head/kernel", "text_decoder.text_projection"))
  rules.append(T.scalar("logit_scale", "logit_scale"))
  return rules


class _Fields(dict):
  """A dict read by attribute, like the ConfigDict blocks the rule builders take."""
  __getattr__ = dict.__getitem__


def rules_for(model: Any, layout: Optional[Layout] = None) -> list[Rule]:
  """The conversion rules of `model` (our config.model block) in `layout` (default: inferred)."""
  if model.text.get("kind", "transformer") != "transformer":
    raise ValueError(f"config model.text.kind={model.text.get('kind')!r} (LiT's BERT tower) "
                     "has no open_clip layout; only text.kind='transformer' towers convert")
  layout = layout or Layout.infer(model)
  if model.family in ("clip", "siglip"):
    return two_tower_rules(model, layout)
  if model.family == "coca":
    return coca_rules(model, layout)
  raise ValueError(f"no open_clip converter for model family {model.family!r}")


def to_mmjax(state_dict: Mapping[str, Any], model: Any,
             layout: Optional[Layout] = None) -> dict[str, Any]:
  """open_clip state dict (torch tensors or numpy) -> our params tree (numpy, unboxed).

  Arrays keep their dtype. Scanned models (model.scan) get their layers stacked under `blocks`.
  """
  flat = common.apply_to_ours(rules_for(model, layout), common.state_dict_to_numpy(state_dict),
                              "open_clip state dict")
  if model.scan:
    flat = common.stack_layers(flat, STACK_NAMES)
  return common.unflatten(flat)


def from_mmjax(params: Mapping[str, Any], model: Any,
               layout: Optional[Layout] = None) -> dict[str, np.ndarray]:
  """Our params tree (boxed or not, scanned or not) -> open_clip state dict (numpy)."""
  flat = common.flatten(params)
  if model.scan:
    flat = common.unstack_layers(flat, STACK_NAMES)
  return common.apply_to_theirs(rules_for(model, layout), flat, "mmjax params")
