"""Exact-length little-endian reads over evidence bytes, shared by the binary layouts (the CC
event log, the TDX quote): one place where running past the end becomes
:class:`~custodes.errors.MalformedEvidence`.
"""

from __future__ import annotations

import struct

from custodes.errors import MalformedEvidence


class Reader:
    """Bounds-checked little-endian reads; running past the end is ``MalformedEvidence``,
    worded by ``truncated`` (``{}`` is what was being read)."""

    __slots__ = ("_data", "_pos", "_truncated")

    def __init__(self, data: bytes, *, truncated: str = "event log: truncated {}") -> None:
        self._data = data
        self._pos = 0
        self._truncated = truncated

    @property
    def position(self) -> int:
        return self._pos

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def peek(self, n: int) -> bytes:
        return self._data[self._pos : self._pos + n]

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or n > self.remaining:
            raise MalformedEvidence(self._truncated.format(what))
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        value: int = struct.unpack("<H", self.take(2, what))[0]
        return value

    def u32(self, what: str) -> int:
        value: int = struct.unpack("<I", self.take(4, what))[0]
        return value
