"""Multi-turn instruction conversations about one `shapes` scene, with exact answers.

The `shapes_instruct` dataset (LLaVA-Instruct-style data, Liu et al. 2023, generated from the
scene description instead of by a language model): each conversation asks 2-4 questions of
these kinds, answered from the scene itself:
  describe        every object, in drawing order
  count           all objects, one colour or one shape
  compare         more objects of one colour (shape) than of another?
  spatial         is A left of / right of / above / below B? (clearly separated pairs only)
  extreme         which object is furthest left / right / up / down? (a clear winner only)
  count_not       how many objects are not of a colour (a subtraction)
  majority        which colour most objects have (a unique winner only)
Every exchange also has a chain-of-thought form: the user asks to think step by step and the
assistant answers with a rationale built from the same scene facts, ending in
'Answer: <the plain answer>' (`conversation.final_answer` reads it back).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np

from mmjax.data import conversation as conv
from mmjax.data import shapes_world as world
from mmjax.data import tokenizers as tok_lib

KINDS = ("describe", "count", "compare", "spatial", "extreme", "count_not", "majority")
# Pairs closer than this (unit square) are not asked about, as in shapes_world's relations.
MARGIN = 0.08
SYSTEM_PROMPTS = ("You are a helpful assistant who answers questions about pictures of shapes.",
                  "Answer questions about the image.")
COT_REQUEST = " Think step by step."
MIN_EXCHANGES, MAX_EXCHANGES = 2, 4


@dataclasses.dataclass(frozen=True)
class Exchange:
  """One question with its plain answer and its step-by-step rationale (same final answer)."""
  kind: str
  question: str
  answer: str
  rationale: str


def article(phrase: str) -> str:
  """'a red circle' / 'an orange star'."""
  return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _listing(objs) -> str:
  return ", ".join(article(o.words()) for o in objs)


def _cap(s: str) -> str:
  return s[0].upper() + s[1:]


def _region(o: world.Obj) -> str:
  """Where an object sits, in thirds of the picture ('top left', 'centre', ...)."""
  v = "top" if o.y < 1 / 3 else "bottom" if o.y > 2 / 3 else "middle"
  h = "left" if o.x < 1 / 3 else "right" if o.x > 2 / 3 else "centre"
  return "centre" if (v, h) == ("middle", "centre") else f"{v} {h}"


def _finish(steps: str, answer: str) -> str:
  return f"{steps} {conv.ANSWER_PREFIX}{answer}"


def describe(scene: world.Scene, rng: np.random.Generator) -> Exchange:
  """All objects with their attributes, in drawing order."""
  objs = scene.objects
  n = len(objs)
  noun = f"object{'s' if n > 1 else ''}"
  answer = (f"{_cap(world.NUMBER_WORDS[n])} {noun} on a {scene.background} background: "
            f"{_listing(objs)}.")
  steps = "I go through the objects one by one: " + "; ".join(
      f"{k + 1}. {article(o.words())} at the {_region(o)}" for k, o in enumerate(objs))
  steps += f". That makes {world.NUMBER_WORDS[n]} {noun} on a {scene.background} background."
  q = world.pick(rng, ("Describe the picture.", "What do you see in this image?",
                  "Describe this scene in detail."))
  return Exchange("describe", q, answer, _finish(steps, answer))


def _attribute_value(scene: world.Scene, rng: np.random.Generator, attr: str) -> str:
  """A colour / shape, from the scene's own objects with probability 0.7."""
  if rng.random() < 0.7:
    return getattr(scene.objects[int(rng.integers(len(scene.objects)))], attr)
  return world.pick(rng, list(world.COLOURS) if attr == "colour" else world.SHAPES)


def _what(attr: str, value: str) -> str:
  return f"{value} objects" if attr == "colour" else world.plural(value)


