"""The init-data document: its model, the strict parser, the digest and the claims.

Format (Trustee ``kbs/docs/initdata.md``, Kata ``initdata.rs``): ``version = "0.1.0"`` (the only
accepted value), ``algorithm`` one of ``sha256``/``sha384``/``sha512`` (lower case, no hyphen:
the IANA spelling ``sha-256`` in the upstream spec text is refused by every upstream parser),
and a ``[data]`` table of string to string. No other top-level key is accepted. The digest is
the hash of the raw UTF-8 bytes exactly as given: no canonicalisation, so any whitespace change
changes it. The digest is what the TEE's launch field (HOSTDATA, MRCONFIGID, PCR 8) must hold;
:mod:`custodes.initdata.binding` says how.

Claims (``init_data_claims`` in the annotated evidence) follow Trustee: the ``[data]`` table
with ``aa.toml`` and ``cdh.toml`` parsed from TOML into objects, and ``policy.rego`` (the Kata
agent policy, large) replaced by ``agent_policy_claims``: the value of
``data.agent_policy.policy_data``, evaluated by the Rego engine, which must be one constant
object (:mod:`custodes.initdata.agent_policy` says what is refused and why; Trustee searches
the text for the last ``policy_data := {``, which a comment can fake). A ``policy.rego``
without ``policy_data`` contributes no ``agent_policy_claims``; one that does not compile is
refused. TOML dates and times inside ``aa.toml``/``cdh.toml`` become RFC 3339 strings.

This module is at the bottom of the import graph: the broker and the guest both use it.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

from custodes.initdata.errors import InitDataError, InitDataTooLarge
from custodes.types.json import Json, JsonObject

HashAlgorithmName = Literal["sha256", "sha384", "sha512"]

INITDATA_VERSION: Final = "0.1.0"
MAX_INITDATA_BYTES: Final = 1 << 20
ALGORITHMS: Final[tuple[HashAlgorithmName, ...]] = ("sha256", "sha384", "sha512")
AA_CONFIG: Final = "aa.toml"
CDH_CONFIG: Final = "cdh.toml"
AGENT_POLICY: Final = "policy.rego"
AGENT_POLICY_CLAIMS: Final = "agent_policy_claims"
_TOML_ENTRIES: Final = (AA_CONFIG, CDH_CONFIG)


def check_algorithm(algorithm: object) -> HashAlgorithmName:
    """``algorithm`` as a supported hash name, or ``InitDataError`` saying what is accepted."""
    if algorithm in ALGORITHMS:
        return algorithm
    hint = ""
    if isinstance(algorithm, str):
        spelled = algorithm.lower().replace("-", "").replace("_", "")
        if spelled in ALGORITHMS:
            hint = f" (write {spelled!r}: lower case, no hyphen)"
    raise InitDataError(
        f"init-data algorithm {algorithm!r} is not one of {', '.join(ALGORITHMS)}{hint}"
    )


def _json_from_toml(value: object) -> Json:
    if isinstance(value, dict):
        return {k: _json_from_toml(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_from_toml(v) for v in value]
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return value


@dataclass(frozen=True, slots=True)
class InitData:
    """A parsed init-data document; ``raw`` is the exact text that ``digest`` covers."""

    version: str
    algorithm: HashAlgorithmName
    data: Mapping[str, str]
    raw: str
    digest: bytes

    @classmethod
    def from_bytes(cls, raw: bytes) -> InitData:
        """Parse the exact bytes of a document (UTF-8, as hashed)."""
        if len(raw) > MAX_INITDATA_BYTES:
            raise InitDataTooLarge(f"init-data is larger than {MAX_INITDATA_BYTES} bytes")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InitDataError(f"init-data is not UTF-8: {e}") from e
        return cls.parse(text)

    @classmethod
    def parse(cls, toml_text: str) -> InitData:
        """Parse and digest ``toml_text``; ``InitDataError`` for anything but version 0.1.0
        with a known algorithm and a ``[data]`` table of strings."""
        if not isinstance(toml_text, str):
            raise InitDataError("init-data must be TOML text")
        try:
            raw = toml_text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InitDataError(f"init-data is not encodable as UTF-8: {e}") from e
        if len(raw) > MAX_INITDATA_BYTES:
            raise InitDataTooLarge(f"init-data is larger than {MAX_INITDATA_BYTES} bytes")
        try:
            doc = tomllib.loads(toml_text)
        except (tomllib.TOMLDecodeError, RecursionError) as e:
            raise InitDataError(f"init-data is not TOML: {e}") from e
        extra = sorted(set(doc) - {"version", "algorithm", "data"})
        if extra:
            raise InitDataError(f"init-data has unknown top-level keys {extra}")
        if not doc:
            raise InitDataError(
                f'init-data is empty: expected version = "{INITDATA_VERSION}", algorithm and '
                "a [data] table"
            )
        version = doc.get("version")
        if version is None:
            raise InitDataError(
                f'init-data has no version: expected version = "{INITDATA_VERSION}"'
            )
        if version != INITDATA_VERSION:
            raise InitDataError(f"init-data version {version!r} is not {INITDATA_VERSION!r}")
        algorithm = check_algorithm(doc.get("algorithm"))
        data = doc.get("data")
        if not isinstance(data, dict):
            raise InitDataError("init-data has no [data] table")
        for key, value in data.items():
            if not isinstance(value, str):
                raise InitDataError(
                    f"init-data entry {key!r} is a {type(value).__name__}, not a string"
                )
        return cls(
            version=version,
            algorithm=algorithm,
            data=MappingProxyType(dict(data)),
            raw=toml_text,
            digest=hashlib.new(algorithm, raw).digest(),
        )

    @property
    def raw_bytes(self) -> bytes:
        """The exact bytes the digest covers."""
        return self.raw.encode("utf-8")

    def claims(self) -> JsonObject:
        """``init_data_claims`` as Trustee exposes them to policies."""
        if AGENT_POLICY_CLAIMS in self.data:
            raise InitDataError(f"init-data entry name {AGENT_POLICY_CLAIMS!r} is reserved")
        claims: JsonObject = {}
        for key, value in self.data.items():
            if key in _TOML_ENTRIES:
                try:
                    claims[key] = _json_from_toml(tomllib.loads(value))
                except (tomllib.TOMLDecodeError, RecursionError) as e:
                    raise InitDataError(f"init-data entry {key!r} is not TOML: {e}") from e
            elif key == AGENT_POLICY:
                # Evaluated, not searched for. Imported here: the Rego engine is loaded only
                # by what reads an agent policy (the guest never does).
                from custodes.initdata.agent_policy import parse_agent_policy

                agent_policy = parse_agent_policy(value).policy_data
                if agent_policy is not None:
                    # A copy: the parsed policy is cached and shared between attestations.
                    claims[AGENT_POLICY_CLAIMS] = copy.deepcopy(agent_policy)
            else:
                claims[key] = value
        return claims
