"""data.mixing: how a mixture fills the batches ('example' / 'batch' / 'round_robin')."""

import json

import grain
import numpy as np
import pytest

from mmjax.data import mixing, pipeline


def _tagged(k):
  """An infinite dataset whose element i is (k, i), to read the selection back."""
  return grain.MapDataset.range(10**9).map(lambda i, k=k: (k, i))


def test_integer_weights_schedule_and_block_sizes_by_hand():
  assert mixing.integer_weights([0.5, 0.25, 0.25]) == [2, 1, 1]
  assert mixing.integer_weights([3.0, 3.0]) == [1, 1]
  assert mixing.round_robin_schedule([2, 1]) == [0, 1, 0]
  assert mixing.round_robin_schedule([1, 1, 1]) == [0, 1, 2]
  assert mixing.round_robin_schedule([1, 3]) == [1, 0, 1, 1]
  assert mixing.block_sizes([1, 1], 8) == [4, 4]
  assert mixing.block_sizes([0.5, 0.25, 0.25], 8) == [4, 2, 2]
  with pytest.raises(ValueError, match="data.batch_size=6"):
    mixing.block_sizes([0.5, 0.25, 0.25], 6)


def test_batch_mixing_gives_each_dataset_a_fixed_contiguous_block():
  ds = mixing.BatchMixture([_tagged(0), _tagged(1)], [3, 1], 8, "batch")
  rows = [ds[i] for i in range(24)]  # three batches
  for n in range(3):
    batch = rows[8 * n:8 * n + 8]
    assert batch == [(0, 6 * n + r) for r in range(6)] + [(1, 2 * n + r) for r in range(2)]


def test_round_robin_takes_whole_batches_in_turn_and_never_repeats_a_row():
  ds = mixing.BatchMixture([_tagged(0), _tagged(1)], [2, 1], 4, "round_robin")
  rows = [ds[i] for i in range(4 * 6)]
  owners = [{k for k, _ in rows[4 * n:4 * n + 4]} for n in range(6)]
  assert owners == [{0}, {1}, {0}, {0}, {1}, {0}]
  for k in (0, 1):  # each dataset is read in order, without gaps or repeats
    seen = [i for kk, i in rows if kk == k]
    assert seen == list(range(len(seen)))


@pytest.mark.parametrize("mode", ["batch", "round_robin"])
def test_pipeline_mixing_modes_resume_exactly(make_config, tok, mode):
  c = make_config(task="interleaved", datasets=("shapes_interleaved", "shapes"),
                  weights=(1.0, 1.0), batch_size=8, max_media=4, mixing=mode,
                  text_length=160)  # long enough that documents keep >= 2 images
  it = pipeline.make_pipeline(c, tokenizer=tok, process_index=0, process_count=1)
  first = [next(it) for _ in range(2)]
  state = json.loads(json.dumps(it.get_state()))
  expected = next(it)
  it2 = pipeline.make_pipeline(c, tokenizer=tok, process_index=0, process_count=1)
  it2.set_state(state)
  for key, value in next(it2).items():
    np.testing.assert_array_equal(value, expected[key], err_msg=key)
  # Pairs have exactly one media item, documents at least two.
  singles = [(b["media_mask"].sum(1) == 1) for b in first]
  if mode == "batch":  # documents in rows 0-3, pairs in rows 4-7 of every batch
    for s in singles:
      np.testing.assert_array_equal(s, [False] * 4 + [True] * 4)
  else:  # a whole batch of documents, then a whole batch of pairs
    assert [bool(s.all()) for s in singles] == [False, True]
    assert not singles[0].any()


def test_bad_mixing_names_the_field(make_config):
  with pytest.raises(ValueError, match="data.mixing"):
    make_config(mixing="shuffle")
  with pytest.raises(ValueError, match="data.batch_size=6"):
    make_config(datasets=("shapes", "shapes"), tasks=("caption", "vqa"), as_media=True,
                weights=(3.0, 1.0), batch_size=6, mixing="batch", max_media=1)
