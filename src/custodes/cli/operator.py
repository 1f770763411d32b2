"""`custodes operator`: the broker operator's commands, over the operator API.

The operator creates tenants (with their first identities), lists, suspends and resumes them,
and nothing else: it has no identity inside any tenant, so it cannot read a tenant's secrets,
policies or audit stream, nor change its identities after creation (the tenant's own admins
do that: `custodes admin identity`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from custodes.cli._common import add_url
from custodes.cli._common import operator_client as _client
from custodes.cli._output import add_output_format, emit, rfc3339
from custodes.cli.admin_identity import add_credentials, add_ttl
from custodes.errors import ConfigError

if TYPE_CHECKING:
    from custodes.types.json import Json, JsonObject


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "operator",
        help="create, list, suspend and resume tenants (broker operator)",
        description=(
            "Manage the broker's tenants as its operator (a key in [operator] public_keys). "
            "Every call carries a short-lived JWT signed with your operator key, naming your "
            "subject and the broker's URL. The operator can read nothing inside a tenant."
        ),
        examples=[
            "export CUSTODES_URL=https://broker:8080 CUSTODES_OPERATOR_KEY=operator.pem",
            "custodes operator tenant create bank --admin alice=alice.pub.pem",
            "custodes operator tenant list",
            "custodes operator tenant suspend bank",
        ],
    )
    add_url(p)
    add_credentials(p, role="operator")
    groups = p.add_subparsers(dest="group", metavar="GROUP", required=True)

    ten = groups.add_parser("tenant", help="tenants: create, list, get, suspend, resume")
    ta = ten.add_subparsers(dest="action", metavar="ACTION", required=True)
    tc = ta.add_parser(
        "create",
        help="create a tenant with its first identities (at least one admin)",
        examples=[
            "custodes operator tenant create bank --admin alice=alice.pub.pem "
            "--auditor carol=carol.pub.pem",
        ],
    )
    tc.add_argument("tenant", help="tenant id: lower-case letters, digits, inner hyphens")
    for role in ("admin", "auditor"):
        tc.add_argument(
            f"--{role}",
            action="append",
            default=[],
            metavar="SUBJECT=PUBLIC_KEY.pem",
            help=f"an identity with role {role} (repeatable)",
        )
    add_output_format(tc)
    tc.set_defaults(func=_tenant_create)
    tl = ta.add_parser(
        "list", help="tenant ids", examples=["custodes operator tenant list -o json"]
    )
    add_output_format(tl)
    tl.set_defaults(func=_tenant_list)
    for name, text in (
        ("get", "a tenant's status"),
        ("suspend", "refuse every request to the tenant, guests included"),
        ("resume", "make a suspended tenant active again"),
    ):
        a = ta.add_parser(name, help=text, examples=[f"custodes operator tenant {name} bank"])
        a.add_argument("tenant")
        add_output_format(a)
        a.set_defaults(func=_tenant_status, status_action=name)

    tok = groups.add_parser(
        "token",
        help="print a short-lived operator token (for curl)",
        examples=[
            'curl -H "Authorization: Bearer $(custodes operator token)" '
            '"$CUSTODES_URL/operator/v0/tenants"',
        ],
    )
    add_ttl(tok)
    tok.set_defaults(func=_token)


def _identities(args: argparse.Namespace) -> list[Json]:
    """``--admin``/``--auditor SUBJECT=FILE`` as the operator API's identity objects."""
    identities: list[Json] = []
    for role in ("admin", "auditor"):
        for spec in getattr(args, role):
            subject, sep, path = spec.partition("=")
            if not sep or not subject or not path:
                raise ConfigError(f"--{role} {spec!r}: expected SUBJECT=PUBLIC_KEY.pem")
            try:
                pem = Path(path).read_text(encoding="ascii")
            except (OSError, UnicodeDecodeError) as e:
                raise ConfigError(f"--{role} {subject}: cannot read {path}: {e}") from e
            identities.append({"subject": subject, "role": role, "public_key": pem})
    if not any(isinstance(i, dict) and i["role"] == "admin" for i in identities):
        raise ConfigError("a tenant needs at least one --admin SUBJECT=PUBLIC_KEY.pem")
    return identities


def _shown(tenant: JsonObject) -> Json:
    created = tenant.get("created")
    if isinstance(created, int):
        return {**tenant, "created": rfc3339(created)}
    return tenant


def _tenant_create(args: argparse.Namespace) -> int:
    identities = _identities(args)
    with _client(args) as client:
        tenant = client.create_tenant(args.tenant, identities)
    emit(args, _shown(tenant))
    return 0


def _tenant_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        tenants: list[Json] = list(client.list_tenants())
    emit(args, tenants)
    return 0


def _tenant_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        if args.status_action == "get":
            tenant = client.get_tenant(args.tenant)
        else:
            tenant = client.set_status(args.tenant, args.status_action)
    emit(args, _shown(tenant))
    return 0


def _token(args: argparse.Namespace) -> int:
    with _client(args) as client:
        print(client.token(lifetime=args.ttl))
    sys.stdout.flush()
    return 0
