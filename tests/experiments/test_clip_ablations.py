"""experiments/clip_ablations.py: every sweep's runs build their configs with the swept value
and the same examples seen, and the aggregation / table / plots by hand. (Training runs are the
script's job, not the suite's.)"""

import os
import sys

import pytest

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "experiments")
sys.path.insert(0, EXPERIMENTS)

import clip_ablations as ca  # noqa: E402  pylint: disable=wrong-import-position,import-error


def test_every_sweep_builds_configs_that_see_the_same_examples():
  for sweep in ca.SWEEPS:
    runs = ca.sweep_runs(sweep, 32)
    assert runs
    for run in runs:
      config = ca.run_config(run, "micro", 0, 4096, offline=True)
      assert config.data.batch_size * config.total_steps == 4096, run.name
      assert config.model.family == run.family and not config.evals
      assert config.data.datasets == ("shapes", "emoji", "tuxpaint")
  losses = {(r.family, r.batch_size) for r in ca.sweep_runs("loss_batch", 32)}
  assert losses == {(f, b) for f in ("clip", "siglip") for b in (8, 16, 32, 64, 128)}
  pd = ca.run_config(ca.sweep_runs("patch_dropout", 32)[-1], "micro", 0, 64, offline=False)
  assert pd.model.vision.patch_dropout == 0.75 and pd.data.datasets == ("shapes",)
  coca = ca.run_config(ca.sweep_runs("coca_weight", 32)[0], "micro", 0, 64, offline=False)
  assert coca.model.caption_weight == 0.0
  res = ca.sweep_runs("resolution", 32)
  assert [r.x for r in res] == [4, 4, 16, 36, 64]  # tokens per image


def test_aggregate_report_and_plots(tmp_path):
  rows = []
  for family, batch, accs in (("clip", 8, (0.2, 0.4)), ("siglip", 8, (0.5, 0.5)),
                              ("clip", 64, (0.6, 0.6)), ("siglip", 64, (0.6, 0.8))):
    for seed, acc in enumerate(accs):
      rows.append({"sweep": "loss_batch", "run": f"{family}_b{batch}", "family": family,
                   "seed": seed, "x": batch, "batch_size": batch, "prompts": "ensemble",
                   "train_s": 1.0, "train_flops": 1e9, "heldout_shape/top1": acc,
                   "heldout_colour/top1": 1.0})
  table = {e["run"]: e for e in ca.aggregate(rows)}
  assert table["clip_b8"]["heldout_shape/top1"] == pytest.approx(0.3)
  assert table["clip_b8"]["heldout_shape/top1_std"] == pytest.approx(0.1414, abs=1e-4)
  assert ca.held_out_score(table["siglip_b64"]) == pytest.approx((0.7 + 1.0) / 2)
  text = ca.report(list(table.values()), {"command": "x", "wall_min": 2.0})
  assert "| clip_b8 | ensemble | 2 | 1.0 | 0.300 ± 0.141 | 1.000 ± 0.000 |" in text
  written = ca.plot(list(table.values()), str(tmp_path))
  assert [os.path.basename(p) for p in written] == ["clip_ablations_batch.png"]
  assert open(written[0], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
