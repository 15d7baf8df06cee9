"""The full Flamingo recipe (Alayrac et al. 2022, §3 and Appendix B) at small scale, end to end,
into experiments/results/recipe.{json,md}.

    python experiments/recipe.py --scale tiny --seeds 0,1,2 [--workdir /tmp/mmjax_recipe] \
        [--jobs 2]                  # stage-3 seeds shared by 2 single-core processes
    python experiments/recipe.py --scale smollm2 --seeds 0      # the real pretrained LM (hours)
    python experiments/recipe.py --from_json                    # rewrite the markdown only
    python experiments/recipe.py --steps 1000 --gate_init 0.1 --name recipe_gate_init
                                  # stage 3 with the tanh gates off zero (recipe_grounding.py)
    python experiments/recipe.py --steps 1000 --gate_init 0.1 --shots 8 --text_length 160 \
        --name recipe_long_episodes   # 8-shot training episodes whose rows hold them whole
    python experiments/recipe.py --steps 1000 --gate_init 0.1 --shots 8 --text_length 160 \
        --interleaved styled_episodes --max_len 1536 --name recipe_style_tiny
                                  # episodes in one caption style per episode (house style)

  stage 1  the vision tower: CLIP (Radford et al. 2021; `--stage1 siglip`: SigLIP, Zhai et al.
           2023; `--stage1 lit`: LiT, Zhai et al. 2022, with the text side locked: the
           pretrained all-MiniLM-L6-v2 plus a trainable head, the ViT from scratch;
           configs/clip.py:lit_tiny, lit_micro at --scale micro) on shapes captions plus, where
           the offline data is installed, Noto emoji names and Tux Paint stamps. Reported:
           zero-shot classification / retrieval in distribution and on what training never
           showed (shapes' held-out colour-shape pairs, the Twemoji drawing style,
           Fashion-MNIST; experiments/clip_ablations.py:held_out_evals).
  stage 2  the language model. micro / tiny: our small decoder pre-trained on the `text` corpus
           (WordNet glosses, Austen) plus the text of every shapes dataset; smollm2: the real
           SmolLM2-135M-Instruct read from its GGUF (mmjax/convert/gguf.py) with its own BPE
           (tokenizer `smollm2`). Reported: perplexity on shapes captions (and `text`).
  stage 3  Flamingo on the mixture of interleaved data, image-caption and image-question pairs,
           and video QA clips (experiments/flamingo_ablations.py's baseline: a block of every
           batch per dataset, each its own accumulation micro-batch), both towers frozen and
           initialised from stages 1-2. The interleaved slot holds few-shot episodes by default
           (`--interleaved episodes`: k support image/answer pairs then a query, i.e. the
           in-context format the few-shot evaluation prompts with; `styled_episodes`: the same
           with every caption of an episode in one house style), M3W-like documents, or
           fast-binding episodes (`--interleaved binding`: two colours named by made-up words).
           Reported: captioning CIDEr and VQA accuracy at 0/4/8/16/32 shots (random
           demonstrations from the training split, mmjax/evaluators/fewshot.py in the shapes
           training formats) as mean ± std over training seeds, on unseen scenes ('validation')
           and separately on held-out colour-shape pairs ('heldout'); greedy samples beside the
           ground truth, video QA accuracy on shapes_video clips (VIDEO_QA_EVAL),
           fast-binding accuracy at 0/1/2/4 shots per word (mmjax/evaluators/binding.py: the
           one few-shot task whose answer only the demonstrations give), and house-style
           captioning and VQA at 0/1/2/4/8/16/32 shots ('_style' rows: each query's one
           reference is in a caption style that only its demonstrations show; `style_match`,
           how often the generation is in it).

Every stage resumes in its own directory under --workdir and the JSON is rewritten after each
stage, so an interrupted run goes on where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "experiments"))

# pylint: disable=wrong-import-position
import ml_collections  # noqa: E402

import clip_ablations as ca  # noqa: E402  pylint: disable=import-error
import evaluate_tiny  # noqa: E402  pylint: disable=import-error
import flamingo_ablations as fa  # noqa: E402  pylint: disable=import-error
import sweep_jobs  # noqa: E402  pylint: disable=import-error
from mmjax import config_lib, evaluate, reporting, restore, train  # noqa: E402
from mmjax.evaluators import suites  # noqa: E402

RESULTS = os.path.join(REPO, "experiments", "results")
SCALES = ("micro", "tiny", "smollm2")
SHOTS = (0, 4, 8, 16, 32)
# Fast binding (mmjax/evaluators/binding.py): k shots = k named images of each of two colours.
BINDING_SHOTS = (0, 1, 2, 4)
SPLITS = ("validation", "heldout")  # unseen scenes; unseen colour-shape pairs
# Stage 1's contrastive pre-training of the vision tower (--stage1).
STAGE1 = ("clip", "siglip", "lit")
# Stage 3's video QA (the vqa evaluator on shapes_video clips): name -> evaluator config; its
# numeric results land in the stage-3 table (left out of --eval_size smoke).
VIDEO_QA_EVAL: dict[str, dict[str, Any]] = {
    "video_vqa": dict(type="vqa", dataset="shapes_video", num_examples=64)}
# The KV-cache bound of stage 3 by default (--max_len): a 32-shot prompt of shapes captions /
# questions (33 images and their text) is about 500 tokens (house style: up to ~1,100, for the
# styles that list every object); rotary positions, so no parameter depends on it.
FEWSHOT_MAX_LEN = 640
# Stage 3's training episodes by default (flamingo_ablations' rows): 4 supports, of which the
# 4 media slots hold the query and the 3 nearest, in 64-token rows (--shots, --text_length).
TRAIN_SHOTS, TEXT_LENGTH = 4, fa.COMMON["text_length"]
# What stage 3's interleaved slot holds: few-shot episodes of the shapes tasks (each caption in
# any template, or every caption of an episode in one house style), M3W-like documents, or
# fast-binding episodes (two colours named by made-up words).
INTERLEAVED = ("episodes", "styled_episodes", "documents", "binding")
# House-style few-shot (fewshot.py's house_style): one caption style per query, shown only by
# the demonstrations; 1 and 2 shots too, where a style first becomes readable.
STYLE_SHOTS = (0, 1, 2, 4, 8, 16, 32)
# Generated tokens for a house-style caption: the longest style lists six objects (up to 39
# pieces of shapes_sp).
STYLE_MAX_NEW = 48
# The rows of the few-shot table: (evaluator name before _split, metric).
FEWSHOT_ROWS = (("captioning", "cider"), ("vqa", "accuracy"), ("captioning_style", "cider"),
                ("captioning_style", "style_match"), ("vqa_style", "accuracy"))


def _load(spec: str, overrides: Sequence[str]) -> ml_collections.ConfigDict:
  return config_lib.load_config(os.path.join(REPO, spec), list(overrides))


def _without_evals(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Training runs evaluate after they finish (below), not during."""
  with config.unlocked():
    config.evals = ml_collections.ConfigDict()
  return config


