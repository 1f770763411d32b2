"""Errors specific to the TPM verifier, one per checklist step that has no shared class.

The shared classes (:class:`~custodes.errors.MalformedEvidence`,
:class:`~custodes.errors.SignatureInvalid`, :class:`~custodes.errors.BindingMismatch`,
:class:`~custodes.errors.InitDataMismatch`) are used where they already say exactly what failed.
"""

from __future__ import annotations

from custodes.errors import MalformedEvidence, SignatureInvalid, VerificationError


class AkPublicKeyInvalid(MalformedEvidence, step="ak-public"):
    """Step 2: ``ak_public`` is not a canonical DER SPKI of an RSA (>= 2048) or P-256 key."""

    code = "tpm-ak-public-invalid"


class QuoteHeaderInvalid(VerificationError, step="quote-header"):
    """Step 3: the message is not TPM-generated (magic) or is not a quote (type)."""

    code = "tpm-quote-header"


class SignatureSchemeUnsupported(SignatureInvalid):
    """Step 4: the signature scheme or hash is not the one accepted for the AK's key type."""

    code = "tpm-signature-scheme"


class PcrSelectionUnsupported(VerificationError, step="pcrs"):
    """Step 6: the quote selects no PCR, a bank other than SHA-256, or a PCR above 23."""

    code = "tpm-pcr-selection"


class PcrDigestMismatch(VerificationError, step="pcrs"):
    """Step 6: the quoted PCR digest is not the digest of the PCR values in the evidence."""

    code = "tpm-pcr-digest-mismatch"


# --- AK enrolment by credential activation (see custodes.attestation.tpm_enrol) -------------


class EnrolmentRefused(VerificationError):
    """An AK enrolment step failed: the TPM, its EK or its AK did not prove what it must."""

    code = "tpm-enrolment"


class EkCertificateInvalid(EnrolmentRefused):
    """The EK certificate does not parse, is not valid now, is not an EK certificate this broker
    can encrypt to, or was not issued by a CA of the configured bundle."""

    code = "tpm-ek-certificate"


class EkNotAllowed(EnrolmentRefused):
    """The EK is genuine but the tenant has not approved it (``tpm_allowed_eks``)."""

    code = "tpm-ek-not-allowed"


class AkUnfit(EnrolmentRefused):
    """The AK's public area is not that of a TPM-resident restricted signing key."""

    code = "tpm-ak-unfit"


class ActivationFailed(EnrolmentRefused):
    """The credential was not activated: unknown, expired or used challenge, or wrong secret."""

    code = "tpm-activation-failed"
