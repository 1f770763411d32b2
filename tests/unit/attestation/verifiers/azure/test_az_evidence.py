"""Evidence versions 0-2 of az-snp-vtpm and az-tdx-vtpm (evidence.py)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from az_test_helpers import load_json, standalone_evidence, var_data, vector_dir

from custodes.attestation.verifiers.azure.errors import EvidenceVersionUnsupported
from custodes.attestation.verifiers.azure.evidence import (
    AzSnpEvidence,
    AzTdxEvidence,
    b64url_decode_any_padding,
)
from custodes.attestation.verifiers.snp.certs import load_der_certificate
from custodes.errors import MalformedEvidence

SNP = "az-snp-vtpm"
TDX = "az-tdx-vtpm"


@pytest.fixture(scope="module")
def snp_v0(vectors: Path) -> Any:
    return load_json(vectors, SNP, "evidence-v0.json")


@pytest.fixture(scope="module")
def snp_v1(vectors: Path) -> Any:
    return load_json(vectors, SNP, "evidence-v1.json")


@pytest.fixture(scope="module")
def tdx_v0(vectors: Path) -> Any:
    return load_json(vectors, TDX, "evidence-v0.json")


@pytest.fixture(scope="module")
def tdx_v1(vectors: Path) -> Any:
    return load_json(vectors, TDX, "evidence-v1.json")


def test_az_evidence_snp_v0_and_v1_come_from_one_vm(snp_v0: Any, snp_v1: Any) -> None:
    v0, v1 = AzSnpEvidence.from_json(snp_v0), AzSnpEvidence.from_json(snp_v1)
    assert (v0.version, v1.version) == (0, 1)
    assert len(v0.hcl_report) == len(v1.hcl_report) == 2600
    # Two captures on one VM: one VCEK (PEM in v0, base64url DER in v1), one runtime data.
    assert v0.vcek == v1.vcek
    assert var_data(v0.hcl_report) == var_data(v1.hcl_report)
    assert len(v0.tpm_quote.signature) == 256 and len(v0.tpm_quote.pcrs) == 24


def test_az_evidence_snp_v2_and_genoa_parse(vectors: Path) -> None:
    v2 = AzSnpEvidence.from_json(load_json(vectors, SNP, "evidence-v2.json"))
    genoa = AzSnpEvidence.from_json(load_json(vectors, SNP, "evidence-genoa.json"))
    assert (v2.version, genoa.version) == (2, 0)
    issuer = load_der_certificate(genoa.vcek, "VCEK").issuer.rfc4514_string()
    assert issuer.startswith("CN=SEV-Genoa")


def test_az_evidence_tdx_v0_and_v1_carry_the_same_pieces(
    tdx_v0: Any, tdx_v1: Any, vectors: Path
) -> None:
    v0, v1 = AzTdxEvidence.from_json(tdx_v0), AzTdxEvidence.from_json(tdx_v1)
    assert (v0.version, v1.version) == (0, 1)
    assert (v0.tpm_quote, v0.hcl_report, v0.td_quote) == (
        v1.tpm_quote,
        v1.hcl_report,
        v1.td_quote,
    )
    assert v1.td_quote == (vector_dir(vectors) / TDX / "td-quote.bin").read_bytes()
    assert v1.hcl_report == (vector_dir(vectors) / TDX / "hcl-report.bin").read_bytes()


def test_az_evidence_from_the_standalone_pieces(vectors: Path) -> None:
    evidence = AzSnpEvidence.from_json(standalone_evidence(vectors))
    assert evidence.hcl_report == (vector_dir(vectors) / SNP / "hcl-report.bin").read_bytes()
    assert evidence.tpm_quote.pcrs[0].hex().startswith("f3a7e99a")
    assert AzSnpEvidence.from_json(evidence.to_json()) == evidence


@pytest.mark.parametrize("name", ["snp_v0", "snp_v1"])
def test_az_evidence_snp_round_trips(name: str, request: pytest.FixtureRequest) -> None:
    evidence = AzSnpEvidence.from_json(request.getfixturevalue(name))
    assert AzSnpEvidence.from_json(evidence.to_json()) == evidence
    assert AzSnpEvidence.from_json(json.dumps(evidence.to_json())) == evidence


def test_az_evidence_v1_wire_form_is_upstreams(snp_v1: Any, tdx_v1: Any) -> None:
    # Re-encoding gives back upstream's exact strings (padded base64url, lower-case hex).
    assert AzSnpEvidence.from_json(snp_v1).to_json() == snp_v1
    assert AzTdxEvidence.from_json(tdx_v1).to_json() == tdx_v1


def test_az_evidence_tdx_round_trips(tdx_v0: Any) -> None:
    evidence = AzTdxEvidence.from_json(tdx_v0)
    assert AzTdxEvidence.from_json(evidence.to_json()) == evidence


# --- versions ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", [0, 3, -1, "1", True, 1.0, None])
def test_az_evidence_unknown_version_is_refused(snp_v1: Any, tdx_v1: Any, version: Any) -> None:
    for parse, evidence in ((AzSnpEvidence.from_json, snp_v1), (AzTdxEvidence.from_json, tdx_v1)):
        with pytest.raises(EvidenceVersionUnsupported):
            parse(dict(evidence, version=version))


def test_az_evidence_version_decides_the_shape(snp_v0: Any, snp_v1: Any) -> None:
    # Upstream would read {"version": 7, <v0 members>} as v0; the version member decides here.
    with pytest.raises(EvidenceVersionUnsupported):
        AzSnpEvidence.from_json(dict(snp_v0, version=7))
    with pytest.raises(MalformedEvidence):
        AzSnpEvidence.from_json(dict(snp_v0, version=1))
    without_version = {k: v for k, v in snp_v1.items() if k != "version"}
    with pytest.raises(MalformedEvidence):
        AzSnpEvidence.from_json(without_version)


def test_az_evidence_v2_label_is_kept(snp_v1: Any) -> None:
    assert AzSnpEvidence.from_json(dict(snp_v1, version=2)).version == 2


# --- malformed members -------------------------------------------------------------------


def _edit(evidence: Any, path: tuple[str | int, ...], value: Any) -> Any:
    out = copy.deepcopy(evidence)
    target = out
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return out


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("tpm_quote",), _DELETE),
        (("hcl_report",), _DELETE),
        (("vcek",), _DELETE),
        (("tpm_quote", "signature"), "zz"),
        (("tpm_quote", "signature"), "abc"),  # odd length
        (("tpm_quote", "message"), 5),
        (("tpm_quote", "pcrs"), ["00" * 32] * 23),
        (("tpm_quote", "pcrs", 3), "00" * 31),
        (("tpm_quote", "pcrs", 3), "0 " * 32),
        (("hcl_report",), "SENMQQ="),  # wrong padding count
        (("hcl_report",), "SENM+/"),  # standard alphabet
        (("vcek",), "A"),
        (("vcek",), ["bytes"]),
    ],
)
def test_az_evidence_malformed_v1_members(
    snp_v1: Any, path: tuple[str | int, ...], value: Any
) -> None:
    with pytest.raises(MalformedEvidence):
        AzSnpEvidence.from_json(_edit(snp_v1, path, value))


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("quote", "signature", 0), True),  # JSON true is not a byte
        (("quote", "signature", 0), 256),
        (("quote", "message", 0), -1),
        (("quote", "pcrs", 0), [0] * 31),
        (("report",), "not an array"),
        (("report",), [0] * (16 * 1024 + 1)),
        (("vcek",), "not PEM"),
        (("vcek",), 42),
    ],
)
def test_az_evidence_malformed_v0_members(
    snp_v0: Any, path: tuple[str | int, ...], value: Any
) -> None:
    with pytest.raises(MalformedEvidence):
        AzSnpEvidence.from_json(_edit(snp_v0, path, value))


def test_az_evidence_v0_vcek_must_be_one_certificate(snp_v0: Any) -> None:
    with pytest.raises(MalformedEvidence):
        AzSnpEvidence.from_json(dict(snp_v0, vcek=snp_v0["vcek"] * 2))


def test_az_evidence_not_json_or_not_object(snp_v1: Any) -> None:
    for bad in ("{", "[]", b"\xff", 17, json.dumps(snp_v1)[:-1]):
        with pytest.raises(MalformedEvidence):
            AzSnpEvidence.from_json(bad)
    with pytest.raises(MalformedEvidence):
        AzTdxEvidence.from_json("x" * (1024 * 1024 + 1))


def test_az_evidence_tdx_malformed_members(tdx_v0: Any, tdx_v1: Any) -> None:
    with pytest.raises(MalformedEvidence):
        AzTdxEvidence.from_json(_edit(tdx_v1, ("td_quote",), _DELETE))
    with pytest.raises(MalformedEvidence):
        AzTdxEvidence.from_json(_edit(tdx_v0, ("td_quote", 0), "4"))


def test_az_evidence_b64url_padding_forms() -> None:
    assert b64url_decode_any_padding("AAA=") == b"\x00\x00"
    assert b64url_decode_any_padding("AAA") == b"\x00\x00"
    for bad in ("AAA==", "AA=", "AAAA=", "AB=="):  # wrong padding count, non-canonical bits
        with pytest.raises(ValueError, match=r"base64url|padding"):
            b64url_decode_any_padding(bad)