def _base_scale(scale: str) -> str:
  """The preset stages 1 and 3 share with flamingo_ablations (smollm2 uses tiny's towers)."""
  return "tiny" if scale == "smollm2" else scale


# ---- Stage 1: the vision tower -------------------------------------------------------------

def stage1_config(scale: str, family: str, steps: int, offline: bool,
                  max_examples: int | None = None) -> ml_collections.ConfigDict:
  """CLIP / SigLIP / LiT with the Flamingo preset's vision tower, on shapes (+ emoji +
  tuxpaint). LiT is configs/clip.py:lit_<scale> (its locked MiniLM text tower and tokenizer);
  stage 3 reads only the `image` tower, so it is the same for all three."""
  if family not in STAGE1:
    raise ValueError(f"--stage1 must be one of {STAGE1}, got {family!r}")
  spec, over = fa.clip_overrides(_base_scale(scale), False, steps)
  if family == "lit":
    spec = spec.replace("configs/clip.py:", "configs/clip.py:lit_")
  else:
    spec = spec.replace("configs/clip.py", f"configs/{family}.py")
  if offline:
    over += ["data.datasets=('shapes','emoji','tuxpaint')", "data.weights=(2.0,1.0,1.0)"]
  if max_examples:
    over.append(f"data.max_examples={max_examples}")
  return _without_evals(_load(spec, over))


