"""The live progress bar on a terminal's stderr (rich), split from progress.py so that commands
whose stderr is not a terminal never import rich.  See progress.py for the protocol."""
from __future__ import annotations

import threading
from types import TracebackType

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, Progress, ProgressColumn, Task, TaskID,
                           TextColumn)
from rich.text import Text

from ..redact import redact
from ..units import format_rate
from .text import one_line
from .progress import _retry_line


class _SpeedColumn(ProgressColumn):
    """MiB/s (binary units, like every other number the CLI prints)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if not speed or speed <= 0:
            return Text("?", style="progress.data.speed")
        return Text(format_rate(speed), style="progress.data.speed")


class _EtaColumn(ProgressColumn):
    """Time left, or '?' while the rate is unknown or negative (just after a rewind)."""

    max_refresh = 0.5

    def render(self, task: Task) -> Text:
        if task.finished:
            return Text("0:00:00", style="progress.remaining")
        speed = task.speed
        if task.total is None or not speed or speed <= 0:
            return Text("-:--:--", style="progress.remaining")
        seconds = max(0, int((task.total - task.completed) / speed))
        h, rest = divmod(seconds, 3600)
        m, s = divmod(rest, 60)
        return Text(f"{h}:{m:02d}:{s:02d}", style="progress.remaining")


class RichProgress:
    """A live bar on stderr: bytes done/total, MiB/s, ETA; one bar per phase."""

    def __init__(self, console: Console | None = None) -> None:
        self._console = console or Console(stderr=True, highlight=False)
        self._bar = Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(binary_units=True),
            _SpeedColumn(), _EtaColumn(), console=self._console, transient=True,
        )
        self._lock = threading.Lock()
        self._task: TaskID | None = None
        self._phase = ""

    def __enter__(self) -> "RichProgress":
        from ..transfer.pool import signals_blocked

        # rich's refresh thread inherits the mask: blocking the signals, it does not take a
        # Ctrl-C meant for the main thread (transfer/pool.py, the module doc)
        try:
            with signals_blocked():
                self._bar.start()
        except BaseException:
            # a Ctrl-C deferred to the end of the block (or one in start()): no `with` body
            # runs, so no __exit__ either; stopped here, the bar gives stderr back, and the
            # "interrupted" line is seen
            self._bar.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.finish()
        self._bar.stop()

    # Progress protocol ------------------------------------------------------------------------
    def start(self, *, phase: str, total_bytes: int, total_files: int) -> None:
        with self._lock:
            if self._task is not None:
                self._bar.remove_task(self._task)
            self._phase = phase
            files = f" {total_files} file{'s' if total_files != 1 else ''}" if total_files else ""
            self._task = self._bar.add_task(f"{phase}{files}", total=max(total_bytes, 0))

    def advance(self, nbytes: int) -> None:
        with self._lock:
            if self._task is None:
                return
            self._bar.advance(self._task, nbytes)
            # Never show less than nothing, whatever order retries report in.
            current = self._completed()
            if current < 0:
                self._bar.update(self._task, completed=0)

    def file_done(self, path: str) -> None:
        pass  # the bar counts bytes; per-file lines would flood the terminal

    def retry(self, *, key: str, attempt: int, error: str, delay: float) -> None:
        self._console.print(_retry_line(key=key, attempt=attempt, error=error, delay=delay),
                            markup=False, highlight=False)

    def note(self, message: str) -> None:
        self._console.print(redact(one_line(message)), markup=False, highlight=False)

    def finish(self) -> None:
        with self._lock:
            if self._task is not None:
                self._bar.remove_task(self._task)
                self._task = None

    # helpers ----------------------------------------------------------------------------------
    def _completed(self) -> float:
        for task in self._bar.tasks:
            if task.id == self._task:
                return task.completed
        return 0.0
