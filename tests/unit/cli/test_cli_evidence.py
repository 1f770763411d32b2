"""``custodes evidence verify`` on the real vectors, through the real ``custodes`` entry point.

Every TEE's vector verifies with its own (or documented) report data and a clock inside its
certificate/collateral windows; each negative changes one input and checks the exit code and
the step and error class named on stderr. Usage errors exit 2, failures exit 1, and nothing
ends in a traceback.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import rfc8785

from custodes.attestation.verifiers.snp.errors import ReportDataMismatch, VekUnavailable
from custodes.attestation.verifiers.tdx.quote import TdxQuote
from custodes.cli import main
from custodes.cli.evidence import describe_failure, parse_time
from custodes.errors import BindingMismatch, MalformedEvidence
from custodes.guest.attester.sample import SampleAttester
from custodes.protocol.tee_key import TeeKeyPair
from live_broker import run_cli

E2E = Path("trustee/attestation-service/tests/e2e/evidence.json")
TEST_DATA = Path("trustee/deps/verifier/test_data")
DCAP = Path("dcap-qvl")
# Inside the e2e VCEK's window (2025-05-27 .. 2032-05-27) and the AMD roots'.
SNP_AT = "2026-01-01T00:00:00Z"
# Inside the dcap-qvl sample collateral's window (TCB info issued 2025-06-19T10:16:03Z, PCK CRL
# valid until 2025-07-19T10:00:35Z).
TDX_AT = "2025-06-19T11:16:03Z"
# The vectors README ("Azure vTPM" row): the report data evidence-v2.json is bound to.
AZ_V2_REPORT_DATA = (
    "982f5c6e45df0ed3f10b6f60b02f0c8390e281300f3805e2279c16168cd6ae9a"
    "a398f647caa2338748cd0fd9f5f819ef"
)
TPM_EXTRA_DATA_OFFSET = 4 + 2 + 2 + 34  # magic, type, qualifiedSigner (TPM2B, 34 bytes)
INIT_DATA = 'version = "0.1.0"\nalgorithm = "sha256"\n[data]\n"note" = "offline"\n'

Run = tuple[int, str, str]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Any:
    """Run ``custodes ARGS`` in this process: (exit code, stdout, stderr)."""

    def run(*argv: str | Path) -> Run:
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:  # argparse usage errors
            code = int(e.code) if isinstance(e.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _write_json(path: Path, obj: object) -> Path:
    path.write_text(json.dumps(obj))
    return path


# --- SNP ---------------------------------------------------------------------------------


@pytest.fixture
def e2e(vectors: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((vectors / E2E).read_text())
    return data


def _snp_report_data(e2e: dict[str, Any]) -> str:
    return bytes(e2e["attestation_report"]["report_data"]).hex()


def test_snp_e2e_evidence_verifies_offline(cli: Any, vectors: Path, e2e: dict[str, Any]) -> None:
    code, out, err = cli(
        "evidence", "verify", "--tee", "snp", vectors / E2E,
        "--report-data", _snp_report_data(e2e), "--at", SNP_AT,
    )  # fmt: skip
    assert (code, err) == (0, "")
    result = json.loads(out)
    assert result["tee"] == "snp"
    assert result["verified"] is True
    assert result["at"] == SNP_AT
    claims = result["claims"]["cpu0"]
    assert claims["measurement"] == bytes(e2e["attestation_report"]["measurement"]).hex()
    assert claims["report_data"] == _snp_report_data(e2e)
    assert claims["reported_tcb_snp"] == 23


def test_snp_at_accepts_unix_seconds(cli: Any, vectors: Path, e2e: dict[str, Any]) -> None:
    seconds = str(int(datetime(2026, 1, 1, tzinfo=UTC).timestamp()))
    code, out, _ = cli(
        "evidence", "verify", "--tee", "snp", vectors / E2E,
        "--report-data", _snp_report_data(e2e), "--at", seconds,
    )  # fmt: skip
    assert code == 0
    assert json.loads(out)["at"] == SNP_AT


def test_snp_wrong_report_data_names_the_step(cli: Any, vectors: Path) -> None:
    code, out, err = cli(
        "evidence", "verify", "--tee", "snp", vectors / E2E,
        "--report-data", "00" * 48, "--at", SNP_AT,
    )  # fmt: skip
    assert (code, out) == (1, "")
    assert err.startswith("custodes: evidence invalid: step report-data (binding-mismatch/")
    assert "ReportDataMismatch" in err


def test_snp_flipped_measurement_byte_fails_the_signature(
    cli: Any, tmp_path: Path, e2e: dict[str, Any]
) -> None:
    changed = copy.deepcopy(e2e)
    changed["attestation_report"]["measurement"][0] ^= 1
    code, _, err = cli(
        "evidence", "verify", "--tee", "snp", _write_json(tmp_path / "e.json", changed),
        "--report-data", _snp_report_data(e2e), "--at", SNP_AT,
    )  # fmt: skip
    assert code == 1
    assert "step signature (signature-invalid/snp-report-signature, ReportSignatureInvalid)" in err


def test_snp_clock_before_the_vcek_window_fails_the_chain(
    cli: Any, vectors: Path, e2e: dict[str, Any]
) -> None:
    code, _, err = cli(
        "evidence", "verify", "--tee", "snp", vectors / E2E,
        "--report-data", _snp_report_data(e2e), "--at", "2024-01-01T00:00:00Z",
    )  # fmt: skip
    assert code == 1
    assert "step certificate-chain (chain-invalid/snp-vek-chain, VekChainInvalid)" in err


def test_snp_without_vcek_uses_the_offline_store_never_kds(
    cli: Any, tmp_path: Path, e2e: dict[str, Any]
) -> None:
    vcek = bytes(e2e["cert_chain"][0]["data"])
    bare = _write_json(tmp_path / "bare.json", {**e2e, "cert_chain": None})
    args = ("evidence", "verify", "--tee", "snp", bare, "--report-data", _snp_report_data(e2e))
    code, _, err = cli(*args, "--at", SNP_AT)
    assert code == 1
    assert "step vcek (collateral/snp-vek-unavailable, VekUnavailable)" in err
    store = tmp_path / "store"
    chip = bytes(e2e["attestation_report"]["chip_id"]).hex()
    (store / "vcek" / chip).mkdir(parents=True)
    (store / "vcek" / chip / "vcek.der").write_bytes(vcek)
    code, out, _ = cli(*args, "--at", SNP_AT, "--vcek-store", store)
    assert code == 0
    assert json.loads(out)["claims"]["cpu0"]["chip_id"] == chip


def test_snp_init_data_not_in_host_data(cli: Any, vectors: Path, tmp_path: Path, e2e: Any) -> None:
    init = tmp_path / "initdata.toml"
    init.write_text(INIT_DATA)
    code, _, err = cli(
        "evidence", "verify", "--tee", "snp", vectors / E2E,
        "--report-data", _snp_report_data(e2e), "--at", SNP_AT, "--init-data", init,
    )  # fmt: skip
    assert code == 1
    assert "step init-data (init-data-mismatch/snp-host-data, HostDataMismatch)" in err


# --- TDX ---------------------------------------------------------------------------------


@pytest.fixture
def tdx_quote(vectors: Path) -> bytes:
    return (vectors / DCAP / "tdx_quote").read_bytes()


def _tdx_evidence(tmp_path: Path, quote: bytes) -> Path:
    """The raw dcap-qvl quote wrapped as a guest sends it (as the tdx verifier tests do)."""
    evidence = {"cc_eventlog": None, "quote": base64.b64encode(quote).decode()}
    return _write_json(tmp_path / "tdx.json", evidence)


def _tdx_args(vectors: Path, evidence: Path, report_data: bytes) -> tuple[str | Path, ...]:
    return (
        "evidence", "verify", "--tee", "tdx", evidence,
        "--collateral", vectors / DCAP / "tdx_quote_collateral.json",
        "--report-data", report_data.hex(),
    )  # fmt: skip


def test_tdx_dcap_sample_verifies_with_its_collateral(
    cli: Any, vectors: Path, tmp_path: Path, tdx_quote: bytes
) -> None:
    report_data = TdxQuote.from_bytes(tdx_quote).report_data
    evidence = _tdx_evidence(tmp_path, tdx_quote)
    code, out, err = cli(*_tdx_args(vectors, evidence, report_data), "--at", TDX_AT)
    assert (code, err) == (0, "")
    claims = json.loads(out)["claims"]["cpu0"]
    assert claims["tcb_status"] == "UpToDate"
    assert claims["quote"]["header"]["tee_type"] == "81000000"


def test_tdx_expired_collateral_at_wall_clock_time(
    cli: Any, vectors: Path, tmp_path: Path, tdx_quote: bytes
) -> None:
    report_data = TdxQuote.from_bytes(tdx_quote).report_data
    code, _, err = cli(*_tdx_args(vectors, _tdx_evidence(tmp_path, tdx_quote), report_data))
    assert code == 1
    assert "custodes: evidence invalid: step collateral (collateral): collateral has expired" in err


def test_tdx_flipped_quote_byte_fails_the_signature(
    cli: Any, vectors: Path, tmp_path: Path, tdx_quote: bytes
) -> None:
    report_data = TdxQuote.from_bytes(tdx_quote).report_data
    flipped = bytearray(tdx_quote)
    flipped[200] ^= 1  # inside the TD report body (MRTD)
    evidence = _tdx_evidence(tmp_path, bytes(flipped))
    code, _, err = cli(*_tdx_args(vectors, evidence, report_data), "--at", TDX_AT)
    assert code == 1
    assert "step signature (signature-invalid)" in err


def test_tdx_wrong_report_data(cli: Any, vectors: Path, tmp_path: Path, tdx_quote: bytes) -> None:
    evidence = _tdx_evidence(tmp_path, tdx_quote)
    code, _, err = cli(*_tdx_args(vectors, evidence, bytes(48)), "--at", TDX_AT)
    assert code == 1
    assert "step report-data (binding-mismatch)" in err


def test_tdx_without_collateral_is_a_usage_error(
    cli: Any, tmp_path: Path, tdx_quote: bytes
) -> None:
    evidence = _tdx_evidence(tmp_path, tdx_quote)
    code, out, err = cli("evidence", "verify", "--tee", "tdx", evidence, "--report-data", "00")
    assert (code, out) == (2, "")
    assert "tdx evidence needs DCAP collateral" in err
    assert "never contacts" in err


def test_az_tdx_vtpm_with_another_platforms_collateral(cli: Any, vectors: Path) -> None:
    code, _, err = cli(
        "evidence", "verify", "--tee", "az-tdx-vtpm",
        vectors / TEST_DATA / "az-tdx-vtpm" / "evidence-v1.json",
        "--collateral", vectors / DCAP / "tdx_quote_collateral.json",
        "--report-data", b"challenge".hex(), "--at", TDX_AT,
    )  # fmt: skip
    assert code == 1
    assert "step collateral (collateral): no collateral for FMSPC" in err


# --- TPM ---------------------------------------------------------------------------------


@pytest.fixture
def tpm_vector(vectors: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((vectors / TEST_DATA / "tpm_evidence.json").read_text())
    return data


def _extra_data(tpm_vector: dict[str, Any]) -> bytes:
    """The quoted extraData: the vector's binding digest is not published (see the tpm
    verifier tests), so the exact-equality rule is used with the quoted bytes themselves."""
    message = base64.b64decode(tpm_vector["tpm_quote"]["message"])
    size = int.from_bytes(message[TPM_EXTRA_DATA_OFFSET : TPM_EXTRA_DATA_OFFSET + 2], "big")
    start = TPM_EXTRA_DATA_OFFSET + 2
    return message[start : start + size]


def test_tpm_vector_verifies(cli: Any, vectors: Path, tpm_vector: dict[str, Any]) -> None:
    extra = _extra_data(tpm_vector)
    code, out, _ = cli(
        "evidence", "verify", "--tee", "tpm", vectors / TEST_DATA / "tpm_evidence.json",
        "--report-data", extra.hex(),
    )  # fmt: skip
    assert code == 0
    claims = json.loads(out)["claims"]["cpu0"]
    assert claims["report_data"] == extra.hex()
    assert claims["ak_public"] == tpm_vector["ak_public"]


def test_tpm_flipped_signature_byte(cli: Any, tmp_path: Path, tpm_vector: dict[str, Any]) -> None:
    changed = copy.deepcopy(tpm_vector)
    signature = bytearray(base64.b64decode(changed["tpm_quote"]["signature"]))
    signature[-1] ^= 1
    changed["tpm_quote"]["signature"] = base64.b64encode(signature).decode()
    code, _, err = cli(
        "evidence", "verify", "--tee", "tpm", _write_json(tmp_path / "tpm.json", changed),
        "--report-data", _extra_data(tpm_vector).hex(),
    )  # fmt: skip
    assert code == 1
    assert "step signature (signature-invalid)" in err


# --- az-snp-vtpm -------------------------------------------------------------------------


def test_az_snp_vtpm_v2_verifies_with_its_documented_report_data(cli: Any, vectors: Path) -> None:
    code, out, _ = cli(
        "evidence", "verify", "--tee", "az-snp-vtpm",
        vectors / TEST_DATA / "az-snp-vtpm" / "evidence-v2.json",
        "--report-data", AZ_V2_REPORT_DATA, "--at", SNP_AT,
    )  # fmt: skip
    assert code == 0
    claims = json.loads(out)["claims"]["cpu0"]
    assert claims["report_data"] == AZ_V2_REPORT_DATA
    assert set(claims["tpm"]) == {f"pcr{i:02d}" for i in range(24)}


def test_az_snp_vtpm_wrong_report_data(cli: Any, vectors: Path) -> None:
    code, _, err = cli(
        "evidence", "verify", "--tee", "az-snp-vtpm",
        vectors / TEST_DATA / "az-snp-vtpm" / "evidence-v2.json",
        "--report-data", "ff" + AZ_V2_REPORT_DATA[2:], "--at", SNP_AT,
    )  # fmt: skip
    assert code == 1
    assert "step report-data (binding-mismatch/az-vtpm-nonce, QuoteNonceMismatch)" in err


# --- binding from nonce and TEE key (sample TEE) ------------------------------------------


def _jcs_digest(nonce: str, jwk: dict[str, Any], additional: str, alg: str) -> bytes:
    """The binding computed here from its definition, independently of custodes.protocol."""
    runtime: dict[str, Any] = {"additional-evidence": additional, "nonce": nonce, "tee-pubkey": jwk}
    return hashlib.new(alg, rfc8785.dumps(runtime)).digest()


@pytest.mark.parametrize(
    ("alg", "additional", "inline"),
    [("sha384", None, False), ("sha512", '{"gpu": "x"}', True), ("sha256", "", False)],
)
def test_sample_binding_recomputed_from_nonce_and_key(
    cli: Any, tmp_path: Path, alg: str, additional: str | None, inline: bool
) -> None:
    jwk = TeeKeyPair.generate().public_jwk()
    nonce = "b0RqzzQRaIg2m9Ds9IzjPRWMuPyKLEBtfAbI8hBxcFc"
    digest = _jcs_digest(nonce, jwk, additional or "", alg)
    evidence = _write_json(tmp_path / "sample.json", SampleAttester().evidence(digest))
    key_arg: str | Path = json.dumps(jwk) if inline else _write_json(tmp_path / "key.jwk", jwk)
    extra: list[str] = ["--hash", alg]
    if additional is not None:
        extra += ["--additional-evidence", additional]
    code, out, err = cli(
        "evidence", "verify", "--tee", "sample", evidence,
        "--nonce", nonce, "--tee-pubkey", key_arg, *extra,
    )  # fmt: skip
    assert code == 0
    assert "INSECURE" in err
    result = json.loads(out)
    assert result["insecure"] is True
    assert result["report_data"] == digest.hex()


def test_sample_binding_with_another_nonce_fails(cli: Any, tmp_path: Path) -> None:
    jwk = TeeKeyPair.generate().public_jwk()
    digest = _jcs_digest("nonce-1", jwk, "", "sha384")
    evidence = _write_json(tmp_path / "sample.json", SampleAttester().evidence(digest))
    code, _, err = cli(
        "evidence", "verify", "--tee", "sample", evidence,
        "--nonce", "nonce-2", "--tee-pubkey", json.dumps(jwk),
    )  # fmt: skip
    assert code == 1
    assert "step report-data (binding-mismatch)" in err


def test_sample_init_data_claims_and_digest(cli: Any, tmp_path: Path) -> None:
    init = tmp_path / "initdata.toml"
    init.write_bytes(INIT_DATA.encode())
    evidence = _write_json(tmp_path / "sample.json", SampleAttester().evidence(b"\x01" * 48))
    code, out, _ = cli(
        "evidence", "verify", "--tee", "sample", evidence,
        "--report-data", "01" * 48, "--init-data", init,
    )  # fmt: skip
    assert code == 0
    result = json.loads(out)
    digest = hashlib.sha256(INIT_DATA.encode()).digest()
    assert result["init_data_digest"] == digest.hex()
    assert result["init_data_claims"] == {"note": "offline"}
    assert result["claims"]["cpu0"]["init_data"] == base64.b64encode(digest).decode()


def test_invalid_tee_pubkey_is_an_error_not_a_traceback(cli: Any, tmp_path: Path) -> None:
    evidence = _write_json(tmp_path / "sample.json", SampleAttester().evidence(b"\x01" * 48))
    jwk = {"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": "AA", "y": "AA"}
    code, _, err = cli(
        "evidence", "verify", "--tee", "sample", evidence,
        "--nonce", "n", "--tee-pubkey", json.dumps(jwk),
    )  # fmt: skip
    assert code == 1
    assert err.strip().endswith("coordinate x is 1 bytes, expected 32")
    assert "custodes: error:" in err


# --- inputs and usage --------------------------------------------------------------------


@pytest.mark.parametrize("tee", ["snp", "tdx", "tpm", "az-snp-vtpm", "az-tdx-vtpm", "sample"])
@pytest.mark.parametrize("content", [b"{not json", b"[]", b'{"quote": 1}', b"\xff\xfe"])
def test_malformed_evidence_fails_the_parse_step(
    cli: Any, vectors: Path, tmp_path: Path, tee: str, content: bytes
) -> None:
    path = tmp_path / "evidence.json"
    path.write_bytes(content)
    extra: tuple[str | Path, ...] = ()
    if tee in ("tdx", "az-tdx-vtpm"):
        extra = ("--collateral", vectors / DCAP / "tdx_quote_collateral.json")
    code, out, err = cli("evidence", "verify", "--tee", tee, path, "--report-data", "00", *extra)
    assert (code, out) == (1, "")
    assert "custodes: evidence invalid: step parse (malformed-evidence" in err
    assert "Traceback" not in err


def test_missing_evidence_file(cli: Any, tmp_path: Path) -> None:
    code, _, err = cli(
        "evidence", "verify", "--tee", "tpm", tmp_path / "nope.json", "--report-data", "00"
    )
    assert code == 1
    assert err.startswith("custodes: error: cannot read evidence file")
    assert "No such file" in err


def test_bad_init_data_file(cli: Any, tmp_path: Path) -> None:
    init = tmp_path / "initdata.toml"
    init.write_text('version = "9"\n')
    evidence = _write_json(tmp_path / "sample.json", SampleAttester().evidence(b"\x01" * 48))
    code, _, err = cli(
        "evidence", "verify", "--tee", "sample", evidence, "--report-data", "01" * 48,
        "--init-data", init,
    )  # fmt: skip
    assert code == 1
    assert err.splitlines()[-1].startswith(f"custodes: error: init-data file {init}:")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tee", "sgx", "--report-data", "00"], "invalid choice: 'sgx'"),
        (["--tee", "nonsense", "--report-data", "00"], "invalid choice: 'nonsense'"),
        (["--tee", "snp"], "the binding is required"),
        (["--tee", "snp", "--report-data", "00", "--nonce", "n"], "not both"),
        (["--tee", "snp", "--nonce", "n"], "--nonce and --tee-pubkey go together"),
        (["--tee", "snp", "--report-data", "00", "--hash", "sha256"], "apply to --nonce"),
        (["--tee", "snp", "--report-data", "0"], "even-length hex"),
        (["--tee", "snp", "--report-data", "zz"], "even-length hex"),
        (["--tee", "snp", "--report-data", "00", "--at", "yesterday"], "neither RFC 3339"),
        (["--tee", "snp", "--report-data", "00", "--at", "2025-01-01T00:00:00"], "no UTC offset"),
        (["--tee", "snp", "--report-data", "00", "--collateral", "c.json"], "tdx and az-tdx"),
        (["--tee", "az-tdx-vtpm", "--report-data", "00"], "needs DCAP collateral"),
        (["--tee", "tpm", "--report-data", "00", "--vcek-store", "d"], "snp only"),
        (["--tee", "tpm", "--report-data", "00", "--hash", "md5"], "invalid choice: 'md5'"),
    ],
)
def test_usage_errors_exit_2(cli: Any, tmp_path: Path, args: list[str], message: str) -> None:
    code, out, err = cli("evidence", "verify", tmp_path / "e.json", *args)
    assert (code, out) == (2, "")
    assert message in err


def test_help_says_no_network() -> None:
    result = run_cli("evidence", "verify", "--help")
    assert result.returncode == 0
    text = result.stdout.decode()
    assert "never contacted" in text
    assert "exit codes" in text


def test_real_process_reports_malformed_evidence_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "evidence.json"
    path.write_text('{"attestation_report": ')
    result = run_cli("evidence", "verify", "--tee", "snp", str(path), "--report-data", "00")
    assert result.returncode == 1
    assert result.stdout == b""
    assert b"Traceback" not in result.stderr
    assert result.stderr.startswith(b"custodes: evidence invalid: step parse (malformed-evidence)")


# --- helpers -----------------------------------------------------------------------------


def test_parse_time_forms() -> None:
    assert parse_time("0") == 0.0
    assert parse_time("1735689600.5") == 1735689600.5
    assert parse_time("2025-01-01T00:00:00Z") == 1735689600.0
    assert parse_time("2025-01-01T01:00:00+01:00") == 1735689600.0
    for bad in ("-1", "99999999999999", "2025-01-01", "now"):
        with pytest.raises(ValueError):
            parse_time(bad)


def test_failure_description_names_step_codes_and_class() -> None:
    assert ReportDataMismatch("x").step == "report-data"
    assert describe_failure(ReportDataMismatch("x")) == (
        "step report-data (binding-mismatch/snp-report-data, ReportDataMismatch)"
    )
    assert describe_failure(BindingMismatch("x")) == "step report-data (binding-mismatch)"
    assert describe_failure(VekUnavailable("x")) == (
        "step vcek (collateral/snp-vek-unavailable, VekUnavailable)"
    )
    assert describe_failure(MalformedEvidence("x")) == "step parse (malformed-evidence)"


def test_stdin_evidence(tmp_path: Path) -> None:
    """``-`` reads the evidence from standard input (a real pipe, in a real process)."""
    evidence = json.dumps(SampleAttester().evidence(b"\x02" * 32)).encode()
    result = run_cli(
        "evidence", "verify", "--tee", "sample", "-", "--report-data", "02" * 32, stdin=evidence
    )
    assert result.returncode == 0
    assert json.loads(result.stdout)["report_data"] == "02" * 32
