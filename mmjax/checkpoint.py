"""Checkpoints: the tree `{params, opt_state, step, rng, data_iter}` as named orbax items.

Every entry point (train, evaluate, convert, the reliability tools) reads this one layout:

  <workdir>/checkpoints/<step>/params      model parameters (StandardSave; sharded arrays)
                              /opt_state   optimizer state (StandardSave)
                              /step        {"step": int} (JSON)
                              /rng         the training key's raw uint32 data (StandardSave)
                              /data_iter   the grain iterator state (JSON)

Saving is asynchronous; orbax writes each step to a temporary directory and renames it when it
is complete, so a step directory that exists was written whole. Restoring walks back from the
newest step to the last one that loads, with a warning naming each one it skips.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

PARAMS, OPT_STATE, STEP, RNG, DATA_ITER = "params", "opt_state", "step", "rng", "data_iter"
ITEMS = (PARAMS, OPT_STATE, STEP, RNG, DATA_ITER)
SUBDIR = "checkpoints"

log = logging.getLogger(__name__)


def checkpoint_dir(workdir: str) -> str:
  """Where a run's checkpoints live."""
  return os.path.join(os.path.abspath(workdir), SUBDIR)


def _empty(tree: Any) -> bool:
  return not jax.tree_util.tree_leaves(tree)


class Checkpointer:
  """A thin wrapper around `ocp.CheckpointManager` with our item names and restore policy.

  Args:
    directory: checkpoint root (usually `checkpoint_dir(workdir)`).
    keep_last: how many recent checkpoints to keep.
    keep_every: additionally keep every step that is a multiple of this (0: none).
    async_save: write in a background thread (the train loop goes on).
  """

  def __init__(self, directory: str, keep_last: int = 3, keep_every: int = 0,
               async_save: bool = True):
    self.directory = directory
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep_last, keep_period=keep_every or None, create=True,
        enable_async_checkpointing=async_save)
    self.manager = ocp.CheckpointManager(directory, options=options, item_names=ITEMS)

  def latest_step(self) -> Optional[int]:
    """The newest complete step, or None."""
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    """Complete steps, oldest first."""
    return sorted(self.manager.all_steps())

  def save(self, step: int, params: Any, opt_state: Any, rng: jax.Array,
           data_iter: Optional[dict] = None, force: bool = False) -> bool:
    """Starts saving `step` (async); returns whether a save was started."""
    args = ocp.args.Composite(**{
        PARAMS: ocp.args.StandardSave(params),
        OPT_STATE: ocp.args.StandardSave(opt_state if not _empty(opt_state) else {}),
        STEP: ocp.args.JsonSave({"step": int(step)}),
        RNG: ocp.args.StandardSave({"key_data": jax.random.key_data(rng)}),
        DATA_ITER: ocp.args.JsonSave(data_iter or {}),
    })
    return self.manager.save(int(step), args=args, force=force)

  def wait(self) -> None:
    """Blocks until pending async saves are complete."""
    self.manager.wait_until_finished()

  def restore(self, abstract_params: Any, abstract_opt_state: Any,
              step: Optional[int] = None) -> Optional[dict[str, Any]]:
    """Restores `step` (default: the newest that loads) onto the given abstract shardings.

    `abstract_*` are trees of `jax.ShapeDtypeStruct` with `.sharding` set (the target mesh may
    differ from the one that saved). Returns a dict keyed by ITEMS, or None if nothing loads.
    """
    steps = [step] if step is not None else list(reversed(self.all_steps()))
    for s in steps:
      try:
        return self._restore_step(s, abstract_params, abstract_opt_state)
      except Exception as e:  # pylint: disable=broad-except
        if step is not None:
          raise
        log.warning("checkpoint step %d in %s does not restore (%s: %s); falling back to the "
                    "previous one", s, self.directory, type(e).__name__, e)
    return None

  def _restore_step(self, step: int, abstract_params: Any, abstract_opt_state: Any) -> dict:
    args = ocp.args.Composite(**{
        PARAMS: ocp.args.StandardRestore(abstract_params),
        OPT_STATE: ocp.args.StandardRestore(
            abstract_opt_state if not _empty(abstract_opt_state) else {}),
        STEP: ocp.args.JsonRestore(),
        RNG: ocp.args.StandardRestore(),
        DATA_ITER: ocp.args.JsonRestore(),
    })
    restored = self.manager.restore(step, args=args)
    opt_state = restored[OPT_STATE] if not _empty(abstract_opt_state) else abstract_opt_state
    return {
        PARAMS: restored[PARAMS],
        OPT_STATE: opt_state,
        STEP: int(restored[STEP]["step"]),
        RNG: jax.random.wrap_key_data(np.asarray(restored[RNG]["key_data"])),
        DATA_ITER: restored[DATA_ITER] or None,
    }

  def restore_params(self, abstract_params: Any = None, step: Optional[int] = None) -> Any:
    """Only the parameters (for evaluation, conversion and init-from another run)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    args = ocp.args.Composite(**{PARAMS: ocp.args.StandardRestore(abstract_params)})
    return self.manager.restore(step, args=args)[PARAMS]

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    self.manager.wait_until_finished()
    self.manager.close()
