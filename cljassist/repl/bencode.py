"""Bencode for the nREPL wire protocol: a thin wrapper around ``fastbencode``.

Why fastbencode: it is maintained, has a Rust core, and (unlike the codec inside
PyPI's ``nrepl-python-client`` 0.0.3) handles empty strings/lists/dicts and counts
string lengths in bytes.  What it lacks, and this module adds:

* **Framing.** nREPL replies arrive as a byte stream: one read may hold half a
  message or several.  fastbencode only decodes one complete value, so
  :class:`MessageStream` scans token by token for the end of the first top-level
  value (resuming where it stopped, so a large reply arriving in many chunks is
  scanned once) and hands exactly that slice to fastbencode.
* **str in, str out.** Callers use ``str``; the wire carries UTF-8 bytes.
  Decoding uses ``errors="replace"`` so one bad byte from a server cannot wedge
  the connection.
* **Key order leniency.** fastbencode rejects dicts whose keys are not in
  unsigned byte order.  nREPL sorts keys comparing *signed* Java bytes, so a
  reply with a non-ASCII key (e.g. from user middleware) would be rejected;
  other servers may not sort at all.  For such frames only, a small lenient
  decoder is used instead.
"""

from __future__ import annotations

from typing import Any

import fastbencode

__all__ = ["encode", "decode", "MessageStream", "BencodeError"]


class BencodeError(ValueError):
    """The byte stream is not bencode (the connection cannot be resynchronised)."""


def _to_bytes(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict):
        return {_to_bytes(k): _to_bytes(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_to_bytes(v) for v in value]
    if isinstance(value, bool):
        return int(value)
    return value  # bytes, int


def _to_str(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {_to_str(k): _to_str(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_str(v) for v in value]
    return value  # int


def encode(message: dict) -> bytes:
    """Encode one message; ``str`` becomes UTF-8, ``bool`` becomes 0/1, keys are sorted."""
    return fastbencode.bencode(_to_bytes(message))


def decode(data: bytes) -> Any:
    """Decode exactly one complete bencode value (bytes→str)."""
    try:
        raw = fastbencode.bdecode(data)
    except ValueError:
        raw = _lenient_decode(data)
    return _to_str(raw)


def _lenient_decode(data: bytes) -> Any:
    """Decode one value, accepting dict keys in any order (last duplicate wins)."""

    def value(pos: int) -> tuple[Any, int]:
        c = data[pos : pos + 1]
        if c == b"i":
            end = data.index(b"e", pos)
            return int(data[pos + 1 : end]), end + 1
        if c == b"l" or c == b"d":
            items, pos = [], pos + 1
            while data[pos : pos + 1] != b"e":
                item, pos = value(pos)
                items.append(item)
            if c == b"l":
                return items, pos + 1
            return dict(zip(items[0::2], items[1::2])), pos + 1
        colon = data.index(b":", pos)
        start = colon + 1
        return data[start : start + int(data[pos:colon])], start + int(data[pos:colon])

    try:
        result, end = value(0)
    except (ValueError, IndexError, RecursionError) as e:
        raise BencodeError(f"undecodable bencode frame: {e}") from None
    if end != len(data):
        raise BencodeError("junk after bencode value")
    return result


_DIGITS = frozenset(b"0123456789")


class MessageStream:
    """Incremental decoder: ``feed()`` bytes as they arrive, get complete messages back.

    Scan state (position in the buffer and container depth) survives between
    calls, so each byte is scanned once however the input is split.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0  # next token to scan in _buf
        self._depth = 0  # open containers at _pos

    @property
    def buffered(self) -> int:
        """Bytes held that do not yet form a complete message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[dict]:
        return [decode(frame) for frame in self.feed_frames(data)]

    def feed_frames(self, data: bytes) -> list[bytes]:
        """Like feed, but each complete message's raw bytes (a proxy forwards them unchanged)."""
        self._buf += data
        frames = []
        while (end := self._scan()) is not None:
            frames.append(bytes(self._buf[:end]))
            del self._buf[:end]
            self._pos = 0
        return frames

    def _scan(self) -> int | None:
        """Advance over complete tokens; return the end of the first complete top-level value."""
        buf, pos, depth = self._buf, self._pos, self._depth
        n = len(buf)
        while pos < n:
            c = buf[pos]
            if c == 0x64 or c == 0x6C:  # 'd' 'l'
                depth += 1
                pos += 1
            elif c == 0x65:  # 'e'
                if depth == 0:
                    raise BencodeError(f"unexpected 'e' at offset {pos}")
                depth -= 1
                pos += 1
            elif c == 0x69:  # 'i'
                end = buf.find(b"e", pos + 1)
                if end < 0:
                    break
                pos = end + 1
            elif c in _DIGITS:
                colon = buf.find(b":", pos)
                if colon < 0:
                    if n - pos > 20:
                        raise BencodeError("string length too long")
                    break
                try:
                    length = int(buf[pos:colon])
                except ValueError:
                    raise BencodeError(f"bad string length at offset {pos}") from None
                if colon + 1 + length > n:
                    break
                pos = colon + 1 + length
            else:
                raise BencodeError(f"unexpected byte {bytes([c])!r} at offset {pos}")
            if depth == 0:
                self._pos, self._depth = 0, 0
                return pos
        self._pos, self._depth = pos, depth
        return None
