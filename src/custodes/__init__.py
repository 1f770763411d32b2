"""custodes: a Confidential Containers trust stack (key broker, attestation, guest side)."""

__version__ = "0.1.0"
__all__ = ["__version__"]
