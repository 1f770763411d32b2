"""TEE wire names: every name parses to itself; anything else is UnsupportedTee."""

from __future__ import annotations

import pytest

from custodes.errors import UnsupportedTee
from custodes.types.tee import Tee

WIRE_NAMES = [
    "az-snp-vtpm",
    "az-tdx-vtpm",
    "nvidia",
    "sgx",
    "snp",
    "tdx",
    "cca",
    "csv",
    "se",
    "hygondcu",
    "tpm",
    "sample",
    "sampledevice",
]


def test_the_enum_has_exactly_the_wire_names() -> None:
    assert sorted(t.value for t in Tee) == sorted(WIRE_NAMES)


@pytest.mark.parametrize("name", WIRE_NAMES)
def test_parse_every_wire_name(name: str) -> None:
    tee = Tee.parse(name)
    assert isinstance(tee, Tee)
    assert tee.value == name
    assert str(tee) == name
    assert Tee.parse(tee) is tee


@pytest.mark.parametrize(
    "name",
    ["", "SNP", "Snp", " snp", "snp ", "snp\n", "az_snp_vtpm", "AZ_SNP_VTPM", "unknown", "sev"],
)
def test_unknown_name(name: str) -> None:
    with pytest.raises(UnsupportedTee):
        Tee.parse(name)


@pytest.mark.parametrize("name", [None, 1, b"snp", ["snp"], {"tee": "snp"}, True])
def test_non_string(name: object) -> None:
    with pytest.raises(UnsupportedTee):
        Tee.parse(name)


def test_insecure() -> None:
    assert {t for t in Tee if t.insecure} == {Tee.SAMPLE, Tee.SAMPLEDEVICE}
