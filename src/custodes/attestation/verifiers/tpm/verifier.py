"""The ``tpm`` verifier: a TPM 2.0 quote by an attestation key (AK), checked with ``cryptography``.

Checklist (each step raises its own error):

1. Parse the evidence JSON, the TPMS_ATTEST and the TPMT_SIGNATURE
   (:class:`~custodes.errors.MalformedEvidence`).
2. Parse ``ak_public``: canonical DER SPKI of an RSA key of at least 2048 bits or a P-256 key
   (:class:`.errors.AkPublicKeyInvalid`).
3. The message is TPM-generated (magic ``0xFF544347``) and is a quote (``0x8018``)
   (:class:`.errors.QuoteHeaderInvalid`).
4. The signature scheme is RSASSA-PKCS1-v1_5/SHA-256 for an RSA AK or ECDSA/SHA-256 for a P-256
   AK (:class:`.errors.SignatureSchemeUnsupported`), and the signature over the message verifies
   (:class:`~custodes.errors.SignatureInvalid`).
5. ``extraData`` carries the binding digest (:class:`~custodes.errors.BindingMismatch`), see
   below.
6. The quote selects at least one PCR, only in the SHA-256 bank, only PCRs 0-23
   (:class:`.errors.PcrSelectionUnsupported`), and its ``pcrDigest`` equals SHA-256 of the
   selected PCR values from the evidence, concatenated in selection order
   (:class:`.errors.PcrDigestMismatch`).
7. Init-data, when a digest is given: it must be a 32-byte (sha256 init-data) digest, PCR 8
   must be quoted, and PCR 8 must equal SHA-256(32 zero bytes || digest), i.e. one extend of a
   fresh PCR (:class:`~custodes.errors.InitDataMismatch`). Upstream slices the digest and
   panics on other sizes; custodes refuses them.
7b. Measured boot, when the evidence carries ``uefi_eventlog``: the TCG2 firmware event log
   replays to the quoted SHA-256 PCRs it extends (every one of them quoted) and its
   self-describing events match their digests
   (:mod:`custodes.attestation.eventlog.measured_boot`: ``ReplayMismatch``,
   ``EventDataMismatch``); its claims are ``measured_boot`` (firmware, Secure Boot, boot
   applications, kernel, initrd, kernel command line).
8. Claims, with upstream's names: ``pcr00``..``pcr23`` (hex), ``ak_public`` (the standard
   base64 DER SPKI, as sent), ``report_data`` (hex of ``extraData``), ``init_data`` (hex of
   PCR 8). Unlike upstream, only the PCRs the quote selects are reported (the others are not
   signed), so ``init_data`` is absent when PCR 8 is not quoted.

**Binding rule (step 5).** ``D`` is the binding digest (``VerificationRequest.report_data``,
48 bytes for the default SHA-384). Exactly two forms are accepted, compared in constant time:

* ``extraData == D``: the exact digest. A SHA-256 binding (32 bytes) always takes this form; a
  custodes guest may also put a whole SHA-384/512 digest there (a TPM accepts up to the size of
  its largest hash).
* ``extraData == D[:32]`` when ``D`` is longer than 32 bytes: upstream's guest "resizes" the
  digest to 32 bytes. This is a documented upstream-compatibility rule, not silent truncation:
  the comparison is with exactly the 32 bytes upstream's guest writes, and 256 bits of a
  SHA-384/512 digest keep the binding collision-resistant.

Nothing else is accepted: no zero padding (older upstream guests padded to 64 bytes; the
upstream test vector is such a quote), no other prefix, no empty digest.

**Trust in the AK is not decided here.** The verifier proves only that the quote was signed by
the key in ``ak_public``; as upstream, the attestation policy decides whether that key is
trusted (``ak_public`` in the ``trusted_aks`` reference value). The ``qualifiedSigner`` field is
not checked (it needs the AK's TPMT_PUBLIC and its parent, which the evidence does not carry).

**Cost.** The RSA verify of a quote is ~25 µs, so the Python around it matters: the 24 PCR
values are decoded in one pass (:func:`.evidence.decode_pcr_bank`) and step 2's result is kept
per ``ak_public`` DER in a bounded LRU (:data:`MAX_CACHED_AKS`; a TPM's AK does not change);
only successes are kept, and every step runs on every call.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from typing import ClassVar, Final

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from custodes._internal.b64 import b64std_encode
from custodes._internal.clock import Clock
from custodes.attestation.eventlog.measured_boot import MeasuredBoot
from custodes.attestation.verifiers.base import TeeClass, VerificationRequest, VerifiedClaims
from custodes.attestation.verifiers.settings import VerifierSettings
from custodes.attestation.verifiers.tpm.errors import (
    AkPublicKeyInvalid,
    PcrDigestMismatch,
    PcrSelectionUnsupported,
    QuoteHeaderInvalid,
    SignatureSchemeUnsupported,
)
from custodes.attestation.verifiers.tpm.evidence import PCR_COUNT, TpmEvidence
from custodes.attestation.verifiers.tpm.structures import (
    TPM_ALG_ECDSA,
    TPM_ALG_RSASSA,
    TPM_ALG_SHA256,
    TPM_GENERATED_VALUE,
    TPM_ST_ATTEST_QUOTE,
    TpmsAttest,
    TpmsQuoteInfo,
    TpmsSignatureEcc,
    TpmsSignatureRsa,
    TpmtSignature,
)
from custodes.errors import BindingMismatch, InitDataMismatch, SignatureInvalid
from custodes.types.json import JsonObject
from custodes.types.tee import Tee

INIT_DATA_PCR = 8
UPSTREAM_NONCE_SIZE = 32  # upstream's guest resizes the binding digest to this many bytes
_MIN_RSA_BITS = 2048
_P256_SCALAR_BYTES = 32
MAX_CACHED_AKS: Final = 1024
_PCR_CLAIM_NAMES: Final = tuple(f"pcr{i:02d}" for i in range(PCR_COUNT))

AkPublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


@functools.lru_cache(maxsize=MAX_CACHED_AKS)
def parse_ak_public(der: bytes) -> AkPublicKey:
    """Step 2: the AK from canonical DER SPKI; RSA >= 2048 bits or ECC P-256.

    Cached by the DER bytes (a pure function of them; refusals raise and are not cached)."""
    try:
        key = serialization.load_der_public_key(der)
    except (ValueError, UnsupportedAlgorithm) as e:
        raise AkPublicKeyInvalid("ak_public is not a DER SubjectPublicKeyInfo") from e
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < _MIN_RSA_BITS:
            raise AkPublicKeyInvalid(f"RSA AK of {key.key_size} bits")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise AkPublicKeyInvalid(f"ECC AK on {key.curve.name}, expected P-256")
    else:
        raise AkPublicKeyInvalid("AK is neither RSA nor ECC")
    # One key, one string: the policy compares ak_public textually with "trusted_aks".
    canonical = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if canonical != der:
        raise AkPublicKeyInvalid("ak_public is not canonical DER")
    return key


def check_header(attest: TpmsAttest) -> TpmsQuoteInfo:
    """Step 3: TPM-generated and a quote; returns the quote info."""
    if attest.magic != TPM_GENERATED_VALUE:
        raise QuoteHeaderInvalid(f"magic {attest.magic:#010x} is not TPM_GENERATED_VALUE")
    if attest.type != TPM_ST_ATTEST_QUOTE or attest.quote is None:
        raise QuoteHeaderInvalid(f"attestation type {attest.type:#06x} is not a quote")
    return attest.quote


def check_signature(key: AkPublicKey, signature: TpmtSignature, message: bytes) -> None:
    """Step 4: the scheme fits the key type and the signature over ``message`` verifies."""
    if signature.hash_alg != TPM_ALG_SHA256:
        raise SignatureSchemeUnsupported(f"signature hash {signature.hash_alg:#06x}, not SHA-256")
    detail = signature.detail
    try:
        if isinstance(key, rsa.RSAPublicKey):
            if signature.sig_alg != TPM_ALG_RSASSA or not isinstance(detail, TpmsSignatureRsa):
                raise SignatureSchemeUnsupported(
                    f"scheme {signature.sig_alg:#06x} with an RSA AK, expected RSASSA"
                )
            key.verify(detail.sig, message, padding.PKCS1v15(), hashes.SHA256())
        else:
            if signature.sig_alg != TPM_ALG_ECDSA or not isinstance(detail, TpmsSignatureEcc):
                raise SignatureSchemeUnsupported(
                    f"scheme {signature.sig_alg:#06x} with an ECC AK, expected ECDSA"
                )
            if not (
                0 < len(detail.r) <= _P256_SCALAR_BYTES and 0 < len(detail.s) <= _P256_SCALAR_BYTES
            ):
                raise SignatureInvalid("ECDSA r or s is not a P-256 scalar")
            der_sig = utils.encode_dss_signature(
                int.from_bytes(detail.r, "big"), int.from_bytes(detail.s, "big")
            )
            key.verify(der_sig, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as e:
        raise SignatureInvalid("TPM quote signature does not verify with ak_public") from e


def check_binding(extra_data: bytes, report_data: bytes) -> None:
    """Step 5: ``extraData`` is the digest, or upstream's 32-byte prefix of a longer one."""
    if not report_data:
        raise BindingMismatch("empty binding digest")
    if hmac.compare_digest(extra_data, report_data):
        return
    if len(report_data) > UPSTREAM_NONCE_SIZE and hmac.compare_digest(
        extra_data, report_data[:UPSTREAM_NONCE_SIZE]
    ):
        return
    raise BindingMismatch("TPM quote extraData does not carry the binding digest")


