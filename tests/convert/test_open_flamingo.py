"""open_flamingo <-> mmjax: PerceiverResampler, GatedCrossAttentionBlock, whole Flamingo layout.

Reference modules come from open_flamingo's helpers.py (loaded by file path: the package
__init__ pulls in open_clip and transformers); every parameter is randomised, the gates too.
Parity is max |ours - theirs| / max |theirs| (fp32, 1e-4). Masking is compared in the immediate
mode (the paper's); in the all-previous mode open_flamingo lets tokens before the first image
attend to every image, while we give them a zero cross-attention output (DESIGN.md), so that
mode is compared on the tokens after the first image and the difference is asserted.
"""

import importlib.util
import os
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
import transformers

import reference_models as R
from mmjax.convert import common
from mmjax.convert import open_flamingo as of
from mmjax.models import family as family_lib
from mmjax.models import resampler as resampler_lib
from mmjax.models import xattn as xattn_lib

TOL = 1e-4


def helpers():
  """open_flamingo/src/helpers.py as a module, without importing the package."""
  spec = importlib.util.find_spec("open_flamingo")
  path = os.path.join(os.path.dirname(spec.origin), "src", "helpers.py")
  module_spec = importlib.util.spec_from_file_location("open_flamingo_helpers", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module


def rel_err(ours, theirs) -> float:
  theirs = np.asarray(theirs, np.float64)
  return float(np.max(np.abs(np.asarray(ours, np.float64) - theirs)) / np.max(np.abs(theirs)))


RESAMPLER = dict(width=32, depth=2, num_heads=4, head_dim=8, num_latents=5, ff_mult=2,
                 activation="gelu", max_frames=2, scan=True)


@pytest.mark.parametrize("scan", [True, False])
def test_resampler_parity_and_round_trip(scan):
  torch.manual_seed(0)
  cfg = dict(RESAMPLER, scan=scan)
  ref = helpers().PerceiverResampler(dim=32, depth=2, dim_head=8, heads=4, num_latents=5,
                                     max_num_frames=2, ff_mult=2)
  R.randomise(ref)
  ref.eval()
  x = np.random.default_rng(0).standard_normal((2, 3, 2, 6, 32)).astype(np.float32)  # B M F v D
  with torch.no_grad():
    theirs = ref(torch.from_numpy(x)).numpy()
  params = of.resampler_to_mmjax(ref.state_dict(), cfg)
  model = resampler_lib.PerceiverResampler(**cfg)
  err = rel_err(model.apply({"params": params}, x), theirs)
  print(f"open_flamingo PerceiverResampler parity (scan={scan}): {err:.2e}")
  assert err < TOL
  back = of.resampler_from_mmjax(params, cfg)
  ref.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in back.items()}, strict=True)
  for key, value in common.state_dict_to_numpy(ref.state_dict()).items():
    np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_resampler_with_spatial_embeddings_is_refused_by_name():
  # open_flamingo has no twin of our optional spatial embeddings: no silent drop.
  with pytest.raises(ValueError, match="resampler.max_patches=4"):
    of.resampler_rules("resampler", "perceiver.", dict(RESAMPLER, max_patches=4))
  assert of.resampler_rules("resampler", "perceiver.", dict(RESAMPLER, max_patches=0))


def interleaved(batch=2, length=12):
  """Media locations with two images per row and text before the first image in row 0."""
  locations = np.zeros((batch, length), bool)
  locations[0, [3, 8]] = True
  locations[1, [0, 5]] = True
  return locations


