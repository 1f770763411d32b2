"""RCAR sessions: creation, lookup, expiry, and the single-use challenge."""

from __future__ import annotations

import base64
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from custodes._internal.clock import FrozenClock
from custodes.errors import SessionError
from custodes.kbs.session import NONCE_BYTES, Session, SessionManager, SessionState
from custodes.storage.base import NS_SESSIONS, Store
from custodes.storage.memory import MemoryStore
from custodes.storage.sqlite import SqliteStore

START = 1_700_000_000.0
TTL = 300


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "s.db")
    yield s
    s.close()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture
def sessions(store: Store, clock: FrozenClock) -> SessionManager:
    return SessionManager(store, clock, TTL)


# --- create ------------------------------------------------------------------------------


def test_create(sessions: SessionManager, store: Store) -> None:
    s = sessions.create("sample", "sha384")
    assert re.fullmatch(r"[0-9a-f]{32}", s.id)
    assert len(s.nonce) == 44
    assert len(base64.b64decode(s.nonce, validate=True)) == NONCE_BYTES
    assert s.state is SessionState.AUTHED
    assert s.tee == "sample"
    assert s.hash_algorithm == "sha384"
    assert s.expires_at == START + TTL
    assert s.token is None
    # Stored, with the session's expiry as the entry's expiry.
    assert store.get(NS_SESSIONS, s.id, now=START) == s.encode()
    assert store.get(NS_SESSIONS, s.id, now=START + TTL) is None


def test_create_gives_fresh_ids_and_nonces(sessions: SessionManager) -> None:
    created = [sessions.create("sample", "sha384") for _ in range(50)]
    assert len({s.id for s in created}) == 50
    assert len({s.nonce for s in created}) == 50


def test_encode_decode_round_trip() -> None:
    s = Session("ab" * 16, SessionState.ATTESTED, "snp", "n" * 44, "sha256", START, "tok")
    assert Session.decode(s.encode()) == s
    assert Session.decode(s.encode()).state is SessionState.ATTESTED


# --- get ---------------------------------------------------------------------------------


def test_get_returns_the_created_session(sessions: SessionManager) -> None:
    s = sessions.create("tdx", "sha384")
    assert sessions.get(s.id) == s


@pytest.mark.parametrize("cookie", [None, ""])
def test_get_without_cookie(sessions: SessionManager, cookie: str | None) -> None:
    with pytest.raises(SessionError):
        sessions.get(cookie)


def test_get_unknown(sessions: SessionManager) -> None:
    sessions.create("sample", "sha384")
    with pytest.raises(SessionError):
        sessions.get("0" * 32)


def test_get_expired(sessions: SessionManager, clock: FrozenClock) -> None:
    s = sessions.create("sample", "sha384")
    clock.advance(TTL - 1)
    assert sessions.get(s.id) == s
    clock.advance(1)
    with pytest.raises(SessionError):
        sessions.get(s.id)


# --- claim_challenge ---------------------------------------------------------------------


def test_claim_moves_to_attesting(sessions: SessionManager) -> None:
    s = sessions.create("sample", "sha384")
    claimed = sessions.claim_challenge(s)
    assert claimed.state is SessionState.ATTESTING
    assert claimed.nonce == s.nonce
    assert claimed.expires_at == s.expires_at
    assert sessions.get(s.id) == claimed


def test_claim_is_single_use_with_the_stale_object(sessions: SessionManager) -> None:
    s = sessions.create("sample", "sha384")
    sessions.claim_challenge(s)
    # The caller still holds the 'authed' object: the store refuses the second claim.
    with pytest.raises(SessionError):
        sessions.claim_challenge(s)


def test_claim_is_single_use_with_a_fresh_read(sessions: SessionManager) -> None:
    s = sessions.create("sample", "sha384")
    sessions.claim_challenge(s)
    with pytest.raises(SessionError):
        sessions.claim_challenge(sessions.get(s.id))


def test_claim_refused_after_completion(sessions: SessionManager) -> None:
    s = sessions.create("sample", "sha384")
    sessions.complete(sessions.claim_challenge(s), "token")
    with pytest.raises(SessionError):
        sessions.claim_challenge(sessions.get(s.id))
    with pytest.raises(SessionError):
        sessions.claim_challenge(s)


def test_claim_refused_once_expired(sessions: SessionManager, clock: FrozenClock) -> None:
    s = sessions.create("sample", "sha384")
    clock.advance(TTL)
    with pytest.raises(SessionError):
        sessions.claim_challenge(s)


def test_concurrent_claims_have_exactly_one_winner(sessions: SessionManager) -> None:
    s = sessions.create("sample", "sha384")
    count = 8
    barrier = threading.Barrier(count)
    outcomes: list[object] = [None] * count

    def claim(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = sessions.claim_challenge(s)
        except Exception as e:  # recorded and checked below
            outcomes[i] = e

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [o for o in outcomes if isinstance(o, Session)]
    lost = [o for o in outcomes if not isinstance(o, Session)]
    assert len(won) == 1
    assert all(isinstance(o, SessionError) for o in lost)
    assert len(lost) == count - 1


# --- complete ----------------------------------------------------------------------------


def test_complete(sessions: SessionManager) -> None:
    s = sessions.create("sample", "sha384")
    done = sessions.complete(sessions.claim_challenge(s), "ear.token")
    assert done.state is SessionState.ATTESTED
    assert done.token == "ear.token"
    assert done.expires_at == s.expires_at
    assert sessions.get(s.id) == done


def test_complete_requires_a_claimed_challenge(sessions: SessionManager) -> None:
    s = sessions.create("sample", "sha384")
    with pytest.raises(SessionError):
        sessions.complete(s, "token")
    # Nothing changed: the challenge is still unused.
    assert sessions.get(s.id) == s


def test_complete_twice_is_refused(sessions: SessionManager) -> None:
    claimed = sessions.claim_challenge(sessions.create("sample", "sha384"))
    sessions.complete(claimed, "first")
    with pytest.raises(SessionError):
        sessions.complete(claimed, "second")
    assert sessions.get(claimed.id).token == "first"


def test_complete_refused_once_expired(sessions: SessionManager, clock: FrozenClock) -> None:
    claimed = sessions.claim_challenge(sessions.create("sample", "sha384"))
    clock.advance(TTL)
    with pytest.raises(SessionError):
        sessions.complete(claimed, "token")


# --- purge -------------------------------------------------------------------------------


def test_purge_expired(sessions: SessionManager, clock: FrozenClock, store: Store) -> None:
    old = sessions.create("sample", "sha384")
    clock.advance(TTL / 2)
    young = sessions.create("sample", "sha384")
    assert sessions.purge_expired() == 0
    clock.advance(TTL / 2)
    assert sessions.purge_expired() == 1
    assert store.get(NS_SESSIONS, old.id, now=0) is None
    assert sessions.get(young.id) == young
    clock.advance(TTL / 2)
    assert sessions.purge_expired() == 1
    assert store.list(NS_SESSIONS, now=0) == []
