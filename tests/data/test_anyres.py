"""AnyRes tiling (mmjax/data/anyres.py): grid choice by aspect ratio, tile contents and order,
thumbnail, padding and the token budget."""

import numpy as np
import pytest
from PIL import Image

from mmjax.data import anyres

GRIDS = ((1, 1), (1, 2), (2, 1), (2, 2), (1, 3))


@pytest.mark.parametrize("size,grid", [((64, 64), (1, 1)), ((128, 64), (1, 2)),
                                       ((64, 128), (2, 1)), ((128, 128), (2, 2)),
                                       ((192, 60), (1, 3)), ((300, 290), (2, 2))])
def test_grid_follows_the_aspect_ratio(size, grid):
  assert anyres.select_grid(*size, 64, GRIDS) == grid


def test_tiles_are_the_image_row_major_after_the_thumbnail():
  # A 2x2 image of four flat colours, 128 px: each tile must be one colour.
  colours = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [255, 255, 0]]], np.uint8)
  img = Image.fromarray(np.kron(colours, np.ones((64, 64, 1), np.uint8)))
  tiles = anyres.tile_image(img, 32, GRIDS)
  assert tiles.shape == (5, 32, 32, 3)
  for k, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
    np.testing.assert_array_equal(tiles[1 + k][4:-4, 4:-4], np.broadcast_to(colours[r, c],
                                                                             (24, 24, 3)))
  # The thumbnail is the whole image at tile size: its quadrants are the four colours.
  np.testing.assert_array_equal(tiles[0][4, 4], colours[0, 0])
  np.testing.assert_array_equal(tiles[0][-5, -5], colours[1, 1])
  padded, mask = anyres.pad_tiles(tiles, 1 + 4)
  assert padded.shape[0] == 5 and mask.all()
  padded, mask = anyres.pad_tiles(tiles[:3], 5)
  assert mask.tolist() == [True, True, True, False, False] and not padded[3:].any()
  with pytest.raises(ValueError, match="max_tiles"):
    anyres.pad_tiles(tiles, 4)


def test_token_budget():
  assert anyres.token_budget((2, 2), 64) == 5 * 64
  assert anyres.token_budget((1, 1), 16) == 32
