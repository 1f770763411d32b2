"""What admin and operator JWTs claim, shared by the client that mints them and the broker
that checks them: the subject (``sub``) and the audience (``aud``).

A subject is 1-128 characters of letters, digits and ``._@+-``, starting with a letter or a
digit: it is written into the audit log and addressed in URLs (``/identities/<subject>``).

An admin token names the tenant's KBS base URL (``https://broker`` for the default tenant,
``https://broker/tenants/<tenant>`` for any other), an operator token names
``https://broker/operator``. The client derives it from the URL it sends the request to; the
broker accepts it only if it is one of its own base URLs (``server.public_urls``, or the
address it listens on) with this tenant's path. So a token minted for another broker, or for
another tenant of this one, is refused here even though its signature is good.

Both sides compare :func:`normalize` d URLs: scheme and host lower-cased, the port explicit,
no trailing ``/``; never by prefix.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final
from urllib.parse import urlsplit

from custodes.errors import ConfigError

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
OPERATOR_PATH: Final = "/operator"
MAX_AUDIENCE_CHARS: Final = 2048
SUBJECT_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")


def check_subject(subject: str) -> str:
    """``subject`` if it is a valid subject, else ``ConfigError`` saying what one is."""
    if not SUBJECT_RE.fullmatch(subject):
        raise ConfigError(
            f"subject {subject[:40]!r} is not 1-128 letters, digits and ._@+- "
            "(starting with a letter or digit)"
        )
    return subject


def normalize(url: str, what: str = "") -> str:
    """``scheme://host:port/path``; ``ConfigError`` for anything but an http(s) URL with a
    host and no user info, query or fragment. ``what`` names the URL in errors (``broker
    URL``)."""
    if len(url) > MAX_AUDIENCE_CHARS:
        raise ConfigError(f"{what or 'URL'} over {MAX_AUDIENCE_CHARS} characters")
    named = f"{what} {url!r}" if what else repr(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ConfigError(f"{named} is not a valid URL: {e}") from e
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ConfigError(f"{named} must be an http:// or https:// URL with a host")
    if parts.username is not None or parts.query or parts.fragment:
        raise ConfigError(f"{named} must not carry user info, a query or a fragment")
    host = parts.hostname.lower()
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port or _DEFAULT_PORTS[scheme]}{parts.path.rstrip('/')}"


def tenant_path(tenant: str, default_tenant: str) -> str:
    """The path a tenant's KBS base URL adds to the broker's base URL."""
    return "" if tenant == default_tenant else f"/tenants/{tenant}"


def bound_origins(url: str) -> tuple[str, ...]:
    """The base URLs clients on this host can use for a broker listening at ``url``.

    A loopback or wildcard listen address is reachable from this host as ``127.0.0.1``,
    ``localhost`` and ``[::1]``; any other address only as itself. (A wildcard address is
    reachable from elsewhere under names the broker cannot know: ``server.public_urls``.)
    """
    parts = urlsplit(normalize(url))
    host = parts.hostname or ""
    try:
        ip = ipaddress.ip_address(host)
        local = ip.is_loopback or ip.is_unspecified
    except ValueError:
        local = host == "localhost"
    if not local:
        return (normalize(url),)
    return tuple(
        normalize(f"{parts.scheme}://{name}:{parts.port}")
        for name in ("127.0.0.1", "localhost", "[::1]")
    )
