"""Audio models: Whisper's log-mel front end and encoder against transformers (parity), exact
parameter counts, CLAP's contrastive family and audio_lm's masks and frozen gradients."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util
from flax.core import meta

from mmjax import config_lib
from mmjax import models
from mmjax.models import whisper_encoder
from mmjax.models.audio import melspec

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")


def _waves(batch=2, samples=8000, seed=0):
  rng = np.random.default_rng(seed)
  t = np.arange(samples) / 16000
  wave = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.normal(size=(batch, samples))
  wave[1] *= np.linspace(0, 1, samples)  # a fade-in: a different per-example maximum
  return wave.astype(np.float32)


def test_mel_filter_bank_matches_transformers():
  from transformers.audio_utils import mel_filter_bank  # pylint: disable=import-outside-toplevel
  ref = mel_filter_bank(num_frequency_bins=201, num_mel_filters=80, min_frequency=0.0,
                        max_frequency=8000.0, sampling_rate=16000, norm="slaney",
                        mel_scale="slaney")
  np.testing.assert_allclose(melspec.mel_filter_bank(), ref, atol=1e-8)


def test_log_mel_matches_whisper_feature_extractor():
  fe = transformers.WhisperFeatureExtractor(feature_size=80, sampling_rate=16000, hop_length=160,
                                            chunk_length=1, n_fft=400)
  waves = _waves(samples=16000)
  ours = np.asarray(melspec.log_mel_spectrogram(jnp.asarray(waves))).transpose(0, 2, 1)
  numpy_path = fe._np_extract_fbank_features(waves, "cpu")  # pylint: disable=protected-access
  called = fe(list(waves), sampling_rate=16000, return_tensors="np")["input_features"]
  assert ours.shape == numpy_path.shape == called.shape == (2, 80, 100)
  np.testing.assert_allclose(ours, numpy_path, atol=1e-4)
  np.testing.assert_allclose(ours, called, atol=1e-4)
  # The (max - 8) clamp is per example: the faded example's silent start sits on its own floor,
  # 8 (log10 units) / 4 below its maximum; the other never reaches its floor.
  assert ours[1].min() == pytest.approx(ours[1].max() - 2.0, abs=1e-5)
  assert ours[0].min() > ours[0].max() - 2.0 + 0.1


def test_log_mel_rejects_bad_input():
  with pytest.raises(ValueError, match=r"waveform \[B, S\]"):
    melspec.log_mel_spectrogram(jnp.zeros((3, 2, 800)))
  with pytest.raises(ValueError, match="too short"):
    melspec.log_mel_spectrogram(jnp.zeros((1, 100)))


def _hf_encoder(n_mels=16, width=32, depth=2, heads=4, ffn=64, positions=20):
  config = transformers.WhisperConfig(
      num_mel_bins=n_mels, d_model=width, encoder_layers=depth, encoder_attention_heads=heads,
      encoder_ffn_dim=ffn, max_source_positions=positions, decoder_layers=1,
      decoder_attention_heads=heads, decoder_ffn_dim=ffn, vocab_size=64,
      activation_function="gelu")
  torch.manual_seed(0)
  model = transformers.models.whisper.modeling_whisper.WhisperEncoder(config).eval()
  with torch.no_grad():  # random (not zero) biases and norms, so every weight is exercised
    for name, p in model.named_parameters():
      if name != "embed_positions.weight":
        p.copy_(torch.randn_like(p) * 0.2 + (1.0 if "layer_norm.weight" in name else 0.0))
    model.embed_positions.weight.copy_(
        transformers.models.whisper.modeling_whisper.sinusoids(positions, width))
  return model


def _to_ours(model, heads):
  """WhisperEncoder weights -> our unrolled (scan=False) parameter tree."""
  sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  width = sd["conv1.weight"].shape[0]
  hd = width // heads
  params = {"conv1": {"kernel": sd["conv1.weight"].transpose(2, 1, 0), "bias": sd["conv1.bias"]},
            "conv2": {"kernel": sd["conv2.weight"].transpose(2, 1, 0), "bias": sd["conv2.bias"]},
            "ln_final": {"scale": sd["layer_norm.weight"], "bias": sd["layer_norm.bias"]}}
  i = 0
  while f"layers.{i}.fc1.weight" in sd:
    p = lambda n, s=f"layers.{i}.": sd[s + n]  # noqa: E731
    proj = lambda n: {"kernel": p(f"self_attn.{n}.weight").T.reshape(width, heads, hd)}  # noqa: E731
    attn = {n: proj(t) for n, t in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj"))}
    attn["query"]["bias"] = p("self_attn.q_proj.bias").reshape(heads, hd)
    attn["key"]["bias"] = np.zeros((heads, hd), np.float32)  # Whisper's keys have no bias.
    attn["value"]["bias"] = p("self_attn.v_proj.bias").reshape(heads, hd)
    attn["out"] = {"kernel": p("self_attn.out_proj.weight").T.reshape(heads, hd, width),
                   "bias": p("self_attn.out_proj.bias")}
    params[f"blocks_{i}"] = {
        "attn": attn,
        "ln1": {"scale": p("self_attn_layer_norm.weight"), "bias": p("self_attn_layer_norm.bias")},
        "ln2": {"scale": p("final_layer_norm.weight"), "bias": p("final_layer_norm.bias")},
        "mlp": {"fc1": {"kernel": p("fc1.weight").T, "bias": p("fc1.bias")},
                "fc2": {"kernel": p("fc2.weight").T, "bias": p("fc2.bias")}}}
    i += 1
  return params


def test_whisper_encoder_matches_transformers():
  model = _hf_encoder()
  ours = whisper_encoder.WhisperEncoder(n_mels=16, width=32, depth=2, num_heads=4, mlp_dim=64,
                                        scan=False)
  mel = np.random.default_rng(1).normal(size=(2, 40, 16)).astype(np.float32)  # [B, T, n_mels]
  with torch.no_grad():
    ref = model(torch.from_numpy(mel.transpose(0, 2, 1))).last_hidden_state.numpy()
  out = ours.apply({"params": _to_ours(model, 4)}, None, mel=jnp.asarray(mel))
  assert out.shape == ref.shape == (2, 20, 32)
  np.testing.assert_allclose(np.asarray(out), ref, atol=1e-5, rtol=1e-5)


def test_whisper_encoder_waveform_path_matches_feature_extractor_then_encoder():
  model = _hf_encoder(n_mels=80, positions=50)
  fe = transformers.WhisperFeatureExtractor(feature_size=80, chunk_length=1)
  waves = _waves(samples=16000)
  feats = fe(list(waves), sampling_rate=16000, return_tensors="np")["input_features"]
  feats = feats[:, :, :100]  # 1 s -> 100 frames -> 50 positions
  with torch.no_grad():
    ref = model(torch.from_numpy(feats)).last_hidden_state.numpy()
  ours = whisper_encoder.WhisperEncoder(n_mels=80, width=32, depth=2, num_heads=4, mlp_dim=64,
                                        scan=False)
  out = ours.apply({"params": _to_ours(model, 4)}, jnp.asarray(waves))
  np.testing.assert_allclose(np.asarray(out), ref, atol=1e-4, rtol=1e-4)


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_whisper_encoder_parameter_count_is_exact():
  n_mels, d, depth, mlp = 80, 32, 2, 128
  enc = whisper_encoder.WhisperEncoder(n_mels=n_mels, width=d, depth=depth, num_heads=2)
  shapes = jax.eval_shape(enc.init, jax.random.key(0), jnp.zeros((1, 1600)))
  conv = (3 * n_mels * d + d) + (3 * d * d + d)
  block = 4 * (d * d + d) + 2 * (2 * d) + (d * mlp + mlp) + (mlp * d + d)
  assert _count(meta.unbox(shapes["params"])) == conv + depth * block + 2 * d == 36288
  assert enc.num_tokens(1600) == 5  # 10 frames -> stride 2


@pytest.fixture(scope="module")
def clap():
  config = config_lib.load_config("configs/clap.py:micro").model
  family = models.build(config)
  batch = {"audio": jnp.asarray(np.random.default_rng(0).normal(size=(4, 3200)) * 0.1,
                                jnp.float32),
           "text": jnp.asarray(np.random.default_rng(1).integers(4, 500, size=(4, 24)),
                               jnp.int32)}
  params = meta.unbox(jax.jit(family.init)(jax.random.key(0), batch)["params"])
  return family, params, batch


def test_clap_embeddings_loss_and_gradients(clap):
  family, params, batch = clap
  out = family.predict_embeddings(params, batch)
  assert out["audio_emb"].shape == out["text_emb"].shape == (4, 32)
  np.testing.assert_allclose(np.linalg.norm(out["audio_emb"], axis=-1), 1.0, atol=1e-5)
  loss, metrics = family.loss(params, batch, train=False)
  sim = np.asarray(out["audio_emb"] @ out["text_emb"].T) / 0.07
  lsm = lambda x: x - np.log(np.exp(x).sum(-1, keepdims=True))  # noqa: E731
  expected = -0.5 * (np.diag(lsm(sim)).mean() + np.diag(lsm(sim.T)).mean())
  assert float(loss) == pytest.approx(expected, rel=1e-4)
  assert set(metrics) == {"contrastive_loss", "a2t_accuracy", "logit_scale"}
  grads = jax.grad(lambda p: family.loss(p, batch)[0])(params)
  for tower in ("audio", "audio_proj", "text", "logit_scale"):
    assert _count(grads[tower]) and float(sum(jnp.abs(g).sum() for g in
                                              jax.tree.leaves(grads[tower]))) > 0, tower


def test_clap_micro_parameter_count(clap):
  _, params, _ = clap
  assert _count(params["audio"]) == 36288  # the encoder of the count test above
  assert _count(params["audio_proj"]) == 32 * 32
  assert _count(params) == 36288 + 32 * 32 + _count(params["text"]) + 1


@pytest.fixture(scope="module")
def audio_lm():
  config = config_lib.load_config("configs/audio_lm.py:micro").model
  family = models.build(config)
  tokens = np.array([[2, 512, 10, 11, 12, 513, 3, 0]] * 2, np.int32)
  batch = {"audio": jnp.asarray(_waves(samples=3200)), "media_mask": jnp.ones((2, 1), bool),
           "tokens": jnp.asarray(tokens), "media_locations": jnp.asarray(tokens == 512),
           "loss_mask": jnp.asarray((np.arange(8) >= 2) & (np.arange(8) <= 5), jnp.float32)[None]
           .repeat(2, 0)}
  params = meta.unbox(jax.jit(family.init)(jax.random.key(0), batch)["params"])
  # Open the zero-initialised tanh gates so the audio reaches the LM.
  flat = traverse_util.flatten_dict(params, sep="/")
  flat = {k: (jnp.full_like(v, 0.5) if k.split("/")[-1] in ("attn_gate", "ff_gate") else v)
          for k, v in flat.items()}
  return family, traverse_util.unflatten_dict(flat, sep="/"), batch


def test_audio_lm_tree_and_media_mask(audio_lm):
  family, params, batch = audio_lm
  assert set(params) == {"audio", "resampler", "lm"}
  assert any("gate" in k for k in traverse_util.flatten_dict(params, sep="/"))
  logits = family.predict_logits(params, batch)
  assert logits.shape == (2, 8, 512 + 3)
  other = dict(batch, audio=batch["audio"][::-1])
  changed = np.abs(np.asarray(family.predict_logits(params, other) - logits)).max(axis=(0, 2))
  # BOS precedes the clip's <image> token: it never sees the audio; every later token does.
  assert changed[0] == 0.0 and (changed[1:] > 1e-6).all()


def test_audio_lm_frozen_encoder_gets_exactly_zero_gradient(audio_lm):
  _, params, batch = audio_lm  # (unfrozen, the audio changes the logits: the test above)
  config = config_lib.load_config("configs/audio_lm.py:micro",
                                  ["model.freeze_audio=True", "model.freeze_lm=True"]).model
  frozen = models.build(config)
  grads = jax.grad(lambda p: frozen.loss(p, batch)[0])(params)
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads["audio"]))
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads["lm"]["embed"]))
  assert float(jnp.abs(grads["resampler"]["latents"]).max()) > 0
  mask = traverse_util.flatten_dict(frozen.trainable_mask(params), sep="/")
  assert not any(v for k, v in mask.items() if k.startswith("audio/"))
  assert all(v for k, v in mask.items() if k.startswith(("resampler/", "lm/groups/gated/")))
  assert not any(v for k, v in mask.items() if k.startswith("lm/groups/block_"))


def test_audio_lm_rejects_grid_connectors():
  config = config_lib.load_config("configs/audio_lm.py:micro").model
  config.connector = "avgpool"
  with pytest.raises(ValueError, match="square patch grid"):
    models.build(config)
