"""Errors of the init-data package: one class per way an init-data document, its encodings or
its TEE binding can be refused, so callers and tests can tell them apart by class."""

from __future__ import annotations

from custodes.errors import MalformedEvidence


class InitDataError(MalformedEvidence):
    """The init-data TOML is malformed or not of a supported version."""

    code = "malformed-init-data"


class InitDataTooLarge(InitDataError):
    """A document, annotation, image or decompressed payload exceeds its size limit."""

    code = "init-data-too-large"


class InitDataEncodingError(InitDataError):
    """An annotation or block image does not decode to a TOML payload."""

    code = "malformed-init-data-encoding"


class AnnotationBase64Error(InitDataEncodingError):
    """The annotation value is not strict, padded, standard base64."""

    code = "init-data-annotation-base64"


class GzipError(InitDataEncodingError):
    """The payload is not exactly one complete, intact gzip member."""

    code = "init-data-gzip"


class ImageMagicError(InitDataEncodingError):
    """The block image does not start with the ``initdata`` magic."""

    code = "init-data-image-magic"


class ImageTruncated(InitDataEncodingError):
    """The block image is shorter than its header or than the length it declares."""

    code = "init-data-image-truncated"


class ImagePaddingError(InitDataEncodingError):
    """The block image's padding is not zero or does not end on a 512-byte sector."""

    code = "init-data-image-padding"


class InitDataNotBindable(InitDataError):
    """The digest does not fit the TEE's launch field exactly (no silent truncation)."""

    code = "init-data-not-bindable"
