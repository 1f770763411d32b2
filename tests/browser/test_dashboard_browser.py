"""The dashboard in a real browser: Debian's Chromium driven by Playwright (never a bundled
browser: ``executable_path`` is the system's). Signs in as the bank's admin, its auditor and
the broker operator, walks every view, rolls a policy back, downloads a verified audit export,
and checks that no secret value and no other tenant's data is in any page or response, that
the CSP blocks nothing the pages need (no violation reported), and that every form control
has a label.

Screenshots of each view go to a temporary directory; with ``CUSTODES_DASHBOARD_SCREENSHOTS=
docs/img/dashboard`` they replace the ones used by docs/dashboard.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Response, sync_playwright

from custodes.audit.verify import load_public_keys, verify_jsonl
from dashboard_world import World, dashboard_world, history, matrix_json

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with dashboard_world(tmp_path_factory.mktemp("dashboard-browser")) as w:
        history(w, steps=40, seconds=90)
        yield w


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), "install Debian's chromium: scripts/setup-system"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = os.environ.get("CUSTODES_DASHBOARD_SCREENSHOTS")
    path = Path(target) if target else tmp_path_factory.mktemp("shots")
    path.mkdir(parents=True, exist_ok=True)
    return path


# Every visible text element's contrast against its (first opaque) background: WCAG AA 4.5:1.
CONTRAST_JS = """() => {
  const rgb = s => (s.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = c => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = el => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const low = [];
  const texts = 'a, p, td, th, button, label, dt, dd, h1, h2, h3, span, summary, caption, pre';
  for (const el of document.querySelectorAll(texts)) {
    if (!el.textContent.trim() || !el.offsetParent) continue;
    const fg = lum(rgb(getComputedStyle(el).color).slice(0, 3));
    const bg = lum(background(el));
    const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    if (ratio < 4.5) low.push(`${el.tagName} ${el.textContent.trim().slice(0, 30)} ${ratio}`);
  }
  return low;
}"""


class Session:
    """A browser context signed in as one identity, recording every response body."""

    def __init__(self, browser: Browser, world: World, who: str, tenant: str | None) -> None:
        self.context = browser.new_context(
            viewport={"width": 1280, "height": 900}, accept_downloads=True
        )
        self.page: Page = self.context.new_page()
        self.bodies: list[tuple[str, str]] = []
        self.console: list[str] = []
        self.page.on("response", self._record)
        self.page.on("console", self._console)
        self.page.on("dialog", lambda d: d.accept())
        self.base = world.ui(tenant)
        self.page.goto(f"{self.base}/")  # no session: sent to the sign-in page
        assert self.page.url == f"{self.base}/login"
        self.page.get_by_label("Token").fill(world.token(who, tenant))
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_url(f"{self.base}/")

    def _record(self, response: Response) -> None:
        kind = response.headers.get("content-type", "")
        if response.status < 300 and ("text" in kind or "json" in kind):
            self.bodies.append((response.url, response.text()))

    def _console(self, message: ConsoleMessage) -> None:
        self.console.append(f"{message.type}: {message.text}")

    def visit(self, path: str, shot: Path | None = None) -> Page:
        response = self.page.goto(f"{self.base}/{path}")
        assert response is not None and response.status == 200, path
        self.check_page()
        if shot is not None:
            self.page.screenshot(path=str(shot), full_page=True)
        return self.page

    def check_page(self) -> None:
        unlabelled = self.page.evaluate(
            """() => [...document.querySelectorAll('input, select, textarea')]
                .filter(e => e.type !== 'hidden')
                .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
                .map(e => e.outerHTML)"""
        )
        assert unlabelled == [], unlabelled
        low = self.page.evaluate(CONTRAST_JS)
        assert low == [], low

    def close(self) -> None:
        self.context.close()


def assert_clean(session: Session, world: World, tenant: str | None) -> None:
    """No secret value anywhere, no other tenant's data, no CSP violation."""
    for url, body in session.bodies:
        for value in world.values.values():
            assert value not in body, url
        if tenant == "bank":
            assert "insurer" not in body, url
    assert not [c for c in session.console if "Content Security Policy" in c], session.console
    assert not [c for c in session.console if c.startswith("error")], session.console


TENANT_VIEWS = [
    ("?window=1h", "overview"),
    ("activity", "activity"),
    ("denials", "denials"),
    ("resources", "resources"),
    ("policies", "policies"),
    ("reference-values", "reference-values"),
    ("audit", "audit"),
]


def test_admin_walks_every_view_and_rolls_back(
    browser: Browser, world: World, shots: Path, tmp_path: Path
) -> None:
    s = Session(browser, world, "bank-admin", "bank")
    try:
        for path, name in TENANT_VIEWS:
            s.visit(path, shots / f"{name}.png")
        page = s.visit("activity")
        page.get_by_label("Kind").select_option("release")
        page.get_by_role("button", name="Filter").click()
        page.wait_for_url("**kind=release**")
        assert page.locator("span.result.released").count() > 0
        assert page.locator("span.result.contraindicated").count() == 0
        page.locator("tbody a").first.click()
        page.wait_for_selector("text=Trust vector")
        page.screenshot(path=str(shots / "entry.png"), full_page=True)
        # A denial, side by side, and its replay against the current policies.
        page = s.visit(f"denials/{world.denials[1]}")
        assert page.locator("text=only-this-one").count() > 0
        page.get_by_role("button", name="Test against current or draft policies").click()
        page.wait_for_selector("text=With the current policies")
        page.screenshot(path=str(shots / "denial.png"), full_page=True)
        # Policies: a diff, then a rollback (confirm dialog accepted).
        page = s.visit("policies/resource/resource-policy?version=2&diff=1", shots / "diff.png")
        assert page.locator(".diff .add").count() > 0
        page.get_by_role("button", name="Roll back to the previous version").click()
        page.wait_for_selector("text=activated version 1")
        active = page.locator("tr", has=page.locator("strong", has_text="active"))
        assert active.locator("td").first.inner_text() == "1"
        page.screenshot(path=str(shots / "policy.png"), full_page=True)
        # Back to version 2 with the activate button of its row.
        page.locator("tbody tr").nth(1).get_by_role("button", name="activate").click()
        page.wait_for_selector("text=activated version 2")
        # The access matrix, drawn from the seed's before/after clusters.
        page = s.visit("access-matrix")
        page.get_by_label("Before (JSON)").fill(matrix_json("before.yaml", tmp_path))
        page.get_by_label("After (JSON)").fill(matrix_json("after.yaml", tmp_path))
        page.get_by_role("button", name="Draw").click()
        page.wait_for_selector("svg.matrix")
        assert page.locator("svg.matrix").count() == 2
        page.screenshot(path=str(shots / "access-matrix.png"), full_page=True)
        # Keyboard: the first Tab reaches the skip link.
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
        assert_clean(s, world, "bank")
    finally:
        s.close()


def test_auditor_reads_and_exports_but_changes_nothing(
    browser: Browser, world: World, shots: Path, tmp_path: Path
) -> None:
    s = Session(browser, world, "bank-auditor", "bank")
    try:
        for path, _ in TENANT_VIEWS:
            s.visit(path)
        page = s.visit("policies/resource/resource-policy")
        assert page.get_by_role("button", name="Roll back to the previous version").count() == 0
        assert page.get_by_role("button", name="activate").count() == 0
        page = s.visit("audit")
        with page.expect_download() as download:
            page.get_by_role("button", name="Export the audit stream").click()
        export = tmp_path / "audit.jsonl"
        download.value.save_as(export)
        key = tmp_path / "audit.pem"
        key.write_bytes(page.request.get(f"{s.base}/audit/public-key").body())
        with export.open("rb") as fp:
            report = verify_jsonl(fp, load_public_keys([key]), stream="bank")
        assert report.ok and report.complete and report.checkpoint is not None
        assert report.checkpoint.actor == "bank-auditor"
        page = s.visit("", shots / "auditor-overview.png")
        assert page.locator("text=(read-only)").count() == 1
        assert_clean(s, world, "bank")
    finally:
        s.close()


def test_operator_sees_tenants_only(browser: Browser, world: World, shots: Path) -> None:
    s = Session(browser, world, "operator", None)
    try:
        page = s.visit("", shots / "operator.png")
        assert page.locator("td", has_text="bank").count() >= 1
        assert page.locator("td", has_text="insurer").count() >= 1
        for url, body in s.bodies:
            for tenant_data in ("db-password", "resource-policy", "svn", "launch_digest"):
                assert tenant_data not in body, url
        # The operator's browser has no session for a tenant's dashboard.
        s.page.goto(f"{world.ui('bank')}/resources")
        assert s.page.url == f"{world.ui('bank')}/login"
        assert_clean(s, world, None)
    finally:
        s.close()


def test_sign_in_page_screenshot(browser: Browser, world: World, shots: Path) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 700})
    try:
        page = context.new_page()
        page.goto(f"{world.ui('bank')}/login")
        page.get_by_label("Token").fill("not a token")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_selector("text=sign-in refused")
        page.screenshot(path=str(shots / "sign-in.png"))
        assert page.locator("text=already used").count() == 0
    finally:
        context.close()
