"""`custodes rv nvidia-rim FILE`: check an NVIDIA RIM offline and show (or register) the
reference values it gives the ``default_gpu`` policy.

FILE is the RIM's SWID XML as NVIDIA's RIM service serves it, or that XML in standard base64
(the payload of upstream's ``swid`` message). Every step of
:func:`custodes.attestation.verifiers.nvidia.rim.verify_rim` runs here, on this machine's
clock (``--at`` checks at another time: an audit of an old RIM). ``--out FILE`` writes the
upstream RVPS ``swid`` message (``custodes admin reference-value register --message FILE``
sends it); ``--register`` sends it now. Either way the broker verifies the RIM again, on its
own clock, before it stores anything.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final

from custodes.cli._common import add_url, admin_client, read_limited
from custodes.cli._output import add_out, add_output_format, emit
from custodes.cli.admin_identity import add_credentials
from custodes.errors import ConfigError

if TYPE_CHECKING:
    from custodes.attestation.verifiers.nvidia.rim import Rim
    from custodes.types.json import JsonObject

# A RIM is at most 1 MiB (rim.MAX_RIM_BYTES); its base64 a third more.
MAX_FILE_BYTES: Final = 1_500_000

EXAMPLES: Final = (
    "custodes rv nvidia-rim GH100_96.00.9F.00.01.swidtag",
    "custodes rv nvidia-rim --at 2024-06-01T00:00:00Z -o json test-rim.b64",
    "custodes rv nvidia-rim rim.swidtag --out rim-message.json",
    "custodes rv nvidia-rim rim.swidtag --register --url http://127.0.0.1:8080 --key admin.pem",
)


def add_parser(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    m = actions.add_parser(
        "nvidia-rim",
        help="check an NVIDIA RIM offline; the GPU reference values it gives",
        description=__doc__,
        examples=EXAMPLES,
    )
    m.add_argument("rim", type=Path, metavar="FILE", help="the RIM: SWID XML, or its base64")
    m.add_argument(
        "--at",
        metavar="TIME",
        help="check the certificates' validity at TIME (RFC 3339) instead of now",
    )
    add_output_format(m)
    add_out(m, text="write the RVPS swid message to FILE", legacy_output=False)
    reg = m.add_argument_group("registering the RIM at the broker")
    reg.add_argument(
        "--register", action="store_true", help="send the swid message to the broker (--url)"
    )
    add_credentials(reg, role="admin")
    add_url(m)
    m.set_defaults(func=run, usage_error=m.error)


def _document(path: Path) -> bytes:
    """The RIM's XML from FILE: as is when it starts with ``<``, else decoded from base64."""
    from custodes._internal.b64 import b64std_decode

    data = read_limited(path, MAX_FILE_BYTES, "RIM")
    if data.lstrip().startswith(b"<"):
        return data
    try:
        return b64std_decode(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError) as e:
        raise ConfigError(f"RIM {path} is neither XML nor standard base64 of it") from e


def run(args: argparse.Namespace) -> int:
    from custodes._internal.atomic import write_atomic
    from custodes._internal.b64 import b64std_encode
    from custodes.attestation.verifiers.nvidia.rim import verify_rim
    from custodes.cli._evidence_input import parse_time
    from custodes.rvps.swid import rim_reference_values

    now = datetime.now(UTC)
    if args.at is not None:
        try:
            now = datetime.fromtimestamp(parse_time(args.at), UTC)
        except ValueError as e:
            args.usage_error(f"--at: {e}")
    document = _document(args.rim)
    rim = verify_rim(document, now=now)
    values = rim_reference_values(rim)
    data: JsonObject = {
        "component": rim.component,
        "product": rim.product,
        "version": rim.version,
        "signer": rim.signer,
        "valid_until": rim.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "measurements": {
            str(m.report_index): [v.hex() for v in m.values]
            for _, m in sorted(rim.measurements.items())
        },
        "reference_values": [name for name in sorted(values)],
    }
    emit(args, data, human=lambda: _human(rim, sorted(values)))
    message: JsonObject = {"version": "0.1.0", "type": "swid", "payload": b64std_encode(document)}
    if args.output is not None:
        write_atomic(args.output, json.dumps(message).encode(), private=False)
        print(f"wrote the swid message to {args.output}", file=sys.stderr)
    if args.register:
        with admin_client(args) as client:
            client.register_message(message)
        print(f"registered {len(values)} reference values from the RIM", file=sys.stderr)
    return 0


def _human(rim: Rim, ids: list[str]) -> str:
    lines = [
        f"NVIDIA {rim.component} RIM {rim.version} for {rim.product}: signature and chain to "
        f"NVIDIA's RIM root verified (signer {rim.signer!r}, valid until "
        f"{rim.not_after:%Y-%m-%dT%H:%M:%SZ})",
        f"{len(rim.measurements)} active measurements (report index: golden values):",
    ]
    for _, m in sorted(rim.measurements.items()):
        lines.append(f"  {m.report_index:>2}: {' | '.join(v.hex() for v in m.values)}")
    lines.append(f"reference values: {', '.join(ids)}")
    return "\n".join(lines)
