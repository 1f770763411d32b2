"""The two ways init-data travels from the pod spec into the guest, both ways round.

**Pod annotation** ``io.katacontainers.config.hypervisor.cc_init_data``: standard base64
(RFC 4648 §4 alphabet ``+/``, ``=`` padding, no line breaks) of gzip of the TOML bytes. This
is what ``gzip | base64 -w0`` makes. The gzip member written here has a fixed header (no file
name, mtime 0, XFL 0, OS 3 = Unix, as ``gzip`` writes when reading stdin) and a zlib level-6
deflate body, so with stock zlib the value equals that of the shell pipeline byte for byte
(the upstream annotation vectors are reproduced exactly). Decoding is strict: padded standard
base64 only, exactly one gzip member with nothing after it.

**Block image** (the read-only virtio-blk disk the Kata runtime attaches; the agent scans
``/dev/vd*``/``/dev/sd*`` for it)::

    bytes 0..8    b"initdata"            magic
    bytes 8..16   u64 little-endian      length N of the gzip member
    bytes 16..16+N                       gzip(TOML)
    then zero bytes up to a multiple of 512 (none when 16+N already is one)

The gzip header here says OS 255 ("unknown"), as the Go and Rust writers of the upstream
runtime produce. Decoding checks the magic, that N fits inside the image, that the member is
intact and complete, and (custodes is stricter than the upstream agent here) that every byte
after it is zero and the image ends on a sector boundary.

Limits: the decompressed TOML is capped at :data:`~custodes.initdata.format.MAX_INITDATA_BYTES`
while inflating (a gzip bomb stops there, it is never inflated in full); an annotation value is
capped at 256 KiB, the Kubernetes limit on *all* annotations of an object together; an image at
:data:`MAX_IMAGE_BYTES`.

``pack_*``/``unpack_*`` handle the container only (any payload); ``encode_*``/``decode_*``
add the init-data document check on top, so nothing that upstream would reject (or crash on,
as the Go runtime does on an unknown algorithm) is ever produced or accepted.
"""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO, Final

from custodes._internal.b64 import b64std_decode, b64std_encode
from custodes.initdata.errors import (
    AnnotationBase64Error,
    GzipError,
    ImageMagicError,
    ImagePaddingError,
    ImageTruncated,
    InitDataTooLarge,
)
from custodes.initdata.format import MAX_INITDATA_BYTES, InitData

ANNOTATION_KEY: Final = "io.katacontainers.config.hypervisor.cc_init_data"
# Kubernetes' TotalAnnotationSizeLimitB: keys and values of all annotations of an object.
MAX_ANNOTATION_BYTES: Final = 256 * 1024
IMAGE_MAGIC: Final = b"initdata"
SECTOR: Final = 512
_HEADER: Final = struct.Struct("<8sQ")
# gzip of MAX_INITDATA_BYTES of incompressible data is a little larger than the input; this
# leaves room for that plus header and padding, and no more.
MAX_IMAGE_BYTES: Final = MAX_INITDATA_BYTES + 64 * 1024

_DEFLATE_LEVEL: Final = 6
_OS_UNIX: Final = 3
_OS_UNKNOWN: Final = 255


