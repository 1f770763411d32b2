"""`custodes k8s`: confidential manifests (Secrets, workloads) and the admission webhook.

The workload admin runs ``secret`` and ``pod`` outside the cluster and hands the output to the
cluster admin, who can apply it but read nothing of value in it. The cluster admin runs the
webhook, which refuses pods in confidential namespaces that would read a plain Secret, lack a
CoCo runtime class, or talk to a broker not the namespace tenant's. See docs/kubernetes.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from custodes.admin_client import AdminClient, load_admin_key
from custodes.cli._common import add_url, require_url, write_output
from custodes.errors import ConfigError
from custodes.initdata.build import read_entry
from custodes.k8s.errors import ManifestError
from custodes.k8s.guestconfig import normalize_url
from custodes.k8s.pod import DEFAULT_RUNTIME_CLASS, ConfidentialSettings, make_confidential
from custodes.k8s.podcheck import COCO_RUNTIME_CLASSES
from custodes.k8s.schema import DEFAULT_K8S_VERSION, has_schema, validate_object
from custodes.k8s.schema import available as schema_available
from custodes.k8s.secret import (
    SecretSource,
    check_name,
    sealed_secret_manifest,
    sources_from_manifests,
    values_from_files,
    values_from_literals,
)
from custodes.k8s.workloads import describe, flatten
from custodes.k8s.yamlio import dump_documents, load_documents
from custodes.protocol.resource import ResourcePath
from custodes.sealed.keys import load_signing_key
from custodes.types.json import JsonObject

EPILOG = """\
examples (workload admin, outside the cluster):
  custodes k8s secret --name db --namespace payments --from-literal password=s3cret \\
      --repo payments --url https://broker:8443 --key admin.pem \\
      --signing-key signing.jwk --kid kbs:///payments/signing-key/sealed -o db-secret.yaml
  custodes k8s secret --from-manifest plain-secret.yaml --repo payments ... -o sealed.yaml
  custodes k8s pod -f deployment.yaml --runtime-class kata-qemu-snp \\
      --broker-url https://broker:8443 --broker-cert broker-ca.pem -o confidential.yaml
  custodes k8s validate -f confidential.yaml

examples (cluster admin):
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
    )
    s.add_argument("--name", help="Secret name (default: from --from-manifest)")
    s.add_argument("--namespace", help="Secret namespace")
    src = s.add_mutually_exclusive_group(required=True)
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
    s.add_argument(
        "--key",
        type=Path,
        default=os.environ.get("CUSTODES_ADMIN_KEY"),
        help="admin private key, PEM (env CUSTODES_ADMIN_KEY)",
    )
    s.add_argument(
        "--signing-key", type=Path, required=True, help="sealed-secret signing key (JWK or PEM)"
    )
    s.add_argument(
        "--kid",
        required=True,
        help="key id in the sealed secrets: where the guest finds the public key "
        "(e.g. kbs:///REPO/signing-key/sealed)",
    )
    s.add_argument("-o", "--output", type=Path, help="write to FILE instead of stdout")
    s.set_defaults(func=_secret)

    w = actions.add_parser(
        "pod",
        help="make workloads confidential: CoCo runtime class, init-data, custodes run",
        description=(
            "Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs and CronJobs get a "
            "CoCo runtime class and the init-data annotation naming your broker; other objects "
            "pass through. The output is validated against the Kubernetes schemas."
        ),
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
    w.add_argument("-o", "--output", type=Path, help="write to FILE instead of stdout")
    w.set_defaults(func=_pod)

    v = actions.add_parser("validate", help="validate manifests against the Kubernetes schemas")
    v.add_argument("-f", "--file", type=Path, required=True, help="manifest ('-': stdin)")
    v.add_argument("--k8s-version", default=DEFAULT_K8S_VERSION)
    v.set_defaults(func=_validate)

    h = actions.add_parser("webhook", help="the admission webhook (cluster admin)")
    hooks = h.add_subparsers(dest="webhook_action", metavar="ACTION", required=True)
    serve = hooks.add_parser(
        "serve",
        help="serve AdmissionReview v1 over HTTPS (/validate, /mutate, /healthz)",
        description="Serve the admission webhook. See deploy/webhook/ for its configuration.",
    )
    serve.add_argument("--tls-cert", type=Path, required=True, help="server certificate (PEM)")
    serve.add_argument("--tls-key", type=Path, required=True, help="server private key (PEM)")
    serve.add_argument("--config", type=Path, required=True, help="webhook configuration (TOML)")
    serve.add_argument("--listen", default="0.0.0.0:8443", help="HOST:PORT (default 0.0.0.0:8443)")
    serve.set_defaults(func=_webhook_serve)
    check = hooks.add_parser("check-config", help="load a webhook configuration and summarise it")
    check.add_argument("--config", type=Path, required=True)
    check.set_defaults(func=_webhook_check)


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
    values = (
        values_from_literals(args.from_literal)
        if args.from_literal
        else values_from_files(args.from_file)
    )
    return [SecretSource(name=args.name, values=values, namespace=args.namespace)]


def _secret(args: argparse.Namespace) -> int:
    sources = _sources(args)
    ResourcePath(args.repo, "type", "tag")  # the repository segment, checked before any I/O
    if args.key is None:
        raise ConfigError("no admin key: pass --key FILE or set CUSTODES_ADMIN_KEY")
    signing_key = load_signing_key(args.signing_key)
    url = require_url(args)
    docs: list[JsonObject] = []
    with AdminClient(url, load_admin_key(args.key), ca_file=args.cacert) as admin:
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
                f"{url} under {args.repo}/{source.name}/",
                file=sys.stderr,
            )
    # The values are in the broker already: never fail now for want of the schemas.
    if schema_available():
        for doc in docs:
            validate_object(doc, DEFAULT_K8S_VERSION)
    write_output(dump_documents(docs).encode("utf-8"), args.output)
    return 0


def _pod(args: argparse.Namespace) -> int:
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
        policy=read_entry(args.policy) if args.policy else None,
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
    write_output(dump_documents(result.docs).encode("utf-8"), args.output)
    print(
        f"custodes: init-data {result.init_data.algorithm} digest {result.init_data.digest.hex()}",
        file=sys.stderr,
    )
    return 0


def _validate(args: argparse.Namespace) -> int:
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
    print(f"confidential namespaces from: {config.mode}; mutate: {config.mutate}")
    for name, ns in sorted(config.namespaces.items()):
        tenant = ns.tenant or "(none: every pod refused)"
        print(
            f"  namespace {name}: tenant {tenant}, sealed-only Secrets {sorted(ns.sealed_secrets)}"
        )
    for name, tenant_config in sorted(config.tenants.items()):
        print(f"  tenant {name}: brokers {', '.join(tenant_config.brokers)}")
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
