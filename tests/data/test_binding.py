"""shapes_interleaved kind='binding' (Frozen's fast binding): each episode names two colours by
two made-up words, consistently, with every k-shot suffix balanced, and held-out pairs only in
the held-out queries."""

import collections
import json

import pytest

from mmjax.data import datasets, shapes_world as world, tokenizers
from mmjax.data.builders import common, shapes_interleaved as si
from mmjax.evaluators import binding
from mmjax.evaluators import common as eval_common

from conftest import SMALL  # pylint: disable=import-error


def test_words_are_new_and_survive_the_tokenizers(sp_path):
  world_words = set()
  for i in range(200):
    scene = world.sample_scene(common.example_rng(common.make_config(), "train", i))
    for text in world.captions(scene, common.example_rng(common.make_config(), "train", i)):
      world_words |= set(text.lower().replace(".", " ").split())
  assert not world_words & set(si.BINDING_WORDS)
  sp = tokenizers.SentencePieceTokenizer("shapes_sp", sp_path)
  for w in si.BINDING_WORDS:
    text = f"{si.BINDING_PREFIX} {w}."
    assert sp.decode(sp.encode(text)) == text
    assert binding.first_word(sp.decode(sp.encode(f" {w}."))) == w


@pytest.mark.parametrize("split", ["train", "validation", "heldout"])
def test_episodes_bind_one_word_per_colour(split):
  config = common.make_config(kind="binding", shots=3)
  for i in range(40):
    e = si.generate_binding(config, split, i)
    assert len(e["images"]) == len(e["targets"]) == len(e["scenes"]) == 2 * 3 + 1
    objs = [world.Scene.from_json(s).objects for s in e["scenes"]]
    assert all(len(o) == 1 for o in objs)
    colours = [o[0].colour for o in objs]
    words = [binding.first_word(t[len(si.BINDING_PREFIX):]) for t in e["targets"]]
    # A bijection between the episode's two colours and its two words, the query included.
    assert len(set(colours)) == len(set(words)) == 2
    assert len(set(zip(colours, words))) == 2
    assert list(e["query_answers"]) == [words[-1]] * world.NUM_ANSWERS
    # Every suffix of 2k supports holds k images of each word.
    for k in range(1, 4):
      assert sorted(collections.Counter(words[:-1][-2 * k:]).values()) == [k, k]
    pairs = [(o[0].colour, o[0].shape) in world.HELDOUT_PAIRS for o in objs]
    assert pairs == [False] * 6 + [split == "heldout"]


def test_query_word_and_position_are_balanced():
  config = common.make_config(kind="binding", shots=2)
  episodes = [si.generate_binding(config, "train", i) for i in range(400)]
  first_named = [e["targets"][-1] == e["targets"][0] for e in episodes]
  last_named = [e["targets"][-1] == e["targets"][-2] for e in episodes]
  # Neither "the first word" nor "the last word" answers much more than half the queries.
  assert 0.4 < sum(first_named) / 400 < 0.6 and 0.4 < sum(last_named) / 400 < 0.6


def test_prompt_keeps_the_last_2k_supports():
  targets = [f"This is a {w}." for w in ("dax", "wug", "wug", "dax", "dax")]
  assert binding.prompt(targets, 0) == "<image>This is a"
  assert binding.prompt(targets, 1) == ("<image>This is a wug.<|endofchunk|>"
                                        "<image>This is a dax.<|endofchunk|><image>This is a")
  assert binding.prompt(targets, 2).count("<image>") == 5


def test_binding_source_from_the_data_config(data_dir):
  src = datasets.load_source("shapes_interleaved", "validation", data_dir=data_dir, **SMALL,
                             kind="binding", shots=2)
  r = src[0]
  assert len(r["images"]) == 5 and r["task"] == b"binding"
  assert json.loads(r["scenes"][0])["objects"][0]["colour"] in world.COLOURS


def test_evaluator_scores_a_model_that_copies_the_last_word(make_config, sp_path, monkeypatch):
  """A stand-in model that answers the last word named in its prompt: 0 at 0 shots, the rate at
  which the last support shares the query's colour from 1 shot on, and always one of the two."""
  import re  # pylint: disable=import-outside-toplevel
  import types  # pylint: disable=import-outside-toplevel

  import ml_collections  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel

  from mmjax.evaluators import EvalContext  # pylint: disable=import-outside-toplevel
  tok = tokenizers.with_media_tokens(tokenizers.SentencePieceTokenizer("shapes_sp", sp_path))
  seen = []

  def copy_last(family, params, batch, max_new, stop_ids, lengths):
    del family, params
    assert batch["media_mask"].sum(1).tolist() == [t.count(tok.token_id("<image>"))
                                                   for t in batch["tokens"].tolist()]
    out = []
    for row, n in zip(batch["tokens"].tolist(), lengths.tolist()):
      named = re.findall(r"This is a (\w+)\.", tok.decode(row[:n]))
      seen.append(len(named))
      ids = tok.encode(f" {named[-1]}.") if named else []
      out.append((ids + [stop_ids[0]] * max_new)[:max_new])
    return np.array(out, np.int32)

  monkeypatch.setattr(eval_common.generate, "greedy", copy_last)
  family = types.SimpleNamespace(decode_step=None, decode=None,
                                 lm_config=ml_collections.ConfigDict(dict(max_len=256)))
  cfg = ml_collections.ConfigDict(dict(type="binding", shots=(0, 1, 2), num_examples=8))
  data = make_config()
  results = binding.BindingEvaluator("b", cfg, EvalContext(family, data, tok)).run(None)
  records = datasets.load_source("shapes_interleaved", "validation", data_dir=data.data_dir,
                                 **SMALL, kind="binding", shots=2)
  last_is_right = np.mean([r["targets"][-2] == r["targets"][-1] for r in records])
  assert seen == [0] * 8 + [2] * 8 + [4] * 8  # supports named in each prompt
  assert results["b/0shot_accuracy"] == 0.0 and results["b/0shot_either_word"] == 0.0
  for k in (1, 2):
    assert results[f"b/{k}shot_accuracy"] == pytest.approx(last_is_right)
    assert results[f"b/{k}shot_either_word"] == 1.0
  assert data.interleaved_kind == "documents"  # the run's config is left as it was
