"""`ckptlake watch DIR ARTIFACT`: push each new complete checkpoint a trainer writes to DIR."""
from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..redact import redact
from ..watch import DEFAULT_STEP_REGEX, DEFAULT_STEP_RULE, shown
from .help import epilog, examples
from .options import (OUTPUT_PANEL, CommonOptions, ConcurrencyOpt, ConfigOpt, DebugOpt,
                      EndpointOpt, LakeOpt, MaxBandwidthOpt, ProfileOpt, QuietOpt, RegionOpt,
                      check_source)
from .output import (Output, lake_origin, lake_url, open_lake, push_summary, report_error,
                     write_stderr)
from .text import PROG

HELP = ("Watch DIR and push each new complete checkpoint in it to ARTIFACT, in step order.\n\n"
        "Runs beside a trainer until stopped.  A restarted watch skips the steps the lake "
        "already holds.  On SIGTERM it finishes the upload under way (or abandons it after "
        "--drain seconds; nothing partial is committed) and exits 0; on Ctrl-C (SIGINT) "
        "likewise, then exits 130 as an interrupted command does.  A second Ctrl-C abandons "
        "the upload at once.")
EPILOG = epilog(
    examples("ckptlake watch /opt/ml/checkpoints gpt2/run-7/ckpt --pattern 'step_*' "
             r"--step-regex 'step_(\d+)' --marker COMMIT_SUCCESS --keep-local 2"),
    "A checkpoint is an entry of DIR matching --pattern whose name yields a step through "
    "--step-regex (its first group, or the group named 'step').  The default takes only "
    "names that say they are checkpoints: the number after 'step' if the name has one, else "
    "after 'checkpoint', 'ckpt', 'iter' or 'epoch', or a name that is a number "
    "(epoch=3-step=1200.ckpt is step 1200, checkpoint-500 500, iter_0001000 1000, ckpt_100.pt "
    "and Orbax's 100 100); never one with a 'tmp' or 'temp' token.  Other entries "
    "(events.out.tfevents.*, train.log.1, last.ckpt) are ignored, said once.  A checkpoint is "
    "complete once it holds the --marker file or, without --marker, once nothing in it "
    "changed for --settle seconds.  "
    "A complete checkpoint older than a step already in the lake is not pushed (it would "
    "become 'latest'): a warning names the step in its way and how to remove it, and --once "
    "then exits 6.  A second entry with the step of one already pushed is not pushed either, "
    "nor a step whose version was deleted (rm, or gc: a note; push it by hand to restore "
    "it); a deleted step blocks no later one.  "
    "A failed push is retried before any later step; a checkpoint that cannot be pushed (a "
    "FIFO in it, an unreadable file: --exclude them; a symlink out of it: --follow-symlinks or "
    "--exclude) is passed over.  With --once, a checkpoint that failed makes the exit code "
    "that of its error.",
    "Output: one line per pushed checkpoint on stdout (with --json: one JSON document per "
    "line, push's plus \"checkpoint\", and an error document last if --once failed or "
    "Ctrl-C stopped it); notes (skips, deleted steps, ignored names, prunes) and warnings "
    "(failed or "
    "blocked pushes, retries) on stderr, one line each; with --json only the warnings.")

# Not the shared --json: a watch prints a document per pushed checkpoint, not one in all.
JsonOpt = Annotated[bool, typer.Option(
    "--json", rich_help_panel=OUTPUT_PANEL,
    help="Print one JSON document per line on stdout: one per pushed checkpoint (and the "
         "error's, for errors); warnings still on stderr; no progress, no notes.")]


