"""Init-data on the broker side: the document the guest sends with its evidence.

The model, strict parser, digest and ``init_data_claims`` live in :mod:`custodes.initdata`
(shared with the guest, which must not import server code); this module keeps the names the
attestation service has always imported. The service parses the TOML with
:meth:`InitData.parse`, hands ``digest`` to the verifier (which checks HOSTDATA, MRCONFIGID or
PCR 8 against it) and exposes :meth:`InitData.claims` to policies.
"""

from __future__ import annotations

from custodes.initdata.errors import InitDataError
from custodes.initdata.format import (
    INITDATA_VERSION,
    MAX_INITDATA_BYTES,
    HashAlgorithmName,
    InitData,
)

__all__ = [
    "INITDATA_VERSION",
    "MAX_INITDATA_BYTES",
    "HashAlgorithmName",
    "InitData",
    "InitDataError",
]
