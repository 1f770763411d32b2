"""The dataset format: exact header parsing, round trips at the chunk-size edges, every
tamper case (each asserting its error class), and bounded memory on a large file."""

from __future__ import annotations

import io
import os
import struct
import threading
import tracemalloc
from pathlib import Path

import pytest

from custodes.datasets.errors import (
    BadMagic,
    ChunkAuthenticationFailed,
    ChunkSizeOutOfRange,
    CounterOverflow,
    DatasetError,
    DatasetFormatError,
    DatasetKeyError,
    InvalidKeyId,
    KeyIdMismatch,
    MissingFinalChunk,
    TrailingData,
    TruncatedChunk,
    TruncatedHeader,
    UnsupportedFormatVersion,
)
from custodes.datasets.format import (
    FORMAT_VERSION,
    MAGIC,
    MAX_CHUNK_INDEX,
    MAX_CHUNK_SIZE,
    MAX_KEY_ID_BYTES,
    MIN_CHUNK_SIZE,
    TAG_BYTES,
    Header,
    chunk_nonce,
    decrypt_stream,
    encrypt_stream,
    encrypted_size,
    plaintext_size,
    read_header,
)
from custodes.datasets.keys import generate_key
from custodes.types.secret import Secret

KEY_ID = "kbs:///default/dataset/fraud"
C = MIN_CHUNK_SIZE
KEY = Secret(bytes(range(32)))
# Offsets of the header fields for KEY_ID.
N = len(KEY_ID)
MAGIC_AT = 0
VERSION_AT = 8
LEN_AT = 9
KEY_ID_AT = 11
CHUNK_SIZE_AT = 11 + N
PREFIX_AT = 15 + N
HEADER_SIZE = 22 + N


def encrypt(plain: bytes, *, key: Secret[bytes] = KEY, chunk_size: int = C) -> bytes:
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(plain), out, key, KEY_ID, chunk_size=chunk_size)
    return out.getvalue()


def decrypt(data: bytes, *, key: Secret[bytes] = KEY, expected_key_id: str | None = None) -> bytes:
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(data), out, key, expected_key_id=expected_key_id)
    return out.getvalue()


def chunks(data: bytes, chunk_size: int = C) -> tuple[bytes, list[bytes]]:
    """Split a dataset into its header and its chunks (ciphertext + tag each)."""
    header, body = data[:HEADER_SIZE], data[HEADER_SIZE:]
    step = chunk_size + TAG_BYTES
    return header, [body[i : i + step] for i in range(0, len(body), step)]


def flip(data: bytes, at: int, mask: int = 0x01) -> bytes:
    return data[:at] + bytes([data[at] ^ mask]) + data[at + 1 :]


# A plaintext of 3 full chunks and a final chunk of 2000 bytes; one of exactly 3 chunks
# (its final chunk is empty).
PLAIN = os.urandom(3 * C + 2000)
EXACT = os.urandom(3 * C)


@pytest.fixture(scope="module")
def sealed() -> bytes:
    return encrypt(PLAIN)


@pytest.fixture(scope="module")
def sealed_exact() -> bytes:
    return encrypt(EXACT)


# --- header ------------------------------------------------------------------------------


def test_header_layout_is_exact(sealed: bytes) -> None:
    header = Header.from_bytes(sealed[:HEADER_SIZE])
    assert sealed[MAGIC_AT:VERSION_AT] == MAGIC
    assert sealed[VERSION_AT] == FORMAT_VERSION
    assert struct.unpack(">H", sealed[LEN_AT:KEY_ID_AT])[0] == N
    assert sealed[KEY_ID_AT:CHUNK_SIZE_AT] == KEY_ID.encode()
    assert struct.unpack(">I", sealed[CHUNK_SIZE_AT:PREFIX_AT])[0] == C
    assert header.nonce_prefix == sealed[PREFIX_AT:HEADER_SIZE]
    assert header.encoded_size == HEADER_SIZE
    assert header.to_bytes() == sealed[:HEADER_SIZE]
    assert (header.key_id, header.chunk_size, header.version) == (KEY_ID, C, 1)
    assert str(header.resource.path) == "default/dataset/fraud"


def test_read_header_leaves_the_stream_at_the_first_chunk(sealed: bytes) -> None:
    src = io.BytesIO(sealed)
    read_header(src)
    assert src.tell() == HEADER_SIZE


def test_from_bytes_refuses_bytes_after_the_header(sealed: bytes) -> None:
    with pytest.raises(DatasetFormatError):
        Header.from_bytes(sealed[: HEADER_SIZE + 1])


def test_nonce_prefix_is_random_per_file() -> None:
    assert Header.new(KEY_ID).nonce_prefix != Header.new(KEY_ID).nonce_prefix


