"""The sample attester."""

from __future__ import annotations

import base64

import pytest

from custodes.guest.attester.sample import SampleAttester
from custodes.types.tee import Tee


@pytest.mark.parametrize("size", [32, 48, 64])
def test_evidence(size: int) -> None:
    digest = bytes(range(size))
    evidence = SampleAttester().evidence(digest)
    assert evidence == {"svn": "1", "report_data": base64.b64encode(digest).decode()}
    assert SampleAttester.tee is Tee.SAMPLE


@pytest.mark.parametrize("size", [0, 65])
def test_report_data_must_fit(size: int) -> None:
    with pytest.raises(ValueError):
        SampleAttester().evidence(b"\x01" * size)
