"""Video in the evaluators: clips taken as the eval pipeline takes them, the single-frame
baseline, clip prompts for Flamingo, per-question-type VQA accuracy, the shapes_video suite."""

import io

import ml_collections
import numpy as np
import pytest
from PIL import Image

from mmjax.data import config as config_lib
from mmjax.data import tokenizers
from mmjax.evaluators import EvalContext, common, fewshot, suites, vqa


def _png(value: int) -> bytes:
  buf = io.BytesIO()
  Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(buf, format="PNG")
  return buf.getvalue()


def _data(**kw):
  return config_lib.default_data_config(image_size=8, num_frames=4, clip_frames=8, **kw)


def _grey(x):
  return np.round((x + 1) / 2 * 255)  # Undo the [-1, 1] normalisation.


def test_clips_take_the_eval_frames_and_single_frame_repeats_the_middle_one():
  records = [{"frames": [_png(20 * i + k) for i in range(8)]} for k in range(2)]
  clips = common.visuals(records, _data())
  assert clips.shape == (2, 4, 8, 8, 3)
  # Uniform over 8 frames: 1, 3, 5, 7 (the random mode takes the same in evaluation).
  np.testing.assert_array_equal(_grey(clips[:, :, 0, 0, 0]),
                                [[20, 60, 100, 140], [21, 61, 101, 141]])
  np.testing.assert_array_equal(common.visuals(records, _data(frame_sampling="random")), clips)
  single = common.visuals(records, _data(), single_frame=True)
  # The middle of the 4 sampled frames (index 2 = stored frame 5), 4 times.
  np.testing.assert_array_equal(_grey(single[:, :, 0, 0, 0]), [[100] * 4, [101] * 4])
  with pytest.raises(ValueError, match="single_frame"):
    common.visuals([{"image": _png(3)}], _data(), single_frame=True)
  assert common.visuals([{"image": _png(3)}], _data()).shape == (1, 8, 8, 3)


def test_flamingo_batch_carries_clips():
  tok = tokenizers.clip()  # Vendored vocabulary: nothing to train.
  clip = np.ones((4, 8, 8, 3), np.float32)
  batch = common.flamingo_batch(tok, ["<image>a", "<image>b<image>c"],
                                [clip[None], np.stack([clip, 2 * clip])])
  assert batch["media"].shape == (2, 2, 4, 8, 8, 3)
  np.testing.assert_array_equal(batch["media_mask"], [[True, False], [True, True]])
  assert batch["media"][1, 1].min() == 2 and batch["media"][0, 1].max() == 0
  # Images keep T = 1; a clip beside an image in one batch is refused.
  assert common.flamingo_batch(tok, ["<image>a"], [clip[:1]])["media"].shape == (1, 1, 1, 8, 8, 3)
  with pytest.raises(ValueError, match="differ"):
    common.flamingo_batch(tok, ["<image>a", "<image>b"], [clip[None], clip[:1]])


def test_per_type_accuracy_by_hand():
  answers = [["left"] * 10, ["up"] * 10, ["yes"] * 10, ["2"] * 3 + ["3"] * 7]
  out = vqa.per_type_accuracy("vqa", ["left", "down", "yes", "two"], answers,
                              ["direction", "direction", "moves", "count"])
  assert out["vqa/accuracy_direction"] == 0.5 and out["vqa/num_direction"] == 2
  assert out["vqa/accuracy_moves"] == 1.0
  # "two" -> "2", said by 3 of 10 humans: the 7 leave-one-out subsets without a "3" keep 3
  # matches (score 1), the 3 without a "2" keep 2 (score 2/3).
  assert out["vqa/accuracy_count"] == pytest.approx(0.7 + 0.3 * 2 / 3)
  assert vqa.per_type_accuracy("vqa", ["x"], [["x"] * 10], [None]) == {}


def test_shapes_video_suite():
  suite = suites.get_suite("shapes_video", "flamingo", "small")
  assert {"captioning", "captioning_single_frame", "vqa", "vqa_single_frame", "fewshot_vqa",
          "fewshot_vqa_single_frame", "fewshot_captioning"} == set(suite)
  assert all(c.dataset == "shapes_video" for c in suite.values())
  assert suite.vqa.baselines and not suite.vqa_single_frame.baselines
  with pytest.raises(ValueError, match="flamingo only"):
    suites.get_suite("shapes_video", "clip")
  context = EvalContext(family=type("F", (), {"decode_step": None})(), data_config=_data(),
                        tokenizer=None)
  with pytest.raises(ValueError, match="rices"):
    fewshot.FewShotEvaluator("fs", ml_collections.ConfigDict(
        dict(type="fewshot", task="vqa", selection="rices", dataset="shapes_video")), context)
