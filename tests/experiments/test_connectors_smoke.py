"""experiments/connectors.py end to end at micro size: the CLIP stage trains when its workdir is
empty, two connector x fusion rows train from its frozen tower for 2 steps, the evaluation fills
every column of the JSON and the markdown, a second invocation keeps the finished rows, and
--from_json rewrites the same table. No metric value is asserted (2 steps learn nothing). The rows
use avgpool, the connector quickest to compile; every connector's shapes and masks are tested in
tests/models/test_connectors.py."""

import json
import os
import sys

import pytest

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "experiments")
sys.path.insert(0, EXPERIMENTS)

import connectors  # noqa: E402  pylint: disable=wrong-import-position,import-error

# The micro CLIP tower resized to the micro Flamingo's (16 px, one layer, MLP 64) so init_from
# fits, on the micro Flamingo's dataset (16 px, 512 scenes: no second dataset to generate).
CLIP_MICRO = ["model.vision.image_size=16", "model.vision.depth=1", "model.vision.mlp_dim=64",
              "data.image_size=16", "data.num_train=512", "optim.warmup_steps=1"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
  root = tmp_path_factory.mktemp("connectors")
  args = ["--preset", "micro", "--workdir", str(root / "runs"), "--steps", "2",
          "--override", "optim.warmup_steps=1", "--connectors", "avgpool",
          "--fusions", "xattn,decoder_only", "--clip_steps", "2", "--eval_examples", "2",
          "--max_new_tokens", "4", "--output", str(root / "out")]
  for item in CLIP_MICRO:
    args += ["--clip_override", item]
  assert connectors.main(args) == 0
  return root, args


def test_rows_have_every_column(sweep):
  root, _ = sweep
  saved = json.loads((root / "out" / "connectors.json").read_text())
  assert [(r["connector"], r["fusion"]) for r in saved["rows"]] == [
      ("avgpool", "xattn"), ("avgpool", "decoder_only")]
  assert saved["clip_train_s"] > 0  # the empty CLIP workdir was trained
  for row in saved["rows"]:
    assert row["step"] == 2
    assert row["tokens_per_image"] == 4  # micro avgpool: num_tokens
    assert 0 < row["trainable_params"] < row["total_params"]  # the CLIP tower is frozen
    assert row["step_time_s"] > 0
    for key in ("vqa", "vqa_blank", "cider", "cider_blank"):
      assert row[key] >= 0
  xattn, spliced = saved["rows"]
  # Decoder-only drops the gated blocks: fewer trainable parameters, same connector.
  assert spliced["trainable_params"] < xattn["trainable_params"]
  text = (root / "out" / "connectors.md").read_text()
  assert "| avgpool | decoder_only | 4 |" in text
  assert text.count("| avgpool |") == 2


def test_rerun_keeps_rows_and_from_json_rewrites_the_table(sweep):
  root, args = sweep
  md = root / "out" / "connectors.md"
  before = json.loads((root / "out" / "connectors.json").read_text())["rows"]
  assert connectors.main(args) == 0  # finished rows are reused, not re-run
  assert json.loads((root / "out" / "connectors.json").read_text())["rows"] == before
  table = md.read_text()
  md.unlink()
  assert connectors.main(["--from_json", "--output", str(root / "out")]) == 0
  assert md.read_text() == table


def test_bad_names_raise_naming_the_flag():
  with pytest.raises(ValueError, match="--connectors"):
    connectors.main(["--connectors", "perceiver", "--output", "/nonexistent"])


def test_qformer_stage1_fits_the_connector_it_initialises():
  """qformer_blip2: the stage-1 run's Q-Former and input norm have exactly the shapes of the
  Flamingo connector's (so init_from copies all of them), and the row's init_from names both."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  from mmjax import config_lib, summary  # pylint: disable=import-outside-toplevel
  from mmjax.models import family as family_lib  # pylint: disable=import-outside-toplevel

  def shapes(spec, overrides):
    fam = family_lib.build(config_lib.load_config(spec, overrides).model)
    params = summary.abstract_variables(fam)["params"]
    return jax.tree.map(summary.leaf_shape, params,
                        is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))

  stage1 = shapes("configs/qformer.py:micro",
                  connectors.qformer_stage1_overrides("micro", 2, "/clip")[3:])["stage1"]
  row = connectors.combo_overrides("qformer_blip2", "xattn", 2, "/clip", (), "/s1")
  flamingo = shapes("configs/flamingo.py:micro",
                    [o for o in row if not o.startswith("init_from")])["connector"]
  for module in ("ln_vision", "qformer"):
    assert stage1[module] == flamingo[module], module
  assert "model.connector=qformer" in row
  assert "'connector/qformer=/s1:stage1/qformer'" in [o for o in row if "init_from" in o][0]
