"""KBS protocol 0.4.0 client: the RCAR handshake and resource fetches, as upstream's guest.

Behaviour mirrored from upstream's client: the token is cached until it expires; a resource
request answered 401 triggers a fresh handshake and a retry (3 tries in all); 404 is "not
found"; anything else is an error. The ephemeral TEE key is made per client and never leaves
it; resources arrive as a JWE to that key.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

from custodes._internal.b64 import b64url_decode
from custodes._internal.kbs_http import KbsRequestError, raise_for_error
from custodes.errors import MalformedMessage, UpstreamError
from custodes.guest.attester.base import Attester
from custodes.protocol.binding import (
    HashAlgorithm,
    runtime_data_digest,
    select_hash_algorithm,
)
from custodes.protocol.messages import (
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
    ) -> None:
        self.base = url.rstrip("/")
        self.attester = attester
        self.key = TeeKeyPair.generate(key_kind)
        self.init_data = init_data
        self._clock = clock
        self._token: Token | None = None
        self.handshakes = 0
        verify: bool | str = str(ca_file) if ca_file else True
        self._http = httpx.Client(timeout=timeout, verify=verify, transport=transport)

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
        self._http.cookies.clear()
        request = Request(
            version=PROTOCOL_VERSION,
            tee=self.attester.tee,
            extra_params={"supported-hash-algorithms": [a.value for a in HashAlgorithm]},
        )
        response = self._send("POST", "auth", json=request.to_json())
        raise_for_error(response)
        challenge = Challenge.from_json(self._json(response))
        algorithm = select_hash_algorithm(challenge.extra_params)
        jwk = self.key.public_jwk()
        additional = ""
        digest = runtime_data_digest(challenge.nonce, jwk, additional, algorithm)
        evidence = self.attester.evidence(digest)
        attestation = Attestation(
            runtime_data=RuntimeData(nonce=challenge.nonce, tee_pubkey=self.key.public),
            tee_evidence=TeeEvidence(primary_evidence=evidence, additional_evidence=additional),
            init_data=InitData(format="toml", body=self.init_data) if self.init_data else None,
        )
        response = self._send("POST", "attest", json=attestation.to_json())
        raise_for_error(response)
        result = AttestationResult.from_json(self._json(response))
        self.handshakes += 1
        self._token = Token.parse(result.token)
        return self._token

    def token(self) -> Token:
        """The cached token while it is valid, else a new one."""
        if self._token is None or self._token.expires_at - TOKEN_REFRESH_MARGIN <= self._clock():
            return self.attest()
        return self._token

    # --- resources ------------------------------------------------------------------------

    def get_resource(
        self, path: ResourcePath, *, via: Literal["bearer", "cookie"] = "bearer"
    ) -> bytes:
        """Fetch and decrypt a resource. On 401 the client re-attests and retries."""
        last: KbsRequestError | None = None
        for attempt in range(RESOURCE_TRIES):
            token = self.token() if attempt == 0 else self.attest()
            headers = {}
            if via == "bearer":
                self._http.cookies.clear()
                headers["Authorization"] = f"Bearer {token.value}"
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