def count(scene: world.Scene, rng: np.random.Generator) -> Exchange:
  """How many objects (of a colour, of a shape)."""
  attr = world.pick(rng, (None, "colour", "shape"))
  if attr is None:
    objs, what = list(scene.objects), "objects"
  else:
    value = _attribute_value(scene, rng, attr)
    objs, what = [o for o in scene.objects if getattr(o, attr) == value], _what(attr, value)
  n = str(len(objs))
  found = _listing(objs) if objs else "there are none"
  steps = f"I look for {what}: {found}. That makes {n}."
  return Exchange("count", f"How many {what} are there?", n, _finish(steps, n))


def compare(scene: world.Scene, rng: np.random.Generator) -> Exchange:
  """More objects of one colour (shape) than of another?"""
  attr = world.pick(rng, ("colour", "shape"))
  a = _attribute_value(scene, rng, attr)
  b = _attribute_value(scene, rng, attr)
  while b == a:
    b = world.pick(rng, list(world.COLOURS) if attr == "colour" else world.SHAPES)
  na = sum(getattr(o, attr) == a for o in scene.objects)
  nb = sum(getattr(o, attr) == b for o in scene.objects)
  q = (f"Are there more {a} than {b} objects?" if attr == "colour" else
       f"Are there more {world.plural(a)} than {world.plural(b)}?")
  answer = "yes" if na > nb else "no"
  steps = (f"{_cap(_what(attr, a))}: {na}. {_cap(_what(attr, b))}: {nb}. "
           f"{na} is {'more' if na > nb else 'not more'} than {nb}.")
  return Exchange("compare", q, answer, _finish(steps, answer))


def _named(scene: world.Scene) -> list[tuple[int, str]]:
  """(index, unique phrase) of the objects a question can name unambiguously."""
  out = []
  for i in range(len(scene.objects)):
    phrase = world.unique_phrase(scene, i)
    if phrase:
      out.append((i, phrase))
  return out


def spatial(scene: world.Scene, rng: np.random.Generator) -> Optional[Exchange]:
  """Is A left of / right of / above / below B? None without a clearly separated named pair."""
  named = _named(scene)
  pairs = []
  for i, pi in named:
    for j, pj in named:
      a, b = scene.objects[i], scene.objects[j]
      if i != j and abs(a.x - b.x) > MARGIN:
        pairs += [(pi, pj, a, b, "to the left of"), (pi, pj, a, b, "to the right of")]
      if i != j and abs(a.y - b.y) > MARGIN:
        pairs += [(pi, pj, a, b, "above"), (pi, pj, a, b, "below")]
  if not pairs:
    return None
  pa, pb, a, b, rel = pairs[int(rng.integers(len(pairs)))]
  if rel in ("to the left of", "to the right of"):
    truth = a.x < b.x if rel == "to the left of" else a.x > b.x
    fact = f"{pa} is further {'left' if a.x < b.x else 'right'} than {pb}"
  else:
    truth = a.y < b.y if rel == "above" else a.y > b.y
    fact = f"{pa} is {'higher up' if a.y < b.y else 'lower down'} than {pb}"
  answer = "yes" if truth else "no"
  steps = f"{_cap(pa)} is at the {_region(a)} and {pb} is at the {_region(b)}, so {fact}."
  return Exchange("spatial", f"Is {pa} {rel} {pb}?", answer, _finish(steps, answer))


# direction -> (question word, key that sorts the objects with the winner first, order words)
_EXTREMES = {
    "left": ("furthest to the left", lambda o: o.x, "from left to right"),
    "right": ("furthest to the right", lambda o: -o.x, "from right to left"),
    "up": ("highest up", lambda o: o.y, "from top to bottom"),
    "down": ("lowest down", lambda o: -o.y, "from bottom to top"),
}


def extreme(scene: world.Scene, rng: np.random.Generator) -> Optional[Exchange]:
  """Which object is furthest left / right / up / down? None unless a named object wins by
  more than MARGIN."""
  if len(scene.objects) < 2:
    return None
  direction = world.pick(rng, list(_EXTREMES))
  words, key, order = _EXTREMES[direction]
  ranked = sorted(range(len(scene.objects)), key=lambda i: key(scene.objects[i]))
  first, second = scene.objects[ranked[0]], scene.objects[ranked[1]]
  phrase = world.unique_phrase(scene, ranked[0])
  if phrase is None or key(second) - key(first) <= MARGIN:
    return None
  steps = (f"{_cap(order)} the objects are: {_listing([scene.objects[i] for i in ranked])}. "
           f"The first one is {phrase}.")
  return Exchange("extreme", f"Which object is {words}?", phrase, _finish(steps, phrase))


