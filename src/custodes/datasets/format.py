"""The encrypted dataset format: AES-256-GCM in a STREAM construction.

A dataset file is a header followed by chunks::

    magic(8) | version(1) | key_id_len(2, BE) | key_id(UTF-8) | chunk_size(4, BE) | prefix(7)
    chunk 0 | chunk 1 | ... | final chunk

Every chunk is ``AES-256-GCM(key, nonce, plaintext, aad=header)`` — the ciphertext followed by
its 16-byte tag — with ``nonce = prefix(7) || counter(4, BE) || last(1)`` where ``last`` is
``0x01`` for the final chunk and ``0x00`` otherwise (Hoang, Reyhanitabar, Rogaway, Vizár,
"Online authenticated-encryption and its nonce-reuse misuse-resistance", CRYPTO 2015).

Non-final chunks hold exactly ``chunk_size`` plaintext bytes; the final chunk holds fewer
(an empty final chunk when the plaintext size is a multiple of the chunk size). So the chunk
boundaries follow from the chunk size alone, a reader knows a chunk is final by its length,
and the nonce flag makes cutting the stream at a chunk boundary fail. The whole header is the
associated data of every chunk, so any header edit fails too; the random prefix makes chunks
of two files under the same key useless in each other. See ``docs/datasets.md``.

Memory: one input and one output buffer of about one chunk each, whatever the file size.
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

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
from custodes.errors import InvalidResourcePath
from custodes.protocol.resource import ResourceUri
from custodes.types.secret import Secret

# PNG-style: a high byte (not 7-bit text), a name, and CR LF / ^Z / LF to catch text-mode
# transfers that rewrite line ends.
MAGIC: Final = b"\x89CDX\r\n\x1a\n"
FORMAT_VERSION: Final = 1
KEY_BYTES: Final = 32
TAG_BYTES: Final = 16
NONCE_PREFIX_BYTES: Final = 7
MIN_CHUNK_SIZE: Final = 4 * 1024
MAX_CHUNK_SIZE: Final = 64 * 1024 * 1024
DEFAULT_CHUNK_SIZE: Final = 1024 * 1024
# A kbs://host:port/repo/type/tag?query is far shorter; the bound keeps parsing cheap.
MAX_KEY_ID_BYTES: Final = 1024
# The counter is 32 bits: chunks 0 .. 2**32 - 1 (16 TiB at the smallest chunk size).
MAX_CHUNK_INDEX: Final = 2**32 - 1

_NOT_FINAL: Final = b"\x00"
_FINAL: Final = b"\x01"
_U16: Final = struct.Struct(">H")
_U32: Final = struct.Struct(">I")
# magic, version, key id length, key id, chunk size, prefix.
FIXED_HEADER_BYTES: Final = len(MAGIC) + 1 + _U16.size + _U32.size + NONCE_PREFIX_BYTES

Progress = Callable[[int], None]


def _check_key_id(key_id: str) -> bytes:
    if not isinstance(key_id, str):
        raise InvalidKeyId("the key id is not a string")
    encoded = key_id.encode("utf-8")
    if not 0 < len(encoded) <= MAX_KEY_ID_BYTES:
        raise InvalidKeyId(f"the key id is 1 to {MAX_KEY_ID_BYTES} bytes, not {len(encoded)}")
    try:
        ResourceUri.parse(key_id)
    except InvalidResourcePath as e:
        raise InvalidKeyId(f"the key id is not a kbs:///repo/type/tag URI: {e}") from e
    return encoded


def _check_chunk_size(chunk_size: int) -> int:
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise ChunkSizeOutOfRange(
            f"chunk size {chunk_size} is outside [{MIN_CHUNK_SIZE}, {MAX_CHUNK_SIZE}]"
        )
    return chunk_size


@dataclass(frozen=True, slots=True)
class Header:
    """The header of a dataset file; its encoding is the associated data of every chunk."""

    key_id: str
    chunk_size: int
    nonce_prefix: bytes
    version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.version != FORMAT_VERSION:
            raise UnsupportedFormatVersion(f"dataset format version {self.version} is unknown")
        _check_key_id(self.key_id)
        _check_chunk_size(self.chunk_size)
        if len(self.nonce_prefix) != NONCE_PREFIX_BYTES:
            raise DatasetFormatError(f"the nonce prefix is {NONCE_PREFIX_BYTES} bytes")

    @classmethod
    def new(cls, key_id: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Header:
        """A header with a fresh random nonce prefix (one per file, never reused)."""
        return cls(key_id, chunk_size, secrets.token_bytes(NONCE_PREFIX_BYTES))

    @classmethod
    def from_bytes(cls, data: bytes) -> Header:
        """Parse exactly one header: ``data`` must end where the header ends."""
        view = memoryview(data)
        offset = 0

        def take(n: int) -> bytes:
            nonlocal offset
            part = bytes(view[offset : offset + n])
            offset += len(part)
            return part

        header = _parse(take)
        if offset != len(data):
            raise DatasetFormatError(f"{len(data) - offset} bytes after the header")
        return header

    @property
    def resource(self) -> ResourceUri:
        """The key id as a resource URI (where the broker holds the data key)."""
        return ResourceUri.parse(self.key_id)

    @property
    def encoded_size(self) -> int:
        return FIXED_HEADER_BYTES + len(self.key_id.encode("utf-8"))

    def to_bytes(self) -> bytes:
        key_id = self.key_id.encode("utf-8")
        return b"".join(
            (
                MAGIC,
                bytes((self.version,)),
                _U16.pack(len(key_id)),
                key_id,
                _U32.pack(self.chunk_size),
                self.nonce_prefix,
            )
        )


def _parse(take: Callable[[int], bytes]) -> Header:
    """The header, read field by field; each field is checked before the next is read, so a
    file of another kind or version fails on its magic or version, not on a later field."""
    magic = take(len(MAGIC))
    if magic != MAGIC[: len(magic)]:
        raise BadMagic("not a custodes dataset (bad magic)")
    if len(magic) < len(MAGIC):
        raise TruncatedHeader("the file ends inside the dataset header")

    def exactly(n: int, what: str) -> bytes:
        part = take(n)
        if len(part) != n:
            raise TruncatedHeader(f"the file ends inside the dataset header ({what})")
        return part

    version = exactly(1, "version")[0]
    if version != FORMAT_VERSION:
        raise UnsupportedFormatVersion(
            f"dataset format version {version} is unknown (this custodes reads {FORMAT_VERSION})"
        )
    (key_id_len,) = _U16.unpack(exactly(_U16.size, "key id length"))
    if not 0 < key_id_len <= MAX_KEY_ID_BYTES:
        raise InvalidKeyId(f"the key id is 1 to {MAX_KEY_ID_BYTES} bytes, not {key_id_len}")
    try:
        key_id = exactly(key_id_len, "key id").decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidKeyId("the key id is not UTF-8") from e
    _check_key_id(key_id)
    (chunk_size,) = _U32.unpack(exactly(_U32.size, "chunk size"))
    _check_chunk_size(chunk_size)
    prefix = exactly(NONCE_PREFIX_BYTES, "nonce prefix")
    return Header(key_id, chunk_size, prefix, version)


def read_header(src: BinaryIO) -> Header:
    """Read the header from ``src``, leaving it positioned at the first chunk."""
    return _parse(lambda n: _read_up_to(src, n))


def chunk_nonce(prefix: bytes, counter: int, *, final: bool) -> bytes:
    """``prefix(7) || counter(4, BE) || last(1)``; refuses counters beyond 32 bits."""
    if not 0 <= counter <= MAX_CHUNK_INDEX:
        raise CounterOverflow(f"chunk {counter} is beyond the 32-bit chunk counter")
    return prefix + _U32.pack(counter) + (_FINAL if final else _NOT_FINAL)


def encrypted_size(header: Header, plaintext_size: int) -> int:
    """The size of the dataset file that ``plaintext_size`` bytes encrypt to."""
    chunks = plaintext_size // header.chunk_size + 1  # + the final chunk (maybe empty)
    return header.encoded_size + plaintext_size + chunks * TAG_BYTES


def plaintext_size(header: Header, file_size: int) -> int:
    """The plaintext size of a dataset file of ``file_size`` bytes, from its layout alone.

    Raises what decryption would raise for a file that cannot have been written so
    (a guess from sizes only: the chunks are not authenticated here).
    """
    body = file_size - header.encoded_size
    if body < 0:
        raise TruncatedHeader("the file is shorter than its header")
    full, rest = divmod(body, header.chunk_size + TAG_BYTES)
    if rest == 0:
        raise MissingFinalChunk("the file ends at a chunk boundary without its final chunk")
    if rest < TAG_BYTES:
        raise TruncatedChunk("the file ends inside a chunk's tag")
    return full * header.chunk_size + rest - TAG_BYTES


def _aead(key: Secret[bytes]) -> AESGCM:
    raw = key.reveal()
    if len(raw) != KEY_BYTES:
        raise DatasetKeyError(f"a dataset key is exactly {KEY_BYTES} bytes")
    return AESGCM(raw)


def _read_up_to(src: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes, fewer only at the end of the stream (pipes return short reads)."""
    parts: list[bytes] = []
    remaining = n
    while remaining > 0:
        part = src.read(remaining)
        if part is None:
            raise DatasetError("the input is a non-blocking stream; use a blocking one")
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def _fill(src: BinaryIO, buf: memoryview) -> int:
    """Fill ``buf`` from ``src``; returns how many bytes came (fewer only at the end)."""
    readinto = getattr(src, "readinto", None)
    filled = 0
    total = len(buf)
    while filled < total:
        if readinto is not None:
            n = readinto(buf[filled:])
        else:
            part = src.read(total - filled)
            n = len(part)
            buf[filled : filled + n] = part
        if not n:  # 0 at the end; None from a non-blocking stream with nothing ready
            if n is None:
                raise DatasetError("the input is a non-blocking stream; use a blocking one")
            break
        filled += n
    return filled


