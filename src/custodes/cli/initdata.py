"""`custodes initdata`: write, digest and encode the init-data a confidential pod starts with.

Init-data is integrity-protected, not secret: the cluster admin sees the annotation. Put no
secret in it; put the broker URL, its certificate and the agent policy in it.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from pathlib import Path
from typing import Final

from custodes._internal.b64 import b64std_encode
from custodes.cli._common import write_output
from custodes.cli._output import add_out, add_output_format, emit
from custodes.errors import ConfigError
from custodes.initdata.binding import BINDABLE_TEES, binding_field, binding_value
from custodes.initdata.build import DEFAULT_ALGORITHM, build, read_entry
from custodes.initdata.encoding import (
    ANNOTATION_KEY,
    MAX_ANNOTATION_BYTES,
    MAX_IMAGE_BYTES,
    decode_annotation,
    decode_image,
    encode_annotation,
    encode_image,
    read_image,
)
from custodes.initdata.errors import InitDataTooLarge
from custodes.initdata.format import ALGORITHMS, MAX_INITDATA_BYTES, InitData
from custodes.types.json import Json
from custodes.types.tee import Tee

EPILOG = f"""\
Examples:
  custodes initdata build --aa aa.toml --cdh cdh.toml --policy policy.rego --out initdata.toml
  custodes initdata digest initdata.toml --tee snp
  custodes initdata annotation initdata.toml        # value of {ANNOTATION_KEY}
  custodes initdata annotation --decode @value.b64
  custodes initdata image initdata.toml --out initdata.img
  custodes initdata image --decode initdata.img

