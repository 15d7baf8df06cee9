"""A procedural sound world: sequences of tones, chirps, clicks and noise bursts at 16 kHz,
with captions such as "a rising chirp followed by two clicks" and exact metadata.

Pure numpy over explicit generators (no tfds or grain), so tests can check that the captions
tell the truth about the samples (the spectral peak of a low tone lies below 500 Hz, a rising
chirp's instantaneous frequency increases, the count of clicks in the waveform equals the
caption's number).

Compositional generalisation, as shapes' held-out colour-shape pairs: `HELDOUT_PAIRS` lists
ordered pairs of adjacent events that never occur in the train/validation/test splits; every
clip of the `heldout` split contains at least one of them.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

SAMPLE_RATE = 16000
CLIP_SECONDS = 2.0
NUM_SAMPLES = int(SAMPLE_RATE * CLIP_SECONDS)
# Event kinds, in the words of the captions ('clicks' carries a count of 1-3).
KINDS = ("low tone", "high tone", "rising chirp", "falling chirp", "clicks", "noise burst")
MAX_EVENTS = 3
MAX_CLICKS = 3
NUMBER_WORDS = ("zero", "one", "two", "three")
# Adjacent (earlier, later) kinds never heard in training; the heldout split always has one.
HELDOUT_PAIRS = frozenset({("rising chirp", "clicks"), ("noise burst", "high tone"),
                           ("low tone", "falling chirp"), ("clicks", "low tone")})
CLICK_SPACING = 0.12  # Seconds between the clicks of one event.
_FADE = 0.01  # Raised-cosine fade in/out of tones and bursts, in seconds.


@dataclasses.dataclass(frozen=True)
class Event:
  """One sound: its kind, onset and length in seconds, start/end frequency in Hz (tones and
  chirps; 0 otherwise), number of clicks (clicks; 0 otherwise) and peak amplitude."""
  kind: str
  start: float
  duration: float
  f0: float = 0.0
  f1: float = 0.0
  count: int = 0
  amplitude: float = 0.5

  def phrase(self) -> str:
    """The noun phrase of the captions: 'a low tone', 'two clicks', 'a noise burst'."""
    if self.kind == "clicks":
      return "a click" if self.count == 1 else f"{NUMBER_WORDS[self.count]} clicks"
    return f"a {self.kind}"


def _kinds(rng: np.random.Generator, heldout: str) -> list[str]:
  """Kinds of 1-3 events, no kind twice in a row; `heldout` 'exclude' / 'require' a held-out
  adjacent pair (rejection sampling)."""
  while True:
    n = int(rng.choice([1, 2, 3], p=[0.2, 0.4, 0.4])) if heldout == "exclude" else \
        int(rng.choice([2, 3]))
    kinds = [str(rng.choice(KINDS))]
    while len(kinds) < n:
      kind = str(rng.choice(KINDS))
      if kind != kinds[-1]:
        kinds.append(kind)
    has_heldout = any(p in HELDOUT_PAIRS for p in zip(kinds, kinds[1:]))
    if has_heldout == (heldout == "require"):
      return kinds


def sample_events(rng: np.random.Generator, heldout: str = "exclude") -> tuple[Event, ...]:
  """A random sequence of events that fits in the clip, in time order."""
  if heldout not in ("exclude", "require"):
    raise ValueError(f"heldout must be 'exclude' or 'require', got {heldout!r}")
  t = float(rng.uniform(0.05, 0.15))
  events = []
  for kind in _kinds(rng, heldout):
    amplitude = float(rng.uniform(0.3, 0.7))
    if kind == "clicks":
      count = int(rng.integers(1, MAX_CLICKS + 1))
      events.append(Event(kind, t, count * CLICK_SPACING, count=count, amplitude=amplitude))
    elif kind == "noise burst":
      events.append(Event(kind, t, float(rng.uniform(0.2, 0.35)), amplitude=amplitude * 0.3))
    else:
      low, high = float(rng.uniform(200, 400)), float(rng.uniform(1500, 3000))
      f0, f1 = {"low tone": (low, low), "high tone": (high, high),
                "rising chirp": (low, high), "falling chirp": (high, low)}[kind]
      events.append(Event(kind, t, float(rng.uniform(0.3, 0.45)), f0=f0, f1=f1,
                          amplitude=amplitude))
    t += events[-1].duration + float(rng.uniform(0.08, 0.2))
  return tuple(events)


def _fade(n: int) -> np.ndarray:
  ramp = min(int(_FADE * SAMPLE_RATE), n // 2)
  env = np.ones(n)
  if ramp:
    up = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
    env[:ramp], env[n - ramp:] = up, up[::-1]
  return env


def render(events: tuple[Event, ...], rng: np.random.Generator) -> np.ndarray:
  """The clip [NUM_SAMPLES] float32 in [-1, 1]: the events over faint white noise."""
  wave = rng.normal(0.0, 0.003, NUM_SAMPLES)
  for e in events:
    start = int(round(e.start * SAMPLE_RATE))
    n = min(int(round(e.duration * SAMPLE_RATE)), NUM_SAMPLES - start)
    if n <= 0:
      raise ValueError(f"event {e} starts after the {CLIP_SECONDS} s clip ends")
    if e.kind == "clicks":
      width = int(0.004 * SAMPLE_RATE)
      click = rng.normal(0.0, 1.0, width) * np.exp(-np.arange(width) / (0.0008 * SAMPLE_RATE))
      click *= e.amplitude / np.max(np.abs(click))
      for k in range(e.count):
        at = start + int(round(k * CLICK_SPACING * SAMPLE_RATE))
        wave[at:at + width] += click
      continue
    if e.kind == "noise burst":
      signal = rng.normal(0.0, 1.0, n)
    else:
      # Linear frequency sweep f(t) = f0 + (f1 - f0) t / T; the phase is its integral.
      time = np.arange(n) / SAMPLE_RATE
      phase = 2 * np.pi * (e.f0 * time + 0.5 * (e.f1 - e.f0) * time ** 2 / e.duration)
      signal = np.sin(phase + rng.uniform(0, 2 * np.pi))
    wave[start:start + n] += e.amplitude * _fade(n) * signal
  return np.clip(wave, -1.0, 1.0).astype(np.float32)


def captions(events: tuple[Event, ...]) -> list[str]:
  """Two phrasings of the sequence; the first is the canonical (evaluation) caption."""
  phrases = [e.phrase() for e in events]
  if len(phrases) == 1:
    return [phrases[0], f"only {phrases[0]}"]
  if len(phrases) == 2:
    chained = f"{phrases[0]} followed by {phrases[1]}"
  else:
    chained = f"{phrases[0]} followed by {phrases[1]} and then {phrases[2]}"
  return [chained, "first " + ", then ".join(phrases)]


def to_pcm16(wave: np.ndarray) -> np.ndarray:
  """float samples in [-1, 1] -> int16 PCM (how the builder stores clips: half the bytes)."""
  return np.round(np.clip(wave, -1.0, 1.0) * 32767.0).astype(np.int16)


def from_pcm16(pcm: np.ndarray) -> np.ndarray:
  """int16 PCM -> float32 samples in [-1, 1] (what the batch's `audio` holds)."""
  return (np.asarray(pcm, np.float32) / 32767.0).astype(np.float32)


def events_json(events: tuple[Event, ...]) -> str:
  """The metadata stored with every clip: a JSON list of the events' fields."""
  return json.dumps([dataclasses.asdict(e) for e in events])
