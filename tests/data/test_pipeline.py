"""grain pipelines: determinism, exact resume, sharding, masks, bad data, global arrays."""

import io
import json

import jax
import numpy as np
import pytest
from jax.sharding import AxisType
from PIL import Image

from mmjax.batch import validate_batch
from mmjax.data import datasets, pipeline, preprocess, tasks, tokenizers

from conftest import SMALL  # pylint: disable=import-error


def _take(it, n):
  return [next(it) for _ in range(n)]


def _same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(np.asarray(x[k]), np.asarray(y[k]), err_msg=k)


@pytest.mark.parametrize("task", ["caption", "interleaved"])
def test_two_runs_give_identical_batches(make_config, tok, task):
  ds = ("shapes_interleaved",) if task == "interleaved" else ("shapes",)
  c = make_config(task=task, datasets=ds)
  runs = [_take(pipeline.make_pipeline(c, tokenizer=tok, process_index=0, process_count=1), 3)
          for _ in range(2)]
  _same(*runs)
  for b in runs[0]:
    validate_batch(b)
  other = _take(pipeline.make_pipeline(make_config(task=task, datasets=ds, seed=1),
                                       tokenizer=tok, process_index=0, process_count=1), 1)
  assert not np.array_equal(other[0]["tokens"], runs[0][0]["tokens"])


@pytest.mark.parametrize("num_workers", [0, 1])
def test_resume_mid_epoch_yields_exactly_the_next_batches(make_config, tok, num_workers):
  # 64 examples / batch 8 = 8 batches an epoch: resume at 5, read across the epoch boundary.
  c = make_config(task="caption", num_workers=num_workers)
  it = pipeline.make_pipeline(c, tokenizer=tok, process_index=0, process_count=1)
  _take(it, 5)
  state = json.loads(json.dumps(it.get_state()))  # Must survive JSON (orbax stores it so).
  expected = _take(it, 5)
  it.close()
  it2 = pipeline.make_pipeline(c, tokenizer=tok, process_index=0, process_count=1)
  it2.set_state(state)
  _same(_take(it2, 5), expected)
  assert it2.stats()["batches"] == 10
  it2.close()


def test_process_shards_are_disjoint_and_cover_the_split(make_config, tok):
  c = make_config(task="caption", batch_size=8)
  seen = []
  for p in range(2):
    it = pipeline.make_pipeline(c, tokenizer=tok, process_index=p, process_count=2, train=False)
    shard = {b["image"][i].tobytes() for b in it for i in range(len(b["image"]))}
    assert len(shard) == SMALL["num_train"] // 2
    seen.append(shard)
  assert not seen[0] & seen[1]
  c1 = make_config(task="caption", batch_size=8)
  everything = {b["image"][i].tobytes() for b in pipeline.make_pipeline(
      c1, tokenizer=tok, process_index=0, process_count=1, train=False)
                for i in range(len(b["image"]))}
  assert seen[0] | seen[1] == everything


def _png(colour=(255, 0, 0), mode="RGB"):
  buf = io.BytesIO()
  Image.new(mode, (32, 32), colour if mode == "RGB" else 0).save(buf, format="PNG")
  return buf.getvalue()


def test_interleaved_masks_by_hand(make_config):
  tok = tokenizers.get_tokenizer("clip")  # Word-level ids make the hand count easy.
  doc = {"images": [_png(), _png((0, 0, 255))], "texts": [b"hello", b"red", b"blue"],
         "scenes": [b"{}", b"{}"]}
  c = make_config(task="interleaved", datasets=("shapes_interleaved",), batch_size=1,
                  text_length=12, max_media=3)
  b = next(pipeline.make_pipeline(c, tokenizer=tok, process_index=0, process_count=1,
                                  train=False, sources={"shapes_interleaved": [doc]}))
  img, eoc = tok.token_id("<image>"), tok.token_id("<|endofchunk|>")
  hello, red, blue = (tok.encode(w)[0] for w in ("hello", "red", "blue"))
  # [BOS] hello <image> red <eoc> <image> blue <eoc> [EOS] pad pad pad
  assert b["tokens"][0].tolist() == [tok.bos_id, hello, img, red, eoc, img, blue, eoc,
                                     tok.eos_id, 0, 0, 0]
  assert b["media_locations"][0].tolist() == [0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]
  # Loss on each chunk's text and its <|endofchunk|>; none on BOS, preamble, <image>, EOS, pad.
  assert b["loss_mask"][0].tolist() == [0, 0, 0, 1, 1, 0, 1, 1, 0, 0, 0, 0]
  assert b["media_mask"][0].tolist() == [True, True, False]
  assert b["media"].shape == (1, 3, 1, 32, 32, 3)
  np.testing.assert_allclose(b["media"][0, 0, 0, 0, 0], [1, -1, -1])  # Red, in [-1, 1].
  np.testing.assert_allclose(b["media"][0, 1, 0, 0, 0], [-1, -1, 1])
  assert not b["media"][0, 2].any()
  # Truncation drops the second image together with its <image> token.
  c = make_config(task="interleaved", datasets=("shapes_interleaved",), batch_size=1,
                  text_length=5, max_media=3)
  b = next(pipeline.make_pipeline(c, tokenizer=tok, process_index=0, process_count=1,
                                  train=False, sources={"shapes_interleaved": [doc]}))
  assert b["media_locations"][0].sum() == 1 and b["media_mask"][0].tolist() == [1, 0, 0]


