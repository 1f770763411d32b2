"""Annotation and block-image encodings: layout, determinism, limits, and one negative per
refusal (each asserting its error class)."""

from __future__ import annotations

import base64
import gzip
import io
import os
import struct
import zlib

import pytest

from custodes._internal.b64 import b64std_encode
from custodes.initdata.encoding import (
    MAX_ANNOTATION_BYTES,
    MAX_IMAGE_BYTES,
    SECTOR,
    decode_annotation,
    decode_image,
    encode_annotation,
    encode_image,
    gunzip,
    pack_annotation,
    pack_image,
    read_image,
    unpack_annotation,
    unpack_image,
)
from custodes.initdata.errors import (
    AnnotationBase64Error,
    GzipError,
    ImageMagicError,
    ImagePaddingError,
    ImageTruncated,
    InitDataEncodingError,
    InitDataError,
    InitDataTooLarge,
)
from custodes.initdata.format import MAX_INITDATA_BYTES, InitData

DOC = b'version = "0.1.0"\nalgorithm = "sha256"\n\n[data]\n"note" = "hi"\n'


def _raw_gzip(payload: bytes) -> bytes:
    return zlib.compress(payload, 6, wbits=31)


def _image(compressed: bytes, *, magic: bytes = b"initdata", length: int | None = None) -> bytes:
    body = magic + struct.pack("<Q", len(compressed) if length is None else length) + compressed
    return body + bytes(-len(body) % SECTOR)


# --- layout and determinism ---------------------------------------------------------------


def test_annotation_layout_and_determinism() -> None:
    init_data = InitData.from_bytes(DOC)
    value = encode_annotation(init_data)
    assert value == encode_annotation(InitData.from_bytes(DOC))  # no clock, no file name
    assert value.isascii() and "\n" not in value and len(value) % 4 == 0
    assert gzip.decompress(base64.b64decode(value, validate=True)) == DOC
    assert decode_annotation(value) == init_data


def test_image_layout_and_padding() -> None:
    for size in (0, 1, 100, 470, 471, 472, 1000, 5000):
        payload = os.urandom(size)  # incompressible: the gzip length walks across sectors
        image = pack_image(payload)
        (length,) = struct.unpack("<Q", image[8:16])
        assert image[:8] == b"initdata"
        assert len(image) % SECTOR == 0
        assert 0 <= len(image) - (16 + length) < SECTOR  # padding: only up to the sector
        assert image[16 + length :] == bytes(len(image) - 16 - length)
        assert gzip.decompress(image[16 : 16 + length]) == payload
        assert unpack_image(image) == payload == read_image(io.BytesIO(image))
        assert pack_image(payload) == image


def test_image_without_padding_when_sector_aligned() -> None:
    # Build a gzip member that ends exactly on the sector: a stored (level 0) deflate block.
    for size in range(400, 520):
        compressed = zlib.compress(b"x" * size, 0, wbits=31)
        if (16 + len(compressed)) % SECTOR == 0:
            break
    else:
        pytest.fail("no aligned size found")
    image = _image(compressed)
    assert len(image) == 16 + len(compressed)
    assert unpack_image(image) == b"x" * size
    assert read_image(io.BytesIO(image)) == b"x" * size


def test_document_round_trip_through_image() -> None:
    init_data = InitData.from_bytes(DOC)
    assert decode_image(encode_image(init_data)).raw_bytes == DOC


def test_any_gzip_member_is_accepted() -> None:
    # Users may run `gzip file`, which records a name and an mtime: still one member.
    buf = io.BytesIO()
    with gzip.GzipFile(filename="initdata.toml", mode="wb", fileobj=buf, mtime=1_700_000_000) as f:
        f.write(DOC)
    assert decode_annotation(b64std_encode(buf.getvalue())).raw_bytes == DOC


# --- annotation negatives -----------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        b64std_encode(_raw_gzip(DOC)).rstrip("="),  # padding dropped
        b64std_encode(_raw_gzip(DOC)).replace("+", "-").replace("/", "_") + "-_",  # URL-safe
        b64std_encode(_raw_gzip(DOC))[:40] + "\n" + b64std_encode(_raw_gzip(DOC))[40:],
        " " + b64std_encode(_raw_gzip(DOC)),
        "H4sI*AAA",
    ],
)
def test_bad_base64(value: str) -> None:
    with pytest.raises(AnnotationBase64Error):
        unpack_annotation(value)


def test_not_gzip() -> None:
    with pytest.raises(GzipError):
        decode_annotation(b64std_encode(DOC))


def test_zlib_is_not_gzip() -> None:
    with pytest.raises(GzipError):
        decode_annotation(b64std_encode(zlib.compress(DOC)))


def test_corrupt_gzip_crc() -> None:
    data = bytearray(_raw_gzip(DOC))
    data[-8] ^= 0xFF  # CRC-32 in the trailer
    with pytest.raises(GzipError):
        decode_annotation(b64std_encode(bytes(data)))


def test_corrupt_deflate_body() -> None:
    data = bytearray(_raw_gzip(DOC))
    data[12] ^= 0xFF
    with pytest.raises(GzipError):
        decode_annotation(b64std_encode(bytes(data)))


def test_truncated_gzip() -> None:
    with pytest.raises(GzipError):
        decode_annotation(b64std_encode(_raw_gzip(DOC)[:-4]))
    with pytest.raises(GzipError):
        decode_annotation("")  # valid base64 of nothing: not a gzip member


