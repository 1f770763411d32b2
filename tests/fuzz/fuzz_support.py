"""What every fuzz harness shares: the bounded settings, the property, and strategies that
mutate real vectors (byte flips, interesting integers, truncations, extensions, splices) or
JSON documents (node replacement, deletion, insertion), plus hostile JSON texts.

The property of every target: the parser returns its typed object or raises a
:class:`~custodes.errors.CustodesError` subclass, never anything else (``IndexError``,
``KeyError``, ``struct.error``, ``UnicodeDecodeError``, ``RecursionError``, ``OverflowError``...).

``CUSTODES_FUZZ_EXAMPLES`` (default 200) sets the examples per target; ``CUSTODES_FUZZ_RANDOM=1``
draws fresh random examples on every run instead of the fixed (derandomized) sequence. See
docs/fuzzing.md.
"""

from __future__ import annotations

import copy
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from custodes.errors import CustodesError
from custodes.types.json import Json, JsonObject

EXAMPLES_ENV: Final = "CUSTODES_FUZZ_EXAMPLES"
RANDOM_ENV: Final = "CUSTODES_FUZZ_RANDOM"
DEFAULT_EXAMPLES: Final = 200

# The upstream vectors sit beside the checkout, as tests/conftest.py expects them.
VECTORS: Final = Path(__file__).resolve().parents[1] / "vectors"
DATA: Final = Path(__file__).resolve().parent / "data"


def _examples() -> int:
    raw = os.environ.get(EXAMPLES_ENV, "")
    if not raw:
        return DEFAULT_EXAMPLES
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{EXAMPLES_ENV} must be a positive integer, not {raw!r}")
    return int(raw)


# Bounded, reproducible by default; the health checks about slow or large data are off
# because real vectors are large by nature (a TDX quote is 5 KB, an event log tens of KB).
FUZZ: Final = settings(
    max_examples=_examples(),
    deadline=None,
    derandomize=os.environ.get(RANDOM_ENV) != "1",
    database=None,
    print_blob=True,  # a failure in a random run prints @reproduce_failure(...) to replay it
    suppress_health_check=list(HealthCheck),
)

# A failing example built from a large vector has a large repr; Hypothesis warns about that,
# and the warnings-as-errors setting would then hide the failure itself.
KEEP_FAILURES_READABLE: Final = pytest.mark.filterwarnings("ignore:Generating overly large repr")

T = TypeVar("T")
R = TypeVar("R")

# target name -> examples run (every call of the property, shrinking included); printed at
# the end of the session by the fuzz_report plugin.
EXAMPLES: Final[Counter[str]] = Counter()


def record(target: str) -> None:
    """Count one example of ``target``."""
    EXAMPLES[target] += 1


def vector(relative: str) -> bytes:
    """The bytes of an upstream vector under ``tests/vectors``."""
    path = VECTORS / relative
    if not path.is_file():
        raise FileNotFoundError(f"upstream vector not found: {path}")
    return path.read_bytes()


def data_file(name: str) -> bytes:
    """A fixed input kept beside the harnesses (``tests/fuzz/data``)."""
    return (DATA / name).read_bytes()


def check(
    target: str,
    parse: Callable[[T], R],
    value: T,
    expected: type | tuple[type, ...],
) -> R | None:
    """The fuzz property: ``parse(value)`` returns an ``expected`` or raises a
    ``CustodesError``; anything else propagates and fails the example (no parser here
    documents another exception for bad input). Returns the parsed value, or ``None``."""
    record(target)
    try:
        result = parse(value)
    except CustodesError:
        return None
    assert isinstance(result, expected), (target, type(result))
    return result


# --- bytes ----------------------------------------------------------------------------------

# Values that break length and offset arithmetic, written at 1, 2, 4 or 8 bytes.
INTERESTING_INTS: Final = (
    0,
    1,
    2,
    0x7F,
    0x80,
    0xFF,
    0x100,
    0x7FFF,
    0x8000,
    0xFFFF,
    0x10000,
    0x7FFFFFFF,
    0x80000000,
    0xFFFFFFFF,
    2**63 - 1,
    2**64 - 1,
)
_BYTE_OPS: Final = ("flip", "byte", "int", "truncate", "extend", "delete", "insert", "splice")


