"""The payload JSON of a sealed secret: the ``vault`` and ``envelope`` types.

Field names, and the member order written by :meth:`to_json`, are upstream's (the ``type``
tag sits beside the variant's fields). Reading is strict where upstream is lenient: members
upstream does not define are refused rather than ignored, since a signed payload carrying
fields nobody reads is a mistake worth surfacing. ``annotations`` may be absent (read as
``{}``), as upstream's documentation allows; writers always emit it.

The ``version`` value is only checked to be a string here; whether it is supported is
decided at unseal time (upstream does the same).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import ClassVar, Final, NoReturn

from custodes.sealed.errors import SealedPayloadError
from custodes.types.json import JsonObject

VERSION: Final = "0.1.0"
WRAP_A256GCM: Final = "A256GCM"
WRAP_A256CTR: Final = "A256CTR"
WRAP_TYPES: Final = frozenset({WRAP_A256GCM, WRAP_A256CTR})


def _fail(msg: str) -> NoReturn:
    raise SealedPayloadError(msg)


def _string(obj: JsonObject, name: str, *, empty_ok: bool = False) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        _fail(f"payload member {name!r} is missing or not a string")
    if not value and not empty_ok:
        _fail(f"payload member {name!r} is empty")
    return value


def _object(obj: JsonObject, name: str, *, required: bool) -> JsonObject:
    if name not in obj:
        if required:
            _fail(f"payload member {name!r} is missing")
        return {}
    value = obj[name]
    if not isinstance(value, dict):
        _fail(f"payload member {name!r} is not a JSON object")
    return copy.deepcopy(value)


def _check_members(obj: object, type_: str, allowed: tuple[str, ...]) -> JsonObject:
    if not isinstance(obj, dict):
        _fail("payload is not a JSON object")
    if obj.get("type") != type_:
        _fail(f"payload type is {obj.get('type')!r}, expected {type_!r}")
    unknown = set(obj) - set(allowed)
    if unknown:
        _fail(f"{type_} payload has unknown members {sorted(unknown)}")
    return obj


@dataclass(frozen=True, slots=True)
class VaultPayload:
    """A pointer to a secret held by a provider; for ``kbs``, ``name`` is a resource URI."""

    TYPE: ClassVar[str] = "vault"
    MEMBERS: ClassVar[tuple[str, ...]] = (
        "version",
        "type",
        "name",
        "provider",
        "provider_settings",
        "annotations",
    )

    name: str
    provider: str = "kbs"
    provider_settings: JsonObject = field(default_factory=dict)
    annotations: JsonObject = field(default_factory=dict)
    version: str = VERSION

    @classmethod
    def from_json(cls, obj: object) -> VaultPayload:
        checked = _check_members(obj, cls.TYPE, cls.MEMBERS)
        return cls(
            version=_string(checked, "version"),
            name=_string(checked, "name"),
            provider=_string(checked, "provider"),
            provider_settings=_object(checked, "provider_settings", required=True),
            annotations=_object(checked, "annotations", required=False),
        )

    def to_json(self) -> JsonObject:
        return {
            "version": self.version,
            "type": self.TYPE,
            "name": self.name,
            "provider": self.provider,
            "provider_settings": copy.deepcopy(self.provider_settings),
            "annotations": copy.deepcopy(self.annotations),
        }


@dataclass(frozen=True, slots=True)
class EnvelopePayload:
    """The secret itself, encrypted under a data key that a key-encryption key wraps.

    ``encrypted_key``, ``encrypted_data`` and ``iv`` are standard padded base64 text, as on
    the wire; :mod:`custodes.sealed.envelope` decodes them (strictly) when it opens one.
    """

    TYPE: ClassVar[str] = "envelope"
    MEMBERS: ClassVar[tuple[str, ...]] = (
        "version",
        "type",
        "key_id",
        "encrypted_key",
        "encrypted_data",
        "wrap_type",
        "iv",
        "provider",
        "provider_settings",
        "annotations",
    )

    key_id: str
    encrypted_key: str
    encrypted_data: str
    iv: str
    provider: str
    wrap_type: str = WRAP_A256GCM
    provider_settings: JsonObject = field(default_factory=dict)
    annotations: JsonObject = field(default_factory=dict)
    version: str = VERSION

    @classmethod
    def from_json(cls, obj: object) -> EnvelopePayload:
        checked = _check_members(obj, cls.TYPE, cls.MEMBERS)
        wrap_type = _string(checked, "wrap_type")
        if wrap_type not in WRAP_TYPES:
            _fail(f"envelope wrap_type {wrap_type!r} is not one of {sorted(WRAP_TYPES)}")
        return cls(
            version=_string(checked, "version"),
            key_id=_string(checked, "key_id"),
            encrypted_key=_string(checked, "encrypted_key"),
            # Empty plaintext encrypts to a bare tag, so this is never empty either.
            encrypted_data=_string(checked, "encrypted_data"),
            wrap_type=wrap_type,
            iv=_string(checked, "iv"),
            provider=_string(checked, "provider"),
            provider_settings=_object(checked, "provider_settings", required=True),
            annotations=_object(checked, "annotations", required=False),
        )

    def to_json(self) -> JsonObject:
        return {
            "version": self.version,
            "type": self.TYPE,
            "key_id": self.key_id,
            "encrypted_key": self.encrypted_key,
            "encrypted_data": self.encrypted_data,
            "wrap_type": self.wrap_type,
            "iv": self.iv,
            "provider": self.provider,
            "provider_settings": copy.deepcopy(self.provider_settings),
            "annotations": copy.deepcopy(self.annotations),
        }


Payload = VaultPayload | EnvelopePayload


def parse_payload(obj: object) -> Payload:
    """The payload variant named by its ``type`` member, or ``SealedPayloadError``."""
    if not isinstance(obj, dict):
        _fail("payload is not a JSON object")
    type_ = obj.get("type")
    if type_ == VaultPayload.TYPE:
        return VaultPayload.from_json(obj)
    if type_ == EnvelopePayload.TYPE:
        return EnvelopePayload.from_json(obj)
    _fail(f"unknown sealed secret type {type_!r} (expected 'vault' or 'envelope')")
