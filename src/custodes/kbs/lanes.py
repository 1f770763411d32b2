"""Where a request's blocking work runs: never on the event loop.

Store reads and writes, audit appends, policy evaluation and evidence appraisal each run in
worker threads bounded by a limiter of their own (one per purpose), so a burst of one kind of
work cannot take every thread from the others. Appraisal and policy work also count against
the tenant's own quota, taken before a shared thread is: a tenant whose policies are slow, or
who floods the broker, queues behind its own quota and leaves the shared pools to the others.

anyio limiters belong to the event loop that uses them, so they are made on first use.

An exception leaves its worker thread without the traceback of the frames it came through:
those frames may hold regorus engines, which must be dropped on the thread that made them
(pyo3 "unsendable"), and a traceback re-raised on the loop would drop them there.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, TypeVar

import anyio
from anyio import CapacityLimiter

from custodes.errors import CustodesError
from custodes.policy.budget import DEFAULT_SECONDS

T = TypeVar("T")


def _in_thread(fn: Callable[[], T]) -> Callable[[], T]:
    def run() -> T:
        try:
            return fn()
        except Exception as exc:
            _drop_frames(exc)
            raise

    return run


def _drop_frames(exc: BaseException) -> None:
    """Release the frames of ``exc`` and of the exceptions it chains, in this thread; an
    unexpected error keeps its traceback as text (a note), for the log."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        tb = current.__traceback__
        if tb is not None and not isinstance(current, CustodesError):
            current.add_note("".join(traceback.format_tb(tb)).rstrip())
        current.__traceback__ = None
        current = current.__cause__ or current.__context__


# Threads per purpose. The store and the audit log serialise on their own connection or lock,
# so a few threads suffice; appraisal (verifiers fetch collateral, policies compute) gets more.
STORE_THREADS: Final = 8
AUDIT_THREADS: Final = 4
POLICY_THREADS: Final = 8
APPRAISAL_THREADS: Final = 8
# Concurrent appraisals and policy evaluations of one tenant: below the pools' sizes, so that
# one tenant can never hold every thread.
TENANT_QUOTA: Final = 4


@dataclass
class Pools:
    """The broker's worker limiters, one per purpose, and one quota per tenant."""

    tenant_quota: int = TENANT_QUOTA
    # The time one evaluation of a tenant's resource policy may take (custodes.policy.budget).
    policy_seconds: float = DEFAULT_SECONDS
    _limiters: dict[str, CapacityLimiter] = field(default_factory=dict)
    _quotas: dict[str, CapacityLimiter] = field(default_factory=dict)

    def limiter(self, purpose: str, size: int) -> CapacityLimiter:
        limiter = self._limiters.get(purpose)
        if limiter is None:
            limiter = self._limiters[purpose] = CapacityLimiter(size)
        return limiter

    def quota(self, tenant: str) -> CapacityLimiter:
        quota = self._quotas.get(tenant)
        if quota is None:
            quota = self._quotas[tenant] = CapacityLimiter(self.tenant_quota)
        return quota

    def lanes(self, tenant: str) -> Lanes:
        return Lanes(self, tenant)


@dataclass(frozen=True, slots=True)
class Lanes:
    """One tenant's view of the pools: ``await lanes.store(fn)`` runs ``fn`` off the loop."""

    pools: Pools
    tenant: str

    async def store(self, fn: Callable[[], T]) -> T:
        return await anyio.to_thread.run_sync(
            _in_thread(fn), limiter=self.pools.limiter("store", STORE_THREADS)
        )

    async def audit(self, fn: Callable[[], T]) -> T:
        return await anyio.to_thread.run_sync(
            _in_thread(fn), limiter=self.pools.limiter("audit", AUDIT_THREADS)
        )

    async def policy(self, fn: Callable[[], T]) -> T:
        async with self.pools.quota(self.tenant):
            return await anyio.to_thread.run_sync(
                _in_thread(fn), limiter=self.pools.limiter("policy", POLICY_THREADS)
            )

    async def appraise(self, fn: Callable[[], T]) -> T:
        async with self.pools.quota(self.tenant):
            return await anyio.to_thread.run_sync(
                _in_thread(fn), limiter=self.pools.limiter("appraisal", APPRAISAL_THREADS)
            )
