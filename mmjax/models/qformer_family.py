"""BLIP-2 stage 1 (Li et al. 2023, §3.2) as a model family: an image tower (ViT, frozen when it
comes from a CLIP run) and the Q-Former trained with image-text contrastive (ITC), image-text
matching with hard negatives (ITM) and image-grounded generation (ITG) losses, summed with equal
weights as LAVIS's `Blip2Qformer.forward` does.

    image [B, H, W, 3] --ViT--> patch tokens [B, N, Dv] --QFormerStage1 (ln_vision, queries,
    text)--> loss_itc + loss_itm + loss_itg            (mmjax/models/connectors/qformer.py)
    text  [B, L]: the CLIP pipeline's caption rows, [BOS] caption [EOS] pad...

The text is the run's tokenizer's (not BERT WordPiece): its first token (BOS) is the [CLS] whose
output feeds ITC's text embedding, and ITG replaces it by [DEC], one extra row of the Q-Former's
word embeddings (`model.dec_id`, the tokenizer's vocabulary size; `qformer.vocab_size` is one
more). Parameter tree: `vision/` (mmjax.models.vit.ViT; `init_from=('vision=CLIP_DIR:image',)`
loads a CLIP image tower) and `stage1/` (QFormerStage1: ln_vision, qformer, vision_proj,
text_proj, itm_head, lm_transform, lm_norm, lm_bias, temp).
"""

from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from mmjax import batch as B
from mmjax.models import family as family_lib
from mmjax.models import vit as vit_lib
from mmjax.models.connectors import module_fields
from mmjax.models.connectors import qformer as qformer_lib

Array = jax.Array


class QFormerPretrain(nn.Module):
  """ViT + QFormerStage1. `__call__(image, text, text_mask)` touches every parameter (init);
  the family's `loss` applies the two parts itself (`stage1_losses` calls the heads by method)."""
  vision: vit_lib.ViT
  stage1: qformer_lib.QFormerStage1

  def __call__(self, image: Array, text: Array, text_mask: Array, train: bool = False) -> Array:
    _, feats = self.vision(image, train=train)
    return self.stage1.init_all(feats, text, text_mask)


def stage1_params_estimate(*, vision_width: int, num_queries: int, width: int, depth: int,
                           mlp_dim: int, cross_attention_freq: int, vocab_size: int,
                           max_length: int, embed_dim: int) -> int:
  """Closed-form parameter count of QFormerStage1 (LAVIS's Blip2Qformer without the visual
  encoder: ln_vision, the Q-Former BERT, vision_proj, text_proj, itm_head, the BERT LM head
  (transform + LayerNorm + bias, decoder tied to the word embeddings) and temp)."""
  d, dv = width, vision_width
  attn = 4 * d * d + 4 * d                        # q, k, v, out with biases
  cross = 2 * d * d + 2 * d + 2 * (dv * d + d)    # q, out from D; k, v from the image width
  mlp = 2 * d * mlp_dim + mlp_dim + d
  layer = attn + 2 * d + 2 * (mlp + 2 * d)        # self-attn + LN, query and text FFN + LNs
  num_cross = depth // cross_attention_freq
  bert = (num_queries * d + vocab_size * d + max_length * d + 2 * d + depth * layer
          + num_cross * (cross + 2 * d))
  heads = 2 * (d * embed_dim + embed_dim) + (2 * d + 2) + (d * d + d) + 2 * d + vocab_size + 1
  return 2 * dv + bert + heads


