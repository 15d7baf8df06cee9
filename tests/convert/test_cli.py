"""`python -m mmjax.convert`: open_clip -> mmjax file -> open_clip file round trip is exact."""

import json

import numpy as np
import torch
from safetensors.torch import save_file

import reference_models as R
from mmjax.convert import __main__ as cli
from mmjax.convert import common
from mmjax.convert import open_clip as oc
from mmjax.convert import open_clip_config


def test_open_clip_to_mmjax_and_back(tmp_path):
  config = R.clip_config(quick_gelu=False)
  ref = R.build("clip", config)
  state = {k: v.contiguous() for k, v in ref.state_dict().items()}
  save_file(state, str(tmp_path / "ref.safetensors"))
  (tmp_path / "oc.json").write_text(json.dumps(config))
  for ext in (".npz", ".safetensors"):
    ours = str(tmp_path / f"params{ext}")
    assert cli.main(["open_clip", "mmjax", "--open_clip_config", str(tmp_path / "oc.json"),
                     "--input", str(tmp_path / "ref.safetensors"), "--output", ours]) == 0
    model = open_clip_config.model_config(config)
    expected = common.flatten(oc.to_mmjax(ref.state_dict(), model))
    got = common.flatten(cli.read_params(ours))
    assert got.keys() == expected.keys()
    for k in expected:
      np.testing.assert_array_equal(got[k], expected[k], err_msg=k)
    back = str(tmp_path / f"back{ext}.safetensors")
    assert cli.main(["mmjax", "open_clip", "--open_clip_config", str(tmp_path / "oc.json"),
                     "--input", ours, "--output", back]) == 0
    loaded = common.load_state_dict(back)
    ref.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in loaded.items()},
                        strict=True)
    for k, v in state.items():
      np.testing.assert_array_equal(loaded[k], v.numpy(), err_msg=k)


def test_torch_file_is_read_with_weights_only(tmp_path):
  ref = R.build("clip", R.clip_config(False))
  torch.save({"state_dict": {"module." + k: v for k, v in ref.state_dict().items()},
              "epoch": 3}, tmp_path / "ckpt.pt")
  loaded = common.load_state_dict(str(tmp_path / "ckpt.pt"))
  assert loaded.keys() == ref.state_dict().keys()
  np.testing.assert_array_equal(loaded["logit_scale"], ref.logit_scale.detach().numpy())
