"""Fuzz the encrypted-dataset header, read from bytes and from a stream."""

from __future__ import annotations

import io

from fuzz_support import FUZZ, KEEP_FAILURES_READABLE, byte_inputs, check
from hypothesis import given

from custodes.datasets.format import Header, read_header

pytest_plugins = ["fuzz_report"]
pytestmark = KEEP_FAILURES_READABLE

HEADERS = [
    Header("kbs:///default/dataset/fraud", 1024 * 1024, bytes(7)).to_bytes(),
    Header("kbs://broker.example:8080/repo/type/tag?v=1", 4096, b"\x01" * 7).to_bytes(),
]


def test_seeds_parse() -> None:
    assert [Header.from_bytes(h).chunk_size for h in HEADERS] == [1024 * 1024, 4096]


@FUZZ
@given(data=byte_inputs(HEADERS, max_random=256))
def test_fuzz_dataset_header(data: bytes) -> None:
    check("datasets.header", Header.from_bytes, data, Header)
    check("datasets.read_header", lambda d: read_header(io.BytesIO(d)), data, Header)