def check_pcrs(quote: TpmsQuoteInfo, pcrs: tuple[bytes, ...]) -> tuple[int, ...]:
    """Step 6: the selection is SHA-256 PCRs 0-23 and its digest matches; returns the indices."""
    selected: list[int] = []
    if any(s.hash_alg != TPM_ALG_SHA256 for s in quote.pcr_select.selections):
        raise PcrSelectionUnsupported("the quote selects a PCR bank other than SHA-256")
    if len(quote.pcr_select.selections) > 1:
        raise PcrSelectionUnsupported("the quote selects the SHA-256 bank more than once")
    for selection in quote.pcr_select.selections:
        selected.extend(selection.indices)
    if not selected:
        raise PcrSelectionUnsupported("the quote selects no PCR")
    if selected[-1] >= PCR_COUNT:
        raise PcrSelectionUnsupported(f"the quote selects PCR {selected[-1]}")
    digest = hashlib.sha256(b"".join(map(pcrs.__getitem__, selected))).digest()
    if not hmac.compare_digest(digest, quote.pcr_digest):
        raise PcrDigestMismatch("the quoted PCR digest does not match the PCR values")
    return tuple(selected)


def check_init_data(
    init_data_digest: bytes | None, pcrs: tuple[bytes, ...], selected: tuple[int, ...]
) -> None:
    """Step 7: PCR 8 is one extend of a fresh PCR with the sha256 init-data digest."""
    if init_data_digest is None:
        return
    if len(init_data_digest) != hashlib.sha256().digest_size:
        raise InitDataMismatch(
            f"a {len(init_data_digest)}-byte init-data digest cannot be bound in PCR 8; "
            'the tpm TEE needs algorithm = "sha256" init-data'
        )
    if INIT_DATA_PCR not in selected:
        raise InitDataMismatch("PCR 8 is not quoted")
    expected = hashlib.sha256(bytes(32) + init_data_digest).digest()
    if not hmac.compare_digest(expected, pcrs[INIT_DATA_PCR]):
        raise InitDataMismatch("PCR 8 does not match the init-data digest")


