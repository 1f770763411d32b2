"""NVIDIA RIMs checked offline: upstream's recorded RIM (real, NVIDIA-signed, VBIOS
96.00.74.00.1C) and RIMs derived from the recorded Hopper report, signed by a synthetic RIM CA
(tests/nvidia_rim_support.py; not NVIDIA's). One negative test per checklist step, the
reference values a RIM registers, and what ``default_gpu`` makes of them."""

from __future__ import annotations

import copy
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from custodes._internal.b64 import b64std_encode
from custodes.attestation.verifiers.nvidia.rim import (
    RimChainInvalid,
    RimMalformed,
    RimSignatureInvalid,
    pinned_rim_root,
    verify_rim,
)
from custodes.errors import ReferenceValueError
from custodes.policy.defaults import default_policy
from custodes.policy.engine import RegoEngine
from custodes.policy.explain import explain
from custodes.rvps.messages import parse_message
from custodes.rvps.swid import rim_reference_values
from custodes.types.json import Json
from nvidia_rim_support import (
    RECORDED_RIM_VERSION,
    RIM_VALID_AT,
    derived_rims,
    make_rim_pki,
    recorded_rim,
    report_golden,
    shared_rim_pki,
    sign_rim,
    swid_xml,
)
from nvidia_support import recorded_claims

NOW = datetime(2026, 12, 1, tzinfo=UTC)
MEASUREMENT_12 = (
    "758af96044c700f98a85347be27124d51c05b8784ba216b6"
    "29b9aaab6d538c759aed9922a133e4ac473564d359b271d5"
)


# --- the recorded RIM ------------------------------------------------------------------------


def test_recorded_rim_verifies_under_the_pinned_root() -> None:
    rim = verify_rim(recorded_rim(), now=RIM_VALID_AT)
    assert (rim.component, rim.product, rim.version) == ("vbios", "GH100", RECORDED_RIM_VERSION)
    assert rim.signer == "HCC RIM L4 Signer"
    assert rim.not_after == datetime(2025, 12, 4, 8, 2, 39, tzinfo=UTC)
    # Only active="True" measurements; an active all-zero Hash0 is a golden value too.
    assert sorted(rim.measurements) == [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12]
    assert rim.measurements[0].values == (bytes(48),)
    twelve = rim.measurements[12]
    assert (twelve.report_index, len(twelve.values)) == (13, 4)
    assert twelve.values[1].hex() == MEASUREMENT_12


def test_pinned_rim_root_is_nvidias_corim_root() -> None:
    root = pinned_rim_root()
    assert root.subject.rfc4514_string() == "CN=NVIDIA CoRIM signing Root CA,O=NVIDIA,C=US"


def test_recorded_rim_reference_values() -> None:
    values = rim_reference_values(verify_rim(recorded_rim(), now=RIM_VALID_AT))
    golden = values["nvidia_rim/vbios/96.00.74.00.1c"]
    assert isinstance(golden, list)
    assert f"13:{MEASUREMENT_12}" in golden and f"1:{'00' * 48}" in golden
    # Upstream's name and value for its own test (RIM index, zero alternatives left out).
    assert values["NVIDIA_Corporation.GPU.measurement_12"] == [
        MEASUREMENT_12,
        "7df046f26d0536f3a0b06d288ce6e5c659cad7a9c45cbd3a82c5df248755e4ddeff5871045acc6366ccab178b0d6568e",
        "cb09606fa5c052f0bc4cfa86dbeb4e3e70500bfbeeb7193256ac24ed4464a607366df16a3547b7c17ebd741eb43f1adf",
    ]
    assert "NVIDIA_Corporation.GPU.measurement_0" not in values  # all zero


# --- one negative test per step ---------------------------------------------------------------


def test_tampered_measurement_fails_the_signature() -> None:
    document = recorded_rim().replace(MEASUREMENT_12.encode(), ("0" + MEASUREMENT_12[1:]).encode())
    with pytest.raises(RimSignatureInvalid, match="does not verify"):
        verify_rim(document, now=RIM_VALID_AT)


