"""The ``tdx`` attester through configfs-tsm, checked against the broker's TDX parser/verifier.

There is no TDX hardware here, so configfs-tsm is ``fake_tsm.FakeTsm``: real file operations on
a temp directory plus the kernel's side effects. Its ``outblob`` is a recorded REAL quote:
dcap-qvl's sample (the one quote with collateral, so the broker's ``TdxVerifier`` runs all its
steps) and trustee's ``tdx_quote_6.dat`` (a CoCo guest's quote over a 48-byte digest). The
recorded quotes were not made for our report data, so the tests use each quote's own
REPORTDATA as the digest where binding is checked, and otherwise check the written ``inblob``,
the evidence JSON's shape and that ``TdxEvidence.from_json`` yields the same quote bytes.
The CC event logs are trustee's recorded CCEL tables, read from a file as from sysfs.
"""

from __future__ import annotations

import base64
import json
import struct
from datetime import datetime
from pathlib import Path

import pytest

from custodes._internal.clock import FrozenClock
from custodes.attestation.eventlog import CcEventLog
from custodes.attestation.verifiers.base import TeeClass, VerificationRequest
from custodes.attestation.verifiers.tdx import TdxVerifier, TdxVerifierConfig
from custodes.attestation.verifiers.tdx.evidence import TdxEvidence
from custodes.attestation.verifiers.tdx.quote import TdxQuote
from custodes.attestation.verifiers.tdx.verifier import check_report_data
from custodes.guest.attester.base import Attester
from custodes.guest.attester.tdx import CcelError, TdxAttester, trim_ccel
from custodes.guest.attester.tsm import TsmOutputInvalid, TsmProviderMismatch, TsmWriteRace
from custodes.protocol.evidence.ccel import EVENTLOG_END
from custodes.types.tee import Tee
from fake_tsm import FakeTsm

TEST_DATA = Path("trustee/deps/verifier/test_data")
EVENTLOG_DATA = Path("trustee/deps/eventlog/test_data")
CCELS = [
    "CCEL_data",
    "CCEL_data_ovmf",
    "CCEL_data_grub",
    "CCEL_data_grub_gke",
    "CCEL_data_gcp",
    "CCEL_data_csv",
]
DIGEST = bytes(range(1, 49))


@pytest.fixture(scope="module")
def sample(vectors: Path) -> Path:
    return vectors / "dcap-qvl"


@pytest.fixture(scope="module")
def sample_quote(sample: Path) -> bytes:
    return (sample / "tdx_quote").read_bytes()


def _attester(fake: FakeTsm, ccel: Path | None = None) -> TdxAttester:
    attester: Attester = TdxAttester(fake.tsm(), ccel_path=ccel)
    assert attester.tee is Tee.TDX
    assert isinstance(attester, TdxAttester)
    return attester


def _decoded_log(evidence: dict[str, object]) -> bytes:
    log = evidence["cc_eventlog"]
    assert isinstance(log, str)
    return base64.b64decode(log, validate=True)


# --- real quotes through the broker ---------------------------------------------------------


def test_sample_quote_verifies_with_the_broker(
    tmp_path: Path, sample: Path, sample_quote: bytes
) -> None:
    fake = FakeTsm(tmp_path, provider="tdx_guest", outblob=sample_quote)
    digest = TdxQuote.from_bytes(sample_quote).report_data  # its own 64-byte REPORTDATA
    evidence = _attester(fake, tmp_path / "no-ccel").evidence(digest)
    assert fake.inblobs == [digest]
    assert evidence == {
        "cc_eventlog": None,
        "quote": base64.b64encode(sample_quote).decode(),
    }
    collateral = json.loads((sample / "tdx_quote_collateral.json").read_text())
    issued = json.loads(collateral["tcb_info"])["issueDate"]
    now = datetime.fromisoformat(issued.replace("Z", "+00:00")).timestamp() + 3600
    verifier = TdxVerifier(
        TdxVerifierConfig(
            collateral_path=sample / "tdx_quote_collateral.json", clock=FrozenClock(now)
        )
    )
    wire = json.loads(json.dumps(evidence))
    [result] = verifier.verify(VerificationRequest(Tee.TDX, wire, digest, None))
    assert result.tee_class is TeeClass.CPU
    assert result.claims["report_data"] == digest.hex()
    assert fake.items() == []