@pytest.mark.parametrize("immediate", [True, False])
def test_gated_cross_attention_parity(immediate):
  torch.manual_seed(1)
  ref = helpers().GatedCrossAttentionBlock(dim=24, dim_visual=32, dim_head=8, heads=4,
                                           ff_mult=2, only_attend_immediate_media=immediate)
  R.randomise(ref)
  with torch.no_grad():  # Clearly open gates, so both branches weigh in the output.
    ref.attn_gate.fill_(0.8)
    ref.ff_gate.fill_(-0.5)
  ref.eval()
  rng = np.random.default_rng(1)
  x = rng.standard_normal((2, 12, 24)).astype(np.float32)
  media = rng.standard_normal((2, 2, 5, 32)).astype(np.float32)  # two images of 5 latents
  locations = interleaved()
  with torch.no_grad():
    theirs = ref(torch.from_numpy(x), torch.from_numpy(media),
                 media_locations=torch.from_numpy(locations)).numpy()
  cfg = xattn_lib.XAttnConfig(num_heads=4, head_dim=8, ff_mult=2, activation="gelu",
                              only_attend_immediate_media=immediate)
  params = of.gated_to_mmjax(ref.state_dict(), dict(num_heads=4, activation="gelu"))
  times = xattn_lib.text_time(jnp.asarray(locations))
  ours, _ = xattn_lib.GatedCrossAttentionBlock(cfg).apply(
      {"params": params}, x, times, jnp.ones((2, 2), bool), media)
  ours = np.asarray(ours)
  after = np.asarray(times) > 0
  err = rel_err(ours[after], theirs[after])
  print(f"open_flamingo GatedCrossAttentionBlock parity (immediate={immediate}): {err:.2e} on "
        f"{int(after.sum())} tokens after the first image")
  assert err < TOL
  if immediate:  # Tokens before the first image: both zero the cross-attention.
    assert rel_err(ours, theirs) < TOL
  else:  # open_flamingo lets them attend to every image; we give them zero cross-attention.
    assert rel_err(ours[~after], theirs[~after]) > 1e-2
  back = of.gated_from_mmjax(params, dict(num_heads=4, activation="gelu"))
  for key, value in common.state_dict_to_numpy(ref.state_dict()).items():
    np.testing.assert_array_equal(back[key], value, err_msg=key)


# ---- A whole open_flamingo Flamingo (tiny open_clip ViT + Llama with GQA, untied, new tokens) --

VOCAB = 40  # + <image>, <|endofchunk|>, <PAD> appended by resize, as open_flamingo's factory


def flamingo_config(lm="llama"):
  """Our config.model matching `reference_flamingo` (open_flamingo's fixed resampler/xattn
  sizes: 6 layers, 8 heads x 64, 64 latents, FFW x4, GELU; no frame embeddings)."""
  from mmjax import config_lib  # pylint: disable=import-outside-toplevel
  model = config_lib.load_config("configs/flamingo.py:tiny").model
  model.vision.update(image_size=16, patch_size=8, width=32, depth=1, num_heads=2, mlp_dim=128,
                      output_dim=16)
  model.resampler.update(width=32, depth=6, num_heads=8, head_dim=64, num_latents=64, ff_mult=4,
                         activation="gelu", max_frames=0)
  model.lm.update(vocab_size=VOCAB, width=32, depth=3, num_heads=4, num_kv_heads=2, head_dim=8,
                  mlp_dim=48, norm_eps=1e-6, tie_embeddings=False, num_new_tokens=3,
                  max_len=64)
  if lm == "gpt2":
    model.lm.update(num_kv_heads=4, activation="gelu_tanh", norm="layernorm", norm_eps=1e-5,
                    positions="learned", tie_embeddings=True, qkv_bias=True, out_bias=True,
                    mlp_bias=True)
  model.xattn.update(num_heads=8, head_dim=64, ff_mult=4, activation="gelu",
                     cross_attn_every_n=2)
  return model


