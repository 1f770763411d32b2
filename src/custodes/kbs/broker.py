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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from custodes._internal.clock import Clock, SystemClock
from custodes._internal.private_files import ensure_private_dir
from custodes.attestation import tpm_enrol
from custodes.attestation.ear import EarSigner, EarVerifier
from custodes.attestation.service import AttestationService
from custodes.attestation.verifiers.base import Verifier
from custodes.attestation.verifiers.registry import VerifierSettings, build_verifiers
from custodes.audit.log import AuditLog
from custodes.errors import ConfigError
from custodes.kbs.admin_auth import (
    AdminAuthenticator,
    Origins,
    RegisteredKey,
    ReplayGuard,
    Role,
)
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
from custodes.types.json import JsonObject
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
    origins: Origins
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
            admin = _authenticator(
                self.config,
                self.store,
                self.clock,
                [RegisteredKey(i.public_key, i.subject, i.role) for i in record.identities],
                audiences=self.origins.for_tenant(tenant_id, DEFAULT_TENANT),
                replay_namespace=namespace(tenant_id, NS_ADMIN_JTI),
            )
        with self._lock:
            cached = self._tenants.get(tenant_id)
            if cached is not None and cached[0] == version:
                return cached[1]
            services = self._build_tenant(tenant_id, admin)
            self._tenants[tenant_id] = (version, services)
            return services

    def record(self, stream: str, kind: str, actor: str | None, event: JsonObject) -> None:
        """Append ``event`` to the audit ``stream`` (a tenant's, or the broker's own); returns
        once it is durable. Nothing when the broker keeps no audit log."""
        if self.audit is not None:
            self.audit.append(stream, kind, actor, event)

    def ready_tenant(self, tenant_id: str) -> TenantServices | None:
        """The default tenant's services once built, without I/O (safe on the event loop);
        ``None`` for any other tenant, whose status must be read from the store each time."""
        if tenant_id != DEFAULT_TENANT:
            return None
        with self._lock:
            cached = self._tenants.get(tenant_id)
        return cached[1] if cached is not None else None

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
                policy_seconds=config.limits.policy_seconds,
            ),
            admin=admin,
            resources=ResourceRepository(store, clock, namespace(tenant_id, NS_RESOURCES)),
            resource_policies=resource_policies,
            attestation_policies=attestation_policies,
            rvps=rvps,
        )

    def listening_at(self, url: str) -> None:
        """Called once the broker listens at ``url``: without ``server.public_urls``, admin
        tokens must name this address (see :class:`Origins`)."""
        self.origins.listening_at(url)

    def close(self) -> None:
        self.store.close()


NS_ADMIN_JTI = "admin_jti"
NS_OPERATOR_JTI = "operator_jti"


def _authenticator(
    config: KbsConfig,
    store: Store,
    clock: Clock,
    identities: list[RegisteredKey],
    *,
    audiences: Callable[[], frozenset[str]],
    replay_namespace: str,
) -> AdminAuthenticator:
    return AdminAuthenticator(
        identities,
        audiences=audiences,
        replay=ReplayGuard(store, replay_namespace, clock),
        clock=clock,
        leeway_seconds=config.admin.leeway_seconds,
        max_lifetime_seconds=config.admin.max_token_lifetime_seconds,
    )


def _default_identities(config: KbsConfig) -> tuple[list[RegisteredKey], GeneratedAdminKey | None]:
    """The default tenant's identities, from the config file (each key bound to its subject),
    or the admin key pair generated in the data directory (subject ``admin``)."""
    generated = None
    keys: list[AdminPublicKey]
    if config.admin.public_keys:
        keys = [load_public_key(p) for p in config.admin.public_keys]
    else:
        generated = ensure_admin_key(config.server.data_dir)
        keys = [load_public_key(config.server.data_dir / "admin-key.pub.pem")]
    auditors = [load_public_key(p) for p in config.admin.auditor_keys]
    return (
        [
            *(
                RegisteredKey(k, s, Role.ADMIN)
                for k, s in zip(keys, config.admin.admin_subjects(len(keys)), strict=True)
            ),
            *(
                RegisteredKey(k, s, Role.AUDITOR)
                for k, s in zip(auditors, config.admin.auditor_key_subjects(), strict=True)
            ),
        ],
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
    if config.attestation.tpm_ek_ca_bundle is not None:
        # A bad bundle must stop the start, not surface at the first TPM's enrolment.
        tpm_enrol.ca_bundle(config.attestation.tpm_ek_ca_bundle)
    data_dir: Path = config.server.data_dir
    ensure_private_dir(data_dir)  # 0700 when created: keys and the store live here
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
    # The TEEs a session may name. Device TEEs (nvidia) are verified only as additional
    # evidence of a CPU TEE: a GPU alone does not protect the TEE key its evidence binds.
    enabled = frozenset(
        t
        for t in verifiers
        if not t.device and (not t.insecure or config.attestation.unsafe_allow_sample_tee)
    )
    origins = Origins(config.server.public_urls)
    default_identities, generated = _default_identities(config)
    default_admin = _authenticator(
        config,
        store,
        clock,
        default_identities,
        audiences=origins.for_tenant(DEFAULT_TENANT, DEFAULT_TENANT),
        replay_namespace=namespace(DEFAULT_TENANT, NS_ADMIN_JTI),
    )
    operator = _authenticator(
        config,
        store,
        clock,
        [
            RegisteredKey(load_public_key(p), s, Role.OPERATOR)
            for p, s in zip(
                config.operator.public_keys, config.operator.key_subjects(), strict=True
            )
        ],
        audiences=origins.for_operator(),
        replay_namespace=NS_OPERATOR_JTI,
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
        origins=origins,
        audit=AuditLog(
            store,
            load_ear_signing_key(None, data_dir, default_name=AUDIT_KEY_FILE),
            clock,
            checkpoints=config.audit.checkpoint_policy(),
        ),
        generated_admin_key=generated,
    )
    broker.tenant(DEFAULT_TENANT)  # the default tenant's policies exist from the start
    return broker
