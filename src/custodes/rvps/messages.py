"""Reference-value messages (Trustee RVPS wire format) and the stored reference value.

A message is ``{"version": "0.1.0", "type": "sample", "payload": "<base64>"}`` (``version``
defaults to 0.1.0). The ``sample`` payload is standard base64 of a JSON object mapping each
reference-value id to any JSON value (usually a list of accepted values). Its provenance is
the authenticated admin who registered it: there is no signature to check.

Each value expires 365 days after registration, as upstream. custodes extension: an optional
top-level ``"expiration"`` (RFC 3339 with a time zone, in the future) sets it explicitly.
The ``swid`` payload is standard base64 of an NVIDIA RIM (SWID XML): it is verified offline
(XML signature, chain to NVIDIA's pinned RIM root, validity on the broker's clock) and becomes
the reference values of :mod:`custodes.rvps.swid`, expiring no later than the RIM's chain (an
explicit expiration after that is refused). Upstream's ``corim`` extractor is not implemented.

Stored form (one entry per id, upstream's layout):
``{"version": "0.1.0", "name": id, "expiration": "YYYY-MM-DDTHH:MM:SSZ", "value": ...}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

from custodes._internal.b64 import b64std_decode, b64std_encode
from custodes.errors import ReferenceValueError, StorageError
from custodes.types.json import Json, JsonObject

if TYPE_CHECKING:
    from cryptography import x509

MESSAGE_VERSION: Final = "0.1.0"
DEFAULT_LIFETIME: Final = timedelta(days=365)
MAX_PAYLOAD_CHARS: Final = 4 << 20
_TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"
_ID: Final = re.compile(r"[A-Za-z0-9._/-]{1,256}")
_MESSAGE_KEYS: Final = frozenset({"version", "type", "payload", "expiration"})
_NOT_YET: Final = frozenset({"corim"})


def check_reference_value_id(name: object) -> str:
    """``name`` if it is a valid id (``[A-Za-z0-9._/-]{1,256}``, no ``..``), else an error."""
    if not isinstance(name, str) or not _ID.fullmatch(name) or ".." in name:
        raise ReferenceValueError(
            f"invalid reference value id {name!r}: expected [A-Za-z0-9._/-]{{1,256}} without '..'"
        )
    return name


def query_id(name: Json) -> str | None:
    """``name`` as the policy's ``query_reference_value`` sees it: the id, or ``None`` for an
    argument that is not a valid id (the RVPS then answers null, as upstream's does)."""
    try:
        return check_reference_value_id(name)
    except ReferenceValueError:
        return None


def _utc_seconds(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(microsecond=0)


@dataclass(frozen=True, slots=True)
class ReferenceValue:
    name: str
    value: Json
    expiration: datetime
    version: str = MESSAGE_VERSION

    def expired(self, now: datetime) -> bool:
        return self.expiration <= now

    def to_stored_json(self) -> JsonObject:
        return {
            "version": self.version,
            "name": self.name,
            "expiration": self.expiration.astimezone(UTC).strftime(_TIME_FORMAT),
            "value": self.value,
        }

    @classmethod
    def from_stored_json(cls, obj: Json) -> ReferenceValue:
        """Read the stored form back; ``StorageError`` if it is not one."""
        if not isinstance(obj, dict) or set(obj) != {"version", "name", "expiration", "value"}:
            raise StorageError("stored reference value has an unexpected shape")
        name, version, expiration = obj["name"], obj["version"], obj["expiration"]
        if not isinstance(name, str) or not isinstance(version, str):
            raise StorageError("stored reference value has an unexpected shape")
        try:
            when = datetime.strptime(expiration, _TIME_FORMAT).replace(tzinfo=UTC)
        except (TypeError, ValueError) as e:
            raise StorageError(f"stored reference value {name!r}: bad expiration") from e
        return cls(name=name, value=obj["value"], expiration=when, version=version)


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _explicit_expiration(text: object, now: datetime) -> datetime:
    if not isinstance(text, str):
        raise ReferenceValueError("expiration must be an RFC 3339 date-time string")
    try:
        when = datetime.fromisoformat(text)
    except ValueError as e:
        raise ReferenceValueError(f"expiration {text!r} is not an RFC 3339 date-time") from e
    if when.tzinfo is None:
        raise ReferenceValueError(f"expiration {text!r} has no time zone")
    when = _utc_seconds(when)
    if when <= now:
        raise ReferenceValueError(f"expiration {text!r} is not in the future")
    return when


def sample_message(values: Mapping[str, Json], *, expiration: datetime | None = None) -> JsonObject:
    """The ``sample`` message that registers ``values`` (``{id: value}``), as upstream's
    ``rvps-tool`` sends it; ``expiration`` (custodes extension) when given."""
    payload = json.dumps(dict(values), separators=(",", ":"), allow_nan=False)
    message: JsonObject = {
        "version": MESSAGE_VERSION,
        "type": "sample",
        "payload": b64std_encode(payload.encode("utf-8")),
    }
    if expiration is not None:
        message["expiration"] = _utc_seconds(expiration).strftime(_TIME_FORMAT)
    return message


def export_messages(values: list[ReferenceValue], *, now: datetime) -> list[JsonObject]:
    """The values in force at ``now`` as ``sample`` messages, one per expiration time (each
    keeps its own), which registered again give the same values with the same expirations."""
    groups: dict[datetime, dict[str, Json]] = {}
    for rv in sorted(values, key=lambda v: v.name):
        if not rv.expired(now):
            groups.setdefault(rv.expiration, {})[rv.name] = rv.value
    return [sample_message(group, expiration=when) for when, group in sorted(groups.items())]


def parse_message(
    obj: Json, *, now: datetime, rim_root: x509.Certificate | None = None
) -> list[ReferenceValue]:
    """The reference values a registration message carries, or ``ReferenceValueError``.
    ``rim_root`` replaces NVIDIA's pinned RIM root for ``swid`` (tests with a synthetic CA)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now = _utc_seconds(now)
    # 1. Envelope.
    if not isinstance(obj, dict):
        raise ReferenceValueError("reference value message must be a JSON object")
    unknown = sorted(set(obj) - _MESSAGE_KEYS)
    if unknown:
        raise ReferenceValueError(f"reference value message has unknown fields {unknown}")
    version = obj.get("version", MESSAGE_VERSION)
    if version != MESSAGE_VERSION:
        raise ReferenceValueError(f"message version {version!r} is not {MESSAGE_VERSION!r}")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ReferenceValueError("reference value message has no type")
    if kind in _NOT_YET:
        raise ReferenceValueError(f"reference value type {kind!r} is not supported yet")
    if kind not in ("sample", "swid"):
        raise ReferenceValueError(f"unknown reference value type {kind!r}")
    # 2. Expiration.
    if "expiration" in obj:
        expiration = _explicit_expiration(obj["expiration"], now)
    else:
        expiration = now + DEFAULT_LIFETIME
    # 3. Payload: base64 (standard, padded) of a JSON object id -> value.
    payload = obj.get("payload")
    if not isinstance(payload, str):
        raise ReferenceValueError("reference value message has no payload string")
    if len(payload) > MAX_PAYLOAD_CHARS:
        raise ReferenceValueError(f"payload is longer than {MAX_PAYLOAD_CHARS} characters")
    if kind == "swid":
        return _swid_values(payload, now, expiration, explicit="expiration" in obj, root=rim_root)
    try:
        values = json.loads(b64std_decode(payload), parse_constant=_reject_constant)
    except ValueError as e:  # base64, UTF-8 and JSON errors are all ValueError
        raise ReferenceValueError(f"payload is not base64 of JSON: {e}") from e
    except RecursionError as e:
        raise ReferenceValueError("payload JSON is nested too deeply") from e
    if not isinstance(values, dict):
        raise ReferenceValueError("payload must be a JSON object of id to value")
    if not values:
        raise ReferenceValueError("payload names no reference value")
    return [
        ReferenceValue(name=check_reference_value_id(name), value=value, expiration=expiration)
        for name, value in values.items()
    ]


def _swid_values(
    payload: str,
    now: datetime,
    expiration: datetime,
    *,
    explicit: bool,
    root: x509.Certificate | None,
) -> list[ReferenceValue]:
    """A ``swid`` payload: the RIM verified offline, then its reference values."""
    from custodes.attestation.verifiers.nvidia.rim import verify_rim
    from custodes.rvps.swid import rim_reference_values

    try:
        document = b64std_decode(payload)
    except ValueError as e:
        raise ReferenceValueError(f"swid payload is not standard base64: {e}") from e
    rim = verify_rim(document, now=now, root=root)
    end = _utc_seconds(rim.not_after)
    if expiration > end:
        if explicit:
            raise ReferenceValueError(
                f"expiration {expiration:%Y-%m-%dT%H:%M:%SZ} is after the RIM's certificate "
                f"chain ends ({end:%Y-%m-%dT%H:%M:%SZ})"
            )
        expiration = end
    return [
        ReferenceValue(name=check_reference_value_id(name), value=value, expiration=expiration)
        for name, value in rim_reference_values(rim).items()
    ]
