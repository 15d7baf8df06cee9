"""Every shapes builder prepares a small split with TensorFlow absent."""

import json
import subprocess
import sys

import numpy as np
import pytest

from mmjax.data import datasets, preprocess
from mmjax.data import shapes_world as world

from conftest import SMALL  # pylint: disable=import-error


def test_tensorflow_is_not_installed():
  with pytest.raises(ImportError):
    import tensorflow  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import


@pytest.mark.parametrize("name,kw", [("shapes", {}), ("shapes_interleaved", {}),
                                     ("shapes_interleaved", {"kind": "episodes"}),
                                     ("shapes_interleaved", {"kind": "binding"}),
                                     ("shapes_video", {})])
def test_builder_prepares_small_split(data_dir, name, kw):
  src = datasets.load_source(name, "train", data_dir=data_dir, **SMALL, **kw)
  assert len(src) == SMALL["num_train"]
  heldout = datasets.load_source(name, "heldout", data_dir=data_dir, **SMALL, **kw)
  assert len(heldout) == SMALL["num_eval"]
  ex = src[0]
  blobs = [ex["image"]] if name == "shapes" else list(ex.get("images", ex.get("frames", [])))
  for b in blobs:
    assert preprocess.decode_png(b).size == (32, 32)
  if name == "shapes_video":
    assert len(blobs) == SMALL["num_frames"]
  assert "tensorflow" not in sys.modules


def test_shapes_records_agree_with_their_scene(data_dir):
  src = datasets.load_source("shapes", "train", data_dir=data_dir, **SMALL)
  for i in range(8):
    ex = src[i]
    scene = world.Scene.from_json(ex["scene"])
    assert int(ex["num_objects"]) == len(scene.objects)
    assert np.asarray(ex["answers"]).shape == (len(ex["questions"]), world.NUM_ANSWERS)
    for q, a in zip(ex["questions"], ex["answer"]):
      if q == b"How many objects are there?":
        assert int(a) == len(scene.objects)


def test_heldout_split_is_compositionally_new(data_dir):
  for split, want in (("train", False), ("heldout", True)):
    src = datasets.load_source("shapes", split, data_dir=data_dir, **SMALL)
    for i in range(len(src)):
      scene = world.Scene.from_json(src[i]["scene"])
      has = any((o.colour, o.shape) in world.HELDOUT_PAIRS for o in scene.objects)
      assert has == want, (split, i)


def test_interleaved_documents_have_one_more_chunk_than_images(data_dir):
  src = datasets.load_source("shapes_interleaved", "train", data_dir=data_dir, **SMALL)
  for i in range(8):
    ex = src[i]
    assert 2 <= len(ex["images"]) <= 8
    assert len(ex["texts"]) == len(ex["images"]) + 1 == len(ex["scenes"]) + 1
    json.loads(ex["scenes"][0])


# Builds one dataset and prints its size and a digest of its records (run by several processes
# at once: parallel sweep workers preparing the same data).
PREPARE = """
import hashlib, sys
from mmjax.data import datasets
src = datasets.load_source("shapes", "train", data_dir=sys.argv[1], image_size=32,
                           num_train=256, num_eval=8, num_frames=4)
print(len(src), hashlib.sha1(b"".join(src[i]["image"] for i in range(len(src)))).hexdigest())
"""


def test_processes_preparing_one_dataset_at_once_agree(tmp_path):
  procs = [subprocess.Popen([sys.executable, "-c", PREPARE, str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for _ in range(3)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-2000:]
  lines = {out.strip().splitlines()[-1] for out, _ in outs}
  assert len(lines) == 1 and lines.pop().startswith("256 ")
