"""shapes_instruct: every answer recomputed from the stored scene, chain-of-thought rationales
ending in the plain answer, and chat rows (single and packed) whose loss covers exactly the
assistant tokens."""

import re

import numpy as np
import pytest

from mmjax.batch import validate_batch
from mmjax.data import conversation as C
from mmjax.data import pipeline, shapes_chat, tasks
from mmjax.data import shapes_world as world
from mmjax.data import tokenizers as tok_lib
from mmjax.data.builders import common
from mmjax.data.builders import shapes_instruct as SI

NUM = 200  # Records checked (text only); 32 rendered for the pipeline tests.


@pytest.fixture(scope="module")
def records():
  config = common.make_config(image_size=16)
  return [SI.generate_example(config, "train", i, render=i < 32) for i in range(NUM)]


def _resolve(scene, phrase):
  """The one object a 'the large red circle' / 'the red object' phrase names."""
  words = phrase.split()[1:]
  words = words[:-1] if words[-1] == "object" else words
  hits = [o for o in scene.objects
          if all(w in (o.size, o.shading, o.colour, o.shape) for w in words)]
  assert len(hits) == 1, (phrase, scene)
  return hits[0]


def _count(scene, what):
  if what == "objects":
    return len(scene.objects)
  if what.endswith(" objects"):
    return sum(o.colour == what.split()[0] for o in scene.objects)
  return sum(world.plural(o.shape) == what for o in scene.objects)


def _expected(scene, question):
  """The answer to a shapes_instruct question, computed from the scene independently."""
  objs = scene.objects
  if question in ("Describe the picture.", "What do you see in this image?",
                  "Describe this scene in detail."):
    n = len(objs)
    items = ", ".join(("an " if o.size[0] in "aeiou" else "a ") + f"{o.size} {o.colour} {o.shape}"
                      for o in objs)
    return (f"{world.NUMBER_WORDS[n].capitalize()} object{'s' if n > 1 else ''} on a "
            f"{scene.background} background: {items}.")
  if m := re.fullmatch(r"How many objects are not (\w+)\?", question):
    return str(sum(o.colour != m[1] for o in objs))
  if m := re.fullmatch(r"How many (.+) are there\?", question):
    return str(_count(scene, m[1]))
  if m := re.fullmatch(r"Are there more (\w+) than (\w+) objects\?", question):
    return "yes" if _count(scene, m[1] + " objects") > _count(scene, m[2] + " objects") else "no"
  if m := re.fullmatch(r"Are there more (\w+) than (\w+)\?", question):
    return "yes" if _count(scene, m[1]) > _count(scene, m[2]) else "no"
  if m := re.fullmatch(r"Is (the .+?) (to the left of|to the right of|above|below) (the .+)\?",
                       question):
    a, b = _resolve(scene, m[1]), _resolve(scene, m[3])
    truth = {"to the left of": a.x < b.x, "to the right of": a.x > b.x, "above": a.y < b.y,
             "below": a.y > b.y}[m[2]]
    return "yes" if truth else "no"
  if question == "Which colour do most objects have?":
    colours = [o.colour for o in objs]
    counts = sorted(((colours.count(c), c) for c in set(colours)), reverse=True)
    assert counts[0][0] > counts[1][0]
    return counts[0][1]
  raise AssertionError(f"unexpected question {question!r}")


_EXTREME = {"furthest to the left": lambda o: o.x, "furthest to the right": lambda o: -o.x,
            "highest up": lambda o: o.y, "lowest down": lambda o: -o.y}


def test_answers_are_true_of_the_scene_and_rationales_end_in_them(records):
  kinds = set()
  for r in records:
    scene = world.Scene.from_json(r["scene"])
    roles = r["roles"]
    assert len(roles) == len(r["contents"]) == len(r["cot_contents"]) == len(r["turn_answers"])
    turns = C.turns([{"role": a, "content": c} for a, c in zip(roles, r["contents"])])
    assert C.num_images(turns) == 1 and tok_lib.IMAGE_TOKEN in r["contents"][roles.index("user")]
    assert 2 <= roles.count("assistant") <= 4
    for k, role in enumerate(roles):
      if role != "assistant":
        continue
      plain, cot, answer = r["contents"][k], r["cot_contents"][k], r["turn_answers"][k]
      question = r["contents"][k - 1].replace(tok_lib.IMAGE_TOKEN, "").replace(
          "Look at this picture:", "").strip()
      assert r["cot_contents"][k - 1] == r["contents"][k - 1].replace(
          question, question + shapes_chat.COT_REQUEST)
      assert plain == answer and C.final_answer(cot) == plain
      kinds.add(r["kinds"][k])
      if m := re.fullmatch(r"Which object is (.+)\?", question):
        key = _EXTREME[m[1]]
        winner = _resolve(scene, plain)
        assert all(key(winner) < key(o) - shapes_chat.MARGIN for o in scene.objects
                   if o is not winner)
      else:
        assert plain == _expected(scene, question), (question, scene)
  assert kinds == set(shapes_chat.KINDS)


