"""A procedural CLEVR-like world: scene sampling, Pillow rendering, captions and VQA.

Pure functions over explicit numpy generators, with no tfds or grain in sight, so tests can check
that the text tells the truth about the pixels (a count answer equals the number of objects drawn,
the centre pixel of each object has its colour). Scenes live in the unit square (x right, y down),
so one scene renders at any image size.

Compositional generalisation: `HELDOUT_PAIRS` lists (colour, shape) pairs that never occur in the
train/validation/test splits; the `heldout` split contains at least one of them in every scene.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "diamond", "star")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 205, 30),
    "purple": (140, 60, 190),
    "cyan": (40, 200, 210),
    "orange": (245, 135, 20),
    "grey": (128, 128, 128),
}
SIZES = {"small": 0.075, "large": 0.13}  # Radius as a fraction of the image side.
SHADINGS = ("matte", "shiny")  # Shiny objects carry a white highlight up-left of the centre.
BACKGROUNDS = {"white": (245, 245, 245), "beige": (225, 210, 180), "slate": (60, 70, 85)}

# One held-out colour per shape, spread over the palette so every colour and shape still occurs
# in training, only never in these pairs.
HELDOUT_PAIRS = frozenset(
    (list(COLOURS)[(3 * i + 1) % len(COLOURS)], shape) for i, shape in enumerate(SHAPES))

# Words annotators use interchangeably; the first entry is the canonical answer.
_SYNONYMS = {
    "yes": ("yes", "yeah"), "no": ("no", "nope"),
    "grey": ("grey", "gray"), "purple": ("purple", "violet"),
    "square": ("square", "box"), "diamond": ("diamond", "rhombus"), "circle": ("circle", "disc"),
    "left": ("left", "to the left"), "right": ("right", "to the right"),
    "up": ("up", "upwards"), "down": ("down", "downwards"),
}
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
NUM_ANSWERS = 10  # Answers per question, as in VQAv2.

# Minimum separation (unit square) for left/right/above questions, so relations are unambiguous.
_RELATION_MARGIN = 0.08


@dataclasses.dataclass(frozen=True)
class Obj:
  """One object: attributes plus the centre in the unit square."""
  shape: str
  colour: str
  size: str
  shading: str
  x: float
  y: float

  def words(self, keys: Sequence[str] = ("size", "colour", "shape")) -> str:
    """The noun phrase naming the attributes in `keys`, e.g. 'large red circle'."""
    return " ".join(getattr(self, k) for k in ("size", "shading", "colour", "shape") if k in keys)


@dataclasses.dataclass(frozen=True)
class Scene:
  """A background and its objects, in drawing order."""
  background: str
  objects: tuple[Obj, ...]

  def to_json(self) -> str:
    """The scene description stored with every example."""
    return json.dumps({"background": self.background,
                       "objects": [dataclasses.asdict(o) for o in self.objects]}, sort_keys=True)

  @classmethod
  def from_json(cls, text: str | bytes) -> "Scene":
    """Inverse of `to_json`."""
    return cls.from_dict(json.loads(text))

  @classmethod
  def from_dict(cls, d: dict) -> "Scene":
    """The scene of a parsed `to_json` (as evaluators' records hold it)."""
    return cls(d["background"], tuple(Obj(**o) for o in d["objects"]))


def pick(rng: np.random.Generator, seq: Sequence):
  """One element of `seq`, drawn with one `rng.integers` call (so every generator that uses it
  consumes the stream the same way, and committed scenes stay reproducible)."""
  return seq[int(rng.integers(len(seq)))]


def sample_objects(rng: np.random.Generator, n: int, *, heldout: str = "exclude",
                   max_tries: int = 200) -> list[Obj]:
  """Samples `n` non-overlapping objects.

  Args:
    rng: the generator; the result is a pure function of its state.
    n: number of objects.
    heldout: 'exclude' (no HELDOUT_PAIRS), 'require' (at least one), or 'any'.
    max_tries: placement attempts per object before the scene is resampled.
  """
  if heldout not in ("exclude", "require", "any"):
    raise ValueError(f"heldout must be 'exclude', 'require' or 'any', got {heldout!r}")
  while True:
    objs: list[Obj] = []
    for i in range(n):
      while True:
        shape, colour = pick(rng, SHAPES), pick(rng, list(COLOURS))
        forced = heldout == "require" and i == 0
        if forced:
          colour, shape = sorted(HELDOUT_PAIRS)[int(rng.integers(len(HELDOUT_PAIRS)))]
        if heldout == "exclude" and (colour, shape) in HELDOUT_PAIRS:
          continue
        break
      size, shading = pick(rng, list(SIZES)), pick(rng, SHADINGS)
      r = SIZES[size]
      for _ in range(max_tries):
        x, y = rng.uniform(r + 0.02, 1 - r - 0.02, size=2)
        # Keep a gap so objects never touch and every centre pixel belongs to its object.
        if all((x - o.x) ** 2 + (y - o.y) ** 2 > (r + SIZES[o.size] + 0.03) ** 2 for o in objs):
          objs.append(Obj(shape, colour, size, shading, float(x), float(y)))
          break
      else:
        break
    if len(objs) == n:
      return objs


def sample_scene(rng: np.random.Generator, *, min_objects: int = 1, max_objects: int = 6,
                 heldout: str = "exclude") -> Scene:
  """Samples a background and `min_objects..max_objects` objects (see `sample_objects`)."""
  n = int(rng.integers(min_objects, max_objects + 1))
  background = pick(rng, list(BACKGROUNDS))
  return Scene(background, tuple(sample_objects(rng, n, heldout=heldout)))


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
  if shape == "square":
    s = r * 0.85
    return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
  if shape == "triangle":
    # Centroid at the centre so the centre pixel is inside.
    return [(cx, cy - r), (cx + 0.9 * r, cy + 0.6 * r), (cx - 0.9 * r, cy + 0.6 * r)]
  if shape == "diamond":
    return [(cx, cy - r), (cx + 0.75 * r, cy), (cx, cy + r), (cx - 0.75 * r, cy)]
  if shape == "star":
    pts = []
    for k in range(10):
      rad = r if k % 2 == 0 else 0.45 * r
      a = -np.pi / 2 + k * np.pi / 5
      pts.append((cx + rad * np.cos(a), cy + rad * np.sin(a)))
    return pts
  raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def draw_object(draw: ImageDraw.ImageDraw, o: Obj, x: float, y: float, size_px: int,
                scale: float = 1.0) -> None:
  """Draws one object centred at unit coordinates (x, y); `scale` shrinks its radius (the
  small-objects-on-a-large-canvas variant, builders/shapes_small.py)."""
  cx, cy, r = x * size_px, y * size_px, SIZES[o.size] * size_px * scale
  fill = COLOURS[o.colour]
  if o.shape == "circle":
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
  else:
    draw.polygon(_polygon(o.shape, cx, cy, r), fill=fill)
  if o.shading == "shiny":
    # Highlight up-left, clear of the centre pixel that tests read.
    hx, hy, hr = cx - 0.4 * r, cy - 0.4 * r, max(0.18 * r, 0.6)
    draw.ellipse([hx - hr, hy - hr, hx + hr, hy + hr], fill=(255, 255, 255))


def render(scene: Scene, size_px: int, positions: Sequence[tuple[float, float]] | None = None,
           scale: float = 1.0) -> Image.Image:
  """Renders the scene as an RGB image of `size_px` square (optionally at other positions;
  `scale` multiplies every object's radius)."""
  img = Image.new("RGB", (size_px, size_px), BACKGROUNDS[scene.background])
  draw = ImageDraw.Draw(img)
  for i, o in enumerate(scene.objects):
    x, y = positions[i] if positions is not None else (o.x, o.y)
    draw_object(draw, o, x, y, size_px, scale)
  return img


def png_bytes(img: Image.Image) -> bytes:
  """Encodes an image as PNG (low compression: these files are tiny, speed matters more)."""
  buf = io.BytesIO()
  img.save(buf, format="PNG", compress_level=1)
  return buf.getvalue()


# ---- Text ---------------------------------------------------------------------------------------

def plural(shape: str) -> str:
  """'circle' -> 'circles'."""
  return shape + "s"


def count_words(n: int, rng: np.random.Generator | None = None) -> str:
  """A number as a word (or, with an rng, sometimes as digits)."""
  if rng is not None and rng.random() < 0.3:
    return str(n)
  return NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else str(n)


def _article(phrase: str) -> str:
  return ("an " if phrase[0] in "aeiou" else "a ") + phrase


# The caption templates by name ("house styles"). Every scene has the first six; the two
# relation styles need two objects apart by the relation margin. A real captioning benchmark
# writes in one house style (COCO's is not Flickr's), and in-context demonstrations are how
# Flamingo learns which (mmjax/evaluators/fewshot.py's `house_style`).
CAPTION_STYLES = ("count_listing", "picture_of", "first_on_background", "count_shapes",
                  "scene_with", "last_in_picture", "left_right", "above_below")
ALWAYS_STYLES = CAPTION_STYLES[:6]
# What identifies a style from a caption's beginning (a generation may stop mid-list); tried in
# this order, so a more specific opening wins ("A picture of a red circle above ..." is
# picture_of).
_STYLE_OPENINGS = (
    ("picture_of", r"A picture of "),
    ("scene_with", r"An? [a-z]+ scene with "),
    ("count_listing", r"[A-Za-z0-9]+ objects? on an? [a-z]+ background:"),
    ("count_shapes", r"There (is|are) [A-Za-z0-9]+ shapes? in this image"),
    ("last_in_picture", r"An? [a-z ]+ is in the picture"),
    ("left_right", r"An? [a-z ]+ to the (left|right) of "),
    ("above_below", r"An? [a-z ]+ (above|below) an? "),
    ("first_on_background", r"An? [a-z ]+ on an? [a-z]+ background\."),
)


def styled_captions(scene: Scene, rng: np.random.Generator | None = None) -> dict[str, str]:
  """The scene's caption in each style it has, by style name, in CAPTION_STYLES order (all
  true of the image). Counts are sometimes digits with an `rng`, always words without."""
  objs = scene.objects
  n = len(objs)
  listing = ", ".join(_article(o.words()) for o in objs)
  last = objs[-1].words(("size", "shading", "colour", "shape"))
  out = {
      "count_listing": f"{count_words(n, rng).capitalize()} object{'s' if n > 1 else ''} on a "
                       f"{scene.background} background: {listing}.",
      "picture_of": f"A picture of {listing}.",
      "first_on_background": f"{_article(objs[0].words(('colour', 'shape'))).capitalize()} on a "
                             f"{scene.background} background.",
      "count_shapes": f"There {'are' if n > 1 else 'is'} {count_words(n, rng)} "
                      f"shape{'s' if n > 1 else ''} in this image.",
      "scene_with": f"A {scene.background} scene with {listing}.",
      "last_in_picture": f"{_article(last).capitalize()} is in the picture.",
  }
  if n > 1:
    a, b = objs[0], objs[1]
    if abs(a.x - b.x) > _RELATION_MARGIN:
      side = "left" if a.x < b.x else "right"
      out["left_right"] = (f"{_article(a.words()).capitalize()} to the {side} of "
                           f"{_article(b.words())}.")
    if abs(a.y - b.y) > _RELATION_MARGIN:
      where = "above" if a.y < b.y else "below"
      out["above_below"] = (f"{_article(a.words(('colour', 'shape'))).capitalize()} {where} "
                            f"{_article(b.words(('colour', 'shape')))}.")
  return out


def caption_style(text: str) -> str | None:
  """The style a caption is written in, read from its opening (None: no style's)."""
  text = text.strip()
  for style, pattern in _STYLE_OPENINGS:
    if re.match(pattern, text):
      return style
  return None


# Styles whose caption names every object with its size, colour and shape: captions in them
# tell a contrastive tower which shapes are in the image, where the other styles name one object
# or none (experiments/README.md, "Why the tiny tower did not read shape").
LISTING_STYLES = ("count_listing", "picture_of", "scene_with")


def captions(scene: Scene, rng: np.random.Generator, num: int = 5,
             styles: Sequence[str] = ()) -> list[str]:
  """`num` captions of the scene in varied templates (all true of the image), drawn from the
  styles in `styles` (empty: every style the scene has). Without `styles` the random stream is
  consumed exactly as before the option existed, so the default data never changes."""
  unknown = sorted(set(styles) - set(CAPTION_STYLES))
  if unknown:
    raise ValueError(f"unknown caption style(s) {unknown}; known: {CAPTION_STYLES}")
  candidates = [c for name, c in styled_captions(scene, rng).items()
                if not styles or name in styles]
  order = rng.permutation(len(candidates))[:num]
  return [candidates[i] for i in order]


_SHAPE_WORD = re.compile(r"\b(" + "|".join(SHAPES) + r")\b")


def swap_shape(caption: str, scene: Scene, rng: np.random.Generator | None = None
               ) -> str | None:
  """The caption with one shape word replaced by another shape, so that it is false of the
  scene: a hard negative that only an image tower reading shape can reject (NegCLIP,
  Yuksekgonul et al. 2023, swaps words the same way). The replaced word and the new shape are
  drawn with `rng` (without: the first word, the first shape that makes it false). When the
  word follows a colour, no object of that colour may have the new shape. None if the caption
  names no shape."""
  words = list(_SHAPE_WORD.finditer(caption))
  if not words:
    return None
  match = words[int(rng.integers(len(words)))] if rng is not None else words[0]
  before = caption[:match.start()].split()
  colour = before[-1] if before and before[-1] in COLOURS else None
  taken = {o.shape for o in scene.objects if colour is None or o.colour == colour}
  options = [s for s in SHAPES if s not in taken] or [s for s in SHAPES if s != match.group(1)]
  new = pick(rng, options) if rng is not None else options[0]
  return caption[:match.start()] + new + caption[match.end():]


def annotator_answers(answer: str, rng: np.random.Generator, kind: str = "word") -> list[str]:
  """NUM_ANSWERS answers as different annotators would write them.

  Most give the canonical answer; some use a synonym (or, for counts, digits vs words), so
  VQA accuracy `min(#matches / 3, 1)` is meaningful.
  """
  if kind == "count":
    alternatives = (str(int(answer)), NUMBER_WORDS[int(answer)])
  else:
    alternatives = _SYNONYMS.get(answer, (answer,))
  num_alt = int(rng.integers(0, 4)) if len(alternatives) > 1 else 0
  answers = [alternatives[0]] * (NUM_ANSWERS - num_alt)
  answers += [alternatives[1 + int(rng.integers(len(alternatives) - 1))] for _ in range(num_alt)]
  return [answers[i] for i in rng.permutation(NUM_ANSWERS)]


_DESCRIPTORS = (("shape",), ("colour",), ("size", "shape"), ("colour", "shape"), ("size", "colour"),
                ("shading", "shape"), ("size", "colour", "shape"), ("size", "shading", "shape"),
                ("size", "shading", "colour"), ("size", "shading", "colour", "shape"))


def unique_phrase(scene: Scene, i: int, drop: str | None = None) -> str | None:
  """The shortest phrase that names object i and no other (without attribute `drop`), or None."""
  o = scene.objects[i]
  for keys in _DESCRIPTORS:
    if drop in keys:
      continue
    matches = [p for p in scene.objects if all(getattr(p, k) == getattr(o, k) for k in keys)]
    if len(matches) == 1:
      return "the " + o.words(keys) + ("" if "shape" in keys else " object")
  return None


@dataclasses.dataclass(frozen=True)
class QA:
  """One question with its annotator answers; `answer` is the canonical (most common) one."""
  kind: str
  question: str
  answer: str
  answers: tuple[str, ...]


def _yes_no(b: bool) -> str:
  return "yes" if b else "no"


def questions(scene: Scene, rng: np.random.Generator, num: int = 8) -> list[QA]:
  """Up to `num` questions of distinct kinds about the scene, answered from the scene itself."""
  objs = scene.objects
  out: list[QA] = []

  def add(kind: str, q: str, a: str, answer_kind: str = "word") -> None:
    out.append(QA(kind, q, a, tuple(annotator_answers(a, rng, answer_kind))))

  # exist: a random (colour, shape) pair, present or not.
  colour, shape = pick(rng, list(COLOURS)), pick(rng, SHAPES)
  if rng.random() < 0.5:
    colour, shape = objs[int(rng.integers(len(objs)))].colour, objs[0].shape
  present = any(o.colour == colour and o.shape == shape for o in objs)
  add("exist", f"Is there {_article(colour + ' ' + shape)}?", _yes_no(present))
  # count: all objects, one colour, or one shape.
  which = int(rng.integers(3))
  if which == 0:
    add("count", "How many objects are there?", str(len(objs)), "count")
  elif which == 1:
    c = pick(rng, list(COLOURS))
    add("count", f"How many {c} objects are there?",
        str(sum(o.colour == c for o in objs)), "count")
  else:
    s = pick(rng, SHAPES)
    add("count", f"How many {plural(s)} are there?", str(sum(o.shape == s for o in objs)),
        "count")
  # colour / shape of a uniquely named object.
  i = int(rng.integers(len(objs)))
  phrase = unique_phrase(scene, i, drop="colour")
  if phrase:
    add("colour", f"What colour is {phrase}?", objs[i].colour)
  phrase = unique_phrase(scene, i, drop="shape")
  if phrase:
    add("shape", f"What shape is {phrase}?", objs[i].shape)
  # relations between two uniquely named objects, only when clearly separated.
  if len(objs) > 1:
    a, b = [int(k) for k in rng.permutation(len(objs))[:2]]
    pa, pb = unique_phrase(scene, a), unique_phrase(scene, b)
    oa, ob = objs[a], objs[b]
    if pa and pb and abs(oa.x - ob.x) > _RELATION_MARGIN:
      side = pick(rng, ("left", "right"))
      truth = oa.x < ob.x if side == "left" else oa.x > ob.x
      add("relation", f"Is {pa} to the {side} of {pb}?", _yes_no(truth))
    if pa and pb and abs(oa.y - ob.y) > _RELATION_MARGIN:
      add("relation", f"Is {pa} above {pb}?", _yes_no(oa.y < ob.y))
  # compare-count between two shapes.
  s1, s2 = [SHAPES[k] for k in rng.permutation(len(SHAPES))[:2]]
  n1, n2 = sum(o.shape == s1 for o in objs), sum(o.shape == s2 for o in objs)
  add("compare_count", f"Are there more {plural(s1)} than {plural(s2)}?", _yes_no(n1 > n2))
  return out[:num]


# ---- Video --------------------------------------------------------------------------------------

DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}


