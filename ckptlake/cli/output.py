"""One output object: decides human / --json / --quiet, renders results and errors.

Why one object: the rules about which stream gets what are the CLI's contract with scripts, and
they are easy to break one `print` at a time.  Commands never print; they hand results and errors
to `Output`, which applies the rules below in one place.

Streams
-------
* stdout carries the command's result only: the summary line (push, pull, alias), the table
  (ls), or with --json exactly one JSON document.
* stderr carries everything else: "using lake <url> (<origin>)", notes, warnings, retries, the
  progress bar (only when stderr is a terminal), and the one-line error.
* --quiet prints nothing but the error line.  --json prints only the JSON document on stdout and,
  on failure, also the error line on stderr; notes and progress are suppressed (--json wins
  over --quiet: asking for a document gets a document).
* Everything printed goes through ckptlake/redact.py: URL user info and query values, and the
  values of secret-named `key=value` pairs, are masked; nothing from the environment is echoed.

JSON schemas (--json; one document, one line, on stdout)
--------------------------------------------------------
push::

    {"lake": "s3://bucket/prefix", "lake_origin": "--lake", "artifact": "gpt2/run-7/ckpt",
     "version": 3, "step": 2000, "files": 12, "bytes_scanned": 1073741824,
     "bytes_uploaded": 125829120, "bytes_deduplicated": 947912704, "chunks_uploaded": 8,
     "chunks_deduplicated": 57, "aliases": ["best"], "seconds": 3.2}

pull::

    {"lake": "...", "lake_origin": "...", "artifact": "gpt2/run-7/ckpt", "version": 3,
     "destination": "./restore", "files": 12, "bytes_total": 1073741824,
     "bytes_downloaded": 1073741824, "bytes_reused": 0, "bytes_resumed": 0, "seconds": 2.1}

ls (no argument)::

    {"lake": "...", "artifacts": [{"artifact": "gpt2/run-7/ckpt", "versions": 3, "latest": 3,
      "updated": "2024-05-01T12:00:00Z", "aliases": ["best"]}, ...]}

ls ARTIFACT::

    {"lake": "...", "artifact": "gpt2/run-7/ckpt", "versions": [{"artifact": "gpt2/run-7/ckpt",
      "version": 1, "step": 1000, "created": "2024-05-01T12:00:00Z", "created_by": "...",
      "total_bytes": 1073741824, "files": 12, "metrics": {"loss": 2.31},
      "metadata": {"git": "abc123"}, "aliases": ["best"]}, ...]}

alias::

    {"artifact": "gpt2/run-7/ckpt", "alias": "best", "version": 3, "previous": 2}

error (any command; exit code as in the table below)::

    {"error": {"type": "NotFound", "message": "...", "exit_code": 3}}

  `type` is the library's error class (NotFound, Conflict, SourceChanged, ...), "UsageError" for
  a bad command line, "Interrupted" for Ctrl-C and "InternalError" for anything unexpected.
  A push whose version was committed but whose --alias could not be set adds "artifact" and
  "version" (the committed one) after these three.

Exit codes: 0 ok, 1 internal error, 2 usage, 3 not found, 4 access denied, 5 integrity,
6 conflict, 7 refused by policy, 8 transfer failed, 130 interrupted.
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import sys
import traceback
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import typer

from ..errors import (EXIT_ACCESS, EXIT_CONFLICT, EXIT_ERROR, EXIT_INTEGRITY, EXIT_INTERRUPTED,
                      EXIT_NOT_FOUND, EXIT_OK, EXIT_POLICY, EXIT_TRANSFER, EXIT_USAGE,
                      CkptlakeError)
from ..redact import redact, redact_data, verbatim
from ..units import format_bytes, format_rate
from .options import CommonOptions
from .text import PROG, no_controls, one_cell, one_line

if TYPE_CHECKING:
    from ..lake import Lake
    from ..transfer.progress import Progress

EXIT_CODES_HELP = (
    f"Exit codes: {EXIT_OK} ok, {EXIT_ERROR} internal error, {EXIT_USAGE} usage, "
    f"{EXIT_NOT_FOUND} not found, {EXIT_ACCESS} access denied, {EXIT_INTEGRITY} integrity, "
    f"{EXIT_CONFLICT} conflict, {EXIT_POLICY} refused by policy, {EXIT_TRANSFER} transfer failed, "
    f"{EXIT_INTERRUPTED} interrupted."
)

# --- human formatting (sizes and rates: ckptlake/units.py) -----------------------------------

def format_age(then: datetime, now: datetime | None = None) -> str:
    """Coarse age, one unit: '45s', '3m', '2h', '5d' (a listing needs order of magnitude)."""
    now = now or datetime.now(timezone.utc)
    if then.tzinfo is None:
        then = then.replace(tzinfo=timezone.utc)
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _timing(nbytes: int, seconds: float) -> str:
    if seconds > 0:
        return f"{seconds:.1f} s ({format_rate(nbytes / seconds)})"
    return f"{seconds:.1f} s"


def push_summary(r: Any) -> str:
    """pushed a/b@v3 (step 2000): 12 files, 1.00 GiB scanned, 120.0 MiB uploaded, ..."""
    extra = []
    dry = getattr(r, "dry_run", False)
    if r.step is not None:
        extra.append(f"step {r.step}")
    if r.aliases:
        moved = getattr(r, "aliases_moved", None) or {}
        extra.append(("alias " if len(r.aliases) == 1 else "aliases ") + ", ".join(
            f"{a} ({'now on' if dry else 'moved from'} v{moved[a]})" if a in moved else a
            for a in r.aliases))
    head = (f"would push {r.artifact} as v{r.version}" if dry else
            f"pushed {r.artifact}@v{r.version}") + (f" ({'; '.join(extra)})" if extra else "")
    # "(as N)" and "stored N" only when they say something: compared as printed, since sizes
    # a few bytes apart (a chunk's frame header) round alike ("64.0 MiB uploaded (as 64.0
    # MiB)").  --json has the exact counts.
    sent = getattr(r, "bytes_sent", None)
    stored = getattr(r, "bytes_stored", None)
    uploaded = format_bytes(r.bytes_uploaded)
    uploaded = (f"{uploaded} {'to upload' if dry else 'uploaded'}"
                + (f" (as {format_bytes(sent)})"
                   if sent is not None and format_bytes(sent) != uploaded else ""))
    ratio = getattr(r, "ratio", None)
    stored_part = (f"stored {format_bytes(stored)} ({ratio:.2f} of logical), "
                   if ratio is not None and stored is not None
                   and format_bytes(stored) != format_bytes(r.bytes_scanned) else "")
    return (f"{head}: {plural(r.files, 'file')}, {format_bytes(r.bytes_scanned)} scanned, "
            f"{uploaded}, {format_bytes(r.bytes_deduplicated)} "
            f"{'already in the lake' if dry else 'deduplicated'}, {stored_part}"
            f"{_timing(r.bytes_scanned, r.seconds)}"
            + ("; nothing was written (--dry-run)" if dry else ""))


def pull_summary(r: Any) -> str:
    """pulled a/b@v3 -> ./restore: 12 files, 1.00 GiB (1.00 GiB downloaded, 0 B reused), ..."""
    return (f"pulled {r.artifact}@v{r.version} -> {r.destination}: {plural(r.files, 'file')}, "
            f"{format_bytes(r.bytes_total)} ({format_bytes(r.bytes_downloaded)} downloaded, "
            f"{format_bytes(r.bytes_reused)} reused"
            + (f", {format_bytes(r.bytes_resumed)} resumed" if getattr(r, "bytes_resumed", 0)
               else "")
            + (f", {format_bytes(r.bytes_from_cache)} from the cache"
               if getattr(r, "bytes_from_cache", 0) else "")
            + f"), {_timing(r.bytes_total, r.seconds)}"
            + (_replica_text(r.replica) if getattr(r, "replica", None) else ""))


def _replica_text(rep: dict) -> str:
    """"; replica eu: 1.9 GiB from it, 0.1 GiB through from the lake" (where the bytes came
    from, which is what the replica is for)."""
    origin = rep.get("bytes_from_origin", 0)
    text = (f"; replica {rep['name']} ({rep['region']}): "
            f"{format_bytes(rep.get('bytes_from_replica', 0))} from it, "
            f"{format_bytes(rep.get('bytes_pulled_through', 0))} through from the lake")
    if origin:
        text += f", {format_bytes(origin)} from the lake uncached"
    if rep.get("chunks_repaired"):
        text += f", {rep['chunks_repaired']} corrupt copies replaced"
    return text


def alias_summary(r: Any) -> str:
    """alias best -> a/b@v3 (was v2) — says what moved, since aliases move silently otherwise."""
    if r.previous is None:
        how = "new"
    elif r.previous == r.version:
        how = "unchanged"
    else:
        how = f"was v{r.previous}"
    return f"alias {r.alias} -> {r.artifact}@v{r.version} ({how})"


# Above this many rows a terminal gets the plain columns too: rich lays a table out at ~12x
# their cost (`ls ART@vN` of 20,000 files: 8.9 s on a terminal, 0.75 s piped; ~45 s for
# 100,000), and a listing that long is scrolled or searched, not read as a box.
RICH_TABLE_ROWS = 2000


def plain_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Aligned columns without box drawing, for pipes and logs (`awk`/`cut` friendly).
    Widths are terminal cells, not characters: `漢` or `😀` takes two, the accent of an NFD
    `é` none, and len() misaligned every row after such a name."""
    from rich.cells import cell_len

    rows = [[one_cell(cell) for cell in row] for row in rows]  # (the lake's text)
    widths = [cell_len(h) for h in headers]
    for row in rows:
        widths = [max(w, cell_len(cell)) for w, cell in zip(widths, row)]
    lines = []
    for row in [list(headers), *rows]:
        cells = [cell + " " * (w - cell_len(cell)) for cell, w in zip(row, widths)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def rich_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> Any:
    """A terminal table that never cuts a value, nor drops a column.  rich's default ellipsis
    made `team-a/very-long-proj…` and a step `1234567…` of a narrow terminal's `ls`: nothing a
    user could copy; and columns given a minimum width squeezed the others out of a very narrow
    one altogether.  Every cell folds onto further lines instead."""
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, highlight=False)
    for header in headers:
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*(one_cell(cell) for cell in row))  # (cells hold the lake's text)
    return table


