"""`ckptlake cat REF PATH`: one file of a version to stdout, verified chunk by chunk."""
from __future__ import annotations

import errno
import sys
from typing import Annotated, Any

import typer

from .help import epilog
from .options import (CommonOptions, ConfigOpt, DebugOpt, EndpointOpt, LakeOpt, ProfileOpt,
                      QuietOpt, RegionOpt, ReplicaOpt)
from .output import Output, OutputFailed, open_lake, require_lake

HELP = ("Write the file PATH of the version REF to stdout, verifying every chunk before it is "
        "written.")
EPILOG = epilog(
    "Example: ckptlake cat gpt2/run-7/ckpt@best config.json | jq .",
    "Only the file's bytes are fetched: a small (packed) file is one ranged read of its pack, "
    "a large one is read chunk by chunk; the manifest is the only other object read.  A chunk "
    "that does not match its digest stops the output before any of its bytes (exit 5); what "
    "was written before it was verified.  A directory or a symlink is a usage error (exit 2: "
    "list a directory with ckptlake ls REF PATH); a path the version does not have, exit 3.")


def cat(
    ref: Annotated[str, typer.Argument(
        metavar="REF", show_default=False,
        help="The version: ARTIFACT or ARTIFACT@SELECTOR.")],
    path: Annotated[str, typer.Argument(
        metavar="PATH", show_default=False,
        help="The file's path in the version (as ckptlake ls REF shows it).")],
    replica: ReplicaOpt = None,
    lake: LakeOpt = None,
    endpoint_url: EndpointOpt = None,
    profile: ProfileOpt = None,
    region: RegionOpt = None,
    config: ConfigOpt = None,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """No --json: stdout is the file.  Errors are one line on stderr, as everywhere."""
    common = CommonOptions(lake=lake, endpoint_url=endpoint_url, profile=profile, region=region,
                           config=config, json=False, quiet=quiet, debug=debug)
    out = Output(common)
    with out.guard():
        from ..format.refs import parse_ref

        parsed = parse_ref(ref)
        handle = open_lake(common)
        try:
            out.lake_line(handle)
            require_lake(handle)
            sink = sys.stdout.buffer
            via = {"replica": replica} if replica is not None else {}
            for piece in handle.cat(parsed, path, on_warning=out.warn, **via):
                try:
                    _write_all(sink, piece)
                except BrokenPipeError:
                    raise  # `cat ... | head`: the reader left (guard stays quiet)
                except OSError as e:
                    raise OutputFailed(f"cannot write {path} to stdout: "
                                       f"{e.strerror or e}") from None
        finally:
            handle.close()


def _write_all(sink: Any, piece: bytes | memoryview) -> None:
    """Every byte of a verified piece out before the next (nothing held back or written
    ahead).  A buffered stdout may take only part of a large write and say so by its return
    value (a file hitting its size limit; a pipe whose reader left after 64 KiB): the rest
    is written again, so the limit or the closed pipe raises instead of a short file and
    exit 0."""
    view = memoryview(piece).cast("B")
    while len(view):
        n = sink.write(view)
        if not n:
            raise OSError(errno.EIO, "stdout took none of the bytes")
        view = view[n:]
    sink.flush()
