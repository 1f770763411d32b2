"""``custodes serve`` configuration: one TOML file, every limit a named setting.

The documented sample is ``docs/serve.sample.toml``; a test loads it, so it cannot drift.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from custodes._internal.admin_claims import check_subject
from custodes._internal.admin_claims import normalize as normalize_url
from custodes._internal.toml_file import read_toml
from custodes.audit.checkpoint import CheckpointPolicy
from custodes.errors import ConfigError

CONFIG_VERSION = 1
MAX_WORKERS = 256
# ASCII digits only: int() would also take " 80", "8_0" or non-ASCII digits.
_PORT = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    listen: str = "127.0.0.1:8080"
    data_dir: Path = Path("custodes-data")
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # The base URLs clients reach this broker at: admin and operator tokens must name one
    # (their "aud"). Empty: the address it listens on (loopback names for a loopback or
    # wildcard address).
    public_urls: tuple[str, ...] = ()
    # Worker processes sharing the listening socket; 0: one per CPU core.
    workers: int = 0

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        port = self.listen.rsplit(":", 1)[1]
        if not _PORT.fullmatch(port):
            raise ValueError(f"not a port number: {port!r}")
        return int(port)


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_body_bytes: int = 2 * 1024 * 1024
    max_evidence_bytes: int = 1024 * 1024
    max_json_depth: int = 32
    session_ttl_seconds: int = 300
    max_resource_bytes: int = 1024 * 1024
    # The time one evaluation of a tenant's Rego policy may take (custodes.policy.budget).
    policy_seconds: int = 2


@dataclass(frozen=True, slots=True)
class TokenConfig:
    signing_key: Path | None = None
    ttl_seconds: int = 300
    issuer: str = "custodes"
    trusted_keys: tuple[Path, ...] = ()
    leeway_seconds: int = 60


@dataclass(frozen=True, slots=True)
class AdminConfig:
    public_keys: tuple[Path, ...] = ()
    # The subject each of public_keys speaks for (same order); "admin" for a single key.
    subjects: tuple[str, ...] = ()
    auditor_keys: tuple[Path, ...] = ()
    # The subject of each auditor key; "auditor" for a single key.
    auditor_subjects: tuple[str, ...] = ()
    leeway_seconds: int = 60
    max_token_lifetime_seconds: int = 900

    def admin_subjects(self, key_count: int) -> tuple[str, ...]:
        """The subjects of the ``key_count`` admin keys (the generated key counts as one)."""
        return key_subjects(
            "admin.public_keys", "admin.subjects", key_count, self.subjects, "admin"
        )

    def auditor_key_subjects(self) -> tuple[str, ...]:
        return key_subjects(
            "admin.auditor_keys",
            "admin.auditor_subjects",
            len(self.auditor_keys),
            self.auditor_subjects,
            "auditor",
        )


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    public_keys: tuple[Path, ...] = ()
    # The subject each operator key speaks for; "operator" for a single key.
    subjects: tuple[str, ...] = ()

    def key_subjects(self) -> tuple[str, ...]:
        return key_subjects(
            "operator.public_keys",
            "operator.subjects",
            len(self.public_keys),
            self.subjects,
            "operator",
        )


MAX_ADMIN_TOKEN_LIFETIME = 3600


def key_subjects(
    keys_setting: str, subjects_setting: str, key_count: int, subjects: tuple[str, ...], single: str
) -> tuple[str, ...]:
    """Each key's subject: as configured, or ``single`` when there is one key and none is
    configured (so a one-admin config keeps working unchanged). Several keys need their
    subjects spelled out: a key must never speak for another's name."""
    if not subjects:
        if key_count <= 1:
            return (single,) * key_count
        raise ConfigError(
            f"{keys_setting} has {key_count} keys: name the subject each one speaks for in "
            f"{subjects_setting} (same order)"
        )
    if len(subjects) != key_count:
        raise ConfigError(
            f"{subjects_setting} has {len(subjects)} entries for the {key_count} keys of "
            f"{keys_setting}"
        )
    return subjects