def _write_all(dst: BinaryIO, data: memoryview) -> None:
    # Raw (unbuffered) files may write less than asked; buffered ones write all or raise.
    while len(data):
        n = dst.write(data)
        if n is None:
            raise DatasetError("the output is a non-blocking stream; use a blocking one")
        data = data[n:]


def encrypt_stream(
    src: BinaryIO,
    dst: BinaryIO,
    key: Secret[bytes],
    key_id: str,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: Progress | None = None,
) -> Header:
    """Encrypt everything ``src`` holds into ``dst`` as one dataset; returns its header.

    ``progress`` is called after each chunk with the number of plaintext bytes that chunk
    held (an increment, not a running total).
    """
    aead = _aead(key)
    header = Header.new(key_id, chunk_size)
    aad = header.to_bytes()
    _write_all(dst, memoryview(aad))
    plain = bytearray(chunk_size)
    sealed = bytearray(chunk_size + TAG_BYTES)
    plain_view, sealed_view = memoryview(plain), memoryview(sealed)
    counter = 0
    while True:
        n = _fill(src, plain_view)
        final = n < chunk_size  # a full chunk is never final: the final one may be empty
        nonce = chunk_nonce(header.nonce_prefix, counter, final=final)
        aead.encrypt_into(nonce, plain_view[:n], aad, sealed_view[: n + TAG_BYTES])
        _write_all(dst, sealed_view[: n + TAG_BYTES])
        if progress is not None:
            progress(n)
        if final:
            return header
        counter += 1


