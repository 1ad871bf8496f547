"""The console script's entry point (`ckptlake`, `python -m ckptlake`), kept apart from app.py.

Why a module of its own: building the Typer app imports Typer (~30 ms), and the shell scripts'
`ckptlake __complete ...` (cli/complete.py) runs on every TAB and needs none of it.  This module
imports nothing but the standard library until it knows which of the two it runs.
"""
from __future__ import annotations

import os
import sys
from typing import Any


def main() -> None:
    if sys.stdin is None or sys.stdout is None or sys.stderr is None:
        reopen_closed_streams()
    if sys.argv[1:2] == ["__complete"]:  # the shell scripts, at TAB time (cli/complete.py)
        import os

        from .complete import main as complete

        code = complete(sys.argv[2:])
        # Not sys.exit: a lookup still waiting on a slow lake must not hold the shell.
        os._exit(code)
    ending = terminate_as_interrupt()
    escape_unencodable_output()
    _PROCESS_ENDS_AFTER[0] = True
    interrupted = False
    code: Any = 0
    try:
        _main()
    except SystemExit as exc:
        interrupted = exc.code == 130
        code = exc.code
        raise
    finally:
        _PROCESS_ENDS_AFTER[0] = False
        if interrupted:
            # Ending on an interrupt, reported: the interpreter's shutdown still joins threads
            # and runs finalizers (an S3 command's connection pools), and a Ctrl-C repeated
            # meanwhile raised inside them (tracebacks, then death by SIGINT, -2), a SIGTERM
            # killed (-15), instead of exit 130.  (A program running main() in-process is
            # left with them ignored: main is the console script, which ends here.)
            hold_signals()
        elif _CONSOLE[0]:
            _end_on_signal(code)
        else:
            restore_signals(ending)  # (main() may run inside another program, in-process)


_CONSOLE = [False]


def console() -> None:
    """The `ckptlake` console script and `python -m ckptlake`: main(), in a process that ends
    with it."""
    _CONSOLE[0] = True
    utf8_mode()
    main()


def utf8_mode() -> None:
    """Run again in Python's UTF-8 mode when file names are decoded as ASCII (a C locale with
    PYTHONUTF8=0): `push` called valid UTF-8 names "not valid UTF-8" and `pull` of a
    non-ASCII name was an internal error.  The command line is passed on as the bytes it
    came as; the locale's other settings are kept."""
    import os

    # Only where names can only be ASCII (C/POSIX): there the command line's non-ASCII bytes
    # come as surrogate escapes, which UTF-8 mode turns back into the same bytes.  In Latin-1
    # text typed on the command line (`--meta note=résumé`) is Latin-1 bytes: run again, it
    # read as undecodable; and the locale's own names are its text there.
    if sys.flags.utf8_mode or os.environ.get("PYTHONUTF8") == "1" \
            or sys.getfilesystemencoding().lower().replace("-", "").replace("_", "") \
            not in ("ascii", "ansix3.41968", "usascii", "646") \
            or not getattr(sys, "orig_argv", None) or sys.argv[:1] in (["-"], ["-c"], [""]):
        return  # (a script read from stdin, or given with -c, cannot be run again)
    argv = [os.fsencode(a) for a in sys.orig_argv]
    try:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, argv, {**os.environb, b"PYTHONUTF8": b"1"})
    except OSError:  # not possible here: go on as we are
        return


def _end_on_signal(code: Any) -> None:
    """After the command's work, a SIGTERM, SIGHUP or Ctrl-C that comes during the
    interpreter's shutdown (threads joined, finalizers run) ends the process with the
    command's own exit code: it killed it (-15) after a push had committed and printed."""
    import os
    import signal

    status = code if isinstance(code, int) and not isinstance(code, bool) else \
        (0 if code is None else 1)

    def end(signum: int, frame: Any) -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        os._exit(status)

    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            try:
                signal.signal(getattr(signal, name), end)
            except (OSError, ValueError):  # not the main thread
                pass


def _main() -> None:
    _sane_columns()
    try:
        app, prog = _load()
    except KeyboardInterrupt:  # a Ctrl-C while the command's modules import: no traceback
        _interrupted_before_the_command()
    except RuntimeError as exc:  # one raised while a class is built, wrapped by Python
        if not isinstance(exc.__cause__, KeyboardInterrupt):
            raise
        _interrupted_before_the_command()
    try:
        app(prog_name=prog)
    except KeyboardInterrupt:
        # Typer builds the whole command group before the group's own guard runs: a SIGTERM
        # or Ctrl-C then came out as a traceback, and the process died by SIGINT (-2)
        _interrupted_before_the_command()
    finally:
        import gc

        gc.freeze()


def _interrupted_before_the_command() -> None:
    """Exit 130 with the one line, and with --json the one document, that an interrupt
    gets once the command runs (cli/output.py's, written here with the standard library:
    the output module may be what was being imported)."""
    hold_signals()
    forget_unhandled_interrupt()
    args = sys.argv[1:]
    if "--" in args:
        args = args[:args.index("--")]
    if "--json" in args:
        import json

        try:
            sys.stdout.write(json.dumps({"error": {"type": "Interrupted",
                                                   "message": "interrupted",
                                                   "exit_code": 130}}) + "\n")
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
    sys.stderr.write("ckptlake: interrupted\n")
    raise SystemExit(130) from None


