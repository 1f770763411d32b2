"""`custodes audit access-matrix`: who can obtain which workload secret in plaintext, and how.

The command over :mod:`custodes.k8s.access`. It stays under ``custodes audit`` (the auditor's
group, as documented), registered by :mod:`custodes.cli.audit`, which calls
:func:`register_access_matrix` on its sub-command table; the analysis loads only when the
command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Final

from custodes.cli._common import write_output
from custodes.cli._output import add_out, add_output_format
from custodes.errors import ConfigError

EXIT_OK: Final = 0

DESCRIPTION = """\
Read a cluster dump and tell, for the three administrative roles (infrastructure admin,
cluster admin, workload admin of each namespace) and for every User, Group and ServiceAccount
that a binding names or a pod runs as, which workload secrets they can obtain in PLAINTEXT and
by which path: secrets get/list/watch/update/patch, pods/exec and pods/attach, nodes/proxy,
creating or patching pods and controllers, impersonation and service-account tokens, node
access (etcd, the kubelet's files, memory of non-TEE pods), and the broker. A secret sealed
with custodes and used by a pod in a TEE runtime class shows "sealed: TEE only": only an
attested TEE and the workload admin (through the broker) hold its plaintext.

Input: the output of
  kubectl get clusterroles,clusterrolebindings,roles,rolebindings,pods,secrets,namespaces \\
      -A -o yaml
(a v1 List; several files and multi-document YAML are accepted; add `namespaces` so that
Pod Security labels count, and deployments etc. if you want their pod templates read).
--rbac and --workloads are read the same way: any file may hold any kind. Reading a live
cluster through a kubeconfig is not supported: run kubectl and pass its output.

The model and its assumptions are printed with the matrix and described in
docs/access-matrix.md. Secret values are never printed.
"""

EPILOG = """\
Examples:
  kubectl get clusterroles,clusterrolebindings,roles,rolebindings -A -o yaml > rbac.yaml
  kubectl get pods,secrets,namespaces -A -o yaml > workloads.yaml
  custodes audit access-matrix --rbac rbac.yaml --workloads workloads.yaml
  custodes audit access-matrix --rbac rbac.yaml --workloads workloads.yaml \\
      --broker https://broker.example/tenants/trading -o html --out matrix.html
  custodes audit access-matrix --rbac dump.yaml --broker serve.toml -o json
"""


def _tee_classes(args: argparse.Namespace) -> tuple[str, ...]:
    from custodes.k8s.podcheck import COCO_RUNTIME_CLASSES

    chosen: list[str] = args.tee_runtime_class or list(COCO_RUNTIME_CLASSES)
    for name in chosen:
        if not name:
            raise ConfigError("--tee-runtime-class must not be empty")
    return tuple(dict.fromkeys(chosen))


def register_access_matrix(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``access-matrix`` to the ``custodes audit`` sub-commands."""
    from custodes.k8s.access.render import FORMATS
    from custodes.k8s.podcheck import COCO_RUNTIME_CLASSES

    p = actions.add_parser(
        "access-matrix",
        help="who can obtain which workload secret in plaintext, and how",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Both are read the same way (any file may hold any kind): the names say what each dump
    # is expected to hold.
    for option, holds in (
        ("--rbac", "(Cluster)Roles and (Cluster)RoleBindings"),
        ("--workloads", "Pods, Secrets, Namespaces, controllers"),
    ):
        p.add_argument(
            option,
            type=Path,
            action="extend",
            nargs="+",
            default=[],
            metavar="FILE",
            help=f"kubectl YAML with {holds} (repeatable)",
        )
    p.add_argument(
        "--broker",
        metavar="URL|CONFIG",
        help="the workload admins' broker: its base URL (used for pods whose init-data names "
        "none), or a `custodes serve` config file (also tells whether it accepts sample "
        "evidence)",
    )
    add_output_format(p, formats=FORMATS)
    # The former spelling of -o, still accepted (hidden).
    p.add_argument("--format", dest="output_format", choices=FORMATS, help=argparse.SUPPRESS)
    add_out(p, text="write here instead of stdout", legacy_output=False)
    p.add_argument(
        "--tee-runtime-class",
        action="append",
        metavar="NAME",
        help="a runtime class that runs pods in a TEE (repeatable; replaces the default list: "
        f"{', '.join(COCO_RUNTIME_CLASSES)})",
    )
    p.add_argument(
        "--confidential-cluster",
        action="store_true",
        help="the nodes and control plane run in confidential VMs (Confidential Clusters): "
        "the infrastructure admin reaches nothing inside the cluster",
    )
    p.add_argument(
        "--workload-namespace",
        action="append",
        metavar="NS",
        help="a namespace whose admin is a workload admin row (repeatable; default: every "
        "namespace holding a workload secret, except kube-system, kube-public, kube-node-lease)",
    )
    p.set_defaults(func=_access_matrix)


def _access_matrix(args: argparse.Namespace) -> int:
    from custodes.k8s.access.analysis import build_matrix
    from custodes.k8s.access.model import BrokerModel, MatrixOptions
    from custodes.k8s.access.render import render

    files: list[Path] = [*args.rbac, *args.workloads]
    if not files:
        raise ConfigError("no input: pass --rbac FILE and/or --workloads FILE")
    options = MatrixOptions(
        tee_runtime_classes=_tee_classes(args),
        confidential_cluster=args.confidential_cluster,
        broker=BrokerModel.from_arg(args.broker) if args.broker else BrokerModel(),
        workload_namespaces=tuple(args.workload_namespace)
        if args.workload_namespace is not None
        else None,
    )
    matrix = build_matrix(files, options)
    write_output(render(matrix, args.output_format).encode("utf-8"), args.output)
    return EXIT_OK