def stage1_evals(offline: bool, size: str) -> ml_collections.ConfigDict:
  """In-distribution zero-shot / retrieval on shapes, then clip_ablations' held-out set
  ('smoke': the held-out shape alone)."""
  small = size in ("small", "smoke")
  if size == "smoke":
    return ml_collections.ConfigDict({"heldout_shape": dict(
        type="zeroshot", split="heldout", attribute="shape", templates="shapes")})
  evals = ca.held_out_evals(offline, size)
  with evals.unlocked():
    evals.shape = ml_collections.ConfigDict(dict(type="zeroshot", attribute="shape",
                                                 templates="shapes"))
    evals.colour = ml_collections.ConfigDict(dict(type="zeroshot", attribute="colour",
                                                  templates="shapes"))
    evals.retrieval = ml_collections.ConfigDict(dict(type="retrieval",
                                                     num_examples=16 if small else 128))
  return evals


# ---- Stage 2: the language model -----------------------------------------------------------

def stage2_config(scale: str, steps: int, use_text: bool, max_examples: int | None = None,
                  text_length: int = TEXT_LENGTH) -> ml_collections.ConfigDict:
  """Our small LM shaped like the Flamingo preset's, on `text` + the text of every shapes
  dataset (flamingo_ablations.lm_overrides without `text` when it is not installed), in rows
  of `text_length` tokens (stage 3's, so that its rotary positions were trained; the LM's
  max_len grows to fit them)."""
  if scale == "smollm2":
    raise ValueError("--scale smollm2 does not train stage 2: its LM is SmolLM2 from the GGUF")
  spec, over = fa.lm_overrides(scale, steps)
  if use_text:
    over += ["data.datasets=('text','shapes','shapes_interleaved','shapes_video')",
             "data.weights=(1.0,1.0,1.0,1.0)"]
  if max_examples:
    over.append(f"data.max_examples={max_examples}")
  over.append(f"data.text_length={text_length}")
  if text_length > _load(spec, []).model.max_len:
    # Rows longer than the preset's context: rotary positions, so only the bound moves.
    over.append(f"model.max_len={text_length}")
  return _without_evals(_load(spec, over))


def smollm2_lm_config() -> ml_collections.ConfigDict:
  """The SmolLM2-135M LM run config (for perplexity): its preset, SmolLM2's tokenizer."""
  return _without_evals(_load("configs/lm.py:smollm2_135m", [
      "data.tokenizer=smollm2", f"data.text_length={fa.COMMON['text_length']}",
      f"data.num_frames={fa.COMMON['num_frames']}", "data.task=lm"]))


def write_smollm2_workdir(workdir: str, gguf_path: str | None = None) -> str:
  """Stage 2 at --scale smollm2: SmolLM2's GGUF converted to our DecoderLM params and saved as
  step 0 of a run in `workdir` (with its config), so stage 3's init_from ('lm=WORKDIR:')
  regroups it into Flamingo's LM as it does a trained stage-2 run. Idempotent."""
  from mmjax import checkpoint as ckpt_lib  # pylint: disable=import-outside-toplevel
  from mmjax.convert import gguf  # pylint: disable=import-outside-toplevel
  from mmjax.data import datasets, tokenizers  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  checkpointer = ckpt_lib.Checkpointer(ckpt_lib.checkpoint_dir(workdir), async_save=False)
  try:
    if checkpointer.latest_step() is None:
      path = gguf_path or os.path.join(datasets.resolve_data_dir(None), tokenizers.SMOLLM2_GGUF)
      fields, params = gguf.to_mmjax(path, scan=True)
      preset = smollm2_lm_config().model
      for key in ("vocab_size", "width", "depth", "num_heads", "num_kv_heads", "head_dim",
                  "mlp_dim"):
        if fields[key] != preset[key]:
          raise ValueError(f"GGUF {path}: {key}={fields[key]} differs from configs/lm.py:"
                           f"smollm2_135m's {preset[key]}")
      # No optimizer has run: a one-counter stand-in (orbax refuses an empty item).
      checkpointer.save(0, params, {"count": np.zeros((), np.int32)}, jax.random.key(0),
                        force=True)
      checkpointer.wait()
      with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
        f.write(smollm2_lm_config().to_json_best_effort(indent=1))
  finally:
    checkpointer.close()
  return workdir


