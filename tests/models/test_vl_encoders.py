"""ViLBERT, LXMERT and VisualBERT: parity with transformers 5.23 (LXMERT's cross-modality layer and
encoder, VisualBERT's forward pass, with copied random weights; patch features fed as 'regions'
with their grid cells as boxes), exact parameter counts, shapes, padding masks, the direction of
co-attention, where gradients flow, and the MLM / ITM corruption."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import LxmertConfig, VisualBertConfig
from transformers.models.lxmert import modeling_lxmert as hf_lxmert
from transformers.models.visual_bert import modeling_visual_bert as hf_visualbert

from mmjax import config_lib
from mmjax.models import family as family_lib
from mmjax.models import lxmert, vilbert, visualbert, vl_heads, vl_layers

D, HEADS, MLP, V, MAXPOS = 32, 4, 64, 50, 24
B, L, N, FEAT = 2, 7, 9, 12  # batch, text length, regions (a 3x3 patch grid), feature width


def _np(t):
  return t.detach().numpy()


def _linear(m):
  return {"kernel": _np(m.weight).T, "bias": _np(m.bias)}


def _ln(m):
  return {"scale": _np(m.weight), "bias": _np(m.bias)}


def _attn(self_att, out_dense):
  """HF BertSelfAttention-like q/k/v + output dense -> our layers.Attention params."""
  qkv = {name: {"kernel": _np(getattr(self_att, name).weight).T.reshape(-1, HEADS, D // HEADS),
                "bias": _np(getattr(self_att, name).bias).reshape(HEADS, D // HEADS)}
         for name in ("query", "key", "value")}
  qkv["out"] = {"kernel": _np(out_dense.weight).T.reshape(HEADS, D // HEADS, D),
                "bias": _np(out_dense.bias)}
  return qkv


def _bert_layer(layer):
  """HF BertLayer / LxmertLayer -> layers.TransformerBlock(post_norm=True) params."""
  att = layer.attention
  self_att = att.self
  return {"attn": _attn(self_att, att.output.dense), "ln1": _ln(att.output.LayerNorm),
          "mlp": {"fc1": _linear(layer.intermediate.dense), "fc2": _linear(layer.output.dense)},
          "ln2": _ln(layer.output.LayerNorm)}


def _post_attn(layer):
  """HF LxmertCrossAttentionLayer / LxmertSelfAttentionLayer -> vl_layers.PostNormAttention."""
  att = layer.att if hasattr(layer, "att") else layer.self
  return {"attn": _attn(att, layer.output.dense), "ln": _ln(layer.output.LayerNorm)}


def _post_mlp(inter, out):
  return {"mlp": {"fc1": _linear(inter.dense), "fc2": _linear(out.dense)}, "ln": _ln(out.LayerNorm)}


def _x_layer(x):
  return {"cross_attn": _post_attn(x.visual_attention),
          "lang_self_attn": _post_attn(x.lang_self_att),
          "visual_self_attn": _post_attn(x.visn_self_att),
          "lang_ffn": _post_mlp(x.lang_inter, x.lang_output),
          "visual_ffn": _post_mlp(x.visn_inter, x.visn_output)}


def _text_embed(emb):
  word = _np(emb.word_embeddings.weight)
  # Our table carries one more row, the [MASK] token.
  word = np.concatenate([word, np.zeros((1, D), np.float32)])
  return {"token_embed": {"embedding": word}, "posemb": _np(emb.position_embeddings.weight),
          "type_embed": {"embedding": _np(emb.token_type_embeddings.weight)}}


def _ext(mask):
  """HF's additive attention mask from a 0/1 [B, S] mask."""
  return (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min


@pytest.fixture(scope="module")
def inputs():
  rng = np.random.default_rng(0)
  text = rng.integers(1, V, (B, L)).astype(np.int64)
  text_mask = np.ones((B, L), np.int64)
  text_mask[1, 4:] = 0  # the second row is padded
  feats = rng.normal(size=(B, N, FEAT)).astype(np.float32)
  boxes = np.broadcast_to(vl_layers.grid_boxes(3, 3), (B, N, 4)).copy()
  visual_mask = np.ones((B, N), np.int64)
  visual_mask[0, 7:] = 0  # and the first row has two padded regions
  return text, text_mask, feats, boxes, visual_mask


def _lxmert_hf():
  torch.manual_seed(0)
  config = LxmertConfig(vocab_size=V, hidden_size=D, num_attention_heads=HEADS,
                        intermediate_size=MLP, max_position_embeddings=MAXPOS, l_layers=2,
                        x_layers=2, r_layers=1, visual_feat_dim=FEAT, visual_pos_dim=4,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
  return config, hf_lxmert.LxmertModel(config).eval()


def _lxmert_ours(**kw):
  return lxmert.LxmertEncoder(vocab_size=V, max_length=MAXPOS, width=D, num_heads=HEADS,
                              mlp_dim=MLP, l_layers=2, r_layers=1, x_layers=2, scan=False, **kw)


def _lxmert_params(hf):
  enc = hf.encoder
  vf = enc.visn_fc
  params = {"embed": _text_embed(hf.embeddings), "ln_embed": _ln(hf.embeddings.LayerNorm),
            "feat_fc": _linear(vf.visn_fc), "ln_feat": _ln(vf.visn_layer_norm),
            "box_fc": _linear(vf.box_fc), "ln_box": _ln(vf.box_layer_norm),
            "pooler": _linear(hf.pooler.dense)}
  params.update({f"lang_layers_{i}": _bert_layer(m) for i, m in enumerate(enc.layer)})
  params.update({f"visual_layers_{i}": _bert_layer(m) for i, m in enumerate(enc.r_layers)})
  params.update({f"cross_layers_{i}": _x_layer(m) for i, m in enumerate(enc.x_layers)})
  return params


def test_lxmert_cross_modality_layer_matches_transformers(inputs):
  config, _ = _lxmert_hf()
  torch.manual_seed(1)
  hf_layer = hf_lxmert.LxmertXLayer(config).eval()
  _, text_mask, _, _, visual_mask = inputs
  rng = np.random.default_rng(1)
  lang = rng.normal(size=(B, L, D)).astype(np.float32)
  vis = rng.normal(size=(B, N, D)).astype(np.float32)
  with torch.no_grad():
    want_l, want_v = hf_layer(torch.tensor(lang), _ext(torch.tensor(text_mask)), torch.tensor(vis),
                              _ext(torch.tensor(visual_mask)))
  ours = lxmert.CrossModalityLayer(HEADS, MLP)
  (got_l, got_v), _ = ours.apply({"params": _x_layer(hf_layer)}, (lang, vis),
                                 vl_layers.key_mask(text_mask), vl_layers.key_mask(visual_mask))
  np.testing.assert_allclose(got_l, _np(want_l), atol=2e-5)
  np.testing.assert_allclose(got_v, _np(want_v), atol=2e-5)


def test_lxmert_encoder_matches_transformers(inputs):
  text, text_mask, feats, boxes, visual_mask = inputs
  _, hf = _lxmert_hf()
  with torch.no_grad():
    want = hf(input_ids=torch.tensor(text), attention_mask=torch.tensor(text_mask),
              visual_feats=torch.tensor(feats), visual_pos=torch.tensor(boxes),
              visual_attention_mask=torch.tensor(visual_mask))
  got = _lxmert_ours().apply({"params": _lxmert_params(hf)}, jnp.asarray(text), text_mask != 0,
                             feats, boxes, visual_mask=visual_mask != 0)
  np.testing.assert_allclose(got["text"], _np(want.language_output), atol=5e-5)
  np.testing.assert_allclose(got["visual"], _np(want.vision_output), atol=5e-5)
  np.testing.assert_allclose(got["pooled"], _np(want.pooled_output), atol=5e-5)


def _visualbert_hf():
  torch.manual_seed(0)
  config = VisualBertConfig(vocab_size=V, hidden_size=D, num_attention_heads=HEADS,
                            intermediate_size=MLP, num_hidden_layers=2,
                            max_position_embeddings=MAXPOS, visual_embedding_dim=FEAT,
                            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
  return hf_visualbert.VisualBertModel(config).eval()


def test_visualbert_matches_transformers(inputs):
  text, text_mask, feats, boxes, visual_mask = inputs
  hf = _visualbert_hf()
  emb = hf.embeddings
  params = {"embed": _text_embed(emb), "ln_embed": _ln(emb.LayerNorm),
            "visual_type_embed": _np(emb.visual_token_type_embeddings.weight),
            "visual_posemb": _np(emb.visual_position_embeddings.weight)[0],
            "visual_proj": _linear(emb.visual_projection), "pooler": _linear(hf.pooler.dense)}
  params.update({f"layers_{i}": _bert_layer(m) for i, m in enumerate(hf.encoder.layer)})
  with torch.no_grad():
    want = hf(input_ids=torch.tensor(text), attention_mask=torch.tensor(text_mask),
              visual_embeds=torch.tensor(feats), visual_attention_mask=torch.tensor(visual_mask))
  ours = visualbert.VisualBertEncoder(vocab_size=V, max_length=MAXPOS, width=D, depth=2,
                                      num_heads=HEADS, mlp_dim=MLP, scan=False)
  got = ours.apply({"params": params}, jnp.asarray(text), text_mask != 0, feats, boxes,
                   visual_mask=visual_mask != 0)
  hidden = _np(want.last_hidden_state)
  np.testing.assert_allclose(got["text"], hidden[:, :L], atol=5e-5)
  np.testing.assert_allclose(got["visual"], hidden[:, L:], atol=5e-5)
  np.testing.assert_allclose(got["pooled"], _np(want.pooler_output), atol=5e-5)


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _init(module, *args, **kwargs):
  variables = jax.eval_shape(lambda: module.init(jax.random.key(0), *args, **kwargs))
  return nn.unbox(variables["params"])


def test_parameter_counts(inputs):
  text, text_mask, feats, boxes, _ = inputs
  args = (jnp.asarray(text), text_mask != 0, feats, boxes)
  # LXMERT: transformers' count plus our [MASK] row.
  _, hf = _lxmert_hf()
  assert _count(_init(_lxmert_ours(), *args)) == sum(p.numel() for p in hf.parameters()) + D
  # VisualBERT: transformers' count plus the [MASK] row, minus the visual position rows that
  # are never read without image_text_alignment (we keep row 0 only).
  hf_vb = _visualbert_hf()
  ours = visualbert.VisualBertEncoder(vocab_size=V, max_length=MAXPOS, width=D, depth=2,
                                      num_heads=HEADS, mlp_dim=MLP)
  assert _count(_init(ours, *args)) == (sum(p.numel() for p in hf_vb.parameters()) + D
                                        - (MAXPOS - 1) * D)
  # ViLBERT, counted by hand: embeddings, visual embedding, 1 text layer, 1 co-attention block
  # (two co-attention sub-layers + two FFN sub-layers + one TRM per stream), two poolers.
  dv, co = 16, 24
  boxes5 = np.broadcast_to(vl_layers.grid_boxes(3, 3, with_area=True), (B, N, 5))
  vil = vilbert.VilbertEncoder(vocab_size=V, max_length=MAXPOS, width=D, num_heads=HEADS,
                               mlp_dim=MLP, visual_width=dv, visual_heads=2, visual_mlp_dim=40,
                               co_width=co, co_heads=4, text_depth=1, visual_depth=0, depth=1)
  bert_layer = lambda w, m: 4 * (w * w + w) + 2 * w * m + m + w + 4 * w
  co_attn = lambda w, ctx: (w * co + co) + 2 * (ctx * co + co) + (co * w + w) + 2 * w
  ffn = lambda w, m: 2 * w * m + m + w + 2 * w
  want = ((V + 1 + MAXPOS + 2) * D + 2 * D              # text embeddings + LN
          + (FEAT * dv + dv) + (5 * dv + dv) + 2 * dv   # visual embedding + LN
          + bert_layer(D, MLP)                          # text-only layer
          + co_attn(D, dv) + co_attn(dv, D) + ffn(D, MLP) + ffn(dv, 40)
          + bert_layer(D, MLP) + bert_layer(dv, 40)     # the block's TRMs
          + (D * co + co) + (dv * co + co))             # poolers
  assert _count(_init(vil, jnp.asarray(text), text_mask != 0, feats, boxes5)) == want


def _family(name, objective="pretrain", **overrides):
  config = config_lib.load_config(f"configs/{name}.py:micro" +
                                  ("_vqa" if objective == "vqa" else ""))
  with config.unlocked():
    for key, value in overrides.items():
      config.model[key] = value
  return family_lib.build(config.model)


FAMILIES = ("vilbert", "lxmert", "visualbert")


def _apply(fam):
  """The family's forward pass, jitted (eager scanned layers are slow)."""
  return jax.jit(lambda params, batch: fam.apply(params, batch))


@pytest.fixture(scope="module")
def micro():
  """Each family's micro pre-training model, its params and a batch with padded text."""
  out = {}
  rng = np.random.default_rng(0)
  for name in FAMILIES:
    fam = _family(name)
    batch = fam.dummy_batch(4)
    batch["image"] = jnp.asarray(rng.uniform(-1, 1, batch["image"].shape), jnp.float32)
    text = rng.integers(4, 512, batch["text"].shape).astype(np.int32)
    text[:, 0], text[:, 9], text[:, 10:] = 2, 3, 0  # BOS, 8 tokens, EOS, padding
    batch["text"] = jnp.asarray(text)
    params = nn.unbox(jax.jit(fam.init)(jax.random.key(0), batch)["params"])
    out[name] = (fam, params, batch)
  return out


@pytest.mark.parametrize("name", FAMILIES)
def test_shapes(micro, name):
  fam, params, batch = micro[name]
  out = _apply(fam)(params, batch)
  c = fam.config
  regions = (c.vision.image_size // c.vision.patch_size) ** 2
  visual_width = c.get("visual_width", c.width)
  assert out["text"].shape == (4, c.max_length, c.width)
  assert out["visual"].shape == (4, regions + (name == "vilbert"), visual_width)
  assert out["mlm_logits"].shape == (4, c.max_length, c.vocab_size)
  assert out["itm_logits"].shape == (4, 2)
  vqa = _family(name, "vqa")
  vqa_batch = vqa.dummy_batch(4)
  vqa_params = nn.unbox(jax.eval_shape(vqa.init, jax.random.key(0), vqa_batch)["params"])
  logits = jax.eval_shape(vqa.predict_answers, vqa_params, vqa_batch)
  assert logits.shape == (4, vqa.config.num_answers)
  assert set(vqa_params) == {"vision", "encoder", "answer_head"}
  assert set(params) == {"vision", "encoder", "mlm_head", "itm_head"}


@pytest.mark.parametrize("name", FAMILIES)
def test_padding_is_never_attended(micro, name):
  """Changing the ids behind padding changes nothing at the real positions."""
  fam, params, batch = micro[name]
  # Same pad mask (ids != pad_id), different content: build it with the encoder directly.
  enc_params = {"params": params["encoder"]}
  vit = fam.module.vision
  feats = jnp.asarray(np.random.default_rng(1).normal(size=(4, 16, vit["width"])), jnp.float32)
  boxes = jnp.broadcast_to(vl_layers.grid_boxes(4, 4, name == "vilbert"),
                           (4, 16, 5 if name == "vilbert" else 4))
  encoder = fam.module.encoder
  run = jax.jit(lambda t, m, f, vm: encoder.apply(enc_params, t, m, f, boxes, visual_mask=vm))
  text = batch["text"]
  mask = text != 0
  garbage = jnp.where(mask, text, 77)
  full = jnp.ones((4, 16), bool)
  a, b = run(text, mask, feats, full), run(garbage, mask, feats, full)
  np.testing.assert_allclose(a["text"][:, :10], b["text"][:, :10], atol=1e-6)
  np.testing.assert_allclose(a["visual"], b["visual"], atol=1e-6)
  np.testing.assert_allclose(a["pooled"], b["pooled"], atol=1e-6)
  # Padded regions, too.
  vmask = jnp.ones((4, 16), bool).at[:, 12:].set(False)
  c, d = run(text, mask, feats, vmask), run(text, mask, feats.at[:, 12:].set(5.0), vmask)
  np.testing.assert_allclose(c["text"], d["text"], atol=1e-6)
  np.testing.assert_allclose(c["pooled"], d["pooled"], atol=1e-6)


@pytest.mark.parametrize("name", ["vilbert", "lxmert"])
def test_co_attention_direction(micro, name):
  """The text stream reads the image only through the cross layers: its output changes with the
  image, and with cross_attention=False (same weights) it does not."""
  fam, params, batch = micro[name]
  other = dict(batch, image=batch["image"][::-1])
  apply = _apply(fam)
  a, b = apply(params, batch), apply(params, other)
  assert float(jnp.max(jnp.abs(a["text"] - b["text"]))) > 1e-3
  # Visual stream reads the text: changing the text changes it.
  c = apply(params, dict(batch, text=batch["text"].at[:, 1:9].set(5)))
  assert float(jnp.max(jnp.abs(a["visual"] - c["visual"]))) > 1e-3
  cut = fam.module.clone(encoder=fam.module.encoder.clone(cross_attention=False))
  run = jax.jit(lambda bt: cut.apply({"params": params}, bt["image"], bt["text"]))
  np.testing.assert_array_equal(run(batch)["text"], run(other)["text"])
  np.testing.assert_array_equal(run(batch)["visual"],
                                run(dict(batch, text=batch["text"].at[:, 1:9].set(5)))["visual"])


def test_single_stream_text_reads_the_image(micro):
  fam, params, batch = micro["visualbert"]
  apply = _apply(fam)
  a, b = apply(params, batch), apply(params, dict(batch, image=batch["image"][::-1]))
  assert float(jnp.max(jnp.abs(a["text"] - b["text"]))) > 1e-3


def test_gradients_flow_only_where_they_should():
  """LXMERT's VQA head reads the language stream's first token: its gradient reaches the ViT
  through the cross layers, and is exactly zero without them; blind models get no gradient
  through the image pixels into the ViT's patch embedding kernel."""
  fam = _family("lxmert", "vqa")
  batch = fam.dummy_batch(4)
  batch["image"] = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, batch["image"].shape),
                               jnp.float32)
  batch["text"] = batch["text"].at[:, :5].set(jnp.asarray([2, 9, 10, 11, 3]))
  batch["labels"] = jnp.asarray([0, 1, 2, 3], jnp.int32)
  params = nn.unbox(jax.jit(fam.init)(jax.random.key(0), batch)["params"])
  grads = jax.jit(jax.grad(lambda p: fam.loss(p, batch, None, train=False)[0]))(params)
  norm = lambda t: float(sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(t)))
  assert norm(grads["vision"]) > 0 and norm(grads["encoder"]["feat_fc"]) > 0
  cut = fam.module.clone(encoder=fam.module.encoder.clone(cross_attention=False))

  def cut_loss(p):
    logits = cut.apply({"params": p}, batch["image"], batch["text"])["vqa_logits"]
    return jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), batch["labels"]])
  cut_grads = jax.jit(jax.grad(cut_loss))(params)
  assert norm(cut_grads["vision"]) == 0.0
  assert norm(cut_grads["encoder"]["feat_fc"]) == 0.0 and norm(cut_grads["encoder"]["embed"]) > 0
  blind = _family("lxmert", "vqa", blind=True)
  blind_grads = jax.jit(jax.grad(lambda p: blind.loss(p, batch, None, train=False)[0]))(params)
  assert norm(blind_grads["vision"]["patch_embed"]["kernel"]) == 0.0


