"""The ``tpm`` attester: a TPM 2.0 quote by an attestation key (AK), through tpm2-pytss (ESAPI).

Works over any TCTI: ``device:/dev/tpmrm0`` in a pod, ``swtpm:host=127.0.0.1,port=N`` in tests.
Each operation opens its own ESAPI context and flushes every transient object it loaded before
closing it, because a TCTI without a resource manager (swtpm over TCP, ``/dev/tpm0``) keeps
objects loaded across connections and runs out of slots after a few.

The AK is either a persistent key provisioned by the platform (``ak_handle``; upstream uses
``0x81010002``) or, by default, a primary restricted signing key in the endorsement hierarchy
created from a fixed template: RSA-2048 with RSASSA/SHA-256 (what upstream's verifier accepts)
or ECC P-256 with ECDSA/SHA-256. A primary key derives from the endorsement seed, so it is the
same key every time on a given TPM; its saved context is reused to avoid regenerating it.

Evidence (upstream's format)::

    {"ak_public": b64(DER SPKI),
     "tpm_quote": {"signature": b64(TPMT_SIGNATURE), "message": b64(TPMS_ATTEST),
                   "pcrs": [hex(SHA-256 bank PCR i) for i in 0..23]}}

With ``eventlog`` (a path; :func:`custodes.guest.attester.select.tpm_eventlog` picks the
firmware's ``binary_bios_measurements`` for the machine's own TPM device) the evidence also
carries ``"uefi_eventlog": b64(the TCG2 firmware event log)``, read after the quote; the custodes
verifier replays it against the quoted PCRs (upstream's ignores the member).

Binding: by default ``extraData`` is laid out as upstream's guest does, the first 32 bytes of
the binding digest (the whole digest for SHA-256); a digest shorter than 32 bytes is refused
rather than padded. With ``exact_nonce=True`` the whole digest (at most 64 bytes) is quoted;
the custodes verifier accepts both, upstream's verifier only the first.

Init-data: :meth:`TpmAttester.bind_init_data` extends PCR 8 with the sha256 init-data digest,
so that on a fresh TPM PCR 8 == SHA-256(32 zero bytes || digest). PCR 8 must not have been
extended before (on some firmware/bootloaders it is), or the verifier will refuse the binding.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from custodes.errors import ConfigError, CustodesError

# tpm2-pytss is the optional `tpm` extra: it compiles against the system library libtss2-esys,
# which the broker and every other command do without. Say what to install, by name.
try:
    from tpm2_pytss import (  # type: ignore[import-untyped]
        ESAPI,
        ESYS_TR,
        TPM2_ALG,
        TPM2_CAP,
        TPM2_ECC,
        TPM2_PT_NV,
        TPM2_SE,
        TPM2B_DATA,
        TPM2B_DIGEST,
        TPM2B_ENCRYPTED_SECRET,
        TPM2B_ID_OBJECT,
        TPM2B_NONCE,
        TPM2B_PUBLIC,
        TPMA_OBJECT,
        TPML_DIGEST_VALUES,
        TPML_PCR_SELECTION,
        TPMS_ATTEST,
        TPMT_HA,
        TPMT_SIG_SCHEME,
        TPMT_SYM_DEF,
        TPMU_HA,
        TSS2_Exception,
    )
    from tpm2_pytss.utils import (  # type: ignore[import-untyped]
        NoSuchIndex,
        create_ek_template,
    )
except ImportError as e:  # pragma: no cover - exercised in the fresh-virtualenv wheel test
    raise ConfigError(
        "the TPM attester needs the optional 'tpm' extra: pip install 'custodes[tpm]' "
        "(it builds against libtss2-esys; Debian/Ubuntu: apt install libtss2-dev pkg-config)"
    ) from e

from custodes._internal.b64 import b64std_encode
from custodes.types.json import Json
from custodes.types.tee import Tee

PCR_COUNT = 24
INIT_DATA_PCR = 8
UPSTREAM_NONCE_SIZE = 32
MAX_EXACT_NONCE = 64  # TPM2B_DATA holds at most the largest digest (SHA-512)
_DIGEST_SIZE = 32
_QUOTE_ATTEMPTS = 3
_AK_ATTRIBUTES = "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign"
_REQUIRED_AK_ATTRIBUTES = ("FIXEDTPM", "RESTRICTED", "SIGN_ENCRYPT")
_DEFAULT_NV_BUFFER = 512  # read NV in chunks of this size when the TPM does not say
_DER_LONG_LENGTH_2 = 0x82  # a DER SEQUENCE header with a two-byte length


class TpmAttesterError(CustodesError):
    """The TPM could not be reached or refused a command, or its answer is unusable."""

    code = "tpm-attester"


class AkAlgorithm(StrEnum):
    """The key type of an AK that this attester creates."""

    RSA = "rsa"  # RSA-2048, RSASSA-PKCS1-v1_5 / SHA-256
    ECC = "ecc"  # NIST P-256, ECDSA / SHA-256


_TEMPLATES = {
    AkAlgorithm.RSA: "rsa2048:rsassa-sha256:null",
    AkAlgorithm.ECC: "ecc256:ecdsa-sha256:null",
}

# The EK of each type: its TCG EK Credential Profile template (L-1, L-2) and certificate index.
EK_TEMPLATES = {AkAlgorithm.RSA: "EK-RSA2048", AkAlgorithm.ECC: "EK-ECC256"}
EK_CERT_INDICES = {AkAlgorithm.RSA: 0x01C00002, AkAlgorithm.ECC: 0x01C0000A}


@dataclass(frozen=True, slots=True)
class _AkInfo:
    algorithm: AkAlgorithm
    spki_der: bytes


def _ak_info(public: Any) -> _AkInfo:
    """The AK's type and DER SPKI from its TPM2B_PUBLIC; refuses keys unfit to quote."""
    area = public.publicArea
    attributes = area.objectAttributes
    for name in _REQUIRED_AK_ATTRIBUTES:
        if not attributes & getattr(TPMA_OBJECT, name):
            raise TpmAttesterError(f"the AK is not a restricted signing key (lacks {name})")
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey
    if area.type == TPM2_ALG.RSA:
        exponent = int(area.parameters.rsaDetail.exponent) or 65537  # 0 means the default
        modulus = int.from_bytes(bytes(area.unique.rsa), "big")
        key = rsa.RSAPublicNumbers(exponent, modulus).public_key()
        algorithm = AkAlgorithm.RSA
    elif area.type == TPM2_ALG.ECC:
        if area.parameters.eccDetail.curveID != TPM2_ECC.NIST_P256:
            raise TpmAttesterError("the ECC AK is not on NIST P-256")
        x = int.from_bytes(bytes(area.unique.ecc.x), "big")
        y = int.from_bytes(bytes(area.unique.ecc.y), "big")
        key = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
        algorithm = AkAlgorithm.ECC
    else:
        raise TpmAttesterError("the AK is neither RSA nor ECC")
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _AkInfo(algorithm, der)