def _gzip(payload: bytes, *, os_byte: int) -> bytes:
    # Header by hand so the bytes never depend on the clock or a file name:
    # ID1 ID2 CM=deflate FLG=0 MTIME=0 XFL=0 OS.
    header = bytes((0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, os_byte))
    deflate = zlib.compressobj(_DEFLATE_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = deflate.compress(payload) + deflate.flush()
    trailer = struct.pack("<II", zlib.crc32(payload), len(payload) & 0xFFFFFFFF)
    return header + body + trailer


def gunzip(data: bytes, *, limit: int = MAX_INITDATA_BYTES) -> bytes:
    """Inflate exactly one gzip member, refusing more than ``limit`` bytes of output.

    ``GzipError`` if ``data`` is not gzip, is corrupt (zlib checks the CRC-32 and length in
    the trailer), stops early, or has anything after the member (a second member included:
    the upstream agent would not read it). ``InitDataTooLarge`` past ``limit``."""
    inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip wrapper only
    try:
        out = inflate.decompress(data, limit + 1)
    except zlib.error as e:
        raise GzipError(f"not a valid gzip stream: {e}") from e
    if len(out) > limit:
        raise InitDataTooLarge(f"gzip payload inflates to more than {limit} bytes")
    if not inflate.eof:
        raise GzipError("gzip stream is truncated")
    if inflate.unused_data:
        raise GzipError(
            f"{len(inflate.unused_data)} bytes follow the gzip member (a second member?)"
        )
    return out


# --- annotation ---------------------------------------------------------------------------


def pack_annotation(payload: bytes) -> str:
    """``base64(gzip(payload))`` as the annotation value (no document check)."""
    if len(payload) > MAX_INITDATA_BYTES:
        raise InitDataTooLarge(f"init-data is larger than {MAX_INITDATA_BYTES} bytes")
    value = b64std_encode(_gzip(payload, os_byte=_OS_UNIX))
    if len(value) > MAX_ANNOTATION_BYTES:
        raise InitDataTooLarge(
            f"the annotation value would be {len(value)} bytes; Kubernetes allows "
            f"{MAX_ANNOTATION_BYTES} bytes for all annotations of an object"
        )
    return value


def unpack_annotation(value: str) -> bytes:
    """The payload inside an annotation value (no document check)."""
    if len(value) > MAX_ANNOTATION_BYTES:
        raise InitDataTooLarge(
            f"annotation value is {len(value)} bytes, more than {MAX_ANNOTATION_BYTES}"
        )
    try:
        compressed = b64std_decode(value)
    except ValueError as e:
        raise AnnotationBase64Error(
            f"annotation value is not padded standard base64 on one line: {e}"
        ) from e
    return gunzip(compressed)


def encode_annotation(init_data: InitData) -> str:
    """The annotation value carrying ``init_data``'s exact bytes."""
    return pack_annotation(init_data.raw_bytes)


def decode_annotation(value: str) -> InitData:
    """The init-data document inside an annotation value."""
    return InitData.from_bytes(unpack_annotation(value))


# --- block image --------------------------------------------------------------------------


def pack_image(payload: bytes) -> bytes:
    """The block image carrying ``payload`` (no document check)."""
    if len(payload) > MAX_INITDATA_BYTES:
        raise InitDataTooLarge(f"init-data is larger than {MAX_INITDATA_BYTES} bytes")
    compressed = _gzip(payload, os_byte=_OS_UNKNOWN)
    body = _HEADER.pack(IMAGE_MAGIC, len(compressed)) + compressed
    return body + bytes(-len(body) % SECTOR)


def _check_header(header: bytes, available: int | None) -> int:
    """The gzip length declared by ``header``; ``available`` is the image size when known."""
    if len(header) < _HEADER.size:
        raise ImageTruncated(
            f"image is {len(header)} bytes, shorter than its {_HEADER.size}-byte header"
        )
    magic, length = _HEADER.unpack(header)
    if magic != IMAGE_MAGIC:
        raise ImageMagicError(f"image starts with {magic!r}, not {IMAGE_MAGIC!r}")
    if length > MAX_IMAGE_BYTES - _HEADER.size:
        raise InitDataTooLarge(f"image declares a {length}-byte payload, more than allowed")
    if available is not None and _HEADER.size + length > available:
        raise ImageTruncated(
            f"image declares a {length}-byte payload but holds only "
            f"{available - _HEADER.size} bytes after the header"
        )
    return int(length)


def unpack_image(image: bytes) -> bytes:
    """The payload inside a whole image file (no document check).

    Everything after the gzip member must be zero and the image a whole number of sectors
    (upstream's agent ignores what follows the member; custodes refuses to)."""
    if len(image) > MAX_IMAGE_BYTES:
        raise InitDataTooLarge(f"image is {len(image)} bytes, more than {MAX_IMAGE_BYTES}")
    length = _check_header(image[: _HEADER.size], len(image))
    end = _HEADER.size + length
    payload = gunzip(image[_HEADER.size : end])
    if len(image) % SECTOR:
        raise ImagePaddingError(
            f"image is {len(image)} bytes, not a whole number of {SECTOR}-byte sectors"
        )
    if image[end:].count(0) != len(image) - end:
        raise ImagePaddingError("image has non-zero bytes after the gzip member")
    return payload


def read_image(stream: BinaryIO) -> bytes:
    """The payload of an image at the start of ``stream`` (e.g. an open block device),
    reading only the header, the member and the rest of its last sector, which must be zero.
    A device is larger than the image, so what lies after that sector is not looked at."""
    header = stream.read(_HEADER.size)
    length = _check_header(header, None)
    compressed = stream.read(length)
    if len(compressed) != length:
        raise ImageTruncated(
            f"image declares a {length}-byte payload but holds only {len(compressed)} bytes"
        )
    payload = gunzip(compressed)
    pad = -(_HEADER.size + length) % SECTOR
    padding = stream.read(pad)
    if len(padding) != pad:
        raise ImagePaddingError("image ends before its last sector does")
    if padding.count(0) != pad:
        raise ImagePaddingError("image has non-zero bytes after the gzip member")
    return payload


def encode_image(init_data: InitData) -> bytes:
    """The block image carrying ``init_data``'s exact bytes."""
    return pack_image(init_data.raw_bytes)


def decode_image(image: bytes) -> InitData:
    """The init-data document inside a whole image file."""
    return InitData.from_bytes(unpack_image(image))