# --- errors -----------------------------------------------------------------------------------

def error_doc(type_name: str, message: str, exit_code: int,
              fields: dict[str, Any] | None = None) -> dict[str, Any]:
    """`fields`: the error's own members (CkptlakeError.fields), after the three every error
    document has, which they never replace."""
    doc = {"type": type_name, "message": message, "exit_code": exit_code}
    extra = {k: v for k, v in redact_data(fields or {}).items() if k not in doc}
    return {"error": {**doc, **extra}}


def _keep_exact(text: str, exact: tuple[str, ...]) -> str:
    """`text` with the error's own paths (CkptlakeError.exact) marked for the redaction to
    leave alone; only those it would change, each place once (a longer one first)."""
    spans: list[tuple[int, int]] = []
    for s in sorted({s for s in exact if s and redact(s) != s}, key=len, reverse=True):
        start = text.find(s)
        while start != -1:
            end = start + len(s)
            if not any(a < end and start < b for a, b in spans):
                spans.append((start, end))
            start = text.find(s, end)
    out, pos = [], 0
    for a, b in sorted(spans):
        out += [text[pos:a], verbatim(text[a:b])]
        pos = b
    return "".join(out) + text[pos:]


def classify(exc: BaseException) -> tuple[str, str, int, bool]:
    """(type, one-line message, exit code, is_internal) for any exception the CLI may meet."""
    if isinstance(exc, CkptlakeError):
        text = _keep_exact(one_line(str(exc)), getattr(exc, "exact", ()))
        return type(exc).__name__, redact(text), exc.exit_code, False
    if isinstance(exc, KeyboardInterrupt):
        return "Interrupted", "interrupted", EXIT_INTERRUPTED, False
    text = redact(one_line(str(exc)))
    return "InternalError", f"{type(exc).__name__}: {text}" if text else type(exc).__name__, \
        EXIT_ERROR, True


