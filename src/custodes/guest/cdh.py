"""The confidential data hub: resources, sealed secrets and credential files, all through the
attestation agent (so a start attests once per broker, however many secrets it needs)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from custodes._internal.atomic import write_atomic
from custodes.errors import ConfigError
from custodes.guest.agent import AttestationAgent
from custodes.guest.config import Credential
from custodes.protocol.resource import ResourceUri
from custodes.sealed.kids import (
    BrokerKidResolver,
    DirectoryKidResolver,
    KidResolver,
    RoutingKidResolver,
)
from custodes.sealed.unseal import unseal
from custodes.types.secret import Secret

logger = logging.getLogger(__name__)


class ConfidentialDataHub:
    def __init__(self, agent: AttestationAgent) -> None:
        self.agent = agent
        config = agent.config
        # As upstream: kbs:// kids are public keys held by a broker, other kids name files in
        # the key directory.
        self._kids: KidResolver = RoutingKidResolver(
            broker=_Cached(BrokerKidResolver(self._fetch)),
            directory=DirectoryKidResolver(config.kid_dir) if config.kid_dir is not None else None,
        )

    def _fetch(self, uri: ResourceUri) -> bytes:
        return self.agent.client_for(uri).get_resource(uri.path)

    def get_resource(self, uri: str | ResourceUri) -> Secret[bytes]:
        """A broker resource, ``kbs://[host]/repo/type/tag``; the host selects the broker."""
        parsed = ResourceUri.parse(uri) if isinstance(uri, str) else uri
        return Secret(self._fetch(parsed))

    def unseal(self, sealed: str) -> Secret[bytes]:
        """A ``sealed.…`` secret: signature verified, then its value fetched or decrypted."""
        return unseal(
            sealed,
            fetch=self._fetch,
            kids=self._kids,
            allow_unsigned=self.agent.config.allow_unsigned_sealed,
        )

    def fetch_credentials(self, credentials: tuple[Credential, ...]) -> list[Path]:
        """Upstream's ``[[credentials]]``: fetch each resource and write it under the
        credentials root (0600), refusing any path outside it."""
        written = []
        for cred in credentials:
            target = self.credential_target(cred)
            written.append(write_credential(cred, target, self.get_resource(cred.resource_uri)))
        return written

    def credential_target(self, cred: Credential) -> Path:
        """Where ``cred`` goes: under the credentials root, or a :class:`ConfigError`."""
        return _inside(self.agent.config.credentials_root.resolve(), cred.path)


def write_credential(cred: Credential, target: Path, data: Secret[bytes]) -> Path:
    """Write a fetched credential (0600, atomically) where ``credential_target`` put it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    write_private(target, data.reveal())
    logger.info("credential %s -> %s", cred.resource_uri, target)
    return target


class _Cached:
    """Remembers verification keys by kid: a start with many secrets sealed under one key
    fetches that key from the broker once, even when its secrets are unsealed by concurrent
    threads (the lock makes the first fetch of a kid the only one; the others wait for it)."""

    def __init__(self, inner: KidResolver) -> None:
        self._inner = inner
        self._keys: dict[str, ec.EllipticCurvePublicKey] = {}
        self._lock = threading.Lock()

    def public_key(self, kid: str) -> ec.EllipticCurvePublicKey:
        with self._lock:
            key = self._keys.get(kid)
            if key is None:
                key = self._keys[kid] = self._inner.public_key(kid)
            return key


def _inside(root: Path, path: Path) -> Path:
    if any(part in (".", "..") for part in path.parts):
        raise ConfigError(f"credential path {path} must not contain '.' or '..'")
    target = path if path.is_absolute() else root / path
    resolved = target.parent.resolve() / target.name
    if resolved != root and root not in resolved.parents:
        raise ConfigError(f"credential path {path} is outside {root}")
    return resolved


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` atomically with mode 0600 (the shared writer: complete or nothing)."""
    write_atomic(path, data, private=True)
