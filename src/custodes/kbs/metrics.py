"""Prometheus metrics of one broker (a registry per app, so tests can run several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


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

    def render(self) -> bytes:
        return generate_latest(self.registry)
