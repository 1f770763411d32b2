"""The dashboard over real HTTP: sign-in by a short-lived admin token, every page per role,
and its security properties, each with its own test: no session, no CSRF token, a cross-site
request, the CSP, an auditor's change, an operator's view, another tenant's data, session
expiry and revocation. (The same pages in a real browser: tests/browser/test_dashboard_browser.py.)
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from custodes.audit.verify import verify_jsonl
from custodes.ui.routes import CSP
from dashboard_world import SECRET, World, dashboard_world, matrix_json


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with dashboard_world(tmp_path_factory.mktemp("dashboard")) as w:
        yield w


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "no CSRF field in the page"
    return html.unescape(found.group(1))


def session_of(ui: Ui) -> str:
    value = next(c.value for c in ui.http.cookies.jar if c.name == "custodes-ui")
    assert value is not None
    return value


class Ui:
    """A signed-in browser-like client (cookies kept; no redirects followed)."""

    def __init__(self, world: World, who: str, tenant: str | None) -> None:
        self.base = world.ui(tenant)
        self.http = httpx.Client(follow_redirects=False, timeout=30)
        form = self.http.get(f"{self.base}/login")
        assert form.status_code == 200
        login_csrf = re.search(r'name="login_csrf" value="([^"]+)"', form.text)
        assert login_csrf
        r = self.http.post(
            f"{self.base}/login",
            data={"login_csrf": login_csrf.group(1), "token": world.token(who, tenant)},
        )
        assert r.status_code == 303, r.text
        assert r.headers["location"] == urlsplit(self.base).path + "/"
        self.csrf = csrf_of(self.get("").text)

    def get(self, path: str, **params: str) -> httpx.Response:
        return self.http.get(f"{self.base}/{path}", params=params)

    def post(self, path: str, data: dict[str, str]) -> httpx.Response:
        return self.http.post(f"{self.base}/{path}", data=data)

    def close(self) -> None:
        self.http.close()


TENANT_PAGES = [
    "",
    "activity",
    "denials",
    "resources",
    "policies",
    "policies/resource/resource-policy",
    "policies/attestation/default_cpu",
    "reference-values",
    "access-matrix",
    "audit",
]


def forbidden_strings(world: World, tenant: str) -> list[str]:
    """What must never appear in ``tenant``'s pages: every secret value, and the other
    tenant's names."""
    others = [t for t in ("bank", "insurer") if t != tenant]
    return [*world.values.values(), *(f"{o}-admin" for o in others)]


@pytest.mark.parametrize("who", ["bank-admin", "bank-auditor"])
def test_every_page_renders_without_secrets(world: World, who: str) -> None:
    ui = Ui(world, who, "bank")
    try:
        for path in TENANT_PAGES:
            r = ui.get(path)
            assert r.status_code == 200, (path, r.text[:300])
            for s in forbidden_strings(world, "bank"):
                assert s not in r.text, (path, s)
        overview = ui.get("").text
        assert "Audit chain intact" in overview
        assert "sample" in overview  # the TEE seen
        assert "svn" in overview  # a reference value's expiry
        resources = ui.get("resources").text
        assert str(SECRET) in resources and "apps/tls/server-key" in resources
        denial = html.unescape(ui.get(f"denials/{world.denials[1]}").text)
        assert "only-this-one" in denial  # the resource policy's failed condition
        assert "input.sample.svn" in denial and '["2"]' in denial  # claim vs RV
    finally:
        ui.close()


def test_activity_filters_and_entry_detail(world: World) -> None:
    ui = Ui(world, "bank-admin", "bank")
    try:
        released = ui.get("activity", kind="release").text
        assert 'class="result released"' in released
        assert 'class="result contraindicated"' not in released
        refused = ui.get("activity", result="contraindicated").text
        seq = re.search(r'href="/tenants/bank/ui/activity/(\d+)"', refused)
        assert seq, refused
        entry = ui.get(f"activity/{seq.group(1)}").text
        assert "Trust vector" in entry and "annotated evidence" in entry
        assert ui.get("activity", result="bogus").status_code == 400
        assert ui.get("activity", since="yesterday").status_code == 400
        assert ui.get("activity/999999").status_code == 404
    finally:
        ui.close()


