"""House-style captions: the named caption templates, style-consistent few-shot episodes
(shapes_interleaved kind='styled_episodes') and the few-shot evaluator's `house_style` mode, in
which the demonstrations are the only clue to the style the reference is written in."""

import collections
import re
import types

import ml_collections
import numpy as np
import pytest

from mmjax.data import shapes_world as world, tokenizers
from mmjax.data.builders import common, shapes_interleaved as si
from mmjax.evaluators import EvalContext, fewshot, suites
from mmjax.evaluators import common as eval_common


def _scenes(n, heldout="any"):
  for i in range(n):
    rng = np.random.default_rng([7, 0, i])
    yield world.sample_scene(rng, heldout=heldout), rng


def test_captions_keep_their_random_stream():
  """The committed tables were trained on these exact captions (recorded before the templates
  got names): naming them must not move a single draw."""
  got = []
  for i in range(2):
    rng = np.random.default_rng([0, 0, i])
    got.append(world.captions(world.sample_scene(rng), rng, num=3))
  assert got == [
      ["A blue triangle on a beige background.",
       "Six objects on a beige background: a small blue triangle, a large grey diamond, a large "
       "orange square, a large cyan diamond, a small red triangle, a large cyan square.",
       "A blue triangle below a grey diamond."],
      ["Six objects on a beige background: a large yellow circle, a small red circle, a large "
       "grey diamond, a large cyan square, a large red star, a small orange triangle.",
       "A small shiny orange triangle is in the picture.",
       "There are six shapes in this image."]]
  episode = si.generate_episode(common.make_config(kind="episodes", shots=2), "train", 0)
  assert episode["targets"] == [
      "A small matte red circle is in the picture.", "There are six shapes in this image.",
      "A slate scene with a large grey diamond, a large orange circle, a large yellow diamond."]
  assert "style" not in episode


def test_every_style_reads_back_from_its_caption():
  seen = collections.Counter()
  for scene, rng in _scenes(400):
    caps = world.styled_captions(scene, rng)
    assert list(caps) == [s for s in world.CAPTION_STYLES if s in caps]
    assert set(world.ALWAYS_STYLES) <= set(caps)
    for style, text in caps.items():
      seen[style] += 1
      assert world.caption_style(text) == style, text
      if style in ("count_listing", "picture_of", "scene_with"):
        # A generation cut short in its list still shows its style.
        cut = " ".join(text.split(": ")[0].split()[:6]) + (":" if ": " in text else " ")
        assert world.caption_style(cut) == style, cut
  assert set(seen) == set(world.CAPTION_STYLES)  # the relation styles occur too
  assert world.caption_style("a red circle") is None
  assert world.caption_style("") is None
  # Without an rng counts are words, so references are deterministic.
  scene = next(_scenes(1))[0]
  assert world.styled_captions(scene) == world.styled_captions(scene)


@pytest.mark.parametrize("split", ["train", "heldout"])
def test_styled_episodes_share_one_style(split):
  config = common.make_config(kind="styled_episodes", shots=4)
  styles = collections.Counter()
  for i in range(120):
    e = si.generate_episode(config, split, i)
    assert len(e["images"]) == len(e["targets"]) == 5
    if e["task"] == "caption":
      assert e["style"] in world.ALWAYS_STYLES
      assert [world.caption_style(t) for t in e["targets"]] == [e["style"]] * 5
      assert list(e["query_answers"]) == [e["targets"][-1]] * world.NUM_ANSWERS
      styles[e["style"]] += 1
    else:
      assert e["style"] == "" and all(p.endswith("?") for p in e["prompts"])
  assert set(styles) == set(world.ALWAYS_STYLES) and min(styles.values()) >= 4


def test_unstyled_episodes_mix_styles():
  """The contrast the new kind exists for: in 'episodes' a caption episode's demonstrations
  mostly do not share the query's style."""
  config = common.make_config(kind="episodes", shots=4)
  same = [world.caption_style(e["targets"][-2]) == world.caption_style(e["targets"][-1])
          for e in (si.generate_episode(config, "train", i) for i in range(0, 200, 2))]
  assert np.mean(same) < 0.35


def _evaluator(make_config, sp_path, **cfg):
  tok = tokenizers.with_media_tokens(tokenizers.SentencePieceTokenizer("shapes_sp", sp_path))
  family = types.SimpleNamespace(decode_step=None, decode=None,
                                 lm_config=ml_collections.ConfigDict(dict(max_len=768)))
  config = ml_collections.ConfigDict(dict(type="fewshot", house_style=True, pool_size=64,
                                          num_examples=8, seeds=(0, 1), **cfg))
  return fewshot.FewShotEvaluator("hs", config, EvalContext(family, make_config(), tok)), tok


