"""experiments/recipe_grounding.py: each arm changes exactly what its docstring says relative to
recipe.py's stage 3, and one arm runs end to end at micro size (two steps of each stage) into a
JSON and markdown with in-range numbers. (The gate reader is tested with the gates, in
tests/models/test_ablation_options.py.)"""

import os
import sys

import pytest

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "experiments")
sys.path.insert(0, EXPERIMENTS)

import recipe  # noqa: E402  pylint: disable=wrong-import-position,import-error
import recipe_grounding as rg  # noqa: E402  pylint: disable=wrong-import-position,import-error

DIRS = {"clip": "/runs/clip", "lm": "/runs/lm"}


def _config(arm):
  return recipe.stage3_config("micro", 0, 10, DIRS, row=rg.ARMS[arm])


def test_each_arm_changes_one_thing():
  base = _config("baseline")
  assert base.to_dict() == recipe.stage3_config("micro", 0, 10, DIRS).to_dict()
  assert base.data.tasks == ("interleaved", "caption", "vqa", "video_qa") and base.model.freeze_lm
  pairs = _config("pairs_only")
  assert pairs.data.tasks == ("caption", "vqa") and pairs.optim.grad_accum_steps == 2
  assert pairs.model.freeze_lm and pairs.init_from == base.init_from
  unfrozen = _config("lm_unfrozen")
  assert not unfrozen.model.freeze_lm and unfrozen.data.tasks == base.data.tasks
  assert unfrozen.init_from == base.init_from  # still initialised from stage 2
  both = _config("pairs_lm_unfrozen")
  assert both.data.tasks == ("caption", "vqa") and not both.model.freeze_lm
  assert _config("no_gating").model.xattn.gating == "none" and base.model.xattn.gating == "tanh"
  assert _config("adam_eps_1e-8").optim.eps == 1e-8 and base.optim.eps == 1e-6
  longer = _config("steps_3000")
  assert (longer.total_steps, longer.optim.total_steps, longer.optim.warmup_steps) == \
      (3000, 3000, 300)
  # Besides what each arm names, nothing differs from the baseline.
  for arm, changed in (("pairs_only", {"data", "optim"}), ("lm_unfrozen", {"model"}),
                       ("no_gating", {"model"}), ("adam_eps_1e-8", {"optim"}),
                       ("steps_3000", {"total_steps", "optim"})):
    other = _config(arm).to_dict()
    assert {k for k, v in base.to_dict().items() if other[k] != v} == changed, arm


def test_one_arm_end_to_end(tmp_path):
  out = tmp_path / "out"
  assert rg.main(["--scale", "micro", "--workdir", str(tmp_path / "work"), "--arms", "baseline",
                  "--clip_steps", "2", "--lm_steps", "2", "--steps", "2", "--eval_examples", "4",
                  "--offline_data", "no", "--output", str(out)]) == 0
  (run,) = rg.reporting.read_json(str(out / "recipe_grounding.json"))["runs"]
  assert run["arm"] == "baseline" and run["step"] == 2
  for key in ("captioning/distinct", "captioning/baseline_no_image_distinct"):
    assert 1 / 4 <= run[key] <= 1.0
  assert 0.0 <= run["vqa/accuracy"] <= 1.0 and run["captioning/cider"] >= 0.0
  # micro: a gated block before each of the LM's layers, two steps from a zero init.
  assert len(run["attn_gate"]) == 4 and max(abs(g) for g in run["attn_gate"]) < 0.05
  for kind in ("xattn", "ffw"):
    assert run[f"{kind}_grad_rms"] > 0.0 and 0.0 <= run[f"{kind}_below_eps"] <= 1.0
  assert run["adam_eps"] == 1e-6
  md = (out / "recipe_grounding.md").read_text(encoding="utf-8")
  assert "| baseline | 1 | 2 |" in md and "Sample captions" in md
  os.remove(out / "recipe_grounding.md")
  assert rg.main(["--from_json", "--output", str(out)]) == 0
  assert (out / "recipe_grounding.md").read_text(encoding="utf-8") == md
  with pytest.raises(SystemExit):
    rg.main(["--arms", "baseline,no_such_arm", "--output", str(out)])
