"""The dashboard's request checks, each refusal on its own: CSRF token, login CSRF token,
and the same-origin rule (Sec-Fetch-Site, Origin)."""

from __future__ import annotations

import pytest

from custodes.kbs.admin_auth import Role
from custodes.ui.auth import (
    UiForbidden,
    UiSession,
    check_csrf,
    check_login_csrf,
    check_same_origin,
)

OWN = frozenset({"https://broker.example:443", "http://127.0.0.1:8080"})
SESSION = UiSession("alice", Role.ADMIN, "the-csrf-token", 0.0)


def test_csrf_token_must_match() -> None:
    check_csrf(SESSION, "the-csrf-token")
    for bad in (None, "", "the-csrf-toke", "the-csrf-token-", "THE-CSRF-TOKEN"):
        with pytest.raises(UiForbidden):
            check_csrf(SESSION, bad)


def test_login_csrf_needs_cookie_and_field_equal() -> None:
    check_login_csrf("n0nce", "n0nce")
    for cookie, field in ((None, "n0nce"), ("n0nce", None), ("n0nce", "other"), ("", "")):
        with pytest.raises(UiForbidden):
            check_login_csrf(cookie, field)


@pytest.mark.parametrize(
    ("origin", "site"),
    [
        (None, None),  # a client that sends neither (curl): the CSRF token still applies
        ("https://broker.example", "same-origin"),  # default port made explicit
        ("http://127.0.0.1:8080", None),
        (None, "none"),
    ],
)
def test_same_origin_requests_pass(origin: str | None, site: str | None) -> None:
    check_same_origin(origin, site, OWN)


@pytest.mark.parametrize(
    ("origin", "site", "why"),
    [
        (None, "cross-site", "Sec-Fetch-Site"),
        (None, "same-site", "Sec-Fetch-Site"),
        ("https://evil.example", None, "does not match"),
        ("https://broker.example:8443", "same-origin", "does not match"),
        ("http://broker.example", None, "does not match"),
        ("null", None, "null"),
        ("javascript:alert(1)", None, "not a URL"),
    ],
)
def test_cross_origin_requests_are_refused(origin: str | None, site: str | None, why: str) -> None:
    with pytest.raises(UiForbidden, match=why):
        check_same_origin(origin, site, OWN)
