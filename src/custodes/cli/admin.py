"""`custodes admin`: the workload admin's commands against the broker's admin API."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from pathlib import Path

from custodes.admin_client import AdminClient, load_admin_key
from custodes.cli._common import add_url, require_url, resource_arg
from custodes.errors import ConfigError
from custodes.types.json import Json

EPILOG = """\
examples:
  export CUSTODES_URL=http://127.0.0.1:8080 CUSTODES_ADMIN_KEY=custodes-data/admin-key.pem
  custodes admin resource put default/key/db-password --value 's3cret'
  custodes admin resource put default/key/model --file model.key
  custodes admin resource list
  custodes admin policy set --kind resource my-policy.rego
  custodes admin policy get --kind attestation --id default_cpu
  custodes admin reference-value register svn 1
  custodes admin reference-value register launch_digest abcde
  custodes admin reference-value register major_version 1 --json --single
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "admin",
        help="manage resources, policies and reference values (workload admin)",
        description=(
            "Manage the broker as its workload admin. Every call is authenticated by a "
            "short-lived JWT signed with your admin private key (Ed25519 or EC P-256)."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_url(p)
    p.add_argument(
        "--key",
        type=Path,
        default=os.environ.get("CUSTODES_ADMIN_KEY"),
        help="admin private key, PEM (env CUSTODES_ADMIN_KEY)",
    )
    groups = p.add_subparsers(dest="group", metavar="GROUP", required=True)

    res = groups.add_parser("resource", help="secrets stored in the broker")
    ra = res.add_subparsers(dest="action", metavar="ACTION", required=True)
    put = ra.add_parser("put", help="store (or replace) a resource")
    put.add_argument("path", type=resource_arg, help="repo/type/tag or kbs:///repo/type/tag")
    src = put.add_mutually_exclusive_group()
    src.add_argument("--file", type=Path, help="read the value from FILE")
    src.add_argument("--value", help="the value as text (visible in your shell history!)")
    put.set_defaults(func=_resource_put)
    for name, func, text in (
        ("get-info", _resource_info, "size and update time (never the content)"),
        ("delete", _resource_delete, "delete a resource"),
    ):
        a = ra.add_parser(name, help=text)
        a.add_argument("path", type=resource_arg, help="repo/type/tag or kbs:///repo/type/tag")
        a.set_defaults(func=func)
    ra.add_parser("list", help="list stored resource paths").set_defaults(func=_resource_list)

    pol = groups.add_parser("policy", help="attestation and resource policies (Rego)")
    pa = pol.add_subparsers(dest="action", metavar="ACTION", required=True)
    ps = pa.add_parser("set", help="upload a policy (compiled by the broker before it is stored)")
    ps.add_argument("--kind", choices=["attestation", "resource"], required=True)
    ps.add_argument("--id", default="default_cpu", help="attestation policy id (default_cpu)")
    ps.add_argument("file", type=Path, help="Rego file")
    ps.set_defaults(func=_policy_set)
    pg = pa.add_parser("get", help="print a policy, or list ids with --list")
    pg.add_argument("--kind", choices=["attestation", "resource"], required=True)
    pg.add_argument("--id", help="policy id (default: default_cpu / resource-policy)")
    pg.add_argument("--list", action="store_true", help="list the stored policy ids")
    pg.set_defaults(func=_policy_get)

    rv = groups.add_parser("reference-value", help="reference values used by policies")
    rva = rv.add_subparsers(dest="action", metavar="ACTION", required=True)
    reg = rva.add_parser(
        "register",
        help="register NAME with one or more accepted values",
        description=(
            "Register a reference value: NAME -> [VALUE, ...] (a list, as upstream's default "
            "policies expect `x in query_reference_value(NAME)`), or a single value with "
            "--single. Values are strings unless --json. Or send a raw RVPS message with "
            "--message FILE."
        ),
    )
    reg.add_argument("name", nargs="?")
    reg.add_argument("values", nargs="*")
    reg.add_argument("--json", action="store_true", help="parse each VALUE as JSON")
    reg.add_argument("--single", action="store_true", help="store one value, not a list")
    reg.add_argument("--expires", help="RFC 3339 time after which the value is not used")
    reg.add_argument("--message", type=Path, help="an RVPS message file (JSON) to send as is")
    reg.set_defaults(func=_rv_register)
    rg = rva.add_parser("get", help="print a stored reference value with its expiration")
    rg.add_argument("name")
    rg.set_defaults(func=_rv_get)
    rva.add_parser("list", help="list reference-value ids").set_defaults(func=_rv_list)


def _client(args: argparse.Namespace) -> AdminClient:
    if args.key is None:
        raise ConfigError("no admin key: pass --key FILE or set CUSTODES_ADMIN_KEY")
    return AdminClient(require_url(args), load_admin_key(args.key), ca_file=args.cacert)


def _print_json(obj: Json) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True))