@pytest.fixture(name="records_and_pool")
def _records_and_pool(make_config):
  """8 validation queries and a pool of 64 training scenes, as the evaluator loads them."""
  data = make_config()
  return (eval_common.load_records(data, "validation", 8),
          eval_common.load_records(data, "train", 64))


def test_house_style_demos_and_reference_share_the_query_style(make_config, sp_path,
                                                               records_and_pool):
  ev, _ = _evaluator(make_config, sp_path, task="captioning")
  records, pool = records_and_pool
  q0, d0, c0 = ev._house_style(records, pool, 0, 0)  # pylint: disable=protected-access
  q4, d4, c4 = ev._house_style(records, pool, 0, 4)  # pylint: disable=protected-access
  assert q0 == q4  # the same queries at every shot count
  assert [len(d) for d in d0] == [0] * 8 and [len(c) for c in c4] == [4] * 8
  for r, q, demos, idx in zip(records, q4, d4, c4):
    assert q["captions"] == [q["caption"]] and world.caption_style(q["caption"]) == q["style"]
    assert q["caption"] == world.styled_captions(world.Scene.from_dict(r["scene"]))[q["style"]]
    assert len(set(idx.tolist())) == 4
    for d, j in zip(demos, idx):
      assert d["caption"] == world.styled_captions(
          world.Scene.from_dict(pool[j]["scene"]))[q["style"]]
  assert len({q["style"] for q in q4}) > 1


def test_house_style_vqa_demos_ask_the_query_kind(make_config, sp_path, records_and_pool):
  ev, _ = _evaluator(make_config, sp_path, task="vqa")
  records, pool = records_and_pool
  queries, demos, chosen = ev._house_style(records, pool, 1, 3)  # pylint: disable=protected-access
  for r, q, row, idx in zip(records, queries, demos, chosen):
    kind = r["question_types"][r["questions"].index(q["question"])]
    for d, j in zip(row, idx):
      k = pool[j]["questions"].index(d["question"])
      assert pool[j]["question_types"][k] == kind and pool[j]["answer"][k] == d["answer"]
  with pytest.raises(ValueError, match="raise pool_size"):
    ev._house_style(records, pool[:2], 1, 3)  # pylint: disable=protected-access


def test_house_style_needs_random_shapes(make_config, sp_path):
  with pytest.raises(ValueError, match="house_style=True needs selection='random'"):
    _evaluator(make_config, sp_path, task="captioning", selection="rices")


def test_a_model_that_copies_the_last_demo_matches_the_style(make_config, sp_path, monkeypatch):
  """A stand-in that writes its prompt's last caption back: no style at 0 shots, the query's
  style whenever it has one demonstration, and its CIDEr is the copied caption's."""
  ev, tok = _evaluator(make_config, sp_path, task="captioning", shots=(0, 1, 3),
                       max_new_tokens=48, **suites.SHAPES_FORMATS["captioning"])
  image, eoc = tok.token_id("<image>"), tok.token_id("<|endofchunk|>")
  demos_seen = []

  def copy_last(family, params, batch, max_new, stop_ids, lengths):
    del family, params
    out = []
    for row, n in zip(batch["tokens"].tolist(), lengths.tolist()):
      prompt = row[:n]
      ends = [i for i, t in enumerate(prompt) if t == eoc]
      demos_seen.append(len(ends))
      if not ends:
        ids = []
      else:
        start = max(i for i, t in enumerate(prompt[:ends[-1]]) if t == image) + 1
        ids = prompt[start:ends[-1]]
        styles = {world.caption_style(s) for s in re.split(
            "<image>|<\\|endofchunk\\|>", tok.decode(prompt)) if s.strip()}
        assert len(styles) == 1  # one style per prompt
      out.append((ids + [stop_ids[0]] * max_new)[:max_new])
    return np.array(out, np.int32)

  monkeypatch.setattr(eval_common.generate, "greedy", copy_last)
  results = ev.run(None)
  assert sorted(set(demos_seen)) == [0, 1, 3]
  assert results["hs/0shot_style_match"] == 0.0 and results["hs/0shot_cider"] == 0.0
  assert results["hs/1shot_style_match"] == results["hs/3shot_style_match"] == 1.0
  # Another scene's caption in the right style shares words with the reference: CIDEr > 0.
  assert results["hs/1shot_cider"] > 0.0
