"""DCAP 1.27's "TD preserving" claims (upstream ``78c530b9`` / ``d6a4f5e4``, trustee #1546):
``tcb_status_current``, ``tcb_date_current``, ``advisory_ids_current``.

What is real and what is not: dcap-qvl 0.7.0 evaluates the TD's current TCB level from
TEE_TCB_SVN2, which only TDX 1.5 (v5, body type 3) quotes carry, and no such quote with
matching collateral exists in the vectors. The full path runs for real on dcap-qvl's v4 sample
(no current level: no ``*_current`` claims). For a TDX 1.5 quote, the sample's TD report body
is extended to a TDX 1.5 body whose TEE_TCB_SVN2 is one TDX component above TEE_TCB_SVN (a
TD-preserving update of that component), signed by a test attestation key whose QE report is
signed by the synthetic PCK of ``test_tdx_synthetic_pki`` (its helpers are reused), and the
sample's TCB info gains a level for the updated component. dcap-qvl and the whole verifier run
for real on it. The reading of a malformed level is tested on dcap-qvl's claims-JSON shape.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import struct
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import test_tdx_synthetic_pki as synthetic
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from custodes._internal.clock import FrozenClock
from custodes.attestation.verifiers.base import VerificationRequest
from custodes.attestation.verifiers.tdx import TdxVerifier, TdxVerifierConfig
from custodes.attestation.verifiers.tdx._dcap import CurrentTcb, QvlResult, current_tcb
from custodes.attestation.verifiers.tdx.claims import tcb_claims
from custodes.attestation.verifiers.tdx.errors import TcbRevoked
from custodes.attestation.verifiers.tdx.quote import TdxQuote
from custodes.attestation.verifiers.tdx.verifier import tcb_status
from custodes.errors import TcbError, VerificationError
from custodes.types.json import JsonObject
from custodes.types.tee import Tee

CURRENT_NAMES = {"tcb_status_current", "tcb_date_current", "advisory_ids_current"}


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_v4_sample_has_no_current_level(vectors: Path) -> None:
    sample = vectors / "dcap-qvl"
    quote = (sample / "tdx_quote").read_bytes()
    collateral = json.loads((sample / "tdx_quote_collateral.json").read_text())
    now = _ts(json.loads(collateral["tcb_info"])["issueDate"]) + 3600
    verifier = TdxVerifier(
        TdxVerifierConfig(
            collateral_path=sample / "tdx_quote_collateral.json", clock=FrozenClock(now)
        )
    )
    report_data = TdxQuote.from_bytes(quote).report_data
    evidence = {"cc_eventlog": None, "quote": base64.b64encode(quote).decode()}
    [result] = verifier.verify(VerificationRequest(Tee.TDX, evidence, report_data, None))
    assert result.claims["tcb_status"] == "UpToDate"
    assert CURRENT_NAMES.isdisjoint(result.claims)


LEVEL = {
    "tcb": {"sgxtcbcomponents": [], "tdxtcbcomponents": [], "pcesvn": 11},
    "tcbDate": "2025-02-12T00:00:00Z",
    "tcbStatus": "UpToDate",
    "advisoryIDs": ["INTEL-SA-01111"],
}


def test_current_level_is_read() -> None:
    assert current_tcb(None) is None
    assert current_tcb(LEVEL) == CurrentTcb("UpToDate", "2025-02-12T00:00:00Z", ("INTEL-SA-01111",))
    assert current_tcb({"tcbStatus": "OutOfDate"}) == CurrentTcb("OutOfDate", None, ())


@pytest.mark.parametrize(
    "level",
    [
        [],
        "UpToDate",
        {},
        {"tcbStatus": 1},
        {"tcbStatus": "UpToDate", "tcbDate": 5},
        {"tcbStatus": "UpToDate", "advisoryIDs": "INTEL-SA-1"},
        {"tcbStatus": "UpToDate", "advisoryIDs": [1]},
    ],
)
def test_a_malformed_current_level_is_refused(level: object) -> None:
    with pytest.raises(VerificationError, match="current TCB level"):
        current_tcb(level)


def test_td_preserving_claims() -> None:
    # Launched before a TD-preserving update (relaunch advised), current level up to date.
    current = current_tcb(LEVEL)
    result = QvlResult("TDRelaunchAdvised", ("INTEL-SA-00999",), {}, current)
    claims = tcb_claims(result, "TDRelaunchAdvised", "UpToDate")
    assert claims["tcb_status"] == "TDRelaunchAdvised"
    assert claims["advisory_ids"] == ["INTEL-SA-00999"]
    assert claims["tcb_status_current"] == "UpToDate"
    assert claims["tcb_date_current"] == "2025-02-12T00:00:00Z"
    assert claims["advisory_ids_current"] == ["INTEL-SA-01111"]


def test_no_current_level_no_current_claims() -> None:
    claims = tcb_claims(QvlResult("UpToDate", (), {}), "UpToDate")
    assert CURRENT_NAMES.isdisjoint(claims)


def test_current_level_without_a_date_leaves_the_date_out() -> None:
    result = QvlResult("UpToDate", (), {}, CurrentTcb("OutOfDate", None, ()))
    claims = tcb_claims(result, "UpToDate", "OutOfDate")
    assert claims["tcb_status_current"] == "OutOfDate"
    assert "tcb_date_current" not in claims


def test_the_current_status_passes_the_same_check_as_the_launch_status() -> None:
    # Step 3 runs tcb_status on both: Revoked and unknown statuses are refused either way.
    assert tcb_status("TDRelaunchAdvisedConfigurationNeeded") == (
        "TDRelaunchAdvisedConfigurationNeeded"
    )
    with pytest.raises(TcbRevoked):
        tcb_status("Revoked")
    with pytest.raises(TcbError, match="unknown TCB status"):
        tcb_status("Preserved")


# --- full path: a TDX 1.5 quote after a TD-preserving update (synthetic PKI) -----------------


@dataclass(frozen=True)
class Td15:
    """The synthetic TDX 1.5 quote, the synthetic PKI's keys, the sample's collateral."""

    quote: bytes
    root: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey
    pca: x509.Certificate
    pca_key: ec.EllipticCurvePrivateKey
    signer: x509.Certificate
    tcb_key: ec.EllipticCurvePrivateKey
    collateral: JsonObject


def _td15(vectors: Path) -> Td15:
    sample = vectors / "dcap-qvl"
    real = TdxQuote.from_bytes((sample / "tdx_quote").read_bytes())
    pem = real.signature_data.pck_chain_pem.rstrip(b"\x00")
    leaf = x509.load_pem_x509_certificates(pem)[0]
    root_key, pca_key, pck_key, tcb_key, att_key = (synthetic._key() for _ in range(5))
    root = synthetic._cert("Intel SGX Root CA", root_key, None, root_key, ca=True)
    pca = synthetic._cert("Intel SGX PCK Platform CA", pca_key, root.subject, root_key, ca=True)
    pck = synthetic._cert(
        "Intel SGX PCK Certificate",
        pck_key,
        pca.subject,
        pca_key,
        ca=False,
        extension=leaf.extensions.get_extension_for_oid(synthetic.SGX_EXTENSION),
    )
    signer = synthetic._cert("Intel SGX TCB Signing", tcb_key, root.subject, root_key, ca=False)
    # v5 header, TDX 1.5 body: the sample's body, TEE_TCB_SVN2 = TEE_TCB_SVN with TDX
    # component 2 raised from 3 to 4, MRSERVICETD zero.
    header = struct.pack("<H", 5) + real.raw[2:48]
    body10 = real.raw[48 : 48 + 584]
    svn2 = body10[:2] + bytes([body10[2] + 1]) + body10[3:16]
    signed = header + struct.pack("<HI", 3, 648) + body10 + svn2 + bytes(48)
    numbers = att_key.public_key().public_numbers()
    att_pub = numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")
    sig = real.signature_data
    qe_report = sig.qe_report[:320] + hashlib.sha256(att_pub + sig.qe_auth_data).digest()
    qe_report += bytes(32)
    chain = synthetic._pem(pck, pca, root).encode() + b"\x00"
    certification = (
        qe_report
        + synthetic._raw_signature(pck_key, qe_report)
        + struct.pack("<H", len(sig.qe_auth_data))
        + sig.qe_auth_data
        + struct.pack("<HI", 5, len(chain))
        + chain
    )
    signature_data = (
        synthetic._raw_signature(att_key, signed)
        + att_pub
        + struct.pack("<HI", 6, len(certification))
        + certification
    )
    quote = signed + struct.pack("<I", len(signature_data)) + signature_data
    collateral = json.loads((sample / "tdx_quote_collateral.json").read_text())
    return Td15(quote, root, root_key, pca, pca_key, signer, tcb_key, collateral)


def _collateral(td: Td15, launch: str, current: str) -> JsonObject:
    """The sample's collateral, re-signed, with a TCB level for the updated component:
    ``launch`` is the status of the sample's level, ``current`` the new level's."""
    tcb_info = json.loads(td.collateral["tcb_info"])
    launched = tcb_info["tcbLevels"][0]
    updated = copy.deepcopy(launched)
    updated["tcb"]["tdxtcbcomponents"][2]["svn"] += 2  # above TEE_TCB_SVN, at TEE_TCB_SVN2
    updated["tcbStatus"] = current
    launched["tcbStatus"] = launch
    tcb_info["tcbLevels"].insert(0, updated)
    tcb_text = json.dumps(tcb_info, separators=(",", ":"))
    qe_text = td.collateral["qe_identity"]
    chain = synthetic._pem(td.signer, td.root)
    return {
        "pck_crl_issuer_chain": synthetic._pem(td.pca, td.root),
        "root_ca_crl": synthetic._crl(td.root, td.root_key, []).hex(),
        "pck_crl": synthetic._crl(td.pca, td.pca_key, []).hex(),
        "tcb_info_issuer_chain": chain,
        "tcb_info": tcb_text,
        "tcb_info_signature": synthetic._raw_signature(td.tcb_key, tcb_text.encode()).hex(),
        "qe_identity_issuer_chain": chain,
        "qe_identity": qe_text,
        "qe_identity_signature": synthetic._raw_signature(td.tcb_key, qe_text.encode()).hex(),
    }


def _verify_td15(td: Td15, tmp_path: Path, launch: str, current: str) -> JsonObject:
    path = tmp_path / "collateral.json"
    path.write_text(json.dumps(_collateral(td, launch, current)))
    root_der = td.root.public_bytes(serialization.Encoding.DER)
    config = TdxVerifierConfig(
        collateral_path=path, clock=FrozenClock(synthetic.NOW), root_ca_der=root_der
    )
    quote = TdxQuote.from_bytes(td.quote)
    assert (quote.version, quote.body_type) == (5, 3)
    evidence = {"quote": base64.b64encode(td.quote).decode()}
    request = VerificationRequest(Tee.TDX, evidence, quote.report_data, None)
    [result] = TdxVerifier(config).verify(request)
    return result.claims


def test_td_preserving_update_full_path(vectors: Path, tmp_path: Path) -> None:
    # Launched at a level now out of date; the TD-preserving update brought it up to date.
    claims = _verify_td15(_td15(vectors), tmp_path, launch="OutOfDate", current="UpToDate")
    assert claims["tcb_status"] == "TDRelaunchAdvised"  # dcap-qvl's DCAP 1.27 verdict
    assert claims["tcb_status_current"] == "UpToDate"
    assert claims["advisory_ids_current"] == []
    assert claims["tcb_date_current"].endswith("Z")
    assert claims["quote"]["body"]["tee_tcb_svn2"] != claims["quote"]["body"]["tcb_svn"]


def test_td_preserving_current_level_reported_as_is(vectors: Path, tmp_path: Path) -> None:
    claims = _verify_td15(_td15(vectors), tmp_path, launch="UpToDate", current="SWHardeningNeeded")
    assert (claims["tcb_status"], claims["tcb_status_current"]) == (
        "UpToDate",
        "SWHardeningNeeded",
    )


def test_td_preserving_revoked_current_level_is_refused(vectors: Path, tmp_path: Path) -> None:
    with pytest.raises(TcbRevoked):
        _verify_td15(_td15(vectors), tmp_path, launch="OutOfDate", current="Revoked")
