"""RCAR sessions: created by ``/auth``, consumed once by ``/attest``.

A session lives in the store (so a restart or another replica sees it) with a fixed expiry set
at ``/auth``. Its challenge is single-use: ``/attest`` claims it with an atomic
compare-and-swap from ``authed`` to ``attesting`` before any verification, so two concurrent
``/attest`` calls on one session cannot both proceed, and a failed attestation burns the
challenge (the guest starts again at ``/auth``). Upstream instead re-returns the token on a
second ``/attest``; custodes refuses it.
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from typing import Final

from custodes._internal.b64 import b64std_encode
from custodes._internal.clock import Clock
from custodes.errors import SessionError
from custodes.storage.base import NS_SESSIONS, Store

NONCE_BYTES = 32


class SessionState(StrEnum):
    AUTHED = "authed"
    ATTESTING = "attesting"
    ATTESTED = "attested"


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    state: SessionState
    tee: str
    nonce: str
    hash_algorithm: str
    expires_at: float
    token: str | None = None
    # Decided at /auth (defaults: what a session stored before these existed meant).
    policy_id: str = "default"
    policy_selector: str | None = None
    protocol_version: str = "0.4.0"

    def encode(self) -> bytes:
        # By hand, not dataclasses.asdict (which deep-copies every field): sessions are
        # encoded several times per handshake. The bytes are compared by compare-and-swap,
        # so the encoding is deterministic (sorted keys).
        record = {name: getattr(self, name) for name in _FIELDS}
        record["state"] = self.state.value
        return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes) -> Session:
        obj = json.loads(raw)
        obj["state"] = SessionState(obj["state"])
        return cls(**obj)


_FIELDS: Final = tuple(f.name for f in fields(Session))


class SessionManager:
    def __init__(
        self, store: Store, clock: Clock, ttl_seconds: int, *, namespace: str = NS_SESSIONS
    ) -> None:
        self._ns = namespace
        self._store = store
        self._clock = clock
        self._ttl = ttl_seconds

    def create(
        self,
        tee: str,
        hash_algorithm: str,
        *,
        policy_id: str = "default",
        policy_selector: str | None = None,
        protocol_version: str = "0.4.0",
    ) -> Session:
        expires_at = self._clock.now() + self._ttl
        session = Session(
            id=uuid.uuid4().hex,
            state=SessionState.AUTHED,
            tee=tee,
            nonce=b64std_encode(secrets.token_bytes(NONCE_BYTES)),
            hash_algorithm=hash_algorithm,
            expires_at=expires_at,
            policy_id=policy_id,
            policy_selector=policy_selector,
            protocol_version=protocol_version,
        )
        if not self._store.insert(
            self._ns, session.id, session.encode(), now=self._clock.now(), expires_at=expires_at
        ):  # pragma: no cover - a uuid4 collision
            raise SessionError("session id collision; retry")
        return session

    def get(self, session_id: str | None) -> Session:
        if not session_id:
            raise SessionError("no kbs-session-id cookie: call /kbs/v0/auth first")
        raw = self._store.get(self._ns, session_id, now=self._clock.now())
        if raw is None:
            raise SessionError("unknown or expired session: call /kbs/v0/auth again")
        return Session.decode(raw)

    def claim_challenge(self, session: Session) -> Session:
        """Move ``authed`` -> ``attesting`` atomically; the challenge can be used once only."""
        if session.state is not SessionState.AUTHED:
            raise SessionError("this session's challenge was already used: call /kbs/v0/auth again")
        claimed = replace(session, state=SessionState.ATTESTING)
        if not self._store.compare_and_swap(
            self._ns, session.id, session.encode(), claimed.encode(), now=self._clock.now()
        ):
            raise SessionError(
                "this session's challenge was already used or expired: call /kbs/v0/auth again"
            )
        return claimed

    def complete(self, session: Session, token: str) -> Session:
        """Move ``attesting`` -> ``attested``; only a claimed challenge can be completed."""
        if session.state is not SessionState.ATTESTING:
            raise SessionError("this session's challenge was not claimed: call /kbs/v0/auth again")
        done = replace(session, state=SessionState.ATTESTED, token=token)
        if not self._store.compare_and_swap(
            self._ns, session.id, session.encode(), done.encode(), now=self._clock.now()
        ):
            raise SessionError("session expired during attestation: call /kbs/v0/auth again")
        return done

    def purge_expired(self) -> int:
        return self._store.purge_expired(self._clock.now())