def reference_flamingo(seed=0, lm="llama"):
  import open_clip  # pylint: disable=import-outside-toplevel
  from open_flamingo.src.flamingo import Flamingo  # pylint: disable=import-outside-toplevel
  # pylint: disable-next=import-outside-toplevel
  from open_flamingo.src.flamingo_lm import FlamingoLMMixin
  from open_flamingo.src.utils import extend_instance  # pylint: disable=import-outside-toplevel
  torch.manual_seed(seed)
  clip = open_clip.CLIP(embed_dim=16, vision_cfg=dict(image_size=16, patch_size=8, width=32,
                                                      layers=1, head_width=16),
                        text_cfg=dict(context_length=8, vocab_size=20, width=16, heads=2,
                                      layers=1))
  clip.visual.output_tokens = True
  if lm == "gpt2":
    config = transformers.GPT2Config(vocab_size=VOCAB + 3, n_embd=32, n_layer=3, n_head=4,
                                     n_inner=48, n_positions=64, bos_token_id=0, eos_token_id=1)
  else:
    config = transformers.LlamaConfig(
        vocab_size=VOCAB + 3, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
        tie_word_embeddings=False, bos_token_id=0, eos_token_id=1, pad_token_id=None)
  config._attn_implementation = "eager"  # pylint: disable=protected-access
  lang = transformers.AutoModelForCausalLM.from_config(config)
  extend_instance(lang, FlamingoLMMixin)
  lang.set_decoder_layers_attr_name("transformer.h" if lm == "gpt2" else "model.layers")
  model = Flamingo(clip, lang, eoc_token_id=VOCAB + 1, media_token_id=VOCAB, vis_dim=32,
                   cross_attn_every_n_layers=2)
  R.randomise(model)
  if lm == "gpt2":
    lang.tie_weights()
    # transformers 5's GPT2Model passes its blocks positional arguments that open_flamingo's
    # FlamingoLayer.forward(lang_x, attention_mask=None, **kw) does not accept: the same forward,
    # passing them through (the gated block and the decoder layer are unchanged).
    for layer in lang._get_decoder_layers():  # pylint: disable=protected-access
      layer.forward = types.MethodType(_flamingo_layer_forward, layer)
  return model.eval()


def _flamingo_layer_forward(self, lang_x, *args, **kwargs):
  if self.gated_cross_attn_layer is not None:
    lang_x = self.gated_cross_attn_layer(lang_x, self.vis_x, media_locations=self.media_locations,
                                         use_cached_media=self.use_cached_media)
  return self.decoder_layer(lang_x, *args, **kwargs)


LMS = pytest.mark.parametrize("lm", ["llama", "gpt2"])


@LMS
def test_flamingo_layout_round_trip_is_bit_exact(lm):
  model = flamingo_config(lm)
  fam = family_lib.build(model)
  ref = reference_flamingo(lm=lm)
  theirs = common.state_dict_to_numpy(ref.state_dict())
  assert any(k.startswith("lang_encoder.old_decoder_blocks.") for k in theirs)
  params = of.to_mmjax(ref.state_dict(), model)
  shapes = common.flatten(jax.tree.map(
      lambda s: np.zeros(s.shape, s.dtype),
      jax.eval_shape(fam.init, jax.random.key(0), fam.dummy_batch(1))["params"],
      is_leaf=lambda s: hasattr(s, "shape")))
  got = common.flatten(params)
  assert got.keys() == shapes.keys()
  for key, value in shapes.items():
    assert got[key].shape == value.shape, key
  back = of.from_mmjax(params, model)
  assert back.keys() == theirs.keys()
  for key, value in theirs.items():
    np.testing.assert_array_equal(back[key], value, err_msg=key)
  # Ours -> torch (strict) -> ours.
  mine = {k: (np.random.default_rng(3).standard_normal(v.shape) * 0.2).astype(np.float32)
          for k, v in shapes.items()}
  state = of.from_mmjax(common.unflatten(mine), model)
  ref.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=True)
  again = common.flatten(of.to_mmjax(ref.state_dict(), model))
  for key, value in mine.items():
    np.testing.assert_array_equal(again[key], value, err_msg=key)


@LMS
def test_flamingo_logits_match_open_flamingo(lm):
  model = flamingo_config(lm)
  fam = family_lib.build(model)
  ref = reference_flamingo(lm=lm)
  params = of.to_mmjax(ref.state_dict(), model)
  rng = np.random.default_rng(0)
  images = rng.standard_normal((2, 2, 1, 16, 16, 3)).astype(np.float32)  # B, M, T, H, W, C
  tokens = rng.integers(2, VOCAB, (2, 12))
  tokens[interleaved()] = VOCAB  # <image> tokens; row 0 has text before its first image
  with torch.no_grad():
    theirs = ref(torch.from_numpy(images).permute(0, 1, 2, 5, 3, 4),
                 torch.from_numpy(tokens)).logits.numpy()
  batch = {"media": images, "media_mask": np.ones((2, 2), bool),
           "tokens": tokens.astype(np.int32), "media_locations": tokens == VOCAB}
  ours = np.asarray(fam.predict_logits(params, batch))
  err = rel_err(ours, theirs)
  print(f"open_flamingo Flamingo (ViT + resampler + {lm} with gated xattn) logits parity: "
        f"{err:.2e}")
  assert err < TOL