def stage2_evals(use_text: bool, size: str) -> ml_collections.ConfigDict:
  """Perplexity on unseen shapes captions, and on `text` when it trained on it."""
  small = size in ("small", "smoke")
  evals = {"ppl_shapes": dict(type="perplexity", num_batches=1 if small else 4, batch_size=8,
                              datasets=("shapes",), task="lm")}
  if use_text:
    evals["ppl_text"] = dict(type="perplexity", num_batches=1 if small else 4, batch_size=8,
                             datasets=("text",), task="lm")
  return ml_collections.ConfigDict(evals)


# ---- Stage 3: Flamingo ---------------------------------------------------------------------

def stage3_config(scale: str, seed: int, steps: int, stage_dirs: dict[str, str],
                  interleaved: str = "episodes", row: fa.Row = fa.ROWS[0],
                  gate_init: float = 0.0, shots: int = TRAIN_SHOTS,
                  text_length: int = TEXT_LENGTH,
                  max_len: int = FEWSHOT_MAX_LEN) -> ml_collections.ConfigDict:
  """flamingo_ablations' baseline (mixture, frozen towers, init_from stages 1-2) with the
  interleaved slot's kind and a KV cache long enough for 32-shot prompts. smollm2: the same
  mixture on configs/flamingo.py:smollm2 (its own depth and every-3rd-layer gated blocks).
  `row`: another flamingo_ablations row's changes instead (recipe_grounding.py's arms;
  `stage_dirs` must name its tower). `gate_init`: the tanh gates' initial alpha (0: the
  paper's; see experiments/results/recipe_grounding.md). `shots`: support examples per
  training episode (rows hold them all and the query: max_media = shots + 1; binding episodes:
  per word, max_media = 2 * shots + 1); `text_length`:
  tokens per training row (the few-shot prompts at SHOTS run far longer); `max_len`: the
  LM's KV-cache bound, i.e. the longest few-shot prompt evaluated (micro / tiny; smollm2 keeps
  its preset's)."""
  if interleaved not in INTERLEAVED:
    raise ValueError(f"--interleaved must be one of {INTERLEAVED}, got {interleaved!r}")
  over = fa.flamingo_overrides(_base_scale(scale), row, seed, steps, stage_dirs)
  if scale == "smollm2":
    over = [o for o in over if not o.startswith(("model.lm.depth=",
                                                 "model.xattn.cross_attn_every_n="))]
    over += ["data.tokenizer=smollm2"]
  else:
    over += [f"model.lm.max_len={max_len}"]
  over += [f"data.interleaved_kind={interleaved}"]
  if interleaved != "documents" and (shots, text_length) != (TRAIN_SHOTS, TEXT_LENGTH):
    # A binding episode has `shots` images per word, two words.
    media = 2 * shots + 1 if interleaved == "binding" else shots + 1
    over += [f"data.shots={shots}", f"data.max_media={media}",
             f"data.text_length={text_length}"]
  elif text_length != TEXT_LENGTH:
    over += [f"data.text_length={text_length}"]
  # Always explicit: configs/flamingo.py:tiny defaults to 0.1 (the README main job's).
  over += [f"model.xattn.gate_init={gate_init}"]
  return _without_evals(_load(f"configs/flamingo.py:{scale}", over))


