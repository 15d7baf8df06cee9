"""Audio (issue #13): train CLAP and audio_lm at `tiny` scale on `audio_events` and report
audio-text retrieval R@1 (both directions) against chance and captioning CIDEr / exact match
against the same model with the audio silenced, into experiments/results/modalities/audio.{json,md}.

    python experiments/modalities/audio.py [--workdir /tmp/mmjax_modalities_audio]
        [--steps N] [--preset tiny] [--from_json]

Stage 1 trains configs/clap.py:<preset> contrastively. Stage 2 trains configs/audio_lm.py:<preset>
with its Whisper encoder initialised from the CLAP audio tower and frozen (Flamingo's recipe for
its vision tower). Each stage resumes in its own sub-directory (a finished stage is skipped).

Retrieval: the `validation` and `heldout` clips (every clip's canonical caption as its text).
Captions repeat across clips (the language has ~600 sentences), so a retrieved item counts as
correct when its caption equals the query's; chance is then the mean share of items carrying
the query's caption, not 1/N (both are reported). Captioning: greedy captions of the clips
scored with CIDEr against both reference phrasings, and the share whose caption equals the
canonical one exactly; the baseline is the same model given silence (zeros) instead of the clip.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

# pylint: disable=wrong-import-position
import jax  # noqa: E402
import numpy as np  # noqa: E402

from mmjax import config_lib, generate, reporting, restore, train  # noqa: E402
from mmjax.data import audio_world, datasets  # noqa: E402
from mmjax.data import tokenizers as tok_lib  # noqa: E402
from mmjax.evaluators import captioning  # noqa: E402
import mmjax.models  # noqa: E402,F401  pylint: disable=unused-import
from mmjax.models import family as family_lib  # noqa: E402

NAME = "audio"
RESULTS = os.path.join(REPO, "experiments", "results", "modalities")
SPLITS = ("validation", "heldout")


def train_stage(spec: str, workdir: str, overrides: list[str], num_devices: int = 0
                ) -> tuple[float, object]:
  """Trains `spec` in `workdir` (resuming) on the first `num_devices` devices (0: all);
  (seconds taken, the run's config)."""
  start = time.time()
  config = config_lib.load_config(spec, overrides)
  train.train_and_evaluate(config, workdir,
                           devices=jax.devices()[:num_devices] if num_devices else None)
  return time.time() - start, config


def eval_records(config, split: str, limit: int) -> tuple[np.ndarray, list[list[str]]]:
  """(audio [N, S] float32, captions per clip) of the first `limit` clips of `split`."""
  source = datasets.load_source("audio_events", split, **datasets.source_kwargs(config.data))
  n = min(limit, len(source))
  records = [source[i] for i in range(n)]
  audio = np.stack([audio_world.from_pcm16(r["audio"]) for r in records])
  caps = [[c.decode("utf-8") if isinstance(c, bytes) else str(c) for c in r["captions"]]
          for r in records]
  return audio, caps


def retrieval(sim: np.ndarray, texts: list[str]) -> dict[str, float]:
  """R@1 of a similarity matrix [clips, texts] (row i's own text is text i) in both directions,
  a hit being any item with the query's caption, and the chance level of each."""
  texts = np.asarray(texts)
  same = texts[:, None] == texts[None, :]
  a2t = same[np.arange(len(texts)), np.argmax(sim, axis=1)].mean()
  t2a = same[np.argmax(sim, axis=0), np.arange(len(texts))].mean()
  return {"a2t_r1": float(a2t), "t2a_r1": float(t2a), "chance": float(same.mean(axis=1).mean()),
          "chance_1_over_n": 1.0 / len(texts)}


def clap_results(workdir: str, limit: int, batch_size: int = 64) -> dict[str, dict]:
  """Retrieval of the newest CLAP checkpoint on each split."""
  config = restore.load_run_config(workdir)
  family = family_lib.build(config.model)
  params, _ = restore.load_params(workdir)
  tok = tok_lib.get_tokenizer(config.data.tokenizer, data_dir=config.data.data_dir)
  embed = jax.jit(family.predict_embeddings)
  out = {}
  for split in SPLITS:
    audio, caps = eval_records(config, split, limit)
    texts = [c[0] for c in caps]
    ids = tok.pad_ids(texts, config.model.text.context_length)
    a_emb, t_emb = [], []
    for s in range(0, len(texts), batch_size):
      e = embed(params, {"audio": audio[s:s + batch_size], "text": ids[s:s + batch_size]})
      a_emb.append(np.asarray(e["audio_emb"]))
      t_emb.append(np.asarray(e["text_emb"]))
    sim = np.concatenate(a_emb) @ np.concatenate(t_emb).T
    out[split] = retrieval(sim, texts)
  return out


def generate_captions(family, params, tok, audio: np.ndarray, max_new_tokens: int = 20,
                      batch_size: int = 64) -> list[str]:
  """Greedy captions continuing `[BOS] <image>` for each clip."""
  image_id, eoc_id = tok_lib.with_media_tokens(tok).add_special_tokens(
      [tok_lib.IMAGE_TOKEN, tok_lib.END_OF_CHUNK_TOKEN])
  stops = (eoc_id, tok.eos_id)
  out = []
  for s in range(0, len(audio), batch_size):
    clips = audio[s:s + batch_size]
    b = len(clips)
    tokens = np.tile(np.array([[tok.bos_id, image_id]], np.int32), (b, 1))
    batch = {"audio": clips, "media_mask": np.ones((b, 1), bool), "tokens": tokens,
             "media_locations": tokens == image_id}
    ids = generate.greedy(family, params, batch, max_new_tokens, stop_ids=stops)
    out += [tok.decode(generate.strip(row, stops)).strip() for row in ids.tolist()]
  return out


def caption_results(workdir: str, limit: int) -> dict[str, dict]:
  """CIDEr / exact match of the newest audio_lm checkpoint, with and without the audio."""
  config = restore.load_run_config(workdir)
  family = family_lib.build(config.model)
  params, _ = restore.load_params(workdir)
  tok = tok_lib.get_tokenizer(config.data.tokenizer, data_dir=config.data.data_dir)
  out = {}
  for split in SPLITS:
    audio, caps = eval_records(config, split, limit)
    refs = dict(enumerate(caps))
    r = {}
    for name, clips in (("audio", audio), ("silence", np.zeros_like(audio))):
      preds = generate_captions(family, params, tok, clips)
      scores = captioning.caption_scores(dict(enumerate(preds)), refs)
      r[f"{name}_cider"] = scores["cider"]
      r[f"{name}_exact"] = float(np.mean([p == c[0] for p, c in zip(preds, caps)]))
      r[f"{name}_example"] = f"{preds[0]!r} (reference {caps[0][0]!r})"
    out[split] = r
  return out


def rows_of(results: dict, preset: str) -> list[dict]:
  """The coordinator's table rows: every metric beside its baseline."""
  rows = []
  for split in SPLITS:
    r = results["clap"][split]
    for direction, label in (("a2t", "audio->text"), ("t2a", "text->audio")):
      rows.append({"model": f"clap {preset}", "metric": f"{split} {label} R@1",
                   "value": r[f"{direction}_r1"], "baseline": "chance (same-caption share)",
                   "baseline_value": r["chance"], "beats_baseline": r[f"{direction}_r1"] >
                   r["chance"]})
  for split in SPLITS:
    r = results["audio_lm"][split]
    for metric in ("cider", "exact"):
      rows.append({"model": f"audio_lm {preset}", "metric": f"{split} captioning "
                   f"{'CIDEr' if metric == 'cider' else 'exact match'}",
                   "value": r[f"audio_{metric}"], "baseline": "same model, silent audio",
                   "baseline_value": r[f"silence_{metric}"],
                   "beats_baseline": r[f"audio_{metric}"] > r[f"silence_{metric}"]})
  return rows


def report(saved: dict) -> str:
  """The markdown table of `saved` (the JSON)."""
  lines = ["# Audio: CLAP retrieval and audio_lm captioning on `audio_events`", "",
           f"Command: `{saved['command']}`", "",
           f"Wall time: {saved['wall_s'] / 60:.1f} min (training: " +
           ", ".join(f"{k} {v / 60:.1f} min" for k, v in saved["train_s"].items()) +
           "; near 0 for a stage found finished). Steps: " +
           ", ".join(f"{k} {v}" for k, v in saved["steps"].items()) +
           f"; {saved['num_eval']} clips per split.", "",
           "| model | metric | value | baseline | baseline value | beats |",
           "|---|---|---|---|---|---|"]
  for r in saved["rows"]:
    lines.append(f"| {r['model']} | {r['metric']} | {r['value']:.3f} | {r['baseline']} | "
                 f"{r['baseline_value']:.3f} | {'yes' if r['beats_baseline'] else 'no'} |")
  lines += ["", "Retrieval chance counts every item with the query's caption as a hit (captions "
            "repeat); 1/N would be " + f"{1 / saved['num_eval']:.4f}.", ""]
  for split in SPLITS:
    r = saved["results"]["audio_lm"][split]
    lines.append(f"- {split} sample: {r['audio_example']}; silent: {r['silence_example']}")
  return "\n".join(lines) + "\n"


def write(saved: dict, output: str) -> str:
  """Writes OUTPUT/audio.json and audio.md; returns the markdown."""
  os.makedirs(output, exist_ok=True)
  reporting.write_json(os.path.join(output, f"{NAME}.json"), saved)
  text = report(saved)
  reporting.write_text(os.path.join(output, f"{NAME}.md"), text)
  return text


def main(argv=None) -> dict:
  """Runs (or, with --from_json, re-renders) the audio experiment; returns the saved dict."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default="/tmp/mmjax_modalities_audio")
  parser.add_argument("--steps", type=int, default=None,
                      help="training steps of each stage (default: the presets')")
  parser.add_argument("--preset", default="tiny", choices=("tiny", "micro"))
  parser.add_argument("--num_eval", type=int, default=256, help="clips per evaluation split")
  parser.add_argument("--num_devices", type=int, default=0,
                      help="train on the first N devices (0: all; the smoke test uses 1)")
  parser.add_argument("--output", default=RESULTS)
  parser.add_argument("--from_json", action="store_true",
                      help="only rewrite the markdown from OUTPUT/audio.json")
  args = parser.parse_args(argv)
  if args.from_json:
    with open(os.path.join(args.output, f"{NAME}.json"), encoding="utf-8") as f:
      saved = json.load(f)
    print(write(saved, args.output))
    return saved
  argv_list = list(argv) if argv is not None else sys.argv[1:]
  command = reporting.command_line("experiments/modalities/audio.py", argv_list)
  start = time.time()
  clap_dir = os.path.join(args.workdir, "clap")
  lm_dir = os.path.join(args.workdir, "audio_lm")
  # Warmup: the presets' 30 steps, shortened for short (smoke) runs.
  common = [] if args.steps is None else [f"total_steps={args.steps}",
                                          f"optim.warmup_steps={min(30, args.steps // 10)}"]
  common.append(f"data.num_eval={max(args.num_eval, 16)}")
  clap_s, clap_cfg = train_stage(f"configs/clap.py:{args.preset}", clap_dir, common,
                                 args.num_devices)
  lm_s, lm_cfg = train_stage(f"configs/audio_lm.py:{args.preset}", lm_dir, common + [
      f"init_from=('audio={clap_dir}:audio',)", "model.freeze_audio=True"], args.num_devices)
  results = {"clap": clap_results(clap_dir, args.num_eval),
             "audio_lm": caption_results(lm_dir, args.num_eval)}
  saved = {"component": NAME, "command": command, "wall_s": time.time() - start,
           "train_s": {"clap": clap_s, "audio_lm": lm_s},
           "steps": {"clap": clap_cfg.total_steps, "audio_lm": lm_cfg.total_steps},
           "num_eval": args.num_eval, "results": results}
  saved["rows"] = rows_of(results, args.preset)
  print(write(saved, args.output))
  return saved


if __name__ == "__main__":
  main()
  sys.exit(0)
