"""Dashboard sign-in: a short-lived admin token in, a short-lived browser session out.

The browser never sees a private key. The admin mints a single-use token on their own
machine (``custodes admin token --ttl 60``, or ``custodes operator token``) and pastes it into
the sign-in form; the broker checks it exactly as it checks every admin API call (signature
by a registered key, ``sub`` bound to that key, ``aud`` naming this broker and tenant,
lifetime, single-use ``jti``: :class:`custodes.kbs.admin_auth.AdminAuthenticator`, not a copy
of it) and answers with a session:

* 256 random bits in an ``HttpOnly``, ``SameSite=Strict`` cookie (``Secure`` behind TLS),
  scoped to the tenant's dashboard path, so one tenant's session is never sent to another's
  pages; the store keeps only its SHA-256, so a copy of the database opens no session;
* bound to the identity's subject and role, re-checked on every request: an identity removed
  from the tenant, or a suspended tenant, ends its sessions at once;
* absolute lifetime :data:`SESSION_SECONDS` (no sliding renewal): a stolen cookie is good
  for minutes, and a new sign-in needs a new token, i.e. the private key;
* a CSRF token per session, required (constant-time compared) in every state-changing form,
  on top of ``SameSite=Strict`` and an ``Origin`` / ``Sec-Fetch-Site`` check.

The sign-in form itself carries a login CSRF token (a random cookie repeated in the form), so
another site cannot sign a victim into the attacker's session.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

from custodes._internal.admin_claims import normalize
from custodes.errors import AdminAuthError, ConfigError, CustodesError
from custodes.kbs.admin_auth import AdminAuthenticator, AdminIdentity, Role
from custodes.kbs.broker import Broker
from custodes.kbs.tenants import DEFAULT_TENANT, namespace

SESSION_SECONDS: Final = 900
LOGIN_FORM_SECONDS: Final = 600
SESSION_COOKIE: Final = "custodes-ui"
LOGIN_COOKIE: Final = "custodes-ui-login"
NS_UI_SESSIONS: Final = "ui_session"
NS_OPERATOR_UI_SESSIONS: Final = "operator_ui_session"
MAX_TOKEN_CHARS: Final = 8192


class UiAuthError(AdminAuthError):
    """No valid dashboard session, or a sign-in refused (401)."""

    code = "ui-auth"


class UiForbidden(AdminAuthError):
    """Signed in, but the role may not do this, or the request failed its CSRF check (403)."""

    code = "ui-forbidden"


@dataclass(frozen=True, slots=True)
class Scope:
    """Whose dashboard: a tenant's (``tenant``) or the broker operator's (``None``)."""

    tenant: str | None
    base: str  # the URL path the dashboard lives under, without a trailing '/'

    @classmethod
    def for_tenant(cls, tenant: str) -> Scope:
        return cls(tenant, "/ui" if tenant == DEFAULT_TENANT else f"/tenants/{tenant}/ui")

    @classmethod
    def operator(cls) -> Scope:
        return cls(None, "/operator/ui")

    @property
    def namespace(self) -> str:
        if self.tenant is None:
            return NS_OPERATOR_UI_SESSIONS
        return namespace(self.tenant, NS_UI_SESSIONS)


@dataclass(frozen=True, slots=True)
class UiSession:
    subject: str
    role: Role
    csrf: str
    expires: float

    @property
    def can_change(self) -> bool:
        return self.role is Role.ADMIN


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class Sessions:
    """Dashboard sessions in the broker's store (shared by replicas), one namespace per
    tenant and one for the operator."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    def sign_in(self, scope: Scope, token: str) -> tuple[str, UiSession]:
        """Check ``token`` as the admin (or operator) API does; a new session for its
        identity. ``UiAuthError`` for any refusal (the reason is shown: it names no secret)."""
        token = token.strip()
        if not token or len(token) > MAX_TOKEN_CHARS or not token.isascii():
            raise UiAuthError("paste a token minted by `custodes admin token`")
        try:
            who = self._authenticator(scope).authenticate(f"Bearer {token}")
        except AdminAuthError as e:
            raise UiAuthError(str(e)) from e
        allowed = (Role.OPERATOR,) if scope.tenant is None else (Role.ADMIN, Role.AUDITOR)
        if who.role not in allowed:
            raise UiAuthError(f"a {who.role} identity cannot sign in here")
        now = self._broker.clock.now()
        session_id = secrets.token_urlsafe(32)
        session = UiSession(who.subject, who.role, secrets.token_urlsafe(32), now + SESSION_SECONDS)
        record = {
            "sub": session.subject,
            "role": session.role.value,
            "csrf": session.csrf,
            "exp": session.expires,
        }
        self._broker.store.set(
            scope.namespace,
            _key(session_id),
            json.dumps(record).encode(),
            expires_at=session.expires,
        )
        return session_id, session

    def _authenticator(self, scope: Scope) -> AdminAuthenticator:
        if scope.tenant is None:
            return self._broker.operator
        return self._broker.tenant(scope.tenant).admin

    def get(self, scope: Scope, session_id: str | None) -> UiSession:
        """The live session named by the cookie, its identity still registered with the same
        role; ``UiAuthError`` otherwise."""
        if not session_id or len(session_id) > 128:
            raise UiAuthError("not signed in")
        raw = self._broker.store.get(
            scope.namespace, _key(session_id), now=self._broker.clock.now()
        )
        if raw is None:
            raise UiAuthError("not signed in, or the session has expired")
        try:
            record = json.loads(raw)
            session = UiSession(
                str(record["sub"]), Role(record["role"]), str(record["csrf"]), float(record["exp"])
            )
        except (ValueError, KeyError, TypeError) as e:
            raise UiAuthError("the session record is unreadable; sign in again") from e
        if session.expires <= self._broker.clock.now():
            raise UiAuthError("the session has expired")
        self._check_still_registered(scope, AdminIdentity(session.subject, session.role))
        return session

    def _check_still_registered(self, scope: Scope, who: AdminIdentity) -> None:
        if scope.tenant is None or scope.tenant == DEFAULT_TENANT:
            # Identities from the config file: they change only with a restart, which keeps
            # the store; a removed key's subject cannot sign in again.
            if scope.tenant is not None:
                self._broker.tenant(scope.tenant)
            return
        try:
            tenant = self._broker.registry.get(scope.tenant)
            self._broker.tenant(scope.tenant)  # refuses a suspended tenant
        except CustodesError as e:
            raise UiAuthError(f"tenant {scope.tenant} is not available: {e}") from e
        if not any(i.subject == who.subject and i.role is who.role for i in tenant.identities):
            raise UiAuthError(f"{who.role} {who.subject} is no longer an identity of this tenant")

    def sign_out(self, scope: Scope, session_id: str | None) -> None:
        if session_id and len(session_id) <= 128:
            self._broker.store.delete(scope.namespace, _key(session_id))


