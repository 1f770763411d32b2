"""The KBS protocol 0.4.0 wire layer, shared by the broker and the guest.

* :mod:`~custodes.protocol.messages`: Request, Challenge, Attestation, ... and the strict
  JSON reader;
* :mod:`~custodes.protocol.binding`: the JCS runtime-data digest bound into evidence;
* :mod:`~custodes.protocol.tee_key`: the ``tee-pubkey`` JWK and the guest's key pair;
* :mod:`~custodes.protocol.jwe`: resources encrypted to the TEE key;
* :mod:`~custodes.protocol.resource`: ``repo/type/tag`` paths and ``kbs://`` URIs.

Nothing here does I/O; import the submodules directly.
"""
