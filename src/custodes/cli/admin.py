"""`custodes admin`: the workload admin's commands against the broker's admin API."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from custodes.cli import admin_identity
from custodes.cli._common import add_url, resource_arg, write_output
from custodes.cli._common import admin_client as _client
from custodes.cli._output import add_out, add_output_format, emit, rfc3339
from custodes.errors import ConfigError
from custodes.rvps.typed_values import VALUE_TYPES, parse_value
from custodes.types.json import Json, JsonObject

# The admin client (httpx, cryptography) is imported by `_client`: `--help` stays light.

EPILOG = """\
Examples:
  export CUSTODES_URL=http://127.0.0.1:8080 CUSTODES_ADMIN_KEY=custodes-data/admin-key.pem
  custodes admin resource put default/key/db-password --value 's3cret'
  custodes admin resource put default/key/model --file model.key
  custodes admin resource list
  custodes admin policy set --kind resource my-policy.rego
  custodes admin policy get --kind attestation --id default_cpu
  custodes admin policy versions --kind resource
  custodes admin policy rollback --kind resource
  custodes admin --url https://broker:8080/tenants/bank resource list   # a tenant's broker URL
  custodes admin --url https://broker/tenants/bank --key alice.pem --subject alice identity list
  curl -H "Authorization: Bearer $(custodes admin token)" "$CUSTODES_URL/kbs/v0/resource"
  custodes admin reference-value register svn 1
  custodes admin reference-value register launch_digest abcde
  custodes admin reference-value register major_version 1 --type number --single
  custodes admin reference-value export --out rv-messages.json
  custodes admin denial 80b19d39802e44d2b357611573cd3523     # why a guest was refused
  custodes admin audit export --output audit.jsonl && custodes admin audit public-key > k.pem
  custodes audit verify audit.jsonl --audit-key k.pem
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "admin",
        help="manage resources, policies and reference values (workload admin)",
        description=(
            "Manage the broker as its workload admin. Every call is authenticated by a "
            "short-lived, single-use JWT signed with your admin private key (Ed25519 or EC "
            "P-256), naming your subject (--subject) and the tenant's URL (--url)."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_url(p)
    admin_identity.add_credentials(p, role="admin")
    groups = p.add_subparsers(dest="group", metavar="GROUP", required=True)
    admin_identity.register(groups)

    res = groups.add_parser("resource", help="secrets stored in the broker")
    ra = res.add_subparsers(dest="action", metavar="ACTION", required=True)
    put = ra.add_parser(
        "put",
        help="store (or replace) a resource",
        examples=[
            "custodes admin resource put default/key/db-password --file password.txt",
            "head -c 32 /dev/urandom | custodes admin resource put default/key/model",
        ],
    )
    put.add_argument("path", type=resource_arg, help="repo/type/tag or kbs:///repo/type/tag")
    src = put.add_mutually_exclusive_group()
    src.add_argument("--file", type=Path, help="read the value from FILE")
    src.add_argument("--value", help="the value as text (visible in your shell history!)")
    put.set_defaults(func=_resource_put)
    info = ra.add_parser(
        "get-info",
        help="size and update time (never the content)",
        examples=[
            "custodes admin resource get-info default/key/db-password",
            "custodes admin resource get-info kbs:///default/key/db-password -o json",
        ],
    )
    info.add_argument("path", type=resource_arg, help="repo/type/tag or kbs:///repo/type/tag")
    add_output_format(info)
    info.set_defaults(func=_resource_info)
    rd = ra.add_parser(
        "delete",
        help="delete a resource",
        examples=["custodes admin resource delete default/key/db-password"],
    )
    rd.add_argument("path", type=resource_arg, help="repo/type/tag or kbs:///repo/type/tag")
    rd.set_defaults(func=_resource_delete)
    rl = ra.add_parser(
        "list",
        help="list stored resource paths",
        examples=["custodes admin resource list", "custodes admin resource list -o json"],
    )
    add_output_format(rl)
    rl.set_defaults(func=_resource_list)

    pol = groups.add_parser("policy", help="attestation and resource policies (Rego)")
    pa = pol.add_subparsers(dest="action", metavar="ACTION", required=True)
    ps = pa.add_parser(
        "set",
        help="upload a policy (compiled by the broker before it is stored)",
        examples=[
            "custodes admin policy set --kind resource my-policy.rego",
            "custodes admin policy set --kind attestation --id default_cpu cpu.rego",
        ],
    )
    _add_policy_ref(ps)
    ps.add_argument("file", type=Path, help="Rego file")
    ps.set_defaults(func=_policy_set)
    pg = pa.add_parser(
        "get",
        help="print a policy, or list ids with --list",
        examples=[
            "custodes admin policy get --kind attestation --id default_cpu",
            "custodes admin policy get --kind resource --version 1 > old.rego",
            "custodes admin policy get --kind attestation --list -o json",
        ],
    )
    _add_policy_ref(pg)
    pg.add_argument("--list", action="store_true", help="list the stored policy ids")
    pg.add_argument("--version", type=int, help="a stored version (default: the active one)")
    add_output_format(pg)
    pg.set_defaults(func=_policy_get)
    pv = pa.add_parser(
        "versions",
        help="list a policy's versions and which is active",
        examples=[
            "custodes admin policy versions --kind resource",
            "custodes admin policy versions --kind attestation --id default_cpu -o json",
        ],
    )
    _add_policy_ref(pv)
    add_output_format(pv)
    pv.set_defaults(func=_policy_versions)
    pact = pa.add_parser(
        "activate",
        help="make a stored version the active one",
        examples=["custodes admin policy activate --kind resource 1"],
    )
    _add_policy_ref(pact)
    pact.add_argument("version", type=int)
    pact.set_defaults(func=_policy_activate)
    prb = pa.add_parser(
        "rollback",
        help="activate the version before the active one",
        examples=["custodes admin policy rollback --kind resource"],
    )
    _add_policy_ref(prb)
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
        examples=[
            "custodes admin denial 80b19d39802e44d2b357611573cd3523",
            "custodes admin denial 80b19d39802e44d2b357611573cd3523 -o json",
        ],
    )
    den.add_argument("correlation_id")
    add_output_format(den, legacy_json=True)
    den.set_defaults(func=_denial)

    aud = groups.add_parser("audit", help="the tenant's audit log")
    auda = aud.add_subparsers(dest="action", metavar="ACTION", required=True)
    exp = auda.add_parser(
        "export",
        help="the audit stream as JSON Lines",
        examples=[
            "custodes admin audit export --out audit.jsonl",
            "custodes admin audit export --since 100 > audit-from-100.jsonl",
        ],
    )
    exp.add_argument("--since", type=int, default=0, help="first sequence number")
    add_out(exp, text="write to FILE instead of stdout")
    exp.set_defaults(func=_audit_export)
    pk = auda.add_parser(
        "public-key",
        help="the audit signing key (PEM), for `audit verify`",
        examples=[
            "custodes admin audit public-key --out audit-key.pem",
            "custodes audit verify audit.jsonl --audit-key audit-key.pem",
        ],
    )
    add_out(pk, text="write to FILE instead of stdout")
    pk.set_defaults(func=_audit_key)

    rv = groups.add_parser("reference-value", help="reference values used by policies")
    rva = rv.add_subparsers(dest="action", metavar="ACTION", required=True)
    reg = rva.add_parser(
        "register",
        help="register NAME with one or more accepted values",
        description=(
            "Register a reference value: NAME -> [VALUE, ...] (a list, as upstream's default "
            "policies expect `x in query_reference_value(NAME)`), or a single value with "
            "--single. Each VALUE is read as --type: string (default), number, bool or json; "
            'policies compare types exactly (1 is not "1"). Or send RVPS messages with '
            "--message FILE (one message, or a JSON array of them, as `export` writes)."
        ),
        examples=[
            "custodes admin reference-value register svn 1 2",
            "custodes admin reference-value register major_version 1 --type number --single",
            "custodes admin reference-value register launch_digest abcde "
            "--expires 2027-01-31T00:00:00Z",
            "custodes admin reference-value register --message rvps-message.json",
        ],
    )
    reg.add_argument("name", nargs="?")
    reg.add_argument("values", nargs="*")
    reg.add_argument(
        "--type",
        dest="value_type",
        choices=VALUE_TYPES,
        default="string",
        help="how each VALUE is read (default string)",
    )
    reg.add_argument(
        "--json",
        dest="value_type",
        action="store_const",
        const="json",
        help="the same as --type json",
    )
    reg.add_argument("--single", action="store_true", help="store one value, not a list")
    reg.add_argument("--expires", help="RFC 3339 time after which the value is not used")
    reg.add_argument("--message", type=Path, help="an RVPS message file (JSON) to send as is")
    reg.set_defaults(func=_rv_register)
    rvx = rva.add_parser(
        "export",
        help="write the values in force as RVPS messages (what `register --message` reads)",
        examples=[
            "custodes admin reference-value export --out rv-messages.json",
            "custodes admin --url https://new-broker:8080 reference-value register "
            "--message rv-messages.json",
        ],
    )
    add_out(rvx, text="write to FILE (mode 0600) instead of stdout")
    rvx.set_defaults(func=_rv_export)
    rg = rva.add_parser(
        "get",
        help="print a stored reference value with its expiration",
        examples=[
            "custodes admin reference-value get svn",
            "custodes admin reference-value get svn -o json",
        ],
    )
    rg.add_argument("name")
    add_output_format(rg)
    rg.set_defaults(func=_rv_get)
    rvl = rva.add_parser(
        "list",
        help="list reference-value ids",
        examples=[
            "custodes admin reference-value list",
            "custodes admin reference-value list -o yaml",
        ],
    )
    add_output_format(rvl)
    rvl.set_defaults(func=_rv_list)


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
        info = c.resource_info(args.path)
    updated = info.get("updated")
    if isinstance(updated, int | float) and not isinstance(updated, bool):
        info["updated"] = rfc3339(updated)
    emit(args, info)
    return 0


