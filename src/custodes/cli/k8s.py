"""`custodes k8s`: confidential manifests (Secrets, workloads) and the admission webhook.

The workload admin runs ``secret`` and ``pod`` outside the cluster and hands the output to the
cluster admin, who can apply it but read nothing of value in it. The cluster admin runs the
webhook, which refuses pods in confidential namespaces that would read a plain Secret, lack a
CoCo runtime class, or talk to a broker not the namespace tenant's. See docs/kubernetes.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from custodes.cli._common import add_url, admin_client, write_output
from custodes.cli._output import add_out, add_output_format, emit, render
from custodes.cli.admin_identity import add_credentials
from custodes.errors import ConfigError
from custodes.initdata.build import read_entry
from custodes.k8s.errors import ManifestError
from custodes.k8s.guestconfig import normalize_url
from custodes.k8s.pod import DEFAULT_RUNTIME_CLASS, ConfidentialSettings, make_confidential
from custodes.k8s.podcheck import COCO_RUNTIME_CLASSES
from custodes.k8s.schema import DEFAULT_K8S_VERSION, has_schema, validate_object
from custodes.k8s.schema import available as schema_available
from custodes.k8s.workloads import describe, flatten
from custodes.protocol.resource import ResourcePath
from custodes.types.json import JsonObject

if TYPE_CHECKING:
    from custodes.k8s.secret import SecretSource

# The admin client (httpx), sealing (custodes.sealed) and YAML are imported by the handlers.

EPILOG = """\
Examples (workload admin, outside the cluster):
  custodes k8s secret --name db --namespace payments --from-literal password=s3cret \\
      --repo payments --url https://broker:8443 --key admin.pem \\
      --signing-key signing.jwk --kid kbs:///payments/signing-key/sealed --out db-secret.yaml
  custodes k8s secret --from-manifest plain-secret.yaml --repo payments ... --out sealed.yaml
  custodes k8s pod -f deployment.yaml --runtime-class kata-qemu-snp \\
      --broker-url https://broker:8443 --broker-cert broker-ca.pem --out confidential.yaml
  custodes k8s validate -f confidential.yaml