def test_signed_by_another_key_fails_the_signature() -> None:
    pki = shared_rim_pki()
    document = sign_rim(
        swid_xml("550.90.07", {7: [bytes(48)]}), pki, key=ec.generate_private_key(ec.SECP384R1())
    )
    with pytest.raises(RimSignatureInvalid):
        verify_rim(document, now=NOW, root=pki.root)


def test_chain_to_another_root_refused() -> None:
    vbios, _ = derived_rims()
    with pytest.raises(RimChainInvalid, match="not at the pinned NVIDIA RIM root"):
        verify_rim(vbios, now=NOW)  # NVIDIA's pinned root
    with pytest.raises(RimChainInvalid, match="not at the pinned"):
        verify_rim(recorded_rim(), now=RIM_VALID_AT, root=shared_rim_pki().root)


def test_broken_link_refused() -> None:
    # A chain that ends at the trusted root, but whose signer was issued by another CA.
    trusted, other = shared_rim_pki(), make_rim_pki()
    pki = type(trusted)(
        root=trusted.root, ca=trusted.ca, signer=other.signer, signer_key=other.signer_key
    )
    with pytest.raises(RimChainInvalid, match="is not issued by"):
        verify_rim(
            sign_rim(swid_xml("550.90.07", {7: [bytes(48)]}), pki), now=NOW, root=trusted.root
        )


@pytest.mark.parametrize(
    "when",
    [datetime(2025, 12, 4, 8, 2, 40, tzinfo=UTC), datetime(2023, 12, 5, tzinfo=UTC), NOW],
)
def test_outside_the_validity_window_refused(when: datetime) -> None:
    with pytest.raises(RimChainInvalid, match="HCC RIM L4 Signer' is outside its validity"):
        verify_rim(recorded_rim(), now=when)


def test_expired_signer_of_a_derived_rim_refused() -> None:
    pki = make_rim_pki(signer_not_after=NOW - timedelta(days=1))
    with pytest.raises(RimChainInvalid, match="Test RIM Signer' is outside"):
        verify_rim(sign_rim(swid_xml("550.90.07", {7: [bytes(48)]}), pki), now=NOW, root=pki.root)


def _signed(**kwargs: Any) -> bytes:
    golden = kwargs.pop("golden", {7: [bytes(48)]})
    return sign_rim(
        swid_xml(kwargs.pop("version", "550.90.07"), golden, **kwargs), shared_rim_pki()
    )


def _real(old: str, new: str) -> bytes:
    document = recorded_rim().decode()
    assert old in document
    return document.replace(old, new, 1).encode()


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"<SoftwareIdentity", "not well-formed XML"),
        (b"\xff\xfe<a/>", "not UTF-8"),
        (b"<!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>", "DOCTYPE"),
        (b"<a/>" + b" " * (1 << 20), "larger than"),
        (b"<SoftwareIdentity/>", "not a SWID SoftwareIdentity"),
        (_real(f'Hash1="{MEASUREMENT_12}"', f'Hash1="{MEASUREMENT_12[:-2]}"'), "48 bytes of hex"),
        (_real(f'Hash1="{MEASUREMENT_12}"', f'Hash1="{MEASUREMENT_12[:-1]}g"'), "48 bytes of hex"),
        (_real('alternatives="4"', 'alternatives="3"'), "exactly the attributes Hash0..Hash2"),
        (_real('index="13"', 'index="12"'), "index 12 twice"),
        (_real('index="13"', 'index="64"'), "not in 0..63"),
        (_real('active="True"', 'active="yes"'), "neither True nor False"),
        (_real('size="48"', 'size="32"'), "size '32' is not 48"),
        (_real('colloquialVersion="96.00.74.00.1C"', 'colloquialVersion="v1"'), "neither a VBIOS"),
        (
            _real("<ds:X509Data>", "<ds:X509Data><ds:X509Certificate>AAAA</ds:X509Certificate>"),
            "certificate 0 is not a DER certificate",
        ),
        (
            re.sub(rb"<ds:Signature .*</ds:Signature>", b"", recorded_rim(), flags=re.S),
            "0 ds:Signature elements",
        ),
    ],
)
def test_malformed_rim_refused(document: bytes, message: str) -> None:
    with pytest.raises(RimMalformed, match=message):
        verify_rim(document, now=RIM_VALID_AT)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("xmldsig-more#ecdsa-sha384", "xmldsig-more#ecdsa-sha256"),  # algorithm not allowed
        (
            '<ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#sha384"/>',
            '<ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>',
        ),
        ("<ds:SignatureValue>", "<ds:SignatureValue>AAAA"),
        ('<ds:Reference URI="">', '<ds:Reference URI="#other">'),
    ],
)
def test_signature_that_is_not_nvidias_form_refused(old: str, new: str) -> None:
    with pytest.raises(RimSignatureInvalid, match="does not verify"):
        verify_rim(_real(old, new), now=RIM_VALID_AT)


