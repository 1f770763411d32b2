"""What ``/auth`` reads from a ``Request`` besides the TEE: the protocol version each client
speaks (counted, and logged when refused) and the members it sent that this protocol version
does not define (logged, then ignored as upstream ignores them)."""

from __future__ import annotations

import logging

from custodes.errors import UnsupportedVersion
from custodes.kbs.metrics import Metrics
from custodes.protocol.messages import Request, version_label
from custodes.types.json import Json

logger = logging.getLogger(__name__)


def read_request(body: Json, metrics: Metrics) -> Request:
    """Parse ``body`` as a ``Request``; every outcome of the version check is counted in
    ``custodes_protocol_requests{version, result}``."""
    label = version_label(body)
    try:
        request = Request.from_json(body)
    except UnsupportedVersion as exc:
        metrics.protocol_versions.labels(label, "refused").inc()
        logger.info("refused an RCAR client: %s", exc)
        raise
    metrics.protocol_versions.labels(label, "accepted").inc()
    if request.ignored_members:
        # Newer clients announce TEE metadata/topology (trustee #1616): accepted, not used.
        logger.info(
            "RCAR Request (protocol %s, tee %s): ignored members %s",
            request.version,
            request.tee,
            ", ".join(request.ignored_members),
        )
    return request
