"""KBS protocol 0.4.0 client: the RCAR handshake and resource fetches, as upstream's guest.

Behaviour mirrored from upstream's client: the token is cached until it expires; a resource
request answered 401 triggers a fresh handshake and a retry (3 tries in all); 404 is "not
found"; anything else is an error. The ephemeral TEE key is made per client and never leaves
it; resources arrive as a JWE to that key.

A client is shared by the threads of a pod start (``custodes run`` fetches its secrets
concurrently): one handshake runs at a time, under a lock, and a thread that finds its token
refused re-attests only if no other thread has already replaced that token, so a burst of
401s costs one handshake, not one each; threads that waited while a handshake failed get its
error rather than attempting again. The session cookie of the handshake is carried
explicitly, never through the HTTP client's cookie jar, which every thread would share.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Literal

import httpx

from custodes._internal.b64 import b64url_decode
from custodes._internal.kbs_http import KbsRequestError, raise_for_error
from custodes._internal.tls import tls_verify
from custodes.errors import MalformedMessage, UpstreamError
from custodes.guest.attester.base import Attester
from custodes.guest.attester.composite import additional_evidence
from custodes.guest.policy_selector import check_policy_selector
from custodes.protocol.binding import (
    HashAlgorithm,
    device_runtime_data_digest,
    runtime_data_digest,
    select_hash_algorithm,
)
from custodes.protocol.messages import (
    POLICY_SELECTOR,
    PROTOCOL_VERSION,
    Attestation,
    AttestationResult,
    Challenge,
    InitData,
    Request,
    RuntimeData,
    TeeEvidence,
)
from custodes.protocol.resource import ResourcePath
from custodes.protocol.tee_key import TeeKeyPair
from custodes.types.json import Json, JsonObject

logger = logging.getLogger(__name__)

SESSION_COOKIE = "kbs-session-id"
RESOURCE_TRIES = 3
# Refresh a cached token this long before it expires, so it does not expire in flight.
TOKEN_REFRESH_MARGIN = 10


@dataclass(frozen=True, slots=True)
class Token:
    value: str
    expires_at: float

    @classmethod
    def parse(cls, value: str) -> Token:
        """Reads ``exp`` without verifying: the guest has no trust anchor for the token,
        it only needs to know when to get a new one."""
        try:
            payload = json.loads(b64url_decode(value.split(".")[1]))
            exp = payload["exp"]
            if not isinstance(exp, int):
                raise TypeError("exp")
        except (IndexError, ValueError, KeyError, TypeError) as e:
            raise MalformedMessage("the broker's token is not a JWT with an 'exp' claim") from e
        return cls(value, float(exp))

    def claims(self) -> JsonObject:
        payload: JsonObject = json.loads(b64url_decode(self.value.split(".")[1]))
        return payload


class KbsClient:
    """One broker, one attester, one ephemeral TEE key."""

    def __init__(
        self,
        url: str,
        attester: Attester,
        *,
        key_kind: Literal["ec-p256", "ec-p521", "rsa"] = "ec-p256",
        init_data: str | None = None,
        ca_file: Path | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        device_attesters: Sequence[Attester] = (),
        policy_selector: str | None = None,
    ) -> None:
        """``device_attesters`` (GPUs) send their evidence as ``additional_evidence``;
        ``policy_selector`` names the attestation policy to ask for (the broker maps it)."""
        self.base = url.rstrip("/")
        if policy_selector is not None:
            policy_selector = check_policy_selector(policy_selector, "--policy-selector")
        self.policy_selector = policy_selector
        self.attester = attester
        self.device_attesters = tuple(device_attesters)
        if len({a.tee for a in self.device_attesters}) != len(self.device_attesters):
            raise ValueError("one device attester per device TEE")
        self.key = TeeKeyPair.generate(key_kind)
        self.init_data = init_data
        self._clock = clock
        # Guards the handshake and the (token, session) pair it produces.
        self._lock = threading.Lock()
        self._token: Token | None = None
        self._session_id: str | None = None
        self._ended = 0  # handshakes ended (a caller compares it before and after the lock)
        self._failure: Exception | None = None  # how the last one ended, if it failed
        self.handshakes = 0
        verify = tls_verify(ca_file)  # a bad CA file: one precise error, before any request
        # One connection pool for every thread (HTTP/1.1: one request in flight per
        # connection, so N concurrent fetches use up to N pooled connections). The jar refuses
        # every cookie: the session cookie is handled explicitly (see _session_cookie).
        self._http = httpx.Client(
            timeout=timeout,
            verify=verify,
            transport=transport,
            cookies=CookieJar(policy=_NoCookies()),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> KbsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transport ------------------------------------------------------------------------

    def _send(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        url = f"{self.base}/kbs/v0/{path}"
        try:
            return self._http.request(method, url, **kwargs)  # type: ignore[arg-type]
        except httpx.HTTPError as e:
            raise UpstreamError(f"cannot reach the broker at {self.base}: {e}") from e

    @staticmethod
    def _json(response: httpx.Response) -> Json:
        try:
            return response.json()
        except ValueError as e:
            raise MalformedMessage("the broker answered with invalid JSON") from e

    # --- RCAR -----------------------------------------------------------------------------

    def attest(self) -> Token:
        """Run the handshake; returns (and caches) the EAR token."""
        with self._lock:
            return self._handshake()

    def _handshake(self) -> Token:
        """The RCAR handshake, remembering how it ended; the caller holds ``self._lock``."""
        try:
            token = self._rcar()
        except Exception as e:
            self._failure = e
            raise
        else:
            self._failure = None
        finally:
            self._ended += 1
        return token

    def _handshake_unless_failed(self, seen: int) -> Token:
        """A handshake for a caller that read ``_ended == seen`` before waiting for the lock:
        if a handshake ended in failure meanwhile, its error, not another attempt (threads
        refused together cost the broker one failed attestation, not one each)."""
        if self._ended != seen and self._failure is not None:
            raise self._failure
        return self._handshake()

    def _rcar(self) -> Token:
        """auth -> attest."""
        extra: JsonObject = {"supported-hash-algorithms": [a.value for a in HashAlgorithm]}
        if self.policy_selector is not None:
            extra[POLICY_SELECTOR] = self.policy_selector
        request = Request(version=PROTOCOL_VERSION, tee=self.attester.tee, extra_params=extra)
        response = self._send("POST", "auth", json=request.to_json())
        raise_for_error(response)
        challenge = Challenge.from_json(self._json(response))
        session_id = _session_cookie(response)
        session = {"Cookie": f"{SESSION_COOKIE}={session_id}"} if session_id else {}
        algorithm = select_hash_algorithm(challenge.extra_params)
        jwk = self.key.public_jwk()
        additional = self._device_evidence(challenge.nonce, jwk, algorithm)
        digest = runtime_data_digest(challenge.nonce, jwk, additional, algorithm)
        evidence = self.attester.evidence(digest)
        attestation = Attestation(
            runtime_data=RuntimeData(nonce=challenge.nonce, tee_pubkey=self.key.public),
            tee_evidence=TeeEvidence(primary_evidence=evidence, additional_evidence=additional),
            init_data=InitData(format="toml", body=self.init_data) if self.init_data else None,
        )
        response = self._send("POST", "attest", json=attestation.to_json(), headers=session)
        raise_for_error(response)
        result = AttestationResult.from_json(self._json(response))
        self.handshakes += 1
        token = Token.parse(result.token)
        self._token, self._session_id = token, session_id
        return token

    def _device_evidence(self, nonce: str, jwk: JsonObject, algorithm: HashAlgorithm) -> str:
        """Upstream's ``additional_evidence``: ``""`` or the JSON text of {tee: evidence},
        each device bound to the digest of {nonce, tee-pubkey}; the CPU evidence then binds
        this exact text."""
        if not self.device_attesters:
            return ""
        digest = device_runtime_data_digest(nonce, jwk, algorithm)
        return additional_evidence(self.device_attesters, digest)

    def _fresh(self, token: Token) -> bool:
        return token.expires_at - TOKEN_REFRESH_MARGIN > self._clock()

    def token(self) -> Token:
        """The cached token while it is valid, else a new one."""
        return self._current()[0]

    def _current(self) -> tuple[Token, str | None]:
        """The valid token and the session cookie of its handshake, attesting if needed."""
        seen = self._ended
        with self._lock:
            token = self._token
            if token is None or not self._fresh(token):
                token = self._handshake_unless_failed(seen)
            return token, self._session_id

    def _renew(self, refused: Token) -> tuple[Token, str | None]:
        """A token to replace ``refused`` (answered 401): attest again unless another thread
        already did while this one waited for the lock."""
        seen = self._ended
        with self._lock:
            token = self._token
            if token is None or token is refused or not self._fresh(token):
                token = self._handshake_unless_failed(seen)
            return token, self._session_id

    # --- resources ------------------------------------------------------------------------

    def get_resource(
        self, path: ResourcePath, *, via: Literal["bearer", "cookie"] = "bearer"
    ) -> bytes:
        """Fetch and decrypt a resource. On 401 the client re-attests and retries."""
        last: KbsRequestError | None = None
        token, session_id = self._current()
        for attempt in range(RESOURCE_TRIES):
            if attempt > 0:
                token, session_id = self._renew(token)
            headers = {}
            if via == "bearer":
                headers["Authorization"] = f"Bearer {token.value}"
            elif session_id is not None:
                headers["Cookie"] = f"{SESSION_COOKIE}={session_id}"
            response = self._send("GET", f"resource/{path}", headers=headers)
            try:
                raise_for_error(response)
            except KbsRequestError as e:
                # A policy refusal will not change by attesting again; token problems may.
                if e.status != 401 or e.error_type.endswith("/PolicyDeny"):
                    raise
                last = e
                logger.info("resource %s: 401 (%s), attesting again", path, e.detail)
                continue
            return self.key.decrypt(self._json(response))
        raise last if last is not None else UpstreamError("no attempt was made")


class _NoCookies(DefaultCookiePolicy):
    """A cookie policy that stores nothing: the client's shared jar stays empty."""

    def set_ok(self, cookie: object, request: object) -> bool:
        return False


def _session_cookie(response: httpx.Response) -> str | None:
    """The ``kbs-session-id`` the broker set on its challenge, read from the response's own
    ``Set-Cookie`` headers (never through a jar shared between threads)."""
    for header in response.headers.get_list("set-cookie"):
        parsed: SimpleCookie = SimpleCookie()
        try:
            parsed.load(header)
        except CookieError:
            continue
        morsel = parsed.get(SESSION_COOKIE)
        if morsel is not None and morsel.value:
            return morsel.value
    return None
