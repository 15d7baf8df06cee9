"""open_flamingo (helpers.py, flamingo.py) state dicts <-> mmjax resampler, gated xattn, Flamingo.

    resampler_rules('resampler', 'perceiver.', cfg.resampler)    # PerceiverResampler
    gated_rules('gated', 'block.', cfg.xattn)                     # GatedCrossAttentionBlock
    params = to_mmjax(flamingo.state_dict(), cfg)                # config.model of a Flamingo
    state = from_mmjax(params, cfg)                              # the Flamingo's state_dict keys

Layouts: PerceiverResampler: latents, frame_embs (our time_embed), layers.i.0 (PerceiverAttention:
norm_media, norm_latents, to_q, to_kv fused [2 * inner, D] = key then value, to_out), layers.i.1
(FeedForward: .0 LayerNorm, .1 Linear, .3 Linear; no biases), norm. GatedCrossAttentionBlock:
attn.norm / to_q / to_kv / to_out, attn_gate [1], ff.0/1/3, ff_gate [1]. open_flamingo's
`media_time_embs` and a vision width that differs from the resampler's (our media_proj) have no
counterpart and are refused.

A Flamingo checkpoint (open_flamingo's `Flamingo.state_dict()`): `vision_encoder.*` (open_clip
VisionTransformer; mapped by mmjax.convert.open_clip), `perceiver.*`, and `lang_encoder.*`, the HF
decoder (Llama `model.layers`, GPT-2 `transformer.h`; mapped by hf_lm) whose layer i is wrapped
as `<layers>.i.decoder_layer.*` with `<layers>.i.gated_cross_attn_layer.*` when a gated block
precedes it. torch also lists the same tensors under the aliases
`lang_encoder.old_decoder_blocks.i.*` and `lang_encoder.gated_cross_attn_layers.i.*`: on import
they must equal the canonical keys, on export they are written too (so
`load_state_dict(strict=True)` takes the result). The new tokens (<image>, <|endofchunk|>,
<PAD>) are the last rows of the resized embedding (lm.num_new_tokens).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from mmjax.convert import common
from mmjax.convert import hf_lm
from mmjax.convert import open_clip as oc
from mmjax.convert import torch_layers as T
from mmjax.convert.common import Rule
from mmjax.models import lm as lm_lib
from mmjax.models import xattn as xattn_lib

RESAMPLER_STACK = "layers"
_ALIASES = (("old_decoder_blocks", "decoder_layer"),
            ("gated_cross_attn_layers", "gated_cross_attn_layer"))
_LM_LAYERS = {"llama": "model.layers", "gpt2": "transformer.h"}


def _feed_forward(ours: str, theirs: str) -> list[Rule]:
  """open_flamingo FeedForward (LayerNorm, Linear, GELU, Linear) <-> our FeedForward."""
  return (T.layernorm(f"{ours}/norm", f"{theirs}.0")
          + T.linear(f"{ours}/fc1", f"{theirs}.1", bias=False)
          + T.linear(f"{ours}/fc2", f"{theirs}.3", bias=False))


def _attention(ours: str, theirs: str, heads: int) -> list[Rule]:
  """to_q / fused to_kv / to_out (no biases) <-> our query / key + value / out."""
  return (T.head_projection(f"{ours}/query", f"{theirs}.to_q.weight", None, heads)
          + T.fused_projection(ours, ("key", "value"), f"{theirs}.to_kv.weight", None, heads)
          + T.out_projection(f"{ours}/out", f"{theirs}.to_out.weight", None, heads))


_REQUIRED = object()


def _get(cfg: Any, key: str, default: Any = _REQUIRED) -> Any:
  """A field of a config dataclass, dict or ConfigDict; `default` when given and it is absent
  (a field added since the config was saved)."""
  mapping = isinstance(cfg, Mapping) or hasattr(cfg, "to_dict")
  if default is _REQUIRED:
    return cfg[key] if mapping else getattr(cfg, key)
  return cfg.get(key, default) if mapping else getattr(cfg, key, default)


def _check_activation(activation: str, where: str) -> None:
  if activation != "gelu":
    raise ValueError(f"{where}.activation={activation!r}: open_flamingo's FeedForward uses exact "
                     "GELU ('gelu')")


def resampler_rules(ours: str, theirs: str, cfg: Any) -> list[Rule]:
  """PerceiverResampler (keys under `theirs`, e.g. 'perceiver.') <-> our resampler (`ours`)."""
  _check_activation(_get(cfg, "activation"), "resampler")
  # Configs saved before the field existed have no spatial embeddings either.
  spatial = _get(cfg, "max_patches", 0)
  if spatial:
    raise ValueError(f"resampler.max_patches={spatial}: open_flamingo's PerceiverResampler has "
                     "no spatial embeddings; set it to 0")
  rules = [T.copy(f"{ours}/latents", f"{theirs}latents")]
  if _get(cfg, "max_frames"):
    rules.append(T.copy(f"{ours}/time_embed", f"{theirs}frame_embs"))
  for i in range(_get(cfg, "depth")):
    o, t = f"{ours}/{RESAMPLER_STACK}_{i}", f"{theirs}layers.{i}"
    rules += T.layernorm(f"{o}/attn/norm_media", f"{t}.0.norm_media")
    rules += T.layernorm(f"{o}/attn/norm_latents", f"{t}.0.norm_latents")
    rules += _attention(f"{o}/attn", f"{t}.0", _get(cfg, "num_heads"))
    rules += _feed_forward(f"{o}/ff", f"{t}.1")
  return rules + T.layernorm(f"{ours}/norm", f"{theirs}norm")


def gated_rules(ours: str, theirs: str, cfg: Any) -> list[Rule]:
  """GatedCrossAttentionBlock (keys under `theirs`, e.g. 'block.') <-> our gated block."""
  _check_activation(_get(cfg, "activation"), "xattn")
  return (T.layernorm(f"{ours}/attn/norm", f"{theirs}attn.norm")
          + _attention(f"{ours}/attn", f"{theirs}attn", _get(cfg, "num_heads"))
          + [T.copy(f"{ours}/attn_gate", f"{theirs}attn_gate"),
             T.copy(f"{ours}/ff_gate", f"{theirs}ff_gate")]
          + _feed_forward(f"{ours}/ff", f"{theirs}ff"))


# ---- Whole Flamingo ----------------------------------------------------------------------------

def _layer_names(c: lm_lib.DecoderConfig, xattn: xattn_lib.XAttnConfig
                 ) -> tuple[dict[int, str], dict[int, str]]:
  """Our unrolled names of LM layer i's block and of the gated block before layer i."""
  blocks, gated = {}, {}
  for segment in lm_lib.layer_plan(c.depth, xattn):
    for r, indices in enumerate(lm_lib.segment_layers(segment)):
      if not segment.group_size:
        blocks[indices[0]] = f"{segment.name}_{r}"
        continue
      for j, i in enumerate(indices):
        blocks[i] = f"{segment.name}_{r}/block_{j}"
      gated[indices[-1]] = f"{segment.name}_{r}/gated"
  return blocks, gated


