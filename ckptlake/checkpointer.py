"""Asynchronous checkpoints from a training loop: the loop pays for a local snapshot only.

    ck = lake.checkpointer("gpt2/run-7/ckpt", keep_last=3)
    ck.save("ckpt/latest", step=step, metrics={"loss": loss})   # files the script wrote
    ck.save_state(model.state_dict(), step=step)                 # arrays/tensors -> safetensors
    ck.close()                                                   # waits; raises background errors

What the training loop waits for
--------------------------------
* `save(path)` takes a *snapshot* of the files (below) and scans it (one stat per file), then
  returns a Future; chunking, hashing, uploading and the commit run in one background thread.
* `save_state(state)` copies every array/tensor to host memory (a memcpy, or a device-to-host
  copy) and returns; writing the safetensors file and uploading happen in the background.
* Back-pressure (`on_busy`), when a save arrives while an upload is still running:
    - "wait" (default): block until the running upload is committed, then snapshot.
    - "skip": take no checkpoint; the skip is logged (WARNING) and counted in `skipped`.
    - "queue": snapshot now and upload after the running one; at most `max_pending` (default 2)
      checkpoints wait behind it.  When the queue is full, the save blocks like "wait" (a
      queued checkpoint is never dropped).  Local space: (max_pending + 1) snapshots.

Snapshots of files (`snapshot=`)
--------------------------------
* "copy": a private copy (reflink where the filesystem has it, else a kernel-side copy).  Always
  safe; costs a read and a write of the bytes (page-cache speed for a checkpoint just written).
* "link": hard links into a private directory beside the checkpoint (same filesystem).  Costs
  one link per file, but it is safe **only for writers that write a new file and rename it
  over the old one** (torch.save to a temporary name + os.replace, Orbax, most "atomic"
  writers): the link keeps the old inode.  A writer that rewrites a file in place (plain
  `open(path, "wb")`, `torch.save(path)`, `np.save(path)`) changes the bytes under the link.
  That is detected, never committed: push re-checks every file's (size, mtime, inode) after
  reading it, so the checkpoint fails loudly (SourceChanged) instead of storing torn bytes.
* "auto" (default): copy, until the checkpointer has seen that this path's writer replaces
  files: at each save of the same path it compares the files with what the previous save saw;
  files that have new inodes (and none rewritten under the same inode) prove a replacing
  writer, and from then on links are used.  Any sign of in-place rewriting (at a save, or a
  link snapshot failing its check) switches the path back to copying for good.  So "auto" is
  as safe as "copy" for a writer that keeps to one way of writing, and as cheap as "link" for
  atomic writers after the first save.  A writer that replaced its files at one save and then
  rewrites them in place while that save is still uploading costs that one checkpoint (it
  fails loudly with SourceChanged, never torn; the path copies from then on): use "copy" for
  a writer that mixes both.

Failures are never silent
-------------------------
A background failure is logged at once (logger "ckptlake", ERROR) and raised by the next
`save`, `save_state`, `wait` or `close`.  Nothing partial is ever committed: a version appears
only when its manifest is written, after every chunk.  When the interpreter exits with uploads
still pending, it waits for them (up to `exit_timeout` seconds; then, as on SIGTERM below,
the running upload is cut off) and logs loudly what was lost; a process killed by a signal
cannot wait (use `on_sigterm=`, below).  A Ctrl-C that interrupts `close()` (or `wait()`)
leaves the pending uploads to that exit wait: they are not dropped unsaid.  A manifest write
whose answer was lost is read back (core/push.py `commit_version`), so a checkpoint reported
failed is not in the lake, unless the error says it may be (OutcomeUnknown, naming the version).

Retention: after each commit, the policy file's retention rule for this artifact (or
`keep_last=N`, which replaces that rule's keep_last, or is the whole rule when none matches) is
applied by core/gc.py `retain`: gc's selection and gc's deleter, so aliased versions and the
latest are never deleted; a tombstone (lineage shows them as expired), then the manifest;
their chunks are left for `gc`, which alone can prove nothing else uses them.  It runs in the
background thread; a failure is logged and kept in `retention_errors`, never raised.

Preemption (`on_sigterm=`)
--------------------------
A SIGTERM handler (installed in the main thread, where Python runs handlers; `close` restores
the previous one): a save under way when the signal arrives is finished first; "save" then
calls `final_save()`; then pending uploads are waited for up to `exit_timeout` and the process
exits with 143 (SystemExit, so `finally` blocks and exit hooks run; they do not wait a
second time).  A SIGTERM inside `with ck.atomic():` (the optimizer step) is acted on at the
block's end, so that the final save is of a whole step.  A checkpoint still uploading at the deadline is cut off (_CommitGate): it is
lost whole and never commits later, though the upload thread cannot be killed; one LOST line
says which.  Only one already past its last check before the commit gets CUTOFF_GRACE more.
The deadline is the process's too: a cut-off upload starts no new request or retry
(store/retry.py stops at its pool's stop event), and a request still in flight after the grace
(a stalled PUT ends only at read_timeout, then 5 attempts: minutes) is not waited for, since
upload workers are daemon threads (transfer/pool.py); its snapshot is removed.  So the exit
comes at most exit_timeout + CUTOFF_GRACE (+ the final save's host copy) after the signal: the
final save's wait for the running upload counts against exit_timeout, and at the deadline the
final checkpoint is not taken (logged).  A SIGTERM during a save of the main thread starts
the deadline at the signal too: that save is finished first, but if its own host copy
outlasts exit_timeout, its upload starts past the deadline and is cut off at once (lost,
logged).

`close` restores the previous handler only if the checkpointer's is still the installed one.
Otherwise (another was installed over it: Lightning's signal connector wraps it, and puts it
back at the end of the fit) the checkpointer's handler may run after `close`: it then passes
the signal on, to the checkpointer that replaced it (`_take_over`, the Lightning plugin's
next one) if there is one, else to the handler it replaced (or the default action, death by
the signal), never terminating on behalf of a closed checkpointer.
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import weakref
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

from .core.scan import SourceTree, scan
from .core.exithooks import before_pools_close
from .core.fswalk import rmtree
from .core.values import (check_arg, check_inputs, check_metadata, check_metrics,
                          check_policy_arg)
from .errors import Interrupted, SourceChanged, UsageError
from .forks import reset_in_child
from .format import layout
from .format import state as _state_format
from .format.refs import validate_alias, validate_artifact
from .policy.retention import resolve_retention
from .results import PushResult
from .transfer.pool import start_thread

if TYPE_CHECKING:
    import numpy as np

    from .lake import Lake
    from .policy.retention import RetentionPolicy
    from .transfer.progress import Progress

log = logging.getLogger("ckptlake")

SNAPSHOT_MODES = ("auto", "link", "copy")
ON_BUSY = ("wait", "skip", "queue")
ON_SIGTERM = ("wait", "save")
SIGTERM_EXIT = 143  # 128 + SIGTERM, what a shell reports for a process the signal killed
DEFAULT_MAX_PENDING = 2
# At the exit deadline the running upload is cut off; this long more is given for its requests
# in flight to end (a PUT cannot be cut short) and its snapshot to be removed, or, for a job
# already past its last check, for its commit to finish.
CUTOFF_GRACE = 5.0
SNAPSHOT_DIRNAME = ".ckptlake-snapshots"
STATE_FILENAME = "model.safetensors"


# ---- jobs -------------------------------------------------------------------------------------

@dataclass
class _Job:
    kind: str  # "files" | "state"
    step: int | None
    metrics: dict[str, float]
    metadata: dict[str, str]
    aliases: tuple[str, ...]
    workdir: str  # private directory, removed when the job ends
    future: Future = field(default_factory=Future)
    tree: SourceTree | None = None  # files: the scanned snapshot
    source: str = ""  # files: the saved path (absolute)
    linked: bool = False  # files: snapshot made of hard links
    tensors: list[tuple[str, str, tuple[int, ...], Any]] | None = None  # state
    skeleton: bytes = b""  # state: the JSON skeleton (format/state.py)
    lineage: dict[str, Any] = field(default_factory=dict)  # manifest "parents"/"inputs"
    state_metadata: dict[str, str] = field(default_factory=dict)
    filename: str = STATE_FILENAME
    # The exit deadline (Checkpointer._drain_at_exit, _CommitGate), under the cond:
    cancelled: bool = False  # cut off: it must not commit any more
    committing: bool = False  # past its last check before the commit: it commits (or fails)
    # "committed" / "failed", set with _active cleared (its future is resolved just after)
    outcome: str | None = None
    stops: set[threading.Event] = field(default_factory=set)  # its upload pools' stop events

    def describe(self) -> str:
        return "step ?" if self.step is None else f"step {self.step}"


class _CommitGate:
    """Push's FileObserver hooks (core/push.py) give the exit deadline a hold on a running
    upload: `on_read`, in every upload worker, records its pool's stop event
    (transfer/pool.py `stop_event`), which, when set, ends a --max-bandwidth wait and a retry
    backoff at once and lets no further attempt of a request start (store/retry.py), and
    refuses to read on for a cut-off job; `entry_fields`, called once the bytes are stored
    and right before the commit, is the job's last check.  So "a checkpoint still uploading at
    the deadline leaves no version" holds even though the upload thread cannot be killed.
    (A tree without files has no such check; it has nothing to upload either.)"""

    def __init__(self, ck: "Checkpointer", job: _Job) -> None:
        # Not the checkpointer itself: a failed upload's tracebacks reach this gate (through
        # the upload workers' frames), and through it they held the checkpointer, so one let
        # go of after a failure stayed with its thread and host buffers.
        self._cond, self._artifact, self._job = ck._cond, ck.artifact, job

    def use_hash(self, algo: str) -> None:
        pass

    def on_read(self, path: str, offset: int, data: Any) -> None:
        from .transfer.pool import stop_event

        stop = stop_event()
        with self._cond:
            self._check()
            if stop is not None:
                self._job.stops.add(stop)

    def entry_fields(self, path: str, size: int) -> dict[str, Any]:
        with self._cond:
            self._check()
            self._job.committing = True
        return {}

    def _check(self) -> None:
        if self._job.cancelled:
            raise Interrupted(f"the upload of {self._artifact} {self._job.describe()} was "
                              "cut off at the exit deadline; nothing was committed")


class _AtomicState:
    """The atomic blocks open (Checkpointer.atomic): the main thread's, how deep, and the
    checkpointer whose SIGTERM waits for the outermost to end; other threads', which the
    handler (in the main thread) waits for before a final save reads their state.
    Module-level, not per checkpointer: a training loop's block must hold whichever
    checkpointer gets the signal (Lightning's plugin makes a new one per fit, and a SIGTERM
    reaching a retired one is passed on)."""

    def __init__(self) -> None:
        self.depth = 0
        self.pending: "Checkpointer | None" = None
        self.others: dict[int, int] = {}  # thread ident -> depth, for threads but the main
        self.cond = threading.Condition()

    def wait_for_others(self, deadline: float | None) -> bool:
        """Until no other thread is inside a block (or the deadline): False if one still is."""
        with self.cond:
            return self.cond.wait_for(lambda: not self.others,
                                      None if deadline is None
                                      else max(0.0, deadline - time.monotonic()))


_ATOMIC = _AtomicState()


def enter_atomic() -> None:
    """Open an atomic block (see Checkpointer.atomic); for hooks that cannot use `with`
    (torch/stepguard.py's LakeStepGuard: before the optimizer step, to the batch's end)."""
    if threading.current_thread() is threading.main_thread():
        _ATOMIC.depth += 1
        return
    with _ATOMIC.cond:
        ident = threading.get_ident()
        _ATOMIC.others[ident] = _ATOMIC.others.get(ident, 0) + 1


def leave_atomic(act: bool = True) -> None:
    """Close one; at the main thread's outermost, act on a SIGTERM that arrived inside (may
    raise SystemExit, as the signal would have).  act=False (the block raised): the state may
    be half-updated, so no final save of it now; the signal stays pending, for the next save
    or block to act on, while the exception goes on (exit hooks still wait for uploads)."""
    if threading.current_thread() is not threading.main_thread():
        with _ATOMIC.cond:
            ident = threading.get_ident()
            left = _ATOMIC.others.get(ident, 0) - 1
            if left > 0:
                _ATOMIC.others[ident] = left
            else:
                _ATOMIC.others.pop(ident, None)
            _ATOMIC.cond.notify_all()
        return
    if not _ATOMIC.depth:
        return
    _ATOMIC.depth -= 1
    ck = _ATOMIC.pending
    if not act or _ATOMIC.depth or ck is None or ck._saver is threading.main_thread():
        return  # (a save of this thread under way acts on it when it ends: _saving; one of
        # another thread, which _saving would not act for, the final save waits for)
    _ATOMIC.pending = None
    if ck._sigterm_pending:
        ck._sigterm_pending = False
        ck._terminate()


@contextlib.contextmanager
def atomic() -> Iterator[None]:
    """`with atomic():` — see Checkpointer.atomic."""
    enter_atomic()
    try:
        yield
    except BaseException:
        leave_atomic(act=False)
        raise
    leave_atomic()


class Checkpointer:
    """Background uploads of checkpoints into one artifact of a lake.  See the module doc.

    Use one Checkpointer per artifact and training process.  Methods may be called from any
    thread; saves are serialized.  Use it as a context manager, or call `close()`.
    """

    def __init__(self, lake: "Lake", artifact: str, *, keep_last: int | None = None,
                 on_busy: str = "wait", max_pending: int | None = None,
                 snapshot: str = "auto", snapshot_dir: str | os.PathLike[str] | None = None,
                 aliases: Sequence[str] = (), exit_timeout: float | None = None,
                 reuse_buffers: bool = True, progress: "Progress | None" = None,
                 parents: Sequence[Any] = (), inputs: Sequence[str | dict[str, str]] = (),
                 relation: str = "derived-from",
                 retention: "RetentionPolicy | str | os.PathLike[str] | bool | None" = None,
                 on_sigterm: str | None = None,
                 final_save: "Callable[[], Any] | None" = None) -> None:
        """
        keep_last: after each commit keep only the newest N versions (aliased ones always);
            with a retention rule for this artifact, it replaces that rule's keep_last.
        retention: the retention policy applied after each commit (the rule of its `retention:`
            rules that matches this artifact): None, the config file's (read now); a
            RetentionPolicy or the path of a YAML file; False: none (keep_last only).
        on_sigterm / final_save: for preemptible nodes (spot, SageMaker), see "Preemption" in
            the module doc.  "wait": on SIGTERM wait for pending uploads (up to
            `exit_timeout`), then exit with status 143; "save": first call `final_save()`
            (which saves, e.g. `ck.save_state(last_state, step=...)`), then the same.
        on_busy / max_pending: back-pressure, see the module doc.
        snapshot: "auto" | "link" | "copy" for `save()`, see the module doc.
        snapshot_dir: where snapshots go (default: `.ckptlake-snapshots/` beside the saved
            path, so links stay on its filesystem; the system temp dir for `save_state`).
        aliases: aliases to point at every committed checkpoint (e.g. "latest-good").
        exit_timeout: at interpreter exit, wait at most this long for pending uploads
            (None: until they finish or fail).
        reuse_buffers: `save_state` keeps the host copy of the last uploaded state and copies
            the next state into it (no fresh allocation, no page faults: a faster stall) at
            the cost of holding one host copy of the state between saves.
        progress: receives the background uploads' progress events.
        parents / inputs / relation: lineage of every checkpoint, as in `Lake.push` (a fine-
            tune's base model, its datasets).  Parents are resolved to fixed versions here, once
            (NotFound now if one does not exist); `save`/`save_state` may override both.
        """
        validate_artifact(artifact)
        checked = check_options(keep_last=keep_last, on_busy=on_busy, max_pending=max_pending,
                                snapshot=snapshot, snapshot_dir=snapshot_dir, aliases=aliases,
                                exit_timeout=exit_timeout, reuse_buffers=reuse_buffers,
                                progress=progress, retention=retention, on_sigterm=on_sigterm,
                                final_save=final_save)
        keep_last, max_pending, aliases = (checked["keep_last"], checked["max_pending"],
                                           checked["aliases"])
        if on_sigterm is not None and threading.current_thread() is not threading.main_thread():
            raise UsageError("on_sigterm needs the checkpointer to be made in the main thread "
                             "(Python runs signal handlers there only)")
        self.lake = lake
        self.on_sigterm = on_sigterm
        self.final_save = final_save
        self._sigterm_pending = False
        self._terminating = False
        self._last_step: int | None = None  # the step of the last save queued (_enqueue)
        self._previous_handler: Any = None
        self._restored = False  # the previous SIGTERM handler was put back (_restore_handler)
        self._retired = False  # shut down: a SIGTERM reaching it is passed on (_on_sigterm)
        self._successor: Checkpointer | None = None  # see _take_over
        # Makes the checkpointer that replaces this one once it is closed (the Lightning
        # plugin's next), for a SIGTERM that reaches this one before that exists (_pass_on)
        self._revive: Callable[[], Checkpointer] | None = None
        self._saver: threading.Thread | None = None  # the thread inside a save (_saving)
        self._in_save: set[int] = set()  # threads inside or entering a save (_nested_save)
        # SIGTERM: the exit deadline (monotonic; None: none) and how much of it the final
        # save spent waiting for the running upload (_terminate, _make_room)
        self._exit_deadline: float | None = None
        self._room_waited = 0.0
        self.retention = _load_policy(retention)
        self.artifact = artifact  # before _resolve_lineage, which checks the name
        self._lineage = self._resolve_lineage(parents, inputs, relation)
        self.keep_last = keep_last
        self.on_busy = on_busy
        self.max_pending = max_pending or DEFAULT_MAX_PENDING
        self.snapshot = snapshot
        # "link" chosen for the user (the HF callback, after a probe): a failed link copies
        self._link_falls_back = False
        self.snapshot_dir = os.fspath(snapshot_dir) if snapshot_dir is not None else None
        self.aliases = tuple(aliases)
        self.exit_timeout = exit_timeout
        self.reuse_buffers = reuse_buffers
        self.progress = progress
        #: Results of committed checkpoints, in commit order.
        self.results: list[PushResult] = []
        #: Failures of after-commit retention (logged at ERROR; never raised: the
        #: checkpoints they follow are committed).
        self.retention_errors: list[BaseException] = []
        #: Steps of checkpoints skipped because an upload was running (on_busy="skip").
        self.skipped: list[int | None] = []
        self._cond = threading.Condition()
        self._save_lock = threading.Lock()
        self._queue: deque[_Job] = deque()
        self._active: _Job | None = None
        self._errors: list[tuple[_Job, BaseException]] = []
        self._closed = False
        self._stopping = False
        self._drained = False
        self._logged_retention: set[str] = set()  # retention failures logged at ERROR once
        self._seen: dict[str, dict[str, tuple[int, int, int]]] = {}  # path -> file identities
        self._writer: dict[str, str] = {}  # path -> "replaces" | "in-place"
        self._pool: dict[str, Any] = {}  # tensor name -> free host buffer (reuse_buffers)
        self._swept: set[str] = set()
        self._provenance_cache: dict[str, Any] | None = None
        self._thread = threading.Thread(target=_serve, args=(weakref.ref(self), self._cond),
                                        name="ckptlake-checkpointer", daemon=True)
        self._finalizer = weakref.finalize(self, _wake, self._cond)
        self._owner = os.getpid()
        start_thread(self._thread)  # (it and its upload workers never take the SIGTERM)
        _LIVE.add(self)
        reset_in_child(self)
        before_pools_close(_at_exit)
        if on_sigterm is not None:
            self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)

    def __repr__(self) -> str:
        return f"Checkpointer({self.lake.url!r}, {self.artifact!r}, on_busy={self.on_busy!r})"

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # don't let a background error hide the exception that is propagating
            self.close()
        except Exception as bg:  # noqa: BLE001 - logged, the body's exception wins
            log.error("ckptlake: while closing after an error: %s", bg)

    # ---- public API -----------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Checkpoints snapshotted and not yet committed or failed (running + queued)."""
        with self._cond:
            return len(self._queue) + (self._active is not None)

    def save(self, path: str | os.PathLike[str], *, step: int | None = None,
             metrics: Mapping[str, float] | None = None,
             metadata: Mapping[str, str] | None = None, aliases: Sequence[str] = (),
             exclude: Sequence[str] = (), parents: Sequence[Any] | None = None,
             inputs: Sequence[str | dict[str, str]] | None = None,
             relation: str = "derived-from") -> "Future[PushResult] | None":
        """Snapshot the file or directory `path` and upload it in the background.

        Returns a Future of the PushResult, or None if the checkpoint was skipped
        (on_busy="skip").  Raises the first background failure since the last call.  Once it
        returns, the script may overwrite or delete its files.  `parents`/`inputs` (None: the
        checkpointer's) replace the checkpointer's for this checkpoint; parents given here are
        resolved now, in this call.
        """
        metrics_, metadata_, aliases_ = self._check_args(step, metrics, metadata, aliases)
        exclude = check_arg("exclude", exclude, "names")
        lineage = self._save_lineage(parents, inputs, relation)
        src = os.path.abspath(os.fspath(check_arg("path", path, "path")))
        if self._nested_save(step):
            return None
        with self._saving():
            self._check_open()
            self._raise_error()
            if not self._make_room(step):
                return None
            self._raise_error()  # the upload we waited for may have failed
            job = self._snapshot_files(src, step, metrics_, metadata_, aliases_, exclude)
            job.lineage = lineage
            return self._enqueue(job)

    def save_state(self, state: Mapping[str, Any], *, step: int | None = None,
                   metrics: Mapping[str, float] | None = None,
                   metadata: Mapping[str, str] | None = None, aliases: Sequence[str] = (),
                   filename: str = STATE_FILENAME, parents: Sequence[Any] | None = None,
                   inputs: Sequence[str | dict[str, str]] | None = None,
                   relation: str = "derived-from") -> "Future[PushResult] | None":
        """Copy `state` to host memory now; write it as one safetensors file and upload it
        (a directory holding `filename`) in the background.

        `state` is a training state: nested dicts (any keys: strings, ints, ...), lists and
        tuples holding torch tensors, numpy arrays, numbers, strings, booleans and None, e.g.
        {"model": model.state_dict(), "optim": opt.state_dict(), "step": step,
        "rng": torch.get_rng_state()}.  Tensors go into `filename` (safetensors, so the name
        ends in .safetensors; tensors named by their path: "optim/state/0/exp_avg"), the
        rest into ckptlake-state.json (docs/format.md, "Training state");
        `lake.load_state(ref)` returns an equal structure.  Anything else (an arbitrary
        object) is a UsageError naming its path: nothing is pickled.  Returns like `save`;
        `parents`/`inputs` as in `save`.
        """
        metrics_, metadata_, aliases_ = self._check_args(step, metrics, metadata, aliases)
        lineage = self._save_lineage(parents, inputs, relation)
        if not isinstance(state, Mapping):
            raise UsageError(f"save_state needs a mapping (e.g. {{'model': ..., 'optim': ...}}), "
                             f"not {type(state).__name__}")
        check_state_filename(filename)
        if self._nested_save(step):
            return None
        with self._saving():
            self._check_open()
            self._raise_error()
            if not self._make_room(step):
                return None
            self._raise_error()
            with self._cond:
                pool, self._pool = self._pool, {}
            try:
                skeleton, tensors, fmt = state_copy(state, pool if self.reuse_buffers else {})
            except BaseException:  # a refused entry: the next save still copies into warm pages
                with self._cond:
                    self._pool = self._pool or pool
                raise
            base = self.snapshot_dir or os.path.join(tempfile.gettempdir(),
                                                     "ckptlake-snapshots")
            skeleton["file"] = filename
            encoded = _state_format.dumps(skeleton)  # before the workdir: nothing to leak
            job = _Job(kind="state", step=step, metrics=metrics_, metadata=metadata_,
                       aliases=aliases_, workdir=self._new_workdir(base), tensors=tensors,
                       filename=filename, state_metadata={"format": fmt},
                       skeleton=encoded, lineage=lineage)
            return self._enqueue(job)

    def prepare_state(self, state: Mapping[str, Any]) -> threading.Thread:
        """Allocate (and touch) host buffers shaped like `state` in a background thread, so
        that the first `save_state` copies into warm memory instead of paying for fresh pages
        (page faults cost far more than the copy itself: see bench/async_bench.py).  Call it
        once at start-up with the model's state; only shapes and dtypes are read.  Returns the
        thread (join it to wait).  Without `reuse_buffers` it does nothing."""
        specs = [(name, shape, dtype) for name, shape, dtype in _host_specs(state)]

        def allocate() -> None:
            import numpy as np

            for name, shape, dtype in specs:
                buf = np.empty(shape, dtype=dtype)
                buf.reshape(-1).view(np.uint8)[::4096] = 0  # fault every page in now
                with self._cond:
                    self._pool.setdefault(name, buf)

        thread = threading.Thread(target=allocate if self.reuse_buffers else (lambda: None),
                                  name="ckptlake-prepare", daemon=True)
        start_thread(thread)
        return thread

    @staticmethod
    def atomic() -> "contextlib.AbstractContextManager[None]":
        """A block a SIGTERM does not interrupt (on_sigterm=): one arriving inside it is acted
        on when it ends.  Wrap the optimizer step and the step count in it::

            with ck.atomic():
                opt.step()
                step += 1

        Why: Python runs a signal handler between any two bytecodes, so a SIGTERM landing in
        `opt.step()` took the final save of a half-updated state (some parameters and their
        moments a step ahead of the others) under the old step number, and committed it as
        the latest, to be resumed from.  Nested blocks count as one, and one block serves
        every checkpointer of the process (module-level `atomic`).  In a thread other than
        the main one (where the handler runs), the handler waits for the block to end before
        the final save, up to the exit deadline.  A block that raises takes no final save
        at its end (its state may be half-updated); the signal is then acted on at the next
        save."""
        return atomic()

    def wait(self, timeout: float | None = None) -> list[PushResult]:
        """Block until every pending checkpoint is committed or failed; raise the first
        background failure; return the results of all committed checkpoints so far.

        TimeoutError if `timeout` seconds pass first (nothing is cancelled)."""
        check_arg("timeout", timeout, "seconds", optional=True)
        self._check_owner()
        deadline = None if timeout in (None, float("inf")) else time.monotonic() + timeout
        with self._cond:
            while self._queue or self._active is not None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"{self.pending} checkpoint upload(s) still pending "
                                       f"after {timeout} s")
                self._cond.wait(left)
        self._raise_error()
        return list(self.results)

    def close(self) -> list[PushResult]:
        """Wait for pending uploads, stop the background thread, raise the first background
        failure not raised yet.  Idempotent.

        Interrupted while waiting (Ctrl-C: KeyboardInterrupt) with uploads still pending, it
        takes no new saves but stays registered with the exit hook, which then waits for them
        (up to exit_timeout), cuts off the rest and logs them as LOST: shutting down here
        would let the interpreter kill the background thread mid-upload, losing the checkpoint
        with no word and leaving its snapshot behind.  A later close() finishes the job.

        After the exit drain (SIGTERM, or the exit hook) it waits for nothing: what was still
        uploading then was cut off and logged as LOST, and waiting for a request stalled in it
        (until read_timeout) broke the exit deadline (`with` and Lightning's teardown close
        on the way out).  In a forked child it does nothing: the parent's copy is the
        parent's to close (see _after_fork)."""
        if self._owner != os.getpid():
            return []
        if self._drained:
            self._shut_down()
            self._raise_error()
            return list(self.results)
        try:
            results = self.wait()
        except Exception:  # a background failure, raised: nothing is left to wait for
            self._shut_down()
            raise
        except BaseException:
            with self._cond:
                self._closed = True
                unfinished = bool(self._queue or self._active is not None or self._errors)
            if not unfinished:
                self._shut_down()
            raise
        self._shut_down()
        return results

    def _shut_down(self) -> None:
        with self._cond:
            self._closed = self._stopping = True
            self._retired = True
            self._pool = {}  # a closed one saves no more: its host copy is not kept alive
            self._cond.notify_all()
        _LIVE.discard(self)  # the exit hook has nothing more to wait for
        _BUSY.discard(self)
        self._restore_handler()
        # Leave no empty snapshot directories behind.  Tried even with a job still running
        # (one cut off at exit and stuck in a request, whose snapshot _report_cutoff removed):
        # rmdir removes only an empty directory, and _new_workdir recreates a removed one.
        for base in self._swept:
            with contextlib.suppress(OSError):
                os.rmdir(base)

    # ---- the training thread's side --------------------------------------------------------

    def _check_args(self, step: Any, metrics: Any, metadata: Any, aliases: Sequence[str]
                    ) -> tuple[dict[str, float], dict[str, str], tuple[str, ...]]:
        if step is not None:
            layout.check_step(step)
        aliases = check_arg("aliases", aliases, "names")
        for name in aliases:
            validate_alias(name)
        return (check_metrics(metrics), check_metadata(metadata),
                tuple(dict.fromkeys((*self.aliases, *aliases))))

    def _resolve_lineage(self, parents: Sequence[Any] | None,
                         inputs: Sequence[str | dict[str, str]] | None,
                         relation: str) -> dict[str, Any]:
        from .core import lineage as _lineage

        out: dict[str, Any] = {}
        if parents is not None:
            out["parents"] = _lineage.resolve_parents(self.lake.store, parents,
                                                      relation=relation,
                                                      child=self.artifact) if parents else ()
        if inputs is not None:
            out["inputs"] = check_inputs(inputs)
        return out

    def _save_lineage(self, parents: Sequence[Any] | None,
                      inputs: Sequence[str | dict[str, str]] | None,
                      relation: str) -> dict[str, Any]:
        own = self._resolve_lineage(parents, inputs, relation)
        return {**self._lineage, **own}

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        if self._owner != os.getpid():  # a forked child's: as if never installed there
            self._to_previous(signum, frame)
            return
        if self._terminating:
            return  # already draining: a second SIGTERM changes nothing
        if self._retired:
            # Closed, but its handler is still installed: one that could not be restored at
            # close (someone installed another over it, as Lightning's signal connector does,
            # which then puts this one back at the end of the fit).  Terminating here would
            # take no final checkpoint and keep the user's own handler from ever running.
            self._pass_on(signum, frame)
            return
        if _ATOMIC.depth:
            # Inside `with ck.atomic()`: the state is mid-update (an optimizer step); the block's
            # end acts on the signal.  The exit deadline starts now, as for a save.
            self._sigterm_pending = True
            _ATOMIC.pending = self
            if self._exit_deadline is None and self.exit_timeout not in (None, math.inf):
                self._exit_deadline = time.monotonic() + self.exit_timeout
            log.warning("ckptlake: SIGTERM inside an atomic block of %s: acting on it at the "
                        "block's end", self.artifact)
            with self._cond:  # a save waiting for room reads the new deadline (_wait_room)
                self._cond.notify_all()
            return
        # (or the main thread entering or leaving a save: marked in _in_save, the lock not
        # yet taken or already let go; the final save would be skipped there as nested)
        main_saving = threading.get_ident() in self._in_save
        if self._save_lock.locked() and not main_saving \
                and self._saver is not threading.main_thread():
            # another thread's save: nothing acts on a pending signal for it (_saving acts
            # for the main thread only), and the signal was lost (no final save, no exit).
            # That save is let finish (its lock, within the exit deadline, which starts now),
            # so that it is uploaded too; then terminate.
            if self._exit_deadline is None and self.exit_timeout not in (None, math.inf):
                self._exit_deadline = time.monotonic() + self.exit_timeout
            log.warning("ckptlake: SIGTERM during a save of %s in another thread: finishing "
                        "it first", self.artifact)
            left = -1 if self._exit_deadline is None else \
                max(0.0, self._exit_deadline - time.monotonic())
            if self._save_lock.acquire(timeout=left):
                self._save_lock.release()
            self._terminate()
            return
        if self._save_lock.locked() or main_saving:
            # A save is being taken (the loop was inside save()): let it finish, so that it
            # is uploaded too; _saving acts on it when it is done.  The exit deadline starts
            # now for a save of the main thread (the one _saving acts for): waiting for room
            # (on_busy="wait", a full queue) it waits only until then (_wait_room), or the
            # running upload would hold the exit back without bound.
            self._sigterm_pending = True
            if self._saver is threading.main_thread() and self._exit_deadline is None \
                    and self.exit_timeout not in (None, math.inf):
                self._exit_deadline = time.monotonic() + self.exit_timeout
            log.warning("ckptlake: SIGTERM during a save of %s: finishing it first",
                        self.artifact)
            with self._cond:  # (its lock is free: the loop waits in _cond.wait, if at all)
                self._cond.notify_all()
            return
        self._terminate()

    def _nested_save(self, step: int | None) -> bool:
        """A save called while this thread is inside a save: a signal handler's ("save now"
        on SIGUSR1) whose signal came during the loop's save.  Waiting for the lock this
        thread holds never ended (a deadlock); raising went up through the loop's own save,
        which was then lost too.  It is skipped, as on_busy="skip" skips: logged, listed in
        `skipped`; the save it interrupted goes on."""
        if threading.get_ident() not in self._in_save:
            return False
        log.warning("ckptlake: a save of %s (step %s) was called inside another save of this "
                    "thread (from a signal handler?): skipped; set a flag in the handler and "
                    "save from the training loop", self.artifact, step)
        self.skipped.append(step)
        return True

    @contextlib.contextmanager
    def _saving(self) -> Iterator[None]:
        """Serialize saves; a SIGTERM that arrived during one is acted on when it ends (taken,
        skipped or failed)."""
        me = threading.get_ident()
        # marked before the lock is taken and unmarked after it is let go: a handler's save
        # that comes between the two and the assignment of _saver is nested too (_nested_save)
        self._in_save.add(me)
        try:
            try:
                with self._save_lock:
                    self._saver = threading.current_thread()
                    try:
                        yield
                    finally:
                        self._saver = None
            finally:
                self._in_save.discard(me)
        finally:
            if self._sigterm_pending and threading.current_thread() is threading.main_thread() \
                    and not _ATOMIC.depth:  # (inside an atomic block: at its end)
                self._sigterm_pending = False
                self._terminate()

    def _pass_on(self, signum: int, frame: Any) -> None:
        """A SIGTERM reaching this closed checkpointer: to its successor, if live (_take_over),
        else to the handler that was installed before it (or the default action, death by
        the signal, for SIG_DFL)."""
        ck, seen = self, {id(self)}
        while ck._retired and ck._successor is not None and id(ck._successor) not in seen:
            ck = ck._successor
            seen.add(id(ck))
        if ck._retired and ck._successor is None and ck._revive is not None:
            revive, ck._revive = ck._revive, None
            # A second SIGTERM while the next one is being made reaches this one again: with
            # no successor yet it would fall to the default action (death, no final save).
            ck._terminating = True
            try:
                fresh = revive()  # sets ck._successor (_take_over)
            except Exception as exc:  # noqa: BLE001 - the signal still goes on, below
                log.error("ckptlake: SIGTERM: could not make the next checkpointer of %s to "
                          "take a final checkpoint: %s", ck.artifact, exc)
            else:
                if fresh is not ck and not fresh._retired:
                    fresh._on_sigterm(signum, frame)
                    return
        if not ck._retired:
            ck._on_sigterm(signum, frame)
            return
        ck._to_previous(signum, frame)

    def _to_previous(self, signum: int, frame: Any) -> None:
        """The handler that was installed before this one (or the default action, death by
        the signal, for SIG_DFL)."""
        previous = self._previous_handler
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:  # SIG_DFL, or None (not installed from Python)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)

    def _take_over(self, old: "Checkpointer") -> None:
        """Become the checkpointer that a SIGTERM reaching `old` (closed, replaced by this one)
        goes to.  If `old` could not restore the handler it replaced, its own may still be
        installed (or be put back by whoever wrapped it): then this one restores, at its
        close, what `old` would have, not the wrapper it found installed."""
        if old is self or self.on_sigterm is None or old.on_sigterm is None:
            return
        if not old._restored and old._previous_handler is not None:
            self._previous_handler = old._previous_handler
        old._successor = self

    def _terminate(self) -> None:
        """SIGTERM: the final save (on_sigterm="save"), then wait for uploads up to
        exit_timeout, then exit 143.  A checkpoint still uploading at the deadline is lost
        whole: its manifest, written last, is never written."""
        self._terminating = True
        started = time.monotonic()
        self._room_waited = 0.0
        if self._exit_deadline is None:  # (set already if the signal came during a save)
            self._exit_deadline = None if self.exit_timeout in (None, math.inf) else \
                started + self.exit_timeout
        final = self.on_sigterm == "save" and self.final_save is not None and not self._closed
        if final and not _ATOMIC.wait_for_others(self._exit_deadline):
            log.error("ckptlake: SIGTERM: the final checkpoint of %s was not taken: another "
                      "thread was still inside an atomic block at the exit deadline",
                      self.artifact)
            final = False
        log.warning("ckptlake: SIGTERM: %s%s, then exiting", "taking a final checkpoint of "
                    f"{self.artifact} and " if final else "",
                    "waiting for pending uploads"
                    + ("" if self.exit_timeout is None else f" (up to {self.exit_timeout} s)"))
        if final:
            try:
                self.final_save()  # type: ignore[misc]
            except Exception as exc:  # noqa: BLE001 - still wait for what is pending
                log.error("ckptlake: the final save on SIGTERM failed: %s", exc)
            if self._exit_deadline is not None:
                # The final save's own time (its host copy) comes on top of exit_timeout; its
                # wait for the running upload (_make_room) does not.
                self._exit_deadline += max(0.0, time.monotonic() - started - self._room_waited)
        self._drain_at_exit()
        self._shut_down()  # the exit hook must not wait a second exit_timeout
        raise SystemExit(SIGTERM_EXIT)

    def _restore_handler(self) -> None:
        """Put back the handler this one replaced, if this one is still the installed one.
        Otherwise (another was installed over it, or not the main thread) `_previous_handler`
        is kept: this handler may still run, and passes the signal on to it (_on_sigterm)."""
        if self.on_sigterm is None or self._previous_handler is None or self._restored:
            return
        if threading.current_thread() is threading.main_thread():
            with contextlib.suppress(ValueError, TypeError):
                if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
                    signal.signal(signal.SIGTERM, self._previous_handler)
                    self._restored = True

    def _after_fork(self) -> None:
        """(See ckptlake/forks.py.)  A forked child (a DataLoader worker, a pool process) has a
        copy of this checkpointer but not its thread: at the child's exit the hook waited for
        ever for the parent's uploads, or, with exit_timeout, removed the parent's snapshots
        (the parent's upload then failed: a checkpoint lost) and logged them as LOST; a save in
        the child never completed; and the inherited SIGTERM handler kept `terminate()` from
        stopping the child.  The child's copy is the parent's to use: it takes no part here."""
        self._finalizer.detach()  # its condition's lock may be a parent thread's, held
        self._cond = threading.Condition()
        self._save_lock = threading.Lock()
        self._in_save = set()
        _LIVE.discard(self)
        _BUSY.discard(self)

    def _check_owner(self) -> None:
        if self._owner != os.getpid():
            raise UsageError(f"this checkpointer of {self.artifact} belongs to process "
                             f"{self._owner}, not to this forked one ({os.getpid()})",
                             hint="make one in this process: lake.checkpointer(...)")

    def _check_open(self) -> None:
        self._check_owner()
        if self._closed:
            raise UsageError("this checkpointer is closed", hint="create a new one")

    def _raise_error(self) -> None:
        with self._cond:
            if not self._errors:
                return
            if self._terminating:
                # The final save on SIGTERM goes ahead: an earlier upload's failure (logged
                # when it happened, and reported at exit among the lost) made it fail too,
                # and the last state of a preempted job was lost with it.
                return
            (job, exc), later = self._errors[0], len(self._errors) - 1
            self._errors.clear()
        note = f"raised from the background upload of {self.artifact} {job.describe()}"
        if later:
            note += f" ({later} later background failure(s) were logged, not raised)"
        if hasattr(exc, "add_note"):
            exc.add_note(note)
        raise exc

    def _make_room(self, step: int | None) -> bool:
        """Apply on_busy; False if this checkpoint is skipped."""
        with self._cond:
            if self._terminating and step is not None and step == self._last_step:
                # The final save's state is the live one, maybe past a later optimizer step,
                # under the step of the checkpoint taken last: committed, it would be the
                # latest, a mixed state resumed from.  The checkpoint taken stands.
                log.warning("ckptlake: SIGTERM: the final save of %s at step %s was not taken: "
                            "the last checkpoint taken was of that step (final_save should "
                            "save the state of a step not saved yet)", self.artifact, step)
                self.skipped.append(step)
                return False
            return self._room(step)

    def _room(self, step: int | None) -> bool:
        with self._cond:
            busy = self._active is not None or bool(self._queue)
            if not busy:
                return True
            if self.on_busy == "skip" and not self._terminating:  # never skip the final save
                running = self._active.describe() if self._active else "a queued upload"
                log.warning("ckptlake: skipped checkpoint %s of %s: the upload of %s is still "
                            "running (on_busy='skip')", "?" if step is None else step,
                            self.artifact, running)
                self.skipped.append(step)
                return False
            if self.on_busy == "wait":
                return self._wait_room(lambda: self._active is not None or bool(self._queue),
                                       step)
            if len(self._queue) >= self.max_pending:
                log.info("ckptlake: checkpoint queue of %s is full (%d waiting); waiting",
                         self.artifact, len(self._queue))
                return self._wait_room(lambda: len(self._queue) >= self.max_pending, step)
            return True

    def _wait_room(self, busy: Callable[[], bool], step: int | None) -> bool:
        """Wait (under the cond) until not `busy()`.  The final save on SIGTERM waits only up
        to the exit deadline (the exit is promised within exit_timeout + CUTOFF_GRACE): then
        it is not taken, and False says so."""
        started = time.monotonic()
        try:
            while busy():
                # read each time: a SIGTERM may arrive during the wait (_on_sigterm)
                deadline = self._exit_deadline if (
                    self._terminating or (self._sigterm_pending
                                          and threading.current_thread()
                                          is threading.main_thread())) else None
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    running = self._active.describe() if self._active else "a queued upload"
                    log.error("ckptlake: SIGTERM: the checkpoint at step %s of %s was not "
                              "taken: the upload of %s was still running at the exit deadline "
                              "(exit_timeout %s s)", "?" if step is None else step,
                              self.artifact, running, self.exit_timeout)
                    self.skipped.append(step)
                    return False
                self._cond.wait(left)
            return True
        finally:
            if self._terminating:
                self._room_waited += time.monotonic() - started

    def _enqueue(self, job: _Job) -> Future:
        with self._cond:
            self._last_step = job.step
            self._queue.append(job)
            _BUSY.add(self)  # its saves are committed even if the caller lets go of it
            self._cond.notify_all()
        ref = weakref.ref(self)  # (a future the caller keeps must not keep this alive)
        job.future.add_done_callback(lambda f: f.cancelled() and (ck := ref()) is not None
                                     and ck._drop_cancelled(job))
        return job.future

    def _drop_cancelled(self, job: _Job) -> None:
        """A queued save whose future was cancelled leaves the queue at once: it held a slot
        (on_busy="queue" waited for it), counted in `pending`, and was reported LOST at exit."""
        with self._cond:
            if job not in self._queue:
                return  # (being uploaded: _run_one's own check skips it, or it is done)
            self._queue.remove(job)
            self._left_job()
        self._forget(job)

    def _left_job(self) -> None:
        """Under the cond, after a job left the queue or ended: idle now, the checkpointer is
        collectable once the caller lets go of it; savers waiting for room are woken."""
        if not self._queue and self._active is None:
            _BUSY.discard(self)
        self._cond.notify_all()

    def _forget(self, job: _Job) -> None:
        """A cancelled save's snapshot and host copy go; nothing of it is uploaded."""
        log.info("ckptlake: checkpoint %s of %s was cancelled before its upload",
                 job.describe(), self.artifact)
        rmtree(job.workdir)
        job.tensors = None

    def _new_workdir(self, base: str) -> str:
        if base not in self._swept:
            self._swept.add(base)
            _sweep_stale_snapshots(base)
        for _ in range(3):  # another process may remove the (empty) base in between
            try:
                os.makedirs(base, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise UsageError(f"cannot make snapshots in {base}: it (or a directory above "
                                 "it) is not a directory", hint="use another snapshot_dir"
                                 ) from None
            try:
                return tempfile.mkdtemp(prefix=f"{_HOST}-{os.getpid()}-", dir=base)
            except FileNotFoundError:
                continue
        return tempfile.mkdtemp(prefix=f"{_HOST}-{os.getpid()}-", dir=base)

    def _snapshot_files(self, src: str, step: int | None, metrics: dict[str, float],
                        metadata: dict[str, str], aliases: tuple[str, ...],
                        exclude: tuple[str, ...]) -> _Job:
        tree = scan(src, exclude=exclude)
        base = self.snapshot_dir or os.path.join(os.path.dirname(src), SNAPSHOT_DIRNAME)
        base = os.path.abspath(base)
        if tree.kind == "dir" and (base == src or base.startswith(src.rstrip(os.sep) + os.sep)):
            raise UsageError(f"snapshot_dir {base} lies inside the saved directory {src}")
        link = self._decide_link(src, tree)
        workdir = self._new_workdir(base)
        try:
            root = os.path.join(workdir, "data")
            dest = os.path.join(root, os.path.basename(src)) if tree.kind == "file" else root
            try:
                linked = _materialize(tree, dest, link=link)
            except FileNotFoundError as exc:
                raise SourceChanged(f"{exc.filename or src} disappeared while it was being "
                                    "snapshotted; nothing was saved",
                                    hint="save again once the writer is done") from None
            except OSError as exc:
                _raise_if_full(exc, base)
                raise
            if not linked:
                # A copy read while the writer rewrote the file in place mixes old and new
                # bytes that the source never held at once; push would then commit the copy
                # (it checks only the copy, which nobody changes).  A link is the file
                # itself: push's own check covers it.
                for f in tree.files:
                    f.check_unchanged()
            if link and not linked:
                if self.snapshot == "link" and not self._link_falls_back:
                    raise UsageError(f"cannot hard-link {src} into {base} (another filesystem?)",
                                     hint="use snapshot='copy' or a snapshot_dir on the same "
                                          "filesystem")
                log.info("ckptlake: hard links into %s failed; copying %s", base, src)
            snap = scan(dest)
        except BaseException:
            rmtree(workdir)
            raise
        return _Job(kind="files", step=step, metrics=metrics, metadata=metadata,
                    aliases=aliases, workdir=workdir, tree=snap, source=src, linked=linked)

    def _decide_link(self, src: str, tree: SourceTree) -> bool:
        """Learn how the writer of `src` writes (see "auto" in the module doc)."""
        now = {f.path: (f.inode, f.size, f.mtime_ns) for f in tree.files}
        prev = self._seen.get(src)
        verdict = self._writer.get(src)
        self._seen[src] = now
        if prev is not None and verdict != "in-place":
            rewritten = [p for p, (ino, size, mtime) in now.items()
                         if p in prev and prev[p][0] == ino and prev[p][1:] != (size, mtime)]
            replaced = [p for p, (ino, _, _) in now.items() if p in prev and prev[p][0] != ino]
            if rewritten:
                if verdict == "replaces" or self.snapshot == "auto":
                    log.info("ckptlake: %s is rewritten in place (e.g. %s): snapshots of it "
                             "are copies", src, rewritten[0])
                verdict = "in-place"
            elif replaced and verdict is None:
                verdict = "replaces"
                if self.snapshot == "auto":
                    log.info("ckptlake: the writer of %s replaces its files: snapshots of it "
                             "are hard links from now on", src)
        if verdict is not None:
            self._writer[src] = verdict
        if self.snapshot == "link":
            return True
        return self.snapshot == "auto" and verdict == "replaces"

    # ---- the background thread -------------------------------------------------------------

    def _release_error_frames(self) -> None:
        """The failures kept for the next save to raise, with their tracebacks' frames cleared
        of locals (the lines stay): the frames of _run_one and _execute held this
        Checkpointer in a cycle, so one let go of after a failed upload kept its thread and
        host buffers until a full collection."""
        import traceback

        with self._cond:
            errors = [exc for _, exc in self._errors]
        for exc in errors:
            for e in _chain(exc):
                traceback.clear_frames(e.__traceback__)

    def _run_one(self) -> bool:
        """Upload the next queued checkpoint; False when there is none (stopping)."""
        with self._cond:
            if not self._queue:
                return False
            job = self._queue.popleft()
            # Its future cannot be cancelled from now on; one cancelled while queued is not
            # uploaded (a cancelled future's set_result raised here and ended the thread:
            # later saves were lost and wait(), close() and the exit hook hung)
            running = job.future.set_running_or_notify_cancel()
            if running:
                self._active = job
            # a save waiting for room in a full queue (on_busy="queue") has it now: without
            # this it slept until this whole upload ended (the training loop idle for it)
            self._left_job()
        if not running:
            self._forget(job)
            return True
        result: PushResult | None = None
        error: BaseException | None = None
        try:
            result = self._execute(job)
        except BaseException as exc:  # noqa: BLE001 - reported to the training thread
            error = exc
            # said before the failure is published to the next save (it raises it)
            self._log_failure(job, exc)
        finally:
            rmtree(job.workdir)
            if job.kind == "state" and self.reuse_buffers and job.tensors:
                pool = {name: arr for name, _, _, arr in job.tensors}
            else:
                pool = None
            job.tensors = None
            with self._cond:
                job.outcome = "committed" if error is None else "failed"
                if error is None:
                    self.results.append(result)  # type: ignore[arg-type]
                elif not job.cancelled:
                    self._errors.append((job, error))
                if pool is not None:
                    self._pool = pool
                self._active = None
                self._left_job()
        # Only now, with this upload no longer running: a training loop that waited for
        # the future and saved at once found it still "running" (on_busy="skip" dropped
        # that save, `pending` said 1, the exit hook waited for a committed version).
        if error is None:
            job.future.set_result(result)
        else:
            job.future.set_exception(error)
        return True

    def _execute(self, job: _Job) -> PushResult:
        from .core import push as _push
        from .transfer.progress import NullProgress

        if job.kind == "state":
            root = os.path.join(job.workdir, "data")
            try:
                os.makedirs(root)
                write_safetensors(os.path.join(root, job.filename), job.tensors or [],
                                  metadata=job.state_metadata)
                with open(os.path.join(root, _state_format.SKELETON_FILENAME), "wb") as fh:
                    fh.write(job.skeleton)
            except OSError as exc:
                _raise_if_full(exc, os.path.dirname(job.workdir))
                raise
            tree = scan(root)
        else:
            assert job.tree is not None
            tree = job.tree
        lake = self.lake
        watching = getattr(lake, "_watching", None)
        progress = self.progress or NullProgress()
        extra: dict[str, Any] = {}
        if getattr(lake, "throttle", None) is not None:
            extra["throttle"] = lake.throttle
        if getattr(lake, "parts", None) is not None:  # chunks >= the threshold go up in parts,
            extra["parts"] = lake.parts  # as Lake.push sends them; the exit deadline stops them
        # What Lake.push adds to a version: per-tensor records of safetensors files, and
        # provenance (collected once per checkpointer: git state, command line, host).
        observers: list[Any] = [_CommitGate(self, job)]
        try:
            from .format.safetensors import TensorObserver

            tensors = TensorObserver((f.path, f.abspath) for f in tree.files)
            if tensors:
                observers.append(tensors)
        except ImportError:
            pass
        extra["observers"] = observers
        provenance = self._provenance(job.source or None)
        fields = {k: v for k, v in job.lineage.items() if v}
        if provenance:
            fields["provenance"] = provenance
        if fields:
            extra["manifest_fields"] = fields
        with (watching(progress) if watching else contextlib.nullcontext(progress)) as prog:
            try:
                result = _push.push(lake.store, tree, self.artifact, chunk_size=lake.chunk_size,
                                    concurrency=lake.concurrency, step=job.step,
                                    metrics=job.metrics, metadata=job.metadata,
                                    aliases=list(job.aliases), progress=prog,
                                    lake_url=lake.url, **extra)
            except SourceChanged:
                if job.linked:
                    self._writer[job.source] = "in-place"
                    log.error("ckptlake: %s was rewritten in place while its hard-link "
                              "snapshot was uploading; that checkpoint is lost (nothing was "
                              "committed).  Snapshots of it are copies from now on; a writer "
                              "that rewrites files in place needs snapshot='copy'.", job.source)
                raise
        after_commit = getattr(lake, "_after_commit", None)  # listing/lineage indexes
        if callable(after_commit):
            for warning in after_commit(self.artifact, result.version) or []:
                log.warning("ckptlake: %s", warning)
        log.info("ckptlake: committed %s (%s): %d files, %d bytes uploaded in %.1f s",
                 result.ref, job.describe(), result.files, result.bytes_uploaded,
                 result.seconds)
        if self.keep_last or self.retention.rule_for(self.artifact) is not None:
            try:
                self._retain()
            except Exception as exc:  # noqa: BLE001 - the checkpoint itself is committed
                # Without tracebacks (their frames hold the artifact's version lists: RSS grew
                # 0.14 MiB a commit when a rule failed after each), and only the last ones.
                self.retention_errors.append(_without_frames(exc))
                del self.retention_errors[:-RETENTION_ERRORS_KEPT]
                # The same failure after every commit (a keep_best metric that no version has
                # until the first validation) is said once, not once per checkpoint.
                said = f"{type(exc).__name__}: {exc}"
                level = logging.DEBUG if said in self._logged_retention else logging.ERROR
                self._logged_retention.add(said)
                log.log(level, "ckptlake: retention of %s after committing %s failed (the "
                        "checkpoint is committed; nothing was deleted that should not be): "
                        "%s%s", self.artifact, result.ref, exc,
                        "" if level == logging.DEBUG else
                        " (logged once; see retention_errors for repeats)")
        return result

    def _provenance(self, source: str | None) -> dict[str, Any]:
        if self._provenance_cache is None:
            try:
                from .core import provenance as _provenance

                self._provenance_cache = dict(_provenance.collect(source))
            except Exception as exc:  # noqa: BLE001 - provenance is optional
                log.debug("ckptlake: no provenance: %s", exc)
                self._provenance_cache = {}
        return self._provenance_cache

    def _retain(self) -> None:
        """gc's step 1 for this artifact (core/gc.py `retain`: its selection, its deleter)."""
        from .core.gc import retain

        done = retain(self.lake.store, self.artifact, self.retention, keep_last=self.keep_last)
        if done.versions_deleted:
            log.info("ckptlake: %s: retention deleted %s", self.artifact,
                     ", ".join(done.versions_deleted))

    def _log_failure(self, job: _Job, exc: BaseException) -> None:
        """Say a failed upload (_run_one records it in _errors, for the next save to raise)."""
        if job.cancelled:  # the exit drain reports it as lost, once
            log.debug("ckptlake: checkpoint %s of %s: %s", job.describe(), self.artifact, exc)
            return
        log.error("ckptlake: checkpoint %s of %s failed in the background: %s%s",
                  job.describe(), self.artifact, exc,
                  "" if self._drained else " (raised at the next save, wait or close)",
                  exc_info=None if _is_library_error(exc) else exc)

    # ---- interpreter exit ------------------------------------------------------------------

    def _drain_at_exit(self) -> None:
        """Wait for pending uploads up to exit_timeout, then cut off the running one (unless it
        is past its last check: its commit is let finish) and drop the queued ones, so that
        no version appears after the deadline; log what was lost and why.  Runs once: after
        the SIGTERM handler drained, the exit hook must not wait again."""
        with self._cond:
            if self._drained:
                return
            self._drained = True
            jobs = ([self._active] if self._active else []) + list(self._queue)
        if jobs:
            # inf is "wait for ever" too (Condition.wait(inf) raises OverflowError).  After a
            # SIGTERM, the deadline is the signal's (_terminate), not a second exit_timeout.
            deadline = self._exit_deadline if self._exit_deadline is not None else \
                None if self.exit_timeout in (None, math.inf) else \
                time.monotonic() + self.exit_timeout
            wait = "" if self.exit_timeout is None else f" up to {self.exit_timeout} s"
            if self._exit_deadline is not None:  # counted from the signal, not from here
                wait += f" from the signal ({max(0.0, deadline - time.monotonic()):.1f} s left)"
            log.warning("ckptlake: the process is exiting with %d checkpoint upload(s) of %s "
                        "pending (%s): waiting for them%s", len(jobs), self.artifact,
                        ", ".join(j.describe() for j in jobs), wait)
            with self._cond:
                while self._queue or self._active is not None:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        break
                    self._cond.wait(left)
                dropped = list(self._queue)
                self._queue.clear()
                self._stopping = True
                active = self._active
                if active is not None and not active.committing:
                    active.cancelled = True
                    for stop in active.stops:
                        stop.set()
                self._cond.notify_all()
            for job in dropped:
                rmtree(job.workdir)
            self._report_cutoff(active, dropped)
        with self._cond:
            errors, self._errors = list(self._errors), []
        for job, exc in errors:
            log.error("ckptlake: LOST checkpoint %s of %s: its upload failed (%s) and the "
                      "failure was never raised (no save/wait/close after it)",
                      job.describe(), self.artifact, exc)

    def _report_cutoff(self, active: _Job | None, dropped: list[_Job]) -> None:
        """After the deadline: let the running job end (CUTOFF_GRACE), then say what was lost.

        A cut-off job still running after the grace is stuck in a request (a stalled PUT ends
        only at its timeout); the process exits without it (its upload workers are daemon
        threads, transfer/pool.py), so its snapshot is removed here: the background thread,
        whose `finally` would remove it, dies with the interpreter, often before or in the
        middle of that.  The job cannot commit any more, so nothing needs those bytes.  (A job
        past its last check keeps its snapshot: its commit may yet need it, to restore a chunk
        a concurrent gc swept; a later checkpointer of this host sweeps it up.)"""
        lost = [f"{j.describe()} (not started)" for j in dropped]
        if active is not None:
            end = time.monotonic() + CUTOFF_GRACE
            with self._cond:
                while self._active is active and end - time.monotonic() > 0:
                    self._cond.wait(end - time.monotonic())
                stuck = self._active is active
            if stuck and active.cancelled:
                rmtree(active.workdir)
            with self._cond:  # (its future is resolved a moment after: not read here)
                outcome = active.outcome
            if active.cancelled and outcome != "committed":  # (a tree without files has no gate)
                lost.insert(0, f"{active.describe()} (cut off while uploading)")
            elif outcome is None:
                log.error("ckptlake: checkpoint %s of %s was being committed at the deadline "
                          "and had not finished %g s later: it may or may not be committed "
                          "(see: ckptlake ls %s)", active.describe(), self.artifact,
                          CUTOFF_GRACE, self.artifact)
        if lost:
            log.error("ckptlake: LOST checkpoint(s) of %s: %s: not uploaded within exit_timeout "
                      "(%s s); no version was committed for them", self.artifact,
                      ", ".join(lost), self.exit_timeout)


_PROGRESS_METHODS = ("start", "advance", "file_done", "retry", "note", "finish")


def check_options(*, keep_last: Any = None, on_busy: Any = "wait", max_pending: Any = None,
                  snapshot: Any = "auto", snapshot_dir: Any = None, aliases: Any = (),
                  exit_timeout: Any = None, reuse_buffers: Any = True, progress: Any = None,
                  retention: Any = None, on_sigterm: Any = None, final_save: Any = None
                  ) -> dict[str, Any]:
    """The checks of the Checkpointer's options that need neither a lake nor a thread; the
    values to use ({"keep_last", "max_pending", "aliases"} normalized).

    Shared with the integrations that make their checkpointer later (the HF callback makes
    it at `on_train_begin`): a bad value must fail where it is written, not hours in, and a
    bad `progress` or a `snapshot_dir` that is a file failed only in the background (every
    upload) or at the first save."""
    if on_busy not in ON_BUSY:
        raise UsageError(f"on_busy must be one of {', '.join(ON_BUSY)}, not {on_busy!r}")
    if snapshot not in SNAPSHOT_MODES:
        raise UsageError(f"snapshot must be one of {', '.join(SNAPSHOT_MODES)}, "
                         f"not {snapshot!r}")
    if max_pending is not None:
        if on_busy != "queue":
            raise UsageError("max_pending applies to on_busy='queue' only")
        max_pending = check_arg("max_pending", max_pending, "int", minimum=1)
    keep_last = check_arg("keep_last", keep_last, "int", optional=True, minimum=1)
    check_arg("exit_timeout", exit_timeout, "seconds", optional=True)
    check_arg("reuse_buffers", reuse_buffers, "bool")
    check_arg("snapshot_dir", snapshot_dir, "path", optional=True)
    if snapshot_dir is not None and os.path.lexists(snapshot_dir) \
            and not os.path.isdir(snapshot_dir):
        raise UsageError(f"snapshot_dir {os.fspath(snapshot_dir)} is not a directory",
                         hint="name a directory (it is made if missing)")
    check_arg("final_save", final_save, "callable", optional=True)
    if progress is not None:
        lacking = [m for m in _PROGRESS_METHODS if not callable(getattr(progress, m, None))]
        if lacking:
            shown = repr(progress) if len(repr(progress)) <= 60 else repr(progress)[:57] + "..."
            raise UsageError(f"progress must be a Progress (methods {', '.join(lacking)} "
                             f"missing), got {shown}",
                             hint="see ckptlake.transfer.progress.Progress, or leave it None")
    if not isinstance(retention, bool):
        check_policy_arg("retention", retention)
    aliases = check_arg("aliases", aliases, "names")
    for name in aliases:
        validate_alias(name)
    if on_sigterm is not None and on_sigterm not in ON_SIGTERM:
        raise UsageError(f"on_sigterm must be one of {', '.join(ON_SIGTERM)}, not "
                         f"{on_sigterm!r}")
    if (on_sigterm == "save") != (final_save is not None):
        raise UsageError("on_sigterm='save' needs final_save= (a callable that saves), "
                         "and final_save= needs on_sigterm='save'")
    return {"keep_last": keep_last, "max_pending": max_pending, "aliases": aliases}


def check_state_filename(filename: Any) -> str:
    """save_state's `filename`: one plain file name a manifest can hold.  Checked before
    anything is copied: a NUL failed the upload in the background, and a name the manifest
    refuses (over 255 bytes, not UTF-8) failed it after the copy."""
    from .core.values import check_text
    from .format.manifest import MAX_NAME_BYTES
    from .format.safetensors import is_safetensors

    check_arg("filename", filename, "str")
    if not filename or "/" in filename or "\x00" in filename or filename in (".", "..") \
            or filename == _state_format.SKELETON_FILENAME:
        raise UsageError(f"filename must be a plain file name, not {filename!r}")
    check_text(filename, "filename")
    if len(filename.encode("utf-8")) > MAX_NAME_BYTES:
        raise UsageError(f"filename is longer than {MAX_NAME_BYTES} bytes: {filename[:40]!r}...")
    if not is_safetensors(filename):
        # A push records tensors (what load_state, diff and partial reads use) only for
        # .safetensors names: under another name the version committed, and load_state
        # could not read it back.
        raise UsageError(f"filename must end in .safetensors (the state's tensors are "
                         f"stored as safetensors), not {filename!r}",
                         hint=f"filename={filename + '.safetensors'!r}")
    return filename


def _load_policy(retention: Any) -> "RetentionPolicy":
    from .policy.retention import RetentionPolicy

    if retention is False:
        return RetentionPolicy()
    if retention is True:
        retention = None
    return resolve_retention(retention)


RETENTION_ERRORS_KEPT = 100  # Checkpointer.retention_errors: the last ones


def _raise_if_full(exc: OSError, base: str) -> None:
    """A snapshot that found its disk full is the user's to fix (exit 2, as a pull's full
    destination), named with where it was written: it was a bare OSError, and its log line
    a traceback."""
    import errno

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        what = "no space left" if exc.errno == errno.ENOSPC else "disk quota exceeded"
        raise UsageError(f"{what} for the checkpoint's snapshot in {base}; nothing was saved",
                         hint="free space there, or give the Checkpointer a snapshot_dir= on "
                              "a disk with room") from None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and the exceptions it was raised from or during, each once."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _without_frames(exc: BaseException) -> BaseException:
    """`exc` (and the exceptions it was raised from or during) without tracebacks: kept for
    the life of a training process, their frames would keep whatever they referenced."""
    for e in _chain(exc):
        e.__traceback__ = None
    return exc


def _is_library_error(exc: BaseException) -> bool:
    from .errors import CkptlakeError

    return isinstance(exc, CkptlakeError)


# ---- the background thread ----------------------------------------------------------------------

# Checkpointers with a save queued or uploading: held here, so that one the caller let go of
# still commits them (and the exit hook, whose _LIVE set is weak, still waits for them).
_BUSY: "set[Checkpointer]" = set()


def _serve(ref: "weakref.ReferenceType[Checkpointer]", cond: threading.Condition) -> None:
    """The background thread: it holds its Checkpointer only while there is work (_BUSY holds
    it then too), so one dropped idle without close() (a sweep's trial, a notebook cell run
    again) is collected, and its thread and host buffers go with it (they stayed for the life
    of the process)."""
    while True:
        with cond:
            while True:
                ck = ref()
                if ck is None:
                    return
                if ck._queue or ck._stopping:
                    break
                ck = None  # not while waiting
                if ref() is None:  # that was the last reference (_wake came before the wait)
                    return
                cond.wait()
        if not ck._run_one():
            return
        ck._release_error_frames()
        ck = None


def _wake(cond: threading.Condition) -> None:
    """A Checkpointer was collected: its thread, waiting for work, is to end."""
    with cond:
        cond.notify_all()


# ---- exit hook ----------------------------------------------------------------------------------

_LIVE: "weakref.WeakSet[Checkpointer]" = weakref.WeakSet()
_HOST = socket.gethostname().replace("-", "_") or "host"


def _at_exit() -> None:
    for ck in list(_LIVE):
        try:
            ck._drain_at_exit()
            ck._shut_down()  # and no empty snapshot directory left behind
        except Exception as exc:  # noqa: BLE001 - exiting anyway; say so
            log.error("ckptlake: could not wait for pending checkpoints at exit: %s", exc)


def _sweep_stale_snapshots(base: str) -> None:
    """Remove snapshot dirs that crashed processes of this host left behind."""
    try:
        names = os.listdir(base)
    except OSError:
        return
    for name in names:
        host, _, rest = name.partition("-")
        pid_s = rest.partition("-")[0]
        if host != _HOST or not pid_s.isdigit() or int(pid_s) == os.getpid():
            continue
        try:
            os.kill(int(pid_s), 0)
            continue  # alive
        except ProcessLookupError:
            pass
        except PermissionError:
            continue  # alive, someone else's
        rmtree(os.path.join(base, name))


# ---- snapshots ----------------------------------------------------------------------------------

_FICLONE = 0x40049409  # Linux ioctl: reflink the whole file


def _copy_file(src: str, dst: str) -> None:
    """Reflink when the filesystem can (instant, copy-on-write), else a kernel-side copy."""
    with open(src, "rb") as fsrc, open(dst, "wb") as fdst:
        try:
            import fcntl

            fcntl.ioctl(fdst.fileno(), _FICLONE, fsrc.fileno())
            return
        except (OSError, ImportError):
            pass
        if sys.platform == "linux":
            _copy_range_all(fsrc.fileno(), fdst.fileno(), os.fstat(fsrc.fileno()).st_size)
        else:
            shutil.copyfileobj(fsrc, fdst, 8 * 1024 * 1024)


def _copy_range_all(src_fd: int, dst_fd: int, size: int) -> None:
    offset = 0
    while offset < size:
        try:
            n = os.copy_file_range(src_fd, dst_fd, size - offset)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            n = os.sendfile(dst_fd, src_fd, None, size - offset)
        if n == 0:
            break
        offset += n


def _materialize(tree: SourceTree, dest: str, *, link: bool) -> bool:
    """Recreate `tree` at `dest` with hard links (if `link` and possible) or copies.

    Returns whether links were used.  Falls back to copies on the first link failure.
    """
    linked = link
    if tree.kind == "file":
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        targets = [(tree.files[0].abspath, dest, tree.files[0].executable)]
    else:
        os.makedirs(dest, exist_ok=True)
        targets = [(f.abspath, os.path.join(dest, f.path), f.executable) for f in tree.files]
        for d in tree.empty_dirs:
            os.makedirs(os.path.join(dest, d), exist_ok=True)
    made: set[str] = set()
    for src, dst, executable in targets:
        parent = os.path.dirname(dst)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        if linked:
            try:
                os.link(src, dst)
                continue
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP,
                                     errno.EACCES):
                    raise
                linked = False
        _copy_file(src, dst)
        if executable:
            os.chmod(dst, os.stat(src).st_mode & 0o7777)
    if tree.kind == "dir":
        for path, target in tree.symlinks:
            full = os.path.join(dest, path)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            os.symlink(target, full)
    if link and not linked:
        # Links failed part-way: make every file a private copy, not a mix.
        for src, dst, executable in targets:
            if os.path.exists(dst) and os.stat(dst).st_ino == os.stat(src).st_ino:
                os.unlink(dst)
                _copy_file(src, dst)
                if executable:
                    os.chmod(dst, os.stat(src).st_mode & 0o7777)
    return linked


