"""Init-data: the TOML document a confidential pod is launched with, its digest, its two
encodings (pod annotation, block image), its per-TEE binding and its writer.

Bottom layer: used by the broker (``custodes.attestation``), the guest and the CLI alike, so it
imports nothing above ``custodes.errors`` and the shared types.

- :mod:`.format`: document model, strict parser, digest, ``init_data_claims``;
- :mod:`.encoding`: annotation and block image, both ways, with size limits;
- :mod:`.binding`: SNP HOST_DATA, TDX MRCONFIGID and TPM PCR 8 values, exact lengths;
- :mod:`.build`: deterministic writer;
- :mod:`.errors`: one error class per refusal.
"""
