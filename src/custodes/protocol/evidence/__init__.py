"""Evidence wire layouts shared by the guest's attesters and the broker's verifiers.

* :mod:`~custodes.protocol.evidence.snp_report`: the SEV-SNP ATTESTATION_REPORT (1184 bytes)
  and its ``sev`` crate serde JSON form, both directions;
* :mod:`~custodes.protocol.evidence.ccel`: the framing of the TCG2 crypto-agile CC event log
  (events and end markers), which the TDX attester trims and the verifiers parse.

On the ground floor so that the guest writes exactly what the broker reads without importing
any server code. Nothing here does I/O or verifies anything; import the submodules directly.
"""