def watch(
    # Parsed as str: a Path turns "" (an unset variable) into ".", and the watch pushed the
    # current directory's entries.  file_okay=False now only tells the completions that DIR
    # is a directory: a file is refused below.
    directory: Annotated[Path, typer.Argument(
        metavar="DIR", show_default=False, file_okay=False, parser=str,
        help="Directory the trainer writes its checkpoints into.")],
    artifact: Annotated[str, typer.Argument(
        metavar="ARTIFACT", show_default=False,
        help="Artifact to push the checkpoints to, e.g. gpt2/run-7/ckpt.")],
    pattern: Annotated[str, typer.Option(
        "--pattern", metavar="GLOB", help="Names of checkpoint entries in DIR.")] = "*",
    step_regex: Annotated[str, typer.Option(
        "--step-regex", metavar="REGEX", show_default=False,
        help="Regular expression whose first group is the step.  Default: "
             f"{DEFAULT_STEP_RULE}.")] = DEFAULT_STEP_REGEX,
    marker: Annotated[Optional[str], typer.Option(
        "--marker", metavar="NAME", show_default=False,
        help="File whose presence inside a checkpoint directory marks it complete.")] = None,
    settle: Annotated[float, typer.Option(
        "--settle", metavar="SECONDS", min=0,
        help="Without --marker: complete once unchanged for this long.")] = 30.0,
    drain: Annotated[float, typer.Option(
        "--drain", metavar="SECONDS", min=0,
        help="On SIGTERM/SIGINT, wait this long for the upload under way, then abandon it.")]
        = 60.0,
    keep_local: Annotated[Optional[int], typer.Option(
        "--keep-local", metavar="N", min=1, show_default=False,
        help="Delete pushed local checkpoints beyond the newest N.  N counts per name shape "
             "(step_100 and step_200 are one; a numbered file of another name does not "
             "count).  What --exclude left out of a push stays.")] = None,
    poll: Annotated[float, typer.Option(
        "--poll", metavar="SECONDS", min=0.05, help="How often to look at DIR.")] = 2.0,
    exclude: Annotated[Optional[list[str]], typer.Option(
        "--exclude", metavar="GLOB", show_default=False,
        help="Skip files matching GLOB, relative to each checkpoint (repeatable).")] = None,
    follow_symlinks: Annotated[bool, typer.Option(
        "--follow-symlinks",
        help="Upload what symlinks inside a checkpoint point to instead of the links.")]
        = False,
    once: Annotated[bool, typer.Option(
        "--once", help="Push what is complete now, then exit (for cron and scripts).")]
        = False,
    chunk_size: Annotated[Optional[str], typer.Option(
        "--chunk-size", metavar="SIZE", show_default=False,
        help="Chunk size for upload and dedup, e.g. 16MiB (default: from the config).")] = None,
    concurrency: ConcurrencyOpt = None,
    max_bandwidth: MaxBandwidthOpt = None,
    lake: LakeOpt = None,
    endpoint_url: EndpointOpt = None,
    profile: ProfileOpt = None,
    region: RegionOpt = None,
    config: ConfigOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    """The loop runs in a thread; the main thread owns the signals and the drain deadline."""
    common = CommonOptions(lake=lake, endpoint_url=endpoint_url, profile=profile, region=region,
                           config=config, json=json_, quiet=quiet, debug=debug)
    out = Output(common)
    with out.guard():
        from ..errors import UsageError
        from ..watch import WatchEvent, Watcher, compile_step_regex
        from ..format.refs import validate_artifact

        validate_artifact(artifact)
        directory = check_source(directory, "DIR", "name the directory the trainer writes "
                                 "checkpoints into")
        if os.path.isfile(directory):  # (False for a name too long: the watch says so later)
            raise UsageError(f"DIR {directory} is a file, not a directory",
                             hint="name the directory the trainer writes checkpoints into")
        for name, value in (("--poll", poll), ("--settle", settle)):
            # a wait longer than this is an OverflowError in Event.wait (platform time_t)
            if not math.isfinite(value) or value > threading.TIMEOUT_MAX:
                raise UsageError(f"{name} must be a finite number of seconds up to "
                                 f"{threading.TIMEOUT_MAX:g}, not {value:g}")
        # inf: wait as long as the upload takes (Thread.join refuses more than TIMEOUT_MAX)
        drain = min(drain, threading.TIMEOUT_MAX)
        compile_step_regex(step_regex)
        # A long-running watch may start before the trainer makes DIR; a one-shot run over a
        # DIR that is not there would push nothing and exit 0, hiding a typo from cron.
        if once and not os.path.isdir(directory):  # (a file is refused by the argument)
            from ..errors import NotFound

            raise NotFound(f"{directory}: no such directory",
                           hint="check the path (without --once, watch waits for it)")
        size = None
        if chunk_size is not None:
            from ..policy.config import parse_size

            size = parse_size(chunk_size)
        handle = open_lake(common, chunk_size=size, concurrency=concurrency,
                           max_bandwidth=max_bandwidth)
        try:
            out.lake_line(handle)

            origin = {"lake": lake_url(handle), "lake_origin": lake_origin(handle)}
            warned: set[str] = set()  # a warning every checkpoint would repeat: said once

            def on_event(event: WatchEvent) -> None:
                if event.kind == "pushed" and event.result is not None:
                    kept = [w for w in event.result.warnings if not _unmatched_exclude(w)]
                    for warning in kept:
                        if warning not in warned:
                            warned.add(warning)
                            _warn(out, warning)
                    doc = {**event.result.to_dict(), **origin, "checkpoint": event.name,
                           "warnings": kept}
                    out.result(doc, push_summary(event.result) + f" <- {shown(event.name)}")
                elif event.kind in ("failed", "duplicate", "blocked"):
                    _warn(out, event.message)
                else:
                    out.note(event.message)

            watcher = Watcher(handle, directory, artifact, pattern=pattern,
                              step_regex=step_regex, marker=marker, settle=settle,
                              keep_local=keep_local, poll=poll, exclude=list(exclude or []),
                              on_event=on_event, follow_symlinks=follow_symlinks)
            code = _run(watcher, out, once=once, drain=drain)
            if once and not code:
                _say_what_waits(watcher, out, directory, pattern)
        finally:
            handle.close()
    raise typer.Exit(code)


def _run(watcher: Any, out: Output, *, once: bool, drain: float) -> int:
    stop = threading.Event()
    got: list[int] = []
    failure: list[BaseException] = []

    def on_signal(signum: int, frame: Any) -> None:
        got.append(signum)
        stop.set()

    def again() -> bool:
        # Ctrl-C while the drain waits: whoever pressed it will not wait (up to 60 s, or
        # forever with --drain inf) for an upload they asked twice to stop
        return any(s in _INTERRUPTING for s in got[1:])

    # SIGHUP (a closed terminal) as Ctrl-C: drain, then interrupted; unless it is ignored
    # (nohup), which it stays
    watched = [signal.SIGTERM, signal.SIGINT] + [
        s for s in _INTERRUPTING[1:] if signal.getsignal(s) != signal.SIG_IGN]
    previous = {s: signal.signal(s, on_signal) for s in watched}

    def loop() -> None:
        try:
            watcher.run(stop, once=once)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            failure.append(exc)

    worker = threading.Thread(target=loop, name="ckptlake-watch", daemon=True)
    worker.start()
    try:
        while worker.is_alive() and not stop.is_set():
            worker.join(0.2)
        if stop.is_set() and worker.is_alive():
            current = watcher.current
            if current is not None:
                limit = f"up to {drain:g} s " if drain < threading.TIMEOUT_MAX else ""
                out.note(f"stopping: waiting {limit}for the upload of "
                         f"{shown(current.name)} to finish (Ctrl-C again to abandon it)")
            # in slices: a join is not cut short by the signal handler's return
            deadline = time.monotonic() + drain
            while worker.is_alive() and not again():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                worker.join(min(left, 0.2))
            if worker.is_alive():
                current = watcher.current
                name = shown(current.name) if current is not None else "the current checkpoint"
                why = "on Ctrl-C" if again() else f"after {drain:g} s"
                _warn(out, f"abandoned the upload of {name} {why}; nothing of it "
                           "was committed (a restarted watch pushes it again)")
                code = _exit_code(got)
                if code:
                    code = report_error(KeyboardInterrupt(), as_json=out.json, debug=False)
                for stream in (sys.stdout, sys.stderr):
                    try:
                        stream.flush()
                    except (OSError, ValueError):
                        pass
                os._exit(code)  # worker threads cannot be interrupted mid-request
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if failure:
        raise failure[0]
    if _exit_code(got):
        # Ctrl-C is an interruption, said as every command says it (one line, and with --json
        # the Interrupted document; exit 130); SIGTERM is how a watch is asked to stop: exit 0.
        raise KeyboardInterrupt
    if got:
        out.note("stopped")
    return 0


def _warn(out: Output, message: str) -> None:
    """A warning, on stderr under --json too: a watch runs unattended, and a push that failed
    must show somewhere (stdout stays one JSON document per line)."""
    if out.json:
        write_stderr(f"{PROG}: warning: {redact(message)}")
    else:
        out.warn(message)


def _unmatched_exclude(warning: str) -> bool:
    """Whether `warning` is the scan's "--exclude 'GLOB' matched nothing" (core/scan.py; no
    other warning of a push starts with "--exclude ").  A watch passes its --exclude globs to
    every checkpoint, and a glob meant for one checkpoint's stray file matches nothing in the
    others: not worth a warning there, so a watch reports none of them (README says so)."""
    return warning.startswith("--exclude ") and warning.endswith(" matched nothing")


def _say_what_waits(watcher: Any, out: Output, directory: Path, pattern: str) -> None:
    """What a --once run left behind, and why: it runs from cron, where a --pattern that
    matches nothing and a checkpoint that never completes look just like a quiet trainer."""
    if not watcher.found:
        out.note(f"nothing to push: no entry of {directory} matches --pattern {pattern!r} "
                 "and --step-regex")
        return
    waiting = watcher.pending
    if not waiting:
        return
    names = ", ".join(shown(c.name) for c in waiting[:3]) + (", ..." if len(waiting) > 3 else "")
    why = (f"no {watcher.marker} in them yet" if watcher.marker is not None else
           f"changed less than {watcher.settle:g} s ago")
    out.note(f"not complete yet, left for a later run: {len(waiting)} "
             f"checkpoint{'s' if len(waiting) != 1 else ''} ({names}; {why})")


def _exit_code(signals: list[int]) -> int:
    from ..errors import EXIT_INTERRUPTED

    # a Ctrl-C after a SIGTERM (to cut its drain short) interrupts too
    return EXIT_INTERRUPTED if any(s in _INTERRUPTING for s in signals) else 0


# The signals a watch takes as Ctrl-C (drain, then interrupted, exit 130); SIGTERM is a stop.
_INTERRUPTING = (signal.SIGINT,) + ((signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ())
