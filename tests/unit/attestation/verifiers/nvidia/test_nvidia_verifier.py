"""The NVIDIA Hopper verifier on upstream's recorded vectors, and one negative test per
checklist step.

Recorded: ``hopperAttestationReport.txt`` (+ the four chain shapes) and the CoCo capture
``hopper_coco_report1.txt`` verify under the pinned NVIDIA root. Derived (see
tests/nvidia_support.py and tests/vectors/nvidia-derived/README.md): the recorded report's
bytes with one field changed and re-signed by a synthetic device PKI, so that exactly one step
fails; those run with ``NvidiaVerifier(root=<test root>)``.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import struct
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from custodes._internal.clock import FrozenClock
from custodes.attestation.verifiers.base import TeeClass, VerificationRequest, VerifiedClaims
from custodes.attestation.verifiers.nvidia import NvidiaVerifier, NvidiaVerifierConfig
from custodes.attestation.verifiers.nvidia.certs import ROOT_SHA256, leaf_fwid, pinned_root
from custodes.attestation.verifiers.nvidia.errors import (
    ArchitectureUnsupported,
    DeviceChainInvalid,
    FwidMismatch,
    NonceMismatch,
    ReportSignatureInvalid,
    SpdmMessageInvalid,
)
from custodes.errors import MalformedEvidence
from custodes.types.json import Json, JsonObject
from custodes.types.tee import Tee
from nvidia_support import (
    COCO_REPORT_DATA,
    RECORDED_NONCE,
    REQUEST_SIZE,
    evidence,
    make_pki,
    recorded_chain,
    recorded_claims,
    recorded_fwid,
    recorded_report,
    resign,
    shared_pki,
    signed_length,
)

NOW = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC).timestamp()


def _verify(
    ev: Json, report_data: bytes = RECORDED_NONCE, *, root: object = None
) -> list[VerifiedClaims]:
    verifier = NvidiaVerifier(NvidiaVerifierConfig(clock=FrozenClock(NOW)), root=root)  # type: ignore[arg-type]
    return verifier.verify(
        VerificationRequest(tee=Tee.NVIDIA, evidence=ev, report_data=report_data)
    )


def _derived(
    report_data: bytes = RECORDED_NONCE, **changes: object
) -> tuple[JsonObject, Callable[[], list[VerifiedClaims]]]:
    """A re-signed recorded report (``changes`` go to ``resign``) and how to verify it."""
    pki = shared_pki()
    report = resign(recorded_report(), pki.leaf_key, nonce=report_data, **changes)  # type: ignore[arg-type]
    ev = evidence(report, pki.chain_pem)
    return ev, lambda: _verify(ev, report_data, root=pki.root)


# --- recorded vectors ------------------------------------------------------------------------


def test_pinned_root_is_upstreams_device_root() -> None:
    assert pinned_root().fingerprint(hashes.SHA256()).hex() == ROOT_SHA256
    assert pinned_root().subject.rfc4514_string() == "O=NVIDIA,CN=NVIDIA Device Identity CA"


def test_upstream_report_gives_upstreams_claims() -> None:
    (result,) = _verify(evidence(recorded_report(), recorded_chain()))
    assert result.tee_class is TeeClass.GPU
    expected = recorded_claims()
    # The two one-byte status fields: the pinned snapshot's vector shows the raw byte 0x55 as
    # the string "U"; custodes decodes them as upstream main does since ("disabled", "55").
    assert expected["config"]["nvdec0_status"] == "U"
    assert expected["config"]["protected_pcie_status"] == "U"
    expected["config"]["nvdec0_status"] = "disabled"
    expected["config"]["protected_pcie_status"] = "55"
    assert result.claims == expected


def test_upstream_coco_capture_verifies_with_its_48_byte_report_data() -> None:
    report = recorded_report("hopper_coco_report1.txt")
    assert report.endswith(b"\0")  # NVML's padding after the signature: tolerated, unsigned
    (result,) = _verify(
        evidence(report, recorded_chain("hopper_coco_certs1.txt")), COCO_REPORT_DATA
    )
    config = result.claims["config"]
    assert isinstance(config, dict)
    assert config["driver_version"] == "580.95.05"
    assert config["vbios_version"] == "96.00.74.00.1a"
    assert config["opaque_data_version"] == 1
    assert config["feature_flag"] == "SPT"


def test_base64_report_and_mixed_case_arch_accepted() -> None:
    ev = evidence(recorded_report(), recorded_chain(), arch="Hopper")
    device = ev["device_evidence_list"][0]
    device["evidence"] = base64.b64encode(recorded_report()).decode()
    (result,) = _verify(ev)
    assert result.claims["arch"] == "Hopper"


def test_every_device_becomes_one_gpu_entry() -> None:
    one = evidence(recorded_report(), recorded_chain())["device_evidence_list"]
    two = evidence(recorded_report(), recorded_chain(), uuid="GPU-2")["device_evidence_list"]
    results = _verify({"device_evidence_list": [*one, *two]})
    assert [r.claims["uuid"] for r in results] == ["1111-2222-33333-444444-555555", "GPU-2"]
    assert all(r.tee_class is TeeClass.GPU for r in results)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("hopper_cert_chain_case2.txt", "at least the signing certificate and the root"),
        ("hopper_cert_chain_case3.txt", "is not issued by 'NVIDIA GH100 Identity'"),
        ("hopper_cert_chain_case4.txt", "the leaf is missing"),
    ],
)
def test_upstream_bad_chains_refused(case: str, message: str) -> None:
    with pytest.raises(DeviceChainInvalid, match=message) as info:
        _verify(evidence(recorded_report(), recorded_chain(case)))
    assert info.value.code == "nvidia-device-chain"


# --- (1) parsing -----------------------------------------------------------------------------


def _opaque_len(report: bytes) -> int:
    record = int.from_bytes(report[REQUEST_SIZE + 5 : REQUEST_SIZE + 8], "little")
    at = REQUEST_SIZE + 8 + record + 32
    return int.from_bytes(report[at : at + 2], "little")


def _first_opaque_item(report: bytes) -> int:
    return signed_length(report) - _opaque_len(report)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r[:40], "too short"),
        (lambda r: r[:-1], "ends before its signature"),
        (lambda r: r + b"\x01", "after the signature are not padding"),
        # MeasurementRecordLength one larger than the blocks it holds.
        (
            lambda r: r[: REQUEST_SIZE + 5] + b"\xc1\x0d\x00" + r[REQUEST_SIZE + 8 :],
            "1 byte.s. in the record after the last block",
        ),
        # NumberOfBlocks 65 for 64 blocks.
        (lambda r: r[: REQUEST_SIZE + 4] + b"\x41" + r[REQUEST_SIZE + 5 :], "fewer blocks"),
        # First block's MeasurementSpecification not DMTF.
        (
            lambda r: r[: REQUEST_SIZE + 9] + b"\x02" + r[REQUEST_SIZE + 10 :],
            "not DMTF",
        ),
        # First block's DMTF value size one short of its block.
        (
            lambda r: r[: REQUEST_SIZE + 13] + b"\x2f" + r[REQUEST_SIZE + 14 :],
            "does not fill its block",
        ),
        # First block's index repeated by the second.
        (
            lambda r: r[: REQUEST_SIZE + 8 + 55] + b"\x01" + r[REQUEST_SIZE + 8 + 56 :],
            "appears twice",
        ),
        # First opaque item's type unknown.
        (
            lambda r: r[: _first_opaque_item(r)] + b"\x63\x00" + r[_first_opaque_item(r) + 2 :],
            "unknown item type 99",
        ),
        # First opaque item (vbios_version, 8 bytes) retyped as the fwid (48 bytes).
        (
            lambda r: r[: _first_opaque_item(r)] + b"\x14\x00" + r[_first_opaque_item(r) + 2 :],
            "fwid has 8 bytes, not 48",
        ),
        # First opaque item (vbios_version) retyped as board_id, which comes later too.
        (
            lambda r: r[: _first_opaque_item(r)] + b"\x0e\x00" + r[_first_opaque_item(r) + 2 :],
            "board_id appears twice",
        ),
        # First opaque item's size running past the opaque field.
        (
            lambda r: r[: _first_opaque_item(r) + 2] + b"\xff\x0f" + r[_first_opaque_item(r) + 4 :],
            "runs past the field",
        ),
        # First opaque item (vbios_version) retyped as tamper_detection: no vbios_version.
        (
            lambda r: r[: _first_opaque_item(r)] + b"\x08\x00" + r[_first_opaque_item(r) + 2 :],
            "has no vbios_version",
        ),
    ],
)
def test_malformed_report_refused(mutate: Callable[[bytes], bytes], message: str) -> None:
    with pytest.raises(MalformedEvidence, match=message):
        _verify(evidence(mutate(recorded_report()), recorded_chain()))


@pytest.mark.parametrize(
    "ev",
    [
        None,
        [],
        {},
        {"device_evidence_list": []},
        {"device_evidence_list": "x"},
        {"device_evidence_list": [{"arch": "HOPPER", "uuid": "u", "evidence": "00"}]},
        {
            "device_evidence_list": [
                {"arch": "HOPPER", "uuid": "u", "evidence": "zz!", "certificate": "AA=="}
            ]
        },
        {
            "device_evidence_list": [
                {"arch": "HOPPER", "uuid": "u", "evidence": "00", "certificate": "not base64"}
            ]
        },
        {
            "device_evidence_list": [
                {"arch": "VOLTA", "uuid": "u", "evidence": "00", "certificate": "AA=="}
            ]
        },
        {
            "device_evidence_list": [
                {"arch": "HOPPER", "uuid": "", "evidence": "00", "certificate": "AA=="}
            ]
        },
    ],
)
def test_malformed_evidence_json_refused(ev: Json) -> None:
    with pytest.raises(MalformedEvidence):
        _verify(ev)


def test_too_many_devices_refused() -> None:
    one = evidence(recorded_report(), recorded_chain())["device_evidence_list"]
    with pytest.raises(MalformedEvidence, match="more than 16"):
        _verify({"device_evidence_list": one * 17})


def test_certificate_that_is_not_pem_refused() -> None:
    ev = evidence(
        recorded_report(), b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    )
    with pytest.raises(MalformedEvidence, match="not a PEM chain"):
        _verify(ev)


# --- (2) architecture -------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["BLACKWELL", "LS10"])
def test_other_architectures_refused(arch: str) -> None:
    with pytest.raises(ArchitectureUnsupported, match="only Hopper"):
        _verify(evidence(recorded_report(), recorded_chain(), arch=arch))


# --- (3) the SPDM exchange (derived, re-signed: only that byte differs) ----------------------


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [
        (0, 0x12, "request is SPDM version 0x12"),
        (REQUEST_SIZE, 0x10, "response is SPDM version 0x10"),
        (1, 0xE1, "request code 0xe1"),
        (REQUEST_SIZE + 1, 0x61, "response code 0x61"),
        (2, 0x00, "did not ask for a signature"),
        (3, 0x01, "measurement 1, not all"),
        (REQUEST_SIZE + 3, 0x01, "another slot"),
    ],
)
def test_spdm_exchange_checked(offset: int, value: int, message: str) -> None:
    _, run = _derived(edit={offset: value})
    with pytest.raises(SpdmMessageInvalid, match=message):
        run()


def test_derived_report_verifies_under_the_test_root() -> None:
    # The control for every derived negative test: unchanged, the derived report verifies.
    _, run = _derived()
    (result,) = run()
    assert result.claims["measurements"] == recorded_claims()["measurements"]


# --- (4) the chain ------------------------------------------------------------------------------


def test_chain_to_another_root_refused_under_the_pinned_root() -> None:
    pki = shared_pki()
    report = resign(recorded_report(), pki.leaf_key, nonce=RECORDED_NONCE)
    with pytest.raises(DeviceChainInvalid, match="does not end at NVIDIA's root"):
        _verify(evidence(report, pki.chain_pem))


def test_expired_leaf_refused() -> None:
    expired = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    pki = make_pki(recorded_fwid(recorded_report()), leaf_not_after=expired)
    report = resign(recorded_report(), pki.leaf_key, nonce=RECORDED_NONCE)
    with pytest.raises(DeviceChainInvalid, match="outside its validity window"):
        _verify(evidence(report, pki.chain_pem), root=pki.root)


def test_leaf_out_of_order_refused() -> None:
    pki = shared_pki()
    swapped = b"".join(c.public_bytes(Encoding.PEM) for c in (pki.intermediate, pki.leaf, pki.root))
    report = resign(recorded_report(), pki.leaf_key, nonce=RECORDED_NONCE)
    with pytest.raises(DeviceChainInvalid):
        _verify(evidence(report, swapped), root=pki.root)


# --- (5) FWID -----------------------------------------------------------------------------------


def test_fwid_of_another_firmware_refused() -> None:
    pki = make_pki(bytes(48))
    report = resign(recorded_report(), pki.leaf_key, nonce=RECORDED_NONCE)
    with pytest.raises(FwidMismatch, match="not the one its signing certificate holds"):
        _verify(evidence(report, pki.chain_pem), root=pki.root)


# --- (6) signature ------------------------------------------------------------------------------


def test_changed_measurement_breaks_the_signature() -> None:
    report = bytearray(recorded_report())
    report[REQUEST_SIZE + 8 + 7] ^= 1  # first byte of measurement 1's value
    with pytest.raises(ReportSignatureInvalid) as info:
        _verify(evidence(bytes(report), recorded_chain()))
    assert info.value.code == "nvidia-report-signature"


def test_report_signed_by_another_key_refused() -> None:
    other = make_pki(recorded_fwid(recorded_report()))
    pki = shared_pki()
    report = resign(recorded_report(), other.leaf_key, nonce=RECORDED_NONCE)
    with pytest.raises(ReportSignatureInvalid):
        _verify(evidence(report, pki.chain_pem), root=pki.root)


# --- (7) nonce ----------------------------------------------------------------------------------


def test_report_bound_to_another_session_refused() -> None:
    other = hashlib.sha384(b"another session").digest()
    with pytest.raises(NonceMismatch, match="not this session's device binding digest"):
        _verify(evidence(recorded_report(), recorded_chain()), other)


def test_short_binding_digest_refused_not_padded() -> None:
    with pytest.raises(NonceMismatch, match="cannot fill the 32-byte SPDM nonce"):
        _verify(evidence(recorded_report(), recorded_chain()), RECORDED_NONCE[:31])


def test_sha384_digest_binds_through_its_first_32_bytes() -> None:
    digest = hashlib.sha384(b"session").digest()
    _, run = _derived(digest)
    (result,) = run()
    assert result.claims["uuid"] == "1111-2222-33333-444444-555555"


def test_measurement_change_in_a_derived_report_shows_in_the_claims() -> None:
    _, run = _derived(measurements={2: bytes(48)})
    (result,) = run()
    measurements = result.claims["measurements"]
    assert isinstance(measurements, dict)
    assert measurements["2"] == "00" * 48


def test_opaque_struct_header_is_little_endian() -> None:
    # A guard on the vector layout the derived tests rely on: the first opaque item is
    # vbios_version (type 6, 8 bytes).
    report = recorded_report()
    assert struct.unpack_from("<HH", report, _first_opaque_item(report)) == (6, 8)


def test_cached_chain_still_checks_validity_windows() -> None:
    # Chains are cached by their bytes; the clock is still applied on every verification.
    expires = datetime.datetime(2027, 1, 1, tzinfo=datetime.UTC)
    pki = make_pki(recorded_fwid(recorded_report()), leaf_not_after=expires)
    report = resign(recorded_report(), pki.leaf_key, nonce=RECORDED_NONCE)
    clock = FrozenClock(NOW)
    verifier = NvidiaVerifier(NvidiaVerifierConfig(clock=clock), root=pki.root)
    request = VerificationRequest(Tee.NVIDIA, evidence(report, pki.chain_pem), RECORDED_NONCE)
    assert verifier.verify(request)
    clock.advance(expires.timestamp() - NOW + 1)
    with pytest.raises(DeviceChainInvalid, match="outside its validity window"):
        verifier.verify(request)


def test_certificate_that_is_not_base64_refused() -> None:
    ev = evidence(recorded_report(), recorded_chain())
    ev["device_evidence_list"][0]["certificate"] = "not base64"
    with pytest.raises(MalformedEvidence, match="certificate is not standard base64"):
        _verify(ev)


def test_upstream_signing_cert_is_case1s_leaf_and_holds_the_reports_fwid() -> None:
    signing = x509.load_pem_x509_certificate(recorded_chain("hopper_signing_cert.pem"))
    (leaf, *_) = x509.load_pem_x509_certificates(recorded_chain())
    assert signing == leaf
    assert leaf_fwid(signing) == recorded_fwid(recorded_report())
    assert leaf_fwid(signing).hex() == recorded_claims()["config"]["fwid"]
