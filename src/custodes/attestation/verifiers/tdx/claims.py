"""TDX claims with upstream's names and shapes.

:func:`parsed_claims` is upstream's ``generate_parsed_claim`` output: ``quote`` (header and body
fields in hex; v5 adds ``type`` and ``size``), ``td_attributes`` flags, ``uefi_event_logs``
(only when an event log was sent), ``report_data``, ``init_data`` (= MRCONFIGID) and
``platform_instance_id`` (Platform CA PCK certificates only). It equals trustee's golden
``parse_tdx_claims_expected.json`` for ``tdx_quote_4.dat`` + ``CCEL_data``.

Upstream quirk kept for compatibility: ``platform_instance_id`` is the certificate's 16-byte
value in **reversed** byte order (the golden file's ``82548d22…1a02`` is the PCK extension's
``021ac64d…5482`` backwards).

:func:`tcb_claims` adds what upstream takes from Intel QVL's supplemental data, with the same
names and types: ``tcb_status``, ``advisory_ids``, ``collateral_expiration_status`` (always
``"0"``: expired collateral is refused before this point), ``tcb_date``,
``earliest_issue_date``, ``latest_issue_date``, ``earliest_expiration_date`` (RFC 3339),
``pck_crl_num``, ``root_ca_crl_num``, ``tcb_eval_num``, ``platform_provider_id`` (the PPID, as
upstream), ``sgx_type``, ``is_dynamic_platform`` / ``is_cached_keys`` / ``is_smt_enabled``
(scalable platforms only) and ``root_key_id``.

DCAP 1.27's "TD preserving" claims (upstream ``78c530b9`` / ``d6a4f5e4``, trustee #1546):
``tcb_status_current``, ``tcb_date_current`` and ``advisory_ids_current`` report the TD's
current TCB level where ``tcb_status``, ``tcb_date`` and ``advisory_ids`` report the level it
launched at; they differ only after a TD-preserving update of the TDX module. dcap-qvl 0.7.0
evaluates that level from TEE_TCB_SVN2, which only TDX 1.5 quotes (v5, body type 3) carry, so
the three claims are present for those quotes and absent otherwise, as upstream leaves them out
when QVL does not provide them. The current level is the platform's TCB level alone (dcap-qvl
does not combine it with the QE identity's status, as it does for ``tcb_status``).
"""

from __future__ import annotations

import time
from typing import TypeGuard

from custodes.attestation.eventlog import CcEventLog
from custodes.attestation.verifiers.tdx._dcap import PckInfo, QvlResult
from custodes.attestation.verifiers.tdx.quote import TdxQuote
from custodes.types.json import JsonObject

_SGX_TYPES = {0: "Standard", 1: "Scalable", 2: "Scalable with Integrity"}


def parsed_claims(
    quote: TdxQuote, eventlog: CcEventLog | None, pck: PckInfo | None = None
) -> JsonObject:
    claims: JsonObject = {}
    if eventlog is not None:
        claims["uefi_event_logs"] = eventlog.to_json()
    claims["quote"] = quote.to_json()
    claims["td_attributes"] = quote.body.attributes.to_json()
    claims["report_data"] = quote.report_data.hex()
    claims["init_data"] = quote.mr_config_id.hex()
    if pck is not None and pck.platform_instance_id is not None:
        claims["platform_instance_id"] = pck.platform_instance_id[::-1].hex()
    return claims


def tcb_claims(
    result: QvlResult, tcb_status: str, tcb_status_current: str | None = None
) -> JsonObject:
    """Supplemental claims from dcap-qvl's verified claims; fields it lacks are left out.
    ``tcb_status_current`` is the checked status of ``result.current`` (TDX 1.5 quotes)."""
    claims: JsonObject = {
        "tcb_status": tcb_status,
        "advisory_ids": list(result.advisory_ids),
        "collateral_expiration_status": "0",
    }
    if result.current is not None and tcb_status_current is not None:
        claims["tcb_status_current"] = tcb_status_current
        claims["advisory_ids_current"] = list(result.current.advisory_ids)
        if result.current.date is not None:
            claims["tcb_date_current"] = result.current.date
    qvl = result.claims
    platform = _obj(qvl.get("platform"))
    pck = _obj(platform.get("pck"))
    for name, value in (
        ("tcb_date", platform.get("tcb_date_tag")),
        ("earliest_issue_date", qvl.get("earliest_issue_date")),
        ("latest_issue_date", qvl.get("latest_issue_date")),
        ("earliest_expiration_date", qvl.get("earliest_expiration_date")),
    ):
        if _is_int(value):
            claims[name] = _rfc3339(value)
    for name, value in (
        ("pck_crl_num", platform.get("pck_crl_num")),
        ("root_ca_crl_num", platform.get("root_ca_crl_num")),
        ("tcb_eval_num", _obj(qvl.get("tcb")).get("eval_data_number")),
    ):
        if _is_int(value):
            claims[name] = value
    ppid = _byte_list(pck.get("ppid"))
    if ppid is not None:
        claims["platform_provider_id"] = ppid.hex()
    sgx_type = pck.get("sgx_type")
    if _is_int(sgx_type):
        claims["sgx_type"] = _SGX_TYPES.get(sgx_type, f"Unknown ({sgx_type})")
        if sgx_type > 0:
            for name, key in (
                ("is_dynamic_platform", "dynamic_platform"),
                ("is_cached_keys", "cached_keys"),
                ("is_smt_enabled", "smt_enabled"),
            ):
                claims[name] = str(pck.get(key)) == "True"
    root_key_id = _byte_list(platform.get("root_key_id"))
    if root_key_id is not None:
        claims["root_key_id"] = root_key_id.hex()
    return claims


def _obj(value: object) -> JsonObject:
    return value if isinstance(value, dict) else {}


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _byte_list(value: object) -> bytes | None:
    """The bytes of a JSON array of integers 0..255, else ``None`` (booleans are not bytes)."""
    # Type and range are checked in C (set of types, then bytes()), not per element in Python.
    if not isinstance(value, list) or not set(map(type, value)) <= {int}:
        return None
    try:
        return bytes(value)
    except ValueError:  # an integer outside 0..255
        return None


def _rfc3339(timestamp: int) -> str:
    # time.gmtime: the same UTC fields as datetime.fromtimestamp(..., UTC), at a third the cost.
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