The digest covers the exact bytes of the TOML file: any edit, even whitespace, changes it.
"""

_FROM: Final = ("toml", "annotation", "image")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "initdata",
        help="build, digest and encode init-data (annotation, block image)",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    b = actions.add_parser(
        "build",
        help="write an init-data TOML from the agent's configs",
        examples=[
            "custodes initdata build --aa aa.toml --cdh cdh.toml --out initdata.toml",
            "custodes initdata build --aa aa.toml --cdh cdh.toml --policy policy.rego "
            "--algorithm sha384 > initdata.toml",
        ],
    )
    b.add_argument("--aa", type=Path, required=True, help="attestation agent config (aa.toml)")
    b.add_argument("--cdh", type=Path, required=True, help="data hub config (cdh.toml)")
    b.add_argument("--policy", type=Path, help="Kata agent policy (policy.rego)")
    b.add_argument(
        "--algorithm",
        choices=ALGORITHMS,
        default=DEFAULT_ALGORITHM,
        help=f"digest algorithm (default {DEFAULT_ALGORITHM}: the only one SNP and TPM bind)",
    )
    add_out(b, text="write to FILE instead of stdout")
    b.set_defaults(func=_build)

    d = actions.add_parser(
        "digest",
        help="print the digest and a TEE's binding value",
        examples=[
            "custodes initdata digest initdata.toml --tee snp",
            "custodes initdata digest --from image initdata.img -o json",
        ],
    )
    d.add_argument("file", metavar="FILE", help="init-data ('-' for stdin)")
    d.add_argument(
        "--from",
        dest="source",
        choices=_FROM,
        default="toml",
        help="what FILE holds (default toml)",
    )
    d.add_argument(
        "--tee",
        choices=[t.value for t in BINDABLE_TEES],
        help="also print the value this TEE's launch field must hold",
    )
    add_output_format(d)
    d.set_defaults(func=_digest)

    a = actions.add_parser(
        "annotation",
        help="TOML to pod annotation value, or back",
        examples=[
            "custodes initdata annotation initdata.toml --out value.b64",
            "custodes initdata annotation --decode @value.b64 > initdata.toml",
        ],
    )
    ag = a.add_mutually_exclusive_group(required=True)
    ag.add_argument("file", metavar="FILE", nargs="?", help="init-data TOML ('-' for stdin)")
    ag.add_argument(
        "--decode", metavar="VALUE|@FILE", help="print the TOML inside an annotation value"
    )
    add_out(a, text="write to FILE instead of stdout")
    a.set_defaults(func=_annotation)

    i = actions.add_parser(
        "image",
        help="TOML to block image, or back",
        examples=[
            "custodes initdata image initdata.toml --out initdata.img",
            "custodes initdata image --decode initdata.img",
        ],
    )
    ig = i.add_mutually_exclusive_group(required=True)
    ig.add_argument("file", metavar="FILE", nargs="?", help="init-data TOML ('-' for stdin)")
    ig.add_argument("--decode", metavar="IMG", help="print the TOML inside a block image")
    add_out(i, text="output file (required to write an image)")
    i.set_defaults(func=_image, usage_error=i.error)


def _read(name: str, limit: int) -> bytes:
    """At most ``limit`` bytes of a file or stdin; more is refused, not truncated."""
    try:
        if name == "-":
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with open(name, "rb") as f:
                data = f.read(limit + 1)
    except OSError as e:
        raise ConfigError(f"cannot read {name}: {e.strerror or e}") from e
    if len(data) > limit:
        raise InitDataTooLarge(f"{name} is larger than {limit} bytes")
    return data


def _emit(data: bytes, output: Path | None) -> None:
    try:
        write_output(data, output, report=True)
    except OSError as e:
        raise ConfigError(f"cannot write {output}: {e.strerror or e}") from e


def _annotation_text(data: bytes, name: str) -> str:
    try:
        # A file or shell variable usually ends with a newline; the value itself never does.
        return data.decode("ascii").strip()
    except UnicodeDecodeError as e:
        raise ConfigError(f"{name} is not an annotation value (non-ASCII bytes)") from e


def _image_from(name: str) -> InitData:
    """A whole image file, or the image at the start of a block device."""
    try:
        with open(name, "rb") as f:
            if stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                data = f.read(MAX_IMAGE_BYTES + 1)
                if len(data) > MAX_IMAGE_BYTES:
                    raise InitDataTooLarge(f"{name} is larger than {MAX_IMAGE_BYTES} bytes")
                return decode_image(data)
            return InitData.from_bytes(read_image(f))
    except OSError as e:
        raise ConfigError(f"cannot read {name}: {e.strerror or e}") from e


def _load(name: str, source: str) -> InitData:
    if source == "annotation":
        return decode_annotation(_annotation_text(_read(name, MAX_ANNOTATION_BYTES + 2), name))
    if source == "image":
        return _image_from(name)
    return InitData.from_bytes(_read(name, MAX_INITDATA_BYTES))


def _build(args: argparse.Namespace) -> int:
    init_data = build(
        aa=read_entry(args.aa),
        cdh=read_entry(args.cdh),
        policy=None if args.policy is None else read_entry(args.policy),
        algorithm=args.algorithm,
    )
    _emit(init_data.raw_bytes, args.output)
    if args.output is not None:
        print(f"{init_data.algorithm} {init_data.digest.hex()}", file=sys.stderr)
    return 0


def _digest(args: argparse.Namespace) -> int:
    init_data = _load(args.file, args.source)
    result: dict[str, Json] = {
        "algorithm": init_data.algorithm,
        "digest": init_data.digest.hex(),
    }
    if args.tee is not None:
        tee = Tee(args.tee)
        value = binding_value(tee, init_data.digest)  # refused before anything is printed
        field = binding_field(tee).name.lower().replace("_", "")
        result[field] = value.hex()
        result[f"{field}-base64"] = b64std_encode(value)
    emit(args, result, human=lambda: "\n".join(f"{k}: {v}" for k, v in result.items()))
    return 0


def _annotation(args: argparse.Namespace) -> int:
    if args.decode is None:
        value = encode_annotation(InitData.from_bytes(_read(args.file, MAX_INITDATA_BYTES)))
        if args.output is None:
            print(value)
        else:
            _emit(value.encode("ascii"), args.output)
        return 0
    text: str = args.decode
    if text.startswith("@"):
        text = _annotation_text(_read(text[1:], MAX_ANNOTATION_BYTES + 2), text[1:])
    _emit(decode_annotation(text).raw_bytes, args.output)
    return 0


def _image(args: argparse.Namespace) -> int:
    if args.decode is not None:
        _emit(_image_from(args.decode).raw_bytes, args.output)
        return 0
    if args.output is None:
        args.usage_error("writing an image needs --out IMG")
    _emit(encode_image(InitData.from_bytes(_read(args.file, MAX_INITDATA_BYTES))), args.output)
    return 0
