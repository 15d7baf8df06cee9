"""The connector zoo: how the vision features reach the LM (`config.model.connector`).

Every connector maps vision features [B, M, T, N, Dv] (M media items, T frames, N tokens per
frame) to visual tokens [B, M, n, D] that either feed Flamingo's gated cross-attention
(`model.fusion='xattn'`) or are spliced into the LM's input sequence (`'decoder_only'`,
mmjax/models/splice.py), so any connector works with either fusion.

| connector    | file                  | tokens per image n     | paper                       |
|--------------|-----------------------|------------------------|-----------------------------|
| `resampler`  | models/resampler.py   | num_latents            | Flamingo Perceiver resampler|
| `mlp`        | connectors/mlp.py     | T * N (every patch)    | LLaVA-1.5 2-layer GELU MLP  |
| `avgpool`    | connectors/avgpool.py | T * num_tokens         | MM1 average pooling         |
| `qwen_xattn` | connectors/qwen_xattn.py | num_queries         | Qwen-VL 1-layer cross-attn  |
| `qformer`    | connectors/qformer.py | bert.num_queries       | BLIP-2 Q-Former             |
| `transformer`| connectors/transformer.py | T * N (every patch) | Flamingo Table 3 "Transformer" |

The config section of a connector is `config.model.<name>`; its `width` is the output width D.
Connectors see the ViT's final-normed patch tokens (no class token, LLaVA's
`select_feature='patch'`), a square grid that the grid-based connectors rely on. Logical axes: a weight may name `embed`
only once, so projections from the vision width leave their input axis unnamed (as the
resampler's `media_proj` does) and shard on the output `embed`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn

from mmjax.models import layers
from mmjax.models import resampler as resampler_lib
from mmjax.models.connectors import avgpool, mlp, qformer, qwen_xattn, transformer

CONNECTORS: dict[str, type[nn.Module]] = {
    "resampler": resampler_lib.PerceiverResampler,
    "mlp": mlp.MlpProjector,
    "avgpool": avgpool.AvgPoolProjector,
    "qwen_xattn": qwen_xattn.QwenResampler,
    "qformer": qformer.QFormerConnector,
    "transformer": transformer.TransformerConnector,
}


def check_kind(kind: str) -> str:
  """`kind` if it names a connector, else a clear error naming the config field."""
  if kind not in CONNECTORS:
    raise ValueError(f"unknown model.connector {kind!r}; choose one of {sorted(CONNECTORS)}")
  return kind


def module_fields(cls: type, section: Any, where: str) -> dict[str, Any]:
  """Module fields from a config section: dtype names resolved, unknown keys named."""
  known = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
  fields = {k: (v.to_dict() if hasattr(v, "to_dict") else v) for k, v in dict(section).items()}
  unknown = sorted(set(fields) - known)
  if unknown:
    raise ValueError(f"unknown {where} field(s) {unknown}; known: {sorted(known)}")
  for key in ("dtype", "param_dtype"):
    if key in fields:
      fields[key] = layers.dtype_of(fields[key])
  if isinstance(fields.get("bert"), dict):
    bert = dict(fields["bert"])
    for key in ("dtype", "param_dtype"):
      if key in bert:
        bert[key] = layers.dtype_of(bert[key])
    unknown = sorted(set(bert) - ({f.name for f in dataclasses.fields(qformer.QFormer)}
                                  - {"parent", "name"}))
    if unknown:
      raise ValueError(f"unknown {where}.bert field(s) {unknown}")
    fields["bert"] = bert
  return fields


def build(kind: str, section: Any) -> nn.Module:
  """The connector module of `kind` from its config section (`config.model.<kind>`)."""
  cls = CONNECTORS[check_kind(kind)]
  return cls(**module_fields(cls, section, kind))


def output_width(kind: str, section: Any) -> int:
  """D, the width of the visual tokens the connector emits."""
  return int(section.width)


def tokens_per_media(kind: str, section: Any, num_patches: int, num_frames: int = 1) -> int:
  """n, the visual tokens per media item (what an image costs the LM in decoder-only fusion)."""
  check_kind(kind)
  if kind == "resampler":
    return int(section.num_latents)
  if kind in ("mlp", "transformer"):
    return num_frames * num_patches
  if kind == "avgpool":
    return num_frames * int(section.num_tokens)
  if kind == "qwen_xattn":
    return int(section.num_queries)
  return int(section.bert.num_queries)
