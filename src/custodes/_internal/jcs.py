"""RFC 8785 (JCS) canonical JSON, fast for the values custodes signs on every request.

The ``rfc8785`` package is the reference and stays the authority: it serialises in pure
Python, string by string, which cost about a tenth of the broker's CPU per handshake (audit
entries are canonicalised on every request). For most values the standard library's C encoder
writes exactly the same bytes, so :func:`dumps` first checks, in one walk over the value, that
it holds only what the two agree on, and then lets ``json.dumps`` write it:

- strings: JCS escapes ``"``, ``\\`` and the controls below U+0020 (``\\b \\t \\n \\f \\r``,
  the others as lowercase ``\\u00xx``) and writes every other character as itself; so does
  ``json.dumps(ensure_ascii=False)``. Lone surrogates are not UTF-8: the reference refuses them,
  and so does this walk (by leaving them to the reference).
- member order: JCS sorts keys by UTF-16 code units, Python by code points; the two orders
  differ only between keys holding characters above U+FFFF, so keys must be ASCII here.
- numbers: integers in the IEEE 754 safe range print the same. Floats do not always
  (``1.0`` vs ``1``, ``1e-07`` vs ``1e-7``) and integers outside the range are refused by the
  reference: both go to the reference.

Anything else (a float, a non-ASCII key, another type) is handed to ``rfc8785``, whose answer
or error is the result: the fast path never decides anything the reference would decide
differently (tests compare the two on generated values).
"""

from __future__ import annotations

import json
from typing import Final

import rfc8785

from custodes.types.json import Json

_SAFE: Final = 2**53 - 1


def dumps(value: Json) -> bytes:
    """The JCS serialisation of ``value`` (``rfc8785.dumps``'s bytes and errors)."""
    if not _plain(value):
        data: bytes = rfc8785.dumps(value)
        return data
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


def _plain(value: object) -> bool:
    """Whether ``value`` holds only what ``json.dumps`` writes exactly as JCS does."""
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        if type(item) is str:
            if not _utf8(item):
                return False
        elif type(item) is dict:
            for key, member in item.items():
                if type(key) is not str or not key.isascii():
                    return False
                stack.append(member)
        elif type(item) is list:
            stack.extend(item)
        elif type(item) is int:
            if not -_SAFE <= item <= _SAFE:
                return False
        elif item is None or type(item) is bool:
            continue
        else:  # floats, tuples, subclasses, anything else: the reference decides
            return False
    return True


def _utf8(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