def test_policy_diff_and_rollback_is_audited_like_the_cli(world: World) -> None:
    ui = Ui(world, "bank-admin", "bank")
    try:
        page = ui.get("policies/resource/resource-policy", version="2", diff="1").text
        assert "only-this-one" in page and 'class="add"' in page
        r = ui.post("policies/resource/resource-policy/rollback", {"csrf": ui.csrf})
        assert r.status_code == 303, r.text
        assert "activated+version+1" in r.headers["location"]
        with world.admin("bank-admin", "bank") as admin:
            versions = admin.policy_versions("resource", "resource-policy")
            assert [v["version"] for v in versions if v["active"]] == [1]
            export = admin.export_audit()
        entries = [json.loads(line) for line in export.splitlines()]
        last = [e for e in entries if e["kind"] == "admin"][-1]
        assert last["actor"] == "bank-admin"
        assert last["event"] == {
            "action": "resource_policies.activate",
            "policy_id": "resource-policy",
            "version": 1,
        }
        page = ui.get("policies/resource/resource-policy").text
        assert "Activations and rollbacks" in page and "bank-admin" in page
        # Back to version 2 through the activate form.
        r = ui.post("policies/resource/resource-policy/activate", {"csrf": ui.csrf, "version": "2"})
        assert r.status_code == 303
    finally:
        ui.close()


def test_no_session_is_refused(world: World) -> None:
    with httpx.Client(follow_redirects=False) as http:
        for path in TENANT_PAGES:
            r = http.get(f"{world.ui('bank')}/{path}")
            assert r.status_code == 303, path
            assert r.headers["location"] == "/tenants/bank/ui/login"
            assert "svn" not in r.text and "resource-policy" not in r.text
        r = http.post(
            f"{world.ui('bank')}/policies/resource/resource-policy/rollback", data={"csrf": "x"}
        )
        assert r.status_code == 401
    with httpx.Client(follow_redirects=False, cookies={"custodes-ui": "forged"}) as http:
        assert http.get(f"{world.ui('bank')}/").status_code == 303


def test_a_token_signs_in_once(world: World) -> None:
    token = world.token("bank-admin")
    with httpx.Client(follow_redirects=False) as http:
        for expected in (303, 401):
            form = http.get(f"{world.ui('bank')}/login").text
            nonce = re.search(r'name="login_csrf" value="([^"]+)"', form)
            assert nonce
            r = http.post(
                f"{world.ui('bank')}/login", data={"login_csrf": nonce.group(1), "token": token}
            )
            assert r.status_code == expected
        assert "already used" in r.text


def test_a_token_for_another_tenant_is_refused(world: World) -> None:
    with httpx.Client(follow_redirects=False) as http:
        form = http.get(f"{world.ui('insurer')}/login").text
        nonce = re.search(r'name="login_csrf" value="([^"]+)"', form)
        assert nonce
        r = http.post(
            f"{world.ui('insurer')}/login",
            data={"login_csrf": nonce.group(1), "token": world.token("bank-admin")},
        )
        assert r.status_code == 401 and "sign-in refused" in r.text


def test_sign_in_without_login_csrf_is_refused(world: World) -> None:
    with httpx.Client(follow_redirects=False) as http:
        r = http.post(f"{world.ui('bank')}/login", data={"token": world.token("bank-admin")})
        assert r.status_code == 403


def test_state_change_without_csrf_token_is_refused(world: World) -> None:
    ui = Ui(world, "bank-admin", "bank")
    try:
        path = "policies/resource/resource-policy/rollback"
        assert ui.post(path, {}).status_code == 403
        assert ui.post(path, {"csrf": "wrong"}).status_code == 403
        cross = ui.http.post(
            f"{ui.base}/{path}",
            data={"csrf": ui.csrf},
            headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
        )
        assert cross.status_code == 403
        with world.admin("bank-admin", "bank") as admin:
            versions = admin.policy_versions("resource", "resource-policy")
        assert [v["version"] for v in versions if v["active"]] == [2]
    finally:
        ui.close()


def test_csp_and_security_headers(world: World) -> None:
    ui = Ui(world, "bank-auditor", "bank")
    try:
        for path in ("", "login", "static/ui.css", "static/ui.js", "nope"):
            r = ui.get(path)
            assert r.headers["content-security-policy"] == CSP, path
            assert r.headers["cache-control"].startswith("no-"), path
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["x-frame-options"] == "DENY"
        directives = dict(d.strip().split(" ", 1) for d in CSP.split(";"))
        assert directives["default-src"] == "'none'"
        assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
        assert directives["frame-ancestors"] == "'none'"
        assert "unsafe" not in CSP
        page = ui.get("").text
        assert "<script>" not in page and " style=" not in page and " onclick" not in page
        cookie = ui.http.cookies.jar
        session = next(c for c in cookie if c.name == "custodes-ui")
        assert session.path == "/tenants/bank/ui"
        assert session.has_nonstandard_attr("HttpOnly")
    finally:
        ui.close()


