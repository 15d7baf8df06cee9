"""Frame sampling (mmjax/data/frames.py): indices worked out by hand, randomness only in
training and only from the caller's seed, errors naming the data field, and video rows whose
frames are the sampled ones."""

import io

import numpy as np
import pytest
from PIL import Image

from mmjax.data import config as config_lib
from mmjax.data import frames, tasks


def test_uniform_takes_segment_centres():
  # S=8, T=4: segments [0,2) [2,4) [4,6) [6,8) -> centres 1, 3, 5, 7.
  np.testing.assert_array_equal(frames.sample_indices(8, 4, "uniform"), [1, 3, 5, 7])
  # S=10, T=3: floor((2i + 1) * 10 / 6) = 1, 5, 8.
  np.testing.assert_array_equal(frames.sample_indices(10, 3, "uniform"), [1, 5, 8])
  np.testing.assert_array_equal(frames.sample_indices(4, 4, "uniform"), [0, 1, 2, 3])
  np.testing.assert_array_equal(frames.sample_indices(8, 1, "uniform"), [4])
  # Uniform ignores a training generator: deterministic in training too.
  np.testing.assert_array_equal(
      frames.sample_indices(8, 4, "uniform", rng=np.random.default_rng(3)), [1, 3, 5, 7])


def test_random_draws_one_frame_per_segment_from_the_seed_only_in_training():
  lo, hi = np.array([0, 3, 6]), np.array([3, 6, 9])  # S=9, T=3.
  draws = [frames.sample_indices(9, 3, "random", rng=np.random.default_rng(s)) for s in range(50)]
  for d in draws:
    assert ((d >= lo) & (d < hi)).all() and (np.diff(d) > 0).all()
  assert len({tuple(d) for d in draws}) > 10  # It does vary ...
  again = frames.sample_indices(9, 3, "random", rng=np.random.default_rng(7))
  np.testing.assert_array_equal(again, draws[7])  # ... as a function of the seed.
  # Evaluation (no generator) takes the segment centres.
  np.testing.assert_array_equal(frames.sample_indices(9, 3, "random"), [1, 4, 7])


def test_stride_window_centred_in_eval_random_start_in_training():
  # S=8, T=3, stride 2: span 5, starts 0..3; evaluation centres it (start 3 // 2 = 1).
  np.testing.assert_array_equal(frames.sample_indices(8, 3, "stride", stride=2), [1, 3, 5])
  starts = {int(frames.sample_indices(8, 3, "stride", stride=2,
                                      rng=np.random.default_rng(s))[0]) for s in range(40)}
  assert starts == {0, 1, 2, 3}


@pytest.mark.parametrize("args,field", [
    ((4, 8, "uniform"), "data.num_frames=8"),
    ((8, 4, "stride", 3), "data.frame_stride=3"),
    ((8, 4, "bogus"), "data.frame_sampling"),
    ((8, 4, "stride", 0), "data.frame_stride"),
])
def test_impossible_sampling_names_the_field(args, field):
  with pytest.raises(ValueError, match=field):
    frames.check_config(*args)


def test_data_config_checks_clip_frames():
  with pytest.raises(ValueError, match="data.clip_frames"):
    config_lib.default_data_config(num_frames=8, clip_frames=4)
  c = config_lib.default_data_config(num_frames=4, clip_frames=8)
  assert config_lib.source_frames(c) == 8
  assert config_lib.source_frames(config_lib.default_data_config(num_frames=4)) == 4


def test_middle_frame_clip_repeats_frame_t_over_2():
  clip = np.arange(4)[:, None, None, None] * np.ones((4, 2, 2, 3))
  out = frames.middle_frame_clip(clip)
  assert out.shape == clip.shape and (out == 2).all()


def _png(value: int) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(buf, format="PNG")
  return buf.getvalue()


@pytest.mark.parametrize("mode,train,expected", [
    ("uniform", False, [1, 3, 5, 7]), ("random", False, [1, 3, 5, 7]),
    ("stride", False, [2, 3, 4, 5])])
def test_video_rows_hold_the_sampled_frames(tok, mode, train, expected):
  # Frame i of the stored clip is a flat grey of value 20 * i, so each row's media says which
  # stored frames it holds.
  record = {"frames": [_png(20 * i) for i in range(8)], "captions": [b"A red circle moves up."],
            "questions": [b"Does the red circle move?"], "answer": [b"yes"]}
  c = config_lib.default_data_config(
      datasets=("shapes_video",), task="video", image_size=8, num_frames=4, clip_frames=8,
      frame_sampling=mode, text_length=32, augment=dict(random_resized_crop=False,
                                                         crop_scale=(1.0, 1.0), flip=False))
  proc = tasks.ExampleProcessor("shapes_video", 0, c, tok, train=train, frames_per_media=4)
  row = proc(0, (0, record))
  assert row["media"].shape == (c.max_media, 4, 8, 8, 3)
  pixel = (row["media"][0, :, 0, 0, 0] + 1) / 2 * 255  # Undo the [-1, 1] normalisation.
  np.testing.assert_allclose(pixel, [20 * i for i in expected], atol=0.5)
  qa = tasks.ExampleProcessor("shapes_video", 0, c, tok, train=False, frames_per_media=4,
                              task="video_qa")(0, (0, record))
  # video_qa rows: the loss is on the answer (+ <|endofchunk|>), not on the question.
  assert 0 < qa["loss_mask"].sum() < row["loss_mask"].sum()


def test_training_frames_follow_the_example_seed(tok):
  record = {"frames": [_png(10 * i) for i in range(8)], "captions": [b"A red circle moves up."],
            "questions": [b"Does the red circle move?"], "answer": [b"yes"]}
  c = config_lib.default_data_config(
      datasets=("shapes_video",), task="video", image_size=8, num_frames=4, clip_frames=8,
      frame_sampling="random", text_length=32, augment=dict(random_resized_crop=False,
                                                             crop_scale=(1.0, 1.0), flip=False))
  proc = tasks.ExampleProcessor("shapes_video", 0, c, tok, train=True, frames_per_media=4)
  seen = [tuple(np.round((proc(i, (0, record))["media"][0, :, 0, 0, 0] + 1) / 2 * 25.5))
          for i in range(12)]
  assert seen[3] == tuple(np.round((proc(3, (0, record))["media"][0, :, 0, 0, 0] + 1) / 2
                                   * 25.5))
  assert len(set(seen)) > 1
  for s in seen:  # One frame from each of the segments [0,2) [2,4) [4,6) [6,8).
    assert all(2 * k <= f < 2 * k + 2 for k, f in enumerate(s))