@st.composite
def mutated(draw: st.DrawFn, seeds: Sequence[bytes], max_ops: int = 4) -> bytes:
    """One of ``seeds`` after 1 to ``max_ops`` random byte-level mutations."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(_BYTE_OPS))
        n = len(data)
        if op == "extend" or n == 0:
            data += draw(st.binary(min_size=1, max_size=64))
        elif op == "flip":
            i = draw(st.integers(0, n - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte":
            data[draw(st.integers(0, n - 1))] = draw(st.sampled_from((0, 1, 0x7F, 0x80, 0xFF)))
        elif op == "int":
            width = draw(st.sampled_from((1, 2, 4, 8)))
            i = draw(st.integers(0, max(0, n - width)))
            value = draw(st.sampled_from(INTERESTING_INTS)) % (1 << (8 * width))
            big = draw(st.booleans())
            data[i : i + width] = value.to_bytes(width, "big" if big else "little")
        elif op == "truncate":
            del data[draw(st.integers(0, n - 1)) :]
        elif op == "delete":
            i = draw(st.integers(0, n - 1))
            del data[i : i + draw(st.integers(1, 64))]
        elif op == "insert":
            i = draw(st.integers(0, n))
            data[i:i] = draw(st.binary(min_size=1, max_size=32))
        else:  # splice: a copy of one range of the input written over another
            i, j = draw(st.integers(0, n - 1)), draw(st.integers(0, n - 1))
            size = draw(st.integers(1, 64))
            data[j : j + size] = data[i : i + size]
    return bytes(data)


def byte_inputs(seeds: Sequence[bytes], *, max_random: int = 2048) -> st.SearchStrategy[bytes]:
    """The seeds as they are, mutated seeds, and fully random bytes."""
    return st.one_of(
        st.sampled_from(seeds),
        mutated(seeds),
        mutated(seeds, max_ops=12),
        st.binary(max_size=max_random),
    )


def latin1(data: bytes) -> str:
    """Bytes as text one character per byte, so byte mutations reach text parsers."""
    return data.decode("latin-1")


def text_inputs(seeds: Sequence[str]) -> st.SearchStrategy[str]:
    """Text seeds as they are, byte-mutated (UTF-8 bytes seen as Latin-1), random text."""
    raw = [s.encode("utf-8") for s in seeds]
    return st.one_of(
        st.sampled_from(seeds),
        mutated(raw).map(latin1),
        mutated(raw).map(lambda b: b.decode("utf-8", "replace")),
        st.text(max_size=300),
    )


# --- JSON -----------------------------------------------------------------------------------

_SPECIAL_STRINGS: Final = (
    "",
    "0",
    "-1",
    "\x00",
    "\ud800",
    "\u2025",
    "../",
    "%2e%2e",
    "=",
    "A" * 1000,
)
json_scalars: Final = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from((-1, 2**31, 2**32, 2**63, 2**64, 2**64 - 1, -(2**63) - 1, 10**40)),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=24),
    st.sampled_from(_SPECIAL_STRINGS),
)
json_values: Final[st.SearchStrategy[Json]] = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)

# Texts that break JSON readers rather than JSON documents: recursion depth, non-finite and
# over-long numbers, lone surrogates, duplicate members, a BOM, trailing data.
HOSTILE_JSON: Final = (
    b"[" * 100_000,
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    b"NaN",
    b"[Infinity, -Infinity]",
    b"1e999",
    b"-1e999",
    b"9" * 5000,
    b'"\\ud800"',
    b'{"\\udfff": 1}',
    b'{"a": 1, "a": 2}',
    b"\xef\xbb\xbf{}",
    b"{} []",
    b"\xff\xfe{\x00}\x00",
    b'{"a": "\xc3\x28"}',
    b"",
)


def _paths(doc: Json, prefix: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    yield prefix
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            yield from _paths(value, (*prefix, index))


def _get(doc: Json, path: tuple[str | int, ...]) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def _set(doc: Json, path: tuple[str | int, ...], value: Json) -> Json:
    if not path:
        return value
    _get(doc, path[:-1])[path[-1]] = value
    return doc


def _mutate_scalar(draw: st.DrawFn, value: Json) -> Json:
    if isinstance(value, bool) or value is None:
        return draw(json_scalars)
    if isinstance(value, int):
        return value + draw(st.sampled_from((-1, 1, 1 << 8, 1 << 32, 1 << 64, -(1 << 64))))
    if isinstance(value, str):
        return latin1(draw(mutated([value.encode("utf-8", "surrogatepass")])))
    return draw(json_scalars)


@st.composite
def mutated_json(draw: st.DrawFn, seeds: Sequence[Json], max_ops: int = 3) -> Json:
    """One of ``seeds`` (deep-copied) after 1 to ``max_ops`` structural mutations."""
    doc: Json = copy.deepcopy(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, max_ops))):
        path = draw(st.sampled_from(list(_paths(doc))))
        node = _get(doc, path)
        op = draw(st.sampled_from(("replace", "tweak", "delete", "add")))
        if op == "replace":
            doc = _set(doc, path, draw(json_values))
        elif op == "tweak" and not isinstance(node, dict | list):
            doc = _set(doc, path, _mutate_scalar(draw, node))
        elif op == "delete" and path:
            del _get(doc, path[:-1])[path[-1]]
        elif isinstance(node, dict):
            keys = [*node, "x", ""]
            node[draw(st.sampled_from(keys))] = draw(json_values)
        elif isinstance(node, list):
            node.insert(draw(st.integers(0, len(node))), draw(json_values))
        else:
            doc = _set(doc, path, draw(json_values))
    return doc


def dumps(doc: Json) -> bytes:
    return json.dumps(doc).encode()


def json_inputs(seeds: Sequence[Json]) -> st.SearchStrategy[Json]:
    """JSON documents: the seeds, mutated seeds, and random JSON values."""
    return st.one_of(st.sampled_from(seeds), mutated_json(seeds), json_values)


def json_or_text_inputs(seeds: Sequence[Json]) -> st.SearchStrategy[object]:
    """For parsers that take a document or its JSON text: documents, their text (also
    byte-mutated), and hostile texts."""
    texts = [dumps(s) for s in seeds]
    return st.one_of(
        json_inputs(seeds),
        mutated_json(seeds).map(dumps),
        mutated(texts),
        st.sampled_from(HOSTILE_JSON),
        st.sampled_from(HOSTILE_JSON).map(lambda b: b.decode("utf-8", "replace")),
    )


@st.composite
def mutated_member(
    draw: st.DrawFn,
    seed: JsonObject,
    path: tuple[str | int, ...],
    decode: Callable[[Any], bytes],
    encode: Callable[[bytes], Json],
) -> JsonObject:
    """``seed`` with the bytes encoded at ``path`` (base64, hex, a byte array) mutated and
    encoded again, so the mutation reaches the binary parser behind the JSON."""
    doc: JsonObject = copy.deepcopy(seed)
    raw = decode(_get(doc, path))
    _set(doc, path, encode(draw(mutated([raw]))))
    return doc
