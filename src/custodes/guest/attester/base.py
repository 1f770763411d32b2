"""The interface every attester implements."""

from __future__ import annotations

from typing import ClassVar, Protocol

from custodes.types.json import Json
from custodes.types.tee import Tee


class Attester(Protocol):
    """Produces evidence bound to a report-data digest."""

    tee: ClassVar[Tee]

    def evidence(self, report_data: bytes) -> Json:
        """The ``primary_evidence`` JSON for ``/attest``.

        ``report_data`` is the binding digest (JCS + negotiated hash) unpadded; the attester
        applies its TEE's layout rule and raises ``ValueError`` when the digest does not fit.
        """
        ...
