"""Decoder-only fusion (LLaVA / Qwen-VL / MM1): the visual tokens of each media item are spliced
into the LM's input sequence right after its `<image>` token.

    tokens      [BOS] <image> a  red  star            (L = 5, one image of n = 3 tokens)
    expanded    [BOS] <image> v1 v2 v3 a red star pad pad ...   (L' = L + M * n)

Sequence growth: the model expands inside the forward pass to the static length L' = L + M * n
(M media slots, n tokens each), so shapes stay static under jit and the batch contract (tokens,
media_locations, loss_mask over L text positions) is the same for both fusions: the data
pipeline needs no placeholder positions and one dataset feeds either fusion. Rows with fewer
images than slots end in unused positions, which causal attention keeps from affecting the real
ones. The logits come back at the text positions ([B, L, V]): the logit read for text position t
is the one at the last expanded position belonging to t (the last visual token when t is an
`<image>`), so "logits[t] predicts tokens[t + 1]" and `losses.next_token_loss` hold unchanged;
on the expanded sequence this is the loss with loss_mask 0 on every visual position
(`expand_loss_mask`). The `<image>` token itself stays in the sequence as the marker (Qwen-VL's
`<img>`); LLaVA replaces it, which differs only by that one extra token.

An `<image>` token beyond the M media slots, or pointing at a slot whose media_mask is False,
gets no visual tokens.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

Array = jax.Array


@functools.partial(jax.tree_util.register_dataclass,
                   data_fields=["text_pos", "read_pos", "visual_start"],
                   meta_fields=["tokens_per_media", "length"])
@dataclasses.dataclass(frozen=True)
class Layout:
  """Where everything goes in the expanded sequence.

  Attributes:
    text_pos: [B, L] expanded position of each text token.
    read_pos: [B, L] expanded position whose logit predicts text token t + 1.
    visual_start: [B, M] expanded position of each media item's first visual token (L' for an
      item that is not in the sequence: its writes are dropped).
    tokens_per_media: n.
    length: L' = L + M * n.
  """
  text_pos: Array
  read_pos: Array
  visual_start: Array
  tokens_per_media: int
  length: int

  def visual_positions(self) -> Array:
    """[B, M, n] expanded positions of the visual tokens (>= length: absent)."""
    return self.visual_start[..., None] + jnp.arange(self.tokens_per_media)

  def is_visual(self) -> Array:
    """[B, L'] True at visual-token positions."""
    b = self.text_pos.shape[0]
    flat = self.visual_positions().reshape(b, -1)
    return jnp.zeros((b, self.length), bool).at[jnp.arange(b)[:, None], flat].set(
        True, mode="drop")


def layout(media_locations: Array, media_mask: Array, tokens_per_media: int) -> Layout:
  """The expanded layout for `<image>` flags [B, L], media slots [B, M] and n tokens each."""
  b, length = media_locations.shape
  m = media_mask.shape[1]
  n = tokens_per_media
  loc = media_locations.astype(bool)
  slot = jnp.cumsum(loc.astype(jnp.int32), axis=1) - 1  # media item of each <image> token
  real = jnp.take_along_axis(media_mask.astype(bool), jnp.clip(slot, 0, m - 1), axis=1)
  valid = loc & (slot < m) & real
  shift = n * (jnp.cumsum(valid.astype(jnp.int32), axis=1) - valid.astype(jnp.int32))
  text_pos = jnp.arange(length, dtype=jnp.int32)[None] + shift
  read_pos = text_pos + n * valid.astype(jnp.int32)
  expanded = length + m * n
  rows = jnp.broadcast_to(jnp.arange(b)[:, None], (b, length))
  start = jnp.full((b, m), expanded, jnp.int32).at[
      rows, jnp.where(valid, slot, m)].set(text_pos + 1, mode="drop")
  return Layout(text_pos, read_pos, start, n, expanded)


def splice(x: Array, visual: Array, lay: Layout) -> Array:
  """Token embeddings x [B, L, D] and visual tokens [B, M, n, D] -> [B, L', D] (zeros in the
  unused positions)."""
  b, _, d = x.shape
  if visual.shape[2] != lay.tokens_per_media or visual.shape[-1] != d:
    raise ValueError(f"visual tokens {visual.shape} do not fit the layout "
                     f"(n={lay.tokens_per_media}) or the LM width {d}")
  out = jnp.zeros((b, lay.length, d), x.dtype)
  out = out.at[jnp.arange(b)[:, None], lay.text_pos].set(x)
  pos = lay.visual_positions().reshape(b, -1)
  return out.at[jnp.arange(b)[:, None], pos].set(
      visual.reshape(b, -1, d).astype(x.dtype), mode="drop")


def gather(expanded: Array, lay: Layout) -> Array:
  """[B, L', ...] per-position outputs -> [B, L, ...] at `read_pos` (the text positions' view)."""
  idx = lay.read_pos.reshape(*lay.read_pos.shape, *([1] * (expanded.ndim - 2)))
  return jnp.take_along_axis(expanded, idx, axis=1)


def expand_text(values: Array, lay: Layout, fill=0) -> Array:
  """[B, L] per-text-token values (tokens, loss_mask) -> [B, L'] with `fill` elsewhere."""
  b = values.shape[0]
  out = jnp.full((b, lay.length), fill, values.dtype)
  return out.at[jnp.arange(b)[:, None], lay.text_pos].set(values)


def expand_loss_mask(loss_mask: Array, lay: Layout) -> Array:
  """The batch contract's loss_mask on the expanded sequence: 0 on every visual position."""
  return expand_text(loss_mask, lay, 0)


def expanded_lengths(lengths: Array, lay: Layout) -> Array:
  """Expanded length of prompts of `lengths` [B] text tokens (where decoding continues)."""
  last = jnp.take_along_axis(lay.read_pos, (jnp.asarray(lengths) - 1)[:, None], axis=1)[:, 0]
  return last + 1
