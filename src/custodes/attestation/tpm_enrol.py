"""TPM attestation-key (AK) enrolment by credential activation, as Keylime's registrar does.

Without enrolment the broker trusts a TPM's AK only because the workload admin copied it into
the ``trusted_aks`` reference value. Enrolment roots that trust in the TPM's endorsement key
(EK) instead, in two requests under the tenant's KBS base URL:

``POST {base}/tpm/enrol`` with ``{"ek_certificate": b64(DER), "ak_public": b64(TPMT_PUBLIC)}``:

1. the EK certificate chains to a CA of ``attestation.tpm_ek_ca_bundle``
   (:mod:`~custodes.attestation.verifiers.tpm.ekcert`): the EK is a genuine TPM's;
2. the EK's fingerprint (hex SHA-256 of its SubjectPublicKeyInfo) is listed in the tenant's
   reference value ``tpm_allowed_eks``: the workload admin approved this TPM for the tenant
   (:class:`~.verifiers.tpm.errors.EkNotAllowed` otherwise, naming the fingerprint);
3. the AK's public area is a TPM-resident restricted signing key (fixedTPM, fixedParent,
   sensitiveDataOrigin, restricted, sign, not decrypt; nameAlg SHA-256) whose key the quote
   verifier accepts (RSA >= 2048 or P-256);
4. the broker makes a credential (TPM2_MakeCredential in software,
   :mod:`~custodes.attestation.verifiers.tpm.credential`) protecting a fresh 32-byte secret
   for the AK's Name under the EK, and answers ``{"id", "credential_blob",
   "encrypted_secret", "expires_in"}``. The challenge is stored for the session lifetime with
   the SHA-256 of the secret, never the secret.

``POST {base}/tpm/enrol/activate`` with ``{"id", "secret": b64(32 bytes)}``:

5. the challenge is taken once (deleted whatever follows, so a wrong guess burns it);
6. the secret matches (constant time): only a TPM holding the EK's private key with the AK
   of that Name loaded could run TPM2_ActivateCredential, so the AK is resident in that TPM;
7. the AK (standard base64 DER SPKI, the form of the quote verifier's ``ak_public`` claim)
   joins the tenant's ``trusted_aks`` reference value, which the default attestation policy
   requires of every TPM quote.

Who may enrol: anyone holding a TPM whose EK certificate chains to the broker operator's CA
bundle *and* whose EK the tenant's workload admin listed in ``tpm_allowed_eks``. Both must hold:
a manufacturer CA certifies every TPM it made, and any genuine TPM can be made to show any
PCR values by the software of the machine it sits in, so a genuine TPM alone must not be
trusted by a tenant. Without ``tpm_allowed_eks`` no TPM can enrol (fail closed). The admin
can still list AKs in ``trusted_aks`` by hand, as upstream.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from cryptography import x509

from custodes._internal.b64 import b64std_decode, b64std_encode
from custodes._internal.clock import Clock
from custodes.attestation.verifiers.tpm.credential import make_credential
from custodes.attestation.verifiers.tpm.ekcert import (
    EkCertificate,
    load_ca_bundle,
    verify_ek_certificate,
)
from custodes.attestation.verifiers.tpm.errors import ActivationFailed, AkUnfit, EkNotAllowed
from custodes.attestation.verifiers.tpm.public import ObjectAttributes, TpmtPublic
from custodes.attestation.verifiers.tpm.structures import TPM_ALG_SHA256
from custodes.attestation.verifiers.tpm.verifier import parse_ak_public
from custodes.errors import StorageError
from custodes.protocol.tpm_enrol import ID_HEX_CHARS, SECRET_SIZE
from custodes.protocol.tpm_enrol import ActivateRequest as ActivateRequest
from custodes.protocol.tpm_enrol import EnrolChallenge as EnrolChallenge
from custodes.protocol.tpm_enrol import EnrolRequest as EnrolRequest
from custodes.rvps.service import ReferenceValueProvider
from custodes.storage.base import Store
from custodes.types.json import Json, JsonObject

logger = logging.getLogger(__name__)

NS_TPM_ENROLMENT: Final = "tpm_enrolment"
TRUSTED_AKS: Final = "trusted_aks"
ALLOWED_EKS: Final = "tpm_allowed_eks"
_AK_REQUIRED: Final = (
    ObjectAttributes.FIXED_TPM
    | ObjectAttributes.FIXED_PARENT
    | ObjectAttributes.SENSITIVE_DATA_ORIGIN
    | ObjectAttributes.RESTRICTED
    | ObjectAttributes.SIGN_ENCRYPT
)


@dataclass(frozen=True, slots=True)
class Enrolment:
    """An enrolled AK; ``added`` is false when it was already trusted."""

    ak_public: str  # standard base64 DER SPKI, as in trusted_aks
    ek_fingerprint: str
    ek_issuer: str
    added: bool

    def to_json(self) -> JsonObject:
        return {
            "ak_public": self.ak_public,
            "ek_fingerprint": self.ek_fingerprint,
            "reference_value": TRUSTED_AKS,
            "added": self.added,
        }

    def audit_json(self) -> JsonObject:
        return {
            "ak_public_sha256": hashlib.sha256(b64std_decode(self.ak_public)).hexdigest(),
            "ek_fingerprint": self.ek_fingerprint,
            "ek_issuer": self.ek_issuer,
            "added": self.added,
        }


# --- the checks ---------------------------------------------------------------------------


def check_ak(ak: TpmtPublic) -> str:
    """Step 3: a TPM-resident restricted signing key the quote verifier accepts; returns its
    standard base64 DER SPKI."""
    missing = _AK_REQUIRED & ~ak.attributes
    if missing:
        names = ", ".join(sorted(str(flag.name) for flag in ObjectAttributes if flag & missing))
        raise AkUnfit(f"the AK is not a TPM-resident restricted signing key (lacks {names})")
    if ak.attributes & ObjectAttributes.DECRYPT:
        raise AkUnfit("the AK is a decryption key too")
    if ak.name_alg != TPM_ALG_SHA256:
        raise AkUnfit(f"the AK's nameAlg {ak.name_alg:#06x} is not SHA-256")
    der = ak.spki_der()
    parse_ak_public(der)  # the quote verifier's own rule (RSA >= 2048 or P-256)
    return b64std_encode(der)


def check_allowed(ek: EkCertificate, allowed: Json | None) -> None:
    """Step 2: the tenant's admin listed this EK."""
    if not isinstance(allowed, list) or ek.fingerprint not in allowed:
        raise EkNotAllowed(
            f"the TPM's EK {ek.fingerprint} is genuine (issuer {ek.issuer!r}) but not approved "
            f"for this tenant: its workload admin lists approved EKs in the reference value "
            f"{ALLOWED_EKS}"
        )