def test_bad_magic(sealed: bytes) -> None:
    with pytest.raises(BadMagic):
        read_header(io.BytesIO(flip(sealed, 3)))
    with pytest.raises(BadMagic):
        read_header(io.BytesIO(b"PK\x03\x04 a zip file"))


def test_truncated_header(sealed: bytes) -> None:
    for cut in (0, 4, VERSION_AT, LEN_AT + 1, KEY_ID_AT + 3, CHUNK_SIZE_AT + 2, HEADER_SIZE - 1):
        with pytest.raises(TruncatedHeader):
            read_header(io.BytesIO(sealed[:cut]))


def test_unknown_version(sealed: bytes) -> None:
    for version in (0, 2, 255):
        data = sealed[:VERSION_AT] + bytes([version]) + sealed[VERSION_AT + 1 :]
        with pytest.raises(UnsupportedFormatVersion):
            read_header(io.BytesIO(data))
    with pytest.raises(UnsupportedFormatVersion):
        Header(KEY_ID, C, bytes(7), version=2)


def _with_key_id(sealed: bytes, raw: bytes) -> bytes:
    return sealed[:LEN_AT] + struct.pack(">H", len(raw)) + raw + sealed[CHUNK_SIZE_AT:]


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xff\xfe",  # not UTF-8
        b"https://example.com/a/b/c",  # not kbs://
        b"kbs:///only/two",
        b"kbs:///a/b/c d",  # space
        b"kbs:///a/b/" + b"x" * (MAX_KEY_ID_BYTES - 11 + 1),  # over the bound
    ],
)
def test_invalid_key_id(sealed: bytes, raw: bytes) -> None:
    with pytest.raises(InvalidKeyId):
        read_header(io.BytesIO(_with_key_id(sealed, raw)))


def test_key_id_length_field_beyond_bound(sealed: bytes) -> None:
    data = sealed[:LEN_AT] + struct.pack(">H", MAX_KEY_ID_BYTES + 1) + sealed[KEY_ID_AT:]
    with pytest.raises(InvalidKeyId):
        read_header(io.BytesIO(data))


def test_invalid_key_id_refused_when_encrypting() -> None:
    with pytest.raises(InvalidKeyId):
        encrypt_stream(io.BytesIO(b"x"), io.BytesIO(), KEY, "default/dataset/fraud")


@pytest.mark.parametrize("size", [0, MIN_CHUNK_SIZE - 1, MAX_CHUNK_SIZE + 1, 2**32 - 1])
def test_chunk_size_out_of_range(sealed: bytes, size: int) -> None:
    data = sealed[:CHUNK_SIZE_AT] + struct.pack(">I", size) + sealed[PREFIX_AT:]
    with pytest.raises(ChunkSizeOutOfRange):
        read_header(io.BytesIO(data))
    with pytest.raises(ChunkSizeOutOfRange):
        encrypt_stream(io.BytesIO(b""), io.BytesIO(), KEY, KEY_ID, chunk_size=size)


def test_chunk_size_bounds_are_accepted() -> None:
    for size in (MIN_CHUNK_SIZE, MAX_CHUNK_SIZE):
        assert Header.new(KEY_ID, size).chunk_size == size


def test_every_header_bit_flip_fails_before_any_output(sealed: bytes) -> None:
    """Whatever bit of the header changes, decryption fails and writes nothing: either the
    header no longer parses, or it parses and the first chunk (its AAD) fails."""
    for at in range(HEADER_SIZE):
        for bit in range(8):
            out = io.BytesIO()
            with pytest.raises(DatasetError):
                decrypt_stream(io.BytesIO(flip(sealed, at, 1 << bit)), out, KEY)
            assert out.getvalue() == b"", (at, bit)


@pytest.mark.parametrize(
    ("field", "at"),
    [("key id", KEY_ID_AT + N - 1), ("chunk size", CHUNK_SIZE_AT + 2), ("prefix", PREFIX_AT)],
)
def test_header_edit_that_still_parses_fails_authentication(
    sealed: bytes, field: str, at: int
) -> None:
    edited = flip(sealed, at)  # 'fraud' -> 'frauE'; 4096 -> 4352; another prefix
    read_header(io.BytesIO(edited))  # still a valid header
    with pytest.raises(ChunkAuthenticationFailed):
        decrypt(edited)


def test_expected_key_id_mismatch(sealed: bytes) -> None:
    out = io.BytesIO()
    with pytest.raises(KeyIdMismatch):
        decrypt_stream(io.BytesIO(sealed), out, KEY, expected_key_id="kbs:///default/dataset/x")
    assert out.getvalue() == b""
    assert decrypt(sealed, expected_key_id=KEY_ID) == PLAIN