def test_mlm_corruption_and_itm_negatives():
  rng = jax.random.key(0)
  text = jax.random.randint(rng, (64, 128), 4, 500).at[:, 0].set(2).at[:, 100].set(3)
  text = text.at[:, 101:].set(0)
  corrupted, picked = vl_heads.mask_tokens(jax.random.key(1), text, vocab_size=512,
                                           special_ids=(0, 2, 3))
  picked, corrupted, text = np.asarray(picked), np.asarray(corrupted), np.asarray(text)
  assert not picked[:, 0].any() and not picked[:, 100:].any()  # specials and padding never
  assert 0.13 < picked[:, 1:100].mean() < 0.17
  masked = (corrupted == 512)[picked].mean()
  kept = (corrupted == text)[picked].mean()
  assert 0.75 < masked < 0.85 and 0.07 < kept < 0.16
  assert (corrupted[~picked] == text[~picked]).all()
  image = jnp.arange(8, dtype=jnp.float32)[:, None, None, None] * jnp.ones((8, 2, 2, 3))
  images, matched = vl_heads.mismatch_images(jax.random.key(2), image)
  same = np.asarray(images[:, 0, 0, 0] == image[:, 0, 0, 0])
  np.testing.assert_array_equal(same, np.asarray(matched) == 1)
  assert 0 < int(matched.sum()) < 8
