"""AnyRes / Monkey-style high-resolution tiling (LLaVA-NeXT, Li et al. 2024 "Monkey"): a large
image becomes a grid of encoder-sized tiles, chosen by aspect ratio from a set of grids, plus a
global thumbnail of the whole image.

    tiles = tile_image(img, tile_size=64, grids=((1, 1), (1, 2), (2, 1), (2, 2)))
    # [1 + rows * cols, 64, 64, 3]: the thumbnail first, then the tiles row-major

The tiles travel on the media's frame axis (`media` [B, M, T, H, W, 3], T = 1 + rows * cols,
padded to the largest grid with `pad_tiles`, `tile_mask` marking real ones), so every connector
sees per-tile features, and the resampler's per-frame `time_embed` is the tile-position
embedding (index 0: thumbnail, 1 + r * cols + c: tile (r, c)). `token_budget` reports what an
image costs the LM.

Grid choice follows LLaVA-NeXT's `select_best_resolution`: the grid whose canvas (rows x cols
tiles) keeps the most of the image's original pixels after an aspect-preserving fit, ties
broken by the least wasted canvas.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

Grid = tuple[int, int]  # (rows, cols)


def select_grid(width: int, height: int, tile_size: int, grids: Sequence[Grid]) -> Grid:
  """The (rows, cols) grid for an image of `width` x `height` pixels (LLaVA-NeXT's rule)."""
  if not grids:
    raise ValueError("anyres grids must not be empty")
  best, best_key = None, None
  for rows, cols in grids:
    if rows < 1 or cols < 1:
      raise ValueError(f"anyres grid {(rows, cols)} must have rows, cols >= 1")
    canvas_w, canvas_h = cols * tile_size, rows * tile_size
    scale = min(canvas_w / width, canvas_h / height)
    kept = min(int(width * scale) * int(height * scale), width * height)
    key = (kept, -(canvas_w * canvas_h - kept))
    if best_key is None or key > best_key:
      best, best_key = (rows, cols), key
  return best


def _fit(img: Image.Image, width: int, height: int) -> Image.Image:
  """Aspect-preserving resize into width x height, centred on black padding."""
  scale = min(width / img.width, height / img.height)
  new = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                   Image.BICUBIC)
  canvas = Image.new("RGB", (width, height))
  canvas.paste(new, ((width - new.width) // 2, (height - new.height) // 2))
  return canvas


def tile_image(img: Image.Image, tile_size: int, grids: Sequence[Grid]) -> np.ndarray:
  """[1 + rows * cols, tile, tile, 3] uint8: the global thumbnail, then the tiles row-major."""
  rows, cols = select_grid(img.width, img.height, tile_size, grids)
  canvas = np.asarray(_fit(img.convert("RGB"), cols * tile_size, rows * tile_size))
  tiles = canvas.reshape(rows, tile_size, cols, tile_size, 3).transpose(0, 2, 1, 3, 4)
  thumb = np.asarray(_fit(img.convert("RGB"), tile_size, tile_size))
  return np.concatenate([thumb[None], tiles.reshape(rows * cols, tile_size, tile_size, 3)])


def pad_tiles(tiles: np.ndarray, max_tiles: int) -> tuple[np.ndarray, np.ndarray]:
  """Tiles padded with zeros to `max_tiles` (1 + the largest grid) and the [max_tiles] mask."""
  n = tiles.shape[0]
  if n > max_tiles:
    raise ValueError(f"{n} tiles exceed anyres max_tiles={max_tiles}")
  out = np.zeros((max_tiles, *tiles.shape[1:]), tiles.dtype)
  out[:n] = tiles
  return out, np.arange(max_tiles) < n


def token_budget(grid: Grid, tokens_per_tile: int) -> int:
  """LM tokens one image costs with this grid: (thumbnail + rows * cols tiles) * tokens each
  (connectors that keep per-tile tokens: mlp, avgpool; the resampler and the query-based
  connectors pool all tiles into a fixed count instead)."""
  return (1 + grid[0] * grid[1]) * tokens_per_tile
