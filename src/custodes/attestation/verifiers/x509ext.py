"""An X.509 certificate's optional extension, read in one place for every verifier.

The NVIDIA device and RIM chains, the TPM EK certificates and the TDX QE identity signer each
decide what a missing extension means (no constraint, not a CA, a refusal); this only reads it.
"""

from __future__ import annotations

from typing import TypeVar

from cryptography import x509

E = TypeVar("E", bound=x509.ExtensionType)


def extension_value(cert: x509.Certificate, kind: type[E]) -> E | None:
    """The value of ``cert``'s extension of class ``kind``; ``None`` when it has none."""
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None
