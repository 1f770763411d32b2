"""The configfs-tsm report sequence (custodes.guest.attester.tsm).

There is no SEV-SNP or TDX hardware here, so these tests run against ``fake_tsm.FakeTsm``: the
real file operations on a temp directory plus the kernel's side effects (attributes on mkdir,
``generation`` bumps on writes, ``outblob`` after ``inblob``). Its ``outblob`` is a recorded
real SNP report from trustee's vectors, which was not made for the report data written here, so
the tests check what the attester writes and how it handles the kernel's answers, not the
report's binding (the SNP/TDX attester tests check that against the broker's verifiers).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from custodes.errors import CustodesError
from custodes.guest.attester.tsm import (
    INBLOB_SIZE,
    Tsm,
    TsmError,
    TsmOutputInvalid,
    TsmProvider,
    TsmProviderMismatch,
    TsmUnavailable,
    TsmWriteRace,
    pad_report_data,
)
from fake_tsm import FakeTsm

REPORT = Path("trustee/deps/verifier/test_data/snp/test-vlek-report.bin")
DIGEST = bytes(range(1, 49))  # a 48-byte (sha384) binding digest


@pytest.fixture
def recorded(vectors: Path) -> bytes:
    return (vectors / REPORT).read_bytes()


@pytest.fixture
def fake(tmp_path: Path, recorded: bytes) -> FakeTsm:
    return FakeTsm(tmp_path / "tsm", provider="sev_guest", outblob=recorded)


def test_report_writes_padded_inblob_and_returns_outblob(fake: FakeTsm, recorded: bytes) -> None:
    report = fake.tsm().report(DIGEST, provider=TsmProvider.SEV)
    assert fake.inblobs == [DIGEST + bytes(16)]
    assert report.inblob == DIGEST + bytes(16)
    assert report.outblob == recorded
    assert report.provider == "sev_guest"
    assert report.generation == 1
    assert report.auxblob is None
    assert len(fake.created) == 1
    assert fake.created[0].parent == fake.root / "report"
    assert fake.items() == []  # the item was removed


def test_full_64_byte_report_data_is_written_as_is(fake: FakeTsm) -> None:
    digest = bytes(range(64))
    fake.tsm().report(digest, provider=TsmProvider.SEV)
    assert fake.inblobs == [digest]


def test_every_report_uses_a_fresh_item(fake: FakeTsm) -> None:
    fake.tsm().report(DIGEST, provider=TsmProvider.SEV)
    fake.tsm().report(DIGEST, provider=TsmProvider.SEV)
    assert len(set(fake.created)) == 2
    assert fake.items() == []


@pytest.mark.parametrize("size", [0, INBLOB_SIZE + 1, 128])
def test_report_data_must_be_1_to_64_bytes(fake: FakeTsm, size: int) -> None:
    with pytest.raises(ValueError):
        fake.tsm().report(b"\x01" * size, provider=TsmProvider.SEV)
    assert fake.created == []  # refused before touching configfs


def test_pad_report_data() -> None:
    assert pad_report_data(b"\xaa") == b"\xaa" + bytes(63)
    with pytest.raises(ValueError):
        pad_report_data(bytes(65))


def test_provider_mismatch_is_refused_and_the_item_removed(tmp_path: Path, recorded: bytes) -> None:
    fake = FakeTsm(tmp_path, provider="tdx_guest", outblob=recorded)
    with pytest.raises(TsmProviderMismatch) as raised:
        fake.tsm().report(DIGEST, provider=TsmProvider.SEV)
    assert raised.value.code == "tsm-provider-mismatch"
    assert fake.inblobs == []  # nothing written to the wrong provider
    assert fake.items() == []


def test_concurrent_writer_is_a_write_race(tmp_path: Path, recorded: bytes) -> None:
    fake = FakeTsm(tmp_path, provider="sev_guest", outblob=recorded, racer=True)
    with pytest.raises(TsmWriteRace) as raised:
        fake.tsm().report(DIGEST, provider=TsmProvider.SEV)
    assert raised.value.code == "tsm-write-race"
    assert isinstance(raised.value, TsmError)
    assert fake.items() == []


def test_privlevel_write_counts_towards_the_expected_generation(fake: FakeTsm) -> None:
    report = fake.tsm().report(DIGEST, provider=TsmProvider.SEV, privlevel=0)
    assert fake.privlevels == [0]
    assert report.generation == 2


@pytest.mark.parametrize("level", [-1, 4])
def test_privlevel_out_of_range_is_refused(fake: FakeTsm, level: int) -> None:
    with pytest.raises(ValueError):
        fake.tsm().report(DIGEST, provider=TsmProvider.SEV, privlevel=level)
    assert fake.created == []


def test_missing_configfs_tsm_is_unavailable(tmp_path: Path) -> None:
    tsm = Tsm(tmp_path / "no-tsm")
    assert not tsm.available()
    with pytest.raises(TsmUnavailable):
        tsm.report(DIGEST, provider=TsmProvider.TDX)
    with pytest.raises(TsmUnavailable):
        tsm.provider()


def test_no_registered_provider_is_a_tsm_error(tmp_path: Path) -> None:
    fake = FakeTsm(tmp_path, provider=None)
    with pytest.raises(TsmError) as raised:
        fake.tsm().report(DIGEST, provider=TsmProvider.TDX)
    assert type(raised.value) is TsmError
    assert isinstance(raised.value, CustodesError)


def test_auxblob_is_read_when_asked(tmp_path: Path, recorded: bytes) -> None:
    fake = FakeTsm(tmp_path, provider="sev_guest", outblob=recorded, auxblob=b"table")
    assert fake.tsm().report(DIGEST, provider=TsmProvider.SEV, auxblob=True).auxblob == b"table"
    assert fake.tsm().report(DIGEST, provider=TsmProvider.SEV).auxblob is None


def test_empty_auxblob_is_none(tmp_path: Path, recorded: bytes) -> None:
    fake = FakeTsm(tmp_path, provider="sev_guest", outblob=recorded, auxblob=b"")
    assert fake.tsm().report(DIGEST, provider=TsmProvider.SEV, auxblob=True).auxblob is None


def test_absent_auxblob_is_none(fake: FakeTsm) -> None:
    assert fake.tsm().report(DIGEST, provider=TsmProvider.SEV, auxblob=True).auxblob is None


def test_empty_outblob_is_invalid(tmp_path: Path) -> None:
    fake = FakeTsm(tmp_path, provider="sev_guest", outblob=b"")
    with pytest.raises(TsmOutputInvalid):
        fake.tsm().report(DIGEST, provider=TsmProvider.SEV)
    assert fake.items() == []


class _GarbledGeneration(FakeTsm):
    """The kernel always prints a decimal; this one does not (a broken or foreign file)."""

    def mkdir(self, path: Path) -> None:
        super().mkdir(path)
        (path / "generation").write_text("one\n")


def test_unparsable_generation_is_a_tsm_error(tmp_path: Path, recorded: bytes) -> None:
    fake = _GarbledGeneration(tmp_path, provider="sev_guest", outblob=recorded)
    with pytest.raises(TsmError):
        fake.tsm().report(DIGEST, provider=TsmProvider.SEV)
    assert fake.items() == []


def test_provider_probe_leaves_no_item(fake: FakeTsm) -> None:
    assert fake.tsm().provider() == "sev_guest"
    assert fake.tsm().provider() == TsmProvider.SEV
    assert len(fake.created) == 2
    assert fake.items() == []
