"""The HCL report parser (hcl.py) on the upstream Azure vectors, and its refusals."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from az_test_helpers import (
    SNP_IN_HCL,
    flip,
    var_data,
    vector_dir,
    with_runtime_json,
    with_var_data,
)
from cryptography.hazmat.primitives.asymmetric import rsa

from custodes._internal.b64 import b64url_encode
from custodes.attestation.verifiers.azure.errors import HclBindingMismatch, HclReportInvalid
from custodes.attestation.verifiers.azure.hcl import (
    REQUEST_DATA_OFFSET,
    HclReport,
    HwReportType,
    RuntimeData,
    check_var_data_binding,
)
from custodes.attestation.verifiers.snp.report import SnpReport


@pytest.fixture(scope="module")
def snp_hcl(vectors: Path) -> bytes:
    return (vector_dir(vectors) / "az-snp-vtpm" / "hcl-report.bin").read_bytes()


@pytest.fixture(scope="module")
def tdx_hcl(vectors: Path) -> bytes:
    return (vector_dir(vectors) / "az-tdx-vtpm" / "hcl-report.bin").read_bytes()


def _runtime(hcl: bytes) -> dict[str, object]:
    runtime: dict[str, object] = json.loads(var_data(hcl))
    return runtime


# --- the vectors ---------------------------------------------------------------------


def test_az_hcl_snp_vector_layout(snp_hcl: bytes) -> None:
    hcl = HclReport.from_bytes(snp_hcl)
    assert (hcl.version, hcl.report_type, hcl.hash_type) == (1, HwReportType.SNP, 1)
    assert len(hcl.raw) == 0x92A and len(hcl.var_data) == 1110
    assert hcl.slack == 2600 - 0x92A  # the 2600-byte NV index's zero tail
    assert len(hcl.hw_report) == 1184
    assert hcl.var_data.startswith(b'{"keys":[{"kid":"HCLAkPub"')


def test_az_hcl_snp_report_binds_var_data(snp_hcl: bytes) -> None:
    hcl = HclReport.from_bytes(snp_hcl)
    report = SnpReport.from_bytes(hcl.hw_report)
    assert report.report_data[:32] == hcl.var_data_sha256
    check_var_data_binding(hcl, report.report_data)


def test_az_hcl_tdx_vector_layout(tdx_hcl: bytes) -> None:
    hcl = HclReport.from_bytes(tdx_hcl)
    assert (hcl.version, hcl.report_type) == (2, HwReportType.TDX)
    assert len(hcl.hw_report) == 1024 and hcl.hw_report[0] == 0x81
    assert len(hcl.var_data) == 1201


def test_az_hcl_runtime_data_ak_and_user_data(snp_hcl: bytes) -> None:
    runtime = HclReport.from_bytes(snp_hcl).runtime_data
    assert isinstance(runtime.ak_public, rsa.RSAPublicKey)
    assert runtime.ak_public.key_size == 2048
    assert runtime.ak_public.public_numbers().e == 65537
    assert runtime.user_data == "00" * 64
    assert [k["kid"] for k in runtime.keys] == ["HCLAkPub", "HCLEkPub"]


def test_az_hcl_binding_mismatch_on_other_report_data(snp_hcl: bytes) -> None:
    hcl = HclReport.from_bytes(snp_hcl)
    report = SnpReport.from_bytes(hcl.hw_report)
    with pytest.raises(HclBindingMismatch):
        check_var_data_binding(hcl, flip(report.report_data, 0))
    with pytest.raises(HclBindingMismatch):
        check_var_data_binding(hcl, report.report_data[:32])


# --- exact lengths --------------------------------------------------------------------


def test_az_hcl_inserted_byte_is_refused(snp_hcl: bytes) -> None:
    for offset in (0x10, SNP_IN_HCL + 0x100, REQUEST_DATA_OFFSET + 24):
        with pytest.raises(HclReportInvalid):
            HclReport.from_bytes(snp_hcl[:offset] + b"\x01" + snp_hcl[offset:])


def test_az_hcl_missing_byte_is_refused(snp_hcl: bytes) -> None:
    for offset in (0x10, SNP_IN_HCL + 0x100, REQUEST_DATA_OFFSET + 24):
        with pytest.raises(HclReportInvalid):
            HclReport.from_bytes(snp_hcl[:offset] + snp_hcl[offset + 1 :])


def test_az_hcl_truncated_report_is_refused(snp_hcl: bytes) -> None:
    for size in (0, 0x20, REQUEST_DATA_OFFSET + 10, 0x92A - 1):
        with pytest.raises(HclReportInvalid):
            HclReport.from_bytes(snp_hcl[:size])


def test_az_hcl_exact_report_without_slack_parses(snp_hcl: bytes) -> None:
    assert HclReport.from_bytes(snp_hcl[:0x92A]).slack == 0


def test_az_hcl_non_zero_slack_is_refused(snp_hcl: bytes) -> None:
    with pytest.raises(HclReportInvalid):
        HclReport.from_bytes(snp_hcl + b"\x01")
    with pytest.raises(HclReportInvalid):
        HclReport.from_bytes(flip(snp_hcl, 2599))


def test_az_hcl_inconsistent_sizes_are_refused(snp_hcl: bytes) -> None:
    report_size = bytearray(snp_hcl)
    struct.pack_into("<I", report_size, 8, 0x92B)
    data_size = bytearray(snp_hcl)
    struct.pack_into("<I", data_size, REQUEST_DATA_OFFSET, 1131)
    for bad in (report_size, data_size):
        with pytest.raises(HclReportInvalid):
            HclReport.from_bytes(bytes(bad))


def test_az_hcl_oversized_buffer_is_refused(snp_hcl: bytes) -> None:
    with pytest.raises(HclReportInvalid):
        HclReport.from_bytes(snp_hcl + bytes(16 * 1024))


# --- header fields ---------------------------------------------------------------------


def test_az_hcl_wrong_signature_is_refused(snp_hcl: bytes) -> None:
    with pytest.raises(HclReportInvalid):
        HclReport.from_bytes(b"XCLA" + snp_hcl[4:])


@pytest.mark.parametrize(("field", "value"), [(8, 3), (12, 2)])
def test_az_hcl_unknown_report_or_hash_type_is_refused(
    snp_hcl: bytes, field: int, value: int
) -> None:
    bad = bytearray(snp_hcl)
    struct.pack_into("<I", bad, REQUEST_DATA_OFFSET + field, value)
    with pytest.raises(HclReportInvalid):
        HclReport.from_bytes(bytes(bad))


def test_az_hcl_tdx_unused_area_must_be_zero(tdx_hcl: bytes) -> None:
    with pytest.raises(HclReportInvalid):
        HclReport.from_bytes(flip(tdx_hcl, SNP_IN_HCL + 1024 + 5))


def test_az_hcl_empty_runtime_data_is_refused(snp_hcl: bytes) -> None:
    with pytest.raises(HclReportInvalid):
        HclReport.from_bytes(with_var_data(snp_hcl, b""))


# --- runtime data JSON -----------------------------------------------------------------


def test_az_hcl_rebuilt_runtime_data_parses(snp_hcl: bytes) -> None:
    runtime = _runtime(snp_hcl)
    runtime["user-data"] = "AB" * 64
    hcl = HclReport.from_bytes(with_runtime_json(snp_hcl, runtime))
    assert hcl.runtime_data.user_data == "AB" * 64


@pytest.mark.parametrize(
    "text",
    [
        b"\xff\xfe",  # not UTF-8
        b"[1, 2]",  # not an object
        b'{"keys": [], "keys": []}',  # duplicate member
        b'{"keys": [NaN]}',  # JSON constant
        b'{"user-data": "00"}',  # no keys
        b'{"keys": ["HCLAkPub"]}',  # keys not JWK objects
        b'{"keys": [], "user-data": 5}',  # user-data not a string
        b'{"keys": []}',  # no AK
    ],
)
def test_az_hcl_malformed_runtime_data_is_refused(snp_hcl: bytes, text: bytes) -> None:
    with pytest.raises(HclReportInvalid):
        HclReport.from_bytes(with_var_data(snp_hcl, text))


def test_az_hcl_two_aks_are_refused(snp_hcl: bytes) -> None:
    runtime = _runtime(snp_hcl)
    keys = runtime["keys"]
    assert isinstance(keys, list)
    runtime["keys"] = [keys[0], keys[0]]
    with pytest.raises(HclReportInvalid):
        HclReport.from_bytes(with_runtime_json(snp_hcl, runtime))


def test_az_hcl_weak_or_non_rsa_ak_is_refused() -> None:
    weak_n = b64url_encode(((1 << 1023) | 0x10001).to_bytes(128, "big"))  # a 1024-bit modulus
    weak = {"kid": "HCLAkPub", "kty": "RSA", "e": "AQAB", "n": weak_n}
    ec_jwk = {"kid": "HCLAkPub", "kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"}
    bad_n = dict(weak, n="not base64url!")
    no_n = {"kid": "HCLAkPub", "kty": "RSA", "e": "AQAB"}
    for jwk in (weak, ec_jwk, bad_n, no_n):
        with pytest.raises(HclReportInvalid):
            RuntimeData.from_bytes(json.dumps({"keys": [jwk]}).encode())