def test_auditor_cannot_change_anything(world: World) -> None:
    ui = Ui(world, "bank-auditor", "bank")
    try:
        page = ui.get("policies/resource/resource-policy").text
        assert "Roll back" not in page and ">activate<" not in page
        for path, data in (
            ("policies/resource/resource-policy/rollback", {}),
            ("policies/resource/resource-policy/activate", {"version": "1"}),
        ):
            r = ui.post(path, {"csrf": ui.csrf, **data})
            assert r.status_code == 403, r.text
            assert "read-only" in r.text
        r = ui.post(
            f"denials/{world.denials[0]}/test", {"csrf": ui.csrf, "resource": "package policy"}
        )
        assert r.status_code == 400 and "only an admin" in r.text
        # The current policies are fair game (nothing changes).
        r = ui.post(f"denials/{world.denials[0]}/test", {"csrf": ui.csrf})
        assert r.status_code == 200 and "current policies" in r.text
        with world.admin("bank-admin", "bank") as admin:
            versions = admin.policy_versions("resource", "resource-policy")
        assert [v["version"] for v in versions if v["active"]] == [2]
    finally:
        ui.close()


def test_auditor_downloads_a_verified_export(world: World, tmp_path: Path) -> None:
    ui = Ui(world, "bank-auditor", "bank")
    try:
        r = ui.post("audit/export", {"csrf": ui.csrf})
        assert r.status_code == 200
        assert "attachment" in r.headers["content-disposition"]
        assert "chain and signatures good" in r.headers["x-custodes-audit-verified"]
        key = ui.get("audit/public-key").content
        (tmp_path / "audit.jsonl").write_bytes(r.content)
        (tmp_path / "audit.pem").write_bytes(key)
        from custodes.audit.verify import load_public_keys

        keys = load_public_keys([tmp_path / "audit.pem"])
        with (tmp_path / "audit.jsonl").open("rb") as fp:
            report = verify_jsonl(fp, keys, stream="bank")
        assert report.ok and report.complete
        assert report.checkpoint is not None and report.checkpoint.actor == "bank-auditor"
        for s in world.values.values():
            assert s.encode() not in r.content
    finally:
        ui.close()


def test_denial_replay_with_a_draft_policy(world: World) -> None:
    ui = Ui(world, "bank-admin", "bank")
    try:
        allow_all = "package policy\nimport rego.v1\ndefault allow := true\n"
        r = ui.post(
            f"denials/{world.denials[0]}/test",
            {"csrf": ui.csrf, "resource": allow_all},
        )
        assert r.status_code == 200, r.text
        assert "draft resource policy" in r.text and ">allow<" in r.text
        r = ui.post(f"denials/{world.denials[0]}/test", {"csrf": ui.csrf})
        assert ">deny<" in r.text
        bad = ui.post(
            f"denials/{world.denials[0]}/test", {"csrf": ui.csrf, "resource": "not rego {"}
        )
        assert bad.status_code == 400
    finally:
        ui.close()


def test_a_runaway_draft_is_stopped_by_the_policy_budget(world: World) -> None:
    # The draft runs in a policy worker under [limits] policy_seconds, off the event loop: the
    # dashboard answers others meanwhile, and the draft's author gets a clear refusal.
    runaway = (
        "package policy\nimport rego.v1\n"
        'trust_claims := {"hardware": 2} if {\n'
        "    some i in numbers.range(1, 100000)\n"
        "    some j in numbers.range(1, 100000)\n"
        "    i == j + 1000000\n"
        "}\n"
    )
    budget = world.broker.config.limits.policy_seconds
    admin, auditor = Ui(world, "bank-admin", "bank"), Ui(world, "bank-auditor", "bank")
    try:
        with ThreadPoolExecutor(1) as pool:
            started = time.monotonic()
            pending = pool.submit(
                admin.post,
                f"denials/{world.denials[0]}/test",
                {"csrf": admin.csrf, "attestation": runaway},
            )
            time.sleep(0.3)
            page = auditor.get("denials")
            # Ordering, not timing: the other user's page came while the draft still ran.
            answered_first = not pending.done()
            r = pending.result()
            refused = time.monotonic() - started
        assert page.status_code == 200
        assert answered_first, "the page waited for the runaway draft"
        assert refused >= budget
        assert r.status_code == 400
        assert f"exceeded its budget of {budget:g} s" in html.unescape(r.text)
    finally:
        admin.close()
        auditor.close()