def test_48_byte_digest_is_padded_as_the_guest_quote_shows(tmp_path: Path, vectors: Path) -> None:
    """``tdx_quote_6.dat`` came from a CoCo guest: REPORTDATA = 48-byte digest + 16 zeros."""
    quote = (vectors / TEST_DATA / "tdx_quote_6.dat").read_bytes()
    digest = TdxQuote.from_bytes(quote).report_data[:48]
    fake = FakeTsm(tmp_path, provider="tdx_guest", outblob=quote)
    evidence = _attester(fake).evidence(digest)
    assert fake.inblobs == [digest + bytes(16)]
    parsed = TdxEvidence.from_json(json.dumps(evidence))
    assert parsed.quote == quote  # sent as the kernel returned it, trailing zeros included
    assert parsed.cc_eventlog is None
    check_report_data(TdxQuote.from_bytes(parsed.quote), digest)


def test_written_inblob_is_the_padded_digest(tmp_path: Path, sample_quote: bytes) -> None:
    fake = FakeTsm(tmp_path, provider="tdx_guest", outblob=sample_quote)
    evidence = _attester(fake).evidence(DIGEST)
    assert fake.inblobs == [DIGEST + bytes(16)]
    assert set(evidence) == {"cc_eventlog", "quote"}
    assert TdxEvidence.from_json(evidence).quote == sample_quote


# --- the CC event log ----------------------------------------------------------------------


def test_ccel_is_trimmed_terminated_and_parsed_by_the_broker(
    tmp_path: Path, vectors: Path, sample_quote: bytes
) -> None:
    raw = (vectors / TEST_DATA / "CCEL_data").read_bytes()
    ccel = tmp_path / "CCEL"
    ccel.write_bytes(raw)
    fake = FakeTsm(tmp_path / "tsm", provider="tdx_guest", outblob=sample_quote)
    evidence = _attester(fake, ccel).evidence(DIGEST)
    log = _decoded_log(evidence)
    assert len(raw) == 1 << 20  # the firmware's whole area
    assert log.endswith(EVENTLOG_END)
    assert raw.startswith(log[: -len(EVENTLOG_END)])
    assert not any(raw[len(log) - len(EVENTLOG_END) :])  # only the zero-filled tail was cut
    parsed = TdxEvidence.from_json(evidence)
    assert parsed.cc_eventlog == log
    assert CcEventLog.from_bytes(log).to_json() == CcEventLog.from_bytes(raw).to_json()


@pytest.mark.parametrize("name", CCELS)
def test_trimmed_log_has_the_same_events_and_replay(vectors: Path, name: str) -> None:
    raw = (vectors / EVENTLOG_DATA / name).read_bytes()
    log = trim_ccel(raw) + EVENTLOG_END
    assert len(log) < len(raw)
    ours, theirs = CcEventLog.from_bytes(log), CcEventLog.from_bytes(raw)
    assert ours.to_json() == theirs.to_json()
    assert [ours.replay(i) for i in range(1, 5)] == [theirs.replay(i) for i in range(1, 5)]


def test_upstream_guest_log_is_reproduced_byte_for_byte(vectors: Path) -> None:
    """This file is a cc_eventlog as upstream's guest sent it (trimmed, AAEL, 8 x 0xFF)."""
    sent = (vectors / EVENTLOG_DATA / "CCEL_AAEL_alibabacloud").read_bytes()
    assert trim_ccel(sent) + EVENTLOG_END == sent


def test_no_ccel_means_null(tmp_path: Path, sample_quote: bytes) -> None:
    fake = FakeTsm(tmp_path, provider="tdx_guest", outblob=sample_quote)
    assert _attester(fake, tmp_path / "absent").evidence(DIGEST)["cc_eventlog"] is None
    assert _attester(fake, None).evidence(DIGEST)["cc_eventlog"] is None


def test_unreadable_ccel_is_an_error(tmp_path: Path, sample_quote: bytes) -> None:
    fake = FakeTsm(tmp_path / "tsm", provider="tdx_guest", outblob=sample_quote)
    (tmp_path / "CCEL").mkdir()  # reading a directory fails with an OSError
    with pytest.raises(CcelError):
        _attester(fake, tmp_path / "CCEL").evidence(DIGEST)


def _spec_id(event_type: int = 3) -> bytes:
    """A SHA-1-format first event with 4 bytes of (opaque) data."""
    return struct.pack("<II20sI", 0, event_type, bytes(20), 4) + b"spec"