def report_error(exc: BaseException, *, as_json: bool, debug: bool) -> int:
    """Print the error the one way the contract allows; return the exit code to use."""
    type_name, message, code, internal = classify(exc)
    if debug and not isinstance(exc, KeyboardInterrupt):
        # Exception messages in the chain quote URLs and arguments as given (an endpoint with
        # its password, say), so the traceback is redacted like every other line.
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        write_stderr(redact(text).rstrip("\n"))
    if as_json and not isinstance(exc, OutputFailed):
        write_error_doc(error_doc(type_name, message, code, getattr(exc, "fields", None)))
    if isinstance(exc, KeyboardInterrupt):
        line = f"{PROG}: interrupted"
    elif internal:
        line = f"{PROG}: internal error: {message}"
        if not debug:
            line += " (run again with --debug for the traceback)"
    else:
        line = f"{PROG}: error: {message}"
    write_stderr(line)
    if isinstance(exc, OutputFailed):
        _silence_stdout()  # the interpreter's last flush must not fail again
    return code


def write_error_doc(doc: dict[str, Any]) -> None:
    """An error's JSON document on stdout, if stdout still takes it: the error's line on
    stderr says it anyway, and a second failure must not hide the first."""
    try:
        _write(sys.stdout, json.dumps(_valid_unicode(doc)))
    except (OSError, ValueError):
        _silence_stdout()


