"""`watch`: push each new complete checkpoint a trainer writes into a directory, in step order.

For trainers that only write files (shell scripts, frameworks with their own checkpoint loop):
the SageMaker-style checkpoint sync, run beside the trainer.

* A *checkpoint* is an entry of DIR (a sub-directory or a file, not a symlink: said once and
  left alone) whose name matches `pattern` (a glob) and `step_regex` (its first group, or the
  group named `step`, is the step; ASCII digits only).  An entry the glob takes but the regex
  does not is said once as ignored.  The default regex takes only names that say they are
  checkpoints: the number after a `step` token if the name has one (Lightning
  `epoch=0-step=100.ckpt`, `global_step100`), else after a `checkpoint`, `ckpt`, `iter`,
  `iteration` or `epoch` token (`checkpoint-500`, `ckpt_100.pt`, Megatron `iter_0001000`), or a
  name that is a number (Orbax `100`); never a name with a `tmp` or `temp` token (a copy being
  written: `tmp-checkpoint-500`), nor one ending in `.lock`, `.part`, `.partial`, `.incomplete`,
  `.download`, `.crdownload`, `.bak`, `.swp` or `~` (a lock, a copy under way, a backup).  The
  first number of any name, as it once was, made a TensorBoard
  `events.out.tfevents.1701234567.host` step 1701234567, the lake's newest step (until someone
  found it and ran `rm` on it), and every real checkpoint after it "older".
* It is *complete* when it holds the `marker` file (a directory checkpoint; Orbax writes
  `commit_success.txt`, others `COMMIT_SUCCESS`), or, without a marker, when nothing in it has
  been modified for `settle` seconds.  With a marker configured, a checkpoint without it is
  never pushed, however old (it is a crashed, partial write).
* Complete checkpoints are pushed oldest step first, one at a time.  A step already in the lake
  is never pushed again: the watcher reads the artifact's steps at start and again right before
  each push, so neither a restarted watcher nor two overlapping ones (cron) duplicate a step,
  bar a push that lands between that read and its own commit.  Nor is a step whose version
  was *deleted* (`rm`, or gc: its tombstone keeps the step): a secret `rm` took out must not
  come back with the next pass, so it is a note (once per step) saying to push it by hand to
  restore it.  The tombstones are listed with the steps but read only when a complete
  checkpoint's step is no live version's (or keep_local must tell how a step went), all
  unread ones at once, in parallel, and each once per watcher: a lake with gc retention holds
  thousands, and a cron `--once` run with nothing new to push should not read them all.
  An unusable tombstone (damaged, another version's, a newer ckptlake's format) hides which
  step it deleted, and counted as no deletion it let the deleted step back: the watch stops
  then (IntegrityError, naming the key) until it is put right, pushing nothing.
  A complete checkpoint whose step is *lower* than a step in the lake (a live version's: a
  deleted step blocks nothing, or one `rm` of a stray latest step would leave every later
  checkpoint out) is *blocked*: pushing it would make an older step `latest`.  It is a
  warning (once per entry) naming the step in the way and how to get rid of it, and a `once`
  run raises it (Conflict) after its pass: a stray step far ahead, or a trainer restarted
  from an earlier step, leaves every later checkpoint out of the lake, which nobody would
  notice from a note.  A second entry with the step of one
  already pushed (a `--step-regex` that reads the same number from two names) is never pushed
  and said so: it is not what the lake holds.
* `keep_local=N` deletes local checkpoints older than the newest N once they are in the lake
  (never one that is not): one this watcher pushed and that has not changed since, or, for
  steps pushed before it started, the only local entry of that step that is, by name, inode,
  modification time and size, the one an earlier watch recorded in the version (metadata
  `ckptlake.watch.entry`).  A step two local entries share is never pruned.  A step whose
  version was deleted since: by a retention rule (gc, the checkpointer's retain, Lightning's:
  any tombstone rule but `ckptlake rm`) it is pruned as if still in the lake (the same checks,
  against the identity its tombstone kept): retention deleting a step is no reason to keep
  its local copy, and a watch that kept every such step filled the disk.  By `ckptlake rm`
  (a leaked secret, a bad checkpoint) it is kept: the local copy may be the only one left,
  and what becomes of it is the user's decision.  The newest N are counted by step among the
  entries of one *name shape* (the name with its numbers blanked: `step_100` and `step_200`
  are one, `events.out.tfevents.1701234567.host` another): a stray numbered file a broad
  `step_regex` pushed is never one of a trainer's newest N, so it cannot push the real
  checkpoints out of them.
* A push that fails for a transient reason (storage unreachable, files changed under it) is
  retried, backing off from `retry_delay` seconds (1 s for a changed file) up to 5 minutes,
  and no later step is pushed before it (step order) for its first BLOCKING_ATTEMPTS attempts;
  after that it no longer holds the later ones back (said so: once one is pushed, it is
  skipped as older).  A
  checkpoint the lake cannot store (a FIFO or a file name that is not UTF-8 in it, a part that
  cannot be read: the push's own scan of it fails again) is reported once and passed over,
  and the watcher goes on with the next.  An error of the lake itself (credentials, integrity,
  a missing bucket, a usage error) stops the watcher.  `run(once=True)` makes one pass and
  then raises the first checkpoint's failure, if any, restated with its name (same class, so
  the same exit code).

The library reports through `on_event(WatchEvent)`; it never prints.
"""
from __future__ import annotations