def _lm_rules(c: lm_lib.DecoderConfig, xattn: xattn_lib.XAttnConfig, ours: str,
              theirs: str) -> list[Rule]:
  """The Flamingo LM: hf_lm's rules with layer i moved to `<layers>.i.decoder_layer` and our
  layer-group names, plus each gated block at `<layers>.i.gated_cross_attn_layer`."""
  layers_key = theirs + _LM_LAYERS[hf_lm.architecture(c)]
  blocks, gated = _layer_names(c, xattn)
  their_layer = re.compile(rf"^{re.escape(layers_key)}\.(\d+)\.")
  our_layer = re.compile(r"^blocks_(\d+)/")

  def rename_ours(name):
    m = our_layer.match(name)
    name = f"{blocks[int(m[1])]}/{name[m.end():]}" if m else name
    return f"{ours}/{name}"

  def rename_theirs(key):
    return their_layer.sub(lambda m: f"{layers_key}.{m[1]}.decoder_layer.", key)

  rules = [Rule(tuple(rename_ours(n) for n in r.ours), tuple(rename_theirs(k) for k in r.theirs),
                r.to_ours, r.to_theirs) for r in hf_lm.rules(c, theirs)]
  for i, name in sorted(gated.items()):
    rules += gated_rules(f"{ours}/{name}", f"{layers_key}.{i}.gated_cross_attn_layer.", xattn)
  return rules