def test_rationale_arithmetic_by_hand():
  scene = world.Scene("white", (
      world.Obj("circle", "red", "large", "matte", 0.2, 0.2),
      world.Obj("star", "red", "small", "shiny", 0.8, 0.2),
      world.Obj("square", "blue", "large", "matte", 0.5, 0.8)))
  ex = shapes_chat.count_not(scene, np.random.default_rng(0))
  colour = ex.question.split()[-1].rstrip("?")
  k = {"red": 2, "blue": 1}[colour]
  assert ex.answer == str(3 - k)
  assert ex.rationale == (f"There are 3 objects and {k} of them {'is' if k == 1 else 'are'} "
                          f"{colour}, so 3 - {k} = {3 - k} are not {colour}. Answer: {3 - k}")
  ex = shapes_chat.majority(scene, np.random.default_rng(0))
  assert ex.answer == "red" and ex.rationale == (
      "Counting the objects by colour: red 2, blue 1. Red has the most. Answer: red")


def _processor(config, tok):
  return tasks.ExampleProcessor("shapes_instruct", 0, config, tok, train=False,
                                frames_per_media=1)


def _assistant_ids(tok, contents, roles):
  return [i for c, role in zip(contents, roles) if role == "assistant"
          for i in tok.encode(c) + [tok.token_id(tok_lib.IM_END_TOKEN)]]


@pytest.mark.parametrize("cot", [False, True])
def test_chat_rows_train_exactly_the_assistant_tokens(records, make_config, tok, cot):
  config = make_config(task="chat", datasets=("shapes_instruct",), text_length=512, max_media=2,
                       chain_of_thought=cot)
  proc = _processor(config, tok)
  key = "cot_contents" if cot else "contents"
  for index in range(8):
    r = records[index]
    row = proc(0, (index, r))
    validate_batch({k: v[None] for k, v in row.items()})
    assert tok.vocab_size == tok.base_vocab_size + 4  # <image> <|endofchunk|> + ChatML
    assert row["tokens"][row["loss_mask"] == 1].tolist() == _assistant_ids(tok, r[key],
                                                                          r["roles"])
    assert row["media_mask"].tolist() == [True, False] and row["media_locations"].sum() == 1
    assert row["tokens"][0] == tok.bos_id and row["loss_mask"][0] == 0


def test_packed_row_is_the_single_rows_back_to_back(records, make_config, tok):
  single = _processor(make_config(task="chat", datasets=("shapes_instruct",), text_length=512,
                                  max_media=3), tok)
  config = make_config(task="chat", datasets=("shapes_instruct",), text_length=512, max_media=3,
                       pack_conversations=3)
  packed = _processor(config, tok)
  group = [(k, records[k]) for k in (3, 4, 5)]
  row = packed(0, group)
  rows = [single(0, g) for g in group]
  lengths = [int((r["tokens"] != tok.pad_id).sum()) for r in rows]
  assert sum(lengths) <= 512
  for key in ("tokens", "loss_mask", "media_locations"):
    np.testing.assert_array_equal(
        row[key][:sum(lengths)], np.concatenate([r[key][:n] for r, n in zip(rows, lengths)]))
  assert (row["tokens"][sum(lengths):] == tok.pad_id).all()
  assert row["media_mask"].tolist() == [True] * 3
  for m in range(3):
    np.testing.assert_array_equal(row["media"][m], rows[m]["media"][0])
  # The same group in 160 tokens: the conversations that do not fit are left out whole.
  short = _processor(make_config(task="chat", datasets=("shapes_instruct",), text_length=160,
                                 max_media=3, pack_conversations=3), tok)
  row = short(0, group)
  chosen = [0]
  for k in (1, 2):
    if sum(lengths[j] for j in chosen) + lengths[k] <= 160:
      chosen.append(k)
  n = sum(lengths[j] for j in chosen)
  np.testing.assert_array_equal(row["tokens"][:n],
                                np.concatenate([rows[j]["tokens"][:lengths[j]] for j in chosen]))
  assert row["media_mask"].sum() == len(chosen) == row["media_locations"].sum()