def _event(digests: list[tuple[int, int]], data: bytes = b"event") -> bytes:
    body = struct.pack("<III", 1, 0x80000001, len(digests))
    for algorithm, size in digests:
        body += struct.pack("<H", algorithm) + b"\x5a" * size
    return body + struct.pack("<I", len(data)) + data


def test_trim_stops_at_either_end_marker() -> None:
    events = _spec_id() + _event([(0x000C, 48)]) + _event([(0x000B, 32), (0x000C, 48)])
    assert trim_ccel(events + b"\xff" * 100) == events
    assert trim_ccel(events + bytes(100)) == events
    assert trim_ccel(events + b"\xff" * 3) == events  # a tail shorter than a marker


def test_log_filling_its_area_ends_at_the_buffer_end() -> None:
    events = _spec_id() + _event([(0x000C, 48)])
    assert trim_ccel(events) == events


@pytest.mark.parametrize(
    "log",
    [
        pytest.param(_spec_id(event_type=1) + b"\xff" * 8, id="first-event-not-spec-id"),
        pytest.param(b"\x00" * 6, id="shorter-than-a-header"),
        pytest.param(_spec_id()[:30], id="spec-id-size-cut"),
        pytest.param(struct.pack("<II20sI", 0, 3, bytes(20), 999), id="spec-id-past-end"),
        pytest.param(_spec_id() + _event([(0x0004, 20)]), id="unknown-digest-algorithm"),
        pytest.param(_spec_id() + _event([(0x000C, 48)])[:-3], id="event-past-end"),
        pytest.param(_spec_id() + _event([(0x000C, 48)])[:40], id="cut-inside-digest"),
        pytest.param(_spec_id() + struct.pack("<III", 1, 1, 99), id="absurd-digest-count"),
        pytest.param(_spec_id() + struct.pack("<II", 1, 1), id="cut-before-count"),
    ],
)
def test_malformed_ccel_is_refused(log: bytes) -> None:
    with pytest.raises(CcelError):
        trim_ccel(log)


def test_malformed_ccel_fails_the_evidence(tmp_path: Path, sample_quote: bytes) -> None:
    ccel = tmp_path / "CCEL"
    ccel.write_bytes(_spec_id(event_type=1))
    fake = FakeTsm(tmp_path / "tsm", provider="tdx_guest", outblob=sample_quote)
    with pytest.raises(CcelError):
        _attester(fake, ccel).evidence(DIGEST)


# --- refusals -------------------------------------------------------------------------------


def test_outblob_that_is_not_a_td_quote_is_invalid(tmp_path: Path, vectors: Path) -> None:
    snp_report = (vectors / TEST_DATA / "snp" / "test-vlek-report.bin").read_bytes()
    fake = FakeTsm(tmp_path, provider="tdx_guest", outblob=snp_report)
    with pytest.raises(TsmOutputInvalid):
        _attester(fake).evidence(DIGEST)


def test_outblob_shorter_than_a_quote_header_is_invalid(
    tmp_path: Path, sample_quote: bytes
) -> None:
    fake = FakeTsm(tmp_path, provider="tdx_guest", outblob=sample_quote[:48])
    with pytest.raises(TsmOutputInvalid):
        _attester(fake).evidence(DIGEST)


@pytest.mark.parametrize("size", [0, 65])
def test_report_data_must_fit(tmp_path: Path, sample_quote: bytes, size: int) -> None:
    fake = FakeTsm(tmp_path, provider="tdx_guest", outblob=sample_quote)
    with pytest.raises(ValueError):
        _attester(fake).evidence(b"\x01" * size)
    assert fake.created == []


def test_sev_provider_is_refused(tmp_path: Path, sample_quote: bytes) -> None:
    fake = FakeTsm(tmp_path, provider="sev_guest", outblob=sample_quote)
    with pytest.raises(TsmProviderMismatch):
        _attester(fake).evidence(DIGEST)
    assert fake.inblobs == []


def test_generation_race_is_refused(tmp_path: Path, sample_quote: bytes) -> None:
    fake = FakeTsm(tmp_path, provider="tdx_guest", outblob=sample_quote, racer=True)
    with pytest.raises(TsmWriteRace):
        _attester(fake).evidence(DIGEST)
    assert fake.items() == []