def stage3_evals(seed: int, size: str) -> ml_collections.ConfigDict:
  """Few-shot captioning / VQA at SHOTS on both SPLITS (demonstrations drawn with `seed`), the
  same in house style at STYLE_SHOTS, greedy samples on held-out pairs, and the video-QA
  hook."""
  small = size in ("small", "smoke")
  evals: dict[str, dict[str, Any]] = {}
  for split in SPLITS:
    for task in ("captioning", "vqa"):
      if size == "smoke" and (task == "vqa") == (split == "validation"):
        continue  # CI: captioning on unseen scenes, VQA on held-out pairs
      evals[f"{task}_{split}"] = dict(
          type="fewshot", task=task, split=split, shots=(0, 2) if small else SHOTS,
          seeds=(seed,), num_examples=4 if small else 32, pool_size=16 if small else 256,
          max_new_tokens=(8 if small else 16) if task == "captioning" else 4,
          **suites.SHAPES_FORMATS[task])
      if size == "smoke" and task == "vqa":
        continue  # CI: house style for captioning on unseen scenes only
      captioning = task == "captioning"
      evals[f"{task}_style_{split}"] = dict(
          type="fewshot", task=task, split=split, house_style=True,
          shots=(0, 1) if small else STYLE_SHOTS, seeds=(seed,),
          num_examples=4 if small else 32, pool_size=16 if small else 256,
          max_new_tokens=(8 if small else STYLE_MAX_NEW) if captioning else 4,
          **suites.SHAPES_FORMATS[task])
  for split in SPLITS if size != "smoke" else ("validation",):
    evals[f"binding_{split}"] = dict(type="binding", split=split,
                                     shots=(0, 1) if small else BINDING_SHOTS,
                                     num_examples=(2 if size == "smoke" else 8) if small else 64)
  evals["samples"] = dict(type="captions", split="heldout", num_examples=2 if small else 6,
                          max_new_tokens=8 if small else 24, answers=True)
  if size != "smoke":
    evals.update({k: dict(v, num_examples=4 if small else v["num_examples"])
                  for k, v in VIDEO_QA_EVAL.items()})
  return ml_collections.ConfigDict(evals)


# ---- Running -------------------------------------------------------------------------------

def run_stage(config: ml_collections.ConfigDict, workdir: str, evals: ml_collections.ConfigDict
              ) -> dict[str, Any]:
  """Trains (resumes / finds finished) one run, then evaluates its final parameters."""
  evaluate_tiny.release_compiled_programs()
  start = time.time()
  if config.total_steps > 0:
    train.train_and_evaluate(config, workdir)
  seconds = time.time() - start
  params, step = restore.load_params(workdir)
  results = evaluate.evaluate(config, params, evals, workdir)
  return {"step": step, "train_s": seconds, "eval_s": time.time() - start - seconds,
          **{k: v for k, v in results.items() if isinstance(v, (int, float, str))}}


def fewshot_table(runs: Sequence[dict[str, Any]]
                  ) -> dict[str, dict[int, tuple[float, float, int]]]:
  """{'captioning_validation': {shots: (mean, std, number of runs)}, ...} from stage-3 runs,
  a row per FEWSHOT_ROWS entry and split that the runs have ('captioning_style_validation
  style_match': how often the generation is in the query's house style).

  A run that skipped a cell (its prompt did not fit lm.max_len) leaves it out of the mean;
  the count says over how many runs the cell was averaged, so the report can say so.
  """
  table: dict[str, dict[int, tuple[float, float, int]]] = {}
  for split in SPLITS:
    for task, metric in FEWSHOT_ROWS:
      name = f"{task}_{split}"
      row = {}
      found = {int(k.split("/")[1].split("shot_")[0]) for r in runs for k in r
               if k.startswith(f"{name}/") and k.endswith(f"shot_{metric}")}
      for shots in sorted(found):
        key = f"{name}/{shots}shot_{metric}"
        values = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
        if values:
          row[shots] = (*reporting.mean_std(values), len(values))
      if row or task in ("captioning", "vqa"):
        table[name if metric != "style_match" else f"{name} style_match"] = row
  return table


