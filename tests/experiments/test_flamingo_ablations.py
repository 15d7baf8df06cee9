"""experiments/flamingo_ablations.py: every Table 3 row builds the model it claims (the changed
dimension differs from the baseline exactly), stage 2's LM fits stage 3's LM, and the score
table's arithmetic by hand. (Training runs are the script's job, not the suite's.)"""

import math
import os
import sys

import flax.linen as nn
import jax
import pytest

from mmjax import config_lib
from mmjax.models import family

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "experiments")
sys.path.insert(0, EXPERIMENTS)

import flamingo_ablations as fa  # noqa: E402  pylint: disable=wrong-import-position,import-error

DIRS = {"clip": "/runs/clip", "clip_small": "/runs/clip_small", "lm": "/runs/lm"}


def _stage3(name):
  row = {r.name: r for r in fa.ROWS}[name]
  config = config_lib.load_config(os.path.join(fa.REPO, "configs/flamingo.py:micro"),
                                  fa.flamingo_overrides("micro", row, 0, 10, DIRS))
  fam = family.build(config.model)
  shapes = jax.eval_shape(fam.init, jax.random.key(0), fam.dummy_batch(1))["params"]
  return config, fam, shapes


def _count(tree):
  return sum(x.size for x in jax.tree.leaves(tree))


@pytest.fixture(scope="module")
def baseline():
  return _stage3("baseline")


def test_baseline_is_the_papers_recipe(baseline):
  config, fam, _ = baseline
  assert config.data.tasks == ("interleaved", "caption", "vqa", "video_qa")
  assert config.data.mixing == "batch" and config.optim.grad_accum_steps == 4
  assert fam.xattn_config.gated_layers(4) == (0, 1, 2, 3)  # before every LM layer
  assert config.model.freeze_vision and config.model.freeze_lm
  assert config.init_from == ("vision=/runs/clip:image", "lm=/runs/lm:")


def test_each_row_changes_what_it_names(baseline):
  _, base_fam, base = baseline
  gates = 2 * 4  # attn_gate + ff_gate per gated block
  config, _, p = _stage3("no_tanh_gating")
  assert _count(p) == _count(base) - gates
  block = (_count(base["lm"]) - _count(_stage3("xattn_every_2nd")[2]["lm"])) // 2
  assert block > 0
  assert _count(_stage3("xattn_every_4th")[2]["lm"]) == _count(base["lm"]) - 3 * block
  config, fam, _ = _stage3("xattn_single")
  assert fam.xattn_config.gated_layers(4) == (2,)
  assert _stage3("resampler_mlp")[1].connector_kind == "mlp"
  assert _stage3("resampler_transformer")[1].connector_kind == "transformer"
  assert _count(_stage3("small_vision")[2]["vision"]) < _count(base["vision"])
  config, _, _ = _stage3("lm_unfrozen_scratch")
  assert not config.model.freeze_lm and config.init_from == ("vision=/runs/clip:image",)
  config, _, _ = _stage3("lm_unfrozen_pretrained")
  assert not config.model.freeze_lm and "lm=/runs/lm:" in config.init_from
  assert _stage3("no_interleaved")[0].data.tasks == ("caption", "vqa", "video_qa")
  assert _stage3("no_pairs")[0].data.tasks == ("interleaved", "video_qa")
  assert _stage3("no_video")[0].data.tasks == ("interleaved", "caption", "vqa")
  config, _, _ = _stage3("round_robin")
  assert config.data.mixing == "round_robin" and config.optim.grad_accum_steps == 1
  del base_fam


def test_stage_towers_fit_stage_three(baseline):
  """init_from will find the shapes it needs: the CLIP image tower is the Flamingo vision tower
  (plus CLIP's projection), and the LM's blocks are the Flamingo LM's plain layers."""
  _, fam, params = baseline
  spec, over = fa.clip_overrides("micro", False, 10)
  clip = config_lib.load_config(os.path.join(fa.REPO, spec), over)
  clip_fam = family.build(clip.model)
  image = jax.eval_shape(clip_fam.init, jax.random.key(0), clip_fam.dummy_batch(1))["params"]
  image = {k: v for k, v in image["image"].items() if k in params["vision"]}
  assert jax.tree.map(lambda x: x.shape, image) == \
      jax.tree.map(lambda x: x.shape, params["vision"])
  spec, over = fa.lm_overrides("micro", 10)
  lm_fam = family.build(config_lib.load_config(os.path.join(fa.REPO, spec), over).model)
  lm = jax.eval_shape(lm_fam.init, jax.random.key(0), lm_fam.dummy_batch(1))["params"]
  adapted = jax.eval_shape(lambda s, t: fam.adapt_init_source("lm", s, t), nn.unbox(lm),
                           nn.unbox(params["lm"]))
  assert jax.tree.map(lambda x: x.shape, adapted) == \
      jax.tree.map(lambda x: x.shape, nn.unbox(params["lm"]))


