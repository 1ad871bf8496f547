"""`watch`: push each new complete checkpoint a trainer writes into a directory, in step order.

For trainers that only write files (shell scripts, frameworks with their own checkpoint loop):
the SageMaker-style checkpoint sync, run beside the trainer.

* A *checkpoint* is an entry of DIR (a sub-directory or a file) whose name matches `pattern`
  (a glob) and `step_regex` (its first group, or the group named `step`, is the step).
* It is *complete* when it holds the `marker` file (a directory checkpoint; Orbax writes
  `commit_success.txt`, others `COMMIT_SUCCESS`), or, without a marker, when nothing in it has
  been modified for `settle` seconds.  With a marker configured, a checkpoint without it is
  never pushed, however old (it is a crashed, partial write).
* Complete checkpoints are pushed oldest step first, one at a time.  A step already in the lake
  is never pushed again: at start the watcher learns the steps of the artifact's versions, so a
  restarted watcher does not duplicate.  A complete checkpoint whose step is *lower* than a step
  already in the lake is skipped (and said so): pushing it would make an older step `latest`.
* `keep_local=N` deletes local checkpoints older than the newest N once they are in the lake
  (never one that is not).
* A push that fails for a transient reason (storage unreachable, files changed under it) is
  retried after `retry_delay` seconds; a usage, access or integrity error stops the watcher.

The library reports through `on_event(WatchEvent)`; it never prints.
"""
from __future__ import annotations

import fnmatch
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from .errors import (AccessDenied, CkptlakeError, IntegrityError, NotFound, SourceChanged,
                      UsageError)
from .format.layout import MAX_NUMBER
from .results import PushResult

if TYPE_CHECKING:
    from .lake import Lake
    from .transfer.progress import Progress


@dataclass(frozen=True)
class Candidate:
    name: str
    path: str
    step: int
    is_dir: bool


@dataclass(frozen=True)
class WatchEvent:
    """What happened to one checkpoint.

    kind: "pushed" (result set), "known" (already in the lake), "skipped" (older than a pushed
    step), "failed" (error set; retried later), "pruned" (local copy deleted), "abandoned"
    (an upload cut short by a stop; nothing committed).
    """

    kind: str
    step: int
    name: str
    message: str
    result: PushResult | None = None
    error: BaseException | None = field(default=None, compare=False)


FATAL = (UsageError, AccessDenied, IntegrityError)


def compile_step_regex(step_regex: str) -> re.Pattern[str]:
    try:
        rx = re.compile(step_regex)
    except re.error as exc:
        raise UsageError(f"--step-regex {step_regex!r} is not a valid regular expression: "
                         f"{exc}") from None
    if rx.groups < 1:
        raise UsageError(f"--step-regex {step_regex!r} needs a group that captures the step, "
                         r"e.g. 'step_(\d+)'")
    return rx