@functools.lru_cache(maxsize=4)
def _bundle(path: Path, mtime_ns: int, size: int) -> tuple[x509.Certificate, ...]:
    return load_ca_bundle(path)


def ca_bundle(path: Path) -> tuple[x509.Certificate, ...]:
    """The CA bundle, read again only when the file changes (the operator may rotate it)."""
    try:
        stat = path.stat()
    except OSError:
        return load_ca_bundle(path)  # raises the ConfigError naming the problem
    return _bundle(path, stat.st_mtime_ns, stat.st_size)


class TpmEnrolment:
    """One tenant's AK enrolment: its challenges in ``namespace``, its reference values."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        namespace: str,
        rvps: ReferenceValueProvider,
        anchors: Callable[[], tuple[x509.Certificate, ...]],
        ttl_seconds: int,
    ) -> None:
        self._store = store
        self._clock = clock
        self._ns = namespace
        self._rvps = rvps
        self._anchors = anchors
        self._ttl = ttl_seconds

    def challenge(self, request: EnrolRequest) -> EnrolChallenge:
        """Steps 1-4."""
        now = self._clock.now()
        # 1. the EK certificate chains to the configured CAs
        ek = verify_ek_certificate(
            request.ek_certificate, self._anchors(), datetime.fromtimestamp(now, UTC)
        )
        # 2. the tenant approved this EK
        check_allowed(ek, self._rvps.query(ALLOWED_EKS))
        # 3. the AK is fit
        ak = TpmtPublic.from_bytes(request.ak_public)
        ak_public = check_ak(ak)
        # 4. a credential for the AK's Name under the EK
        secret = os.urandom(SECRET_SIZE)
        made = make_credential(ek.public_key, ak.name, secret)
        challenge_id = secrets.token_hex(ID_HEX_CHARS // 2)
        record = {
            "ak_public": ak_public,
            "secret_sha256": hashlib.sha256(secret).hexdigest(),
            "ek_fingerprint": ek.fingerprint,
            "ek_issuer": ek.issuer,
        }
        stored = self._store.insert(
            self._ns,
            challenge_id,
            json.dumps(record, separators=(",", ":")).encode(),
            now=now,
            expires_at=now + self._ttl,
        )
        if not stored:
            raise StorageError("an enrolment challenge id collided; try again")
        return EnrolChallenge(challenge_id, made.credential_blob, made.encrypted_secret, self._ttl)

    def activate(self, request: ActivateRequest) -> Enrolment:
        """Steps 5-7."""
        # 5. the challenge, once
        raw = self._store.get(self._ns, request.id, now=self._clock.now())
        if raw is None:
            raise ActivationFailed("no such enrolment challenge (unknown, expired or used)")
        if not self._store.delete(self._ns, request.id):
            raise ActivationFailed("the enrolment challenge was already used")
        record = _record(raw)
        # 6. the secret
        digest = hashlib.sha256(request.secret).hexdigest()
        if not hmac.compare_digest(digest.encode(), record["secret_sha256"].encode()):
            raise ActivationFailed(
                "the secret does not match: the AK is not resident in the TPM of that EK"
            )
        # 7. the AK joins trusted_aks
        added = self._rvps.add_to_list(TRUSTED_AKS, record["ak_public"])
        logger.info("enrolled a TPM AK (EK %s)", record["ek_fingerprint"])
        return Enrolment(record["ak_public"], record["ek_fingerprint"], record["ek_issuer"], added)


def _record(raw: bytes) -> dict[str, str]:
    try:
        obj = json.loads(raw)
    except ValueError as e:
        raise StorageError("a stored enrolment challenge is not JSON") from e
    keys = {"ak_public", "secret_sha256", "ek_fingerprint", "ek_issuer"}
    if (
        not isinstance(obj, dict)
        or set(obj) != keys
        or not all(isinstance(v, str) for v in obj.values())
    ):
        raise StorageError("a stored enrolment challenge has an unexpected shape")
    return obj
