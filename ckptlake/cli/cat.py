"""`ckptlake cat REF PATH`: one file of a version to stdout, verified chunk by chunk."""
from __future__ import annotations

import errno
import sys
from typing import Annotated, Any, Optional

import typer

from ..redact import redact
from .help import epilog, examples
from .options import (OUTPUT_PANEL, CommonOptions, ConfigOpt, DebugOpt, EndpointOpt, LakeOpt,
                      ProfileOpt, QuietOpt, RegionOpt, ReplicaOpt)
from .output import Output, OutputFailed, open_lake, require_lake, write_stderr
from .text import PROG

HELP = ("Write the file PATH of the version REF to stdout, verifying every chunk before it is "
        "written.")
EPILOG = epilog(
    examples("ckptlake cat gpt2/run-7/ckpt@best config.json | jq ."),
    "Only the file's bytes are fetched: a small (packed) file is one ranged read of its pack, "
    "a large one is read chunk by chunk; the manifest is the only other object read.  A chunk "
    "that does not match its digest stops the output before any of its bytes (exit 5); what "
    "was written before it was verified.  A directory or a symlink is a usage error (exit 2: "
    "list a directory with ckptlake ls REF PATH); a path the version does not have, exit 3.  "
    "With --json, stdout is still the file's bytes on success; an error is the JSON error "
    "document there (unless some of the file was already written), and warnings stay on "
    "stderr.  The egress guard of pull applies (egress: in ckptlake.yaml): above "
    "egress.warn_above_usd it warns on stderr, above egress.confirm_above_usd it asks on a "
    "terminal and elsewhere needs --yes (exit 7, nothing written).")

# Not the shared --json: on success stdout is the file, not a document.  It is taken at all so
# that `ckptlake --json CMD` works for every command (a script that sets --json globally) and
# a failure reads as every command's does.
JsonOpt = Annotated[bool, typer.Option(
    "--json", rich_help_panel=OUTPUT_PANEL,
    help="Errors as a JSON document on stdout; on success stdout is still the file's bytes.")]


def cat(
    ref: Annotated[str, typer.Argument(
        metavar="REF", show_default=False,
        help="The version: ARTIFACT or ARTIFACT@SELECTOR.")],
    path: Annotated[Optional[str], typer.Argument(
        metavar="PATH", show_default=False,
        help="The file's path in the version, exactly (as ckptlake ls REF shows it; a name "
             "with control characters, which ls shows escaped, as ls --json gives it); "
             "optional for an artifact that is one file.")] = None,
    replica: ReplicaOpt = None,
    yes: Annotated[bool, typer.Option(
        "--yes", "-y", help="Accept an egress cost above egress.confirm_above_usd without "
                            "asking.")] = False,
    lake: LakeOpt = None,
    endpoint_url: EndpointOpt = None,
    profile: ProfileOpt = None,
    region: RegionOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """stdout is the file, with --json too; errors are one line on stderr, as everywhere
    (and with --json the error document on stdout, while none of the file is there)."""
    common = CommonOptions(lake=lake, endpoint_url=endpoint_url, profile=profile, region=region,
                           config=config, json=json_, quiet=quiet, debug=debug)
    out = Output(common)
    with out.guard():
        from ..format.refs import parse_ref

        from .egress import confirm_egress, egress_policy, estimate_summary

        parsed = parse_ref(ref)
        if path is not None and not path.strip():
            from ..errors import UsageError

            # ("" named the version's root: "/ in a@v1 is a directory", unlike pull's words)
            raise UsageError("PATH is empty", hint="name a file of the version (ckptlake ls "
                             "REF lists them), or leave PATH out for a one-file artifact")
        egress = egress_policy(common)
        handle = open_lake(common)
        try:
            out.lake_line(handle)
            if replica is not None:  # a typo is exit 2 before any request, not exit 8 after
                handle.replica_for(replica)
            require_lake(handle)
            sink = sys.stdout.buffer
            via = {"replica": replica} if replica is not None else {}
            # With --json there is no document for the warnings to go into: stderr, as a
            # watch's (a corrupt cache entry replaced is worth knowing either way).
            # --json has no document for warnings to go in: stderr, unless --quiet
            warn = out.warn if not out.json else (
                (lambda message: None) if common.quiet else _warn_on_stderr)
            def priced(e: Any) -> None:  # pull's warn_egress, to where cat's warnings go
                if e.warn and (yes or not e.needs_confirmation):
                    from ..policy.egress import threshold_text

                    warn(f"egress: {estimate_summary(e, e.warn_above_usd)} (above "
                         f"egress.warn_above_usd "
                         f"{threshold_text(e.warn_above_usd, e.cost_usd)})")

            for piece in handle.cat(parsed, path, on_warning=warn, egress=egress, yes=yes,
                                    confirm=confirm_egress(out), on_estimate=priced, **via):
                # From the first byte on, stdout is the file: an error document appended to
                # part of it would read as the file's last bytes, so the error is the line on
                # stderr alone (and the exit code).
                out.json = False
                try:
                    _write_all(sink, piece)
                except BrokenPipeError:
                    raise  # `cat ... | head`: the reader left (guard stays quiet)
                except OSError as e:
                    raise OutputFailed(f"cannot write {path} to stdout: "
                                       f"{e.strerror or e}") from None
        finally:
            handle.close()


def _warn_on_stderr(message: str) -> None:
    write_stderr(f"{PROG}: warning: {redact(message)}")


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
