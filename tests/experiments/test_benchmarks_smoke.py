"""The side-by-side benchmarks (experiments/benchmarks) run end to end at toy sizes: both twins
built from the same weights, the agreement check passes, and a finite positive ratio comes out.
No timing is asserted (the figures at these sizes mean nothing)."""

import math
import os
import sys

import pytest

BENCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "experiments", "benchmarks")
sys.path.insert(0, BENCH_DIR)

import clip_vs_open_clip  # noqa: E402  pylint: disable=wrong-import-position,import-error
import flamingo_vs_open_flamingo  # noqa: E402  pylint: disable=wrong-import-position,import-error
import generate_vs_hf  # noqa: E402  pylint: disable=wrong-import-position,import-error
import harness  # noqa: E402  pylint: disable=wrong-import-position,import-error

TIMING = ["--warmup", "0", "--steps", "1", "--rounds", "2"]


def _check(ratio, out):
  assert math.isfinite(ratio) and ratio > 0, ratio
  assert out.strip().splitlines()[-1].startswith("ratio (mmjax / "), out


def test_clip_vs_open_clip(capsys):
  ratio = clip_vs_open_clip.main(
      ["--batch", "4", "--image_size", "16", "--patch_size", "8", "--width", "32",
       "--head_width", "16", "--layers", "1", "--embed_dim", "16", "--context_length", "8",
       "--vocab_size", "50"] + TIMING)
  out = capsys.readouterr().out
  assert "loss agreement over 5 steps" in out
  _check(ratio, out)


def test_flamingo_vs_open_flamingo(capsys):
  ratio = flamingo_vs_open_flamingo.main(
      ["--batch", "2", "--length", "12", "--media", "2", "--image_size", "16",
       "--vision_width", "64", "--vision_layers", "1", "--lm_width", "32", "--lm_layers", "2",
       "--lm_heads", "4", "--lm_kv_heads", "2", "--lm_mlp", "48", "--vocab_size", "40"]
      + TIMING)
  out = capsys.readouterr().out
  assert "loss agreement over 5 steps" in out
  _check(ratio, out)


def test_generate_vs_hf(capsys):
  ratios = generate_vs_hf.main(
      ["--batches", "1,2", "--prompt_length", "6", "--new_tokens", "6", "--width", "32",
       "--layers", "1", "--heads", "2", "--vocab_size", "64"] + TIMING)
  out = capsys.readouterr().out
  assert out.count("prompt logits: max rel diff") == 2
  assert sorted(ratios) == [1, 2]
  for ratio in ratios.values():
    assert math.isfinite(ratio) and ratio > 0, ratio
  _check(ratios[2], out)


def test_loss_disagreement_is_refused():
  with pytest.raises(harness.LossMismatchError, match="disagrees"):
    harness.assert_losses_agree([1.0, 2.0], [1.0, 2.1], rtol=1e-4)


@pytest.mark.parametrize("spec,per_shape", [("configs/flamingo.py:micro", True),
                                            ("configs/clip.py:micro", False)])
def test_mfu_profile_reads_each_family(spec, per_shape):
  """The MFU profile takes its matmul shapes from the decoder wherever it lives (model.lm for
  Flamingo, model for an LM) and gives a two-tower model its times without them; a Flamingo
  spec used to crash on model.width."""
  import _scale_common as C  # pylint: disable=import-outside-toplevel,import-error
  import mfu  # pylint: disable=import-outside-toplevel,import-error
  step = C.TrainStep(spec, ["data.batch_size=2"])
  lines = mfu.profile(step, step_seconds=1.0, peak=1e11)
  assert lines[0] == "profile (where the time goes):"
  assert any(line.strip().startswith("whole step") for line in lines)
  rates = [line for line in lines if "GFLOP/s (" in line]
  assert ("matmul rate at the model's shapes:" in lines) == per_shape
  assert len(rates) == (4 if per_shape else 0), lines
