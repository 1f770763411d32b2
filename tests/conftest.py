"""Shared fixtures: the upstream vectors copied into the checkout (``tests/vectors``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

if TYPE_CHECKING:
    from live_broker import LiveBroker, ServedBroker

REPO = Path(__file__).resolve().parents[1]
TEST_VECTORS = REPO / "tests" / "vectors"
# Upstream vectors live in the checkout (each folder with its provenance README): a clone of
# the repository alone must pass, so nothing outside it is read at test time.
UPSTREAM_VECTORS = TEST_VECTORS


@pytest.fixture(scope="session")
def vectors() -> Path:
    """Root of the upstream conformance vectors (``tests/vectors``)."""
    return UPSTREAM_VECTORS


# The broker fixtures import the server lazily, so unit tests of one package do not depend
# on every other package importing cleanly.
@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LiveBroker]:
    """A real broker (uvicorn in a thread, injectable clock) on a free loopback port."""
    from live_broker import live_broker

    with live_broker(tmp_path) as b:
        yield b


@pytest.fixture
def served(tmp_path: Path) -> Iterator[ServedBroker]:
    """``custodes serve`` as a subprocess on a free loopback port."""
    from live_broker import served_broker

    with served_broker(tmp_path) as s:
        yield s


@pytest.fixture
def signing_key() -> ec.EllipticCurvePrivateKey:
    """A fresh sealed-secret signing key (EC P-256)."""
    return ec.generate_private_key(ec.SECP256R1())
