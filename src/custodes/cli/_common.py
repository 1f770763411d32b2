"""Options and helpers shared by the command modules."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from custodes.errors import ConfigError, InvalidResourcePath
from custodes.protocol.resource import ResourcePath, ResourceUri

if TYPE_CHECKING:
    from custodes.admin_client import AdminClient


def add_url(p: argparse.ArgumentParser, *, required_what: str = "broker") -> None:
    p.add_argument(
        "--url",
        default=os.environ.get("CUSTODES_URL"),
        help=f"base URL of the {required_what}, e.g. http://127.0.0.1:8080 (env CUSTODES_URL)",
    )
    add_cacert(p)


CACERT_ENV = "CUSTODES_CACERT"


def add_cacert(p: argparse.ArgumentParser) -> None:
    """``--cacert``, defaulting to ``$CUSTODES_CACERT`` like ``--url`` to ``$CUSTODES_URL``."""
    p.add_argument(
        "--cacert",
        type=Path,
        default=os.environ.get(CACERT_ENV),
        metavar="PEM",
        help="CA certificate that signed the broker's TLS certificate (env CUSTODES_CACERT)",
    )


def require_url(args: argparse.Namespace) -> str:
    if not args.url:
        raise ConfigError("no broker URL: pass --url or set CUSTODES_URL")
    url: str = args.url
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"--url must start with http:// or https://, got {url!r}")
    return url


def admin_client(args: argparse.Namespace) -> AdminClient:
    """The admin API client of ``custodes admin``'s common options (URL, key, subject,
    audience, CA); the key is read here, so a bad one is reported before any request."""
    from custodes.admin_client import AdminClient, load_admin_key

    if args.key is None:
        raise ConfigError("no admin key: pass --key FILE or set CUSTODES_ADMIN_KEY")
    return AdminClient(
        require_url(args),
        load_admin_key(args.key),
        subject=args.subject,
        audience=args.audience,
        ca_file=args.cacert,
    )


def resource_path(text: str) -> ResourcePath:
    """A resource given as ``repo/type/tag`` or ``kbs:///repo/type/tag``."""
    if text.startswith("kbs://"):
        return ResourceUri.parse(text).path
    return ResourcePath.parse(text)


def resource_arg(text: str) -> ResourcePath:
    """argparse ``type=`` wrapper: a clear usage error instead of a traceback."""
    try:
        return resource_path(text)
    except InvalidResourcePath as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def write_output(data: bytes, output: Path | None, *, private: bool = True) -> None:
    """``data`` to stdout, or to ``output`` complete or not at all (mode 0600 unless
    ``private=False``; a missing directory or a directory target is an error)."""
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    from custodes._internal.atomic import write_atomic

    write_atomic(output, data, private=private)


def cacert_given(args: argparse.Namespace) -> bool:
    """Whether ``--cacert`` was on the command line (not only ``$CUSTODES_CACERT``, which a
    shell may set for every command)."""
    return args.cacert is not None and str(args.cacert) != os.environ.get(CACERT_ENV)
