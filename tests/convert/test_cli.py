"""`python -m mmjax.convert`: open_clip -> mmjax file -> open_clip file round trip is exact."""

import json

import numpy as np
import torch
from safetensors.torch import save_file

import reference_models as R
from mmjax.convert import __main__ as cli
from mmjax.convert import common
from mmjax.convert import hf_lm
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


def test_hf_lm_directory_to_mmjax_and_back(tmp_path):
  """HF directory -> our params file -> HF directory: identical tensors, loads in transformers."""
  import test_hf_lm as H  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  ref = H.reference("llama_gqa_untied_bias")
  ref.save_pretrained(str(tmp_path / "hf"))
  ours = str(tmp_path / "lm.npz")
  assert cli.main(["hf_lm", "mmjax", "--input", str(tmp_path / "hf"), "--output", ours]) == 0
  fields = hf_lm.lm_fields(ref.config.to_dict())
  overrides = [f"--config.model.{k}={v}" for k, v in fields.items()]
  assert cli.main(["mmjax", "hf_lm", "--config", "configs/lm.py:tiny", "--input", ours,
                   "--output", str(tmp_path / "back")] + overrides) == 0
  back = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "back"))
  for key, value in ref.state_dict().items():
    np.testing.assert_array_equal(back.state_dict()[key].numpy(), value.numpy(), err_msg=key)


def test_gguf_to_mmjax_with_tokenizer(tmp_path):
  import test_gguf  # pylint: disable=import-outside-toplevel
  from mmjax.convert import gguf  # pylint: disable=import-outside-toplevel
  ref = test_gguf.tiny_reference(tied=True)
  test_gguf.write_tiny_gguf(tmp_path / "tiny.gguf", ref, tied=True)
  out = str(tmp_path / "lm.safetensors")
  assert cli.main(["gguf", "mmjax", "--input", str(tmp_path / "tiny.gguf"), "--output", out,
                   "--tokenizer_output", str(tmp_path / "tokenizer.json")]) == 0
  _, expected = gguf.to_mmjax(str(tmp_path / "tiny.gguf"))
  got = common.flatten(cli.read_params(out))
  for key, value in common.flatten(expected).items():
    np.testing.assert_array_equal(got[key], value, err_msg=key)
  from tokenizers import Tokenizer  # pylint: disable=import-outside-toplevel
  saved = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
  assert saved.encode("<|im_start|>the t", add_special_tokens=False).ids == [258, 83, 257, 256]


def test_open_flamingo_to_mmjax_and_back(tmp_path):
  import test_open_flamingo as F  # pylint: disable=import-outside-toplevel
  ref = F.reference_flamingo()
  state = {k: v.contiguous().clone() for k, v in ref.state_dict().items()}
  torch.save(state, tmp_path / "checkpoint.pt")
  # The test's Flamingo config as --config overrides of the fields that differ from tiny's.
  from mmjax import config_lib  # pylint: disable=import-outside-toplevel
  model, tiny = F.flamingo_config(), config_lib.load_config("configs/flamingo.py:tiny").model
  overrides = [f"--config.model.{block}.{k}={v}" for block in ("vision", "resampler", "lm",
                                                              "xattn")
               for k, v in model[block].items() if v != tiny[block][k]]
  ours = str(tmp_path / "flamingo.safetensors")
  assert cli.main(["open_flamingo", "mmjax", "--config", "configs/flamingo.py:tiny", "--input",
                   str(tmp_path / "checkpoint.pt"), "--output", ours] + overrides) == 0
  back = str(tmp_path / "back.safetensors")
  assert cli.main(["mmjax", "open_flamingo", "--config", "configs/flamingo.py:tiny", "--input",
                   ours, "--output", back] + overrides) == 0
  loaded = common.load_state_dict(back)
  assert loaded.keys() == state.keys()
  for key, value in state.items():
    np.testing.assert_array_equal(loaded[key], value.numpy(), err_msg=key)
