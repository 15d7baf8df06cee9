"""Few-shot in-context evaluation as in Flamingo / OpenFlamingo.

For each query image of `split`, `shots` demonstrations from the training split precede it:

    captioning: <image>Output:{caption}<|endofchunk|> ... <image>Output:
    vqa:        <image>Question:{q} Short answer:{a}<|endofchunk|> ... <image>Question:{q} Short answer:

chosen at random (per seed) or by RICES (Yang et al. 2022: the training images nearest to the
query by cosine similarity of the vision tower's pooled features, most similar last, next to the
query). Each shot count is run for every seed and reported as mean and std (CIDEr for
captioning, VQAv2 accuracy for vqa). Shot counts whose prompt would not fit in lm.max_len are
reported as skipped rather than truncated.

House style (`house_style=True`, dataset 'shapes', random selection). The references above
hold five captions of every image in five templates, so any template scores and the
demonstrations have nothing to teach about the query's; a real benchmark writes in one house
style (COCO's captions are not Flickr's), and Flamingo's captioning curve rises largely because
the shots show it. Here each query gets one style (shapes_world.ALWAYS_STYLES, drawn per query
and seed), its demonstrations are captions in that style, and its one reference is its own
caption in that style; `…_style_match` reports how often the generation is written in it
(shapes_world.caption_style). For vqa the demonstrations ask the query's kind of question.

The formats are the papers'; a model trained on other prompts (the shapes tasks train on
`<image>{caption}` and `<image>Question: q Answer: a`) is evaluated in its own format by the
config fields `demo` / `query` (see mmjax/evaluators/suites.py).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from mmjax.data import shapes_world as world
from mmjax.evaluators import EvalContext, captioning, common, register, require, vqa
from mmjax.evaluators import embeddings as emb_lib

CAPTION_DEMO = "<image>Output:{caption}<|endofchunk|>"
CAPTION_QUERY = "<image>Output:"
VQA_DEMO = "<image>Question:{question} Short answer:{answer}<|endofchunk|>"
VQA_QUERY = "<image>Question:{question} Short answer:"


def rices_neighbours(query_features: np.ndarray, pool_features: np.ndarray,
                     shots: int) -> np.ndarray:
  """[Q, shots] pool indices by increasing similarity (the most similar is last)."""
  q = query_features / np.linalg.norm(query_features, axis=1, keepdims=True)
  p = pool_features / np.linalg.norm(pool_features, axis=1, keepdims=True)
  sim = q @ p.T
  top = np.argsort(-sim, axis=1, kind="stable")[:, :shots]
  return top[:, ::-1]


def random_demos(num_queries: int, pool_size: int, shots: int, seed: int) -> np.ndarray:
  """[Q, shots] distinct random pool indices per query."""
  rng = np.random.default_rng(seed)
  return np.stack([rng.choice(pool_size, shots, replace=False) for _ in range(num_queries)]) \
      if shots else np.zeros((num_queries, 0), np.int64)


@register("fewshot")
class FewShotEvaluator:
  """Config: task ('captioning' / 'vqa'), shots ((0, 4, 8, 16, 32)), seeds ((0, 1, 2)),
  selection ('random' / 'rices'), split, num_examples, pool_size, max_new_tokens, batch_size,
  demo / query (prompt formats with {caption} or {question}/{answer}; default: the papers'),
  dataset ('shapes'; 'shapes_video': queries and demonstrations are clips of data.num_frames
  frames, selected at random), single_frame (video: every clip, demos too, is its middle frame
  repeated), house_style (False; True: one caption style per query, shown by its
  demonstrations and alone in its reference, or demonstrations of the query's question kind;
  see the module docstring)."""

  def __init__(self, name: str, config: Any, context: EvalContext):
    self.name, self.config, self.context = name, config, context
    require(name, context.family, "decode_step", "decode")
    if config.get("task", "captioning") not in ("captioning", "vqa"):
      raise ValueError(f"evals.{name}.task must be 'captioning' or 'vqa', got {config.task!r}")
    if config.get("selection", "random") not in ("random", "rices"):
      raise ValueError(f"evals.{name}.selection must be 'random' or 'rices'")
    if config.get("selection", "random") == "rices" and \
        config.get("dataset", "shapes") == "shapes_video":
      raise ValueError(f"evals.{name}: selection='rices' ranks single images; use 'random' "
                       "for dataset 'shapes_video'")
    if config.get("house_style", False) and (config.get("selection", "random") != "random" or
                                             config.get("dataset", "shapes") != "shapes"):
      raise ValueError(f"evals.{name}: house_style=True needs selection='random' and dataset "
                       "'shapes' (the styles are those of shapes_world's scenes)")

  def _examples(self, records: Sequence[dict], seed: int) -> list[dict]:
    """One (caption) or one question per record, chosen per seed."""
    rng = np.random.default_rng(seed)
    out = []
    for r in records:
      if self.config.get("task", "captioning") == "captioning":
        out.append({"caption": r["captions"][int(rng.integers(len(r["captions"])))],
                    "captions": r["captions"]})
      else:
        j = int(rng.integers(len(r["questions"])))
        out.append({"question": r["questions"][j], "answer": r["answer"][j],
                    "answers": r["answers"][j]})
    return out

  def _house_style(self, records: Sequence[dict], pool: Sequence[dict], seed: int, shots: int
                   ) -> tuple[list[dict], list[list[dict]], list[np.ndarray]]:
    """(queries, their demonstrations, the demonstrations' pool indices) in house style:
    captioning draws a style per query and writes its reference and demonstrations in it; vqa
    draws a question per query and demonstrations that ask the same kind. The queries depend
    on `seed` alone, so every shot count asks the same ones."""
    ask, show = np.random.default_rng(seed), np.random.default_rng([seed, shots])
    queries, demos, chosen = [], [], []
    if self.config.get("task", "captioning") == "captioning":
      pool_caps = [world.styled_captions(world.Scene.from_dict(p["scene"])) for p in pool]
      for r in records:
        caps = world.styled_captions(world.Scene.from_dict(r["scene"]))
        style = world.pick(ask, world.ALWAYS_STYLES)
        idx = show.choice(len(pool), shots, replace=False)
        queries.append({"caption": caps[style], "captions": [caps[style]], "style": style})
        demos.append([{"caption": pool_caps[j][style]} for j in idx])
        chosen.append(idx)
      return queries, demos, chosen
    for r in records:
      j = int(ask.integers(len(r["questions"])))
      kind = r["question_types"][j]
      candidates = [i for i, p in enumerate(pool) if kind in p["question_types"]]
      if len(candidates) < shots:
        raise ValueError(f"evals.{self.name}: {shots} shots of {kind!r} questions, but only "
                         f"{len(candidates)} of the pool's {len(pool)} training scenes have "
                         "one; raise pool_size")
      idx = show.choice(np.array(candidates, np.int64), shots, replace=False)
      queries.append({"question": r["questions"][j], "answer": r["answer"][j],
                      "answers": r["answers"][j]})
      row = []
      for i in idx:
        p = pool[i]
        k = world.pick(show, [n for n, t in enumerate(p["question_types"]) if t == kind])
        row.append({"question": p["questions"][k], "answer": p["answer"][k]})
      demos.append(row)
      chosen.append(idx)
    return queries, demos, chosen

  def _prompt(self, demos: Sequence[dict], query: dict) -> str:
    captioning = self.config.get("task", "captioning") == "captioning"
    demo = self.config.get("demo", CAPTION_DEMO if captioning else VQA_DEMO)
    ask = self.config.get("query", CAPTION_QUERY if captioning else VQA_QUERY)
    return "".join(demo.format(**d) for d in demos) + ask.format(**query)

  def _score(self, preds: Sequence[str], queries: Sequence[dict]) -> float:
    if self.config.get("task", "captioning") == "captioning":
      refs = {i: q["captions"] for i, q in enumerate(queries)}
      return captioning.caption_scores(dict(enumerate(preds)), refs)["cider"]
    return float(np.mean([vqa.vqa_accuracy(p, q["answers"]) for p, q in zip(preds, queries)]))

  def run(self, params: Any) -> dict[str, Any]:
    cfg, data, tok = self.config, self.context.data_config, self.context.tokenizer
    family = self.context.family
    _, eoc_id = common.media_ids(tok)
    stops = (eoc_id, tok.eos_id)
    dataset, single = cfg.get("dataset", "shapes"), cfg.get("single_frame", False)
    records = common.load_records(data, cfg.get("split", "validation"),
                                  cfg.get("num_examples", 32), dataset=dataset)
    pool = common.load_records(data, "train", cfg.get("pool_size", 256), dataset=dataset)
    q_imgs = common.visuals(records, data, single)
    p_imgs = common.visuals(pool, data, single)
    if cfg.get("selection", "random") == "rices":
      q_feat = emb_lib.image_features(family, params, q_imgs)
      p_feat = emb_lib.image_features(family, params, p_imgs)
    max_new = cfg.get("max_new_tokens", 16 if cfg.get("task", "captioning") == "captioning" else 4)
    metric = "cider" if cfg.get("task", "captioning") == "captioning" else "accuracy"
    results = {}
    for shots in cfg.get("shots", (0, 4, 8, 16, 32)):
      values, styles = [], []
      for seed in cfg.get("seeds", (0, 1, 2)):
        if cfg.get("house_style", False):
          queries, demos, chosen = self._house_style(records, pool, seed, shots)
        else:
          queries, demos_pool = self._examples(records, seed), self._examples(pool, seed + 1000)
          if cfg.get("selection", "random") == "rices":
            chosen = rices_neighbours(q_feat, p_feat, shots)
          else:
            chosen = random_demos(len(records), len(pool), shots, seed)
          demos = [[demos_pool[j] for j in row] for row in chosen]
        prompts = [self._prompt(d, q) for d, q in zip(demos, queries)]
        longest = max(1 + len(tok.encode(p)) for p in prompts) + max_new
        if longest > family.lm_config.max_len:
          values = None
          break
        media = [np.concatenate([p_imgs[row], q_imgs[i:i + 1]]) for i, row in enumerate(chosen)]
        preds = common.greedy_texts(family, params, tok, prompts, media, max_new, stops,
                                    cfg.get("batch_size", 32))
        values.append(self._score(preds, queries))
        if "style" in queries[0]:
          styles.append(float(np.mean([world.caption_style(p) == q["style"]
                                       for p, q in zip(preds, queries)])))
      key = f"{self.name}/{shots}shot_{metric}"
      if values is None:
        results[key] = f"skipped: prompt exceeds lm.max_len {family.lm_config.max_len}"
        continue
      results[key], results[f"{key}_std"] = common.mean_std(values)
      if styles:
        key = f"{self.name}/{shots}shot_style_match"
        results[key], results[f"{key}_std"] = common.mean_std(styles)
    return results
