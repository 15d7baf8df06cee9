"""A minimal reader of R lazy-load databases (`data/Rdata.rdx` + `Rdata.rdb`), enough for
packages whose data are character vectors (r-cran-janeaustenr's novels), without R.

The `.rdx` index is a gzip-compressed R serialization (XDR, format 2 or 3) of
`list(variables = list(name = c(offset, length)), references, compressed)`; each object in the
`.rdb` is 4 bytes of big-endian uncompressed length followed by a zlib stream of its
serialization. Reads the types such data use (NULL, vectors of logical/integer/double/string,
lists, pairlists, symbols and references to them); anything else raises ValueError naming it.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from typing import Any

# SEXP type codes (R Internals, "Serialization Formats").
NILVALUE, SYM, LIST, CHAR, LGL, INT, REAL, STR, VEC = 254, 1, 2, 9, 10, 13, 14, 16, 19
REF = 255
NA_INT = -2**31


class _Reader:
  """Sequential XDR reader of one serialization."""

  def __init__(self, data: bytes, where: str):
    self.data, self.pos, self.where, self.refs = data, 0, where, []
    if data[:2] != b"X\n":
      raise ValueError(f"{where}: not an XDR R serialization (starts {data[:2]!r})")
    self.pos = 2
    version = self.int()
    self.int(), self.int()  # Writer's R version, minimal reader version.
    if version == 3:
      length = self.int()
      self.pos += length  # Skips the native encoding's name.
    elif version != 2:
      raise ValueError(f"{where}: serialization format {version} is not supported")

  def int(self) -> int:
    (value,) = struct.unpack_from(">i", self.data, self.pos)
    self.pos += 4
    return value

  def item(self) -> Any:
    flags = self.int()
    kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
    if kind == NILVALUE:
      return None
    if kind == REF:
      return self.refs[(flags >> 8) - 1]
    if kind == SYM:
      name = self.item()
      self.refs.append(name)
      return name
    if kind == LIST:  # Pairlist: (attributes), (tag), car, cdr.
      if has_attr:
        self.item()  # Pairlist attributes are not needed here.
      tag = self.item() if has_tag else None
      value = self.item()
      rest = self.item()
      return [(tag, value)] + (rest or [])
    if kind == CHAR:
      n = self.int()
      if n == -1:
        return None
      # The CHARSXP's levels (flags >> 12) mark latin-1 strings with bit 2; others are UTF-8/ASCII.
      text = self.data[self.pos:self.pos + n].decode("latin-1" if (flags >> 12) & 4 else "utf-8")
      self.pos += n
      return text
    n = self.int()
    if kind == STR:
      value = [self.item() for _ in range(n)]
    elif kind == VEC:
      value = [self.item() for _ in range(n)]
    elif kind in (LGL, INT):
      value = [None if v == NA_INT else v
               for v in struct.unpack_from(f">{n}i", self.data, self.pos)]
      self.pos += 4 * n
    elif kind == REAL:
      value = list(struct.unpack_from(f">{n}d", self.data, self.pos))
      self.pos += 8 * n
    else:
      raise ValueError(f"{self.where}: R object type {kind} is not supported by this reader")
    if has_attr:
      attrs = dict(self.item())
      if "names" in attrs and kind == VEC:
        return dict(zip(attrs["names"], value))
    return value


def unserialize(data: bytes, where: str = "R data") -> Any:
  """The Python value of one XDR serialization: str vectors -> list[str | None], named lists
  -> dict, other lists and numeric vectors -> list."""
  return _Reader(data, where).item()


def lazyload(rdx_path: str) -> dict[str, Any]:
  """Every object of the lazy-load database `X.rdx` / `X.rdb`, by name."""
  with open(rdx_path, "rb") as f:
    index = unserialize(gzip.decompress(f.read()), rdx_path)
  if index.get("compressed") not in ([True], [1]):
    raise ValueError(f"{rdx_path}: only zlib-compressed databases are supported "
                     f"(compressed={index.get('compressed')})")
  rdb_path = rdx_path[:-len(".rdx")] + ".rdb"
  with open(rdb_path, "rb") as f:
    rdb = f.read()
  out = {}
  for name, (offset, length) in index["variables"].items():
    blob = rdb[int(offset):int(offset) + int(length)]
    data = zlib.decompress(blob[4:])
    if len(data) != struct.unpack(">I", blob[:4])[0]:
      raise ValueError(f"{rdb_path}: object {name!r} has the wrong uncompressed length")
    out[name] = unserialize(data, f"{rdb_path}:{name}")
  return out