def _sig_scheme(algorithm: AkAlgorithm) -> Any:
    scheme = TPMT_SIG_SCHEME(
        scheme=TPM2_ALG.RSASSA if algorithm is AkAlgorithm.RSA else TPM2_ALG.ECDSA
    )
    scheme.details.any.hashAlg = TPM2_ALG.SHA256
    return scheme


def _selection(indices: Iterable[int]) -> Any:
    return TPML_PCR_SELECTION.parse("sha256:" + ",".join(str(i) for i in indices))


def _pcr_handle(index: int) -> Any:
    if not 0 <= index < PCR_COUNT:
        raise ValueError(f"PCR index {index} is not in 0..{PCR_COUNT - 1}")
    return ESYS_TR(int(ESYS_TR.PCR0) + index)


class TpmAttester:
    """Evidence from a TPM 2.0 through the TCTI ``tcti``.

    ``ak_handle``: a persistent AK to use (its type decides the scheme); when ``None`` a primary
    AK of ``ak_algorithm`` is created in the endorsement hierarchy. ``pcr_selection``: the
    SHA-256 PCRs to quote (all 24 by default, as upstream; the evidence always carries all 24
    values, but only the quoted ones are attested). ``exact_nonce``: quote the whole binding
    digest instead of upstream's 32-byte layout.
    """

    tee: ClassVar[Tee] = Tee.TPM

    def __init__(
        self,
        tcti: str,
        *,
        ak_handle: int | None = None,
        ak_algorithm: AkAlgorithm = AkAlgorithm.RSA,
        pcr_selection: Iterable[int] = range(PCR_COUNT),
        exact_nonce: bool = False,
        eventlog: Path | None = None,
    ) -> None:
        selection = tuple(sorted(set(pcr_selection)))
        if not selection:
            raise ValueError("pcr_selection is empty")
        for index in selection:
            _pcr_handle(index)
        self._tcti = tcti
        self._ak_handle = ak_handle
        self._ak_algorithm = AkAlgorithm(ak_algorithm)
        self._selection = selection
        self._exact_nonce = exact_nonce
        self._eventlog = eventlog
        self._lock = threading.Lock()
        self._ak: _AkInfo | None = None
        self._ak_context: Any = None  # TPMS_CONTEXT of the created primary AK

    # --- public API ------------------------------------------------------------------------

    def evidence(self, report_data: bytes) -> Json:
        """Quote the selected PCRs with ``extraData`` laid out from ``report_data``."""
        nonce = self._nonce(report_data)
        with self._lock, self._esapi() as ectx, self._loaded_ak(ectx) as (ak, info):
            for _ in range(_QUOTE_ATTEMPTS):
                attest, signature = ectx.quote(
                    ak, _selection(self._selection), TPM2B_DATA(nonce), _sig_scheme(info.algorithm)
                )
                message = bytes(attest)
                pcrs = self._read_pcrs(ectx)
                # A PCR extended between the quote and the read makes the evidence unverifiable;
                # the quote's own digest tells, so retry instead of sending it.
                quoted, _ = TPMS_ATTEST.unmarshal(message)
                expected = hashlib.sha256(b"".join(pcrs[i] for i in self._selection)).digest()
                if bytes(quoted.attested.quote.pcrDigest) == expected:
                    break
            else:
                raise TpmAttesterError("PCRs kept changing while quoting")
            signature_bytes = bytes(signature.marshal())
        evidence: dict[str, Json] = {
            "ak_public": b64std_encode(info.spki_der),
            "tpm_quote": {
                "signature": b64std_encode(signature_bytes),
                "message": b64std_encode(message),
                "pcrs": [pcr.hex() for pcr in pcrs],
            },
        }
        if self._eventlog is not None:
            # Read after the quote: the firmware log is complete once boot services exited.
            try:
                evidence["uefi_eventlog"] = b64std_encode(self._eventlog.read_bytes())
            except OSError as e:
                raise TpmAttesterError(f"cannot read the event log {self._eventlog}: {e}") from e
        return evidence

    def ak_public_der(self) -> bytes:
        """The AK's DER SubjectPublicKeyInfo (what the ``trusted_aks`` reference value lists)."""
        with self._lock:
            if self._ak is not None:
                return self._ak.spki_der
            with self._esapi() as ectx, self._loaded_ak(ectx) as (_, info):
                return info.spki_der

    def read_pcrs(self) -> tuple[bytes, ...]:
        """The 24 SHA-256 bank PCR values."""
        with self._lock, self._esapi() as ectx:
            return self._read_pcrs(ectx)

    def extend_pcr(self, index: int, data: bytes) -> bytes:
        """Measure ``data`` into PCR ``index``: extend it with SHA-256(``data``), returned."""
        digest = hashlib.sha256(data).digest()
        self.extend_pcr_digest(index, digest)
        return digest

    def extend_pcr_digest(self, index: int, digest: bytes) -> None:
        """Extend PCR ``index`` of the SHA-256 bank with the 32-byte ``digest`` as is."""
        if len(digest) != _DIGEST_SIZE:
            raise ValueError(f"a SHA-256 PCR is extended with 32 bytes, not {len(digest)}")
        handle = _pcr_handle(index)
        values = TPML_DIGEST_VALUES(
            [TPMT_HA(hashAlg=TPM2_ALG.SHA256, digest=TPMU_HA(sha256=digest))]
        )
        with self._lock, self._esapi() as ectx:
            ectx.pcr_extend(handle, values)

    def bind_init_data(self, init_data_digest: bytes) -> None:
        """Extend PCR 8 with the init-data digest, which must be sha256 (32 bytes)."""
        if len(init_data_digest) != _DIGEST_SIZE:
            raise ValueError('the tpm TEE binds only sha256 init-data (algorithm = "sha256")')
        self.extend_pcr_digest(INIT_DATA_PCR, init_data_digest)

    # --- AK enrolment (custodes.guest.tpm_enrol) -----------------------------------------

    def ek_certificate(self, ek: AkAlgorithm = AkAlgorithm.RSA) -> bytes:
        """The DER EK certificate the manufacturer stored in NV (index 0x01c00002 for the RSA
        EK, 0x01c0000a for the ECC one), without the zero padding some TPMs store after it."""
        index = EK_CERT_INDICES[AkAlgorithm(ek)]
        with self._lock, self._esapi() as ectx:
            try:
                data = _nv_read(ectx, index)
            except NoSuchIndex as e:
                raise TpmAttesterError(
                    f"this TPM has no {ek} EK certificate (NV index {index:#010x})"
                ) from e
        return _der_prefix(data)

    def ak_public_area(self) -> bytes:
        """The AK's marshalled TPMT_PUBLIC, which its Name is the digest of."""
        with self._lock, self._esapi() as ectx, self._loaded_ak(ectx) as (ak, _):
            public, _, _ = ectx.read_public(ak)
            return bytes(public.publicArea.marshal())

    def activate_credential(
        self, credential_blob: bytes, encrypted_secret: bytes, ek: AkAlgorithm = AkAlgorithm.RSA
    ) -> bytes:
        """TPM2_ActivateCredential with this AK and the EK of type ``ek``: the secret of a
        credential made for the AK's Name under the EK (both arguments marshalled TPM2Bs).

        The EK's authorisation is the endorsement hierarchy's, through a policy session with
        PolicySecret(TPM_RH_ENDORSEMENT), as the EK templates' policy demands.
        """
        blob = _unmarshal_exact(TPM2B_ID_OBJECT, credential_blob, "credential blob")
        secret = _unmarshal_exact(TPM2B_ENCRYPTED_SECRET, encrypted_secret, "encrypted secret")
        with (
            self._lock,
            self._esapi() as ectx,
            self._loaded_ak(ectx) as (ak, _),
            _loaded_ek(ectx, AkAlgorithm(ek)) as ek_handle,
        ):
            session = ectx.start_auth_session(
                ESYS_TR.NONE,
                ESYS_TR.NONE,
                TPM2_SE.POLICY,
                TPMT_SYM_DEF(algorithm=TPM2_ALG.NULL),
                TPM2_ALG.SHA256,
            )
            try:
                ectx.policy_secret(
                    ESYS_TR.ENDORSEMENT, session, TPM2B_NONCE(), TPM2B_DIGEST(), TPM2B_NONCE(), 0
                )
                recovered = ectx.activate_credential(
                    ak, ek_handle, blob, secret, session1=ESYS_TR.PASSWORD, session2=session
                )
            finally:
                with contextlib.suppress(TSS2_Exception):  # already gone if the command failed
                    ectx.flush_context(session)
        return bytes(recovered)

    # --- internals -------------------------------------------------------------------------

    def _nonce(self, report_data: bytes) -> bytes:
        if self._exact_nonce:
            if not 0 < len(report_data) <= MAX_EXACT_NONCE:
                raise ValueError(f"a {len(report_data)}-byte digest does not fit extraData")
            return report_data
        if len(report_data) < UPSTREAM_NONCE_SIZE:
            raise ValueError(
                f"a {len(report_data)}-byte digest does not fill the 32-byte upstream layout"
            )
        return report_data[:UPSTREAM_NONCE_SIZE]

    @contextmanager
    def _esapi(self) -> Iterator[Any]:
        try:
            ectx = ESAPI(self._tcti)
        except TSS2_Exception as e:
            raise TpmAttesterError(f"cannot open the TPM at {self._tcti!r}: {e}") from e
        try:
            yield ectx
        except TSS2_Exception as e:
            raise TpmAttesterError(f"TPM command failed: {e}") from e
        finally:
            ectx.close()

    @contextmanager
    def _loaded_ak(self, ectx: Any) -> Iterator[tuple[Any, _AkInfo]]:
        """The AK's handle in ``ectx`` and its description; a transient AK is flushed on exit."""
        if self._ak_handle is not None:
            handle = ectx.tr_from_tpmpublic(self._ak_handle)
            if self._ak is None:
                public, _, _ = ectx.read_public(handle)
                self._ak = _ak_info(public)
            yield handle, self._ak
            return
        created = None
        handle = self._load_saved_ak(ectx)
        if handle is None:
            template = TPM2B_PUBLIC.parse(
                _TEMPLATES[self._ak_algorithm], objectAttributes=_AK_ATTRIBUTES
            )
            handle, created, _, _, _ = ectx.create_primary(None, template, ESYS_TR.ENDORSEMENT)
        try:
            if created is not None:
                self._ak = _ak_info(created)
                try:
                    self._ak_context = ectx.context_save(handle)
                except TSS2_Exception:
                    self._ak_context = None  # no context saving here: derive it each time
            if self._ak is None:
                raise TpmAttesterError("the AK description was lost")
            yield handle, self._ak
        finally:
            ectx.flush_context(handle)

    def _load_saved_ak(self, ectx: Any) -> Any:
        """The created AK reloaded from its saved context, or ``None``."""
        if self._ak_context is None or self._ak is None:
            return None
        try:
            return ectx.context_load(self._ak_context)
        except TSS2_Exception:
            self._ak_context = None  # the TPM was reset since: derive the key again
            return None

    def _read_pcrs(self, ectx: Any) -> tuple[bytes, ...]:
        values: dict[int, bytes] = {}
        while len(values) < PCR_COUNT:
            missing = [i for i in range(PCR_COUNT) if i not in values]
            # TPM2_PCR_Read returns at most 8 digests per call, with the selection it served.
            _, served, digests = ectx.pcr_read(_selection(missing))
            indices = _sha256_indices(served)
            got = [bytes(d) for d in digests]
            if not indices or len(indices) != len(got) or any(len(d) != _DIGEST_SIZE for d in got):
                raise TpmAttesterError("the TPM did not return the SHA-256 PCR values")
            values.update(zip(indices, got, strict=True))
        return tuple(values[i] for i in range(PCR_COUNT))