Examples (cluster admin):
  custodes k8s webhook serve --tls-cert tls.crt --tls-key tls.key --config webhook.toml
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "k8s",
        help="Kubernetes manifests and the admission webhook",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    s = actions.add_parser(
        "secret",
        help="store a secret's values in the broker; print a Secret holding only sealed values",
        description=(
            "Each value is stored in the broker as the resource <repo>/<secret name>/<key> "
            "(admin API), and the Secret gets a vault sealed secret pointing at it. The "
            "plaintext never appears in the output."
        ),
        examples=[
            "custodes k8s secret --name db --namespace payments --from-literal user=shop "
            "--from-file password=db-password.txt --repo payments --url https://broker:8443 "
            "--key admin.pem --signing-key signing.jwk --kid kbs:///payments/signing-key/sealed "
            "--out db-secret.yaml",
            "custodes k8s secret --from-manifest plain-secret.yaml --repo payments ... -o json",
        ],
    )
    s.add_argument("--name", help="Secret name (default: from --from-manifest)")
    s.add_argument("--namespace", help="Secret namespace")
    # --from-literal and --from-file mix (as with kubectl); --from-manifest stands alone, which
    # argparse groups cannot say: `_sources` checks it.
    src = s.add_argument_group("values (--from-literal and --from-file mix; or --from-manifest)")
    src.add_argument(
        "--from-literal",
        action="append",
        metavar="KEY=VALUE",
        help="a value on the command line (repeatable; visible in your shell history!)",
    )
    src.add_argument(
        "--from-file",
        action="append",
        metavar="[KEY=]PATH",
        help="a value from a file, raw bytes (repeatable; key defaults to the file name)",
    )
    src.add_argument(
        "--from-manifest", type=Path, metavar="FILE", help="a plain v1 Secret manifest ('-': stdin)"
    )
    s.add_argument("--repo", required=True, help="broker resource repository for the values")
    add_url(s)
    add_credentials(s, role="admin")
    s.add_argument(
        "--signing-key", type=Path, required=True, help="sealed-secret signing key (JWK or PEM)"
    )
    s.add_argument(
        "--kid",
        required=True,
        help="key id in the sealed secrets: where the guest finds the public key "
        "(e.g. kbs:///REPO/signing-key/sealed)",
    )
    _add_manifest_output(s)
    s.set_defaults(func=_secret, usage_error=s.error)

    w = actions.add_parser(
        "pod",
        help="make workloads confidential: CoCo runtime class, init-data, custodes run",
        description=(
            "Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs get a "
            "CoCo runtime class and the init-data annotation naming your broker; other objects "
            "pass through. The output is validated against the Kubernetes schemas."
        ),
        examples=[
            "custodes k8s pod -f deployment.yaml --runtime-class kata-qemu-snp "
            "--broker-url https://broker:8443 --broker-cert broker-ca.pem --out confidential.yaml",
            "kubectl get deploy shop -o yaml | custodes k8s pod -f - "
            "--broker-url https://broker:8443 --entrypoint-wrap | kubectl apply -f -",
        ],
    )
    w.add_argument("-f", "--file", type=Path, required=True, help="manifest ('-': stdin)")
    w.add_argument(
        "--runtime-class",
        default=DEFAULT_RUNTIME_CLASS,
        help=f"runtime class (default {DEFAULT_RUNTIME_CLASS}; CoCo classes: "
        f"{', '.join(COCO_RUNTIME_CLASSES)})",
    )
    w.add_argument("--broker-url", required=True, help="your broker's URL, as the guest reaches it")
    w.add_argument("--broker-cert", type=Path, help="CA certificate (PEM) of the broker's TLS")
    w.add_argument("--policy", type=Path, help="Kata agent policy (policy.rego) for the init-data")
    w.add_argument(
        "--policy-selector",
        metavar="NAME",
        help="the attestation policy the guest asks the broker for (a name in its "
        "attestation.policy_id_map): in the init-data and, with --entrypoint-wrap, on custodes run",
    )
    w.add_argument(
        "--entrypoint-wrap",
        action="store_true",
        help="run each container under `custodes run` (when the runtime does not run the "
        "guest components): it unseals the secrets, then execs the original command",
    )
    w.add_argument(
        "--command",
        help="with --entrypoint-wrap: the command line for containers whose manifest has none "
        "(the image ENTRYPOINT, which this tool cannot see); replaces ENTRYPOINT, args are kept",
    )
    w.add_argument(
        "--container",
        action="append",
        help="with --entrypoint-wrap: wrap only this container (repeatable; default: all)",
    )
    w.add_argument(
        "--custodes-bin",
        default="custodes",
        help="path of custodes inside the image (default: custodes, from PATH)",
    )
    w.add_argument(
        "--k8s-version",
        default=DEFAULT_K8S_VERSION,
        help=f"Kubernetes version of the schemas (default {DEFAULT_K8S_VERSION})",
    )
    w.add_argument("--no-validate", action="store_true", help="skip schema validation")
    _add_manifest_output(w)
    w.set_defaults(func=_pod)

    v = actions.add_parser(
        "validate",
        help="validate manifests against the Kubernetes schemas",
        examples=[
            "custodes k8s validate -f confidential.yaml",
            "custodes k8s validate -f manifests.yaml --k8s-version 1.30",
        ],
    )
    v.add_argument("-f", "--file", type=Path, required=True, help="manifest ('-': stdin)")
    v.add_argument("--k8s-version", default=DEFAULT_K8S_VERSION)
    v.set_defaults(func=_validate)

    h = actions.add_parser("webhook", help="the admission webhook (cluster admin)")
    hooks = h.add_subparsers(dest="webhook_action", metavar="ACTION", required=True)
    serve = hooks.add_parser(
        "serve",
        help="serve AdmissionReview v1 over HTTPS (/validate, /mutate, /healthz)",
        description="Serve the admission webhook. See deploy/webhook/ for its configuration.",
        examples=[
            "custodes k8s webhook serve --tls-cert tls.crt --tls-key tls.key --config webhook.toml",
            "custodes k8s webhook serve --tls-cert tls.crt --tls-key tls.key "
            "--config webhook.toml --listen 127.0.0.1:8443",
        ],
    )
    serve.add_argument("--tls-cert", type=Path, required=True, help="server certificate (PEM)")
    serve.add_argument("--tls-key", type=Path, required=True, help="server private key (PEM)")
    serve.add_argument("--config", type=Path, required=True, help="webhook configuration (TOML)")
    serve.add_argument("--listen", default="0.0.0.0:8443", help="HOST:PORT (default 0.0.0.0:8443)")
    serve.set_defaults(func=_webhook_serve)
    check = hooks.add_parser(
        "check-config",
        help="load a webhook configuration and summarise it",
        examples=[
            "custodes k8s webhook check-config --config webhook.toml",
            "custodes k8s webhook check-config --config webhook.toml -o json",
        ],
    )
    check.add_argument("--config", type=Path, required=True)
    add_output_format(check)
    check.set_defaults(func=_webhook_check)