def _resource_put(args: argparse.Namespace) -> int:
    if args.file is not None:
        try:
            data = args.file.read_bytes()
        except OSError as e:
            raise ConfigError(f"cannot read {args.file}: {e.strerror}") from e
    elif args.value is not None:
        data = args.value.encode()
    else:
        if sys.stdin.isatty():
            raise ConfigError("give the value with --file, --value, or on standard input")
        data = sys.stdin.buffer.read()
    with _client(args) as c:
        c.put_resource(args.path, data)
    print(f"stored {args.path} ({len(data)} bytes)", file=sys.stderr)
    return 0


def _resource_info(args: argparse.Namespace) -> int:
    with _client(args) as c:
        _print_json(c.resource_info(args.path))
    return 0


def _resource_delete(args: argparse.Namespace) -> int:
    with _client(args) as c:
        c.delete_resource(args.path)
    print(f"deleted {args.path}", file=sys.stderr)
    return 0


def _resource_list(args: argparse.Namespace) -> int:
    with _client(args) as c:
        for path in c.list_resources():
            print(path)
    return 0


def _policy_set(args: argparse.Namespace) -> int:
    try:
        text = args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read policy {args.file}: {e}") from e
    with _client(args) as c:
        c.set_policy(args.kind, text, policy_id=args.id)
    what = f"attestation policy {args.id}" if args.kind == "attestation" else "resource policy"
    print(f"set {what}", file=sys.stderr)
    return 0


def _policy_get(args: argparse.Namespace) -> int:
    with _client(args) as c:
        if args.list:
            for policy_id in c.list_policies(args.kind):
                print(policy_id)
            return 0
        default = "default_cpu" if args.kind == "attestation" else "resource-policy"
        sys.stdout.write(c.get_policy(args.kind, args.id or default))
    return 0


def _rv_register(args: argparse.Namespace) -> int:
    with _client(args) as c:
        if args.message is not None:
            try:
                message = json.loads(args.message.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise ConfigError(f"cannot read RVPS message {args.message}: {e}") from e
            c.register_message(message)
            print(f"registered the message in {args.message}", file=sys.stderr)
            return 0
        if not args.name or not args.values:
            raise ConfigError("give NAME and at least one VALUE (or --message FILE)")
        values: list[Json] = []
        for v in args.values:
            if args.json:
                try:
                    values.append(json.loads(v))
                except ValueError as e:
                    raise ConfigError(f"--json: {v!r} is not JSON") from e
            else:
                values.append(v)
        if args.single and len(values) != 1:
            raise ConfigError("--single takes exactly one VALUE")
        value: Json = values[0] if args.single else values
        expiration = None
        if args.expires:
            try:
                expiration = datetime.fromisoformat(args.expires.replace("Z", "+00:00"))
            except ValueError as e:
                raise ConfigError(f"--expires: not an RFC 3339 time: {args.expires!r}") from e
            if expiration.tzinfo is None:
                raise ConfigError("--expires needs a time zone, e.g. 2027-01-31T00:00:00Z")
        c.register_reference_values({args.name: value}, expiration=expiration)
    print(f"registered {args.name} = {json.dumps(value)}", file=sys.stderr)
    return 0


def _rv_get(args: argparse.Namespace) -> int:
    with _client(args) as c:
        _print_json(c.get_reference_value(args.name))
    return 0


def _rv_list(args: argparse.Namespace) -> int:
    with _client(args) as c:
        for name in c.list_reference_values():
            print(name)
    return 0
