"""experiments/modalities/motion_probe.py: its clips move exactly one object, its pixel patches
keep the tower's grid order, and the script runs end to end at toy size (a CLIP micro run of a
few steps, a few probe steps), writing the JSON and rewriting the markdown from it."""

import importlib.util
import json
import os
import sys

import numpy as np
import pytest

from mmjax import config_lib, train

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _script():
  name = "modalities_motion_probe"
  if name not in sys.modules:
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(ROOT, "experiments", "modalities", "motion_probe.py"))
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs: its Flax modules are dataclasses, which look their module up.
    sys.modules[name] = module
    spec.loader.exec_module(module)
  return sys.modules[name]


def test_clips_move_one_object_and_the_single_frame_twin_holds_no_motion():
  probe = _script()
  rng = np.random.default_rng(0)
  moved = 0
  for _ in range(20):
    clip, label, travel = probe.one_mover_clip(rng, 32, (0.5,) * 3, (0.5,) * 3)
    assert clip.shape == (probe.NUM_FRAMES, 32, 32, 3) and 0 <= label < 4
    # A mover pushed against the border stays put; otherwise the first and last frame differ.
    assert (travel > 0) == bool(np.any(clip[0] != clip[-1]))
    moved += travel > 0
    single = probe.frames_lib.middle_frame_clip(clip)
    assert all(np.array_equal(f, clip[probe.NUM_FRAMES // 2]) for f in single)
  assert moved >= 15


def test_pixel_patches_follow_the_vit_grid_order():
  probe = _script()
  clips = np.random.default_rng(0).standard_normal((2, 3, 16, 24, 3)).astype(np.float32)
  patches = probe.pixel_patches(clips, 8)
  assert patches.shape == (2, 3, 2 * 3, 8 * 8 * 3)
  # Token index r * cols + c is the block at row r, column c, as the ViT's patch embedding.
  for r in range(2):
    for c in range(3):
      block = clips[:, :, 8 * r:8 * r + 8, 8 * c:8 * c + 8].reshape(2, 3, -1)
      np.testing.assert_array_equal(patches[:, :, r * 3 + c], block)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("motion_probe_smoke")
  clip_dir = str(tmp / "clip")
  config = config_lib.load_config("configs/clip.py:micro", [
      "total_steps=2", "optim.warmup_steps=1", f"data.data_dir={tmp / 'data'}",
      "data.num_train=16", "data.num_eval=4", "data.batch_size=8", "evals={}",
      "checkpoint.async_save=False", "log.tensorboard=False"])
  train.train_and_evaluate(config, clip_dir)
  out = str(tmp / "results")
  argv = ["--clip_workdir", clip_dir, "--train", "16", "--test", "8", "--steps", "2",
          "--rows", "flat:tokens,resampler_spatial:pixels", "--output", out]
  return _script(), argv, out, _script().main(argv)


def test_json_has_every_row_with_its_single_frame_twin(run):
  _, _, out, saved = run
  with open(os.path.join(out, "motion_probe.json"), encoding="utf-8") as f:
    assert json.load(f) == json.loads(json.dumps(saved))
  assert saved["command"].startswith("python experiments/modalities/motion_probe.py")
  assert sorted(saved["rows"]) == ["flat:tokens", "resampler_spatial:pixels"]
  for row in saved["rows"].values():
    assert set(row) == {"motion", "single_frame"}
    for r in row.values():
      assert 0.0 <= r["test_accuracy"] <= 1.0 and np.isfinite(r["final_loss"])
  assert saved["token_std_within_frame"] > 0 and saved["token_std_across_clips"] > 0
  assert saved["travel_median_px"] > 0


def test_markdown_is_rewritten_from_json_and_bad_rows_are_named(run):
  script, argv, out, saved = run
  os.remove(os.path.join(out, "motion_probe.md"))
  again = script.main(argv + ["--from_json"])
  assert again["rows"] == saved["rows"]
  with open(os.path.join(out, "motion_probe.md"), encoding="utf-8") as f:
    text = f.read()
  assert saved["command"] in text and "| resampler_spatial | pixels |" in text
  with pytest.raises(ValueError, match="flat:video"):
    script.main(["--rows", "flat:video", "--output", out])
