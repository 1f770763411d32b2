"""The KBS protocol 0.4.0 wire layer, shared by the broker and the guest.

* :mod:`~custodes.protocol.messages`: Request, Challenge, Attestation, ..., read through the
  strict JSON reader (:mod:`custodes._internal.strictjson`);
* :mod:`~custodes.protocol.binding`: the JCS runtime-data digest bound into evidence;
* :mod:`~custodes.protocol.jwk`: the ``tee-pubkey`` JWK, validated;
* :mod:`~custodes.protocol.jwe`: resources encrypted to the TEE key;
* :mod:`~custodes.protocol.tee_key`: the guest's key pair, which opens them (above ``jwk`` and
  ``jwe``, so the three import one another in one direction only);
* :mod:`~custodes.protocol.resource`: ``repo/type/tag`` paths and ``kbs://`` URIs.

Nothing here does I/O; import the submodules directly.
"""