# --- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, C - 1, C, C + 1, 2 * C, 5 * C + 17])
def test_round_trip(size: int) -> None:
    plain = os.urandom(size)
    data = encrypt(plain)
    header = read_header(io.BytesIO(data))
    assert len(data) == encrypted_size(header, size)
    assert plaintext_size(header, len(data)) == size
    assert decrypt(data) == plain


def test_final_chunk_is_empty_for_a_multiple_of_the_chunk_size(sealed_exact: bytes) -> None:
    _, parts = chunks(sealed_exact)
    assert [len(p) for p in parts] == [C + TAG_BYTES] * 3 + [TAG_BYTES]


def test_same_plaintext_encrypts_differently() -> None:
    assert encrypt(b"same") != encrypt(b"same")


def test_progress_reports_plaintext_increments() -> None:
    seen: list[int] = []
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(PLAIN), out, KEY, KEY_ID, chunk_size=C, progress=seen.append)
    assert seen == [C, C, C, 2000]
    seen.clear()
    decrypt_stream(io.BytesIO(out.getvalue()), io.BytesIO(), KEY, progress=seen.append)
    assert seen == [C, C, C, 2000]


def test_pipe_with_short_reads_round_trips(sealed: bytes) -> None:
    """A real pipe fed in small pieces: reads come back short and must be refilled."""
    r, w = os.pipe()

    def feed() -> None:
        with os.fdopen(w, "wb", buffering=0) as pipe:
            for i in range(0, len(sealed), 999):
                pipe.write(sealed[i : i + 999])

    feeder = threading.Thread(target=feed)
    feeder.start()
    out = io.BytesIO()
    with os.fdopen(r, "rb", buffering=0) as pipe:
        decrypt_stream(pipe, out, KEY)
    feeder.join()
    assert out.getvalue() == PLAIN


# --- chunk tampering ---------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [0, 1, 3])
@pytest.mark.parametrize("where", ["ciphertext", "tag"])
def test_chunk_bit_flip(sealed: bytes, chunk: int, where: str) -> None:
    header, parts = chunks(sealed)
    part = parts[chunk]
    at = 5 if where == "ciphertext" else len(part) - 3
    parts[chunk] = flip(part, at, 0x80)
    out = io.BytesIO()
    with pytest.raises(ChunkAuthenticationFailed):
        decrypt_stream(io.BytesIO(header + b"".join(parts)), out, KEY)
    # Streaming: the chunks before the bad one were authenticated and written.
    assert out.getvalue() == PLAIN[: chunk * C]


@pytest.mark.parametrize("kept", [0, 1, 3])
def test_truncation_at_a_chunk_boundary(sealed: bytes, kept: int) -> None:
    header, parts = chunks(sealed)
    with pytest.raises(MissingFinalChunk):
        decrypt(header + b"".join(parts[:kept]))


def test_dropped_empty_final_chunk(sealed_exact: bytes) -> None:
    header, parts = chunks(sealed_exact)
    assert parts[-1] and len(parts[-1]) == TAG_BYTES
    with pytest.raises(MissingFinalChunk):
        decrypt(header + b"".join(parts[:-1]))


def test_dropped_middle_chunk(sealed: bytes) -> None:
    header, parts = chunks(sealed)
    with pytest.raises(ChunkAuthenticationFailed):
        decrypt(header + b"".join(parts[:1] + parts[2:]))


def test_truncation_mid_chunk(sealed: bytes) -> None:
    header, parts = chunks(sealed)
    # Cut inside chunk 1: what is left reads as a (short) final chunk and fails.
    with pytest.raises(ChunkAuthenticationFailed):
        decrypt(header + parts[0] + parts[1][:1000])
    # Cut inside the final chunk.
    with pytest.raises(ChunkAuthenticationFailed):
        decrypt(sealed[:-1])


def test_truncation_leaving_less_than_a_tag(sealed: bytes) -> None:
    header, parts = chunks(sealed)
    for left in (1, TAG_BYTES - 1):
        with pytest.raises(TruncatedChunk):
            decrypt(header + parts[0] + parts[1][:left])


def test_bytes_appended_after_a_final_chunk(sealed: bytes) -> None:
    _, parts = chunks(sealed)
    # The final chunk has no length field: appended bytes become part of it and it fails.
    for extra in (b"\x00", parts[0]):
        with pytest.raises(ChunkAuthenticationFailed):
            decrypt(sealed + extra)


def test_bytes_appended_after_an_empty_final_chunk(sealed_exact: bytes) -> None:
    _, parts = chunks(sealed_exact)
    for extra in (b"\x00", parts[0], os.urandom(3 * C)):
        with pytest.raises(TrailingData):
            decrypt(sealed_exact + extra)


