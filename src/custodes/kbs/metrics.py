"""Prometheus metrics of one broker (a registry per app, so tests can run several).

With ``serve --workers N`` the workers are separate processes: each counts in files of a
directory they share (prometheus_client's multiprocess mode, switched on by
:func:`share_between_processes` before the broker is built), and ``/metrics`` answers from any
worker with the sums over all of them.
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.multiprocess import MultiProcessCollector

_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# How often the broker measures its event loop's lag (custodes.kbs.app).
LAG_PROBE_SECONDS = 0.1


def share_between_processes(directory: Path) -> None:
    """Count in files under ``directory`` (private, empty, removed by the caller at exit) from
    now on, in this process and the processes it forks."""
    os.environ[_DIR_VARIABLE] = str(directory)
    # The value class is chosen when prometheus_client is imported; choose it again, so the
    # mode does not depend on when that import happened.
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]  # untyped lib


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "custodes_http_requests",
            "HTTP requests by endpoint and status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.attestations = Counter(
            "custodes_attestations",
            "Attestations by TEE and result (affirming, warning, contraindicated, none, error)",
            ["tee", "result"],
            registry=self.registry,
        )
        self.protocol_versions = Counter(
            "custodes_protocol_requests",
            "RCAR /auth requests by the client's KBS protocol version (a known version, other "
            "or missing) and result (accepted, refused)",
            ["version", "result"],
            registry=self.registry,
        )
        self.releases = Counter(
            "custodes_resource_requests",
            "Resource requests by result (released, denied, missing, error)",
            ["result"],
            registry=self.registry,
        )
        self.attestation_seconds = Histogram(
            "custodes_attestation_seconds",
            "Time to verify evidence, evaluate the policy and sign the token",
            registry=self.registry,
        )

        self.loop_lag = Histogram(
            "custodes_event_loop_lag_seconds",
            "How late the broker's event loop ran a timer due every "
            f"{LAG_PROBE_SECONDS:g} s: work that blocks the loop shows here",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )

    def render(self) -> bytes:
        shared = os.environ.get(_DIR_VARIABLE)
        if shared:
            merged = CollectorRegistry()
            MultiProcessCollector(merged, path=shared)  # type: ignore[no-untyped-call]  # untyped lib
            return generate_latest(merged)
        return generate_latest(self.registry)
