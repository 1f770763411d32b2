"""The guest side, inside the TEE. Never imports server code (kbs, attestation, policy)."""