def binding_table(runs: Sequence[dict[str, Any]]) -> list[str]:
  """Markdown lines of the fast-binding accuracy per split and shots (none if not run)."""
  found = sorted({int(k.split("/")[1].split("shot_")[0]) for r in runs for k in r
                  if k.startswith("binding_") and k.endswith("shot_accuracy")})
  if not found:
    return []
  lines = ["", "Fast binding (mmjax/evaluators/binding.py): accuracy of the made-up word for the "
           "query's colour, k shots = k named images of each of the episode's two colours "
           "(0 shots: the word is unknowable; copying a word from the prompt blindly: 0.5). "
           "In brackets: how often the answer is one of the episode's two words.", "",
           "| split | " + " | ".join(f"{s} shots" for s in found) + " |",
           "|---|" + "---|" * len(found)]
  for split in SPLITS:
    cells = []
    for shots in found:
      key = f"binding_{split}/{shots}shot"
      acc = [r[f"{key}_accuracy"] for r in runs
             if isinstance(r.get(f"{key}_accuracy"), (int, float))]
      either = [r[f"{key}_either_word"] for r in runs if f"{key}_either_word" in r]
      cells.append(f"{_cell(*reporting.mean_std(acc), len(acc), len(runs))} "
                   f"({reporting.mean_std(either)[0]:.2f})" if acc else "skipped / not run")
    if any(c != "skipped / not run" for c in cells):
      lines.append(f"| {split} | " + " | ".join(cells) + " |")
  return lines


STYLE_LEGEND = (" '_style' rows: house style (each query's one reference is written in one "
                "caption style, which only its demonstrations show; VQA demonstrations ask the "
                "query's kind of question); 'style_match': the share of generations written "
                "in the query's style.")


def _cell(mean: float, std: float, count: int, total: int) -> str:
  """'mean ± std', with '(count of total)' when some runs skipped the cell."""
  text = f"{mean:.3f} ± {std:.3f}"
  return text if count == total else f"{text} ({count} of {total})"


def report(saved: dict[str, Any]) -> str:
  """The markdown of all three stages."""
  lines = ["# The Flamingo recipe at small scale", "",
           f"Regenerate: `{saved['command']}` ({saved.get('wall_min', 0):.0f} min wall for the "
           "runs in this file).", ""]
  s1 = saved.get("stage1", {})
  if s1:
    keys = sorted({k for r in s1.values() for k, v in r.items()
                   if isinstance(v, float) and k.endswith(("/top1", "recall@1"))})
    lines += ["## Stage 1: vision tower (zero-shot, final step)", "",
              "| variant | step | " + " | ".join(keys) + " |",
              "|---|---|" + "---|" * len(keys)]
    for name, r in s1.items():
      lines.append(f"| {name} | {r['step']} | " +
                   " | ".join(f"{r[k]:.3f}" if k in r else "" for k in keys) + " |")
    lines.append("")
  s2 = saved.get("stage2", {})
  if s2:
    lines += ["## Stage 2: language model", "", "| LM | step | metric | value |",
              "|---|---|---|---|"]
    for name, r in s2.items():
      for k, v in sorted(r.items()):
        if k.startswith("ppl_") and isinstance(v, float):
          lines.append(f"| {name} | {r['step']} | {k} | {v:.3f} |")
    lines.append("")
  for scale_key, title in (("stage3", "Stage 3: Flamingo"),
                           ("stage3_smollm2", "Stage 3 with SmolLM2-135M-Instruct")):
    runs = saved.get(scale_key, [])
    if not runs:
      continue
    table = fewshot_table(runs)
    shots_cols = sorted({s for row in table.values() for s in row} | set(SHOTS))
    gate = f", tanh gates from alpha = {saved['gate_init']:g}" if saved.get("gate_init") else ""
    if saved.get("text_length", TEXT_LENGTH) != TEXT_LENGTH or saved.get(
        "shots", TRAIN_SHOTS) != TRAIN_SHOTS:
      gate += (f", {saved['shots']}-shot training episodes in {saved['text_length']}-token "
               "rows")
    lines += [f"## {title} ({len(runs)} seed(s), interleaved = {saved.get('interleaved')}{gate})",
              "",
              "Few-shot, random demonstrations from the training split, the shapes training "
              "formats; mean ± std over training seeds. CIDEr for captioning, VQA accuracy "
              "for questions. 'heldout' = colour-shape pairs never seen in training." +
              (STYLE_LEGEND if any("_style_" in name for name in table) else ""), "",
              "| task / split | " + " | ".join(f"{s} shots" for s in shots_cols) + " |",
              "|---|" + "---|" * len(shots_cols)]
    for name, row in table.items():
      cells = [_cell(*row[s], len(runs)) if s in row else "skipped / not run"
               for s in shots_cols]
      lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += binding_table(runs)
    extra = sorted({k for r in runs for k, v in r.items() if isinstance(v, float)
                    and k.split("/")[0] in VIDEO_QA_EVAL})
    for k in extra:
      m, s = reporting.mean_std([r[k] for r in runs if k in r])
      lines.append(f"\n{k}: {m:.3f} ± {s:.3f}")
    lines += ["", f"Samples (seed {runs[0]['seed']}, held-out pairs, greedy):", ""]
    lines += [f"- {v}" for k, v in sorted(runs[0].items())
              if k.startswith("samples/") and isinstance(v, str)]
    lines.append("")
  if saved.get("notes"):
    lines += ["## Notes", "", saved["notes"], ""]
  return "\n".join(lines) + "\n"


