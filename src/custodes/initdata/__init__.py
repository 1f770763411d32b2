"""Init-data: the TOML document a confidential pod is launched with, its digest, its two
encodings (pod annotation, block image), its per-TEE binding and its writer.

Bottom layer: used by the broker (``custodes.attestation``), the guest and the CLI alike, so it
imports nothing above ``custodes.errors``, the shared types and the Rego engine adapter
(``custodes.policy.engine``, itself a leaf), which reads the agent policy.

- :mod:`.format`: document model, strict parser, digest, ``init_data_claims``;
- :mod:`.agent_policy`: the Kata agent policy, compiled and evaluated (``policy_data``);
- :mod:`.encoding`: annotation and block image, both ways, with size limits;
- :mod:`.binding`: SNP HOST_DATA, TDX MRCONFIGID and TPM PCR 8 values, exact lengths;
- :mod:`.build`: deterministic writer;
- :mod:`.errors`: one error class per refusal.
"""
