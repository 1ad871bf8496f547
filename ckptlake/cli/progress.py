"""Progress renderers: the CLI's side of ckptlake.transfer.progress.Progress.

Why two: on a terminal a live bar is the most useful thing to show; in a log (CI, nohup, a pipe)
a bar is noise and the summary line is the log line, so only retries and notes are written, one
line each.  The engine calls these hooks from worker threads, so both are thread-safe, and
`advance` may be negative (a retried request gives its bytes back): the bar rewinds instead of
overshooting, and the speed/ETA columns show '?' rather than nonsense meanwhile.

The bar (RichProgress) lives in cli/richbar.py, the only module that imports rich's live
display: rich costs ~0.02 s to import, and every command that is not on a terminal (scripts, CI,
the benchmarks) only needs LineProgress.  `from .progress import RichProgress` still works.
"""
from __future__ import annotations

import sys
import threading
from typing import Any

from ..redact import redact
from .text import PROG, one_line


class LineProgress:
    """No bar (stderr is not a terminal): retries and notes only, one line each on stderr."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def start(self, *, phase: str, total_bytes: int, total_files: int) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass

    def file_done(self, path: str) -> None:
        pass

    def retry(self, *, key: str, attempt: int, error: str, delay: float) -> None:
        self._emit(_retry_line(key=key, attempt=attempt, error=error, delay=delay))

    def note(self, message: str) -> None:
        self._emit(redact(one_line(message)))

    def finish(self) -> None:
        pass

    def _emit(self, line: str) -> None:
        with self._lock:  # whole lines, even with many workers retrying at once
            try:
                sys.stderr.write(line + "\n")
                sys.stderr.flush()
            except (OSError, ValueError, AttributeError):
                pass  # stderr is best effort (cli/output.py write_stderr): never the failure


def _retry_line(*, key: str, attempt: int, error: str, delay: float) -> str:
    short_key = key if len(key) <= 60 else "..." + key[-57:]
    return (f"{PROG}: retry {attempt} for {short_key} in {delay:.1f} s: "
            f"{redact(one_line(error))}")


def __getattr__(name: str) -> Any:  # RichProgress, imported with rich only when asked for
    if name == "RichProgress":
        from .richbar import RichProgress

        return RichProgress
    raise AttributeError(name)
