"""Flamingo (Alayrac et al. 2022): vision encoder -> Perceiver resampler -> LM with gated
cross-attention (XATTN-DENSE) blocks, trained on interleaved image-text sequences.

    media [B, M, T, H, W, 3] --ViT--> [B, M, T, N, Dv] --resampler--> [B, M, n, D]
    tokens [B, L] + media_locations [B, L] --DecoderLM with gated blocks--> logits

Parameter tree: `vision/` (mmjax.models.vit.ViT), `resampler/`, `lm/` (the decoder, with the
gated blocks inside its layer groups as `lm/<segment>/gated`, like open_flamingo's
`decoder_layer.gated_cross_attn_layer`) and the new tokens' `lm/new_embed` (+ `lm/new_unembed`).
The config's `freeze_vision` / `freeze_lm` decide `is_trainable`; the gated blocks, the
resampler and the new-token embeddings always train (DESIGN.md, "Flamingo semantics").

The family also runs the connector-zoo ablations (issue #12): `model.connector` swaps the
resampler for another connector (mmjax/models/connectors; its parameters under `connector/`,
always trainable), and `model.fusion='decoder_only'` drops the gated blocks and splices the
visual tokens into the LM's input after each `<image>` (mmjax/models/splice.py), LLaVA-style.
The defaults ('resampler', 'xattn') leave the parameter tree exactly as before.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from mmjax import losses
from mmjax import parallel as P
from mmjax.models import family as family_lib
from mmjax.models import layers
from mmjax.models import lm as lm_lib
from mmjax.models import connectors
from mmjax.models import resampler as resampler_lib
from mmjax.models import splice as splice_lib
from mmjax.models import vit as vit_lib
from mmjax.models import xattn as xattn_lib

Array = jax.Array


FUSIONS = ("xattn", "decoder_only")


class Flamingo(nn.Module):
  """The Flamingo network. `__call__(media, media_mask, tokens, media_locations)` -> logits.

  Attributes:
    vision: the vision encoder; its final-normed patch tokens (the class token excluded) feed
      the connector.
    resampler: the Perceiver resampler (the default connector, parameters under `resampler/`),
      or None when another connector is used.
    lm: the decoder LM, built with an `xattn` config (fusion 'xattn') or without (decoder-only).
    connector: any other connector (mmjax/models/connectors; parameters under `connector/`).
    fusion: 'xattn' (gated cross-attention) or 'decoder_only' (visual tokens spliced into the
      LM input after each `<image>`, mmjax/models/splice.py).
    tile_positions: AnyRes tile-position embeddings for the non-resampler connectors (the
      resampler's per-frame `time_embed` already is one): a learned `tile_embed`
      [tile_positions, Dv] row per tile index (0: thumbnail, 1 + r * cols + c: tile (r, c)),
      added to every token of that frame's vision features. 0 (default): none, no parameter.
  """
  vision: vit_lib.ViT
  resampler: Optional[resampler_lib.PerceiverResampler]
  lm: lm_lib.DecoderLM
  connector: Optional[nn.Module] = None
  fusion: str = "xattn"
  tile_positions: int = 0

  @nn.compact
  def encode_media(self, media: Array, train: bool = False,
                   tile_mask: Optional[Array] = None) -> Array:
    """[B, M, T, H, W, 3] pixels -> [B, M, n, D] visual tokens.

    `tile_mask` [B, M, T] (AnyRes): False at padded tiles, which the connector then ignores
    (attention connectors mask them as keys; per-tile ones emit zeros for them).
    """
    if media.ndim != 6:
      raise ValueError(f"Flamingo expects media [B, M, T, H, W, 3], got {media.shape}")
    b, m, t = media.shape[:3]
    _, tokens = self.vision(media.reshape(b * m * t, *media.shape[3:]), train=train)
    feats = tokens.reshape(b, m, t, *tokens.shape[1:])
    if self.tile_positions:
      if t > self.tile_positions:
        raise ValueError(f"media have {t} tiles (frames) but model.tile_positions is "
                         f"{self.tile_positions}")
      table = self.param("tile_embed", layers.with_axes(nn.initializers.normal(0.02), None,
                                                        P.EMBED),
                         (self.tile_positions, feats.shape[-1]), self.vision.param_dtype)
      feats = feats + table[:t][:, None, :].astype(feats.dtype)
    if self.resampler is not None:
      return self.resampler(feats, tile_mask)
    return self.connector(feats, tile_mask)

  def __call__(self, media: Optional[Array], media_mask: Optional[Array], tokens: Array,
               media_locations: Optional[Array], train: bool = False, *,
               cache: Optional[lm_lib.Cache] = None,
               expanded: bool = False,
               tile_mask: Optional[Array] = None) -> Array | tuple[Array, lm_lib.Cache]:
    """Logits [B, L, vocab + new tokens] (and the cache when one is given).

    `media` may be None only when decoding from a cache that a prefill filled with media (or,
    decoder-only, for text alone). `expanded` (decoder-only): logits of every position of the
    spliced sequence [B, L + M * n, V] instead of the text positions. `tile_mask` [B, M, T]:
    the AnyRes tiles that are real (batch key `tile_mask`; None: every frame is).
    """
    visual = None if media is None else self.encode_media(media, train, tile_mask)
    if self.fusion == "decoder_only":
      return self.lm(tokens, train, media_mask=media_mask, media_locations=media_locations,
                     cache=cache, visual=visual, expanded=expanded)
    return self.lm(tokens, train, media=visual, media_mask=media_mask,
                   media_locations=media_locations, cache=cache)


def _fields(cls: type, config: Any, where: str) -> dict[str, Any]:
  """Module fields from a ConfigDict, dtype names resolved, unknown keys named."""
  known = {f.name for f in dataclasses.fields(cls)} - {"parent", "name"}
  fields = dict(config)
  unknown = sorted(set(fields) - known)
  if unknown:
    raise ValueError(f"unknown {where} field(s) {unknown}; known: {sorted(known)}")
  for key in ("dtype", "param_dtype"):
    if key in fields:
      fields[key] = layers.dtype_of(fields[key])
  return fields


def lm_params_to_flamingo(lm_params: Any, lm_config: lm_lib.DecoderConfig,
                          xattn: xattn_lib.XAttnConfig, flamingo_lm_params: Any) -> dict:
  """A plain `DecoderLM`'s (unboxed) params placed into a Flamingo LM's layer layout.

  Loads a pretrained LM (e.g. SmolLM2) into Flamingo: the LM layers are regrouped around the
  gated blocks, which are taken from `flamingo_lm_params` (e.g. a fresh init). Both LMs must
  share `lm_config` (scan included).
  """
  out = {k: v for k, v in flamingo_lm_params.items()}
  for name, value in lm_params.items():
    if not name.startswith("blocks"):
      out[name] = value
  if lm_config.scan:
    layer = lambda i: jax.tree.map(lambda a: a[i], lm_params["blocks"])
  else:
    layer = lambda i: lm_params[f"blocks_{i}"]
  for segment in lm_lib.layer_plan(lm_config.depth, xattn):
    units = []
    for r, indices in enumerate(lm_lib.segment_layers(segment)):
      if not segment.group_size:
        units.append(layer(indices[0]))
        continue
      target = (jax.tree.map(lambda a, r=r: a[r], flamingo_lm_params[segment.name])
                if lm_config.scan else flamingo_lm_params[f"{segment.name}_{r}"])
      units.append({**target, **{f"block_{j}": layer(i) for j, i in enumerate(indices)}})
    if lm_config.scan:
      out[segment.name] = jax.tree.map(lambda *a: jnp.stack(a), *units)
    else:
      out.update({f"{segment.name}_{r}": unit for r, unit in enumerate(units)})
  return out


@family_lib.register("flamingo")
class FlamingoFamily(family_lib.ModelFamily):
  """Flamingo: next-token loss on interleaved sequences, freezing, and the decode API.

  Decode API (the media are encoded once, at prefill; each gated block caches their keys and
  values):
    cache = family.init_cache(batch_size, max_len)
    logits, cache = family.prefill(params, batch, cache, lengths=None)   # media + prompt
    logits, cache = family.decode_step(params, next_tokens[:, None], cache)
  """
  batch_keys = ("media", "media_mask", "tokens", "media_locations", "loss_mask", "tile_mask")

  def make_module(self, config: Any) -> Flamingo:
    self.lm_config = lm_lib.decoder_config(config.lm)
    # Workdirs written before the connector zoo have neither field: the Flamingo defaults.
    self.connector_kind = connectors.check_kind(config.get("connector", "resampler"))
    self.fusion = config.get("fusion", "xattn")
    if self.fusion not in FUSIONS:
      raise ValueError(f"unknown model.fusion {self.fusion!r}; choose one of {FUSIONS}")
    if self.connector_kind not in config:
      raise ValueError(f"model.connector={self.connector_kind!r} needs the config section "
                       f"model.{self.connector_kind}")
    self.connector_config = config[self.connector_kind]
    if self.fusion == "xattn":
      self.xattn_config = lm_lib.config_from_dict(xattn_lib.XAttnConfig, config.xattn, "xattn")
      self.xattn_config.gated_layers(self.lm_config.depth)  # validates the placement early
    else:
      self.xattn_config = None
      width = connectors.output_width(self.connector_kind, self.connector_config)
      if width != self.lm_config.width:
        raise ValueError(f"model.fusion='decoder_only' splices the visual tokens into the LM: "
                         f"model.{self.connector_kind}.width={width} must equal "
                         f"model.lm.width={self.lm_config.width}")
    # Workdirs written before AnyRes have no field: no tile-position embeddings.
    self.tile_positions = int(config.get("tile_positions", 0) or 0)
    if self.tile_positions < 0:
      raise ValueError(f"model.tile_positions must be >= 0, got {self.tile_positions}")
    if self.tile_positions and self.connector_kind == "resampler":
      raise ValueError("model.tile_positions adds tile-position embeddings before the "
                       "non-resampler connectors; the resampler's time_embed is its tile-position "
                       "embedding: set model.resampler.max_frames >= 1 + the largest AnyRes grid "
                       "and model.tile_positions=0")
    vision = vit_lib.ViT(**_fields(vit_lib.ViT, config.vision, "vision"))
    resampler, connector = None, None
    if self.connector_kind == "resampler":
      resampler = resampler_lib.PerceiverResampler(
          **_fields(resampler_lib.PerceiverResampler, config.resampler, "resampler"))
    else:
      connector = connectors.build(self.connector_kind, self.connector_config)
    return Flamingo(vision, resampler, lm_lib.DecoderLM(self.lm_config, self.xattn_config),
                    connector=connector, fusion=self.fusion, tile_positions=self.tile_positions)

  def adapt_init_source(self, dst: str, source: Any, target: Any) -> Any:
    """A plain LM run's parameters (e.g. `init_from=('lm=/runs/lm:',)`, the recipe's stage 2)
    regrouped into our LM's layout around the gated blocks, which keep their fresh values;
    our new-token rows stay as initialised too (the source LM has none)."""
    if dst != "lm" or self.xattn_config is None or not isinstance(source, dict):
      return source
    c = self.lm_config
    plain_layers = {"blocks"} if c.scan else {f"blocks_{i}" for i in range(c.depth)}
    source_layers = {k for k in source if k.startswith(("blocks", "groups", "xattn_"))}
    if source_layers != plain_layers:  # already our layout (or wrong; the shape check says)
      return source
    out = lm_params_to_flamingo(source, self.lm_config, self.xattn_config, target)
    return {**target, **out}

  def tokens_per_media(self, media_shape: tuple[int, ...]) -> int:
    """Visual tokens per media item for media of `media_shape` [B, M, T, H, W, 3]."""
    patch = self.config.vision.patch_size
    num_patches = (media_shape[3] // patch) * (media_shape[4] // patch)
    return connectors.tokens_per_media(self.connector_kind, self.connector_config, num_patches,
                                       media_shape[2])

  def token_budget(self, media_shape: tuple[int, ...]) -> dict[str, int]:
    """What one media item of `media_shape` [B, M, T, H, W, 3] costs (AnyRes: T = thumbnail +
    tiles): vision tokens encoded and LM visual tokens (positions spliced per `<image>` in
    decoder-only fusion, cross-attention keys per item with 'xattn')."""
    patch = self.config.vision.patch_size
    per_frame = (media_shape[3] // patch) * (media_shape[4] // patch)
    return {"frames": int(media_shape[2]), "vision_tokens": int(media_shape[2]) * per_frame,
            "lm_tokens": self.tokens_per_media(media_shape)}

  def module_inputs(self, batch: family_lib.Batch) -> dict[str, Array]:
    inputs = {k: batch[k] for k in ("media", "media_mask", "tokens", "media_locations")}
    if batch.get("tile_mask") is not None:
      inputs["tile_mask"] = batch["tile_mask"]
    return inputs

  def dummy_batch(self, batch_size: int) -> dict[str, Array]:
    size = self.config.vision.image_size
    length = min(16, self.lm_config.max_len)
    return {"media": jnp.zeros((batch_size, 1, 1, size, size, 3), jnp.float32),
            "media_mask": jnp.ones((batch_size, 1), jnp.bool_),
            "tokens": jnp.zeros((batch_size, length), jnp.int32),
            "media_locations": jnp.zeros((batch_size, length), jnp.bool_),
            "loss_mask": jnp.ones((batch_size, length), jnp.float32)}

  # ---- Components and freezing -----------------------------------------------------------------

  def param_groups(self) -> dict[str, list[str]]:
    """Ordered {component: [parameter path prefixes]} (vision, resampler, gated, lm, new tokens)."""
    c = self.lm_config
    lm, gated = ["lm/embed"], []
    if c.positions == "learned":
      lm.append("lm/pos_embed")
    for segment in lm_lib.layer_plan(c.depth, self.xattn_config):
      names = ([segment.name] if c.scan else
               [f"{segment.name}_{r}" for r in range(segment.repeat)])
      for name in names:
        if segment.group_size:
          gated.append(f"lm/{name}/gated")
          lm.extend(f"lm/{name}/block_{j}" for j in range(segment.group_size))
        else:
          lm.append(f"lm/{name}")
    lm.append("lm/final_norm")
    if not c.tie_embeddings:
      lm.append("lm/unembed")
    new_tokens = []
    if c.num_new_tokens:
      new_tokens.append("lm/new_embed")
      if not c.tie_embeddings:
        new_tokens.append("lm/new_unembed")
    connector = "resampler" if self.connector_kind == "resampler" else "connector"
    # The AnyRes tile-position table trains with the connector it feeds.
    connector_paths = [connector] + (["tile_embed"] if self.tile_positions else [])
    return {"vision": ["vision"], connector: connector_paths, "gated_xattn": gated, "lm": lm,
            "new_token_embeddings": new_tokens}

  def _group_trainable(self, group: str) -> bool:
    if group == "vision":
      return not self.config.freeze_vision
    if group == "lm":
      return not self.config.freeze_lm
    return True

  def is_trainable(self, path: str) -> bool:
    """Whether every parameter at or under `path` ('a/b/c') trains under the freeze flags."""
    relevant = [group for group, prefixes in self.param_groups().items() for p in prefixes
                if p == path or p.startswith(path + "/") or path.startswith(p + "/")]
    if not relevant:
      raise ValueError(f"parameter path {path!r} belongs to no Flamingo component")
    return all(self._group_trainable(group) for group in relevant)

  def trainable_mask(self, params: Any) -> Any:
    """A pytree of bools like `params` (for optax.masked / multi_transform)."""
    flat = traverse_util.flatten_dict(params, sep="/")
    return traverse_util.unflatten_dict({k: self.is_trainable(k) for k in flat}, sep="/")

  def stop_frozen_gradients(self, params: Any) -> Any:
    """`params` with stop_gradient on the frozen leaves, so no gradient (or its compute) reaches
    the frozen towers; activations still backpropagate through the frozen LM to the gates."""
    flat = traverse_util.flatten_dict(params, sep="/")
    return traverse_util.unflatten_dict(
        {k: v if self.is_trainable(k) else jax.lax.stop_gradient(v) for k, v in flat.items()},
        sep="/")

  # ---- Training and inference ------------------------------------------------------------------

  def predict_logits(self, params: Any, batch: family_lib.Batch) -> Array:
    """[B, L, vocab + new tokens] next-token logits of full interleaved sequences."""
    return self.apply(params, batch)

  def loss(self, params: Any, batch: family_lib.Batch, rng: Optional[Array] = None,
           train: bool = True) -> tuple[Array, family_lib.Metrics]:
    logits = self.apply(self.stop_frozen_gradients(params), batch, rng, train=train)
    return losses.next_token_loss(logits, batch["tokens"], batch["loss_mask"])

  def init_cache(self, batch_size: int, max_len: int) -> lm_lib.Cache:
    """An empty KV cache for `max_len` text positions (prefill adds the media keys/values)."""
    return lm_lib.init_cache(self.lm_config, self.xattn_config, batch_size, max_len)

  def prefill(self, params: Any, batch: family_lib.Batch, cache: lm_lib.Cache,
              lengths: Optional[Array] = None) -> tuple[Array, lm_lib.Cache]:
    """Encodes the media and runs the (right-padded) prompt into the cache.

    `batch` holds media, media_mask, tokens and media_locations. With `lengths` [B], row b's
    next decode step writes at position lengths[b], over its padding. Decoder-only: the cache
    grows by the M * n visual positions (so `init_cache(B, prompt + new tokens)` still
    suffices) and the write index moves to each row's expanded length.
    """
    if self.fusion == "decoder_only":
      return self._prefill_decoder_only(params, batch, cache, lengths)
    logits, cache = self.module.apply({"params": params}, **self.module_inputs(batch),
                                      cache=cache)
    return logits, lm_lib.set_cache_lengths(cache, lengths)

  def _prefill_decoder_only(self, params: Any, batch: family_lib.Batch, cache: lm_lib.Cache,
                            lengths: Optional[Array]) -> tuple[Array, lm_lib.Cache]:
    media = batch["media"]
    b, length = batch["tokens"].shape
    n = self.tokens_per_media(media.shape)
    extra = media.shape[1] * n
    size = jax.tree.leaves(cache["layers"])[0].shape[2] + extra
    if size > self.lm_config.max_len:
      raise ValueError(f"the cache with the visual tokens needs {size} positions, more than "
                       f"lm.max_len {self.lm_config.max_len}")
    pad = lambda a: jnp.pad(a, [(0, 0), (0, 0), (0, extra)] + [(0, 0)] * (a.ndim - 3))
    cache = dict(cache, layers=jax.tree.map(pad, cache["layers"]))
    logits, cache = self.module.apply({"params": params}, **self.module_inputs(batch),
                                      cache=cache)
    media_mask = batch.get("media_mask")
    if media_mask is None:
      media_mask = jnp.ones(media.shape[:2], jnp.bool_)
    lay = splice_lib.layout(batch["media_locations"], media_mask, n)
    lengths = jnp.full((b,), length, jnp.int32) if lengths is None else lengths
    return logits, lm_lib.set_cache_lengths(cache, splice_lib.expanded_lengths(lengths, lay))

  def decode_step(self, params: Any, tokens: Array, cache: lm_lib.Cache,
                  media_locations: Optional[Array] = None) -> tuple[Array, lm_lib.Cache]:
    """One step from the cache: tokens [B, 1] -> logits [B, 1, vocab] and the advanced cache.

    (Decoder-only: a generated `<image>` gets no visual tokens; media enter at prefill only.)
    """
    return self.module.apply({"params": params}, None, None, tokens, media_locations,
                             cache=cache)