def test_second_signature_refused() -> None:
    document = recorded_rim().decode()
    signature = document[document.index("<ds:Signature ") : document.index("</SoftwareIdentity>")]
    doubled = document.replace("</SoftwareIdentity>", signature + "</SoftwareIdentity>")
    with pytest.raises(RimMalformed, match="2 ds:Signature elements"):
        verify_rim(doubled.encode(), now=RIM_VALID_AT)


def test_rim_without_active_measurement_refused() -> None:
    with pytest.raises(RimMalformed, match="no active measurement"):
        verify_rim(_signed(golden={}), now=NOW, root=shared_rim_pki().root)


def test_wrong_hash_length_in_a_signed_rim_refused_before_the_signature() -> None:
    document = _signed(hash_text={7: "ab" * 32})  # SHA-256 length, signed as such
    with pytest.raises(RimMalformed, match=r"Hash0 is not 48 bytes of hex \(64 chars\)"):
        verify_rim(document, now=NOW, root=shared_rim_pki().root)


def test_naive_clock_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_rim(recorded_rim(), now=datetime(2024, 6, 1))


# --- the swid message ---------------------------------------------------------------------------


def _swid(document: bytes, **extra: Json) -> dict[str, Json]:
    return {"version": "0.1.0", "type": "swid", "payload": b64std_encode(document), **extra}


def test_swid_message_registers_the_verified_rim() -> None:
    values = {rv.name: rv for rv in parse_message(_swid(recorded_rim()), now=RIM_VALID_AT)}
    assert "nvidia_rim/vbios/96.00.74.00.1c" in values
    upstream = values["NVIDIA_Corporation.GPU.measurement_12"].value
    assert isinstance(upstream, list) and upstream[0] == MEASUREMENT_12 and len(upstream) == 3
    # 365 days from now is before the chain ends: the default lifetime stands.
    assert {rv.expiration for rv in values.values()} == {RIM_VALID_AT + timedelta(days=365)}


def test_swid_values_never_outlive_the_rims_chain() -> None:
    now = datetime(2025, 6, 1, tzinfo=UTC)
    values = parse_message(_swid(recorded_rim()), now=now)
    assert {rv.expiration for rv in values} == {datetime(2025, 12, 4, 8, 2, 39, tzinfo=UTC)}
    with pytest.raises(ReferenceValueError, match="after the RIM's certificate chain ends"):
        parse_message(_swid(recorded_rim(), expiration="2025-12-31T00:00:00Z"), now=now)


def test_swid_message_with_an_expired_rim_refused() -> None:
    with pytest.raises(RimChainInvalid, match="outside its validity window"):
        parse_message(_swid(recorded_rim()), now=NOW)


def test_swid_payload_must_be_standard_base64() -> None:
    message = {"type": "swid", "payload": "PFNvZnR3YXJlSWRlbnRpdHk-"}
    with pytest.raises(ReferenceValueError, match="not standard base64"):
        parse_message(message, now=RIM_VALID_AT)