def _sha256_indices(selection: Any) -> list[int]:
    """PCR indices of the SHA-256 entries of a TPML_PCR_SELECTION, in TPM order."""
    indices: list[int] = []
    for k in range(selection.count):
        entry = selection.pcrSelections[k]
        if entry.hash != TPM2_ALG.SHA256:
            continue
        bitmap = bytes(entry.pcrSelect)[: entry.sizeofSelect]
        indices.extend(
            8 * j + i for j, octet in enumerate(bitmap) for i in range(8) if octet >> i & 1
        )
    return indices


def _unmarshal_exact(cls: Any, data: bytes, what: str) -> Any:
    try:
        value, used = cls.unmarshal(data)
    except (TSS2_Exception, ValueError, TypeError) as e:
        raise TpmAttesterError(f"the broker's {what} is not a marshalled TPM2B") from e
    if used != len(data):
        raise TpmAttesterError(f"the broker's {what} has {len(data) - used} trailing bytes")
    return value


def _nv_buffer_max(ectx: Any) -> int:
    _, data = ectx.get_capability(TPM2_CAP.TPM_PROPERTIES, TPM2_PT_NV.BUFFER_MAX, 1)
    for prop in data.data.tpmProperties:
        if prop.property == TPM2_PT_NV.BUFFER_MAX and prop.value:
            return int(prop.value)
    return _DEFAULT_NV_BUFFER


