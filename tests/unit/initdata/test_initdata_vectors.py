"""Every upstream init-data vector, round-tripped annotation <-> TOML <-> digest <-> block
image, with its SNP / TDX / TPM binding forms against ``derived-vectors.json`` (TPM PCR 8 on a
real swtpm, since upstream gives no PCR 8 values)."""

from __future__ import annotations

import io
import json
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pytest

from custodes._internal.b64 import b64std_decode, b64std_encode
from custodes.initdata.binding import binding_value
from custodes.initdata.build import build_document
from custodes.initdata.encoding import (
    IMAGE_MAGIC,
    SECTOR,
    decode_annotation,
    decode_image,
    encode_annotation,
    encode_image,
    pack_image,
    read_image,
    unpack_annotation,
    unpack_image,
)
from custodes.initdata.errors import InitDataError, InitDataNotBindable
from custodes.initdata.format import InitData
from custodes.types.tee import Tee
from swtpm import running_swtpm

GC = "guest-components"
INTEGRATION = "trustee/integration-tests/tests/init-data-with-policy.toml"
# Computed here (upstream gives no digest for this vector); also in test_initdata.py.
INTEGRATION_SHA256 = "0deccded0d87ec44702c7330fac3eb936b68dcca5c9f6b5df1fb3480c0b525ac"
# The annotation writer reproduces `gzip | base64 -w0` only with stock zlib's deflate.
STOCK_ZLIB = "ng" not in zlib.ZLIB_RUNTIME_VERSION


def _derived(vectors: Path) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads((vectors / GC / "derived-vectors.json").read_text())[
        "initdata"
    ]
    return entries


def _toml_entries(vectors: Path) -> list[dict[str, Any]]:
    return [e for e in _derived(vectors) if str(e.get("file", "")).endswith(".toml")]


def _all_toml_files(vectors: Path) -> list[Path]:
    return [vectors / GC / e["file"] for e in _toml_entries(vectors)] + [vectors / INTEGRATION]


def test_vector_inventory(vectors: Path) -> None:
    # Guards the loops below against silently iterating over nothing.
    assert len(_toml_entries(vectors)) == 4
    assert len([e for e in _derived(vectors) if "annotation_file" in e]) == 2
    assert len([e for e in _derived(vectors) if "initdata_block_image" in e]) == 1


def test_digests_equal_derived_vectors(vectors: Path) -> None:
    for entry in _toml_entries(vectors):
        raw = (vectors / GC / entry["file"]).read_bytes()
        init_data = InitData.from_bytes(raw)
        assert len(raw) == entry["bytes"]
        assert init_data.algorithm == entry["algorithm"]
        assert init_data.digest.hex() == entry["digest_hex"]
        assert b64std_encode(init_data.digest) == entry["digest_b64"]
        assert init_data.raw_bytes == raw
    integration = InitData.from_bytes((vectors / INTEGRATION).read_bytes())
    assert integration.digest.hex() == INTEGRATION_SHA256


def test_every_toml_round_trips_through_annotation_and_image(vectors: Path) -> None:
    for path in _all_toml_files(vectors):
        raw = path.read_bytes()
        original = InitData.from_bytes(raw)

        value = encode_annotation(original)
        from_annotation = decode_annotation(value)
        assert from_annotation == original and from_annotation.raw_bytes == raw

        image = encode_image(from_annotation)
        assert image[:8] == IMAGE_MAGIC and len(image) % SECTOR == 0
        from_image = decode_image(image)
        assert from_image == original and from_image.digest == original.digest

        # A block device is larger than the image: the streaming reader stops at its sector.
        device = io.BytesIO(image + b"\xa5" * (3 * SECTOR))
        assert read_image(device) == raw
        assert device.tell() == len(image)

        # And back to the annotation, unchanged.
        assert encode_annotation(from_image) == value


def test_annotation_vectors_decode_to_their_toml(vectors: Path) -> None:
    for entry in [e for e in _derived(vectors) if "annotation_file" in e]:
        value = (vectors / GC / entry["annotation_file"]).read_text().strip()
        expected = (vectors / GC / entry["decodes_to"]).read_bytes()
        assert entry["decoded_equals_file"] is True
        init_data = decode_annotation(value)
        assert init_data.raw_bytes == expected
        if STOCK_ZLIB:
            # Byte-identical to the value users make with `gzip | base64 -w0`.
            assert encode_annotation(init_data) == value
        # gzip header as `gzip` writes from stdin: no name, mtime 0, XFL 0, OS 3 (Unix).
        assert b64std_decode(value)[:10] == bytes.fromhex("1f8b0800000000000003")
        assert b64std_decode(encode_annotation(init_data))[:10] == b64std_decode(value)[:10]


