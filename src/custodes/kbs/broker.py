"""Assembles one broker (KBS + Attestation Service + RVPS) from its configuration.

The broker holds what is shared (store, verifiers, the EAR signing key, metrics, the tenant
registry, the operator's identities) and builds each tenant's services on first use: its
sessions, resources, policies, reference values and admin identities, all in the tenant's own
store namespaces.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from custodes._internal.clock import Clock, SystemClock
from custodes.attestation.ear import EarSigner, EarVerifier
from custodes.attestation.service import AttestationService
from custodes.attestation.verifiers.base import Verifier
from custodes.attestation.verifiers.registry import VerifierSettings, build_verifiers
from custodes.audit.log import AuditLog
from custodes.errors import ConfigError
from custodes.kbs.admin_auth import AdminAuthenticator, Role
from custodes.kbs.config import KbsConfig
from custodes.kbs.keys import (
    AUDIT_KEY_FILE,
    AdminPublicKey,
    GeneratedAdminKey,
    ensure_admin_key,
    load_ear_signing_key,
    load_public_key,
)
from custodes.kbs.metrics import Metrics
from custodes.kbs.resources import ResourceRepository
from custodes.kbs.session import SessionManager
from custodes.kbs.tenants import (
    DEFAULT_TENANT,
    TENANT_CLAIM,
    TenantRegistry,
    TenantStatus,
    TenantSuspended,
    namespace,
    tenant_of,
)
from custodes.policy.defaults import default_policy
from custodes.policy.store import PolicyStore
from custodes.rvps.service import ReferenceValueProvider
from custodes.storage.base import (
    NS_ATTESTATION_POLICY,
    NS_REFERENCE_VALUES,
    NS_RESOURCE_POLICY,
    NS_RESOURCES,
    NS_SESSIONS,
    Store,
)
from custodes.storage.encrypted import EncryptedStore
from custodes.storage.factory import open_store
from custodes.storage.masterkey import MasterKey
from custodes.types.tee import Tee

logger = logging.getLogger(__name__)

RESOURCE_POLICY_ID = "resource-policy"
MASTER_KEY_FILE = "master.key"
POSTGRES_DSN_ENV = "CUSTODES_POSTGRES_DSN"


@dataclass
class TenantServices:
    tenant: str
    sessions: SessionManager
    attestation: AttestationService
    admin: AdminAuthenticator
    resources: ResourceRepository
    resource_policies: PolicyStore
    attestation_policies: PolicyStore
    rvps: ReferenceValueProvider


@dataclass
class Broker:
    config: KbsConfig
    clock: Clock
    store: Store
    verifiers: dict[Tee, Verifier]
    enabled_tees: frozenset[Tee]
    signing_key: ec.EllipticCurvePrivateKey
    ear_verifier: EarVerifier
    operator: AdminAuthenticator
    default_admin: AdminAuthenticator
    registry: TenantRegistry
    metrics: Metrics
    audit: AuditLog | None = None
    generated_admin_key: GeneratedAdminKey | None = None
    _tenants: dict[str, tuple[object, TenantServices]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def tenant(self, tenant_id: str) -> TenantServices:
        """The services of an active tenant (``NotFound`` / ``TenantSuspended`` otherwise)."""
        if tenant_id == DEFAULT_TENANT:
            version: object = None
            admin = self.default_admin
        else:
            record = self.registry.get(tenant_id)
            if record.status is not TenantStatus.ACTIVE:
                raise TenantSuspended(f"tenant {tenant_id} is suspended")
            version = record.identities
            admin = AdminAuthenticator(
                [i.public_key for i in record.identities],
                clock=self.clock,
                leeway_seconds=self.config.admin.leeway_seconds,
                max_lifetime_seconds=self.config.admin.max_token_lifetime_seconds,
                roles=[i.role for i in record.identities],
                subjects=[i.subject for i in record.identities],
            )
        with self._lock:
            cached = self._tenants.get(tenant_id)
            if cached is not None and cached[0] == version:
                return cached[1]
            services = self._build_tenant(tenant_id, admin)
            self._tenants[tenant_id] = (version, services)
            return services

    def _build_tenant(self, tenant_id: str, admin: AdminAuthenticator) -> TenantServices:
        store, clock, config = self.store, self.clock, self.config
        signer = EarSigner(
            self.signing_key,
            issuer=config.token.issuer,
            ttl_seconds=config.token.ttl_seconds,
            clock=clock,
            insecure_notices=config.insecure_notices(),
            extra_claims={TENANT_CLAIM: tenant_id},
        )
        rvps = ReferenceValueProvider(store, clock, namespace(tenant_id, NS_REFERENCE_VALUES))
        attestation_policies = PolicyStore(
            store, namespace(tenant_id, NS_ATTESTATION_POLICY), clock
        )
        resource_policies = PolicyStore(store, namespace(tenant_id, NS_RESOURCE_POLICY), clock)
        resource_policies.ensure_default(RESOURCE_POLICY_ID, default_policy("resource_policy"))
        return TenantServices(
            tenant=tenant_id,
            sessions=SessionManager(
                store,
                clock,
                config.limits.session_ttl_seconds,
                namespace=namespace(tenant_id, NS_SESSIONS),
            ),
            attestation=AttestationService(
                verifiers=self.verifiers,
                policies=attestation_policies,
                rvps=rvps,
                signer=signer,
                allow_sample_tee=config.attestation.unsafe_allow_sample_tee,
            ),
            admin=admin,
            resources=ResourceRepository(store, clock, namespace(tenant_id, NS_RESOURCES)),
            resource_policies=resource_policies,
            attestation_policies=attestation_policies,
            rvps=rvps,
        )

    def close(self) -> None:
        self.store.close()


def _default_admin(
    config: KbsConfig, clock: Clock
) -> tuple[AdminAuthenticator, GeneratedAdminKey | None]:
    generated = None
    keys: list[AdminPublicKey]
    if config.admin.public_keys:
        keys = [load_public_key(p) for p in config.admin.public_keys]
    else:
        generated = ensure_admin_key(config.server.data_dir)
        keys = [load_public_key(config.server.data_dir / "admin-key.pub.pem")]
    auditors = [load_public_key(p) for p in config.admin.auditor_keys]
    return (
        AdminAuthenticator(
            [*keys, *auditors],
            clock=clock,
            leeway_seconds=config.admin.leeway_seconds,
            max_lifetime_seconds=config.admin.max_token_lifetime_seconds,
            roles=[Role.ADMIN] * len(keys) + [Role.AUDITOR] * len(auditors),
        ),
        generated,
    )


def master_key(config: KbsConfig, environ: Mapping[str, str] | None = None) -> MasterKey:
    """The master key that wraps every tenant's data key: from the environment variable
    ``storage.master_key_env`` if set, else ``storage.master_key_file``, else a key generated
    once in the data directory (with a warning: it then sits beside the database)."""
    env = os.environ if environ is None else environ
    if config.storage.master_key_env and env.get(config.storage.master_key_env):
        return MasterKey.from_env(config.storage.master_key_env, env)
    if config.storage.master_key_file is not None:
        return MasterKey.from_file(config.storage.master_key_file)
    path = config.server.data_dir / MASTER_KEY_FILE
    if not path.exists():
        logger.warning(
            "generated the master key %s beside the store: whoever can read the data directory "
            "can decrypt the resources; set storage.master_key_file (another volume) or %s",
            path,
            config.storage.master_key_env,
        )
        return MasterKey.generate_file(path)
    return MasterKey.from_file(path)


def _open_store(config: KbsConfig, clock: Clock) -> Store:
    dsn = os.environ.get(POSTGRES_DSN_ENV) or config.storage.dsn or None
    inner = open_store(config.storage.backend, sqlite_path=config.sqlite_path, dsn=dsn)
    return EncryptedStore(
        inner,
        master_key(config),
        encrypted=lambda ns: ns.rsplit("/", 1)[-1] == NS_RESOURCES,
        tenant_of=tenant_of,
        clock=clock,
    )


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
    store = store or _open_store(config, clock)

    signing_key = load_ear_signing_key(config.token.signing_key, data_dir)
    trusted = [signing_key.public_key()]
    for path in config.token.trusted_keys:
        key = load_public_key(path)
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ConfigError(f"token.trusted_keys: {path} is not an EC P-256 key (ES256)")
        trusted.append(key)
    ear_verifier = EarVerifier(trusted, clock=clock, leeway_seconds=config.token.leeway_seconds)

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
    default_admin, generated = _default_admin(config, clock)
    operator = AdminAuthenticator(
        [load_public_key(p) for p in config.operator.public_keys],
        clock=clock,
        leeway_seconds=config.admin.leeway_seconds,
        max_lifetime_seconds=config.admin.max_token_lifetime_seconds,
        roles=[Role.OPERATOR] * len(config.operator.public_keys),
    )
    broker = Broker(
        config=config,
        clock=clock,
        store=store,
        verifiers=verifiers,
        enabled_tees=enabled,
        signing_key=signing_key,
        ear_verifier=ear_verifier,
        operator=operator,
        default_admin=default_admin,
        registry=TenantRegistry(store, clock),
        metrics=Metrics(),
        audit=AuditLog(
            store,
            load_ear_signing_key(None, data_dir, default_name=AUDIT_KEY_FILE),
            clock,
        ),
        generated_admin_key=generated,
    )
    broker.tenant(DEFAULT_TENANT)  # the default tenant's policies exist from the start
    return broker
