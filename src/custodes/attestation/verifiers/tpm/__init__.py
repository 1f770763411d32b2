"""The ``tpm`` TEE verifier: TPM 2.0 quotes by an attestation key (see :mod:`.verifier`)."""

from __future__ import annotations

from custodes.attestation.verifiers.tpm.verifier import TpmVerifier

__all__ = ["TpmVerifier"]