def test_bytes_that_arrive_after_the_final_chunk(tmp_path: Path, sealed: bytes) -> None:
    """A source that grows after its final chunk was read (a real file appended to while it
    is decrypted): the bytes after the authenticated final chunk are refused."""
    path = tmp_path / "growing.cdx"
    path.write_bytes(sealed)

    def append_once(n: int) -> None:
        if n == 2000:  # the final chunk was just written
            with path.open("ab") as f:
                f.write(b"more")

    with path.open("rb") as src, pytest.raises(TrailingData):
        decrypt_stream(src, io.BytesIO(), KEY, progress=append_once)


def test_reordered_chunks(sealed: bytes) -> None:
    header, parts = chunks(sealed)
    swapped = [parts[1], parts[0], *parts[2:]]
    with pytest.raises(ChunkAuthenticationFailed):
        decrypt(header + b"".join(swapped))


def test_chunk_from_another_file_under_the_same_key(sealed: bytes) -> None:
    other = encrypt(PLAIN)  # same key, same key id, same plaintext; another random prefix
    header, parts = chunks(sealed)
    _, other_parts = chunks(other)
    for i in range(len(parts)):
        mixed = [*parts]
        mixed[i] = other_parts[i]
        with pytest.raises(ChunkAuthenticationFailed):
            decrypt(header + b"".join(mixed))
    # Nor does another file's header make its own chunks fit.
    with pytest.raises(ChunkAuthenticationFailed):
        decrypt(other[:HEADER_SIZE] + sealed[HEADER_SIZE:])


def test_wrong_key(sealed: bytes) -> None:
    out = io.BytesIO()
    with pytest.raises(ChunkAuthenticationFailed):
        decrypt_stream(io.BytesIO(sealed), out, generate_key())
    assert out.getvalue() == b""


@pytest.mark.parametrize("length", [0, 16, 31, 33])
def test_key_must_be_32_bytes(sealed: bytes, length: int) -> None:
    with pytest.raises(DatasetKeyError):
        decrypt(sealed, key=Secret(bytes(length)))
    with pytest.raises(DatasetKeyError):
        encrypt(b"x", key=Secret(bytes(length)))


def test_counter_overflow_is_refused() -> None:
    prefix = bytes(7)
    assert chunk_nonce(prefix, MAX_CHUNK_INDEX, final=True) == prefix + b"\xff" * 4 + b"\x01"
    assert chunk_nonce(prefix, 0, final=False) == prefix + bytes(4) + b"\x00"
    with pytest.raises(CounterOverflow):
        chunk_nonce(prefix, MAX_CHUNK_INDEX + 1, final=False)


# --- layout ------------------------------------------------------------------------------


def test_plaintext_size_from_layout(sealed: bytes, sealed_exact: bytes) -> None:
    header = read_header(io.BytesIO(sealed))
    assert plaintext_size(header, len(sealed)) == len(PLAIN)
    assert plaintext_size(header, len(sealed_exact)) == len(EXACT)
    with pytest.raises(MissingFinalChunk):
        plaintext_size(header, HEADER_SIZE + 2 * (C + TAG_BYTES))
    with pytest.raises(TruncatedChunk):
        plaintext_size(header, HEADER_SIZE + C + TAG_BYTES + 5)
    with pytest.raises(TruncatedHeader):
        plaintext_size(header, HEADER_SIZE - 1)


# --- memory ------------------------------------------------------------------------------

BIG = 64 * 1024 * 1024
BIG_CHUNK = 64 * 1024
MEMORY_BOUND = 2 * 1024 * 1024


def test_a_file_larger_than_the_memory_bound_streams_through(tmp_path: Path) -> None:
    """64 MiB through 64 KiB chunks, file to file: Python's peak allocation stays ~2 chunks."""
    plain, sealed, back = tmp_path / "plain", tmp_path / "plain.cdx", tmp_path / "back"
    block = os.urandom(1024 * 1024)
    with plain.open("wb") as f:
        for i in range(BIG // len(block)):
            f.write(block[i:] + block[:i])
    key = generate_key()
    tracemalloc.start()
    try:
        with plain.open("rb") as src, sealed.open("wb") as dst:
            encrypt_stream(src, dst, key, KEY_ID, chunk_size=BIG_CHUNK)
        _, encrypt_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with sealed.open("rb") as src, back.open("wb") as dst:
            decrypt_stream(src, dst, key)
        _, decrypt_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert encrypt_peak < MEMORY_BOUND
    assert decrypt_peak < MEMORY_BOUND
    assert sealed.stat().st_size == BIG + HEADER_SIZE + (BIG // BIG_CHUNK + 1) * TAG_BYTES
    with plain.open("rb") as a, back.open("rb") as b:
        while chunk := a.read(1024 * 1024):
            assert b.read(len(chunk)) == chunk
        assert b.read(1) == b""
