"""experiments/modalities/audio.py end to end at micro size with 2 steps per stage: both stages
train through the one trainer, every row the coordinator reads is present, and --from_json
re-renders the markdown. No metric value is asserted (2 steps learn nothing)."""

import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "experiments", "modalities"))

import audio  # noqa: E402  pylint: disable=wrong-import-position,import-error


def test_audio_experiment_smoke(tmp_path, monkeypatch):
  monkeypatch.setenv("MMJAX_DATA_DIR", str(tmp_path / "data"))
  out = tmp_path / "out"
  saved = audio.main(["--workdir", str(tmp_path / "runs"), "--steps", "2", "--preset", "micro",
                      "--num_eval", "16", "--num_devices", "1", "--output", str(out)])
  on_disk = json.loads((out / "audio.json").read_text())
  assert on_disk["component"] == saved["component"] == "audio"
  assert on_disk["steps"] == {"clap": 2, "audio_lm": 2}
  rows = on_disk["rows"]
  assert len(rows) == 8
  for row in rows:
    assert set(row) == {"model", "metric", "value", "baseline", "baseline_value",
                        "beats_baseline"}
    assert 0.0 <= row["value"] and 0.0 <= row["baseline_value"]
  chance = on_disk["results"]["clap"]["validation"]
  assert 1 / 16 <= chance["chance"] <= 1.0 and chance["chance_1_over_n"] == 1 / 16
  (out / "audio.md").unlink()
  audio.main(["--from_json", "--output", str(out)])
  assert "| clap micro | validation audio->text R@1 |" in (out / "audio.md").read_text()
