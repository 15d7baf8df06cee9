"""Frame sampling: which T of a clip's S stored frames a video row feeds the model.

Flamingo (Alayrac et al. 2022, §3.1 / App. A.2) encodes a video as frames sampled from the clip
(1 FPS, up to 8 frames for VTP); TSN (Wang et al. 2016) samples one frame per equal segment. Three
modes (`data.frame_sampling`):

  uniform  the centre of each of T equal segments of [0, S): floor((i + 0.5) * S / T).
           Deterministic in training and evaluation.
  random   TSN: one frame drawn uniformly inside each of the T segments (kept in time order) in
           training; the segment centres (= uniform) in evaluation.
  stride   T consecutive frames `data.frame_stride` apart: a window starting at a random frame
           in training, the centred window in evaluation.

Randomness comes only from the caller's generator (`ExampleProcessor` passes its per-example
one in training and None in evaluation), so the same seed gives the same frames and evaluation
never draws.
"""

from __future__ import annotations

import numpy as np

MODES = ("uniform", "random", "stride")


def check_config(num_source: int, num_frames: int, mode: str, stride: int = 1) -> None:
  """Raises ValueError naming the data field when T frames cannot be taken from S."""
  if mode not in MODES:
    raise ValueError(f"data.frame_sampling must be one of {MODES}, got {mode!r}")
  if num_frames < 1:
    raise ValueError(f"data.num_frames must be >= 1, got {num_frames}")
  if stride < 1:
    raise ValueError(f"data.frame_stride must be >= 1, got {stride}")
  if num_frames > num_source:
    raise ValueError(f"data.num_frames={num_frames} frames cannot be taken from clips of "
                     f"{num_source} frames (data.clip_frames)")
  if mode == "stride" and (num_frames - 1) * stride + 1 > num_source:
    raise ValueError(f"data.num_frames={num_frames} frames data.frame_stride={stride} apart "
                     f"span {(num_frames - 1) * stride + 1} frames, more than the clip's "
                     f"{num_source} (data.clip_frames)")


def sample_indices(num_source: int, num_frames: int, mode: str = "uniform", *, stride: int = 1,
                   rng: np.random.Generator | None = None) -> np.ndarray:
  """[T] increasing int indices into a clip of `num_source` frames.

  Args:
    num_source: S, the frames the clip has.
    num_frames: T, the frames to keep.
    mode: 'uniform' | 'random' | 'stride' (module docstring).
    stride: frame step of 'stride' mode.
    rng: the training generator; None (evaluation) makes every mode deterministic.
  """
  check_config(num_source, num_frames, mode, stride)
  if mode == "stride":
    span = (num_frames - 1) * stride + 1
    room = num_source - span
    start = int(rng.integers(room + 1)) if rng is not None else room // 2
    return start + stride * np.arange(num_frames)
  # Segment i is [i * S / T, (i + 1) * S / T); exact integer arithmetic, no float rounding.
  lo = (np.arange(num_frames) * num_source) // num_frames
  hi = ((np.arange(num_frames) + 1) * num_source) // num_frames
  if mode == "random" and rng is not None:
    return lo + (rng.random(num_frames) * (hi - lo)).astype(np.int64)
  return ((2 * np.arange(num_frames) + 1) * num_source) // (2 * num_frames)


def middle_frame_clip(clip: np.ndarray) -> np.ndarray:
  """The single-frame baseline of a [T, ...] clip: its middle frame (index T // 2) repeated T
  times, so the model sees the same tensor shape with no motion in it."""
  return np.repeat(clip[clip.shape[0] // 2][None], clip.shape[0], axis=0)
