"""The Attestation Service: verifiers per TEE, attestation policy, EAR tokens."""