def _write(stream: Any, text: str) -> None:
    if stream is None:  # a descriptor closed at start-up (cli/main.py gives it /dev/null)
        raise OSError(errno.EBADF, "the stream is closed")
    stream.write(text + "\n")
    stream.flush()


def write_stderr(text: str) -> None:
    """A line on stderr, best effort: a closed or full stderr (`2>&-`, `2>/dev/full`) must not
    turn a command that worked into an error, nor its error into another one.  What cannot be
    written is dropped, and so is the rest of stderr (/dev/null from then on), so that the
    interpreter's last flush does not fail on what is still buffered (exit 120)."""
    try:
        _write(sys.stderr, no_controls(text))
    except (OSError, ValueError):
        _silence(sys.stderr)


def json_document(doc: dict[str, Any]) -> str:
    """A result's --json document: redacted, and valid Unicode (_valid_unicode)."""
    return json.dumps(_valid_unicode(redact_data(doc)), allow_nan=False)


def _valid_unicode(value: Any) -> Any:
    """`value` with each lone surrogate shown as the byte it stands for (`\\xfe`), as the
    human output shows it.  A path from the command line that is not UTF-8 (`d\\xfe`) comes
    from Python as 'd\\udcfe', which json.dumps wrote as a `\\udcfe` escape: no valid
    Unicode, and strict JSON parsers refused the whole document."""
    if isinstance(value, str):
        if value.isascii():
            return value
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            from ..core.identity import environment_text

            return environment_text(value)
        return value
    if isinstance(value, dict):
        return {_valid_unicode(k): _valid_unicode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_valid_unicode(v) for v in value]
    return value


def isatty(stream: Any) -> bool:
    """Whether `stream` is a terminal; False for a closed or detached one."""
    try:
        return bool(stream.isatty())
    except (AttributeError, OSError, ValueError):
        return False


class OutputFailed(CkptlakeError):
    """stdout could not take the result (a full disk, a closed terminal): not a bug, and
    nothing more can be written there (exit 1, like a reader that left the pipe)."""