def pcr_claims(pcrs: tuple[bytes, ...], selected: tuple[int, ...]) -> JsonObject:
    """``{"pcrNN": hex}`` for the selected PCRs, in selection order."""
    # Precomputed names: formatting 24 names per call cost as much as the hex itself.
    return {_PCR_CLAIM_NAMES[i]: pcrs[i].hex() for i in selected}


def build_claims(
    evidence: TpmEvidence, attest: TpmsAttest, selected: tuple[int, ...]
) -> JsonObject:
    """Step 8: upstream's claim names, for the quoted PCRs only."""
    claims: JsonObject = pcr_claims(evidence.quote.pcrs, selected)
    claims["ak_public"] = b64std_encode(evidence.ak_public)
    claims["report_data"] = attest.extra_data.hex()
    if INIT_DATA_PCR in selected:
        claims["init_data"] = evidence.quote.pcrs[INIT_DATA_PCR].hex()
    return claims


class TpmVerifier:
    """Verifies ``tpm`` evidence (a TPM 2.0 quote); stateless and thread-safe."""

    tee: ClassVar[Tee] = Tee.TPM

    def verify(self, request: VerificationRequest) -> list[VerifiedClaims]:
        # 1. parse
        evidence = TpmEvidence.from_json(request.evidence)
        attest = TpmsAttest.from_bytes(evidence.quote.message)
        signature = TpmtSignature.from_bytes(evidence.quote.signature)
        # 2. AK
        key = parse_ak_public(evidence.ak_public)
        # 3. magic and type
        quote = check_header(attest)
        # 4. signature
        check_signature(key, signature, evidence.quote.message)
        # 5. binding
        check_binding(attest.extra_data, request.report_data)
        # 6. PCR selection and digest
        selected = check_pcrs(quote, evidence.quote.pcrs)
        # 7. init-data in PCR 8
        check_init_data(request.init_data_digest, evidence.quote.pcrs, selected)
        # 7b. measured boot (the firmware event log), when sent
        boot = (
            None
            if evidence.eventlog is None
            else MeasuredBoot.verify(evidence.eventlog, evidence.quote.pcrs, selected)
        )
        # 8. claims
        claims = build_claims(evidence, attest, selected)
        if boot is not None:
            claims["measured_boot"] = boot.claims()
        return [VerifiedClaims(TeeClass.CPU, claims)]


def from_settings(settings: VerifierSettings, clock: Clock, *, network: bool) -> TpmVerifier:
    """The registry's factory: a TPM quote needs no setting (its AK is enrolled per tenant)."""
    return TpmVerifier()
