"""The strict reader of untrusted JSON: one definition of what custodes accepts.

:mod:`json` alone accepts what a peer can use to make two readers disagree or a reader
work too hard: duplicate keys (the last one wins silently), ``NaN``/``Infinity``, numbers
that overflow to infinity, lone surrogates, nesting deep enough to exhaust the recursion
limit. :func:`loads` refuses all of them, with :class:`~custodes.errors.MalformedMessage` or
the error its caller names (``error=``): each parser keeps its own error class, and they all
accept exactly the same JSON. Every parser of untrusted JSON reads through it: the KBS
protocol messages, the JWE header, JWS tokens, the Azure HCL runtime data, admission reviews,
sealed secrets and their keys, and evidence files verified offline.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from itertools import accumulate
from typing import Final, NoReturn

from custodes.errors import MalformedMessage
from custodes.types.json import Json, JsonObject

DEFAULT_MAX_DEPTH: Final = 32

# A JSON string, or an unterminated one that runs to the end of the body: the scan never
# restarts inside a string, so it stays linear however many quotes a body holds.
_STRING: Final = re.compile(rb'"(?:[^"\\]|\\.)*+"?', re.DOTALL)
_BRACKETS: Final = b"[]{}"
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in _BRACKETS)
# Indexed by byte value: +1 for an opening bracket, -1 for a closing one.
_STEP: Final = [1 if b in b"[{" else -1 if b in b"]}" else 0 for b in range(256)]
# Only an escape can produce a lone surrogate from text that decoded as UTF-8.
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")


def _nesting_depth(body: bytes) -> int:
    """Deepest bracket nesting outside strings, without recursion (``json`` recurses).

    Works on the UTF-8 bytes: no byte of a multi-byte sequence is ASCII, so quotes,
    backslashes and brackets are found exactly as in the decoded text.
    """
    brackets = _STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


class _Refused(Exception):
    """A refusal inside the reader, turned into the caller's error at the door."""


def _refuse_constant(name: str) -> NoReturn:
    raise _Refused(f"non-standard JSON constant {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Refused("JSON number out of range")
    return value


def _unique_keys(pairs: list[tuple[str, Json]]) -> JsonObject:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _Refused("duplicate key in JSON object")
    return obj


def loads(
    body: bytes,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    error: Callable[[str], Exception] = MalformedMessage,
) -> Json:
    """Parse untrusted JSON strictly, or raise ``error(reason)`` (``MalformedMessage`` unless
    the caller names its own), chained to the cause.

    Refused: anything but bytes (a body is read as sent, never re-encoded), non-UTF-8 bytes,
    a BOM, ``NaN``/``Infinity``, numbers that overflow a float, duplicate keys, lone surrogate
    escapes, nesting deeper than ``max_depth``.
    """
    try:
        return _loads(body, max_depth)
    except _Refused as e:
        raise error(str(e)) from e.__cause__


def _loads(body: bytes, max_depth: int) -> Json:
    if not isinstance(body, bytes | bytearray | memoryview):
        raise _Refused("body is not bytes")
    raw = bytes(body)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Refused("body is not UTF-8") from e
    if _nesting_depth(raw) > max_depth:
        raise _Refused(f"JSON nested deeper than {max_depth}")
    try:
        value = json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
        )
    except _Refused:
        raise
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise _Refused("body is not valid JSON") from e
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as e:
            raise _Refused("JSON string holds a lone surrogate") from e
    return value