def write_stdout(text: str) -> None:
    """The result, to stdout; a failure to write it is said on stderr as what it is."""
    try:
        _write(sys.stdout, text)
    except BrokenPipeError:
        raise  # the reader left: Output.guard stays quiet about it
    except (OSError, ValueError) as e:
        raise OutputFailed(f"cannot write the output to stdout: {one_line(str(e))}") from None


# --- the output object ------------------------------------------------------------------------

class Output:
    """Where each kind of message goes for one command invocation (see the module docstring)."""

    def __init__(self, common: CommonOptions) -> None:
        self.json = common.json
        self.quiet = common.quiet and not common.json
        self.debug = common.debug
        self.human = not common.json and not common.quiet
        self._doc_warnings: list[str] = []

    # stderr ---------------------------------------------------------------------------------
    def note(self, message: str) -> None:
        """A human note on stderr (never with --json or --quiet)."""
        if self.human:
            write_stderr(redact(message))

    def warn(self, message: str, *, document: bool = False) -> None:
        """A warning on stderr.  `document`: one the command's result does not carry itself
        (pull's egress cost, from a hook): with --json it goes into the result document's
        "warnings" instead, since a script reads that and never stderr."""
        if self.human:
            write_stderr(f"{PROG}: warning: {redact(message)}")
        elif self.json and document:
            self._doc_warnings.append(message)

    def lake_line(self, lake: "Lake") -> None:
        """Say which lake and why, so nobody pushes to the embedded default by mistake; and
        from now on show the retries no progress display shows (`ls`, `show`, reading a
        manifest before a pull...) as lines on stderr, as push and pull show theirs."""
        self.note(f"using lake {lake_url(lake)} ({lake_origin(lake)})")
        if self.human:
            from .progress import LineProgress

            lake.retry_listener = LineProgress()

    # stdout ---------------------------------------------------------------------------------
    def result(self, doc: dict[str, Any], human: str | None, *,
               done: str | None = None, styled: bool = False) -> None:
        """The command's result: the JSON document, or the human text, or nothing (--quiet).

        `done`: what the command changed in the lake ("pushed a/b@v3"), said with the error
        if stdout cannot take the result.  The error alone (exit 1) read as a failure, and a
        script that retried on it pushed a duplicate version."""
        try:
            if self.json:
                write_stdout(json_document(self._with_warnings(doc)))
            elif not self.quiet and human is not None:
                # `styled`: text that carries its own terminal styling (lineage's tree), whose
                # values were escaped as it was built
                write_stdout(redact(human) if styled else no_controls(redact(human)))
        except OutputFailed as exc:
            if done is None:
                raise
            raise OutputFailed(f"{redact(done)}, but {exc.message}",
                               hint="it is done: running the command again would do it again"
                               ) from None

    def _with_warnings(self, doc: dict[str, Any]) -> dict[str, Any]:
        """`doc` with the warnings said for it (Output.warn(document=True)) first in its
        "warnings"; each goes into one document only."""
        if not self._doc_warnings:
            return doc
        said, self._doc_warnings = self._doc_warnings, []
        return {**doc, "warnings": [*said, *doc.get("warnings", ())]}

    def table(self, doc: dict[str, Any], headers: Sequence[str],
              rows: Sequence[Sequence[str]], *, empty: str) -> None:
        """A listing: JSON, or a rich table on a terminal, or plain aligned columns."""
        if self.json:
            write_stdout(json_document(self._with_warnings(doc)))
            return
        if self.quiet:
            return
        rows = [[redact(cell) for cell in row] for row in rows]  # (escaped by the tables)
        if not rows:
            self.note(empty)
            return
        if isatty(sys.stdout) and len(rows) <= RICH_TABLE_ROWS:
            from rich.console import Console

            Console(highlight=False, markup=False).print(rich_table(headers, rows))
        else:
            write_stdout(plain_table(headers, rows))

    # progress -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def progress(self) -> Iterator["Progress | None"]:
        """A live bar on a terminal stderr; else a line logger for retries/notes; else nothing."""
        if not self.human:
            yield None
            return
        if isatty(sys.stderr):
            from .richbar import RichProgress

            with RichProgress() as bar:
                yield bar
        else:
            from .progress import LineProgress

            yield LineProgress()

    # errors ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Turn any failure in a command body into the contract's one line and exit code."""
        try:
            yield
        except typer.Exit:
            raise
        except BrokenPipeError:
            # `ckptlake ls | head -1`: the reader left; that is not an error worth a message.
            _silence_stdout()
            raise typer.Exit(EXIT_ERROR) from None
        except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - this is the top level
            if isinstance(exc, KeyboardInterrupt):
                from .main import forget_unhandled_interrupt, hold_signals

                hold_signals()
                forget_unhandled_interrupt()
            code = report_error(exc, as_json=self.json, debug=self.debug)
            raise typer.Exit(code) from None




