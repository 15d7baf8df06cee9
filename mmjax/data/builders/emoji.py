"""`emoji`: emoji images with their English CLDR names, in two drawing styles.

Splits 'train' / 'validation' / 'test' (80/10/10, hashed on the emoji without skin-tone
modifiers, so the skin tones of one emoji share a split) are Noto Color Emoji bitmaps (Debian
fonts-noto-color-emoji, rendered by Pillow from the font's CBDT strike at size 109); 'twemoji' is
every emoji that Twitter's Twemoji draws (npm emoji-datasource-twitter, 64 px PNGs), named the
same way: a held-out drawing style for zero-shot transfer. Names and keywords come from the CLDR
annotations (Debian unicode-cldr-core: annotations/en.xml for single emoji, annotationsDerived
for skin tones, flags and ZWJ sequences). An emoji is kept only when the font draws it as one glyph.
"""

from __future__ import annotations

import dataclasses
import json
import os
import xml.etree.ElementTree as ET

import tensorflow_datasets as tfds
from PIL import Image, ImageDraw, ImageFont, features

from mmjax.data.builders import common, offline

FONT = ("fonts-noto-color-emoji", "usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
CLDR = ("unicode-cldr-core", "usr/share/unicode/cldr/common")
TWEMOJI = ("emoji-datasource-twitter", "package")
CBDT_SIZE = 109  # The font's only bitmap strike: FreeType renders CBDT glyphs at this size alone.
CANVAS = (136, 128)  # One glyph's advance and line height at CBDT_SIZE.
VS16 = "\ufe0f"  # Emoji presentation selector: CLDR omits it, the font and npm data may not.
SKIN_TONES = {chr(c) for c in range(0x1F3FB, 0x1F400)}
STYLES = ("noto", "twemoji")


@dataclasses.dataclass(frozen=True)
class EmojiItem:
  """One emoji: its text (as the font shapes it), CLDR name and keywords."""
  text: str
  name: str
  keywords: tuple[str, ...]

  @property
  def key(self) -> str:
    """The codepoints without VS16, joined by '-' (e.g. '1F600'): how the two styles match."""
    return codepoints(self.text)

  @property
  def group(self) -> str:
    """The key without skin-tone modifiers: what the split is hashed on."""
    return codepoints("".join(c for c in self.text if c not in SKIN_TONES))


def codepoints(text: str) -> str:
  """'1F469-200D-1F680' for 👩‍🚀 (VS16 dropped)."""
  return "-".join(f"{ord(c):04X}" for c in text if c != VS16)


def cldr_annotations(cldr_dir: str) -> dict[str, tuple[str, tuple[str, ...]]]:
  """CLDR emoji text (without VS16) -> (English name, keywords), from annotations/en.xml and
  annotationsDerived/en.xml, in document order."""
  names: dict[str, str] = {}
  keywords: dict[str, tuple[str, ...]] = {}
  for sub in ("annotations", "annotationsDerived"):
    path = os.path.join(cldr_dir, sub, "en.xml")
    for node in ET.parse(path).getroot().iter("annotation"):
      cp, text = node.get("cp"), (node.text or "").strip()
      if not cp or not text:
        continue
      if node.get("type") == "tts":
        names[cp] = text
      else:
        keywords[cp] = tuple(k.strip() for k in text.split("|") if k.strip())
  return {cp: (name, keywords.get(cp, ())) for cp, name in names.items()}


def load_font(font_path: str) -> ImageFont.FreeTypeFont:
  """The colour emoji font at its bitmap size, with the complex-text layout ZWJ sequences need."""
  if not features.check("raqm"):
    raise RuntimeError("Pillow was built without libraqm, so it cannot shape emoji ZWJ sequences "
                       "and flags; install a Pillow wheel from PyPI (they bundle it)")
  return ImageFont.truetype(font_path, CBDT_SIZE, layout_engine=ImageFont.Layout.RAQM)


def render(font: ImageFont.FreeTypeFont, text: str) -> Image.Image:
  """The RGBA glyph image of `text` on a transparent CANVAS."""
  img = Image.new("RGBA", CANVAS, (0, 0, 0, 0))
  ImageDraw.Draw(img).text((0, 0), text, font=font, embedded_color=True)
  return img


def noto_index(font: ImageFont.FreeTypeFont,
               annotations: dict[str, tuple[str, tuple[str, ...]]]) -> list[EmojiItem]:
  """The annotated emoji that the font draws as one glyph (a sequence it lacks shapes to several
  glyphs; a codepoint it lacks draws the empty .notdef), in CLDR order."""
  advance = font.getlength("\U0001F600")
  empty = render(font, "{").tobytes()  # '{' is annotated but not in the font: .notdef.
  out = []
  for cp, (name, keywords) in annotations.items():
    for text in (cp, cp[0] + VS16 + cp[1:]):
      if font.getlength(text) == advance:
        break
    else:
      continue
    if len(text.replace(VS16, "")) == 1 and render(font, text).tobytes() == empty:
      continue
    out.append(EmojiItem(text, name, keywords))
  return out


def twemoji_index(npm_dir: str, annotations: dict[str, tuple[str, tuple[str, ...]]]
                  ) -> list[tuple[EmojiItem, str]]:
  """(emoji, PNG path) for every Twemoji image whose emoji CLDR names, skin tones included, in
  emoji.json's sort order."""
  by_key = {codepoints(cp): (cp, v) for cp, v in annotations.items()}
  with open(os.path.join(npm_dir, "emoji.json"), encoding="utf-8") as f:
    entries = sorted(json.load(f), key=lambda e: e["sort_order"])
  out = []
  for entry in entries:
    variants = [entry] + [entry["skin_variations"][k] for k in sorted(entry.get("skin_variations",
                                                                                {}))]
    for v in variants:
      if not v.get("has_img_twitter"):
        continue
      key = "-".join(c for c in v["unified"].upper().split("-") if c != "FE0F")
      if key not in by_key:
        continue
      cp, (name, keywords) = by_key[key]
      path = os.path.join(npm_dir, "img", "twitter", "64", v["image"])
      out.append((EmojiItem(cp, name, keywords), path))
  return out


def captions(e: EmojiItem) -> list[str]:
  """The name first (what evaluation uses), then the keywords when they add to it."""
  caps = [e.name]
  extra = [k for k in e.keywords if k != e.name]
  if extra:
    caps.append(", ".join([e.name] + extra))
  return caps


class Emoji(offline.OfflineBuilder, skip_registration=True):
  """Noto Color Emoji (train/validation/test) and Twemoji ('twemoji') with CLDR names."""

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": common.PNG,
            "captions": common.TEXTS,  # [name, "name, keyword, ..."] (see `captions`).
            "name": tfds.features.Text(),  # CLDR English name, e.g. 'grinning face'.
            "keywords": common.TEXTS,
            "codepoints": tfds.features.Text(),  # e.g. '1F600' (without VS16).
            "style": tfds.features.Text(),  # 'noto' or 'twemoji'.
            # The Noto split this emoji is in (train/validation/test), also on 'twemoji'
            # records: zero-shot transfer can keep the emoji never seen in training.
            "emoji_split": tfds.features.Text(),
        }),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Reads installed package files only.
    font = load_font(self.package_file(*FONT))
    annotations = cldr_annotations(self.package_file(*CLDR))
    npm_dir = self.package_file(*TWEMOJI)
    self.package_file(TWEMOJI[0], "package/emoji.json")
    noto = {"train": [], "validation": [], "test": []}
    for e in noto_index(font, annotations):
      noto[offline.hashed_split(e.group)].append((e, None))
    self._font = font  # pylint: disable=attribute-defined-outside-init
    splits = {split: self._generate_examples(offline.cap(items, self.builder_config))
              for split, items in noto.items()}
    splits["twemoji"] = self._generate_examples(
        offline.cap(twemoji_index(npm_dir, annotations), self.builder_config))
    return splits

  def _example(self, item: tuple[EmojiItem, str | None]) -> tuple[str, dict]:
    """A Noto rendering (path None) or the Twemoji PNG at `path`."""
    e, path = item
    if path is None:
      png = offline.fit_square_png(render(self._font, e.text), self.builder_config.image_size)
    else:
      if not os.path.exists(path):
        raise offline.MissingOfflineData(f"{path} listed in emoji.json is missing: reinstall "
                                         f"npm {TWEMOJI[0]} with {offline.INSTALL_SCRIPT}")
      with Image.open(path) as img:
        png = offline.fit_square_png(img, self.builder_config.image_size)
    return e.key, {"image": png, "captions": captions(e), "name": e.name,
                   "keywords": list(e.keywords), "codepoints": e.key,
                   "style": "noto" if path is None else "twemoji",
                   "emoji_split": offline.hashed_split(e.group)}
