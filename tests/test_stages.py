"""config.pretrain: stages the one training command runs first (mmjax/stages.py)."""

import os

import ml_collections
import pytest

from mmjax import config_lib, stages


def _config(**pretrain):
  config = config_lib.load_config("configs/flamingo.py:micro")
  with config.unlocked():
    config.pretrain = ml_collections.ConfigDict(pretrain)
  return config


CLIP_STAGE = dict(config="configs/clip.py:micro", overrides=("total_steps=3",),
                  init=("vision=image",))


def test_a_stage_trains_first_and_initialises_its_destination(tmp_path):
  calls = []
  config = _config(clip=CLIP_STAGE)
  out = stages.prepare(config, str(tmp_path), lambda c, d: calls.append((c.total_steps, d)))
  stage_dir = os.path.join(str(tmp_path), "pretrain_clip")
  assert calls == [(3, stage_dir)]
  assert tuple(out.init_from) == (f"vision={stage_dir}:image",)
  assert tuple(config.init_from) == ()  # the caller's config is not changed


def test_stages_are_skipped_on_resume_and_when_init_from_brings_the_tower(tmp_path):
  calls = []
  train = lambda c, d: calls.append(d)
  config = _config(clip=CLIP_STAGE)
  with config.unlocked():
    config.init_from = ("vision=/runs/clip:image",)
  assert tuple(stages.prepare(config, str(tmp_path), train).init_from) == (
      "vision=/runs/clip:image",)
  os.makedirs(tmp_path / "run" / "checkpoints" / "7")
  assert stages.prepare(_config(clip=CLIP_STAGE), str(tmp_path / "run"), train).init_from == ()
  assert not calls


@pytest.mark.parametrize("stage,match", [
    (dict(config="configs/clip.py:micro"), "pretrain.clip needs a 'init' field"),
    (dict(CLIP_STAGE, init=("vision",)), "must look like 'DST=SRC'"),
    (dict(CLIP_STAGE, steps=3), r"unknown field\(s\) \['steps'\]"),
    (dict(CLIP_STAGE, overrides=("total_stepz=3",)), "total_stepz"),
])
def test_bad_stages_fail_before_any_training(tmp_path, stage, match):
  with pytest.raises((ValueError, KeyError, AttributeError), match=match):
    stages.prepare(_config(clip=stage), str(tmp_path), lambda c, d: pytest.fail("trained"))


def test_the_tiny_main_job_pretrains_the_clip_tiny_tower():
  """configs/flamingo.py:tiny's vision section is configs/clip.py:tiny's, which its stage
  trains and then freezes."""
  config = config_lib.load_config("configs/flamingo.py:tiny")
  clip = stages.stage_config("clip", config.pretrain.clip)
  assert config.model.freeze_vision
  for key, value in clip.model.vision.items():
    if key not in ("project", "mlp_dim"):
      assert config.model.vision[key] == value, key
  assert tuple(config.pretrain.clip.init) == ("vision=image",)
