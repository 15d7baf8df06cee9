"""Published sizes: our totals and per-module counts equal open_clip 3.3.0's (pretrained=None).

open_clip models are built on torch's meta device (shapes only), ours with jax.eval_shape, so
even ViT-L/14 costs no memory. Each pair below maps one of our module prefixes to the open_clip
prefix that holds the same parameters; every parameter on both sides must be covered exactly
once, so a total cannot match by accident.
"""

import math

import pytest

from mmjax import config_lib, summary
from mmjax.models import family as family_lib

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

CLIP_PAIRS = [
    ("image/patch_embed", "visual.conv1"), ("image/cls", "visual.class_embedding"),
    ("image/posemb", "visual.positional_embedding"), ("image/ln_pre", "visual.ln_pre"),
    ("image/blocks", "visual.transformer"), ("image/ln_post", "visual.ln_post"),
    ("image/proj", "visual.proj"), ("text/token_embed", "token_embedding"),
    ("text/posemb", "positional_embedding"), ("text/blocks", "transformer"),
    ("text/ln_final", "ln_final"), ("text/proj", "text_projection"),
    ("logit_scale", "logit_scale"),
]
SIGLIP_PAIRS = [
    ("image/patch_embed", "visual.trunk.patch_embed"), ("image/posemb", "visual.trunk.pos_embed"),
    ("image/blocks", "visual.trunk.blocks"), ("image/ln_post", "visual.trunk.norm"),
    ("image/map_head", "visual.trunk.attn_pool"), ("text/token_embed", "text.token_embedding"),
    ("text/posemb", "text.positional_embedding"), ("text/blocks", "text.transformer"),
    ("text/ln_final", "text.ln_final"), ("text/proj", "text.text_projection"),
    ("logit_scale", "logit_scale"), ("logit_bias", "logit_bias"),
]
COCA_PAIRS = [
    ("image/patch_embed", "visual.conv1"), ("image/cls", "visual.class_embedding"),
    ("image/posemb", "visual.positional_embedding"), ("image/ln_pre", "visual.ln_pre"),
    ("image/blocks", "visual.transformer"), ("image_pooler", "visual.attn_pool"),
    ("image_ln_post", "visual.ln_post"), ("image_proj", "visual.proj"),
    ("text/token_embed", "text.token_embedding"), ("text/cls", "text.cls_emb"),
    ("text/posemb", "text.positional_embedding"), ("text/blocks", "text.transformer"),
    ("text/ln_final", "text.ln_final"), ("text/proj", "text.text_projection"),
    ("decoder/layers/self_block", "text_decoder.resblocks"),
    ("decoder/layers/cross_block", "text_decoder.cross_attn"),
    ("decoder/ln_final", "text_decoder.ln_final"), ("decoder/lm_head", "text_decoder.text_projection"),
    ("logit_scale", "logit_scale"),
]

CASES = [
    ("configs/clip.py:vit_b32", "ViT-B-32", 151277313, CLIP_PAIRS),
    ("configs/clip.py:vit_b16", "ViT-B-16", 149620737, CLIP_PAIRS),
    ("configs/clip.py:vit_l14", "ViT-L-14", 427616513, CLIP_PAIRS),
    ("configs/coca.py:vit_b32", "coca_ViT-B-32", 253560065, COCA_PAIRS),
    ("configs/siglip.py:vit_b16", "ViT-B-16-SigLIP", 203155970, SIGLIP_PAIRS),
]


def group_counts(named_sizes: dict[str, int], prefixes: list[str], sep: str) -> dict[str, int]:
  """Sums sizes per prefix; fails if any parameter matches no prefix or several."""
  counts = {p: 0 for p in prefixes}
  for name, size in named_sizes.items():
    hits = [p for p in prefixes if name == p or name.startswith(p + sep)]
    assert len(hits) == 1, f"parameter {name!r} matched prefixes {hits}"
    counts[hits[0]] += size
  return counts


def ours(spec: str) -> dict[str, int]:
  family = family_lib.build(config_lib.load_config(spec).model)
  params = summary.abstract_variables(family)["params"]
  return {k: math.prod(summary.leaf_shape(v)) for k, v in summary.flat_params(params).items()}


def theirs(name: str) -> dict[str, int]:
  with torch.device("meta"):
    model = open_clip.create_model(name, pretrained=None, device="meta")
  return {k: v.numel() for k, v in model.named_parameters()}


@pytest.mark.parametrize("spec,open_clip_name,total,pairs", CASES, ids=[c[1] for c in CASES])
def test_counts_match_open_clip_per_module(spec, open_clip_name, total, pairs):
  mine, ref = ours(spec), theirs(open_clip_name)
  assert sum(mine.values()) == total
  assert sum(ref.values()) == total
  my_counts = group_counts(mine, [p for p, _ in pairs], "/")
  ref_counts = group_counts(ref, [r for _, r in pairs], ".")
  for mine_prefix, ref_prefix in pairs:
    assert my_counts[mine_prefix] == ref_counts[ref_prefix], (mine_prefix, ref_prefix)


@pytest.mark.parametrize("spec,total", [(c[0], c[2]) for c in CASES])
def test_summary_cli_prints_total(spec, total, capsys):
  assert summary.main(["--config", spec]) == 0
  assert capsys.readouterr().out.strip().splitlines()[-1] == f"total_params: {total}"