def _save(saved: dict[str, Any], output: str, name: str) -> None:
  os.makedirs(output, exist_ok=True)
  reporting.write_json(os.path.join(output, f"{name}.json"), saved)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--scale", default="tiny", choices=SCALES)
  parser.add_argument("--workdir", default="/tmp/mmjax_recipe")
  parser.add_argument("--seeds", default="0,1,2", help="comma-separated stage-3 seeds")
  parser.add_argument("--stage1", default="clip", choices=STAGE1,
                      help="the vision tower's contrastive pre-training (lit: against the "
                      "locked pretrained MiniLM text tower)")
  parser.add_argument("--interleaved", default="episodes", choices=INTERLEAVED,
                      help="what the interleaved slot of stage 3's mixture holds")
  parser.add_argument("--clip_steps", type=int, default=500)
  parser.add_argument("--lm_steps", type=int, default=500)
  parser.add_argument("--steps", type=int, default=300, help="stage-3 steps per seed")
  parser.add_argument("--gate_init", type=float, default=0.0,
                      help="stage 3's initial tanh-gate alpha (0: the paper's, whose gates stay "
                      "closed at these batch sizes, results/recipe_grounding.md)")
  parser.add_argument("--shots", type=int, default=TRAIN_SHOTS,
                      help="supports per stage-3 training episode (the rows then hold shots + 1 "
                      "media; --interleaved binding: per word, 2 * shots + 1)")
  parser.add_argument("--text_length", type=int, default=TEXT_LENGTH,
                      help="tokens per training row in stages 2 and 3")
  parser.add_argument("--max_len", type=int, default=FEWSHOT_MAX_LEN,
                      help="stage 3's KV-cache bound: few-shot prompts longer than this are "
                      "reported as skipped (training is the same at any value)")
  parser.add_argument("--offline_data", default="auto", choices=("auto", "yes", "no"),
                      help="emoji / tuxpaint / Fashion-MNIST / text ('auto': if installed)")
  parser.add_argument("--max_examples", type=int, default=None,
                      help="cap on the real datasets' examples (smoke runs)")
  parser.add_argument("--eval_size", default="full", choices=("full", "small", "smoke"),
                      help="'small': every evaluator at its smallest; 'smoke' (CI): fewer")
  parser.add_argument("--jobs", type=int, default=1,
                      help="worker processes, one core each, that share the stage-3 seeds "
                      "(sweep_jobs.py); stages 1-2 are trained first, once")
  parser.add_argument("--shard", default=None,
                      help="K/N: run only every N-th stage-3 seed from the K-th (set by --jobs)")
  parser.add_argument("--output", default=RESULTS)
  parser.add_argument("--name", default="recipe", help="OUTPUT/NAME.{json,md}")
  parser.add_argument("--from_json", action="store_true")
  args = parser.parse_args(argv)
  seeds = [int(s) for s in args.seeds.split(",")]
  json_path = os.path.join(args.output, f"{args.name}.json")
  command = reporting.command_line("experiments/recipe.py", argv)
  saved: dict[str, Any] = {"command": command, "wall_min": 0.0}
  if os.path.exists(json_path):
    with open(json_path, encoding="utf-8") as f:
      saved = json.load(f)
  if not args.from_json:
    saved.update(command=command, interleaved=args.interleaved, scale=args.scale,
                 gate_init=args.gate_init, shots=args.shots, text_length=args.text_length)
    start = time.time()

    def checkpoint_results():
      nonlocal start
      saved["wall_min"] = saved.get("wall_min", 0.0) + (time.time() - start) / 60
      start = time.time()
      _save(saved, args.output, args.name)

    offline = {"yes": True, "no": False}.get(args.offline_data)
    if offline is None:
      offline = ca.offline_data_available(None)
    # Runs of their own (never resumed under another shape): the LM per row length, stage 3
    # per gate init, episode size and row length.
    length = f"_len{args.text_length}" if args.text_length != TEXT_LENGTH else ""
    episode = f"_k{args.shots}" if args.shots != TRAIN_SHOTS else ""
    dirs = {"clip": os.path.join(args.workdir, args.stage1),
            "lm": os.path.join(args.workdir,
                               "lm_smollm2" if args.scale == "smollm2" else f"lm{length}")}
    if args.shard is None:  # --jobs workers find stages 1-2 trained by their parent
      print(f"stage 1: {args.stage1}", flush=True)
      saved.setdefault("stage1", {})[args.stage1] = run_stage(
          stage1_config(args.scale, args.stage1, args.clip_steps, offline, args.max_examples),
          dirs["clip"], stage1_evals(offline, args.eval_size))
      checkpoint_results()
      print("stage 2: lm", flush=True)
      if args.scale == "smollm2":
        write_smollm2_workdir(dirs["lm"])
        config = smollm2_lm_config()
        with config.unlocked():
          config.total_steps = 0
        saved.setdefault("stage2", {})["smollm2_135m"] = run_stage(
            config, dirs["lm"], stage2_evals(False, args.eval_size))
      else:
        saved.setdefault("stage2", {})["lm"] = run_stage(
            stage2_config(args.scale, args.lm_steps, offline, args.max_examples,
                          args.text_length), dirs["lm"],
            stage2_evals(offline, args.eval_size))
      checkpoint_results()
    key = "stage3_smollm2" if args.scale == "smollm2" else "stage3"
    runs = saved.setdefault(key, [])
    todo = [seed for seed in seeds if seed not in {r["seed"] for r in runs}]

    def run_one(seed: int) -> list[dict[str, Any]]:
      print(f"stage 3: seed {seed}", flush=True)
      gate = f"_gate{args.gate_init:g}" if args.gate_init else ""
      workdir = os.path.join(args.workdir,
                             f"flamingo_{args.interleaved}{gate}{episode}{length}_seed{seed}")
      return [{"seed": seed, **run_stage(
          stage3_config(args.scale, seed, args.steps, dirs, args.interleaved,
                        gate_init=args.gate_init, shots=args.shots,
                        text_length=args.text_length, max_len=args.max_len), workdir,
          stage3_evals(seed, args.eval_size))}]

    sweep_jobs.run_sweep(
        todo, run_one, saved, key, lambda r: (r["seed"],), jobs=args.jobs, shard=args.shard,
        script=os.path.abspath(__file__), argv=sys.argv[1:] if argv is None else argv,
        workdir=args.workdir, filename=f"{args.name}.json",
        save=lambda: _save(saved, args.output, args.name))
    saved[key].sort(key=lambda r: r["seed"])
  text = report(saved)
  _save(saved, args.output, args.name)
  reporting.write_text(os.path.join(args.output, f"{args.name}.md"), text)
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
