"""AnyRes tiling in the input pipeline (data.anyres_grids) and the shapes_small dataset."""

import io

import numpy as np
import pytest
from PIL import Image

from mmjax.data import anyres, pipeline, preprocess, shapes_world, tokenizers
from mmjax.data import config as data_config
from mmjax.data.builders import common, shapes, shapes_small


def _records(n, canvas=None):
  """shapes_small records (optionally re-rendered onto a canvas of size `canvas` (w, h))."""
  config = common.make_config(image_size=shapes_small.CANVAS, num_train=n, num_eval=n)
  out = []
  for i in range(n):
    r = shapes_small.generate_example(config, "validation", i)
    if canvas is not None:
      img = Image.open(io.BytesIO(r["image"])).resize(canvas)
      r["image"] = shapes_world.png_bytes(img)
    out.append(r)
  return out


def _batch(records, grids, **overrides):
  c = data_config.default_data_config(
      datasets=("shapes_small",), task="vqa", as_media=True, anyres_grids=grids,
      batch_size=len(records), max_media=1, text_length=32, split="validation", **overrides)
  tok = tokenizers.get_tokenizer("clip")
  return next(pipeline.make_pipeline(c, tokenizer=tok, process_index=0, process_count=1,
                                     train=False, sources={"shapes_small": records}))


def test_shapes_small_is_shapes_with_small_objects_on_a_large_canvas():
  config = common.make_config(image_size=64, num_train=4, num_eval=4)
  small = shapes_small.generate_example(config, "train", 3)
  big = shapes.generate_example(config, "train", 3)
  for key in ("captions", "questions", "answer", "scene"):
    assert small[key] == big[key]
  img = np.asarray(preprocess.decode_png(small["image"]))
  assert img.shape == (256, 256, 3)
  scene = shapes_world.Scene.from_json(small["scene"])
  background = np.array(shapes_world.BACKGROUNDS[scene.background])
  covered = np.any(img != background, axis=-1).sum()
  # Every object is ~14-25 px across: together well under 4% of the canvas, each one visible.
  radii = [shapes_world.SIZES[o.size] * 256 * shapes_small.OBJECT_SCALE for o in scene.objects]
  assert all(7 <= r <= 12.5 for r in radii)
  assert 0 < covered < 0.04 * 256 * 256
  for o in scene.objects:
    centre = img[int(o.y * 256), int(o.x * 256)]
    np.testing.assert_array_equal(centre, shapes_world.COLOURS[o.colour])


def test_tiles_on_the_frame_axis():
  records = _records(2)
  b = _batch(records, ((2, 2),), image_size=64)
  assert b["media"].shape == (2, 1, 5, 64, 64, 3)
  assert b["tile_mask"].shape == (2, 1, 5) and b["tile_mask"].all()
  img = preprocess.decode_png(records[0]["image"])
  want = anyres.tile_image(img, 64, ((2, 2),))
  got = np.rint((b["media"][0, 0] + 1) * 127.5)  # the default [-1, 1] normalisation undone
  np.testing.assert_array_equal(got, want)
  # The top-left tile is the canvas' top-left quarter at half resolution (128 px grid canvas).
  quarter = np.asarray(img.resize((128, 128), Image.BICUBIC))[:64, :64]
  np.testing.assert_array_equal(want[1], quarter)


def test_a_smaller_grid_is_padded_and_masked():
  records = _records(2, canvas=(256, 128))  # 2:1 -> the (1, 2) grid, 3 tiles of 5
  b = _batch(records, ((1, 2), (2, 1), (2, 2)), image_size=64)
  assert b["media"].shape[2] == 5
  np.testing.assert_array_equal(b["tile_mask"][:, 0], [[True] * 3 + [False] * 2] * 2)
  assert np.all(b["media"][:, 0, 3:] == 0)


def test_tiling_off_by_default_and_bad_configs_name_the_field():
  b = _batch(_records(2), (), image_size=64)
  assert b["media"].shape == (2, 1, 1, 64, 64, 3) and "tile_mask" not in b
  with pytest.raises(ValueError, match="data.anyres_grids .* data.as_media=True"):
    data_config.default_data_config(task="vqa", anyres_grids=((2, 2),))
  with pytest.raises(ValueError, match="data.anyres_grids tiles caption/vqa rows only"):
    data_config.default_data_config(task="interleaved", anyres_grids=((2, 2),))
  with pytest.raises(ValueError, match=r"data.anyres_grids entries must be \(rows, cols\)"):
    data_config.default_data_config(task="vqa", as_media=True, anyres_grids=((0, 2),))