def _add_manifest_output(p: argparse.ArgumentParser) -> None:
    """Manifests print as YAML (kubectl's -o yaml) or JSON (-o json: a List when several)."""
    add_output_format(p, formats=("yaml", "json"), default="yaml")
    add_out(p, text="write to FILE instead of stdout", legacy_output=False)


def _manifests(docs: list[JsonObject], output_format: str) -> bytes:
    if output_format == "json":
        document: JsonObject = (
            docs[0] if len(docs) == 1 else {"apiVersion": "v1", "kind": "List", "items": [*docs]}
        )
        return (render(document, "json") + "\n").encode("utf-8")
    from custodes.k8s.yamlio import dump_documents

    return dump_documents(docs).encode("utf-8")


def _read_text(path: Path) -> str:
    if str(path) == "-":
        return sys.stdin.read()
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ManifestError(f"{path} is not UTF-8: {e}") from e


def _sources(args: argparse.Namespace) -> list[SecretSource]:
    from custodes.k8s.secret import SecretSource, check_name, sources_from_manifests, values_from
    from custodes.k8s.yamlio import load_documents

    inline = bool(args.from_literal or args.from_file)
    if args.from_manifest is not None and inline:
        args.usage_error("--from-manifest cannot be combined with --from-literal or --from-file")
    if args.from_manifest is None and not inline:
        args.usage_error("give --from-literal and/or --from-file, or --from-manifest")
    if args.from_manifest is not None:
        sources = sources_from_manifests(load_documents(_read_text(args.from_manifest)))
        if args.name is not None or args.namespace is not None:
            if len(sources) != 1:
                raise ConfigError("--name/--namespace need a manifest with exactly one Secret")
            only = sources[0]
            sources = [
                SecretSource(
                    name=args.name or only.name,
                    values=only.values,
                    namespace=args.namespace or only.namespace,
                    type=only.type,
                    labels=only.labels,
                    annotations=only.annotations,
                )
            ]
        return sources
    if args.name is None:
        raise ConfigError("--name is required with --from-literal and --from-file")
    check_name(args.name)
    values = values_from(args.from_literal or (), args.from_file or ())
    return [SecretSource(name=args.name, values=values, namespace=args.namespace)]


def _secret(args: argparse.Namespace) -> int:
    from custodes.k8s.secret import sealed_secret_manifest
    from custodes.sealed.keys import load_signing_key

    sources = _sources(args)
    ResourcePath(args.repo, "type", "tag")  # the repository segment, checked before any I/O
    signing_key = load_signing_key(args.signing_key)
    docs: list[JsonObject] = []
    with admin_client(args) as admin:
        for source in sources:
            docs.append(
                sealed_secret_manifest(
                    source,
                    repo=args.repo,
                    store=admin.put_resource,
                    signing_key=signing_key,
                    kid=args.kid,
                )
            )
            print(
                f"custodes: stored {len(source.values)} value(s) of Secret {source.name!r} in "
                f"{args.url} under {args.repo}/{source.name}/",
                file=sys.stderr,
            )
    # The values are in the broker already: never fail now for want of the schemas.
    if schema_available():
        for doc in docs:
            validate_object(doc, DEFAULT_K8S_VERSION)
    write_output(_manifests(docs, args.output_format), args.output)
    return 0


