"""experiments/recipe.py end to end at micro size: two steps of each stage (CLIP, the LM,
Flamingo on the mixture), then every stage's evaluation at its smallest, into a JSON and markdown
whose numbers are checked for range (`--eval_size smoke`: fewer evaluators). Plus the configs the stages build (no training): stage 3
freezes both towers, initialises them from stages 1-2 and holds few-shot episodes; the smollm2
scale swaps in SmolLM2's LM and tokenizer. (The SmolLM2 weights themselves are tested in
tests/convert/test_gguf.py.)"""

import json
import os
import sys

import pytest

EXPERIMENTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "experiments")
sys.path.insert(0, EXPERIMENTS)

import recipe  # noqa: E402  pylint: disable=wrong-import-position,import-error

DIRS = {"clip": "/runs/clip", "lm": "/runs/lm"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
  root = tmp_path_factory.mktemp("recipe")
  out = root / "out"
  assert recipe.main(["--scale", "micro", "--workdir", str(root / "work"), "--seeds", "0",
                      "--clip_steps", "2", "--lm_steps", "2", "--steps", "2",
                      "--eval_size", "smoke", "--offline_data", "no",
                      "--output", str(out)]) == 0
  with open(out / "recipe.json", encoding="utf-8") as f:
    saved = json.load(f)
  return saved, (out / "recipe.md").read_text(encoding="utf-8")


def test_every_stage_trained_and_was_evaluated(smoke):
  saved, md = smoke
  clip = saved["stage1"]["clip"]
  assert clip["step"] == 2
  assert 0.0 <= clip["heldout_shape/top1"] <= 1.0
  lm = saved["stage2"]["lm"]
  assert lm["step"] == 2 and "ppl_text/perplexity" not in lm  # --offline_data no: no `text`
  # Two steps from a 512-token vocabulary: near-uniform, finite.
  assert 1.0 < lm["ppl_shapes/perplexity"] < 10_000
  (run,) = saved["stage3"]
  assert run["seed"] == 0 and run["step"] == 2
  for shots in (0, 2):  # --eval_size smoke: captioning on unseen scenes, VQA on held-out pairs
    assert 0.0 <= run[f"captioning_validation/{shots}shot_cider"] <= 10.0
    assert 0.0 <= run[f"vqa_heldout/{shots}shot_accuracy"] <= 1.0
  assert any(k.startswith("samples/qa") for k in run)
  # House style (captioning on unseen scenes): a style is unknowable at 0 shots.
  for shots in (0, 1):
    assert 0.0 <= run[f"captioning_style_validation/{shots}shot_cider"] <= 10.0
    assert 0.0 <= run[f"captioning_style_validation/{shots}shot_style_match"] <= 1.0
  # Fast binding, with the real model: a word is unknowable at 0 shots.
  assert run["binding_validation/0shot_accuracy"] == 0.0
  assert 0.0 <= run["binding_validation/1shot_accuracy"] <= 1.0
  assert 0.0 <= run["binding_validation/1shot_either_word"] <= 1.0
  assert "Fast binding" in md and "| validation | 0.000 ± 0.000 (0.00) |" in md
  table = recipe.fewshot_table(saved["stage3"])
  assert table["vqa_heldout"][2] == (run["vqa_heldout/2shot_accuracy"], 0.0, 1)
  assert table["captioning_style_validation style_match"][1] == (
      run["captioning_style_validation/1shot_style_match"], 0.0, 1)
  assert "vqa_style_heldout" not in table and "'style_match': the share" in md
  for title in ("## Stage 1", "## Stage 2", "## Stage 3: Flamingo", "vqa_heldout",
                "Samples"):
    assert title in md, title


def test_report_says_when_a_cell_skipped_some_seeds():
  """A seed whose 32-shot prompt did not fit lm.max_len is left out of that cell's mean, and
  the cell says over how many seeds it was averaged."""
  key = "captioning_validation/{}shot_cider"
  runs = [{"seed": 0, key.format(0): 0.5, key.format(32): 0.2},
          {"seed": 1, key.format(0): 0.3, key.format(32): 0.4},
          {"seed": 2, key.format(0): 0.4, key.format(32): "skipped: prompt exceeds lm.max_len"}]
  table = recipe.fewshot_table(runs)
  assert table["captioning_validation"][0] == pytest.approx((0.4, 0.1, 3))
  assert table["captioning_validation"][32] == pytest.approx((0.3, 0.02 ** 0.5, 2))  # sample std
  md = recipe.report({"command": "c", "stage3": runs})
  assert "| captioning_validation | 0.400 ± 0.100 |" in md
  assert "0.300 ± 0.141 (2 of 3) |" in md


def test_stage3_is_the_recipe():
  config = recipe.stage3_config("micro", 1, 10, DIRS)
  assert config.model.freeze_vision and config.model.freeze_lm
  assert config.init_from == ("vision=/runs/clip:image", "lm=/runs/lm:")
  assert config.data.interleaved_kind == "episodes"
  assert config.data.tasks == ("interleaved", "caption", "vqa", "video_qa")
  assert config.data.mixing == "batch" and config.optim.grad_accum_steps == 4
  assert config.model.lm.max_len == recipe.FEWSHOT_MAX_LEN and config.seed == 1
  assert recipe.stage3_config("micro", 0, 10, DIRS, "documents").data.interleaved_kind == \
      "documents"
  styled = recipe.stage3_config("micro", 0, 10, DIRS, "styled_episodes", shots=8,
                                text_length=160)
  assert (styled.data.interleaved_kind, styled.data.shots, styled.data.max_media) == \
      ("styled_episodes", 8, 9)
  with pytest.raises(ValueError, match="--interleaved"):
    recipe.stage3_config("micro", 0, 10, DIRS, "papers")
  # The paper's closed gates by default; --gate_init starts them off zero.
  assert config.model.xattn.gate_init == 0.0
  assert recipe.stage3_config("micro", 0, 10, DIRS, gate_init=0.1).model.xattn.gate_init == 0.1
  # Longer episodes: every support and the query get a media slot, rows and the LM's stage 2
  # the longer length; the default keeps flamingo_ablations' rows.
  assert (config.data.shots, config.data.max_media, config.data.text_length) == (4, 4, 64)
  long = recipe.stage3_config("micro", 0, 10, DIRS, shots=8, text_length=160)
  assert (long.data.shots, long.data.max_media, long.data.text_length) == (8, 9, 160)
  assert recipe.stage2_config("micro", 10, False, text_length=160).data.text_length == 160
  assert recipe.stage2_config("micro", 10, False).data.text_length == 64
  # Rows past the micro LM's 128-token context widen it (rotary: no new parameters).
  assert recipe.stage2_config("micro", 10, False).model.max_len == 128
  assert recipe.stage2_config("micro", 10, False, text_length=512).model.max_len == 512
  # Binding episodes: `shots` images per word, two words, then the query.
  bind = recipe.stage3_config("micro", 0, 10, DIRS, "binding", shots=2, text_length=96)
  assert (bind.data.interleaved_kind, bind.data.shots, bind.data.max_media) == ("binding", 2, 5)


def test_binding_table_reads_accuracy_and_format():
  runs = [{"seed": s, "binding_validation/0shot_accuracy": 0.0,
           "binding_validation/0shot_either_word": 0.0,
           "binding_validation/1shot_accuracy": acc, "binding_validation/1shot_either_word": 1.0}
          for s, acc in ((0, 0.5), (1, 0.7))]
  lines = recipe.binding_table(runs)
  assert "| split | 0 shots | 1 shots |" in lines
  assert "| validation | 0.000 ± 0.000 (0.00) | 0.600 ± 0.141 (1.00) |" in lines
  assert not any(line.startswith("| heldout") for line in lines)
  assert recipe.binding_table([{"seed": 0}]) == []


def test_smollm2_scale_uses_smollm2():
  config = recipe.stage3_config("smollm2", 0, 10, DIRS)
  assert config.data.tokenizer == "smollm2"
  assert (config.model.lm.depth, config.model.lm.width, config.model.lm.vocab_size) == \
      (30, 576, 49152)
  assert config.model.xattn.cross_attn_every_n == 3 and config.model.freeze_lm
  assert config.model.vision.width == recipe.stage1_config("smollm2", "clip", 1, False) \
      .model.vision.width
  assert recipe.smollm2_lm_config().data.tokenizer == "smollm2"
  with pytest.raises(ValueError, match="smollm2"):
    recipe.stage2_config("smollm2", 10, False)
  with pytest.raises(ValueError, match="--stage1"):
    recipe.stage1_config("micro", "coca", 1, False)


def test_stage1_siglip_and_evals():
  config = recipe.stage1_config("micro", "siglip", 3, True, max_examples=8)
  assert config.model.family == "siglip" and config.total_steps == 3
  assert config.data.datasets == ("shapes", "emoji", "tuxpaint")
  evals = recipe.stage1_evals(True, "small")
  assert {"twemoji", "fashion_mnist", "heldout_shape", "shape", "retrieval"} <= set(evals)


def test_stage1_lit_builds_the_lit_config():
  """`--stage1 lit`: the Flamingo preset's ViT against the locked MiniLM tower (config only)."""
  clip = recipe.stage1_config("tiny", "clip", 10, False)
  lit = recipe.stage1_config("tiny", "lit", 10, False)
  assert lit.model.text.kind == "bert" and (lit.model.text.width, lit.model.text.depth) == \
      (384, 6)
  assert lit.optim.frozen == ("^text/bert/",) and lit.data.tokenizer == "minilm"
  assert lit.init_from == ("text/bert=hf_bert:weights/all-MiniLM-L6-v2:",)
  assert lit.model.vision.to_dict() == clip.model.vision.to_dict()  # what stage 3 loads
  assert lit.total_steps == 10 and lit.data.image_size == clip.data.image_size
  micro = recipe.stage1_config("micro", "lit", 2, False)
  assert micro.model.text.kind == "bert" and not micro.init_from  # CI: random micro BERT
  with pytest.raises(ValueError, match="--stage1"):
    recipe.stage1_config("tiny", "lip", 10, False)