def decrypt_stream(
    src: BinaryIO,
    dst: BinaryIO,
    key: Secret[bytes],
    *,
    expected_key_id: str | None = None,
    progress: Progress | None = None,
) -> Header:
    """Decrypt one dataset from ``src`` into ``dst``; returns its header.

    Each chunk is authenticated before its plaintext is written, but a failure in a later
    chunk comes after earlier chunks were written: when this raises, ``dst`` holds a prefix
    of the plaintext that the caller must discard (``files.decrypt_path`` deletes it).
    ``expected_key_id`` refuses a file written under another key id before decrypting
    anything. ``progress`` is called after each chunk with its plaintext byte count.
    """
    header = read_header(src)
    if expected_key_id is not None and header.key_id != expected_key_id:
        raise KeyIdMismatch(
            f"the dataset was encrypted under {header.key_id!r}, not {expected_key_id!r}"
        )
    aead = _aead(key)
    aad = header.to_bytes()
    size = header.chunk_size
    sealed = bytearray(size + TAG_BYTES)
    plain = bytearray(size)
    sealed_view, plain_view = memoryview(sealed), memoryview(plain)
    counter = 0
    while True:
        n = _fill(src, sealed_view)
        if n == 0:
            where = f"chunk {counter - 1}" if counter else "the header"
            raise MissingFinalChunk(f"the file ends after {where}, without a final chunk")
        if n < TAG_BYTES:
            raise TruncatedChunk(f"chunk {counter} is {n} bytes, too short for its tag")
        final = n < size + TAG_BYTES
        nonce = chunk_nonce(header.nonce_prefix, counter, final=final)
        chunk = sealed_view[:n]
        out = plain_view[: n - TAG_BYTES]
        try:
            aead.decrypt_into(nonce, chunk, aad, out)
        except InvalidTag:
            plain[:] = bytes(size)  # do not keep unauthenticated plaintext around
            _diagnose(aead, header, aad, counter, chunk)
        _write_all(dst, out)
        if progress is not None:
            progress(len(out))
        if final:
            if _read_up_to(src, 1):
                raise TrailingData("bytes follow the final chunk")
            return header
        counter += 1


def _diagnose(aead: AESGCM, header: Header, aad: bytes, counter: int, chunk: memoryview) -> None:
    """Raise the error for a chunk that failed authentication.

    One case can be told apart cheaply: bytes appended after an empty final chunk (its
    16-byte tag is the start of this window). Anything else is one authentication failure.
    """
    try:
        nonce = chunk_nonce(header.nonce_prefix, counter, final=True)
        aead.decrypt(nonce, bytes(chunk[:TAG_BYTES]), aad)
    except InvalidTag:
        pass
    else:
        raise TrailingData(f"bytes follow the (empty) final chunk {counter}")
    raise ChunkAuthenticationFailed(
        f"chunk {counter} does not authenticate: the file was changed, cut, reordered or "
        "mixed with another, or the key is wrong"
    )