def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    _silence(sys.stdout)


def _silence(stream: Any) -> None:
    """Point `stream`'s descriptor at /dev/null (what it still buffers goes there)."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, stream.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass


def lake_url(lake: "Lake") -> str:
    return redact(str(getattr(lake, "url", "?")))


def lake_origin(lake: "Lake") -> str:
    return str(getattr(lake, "origin", "unknown"))


def require_lake(lake: "Lake") -> None:
    """Readers refuse a location that holds no lake (exit 3) instead of listing nothing: a
    mistyped --lake must not look like an empty lake.  Writers create the lake (push)."""
    if not lake.exists():
        raise lake.absent_error(lake_origin(lake))


def parse_bandwidth(max_bandwidth: str | None) -> int | None:
    """--max-bandwidth SIZE in bytes per second (None: no limit)."""
    if max_bandwidth is None:
        return None
    from ..errors import UsageError
    from ..policy.config import parse_rate

    try:
        return parse_rate(max_bandwidth)
    except UsageError as exc:  # the config file's rule, under the option's name
        raise UsageError(f"--max-bandwidth {max_bandwidth}: {exc.message}", hint=exc.hint) \
            from None


def open_lake(common: CommonOptions, *, chunk_size: int | None = None,
              concurrency: int | None = None, max_bandwidth: str | None = None) -> "Lake":
    """ckptlake.open with the command line's options (imported lazily: boto3 is slow)."""
    import ckptlake

    from ..policy.config import check_endpoint_option

    check_endpoint_option(common.endpoint_url)
    bandwidth = parse_bandwidth(max_bandwidth)
    lake = ckptlake.open(common.lake, config=str(common.config) if common.config else None,
                         endpoint_url=common.endpoint_url, profile=common.profile,
                         region=common.region, chunk_size=chunk_size, concurrency=concurrency,
                         max_bandwidth=bandwidth)
    if common.endpoint_url is not None and lake_url(lake).startswith("file://") and not any(
            spec.url.startswith("s3://") and spec.endpoint_url is None
            for spec in getattr(getattr(lake, "replicas", None), "specs", ())):
        # Said, not refused: a wrapper may add it to every command.  (An s3:// replica without
        # its own endpoint_url is reached at the lake's: there the option does something.)
        Output(common).warn(f"--endpoint-url has no effect on a local lake ({lake_url(lake)}); "
                            "it is for S3-compatible stores (s3://...)")
    resume_collector()
    return lake


# Set by the console script (cli/main.py), which starts with the garbage collector off.
COLLECTOR_PAUSED = False


def resume_collector() -> None:
    """The collector back on once start-up is over (the lake open), with what start-up made
    frozen: it lives as long as the command, so no pass needs to look at it."""
    global COLLECTOR_PAUSED
    if COLLECTOR_PAUSED:
        import gc

        COLLECTOR_PAUSED = False
        gc.freeze()
        gc.enable()