# ---- state dicts -> host memory -> safetensors ------------------------------------------------

# numpy dtype.str[1:] -> safetensors dtype
_NP_DTYPES = {"f8": "F64", "f4": "F32", "f2": "F16", "i8": "I64", "i4": "I32", "i2": "I16",
              "i1": "I8", "u8": "U64", "u4": "U32", "u2": "U16", "u1": "U8", "b1": "BOOL"}
# ml_dtypes / torch dtype names without a numpy equivalent -> (safetensors dtype, itemsize)
_NAMED_DTYPES = {"bfloat16": ("BF16", 2), "float8_e4m3fn": ("F8_E4M3", 1),
                 "float8_e5m2": ("F8_E5M2", 1)}
# torch dtype name -> safetensors dtype: every other dtype (fp8 e8m0fnu and the fnuz kinds,
# fp4, complex, quantized) is refused, naming the entry, before anything is copied
_TORCH_DTYPES = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16",
                 "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2", "int64": "I64",
                 "int32": "I32", "int16": "I16", "int8": "I8", "uint64": "U64", "uint32": "U32",
                 "uint16": "U16", "uint8": "U8", "bool": "BOOL"}


def _flatten(state: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in state.items():
        if not isinstance(key, str) or not key:
            raise UsageError(f"state keys must be non-empty strings, got {key!r} under "
                             f"{prefix or 'the top level'}")
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _flatten(value, name + ".")
        elif isinstance(value, (list, tuple)):
            yield from _flatten({str(i): v for i, v in enumerate(value)}, name + ".")
        else:
            yield name, value


def _torch_dtype(name: str, t: Any, *, meta_ok: bool = False) -> str:
    """The safetensors dtype of torch tensor `t`, the state entry `name`.  Checked before any
    copy, from dtype and layout alone: torch's own errors for the rest (a TypeError from
    `.numpy()` on fp8 e8m0, NotImplementedError on a meta tensor) name neither the entry nor
    what to do."""
    torch = sys.modules["torch"]
    kind = str(t.dtype).removeprefix("torch.")
    if t.layout is not torch.strided or getattr(t, "is_nested", False):
        layout_name = "nested" if getattr(t, "is_nested", False) else \
            str(t.layout).removeprefix("torch.")
        raise UsageError(f"state entry {name!r} is a {layout_name} tensor; save_state stores "
                         "dense tensors", hint="save t.to_dense() (or its components)")
    if t.device.type == "meta" and not meta_ok:
        raise UsageError(f"state entry {name!r} is a meta tensor: it has no data to save",
                         hint="materialize the module (to_empty + init, or load) first")
    dtype = _TORCH_DTYPES.get(kind)
    if dtype is None:
        raise UsageError(f"state entry {name!r} has dtype {t.dtype}, which safetensors cannot "
                         "store", hint="convert it (t.to(torch.bfloat16), ...); the fp8 types "
                         "stored are float8_e4m3fn and float8_e5m2")
    return dtype


def _torch_host(name: str, value: Any, buf: Any) -> tuple[str, Any] | None:
    """(dtype, host numpy array) for a torch tensor; None if `value` is not one."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(value, torch.Tensor):
        return None
    import numpy as np

    t = value.detach()
    dtype = _torch_dtype(name, t)
    if t.is_neg():  # a real view of a conjugate's imaginary part: numpy() refuses the bit
        t = t.resolve_neg()
    kind = str(t.dtype).removeprefix("torch.")
    if kind in _NAMED_DTYPES:
        t = t.view(torch.int16 if _NAMED_DTYPES[kind][1] == 2 else torch.uint8)
    if t.device.type != "cpu":
        t = t.to("cpu")  # the device-to-host copy is the copy we keep
        host = t.numpy()
        if buf is not None and buf.shape == host.shape and buf.dtype == host.dtype:
            np.copyto(buf, host)
            host = buf
    else:
        src = t.numpy()  # shares memory with the live tensor: copy it
        if buf is not None and buf.shape == src.shape and buf.dtype == src.dtype:
            np.copyto(buf, src)
            host = buf
        else:
            host = np.array(src, order="C", copy=True)
    return dtype, host


def _leaf_spec(name: str, value: Any) -> tuple[tuple[int, ...], Any] | None:
    """(shape, numpy dtype of the host buffer) that _copy_leaf would use; None: not a tensor."""
    import numpy as np

    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        # meta_ok: preparing buffers reads shapes and dtypes only, and a model built on the
        # meta device (deferred init) is what a trainer has at start-up
        _torch_dtype(name, value, meta_ok=True)
        dt = str(value.dtype).removeprefix("torch.")
        if dt in _NAMED_DTYPES:
            return tuple(value.shape), (np.int16 if _NAMED_DTYPES[dt][1] == 2 else np.uint8)
        return tuple(value.shape), torch.empty(0, dtype=value.dtype).numpy().dtype
    if not isinstance(value, (np.ndarray, np.generic)):
        return None
    arr = np.asarray(value)
    named = _NAMED_DTYPES.get(arr.dtype.name)
    if named is not None:
        return arr.shape, (np.uint16 if named[1] == 2 else np.uint8)
    if arr.dtype.kind in "fiub":
        return arr.shape, (arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">"
                           else arr.dtype)
    return None


def _host_specs(state: Any) -> list[tuple[str, tuple[int, ...], Any]]:
    """(name, shape, numpy dtype of the host buffer) that state_copy would use."""
    from .format import state as _state

    specs: list[tuple[str, tuple[int, ...], Any]] = []

    def leaf(name: str, value: Any) -> str | None:
        spec = _leaf_spec(name, value)
        if spec is not None:
            specs.append((name, *spec))
        return "np"  # only the names matter here; bad leaves fail at save_state

    _state.encode(state, leaf)
    return specs


def _copy_leaf(name: str, value: Any, buf: Any
               ) -> tuple[str, str, tuple[int, ...], Any, str] | None:
    """(safetensors dtype, shape, private host array, framework) of one tensor/array leaf;
    None if `value` is neither.  `buf` is a free array of a previous copy to copy into."""
    import numpy as np

    got = _torch_host(name, value, buf)
    if got is not None:
        dtype, host = got
        return name, dtype, tuple(value.shape), host, "pt"
    if isinstance(value, np.generic):
        value = np.asarray(value)
    if not isinstance(value, np.ndarray):
        return None
    if type(value) is not np.ndarray and not isinstance(value, np.memmap):
        # only the values are stored: a masked array would come back unmasked, its masked
        # entries as real values, and no error anywhere
        raise UsageError(f"state entry {name!r} is a {type(value).__name__}, a numpy array "
                         "subclass; it would load back as a plain ndarray without what the "
                         "subclass adds (a mask, ...)",
                         hint="save np.asarray(x) if its values are all it holds (a masked "
                              "array: x.data and x.mask as two entries)")
    named = _NAMED_DTYPES.get(value.dtype.name)
    if named is not None:
        dtype = named[0]
        src = value.view(np.uint16 if named[1] == 2 else np.uint8)
    else:
        dtype = _NP_DTYPES.get(value.dtype.str[1:])
        if dtype is None or value.dtype.kind not in "fiub":
            raise UsageError(f"state entry {name!r} has dtype {value.dtype}, which "
                             "safetensors cannot store")
        src = value
        if value.dtype.byteorder == ">":
            src = value.astype(value.dtype.newbyteorder("<"))
    target = src.dtype.newbyteorder("<") if src.dtype.byteorder == ">" else src.dtype
    if buf is not None and buf.shape == src.shape and buf.dtype == target \
            and buf.flags.c_contiguous:
        np.copyto(buf, src)
        host = buf
    else:
        host = np.array(src, dtype=target, order="C", copy=True)
    return name, dtype, tuple(value.shape), host, "np"


def state_copy(state: Any, pool: dict[str, Any] | None = None
               ) -> tuple[dict[str, Any], list[tuple[str, str, tuple[int, ...], Any]], str]:
    """Copy every tensor/array of a training state (docs/format.md, "Training state") to
    private host arrays and encode the rest as its JSON skeleton.

    Returns (skeleton, [(name, safetensors dtype, shape, array)], "pt" if torch tensors were
    seen else "np").  `pool`: free arrays of a previous copy by name, reused when they match.
    """
    from .format import state as _state

    pool = pool or {}
    out: list[tuple[str, str, tuple[int, ...], Any]] = []
    frameworks: set[str] = set()

    def leaf(name: str, value: Any) -> str | None:
        got = _copy_leaf(name, value, pool.get(name))
        if got is None:
            return None
        out.append(got[:4])
        frameworks.add(got[4])
        return got[4]

    skeleton = _state.encode(state, leaf)
    return skeleton, out, "pt" if "pt" in frameworks else "np"


def host_copy(state: Mapping[str, Any], pool: dict[str, Any] | None = None
              ) -> tuple[list[tuple[str, str, tuple[int, ...], Any]], str]:
    """Copy every array/tensor of `state` to private, C-contiguous, little-endian host arrays.

    Returns ([(name, safetensors dtype, shape, array)], "pt" if torch tensors were seen else
    "np").  `pool` maps names to free arrays of a previous copy; a match of shape and dtype is
    reused instead of allocating.
    """
    import numpy as np

    pool = pool or {}
    out: list[tuple[str, str, tuple[int, ...], Any]] = []
    fmt = "np"
    seen: set[str] = set()
    for name, value in _flatten(state):
        if name in seen:
            raise UsageError(f"state has the name {name!r} twice (after joining nested keys)")
        seen.add(name)
        if isinstance(value, (bool, int, float)) and not isinstance(value, np.generic):
            value = np.asarray(value)
        got = _copy_leaf(name, value, pool.get(name))
        if got is None:
            raise UsageError(f"state entry {name!r} is a {type(value).__name__}; save_state "
                             "stores numpy arrays, torch tensors and numbers")
        out.append(got[:4])
        if got[4] == "pt":
            fmt = "pt"
    return out, fmt


def write_safetensors(path: str, tensors: Sequence[tuple[str, str, tuple[int, ...], Any]], *,
                      metadata: Mapping[str, str] | None = None) -> int:
    """Write a safetensors file: u64-le header length, JSON header (space-padded to a multiple
    of 8), then each tensor's bytes back to back in name order.  Returns the file size."""
    from .format.safetensors import check_tensor_name

    header: dict[str, Any] = {}
    offset = 0
    ordered = sorted(tensors, key=lambda t: t[0])
    for name, dtype, shape, arr in ordered:
        check_tensor_name(name)  # before the file is opened: nothing half-written
        n = int(arr.nbytes)
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [offset, offset + n]}
        offset += n
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        for _, _, _, arr in ordered:
            if arr.nbytes:
                fh.write(memoryview(arr.reshape(-1)).cast("B"))
    return 8 + len(raw) + offset