def test_episode_keeps_its_query_and_drops_supports_from_the_front(make_config):
  """A few-shot episode that does not fit text_length (or max_media) loses its farthest
  supports, never its query: the row still ends in the query's caption and [EOS]."""
  tok = tokenizers.get_tokenizer("clip")
  words = ("red", "blue", "green", "yellow")
  episode = {"images": [_png((60 * i, 0, 0)) for i in range(4)], "prompts": [b""] * 4,
             "targets": [f"a {w} square".encode() for w in words]}

  def row(text_length, max_media):
    c = make_config(task="interleaved", datasets=("shapes_interleaved",), batch_size=1,
                    text_length=text_length, max_media=max_media)
    return next(pipeline.make_pipeline(c, tokenizer=tok, process_index=0, process_count=1,
                                       train=False, sources={"shapes_interleaved": [episode]}))

  # Each item is 5 tokens: BOS + 2 items + EOS = 12 fit, a third item does not.
  b = row(12, 4)
  img, eoc = tok.token_id("<image>"), tok.token_id("<|endofchunk|>")  # added by the pipeline
  item = lambda w: [img] + tok.encode(f"a {w} square") + [eoc]  # noqa: E731
  assert b["tokens"][0].tolist() == [tok.bos_id] + item("green") + item("yellow") + [tok.eos_id]
  assert b["media_mask"][0].tolist() == [True, True, False, False]
  np.testing.assert_allclose(b["media"][0, 0, 0, 0, 0, 0], 2 * 120 / 255 - 1, atol=1e-6)
  np.testing.assert_allclose(b["media"][0, 1, 0, 0, 0, 0], 2 * 180 / 255 - 1, atol=1e-6)
  # Room for everything: the media slots bound the supports (query + the 2 nearest).
  b = row(40, 3)
  assert b["tokens"][0, :17].tolist() == ([tok.bos_id] + item("blue") + item("green") +
                                          item("yellow") + [tok.eos_id])
  # Room and slots for all four.
  assert row(40, 4)["media_mask"][0].all()


def _bad_sources(data_dir):
  good = datasets.load_source("shapes", "train", data_dir=data_dir, **SMALL)
  records = [good[i] for i in range(16)]
  records[1] = dict(records[1], image=records[1]["image"][:40])  # Truncated PNG.
  records[5] = dict(records[5], captions=[b"", b"  "])  # Empty captions.
  records[9] = dict(records[9], image=_png(mode="L"))  # Wrong image mode.
  return records


def test_bad_examples_are_skipped_and_counted(make_config, tok, data_dir):
  c = make_config(task="caption", batch_size=13, on_bad_example="skip")
  it = pipeline.make_pipeline(c, tokenizer=tok, process_index=0, process_count=1, train=False,
                              sources={"shapes": _bad_sources(data_dir)})
  batches = list(it)
  assert len(batches) == 1 and batches[0]["image"].shape[0] == 13
  assert it.stats()["skipped"] == 3


def test_bad_examples_raise_naming_record_and_field(make_config, tok, data_dir):
  c = make_config(task="caption", on_bad_example="raise")
  it = pipeline.make_pipeline(c, tokenizer=tok, process_index=0, process_count=1, train=False,
                              sources={"shapes": _bad_sources(data_dir)})
  with pytest.raises(preprocess.BadExample, match=r"record 1: field 'image'"):
    next(it)


def test_batches_become_global_arrays_on_the_mesh(make_config, tok):
  mesh = jax.make_mesh((4, 2), ("data", "tensor"), axis_types=(AxisType.Auto,) * 2)
  c = make_config(task="vqa", as_media=True)
  b = next(pipeline.make_pipeline(c, tokenizer=tok, mesh=mesh, process_index=0,
                                  process_count=1))
  assert isinstance(b["media"], jax.Array) and b["media"].shape[0] == 8
  assert b["tokens"].sharding.spec[0] in ("data", ("data",))
  assert len(b["tokens"].addressable_shards) == 8
  assert b["tokens"].addressable_shards[0].data.shape == (2, 48)


