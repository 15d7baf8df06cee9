"""experiments/modalities/video.py end to end at toy size: 2 training steps of video_micro on a
few clips, the VQA part of the shapes_video suite with its single-frame baseline, the JSON the
coordinator reads, and the markdown rewritten from it. No figure is asserted beyond its range
(2 steps learn nothing)."""

import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _script():
  spec = importlib.util.spec_from_file_location(
      "modalities_video", os.path.join(ROOT, "experiments", "modalities", "video.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("video_smoke")
  out = str(tmp / "results")
  argv = ["--workdir", str(tmp / "work"), "--steps", "2", "--preset", "video_micro",
          "--image_workdir", "", "--clip_workdir", "", "--suite_size", "small",
          "--only", "vqa,vqa_single_frame", "--output", out,
          "--set", f"data.data_dir={tmp / 'data'}", "--set", "data.num_train=16",
          "--set", "data.num_eval=4", "--set", "data.batch_size=8",
          "--set", "optim.warmup_steps=1", "--set", "evals={}",
          "--set", "checkpoint.async_save=False", "--set", "log.tensorboard=False"]
  return _script(), argv, out, _script().main(argv)


def test_json_has_the_coordinators_fields(run):
  _, _, out, saved = run
  with open(os.path.join(out, "video.json"), encoding="utf-8") as f:
    assert json.load(f) == json.loads(json.dumps(saved))
  assert saved["component"] == "video" and saved["step"] == 2
  assert saved["command"].startswith("python experiments/modalities/video.py --workdir")
  assert saved["wall_s"] > 0
  rows = {(r["metric"], r["baseline"]): r for r in saved["rows"]}
  single = "single frame (middle frame x T)"
  assert ("vqa/accuracy", single) in rows
  kinds = {k.split("accuracy_")[1] for k in saved["results"] if k.startswith("vqa/accuracy_")}
  assert kinds and kinds <= {"count", "direction", "moves", "order"}
  for kind in kinds:
    assert (f"vqa/accuracy_{kind}", single) in rows
  for r in saved["rows"]:
    assert set(r) == {"model", "metric", "value", "baseline", "baseline_value",
                      "beats_baseline"}
    assert 0.0 <= r["value"] <= 1.0 and r["beats_baseline"] == (r["value"] > r["baseline_value"])


def test_markdown_is_rewritten_from_json(run):
  script, argv, out, saved = run
  os.remove(os.path.join(out, "video.md"))
  again = script.main(argv + ["--from_json"])
  assert again["rows"] == saved["rows"]
  with open(os.path.join(out, "video.md"), encoding="utf-8") as f:
    text = f.read()
  assert saved["command"] in text and "| vqa/accuracy |" in text
