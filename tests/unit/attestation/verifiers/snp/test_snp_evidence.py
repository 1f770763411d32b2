"""Upstream's SNP evidence JSON: parsing, re-encoding to the binary report, malformed input."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from snp_synthetic_pki import E2E_EVIDENCE, load_json, patch

from custodes.attestation.verifiers.snp.evidence import (
    MAX_CERT_ENTRIES,
    SnpEvidence,
    encode_report,
    report_to_json,
)
from custodes.attestation.verifiers.snp.tcb import Generation
from custodes.errors import MalformedEvidence
from custodes.types.json import JsonObject


@pytest.fixture
def e2e(vectors: Path) -> JsonObject:
    return load_json(vectors / E2E_EVIDENCE)


def test_e2e_evidence_parses(e2e: JsonObject) -> None:
    evidence = SnpEvidence.from_json(e2e)
    report = evidence.report
    assert report.version == 3 and report.generation is Generation.GENOA
    assert report.reported_tcb.raw == bytes([10, 0, 0, 0, 0, 0, 23, 25])
    assert report.reported_tcb.fmc is None
    assert report.current_build == 40 and report.current_minor == 55 and report.current_major == 1
    assert evidence.cert_chain is not None and len(evidence.cert_chain) == 1
    assert evidence.entries("VCEK") == [bytes(e2e["cert_chain"][0]["data"])]
    assert evidence.entries("VLEK") == []


def test_text_forms_are_accepted(e2e: JsonObject) -> None:
    text = json.dumps(e2e)
    expected = SnpEvidence.from_json(e2e)
    assert SnpEvidence.from_json(text) == expected
    assert SnpEvidence.from_json(text.encode()) == expected


def test_report_json_round_trips(e2e: JsonObject) -> None:
    evidence = SnpEvidence.from_json(e2e)
    again = evidence.to_json()
    # The e2e evidence predates the v5 mitigation-vector fields; absent and null are the same.
    assert again["attestation_report"] == {
        **e2e["attestation_report"],
        "launch_mit_vector": None,
        "current_mit_vector": None,
    }
    assert again["cert_chain"] == e2e["cert_chain"]
    assert SnpEvidence.from_json(again) == evidence


@pytest.mark.parametrize(
    "name", ["test-report.bin", "test-vlek-report.bin"], ids=["v2-milan", "v3-vlek"]
)
def test_binary_reports_round_trip_through_json(vectors: Path, name: str) -> None:
    raw = (vectors / "trustee/deps/verifier/test_data/snp" / name).read_bytes()
    assert encode_report(report_to_json(raw)) == raw


def test_turin_report_round_trips_with_fmc(vectors: Path) -> None:
    raw = (vectors / "trustee/deps/verifier/test_data/snp/test-vlek-report.bin").read_bytes()
    raw = patch(raw, "cpuid_fam_id", 0x1A)
    for field in ("current_tcb", "reported_tcb", "committed_tcb", "launch_tcb"):
        raw = patch(raw, field, bytes([3, 4, 0, 24, 0, 0, 0, 217]))
    as_json = report_to_json(raw)
    assert as_json["reported_tcb"] == {
        "fmc": 3,
        "bootloader": 4,
        "tee": 0,
        "snp": 24,
        "microcode": 217,
    }
    assert encode_report(as_json) == raw


def test_empty_cert_chain_counts_as_absent(e2e: JsonObject) -> None:
    assert SnpEvidence.from_json({**e2e, "cert_chain": []}).cert_chain is None
    assert SnpEvidence.from_json({**e2e, "cert_chain": None}).cert_chain is None
    without = {k: v for k, v in e2e.items() if k != "cert_chain"}
    assert SnpEvidence.from_json(without).cert_chain is None


def test_other_entries_are_kept(e2e: JsonObject) -> None:
    other = {"cert_type": {"OTHER": "12345678-1234-1234-1234-123456789abc"}, "data": [1, 2]}
    evidence = SnpEvidence.from_json({**e2e, "cert_chain": [*e2e["cert_chain"], other]})
    assert evidence.cert_chain is not None
    assert evidence.cert_chain[-1].cert_type == "OTHER"
    assert evidence.to_json()["cert_chain"][-1] == other


def _mutate(evidence: JsonObject, path: tuple[str | int, ...], value: Any) -> JsonObject:
    mutated = copy.deepcopy(evidence)
    target: Any = mutated
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return mutated


_DELETE = object()
_R = "attestation_report"


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ((_R,), _DELETE),
        ((_R,), [1, 2, 3]),
        ((_R, "version"), _DELETE),
        ((_R, "version"), "3"),
        ((_R, "version"), True),
        ((_R, "version"), -1),
        ((_R, "version"), 1 << 32),
        ((_R, "vmpl"), 1.0),
        ((_R, "policy"), 1 << 64),
        ((_R, "measurement"), [0] * 47),
        ((_R, "measurement"), [0] * 49),
        ((_R, "report_data"), [256] * 64),
        ((_R, "report_data"), ["a"] * 64),
        ((_R, "chip_id"), "00" * 64),
        ((_R, "reported_tcb"), _DELETE),
        ((_R, "reported_tcb", "snp"), 256),
        ((_R, "reported_tcb", "fmc"), 1),  # fmc on a Genoa report
        ((_R, "cpuid_fam_id"), 256),
        ((_R, "current"), [1, 55, 40]),
        ((_R, "current", "major"), _DELETE),
        ((_R, "signature"), _DELETE),
        ((_R, "signature", "r"), [0] * 48),
        (("cert_chain",), {"cert_type": "VCEK"}),
        (("cert_chain", 0, "cert_type"), "VCEK2"),
        (("cert_chain", 0, "cert_type"), {"OTHER": "x", "more": "y"}),
        (("cert_chain", 0, "data"), "MIIB"),
        (("cert_chain", 0, "data"), [0] * (16 * 1024 + 1)),
        (("cert_chain", 0), "VCEK"),
    ],
)
def test_malformed_evidence_is_refused(
    e2e: JsonObject, path: tuple[str | int, ...], value: Any
) -> None:
    with pytest.raises(MalformedEvidence):
        SnpEvidence.from_json(_mutate(e2e, path, value))


def test_turin_tcb_without_fmc_is_refused(e2e: JsonObject) -> None:
    with pytest.raises(MalformedEvidence):
        SnpEvidence.from_json(_mutate(e2e, (_R, "cpuid_fam_id"), 0x1A))


def test_too_many_cert_entries_are_refused(e2e: JsonObject) -> None:
    chain = e2e["cert_chain"] * (MAX_CERT_ENTRIES + 1)
    with pytest.raises(MalformedEvidence):
        SnpEvidence.from_json({**e2e, "cert_chain": chain})


@pytest.mark.parametrize("evidence", [None, 42, [], "not json", b"\xff", "[1]", "x" * 300_000])
def test_non_objects_are_refused(evidence: object) -> None:
    with pytest.raises(MalformedEvidence):
        SnpEvidence.from_json(evidence)
