"""One verifier per TEE behind the :class:`~custodes.attestation.verifiers.base.Verifier`
interface; :mod:`.registry` builds the set a broker enables."""
