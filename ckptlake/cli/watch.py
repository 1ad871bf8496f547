"""`ckptlake watch DIR ARTIFACT`: push each new complete checkpoint a trainer writes to DIR."""
from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .help import epilog
from .options import (CommonOptions, ConcurrencyOpt, ConfigOpt, DebugOpt, EndpointOpt, JsonOpt,
                      LakeOpt, MaxBandwidthOpt, ProfileOpt, QuietOpt, RegionOpt)
from .output import Output, open_lake, push_summary

HELP = ("Watch DIR and push each new complete checkpoint in it to ARTIFACT, in step order.\n\n"
        "Runs beside a trainer until stopped.  A restarted watch skips the steps the lake "
        "already holds.  On SIGTERM it finishes the upload under way (or abandons it after "
        "--drain seconds; nothing partial is committed) and exits 0.")
EPILOG = epilog(
    "Example: ckptlake watch /opt/ml/checkpoints gpt2/run-7/ckpt --pattern 'step_*' "
    r"--step-regex 'step_(\d+)' --marker COMMIT_SUCCESS --keep-local 2",
    "A checkpoint is an entry of DIR matching --pattern whose name yields a step through "
    "--step-regex (its first group, or the group named 'step').  It is complete once it holds "
    "the --marker file or, without --marker, once nothing in it changed for --settle seconds.  "
    "A complete checkpoint older than a step already in the lake is skipped (it would become "
    "'latest').  One line per pushed checkpoint on stdout (with --json: one JSON document per "
    "line); skips, retries and prunes on stderr.")


def watch(
    directory: Annotated[Path, typer.Argument(
        metavar="DIR", show_default=False, file_okay=False,
        help="Directory the trainer writes its checkpoints into.")],
    artifact: Annotated[str, typer.Argument(
        metavar="ARTIFACT", show_default=False,
        help="Artifact to push the checkpoints to, e.g. gpt2/run-7/ckpt.")],
    pattern: Annotated[str, typer.Option(
        "--pattern", metavar="GLOB", help="Names of checkpoint entries in DIR.")] = "*",
    step_regex: Annotated[str, typer.Option(
        "--step-regex", metavar="REGEX",
        help="Regular expression whose first group is the step.")] = r"(\d+)",
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
        help="Delete pushed local checkpoints beyond the newest N.")] = None,
    poll: Annotated[float, typer.Option(
        "--poll", metavar="SECONDS", min=0.05, help="How often to look at DIR.")] = 2.0,
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
        from ..watch import WatchEvent, Watcher, compile_step_regex
        from ..format.refs import validate_artifact

        validate_artifact(artifact)
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

            def on_event(event: WatchEvent) -> None:
                if event.kind == "pushed" and event.result is not None:
                    doc = {**event.result.to_dict(), "checkpoint": event.name}
                    out.result(doc, push_summary(event.result) + f" <- {event.name}")
                elif event.kind == "failed":
                    out.warn(event.message)
                else:
                    out.note(f"{event.message}")

            watcher = Watcher(handle, directory, artifact, pattern=pattern,
                              step_regex=step_regex, marker=marker, settle=settle,
                              keep_local=keep_local, poll=poll, on_event=on_event)
            code = _run(watcher, out, once=once, drain=drain)
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

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}

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
                out.note(f"stopping: waiting up to {drain:g} s for the upload of "
                         f"{current.name} to finish")
            worker.join(drain)
            if worker.is_alive():
                current = watcher.current
                name = current.name if current is not None else "the current checkpoint"
                out.warn(f"abandoned the upload of {name} after {drain:g} s; nothing of it was "
                         "committed (a restarted watch pushes it again)")
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(_exit_code(got))  # worker threads cannot be interrupted mid-request
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    if failure:
        raise failure[0]
    if got:
        out.note("stopped")
    return _exit_code(got)


def _exit_code(signals: list[int]) -> int:
    from ..errors import EXIT_INTERRUPTED

    return EXIT_INTERRUPTED if signals and signals[0] == signal.SIGINT else 0