@dataclass(frozen=True, slots=True)
class AttestationConfig:
    unsafe_allow_sample_tee: bool = False
    unsafe_allow_rsa1_5: bool = False
    snp_vcek_store_dir: Path | None = None
    snp_kds_url: str = ""
    tdx_collateral: Path | None = None
    tdx_pccs_url: str = ""
    # PEM bundle of the CAs that issue TPM EK certificates; enables AK enrolment by credential
    # activation (POST .../kbs/v0/tpm/enrol). None: enrolment is off.
    tpm_ek_ca_bundle: Path | None = None
    # The client's ``extra-params.attestation-policy-selector`` -> the attestation policy id
    # evaluating its evidence (``<id>_cpu``, ``<id>_gpu``, ... in the tenant's policy store).
    # A TOML table; kept as sorted pairs so the config stays immutable. Unmapped selectors are
    # refused.
    policy_id_map: tuple[tuple[str, str], ...] = ()

    def policy_ids(self) -> dict[str, str]:
        return dict(self.policy_id_map)


# A selector and a policy id: the policy store's id characters. An id leaves room for the
# longest class suffix ("_nvidia-dpu") within the store's 64 characters.
_SELECTOR_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_MAPPED_POLICY_ID = re.compile(r"[A-Za-z0-9._-]{1,53}")


@dataclass(frozen=True, slots=True)
class StorageConfig:
    backend: str = "sqlite"
    path: Path | None = None
    dsn: str = ""
    master_key_file: Path | None = None
    master_key_env: str = "CUSTODES_MASTER_KEY"


@dataclass(frozen=True, slots=True)
class AuditConfig:
    # Signed checkpoints besides the one ending every export (docs/audit.md): one after every
    # N-th entry, one after an entry once T seconds passed since the last; 0 turns a rule off.
    checkpoint_every_entries: int = 1000
    checkpoint_every_seconds: int = 3600

    def checkpoint_policy(self) -> CheckpointPolicy:
        return CheckpointPolicy(self.checkpoint_every_entries, self.checkpoint_every_seconds)