def _resource_delete(args: argparse.Namespace) -> int:
    with _client(args) as c:
        c.delete_resource(args.path)
    print(f"deleted {args.path}", file=sys.stderr)
    return 0


def _resource_list(args: argparse.Namespace) -> int:
    with _client(args) as c:
        paths: list[Json] = list(c.list_resources())
    emit(args, paths)
    return 0


def _policy_set(args: argparse.Namespace) -> int:
    try:
        text = args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read policy {args.file}: {e}") from e
    if args.kind == "resource":
        _warn_lint(args.file, text)
    policy_id = _policy_id(args)
    with _client(args) as c:
        c.set_policy(args.kind, text, policy_id=policy_id)
    what = f"attestation policy {policy_id}" if args.kind == "attestation" else "resource policy"
    print(f"set {what}", file=sys.stderr)
    return 0


def _warn_lint(path: Path, text: str) -> None:
    """What `custodes policy lint` finds, as warnings: the policy is still set (the admin
    decides), but a deny that can never match is seen before it releases."""
    from custodes.errors import CustodesError
    from custodes.policy.lint import lint_resource_policy

    try:
        findings = lint_resource_policy(text)
    except CustodesError:
        return  # a policy that does not compile: the broker's refusal says why
    for finding in findings:
        print(f"custodes: warning: {path}: {finding}", file=sys.stderr)