def count_not(scene: world.Scene, rng: np.random.Generator) -> Exchange:
  """How many objects are not of a colour present in the scene (total minus that colour)."""
  colour = scene.objects[int(rng.integers(len(scene.objects)))].colour
  n = len(scene.objects)
  k = sum(o.colour == colour for o in scene.objects)
  answer = str(n - k)
  steps = (f"There are {n} objects and {k} of them {'is' if k == 1 else 'are'} {colour}, "
           f"so {n} - {k} = {n - k} are not {colour}.")
  return Exchange("count_not", f"How many objects are not {colour}?", answer,
                  _finish(steps, answer))


def majority(scene: world.Scene, rng: np.random.Generator) -> Optional[Exchange]:
  """Which colour most objects have; None unless one colour has more objects than any other."""
  del rng  # Fully determined by the scene.
  counts: dict[str, int] = {}
  for o in scene.objects:
    counts[o.colour] = counts.get(o.colour, 0) + 1
  ranked = sorted(counts.items(), key=lambda kv: -kv[1])
  if len(ranked) < 2 or ranked[0][1] == ranked[1][1]:
    return None
  colour = ranked[0][0]
  steps = ("Counting the objects by colour: " + ", ".join(f"{c} {n}" for c, n in ranked) +
           f". {_cap(colour)} has the most.")
  return Exchange("majority", "Which colour do most objects have?", colour,
                  _finish(steps, colour))


GENERATORS: dict[str, Callable[[world.Scene, np.random.Generator], Optional[Exchange]]] = {
    "describe": describe, "count": count, "compare": compare, "spatial": spatial,
    "extreme": extreme, "count_not": count_not, "majority": majority}


def exchanges(scene: world.Scene, rng: np.random.Generator) -> list[Exchange]:
  """2-4 exchanges of distinct kinds (fewer when kinds do not apply to the scene)."""
  want = int(rng.integers(MIN_EXCHANGES, MAX_EXCHANGES + 1))
  out = []
  for k in rng.permutation(len(KINDS)):
    ex = GENERATORS[KINDS[k]](scene, rng)
    if ex is not None:
      out.append(ex)
    if len(out) == want:
      break
  return out


def conversation(scene: world.Scene, rng: np.random.Generator) -> dict[str, list[str]]:
  """One conversation about `scene` (its image is `<image>` in the first user turn).

  Returns parallel per-turn lists: `roles`, `contents` (plain answers), `cot_contents` (user
  turns ask to think step by step, assistant turns are rationales), `kinds` (the exchange kind,
  'system' for a system turn) and `turn_answers` (the plain answer on assistant turns, else
  '').
  """
  out: dict[str, list[str]] = {k: [] for k in ("roles", "contents", "cot_contents", "kinds",
                                                "turn_answers")}

  def add(role, content, cot, kind, answer=""):
    for key, value in zip(out, (role, content, cot, kind, answer)):
      out[key].append(value)

  if rng.random() < 0.3:
    system = world.pick(rng, SYSTEM_PROMPTS)
    add(conv.SYSTEM, system, system, "system")
  image = tok_lib.IMAGE_TOKEN
  place = int(rng.integers(3))
  for k, ex in enumerate(exchanges(scene, rng)):
    q, cot_q = ex.question, ex.question + COT_REQUEST
    if k == 0:
      wrap = ((lambda s: f"{image}\n{s}"), (lambda s: f"{s}\n{image}"),
              (lambda s: f"Look at this picture: {image} {s}"))[place]
      q, cot_q = wrap(q), wrap(cot_q)
    add(conv.USER, q, cot_q, ex.kind)
    add(conv.ASSISTANT, ex.answer, ex.rationale, ex.kind, ex.answer)
  return out