@dataclasses.dataclass(frozen=True)
class Motion:
  """How one object moves: a direction (or None when still) from frame `start` on."""
  direction: str | None
  start: int


def sample_motions(scene: Scene, rng: np.random.Generator, num_frames: int) -> list[Motion]:
  """One motion per object; at least one moves, and movers start on distinct frames."""
  n = len(scene.objects)
  moving = rng.random(n) < 0.6
  moving[int(rng.integers(n))] = True
  starts = rng.permutation(max(num_frames // 2, n))[:n]
  return [Motion(pick(rng, list(DIRECTIONS)) if m else None, int(s))
          for m, s in zip(moving, starts)]


def positions_at(scene: Scene, motions: Sequence[Motion], t: int, num_frames: int
                 ) -> list[tuple[float, float]]:
  """Object centres at frame t (clipped to stay inside the frame)."""
  speed = 0.3 / max(num_frames - 1, 1)  # A full move covers about a third of the frame.
  out = []
  for o, m in zip(scene.objects, motions):
    x, y = o.x, o.y
    if m.direction is not None and t > m.start:
      dx, dy = DIRECTIONS[m.direction]
      r = SIZES[o.size]
      x = float(np.clip(x + dx * speed * (t - m.start), r, 1 - r))
      y = float(np.clip(y + dy * speed * (t - m.start), r, 1 - r))
    out.append((x, y))
  return out


def video_text(scene: Scene, motions: Sequence[Motion], rng: np.random.Generator
               ) -> tuple[list[str], list[QA]]:
  """Captions and questions about motion and order for a clip."""
  objs = scene.objects
  caps, qas = [], []
  parts = []
  for o, m in zip(objs, motions):
    name = _article(o.words(("colour", "shape")))
    parts.append(f"{name} moves {m.direction}" if m.direction else f"{name} stays still")
  caps.append((". ".join(p[0].upper() + p[1:] for p in parts)) + ".")
  movers = [i for i, m in enumerate(motions) if m.direction]
  caps.append(f"{count_words(len(movers), rng).capitalize()} of {count_words(len(objs))} "
              f"object{'s' if len(objs) > 1 else ''} move{'s' if len(movers) == 1 else ''}.")

  def add(kind, q, a, answer_kind="word"):
    qas.append(QA(kind, q, a, tuple(annotator_answers(a, rng, answer_kind))))

  add("count", "How many objects move?", str(len(movers)), "count")
  i = movers[int(rng.integers(len(movers)))]
  phrase = unique_phrase(scene, i)
  if phrase:
    add("direction", f"Which way does {phrase} move?", motions[i].direction)
  j = int(rng.integers(len(objs)))
  phrase = unique_phrase(scene, j)
  if phrase:
    add("moves", f"Does {phrase} move?", _yes_no(motions[j].direction is not None))
  if len(movers) > 1:
    a, b = movers[0], movers[1]
    pa, pb = unique_phrase(scene, a), unique_phrase(scene, b)
    if pa and pb:
      first = a if motions[a].start < motions[b].start else b
      add("order", f"Which starts moving first, {pa} or {pb}?", objs[first].shape
          if objs[a].shape != objs[b].shape else objs[first].colour)
  return caps, qas
