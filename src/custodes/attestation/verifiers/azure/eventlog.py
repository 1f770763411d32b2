"""Step 6b of the Azure vTPM verifiers: the evidence's event log replayed against the quoted
PCRs (upstream trustee #1565; the guest side is guest-components #1605).

An Azure guest records its runtime measurements (AA event-log entries: "domain operation
content") in a TCG2 crypto-agile event log and extends each one's SHA-256 digest into a vTPM
PCR. The log itself is unsigned: what makes it evidence is that replaying it gives the PCR
values the AK signed (step 6 checked the quote's PCR digest over those values). So:

* the log must declare SHA-256 (the bank Azure quotes), and every entry that extends a PCR
  (every type but ``EV_NO_ACTION``) must carry a SHA-256 digest: an entry the replay could
  not account for is refused, never skipped;
* every PCR the log extends must be in the quote and lie in 0..23;
* replaying a PCR starts from its reset value, zeros, or all ``0xFF`` for the DRTM PCRs 17-22
  (TCG PC Client Platform Firmware Profile; Azure quotes them at ``0xFF``), extends each
  digest in log order (``PCR = SHA-256(PCR || digest)``) and must end at the quoted value.

PCRs the log does not touch are not checked here: the boot-time (SRTM) events that built
PCR 0-15 are not in this log, which holds the guest's runtime events only. Their values reach
the policy as the ``tpm`` claims, as before.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Final

from custodes.attestation.eventlog import CcEventLog
from custodes.attestation.eventlog.ccel import ALG_SHA256, EV_NO_ACTION
from custodes.attestation.verifiers.azure.errors import EventLogReplayMismatch
from custodes.errors import MalformedEvidence

PCR_COUNT: Final = 24
DRTM_PCRS: Final = range(17, 23)
_SHA256_SIZE: Final = 32


def reset_value(pcr: int) -> bytes:
    """A PCR's value before any extend: all ones for the DRTM PCRs 17-22, else zeros."""
    return b"\xff" * _SHA256_SIZE if pcr in DRTM_PCRS else bytes(_SHA256_SIZE)


def replay_eventlog(raw: bytes, pcrs: Sequence[bytes], selected: tuple[int, ...]) -> CcEventLog:
    """Parse ``raw`` and check that it replays to ``pcrs`` (the quoted values, already bound to
    the signed quote); returns the parsed log for the claims."""
    log = CcEventLog.from_bytes(raw)  # MalformedEvidence on any structural error
    if log.digest_sizes.get(ALG_SHA256) != _SHA256_SIZE:
        raise MalformedEvidence("the event log does not declare SHA-256 digests")
    values: dict[int, bytes] = {}
    for position, entry in enumerate(log.entries):
        if entry.event_type == EV_NO_ACTION:
            continue
        if not 0 <= entry.index < PCR_COUNT:
            raise MalformedEvidence(f"event log entry {position} names PCR {entry.index}")
        digests = [d.digest for d in entry.digests if d.algorithm == ALG_SHA256]
        if len(digests) != 1:
            raise MalformedEvidence(
                f"event log entry {position} has {len(digests)} SHA-256 digests, not one"
            )
        value = values.get(entry.index, reset_value(entry.index))
        values[entry.index] = hashlib.sha256(value + digests[0]).digest()
    for pcr, value in sorted(values.items()):
        if pcr not in selected:
            raise EventLogReplayMismatch(
                f"the event log extends PCR {pcr}, which the vTPM quote does not cover"
            )
        if not hmac.compare_digest(value, pcrs[pcr]):
            raise EventLogReplayMismatch(f"the event log does not replay to the quoted PCR {pcr}")
    return log
