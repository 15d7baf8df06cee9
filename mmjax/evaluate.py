"""Standalone evaluation: restore a checkpoint, run evaluators, write their results as JSON.

    python -m mmjax.evaluate --config configs/flamingo.py:tiny --checkpoint /tmp/run --suite shapes
    python -m mmjax.evaluate --checkpoint /tmp/run/checkpoints/600      # the run's config.evals

`--checkpoint` is a workdir (its newest checkpoint), one checkpoint step directory, or a
converted .safetensors/.npz. Without `--config` the run's config.json is used. Evaluators are
the config's `evals` unless `--suite` names a suite of mmjax/evaluators/suites.py.
Results go to `--output` (default: <workdir>/eval_<step>.json) and to stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, Optional

import jax
import numpy as np

from mmjax import evaluators as eval_lib
from mmjax import restore
from mmjax.data import tokenizers
from mmjax.evaluators import suites
from mmjax.models import family as family_lib


def _jsonable(value: Any) -> Any:
  if isinstance(value, (np.generic, np.ndarray, jax.Array)):
    return np.asarray(value).item()
  return value


def evaluate(config: Any, params: Any, evals: Optional[Any] = None,
             workdir: Optional[str] = None) -> dict[str, Any]:
  """Runs `evals` (default config.evals) on `params`; returns {name/metric: value}."""
  tokenizer = tokenizers.get_tokenizer(config.data.tokenizer, data_dir=config.data.data_dir)
  if config.data.as_media or config.data.task in ("interleaved", "video"):
    tokenizers.with_media_tokens(tokenizer)
  family = family_lib.build(config.model)
  context = eval_lib.EvalContext(family=family, data_config=config.data, tokenizer=tokenizer,
                                 workdir=workdir)
  evals = config.evals if evals is None else evals
  results = {}
  for name, cfg in evals.items():
    logging.info("running evaluator %s (%s)", name, cfg.type)
    results.update({k: _jsonable(v) for k, v in
                    eval_lib.build(name, cfg, context).run(params).items()})
  return results


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description="Evaluate an mmjax checkpoint.")
  parser.add_argument("--checkpoint", required=True,
                      help="workdir, checkpoint step directory, or .safetensors/.npz")
  parser.add_argument("--config", help="configs/<family>.py:<preset> (default: the run's)")
  parser.add_argument("--suite", help=f"evaluator suite instead of config.evals: {suites.SUITES}")
  parser.add_argument("--suite_size", default="full", choices=("full", "small"))
  parser.add_argument("--output", help="JSON file (default: <workdir>/eval_<step>.json)")
  args, rest = parser.parse_known_args(argv)
  bad = [r for r in rest if not r.startswith("--config.")]
  if bad:
    parser.error(f"unrecognised arguments {bad}; overrides look like --config.data.batch_size=8")
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
  config = restore.load_run_config(args.checkpoint, args.config,
                                   [r.removeprefix("--") for r in rest])
  params, step = restore.load_params(args.checkpoint)
  evals = (suites.get_suite(args.suite, config.model.family, args.suite_size)
           if args.suite else None)
  workdir = None
  if not args.checkpoint.endswith((".safetensors", ".npz")):
    workdir = os.path.dirname(restore.resolve_checkpoint(args.checkpoint)[0])
  results = {"checkpoint": os.path.abspath(args.checkpoint), "step": step,
             **evaluate(config, params, evals, workdir)}
  output = args.output or (os.path.join(workdir, f"eval_{step}.json") if workdir else None)
  text = json.dumps(results, indent=1, sort_keys=True)
  if output:
    with open(output, "w", encoding="utf-8") as f:
      f.write(text + "\n")
  print(text, flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
