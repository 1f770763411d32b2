"""Resolving a sealed secret's ``kid`` to its verification key.

As upstream's guest: a ``kid`` that is a ``kbs://`` resource URI names a public JWK held by
the broker (fetching it needs attestation); any other ``kid`` is a file name in a local key
directory (upstream: ``/run/confidential-containers/cdh/sealed-secret/``). The file name is
never trusted as a path: separators, ``.``/``..`` and links that leave the directory are
refused with :class:`~custodes.sealed.errors.KidTraversal`. Links that stay inside are
followed, because Kubernetes projects volume files as links into a ``..data`` directory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Final, Protocol

from cryptography.hazmat.primitives.asymmetric import ec

from custodes.errors import ConfigError, InvalidResourcePath, NotFound
from custodes.protocol.resource import ResourceUri
from custodes.sealed.errors import KidTraversal, SealedKidError, UnknownKid
from custodes.sealed.keys import MAX_KEY_FILE_BYTES, parse_jwk_bytes, public_key_from_jwk

DEFAULT_KEY_DIRECTORY: Final = Path("/run/confidential-containers/cdh/sealed-secret")
URI_SCHEME: Final = "kbs"
MAX_FILE_NAME: Final = 255

Fetch = Callable[[ResourceUri], bytes]


class KidResolver(Protocol):
    def public_key(self, kid: str) -> ec.EllipticCurvePublicKey:
        """The P-256 verification key named by ``kid``; a ``SealedKidError`` if none."""
        ...


class DirectoryKidResolver:
    """``kid`` is the name of a public JWK file directly inside ``directory``."""

    def __init__(self, directory: Path = DEFAULT_KEY_DIRECTORY) -> None:
        self._directory = directory

    def _path(self, kid: str) -> Path:
        # 1. A bare file name: no separators, no dot names, no NUL, bounded.
        if not kid or len(kid) > MAX_FILE_NAME:
            raise SealedKidError(f"kid is empty or longer than {MAX_FILE_NAME} characters")
        if "/" in kid or "\\" in kid or kid in (".", ".."):
            raise KidTraversal(f"kid {kid!r} is not a plain file name")
        if "\0" in kid:
            raise SealedKidError("kid contains a NUL character")
        # 2. Resolve links; the result must still be inside the directory.
        try:
            root = self._directory.resolve(strict=True)
        except OSError as e:
            raise ConfigError(f"key directory {self._directory} is not usable: {e}") from e
        try:
            target = (root / kid).resolve(strict=True)
        except FileNotFoundError as e:
            raise UnknownKid(f"no verification key file for kid {kid!r}") from e
        except (OSError, RuntimeError) as e:  # RuntimeError: a link loop
            raise UnknownKid(f"verification key file for kid {kid!r} is unusable") from e
        if not target.is_relative_to(root):
            raise KidTraversal(f"kid {kid!r} resolves outside the key directory")
        if not target.is_file():
            raise UnknownKid(f"verification key for kid {kid!r} is not a regular file")
        return target

    def public_key(self, kid: str) -> ec.EllipticCurvePublicKey:
        path = self._path(kid)
        try:
            with path.open("rb") as f:
                raw = f.read(MAX_KEY_FILE_BYTES + 1)
        except OSError as e:
            raise UnknownKid(f"cannot read the verification key for kid {kid!r}") from e
        return public_key_from_jwk(parse_jwk_bytes(raw))


class BrokerKidResolver:
    """``kid`` is a ``kbs:///repo/type/tag`` URI; ``fetch`` returns the public JWK bytes."""

    def __init__(self, fetch: Fetch) -> None:
        self._fetch = fetch

    def public_key(self, kid: str) -> ec.EllipticCurvePublicKey:
        try:
            uri = ResourceUri.parse(kid)
        except InvalidResourcePath as e:
            raise SealedKidError(f"kid {kid!r} is not a usable kbs:// resource URI: {e}") from e
        try:
            raw = self._fetch(uri)
        except NotFound as e:
            raise UnknownKid(f"the broker has no verification key at {kid}") from e
        return public_key_from_jwk(parse_jwk_bytes(raw))


class RoutingKidResolver:
    """Upstream's rule: ``kbs…://`` kids go to the broker, others to the key directory.

    Either side may be left out, and a kid routed to a missing side is an ``UnknownKid``.
    """

    def __init__(
        self,
        *,
        broker: KidResolver | None = None,
        directory: KidResolver | None = None,
    ) -> None:
        self._broker = broker
        self._directory = directory

    def public_key(self, kid: str) -> ec.EllipticCurvePublicKey:
        # "kbs://" and "kbs+<plugin>://" alike; the broker side refuses what it cannot fetch.
        scheme, sep, _ = kid.partition("://")
        is_uri = bool(sep) and (scheme == URI_SCHEME or scheme.startswith(URI_SCHEME + "+"))
        side = self._broker if is_uri else self._directory
        if side is None:
            where = "broker" if is_uri else "key directory"
            raise UnknownKid(f"kid {kid!r} needs a {where}, and none is configured")
        return side.public_key(kid)