def test_data_after_gzip_member() -> None:
    with pytest.raises(GzipError):
        decode_annotation(b64std_encode(_raw_gzip(DOC) + b"\x00"))


def test_second_gzip_member() -> None:
    with pytest.raises(GzipError):
        decode_annotation(b64std_encode(_raw_gzip(DOC) + _raw_gzip(b"more")))


def test_gzip_bomb_stops_at_the_cap() -> None:
    bomb = _raw_gzip(bytes(64 * MAX_INITDATA_BYTES))  # 64 MiB of zeros in ~64 KiB
    assert len(bomb) < MAX_ANNOTATION_BYTES
    with pytest.raises(InitDataTooLarge):
        unpack_annotation(b64std_encode(bomb))
    with pytest.raises(InitDataTooLarge):
        unpack_image(_image(bomb))
    with pytest.raises(InitDataTooLarge):
        gunzip(_raw_gzip(b"x" * 101), limit=100)


def test_payload_at_the_cap_is_accepted() -> None:
    payload = b"#" * MAX_INITDATA_BYTES
    assert unpack_annotation(pack_annotation(payload)) == payload
    with pytest.raises(InitDataTooLarge):
        pack_annotation(payload + b"#")
    with pytest.raises(InitDataTooLarge):
        pack_image(payload + b"#")


def test_annotation_value_too_long() -> None:
    with pytest.raises(InitDataTooLarge):
        unpack_annotation("A" * (MAX_ANNOTATION_BYTES + 4))


def test_annotation_that_would_exceed_the_kubernetes_limit() -> None:
    with pytest.raises(InitDataTooLarge):
        pack_annotation(os.urandom(200 * 1024))  # incompressible: > 256 KiB once in base64


def test_annotation_with_invalid_document() -> None:
    with pytest.raises(InitDataError):
        decode_annotation(pack_annotation(b"not = = toml"))
    with pytest.raises(InitDataError):
        decode_annotation(pack_annotation(b'version = "0.2.0"\nalgorithm = "sha256"\n[data]\n'))


def test_encoding_errors_are_init_data_errors() -> None:
    for cls in (AnnotationBase64Error, GzipError, ImageMagicError, ImageTruncated):
        assert issubclass(cls, InitDataEncodingError)
    assert issubclass(ImagePaddingError, InitDataEncodingError)
    assert issubclass(InitDataEncodingError, InitDataError)


# --- image negatives ----------------------------------------------------------------------


def test_wrong_magic() -> None:
    with pytest.raises(ImageMagicError):
        unpack_image(_image(_raw_gzip(DOC), magic=b"INITDATA"))
    with pytest.raises(ImageMagicError):
        read_image(io.BytesIO(_image(_raw_gzip(DOC), magic=b"initdat\x00")))


@pytest.mark.parametrize("size", [0, 8, 15])
def test_shorter_than_header(size: int) -> None:
    image = pack_image(DOC)[:size]
    with pytest.raises(ImageTruncated):
        unpack_image(image)
    with pytest.raises(ImageTruncated):
        read_image(io.BytesIO(image))


def test_length_beyond_the_data() -> None:
    compressed = _raw_gzip(DOC)
    image = _image(compressed, length=SECTOR)  # declared longer than the one-sector image
    with pytest.raises(ImageTruncated):
        unpack_image(image)


def test_truncated_image_file() -> None:
    image = pack_image(os.urandom(1000))
    with pytest.raises(ImageTruncated):
        unpack_image(image[:SECTOR])
    with pytest.raises(ImageTruncated):
        read_image(io.BytesIO(image[:SECTOR]))


def test_declared_length_beyond_the_cap() -> None:
    header = b"initdata" + struct.pack("<Q", 2**64 - 1)
    with pytest.raises(InitDataTooLarge):
        unpack_image(header + bytes(SECTOR - 16))
    with pytest.raises(InitDataTooLarge):
        read_image(io.BytesIO(header))


def test_image_too_large() -> None:
    image = pack_image(DOC)
    with pytest.raises(InitDataTooLarge):
        unpack_image(image + bytes(MAX_IMAGE_BYTES))


def test_bad_gzip_inside_image() -> None:
    with pytest.raises(GzipError):
        unpack_image(_image(b"plain text, not gzip"))
    with pytest.raises(GzipError):
        read_image(io.BytesIO(_image(_raw_gzip(DOC)[:-1])))


def test_non_zero_padding() -> None:
    image = bytearray(pack_image(DOC))
    image[-1] = 1
    with pytest.raises(ImagePaddingError):
        unpack_image(bytes(image))
    with pytest.raises(ImagePaddingError):
        read_image(io.BytesIO(bytes(image)))


def test_non_zero_bytes_in_a_later_sector() -> None:
    image = pack_image(DOC) + bytes(SECTOR - 1) + b"\x01"
    with pytest.raises(ImagePaddingError):
        unpack_image(image)
    assert read_image(io.BytesIO(image)) == DOC  # a device reader does not look there


def test_image_not_a_whole_number_of_sectors() -> None:
    image = pack_image(DOC)
    with pytest.raises(ImagePaddingError):
        unpack_image(image[:-1])
    with pytest.raises(ImagePaddingError):
        unpack_image(image + b"\x00")
    with pytest.raises(ImagePaddingError):
        read_image(io.BytesIO(image[:-1]))