def load_safetensors(path: str | os.PathLike[str]) -> dict[str, "np.ndarray"]:
    """Read a safetensors file into numpy arrays (no torch needed).

    BF16 and F8 tensors come back as their raw bits (uint16 / uint8) unless `ml_dtypes` is
    installed, in which case they get its bfloat16 / float8 dtypes.
    """
    import numpy as np

    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
        data = fh.read()
    named: dict[str, Any] = {}
    try:
        import ml_dtypes  # type: ignore[import-not-found]

        named = {"BF16": ml_dtypes.bfloat16, "F8_E4M3": ml_dtypes.float8_e4m3fn,
                 "F8_E5M2": ml_dtypes.float8_e5m2}
    except ImportError:
        named = {"BF16": np.uint16, "F8_E4M3": np.uint8, "F8_E5M2": np.uint8}
    by_name = {v: k for k, v in _NP_DTYPES.items()}
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        kind = info["dtype"]
        if kind == "BOOL":
            dt: Any = np.dtype(bool)
        elif kind in named:
            dt = named[kind]
        else:
            dt = np.dtype("<" + by_name[kind])
        out[name] = np.frombuffer(data[b:e], dtype=dt).reshape(info["shape"]).copy()
    return out


__all__ = ["Checkpointer", "check_options", "host_copy", "state_copy", "write_safetensors",
           "load_safetensors", "SNAPSHOT_MODES", "ON_BUSY"]