def _sane_columns() -> None:
    """$COLUMNS or Typer's $TERMINAL_WIDTH below 40 (0 or 1 from a broken terminal setting)
    made rich print `--help` as one empty line: narrower than 40, a table is unreadable
    anyway.  One that is no number (`²` passes isdigit()) was an internal error: dropped."""
    for name in ("COLUMNS", "TERMINAL_WIDTH"):
        cols = os.environ.get(name)
        if cols is None:
            continue
        try:
            width = int(cols)
        except ValueError:  # (`²` passes isdigit(), not int())
            width = None
        if width is not None and width < 40:
            os.environ[name] = "40"
        elif width is None or width > 1000:  # (10**20 overflowed an index: internal error)
            del os.environ[name]


def escape_unencodable_output() -> None:
    """On a stdout that cannot take every character (`PYTHONIOENCODING=ascii`, a C locale with
    PYTHONUTF8=0), write what it cannot as escapes.  Strict, a file name with an accent, or
    lineage's tree glyphs with plain ASCII names, failed the command with exit 1 and no
    output at all.  (--json escapes non-ASCII itself; `cat` writes bytes.)  A C locale's
    stdout is not strict but "surrogateescape", which fails on an accent all the same: it is
    reconfigured too; one a user chose (PYTHONIOENCODING=ascii:replace) is left alone."""
    stream = sys.stdout
    encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
    if encoding in ("utf8", "utf8sig") or \
            getattr(stream, "errors", "strict") not in ("strict", "surrogateescape"):
        return
    try:
        stream.reconfigure(errors=_register_escape())  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):  # not a TextIOWrapper: leave it be
        pass


_ESCAPE = "ckptlake-escape"


def _register_escape() -> str:
    """An error handler that writes a lone surrogate as the byte it stands for (a path the
    locale could not decode, printed back as its bytes, as surrogateescape does: a script can
    reuse it) and anything else as a backslash escape.  backslashreplace alone printed such a
    path as `\udcfe`."""
    import codecs

    def escape(error: UnicodeError) -> tuple[bytes, int]:
        if not isinstance(error, UnicodeEncodeError):
            raise error
        out = bytearray()
        for ch in error.object[error.start:error.end]:
            code = ord(ch)
            if 0xDC80 <= code <= 0xDCFF:
                out.append(code - 0xDC00)
            else:
                out += ch.encode("ascii", "backslashreplace")
        return bytes(out), error.end

    try:
        codecs.lookup_error(_ESCAPE)
    except LookupError:
        codecs.register_error(_ESCAPE, escape)
    return _ESCAPE


# The signals that end a command the way Ctrl-C does: a CI job's cancel, `timeout`, a pod's
# stop and `kill` send SIGTERM, a closed terminal SIGHUP.  Left to their default they killed
# the process on the spot: no "interrupted" line, no --json error document, an exit status of
# -15 that no table documents.
_ENDING = ("SIGTERM", "SIGHUP")


def _interrupt(signum: int, frame: Any) -> None:
    """KeyboardInterrupt, or deferred to the end of a step that must not be cut
    (transfer/pool.signals_blocked), as a Ctrl-C is.  The pool is looked up, not imported:
    before it is loaded no such step can be under way.

    The first one holds the signals (hold_signals) before anything else: while it travels
    up, objects are freed and their finalizers run (urllib3's connection pools), and a
    second signal raised inside one ("Exception ignored in ... KeyboardInterrupt")."""
    hold_signals()
    # getattr: a signal may come while the pool module is being imported, half made
    interrupt = getattr(sys.modules.get("ckptlake.transfer.pool"), "interrupt", None)
    if interrupt is not None:
        interrupt(signum, frame)
        return
    raise KeyboardInterrupt