def _configs(model: Any) -> tuple[lm_lib.DecoderConfig, xattn_lib.XAttnConfig]:
  c = lm_lib.decoder_config(model.lm)
  x = lm_lib.config_from_dict(xattn_lib.XAttnConfig, model.xattn, "xattn")
  if model.resampler.width != model.vision.width:
    raise ValueError(f"resampler.width {model.resampler.width} != vision.width "
                     f"{model.vision.width}: open_flamingo has no media projection")
  return c, x


def flamingo_rules(model: Any, vision: bool = True) -> list[Rule]:
  """All rules of a Flamingo `config.model` (vision tower included unless `vision=False`)."""
  c, x = _configs(model)
  rules = []
  if vision:
    rules += oc.vit_rules("vision", "vision_encoder", model.vision,
                          projects=model.vision.output_dim is not None)
  rules += resampler_rules("resampler", "perceiver.", model.resampler)
  return rules + _lm_rules(c, x, "lm", "lang_encoder.")


def _stack_names(model: Any) -> list[str]:
  c, x = _configs(model)
  names = []
  if model.vision.scan:
    names.append("vision/blocks")
  if model.resampler.scan:
    names.append(f"resampler/{RESAMPLER_STACK}")
  if c.scan:
    names += [f"lm/{s.name}" for s in lm_lib.layer_plan(c.depth, x)]
  return names


def _stack(flat: common.Flat, names: list[str]) -> common.Flat:
  """Stacks `<tree>/<segment>_<i>/...` for the exact scanned paths in `names`."""
  out = dict(flat)
  for path in names:
    parent, _, stack = path.rpartition("/")
    part = {k[len(parent) + 1:]: out.pop(k) for k in list(out)
            if k.startswith(f"{parent}/{stack}_")}
    out.update({f"{parent}/{k}": v for k, v in common.stack_layers(part, [stack]).items()})
  return out


def _unstack(flat: common.Flat, names: list[str]) -> common.Flat:
  out = dict(flat)
  for path in names:
    parent, _, stack = path.rpartition("/")
    part = {k[len(parent) + 1:]: out.pop(k) for k in list(out)
            if k.startswith(f"{parent}/{stack}/")}
    out.update({f"{parent}/{k}": v for k, v in common.unstack_layers(part, [stack]).items()})
  return out


def _canonical(key: str, layers_key: str) -> str | None:
  """The canonical key of an alias key (None when `key` is no alias)."""
  for alias, wrapped in _ALIASES:
    m = re.match(rf"^lang_encoder\.{alias}\.(\d+)\.(.*)$", key)
    if m:
      return f"{layers_key}.{m[1]}.{wrapped}.{m[2]}"
  return None


def to_mmjax(state_dict: Mapping[str, Any], model: Any, vision: bool = True) -> dict[str, Any]:
  """open_flamingo Flamingo state dict -> our Flamingo params (numpy). `vision=False`: the
  checkpoint has no `vision_encoder.*` (e.g. only the trained parts) and none is returned."""
  c, _ = _configs(model)
  layers_key = "lang_encoder." + _LM_LAYERS[hf_lm.architecture(c)]
  state = dict(common.state_dict_to_numpy(state_dict))
  for key in list(state):
    canonical = _canonical(key, layers_key)
    if canonical is None:
      continue
    if canonical not in state or not np.array_equal(state[canonical], state[key]):
      raise ValueError(f"alias {key} does not equal {canonical}")
    del state[key]
  hf_lm.pop_tied_head(state, c, "lang_encoder.")
  flat = common.apply_to_ours(flamingo_rules(model, vision), state, "open_flamingo state dict")
  return common.unflatten(_stack(flat, _stack_names(model)))


