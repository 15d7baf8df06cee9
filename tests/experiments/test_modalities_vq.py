"""experiments/modalities/vq.py end to end at micro size with 2 steps per stage: the JSON has the
shared modalities schema, the markdown and the PNG grid are written. No figure is asserted (2
steps train nothing); the numbers come from the real run."""

import importlib.util
import json
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Loaded by path under its own name: a bare `import vq` could find configs/vq.py instead.
_SPEC = importlib.util.spec_from_file_location(
    "mmjax_experiment_modalities_vq", os.path.join(REPO, "experiments", "modalities", "vq.py"))
vq_experiment = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(vq_experiment)


@pytest.mark.filterwarnings("ignore")
def test_vq_experiment_smoke(tmp_path):
  out = tmp_path / "out"
  results = vq_experiment.main([
      "--preset", "micro", "--steps", "2", "--vq_steps", "2", "--no-codebook",
      "--workdir", str(tmp_path / "work"), "--output", str(out), "--data_dir",
      str(tmp_path / "data"), "--num_train", "8", "--eval_batches", "1", "--t2i_rows", "4",
      "--grid_rows", "1", "--grid_samples", "2"])
  saved = json.loads((out / "vq.json").read_text())
  assert saved["component"] == "vq" and saved["wall_s"] > 0
  assert saved["command"].startswith("python experiments/modalities/vq.py --preset micro")
  metrics = [(r["model"], r["metric"]) for r in saved["rows"]]
  assert metrics == [("vq fsq", "reconstruction PSNR (dB)"), ("vq fsq", "reconstruction PSNR (dB)"),
                     ("vq fsq", "codebook usage (fraction of codes)"),
                     ("vq_lm", "image-token perplexity given caption"),
                     ("vq_lm", "t2i colour faithfulness")]
  for row in saved["rows"]:
    assert {"baseline", "baseline_value", "value"} <= set(row)
    assert isinstance(row["beats_baseline"], bool)
  assert results["rows"] == saved["rows"]
  # 16 tokens of 16 codes = 64 bits: the bicubic baseline gets a 1x1 thumbnail (24 bits).
  assert saved["tokenizers"]["fsq"]["bicubic_side"] == 1
  assert (out / "vq.md").read_text().startswith("# Discrete image tokens")
  assert (out / "vq_t2i_grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  # --from_json rewrites the markdown alone.
  (out / "vq.md").unlink()
  vq_experiment.main(["--from_json", "--output", str(out)])
  assert (out / "vq.md").exists()