class Watcher:
    """Scans `directory`; `run()` pushes until stopped, `poll_once()` does one pass."""

    def __init__(self, lake: "Lake", directory: str | os.PathLike[str], artifact: str, *,
                 pattern: str = "*", step_regex: str = r"(\d+)", marker: str | None = None,
                 settle: float = 30.0, keep_local: int | None = None, poll: float = 2.0,
                 retry_delay: float = 30.0, on_event: Callable[[WatchEvent], None] | None = None,
                 progress: "Progress | None" = None,
                 clock: Callable[[], float] = time.time) -> None:
        from .format.refs import validate_artifact

        validate_artifact(artifact)
        if settle < 0 or poll <= 0 or retry_delay < 0:
            raise UsageError("settle and retry delay must be >= 0 and poll > 0 seconds")
        if keep_local is not None and keep_local < 1:
            raise UsageError(f"--keep-local must be at least 1, got {keep_local}")
        if marker is not None and (not marker or marker.startswith("/") or ".." in
                                   marker.split("/")):
            raise UsageError(f"--marker {marker!r} must be a relative file name")
        self.lake = lake
        self.directory = os.path.abspath(os.fspath(directory))
        self.artifact = artifact
        self.pattern = pattern
        self.step_rx = compile_step_regex(step_regex)
        self.marker = marker
        self.settle = settle
        self.keep_local = keep_local
        self.poll = poll
        self.retry_delay = retry_delay
        self.on_event = on_event or (lambda event: None)
        self.progress = progress
        self.clock = clock
        self.pushed: set[int] = set()  # steps in the lake
        self.current: Candidate | None = None  # being pushed right now
        self._said: set[tuple[str, str]] = set()  # (kind, name) already reported
        self._retry_at: dict[str, float] = {}  # name -> monotonic time of the next attempt
        self._learned = False
        self._pushed_here: set[int] = set()

    # ---- what is there ----------------------------------------------------------------------

    def learn(self) -> None:
        """Which steps the lake already holds (so a restart does not push them again)."""
        try:
            versions = self.lake.versions(self.artifact)
        except NotFound:
            versions = []
        self.pushed = {v.step for v in versions if v.step is not None}
        self._learned = True

    def candidates(self) -> list[Candidate]:
        """Checkpoints in the directory, by step (complete or not)."""
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return []  # the trainer has not created it yet
        out = []
        for entry in entries:
            if entry.name.startswith(".") or not fnmatch.fnmatchcase(entry.name, self.pattern):
                continue
            m = self.step_rx.search(entry.name)
            if not m:
                continue
            raw = m.group("step") if "step" in self.step_rx.groupindex else m.group(1)
            if raw is None or not raw.isdigit():
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
                if not is_dir and not entry.is_file(follow_symlinks=False):
                    continue
            except OSError:
                continue
            out.append(Candidate(entry.name, entry.path, int(raw), is_dir))
        return sorted(out, key=lambda c: (c.step, c.name))

    def is_complete(self, c: Candidate) -> bool:
        if self.marker is not None and c.is_dir:
            return os.path.isfile(os.path.join(c.path, self.marker))
        newest = _newest_mtime(c.path)
        return newest is not None and self.clock() - newest >= self.settle

    # ---- one pass ---------------------------------------------------------------------------

    def poll_once(self, stop: threading.Event | None = None) -> int:
        """Push every complete checkpoint not in the lake yet; return how many were pushed."""
        if not self._learned:
            self.learn()
        pushed = 0
        for c in self.candidates():
            if stop is not None and stop.is_set():
                break
            if c.step in self.pushed:
                if c.step not in self._pushed_here:
                    self._say("known", c, f"step {c.step} ({c.name}) is already in the lake")
                continue
            if c.step > MAX_NUMBER:  # e.g. a timestamp the step regex matched
                self._say("skipped", c, f"not pushing {c.name}: step {c.step} is larger than "
                                        f"the largest step a lake holds, {MAX_NUMBER}")
                continue
            if not self.is_complete(c):
                continue
            highest = max(self.pushed, default=None)
            if highest is not None and c.step < highest:
                self._say("skipped", c, f"not pushing {c.name}: step {c.step} is older than "
                                        f"step {highest}, already in the lake")
                continue
            if time.monotonic() < self._retry_at.get(c.name, 0.0):
                continue
            if self._push(c):
                pushed += 1
        if pushed and self.keep_local:
            self._prune()
        return pushed

    def _push(self, c: Candidate) -> bool:
        self.current = c
        try:
            result = self.lake.push(c.path, self.artifact, step=c.step,
                                    progress=self.progress)
        except FATAL:
            raise
        except (CkptlakeError, OSError) as exc:
            gone = isinstance(exc, NotFound) or (isinstance(exc, OSError)
                                                 and not os.path.exists(c.path))
            if gone:
                self._say("failed", c, f"{c.name} disappeared before it could be pushed",
                          error=exc)
                return False
            delay = 1.0 if isinstance(exc, SourceChanged) else self.retry_delay
            self._retry_at[c.name] = time.monotonic() + delay
            self.on_event(WatchEvent("failed", c.step, c.name,
                                     f"push of {c.name} failed, retrying in {delay:.0f} s: "
                                     f"{exc}", error=exc))
            return False
        finally:
            self.current = None
        self.pushed.add(c.step)
        self._pushed_here.add(c.step)
        self._retry_at.pop(c.name, None)
        self.on_event(WatchEvent("pushed", c.step, c.name, f"pushed {c.name}", result=result))
        return True

    def _prune(self) -> None:
        assert self.keep_local
        # Only checkpoints the lake holds count and go: an incomplete or unpushed one is
        # never deleted, and never pushes a pushed one out of the newest N.
        local = [c for c in self.candidates() if c.step in self.pushed]
        older = local[:-self.keep_local] if len(local) > self.keep_local else []
        for c in older:
            try:
                if c.is_dir:
                    shutil.rmtree(c.path)
                else:
                    os.unlink(c.path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                self._say("failed", c, f"could not prune {c.name}: {exc}", error=exc)
                continue
            self.on_event(WatchEvent("pruned", c.step, c.name,
                                     f"removed local {c.name} (step {c.step} is in the lake)"))

    def _say(self, kind: str, c: Candidate, message: str, error: Any = None) -> None:
        if (kind, c.name) in self._said:
            return
        self._said.add((kind, c.name))
        self.on_event(WatchEvent(kind, c.step, c.name, message, error=error))

    # ---- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event, *, once: bool = False) -> None:
        """Poll and push until `stop` is set (or one pass, with `once`)."""
        self.learn()
        while not stop.is_set():
            self.poll_once(stop)
            if once:
                return
            stop.wait(self.poll)


def _newest_mtime(path: str) -> float | None:
    """Newest modification time of `path` and everything below it (None if it vanished)."""
    try:
        newest = os.lstat(path).st_mtime
    except FileNotFoundError:
        return None
    if not os.path.isdir(path) or os.path.islink(path):
        return newest
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            try:
                newest = max(newest, os.lstat(os.path.join(dirpath, name)).st_mtime)
            except FileNotFoundError:
                continue
    return newest