def _nv_read(ectx: Any, index: int) -> bytes:
    """The whole content of NV index ``index``; :class:`NoSuchIndex` if it is not defined
    (the form tpm2-pytss's ``create_ek_template`` expects of its callback)."""
    try:
        handle = ectx.tr_from_tpmpublic(index)
    except TSS2_Exception as e:
        raise NoSuchIndex(index) from e
    public, _ = ectx.nv_read_public(handle)
    size = int(public.nvPublic.dataSize)
    chunk = _nv_buffer_max(ectx)
    data = b"".join(
        bytes(ectx.nv_read(handle, min(chunk, size - offset), offset))
        for offset in range(0, size, chunk)
    )
    ectx.tr_close(handle)
    return data


def _der_prefix(data: bytes) -> bytes:
    """A DER certificate stored in a larger NV area: the bytes its own header says it has."""
    if len(data) >= 4 and data[0] == 0x30 and data[1] == _DER_LONG_LENGTH_2:
        end = 4 + int.from_bytes(data[2:4], "big")
        if end <= len(data):
            return data[:end]
    return data


@contextmanager
def _loaded_ek(ectx: Any, ek: AkAlgorithm) -> Iterator[Any]:
    """The EK of type ``ek``, created as a primary key from its TCG template (the template
    and nonce the manufacturer stored in NV, if any), flushed on exit."""
    _, template = create_ek_template(EK_TEMPLATES[ek], lambda index: _nv_read(ectx, index))
    handle, _, _, _, _ = ectx.create_primary(None, template, ESYS_TR.ENDORSEMENT)
    try:
        yield handle
    finally:
        ectx.flush_context(handle)
