"""The confidential data hub: resources, sealed secrets and credential files, all through the
attestation agent (so a start attests once per broker, however many secrets it needs)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

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
        root = self.agent.config.credentials_root.resolve()
        written = []
        for cred in credentials:
            target = _inside(root, cred.path)
            data = self.get_resource(cred.resource_uri)
            target.parent.mkdir(parents=True, exist_ok=True)
            write_private(target, data.reveal())
            logger.info("credential %s -> %s", cred.resource_uri, target)
            written.append(target)
        return written


class _Cached:
    """Remembers verification keys by kid: a start with many secrets sealed under one key
    fetches that key from the broker once."""

    def __init__(self, inner: KidResolver) -> None:
        self._inner = inner
        self._keys: dict[str, ec.EllipticCurvePublicKey] = {}

    def public_key(self, kid: str) -> ec.EllipticCurvePublicKey:
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
    """Write ``data`` atomically with mode 0600 (a temporary file renamed over ``path``)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
