"""Conversations and the ChatML chat template, rendered to text or to packing segments.

Instruction tuning (LLaVA, Liu et al. 2023; the SmolLM2-Instruct chat format): a conversation is
a list of turns `{"role": "system" | "user" | "assistant", "content": text}`; user turns may hold
`<image>` markers anywhere (one per image, in order). The template is ChatML, the one inside
SmolLM2-135M-Instruct's GGUF (`tokenizer.chat_template`):

    <|im_start|>system\\nYou are ...<|im_end|>\\n<|im_start|>user\\n<image>\\nHow many?<|im_end|>\\n
    <|im_start|>assistant\\n2<|im_end|>\\n

`ChatTemplate.render` gives that text (equal to transformers' `apply_chat_template` with the
GGUF's template, tests/data/test_conversation.py); `ChatTemplate.segments` gives the same
conversation as `mmjax.data.packing` segments: the loss is on assistant contents and their
`<|im_end|>` only, never on system/user text, role headers or the newline after `<|im_end|>`.
Each piece between special tokens is encoded on its own (role header `role\\n`, content, `\\n`),
which for byte-level BPE (SmolLM2) gives exactly the ids of encoding the whole text; SentencePiece
(shapes_sp) normalises the newlines away and adds its word-start piece per segment.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

from mmjax.data import tokenizers as tok_lib
from mmjax.data.packing import IMAGE, PROMPT, TARGET

SYSTEM, USER, ASSISTANT = "system", "user", "assistant"
ROLES = (SYSTEM, USER, ASSISTANT)
# What a chain-of-thought answer ends with, before the final answer (see `final_answer`).
ANSWER_PREFIX = "Answer: "


@dataclasses.dataclass(frozen=True)
class Turn:
  """One message: who speaks and what they say (`<image>` markers only in user turns)."""
  role: str
  content: str


def turns(conversation: Sequence[Turn | Mapping[str, Any]]) -> list[Turn]:
  """The conversation as validated `Turn`s.

  Raises ValueError naming the turn when a role is unknown, a system turn is not first, an
  `<image>` marker sits outside a user turn, or user and assistant turns do not alternate
  (starting with the user), or when there is no turn at all.
  """
  if not conversation:
    raise ValueError("a conversation needs at least one turn")
  out = []
  for i, t in enumerate(conversation):
    if not isinstance(t, Turn):
      if set(t) != {"role", "content"}:
        raise ValueError(f"conversation turn {i} must have exactly 'role' and 'content', got "
                         f"{sorted(t)}")
      t = Turn(str(t["role"]), str(t["content"]))
    if t.role not in ROLES:
      raise ValueError(f"conversation turn {i}: role must be one of {ROLES}, got {t.role!r}")
    if t.role == SYSTEM and i != 0:
      raise ValueError(f"conversation turn {i}: a system turn may only come first")
    if t.role != USER and tok_lib.IMAGE_TOKEN in t.content:
      raise ValueError(f"conversation turn {i}: {tok_lib.IMAGE_TOKEN} markers belong in user "
                       f"turns, found one in a {t.role} turn")
    out.append(t)
  dialogue = out[1:] if out and out[0].role == SYSTEM else out
  for k, t in enumerate(dialogue):
    expected = USER if k % 2 == 0 else ASSISTANT
    if t.role != expected:
      raise ValueError(f"conversation turn {k + len(out) - len(dialogue)}: expected a {expected} "
                       f"turn (user and assistant alternate, user first), got {t.role}")
  return out


def num_images(conversation: Sequence[Turn]) -> int:
  """`<image>` markers in the conversation: how many images it needs."""
  return sum(t.content.count(tok_lib.IMAGE_TOKEN) for t in conversation)


def final_answer(rationale: str) -> str:
  """The answer a chain-of-thought rationale ends with (the text after its last 'Answer: ')."""
  if ANSWER_PREFIX not in rationale:
    raise ValueError(f"rationale has no {ANSWER_PREFIX!r}: {rationale!r}")
  return rationale.rsplit(ANSWER_PREFIX, 1)[1]


@dataclasses.dataclass(frozen=True)
class ChatIds:
  """Ids of the template's special tokens in one tokenizer (`image` None: no images allowed)."""
  im_start: int
  im_end: int
  image: int | None = None


