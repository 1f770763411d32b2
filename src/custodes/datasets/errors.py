"""Errors of encrypted datasets: one class per way a dataset file can be refused.

Everything is a :class:`DatasetError`, so ``custodes run`` can map the family to one failure
while tests and logs still see which check refused. Header problems are
:class:`DatasetFormatError`; problems found while reading chunks are
:class:`DatasetIntegrityError`.
"""

from __future__ import annotations

from custodes.errors import CustodesError


class DatasetError(CustodesError):
    """An encrypted dataset could not be written, parsed or decrypted."""

    code = "dataset"


# --- header (format.py) ------------------------------------------------------------------


class DatasetFormatError(DatasetError):
    """The header is not a well-formed dataset header."""

    code = "dataset-format"


class TruncatedHeader(DatasetFormatError):
    """The stream ends before the header does."""

    code = "dataset-truncated-header"


class BadMagic(DatasetFormatError):
    """The stream does not start with the dataset magic (not a custodes dataset)."""

    code = "dataset-bad-magic"


class UnsupportedFormatVersion(DatasetFormatError):
    """The header names a format version this code does not read."""

    code = "dataset-unsupported-version"


class ChunkSizeOutOfRange(DatasetFormatError):
    """The chunk size is outside [4 KiB, 64 MiB]."""

    code = "dataset-chunk-size"


class InvalidKeyId(DatasetFormatError):
    """The key id is empty, too long, not UTF-8, or not a ``kbs://`` resource URI."""

    code = "dataset-key-id"


# --- body (format.py) --------------------------------------------------------------------


class DatasetIntegrityError(DatasetError):
    """The chunks after the header are not the ones that were written."""

    code = "dataset-integrity"


class ChunkAuthenticationFailed(DatasetIntegrityError):
    """A chunk's GCM tag does not verify.

    The tag cannot say why: a changed byte (header or chunk), a chunk moved, taken from
    another file or cut short, bytes appended to the final chunk, or the wrong key.
    """

    code = "dataset-chunk-auth"


class MissingFinalChunk(DatasetIntegrityError):
    """The stream ends after a full (non-final) chunk: cut at a chunk boundary."""

    code = "dataset-missing-final-chunk"


class TruncatedChunk(DatasetIntegrityError):
    """The stream ends inside a chunk, too short to hold even its tag (a short chunk that
    cannot be the final one)."""

    code = "dataset-truncated-chunk"


class TrailingData(DatasetIntegrityError):
    """Bytes follow the authenticated final chunk."""

    code = "dataset-trailing-data"


class CounterOverflow(DatasetError):
    """The stream would need more chunks than the 32-bit counter can number."""

    code = "dataset-counter-overflow"


class KeyIdMismatch(DatasetError):
    """The header's key id is not the one the caller expected."""

    code = "dataset-key-id-mismatch"


# --- keys and files (keys.py, files.py) ------------------------------------------------


class DatasetKeyError(DatasetError):
    """A data key or key file is not exactly 32 bytes of a well-formed key."""

    code = "dataset-key"


class DatasetPathError(DatasetError):
    """An input or output path cannot be used (symlink, not a regular file, exists, I/O)."""

    code = "dataset-path"
