"""`audio_events`: the captions tell the truth about the samples, held-out pairs split like
shapes' held-out colour-shape pairs, and the pipeline emits the batch contract's `audio` rows."""

import json

import numpy as np
import pytest

from mmjax import batch as batch_lib
from mmjax.data import audio_world as world
from mmjax.data import config as data_config
from mmjax.data import pipeline, tokenizers
from mmjax.data.builders import audio_events, common

CONFIG = common.make_config(num_train=64, num_eval=16)


def _segment(wave, event):
  start = int(event["start"] * world.SAMPLE_RATE)
  return wave[start:start + int(event["duration"] * world.SAMPLE_RATE)]


def _peak_hz(x):
  spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
  return np.argmax(spectrum) * world.SAMPLE_RATE / len(x)


def test_captions_tell_the_truth_about_the_samples():
  seen = set()
  for index in range(40):
    ex = audio_events.generate_example(CONFIG, "train", index)
    wave = world.from_pcm16(ex["audio"])
    events = json.loads(ex["events"])
    assert wave.shape == (world.NUM_SAMPLES,) and ex["num_events"] == len(events)
    assert ex["captions"] == world.captions(tuple(world.Event(**e) for e in events))
    # The events are named in time order (a kind may recur, never twice in a row).
    at = -1
    for e in events:
      at = ex["captions"][0].find(world.Event(**e).phrase(), at + 1)
      assert at >= 0, (e, ex["captions"][0])
    assert all(a["kind"] != b["kind"] for a, b in zip(events, events[1:]))
    assert all(a["start"] + a["duration"] < b["start"] for a, b in zip(events, events[1:]))
    for e in events:
      seen.add(e["kind"])
      seg = _segment(wave, e)
      if e["kind"] == "low tone":
        assert _peak_hz(seg) < 450
      elif e["kind"] == "high tone":
        assert _peak_hz(seg) > 1400
      elif e["kind"] in ("rising chirp", "falling chirp"):
        quarter = len(seg) // 4
        first, last = _peak_hz(seg[:quarter]), _peak_hz(seg[-quarter:])
        assert (first < last) == (e["kind"] == "rising chirp")
      elif e["kind"] == "clicks":
        # Each click is a 4 ms burst; count the 10 ms windows whose energy stands out.
        energy = (seg[:len(seg) // 160 * 160].reshape(-1, 160) ** 2).sum(1)
        loud = energy > 0.05 * energy.max()
        assert int(np.sum(loud & ~np.r_[False, loud[:-1]])) == e["count"]
        assert f"{world.NUMBER_WORDS[e['count']]} clicks" in ex["captions"][0] or \
            (e["count"] == 1 and "a click" in ex["captions"][0])
  assert seen == set(world.KINDS)


def test_heldout_pairs_only_in_the_heldout_split_and_generation_is_deterministic():
  def pairs(split, i):
    kinds = [e["kind"] for e in json.loads(
        audio_events.generate_example(CONFIG, split, i, render=False)["events"])]
    return set(zip(kinds, kinds[1:]))
  for split in ("train", "validation"):
    assert not any(pairs(split, i) & world.HELDOUT_PAIRS for i in range(100))
  assert all(pairs("heldout", i) & world.HELDOUT_PAIRS for i in range(50))
  a = audio_events.generate_example(CONFIG, "train", 3)
  b = audio_events.generate_example(CONFIG, "train", 3)
  np.testing.assert_array_equal(a["audio"], b["audio"])
  assert a["captions"] == b["captions"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
  return tokenizers.get_tokenizer("audio_sp", data_dir=str(tmp_path_factory.mktemp("tok")))


@pytest.mark.parametrize("as_media", [False, True])
def test_pipeline_rows(tokenizer, as_media):
  records = [audio_events.generate_example(CONFIG, "validation", i) for i in range(4)]
  config = data_config.default_data_config(
      datasets=("audio_events",), task="caption", split="validation", batch_size=4,
      text_length=24, tokenizer="audio_sp", as_media=as_media, max_media=1)
  batch = next(pipeline.make_pipeline(config, tokenizer=tokenizer, train=False,
                                      sources={"audio_events": records},
                                      process_index=0, process_count=1))
  batch_lib.validate_batch(batch)
  assert batch["audio"].shape == (4, world.NUM_SAMPLES) and batch["audio"].dtype == np.float32
  np.testing.assert_allclose(batch["audio"][0], records[0]["audio"] / 32767.0, atol=1e-7)
  caption = records[0]["captions"][0]
  ids = tokenizer.encode(caption)
  if as_media:
    assert sorted(batch) == ["audio", "loss_mask", "media_locations", "media_mask", "tokens"]
    image_id = tokenizer.token_id(tokenizers.IMAGE_TOKEN)
    assert batch["tokens"][0, :2].tolist() == [tokenizer.bos_id, image_id]
    assert batch["media_locations"][0].tolist() == [False, True] + [False] * 22
    assert batch["tokens"][0, 2:2 + len(ids)].tolist() == ids
    # Loss on the caption and <|endofchunk|>, not on BOS, <image>, EOS or padding.
    assert batch["loss_mask"][0].tolist() == [0, 0] + [1] * (len(ids) + 1) + \
        [0] * (21 - len(ids))
    assert batch["media_mask"].tolist() == [[True]] * 4
  else:
    assert sorted(batch) == ["audio", "loss_mask", "text", "tokens"]
    assert batch["text"][0, :len(ids) + 2].tolist() == [tokenizer.bos_id] + ids + \
        [tokenizer.eos_id]