def test_mixture_follows_weights_and_formats_agree(make_config, tok):
  c = make_config(task="interleaved", datasets=("shapes_interleaved", "shapes"),
                  weights=(0.25, 0.75), batch_size=16, max_media=4)
  b = _take(pipeline.make_pipeline(c, tokenizer=tok, process_index=0, process_count=1), 4)
  # Single-image pairs have exactly one media item; documents have at least two.
  singles = sum(int(x["media_mask"][i].sum() == 1) for x in b for i in range(16))
  assert 40 <= singles <= 56  # 75% of 64, grain's mixing is proportional, not random.


def test_video_rows_have_frames_and_one_image_token(make_config, tok):
  c = make_config(task="video", datasets=("shapes_video",))
  b = next(pipeline.make_pipeline(c, tokenizer=tok, process_index=0, process_count=1))
  assert b["media"].shape == (8, 4, SMALL["num_frames"], 32, 32, 3)
  assert (b["media_locations"].sum(1) == 1).all() and (b["media_mask"].sum(1) == 1).all()


def test_lm_rows_are_text_only(make_config, tok):
  b = next(pipeline.make_pipeline(make_config(task="lm"), tokenizer=tok, process_index=0,
                                  process_count=1))
  assert set(b) == {"tokens", "loss_mask"} and b["loss_mask"][:, 0].sum() == 0


def test_eval_preprocessing_matches_open_clip():
  open_clip = pytest.importorskip("open_clip")
  rng = np.random.default_rng(0)
  img = Image.fromarray(rng.integers(0, 255, (45, 70, 3), dtype=np.uint8))
  ref = open_clip.image_transform(32, is_train=False, mean=preprocess.OPENAI_CLIP_MEAN,
                                  std=preprocess.OPENAI_CLIP_STD)(img).numpy().transpose(1, 2, 0)
  ours = preprocess.process_images([img], 32, train=False, rng=None,
                                   mean=preprocess.OPENAI_CLIP_MEAN,
                                   std=preprocess.OPENAI_CLIP_STD)[0]
  np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_flip_only_where_text_has_no_direction():
  assert preprocess.flip_allowed(["A red circle."])
  assert not preprocess.flip_allowed(["A red circle to the left of a cube."])
  assert tasks.check_supported("shapes", "vqa") is None
  with pytest.raises(ValueError, match="shapes_video"):
    tasks.check_supported("shapes_video", "caption")


def test_global_batches_do_not_depend_on_the_process_count(make_config, tok):
  c = make_config(task="caption", batch_size=8)
  one = _take(pipeline.make_pipeline(c, tokenizer=tok, process_index=0, process_count=1), 3)
  halves = [_take(pipeline.make_pipeline(c, tokenizer=tok, process_index=p, process_count=2), 3)
            for p in range(2)]
  for step in range(3):
    for key in one[step]:
      np.testing.assert_array_equal(
          np.concatenate([halves[0][step][key], halves[1][step][key]]), one[step][key])


def test_a_mixture_of_tasks_on_one_dataset_feeds_both_formats(make_config, tok):
  """data.tasks: ('shapes', 'shapes') as ('caption', 'vqa') gives caption and Q/A rows in one
  stream, each with its loss only on its target, in the weights' proportion."""
  c = make_config(datasets=("shapes", "shapes"), tasks=("caption", "vqa"), weights=(1.0, 1.0),
                  as_media=True, max_media=1)
  batches = _take(pipeline.make_pipeline(c, tokenizer=tok, process_index=0, process_count=1), 4)
  qa = caption = 0
  for b in batches:
    validate_batch(b)
    for tokens, loss in zip(b["tokens"], b["loss_mask"]):
      text = tok.decode([int(t) for t, m in zip(tokens, loss) if not m and t < tok.vocab_size])
      if "Question:" in text:
        qa += 1
        # The loss covers the answer, <|endofchunk|> and nothing of the question.
        assert 2 <= loss.sum() <= 6, loss.sum()
      else:
        caption += 1
  assert qa + caption == 32 and abs(qa - caption) <= 2, (qa, caption)
  with pytest.raises(ValueError, match="data.tasks"):
    make_config(datasets=("shapes",), tasks=("caption", "vqa"))
  with pytest.raises(ValueError, match="as_media"):
    make_config(datasets=("shapes", "shapes"), tasks=("caption", "vqa"))
