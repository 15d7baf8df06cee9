"""How a mixture of datasets fills the global batches (`data.mixing`).

  'example'      every row is drawn from dataset k in proportion to its weight (grain's
                 deterministic `MapDataset.mix`): each batch is a mixture, its proportions
                 fluctuate from batch to batch.
  'batch'        every global batch holds a fixed block per dataset, in `data.datasets` order,
                 of batch_size * w_k / sum(w) contiguous rows. With `optim.grad_accum_steps` equal
                 to the number of datasets (equal weights) each micro-batch is one dataset: the
                 Flamingo paper's "accumulate gradients over all datasets" (§3.3, Table 3).
  'round_robin'  every global batch comes from a single dataset, the datasets taking turns in
                 proportion to their weights (smooth weighted round robin): Table 3's
                 "round robin" row, one optimiser step per dataset in turn.

All three are pure functions of the global row index (random access, so resuming and the
per-process slicing of `pipeline.BatchSlice` work unchanged).
"""

from __future__ import annotations

import bisect
import fractions
import math
import sys
from typing import Sequence

import grain

MIXINGS = ("example", "batch", "round_robin")


def integer_weights(weights: Sequence[float], field: str = "data.weights") -> list[int]:
  """The smallest integers in the ratio of `weights` (denominators up to 1000)."""
  if not weights or any(w <= 0 for w in weights):
    raise ValueError(f"{field} must be positive, got {tuple(weights)}")
  total = sum(weights)
  fracs = [fractions.Fraction(w / total).limit_denominator(1000) for w in weights]
  lcm = 1
  for f in fracs:
    lcm = lcm * f.denominator // math.gcd(lcm, f.denominator)
  ints = [int(f * lcm) for f in fracs]
  gcd = 0
  for i in ints:
    gcd = math.gcd(gcd, i)
  return [i // gcd for i in ints]


def block_sizes(weights: Sequence[float], batch_size: int) -> list[int]:
  """Rows per dataset in every global batch of 'batch' mixing; each share must be exact."""
  ints = integer_weights(weights)
  if batch_size % sum(ints):
    raise ValueError(f"data.mixing='batch' splits every batch in the ratio {ints} of "
                     f"data.weights; data.batch_size={batch_size} is not a multiple of "
                     f"{sum(ints)}")
  return [batch_size // sum(ints) * i for i in ints]


def round_robin_schedule(weights: Sequence[float]) -> list[int]:
  """One period of the smooth weighted round robin (nginx's): dataset of each batch in turn,
  each dataset as often as its integer weight and spread out (weights 2:1 -> [0, 1, 0])."""
  ints = integer_weights(weights)
  current, schedule = [0] * len(ints), []
  for _ in range(sum(ints)):
    current = [c + w for c, w in zip(current, ints)]
    k = max(range(len(ints)), key=lambda i: (current[i], -i))
    current[k] -= sum(ints)
    schedule.append(k)
  return schedule


class BatchMixture(grain.MapDataset):
  """Global row index -> (dataset, index in it) by whole batches ('batch' / 'round_robin');
  the parents must be infinite (repeated training streams)."""

  _MUTATES_ELEMENT_SPEC = False

  def __init__(self, parents: Sequence[grain.MapDataset], weights: Sequence[float],
               batch_size: int, mixing: str):
    super().__init__(list(parents))
    if mixing not in ("batch", "round_robin"):
      raise ValueError(f"BatchMixture handles data.mixing 'batch' / 'round_robin', not "
                       f"{mixing!r}")
    if len(weights) != len(parents):
      raise ValueError(f"{len(parents)} datasets but {len(weights)} data.weights")
    self._batch, self._mixing = int(batch_size), mixing
    if mixing == "batch":
      self._sizes = block_sizes(weights, self._batch)
      self._starts = [sum(self._sizes[:k]) for k in range(len(self._sizes))]
    else:
      self._schedule = round_robin_schedule(weights)
      counts = [0] * len(parents)
      # _before[p]: batches each dataset served in schedule[:p] (its index within a period).
      self._before = []
      for k in self._schedule:
        self._before.append(counts[k])
        counts[k] += 1
      self._per_period = counts

  def __len__(self) -> int:
    return sys.maxsize

  def select(self, index: int) -> tuple[int, int]:
    """(dataset k, index within dataset k) of global row `index`."""
    n, row = divmod(index, self._batch)
    if self._mixing == "batch":
      k = bisect.bisect_right(self._starts, row) - 1
      return k, n * self._sizes[k] + row - self._starts[k]
    period, pos = divmod(n, len(self._schedule))
    k = self._schedule[pos]
    served = period * self._per_period[k] + self._before[pos]
    return k, served * self._batch + row

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    k, i = self.select(index)
    return self._parents[k][i]

  def __str__(self) -> str:
    return f"BatchMixture({self._mixing}, {len(self._parents)} datasets)"
