"""VCEK sources: KDS URLs, the offline store layout, the fetcher and its cache.

KDS is never contacted: a fake fetcher (the only fake here, since the real KDS cannot be
reached from tests) serves trustee's real VCEK and records the URLs it was asked for.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from custodes.attestation.verifiers.snp.collateral import (
    MAX_VCEK_SIZE,
    VcekSources,
    hwid_hex,
    kds_vcek_url,
    store_paths,
)
from custodes.attestation.verifiers.snp.errors import VekUnavailable
from custodes.attestation.verifiers.snp.tcb import Generation, TcbVersion

CHIP_ID = bytes.fromhex(
    "c38427a30d4c7af9d96f7a15b97269825a64cb76a2352ffd5d18115d89ad473f"
    "8e8c0bcd9a5d9286612bad4aadfb4426205a3b9e4fea82301135a170e477524e"
)
MILAN_TCB = TcbVersion.from_parts(bootloader=3, tee=0, snp=8, microcode=115)
TURIN_TCB = TcbVersion.from_parts(fmc=1, bootloader=2, tee=0, snp=6, microcode=82)


class RecordingFetcher:
    """Fake KDS transport: serves one DER body and records every URL."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.urls: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.urls.append(url)
        return self.body


@pytest.fixture
def vcek(vectors: Path) -> bytes:
    return (vectors / "trustee/deps/verifier/test_data/snp/test-vcek.der").read_bytes()


def test_kds_url_for_milan() -> None:
    assert kds_vcek_url(Generation.MILAN, CHIP_ID, MILAN_TCB) == (
        "https://kdsintf.amd.com/vcek/v1/Milan/"
        + CHIP_ID.hex()
        + "?blSPL=03&teeSPL=00&snpSPL=08&ucodeSPL=115"
    )


def test_kds_url_for_turin_uses_fmc_and_an_8_byte_hwid() -> None:
    url = kds_vcek_url(Generation.TURIN, CHIP_ID, TURIN_TCB, "https://kds.example")
    assert url == (
        "https://kds.example/vcek/v1/Turin/c38427a30d4c7af9"
        "?fmcSPL=01&blSPL=02&teeSPL=00&snpSPL=06&ucodeSPL=82"
    )
    assert hwid_hex(Generation.GENOA, CHIP_ID) == CHIP_ID.hex()


def test_store_paths_follow_upstreams_layout(tmp_path: Path) -> None:
    milan = store_paths(tmp_path, Generation.MILAN, CHIP_ID, MILAN_TCB)
    folder = tmp_path / "vcek" / CHIP_ID.hex()
    assert milan == [folder / "bl03_tee00_snp08_ucode115_vcek.der", folder / "vcek.der"]
    turin = store_paths(tmp_path, Generation.TURIN, CHIP_ID, TURIN_TCB)
    assert turin[0] == tmp_path / "vcek/c38427a30d4c7af9/bl02_tee00_snp06_ucode82_fmc01_vcek.der"


def test_store_prefers_the_tcb_file_then_the_flat_one(tmp_path: Path, vcek: bytes) -> None:
    sources = VcekSources(tmp_path, None)
    specific, flat = store_paths(tmp_path, Generation.MILAN, CHIP_ID, MILAN_TCB)
    specific.parent.mkdir(parents=True)
    flat.write_bytes(b"flat")
    assert sources.find(Generation.MILAN, CHIP_ID, MILAN_TCB) == (b"flat", f"store:{flat}")
    specific.write_bytes(vcek)
    assert sources.find(Generation.MILAN, CHIP_ID, MILAN_TCB)[0] == vcek


def test_store_miss_falls_through_to_kds(tmp_path: Path, vcek: bytes) -> None:
    fetcher = RecordingFetcher(vcek)
    sources = VcekSources(tmp_path, fetcher)
    der, where = sources.find(Generation.MILAN, CHIP_ID, MILAN_TCB)
    assert der == vcek and where == fetcher.urls[0]


def test_kds_answers_are_cached_by_url(vcek: bytes) -> None:
    fetcher = RecordingFetcher(vcek)
    sources = VcekSources(None, fetcher)
    for _ in range(3):
        assert sources.find(Generation.MILAN, CHIP_ID, MILAN_TCB)[0] == vcek
    assert fetcher.urls == [kds_vcek_url(Generation.MILAN, CHIP_ID, MILAN_TCB)]
    other_tcb = TcbVersion.from_parts(bootloader=3, tee=0, snp=9, microcode=115)
    sources.find(Generation.MILAN, CHIP_ID, other_tcb)
    assert len(fetcher.urls) == 2


def test_masked_chip_id_cannot_be_looked_up(tmp_path: Path, vcek: bytes) -> None:
    fetcher = RecordingFetcher(vcek)
    with pytest.raises(VekUnavailable):
        VcekSources(tmp_path, fetcher).find(Generation.MILAN, bytes(64), MILAN_TCB)
    assert fetcher.urls == []


def test_no_source_configured() -> None:
    with pytest.raises(VekUnavailable):
        VcekSources(None, None).find(Generation.MILAN, CHIP_ID, MILAN_TCB)


def test_fetcher_failure_is_vek_unavailable() -> None:
    def failing(url: str) -> bytes:
        raise OSError("network unreachable")

    with pytest.raises(VekUnavailable):
        VcekSources(None, failing).find(Generation.MILAN, CHIP_ID, MILAN_TCB)


@pytest.mark.parametrize("body", [b"<html>busy</html>", b"", b"\x30" * (MAX_VCEK_SIZE + 1)])
def test_kds_garbage_is_not_cached(body: bytes) -> None:
    fetcher = RecordingFetcher(body)
    sources = VcekSources(None, fetcher)
    for _ in range(2):
        with pytest.raises(VekUnavailable):
            sources.find(Generation.MILAN, CHIP_ID, MILAN_TCB)
    assert len(fetcher.urls) == 2


def test_oversized_or_unreadable_store_files(tmp_path: Path) -> None:
    specific, _ = store_paths(tmp_path, Generation.MILAN, CHIP_ID, MILAN_TCB)
    specific.parent.mkdir(parents=True)
    specific.write_bytes(bytes(MAX_VCEK_SIZE + 1))
    with pytest.raises(VekUnavailable):
        VcekSources(tmp_path, None).find(Generation.MILAN, CHIP_ID, MILAN_TCB)
    specific.unlink()
    specific.mkdir()  # a directory where a file should be
    with pytest.raises(VekUnavailable):
        VcekSources(tmp_path, None).find(Generation.MILAN, CHIP_ID, MILAN_TCB)