def terminate_as_interrupt() -> "list[tuple[int, Any]]":
    """Make SIGTERM and SIGHUP raise KeyboardInterrupt in the main thread, so that every path
    that handles Ctrl-C (stop the transfers, commit nothing partial, report `Interrupted`, exit
    130) handles them too.  Only where they are at their default: a handler someone installed
    (an application embedding the CLI, `watch`'s own drain on SIGTERM) or an ignored SIGHUP
    (`nohup`) is left alone.  Returns what to restore (restore_signals)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return []
    changed = []
    for name in _ENDING:
        number = getattr(signal, name, None)
        if number is None:
            continue
        try:
            if signal.getsignal(number) == signal.SIG_DFL:
                changed.append((number, signal.signal(number, _interrupt)))
        except (ValueError, OSError):  # pragma: no cover - not settable here
            pass
    # Ctrl-C too, where it is Python's own (or the pool's deferring form of it), so that the
    # first one holds the rest (_interrupt); a handler of the embedding program's stays.
    pool = sys.modules.get("ckptlake.transfer.pool")
    current = signal.getsignal(signal.SIGINT)
    if current is signal.default_int_handler or (
            pool is not None and current is getattr(pool, "_deferring_int", None)):
        changed.append((signal.SIGINT, signal.signal(signal.SIGINT, _interrupt)))
    return changed


def restore_signals(changed: "list[tuple[int, Any]]") -> None:
    import signal

    if _HELD and _PROCESS_ENDS_AFTER[0]:
        return  # the console script: it exits 130 next, with the signals still held
    while _HELD:  # (before `changed`: the handlers held over were installed after them)
        number, previous = _HELD.pop()
        signal.signal(number, previous)
    for number, previous in changed:
        signal.signal(number, previous)


# Handlers hold_signals replaced, restored by restore_signals in in-process runs (tests, an
# application calling the group); the console script (main) ends the process instead.
_HELD: "list[tuple[int, Any]]" = []
_PROCESS_ENDS_AFTER = [False]


def hold_signals() -> None:
    """From the first interrupt on: a repeated Ctrl-C, SIGTERM or SIGHUP changes nothing.

    The interrupt is being handled (the transfers stopped, nothing committed); a second one
    raised inside the report printed a second error document (--json) and a traceback, or,
    at the interpreter's shutdown, killed the process (-2, -15) instead of exit 130."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    for name in ("SIGINT", *_ENDING):
        number = getattr(signal, name, None)
        if number is None:
            continue
        try:
            # SIG_IGN, not a Python handler that does nothing: a signal the interpreter had
            # noted but not yet handled would otherwise still run the handler restored later
            previous = signal.signal(number, signal.SIG_IGN)
        except (ValueError, OSError):  # pragma: no cover - not settable here
            continue
        if previous is not signal.SIG_IGN:
            _HELD.append((number, previous))


def _load() -> "tuple[Any, str]":
    """The Typer app and its name, with the collector set up for the command (below)."""
    import gc

    # No collector passes during start-up either: the imports and the S3 client's parsed models
    # (~100k objects, all alive to the end) made gen-2 passes that found nothing (~0.015 s of a
    # 1 KiB S3 pull, docs/benchmarks.md).  open_lake turns it back on, with all that frozen,
    # before a command's own work (watch runs for days; its garbage must be collected).
    gc.disable()
    from . import output
    from .app import app
    from .output import PROG

    output.COLLECTOR_PAUSED = True

    # Frozen objects are skipped by the garbage collector's passes.  What the imports made lives
    # as long as the process, so no pass needs to look at it (~0.02 s of a 1 KiB S3 pull); and
    # at exit the interpreter runs full collections over everything still alive (an S3 command
    # holds botocore's parsed models, ~100k objects: 0.05-0.1 s), so the command's leftovers
    # are frozen too.  atexit handlers, finalizers and the freeing of modules run as usual.
    from ..core import chunkio

    chunkio.TUNE_MALLOC = True  # the CLI owns its process (see chunkio.fix_mmap_threshold)
    gc.freeze()
    return app, PROG


def forget_unhandled_interrupt() -> None:
    """A Ctrl-C the CLI handles must end in exit 130, as documented.  CPython 3.11 marks a
    KeyboardInterrupt that leaves any `exec()` of a string as unhandled for good, caught
    later or not, and `python -m ckptlake` then ends by killing itself with SIGINT instead of
    exiting 130 (a shell shows 130 either way; a parent process sees -2).  Commands import
    lazily, and imports exec strings (dataclasses), so a Ctrl-C during an import did that: 5
    of 60 interrupted pushes.  (The `ckptlake` script exits at once on SystemExit and never
    looks.)  The mark is a private C global (`_Py_UnhandledKeyboardInterrupt`); where it
    cannot be found (another Python), nothing is done."""
    try:
        import ctypes

        ctypes.c_int.in_dll(ctypes.pythonapi, "_Py_UnhandledKeyboardInterrupt").value = 0
    except (ImportError, AttributeError, ValueError, OSError):  # pragma: no cover
        pass


def reopen_closed_streams() -> None:
    """Give a standard descriptor the caller closed (`2>&-`, `>&-`, `<&-`) /dev/null.

    Why: Python makes such a stream None, and every write to it an AttributeError (an internal
    error, and no result, for `ckptlake ls 2>&-`); and the descriptor is the next one any open
    gets, so a lake file could end up where a stray write to fd 1 or 2 goes.  stdin reads
    nothing (nobody to ask); stderr is best effort, so its notes go nowhere and the command
    runs as usual; stdout is opened for reading only, so that writing the result fails as a
    closed descriptor does (EBADF) and the command says it could not (cli/output.py,
    `write_stdout`: exit 1), instead of claiming a result nobody got."""
    import os

    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        if getattr(sys, name) is not None:
            continue
        try:
            os.fstat(fd)
        except OSError:
            devnull = os.open(os.devnull, os.O_WRONLY if fd == 2 else os.O_RDONLY)
            if devnull != fd:
                os.dup2(devnull, fd)
                os.close(devnull)
        if fd == 0:
            setattr(sys, name, open(fd, "r", closefd=False))
        else:
            setattr(sys, name, open(fd, "w", buffering=1, closefd=False,
                                    errors="backslashreplace" if fd == 2 else "strict"))
