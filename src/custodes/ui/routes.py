"""The dashboard's HTTP side: routes under ``/ui`` (the default tenant),
``/tenants/<tenant>/ui`` and ``/operator/ui``, mounted by :func:`ui_routes`.

Every response carries a strict Content-Security-Policy (scripts and styles only from the
dashboard's own static files, no inline script or style, no framing, forms post only to
itself) and ``Cache-Control: no-store``. Every page needs a session (:mod:`.auth`); every
POST also needs the session's CSRF token and a same-origin request. Handlers authenticate,
call one function of :mod:`.pages` in a worker thread, and render its template.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources as importlib_resources
from typing import Any, Final
from urllib.parse import parse_qsl, quote, urlsplit

import anyio
from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from custodes._internal.admin_claims import normalize
from custodes.audit.entry import format_time
from custodes.errors import AdminAuthError, ConfigError, CustodesError, MalformedMessage, NotFound
from custodes.kbs import errors as kerr
from custodes.kbs.admin_auth import AdminForbidden
from custodes.kbs.broker import Broker
from custodes.kbs.tenants import DEFAULT_TENANT, check_tenant_id
from custodes.types.json import JsonObject
from custodes.ui import charts
from custodes.ui.auth import (
    LOGIN_COOKIE,
    LOGIN_FORM_SECONDS,
    SESSION_COOKIE,
    Scope,
    Sessions,
    UiAuthError,
    UiForbidden,
    UiSession,
    check_csrf,
    check_login_csrf,
    check_same_origin,
)
from custodes.ui.digest import Digests
from custodes.ui.pages import activity, common, denials, operator, stores

logger = logging.getLogger(__name__)

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'none'; font-src 'none'; object-src 'none'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; require-trusted-types-for 'script'"
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # same-origin, not no-referrer: with no-referrer Chromium sends "Origin: null" on POSTs.
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), usb=()",
}
STATIC: Final = {
    "ui.css": "text/css",
    "ui.js": "text/javascript",
    "favicon.svg": "image/svg+xml",
}
MAX_FORM_BYTES: Final = 256 * 1024
MAX_MATRIX_FORM_BYTES: Final = 5 * 1024 * 1024
MAX_FORM_FIELDS: Final = 16

Form = dict[str, str]


@dataclass(frozen=True, slots=True)
class Call:
    """One request to the dashboard: where, who (once authenticated), what."""

    request: Request
    scope: Scope
    rest: list[str]
    session: UiSession | None = None


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("custodes.ui", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["urlpart"] = lambda s: quote(str(s), safe="")
    env.filters["ms_time"] = format_time
    env.filters["shortjson"] = common.short_json
    return env


def _static(name: str) -> bytes:
    return importlib_resources.files("custodes.ui").joinpath("static", name).read_bytes()


class Dashboard:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.sessions = Sessions(broker)
        self.digests = Digests(broker.audit) if broker.audit is not None else None
        self.env = _environment()
        self.static = {name: _static(name) for name in STATIC}

    # -- responses --

    def page(self, call: Call, template: str, status: int = 200, **values: Any) -> Response:
        body = self.env.get_template(template).render(
            base=call.scope.base,
            scope=call.scope,
            session=call.session,
            tenant=call.scope.tenant,
            path="/".join(call.rest),
            **values,
        )
        return HTMLResponse(body, status_code=status, headers=SECURITY_HEADERS)

    def error(self, call: Call, exc: BaseException) -> Response:
        if isinstance(exc, UiAuthError) and call.request.method == "GET":
            return _redirect(f"{call.scope.base}/login", clear_session=call.scope)
        if isinstance(exc, UiAuthError):
            status = 401
        elif isinstance(exc, UiForbidden | AdminForbidden):
            status = 403
        elif isinstance(exc, common.UiInputError | MalformedMessage):
            status = 400
        elif isinstance(exc, NotFound):
            status = 404
        elif isinstance(exc, AdminAuthError):
            status = 401
        elif isinstance(exc, CustodesError):
            mapped = kerr.classify(exc)
            status = mapped.status
            if status >= 500:
                logger.error("dashboard error on %s: %s", call.request.url.path, exc)
                exc = CustodesError("the broker could not answer; see its log")
        else:
            logger.exception("dashboard error on %s", call.request.url.path, exc_info=exc)
            status, exc = 500, CustodesError("internal error; see the broker's log")
        return self.page(call, "error.html", status=status, message=str(exc), status_code=status)

    # -- entry points --

    async def tenant(self, request: Request) -> Response:
        tenant = request.path_params.get("tenant", DEFAULT_TENANT)
        rest = str(request.path_params.get("rest", "")).split("/")
        try:
            scope = Scope.for_tenant(check_tenant_id(tenant))
        except MalformedMessage:
            scope = Scope.for_tenant(DEFAULT_TENANT)
            return self.error(Call(request, scope, rest), NotFound("no such tenant"))
        return await self._serve(Call(request, scope, [s for s in rest if s]), self._tenant_routes)

    async def operator(self, request: Request) -> Response:
        rest = [s for s in str(request.path_params.get("rest", "")).split("/") if s]
        return await self._serve(Call(request, Scope.operator(), rest), self._operator_routes)

    async def root(self, request: Request) -> Response:
        return _redirect(request.url.path + "/")

    async def _serve(self, call: Call, routes: Callable[[Call], Awaitable[Response]]) -> Response:
        try:
            if call.rest[:1] == ["static"]:
                return self._static(call)
            if call.rest == ["login"]:
                if call.request.method == "GET":
                    return self._login_form(call)
                return await self._login(call)
            if self.digests is None:
                raise NotFound("this broker keeps no audit log: the dashboard needs one")
            session = self.sessions.get(call.scope, call.request.cookies.get(SESSION_COOKIE))
            call = Call(call.request, call.scope, call.rest, session)
            if call.request.method == "POST":
                form = await self._form(call)
                check_csrf(session, form.get("csrf"))
                if call.rest == ["logout"]:
                    self.sessions.sign_out(call.scope, call.request.cookies.get(SESSION_COOKIE))
                    return _redirect(f"{call.scope.base}/login", clear_session=call.scope)
                call.request.state.form = form
            return await routes(call)
        except Exception as exc:  # every failure is a page, never a traceback
            return self.error(call, exc)

    # -- sign-in --

    def _static(self, call: Call) -> Response:
        name = call.rest[1] if len(call.rest) == 2 else ""
        if call.request.method != "GET" or name not in STATIC:
            raise NotFound("no such file")
        return Response(
            self.static[name],
            media_type=STATIC[name],
            headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"},
        )

    def _login_form(self, call: Call, message: str = "", status: int = 200) -> Response:
        import secrets

        nonce = secrets.token_urlsafe(24)
        origin = _own_origin(call.request)
        if call.scope.tenant is None:
            command = f"custodes operator --url {origin} token --ttl 60"
        elif call.scope.tenant == DEFAULT_TENANT:
            command = f"custodes admin --url {origin} --subject YOU token --ttl 60"
        else:
            command = (
                f"custodes admin --url {origin}/tenants/{call.scope.tenant} --subject YOU "
                "token --ttl 60"
            )
        response = self.page(
            call, "login.html", status=status, login_csrf=nonce, command=command, message=message
        )
        response.set_cookie(
            LOGIN_COOKIE,
            nonce,
            max_age=LOGIN_FORM_SECONDS,
            path=call.scope.base,
            httponly=True,
            secure=_tls(call.request),
            samesite="strict",
        )
        return response

    async def _login(self, call: Call) -> Response:
        if call.request.method != "POST":
            raise NotFound("sign in with GET or POST")
        form = await self._form(call)
        check_login_csrf(call.request.cookies.get(LOGIN_COOKIE), form.get("login_csrf"))
        try:
            session_id, session = await anyio.to_thread.run_sync(
                lambda: self.sessions.sign_in(call.scope, form.get("token", ""))
            )
        except UiAuthError as e:
            return self._login_form(call, f"sign-in refused: {e}", status=401)
        tenant = call.scope.tenant
        if tenant is not None:
            # A durable commit: off the event loop, as every other audit append.
            event: JsonObject = {"action": "ui.sign-in", "role": session.role.value}
            await anyio.to_thread.run_sync(
                lambda: self.broker.record(tenant, "admin", session.subject, event)
            )
        logger.info("dashboard sign-in: %s %s (%s)", session.role, session.subject, call.scope.base)
        response = _redirect(f"{call.scope.base}/")
        response.set_cookie(
            SESSION_COOKIE,
            session_id,
            max_age=int(session.expires - self.broker.clock.now()),
            path=call.scope.base,
            httponly=True,
            secure=_tls(call.request),
            samesite="strict",
        )
        response.delete_cookie(LOGIN_COOKIE, path=call.scope.base)
        return response

    async def _form(self, call: Call) -> Form:
        request = call.request
        check_same_origin(
            request.headers.get("origin"),
            request.headers.get("sec-fetch-site"),
            self._origins(request),
        )
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        limit = MAX_MATRIX_FORM_BYTES if call.rest == ["access-matrix"] else MAX_FORM_BYTES
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise common.UiInputError(f"the form is over {limit} bytes")
        if body and ctype != "application/x-www-form-urlencoded":
            raise common.UiInputError("forms are sent as application/x-www-form-urlencoded")
        try:
            pairs = parse_qsl(
                body.decode("utf-8"),
                keep_blank_values=True,
                strict_parsing=False,
                max_num_fields=MAX_FORM_FIELDS,
            )
        except (UnicodeDecodeError, ValueError) as e:
            raise common.UiInputError(f"unreadable form: {e}") from e
        form: Form = {}
        for name, value in pairs:
            if name in form:
                raise common.UiInputError(f"form field {name[:20]!r} given twice")
            form[name] = value
        return form

    def _origins(self, request: Request) -> frozenset[str]:
        """Where the dashboard is reached: the request's own scheme and Host, and the
        broker's public URLs (behind a TLS-terminating proxy the request says http)."""
        found = set()
        for url in (_own_origin(request), *self.broker.origins.current()):
            parts = urlsplit(url)
            try:
                found.add(normalize(f"{parts.scheme}://{parts.netloc}"))
            except ConfigError:
                continue
        return frozenset(found)

    # -- the tenant's pages --

    def _tenant_ctx(self, call: Call) -> common.Tenant:
        if call.session is None or self.digests is None or call.scope.tenant is None:
            raise UiAuthError("not signed in")
        return common.Tenant(
            self.broker, self.broker.tenant(call.scope.tenant), self.digests, call.session
        )

    async def _tenant_routes(self, call: Call) -> Response:
        t = self._tenant_ctx(call)
        method, rest, query = call.request.method, call.rest, call.request.query_params

        async def run(fn: Callable[[], Any]) -> Any:
            return await anyio.to_thread.run_sync(fn)

        head = rest[0] if rest else ""
        if method == "GET":
            if not rest:
                ov = await run(lambda: activity.overview(t, query.get("window", "24h")))
                return self.page(call, "overview.html", ov=ov, windows=charts.WINDOWS)
            if rest == ["activity"] or rest == ["denials"]:
                kinds = ("attestation", "release") if head == "activity" else ("denial",)
                filters = activity.Filters.parse(dict(query))
                act = await run(lambda: activity.activity(t, filters, kinds))
                return self.page(call, f"{head}.html", act=act, results=common.RESULTS)
            if head == "activity" and len(rest) == 2:
                seq = _int(rest[1], "entry")
                view = await run(lambda: activity.entry_view(t, seq))
                return self.page(call, "entry.html", view=view)
            if head == "denials" and len(rest) == 2:
                view = await run(lambda: denials.denial_view(t, rest[1]))
                return self.page(call, "denial.html", view=view, test=None)
            if rest == ["resources"]:
                rows = await run(lambda: stores.resources(t))
                return self.page(call, "resources.html", rows=rows)
            if rest == ["policies"]:
                listed = await run(lambda: stores.policy_list(t))
                return self.page(call, "policies.html", policies=listed)
            if head == "policies" and len(rest) == 3:
                version = _opt_int(query.get("version"), "version")
                diff_from = _opt_int(query.get("diff"), "diff")
                view = await run(
                    lambda: stores.policy_view(t, rest[1], rest[2], version, diff_from)
                )
                return self.page(call, "policy.html", view=view, done=query.get("done", ""))
            if rest == ["reference-values"]:
                rows = await run(lambda: stores.reference_values(t))
                return self.page(call, "reference_values.html", rows=rows)
            if rest == ["access-matrix"]:
                return self.page(call, "access_matrix.html", pictures=[], message="")
            if rest == ["audit"]:
                digest = await run(t.digest)
                return self.page(call, "audit.html", chain=digest.status())
            if rest == ["audit", "public-key"]:
                log = self.broker.audit
                if log is None:
                    raise NotFound("no audit log")
                from cryptography.hazmat.primitives import serialization

                pem = log.public_key.public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
                return Response(
                    pem,
                    media_type="application/x-pem-file",
                    headers={
                        **SECURITY_HEADERS,
                        "Content-Disposition": 'attachment; filename="audit-key.pem"',
                    },
                )
        if method == "POST":
            form: Form = call.request.state.form
            if head == "policies" and len(rest) == 4 and rest[3] in ("activate", "rollback"):
                if not t.session.can_change:
                    raise UiForbidden(
                        f"{t.session.role} {t.session.subject} may not change policies "
                        "(read-only role)"
                    )
                version = (
                    None if rest[3] == "rollback" else _int(form.get("version", ""), "version")
                )
                now_active = await run(lambda: stores.activate(t, rest[1], rest[2], version))
                return _redirect(
                    f"{call.scope.base}/policies/{quote(rest[1])}/{quote(rest[2])}"
                    f"?done=activated+version+{now_active}"
                )
            if head == "denials" and len(rest) == 3 and rest[2] == "test":
                view = await run(lambda: denials.denial_view(t, rest[1]))
                # On a worker thread: the drafts run in policy worker processes under the
                # budget, and the thread waits for them (never the event loop).
                test = await run(
                    lambda: denials.test_denial(
                        t, rest[1], form.get("attestation", ""), form.get("resource", "")
                    )
                )
                return self.page(call, "denial.html", view=view, test=test)
            if rest == ["access-matrix"]:
                pictures = []
                for name, title in (("before", "before"), ("after", "after")):
                    if form.get(name, "").strip():
                        pictures.append(stores.matrix_picture(form[name], title))
                if not pictures:
                    raise common.UiInputError("paste at least one access matrix (JSON)")
                drawn = [(p, charts.matrix_svg(p)) for p in pictures]
                return self.page(call, "access_matrix.html", pictures=drawn, message="")
            if rest == ["audit", "export"]:
                exported = await run(lambda: operator.export(t))
                return Response(
                    exported.body,
                    media_type="application/jsonl",
                    headers={
                        **SECURITY_HEADERS,
                        "Content-Disposition": f'attachment; filename="{exported.filename}"',
                        "X-Custodes-Audit-Verified": exported.summary,
                    },
                )
        raise NotFound(f"no dashboard page {'/'.join(rest)[:80]}")

    # -- the operator's pages --

    async def _operator_routes(self, call: Call) -> Response:
        if call.request.method == "GET" and not call.rest:
            rows = await anyio.to_thread.run_sync(lambda: operator.operator_tenants(self.broker))
            return self.page(call, "operator.html", tenants=rows)
        raise NotFound(f"no operator page {'/'.join(call.rest)[:80]}")


def _int(text: str, what: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        raise common.UiInputError(f"{what} must be a number")
    return int(text)


def _opt_int(text: str | None, what: str) -> int | None:
    return None if text is None or text == "" else _int(text, what)


def _tls(request: Request) -> bool:
    return request.url.scheme == "https"


def _own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.headers.get('host', '')}"


def _redirect(location: str, *, clear_session: Scope | None = None) -> Response:
    response = RedirectResponse(location, status_code=303, headers=SECURITY_HEADERS)
    if clear_session is not None:
        response.delete_cookie(SESSION_COOKIE, path=clear_session.base)
    return response


def ui_routes(broker: Broker) -> list[BaseRoute]:
    """The dashboard's routes, for the broker's app."""
    ui = Dashboard(broker)
    methods = ["GET", "POST"]
    return [
        Route("/ui", ui.root, methods=["GET"]),
        Route("/ui/{rest:path}", ui.tenant, methods=methods),
        Route("/tenants/{tenant}/ui", ui.root, methods=["GET"]),
        Route("/tenants/{tenant}/ui/{rest:path}", ui.tenant, methods=methods),
        Route("/operator/ui", ui.root, methods=["GET"]),
        Route("/operator/ui/{rest:path}", ui.operator, methods=methods),
    ]