@family_lib.register("qformer")
class QFormerFamily(family_lib.ModelFamily):
  """BLIP-2 stage-1 representation learning; metrics loss_itc / loss_itm / loss_itg /
  itm_accuracy are logged beside the total.

  `predict_embeddings(params, batch)` gives ITC's normalised query embeddings
  `image_emb` [B, Q, E] and text embedding `text_emb` [B, E].
  """
  batch_keys = (B.IMAGE, B.TEXT)

  def make_module(self, config: Any) -> QFormerPretrain:
    stage1 = dict(config.stage1)
    bert = dict(stage1.pop("qformer"))
    if config.dec_id >= bert["vocab_size"]:
      raise ValueError(f"model.dec_id={config.dec_id} (the [DEC] token of ITG) must be a row "
                       f"of the Q-Former's embeddings: model.stage1.qformer.vocab_size="
                       f"{bert['vocab_size']} is too small")
    bert = module_fields(qformer_lib.QFormer, bert, "stage1.qformer")
    self.stage1_module = qformer_lib.QFormerStage1(
        qformer=bert, **module_fields(qformer_lib.QFormerStage1, stage1, "stage1"))
    self.vision_module = vit_lib.ViT(**module_fields(vit_lib.ViT, config.vision, "vision"))
    return QFormerPretrain(self.vision_module, self.stage1_module)

  def dummy_batch(self, batch_size: int) -> dict[str, Array]:
    size = self.config.vision.image_size
    length = self.config.stage1.qformer.max_length
    return {B.IMAGE: jnp.zeros((batch_size, size, size, 3), jnp.float32),
            B.TEXT: jnp.zeros((batch_size, min(16, length)), jnp.int32)}

  def module_inputs(self, batch: family_lib.Batch) -> dict[str, Array]:
    text = batch[B.TEXT]
    return {"image": batch[B.IMAGE], "text": text, "text_mask": self.text_mask(text)}

  def text_mask(self, text: Array) -> Array:
    """[B, L] True at real tokens (not `model.pad_id`)."""
    return text != self.config.pad_id

  # ---- Freezing --------------------------------------------------------------------------------

  def is_trainable(self, path: str) -> bool:
    """The image tower trains unless `model.freeze_vision`; the Q-Former always trains."""
    top = path.split("/")[0]
    if top not in ("vision", "stage1"):
      raise ValueError(f"parameter path {path!r} belongs to neither `vision` nor `stage1`")
    return not (top == "vision" and self.config.freeze_vision)

  def stop_frozen_gradients(self, params: Any) -> Any:
    """`params` with stop_gradient on the frozen tower (no backward pass through it)."""
    flat = traverse_util.flatten_dict(params, sep="/")
    return traverse_util.unflatten_dict(
        {k: v if self.is_trainable(k) else jax.lax.stop_gradient(v) for k, v in flat.items()},
        sep="/")

  # ---- Training and inference ------------------------------------------------------------------

  def image_features(self, params: Any, image: Array, rng: Optional[Array] = None,
                     train: bool = False) -> Array:
    """[B, N, Dv] final-normed patch tokens of the image tower (what the Q-Former reads)."""
    rngs = {"dropout": rng} if rng is not None else {}
    _, feats = self.vision_module.apply({"params": params["vision"]}, image, train=train,
                                        rngs=rngs)
    return feats

  def loss(self, params: Any, batch: family_lib.Batch, rng: Optional[Array] = None,
           train: bool = True) -> tuple[Array, family_lib.Metrics]:
    params = self.stop_frozen_gradients(params)
    vision_rng = neg_rng = None
    if rng is not None:
      vision_rng, neg_rng = jax.random.split(rng)
    feats = self.image_features(params, batch[B.IMAGE], vision_rng, train)
    text = batch[B.TEXT]
    # Hard negatives are sampled in training (LAVIS) and the hardest one is taken in evaluation.
    total, metrics = qformer_lib.stage1_losses(
        self.stage1_module, params["stage1"], feats, text, self.text_mask(text),
        bos_id=int(self.config.dec_id), rng=neg_rng if train else None,
        label_smoothing=float(self.config.label_smoothing))
    return total, metrics

  def predict_embeddings(self, params: Any, batch: family_lib.Batch) -> dict[str, Array]:
    """ITC embeddings: `image_emb` [B, Q, E] (one per query) and `text_emb` [B, E]."""
    feats = self.image_features(params, batch[B.IMAGE])
    text = batch[B.TEXT]
    hidden = self.stage1_module.apply({"params": params["stage1"]}, feats, text,
                                      self.text_mask(text), "itc")
    image_emb, text_emb = self.stage1_module.apply(
        {"params": params["stage1"]}, hidden, method=qformer_lib.QFormerStage1.itc_features)
    return {"image_emb": image_emb, "text_emb": text_emb}