import fnmatch
import os
import re
import shlex
import stat
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from .core.fswalk import walk
from .errors import (AccessDenied, CkptlakeError, Conflict, IntegrityError, NotFound,
                     SourceChanged, TransferError, UsageError)
from .format.layout import MAX_NUMBER
from .results import PushResult
from .transfer.pool import bounded_map

if TYPE_CHECKING:
    from .core.tombstones import Tombstone
    from .lake import Lake
    from .transfer.progress import Progress

# Checkpoint names only (module docstring): no tmp/temp token; then the number after a step
# token, else after another checkpoint token, else a name that is a number.  Tokens start a
# word ("attempt" holds no "temp", "stepper" is no step), in any case.
DEFAULT_STEP_REGEX = (r"(?i)^(?!.*(?<![a-z])(?:tmp|temp)(?![a-z]))"
                      # nor a lock, a copy under way or a backup: `checkpoint-400.lock`, taken
                      # as step 400, made the real checkpoint-400/ a duplicate of its step
                      r"(?!.*(?:\.(?:lock|part|partial|incomplete|download|crdownload|bak|swp)"
                      r"|~)\Z)"
                      r"(?:.*?(?<![a-z])steps?[-_=.]?"
                      r"|.*?(?<![a-z])(?:checkpoint|ckpt|iter|iteration|epoch)s?[-_=.]?"
                      r"|(?=[0-9]+\Z))"
                      r"(?P<step>[0-9]+)")
# What --help says of it.
DEFAULT_STEP_RULE = ("the number after step, checkpoint, ckpt, iter or epoch in the name, or a "
                     "name that is a number; not a name with a tmp or temp token, nor one "
                     "ending in .lock, .part, .partial, .incomplete, .download, .crdownload, "
                     ".bak, .swp or ~")
# Version metadata a watch records: which local entry, as it was, the version was pushed
# from (_identity), so that a restarted watch's keep_local prunes only that very entry.
META_ENTRY = "ckptlake.watch.entry"
# A checkpoint whose push keeps failing holds later steps back this many attempts, backing off
# up to MAX_RETRY_DELAY seconds between them.
BLOCKING_ATTEMPTS = 5
MAX_RETRY_DELAY = 300.0
# Tombstones read at once (one GET each): a lake with gc retention holds thousands.
TOMBSTONE_WORKERS = 16


@dataclass(frozen=True)
class Candidate:
    name: str
    path: str
    step: int
    is_dir: bool


@dataclass(frozen=True)
class WatchEvent:
    """What happened to one checkpoint.

    kind: "pushed" (result set), "known" (already in the lake), "deleted" (its step's
    version was deleted from the lake, by `rm` or gc: never pushed again; said once per
    step, once the checkpoint is complete), "skipped" (a symlink, gone, changed since
    pushed...), "ignored" (its name is no checkpoint's: step -1), "blocked" (complete, but
    older than a step in the lake: error set, a Conflict saying which step is in the way and
    what to do), "duplicate" (its step is that of another entry, pushed already: never
    pushed), "failed" (error set; retried later, except in a `once` run), "pruned" (local
    copy deleted), "abandoned" (an upload cut short by a stop; nothing committed).
    """

    kind: str
    step: int
    name: str
    message: str
    result: PushResult | None = None
    error: BaseException | None = field(default=None, compare=False)


class _Tree(NamedTuple):
    """What `keep_local` compares to tell a checkpoint from a later one of the same name."""

    inode: int
    newest: float  # newest modification time of the entry and everything below it
    size: int  # bytes of its regular files, as a version's total_bytes counts them


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


