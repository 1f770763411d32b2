"""The strict reader of untrusted JSON: one definition of what custodes accepts.

:mod:`json` alone accepts what a peer can use to make two readers disagree or a reader
work too hard: duplicate keys (the last one wins silently), ``NaN``/``Infinity``, numbers
that overflow to infinity, lone surrogates, nesting deep enough to exhaust the recursion
limit. :func:`loads` refuses all of them with :class:`~custodes.errors.MalformedMessage`.
The KBS protocol messages and the JWE header read through it; the other parsers of
untrusted JSON are to move onto it (issue 17).
"""

from __future__ import annotations

import json
import math
import re
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


def _refuse_constant(name: str) -> NoReturn:
    raise MalformedMessage(f"non-standard JSON constant {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise MalformedMessage("JSON number out of range")
    return value


def _unique_keys(pairs: list[tuple[str, Json]]) -> JsonObject:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise MalformedMessage("duplicate key in JSON object")
    return obj


def loads(body: bytes, *, max_depth: int = DEFAULT_MAX_DEPTH) -> Json:
    """Parse an untrusted JSON body strictly, or raise ``MalformedMessage``.

    Refused: non-UTF-8 bytes, a BOM, ``NaN``/``Infinity``, numbers that overflow a float,
    duplicate keys, lone surrogate escapes, nesting deeper than ``max_depth``.
    """
    if not isinstance(body, bytes | bytearray | memoryview):
        raise MalformedMessage("body is not bytes")
    raw = bytes(body)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedMessage("body is not UTF-8") from e
    if _nesting_depth(raw) > max_depth:
        raise MalformedMessage(f"JSON nested deeper than {max_depth}")
    try:
        value = json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
        )
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise MalformedMessage("body is not valid JSON") from e
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as e:
            raise MalformedMessage("JSON string holds a lone surrogate") from e
    return value