def _pod(args: argparse.Namespace) -> int:
    from custodes.k8s.yamlio import load_documents

    if not args.no_validate and not schema_available():
        raise ConfigError(
            "validating the output needs the kubernetes-validate package: install it, or pass "
            "--no-validate"
        )
    docs = load_documents(_read_text(args.file))
    normalize_url(args.broker_url)
    if args.broker_url.lower().startswith("http://"):
        print(
            "custodes: warning: the broker URL is plain HTTP; the guest cannot authenticate "
            "the broker (resources stay encrypted to the TEE key)",
            file=sys.stderr,
        )
    command = None
    if args.command is not None:
        if not args.entrypoint_wrap:
            raise ConfigError("--command only matters with --entrypoint-wrap")
        command = tuple(shlex.split(args.command))
        if not command:
            raise ConfigError("--command is empty")
    if args.container and not args.entrypoint_wrap:
        raise ConfigError("--container only matters with --entrypoint-wrap")
    settings = ConfidentialSettings(
        broker_url=args.broker_url,
        runtime_class=args.runtime_class,
        broker_cert=read_entry(args.broker_cert) if args.broker_cert else None,
        policy=_agent_policy(args.policy) if args.policy else None,
        policy_selector=args.policy_selector,
        entrypoint_wrap=args.entrypoint_wrap,
        command=command,
        containers=frozenset(args.container) if args.container else None,
        custodes_bin=args.custodes_bin,
    )
    result = make_confidential(
        docs, settings, validate_version=None if args.no_validate else args.k8s_version
    )
    for warning in result.warnings:
        print(f"custodes: warning: {warning}", file=sys.stderr)
    write_output(_manifests(result.docs, args.output_format), args.output)
    print(
        f"custodes: init-data {result.init_data.algorithm} digest {result.init_data.digest.hex()}",
        file=sys.stderr,
    )
    return 0


def _validate(args: argparse.Namespace) -> int:
    from custodes.k8s.yamlio import load_documents

    objects = flatten(load_documents(_read_text(args.file)))
    checked = 0
    for obj in objects:
        if has_schema(obj, args.k8s_version):
            validate_object(obj, args.k8s_version)
            checked += 1
        else:
            print(f"custodes: warning: {describe(obj)}: no schema, not validated", file=sys.stderr)
    print(f"{checked} object(s) valid against Kubernetes {args.k8s_version}")
    return 0


def _webhook_check(args: argparse.Namespace) -> int:
    from custodes.k8s.webhook_config import load_webhook_config

    config = load_webhook_config(args.config)
    summary: JsonObject = {
        "confidential_namespaces_from": config.mode,
        "mutate": config.mutate,
        "namespaces": {
            name: {"tenant": ns.tenant, "sealed_secrets": sorted(ns.sealed_secrets)}
            for name, ns in sorted(config.namespaces.items())
        },
        "tenants": {
            name: {"brokers": list(tenant.brokers)}
            for name, tenant in sorted(config.tenants.items())
        },
    }

    def human() -> str:
        lines = [f"confidential namespaces from: {config.mode}; mutate: {config.mutate}"]
        for name, ns in sorted(config.namespaces.items()):
            tenant = ns.tenant or "(none: every pod refused)"
            lines.append(
                f"  namespace {name}: tenant {tenant}, "
                f"sealed-only Secrets {sorted(ns.sealed_secrets)}"
            )
        for name, tenant_config in sorted(config.tenants.items()):
            lines.append(f"  tenant {name}: brokers {', '.join(tenant_config.brokers)}")
        return "\n".join(lines)

    emit(args, summary, human=human)
    return 0


def _webhook_serve(args: argparse.Namespace) -> int:
    from custodes.k8s.webhook import create_webhook_app, webhook_server
    from custodes.k8s.webhook_config import load_webhook_config
    from custodes.kbs.server import bind_socket

    config = load_webhook_config(args.config)
    host, sep, port = args.listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--listen must be HOST:PORT, got {args.listen!r}")
    server = webhook_server(
        create_webhook_app(config), tls_cert=args.tls_cert, tls_key=args.tls_key
    )
    sock = bind_socket(host.strip("[]"), int(port))
    bound_host, bound_port = sock.getsockname()[:2]
    print(
        f"custodes k8s webhook: https://{bound_host}:{bound_port} (/validate, /mutate, /healthz); "
        f"{len(config.namespaces)} namespace(s), {len(config.tenants)} tenant(s), "
        f"mutate={'on' if config.mutate else 'off'}",
        file=sys.stderr,
        flush=True,
    )
    server.run(sockets=[sock])
    return 0


def _agent_policy(path: Path) -> str:
    """The Kata agent policy's text, refused unless it compiles and its claims are
    unambiguous — as the broker will read it (:mod:`custodes.initdata.agent_policy`). A
    policy the agent cannot load would otherwise fail the pod on the node, long after the
    manifest was written."""
    from custodes.initdata.agent_policy import parse_agent_policy
    from custodes.initdata.errors import InitDataError

    text = read_entry(path)
    try:
        parse_agent_policy(text)
    except InitDataError as e:
        raise ConfigError(f"the agent policy {path} is refused: {e}") from e
    return text