def shown(name: str) -> str:
    """A file name as it can be printed (one that is not UTF-8 holds surrogate escapes)."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


class Watcher:
    """Scans `directory`; `run()` pushes until stopped, `poll_once()` does one pass."""

    def __init__(self, lake: "Lake", directory: str | os.PathLike[str], artifact: str, *,
                 pattern: str = "*", step_regex: str = DEFAULT_STEP_REGEX,
                 marker: str | None = None, settle: float = 30.0,
                 keep_local: int | None = None, poll: float = 2.0, retry_delay: float = 30.0,
                 exclude: tuple[str, ...] | list[str] = (), follow_symlinks: bool = False,
                 on_event: Callable[[WatchEvent], None] | None = None,
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
        self.exclude = tuple(exclude)
        self.follow_symlinks = follow_symlinks
        self.on_event = on_event or (lambda event: None)
        self.progress = progress
        self.clock = clock
        self.once = False  # set by run(): a failure is then final, not retried
        self.pushed: set[int] = set()  # steps in the lake
        self.current: Candidate | None = None  # being pushed right now
        self.found: list[Candidate] = []  # the last pass's checkpoints
        self.pending: list[Candidate] = []  # ... of which not complete yet
        self.failures: dict[str, tuple[Candidate, BaseException]] = {}  # name -> last failure
        self._lake_ids: dict[int, set[str]] = {}  # step -> META_ENTRY of its versions
        self._lake_from: dict[int, tuple[int, str | None]] = {}  # step -> (version, entry name)
        # the tombstone keys of the artifact's deleted versions, as last listed (learn)
        self._tomb_keys: list[str] = []
        # tombstone key -> what it holds; create-once, so read once
        self._tombs: dict[str, "Tombstone"] = {}
        self._tomb_tried: set[str] = set()  # read since the listing: absent or empty then
        # tombstone key -> why it is unusable (damaged, another version's, a newer format):
        # read again after each listing, as a repair should be noticed
        self._tomb_bad: dict[str, str] = {}
        self._said_deleted: set[int] = set()  # steps whose "deleted" note was given
        self._said: set[tuple[str, str]] = set()  # (kind, name) already reported
        # name -> (monotonic time of the next attempt, whether later steps wait for it)
        self._retry_at: dict[str, tuple[float, bool]] = {}
        self._attempts: dict[str, int] = {}  # name -> failed pushes in a row
        self._learned = False
        self._mine: dict[str, tuple[int, _Tree | None]] = {}  # name -> (step, tree) pushed here
        self._mine_steps: dict[int, str] = {}  # step -> name pushed here
        # names pruned but for what --exclude left out of their push: no checkpoint any more
        self._leftovers: set[str] = set()

    # ---- what is there ----------------------------------------------------------------------

    def learn(self) -> None:
        """Which steps the lake holds: at start (a restart does not push them again) and before
        each push (another watcher, or a push that failed after its commit, may have added
        one since).  And the keys of the tombstones of versions since deleted (`rm`, gc),
        listed after the manifests (a deleter writes the tombstone first, so a version deleted
        in between is seen in one of the two listings); they are read only when needed
        (_deleted): one GET each, and a new watcher (every cron `--once` run) knows none."""
        try:
            versions = self.lake.versions(self.artifact)
        except NotFound:
            versions = []
        ids: dict[int, set[str]] = {}
        origin: dict[int, tuple[int, str | None]] = {}
        for v in versions:
            if v.step is not None:
                ids.setdefault(v.step, set()).add(v.metadata.get(META_ENTRY, ""))
                origin[v.step] = (v.version, _entry_name(v.metadata.get(META_ENTRY)))
        tomb_keys = self._list_tombstones({v.version for v in versions})
        self._lake_ids = ids
        self._lake_from = origin
        self.pushed = set(ids)
        self._tomb_keys = tomb_keys
        self._tomb_tried = set()
        self._tomb_bad = {}
        self._learned = True

    def _list_tombstones(self, live: set[int]) -> list[str]:
        """The keys of the artifact's tombstones other than those of live versions (a gc that
        stopped between its two writes): one listing, no reads."""
        from .format.layout import parse_tombstone_key, tombstones_prefix

        store = getattr(self.lake, "store", None)
        if store is None:  # a stand-in for a Lake (tests wrap one): no tombstones to read
            return []
        keys = []
        for info in store.list(tombstones_prefix(self.artifact)):
            parsed = parse_tombstone_key(info.key)
            if parsed and parsed[0] == self.artifact and parsed[1] not in live:
                keys.append(info.key)
        return keys

    def _read_tombstones(self) -> None:
        """Read every listed tombstone not read yet, TOMBSTONE_WORKERS at a time, at the key
        listed (padded or not).  All of them: which one holds a step is known only once it is
        read.  Each usable one is kept for the watcher's life: a tombstone is written once
        and never rewritten, so reading it again (before each push,
        in a long run with gc retention) would cost a GET for the same answer.  Not kept: a
        key gone since the listing (rm put the version back; read again if listed again), an
        empty object (a cut upload the deleter's create replaces: docs/format.md), or an
        unusable one (_tomb_bad, which the next listing clears: put right, it is read again),
        each tried once per listing."""
        from .core.tombstones import TOMBSTONE_FORMAT, decode, newer_format
        from .format.layout import parse_tombstone_key

        todo = [k for k in self._tomb_keys if k not in self._tombs and k not in self._tomb_tried]
        if not todo:
            return
        store = self.lake.store

        def read(key: str) -> tuple[str, bytes]:
            try:
                return key, store.get(key)
            except NotFound:
                return key, b""

        for key, data in bounded_map(read, todo, workers=TOMBSTONE_WORKERS,
                                     name="ckptlake-watch"):
            self._tomb_tried.add(key)
            if not data:
                continue
            tomb, parsed = decode(data), parse_tombstone_key(key)
            if tomb is not None and parsed and (tomb.artifact, tomb.version) == parsed:
                self._tombs[key] = tomb
            elif tomb is None and (fmt := newer_format(data)) is not None:
                self._tomb_bad[key] = (f"a newer ckptlake wrote it (tombstone format {fmt}; "
                                       f"this one reads {TOMBSTONE_FORMAT}): upgrade ckptlake")
            else:
                self._tomb_bad[key] = (
                    "it is damaged" if tomb is None else
                    f"it claims to be {tomb.artifact}@v{tomb.version}") + (
                    ": ckptlake verify reports it; put a readable tombstone back there (from "
                    "the bucket's object versioning or a backup)")

    def _deleted(self, step: int, *, read: bool = True) -> "list[Tombstone]":
        """The tombstones of `step`'s deleted versions, newest first; none for a step a live
        version has.  Reads the tombstones not read yet (unless `read` is False: then what
        was read before)."""
        if step in self.pushed or not self._tomb_keys:
            return []
        if read:
            self._read_tombstones()
        bad = [key for key in self._tomb_keys if key in self._tomb_bad]
        if bad:
            # Which step it deleted is unknown, and it may be this one (a leaked secret rm
            # took out): pushing would undo the deletion.  Counted as no deletion, it was.
            raise IntegrityError(
                f"cannot tell whether step {step} of {self.artifact} was deleted: the "
                f"tombstone {bad[0]} is unusable"
                + (f" ({len(bad) - 1} more)" if len(bad) > 1 else ""),
                hint=self._tomb_bad[bad[0]])
        tombs = [t for key in self._tomb_keys
                 if (t := self._tombs.get(key)) is not None and t.step == step]
        return sorted(tombs, key=lambda t: t.version, reverse=True)

    def candidates(self) -> list[Candidate]:
        """Checkpoints in the directory, by step (complete or not)."""
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return []  # the trainer has not created it yet
        except NotADirectoryError:
            raise UsageError(f"{self.directory} is not a directory",
                             hint="watch the directory the trainer writes its checkpoints "
                                  "into") from None
        except PermissionError:
            raise AccessDenied(f"cannot list {self.directory}: permission denied",
                               hint="fix its permissions") from None
        out = []
        for entry in entries:
            if entry.name.startswith(".") or not fnmatch.fnmatchcase(entry.name, self.pattern):
                continue
            m = self.step_rx.search(entry.name)
            raw = (None if m is None else
                   m.group("step") if "step" in self.step_rx.groupindex else m.group(1))
            if raw is None:
                self._ignored(entry.name, entry.path)
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
                is_link = entry.is_symlink()
                if not is_dir and not is_link and not entry.is_file(follow_symlinks=False):
                    continue
            except OSError:
                continue
            c = Candidate(entry.name, entry.path, int(raw) if _is_number(raw) else -1, is_dir)
            if c.step < 0:
                self._say("skipped", c, f"not pushing {shown(c.name)}: the step regex read "
                                        f"{shown(raw)!r} from its name, which is no number")
            elif is_link:  # pruning it would delete what it points to, elsewhere
                self._say("skipped", c, f"not pushing {shown(c.name)}: it is a symlink (watch "
                                        "pushes the real files and directories of DIR)")
            else:
                out.append(c)
        return sorted(out, key=lambda c: (c.step, c.name))

    def _ignored(self, name: str, path: str) -> None:
        """Said once: the one way to tell a checkpoint named unlike the default expects from
        a TensorBoard or log file that must not be one."""
        c = Candidate(name, path, -1, False)
        if self.step_rx.pattern == DEFAULT_STEP_REGEX:
            why = ("not named as a checkpoint is by default (step_100, checkpoint-500, "
                   "epoch=3-step=1200.ckpt, iter_0001000, ckpt_100.pt, 100: see --step-regex in "
                   "watch --help; other names need --pattern and --step-regex)")
        else:
            why = f"--step-regex {shown(self.step_rx.pattern)!r} reads no step from its name"
        self._say("ignored", c, f"ignoring {shown(name)}: {why}")

    def is_complete(self, c: Candidate) -> bool:
        if self.marker is not None and c.is_dir:
            return os.path.isfile(os.path.join(c.path, self.marker))
        tree = _tree(c.path)
        return tree is not None and self.clock() - tree.newest >= self.settle

    # ---- one pass ---------------------------------------------------------------------------

    def poll_once(self, stop: threading.Event | None = None) -> int:
        """Push every complete checkpoint not in the lake yet, in step order, up to the first
        that fails for a reason that may pass; return how many were pushed."""
        if not self._learned:
            self.learn()
        pushed = 0
        self.found = self.candidates()
        self.pending = []
        for c in self.found:
            if stop is not None and stop.is_set():
                break
            if c.name in self._mine or c.name in self._leftovers:
                continue
            if c.step in self.pushed:
                self._already(c)
                continue
            if c.step > MAX_NUMBER:  # e.g. a timestamp the step regex matched
                self._say("skipped", c, f"not pushing {shown(c.name)}: step {c.step} is larger "
                                        f"than the largest step a lake holds, {MAX_NUMBER}")
                continue
            if not self.is_complete(c):
                self.pending.append(c)
                continue
            at, blocking = self._retry_at.get(c.name, (0.0, False))
            # Whether its step was deleted: only now, for a complete checkpoint that no live
            # version has (the tombstones are read the first time).  A failed read is its
            # failure, retried as a push is; and no read before its backoff is over.
            if (time.monotonic() < at and
                    any(k not in self._tombs and k not in self._tomb_tried
                        for k in self._tomb_keys)):
                if blocking:
                    break
                continue
            try:
                deleted = self._deleted(c.step)
            except FATAL:
                raise
            except (CkptlakeError, OSError) as exc:
                if self._failed(c, exc) == "retry":
                    break
                continue
            if deleted:
                self._was_deleted(c, deleted[0])
                continue
            if self._older(c):
                continue
            if time.monotonic() < at:
                if blocking:
                    break  # nothing overtakes a checkpoint that is to be retried
                continue
            outcome = self._push(c)
            if outcome == "pushed":
                pushed += 1
            elif outcome == "retry":
                break
        if pushed and self.keep_local:
            self._prune()
        return pushed

    def _already(self, c: Candidate) -> None:
        """Its step is in the lake: from this very entry before a restart, or from another."""
        other = self._mine_steps.get(c.step)
        if other is None:
            self._say("known", c, f"step {c.step} ({shown(c.name)}) is already in the lake")
        elif ("duplicate", c.name) not in self._said and self.is_complete(c):
            self._say("duplicate", c, f"not pushing {shown(c.name)}: step {c.step} was pushed "
                                      f"from {shown(other)} already; two checkpoints have that "
                                      "step (give each its own with --step-regex)")

    def _was_deleted(self, c: Candidate, tomb: "Tombstone") -> None:
        """Its step's version was deleted (`rm`: a leaked secret, a bad checkpoint; or gc):
        pushing it again would undo that.  A note, once per step, not a failure: the deletion
        was someone's decision, and a `once` run that kept failing on it would be noise."""
        self._forget(c)
        if c.step in self._said_deleted or self._nothing_to_push(c):
            return
        self._said_deleted.add(c.step)
        self.on_event(WatchEvent(
            "deleted", c.step, c.name,
            f"not pushing {shown(c.name)}: step {c.step} of {self.artifact} was in the lake as "
            f"v{tomb.version}, {tomb.deleted_text()}; a watch never pushes a deleted step again "
            f"(to restore it, push it by hand: ckptlake push {shlex.quote(shown(c.path))} "
            f"{self.artifact} --step {c.step})"))

    def _nothing_to_push(self, c: Candidate) -> bool:
        """Whether what --exclude leaves of `c` is no file at all: what an earlier watch's
        --keep-local left of a pushed checkpoint, not a checkpoint to restore by hand."""
        if not self.exclude or not c.is_dir:
            return False
        from .core.scan import scan

        try:
            tree = scan(c.path, exclude=self.exclude, follow_symlinks=self.follow_symlinks)
        except (CkptlakeError, OSError):
            return False
        return not tree.files and not tree.symlinks

    def _older(self, c: Candidate) -> bool:
        """Whether a higher step is in the lake, which blocks `c` (module docstring): a
        failure of `c` then, for a `once` run's exit code, and a warning naming the step in
        the way and how to get it out of the way.  Only live versions' steps count: a deleted
        latest step (a stray version `rm` took out) must not make every later checkpoint
        "older"."""
        highest = max(self.pushed, default=None)
        if highest is None or c.step >= highest:
            return False
        version, entry = self._lake_from.get(highest, (None, None))
        ref = f"{self.artifact}@v{version}" if version is not None else \
            f"{self.artifact}@step={highest}"
        source = f", pushed from {shown(entry)}" if entry else ""
        err = Conflict(
            f"step {c.step} is older than step {highest} ({ref}{source}), already in the lake: "
            "a watch never pushes an older step (it would become the latest)",
            hint=f"if step {highest} is no checkpoint, delete it: ckptlake rm {ref} (a watch "
                 "never pushes a deleted step again, so the blocked checkpoints then go up; or "
                 "push this one by hand first: ckptlake push "
                 f"{shlex.quote(shown(c.path))} {self.artifact} --step {c.step}), and watch "
                 f"with a --pattern or --step-regex that leaves {shown(entry) if entry else 'it'}"
                 " out; or watch into a new artifact")
        self._forget(c)
        self.failures[c.name] = (c, err)
        self._say("blocked", c, f"not pushing {shown(c.name)}: {err}", error=err)
        return True

    def _push(self, c: Candidate) -> str:
        """"pushed", "known" (another pusher was first), "skipped", "gone", "bad" (go on with
        the next) or "retry" (stop the pass)."""
        tree = _tree(c.path)
        try:
            self.learn()
            deleted = self._deleted(c.step)  # reads only tombstones listed since
        except FATAL:
            raise
        except (CkptlakeError, OSError) as exc:
            return self._failed(c, exc)
        if c.step in self.pushed:
            self._already(c)
            self._forget(c)
            return "known"
        if deleted:  # deleted since the pass began
            self._was_deleted(c, deleted[0])
            return "known"
        if self._older(c):  # another pusher went past it since the pass began
            return "skipped"
        self.current = c
        try:
            result = self.lake.push(
                c.path, self.artifact, step=c.step, exclude=self.exclude,
                follow_symlinks=self.follow_symlinks,
                metadata={META_ENTRY: _identity(c.name, tree)} if tree is not None else None,
                progress=self.progress)
        except (CkptlakeError, OSError) as exc:
            return self._failed(c, exc)
        finally:
            self.current = None
        self.pushed.add(c.step)
        self._lake_from[c.step] = (result.version, c.name)
        if tree is not None:
            self._lake_ids.setdefault(c.step, set()).add(_identity(c.name, tree))
        self._mine[c.name] = (c.step, tree)
        self._mine_steps[c.step] = c.name
        self._forget(c)
        self.on_event(WatchEvent("pushed", c.step, c.name, f"pushed {shown(c.name)}",
                                 result=result))
        return "pushed"

    def _failed(self, c: Candidate, exc: BaseException) -> str:
        """Whose failure it is decides what follows: a checkpoint that vanished is no failure,
        one the lake cannot store is passed over, the lake's own problems stop the watcher and
        the rest are retried, before any later step."""
        if not os.path.lexists(c.path):
            self._forget(c)
            self._say("skipped", c, f"{shown(c.name)} disappeared before it could be pushed")
            return "gone"
        if isinstance(exc, (UsageError, AccessDenied)):
            if not self._source_fault(c):
                raise exc
            self.failures[c.name] = (c, exc)
            self._retry_at[c.name] = (time.monotonic() + self.retry_delay, False)
            self._say("failed", c, f"not pushing {shown(c.name)}: {exc}", error=exc)
            return "bad"
        if isinstance(exc, (IntegrityError, NotFound)):  # the source is there: the lake's
            raise exc
        if isinstance(exc, TransferError):
            # A push can fail after its manifest was written (a lost reply to the commit): it
            # is in the lake then, and pushing it again would make a second version.
            try:
                self.learn()
            except (CkptlakeError, OSError):
                pass
            if c.step in self.pushed:
                self._forget(c)
                self._say("known", c, f"step {c.step} ({shown(c.name)}) is in the lake after "
                                      f"all: its push was committed before it failed ({exc})")
                return "known"
        # Backing off: each attempt re-reads and re-hashes the checkpoint.  Later steps wait
        # for it (step order), but not forever: a checkpoint that never stops changing, or a
        # failure that always recurs, would starve every later one (and keep_local with them).
        attempts = self._attempts[c.name] = self._attempts.get(c.name, 0) + 1
        base = 1.0 if isinstance(exc, SourceChanged) else self.retry_delay
        delay = min(base * 2 ** (attempts - 1), max(base, MAX_RETRY_DELAY))
        blocking = attempts < BLOCKING_ATTEMPTS
        self.failures[c.name] = (c, exc)
        self._retry_at[c.name] = (time.monotonic() + delay, blocking)
        retry = "" if self.once else f", retrying in {delay:.0f} s"
        waits = "" if self.once else (
            "; later checkpoints wait for it" if blocking else
            f"; failed {attempts} times: later checkpoints no longer wait for it, and once "
            "one of them is pushed it is skipped as older")
        self.on_event(WatchEvent("failed", c.step, c.name,
                                 f"push of {shown(c.name)} failed{retry}{waits}: {exc}",
                                 error=exc))
        return "retry" if blocking else "bad"

    def _source_fault(self, c: Candidate) -> bool:
        """Whether the push failed on the checkpoint itself: the push's scan of it, run again,
        fails too (a usage or access error of the lake would not)."""
        from .core.scan import scan

        try:
            scan(c.path, exclude=self.exclude, follow_symlinks=self.follow_symlinks)
        except (UsageError, AccessDenied, NotFound, SourceChanged, OSError):
            return True
        return False

    def _forget(self, c: Candidate) -> None:
        self.failures.pop(c.name, None)
        self._retry_at.pop(c.name, None)
        self._attempts.pop(c.name, None)

    def _prune(self) -> None:
        assert self.keep_local
        # What the lake holds is read again first: the last read was before the push, and a
        # version deleted during the upload (an rm of a leaked secret, minutes for a large
        # checkpoint) left this copy the only one.  Unreadable now: nothing goes this pass.
        try:
            self.learn()
        except FATAL:
            raise
        except (CkptlakeError, OSError):
            return
        # Only checkpoints known to be in the lake count and go: an incomplete, unpushed or
        # changed one is never deleted, and never pushes a pushed one out of the newest N.
        # The newest N of each name shape (module docstring), `found` being in step order.
        found = self.candidates()
        entries_of = Counter(c.step for c in found)
        shapes: dict[str, list[Candidate]] = {}
        read = True
        for c in found:
            if c.name in self._leftovers:
                continue
            try:
                in_lake = self._in_lake(c, entries_of[c.step], read=read)
            except FATAL:
                raise
            except (CkptlakeError, OSError) as exc:
                # How its step was deleted is unknown: kept, pruned at a later pass.
                read, in_lake = False, False
                self._say("skipped", c, f"keeping {shown(c.name)} for now: could not read "
                                        f"the lake's tombstones ({exc})")
            if in_lake:
                shapes.setdefault(_shape(c.name), []).append(c)
        older = sorted((c for local in shapes.values() for c in local[:-self.keep_local]),
                       key=lambda c: (c.step, c.name))
        for c in older:
            kept = 0
            try:
                if c.is_dir:
                    from .core.scan import remove_pushed

                    kept = remove_pushed(c.path, self.exclude)
                else:
                    os.unlink(c.path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                self._say("failed", c, f"could not prune {shown(c.name)}: {exc}", error=exc)
                continue
            self._mine.pop(c.name, None)
            where = ("is in the lake" if c.step in self.pushed else
                     "was in the lake until a retention rule deleted it")
            what = f"removed local {shown(c.name)}"
            if kept:
                self._leftovers.add(c.name)
                what = (f"removed what local {shown(c.name)} pushed, kept "
                        f"{kept} {'entry' if kept == 1 else 'entries'} --exclude left out")
            self.on_event(WatchEvent("pruned", c.step, c.name, f"{what} (step {c.step} {where})"))

    def _in_lake(self, c: Candidate, entries: int, *, read: bool = True) -> bool:
        """Whether this very entry is what the lake holds for its step: pushed from here and
        unchanged since, or (pushed by an earlier watch) the step's only entry, with the
        identity that watch recorded in the version (META_ENTRY).  Neither a step's number
        (a step regex can read one number from several names) nor a size (a resumed run
        rewrites a step with other weights of the same size) is enough.

        A step whose version was deleted since counts as held if a retention rule deleted it
        (gc, the checkpointer's retain, Lightning: any rule but RM_RULE and OTHER_RULE, which
        a deleter that spared the version puts back when another took it), with the identity
        its tombstone kept: a step retention dropped is no reason to keep the local copy, and
        keeping every one filled the disk.  Never if `ckptlake rm` deleted it (a leaked
        secret, a bad checkpoint): the local copy may be the only one left, the user decides.
        The tombstones are read (`read`) only for an entry that could be pruned: pushed from
        here, or the only complete entry of its step."""
        from .core.tombstones import OTHER_RULE, RM_RULE

        mine = self._mine.get(c.name)
        if c.step in self.pushed:
            ids = self._lake_ids.get(c.step)
        elif mine is None and (entries != 1 or c.step in self._mine_steps
                               or not self.is_complete(c)):
            return False  # no tombstone needed to tell
        else:
            deleted = self._deleted(c.step, read=read)
            if not deleted or any(t.rule in (RM_RULE, OTHER_RULE) for t in deleted):
                return False  # not in the lake, or deleted by hand: the only copy now
            ids = {t.metadata.get(META_ENTRY, "") for t in deleted}
        if mine is not None:
            step, tree = mine
            if step == c.step and tree is not None and _tree(c.path) == tree:
                return True
            self._say("skipped", c, f"keeping {shown(c.name)}: it changed after it was pushed")
            return False
        if entries != 1 or c.step in self._mine_steps or ids is None:
            return False
        tree = _tree(c.path)
        return tree is not None and _identity(c.name, tree) in ids

    def _say(self, kind: str, c: Candidate, message: str, error: Any = None) -> None:
        if (kind, c.name) in self._said:
            return
        self._said.add((kind, c.name))
        self.on_event(WatchEvent(kind, c.step, c.name, message, error=error))

    # ---- the loop ---------------------------------------------------------------------------

    def run(self, stop: threading.Event, *, once: bool = False) -> None:
        """Poll and push until `stop` is set (or one pass, with `once`: then the first
        checkpoint that could not be pushed is raised, so a cron job sees it)."""
        self.once = once
        self.learn()
        while not stop.is_set():
            self.poll_once(stop)
            if once:
                if self.failures:
                    raise self._failure()
                return
            stop.wait(self.poll)

    def _failure(self) -> CkptlakeError:
        """The first failure, restated with the checkpoint's name (and how many more failed)."""
        (c, exc), more = next(iter(self.failures.values())), len(self.failures) - 1
        also = f" (and {more} more)" if more else ""
        if isinstance(exc, CkptlakeError):
            err = CkptlakeError.__new__(type(exc))  # its class: its type name and exit code
            CkptlakeError.__init__(err, f"could not push {shown(c.name)}{also}: {exc.message}",
                                   hint=exc.hint)
            return err
        return CkptlakeError(f"could not push {shown(c.name)}{also}: {exc}")


def _identity(name: str, tree: _Tree) -> str:
    """The entry as pushed: its name, inode, newest modification time and bytes.  Any
    rewrite moves the time; a new directory of the same name gets another inode."""
    return f"{shown(name)} inode={tree.inode} mtime={tree.newest!r} bytes={tree.size}"


def _entry_name(identity: str | None) -> str | None:
    """The name in an _identity (None for a version no watch pushed)."""
    if not identity or " inode=" not in identity:
        return None
    return identity.rsplit(" inode=", 1)[0]


def _shape(name: str) -> str:
    """`name` with its numbers blanked: what a trainer's checkpoints have in common."""
    return re.sub(r"[0-9]+", "#", name)


def _is_number(raw: str) -> bool:
    return raw.isascii() and raw.isdigit()  # '²' and '٣' are digits to str.isdigit


def _tree(path: str) -> _Tree | None:
    """Newest modification time and regular-file bytes of `path` and everything below it
    (None if it vanished)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    newest, size = st.st_mtime, st.st_size if stat.S_ISREG(st.st_mode) else 0
    if not stat.S_ISDIR(st.st_mode):
        return _Tree(st.st_ino, newest, size)
    for dirpath, dirnames, filenames in walk(path):
        for name in dirnames + filenames:
            try:
                sub = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            newest = max(newest, sub.st_mtime)
            if stat.S_ISREG(sub.st_mode):
                size += sub.st_size
    return _Tree(st.st_ino, newest, size)
