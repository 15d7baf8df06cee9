"""Pre-training stages inside one training command: the paper's recipe as a config section.

Flamingo pre-trains its vision encoder contrastively, freezes it, and only then trains the
resampler and the gated cross-attention. A config that needs such a stage names it in
`config.pretrain`:

    config.pretrain.clip = dict(config="configs/clip.py:tiny", overrides=("total_steps=600",),
                                init=("vision=image",))

`prepare(config, workdir, train_fn)` trains each stage's config in `WORKDIR/pretrain_<name>`
(resuming it, or returning at once when it is finished, like any run) and then appends
`DST=WORKDIR/pretrain_<name>:SRC` to the run's `init_from` for each `init` entry, so the one
command of the README goes from nothing to a Flamingo over a frozen contrastive tower. A run
that already holds a checkpoint skips the stages: it resumes, and `init_from` is not read then;
so does a stage whose destinations `init_from` already names (an experiment that brings its own
stage-1 tower).
"""

from __future__ import annotations

import os
from typing import Any, Callable

import ml_collections

from mmjax import checkpoint as ckpt_lib
from mmjax import config_lib

# Where configs/ is when a stage's config path is relative and not found from the working
# directory (the repository root, one level above the package).
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def stage_dir(workdir: str, name: str) -> str:
  """The workdir of pre-training stage `name` inside the run's workdir."""
  return os.path.join(os.path.abspath(workdir), f"pretrain_{name}")


def resolve_spec(spec: str) -> str:
  """`path:preset` with a relative path found from the working directory, else the repo root."""
  path, arg = config_lib.split_spec(spec)
  if not os.path.isabs(path) and not os.path.exists(path):
    candidate = os.path.join(_REPO, path)
    if os.path.exists(candidate):
      path = candidate
  return f"{path}:{arg}" if arg else path


def _parse_init(name: str, entry: str) -> tuple[str, str]:
  dst, sep, src = entry.partition("=")
  if not sep or not dst or not src:
    raise ValueError(f"config pretrain.{name}.init entry {entry!r} must look like 'DST=SRC' "
                     "(e.g. 'vision=image': this model's vision tower from the stage's image "
                     "tower)")
  return dst, src


def stage_config(name: str, stage: Any) -> ml_collections.ConfigDict:
  """The training config of stage `name` (its `config` spec with its `overrides`)."""
  for field in ("config", "init"):
    if field not in stage:
      raise ValueError(f"config pretrain.{name} needs a {field!r} field (see mmjax/stages.py)")
  unknown = sorted(set(stage.keys()) - {"config", "overrides", "init"})
  if unknown:
    raise ValueError(f"config pretrain.{name} has unknown field(s) {unknown}; known: "
                     "config, overrides, init")
  return config_lib.load_config(resolve_spec(stage.config), list(stage.get("overrides", ())))


def prepare(config: ml_collections.ConfigDict, workdir: str,
            train_fn: Callable[[Any, str], Any]) -> ml_collections.ConfigDict:
  """Runs `config.pretrain`'s stages with `train_fn(stage_config, stage_workdir)` and returns
  the config with their `init` entries added to `init_from` (unchanged without stages or when
  the run resumes from its own checkpoint)."""
  stages = config.get("pretrain") or {}
  if not stages:
    return config
  # Validate every stage before training any, so a typo in the last one costs nothing.
  plans = [(name, stage_config(name, stage),
            [_parse_init(name, e) for e in stage.init]) for name, stage in stages.items()]
  if ckpt_lib.has_checkpoint(workdir):
    return config
  init_from = list(config.init_from)
  given = {spec.partition("=")[0] for spec in init_from}
  for name, cfg, inits in plans:
    if all(dst in given for dst, _ in inits):
      # The caller brings its own weights for these sub-trees (an experiment's stage 1).
      print(f"== pre-training stage {name!r} skipped: init_from already initialises "
            f"{', '.join(d for d, _ in inits)}", flush=True)
      continue
    directory = stage_dir(workdir, name)
    print(f"== pre-training stage {name!r}: {stages[name].config} "
          f"({cfg.total_steps} steps) in {directory}", flush=True)
    train_fn(cfg, directory)
    init_from += [f"{dst}={directory}:{src}" for dst, src in inits]
    print(f"== stage {name!r} done; initialising {', '.join(d for d, _ in inits)} from it",
          flush=True)
  config = ml_collections.ConfigDict(config.to_dict())  # a copy: the caller's stays as given
  config.init_from = tuple(init_from)
  return config
