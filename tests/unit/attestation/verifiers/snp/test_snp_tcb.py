"""Processor generations from CPUID and TCB_VERSION layouts."""

from __future__ import annotations

import pytest

from custodes.attestation.verifiers.snp.tcb import Generation, TcbVersion, generation_from_cpuid
from custodes.errors import MalformedEvidence


@pytest.mark.parametrize(
    ("family", "model", "expected"),
    [
        (0x19, 0x00, Generation.MILAN),
        (0x19, 0x01, Generation.MILAN),
        (0x19, 0x0F, Generation.MILAN),
        (0x19, 0x10, Generation.GENOA),
        (0x19, 0x11, Generation.GENOA),
        (0x19, 0x1F, Generation.GENOA),
        (0x19, 0xA0, Generation.GENOA),  # the e2e evidence (Genoa)
        (0x19, 0xAF, Generation.GENOA),
        (0x19, 0x20, None),
        (0x19, 0xB0, None),
        (0x1A, 0x00, Generation.TURIN),
        (0x1A, 0x11, Generation.TURIN),
        (0x1A, 0x12, None),
        (0x17, 0x31, None),
        (0x00, 0x00, None),
    ],
)
def test_generation_from_cpuid(family: int, model: int, expected: Generation | None) -> None:
    assert generation_from_cpuid(family, model) is expected


def test_kds_product_names() -> None:
    assert [str(g) for g in Generation] == ["Milan", "Genoa", "Turin"]


def test_milan_genoa_layout() -> None:
    tcb = TcbVersion.from_bytes(bytes([3, 0, 9, 9, 9, 9, 8, 0x73]), turin=False)
    assert (tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode, tcb.fmc) == (3, 0, 8, 0x73, None)
    assert tcb.raw == bytes([3, 0, 9, 9, 9, 9, 8, 0x73])  # reserved bytes kept as they came


def test_turin_layout() -> None:
    tcb = TcbVersion.from_bytes(bytes([1, 2, 3, 4, 0, 0, 0, 0x52]), turin=True)
    assert (tcb.fmc, tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode) == (1, 2, 3, 4, 0x52)


@pytest.mark.parametrize("fmc", [None, 5])
def test_from_parts_round_trips(fmc: int | None) -> None:
    tcb = TcbVersion.from_parts(bootloader=10, tee=1, snp=23, microcode=209, fmc=fmc)
    assert TcbVersion.from_bytes(tcb.raw, turin=fmc is not None) == tcb


def test_from_parts_rejects_values_over_a_byte() -> None:
    with pytest.raises(ValueError, match="microcode"):
        TcbVersion.from_parts(bootloader=0, tee=0, snp=0, microcode=256)


@pytest.mark.parametrize("size", [7, 9])
def test_from_bytes_needs_eight_bytes(size: int) -> None:
    with pytest.raises(MalformedEvidence):
        TcbVersion.from_bytes(bytes(size), turin=False)


def test_spl_values_follow_kds_query_order() -> None:
    genoa = TcbVersion.from_parts(bootloader=10, tee=0, snp=23, microcode=25)
    turin = TcbVersion.from_parts(bootloader=1, tee=2, snp=3, microcode=4, fmc=5)
    assert list(genoa.spl_values.items()) == [
        ("blSPL", 10),
        ("teeSPL", 0),
        ("snpSPL", 23),
        ("ucodeSPL", 25),
    ]
    assert list(turin.spl_values) == ["fmcSPL", "blSPL", "teeSPL", "snpSPL", "ucodeSPL"]
