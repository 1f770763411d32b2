"""The init-data of a confidential pod that names the tenant's broker, and reading it back.

Written: ``aa.toml`` with ``[token_configs.kbs] url`` (+ ``cert``, + the policy selector as
upstream's ``attestation_policy_selector``, guest-components #1604), ``cdh.toml`` with
``[kbc] name = "cc_kbc"``, ``url`` (+ ``kbs_cert``), as upstream's guest components read them,
and optionally the Kata agent policy (``policy.rego``). The document is built by
:mod:`custodes.initdata.build`, so the same inputs give the same bytes and digest.

Read back (the webhook): which broker URLs an init-data document points the guest at.
URLs are compared after :func:`normalize_url` (case of scheme and host, default port,
trailing ``/``), never by prefix.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from typing import Final

from cryptography import x509

from custodes._internal.admin_claims import normalize
from custodes.errors import ConfigError
from custodes.guest.policy_selector import check_policy_selector
from custodes.initdata.build import DEFAULT_ALGORITHM, build
from custodes.initdata.errors import InitDataError
from custodes.initdata.format import AA_CONFIG, CDH_CONFIG, InitData

KBC_NAME: Final = "cc_kbc"
_ESCAPES: Final = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def normalize_url(url: str) -> str:
    """``scheme://host:port/path`` with scheme and host lower-cased and the port explicit.

    ``ConfigError`` for anything but an http(s) URL with a host and no user info, query or
    fragment (a broker base URL has none of those). The broker reads its own URLs, and the
    audience of admin tokens, by the same rule.
    """
    return normalize(url, "broker URL")


def check_certificate(pem: str) -> str:
    """``pem`` if it holds one or more PEM certificates (the broker's CA), else ``ConfigError``."""
    try:
        certs = x509.load_pem_x509_certificates(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as e:
        raise ConfigError(f"broker certificate is not PEM X.509: {e}") from e
    if not certs:
        raise ConfigError("broker certificate file holds no certificate")
    return pem


def toml_string(text: str) -> str:
    """``text`` as a one-line TOML basic string."""
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch < " " or ch == "\x7f":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _pem_value(pem: str) -> str:
    # A PEM is base64 lines between markers: a literal block shows it as the file reads.
    if "'''" in pem or any(ch < " " and ch != "\n" for ch in pem):
        return toml_string(pem)
    return "'''\n" + pem + ("" if pem.endswith("\n") else "\n") + "'''"


def aa_toml(url: str, cert: str | None = None, policy_selector: str | None = None) -> str:
    lines = ["[token_configs]", "[token_configs.kbs]", f"url = {toml_string(url)}"]
    if cert is not None:
        lines.append(f"cert = {_pem_value(cert)}")
    if policy_selector is not None:
        lines.append(f"attestation_policy_selector = {toml_string(policy_selector)}")
    return "\n".join(lines) + "\n"


def cdh_toml(url: str, cert: str | None = None) -> str:
    lines = ["[kbc]", f"name = {toml_string(KBC_NAME)}", f"url = {toml_string(url)}"]
    if cert is not None:
        lines.append(f"kbs_cert = {_pem_value(cert)}")
    return "\n".join(lines) + "\n"


def broker_initdata(
    url: str,
    *,
    cert: str | None = None,
    policy: str | None = None,
    policy_selector: str | None = None,
    algorithm: str = DEFAULT_ALGORITHM,
) -> InitData:
    """The init-data document pointing the guest at ``url`` (checked as the broker will),
    asking it for the attestation policy ``policy_selector`` names, if given."""
    normalize_url(url)
    if cert is not None:
        check_certificate(cert)
    if policy_selector is not None:
        check_policy_selector(policy_selector, "--policy-selector")
    aa = aa_toml(url, cert, policy_selector)
    return build(aa=aa, cdh=cdh_toml(url, cert), policy=policy, algorithm=algorithm)


@dataclass(frozen=True, slots=True)
class BrokerRef:
    """One broker URL found in init-data, and the field it came from."""

    field: str  # e.g. 'aa.toml: token_configs.kbs.url'
    url: str


def _table(doc: dict[str, object], *keys: str) -> dict[str, object] | None:
    current: object = doc
    for key in keys:
        if not isinstance(current, dict):
            return None
        current = current.get(key)
    return current if isinstance(current, dict) else None


def _parse(init_data: InitData, entry: str) -> dict[str, object] | None:
    text = init_data.data.get(entry)
    if text is None:
        return None
    try:
        return tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as e:
        raise InitDataError(f"init-data entry {entry!r} is not TOML: {e}") from e


@dataclass(frozen=True, slots=True)
class GuestBrokers:
    """The brokers an init-data document sends the guest to, and the data hub's KBC name."""

    refs: tuple[BrokerRef, ...]
    kbc_name: str | None


def brokers_in(init_data: InitData) -> GuestBrokers:
    """Every broker URL the attestation agent and the data hub would use."""
    refs: list[BrokerRef] = []
    kbc_name: str | None = None
    aa = _parse(init_data, AA_CONFIG)
    if aa is not None:
        kbs = _table(aa, "token_configs", "kbs")
        if kbs is not None and "url" in kbs:
            refs.append(BrokerRef(f"{AA_CONFIG}: token_configs.kbs.url", str(kbs["url"])))
    cdh = _parse(init_data, CDH_CONFIG)
    if cdh is not None:
        kbc = _table(cdh, "kbc")
        if kbc is not None:
            if "url" in kbc:
                refs.append(BrokerRef(f"{CDH_CONFIG}: kbc.url", str(kbc["url"])))
            if "name" in kbc:
                kbc_name = str(kbc["name"])
    return GuestBrokers(tuple(refs), kbc_name)
