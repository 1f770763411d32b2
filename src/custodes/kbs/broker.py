"""Assembles one broker (KBS + Attestation Service + RVPS) from its configuration."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from custodes._internal.clock import Clock, SystemClock
from custodes.attestation.ear import EarSigner, EarVerifier
from custodes.attestation.service import AttestationService
from custodes.attestation.verifiers.base import Verifier
from custodes.attestation.verifiers.registry import VerifierSettings, build_verifiers
from custodes.errors import ConfigError
from custodes.kbs.admin_auth import AdminAuthenticator
from custodes.kbs.config import KbsConfig
from custodes.kbs.keys import (
    AdminPublicKey,
    GeneratedAdminKey,
    ensure_admin_key,
    load_ear_signing_key,
    load_public_key,
)
from custodes.kbs.metrics import Metrics
from custodes.kbs.resources import ResourceRepository
from custodes.kbs.session import SessionManager
from custodes.policy.defaults import default_policy
from custodes.policy.store import PolicyStore
from custodes.rvps.service import ReferenceValueProvider
from custodes.storage.base import NS_ATTESTATION_POLICY, NS_RESOURCE_POLICY, Store
from custodes.storage.sqlite import SqliteStore
from custodes.types.tee import Tee

logger = logging.getLogger(__name__)

RESOURCE_POLICY_ID = "resource-policy"


@dataclass
class Broker:
    config: KbsConfig
    clock: Clock
    store: Store
    sessions: SessionManager
    attestation: AttestationService
    enabled_tees: frozenset[Tee]
    ear_verifier: EarVerifier
    admin: AdminAuthenticator
    resources: ResourceRepository
    resource_policies: PolicyStore
    attestation_policies: PolicyStore
    rvps: ReferenceValueProvider
    metrics: Metrics
    generated_admin_key: GeneratedAdminKey | None = None

    def close(self) -> None:
        self.store.close()


def _admin_keys(config: KbsConfig) -> tuple[list[AdminPublicKey], GeneratedAdminKey | None]:
    if config.admin.public_keys:
        return [load_public_key(p) for p in config.admin.public_keys], None
    generated = ensure_admin_key(config.server.data_dir)
    default_pub = config.server.data_dir / "admin-key.pub.pem"
    return [load_public_key(default_pub)], generated


def build_broker(
    config: KbsConfig,
    *,
    store: Store | None = None,
    clock: Clock | None = None,
    verifiers: dict[Tee, Verifier] | None = None,
) -> Broker:
    clock = clock or SystemClock()
    data_dir: Path = config.server.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    store = store or SqliteStore(config.sqlite_path)

    signing_key = load_ear_signing_key(config.token.signing_key, data_dir)
    signer = EarSigner(
        signing_key,
        issuer=config.token.issuer,
        ttl_seconds=config.token.ttl_seconds,
        clock=clock,
        insecure_notices=config.insecure_notices(),
    )
    trusted = [signing_key.public_key()]
    for path in config.token.trusted_keys:
        key = load_public_key(path)
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ConfigError(f"token.trusted_keys: {path} is not an EC P-256 key (ES256)")
        trusted.append(key)
    ear_verifier = EarVerifier(
        trusted,
        clock=clock,
        leeway_seconds=config.token.leeway_seconds,
    )

    verifiers = (
        verifiers
        if verifiers is not None
        else build_verifiers(
            VerifierSettings(
                snp_vcek_store_dir=config.attestation.snp_vcek_store_dir,
                snp_kds_url=config.attestation.snp_kds_url or None,
                tdx_collateral=config.attestation.tdx_collateral,
                tdx_pccs_url=config.attestation.tdx_pccs_url or None,
            ),
            clock,
        )
    )
    enabled = frozenset(
        t for t in verifiers if not t.insecure or config.attestation.unsafe_allow_sample_tee
    )
    rvps = ReferenceValueProvider(store, clock)
    attestation_policies = PolicyStore(store, NS_ATTESTATION_POLICY, clock)
    attestation = AttestationService(
        verifiers=verifiers,
        policies=attestation_policies,
        rvps=rvps,
        signer=signer,
        allow_sample_tee=config.attestation.unsafe_allow_sample_tee,
    )
    resource_policies = PolicyStore(store, NS_RESOURCE_POLICY, clock)
    resource_policies.ensure_default(RESOURCE_POLICY_ID, default_policy("resource_policy"))

    admin_keys, generated = _admin_keys(config)
    admin = AdminAuthenticator(
        admin_keys,
        clock=clock,
        leeway_seconds=config.admin.leeway_seconds,
        max_lifetime_seconds=config.admin.max_token_lifetime_seconds,
    )
    return Broker(
        config=config,
        clock=clock,
        store=store,
        sessions=SessionManager(store, clock, config.limits.session_ttl_seconds),
        attestation=attestation,
        enabled_tees=enabled,
        ear_verifier=ear_verifier,
        admin=admin,
        resources=ResourceRepository(store, clock),
        resource_policies=resource_policies,
        attestation_policies=attestation_policies,
        rvps=rvps,
        metrics=Metrics(),
        generated_admin_key=generated,
    )
