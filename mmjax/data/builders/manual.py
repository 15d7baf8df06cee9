"""What builders of user-supplied copies share: finding the official files under `manual_dir`,
the error that says what to download, and turning image files into stored PNG bytes.

Each dataset reads `<manual_dir>/<SUBDIR>/...` (manual_dir: `data.manual_dir`, default
`<data_dir>/downloads/manual`). Images are decoded with Pillow, converted to RGB (COCO and
ImageNet hold some greyscale and CMYK JPEGs, which are valid images), and resized so that the
shorter side is `image_size` (aspect kept; the pipeline crops). An image file that exists but does
not decode is stored as empty bytes, counted and logged, so the pipeline's `on_bad_example` policy
('skip' or 'raise') decides what happens to it; a file that is missing from a curated benchmark
stops the build (an incomplete copy), while web-scale formats (webdataset shards, MMC4/OBELICS)
drop and count missing images, which dead URLs make routine there.

Converting images is most of a build's time, so the builders describe each example with
`Pending` image conversions and the base class runs those on a thread pool (Pillow releases the
GIL while decoding, resizing and compressing), writing examples in their original order:
`MMJAX_PREPARE_THREADS` threads (default: the CPU count, at most 16).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import io
import logging
import os
import threading
from typing import Any, Callable, Iterable, Iterator

import tensorflow_datasets as tfds
from PIL import Image



class MissingDataError(FileNotFoundError):
  """A file of a user-supplied dataset is not where the builder expects it."""


@dataclasses.dataclass(eq=False)
class ManualConfig(tfds.core.BuilderConfig):
  """Size of a dataset built from the user's files: only the stored image size varies."""
  image_size: int = 64  # Shorter side of the stored images, in pixels (data.image_size).


def make_config(*, image_size: int = 64, **unused: Any) -> ManualConfig:
  """The config of data.image_size (the other data-config size fields only size generated data)."""
  del unused
  if image_size < 1:
    raise ValueError(f"image_size must be >= 1, got {image_size}")
  return ManualConfig(name=f"{image_size}px", image_size=image_size)


def to_png(data: bytes, size: int) -> bytes:
  """RGB PNG bytes of an encoded image with its shorter side resized to `size`.

  Raises ValueError (with Pillow's reason) when the bytes do not decode.
  """
  try:
    img = Image.open(io.BytesIO(data))
    if img.format == "JPEG":
      # libjpeg decodes at 1/2, 1/4 or 1/8 scale, still >= size on both sides (PIL's thumbnail
      # does the same): 2-3x faster than a full decode plus the larger resize.
      img.draft("RGB", (size, size))
    img.load()
  except (OSError, SyntaxError, ValueError) as e:  # PIL raises all three for corrupt files.
    raise ValueError(f"cannot decode image ({type(e).__name__}: {e})") from e
  img = img.convert("RGB")
  w, h = img.size
  scale = size / min(w, h)
  if scale != 1:
    img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)
  out = io.BytesIO()
  # zlib level 1: about half the encode time of the default 6 for ~10% larger files, which
  # matters when converting millions of photos.
  img.save(out, format="PNG", compress_level=1)
  return out.getvalue()


class Pending:
  """A deferred image conversion inside an example (`fn(*args)` runs on the thread pool)."""

  def __init__(self, fn: Callable[..., bytes], *args: Any):
    self.fn, self.args = fn, args

  def __call__(self) -> bytes:
    return self.fn(*self.args)


def resolve(example: dict) -> dict:
  """`example` with every Pending value (or Pending item of a list value) computed."""
  out = {}
  for key, value in example.items():
    if isinstance(value, Pending):
      value = value()
    elif isinstance(value, list) and any(isinstance(v, Pending) for v in value):
      value = [v() if isinstance(v, Pending) else v for v in value]
    out[key] = value
  return out


def num_threads() -> int:
  """Conversion threads: $MMJAX_PREPARE_THREADS, else the CPU count (at most 16)."""
  value = os.environ.get("MMJAX_PREPARE_THREADS")
  if value is not None:
    if not value.isdigit() or int(value) < 1:
      raise ValueError(f"MMJAX_PREPARE_THREADS must be a positive integer, got {value!r}")
    return int(value)
  return min(os.cpu_count() or 1, 16)


def resolved_in_order(examples: Iterable[tuple[Any, dict]], threads: int
                      ) -> Iterator[tuple[Any, dict]]:
  """(key, resolved example) in input order, resolving up to 4 * threads examples ahead."""
  if threads <= 1:
    for key, example in examples:
      yield key, resolve(example)
    return
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    window: collections.deque = collections.deque()
    for key, example in examples:
      window.append((key, pool.submit(resolve, example)))
      if len(window) >= 4 * threads:
        k, future = window.popleft()
        yield k, future.result()
    while window:
      k, future = window.popleft()
      yield k, future.result()


class ManualBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the builders that read official files from manual_dir (abstract for tfds).

  Subclasses set `name` (their `mmjax.data.datasets.BUILDERS` key and data_dir folder; tfds would
  derive 'vq_av2' from a class name), SUBDIR (their folder under manual_dir) and DOWNLOAD (what
  to get, with the official URLs, and where to put it), implement `_splits(dl_manager)` (split
  -> generator of (key, example), images as `self.image(...)` / `self.image_bytes(...)`
  Pending values) and call `self.root(dl_manager)` / `self.require(...)`.
  Subclasses pass `skip_registration=True`: several names (coco_captions, imagenet, ...) are also
  tfds catalogue datasets, and registering ours would collide when tfds loads its own; mmjax
  finds builders through `mmjax.data.datasets.BUILDERS`, not tfds' registry.
  """

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIG_CLASS = ManualConfig
  BUILDER_CONFIGS = [make_config()]
  # tfds looks for a checksums file beside the code through importlib_resources; these builders
  # download nothing (the user brings the files), so there is nothing to check.
  code_path = None
  SUBDIR = ""
  DOWNLOAD = ""

  @classmethod
  def make_builder_config(cls, **config: Any) -> ManualConfig:
    """The BuilderConfig for the data-config size fields (see `mmjax.data.datasets`)."""
    return make_config(**config)

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.bad_images = 0  # Images that exist but do not decode (stored empty, see module doc).
    self.missing_images = 0  # Referenced images absent from a web-scale copy (dropped).
    self._count_lock = threading.Lock()  # bad_images is counted from conversion threads.

  def _splits(self, dl_manager) -> dict[str, Iterable[tuple[Any, dict]]]:
    """Split name -> (key, example) generator whose images may be Pending (subclasses)."""
    raise NotImplementedError

  def _split_generators(self, dl_manager):
    return {split: self._resolved(examples)
            for split, examples in self._splits(dl_manager).items()}

  def _resolved(self, examples: Iterable[tuple[Any, dict]]) -> Iterator[tuple[Any, dict]]:
    yield from resolved_in_order(examples, num_threads())
    self.report()

  def make_info(self, description: str, features: dict,
                metadata: tfds.core.MetadataDict | None = None) -> tfds.core.DatasetInfo:
    """DatasetInfo keeping the files' order (tfds otherwise shuffles by key hash): evaluation
    reads splits in stored order, so its first N examples are the official file's first N.
    `metadata` is saved with the prepared copy (e.g. ImageNet's class names)."""
    return tfds.core.DatasetInfo(builder=self, description=description,
                                 features=tfds.features.FeaturesDict(features),
                                 metadata=metadata, disable_shuffling=True)

  def root(self, dl_manager) -> str:
    """`<manual_dir>/<SUBDIR>`. tfds' public `manual_dir` property only asserts that the folder
    is non-empty, without naming what belongs in it, so the path is read directly and `require`
    gives the useful error. tfds always sets it (default `<data_dir>/downloads/manual`)."""
    manual = dl_manager._manual_dir  # pylint: disable=protected-access
    self._root = os.path.join(os.fspath(manual), self.SUBDIR)
    return self._root

  def require(self, path: str, what: str = "file") -> str:
    """`path` if it exists, else MissingDataError naming it, what to download and where."""
    if not os.path.exists(path):
      raise MissingDataError(
          f"{self.name}: expected {what} {path} is missing. {self.DOWNLOAD} Put the files "
          f"under {getattr(self, '_root', self.SUBDIR)} (<data.manual_dir>/{self.SUBDIR}).")
    return path

  def image(self, path: str, *, missing_ok: bool = False) -> Pending | None:
    """The stored PNG of image file `path`, to be computed (b'' when it does not decode,
    counted); None when it is absent and `missing_ok` (counted); MissingDataError when absent
    otherwise. Existence is checked now, so the caller can drop missing images."""
    if not os.path.exists(path):
      if missing_ok:
        self.missing_images += 1
        return None
      self.require(path, "image")
    return Pending(self._file_png, path)

  def _file_png(self, path: str) -> bytes:
    with open(path, "rb") as f:
      return self._png(f.read(), path)

  def image_bytes(self, data: bytes, where: str) -> Pending:
    """The stored PNG of encoded image `data`, to be computed (b'' and counted when it does
    not decode)."""
    return Pending(self._png, data, where)

  def _png(self, data: bytes, where: str) -> bytes:
    try:
      return to_png(data, self.builder_config.image_size)
    except ValueError as e:
      with self._count_lock:
        self.bad_images += 1
      logging.warning("%s: %s: %s (stored empty; data.on_bad_example decides)", self.name,
                      where, e)
      return b""

  def report(self) -> None:
    """Logs the bad/missing image counts once a split is written."""
    if self.bad_images or self.missing_images:
      logging.warning("%s: %d undecodable images stored empty, %d missing images dropped",
                      self.name, self.bad_images, self.missing_images)


def files(folder: str, suffixes: Iterable[str]) -> list[str]:
  """Sorted paths of the files in `folder` (not recursive) whose names end in `suffixes`."""
  suffixes = tuple(suffixes)
  return sorted(os.path.join(folder, n) for n in os.listdir(folder) if n.endswith(suffixes))