def test_pipeline_packs_groups_of_records(records, make_config, tok):
  config = make_config(task="chat", datasets=("shapes_instruct",), text_length=256,
                       max_media=2, pack_conversations=2, batch_size=4, split="validation")
  it = pipeline.make_pipeline(config, tokenizer=tok, process_index=0, process_count=1,
                              train=False, sources={"shapes_instruct": records[:32]})
  batch = next(it)
  it.close()
  validate_batch(batch)
  assert batch["tokens"].shape == (4, 256) and batch["media"].shape == (4, 2, 1, 32, 32, 3)
  # Row 0 packs records 0 and 1 (in stored order) or, when 1 does not fit, record 0 alone.
  proc = _processor(config, tok)
  np.testing.assert_array_equal(batch["tokens"][0], proc(0, [(0, records[0]),
                                                           (1, records[1])])["tokens"])
  bos = (batch["tokens"] == tok.bos_id).sum(axis=1)
  assert (bos >= 1).all() and (bos <= 2).all() and (bos == batch["media_mask"].sum(1)).all()


def test_lm_task_reads_the_conversation_text(records, make_config, tok):
  proc = tasks.ExampleProcessor("shapes_instruct", 0, make_config(
      task="lm", datasets=("shapes_instruct",), text_length=512), tok, train=False,
                                frames_per_media=1)
  r = records[0]
  row = proc(0, (0, r))
  text = " ".join(c.replace(tok_lib.IMAGE_TOKEN, "").strip() for c in r["contents"])
  n = len(tok.encode(text)) + 2
  assert row["tokens"][:n].tolist() == [tok.bos_id] + tok.encode(text) + [tok.eos_id]
  assert row["loss_mask"][1:n].all() and not row["loss_mask"][n:].any()


def test_bad_conversations_are_skipped_or_named(records, make_config, tok):
  r = dict(records[0])
  r["images"] = list(r["images"]) * 2  # Two images for one <image> marker.
  config = make_config(task="chat", datasets=("shapes_instruct",), text_length=256)
  assert "2 images for 1 <image> markers" in _processor(config, tok)(0, (7, r))[tasks.BAD_KEY]
  strict = _processor(make_config(task="chat", datasets=("shapes_instruct",), text_length=256,
                                  on_bad_example="raise"), tok)
  r = dict(records[0], roles=["assistant"] + list(records[0]["roles"][1:]))
  named = r"field .roles.: shapes_instruct/train record 7: .*turn 0"
  with pytest.raises(ValueError, match=named):
    strict(0, (7, r))
  with pytest.raises(ValueError, match="data.pack_conversations must be >= 1"):
    make_config(task="chat", pack_conversations=0)
  with pytest.raises(ValueError, match="data.chat_template must be one of"):
    make_config(task="chat", chat_template="llama3")


def test_chat_evaluator_prompts_and_scoring(records, make_config, tok):
  from mmjax.evaluators import EvalContext, chat  # pylint: disable=import-outside-toplevel
  ctx = EvalContext(family=None, data_config=make_config(task="chat",
                                                         datasets=("shapes_instruct",)),
                    tokenizer=tok)
  items = chat.prompts(ctx, records[:4], 512)
  assert len(items) == sum(r["roles"].count("assistant") for r in records[:4])
  row, media, answer, kind = items[0]
  r = records[0]
  k = r["roles"].index("assistant")
  turns = C.turns([{"role": a, "content": c} for a, c in zip(r["roles"], r["contents"])])
  head = [tok.bos_id] + [i for seg, _ in C.TEMPLATES["chatml"].segments(turns[:k], tok.encode,
                                                                       C.chat_ids(tok))
                         for i in seg]
  # The conversation so far, then the generation prompt <|im_start|>assistant\n.
  assert row == head + [514] + tok.encode("assistant\n")
  assert media.shape == (1, 32, 32, 3) and (answer, kind) == (r["turn_answers"][k], r["kinds"][k])
  assert chat.score(["yes", "no", "So. Answer: 3"], ["yes", "yes", "3"], cot=False) == [
      True, False, False]
  assert chat.score(["Answer: yes", "yes", "So. Answer: 3"], ["yes", "yes", "3"], cot=True) == [
      True, False, True]