def test_swid_message_under_a_test_root() -> None:
    pki = shared_rim_pki()
    vbios, _ = derived_rims(pki)
    names = [rv.name for rv in parse_message(_swid(vbios), now=NOW, rim_root=pki.root)]
    assert "nvidia_rim/vbios/96.00.9f.00.01" in names


# --- default_gpu on RIM reference values --------------------------------------------------------

POLICY = default_policy("default_gpu")


def _claims() -> dict[str, Any]:
    claims: dict[str, Any] = copy.deepcopy(recorded_claims())
    claims["config"]["nvdec0_status"] = "disabled"
    return claims


def _rim_values(*documents: bytes, now: datetime = NOW) -> dict[str, Json]:
    root = shared_rim_pki().root
    values: dict[str, Json] = {}
    for document in documents:
        values.update(rim_reference_values(verify_rim(document, now=now, root=root)))
    return values


def _vector(claims: dict[str, Any], rvs: dict[str, Json]) -> tuple[int, int, int]:
    builtins = {"query_reference_value": (1, lambda name: rvs.get(str(name)))}
    result = RegoEngine.evaluate_rules(
        POLICY, ("data.policy.trust_claims",), input={"nvidia": claims}, builtins=builtins
    )["data.policy.trust_claims"]
    assert isinstance(result, dict)
    return result["hardware"], result["executables"], result["configuration"]


def test_matching_rim_pair_affirms_without_other_reference_values() -> None:
    assert _vector(_claims(), _rim_values(*derived_rims())) == (2, 3, 2)


def test_one_rim_alone_matches_nothing() -> None:
    vbios, driver = derived_rims()
    assert _vector(_claims(), _rim_values(vbios)) == (2, 33, 36)
    assert _vector(_claims(), _rim_values(driver)) == (2, 33, 36)


def test_rims_measuring_one_index_twice_match_nothing() -> None:
    golden = report_golden()
    vbios, _ = derived_rims()
    # A driver RIM that also claims VBIOS index 1 (with the report's own value).
    driver = _signed(golden={i: v for i, v in golden.items() if i in (1, 7, 21)})
    assert _vector(_claims(), _rim_values(vbios, driver)) == (2, 33, 36)


def test_rim_for_another_vbios_is_not_this_gpus() -> None:
    # The real RIM (VBIOS 96.00.74.00.1C) and a matching driver RIM: the GPU's VBIOS
    # 96.00.9f.00.01 has no RIM, so nothing about it is golden.
    _, driver = derived_rims()
    rvs = {
        **rim_reference_values(verify_rim(recorded_rim(), now=RIM_VALID_AT)),
        **_rim_values(driver),
    }
    claims = _claims()
    assert _vector(claims, rvs) == (2, 33, 36)
    failed = explain(
        POLICY,
        ["executables"],
        input={"nvidia": claims},
        builtins={"query_reference_value": (1, lambda name: rvs.get(str(name)))},
        strict=True,
    )
    conditions = {f.condition: f for f in failed}
    version = conditions['rim_registered("vbios", input.nvidia.config.vbios_version)']
    assert version.claims == {"input.nvidia.config.vbios_version": "96.00.9f.00.01"}
    # ... and the golden set is only the driver's: no VBIOS RIM for this VBIOS.
    assert conditions["count(vbios_rim) > 0"].claims == {"count(vbios_rim)": 0}


def test_rim_pair_with_a_mismatched_measurement_names_the_index() -> None:
    rvs = _rim_values(*derived_rims(change={1: b"\x11" * 48}))  # RIM index 1: report's 2
    claims = _claims()
    assert _vector(claims, rvs) == (2, 33, 36)
    (failed,) = explain(
        POLICY,
        ["configuration"],
        input={"nvidia": claims},
        builtins={"query_reference_value": (1, lambda name: rvs.get(str(name)))},
        strict=True,
    )
    assert failed.condition == "count(mismatched_indices) == 0"
    assert failed.claims == {"count(mismatched_indices)": 1}
