"""The ``sample`` attester: evidence with no hardware behind it (tests and demos only)."""

from __future__ import annotations

from typing import ClassVar, Final

from custodes._internal.b64 import b64std_encode
from custodes.types.json import JsonObject
from custodes.types.tee import Tee

MAX_REPORT_DATA: Final = 64


class SampleAttester:
    tee: ClassVar[Tee] = Tee.SAMPLE

    def evidence(self, report_data: bytes) -> JsonObject:
        """``{"svn": "1", "report_data": base64(report_data)}``; the digest is sent as is."""
        if not 0 < len(report_data) <= MAX_REPORT_DATA:
            raise ValueError(f"report data must be 1..{MAX_REPORT_DATA} bytes")
        return {"svn": "1", "report_data": b64std_encode(report_data)}
