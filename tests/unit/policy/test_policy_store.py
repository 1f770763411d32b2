"""PolicyStore on the real stores (memory and SQLite)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from custodes._internal.clock import FrozenClock
from custodes.errors import PolicyError
from custodes.policy.defaults import default_policy
from custodes.policy.store import PolicyStore
from custodes.storage.base import NS_ATTESTATION_POLICY, NS_RESOURCE_POLICY, Store
from custodes.storage.memory import MemoryStore
from custodes.storage.sqlite import SqliteStore

ALLOW = "package policy\n\ndefault allow := true\n"
DENY = "package policy\n\ndefault allow := false\n"


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store = MemoryStore() if request.param == "memory" else SqliteStore(tmp_path / "kv.db")
    yield s
    s.close()


@pytest.fixture
def policies(store: Store) -> PolicyStore:
    return PolicyStore(store, NS_RESOURCE_POLICY, FrozenClock(1_000.0))


def test_set_get_list_delete(policies: PolicyStore) -> None:
    assert policies.get("resource-policy") is None
    policies.set("resource-policy", ALLOW)
    policies.set("other_1.v2", DENY)
    assert policies.get("resource-policy") == ALLOW
    assert policies.list() == ["other_1.v2", "resource-policy"]
    policies.set("resource-policy", DENY)
    assert policies.get("resource-policy") == DENY
    assert policies.delete("other_1.v2") is True
    assert policies.delete("other_1.v2") is False
    assert policies.list() == ["resource-policy"]


def test_non_ascii_text_round_trips(policies: PolicyStore) -> None:
    text = '# Richtlinie für Geheimnisse\npackage policy\n\nname := "ç"\n'
    policies.set("p", text)
    assert policies.get("p") == text


@pytest.mark.parametrize("policy_id", ["", "a" * 65, "a/b", "a b", "é", "a\n", "a/../x", "a:b"])
def test_bad_ids_refused(policies: PolicyStore, policy_id: str) -> None:
    with pytest.raises(PolicyError):
        policies.set(policy_id, ALLOW)
    with pytest.raises(PolicyError):
        policies.get(policy_id)
    with pytest.raises(PolicyError):
        policies.ensure_default(policy_id, ALLOW)


def test_longest_id_accepted(policies: PolicyStore) -> None:
    policies.set("a" * 64, ALLOW)
    assert policies.get("a" * 64) == ALLOW


@pytest.mark.parametrize(
    "text", ["package policy\nallow { true }\n", "package kbs\nallow := true\n", "not rego"]
)
def test_policy_must_compile_and_nothing_is_stored_otherwise(
    policies: PolicyStore, text: str
) -> None:
    with pytest.raises(PolicyError):
        policies.set("p", text)
    assert policies.get("p") is None


def test_ensure_default_keeps_an_uploaded_policy(store: Store) -> None:
    clock = FrozenClock(1_000.0)
    first = PolicyStore(store, NS_ATTESTATION_POLICY, clock)
    first.ensure_default("default_cpu", default_policy("default_cpu"))
    assert first.get("default_cpu") == default_policy("default_cpu")
    first.set("default_cpu", DENY)
    # A restart writes the default again, "only if absent".
    again = PolicyStore(store, NS_ATTESTATION_POLICY, clock)
    again.ensure_default("default_cpu", default_policy("default_cpu"))
    assert again.get("default_cpu") == DENY


def test_namespaces_are_separate(store: Store) -> None:
    clock = FrozenClock(1_000.0)
    PolicyStore(store, NS_RESOURCE_POLICY, clock).set("p", ALLOW)
    assert PolicyStore(store, NS_ATTESTATION_POLICY, clock).get("p") is None


def test_a_cached_policy_follows_a_change_made_by_another_replica(store: Store) -> None:
    clock = FrozenClock(1_000.0)
    here = PolicyStore(store, NS_RESOURCE_POLICY, clock)
    there = PolicyStore(store, NS_RESOURCE_POLICY, clock)  # another replica, same store
    here.set("resource-policy", ALLOW)
    assert here.active("resource-policy") == (1, ALLOW)
    assert here.active("resource-policy") == (1, ALLOW)  # now from the cache
    there.set("resource-policy", DENY)
    assert here.active("resource-policy") == (2, DENY)
    there.activate("resource-policy", 1)  # a rollback elsewhere is seen at once too
    assert here.active("resource-policy") == (1, ALLOW)


def test_concurrent_uploads_in_one_process_all_get_a_version(tmp_path: Path) -> None:
    # More concurrent uploads than the store's retry budget: none may be refused, and no two
    # may share a version (CI once answered one of 20 concurrent uploads with 400). The real
    # SQLite store, with its listing slowed so that every upload reads the same latest version
    # unless uploads take turns.
    import time
    from concurrent.futures import ThreadPoolExecutor

    class SlowListing(SqliteStore):
        def list(self, namespace: str, *, now: float) -> list[str]:
            keys = super().list(namespace, now=now)
            time.sleep(0.005)  # between reading the latest version and inserting the next
            return keys

    store = SlowListing(tmp_path / "kv.db")
    policies = PolicyStore(store, NS_RESOURCE_POLICY, FrozenClock(1_000.0))
    texts = [f"package policy\n# upload {i}\ndefault allow := false\n" for i in range(32)]
    try:
        with ThreadPoolExecutor(32) as pool:
            versions = list(pool.map(lambda t: policies.set("p", t), texts))
    finally:
        store.close()
    assert sorted(versions) == list(range(1, 33))