def check_csrf(session: UiSession, submitted: str | None) -> None:
    """The form's CSRF token is the session's (constant-time); ``UiForbidden`` otherwise."""
    if not submitted or not hmac.compare_digest(submitted.encode(), session.csrf.encode()):
        raise UiForbidden("the form's CSRF token is missing or wrong: reload the page and retry")


def check_login_csrf(cookie: str | None, submitted: str | None) -> None:
    if not cookie or not submitted or not hmac.compare_digest(cookie.encode(), submitted.encode()):
        raise UiForbidden("the sign-in form expired or came from elsewhere: reload it and retry")


def check_same_origin(
    origin: str | None, fetch_site: str | None, own_origins: Collection[str]
) -> None:
    """A state-changing request must come from the dashboard's own pages: the browser's
    ``Sec-Fetch-Site`` and ``Origin``, when sent, must say so. ``own_origins`` are the
    normalized origins (``scheme://host:port``) the dashboard is reached at."""
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        raise UiForbidden(f"cross-site request refused (Sec-Fetch-Site: {fetch_site[:20]})")
    if origin is None:
        return
    if origin == "null":
        raise UiForbidden("cross-origin request refused (Origin: null)")
    try:
        normalized = normalize(origin)
    except ConfigError as e:
        raise UiForbidden("cross-origin request refused (Origin is not a URL)") from e
    if normalized not in own_origins:
        raise UiForbidden("cross-origin request refused (Origin does not match)")
