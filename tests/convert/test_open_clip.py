"""open_clip <-> mmjax: outputs of randomised tiny reference models equal ours after conversion.

Parity is measured as max |ours - theirs| / max |theirs| per output (fp32, 1e-4 allowed); the
round trip mmjax -> open_clip -> mmjax is bit-exact, and our exported state dict loads into the
open_clip model with strict=True.
"""

import jax
import numpy as np
import pytest
import torch

import reference_models as R
from mmjax.convert import common
from mmjax.convert import open_clip as oc
from mmjax.convert import open_clip_config
from mmjax.models import family as family_lib

TOL = 1e-4
B = 3


def rel_err(ours, theirs) -> float:
  theirs = np.asarray(theirs, np.float64)
  return float(np.max(np.abs(np.asarray(ours, np.float64) - theirs)) / np.max(np.abs(theirs)))


def convert(kind, config, scan=True):
  ref = R.build(kind, config)
  trunk = ref.visual.trunk if kind == "siglip" else None
  model_cfg = open_clip_config.model_config(config, timm_trunk=trunk)
  model_cfg.scan = scan
  params = oc.to_mmjax(ref.state_dict(), model_cfg)
  return ref, model_cfg, family_lib.build(model_cfg), params


def reference_two_tower(ref, image, text):
  with torch.no_grad():
    img = ref.encode_image(torch.from_numpy(image).permute(0, 3, 1, 2), normalize=True)
    txt = ref.encode_text(torch.from_numpy(text), normalize=True)
    logits = ref.logit_scale.exp() * img @ txt.T
    if getattr(ref, "logit_bias", None) is not None:
      logits = logits + ref.logit_bias
  return img.numpy(), txt.numpy(), logits.numpy()


CASES = [("clip", R.clip_config(quick_gelu=False), True),
         ("clip", R.clip_config(quick_gelu=True), False),
         ("siglip", R.siglip_config(), True)]


@pytest.mark.parametrize("kind,config,scan", CASES,
                         ids=["clip_gelu_scan", "clip_quickgelu_unrolled", "siglip_timm"])
def test_two_tower_parity(kind, config, scan):
  ref, model_cfg, fam, params = convert(kind, config, scan)
  image, text = R.images(B), R.tokens(B, config["text_cfg"]["context_length"])
  assert (text == 0).any(), "the batch must contain padding"
  img_ref, txt_ref, logits_ref = reference_two_tower(ref, image, text)
  out = fam.module.apply({"params": params}, image=image, text=text.astype(np.int32))
  logits = out["logit_scale"] * out["image_emb"] @ out["text_emb"].T + out["logit_bias"]
  errs = {"image_emb": rel_err(out["image_emb"], img_ref),
          "text_emb": rel_err(out["text_emb"], txt_ref), "logits": rel_err(logits, logits_ref)}
  print(f"{kind} parity (max abs diff / max abs ref):", errs)
  assert max(errs.values()) < TOL, errs


def test_coca_parity():
  config = R.coca_config()
  ref, model_cfg, fam, params = convert("coca", config)
  image, text = R.images(B), R.tokens(B, config["text_cfg"]["context_length"])
  assert (text == 0).any()
  with torch.no_grad():
    ref_out = ref(torch.from_numpy(image).permute(0, 3, 1, 2), torch.from_numpy(text))
  out = fam.module.apply({"params": params}, image=image, text=text.astype(np.int32))
  img, txt = ref_out["image_features"].numpy(), ref_out["text_features"].numpy()
  logits_ref = (ref_out["logit_scale"] * ref_out["image_features"]
                @ ref_out["text_features"].T).numpy()
  errs = {"image_emb": rel_err(out["image_emb"], img), "text_emb": rel_err(out["text_emb"], txt),
          "logits": rel_err(out["logit_scale"] * out["image_emb"] @ out["text_emb"].T,
                            logits_ref),
          "caption_logits": rel_err(out["logits"], ref_out["logits"].numpy())}
  print("coca parity (max abs diff / max abs ref):", errs)
  assert max(errs.values()) < TOL, errs


@pytest.mark.parametrize("kind,config", [("clip", R.clip_config(False)),
                                         ("siglip", R.siglip_config()),
                                         ("coca", R.coca_config())], ids=["clip", "siglip", "coca"])
def test_round_trip_is_bit_exact(kind, config):
  ref, model_cfg, fam, _ = convert(kind, config)
  params = jax.device_get(fam.init(jax.random.key(1), fam.dummy_batch(1))["params"])
  mine = common.flatten(params)
  state = oc.from_mmjax(params, model_cfg)
  ref.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()},
                      strict=True)
  back = common.flatten(oc.to_mmjax(ref.state_dict(), model_cfg))
  assert back.keys() == mine.keys()
  for name, value in mine.items():
    assert back[name].dtype == value.dtype and back[name].shape == value.shape, name
    np.testing.assert_array_equal(back[name], value, err_msg=name)


def test_extra_or_missing_key_is_named():
  config = R.clip_config(False)
  ref, model_cfg, _, _ = convert("clip", config)
  state = common.state_dict_to_numpy(ref.state_dict())
  extra = dict(state, **{"visual.unexpected_weight": np.zeros(3, np.float32)})
  with pytest.raises(common.KeyMismatchError, match="visual.unexpected_weight"):
    oc.to_mmjax(extra, model_cfg)
  missing = dict(state)
  del missing["transformer.resblocks.1.attn.in_proj_bias"]
  with pytest.raises(common.KeyMismatchError, match=r"transformer\.resblocks\.1\.attn\.in_proj_bias"):
    oc.to_mmjax(missing, model_cfg)


def test_unsupported_open_clip_option_is_refused():
  config = R.clip_config(False)
  config["vision_cfg"]["ls_init_value"] = 1e-5
  with pytest.raises(ValueError, match="ls_init_value"):
    open_clip_config.model_config(config)


def test_published_configs_map_to_our_presets():
  """open_clip's ViT-B-32 / coca_ViT-B-32 configs give our presets' architecture fields."""
  import open_clip  # pylint: disable=import-outside-toplevel
  from mmjax import config_lib  # pylint: disable=import-outside-toplevel
  for name, spec in [("ViT-B-32", "configs/clip.py:vit_b32"),
                     ("coca_ViT-B-32", "configs/coca.py:vit_b32")]:
    mine = open_clip_config.model_config(open_clip.get_model_config(name))
    preset = config_lib.load_config(spec).model
    for block in ("vision", "text"):
      for key in ("image_size", "patch_size", "width", "depth", "num_heads", "vocab_size",
                  "context_length", "causal", "pool", "ln_pre"):
        if key in preset[block]:
          assert mine[block][key] == preset[block][key], (name, block, key)
