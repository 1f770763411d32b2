"""Options and helpers shared by the command modules."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from custodes.errors import ConfigError, InvalidResourcePath
from custodes.protocol.resource import ResourcePath, ResourceUri

if TYPE_CHECKING:
    from custodes.admin_client import AdminClient, OperatorClient

_Client = TypeVar("_Client")


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


def add_fetch_in_tee(
    p: argparse.ArgumentParser,
    *,
    what: str,
    url_in: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup | None = None,
) -> None:
    """``--url``, ``--cacert``, ``--tee`` and ``--tcti`` of a command that also works offline
    and, given ``--url`` inside a TEE, attests to that broker and fetches ``what`` (``url_in``:
    the group ``--url`` is one choice of). No ``$CUSTODES_URL`` default, unlike
    :func:`add_url`: an admin shell often sets it for `custodes admin`, and such a command must
    not start attesting unless asked to."""
    (url_in or p).add_argument(
        "--url", help=f"inside a TEE: attest to this broker and fetch {what}"
    )
    add_cacert(p)
    p.add_argument("--tee", help="attester with --url (default: detect; 'sample' for tests)")
    p.add_argument("--tcti", help="TPM to use with --tee tpm")


def require_url(args: argparse.Namespace) -> str:
    if not args.url:
        raise ConfigError("no broker URL: pass --url or set CUSTODES_URL")
    url: str = args.url
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"--url must start with http:// or https://, got {url!r}")
    return url


def role_env(role: str) -> str:
    """The prefix of a role's environment variables: ``CUSTODES_ADMIN`` (``_KEY``,
    ``_SUBJECT``, ``_AUDIENCE``), ``CUSTODES_OPERATOR``."""
    return f"CUSTODES_{role.upper()}"


def admin_client(args: argparse.Namespace, *, needed_for: str | None = None) -> AdminClient:
    """The admin API client of the options ``add_credentials(role="admin")`` and ``add_url``
    declare (URL, key, subject, audience, CA); the key is read here, so a bad one is reported
    before any request. ``needed_for``: the option that needs the broker, named when the key
    is missing."""
    from custodes.admin_client import AdminClient

    return _signed_client(AdminClient, "admin", args, needed_for)


def operator_client(args: argparse.Namespace) -> OperatorClient:
    """:func:`admin_client` for ``custodes operator``: the operator API, the operator's key."""
    from custodes.admin_client import OperatorClient

    return _signed_client(OperatorClient, "operator", args, None)


def _signed_client(
    client: Callable[..., _Client], role: str, args: argparse.Namespace, needed_for: str | None
) -> _Client:
    from custodes.admin_client import load_admin_key

    if args.key is None:
        env = f"{role_env(role)}_KEY"
        if needed_for is None:
            raise ConfigError(f"no {role} key: pass --key FILE or set {env}")
        raise ConfigError(f"{needed_for} needs the {role} key: --key FILE or {env}")
    return client(
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


def resource_uri_arg(text: str) -> ResourceUri:
    """argparse ``type=`` for an option that takes ``kbs:///repo/type/tag`` only."""
    try:
        return ResourceUri.parse(text)
    except InvalidResourcePath as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from e


def read_limited(path: str | Path, limit: int, what: str, *, allow_stdin: bool = False) -> bytes:
    """At most ``limit`` bytes of ``path`` (``-``: standard input, when allowed); a
    ``ConfigError`` naming ``what`` when unreadable or larger."""
    try:
        if str(path) == "-" and allow_stdin:
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(limit + 1)
    except OSError as e:
        raise ConfigError(f"cannot read {what} {path}: {e.strerror or e}") from e
    if len(data) > limit:
        raise ConfigError(f"{what} {path} is larger than {limit} bytes")
    return data


def write_output(
    data: bytes, output: Path | None, *, private: bool = True, report: bool = False
) -> None:
    """``data`` to stdout, or to ``output`` complete or not at all (mode 0600 unless
    ``private=False``; a missing directory or a directory target is an error). ``report``:
    say on stderr how many bytes the file got (stdout is the data itself)."""
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    from custodes._internal.atomic import write_atomic

    write_atomic(output, data, private=private)
    if report:
        print(f"wrote {len(data)} bytes to {output}", file=sys.stderr)


def cacert_given(args: argparse.Namespace) -> bool:
    """Whether ``--cacert`` was on the command line (not only ``$CUSTODES_CACERT``, which a
    shell may set for every command)."""
    return args.cacert is not None and str(args.cacert) != os.environ.get(CACERT_ENV)
