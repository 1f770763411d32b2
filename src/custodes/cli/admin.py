"""`custodes admin`: the workload admin's commands against the broker's admin API."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from pathlib import Path

from custodes.admin_client import AdminClient, load_admin_key
from custodes.cli._common import add_url, require_url, resource_arg, write_output
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
  custodes admin policy versions --kind resource
  custodes admin policy rollback --kind resource
  custodes admin --url https://broker:8080/tenants/bank resource list   # a tenant's broker URL
  custodes admin reference-value register svn 1
  custodes admin reference-value register launch_digest abcde
  custodes admin reference-value register major_version 1 --json --single
  custodes admin denial 80b19d39802e44d2b357611573cd3523     # why a guest was refused
  custodes admin audit export --output audit.jsonl && custodes admin audit public-key > k.pem
  custodes audit verify audit.jsonl --public-key k.pem
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
    pg.add_argument("--version", type=int, help="a stored version (default: the active one)")
    pg.set_defaults(func=_policy_get)
    pv = pa.add_parser("versions", help="list a policy's versions and which is active")
    pv.add_argument("--kind", choices=["attestation", "resource"], required=True)
    pv.add_argument("--id", help="policy id (default: default_cpu / resource-policy)")
    pv.set_defaults(func=_policy_versions)
    pact = pa.add_parser("activate", help="make a stored version the active one")
    pact.add_argument("--kind", choices=["attestation", "resource"], required=True)
    pact.add_argument("--id", help="policy id (default: default_cpu / resource-policy)")
    pact.add_argument("version", type=int)
    pact.set_defaults(func=_policy_activate)
    prb = pa.add_parser("rollback", help="activate the version before the active one")
    prb.add_argument("--kind", choices=["attestation", "resource"], required=True)
    prb.add_argument("--id", help="policy id (default: default_cpu / resource-policy)")
    prb.set_defaults(func=_policy_rollback)

    den = groups.add_parser(
        "denial",
        help="why a guest was refused, by the correlation id it was given",
        description=(
            "Print the explanation of a refusal: the resource policy's failed condition, and "
            "for each trust claim that was not affirming, the policy condition that failed, "
            "the claim it read and the reference value it was compared with. Guests only ever "
            "see the correlation id."
        ),
    )
    den.add_argument("correlation_id")
    den.add_argument("--json", action="store_true", help="print the raw JSON")
    den.set_defaults(func=_denial)

    aud = groups.add_parser("audit", help="the tenant's audit log")
    auda = aud.add_subparsers(dest="action", metavar="ACTION", required=True)
    exp = auda.add_parser("export", help="the audit stream as JSON Lines")
    exp.add_argument("--since", type=int, default=0, help="first sequence number")
    exp.add_argument("--output", type=Path, help="write to FILE instead of stdout")
    exp.set_defaults(func=_audit_export)
    pk = auda.add_parser("public-key", help="the audit signing key (PEM), for `audit verify`")
    pk.add_argument("--output", type=Path, help="write to FILE instead of stdout")
    pk.set_defaults(func=_audit_key)

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
        sys.stdout.write(c.get_policy(args.kind, _policy_id(args), args.version))
    return 0


def _policy_id(args: argparse.Namespace) -> str:
    if args.id:
        return str(args.id)
    return "default_cpu" if args.kind == "attestation" else "resource-policy"


def _policy_versions(args: argparse.Namespace) -> int:
    with _client(args) as c:
        for v in c.policy_versions(args.kind, _policy_id(args)):
            print(f"{v['version']}{'  (active)' if v['active'] else ''}")
    return 0


def _policy_activate(args: argparse.Namespace) -> int:
    with _client(args) as c:
        c.activate_policy(args.kind, _policy_id(args), args.version)
    print(f"activated version {args.version} of {_policy_id(args)}", file=sys.stderr)
    return 0


def _policy_rollback(args: argparse.Namespace) -> int:
    with _client(args) as c:
        versions = c.policy_versions(args.kind, _policy_id(args))
        active = next((v["version"] for v in versions if v["active"]), None)
        earlier = [v["version"] for v in versions if active is not None and v["version"] < active]
        if not earlier:
            raise ConfigError(f"{_policy_id(args)} has no version before the active one")
        c.activate_policy(args.kind, _policy_id(args), max(earlier))
    print(f"rolled {_policy_id(args)} back to version {max(earlier)}", file=sys.stderr)
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


def _render_failed(failed: list[Json], indent: str) -> list[str]:
    lines = []
    for f in failed:
        lines.append(f"{indent}failed condition (line {f['line']}): {f['condition']}")
        for claim, value in f.get("claims", {}).items():
            lines.append(f"{indent}  claim {claim} = {json.dumps(value)}")
        for rv, value in f.get("reference_values", {}).items():
            lines.append(f"{indent}  reference value {rv} = {json.dumps(value)}")
    return lines


def _denial(args: argparse.Namespace) -> int:
    with _client(args) as c:
        body = c.get_denial(args.correlation_id)
    if args.json:
        _print_json(body)
        return 0
    denial = body["denial"]
    out = [
        f"denied: {denial['resource']} at {body['time']}",
        f"resource policy {denial['policy_id']} version {denial['policy_version']}",
        f"appraisal: {denial['appraisal']}",
        *_render_failed(denial.get("failed", []), "  "),
    ]
    attestation = body.get("attestation")
    if attestation and attestation.get("explanation"):
        out.append(
            f"attestation ({attestation['tee']}, policy {attestation['policy_id']} "
            f"version {attestation['policy_version']}):"
        )
        for submod, claims in attestation["explanation"].items():
            for claim, detail in claims.items():
                out.append(f"  {submod} {claim} = {detail['value']}")
                out.extend(_render_failed(detail.get("failed", []), "    "))
    print("\n".join(out))
    return 0


def _audit_export(args: argparse.Namespace) -> int:
    with _client(args) as c:
        data = c.export_audit(args.since)
    write_output(data, args.output)
    return 0


def _audit_key(args: argparse.Namespace) -> int:
    with _client(args) as c:
        data = c.audit_public_key()
    write_output(data, args.output)
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