def test_access_matrix_picture(world: World, tmp_path: Path) -> None:
    after = matrix_json("after.yaml", tmp_path)
    ui = Ui(world, "bank-auditor", "bank")
    try:
        r = ui.post("access-matrix", {"csrf": ui.csrf, "after": after})
        assert r.status_code == 200, r.text
        assert '<svg xmlns="http://www.w3.org/2000/svg"' in r.text
        assert 'class="cell sealed"' in r.text and 'class="cell plaintext"' in r.text
        evil = json.loads(after)
        evil["principals"][0]["name"] = "<script>alert(1)</script>"
        r = ui.post("access-matrix", {"csrf": ui.csrf, "after": json.dumps(evil)})
        assert "<script>alert" not in r.text and "&lt;script&gt;" in r.text
        assert ui.post("access-matrix", {"csrf": ui.csrf, "after": "{}"}).status_code == 400
    finally:
        ui.close()


def test_operator_sees_tenants_and_no_tenant_data(world: World) -> None:
    ui = Ui(world, "operator", None)
    try:
        page = ui.get("").text
        assert "bank" in page and "insurer" in page and "bank-auditor" in page
        for s in (*world.values.values(), str(SECRET), "svn", "resource-policy"):
            assert s not in page
        # The operator's session opens no tenant's dashboard.
        session = session_of(ui)
        with httpx.Client(follow_redirects=False, cookies={"custodes-ui": session}) as other:
            assert other.get(f"{world.ui('bank')}/").status_code == 303
    finally:
        ui.close()
    # Nor does an operator token sign in to a tenant.
    with httpx.Client(follow_redirects=False) as http:
        form = http.get(f"{world.ui('bank')}/login").text
        nonce = re.search(r'name="login_csrf" value="([^"]+)"', form)
        assert nonce
        r = http.post(
            f"{world.ui('bank')}/login",
            data={"login_csrf": nonce.group(1), "token": world.token("operator")},
        )
        assert r.status_code == 401


def test_bank_session_does_not_open_the_insurer(world: World) -> None:
    ui = Ui(world, "bank-admin", "bank")
    try:
        session = session_of(ui)
        with httpx.Client(follow_redirects=False, cookies={"custodes-ui": session}) as other:
            r = other.get(f"{world.ui('insurer')}/resources")
        assert r.status_code == 303
        assert world.values["insurer"] not in r.text
    finally:
        ui.close()


def test_session_expires_and_ends_with_sign_out(world: World) -> None:
    ui = Ui(world, "bank-admin", "bank")
    try:
        world.clock.advance(901)
        try:
            assert ui.get("").status_code == 303
        finally:
            world.clock.advance(-901)
    finally:
        ui.close()
    ui = Ui(world, "bank-admin", "bank")
    try:
        session = session_of(ui)
        assert ui.post("logout", {"csrf": ui.csrf}).status_code == 303
        with httpx.Client(follow_redirects=False, cookies={"custodes-ui": session}) as other:
            assert other.get(f"{ui.base}/").status_code == 303
    finally:
        ui.close()


def test_removed_identity_loses_its_session(world: World) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from dashboard_world import pem

    key = ed25519.Ed25519PrivateKey.generate()
    world.keys["bank-carol"] = key
    with world.admin("bank-admin", "bank") as admin:
        admin.add_identity("bank-carol", "auditor", pem(key))
    ui = Ui(world, "bank-carol", "bank")
    try:
        assert ui.get("").status_code == 200
        with world.admin("bank-admin", "bank") as admin:
            admin.remove_identity("bank-carol")
        assert ui.get("").status_code == 303
    finally:
        ui.close()


def test_sign_ins_are_in_the_audit_log(world: World) -> None:
    Ui(world, "bank-auditor", "bank").close()
    with world.admin("bank-admin", "bank") as admin:
        export = admin.export_audit()
    events = [json.loads(line) for line in export.splitlines()]
    assert any(
        e["event"].get("action") == "ui.sign-in" and e["actor"] == "bank-auditor" for e in events
    )
