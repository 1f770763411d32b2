"""``custodes serve`` configuration: one TOML file, every limit a named setting.

The documented sample is ``docs/serve.sample.toml``; a test loads it, so it cannot drift.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from custodes.errors import ConfigError

CONFIG_VERSION = 1
# ASCII digits only: int() would also take " 80", "8_0" or non-ASCII digits.
_PORT = re.compile(r"[0-9]{1,5}")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    listen: str = "127.0.0.1:8080"
    data_dir: Path = Path("custodes-data")
    tls_cert: Path | None = None
    tls_key: Path | None = None

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
    auditor_keys: tuple[Path, ...] = ()
    leeway_seconds: int = 60
    max_token_lifetime_seconds: int = 24 * 3600


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    public_keys: tuple[Path, ...] = ()


@dataclass(frozen=True, slots=True)
class AttestationConfig:
    unsafe_allow_sample_tee: bool = False
    unsafe_allow_rsa1_5: bool = False
    snp_vcek_store_dir: Path | None = None
    snp_kds_url: str = ""
    tdx_collateral: Path | None = None
    tdx_pccs_url: str = ""


@dataclass(frozen=True, slots=True)
class StorageConfig:
    backend: str = "sqlite"
    path: Path | None = None
    dsn: str = ""
    master_key_file: Path | None = None
    master_key_env: str = "CUSTODES_MASTER_KEY"


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
        if (self.server.tls_cert is None) != (self.server.tls_key is None):
            raise ConfigError("server.tls_cert and server.tls_key must be given together")
        for section in (self.limits,):
            for f in fields(section):
                value = getattr(section, f.name)
                if not isinstance(value, int) or value <= 0:
                    raise ConfigError(f"limits.{f.name} must be a positive integer")
        if self.token.ttl_seconds <= 0 or self.token.leeway_seconds < 0:
            raise ConfigError("token.ttl_seconds must be > 0 and token.leeway_seconds >= 0")
        if self.admin.leeway_seconds < 0 or self.admin.max_token_lifetime_seconds <= 0:
            raise ConfigError(
                "admin.leeway_seconds must be >= 0 and admin.max_token_lifetime_seconds > 0"
            )
        if self.storage.backend not in ("sqlite", "postgres"):
            raise ConfigError(
                f"storage.backend {self.storage.backend!r} is not supported "
                "(supported: sqlite, postgres)"
            )
        if self.config_version != CONFIG_VERSION:
            raise ConfigError(
                f"config_version {self.config_version} is not supported (expected {CONFIG_VERSION})"
            )
        return self


_SECTIONS: dict[str, type[Any]] = {
    "server": ServerConfig,
    "limits": LimitsConfig,
    "token": TokenConfig,
    "admin": AdminConfig,
    "operator": OperatorConfig,
    "attestation": AttestationConfig,
    "storage": StorageConfig,
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
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e.strerror}") from e
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from e
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
