"""The TLS trust of custodes's HTTP clients: the system's roots, or one CA file.

The CA file is loaded here, before any request, so that a wrong ``--cacert`` (missing, a
directory, not PEM) is one precise error naming the file, not an ``ssl`` traceback from deep
inside the HTTP client.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from custodes._internal.private_files import read_private_key_file
from custodes.errors import ConfigError


class CaCertError(ConfigError):
    """A CA certificate file, or a server's TLS certificate and key, cannot be used."""

    code = "cacert"


def tls_verify(ca_file: Path | None) -> ssl.SSLContext | bool:
    """What to pass as httpx's ``verify``: ``True`` (the default roots) without a CA file,
    else a context that trusts only the certificates in ``ca_file``."""
    if ca_file is None:
        return True
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except FileNotFoundError:
        raise CaCertError(f"the CA certificate {ca_file} does not exist (check --cacert)") from None
    except IsADirectoryError:
        raise CaCertError(
            f"the CA certificate {ca_file} is a directory; name the PEM file"
        ) from None
    except ssl.SSLError as e:
        raise CaCertError(
            f"the CA certificate {ca_file} holds no PEM certificate ({e.reason or e})"
        ) from None
    except OSError as e:
        raise CaCertError(f"cannot read the CA certificate {ca_file}: {e.strerror}") from None


def check_server_pair(cert: Path, key: Path, *, named_by: str = "server.tls_cert/tls_key") -> None:
    """Load a server's TLS certificate and key once, before anything else starts: a missing
    file or a key that does not match is one error naming the files (uvicorn would report
    a bare ``[Errno 2]`` only after the broker had started everything else)."""
    for what, path in (("certificate", cert), ("key", key)):
        if not path.is_file():
            problem = "is a directory" if path.is_dir() else "does not exist"
            raise CaCertError(f"the TLS {what} {path} {problem} ({named_by})")
    # The key is held to the rule of every private key custodes reads (owner and mode, with
    # the chmod in the message), before the TLS library reads it.
    read_private_key_file(key, "TLS private key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(cert), str(key))
    except ssl.SSLError as e:
        raise CaCertError(
            f"the TLS certificate {cert} and key {key} do not load as a pair "
            f"({e.reason or 'not PEM, or the key does not match the certificate'})"
        ) from None
    except OSError as e:
        raise CaCertError(
            f"cannot read the TLS certificate {cert} or key {key}: {e.strerror}"
        ) from None