@dataclass(frozen=True, slots=True)
class KbsConfig:
    config_version: int = CONFIG_VERSION
    server: ServerConfig = field(default_factory=ServerConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    token: TokenConfig = field(default_factory=TokenConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    operator: OperatorConfig = field(default_factory=OperatorConfig)
    attestation: AttestationConfig = field(default_factory=AttestationConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)

    @property
    def sqlite_path(self) -> Path:
        return self.storage.path or self.server.data_dir / "custodes.db"

    def insecure_notices(self) -> list[str]:
        """Every insecure mode in force, for the start banner and every token."""
        notices = []
        if self.attestation.unsafe_allow_sample_tee:
            notices.append("sample TEE allowed: evidence from the sample attester proves nothing")
        if self.attestation.unsafe_allow_rsa1_5:
            notices.append("RSA1_5 key transport allowed (padding-oracle prone)")
        return notices

    def validate(self) -> KbsConfig:
        try:
            self.server.port  # noqa: B018 (parse check)
        except (ValueError, IndexError) as e:
            raise ConfigError(f"server.listen must be HOST:PORT, got {self.server.listen!r}") from e
        if not 0 <= self.server.port <= 65535:
            raise ConfigError(f"server.listen port out of range: {self.server.port}")
        if not 0 <= self.server.workers <= MAX_WORKERS:
            raise ConfigError(
                f"server.workers must be 0 (one per core) to {MAX_WORKERS}, "
                f"got {self.server.workers}"
            )
        if (self.server.tls_cert is None) != (self.server.tls_key is None):
            raise ConfigError("server.tls_cert and server.tls_key must be given together")
        for section in (self.limits,):
            for f in fields(section):
                value = getattr(section, f.name)
                if not isinstance(value, int) or value <= 0:
                    raise ConfigError(f"limits.{f.name} must be a positive integer")
        if self.token.ttl_seconds <= 0 or self.token.leeway_seconds < 0:
            raise ConfigError("token.ttl_seconds must be > 0 and token.leeway_seconds >= 0")
        if self.admin.leeway_seconds < 0 or not (
            0 < self.admin.max_token_lifetime_seconds <= MAX_ADMIN_TOKEN_LIFETIME
        ):
            raise ConfigError(
                "admin.leeway_seconds must be >= 0 and admin.max_token_lifetime_seconds "
                f"between 1 and {MAX_ADMIN_TOKEN_LIFETIME}"
            )
        self._validate_identities()
        for selector, policy_id in self.attestation.policy_id_map:
            if not _SELECTOR_NAME.fullmatch(selector):
                raise ConfigError(
                    f"attestation.policy_id_map: selector {selector[:64]!r} must be 1 to 64 "
                    "characters of A-Z a-z 0-9 . _ -"
                )
            if not _MAPPED_POLICY_ID.fullmatch(policy_id):
                raise ConfigError(
                    f"attestation.policy_id_map.{selector}: policy id {policy_id[:64]!r} must "
                    "be 1 to 53 characters of A-Z a-z 0-9 . _ -"
                )
        if self.storage.backend not in ("sqlite", "postgres"):
            raise ConfigError(
                f"storage.backend {self.storage.backend!r} is not supported "
                "(supported: sqlite, postgres)"
            )
        self.audit.checkpoint_policy()  # its own range checks, named as the settings
        if self.config_version != CONFIG_VERSION:
            raise ConfigError(
                f"config_version {self.config_version} is not supported (expected {CONFIG_VERSION})"
            )
        return self

    def _validate_identities(self) -> None:
        for url in self.server.public_urls:
            try:
                normalize_url(url)
            except ConfigError as e:
                raise ConfigError(f"server.public_urls: {e}") from e
        named = [
            *(self.admin.subjects or ("admin",)),
            *self.admin.auditor_key_subjects(),
        ]
        self.admin.admin_subjects(max(1, len(self.admin.public_keys)))
        for subject in (*named, *self.operator.key_subjects()):
            check_subject(subject)
        if len(set(named)) != len(named):
            raise ConfigError("admin.subjects and admin.auditor_subjects must all differ")


_SECTIONS: dict[str, type[Any]] = {
    "server": ServerConfig,
    "limits": LimitsConfig,
    "token": TokenConfig,
    "admin": AdminConfig,
    "operator": OperatorConfig,
    "attestation": AttestationConfig,
    "storage": StorageConfig,
    "audit": AuditConfig,
}


def _coerce(section: str, cls: type[Any], raw: object, base_dir: Path) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"[{section}] must be a table")
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"unknown setting {section}.{key} (known: {', '.join(known)})")
        default = getattr(cls(), key)
        annotation = str(known[key].type)
        if "Path" in annotation and "tuple" in annotation:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{section}.{key} must be a list of paths")
            values[key] = tuple(_path(v, base_dir) for v in value)
        elif "Path" in annotation:
            if not isinstance(value, str):
                raise ConfigError(f"{section}.{key} must be a path string")
            # "" means "not set" only where the setting is optional.
            if not value and default is not None:
                raise ConfigError(f"{section}.{key} must not be empty")
            values[key] = _path(value, base_dir) if value else None
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{section}.{key} must be true or false")
            values[key] = value
        elif isinstance(default, int):
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"{section}.{key} must be an integer")
            values[key] = value
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise ConfigError(f"{section}.{key} must be a string")
            values[key] = value
        elif annotation.startswith("tuple[tuple[str, str]"):
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise ConfigError(f"{section}.{key} must be a table of strings")
            values[key] = tuple(sorted(value.items()))
        elif isinstance(default, tuple):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{section}.{key} must be a list of strings")
            values[key] = tuple(value)
        else:  # pragma: no cover - every field type is handled above
            raise ConfigError(f"{section}.{key}: unsupported type")
    return replace(cls(), **values)


def _path(value: str, base_dir: Path) -> Path:
    try:
        p = Path(value).expanduser()
    except RuntimeError as e:  # "~user" naming no known user
        raise ConfigError(f"cannot expand path {value!r}: {e}") from e
    return p if p.is_absolute() else base_dir / p


def load_config(path: Path | None) -> KbsConfig:
    """Read and validate a config file; ``None`` gives the defaults.

    Relative paths in the file are resolved against the file's directory.
    """
    if path is None:
        return KbsConfig().validate()
    raw = read_toml(path, "config")
    base_dir = path.resolve().parent
    version = raw.pop("config_version", CONFIG_VERSION)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ConfigError("config_version must be an integer")
    sections: dict[str, Any] = {}
    for key, value in raw.items():
        cls = _SECTIONS.get(key)
        if cls is None:
            raise ConfigError(f"unknown section [{key}] (known: {', '.join(_SECTIONS)})")
        sections[key] = _coerce(key, cls, value, base_dir)
    return KbsConfig(config_version=version, **sections).validate()
