"""experiments/hires.py end to end at micro size: both arms train 2 steps and are evaluated."""

import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "experiments"))

import hires  # noqa: E402  pylint: disable=wrong-import-position,import-error


def test_hires_smoke(tmp_path):
  out = tmp_path / "out"
  assert hires.main(["--workdir", str(tmp_path / "w"), "--clip_workdir", "", "--preset", "micro",
                     "--steps", "2", "--batch_size", "8", "--num_train", "16", "--num_eval", "8",
                     "--eval_records", "2", "--output", str(out)]) == 0
  results = json.loads((out / "hires.json").read_text())
  thumb, tiled = results["arms"]["thumbnail"], results["arms"]["anyres"]
  # micro: 16 px frames of 2 x 2 patches; the resampler gives the LM 4 tokens either way.
  assert thumb["token_budget"] == {"frames": 1, "vision_tokens": 4, "lm_tokens": 4}
  assert tiled["token_budget"] == {"frames": 5, "vision_tokens": 20, "lm_tokens": 4}
  for arm in (thumb, tiled):
    assert arm["step"] == 2 and arm["num_questions"] > 2
    assert 0.0 <= arm["accuracy"] <= 1.0 and 0.0 <= arm["blank_accuracy"] <= 1.0
  text = (out / "hires.md").read_text()
  assert "| thumbnail | 1 | 4 | 4 |" in text and "| anyres | 5 | 20 | 4 |" in text