def chat_ids(tok: tok_lib.Tokenizer) -> ChatIds:
  """ChatML ids for a tokenizer: ones it already knows as single tokens (SmolLM2's control
  tokens) are used as they are; otherwise `<image>`, `<|endofchunk|>`, `<|im_start|>`,
  `<|im_end|>` are added after its base vocabulary (`tokenizers.with_chat_tokens`)."""
  known = [tok.encode(t) for t in (tok_lib.IM_START_TOKEN, tok_lib.IM_END_TOKEN)]
  if all(len(ids) == 1 for ids in known):
    image = tok.encode(tok_lib.IMAGE_TOKEN)
    return ChatIds(known[0][0], known[1][0], image[0] if len(image) == 1 else None)
  tok_lib.with_chat_tokens(tok)
  return ChatIds(tok.token_id(tok_lib.IM_START_TOKEN), tok.token_id(tok_lib.IM_END_TOKEN),
                 tok.token_id(tok_lib.IMAGE_TOKEN))


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
  """ChatML with an optional system message for conversations that bring none.

  `default_system` reproduces templates that insert one (SmolLM2's does); None leaves
  conversations without a system turn as they are (cheaper rows for the tiny shapes models).
  """
  name: str
  default_system: str | None = None

  def _with_system(self, conversation) -> list[Turn]:
    ts = turns(conversation)
    if self.default_system is not None and ts[0].role != SYSTEM:
      ts = [Turn(SYSTEM, self.default_system)] + ts
    return ts

  def render(self, conversation, add_generation_prompt: bool = False) -> str:
    """The conversation as text, exactly as the Jinja template renders it."""
    text = "".join(f"{tok_lib.IM_START_TOKEN}{t.role}\n{t.content}{tok_lib.IM_END_TOKEN}\n"
                   for t in self._with_system(conversation))
    return text + (f"{tok_lib.IM_START_TOKEN}{ASSISTANT}\n" if add_generation_prompt else "")

  def segments(self, conversation, encode: Callable[[str], list[int]], ids: ChatIds,
               add_generation_prompt: bool = False) -> list[tuple[list[int], str]]:
    """`packing.assemble` segments of `render(...)`'s text: assistant contents and their
    `<|im_end|>` are targets, everything else is prompt, and each `<image>` marker is an image
    segment (raises ValueError when `ids.image` is None and a marker appears)."""
    out: list[tuple[list[int], str]] = []

    def text(s: str, role: str) -> None:
      piece = encode(s) if s else []
      if piece:
        out.append((piece, role))

    for t in self._with_system(conversation):
      out.append(([ids.im_start], PROMPT))
      text(f"{t.role}\n", PROMPT)
      if t.role == ASSISTANT:
        text(t.content, TARGET)
        out.append(([ids.im_end], TARGET))
      else:
        parts = t.content.split(tok_lib.IMAGE_TOKEN)
        if len(parts) > 1 and ids.image is None:
          raise ValueError(f"this tokenizer has no {tok_lib.IMAGE_TOKEN} id; cannot place the "
                           "conversation's images")
        for k, part in enumerate(parts):
          if k:
            out.append(([ids.image], IMAGE))
          text(part, PROMPT)
        out.append(([ids.im_end], PROMPT))
      text("\n", PROMPT)
    if add_generation_prompt:
      out.append(([ids.im_start], PROMPT))
      text(f"{ASSISTANT}\n", PROMPT)
    return out


# Chat templates by name (data.chat_template).
TEMPLATES = {
    # Plain ChatML: no system turn unless the conversation has one.
    "chatml": ChatTemplate("chatml"),
    # SmolLM2-Instruct's template (inside its GGUF): ChatML plus this default system message.
    "smollm2": ChatTemplate(
        "smollm2", "You are a helpful AI assistant named SmolLM, trained by Hugging Face"),
}


def get_template(name: str) -> ChatTemplate:
  """Template `name`; raises ValueError naming data.chat_template when unknown."""
  if name not in TEMPLATES:
    raise ValueError(f"data.chat_template must be one of {sorted(TEMPLATES)}, got {name!r}")
  return TEMPLATES[name]