def test_score_arithmetic_by_hand():
  runs = [{"row": "baseline", "seed": s, "captioning/cider": c, "vqa/accuracy": 0.5,
           "video_vqa/accuracy": 0.4} for s, c in ((0, 1.0), (1, 1.2))]
  runs += [{"row": "no_video", "seed": s, "captioning/cider": 0.55, "vqa/accuracy": 0.25,
            "video_vqa/accuracy": v} for s, v in ((0, 0.2), (1, 0.2))]
  # 0.025 below the baseline's mean score, inside 2 standard errors of the difference.
  runs += [{"row": "no_pairs", "seed": s, "captioning/cider": c, "vqa/accuracy": 0.5,
            "video_vqa/accuracy": 0.4} for s, c in ((0, 0.935), (1, 1.1))]
  table = {e["row"]: e for e in fa.summarise(runs)}
  # Baseline means: CIDEr 1.1, VQA 0.5, video 0.4; seed 0 scores (1/1.1 + 1 + 1) / 3.
  assert table["baseline"]["score_mean"] == pytest.approx(1.0)
  assert table["no_video"]["score_mean"] == pytest.approx(0.5)
  assert table["no_video"]["score_std"] == pytest.approx(0.0)
  assert table["no_video"]["direction"] == "down" and table["no_video"]["reproduced"]
  assert table["no_video"]["paper_ratio"] == pytest.approx(67.3 / 70.7)
  # Baseline seed scores (1/1.1 + 2) / 3 and (1.2/1.1 + 2) / 3: two values 0.2/1.1/3 apart.
  base_std = 0.2 / 1.1 / 3 / math.sqrt(2)
  assert table["baseline"]["score_std"] == pytest.approx(base_std)
  assert table["no_video"]["diff_se"] == pytest.approx(base_std / math.sqrt(2))
  # no_pairs: seed scores (0.935/1.1 + 2) / 3 and (1.1/1.1 + 2) / 3.
  pairs = [(0.935 / 1.1 + 2) / 3, 1.0]
  assert table["no_pairs"]["score_mean"] == pytest.approx(sum(pairs) / 2)
  pairs_std = abs(pairs[0] - pairs[1]) / math.sqrt(2)
  assert table["no_pairs"]["diff_se"] == pytest.approx(
      math.sqrt(pairs_std ** 2 / 2 + base_std ** 2 / 2))
  assert 1.0 - table["no_pairs"]["score_mean"] < 2 * table["no_pairs"]["diff_se"]
  assert table["no_pairs"]["direction"] == "within noise" and not table["no_pairs"]["reproduced"]
  text = fa.report(fa.summarise(runs), {"command": "x", "wall_min": 1.0})
  assert "| no_video |" in text and "0.500 ± 0.000" in text
  assert " gate |" not in text  # runs made before the gate column have none


def test_report_shows_how_far_the_gates_opened():
  runs = [{"row": "baseline", "seed": s, "captioning/cider": 1.0, "vqa/accuracy": 0.5,
           "video_vqa/accuracy": 0.4, "attn_gate_max": g} for s, g in ((0, 0.1), (1, 0.3))]
  runs += [{"row": "no_tanh_gating", "seed": 0, "captioning/cider": 1.0, "vqa/accuracy": 0.5,
            "video_vqa/accuracy": 0.4, "attn_gate_max": None}]
  table = fa.summarise(runs)
  assert table[0]["attn_gate_max_mean"] == pytest.approx(0.2)
  assert "attn_gate_max_mean" not in table[1]  # ungated: no gate to report
  text = fa.report(table, {"command": "x", "wall_min": 1.0, "gate_init": 0.1})
  assert "| 0.200 |" in text and "start at alpha = 0.1" in text
  assert text.splitlines()[-1].endswith("|  |")  # the ungated row's gate cell is empty


def test_one_seed_reads_no_direction():
  """With one seed there is no seed std, so se is 0 and any difference would pass for a
  direction; the table must say it needs more seeds instead of 'reproduced'."""
  metrics = dict(zip(fa.METRICS, (0.2, 0.4, 0.4)))
  runs = [{"row": "baseline", "seed": 0, **metrics},
          {"row": "no_video", "seed": 0, **metrics, fa.METRICS[2]: 0.39}]
  table = {e["row"]: e for e in fa.summarise(runs)}
  assert table["no_video"]["direction"] == "needs 2+ seeds"
  assert "reproduced" not in table["no_video"]
  assert table["no_video"]["score_mean"] < 1.0
