"""Guest configuration (``custodes run --config``, ``custodes guest api --config``): one TOML file.

Unlike upstream, a pod may use several brokers, one per workload admin. The host part of a
``kbs://host/repo/type/tag`` URI selects the broker whose ``hosts`` list contains it; a URI
without a host (``kbs:///…``) uses the broker named ``default`` (or the only broker). An unknown
host is an error, never a fallback.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from custodes._internal.toml_file import read_toml
from custodes.errors import ConfigError
from custodes.guest.attester.select import GPU_MODES, GpuMode
from custodes.guest.dataset_launch import DatasetSpec
from custodes.guest.policy_selector import check_policy_selector

KeyType = Literal["ec-p256", "ec-p521", "rsa"]
KEY_TYPES: tuple[KeyType, ...] = ("ec-p256", "ec-p521", "rsa")
CREDENTIALS_ROOT = Path("/run/confidential-containers/cdh/kbs")


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    name: str
    url: str
    hosts: tuple[str, ...]
    cacert: Path | None = None
    # The attestation policy to ask this broker for (a name in its policy_id_map).
    policy_selector: str | None = None


@dataclass(frozen=True, slots=True)
class Credential:
    resource_uri: str
    path: Path


@dataclass(frozen=True, slots=True)
class GuestConfig:
    brokers: tuple[BrokerConfig, ...] = ()
    tee: str | None = None
    tcti: str | None = None
    gpu: GpuMode = "auto"
    key_type: KeyType = "ec-p256"
    credentials: tuple[Credential, ...] = ()
    credentials_root: Path = CREDENTIALS_ROOT
    secret_mounts: tuple[Path, ...] = ()
    unseal_failure: Literal["error", "warn"] = "error"
    kid_dir: Path | None = None
    allow_unsigned_sealed: bool = False
    rest_listen: str = "127.0.0.1:8006"
    rest_features: Literal["resource", "attestation", "all"] = "resource"
    datasets: tuple[DatasetSpec, ...] = ()

    def broker_for_host(self, host: str | None) -> BrokerConfig:
        """The broker a ``kbs://HOST/…`` URI names (``None``: the default broker)."""
        if not self.brokers:
            raise ConfigError("no broker configured: add a [[brokers]] table or pass --url")
        if host is None or host == "":
            for broker in self.brokers:
                if broker.name == "default":
                    return broker
            if len(self.brokers) == 1:
                return self.brokers[0]
            raise ConfigError(
                "kbs:/// (no host) is ambiguous with several brokers: name one 'default'"
            )
        for broker in self.brokers:
            if host in broker.hosts:
                return broker
        known = ", ".join(h for b in self.brokers for h in b.hosts)
        raise ConfigError(f"no broker is configured for host {host!r} (configured: {known})")

    def with_policy_selector(self, name: str) -> GuestConfig:
        """This configuration with its broker asking for the policy ``name``
        (``--policy-selector``). Selector names are each broker's own, so with several
        brokers the choice belongs in their ``[[brokers]]`` tables, not on the command line."""
        name = check_policy_selector(name, "--policy-selector")
        if len(self.brokers) > 1:
            raise ConfigError(
                "--policy-selector is ambiguous with several brokers: set policy_selector "
                "in each [[brokers]] table instead"
            )
        return replace(self, brokers=tuple(replace(b, policy_selector=name) for b in self.brokers))


def _str(table: dict[str, Any], key: str, where: str, default: str | None = None) -> str | None:
    value = table.get(key, default)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"{where}.{key} must be a string")
    return value


def _check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise ConfigError(f"unknown setting(s) in {where}: {', '.join(sorted(unknown))}")


def _table(raw: dict[str, Any], name: str, allowed: set[str]) -> dict[str, Any]:
    """The ``[name]`` table (empty when absent), with no setting outside ``allowed``."""
    table = raw.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"[{name}] must be a table")
    _check_keys(table, allowed, name)
    return table


def _tables(
    raw: dict[str, Any], name: str, allowed: set[str]
) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """Each table of the ``[[name]]`` array (none when absent) with its index and its place
    in errors (``name[i]``), with no setting outside ``allowed``."""
    tables = raw.get(name, [])
    if not isinstance(tables, list):
        raise ConfigError(f"[[{name}]] must be an array of tables")
    for i, table in enumerate(tables):
        where = f"{name}[{i}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where} must be a table")
        _check_keys(table, allowed, where)
        yield i, where, table


def default_hosts(url: str) -> tuple[str, ...]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"broker url must be http(s)://HOST[:PORT], got {url!r}")
    return (parts.netloc,)


def broker_from_url(url: str, cacert: Path | None = None) -> BrokerConfig:
    return BrokerConfig("default", url.rstrip("/"), default_hosts(url), cacert)


def _policy_selector(table: dict[str, Any], where: str) -> str | None:
    name = table.get("policy_selector")
    return None if name is None else check_policy_selector(name, f"{where}.policy_selector")


