"""The contracts: batch validation, config loading/overrides, mesh resolution and rule presets."""

import numpy as np
import pytest

from mmjax import batch as B
from mmjax import config_lib
from mmjax import parallel as P


def test_validate_batch_accepts_the_contract():
  B.validate_batch({
      B.MEDIA: np.zeros((2, 3, 1, 8, 8, 3), np.float32), B.MEDIA_MASK: np.ones((2, 3), bool),
      B.TOKENS: np.zeros((2, 5), np.int32), B.MEDIA_LOCATIONS: np.zeros((2, 5), bool),
      B.LOSS_MASK: np.ones((2, 5), np.float32)}, required=[B.TOKENS, B.MEDIA])


@pytest.mark.parametrize("batch,message", [
    ({B.IMAGE: np.zeros((2, 8, 8), np.float32)}, "image.*rank 4"),
    ({B.IMAGE: np.zeros((2, 8, 8, 1), np.float32)}, "3 colour channels"),
    ({B.TEXT: np.zeros((2, 5), np.float32)}, "text.*int32"),
    ({B.IMAGE: np.zeros((2, 8, 8, 3), np.float32), B.TEXT: np.zeros((3, 5), np.int32)},
     "batch size 3"),
    ({"imgs": np.zeros((2,))}, "unknown batch key 'imgs'"),
    ({B.TOKENS: np.zeros((2, 5), np.int32), B.LOSS_MASK: np.zeros((2, 6), np.float32)},
     "share length"),
])
def test_validate_batch_names_the_key(batch, message):
  with pytest.raises(B.BatchError, match=message):
    B.validate_batch(batch)


def test_missing_key():
  with pytest.raises(B.BatchError, match="missing key.*tokens"):
    B.validate_batch({B.IMAGE: np.zeros((1, 4, 4, 3), np.float32)}, required=[B.TOKENS])


def test_config_overrides_and_their_errors():
  config = config_lib.load_config("configs/clip.py:micro", ["model.vision.depth=3",
                                                            "config.model.embed_dim=64"])
  assert config.model.vision.depth == 3 and config.model.embed_dim == 64
  with pytest.raises(KeyError, match="model.vision.dpeth"):
    config_lib.load_config("configs/clip.py:micro", ["model.vision.dpeth=3"])
  with pytest.raises(TypeError, match="model.vision.depth"):
    config_lib.load_config("configs/clip.py:micro", ["model.vision.depth=deep"])
  with pytest.raises(ValueError, match="unknown clip preset 'huge'"):
    config_lib.load_config("configs/clip.py:huge")
  with pytest.raises(FileNotFoundError, match="configs/nope.py"):
    config_lib.load_config("configs/nope.py:tiny")


@pytest.mark.parametrize("family", ["clip", "siglip", "coca"])
def test_every_family_has_tiny_and_micro(family):
  for preset in config_lib.PRESETS_ALWAYS:
    assert preset in config_lib.presets_of(f"configs/{family}.py")
    assert config_lib.load_config(f"configs/{family}.py:{preset}").model.family == family


def test_mesh_resolution():
  assert P.resolve_mesh_shape({"data": -1}, 8) == (8, 1, 1)
  assert P.resolve_mesh_shape({"data": 2, "fsdp": -1, "tensor": 2}, 8) == (2, 2, 2)
  with pytest.raises(ValueError, match="needs 16 devices but 8"):
    P.resolve_mesh_shape({"data": 4, "fsdp": 4}, 8)
  with pytest.raises(ValueError, match="not divisible"):
    P.resolve_mesh_shape({"data": 3, "fsdp": -1}, 8)
  with pytest.raises(ValueError, match="at most one axis"):
    P.resolve_mesh_shape({"data": -1, "fsdp": -1}, 8)


def test_rule_presets_validate():
  assert P.get_rules("fsdp")[0] == (P.BATCH, (P.DATA, P.FSDP))
  with pytest.raises(ValueError, match="unknown sharding rule preset 'zero9'"):
    P.get_rules("zero9")
  with pytest.raises(ValueError, match="unknown mesh axis 'model'"):
    P.get_rules([(P.MLP, "model")])
  with pytest.raises(ValueError, match="unknown logical axis 'hidden'"):
    P.get_rules([("hidden", P.TENSOR)])
