"""Progress reporting: the engine reports, the CLI draws.

The library never prints.  Operations call these hooks from worker threads (implementations must
be thread-safe); `advance` may receive a negative count when a retried request gives back bytes it
had already reported, so bars rewind honestly instead of overshooting.
"""
from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, *, phase: str, total_bytes: int, total_files: int) -> None:
        """A phase begins ('push', 'pull', 'hash', ...), with what it will cover."""

    def advance(self, nbytes: int) -> None:
        """nbytes more were processed in the current phase (negative on a retry)."""

    def file_done(self, path: str) -> None:
        """One file of the phase is complete."""

    def retry(self, *, key: str, attempt: int, error: str, delay: float) -> None:
        """A request failed and will be retried after `delay` seconds."""

    def note(self, message: str) -> None:
        """Something a person might want to see (e.g. 'resuming 12 chunks already present')."""

    def finish(self) -> None:
        """The phase is over (successfully or not)."""


class NullProgress:
    """Reports nowhere; the default for library callers."""

    def start(self, *, phase: str, total_bytes: int, total_files: int) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass

    def file_done(self, path: str) -> None:
        pass

    def retry(self, *, key: str, attempt: int, error: str, delay: float) -> None:
        pass

    def note(self, message: str) -> None:
        pass

    def finish(self) -> None:
        pass
