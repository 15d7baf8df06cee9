"""experiments/modalities/coattn.py end to end at micro size with 2 steps per stage: pre-training,
VQA fine-tuning from it, and the JSON/markdown report the coordinator reads (the text-only twin is
the same VQA stage with model.blind=True, left out here to save a compilation; test_vl_encoders
checks `blind`). No accuracy is asserted (two steps learn nothing). The smoke run trains its
ViT with the encoder (the default) to save a CLIP stage's compilation; the frozen CLIP regions of
`--clip_workdir` are checked by config and tree shape below."""

import json
import os
import sys

EXP_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "experiments", "modalities")
sys.path.insert(0, EXP_DIR)

import coattn  # noqa: E402  pylint: disable=wrong-import-position,import-error


def test_coattn_smoke(tmp_path):
  out = tmp_path / "out"
  saved = coattn.main(["--size", "micro", "--encoders", "lxmert", "--baselines", "",
                       "--pretrain_steps", "2", "--steps", "2", "--eval_examples", "16",
                       "--workdir", str(tmp_path / "runs"), "--data_dir", str(tmp_path / "data"),
                       "--override", "data.num_train=32", "--override", "data.num_eval=16",
                       "--output", str(out)])
  on_disk = json.loads((out / "coattn.json").read_text())
  assert on_disk["component"] == "coattn" and on_disk["wall_s"] > 0
  assert on_disk["command"].startswith("python experiments/modalities/coattn.py")
  rows = on_disk["rows"]
  assert [r["baseline"] for r in rows] == ["most frequent answer", "a question-only classifier",
                                           "chance"]
  for row in rows:
    assert {"model", "metric", "value", "baseline", "baseline_value", "beats_baseline"} <= set(row)
    assert 0.0 <= row["value"] <= 1.0 and isinstance(row["beats_baseline"], bool)
  vqa = saved["results"]["lxmert"]["vqa"]
  assert 0.0 <= vqa["vqa/answers_changed"] <= 1.0
  assert {f"vqa/answers_changed_{k}" for k in on_disk["kinds"]} <= set(vqa)
  # Every question of the 16 validation scenes is asked (each scene has 2-8 of them).
  assert 16 * 2 <= vqa["vqa/num_questions"] <= 16 * 8
  text = (out / "coattn.md").read_text()
  assert "| lxmert | VQA accuracy" in text and "answers changed by another scene" in text
  # --from_json rewrites the markdown alone.
  again = coattn.main(["--from_json", "--output", str(out)])
  assert again["rows"] == rows
  assert on_disk["clip_workdir"] is None and "trained from scratch" in on_disk["setup"]


def test_clip_tower_fits_every_encoders_regions():
  """The ViT of each encoder, shaped by `clip_vision_overrides`, has exactly the parameters of
  the CLIP image tower it is initialised from, less the projection head (which `init_from`
  skips), and is frozen."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  from mmjax import config_lib, summary  # pylint: disable=import-outside-toplevel
  from mmjax.models import family as family_lib  # pylint: disable=import-outside-toplevel

  def shapes(config):
    params = summary.abstract_variables(family_lib.build(config.model))["params"]
    return jax.tree.map(summary.leaf_shape, params,
                        is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))

  clip = config_lib.load_config("configs/clip.py:micro")
  image = shapes(clip)["image"]
  over = coattn.clip_vision_overrides(clip.model.vision)
  assert "optim.frozen=('^vision/',)" in over
  for enc in coattn.ENCODERS:
    config = config_lib.load_config(f"configs/{enc}.py:micro_vqa", over)
    assert config.optim.frozen == ("^vision/",) and not config.model.vision.project
    vision = shapes(config)["vision"]
    assert vision == {k: v for k, v in image.items() if k != "proj"}, enc


def test_each_encoder_is_compared_with_its_own_blind_twin():
  """An encoder with a blind twin is judged against it; one without falls back to the first
  baseline's (pre-trained weights differ per encoder, so a shared twin would be unfair)."""
  def vqa(acc):
    return {"vqa": {"vqa/accuracy": acc, "vqa/baseline_most_frequent": 0.3}}
  results = {"lxmert": {**vqa(0.49), "pretrain": {"pretrain/itm_accuracy": 0.6}},
             "visualbert": {**vqa(0.46), "pretrain": {"pretrain/itm_accuracy": 0.6}},
             "vilbert": {**vqa(0.46), "pretrain": {"pretrain/itm_accuracy": 0.6}},
             "lxmert_blind": vqa(0.44), "visualbert_blind": vqa(0.47)}
  results["baseline"] = {"encoder": "lxmert", **results["lxmert_blind"]}
  twin = {r["model"]: (r["baseline"], r["baseline_value"], r["beats_baseline"])
          for r in coattn.rows_of(results) if r["baseline"].startswith("text-only")}
  assert twin == {"lxmert": ("text-only lxmert (blind images)", 0.44, True),
                  "visualbert": ("text-only visualbert (blind images)", 0.47, False),
                  "vilbert": ("text-only lxmert (blind images)", 0.44, True)}