def _policy_get(args: argparse.Namespace) -> int:
    with _client(args) as c:
        if args.list:
            ids: list[Json] = list(c.list_policies(args.kind))
            emit(args, ids)
            return 0
        text = c.get_policy(args.kind, _policy_id(args), args.version)
    if args.output_format == "table":
        sys.stdout.write(text)  # the Rego source as stored, byte for byte
        return 0
    emit(
        args,
        {"kind": args.kind, "id": _policy_id(args), "version": args.version, "policy": text},
    )
    return 0


def _add_policy_ref(p: argparse.ArgumentParser) -> None:
    """``--kind`` and ``--id`` of every policy action; :func:`_policy_id` reads them."""
    p.add_argument("--kind", choices=["attestation", "resource"], required=True)
    p.add_argument("--id", help="policy id (default: default_cpu / resource-policy)")


def _policy_id(args: argparse.Namespace) -> str:
    if args.id:
        return str(args.id)
    return "default_cpu" if args.kind == "attestation" else "resource-policy"


def _policy_versions(args: argparse.Namespace) -> int:
    with _client(args) as c:
        versions: list[Json] = list(c.policy_versions(args.kind, _policy_id(args)))
    emit(args, versions)
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


def _read_messages(path: Path) -> list[Json]:
    """One RVPS message, or a JSON array of them (``export`` writes one per expiration)."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise ConfigError(f"cannot read RVPS message {path}: {e}") from e
    messages = obj if isinstance(obj, list) else [obj]
    if not messages or not all(isinstance(m, dict) for m in messages):
        raise ConfigError(f"{path}: expected an RVPS message object or a non-empty array of them")
    return messages


def _rv_register(args: argparse.Namespace) -> int:
    if args.message is not None:
        if args.name or args.values:
            raise ConfigError("--message FILE takes no NAME or VALUE")
        messages = _read_messages(args.message)
        from custodes.rvps.messages import parse_message

        # Every message is checked before the first is sent: all of them or none.
        for message in messages:
            parse_message(message, now=datetime.now(UTC))
        with _client(args) as c:
            for message in messages:
                c.register_message(message)
        print(f"registered the {len(messages)} message(s) in {args.message}", file=sys.stderr)
        return 0
    with _client(args) as c:
        if not args.name or not args.values:
            raise ConfigError("give NAME and at least one VALUE (or --message FILE)")
        values = [parse_value(v, args.value_type) for v in args.values]
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
        via = f", via {f['via']}" if f.get("via") else ""
        lines.append(f"{indent}failed condition (line {f['line']}{via}): {f['condition']}")
        for claim, value in f.get("claims", {}).items():
            lines.append(f"{indent}  claim {claim} = {json.dumps(value)}")
        for rv, value in f.get("reference_values", {}).items():
            lines.append(f"{indent}  reference value {rv} = {json.dumps(value)}")
    return lines


def _denial(args: argparse.Namespace) -> int:
    with _client(args) as c:
        body = c.get_denial(args.correlation_id)
    emit(args, body, human=lambda: _explain_denial(body))
    return 0


def _explain_denial(body: JsonObject) -> str:
    denial = body["denial"]
    out = [
        f"denied: {denial['resource']} at {body['time']}",
        f"resource policy {denial['policy_id']} version {denial['policy_version']}",
        f"appraisal: {denial['appraisal']}",
        *([f"error: {denial['error']}"] if denial.get("error") else []),
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
    return "\n".join(out)


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
        value = c.get_reference_value(args.name)
    emit(args, value)
    return 0


def _rv_export(args: argparse.Namespace) -> int:
    from custodes.rvps.messages import ReferenceValue, export_messages

    with _client(args) as c:
        values = [
            ReferenceValue.from_stored_json(c.get_reference_value(name))
            for name in c.list_reference_values()
        ]
    now = datetime.now(UTC)
    messages: list[Json] = list(export_messages(values, now=now))
    expired = sorted(v.name for v in values if v.expired(now))
    write_output((json.dumps(messages, indent=2) + "\n").encode(), args.output)
    if expired:
        print(f"not exported (expired): {', '.join(expired)}", file=sys.stderr)
    count = sum(1 for v in values if not v.expired(now))
    print(f"exported {count} reference value(s) in {len(messages)} message(s)", file=sys.stderr)
    return 0


def _rv_list(args: argparse.Namespace) -> int:
    with _client(args) as c:
        names: list[Json] = list(c.list_reference_values())
    emit(args, names)
    return 0
