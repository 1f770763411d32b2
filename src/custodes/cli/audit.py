"""`custodes audit`: offline checks for auditors.

``custodes audit verify FILE.jsonl --audit-key PEM [--head SEQ:HASH] [--from SEQ]
[--stream NAME]`` verifies an exported audit stream (JSON Lines) entry by entry: sequence
(from 0, or SEQ for a partial export), stream, hash, signature, chain link, time, and every
signed checkpoint. The stream must end at a checkpoint (every export does): that is how
entries cut from its end are detected. It prints ``ok: N entries, head SEQ HASH`` and the
final checkpoint, and exits 0, or ``audit log broken at entry SEQ: REASON`` and exits 1.
``--allow-unanchored`` accepts a stream without a final checkpoint (an export from a broker
before checkpoints), saying loudly that its end is then unproven.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import IO, Final

from custodes.audit.entry import MAX_SEQ, check_stream
from custodes.audit.errors import AuditStreamInvalid
from custodes.audit.verify import VerifyReport, load_public_keys, parse_head, verify_jsonl
from custodes.cli.access import register_access_matrix
from custodes.errors import ConfigError

EXIT_OK: Final = 0
EXIT_BROKEN: Final = 1


EPILOG = """\
Examples:
  custodes audit verify acme.jsonl --audit-key audit-key.pub.pem
  custodes audit verify acme.jsonl --audit-key audit-key.pub.pem --head 41:<64 hex digits>
  custodes audit verify acme-from-100.jsonl --audit-key audit-key.pub.pem --from 100
  custodes audit verify old-export.jsonl --audit-key audit-key.pub.pem --allow-unanchored
"""


def _head_arg(text: str) -> tuple[int, str]:
    """argparse ``type=`` wrapper: a usage error instead of a traceback."""
    try:
        return parse_head(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _seq_arg(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) > MAX_SEQ:
        raise argparse.ArgumentTypeError(f"{text!r} is not a sequence number")
    return int(text)


def _stream_arg(text: str) -> str:
    try:
        return check_stream(text)
    except AuditStreamInvalid as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "audit",
        help="audit log verification and the access matrix",
        description="Check audit logs exported by the broker, offline.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    register_access_matrix(actions)
    v = actions.add_parser(
        "verify",
        help="verify the hash chain and signatures of an exported audit stream",
        description=(
            "Verify an audit stream exported as JSON Lines: contiguous sequence numbers, each "
            "entry's hash and ES256 signature, the link to the previous entry, "
            "non-decreasing time and every signed checkpoint; the stream must end at a "
            "checkpoint (every export does), so a stream cut short is refused. Names the "
            "first bad entry."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    v.add_argument("file", type=Path, metavar="FILE.jsonl", help="the export ('-' for stdin)")
    # --audit-key names this key everywhere (`policy test` too); --public-key, its first name
    # here, is still accepted but no longer shown.
    keys = v.add_mutually_exclusive_group(required=True)
    keys.add_argument(
        "--audit-key",
        dest="audit_key",
        type=Path,
        action="append",
        metavar="PEM",
        help="the broker's audit public key (P-256, PEM); repeat for rotated keys",
    )
    keys.add_argument(
        "--public-key", dest="audit_key", type=Path, action="append", help=argparse.SUPPRESS
    )
    v.add_argument(
        "--head",
        type=_head_arg,
        metavar="SEQ:HASH",
        help="an anchor recorded earlier: the log must reach entry SEQ and it must have HASH",
    )
    v.add_argument(
        "--from",
        dest="start",
        type=_seq_arg,
        default=0,
        metavar="SEQ",
        help="the file is a partial export that starts at entry SEQ (default 0: the whole log)",
    )
    v.add_argument(
        "--stream",
        type=_stream_arg,
        metavar="NAME",
        help="the stream (tenant id) every entry must belong to",
    )
    v.add_argument(
        "--allow-unanchored",
        action="store_true",
        help=(
            "INSECURE: accept a stream that does not end at a signed checkpoint (an export "
            "from a broker without checkpoints); entries cut from its end go unnoticed"
        ),
    )
    v.set_defaults(func=_verify)


def _verify(args: argparse.Namespace) -> int:
    keys = load_public_keys(args.audit_key)
    path: Path = args.file

    def check(fp: IO[bytes]) -> VerifyReport:
        return verify_jsonl(
            fp,
            keys,
            expected_head=args.head,
            start_seq=args.start,
            stream=args.stream,
            require_checkpoint=not args.allow_unanchored,
        )

    try:
        if str(path) == "-":
            report = check(sys.stdin.buffer)
        else:
            with path.open("rb") as fp:
                report = check(fp)
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from e
    if not report.ok:
        print(f"audit log broken at entry {report.first_bad_seq}: {report.reason}")
        return EXIT_BROKEN
    head = "none" if report.head is None else f"{report.head[0]} {report.head[1]}"
    print(f"ok: {report.count} entries, head {head}")
    cp = report.checkpoint
    if cp is not None:
        where = "ends at" if report.complete else "does NOT end at"
        print(
            f"stream {cp.stream} {where} checkpoint {cp.seq} ({cp.event.get('reason')}, "
            f"signed {cp.time}); {report.checkpoints} checkpoints verified"
        )
    if args.start:
        print(
            f"note: the file starts at entry {args.start}; entries before it were not checked",
            file=sys.stderr,
        )
    if not report.complete:
        # Only reachable with --allow-unanchored: without it such a stream is refused above.
        print(
            "WARNING: --allow-unanchored: the stream does not end at a signed checkpoint, so "
            "entries removed from its end cannot be detected",
            file=sys.stderr,
        )
    return EXIT_OK