def from_mmjax(params: Mapping[str, Any], model: Any, vision: bool = True,
               aliases: bool = True) -> dict[str, np.ndarray]:
  """Our Flamingo params -> open_flamingo's Flamingo state dict (numpy), with torch's alias
  keys and the tied lm_head when `aliases` (what `Flamingo.state_dict()` lists)."""
  c, _ = _configs(model)
  flat = _unstack(common.flatten(params), _stack_names(model))
  if not vision:
    flat = {k: v for k, v in flat.items() if not k.startswith("vision/")}
  state = common.apply_to_theirs(flamingo_rules(model, vision), flat, "mmjax Flamingo params")
  if aliases:
    hf_lm.add_tied_head(state, c, "lang_encoder.")
    layers_key = "lang_encoder." + _LM_LAYERS[hf_lm.architecture(c)]
    for key in list(state):
      for alias, wrapped in _ALIASES:
        m = re.match(rf"^{re.escape(layers_key)}\.(\d+)\.{wrapped}\.(.*)$", key)
        if m:
          state[f"lang_encoder.{alias}.{m[1]}.{m[2]}"] = state[key]
  return state


# ---- Single modules -----------------------------------------------------------------------------

def _module_to_mmjax(rules: list[Rule], state_dict: Mapping[str, Any], scan: bool,
                     stack: str, what: str) -> dict[str, Any]:
  flat = common.apply_to_ours(rules, common.state_dict_to_numpy(state_dict), what)
  flat = {k.split("/", 1)[1]: v for k, v in flat.items()}  # drop the placeholder root
  if scan:
    flat = common.stack_layers(flat, [stack])
  return common.unflatten(flat)


def _module_from_mmjax(rules: list[Rule], params: Mapping[str, Any], scan: bool, stack: str,
                       what: str) -> dict[str, np.ndarray]:
  flat = common.flatten(params)
  if scan:
    flat = common.unstack_layers(flat, [stack])
  return common.apply_to_theirs(rules, {f"m/{k}": v for k, v in flat.items()}, what)


def resampler_to_mmjax(state_dict: Mapping[str, Any], cfg: Any) -> dict[str, Any]:
  """A PerceiverResampler's own state dict -> our PerceiverResampler params (cfg: its fields)."""
  return _module_to_mmjax(resampler_rules("m", "", cfg), state_dict, _get(cfg, "scan"),
                          RESAMPLER_STACK, "PerceiverResampler state dict")


def resampler_from_mmjax(params: Mapping[str, Any], cfg: Any) -> dict[str, np.ndarray]:
  """Our PerceiverResampler params -> open_flamingo PerceiverResampler state dict."""
  return _module_from_mmjax(resampler_rules("m", "", cfg), params, _get(cfg, "scan"),
                            RESAMPLER_STACK, "mmjax resampler params")


def gated_to_mmjax(state_dict: Mapping[str, Any], cfg: Any) -> dict[str, Any]:
  """A GatedCrossAttentionBlock's state dict -> our GatedCrossAttentionBlock params."""
  return _module_to_mmjax(gated_rules("m", "", cfg), state_dict, False, "",
                          "GatedCrossAttentionBlock state dict")


def gated_from_mmjax(params: Mapping[str, Any], cfg: Any) -> dict[str, np.ndarray]:
  """Our GatedCrossAttentionBlock params -> open_flamingo GatedCrossAttentionBlock state dict."""
  return _module_from_mmjax(gated_rules("m", "", cfg), params, False, "",
                            "mmjax gated xattn params")
