"""A small pure-Python reader for the header and metadata of a GGUF file.

Only the header is read: magic, version, tensor count, and the key/value
metadata section.  The tensor-info table and the tensor data that follow it are
never touched, so reading the metadata of a multi-gigabyte model costs a few
megabytes of I/O (mostly the tokenizer's token list).

The file is read through a memory map, so nothing beyond the pages actually
touched is loaded.  Numeric arrays (token scores, token types) become compact
``numpy`` arrays; string arrays (tokens, merges) become Python lists.

Layout (all little-endian unless the file is a big-endian GGUF)::

    magic     4 bytes  b"GGUF"
    version   uint32   1, 2 or 3
    n_tensors uint64   (uint32 in version 1)
    n_kv      uint64   (uint32 in version 1)
    n_kv times:
        key    string  (uint64 length + UTF-8 bytes; uint32 length in version 1)
        type   uint32  value type, see _SCALARS / STRING / ARRAY below
        value          scalar | string | array(elem type uint32, count uint64, elems)
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cljassist.errors import ModelLoadError

GGUF_MAGIC = b"GGUF"

# value type id -> (struct code, numpy dtype code)
_SCALARS: dict[int, tuple[str, str]] = {
    0: ("B", "u1"),  # UINT8
    1: ("b", "i1"),  # INT8
    2: ("H", "u2"),  # UINT16
    3: ("h", "i2"),  # INT16
    4: ("I", "u4"),  # UINT32
    5: ("i", "i4"),  # INT32
    6: ("f", "f4"),  # FLOAT32
    7: ("?", "u1"),  # BOOL
    10: ("Q", "u8"),  # UINT64
    11: ("q", "i8"),  # INT64
    12: ("d", "f8"),  # FLOAT64
}
_STRING = 8
_ARRAY = 9

# ggml tensor type id -> (elements per block, bytes per block); used only to
# check that the file is long enough for the tensor data it declares.
_GGML_BLOCKS: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
    9: (32, 40), 10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210),
    15: (256, 292), 16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18),
    21: (256, 110), 22: (256, 82), 23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8),
    28: (1, 8), 29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17),
}

# Keys whose values are token ids of special tokens.
SPECIAL_TOKEN_ID_KEYS: tuple[str, ...] = (
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.eot_token_id",
    "tokenizer.ggml.eom_token_id",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.padding_token_id",
    "tokenizer.ggml.separator_token_id",
    "tokenizer.ggml.fim_pre_token_id",
    "tokenizer.ggml.fim_suf_token_id",
    "tokenizer.ggml.fim_mid_token_id",
    "tokenizer.ggml.fim_pad_token_id",
    "tokenizer.ggml.fim_rep_token_id",
    "tokenizer.ggml.fim_sep_token_id",
    # older converters
    "tokenizer.ggml.prefix_token_id",
    "tokenizer.ggml.suffix_token_id",
    "tokenizer.ggml.middle_token_id",
)


@dataclass
class GgufMetadata:
    """The metadata section of a GGUF file."""

    name: str
    architecture: str
    kv: dict[str, Any]
    tokens: list[str] = field(default_factory=list)
    version: int = 0
    tensor_count: int = 0
    path: Path | None = None
    data_offset: int = 0  # where the tensor data starts
    data_size: int = 0  # bytes of tensor data the tensor table declares (0 if unknown)

    def get(self, key: str, default: Any = None) -> Any:
        return self.kv.get(key, default)

    def token_text(self, token_id: int) -> str | None:
        """The text of token ``token_id``, or None when out of range."""
        if isinstance(token_id, (int, np.integer)) and 0 <= int(token_id) < len(self.tokens):
            return self.tokens[int(token_id)]
        return None

    def special_token_ids(self) -> dict[str, int]:
        """Every ``tokenizer.ggml.*_token_id`` key present, short name -> id.

        E.g. ``{"eos": 0, "fim_pre": 151659}``.
        """
        out: dict[str, int] = {}
        for key, value in self.kv.items():
            if key.startswith("tokenizer.ggml.") and key.endswith("_token_id"):
                try:
                    out[key[len("tokenizer.ggml.") : -len("_token_id")]] = int(value)
                except (TypeError, ValueError):
                    continue
        return out

    def special_tokens(self) -> dict[str, str]:
        """Like :meth:`special_token_ids`, but with the token texts (ids out of range left out)."""
        out: dict[str, str] = {}
        for short, tid in self.special_token_ids().items():
            text = self.token_text(tid)
            if text is not None:
                out[short] = text
        return out

    def control_tokens(self) -> list[str]:
        """Texts of tokens typed CONTROL (3) or USER_DEFINED (4) in ``tokenizer.ggml.token_type``."""
        types = self.kv.get("tokenizer.ggml.token_type")
        if types is None or len(types) != len(self.tokens):
            return []
        arr = np.asarray(types)
        idx = np.nonzero((arr == 3) | (arr == 4))[0]
        return [self.tokens[i] for i in idx]


class _Reader:
    """Bounds-checked cursor over a buffer (an mmap)."""

    __slots__ = ("buf", "pos", "end", "order", "path")

    def __init__(self, buf: Any, order: str, path: str) -> None:
        self.buf = buf
        self.pos = 0
        self.end = len(buf)
        self.order = order
        self.path = path

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.end:
            raise ModelLoadError(
                f"truncated GGUF file {self.path}: ends while reading {what} at byte {self.pos}"
            )

    def scalar(self, code: str, what: str) -> Any:
        size = struct.calcsize(code)
        self.need(size, what)
        (value,) = struct.unpack_from(self.order + code, self.buf, self.pos)
        self.pos += size
        return value

    def string(self, len_code: str, what: str) -> str:
        n = self.scalar(len_code, what)
        self.need(n, what)
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        return raw.decode("utf-8", errors="replace")


def _read_value(r: _Reader, vtype: int, len_code: str, key: str) -> Any:
    if vtype in _SCALARS:
        code = _SCALARS[vtype][0]
        value = r.scalar(code, f"value of {key!r}")
        return bool(value) if vtype == 7 else value
    if vtype == _STRING:
        return r.string(len_code, f"value of {key!r}")
    if vtype == _ARRAY:
        etype = r.scalar("I", f"array type of {key!r}")
        count = r.scalar(len_code, f"array length of {key!r}")
        if etype in _SCALARS:
            code, dt = _SCALARS[etype]
            size = struct.calcsize(code)
            r.need(count * size, f"array {key!r}")
            dtype = np.dtype(dt).newbyteorder(r.order)
            arr = np.frombuffer(r.buf, dtype=dtype, count=count, offset=r.pos).copy()
            r.pos += count * size
            if etype == 7:
                arr = arr.astype(bool)
            return arr
        if etype == _STRING:
            # A cheap lower bound (each string has at least its length field)
            # catches absurd counts before a huge loop.
            r.need(count * struct.calcsize(len_code), f"array {key!r}")
            return [r.string(len_code, f"element of {key!r}") for _ in range(count)]
        if etype == _ARRAY:
            return [_read_value(r, _ARRAY, len_code, key) for _ in range(count)]
        raise ModelLoadError(f"bad GGUF file {r.path}: unknown array element type {etype} for {key!r}")
    raise ModelLoadError(f"bad GGUF file {r.path}: unknown value type {vtype} for {key!r}")


def read_gguf_metadata(path: str | os.PathLike[str]) -> GgufMetadata:
    """Read the header and metadata key/values of the GGUF file at ``path``.

    Raises ModelLoadError when the file cannot be opened, is not a GGUF file,
    or ends inside the metadata section.
    """
    p = Path(path)
    spath = str(p)
    try:
        f = open(p, "rb")
    except OSError as e:
        raise ModelLoadError(f"cannot open model file {spath}: {e.strerror or e}") from e
    with f:
        try:
            size = os.fstat(f.fileno()).st_size
        except OSError as e:  # pragma: no cover - fstat on an open file rarely fails
            raise ModelLoadError(f"cannot read model file {spath}: {e}") from e
        if size < 4:
            raise ModelLoadError(f"not a GGUF file: {spath} (too short)")
        try:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as e:
            raise ModelLoadError(f"cannot read model file {spath}: {e}") from e
        try:
            return _parse(buf, p)
        finally:
            buf.close()


def _parse(buf: Any, p: Path) -> GgufMetadata:
    spath = str(p)
    if bytes(buf[:4]) != GGUF_MAGIC:
        raise ModelLoadError(f"not a GGUF file: {spath} (bad magic {bytes(buf[:4])!r})")
    r = _Reader(buf, "<", spath)
    r.pos = 4
    version = r.scalar("I", "version")
    if version & 0xFFFF == 0 and version != 0:
        # A big-endian GGUF reads as a huge little-endian version number.
        r.order = ">"
        r.pos = 4
        version = r.scalar("I", "version")
    if version not in (1, 2, 3):
        raise ModelLoadError(f"unsupported GGUF version {version} in {spath}")
    len_code = "I" if version == 1 else "Q"
    tensor_count = r.scalar(len_code, "tensor count")
    kv_count = r.scalar(len_code, "metadata count")
    # Every key/value takes at least 12 bytes; a wild count means a broken file.
    r.need(kv_count * 12, "metadata")
    kv: dict[str, Any] = {}
    for _ in range(kv_count):
        key = r.string(len_code, "metadata key")
        vtype = r.scalar("I", f"type of {key!r}")
        kv[key] = _read_value(r, vtype, len_code, key)
    data_offset, data_size = _check_tensor_table(r, tensor_count, len_code, kv)
    tokens = kv.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list):
        tokens = []
    arch = kv.get("general.architecture")
    name = kv.get("general.name")
    return GgufMetadata(
        name=str(name) if name is not None else p.stem,
        architecture=str(arch) if arch is not None else "",
        kv=kv,
        tokens=tokens,
        version=version,
        tensor_count=int(tensor_count),
        path=p,
        data_offset=data_offset,
        data_size=data_size,
    )


def _check_tensor_table(r: _Reader, tensor_count: int, len_code: str, kv: dict[str, Any]) -> tuple[int, int]:
    """Walk the tensor-info table (names, shapes, types, offsets; never the data)
    and check the file is long enough for the data it declares."""
    end_needed = 0
    for i in range(tensor_count):
        name = r.string(len_code, f"name of tensor {i}")
        n_dims = r.scalar("I", f"dimensions of tensor {name!r}")
        if n_dims > 8:
            raise ModelLoadError(f"bad GGUF file {r.path}: tensor {name!r} has {n_dims} dimensions")
        dims = [r.scalar(len_code, f"shape of tensor {name!r}") for _ in range(n_dims)]
        ttype = r.scalar("I", f"type of tensor {name!r}")
        offset = r.scalar("Q", f"offset of tensor {name!r}")
        n_el = 1
        for d in dims:
            n_el *= int(d)
        block = _GGML_BLOCKS.get(ttype)
        nbytes = (n_el // block[0]) * block[1] if block else 0
        end_needed = max(end_needed, int(offset) + nbytes)
    align = kv.get("general.alignment", 32)
    if not isinstance(align, int) or align <= 0:
        align = 32
    data_offset = r.pos + (-r.pos % align)
    if tensor_count and data_offset + end_needed > r.end:
        raise ModelLoadError(
            f"truncated GGUF file {r.path}: tensor data needs {data_offset + end_needed} bytes, "
            f"file has {r.end} (incomplete download?)"
        )
    return data_offset, end_needed


__all__ = ["GgufMetadata", "read_gguf_metadata", "SPECIAL_TOKEN_ID_KEYS", "GGUF_MAGIC"]