def test_kata_block_image_vector(vectors: Path) -> None:
    (entry,) = [e for e in _derived(vectors) if "initdata_block_image" in e]
    image = (vectors / GC / entry["initdata_block_image"]).read_bytes()
    assert len(image) == entry["size"] == SECTOR
    assert image[:8].decode() == entry["magic"]
    assert int.from_bytes(image[8:16], "little") == entry["gzip_len_le_u64"]
    payload = unpack_image(image)
    assert payload.decode() == entry["payload_gunzipped"] == entry["expected_by_kata_unit_test"]
    assert read_image(io.BytesIO(image)) == payload
    # Its payload is a test string, not an init-data document.
    with pytest.raises(InitDataError):
        decode_image(image)

    ours = pack_image(payload)
    assert unpack_image(ours) == payload
    assert len(ours) == SECTOR and ours[:8] == image[:8]
    # Same gzip header as the upstream writer (mtime 0, XFL 0, OS 255); the deflate bodies of
    # two compressors may differ, which is why the digest never covers compressed bytes.
    assert ours[16:26] == image[16:26]


def test_snp_and_tdx_forms_equal_derived_vectors(vectors: Path) -> None:
    for entry in _toml_entries(vectors):
        init_data = InitData.from_bytes((vectors / GC / entry["file"]).read_bytes())
        tdx = binding_value(Tee.TDX, init_data.digest)
        assert b64std_encode(tdx) == entry["tdx_mrconfigid_48_b64"]
        upstream_snp = b64std_decode(entry["snp_hostdata_32_b64"])
        if init_data.algorithm == "sha256":
            assert binding_value(Tee.SNP, init_data.digest) == upstream_snp
        else:
            # Upstream truncates a sha384 digest into HOST_DATA; custodes refuses to.
            assert upstream_snp == init_data.digest[:32]
            with pytest.raises(InitDataNotBindable):
                binding_value(Tee.SNP, init_data.digest)


def test_sha512_documents_are_refused_by_every_binding(vectors: Path) -> None:
    # No upstream vector uses sha512: the same entries as the website example, rebuilt.
    example = InitData.from_bytes(
        (vectors / GC / "initdata/website-initdata-example.toml").read_bytes()
    )
    init_data = build_document(example.data, "sha512")
    assert len(init_data.digest) == 64
    for tee in (Tee.SNP, Tee.TDX, Tee.TPM):
        with pytest.raises(InitDataNotBindable):
            binding_value(tee, init_data.digest)


def _pcr8_after_extend(tcti: str, digest: bytes, out: Path) -> bytes:
    subprocess.run(
        ["tpm2_pcrextend", f"8:sha256={digest.hex()}", "--tcti", tcti],
        check=True,
        capture_output=True,
        timeout=30,
    )
    subprocess.run(
        ["tpm2_pcrread", "sha256:8", "-o", str(out), "--tcti", tcti],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return out.read_bytes()


def test_tpm_pcr8_forms_on_a_real_tpm(vectors: Path, tmp_path: Path) -> None:
    documents = [InitData.from_bytes(p.read_bytes()) for p in _all_toml_files(vectors)]
    sha256_docs = [d for d in documents if d.algorithm == "sha256"]
    assert len(sha256_docs) == 3
    with running_swtpm() as tpm:
        for init_data in sha256_docs:
            tpm.reset()  # PCR 8 back to zero, as at boot
            observed = _pcr8_after_extend(tpm.tcti, init_data.digest, tmp_path / "pcr8")
            assert len(observed) == 32
            for tee in (Tee.TPM, Tee.AZ_SNP_VTPM, Tee.AZ_TDX_VTPM):
                assert binding_value(tee, init_data.digest) == observed
    for init_data in documents:
        if init_data.algorithm != "sha256":
            with pytest.raises(InitDataNotBindable):
                binding_value(Tee.TPM, init_data.digest)


def test_unpack_annotation_of_vectors_is_the_raw_payload(vectors: Path) -> None:
    value = (vectors / GC / "initdata/website-runtime-attestation-annotation.b64").read_text()
    raw = unpack_annotation(value.strip())
    path = vectors / GC / "initdata/website-runtime-attestation-annotation.decoded.toml"
    assert raw == path.read_bytes()
