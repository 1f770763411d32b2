"""Errors specific to the TPM verifier, one per checklist step that has no shared class.

The shared classes (:class:`~custodes.errors.MalformedEvidence`,
:class:`~custodes.errors.SignatureInvalid`, :class:`~custodes.errors.BindingMismatch`,
:class:`~custodes.errors.InitDataMismatch`) are used where they already say exactly what failed.
"""

from __future__ import annotations

from custodes.errors import MalformedEvidence, SignatureInvalid, VerificationError


class AkPublicKeyInvalid(MalformedEvidence):
    """Step 2: ``ak_public`` is not a canonical DER SPKI of an RSA (>= 2048) or P-256 key."""

    code = "tpm-ak-public-invalid"


class QuoteHeaderInvalid(VerificationError):
    """Step 3: the message is not TPM-generated (magic) or is not a quote (type)."""

    code = "tpm-quote-header"


class SignatureSchemeUnsupported(SignatureInvalid):
    """Step 4: the signature scheme or hash is not the one accepted for the AK's key type."""

    code = "tpm-signature-scheme"


class PcrSelectionUnsupported(VerificationError):
    """Step 6: the quote selects no PCR, a bank other than SHA-256, or a PCR above 23."""

    code = "tpm-pcr-selection"


class PcrDigestMismatch(VerificationError):
    """Step 6: the quoted PCR digest is not the digest of the PCR values in the evidence."""

    code = "tpm-pcr-digest-mismatch"