def parse_config(raw: dict[str, Any], base_dir: Path) -> GuestConfig:
    _check_keys(
        raw, {"brokers", "attester", "credentials", "run", "sealed", "rest", "datasets"}, "config"
    )

    def path(value: str) -> Path:
        p = Path(value)
        return p if p.is_absolute() else base_dir / p

    brokers: list[BrokerConfig] = []
    broker_keys = {"name", "url", "hosts", "cacert", "policy_selector"}
    for i, where, b in _tables(raw, "brokers", broker_keys):
        url = _str(b, "url", where)
        if not url:
            raise ConfigError(f"{where}.url is required")
        hosts = b.get("hosts")
        if hosts is None:
            hosts_t = default_hosts(url)
        elif isinstance(hosts, list) and all(isinstance(h, str) and h for h in hosts):
            hosts_t = tuple(hosts)
        else:
            raise ConfigError(f"{where}.hosts must be a list of HOST[:PORT] strings")
        cacert = _str(b, "cacert", where)
        name = _str(b, "name", where) or ("default" if i == 0 else f"broker{i}")
        brokers.append(
            BrokerConfig(
                name,
                url.rstrip("/"),
                hosts_t,
                path(cacert) if cacert else None,
                _policy_selector(b, where),
            )
        )
    names = [b.name for b in brokers]
    if len(set(names)) != len(names):
        raise ConfigError("broker names must be unique")
    all_hosts = [h for b in brokers for h in b.hosts]
    if len(set(all_hosts)) != len(all_hosts):
        raise ConfigError("a host may select only one broker")

    attester = _table(raw, "attester", {"tee", "tcti", "key_type", "gpu"})
    key_type = attester.get("key_type", "ec-p256")
    if key_type not in KEY_TYPES:
        raise ConfigError(f"attester.key_type must be one of {', '.join(KEY_TYPES)}")
    gpu = attester.get("gpu", "auto")
    if gpu not in GPU_MODES:
        raise ConfigError(f"attester.gpu must be one of {', '.join(GPU_MODES)}")

    credentials: list[Credential] = []
    for _, where, c in _tables(raw, "credentials", {"resource_uri", "path"}):
        uri, target = _str(c, "resource_uri", where), _str(c, "path", where)
        if not uri or not target:
            raise ConfigError(f"{where} needs resource_uri and path")
        credentials.append(Credential(uri, Path(target)))

    run = _table(raw, "run", {"secret_mounts", "unseal_failure", "credentials_root"})
    mounts = run.get("secret_mounts", [])
    if not isinstance(mounts, list) or not all(isinstance(m, str) for m in mounts):
        raise ConfigError("run.secret_mounts must be a list of directories")
    failure = run.get("unseal_failure", "error")
    if failure not in ("error", "warn"):
        raise ConfigError("run.unseal_failure must be 'error' or 'warn'")
    creds_root = _str(run, "credentials_root", "run")

    sealed = _table(raw, "sealed", {"kid_dir", "unsafe_allow_unsigned"})
    kid_dir = _str(sealed, "kid_dir", "sealed")
    allow_unsigned = sealed.get("unsafe_allow_unsigned", False)
    if not isinstance(allow_unsigned, bool):
        raise ConfigError("sealed.unsafe_allow_unsigned must be true or false")

    rest = _table(raw, "rest", {"listen", "features"})
    features = rest.get("features", "resource")
    if features not in ("resource", "attestation", "all"):
        raise ConfigError("rest.features must be resource, attestation or all")

    datasets: list[DatasetSpec] = []
    for _, where, d in _tables(raw, "datasets", {"key", "encrypted", "plaintext"}):
        key, enc, plain = (
            _str(d, "key", where),
            _str(d, "encrypted", where),
            _str(d, "plaintext", where),
        )
        if not key or not enc or not plain:
            raise ConfigError(f"{where} needs key, encrypted and plaintext")
        datasets.append(DatasetSpec.of(key, path(enc), path(plain)))

    return GuestConfig(
        brokers=tuple(brokers),
        tee=_str(attester, "tee", "attester"),
        tcti=_str(attester, "tcti", "attester"),
        gpu=gpu,
        key_type=key_type,
        credentials=tuple(credentials),
        credentials_root=path(creds_root) if creds_root else CREDENTIALS_ROOT,
        secret_mounts=tuple(path(m) for m in mounts),
        unseal_failure=failure,
        kid_dir=path(kid_dir) if kid_dir else None,
        allow_unsigned_sealed=allow_unsigned,
        rest_listen=_str(rest, "listen", "rest", "127.0.0.1:8006") or "127.0.0.1:8006",
        rest_features=features,
        datasets=tuple(datasets),
    )


def load_guest_config(path: Path | None) -> GuestConfig:
    if path is None:
        return GuestConfig()
    return parse_config(read_toml(path, "guest config"), path.resolve().parent)
