"""`custodes admin token` and `custodes admin identity`: who the caller is, and who else may
manage the tenant.

Every admin token names its subject (``--subject``, env ``CUSTODES_ADMIN_SUBJECT``, default
``admin``: the key must be registered under that subject) and its audience (the ``--url`` it
is sent to, or ``--audience`` when that URL is not the one the broker knows itself by).
Declared with light imports; the client is imported by the handlers.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Final

from custodes.cli._common import admin_client, role_env
from custodes.cli._output import add_output_format, emit
from custodes.errors import ConfigError

ROLES: Final = ("admin", "auditor")
# The broker's ceiling (admin.max_token_lifetime_seconds) may be lower; it says so.
MAX_TTL_SECONDS: Final = 3600


def add_credentials(
    p: argparse.ArgumentParser | argparse._ArgumentGroup,
    *,
    role: str,
    needed_for: str | None = None,
) -> None:
    """``--key`` (env ``CUSTODES_<ROLE>_KEY``), ``--subject`` and ``--audience``: what
    :func:`custodes.cli._common.admin_client` (``role="admin"``) or ``operator_client`` signs
    with. ``needed_for``: the option that needs them, on a command that works without."""
    env = role_env(role)
    purpose = f", for {needed_for}" if needed_for else ""
    p.add_argument(
        "--key",
        type=Path,
        default=os.environ.get(f"{env}_KEY"),
        help=f"{role} private key, PEM{purpose} (env {env}_KEY)",
    )
    p.add_argument(
        "--subject",
        default=os.environ.get(f"{env}_SUBJECT", role),
        help=f"the subject your key is registered under (env {env}_SUBJECT; default {role})",
    )
    p.add_argument(
        "--audience",
        default=os.environ.get(f"{env}_AUDIENCE"),
        metavar="URL",
        help=(
            "the broker URL the token names, when --url reaches the broker under another name "
            f"(a port-forward, a proxy); default: --url (env {env}_AUDIENCE)"
        ),
    )


def ttl_arg(text: str) -> int:
    """argparse ``type=`` for ``--ttl``: whole seconds, 1 to :data:`MAX_TTL_SECONDS`."""
    if not text.isascii() or not text.isdigit() or not 0 < int(text) <= MAX_TTL_SECONDS:
        raise argparse.ArgumentTypeError(f"--ttl is whole seconds from 1 to {MAX_TTL_SECONDS}")
    return int(text)


def add_ttl(p: argparse.ArgumentParser) -> None:
    """``--ttl`` of a ``token`` command."""
    p.add_argument(
        "--ttl",
        type=ttl_arg,
        default=120,
        help=f"lifetime in seconds (default 120, max {MAX_TTL_SECONDS})",
    )


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tok = groups.add_parser(
        "token",
        help="print a short-lived admin token (for curl)",
        description=(
            "Print a signed admin JWT for one request to --url: it names your subject, the "
            "tenant's URL (aud) and a random jti, and the broker accepts it once, before it "
            "expires. Mint one per request."
        ),
        examples=[
            'curl -H "Authorization: Bearer $(custodes admin token)" '
            '"$CUSTODES_URL/kbs/v0/resource"',
            "custodes admin --url https://broker/tenants/bank --key alice.pem --subject alice "
            "token --ttl 60",
        ],
    )
    add_ttl(tok)
    tok.set_defaults(func=_token)

    ident = groups.add_parser(
        "identity",
        help="the tenant's identities: list, add, remove (not the default tenant)",
        description=(
            "The keys that may manage (role admin) or read (role auditor) this tenant, each "
            "bound to one subject. The default tenant's identities are in the broker's config "
            "file instead. The last admin identity cannot be removed."
        ),
    )
    ia = ident.add_subparsers(dest="action", metavar="ACTION", required=True)
    il = ia.add_parser(
        "list",
        help="subjects and roles",
        examples=["custodes admin --url https://broker/tenants/bank identity list -o json"],
    )
    add_output_format(il)
    il.set_defaults(func=_identity_list)
    iad = ia.add_parser(
        "add",
        help="register a public key under a subject and role",
        examples=[
            "custodes admin identity add carol --role auditor --public-key carol.pub.pem",
        ],
    )
    iad.add_argument("new_subject", metavar="SUBJECT", help="the new identity's subject")
    iad.add_argument("--role", choices=ROLES, required=True)
    iad.add_argument(
        "--public-key", type=Path, required=True, help="its public key, PEM (Ed25519 or P-256)"
    )
    iad.set_defaults(func=_identity_add)
    ir = ia.add_parser(
        "remove",
        help="remove an identity (never the last admin)",
        examples=["custodes admin identity remove carol"],
    )
    ir.add_argument("old_subject", metavar="SUBJECT")
    ir.set_defaults(func=_identity_remove)
    ik = ia.add_parser(
        "keygen",
        help="create a key pair for a new identity (no broker needed)",
        description=(
            "Write an Ed25519 private key to FILE (mode 0600, never overwritten) and its public "
            "key to FILE with .pem replaced by .pub.pem: hand the public key to the tenant's "
            "admin (identity add) or the operator (tenant create)."
        ),
        examples=["custodes admin identity keygen alice.pem   # and alice.pub.pem"],
    )
    ik.add_argument("private_key", type=Path, metavar="FILE")
    ik.set_defaults(func=_identity_keygen)


def _token(args: argparse.Namespace) -> int:
    with admin_client(args) as client:
        print(client.token(lifetime=args.ttl))
    return 0


def _identity_list(args: argparse.Namespace) -> int:
    with admin_client(args) as client:
        identities = client.list_identities()
    emit(args, list(identities))
    return 0


def _identity_add(args: argparse.Namespace) -> int:
    try:
        pem = args.public_key.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read public key {args.public_key}: {e}") from e
    with admin_client(args) as client:
        client.add_identity(args.new_subject, args.role, pem)
    print(f"added {args.role} {args.new_subject}", file=sys.stderr)
    return 0


def _identity_remove(args: argparse.Namespace) -> int:
    with admin_client(args) as client:
        client.remove_identity(args.old_subject)
    print(f"removed {args.old_subject}", file=sys.stderr)
    return 0


def public_key_path(private_key: Path) -> Path:
    name = private_key.name.removesuffix(".pem")
    return private_key.with_name(name + ".pub.pem")


def _identity_keygen(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from custodes._internal.atomic import write_atomic
    from custodes.kbs.keys import write_private_pem

    public = public_key_path(args.private_key)
    if public.exists():
        raise ConfigError(f"{public} exists; not overwriting it")
    key = ed25519.Ed25519PrivateKey.generate()
    try:
        write_private_pem(args.private_key, key)
    except FileExistsError as e:
        raise ConfigError(f"{args.private_key} exists; not overwriting a key") from e
    from cryptography.hazmat.primitives import serialization

    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    write_atomic(public, pem, private=False)
    print(f"wrote {args.private_key} (private, 0600) and {public}", file=sys.stderr)
    return 0
