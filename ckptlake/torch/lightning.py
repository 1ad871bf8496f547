"""Lightning `CheckpointIO` on a lake: `Trainer(plugins=[LakeCheckpointIO(lake, "run")])`.

How a Lightning checkpoint "path" maps to the lake
--------------------------------------------------
Lightning names checkpoints by file path (ModelCheckpoint: `dirpath/epoch=0-step=10.ckpt`); the
lake names them by artifact and version.  Every `save_checkpoint(checkpoint, path)` becomes a new
version of the plugin's artifact whose step is the checkpoint's `global_step`, and records the
path in the version's metadata (`lightning.path`, absolute for a local path).  The path is the
checkpoint's identity on Lightning's side:

* `remove_checkpoint(path)` (ModelCheckpoint dropping a checkpoint from its top k) deletes the
  versions saved under that path, through gc's deleter (core/gc.py `delete_versions`, the one
  the checkpointer's retention uses): a tombstone (lineage and `ckptlake show` say it expired),
  then the manifest; chunks are left to `ckptlake gc`.  Aliased versions and the artifact's
  latest version (what a resume reads) are never deleted.  Once a save of this
  fit has failed to upload, or was skipped (`on_busy="skip"`, an upload still running),
  removals are skipped (logged) until `teardown()`: ModelCheckpoint drops its kth best
  because the new checkpoint replaced it, and that one never arrived (deleting would leave
  no `@min:val_loss` to resume from; a version left behind loses nothing, retention or gc
  deletes it later).
* A placeholder file is written at a local path (a few bytes naming the lake and artifact,
  removed with the checkpoint): ModelCheckpoint decides whether a name is taken by looking at
  its `dirpath` (`file_exists`), and with nothing there it reused `{epoch}.ckpt` for every
  mid-epoch save instead of versioning it (`-v1`, `-v2`), so each save replaced the one
  before and top k lost its best members.  With the placeholders it names checkpoints as it
  does on disk.
* Saving to a path that already names a version replaces it only where writing the file
  would: Lightning's last checkpoint (`save_last`), or a path whose file Lightning saw and
  chose anyway (the kth best it drops, re-saved under the same name).  The older version is
  then deleted the same way once the new one is committed.  Otherwise (a URL `dirpath`, a
  placeholder that could not be written or was deleted, a new `dirpath` on an old artifact)
  both versions are kept and a warning names them: Lightning has lost track of the older
  one, which may be its best.
* `load_checkpoint(path)` reads the newest version saved under `path`, so `ckpt_path="best"`
  (ModelCheckpoint's `best_model_path`) works, and so does a ref: `ckpt_path="lake://REF"`
  with REF an ARTIFACT[@SELECTOR] (`lake://run@step=200`, `lake://run@min:val_loss`), or
  `lake://@SELECTOR` for the plugin's own artifact; `lake://` alone is its latest version.

Only those placeholders are written to a local `dirpath`: `ckpt_path="last"` finds the
placeholder of the last checkpoint and loads its version, but a new `dirpath` has none (use
`lake://run`, the latest version).  `ModelCheckpoint(save_last="link")` is not supported: the
`last.ckpt` symlink names no version.  No hook of a CheckpointIO sees the callback's settings,
so this cannot be refused up front; use `save_last=True` (a `last` version, replaced at each
save) or none (`lake://run`).

What is stored: the checkpoint dict as a training state (`Checkpointer.save_state`: tensors in
safetensors, the rest in a JSON skeleton, docs/format.md "Training state"); loading never
unpickles.  Values that are neither tensors nor plain data (an object in `hyper_parameters`)
are refused with their path named, never pickled.  Metrics: for every ModelCheckpoint that
monitors a metric and keeps this path in its top k, the score it keeps it for (`val_loss`),
recorded as a version metric (`ckptlake ls --where`, `@min:val_loss`, `keep_best`).

Uploads are asynchronous: `save_checkpoint` copies the tensors to host memory and returns;
chunking, upload and commit run in the checkpointer's background thread, removals in a second
one, after the uploads of every save made before them (so a removal never races the upload it
follows).  Lightning calls `teardown()` at the end of `fit`, which waits for both and raises a
background upload failure.  No `AsyncCheckpointIO` wrapper is needed (its thread would reorder
saves and removals: do not wrap this plugin in it).
"""
from __future__ import annotations

import contextlib
import inspect
import logging
import math
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

try:
    from lightning.fabric.plugins.io.checkpoint_io import CheckpointIO
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the install
    raise ModuleNotFoundError(
        f"ckptlake.torch.LakeCheckpointIO needs Lightning ({exc}): "
        "pip install 'ckptlake[lightning]'", name=exc.name) from None

from ..core.values import check_arg
from ..errors import CkptlakeError, NotFound, UsageError
from ..format import layout
from ..format import state as _state
from ..format.refs import Ref, parse_ref, validate_artifact
from ..transfer.pool import Executor, wait_result
from ._args import check_lake, check_version_fields

if TYPE_CHECKING:
    from ..checkpointer import Checkpointer
    from ..lake import Lake
    from ..results import PushResult

log = logging.getLogger("ckptlake")

SCHEME = "lake://"
PATH_KEY = "lightning.path"  # version metadata: the path Lightning saved the checkpoint as
EPOCH_KEY = "lightning.epoch"
VERSION_KEY = "lightning.version"  # the Lightning version that wrote it
_REQUIRED = ("state_dict", "global_step")  # what Lightning's restore reads first
_STORAGE_OPTIONS = ("metrics", "metadata", "aliases")
# The first line of a placeholder file: only a file that starts with it is removed or rewritten.
PLACEHOLDER_MAGIC = b"ckptlake LakeCheckpointIO placeholder\n"


class NotALightningCheckpoint(UsageError):
    """The version exists but is not a Lightning checkpoint saved through LakeCheckpointIO."""


class LakeCheckpointIO(CheckpointIO):
    """Lightning checkpoints as versions of `artifact` (see the module doc for the mapping).

    lake: a Lake, or a lake URL for `ckptlake.open`.
    async_upload: False makes `save_checkpoint` (and `remove_checkpoint`) return only once the
        version is committed (deleted); True (default) uploads in the background.
    checkpointer options (`on_busy`, `max_pending`, `aliases`, `parents`, `inputs`,
    `relation`, `snapshot_dir`, `exit_timeout`, `reuse_buffers`, `progress`, `on_sigterm`,
    `final_save`, `keep_last`, `retention`): passed to the `Checkpointer` that uploads.
    `retention` defaults to False here: ModelCheckpoint's top k decides what Lightning keeps
    (`ckptlake gc` still applies the lake's policy); `keep_last`/`retention` add the lake's
    rules after each commit, which may delete a version ModelCheckpoint still counts.
    `on_busy` defaults to "queue" here (at most `max_pending`, default 2, host copies wait
    behind the running upload): ModelCheckpoint saves twice at one step (top k, then
    `last.ckpt`), and "wait" would block the loop on the first upload.  With "skip", the
    first skipped save stops removals until `teardown` (as a failed one does: module doc), so
    the lake keeps more versions than ModelCheckpoint's top k.
    The checkpointer is made at once, and again by the first save after each `teardown`; with
    `on_sigterm`, a SIGTERM before that save makes it then (Checkpointer._revive).

    After a `load_checkpoint`, later saves of that fit (until `teardown`) name the loaded
    version as their parent (relation "resumed-from"), so `ckptlake lineage` shows where a
    resumed run came from.
    `trainer.save_checkpoint(path, storage_options={...})` takes `metrics`, `metadata` and
    `aliases` for that one version.
    """

    def __init__(self, lake: "Lake | str", artifact: str, *, async_upload: bool = True,
                 **checkpointer_options: Any) -> None:
        super().__init__()
        validate_artifact(artifact)
        check_lake(lake, url=True)
        async_upload = check_arg("async_upload", async_upload, "bool")  # "no" was True
        _check_options(checkpointer_options)
        if isinstance(lake, str):
            import ckptlake

            lake = ckptlake.open(lake)
        self.lake = lake
        self.artifact = artifact
        self.async_upload = bool(async_upload)
        self._options = {"retention": False, "on_busy": "queue", **checkpointer_options}
        self._user_parents = self._options.pop("parents", ())
        if isinstance(self._user_parents, (str, bytes, Ref)):
            self._user_parents = [self._user_parents]
        self._resumed_from: str | None = None  # this fit's load_checkpoint; None at teardown
        # (path, what happened) of the saves of this fit that failed to upload or were skipped
        # (the jobs thread; cleared at teardown): while there is one, removals are skipped
        # (see the module doc).
        self._failed: list[tuple[str, str]] = []
        #: Versions removed (deleted) on Lightning's request, as refs, in order.
        self.removed: list[str] = []
        #: Failures of removals (logged at ERROR; never raised: nothing is lost, a version
        #: remains that ModelCheckpoint no longer counts, for retention or gc to delete).
        self.removal_errors: list[BaseException] = []
        # Re-entrant: a SIGTERM while this thread holds it (making a checkpointer) runs the
        # final save, which takes it again (save_checkpoint -> _checkpointer): a plain Lock
        # deadlocked there.
        self._lock = threading.RLock()
        self._ck: Checkpointer | None = None
        self._retired_ck: Checkpointer | None = None  # the last one closed (_take_over)
        self._jobs: ThreadPoolExecutor | None = None
        # path -> versions.  Read now, before any save: afterwards only the jobs thread updates
        # it, after each save in order, so a removal never sees a version saved after it.
        self._index: dict[str, list[int]] = self._read_index()
        # Versions whose path Lightning removed but that were kept (resumed from, aliased, the
        # latest, or after a failed save): a later save to that path replaces them, as it did
        # the file.  The jobs thread's, as the index is.
        self._disowned: set[int] = set()
        self._checkpointer()  # made now, so bad options fail here, not at the first save

    def __repr__(self) -> str:
        return f"LakeCheckpointIO({self.lake.url!r}, {self.artifact!r})"

    # ---- CheckpointIO ----------------------------------------------------------------------

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any,
                        storage_options: Any | None = None) -> None:
        extra = _storage_options(storage_options)
        if not isinstance(checkpoint, Mapping):
            raise UsageError(f"a Lightning checkpoint is a dict, not {type(checkpoint).__name__}")
        raw = os.fspath(check_arg("path", path, "path"))
        key = _path_key(raw)
        local = "://" not in raw
        self._check_step_guard()
        # Lightning saves to a name whose file exists only to overwrite it (see the module doc)
        overwrite = _is_last(checkpoint, key) or (local and os.path.lexists(raw))
        step = checkpoint.get("global_step")
        if isinstance(step, bool) or not isinstance(step, int):
            raise UsageError(f"checkpoint for {raw} has no integer global_step ({step!r})")
        layout.check_step(step)
        metrics = {**_monitored(checkpoint, raw), **extra.get("metrics", {})}
        metadata = {PATH_KEY: key, **extra.get("metadata", {})}
        if isinstance(checkpoint.get("epoch"), int):
            metadata.setdefault(EPOCH_KEY, str(checkpoint["epoch"]))
        if isinstance(checkpoint.get("pytorch-lightning_version"), str):
            metadata.setdefault(VERSION_KEY, checkpoint["pytorch-lightning_version"])
        ck = self._checkpointer()
        future = ck.save_state(checkpoint, step=step, metrics=metrics, metadata=metadata,
                               aliases=extra.get("aliases", ()))
        if future is None:
            # on_busy="skip" (the checkpointer logged it): Lightning goes on as if it were
            # saved, and may now remove the checkpoint this one replaces.  Recorded in order
            # with the removals, as a failed upload is.
            done = self._submit(self._failed.append, (key, "was skipped (on_busy='skip')"))
            if not self.async_upload and not ck._terminating:
                wait_result(done)
            return
        if local:
            self._write_placeholder(raw)
        done = self._submit(self._after_save, key, future, overwrite)
        # The final save on SIGTERM (ck._terminating) does not wait for its upload here: the
        # exit drain waits for it up to exit_timeout; waiting here without bound broke the
        # exit deadline with async_upload=False (8 s past exit_timeout 1 s in the review).
        if not self.async_upload and not ck._terminating:
            wait_result(future)
            wait_result(done)

    def load_checkpoint(self, path: Any, map_location: Any | None = None,
                        weights_only: bool | None = None) -> dict[str, Any]:
        # weights_only is moot: nothing is unpickled.
        self.wait()  # a checkpoint this run saved must be committed to be read
        ref = self._ref_for(path)
        try:
            info = self.lake.resolve(ref)
        except NotFound as exc:
            raise NotFound(f"ckpt_path {os.fspath(path)!r}: {exc.message}",
                           hint=exc.hint or "list the versions with: ckptlake ls "
                           + self.artifact) from None
        what = f"{info.artifact}@v{info.version}"
        self._check_lightning(what)
        device = None if callable(map_location) or isinstance(map_location, dict) \
            else map_location
        checkpoint = self.lake.load_state(what, map_location=device)
        if not isinstance(checkpoint, dict) or any(k not in checkpoint for k in _REQUIRED):
            raise NotALightningCheckpoint(f"{what} is not a Lightning checkpoint")
        log.info("ckptlake: loaded Lightning checkpoint %s (%s)", what, os.fspath(path))
        self._resumed(what)
        return checkpoint

    def _check_step_guard(self) -> None:
        """on_sigterm="save" takes the final checkpoint where the signal lands; without
        LakeStepGuard that may be inside an optimizer step (a half-updated state saved as the
        latest).  Said once, at the first save."""
        import sys

        if self._options.get("on_sigterm") != "save" or getattr(self, "_guard_said", False):
            return
        self._guard_said = True
        guard = sys.modules.get(f"{__package__}.stepguard")
        if guard is None or not guard.SEEN:
            log.warning("ckptlake: LakeCheckpointIO(on_sigterm='save') without "
                        "ckptlake.torch.LakeStepGuard() in the Trainer's callbacks: a SIGTERM "
                        "inside an optimizer step would save a half-updated state as the latest "
                        "version")

    def remove_checkpoint(self, path: Any) -> None:
        raw = os.fspath(check_arg("path", path, "path"))
        if "://" not in raw and _is_placeholder(raw):
            # now, as Lightning removes a file: its next name check must find the name free
            with contextlib.suppress(OSError):
                os.remove(raw)
        done = self._submit(self._remove, _path_key(raw))
        if not self.async_upload:
            wait_result(done)

    def teardown(self) -> None:
        """End of fit/validate/test: wait for uploads and removals, raise an upload failure.
        The plugin stays usable: a new checkpointer is made when needed, and a later fit neither
        names this fit's resumed-from version as its parent nor spares it, nor skips
        removals for this fit's failed or skipped save.

        The next checkpointer is made by the next fit's first save.  With `on_sigterm`, a
        SIGTERM in the next fit before that save reaches the closed one (Lightning's signal
        connector puts back, after this, the handler it found at the start of the fit): it
        then makes the next one, which takes the signal (Checkpointer._revive).  Made here
        instead, it cost a thread per torn-down plugin, store reads on Lightning's own
        SIGTERM exit path, and a window in which a SIGTERM found neither."""
        with self._lock:
            ck, self._ck = self._ck, None
            jobs, self._jobs = self._jobs, None
        try:
            if ck is not None:
                with self._lock:
                    self._retired_ck = ck
                if ck.on_sigterm is not None:
                    ck._revive = self._checkpointer
                ck.close()
        finally:
            if jobs is not None:
                jobs.shutdown(wait=True)
            with self._lock:
                self._resumed_from = None
                self._failed = []

    # ---- public helpers --------------------------------------------------------------------

    def wait(self) -> None:
        """Block until every save is committed and every removal done; raise the first
        background upload failure."""
        with self._lock:
            ck = self._ck
        if ck is not None:
            ck.wait()
        wait_result(self._submit(lambda: None))

    def version_of(self, path: Any) -> int | None:
        """The newest version saved under `path` (after waiting for pending work); None if
        there is none."""
        key = _path_key(os.fspath(check_arg("path", path, "path")))
        self.wait()
        found = wait_result(self._submit(self._lookup, key))
        return found[-1] if found else None

    def resume_path(self, selector: str = "latest") -> str | None:
        """`ckpt_path` for a job that resumes when it can: `lake://ARTIFACT@vN`, the version
        `selector` names now, or None while the artifact has no version (the first run starts
        fresh).  Unlike `ckpt_path="last"`, which Lightning resolves in each node's own
        `dirpath`, every rank reads this from the lake, so the ranks of a multi-node run agree
        (unless a version is committed between their calls); pinned to a number, so a save
        during the run cannot change what a rank loads.  A selector that names nothing in an
        artifact that has versions is an error (NotFound), not a fresh start, and so is a
        version that is not a Lightning checkpoint (before `fit` starts, not at every restart).

        No lake at the URL at all is a first run too (the first save creates the lake), but
        also what a mistyped URL or a node without the lake's mount looks like: said in a
        warning, since that node would start over while the others resume."""
        check_arg("selector", selector, "str")
        ref = parse_ref(f"{self.artifact}@{selector}")
        try:
            info = self.lake.resolve(ref)
        except NotFound:
            try:
                live = self.lake.versions(self.artifact)
            except NotFound:  # no version (never pushed, or every one deleted)
                live = []
            if live:
                raise
            if not self.lake.exists():
                log.warning("ckptlake: no lake at %s: %s starts fresh (its first save creates "
                            "the lake); if this is a restart, check the lake's URL (or that "
                            "this node has its mount)", self.lake.url, self.artifact)
            return None
        what = f"{info.artifact}@v{info.version}"
        self._check_lightning(what)
        return f"{SCHEME}{what}"

    @property
    def results(self) -> list["PushResult"]:
        """Commits of the current checkpointer (since the last teardown), in order."""
        with self._lock:
            return list(self._ck.results) if self._ck is not None else []

    # ---- internals -------------------------------------------------------------------------

    def _checkpointer(self) -> "Checkpointer":
        from ..checkpointer import Checkpointer

        with self._lock:
            if self._ck is None:
                parents = list(self._user_parents)
                if self._resumed_from is not None:
                    parents.append((self._resumed_from, "resumed-from"))
                try:
                    self._ck = Checkpointer(self.lake, self.artifact, parents=parents,
                                            **self._options)
                except UsageError as exc:
                    if self._resumed_from is None:
                        raise
                    # The resumed-from version is one of the user's parents already; anything
                    # else that refuses the edge (a name too long for its lineage marker) is
                    # said: the saves go on without it.
                    if "given twice" not in str(exc):
                        log.warning("ckptlake: %s: saving without the resumed-from parent %s: %s",
                                    self.artifact, self._resumed_from, exc)
                    self._ck = Checkpointer(self.lake, self.artifact,
                                            parents=self._user_parents, **self._options)
                if self._retired_ck is not None:
                    self._ck._take_over(self._retired_ck)
            return self._ck

    def _resumed(self, what: str) -> None:
        """Name `what` as the parent of the next saves: a new checkpointer (resolving the
        parents once), as the current one is idle after `wait`."""
        with self._lock:
            self._resumed_from = what
            ck, self._ck = self._ck, None
            if ck is not None:
                self._retired_ck = ck
        if ck is not None:
            ck.close()
        self._checkpointer()

    def _submit(self, fn: Any, *args: Any) -> "Future[Any]":
        with self._lock:
            if self._jobs is None:
                self._jobs = Executor(max_workers=1,
                                                thread_name_prefix="ckptlake-lightning")
            return self._jobs.submit(fn, *args)

    def _ref_for(self, path: Any) -> Ref:
        if isinstance(path, Ref):
            return path
        text = os.fspath(check_arg("path", path, "path"))
        if text.startswith(SCHEME):
            rest = text[len(SCHEME):]
            if not rest or rest.startswith("@"):
                rest = self.artifact + rest
            return parse_ref(rest)
        key = _path_key(text)
        found = wait_result(self._submit(self._lookup, key))
        if not found and "://" not in text and _is_placeholder(text):
            # Our placeholder, its upload never committed (the process died before; or the
            # version was deleted since).  For ckpt_path="last", which Lightning found by this
            # file, the latest version is what was meant: refusing made every restart of an
            # auto-resuming job fail.  Any other path names one checkpoint: refused.
            if os.path.basename(text).startswith("last"):
                log.warning("ckptlake: %s names no committed version of %s (its upload never "
                            "finished); resuming from the latest version instead", text,
                            self.artifact)
                return parse_ref(self.artifact)
            raise NotFound(f"ckpt_path {text!r}: its upload to {self.artifact} never committed "
                           "(or the version was deleted)",
                           hint=f"remove that placeholder file, or resume from a ref: "
                                f"ckpt_path='{SCHEME}{self.artifact}@latest'")
        if not found:
            raise NotFound(f"ckpt_path {text!r}: no version of {self.artifact} was saved as "
                           f"{key}", hint=f"resume from a ref: ckpt_path='{SCHEME}"
                           f"{self.artifact}@step=N' (or @latest, @min:METRIC)")
        return Ref(self.artifact, "version", found[-1])

    def _check_lightning(self, what: str) -> None:
        """Refuse a version that is not a Lightning checkpoint before downloading its
        tensors: it must hold a training-state skeleton whose top level has Lightning's keys."""
        listing = self.lake.files(what)
        names = {f["path"] for f in listing["files"]}
        if _state.SKELETON_FILENAME not in names:
            raise NotALightningCheckpoint(
                f"{what} is not a Lightning checkpoint: it holds no training state "
                f"({_state.SKELETON_FILENAME})",
                hint="resume from versions written by ckptlake.torch.LakeCheckpointIO")
        skeleton = _state.parse(b"".join(self.lake.cat(what, _state.SKELETON_FILENAME)), what)
        root = skeleton.get("root")
        keys = {item[0] for item in root.get("$dict", ()) if isinstance(item, list) and item} \
            if isinstance(root, dict) else set()
        missing = [k for k in _REQUIRED if k not in keys]
        if missing:
            raise NotALightningCheckpoint(
                f"{what} is not a Lightning checkpoint: its training state has no "
                + " or ".join(missing),
                hint="resume from versions written by ckptlake.torch.LakeCheckpointIO")

    # -- the jobs thread: FIFO, so each job runs after the saves submitted before it --

    def _read_index(self) -> dict[str, list[int]]:
        index: dict[str, list[int]] = {}
        try:
            found = self.lake.versions(self.artifact)
        except NotFound:
            found = []
        for v in found:
            key = v.metadata.get(PATH_KEY)
            if key:
                index.setdefault(key, []).append(v.version)
        return index

    def _lookup(self, key: str) -> list[int]:
        return list(self._index.get(key, []))

    def _write_placeholder(self, raw: str) -> None:
        """What ModelCheckpoint's `file_exists` sees (module doc).  Failing to write it loses
        nothing (a reused name then keeps both versions): logged, never raised."""
        if os.path.lexists(raw) and not _is_placeholder(raw):
            log.warning("ckptlake: did not write a placeholder over %s: it is not one", raw)
            return
        text = (f"This checkpoint is stored in the ckptlake lake {self.lake.url} as a version "
                f"of {self.artifact} saved as this path (metadata {PATH_KEY}); load it with "
                f"LakeCheckpointIO, or list it with: ckptlake ls {self.artifact}\n")
        try:
            os.makedirs(os.path.dirname(raw) or ".", exist_ok=True)
            with open(raw, "wb") as f:
                f.write(PLACEHOLDER_MAGIC + text.encode())
        except OSError as exc:
            log.warning("ckptlake: could not write the placeholder %s (%s): Lightning may reuse "
                        "its name; both versions are then kept", raw, exc)

    def _after_save(self, key: str, future: "Future[PushResult]", overwrite: bool) -> None:
        try:
            result = wait_result(future)
        except BaseException:  # noqa: BLE001 - the checkpointer raises it at the next call
            self._failed.append((key, "failed to upload"))
            return
        with self._job_errors(key):
            self._replace(key, result, overwrite)

    def _replace(self, key: str, result: "PushResult", overwrite: bool) -> None:
        index = self._index
        older = [n for n in index.get(key, []) if n != result.version]
        # Lightning did not know the name was taken (on disk it would have versioned it), so
        # an older version it has not removed may still be one of its best: kept, and no
        # longer indexed, so a later removal of the path deletes only what Lightning means.
        unseen = [] if overwrite else [n for n in older if n not in self._disowned]
        if unseen:
            log.warning("ckptlake: %s was saved as %s, which already names %s: kept both "
                        "(Lightning reused the name without seeing its file; delete the older "
                        "with `ckptlake rm` or leave it to retention)", result.ref, key,
                        ", ".join(f"{self.artifact}@v{n}" for n in unseen))
            older = [n for n in older if n not in unseen]
        kept = self._delete(key, [n for n in older if not self._is_resumed(n)],
                            f"replaced by {result.ref} (saved again as {os.path.basename(key)})")
        index[key] = sorted({*kept, *(n for n in older if self._is_resumed(n)),
                             result.version})

    def _is_resumed(self, number: int) -> bool:
        """The version this run resumed from: never deleted by it, as Lightning never deletes
        the file it resumed from."""
        return f"{self.artifact}@v{number}" == self._resumed_from

    def _remove(self, key: str) -> None:
        if self._failed:
            # `key` may name no version at all (every save of it failed): say what was not
            # deleted, not that versions were kept
            path, what = self._failed[0]
            self._disowned.update(self._index.get(key, ()))
            log.warning("ckptlake: %s: did not delete %s, which Lightning removed: the save "
                        "of %s %s, so what it names, if anything, may be the best this run "
                        "has; retention or `ckptlake gc` deletes it later",
                        self.artifact, key, os.path.basename(path), what)
            return
        with self._job_errors(key):
            self._remove_now(key)

    @contextlib.contextmanager
    def _job_errors(self, key: str) -> Iterator[None]:
        """A failed removal or replacement (reading the artifact's versions, say) loses
        nothing, a version stays behind: logged at ERROR and kept in `removal_errors`."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - see above
            self.removal_errors.append(exc)
            log.error("ckptlake: removing the old versions of %s (%s) failed: %s",
                      self.artifact, key, exc, exc_info=not isinstance(exc, CkptlakeError))

    def _remove_now(self, key: str) -> None:
        index = self._index
        doomed = index.pop(key, [])
        if not doomed:
            log.info("ckptlake: Lightning removed %s, which names no version of %s", key,
                     self.artifact)
            return
        resumed = [n for n in doomed if self._is_resumed(n)]
        if resumed:
            log.info("ckptlake: kept %s (%s): this run resumed from it", self._resumed_from,
                     key)
        kept = self._delete(key, [n for n in doomed if n not in resumed],
                            f"removed by Lightning ({os.path.basename(key)})")
        self._disowned.update(kept + resumed)
        if kept or resumed:
            index[key] = sorted(kept + resumed)

    def _delete(self, key: str, numbers: Sequence[int], reason: str) -> list[int]:
        """Delete versions through gc's deleter; returns those kept (the latest version, or
        on failure).  Failures are logged and kept in `removal_errors`."""
        if not numbers:
            return []
        from ..core import catalog
        from ..core.gc import ArtifactPlan, GcResult, VersionPlan, delete_versions
        from ..core.identity import utcnow

        try:
            latest = catalog.version_numbers(self.lake.store, self.artifact)[-1:]
            kept = [n for n in numbers if n in latest]
            if kept:
                log.warning("ckptlake: kept %s@v%d (%s): it is the latest version of the "
                            "artifact, which is never deleted by retention (a resume reads "
                            "it)", self.artifact, kept[0], key)
            now = utcnow()
            plans = [VersionPlan(artifact=self.artifact, version=n, step=None, created=now,
                                 age_seconds=0, total_bytes=0, files=0, keep=False,
                                 rule="lightning", reason=reason)
                     for n in numbers if n not in kept]
            if not plans:
                return kept
            ap = ArtifactPlan(artifact=self.artifact, rule="lightning", rule_line=None,
                              versions=len(plans), delete=plans, kept=[], kept_by={})
            result = GcResult()
            delete_versions(self.lake.store, ap, result, deleted=now)
        except Exception as exc:  # noqa: BLE001 - nothing is lost: a version stays behind
            self.removal_errors.append(exc)
            log.error("ckptlake: could not delete %s versions %s (%s): %s", self.artifact,
                      ", ".join(f"v{n}" for n in numbers), key, exc,
                      exc_info=not isinstance(exc, CkptlakeError))
            return list(numbers)
        self.removed += result.versions_deleted
        if result.versions_deleted:
            log.info("ckptlake: deleted %s (%s)", ", ".join(result.versions_deleted), reason)
        spared = [int(r.rsplit("@v", 1)[1]) for r in result.versions_spared]
        if spared:
            log.info("ckptlake: kept %s: aliased", ", ".join(result.versions_spared))
        latest = [int(r.rsplit("@v", 1)[1]) for r in result.versions_kept_latest]
        if latest:
            log.info("ckptlake: kept %s: the artifact's latest version since an rm deleted the "
                     "one above it", ", ".join(result.versions_kept_latest))
        return kept + spared + latest


def _path_key(path: str) -> str:
    """The identity of a Lightning path: absolute for a local path (so `best_model_path` and
    a relative `trainer.save_checkpoint("x.ckpt")` agree), as given for a URL."""
    if "://" in path:
        return path
    return os.path.abspath(os.path.expanduser(path))


def _is_last(checkpoint: Mapping[str, Any], key: str) -> bool:
    """Whether `key` is a ModelCheckpoint's last checkpoint (`save_last`), which it sets
    before saving and overwrites on disk at each save."""
    callbacks = checkpoint.get("callbacks")
    if not isinstance(callbacks, Mapping):
        return False
    for state in callbacks.values():
        last = state.get("last_model_path") if isinstance(state, Mapping) else None
        if isinstance(last, (str, os.PathLike)) and os.fspath(last) \
                and _path_key(os.fspath(last)) == key:
            return True
    return False


def _is_placeholder(raw: str) -> bool:
    """Whether the file at `raw` is one of ours: a regular file (not followed through a link,
    never a FIFO, which an open would wait on) that starts with the magic line."""
    import stat

    try:
        if not stat.S_ISREG(os.lstat(raw).st_mode):
            return False
        with open(raw, "rb") as f:
            return f.read(len(PLACEHOLDER_MAGIC)) == PLACEHOLDER_MAGIC
    except OSError:
        return False


def _check_options(options: Mapping[str, Any]) -> None:
    """A misspelt option fails here, with the accepted ones, not as a TypeError from the
    checkpointer (hf.LakeTrainerCallback does the same)."""
    from ..checkpointer import Checkpointer

    accepted = [name for name, p in inspect.signature(Checkpointer).parameters.items()
                if p.kind is p.KEYWORD_ONLY]
    bad = [k for k in options if k not in accepted]
    if bad:
        raise UsageError(f"LakeCheckpointIO: unknown option {bad[0]!r}",
                         hint="accepted: async_upload, " + ", ".join(accepted))


def _monitored(checkpoint: Mapping[str, Any], path: str) -> dict[str, float]:
    """{monitor: score} for each ModelCheckpoint whose top k holds `path` (its state in the
    checkpoint: `monitor`, `best_k_models` {path: score}, updated before it saves)."""
    out: dict[str, float] = {}
    callbacks = checkpoint.get("callbacks")
    if not isinstance(callbacks, Mapping):
        return out
    for state in callbacks.values():
        if not isinstance(state, Mapping):
            continue
        monitor, best = state.get("monitor"), state.get("best_k_models")
        if not isinstance(monitor, str) or not isinstance(best, Mapping) or path not in best:
            continue
        score = best[path]
        try:
            value = float(score.item() if hasattr(score, "item") else score)
        except (TypeError, ValueError):
            continue
        if math.isfinite(value):
            out[monitor] = value
    return out


def _storage_options(options: Any) -> dict[str, Any]:
    if options is None:
        return {}
    if not isinstance(options, Mapping) or any(k not in _STORAGE_OPTIONS for k in options):
        raise UsageError(f"storage_options must be a dict with keys among "
                         f"{', '.join(_STORAGE_OPTIONS)}, got {options!r}")
    out = dict(options)
    # checked here, on Lightning's thread: the merge with the monitored metrics and the
    # checkpointer's checks come later (a list of metrics failed there with a TypeError)
    out["metrics"], out["metadata"], out["aliases"] = check_version_fields(
        out.get("metrics"), out.get("metadata"), out.get("aliases"))
    return out


__all__ = ["LakeCheckpointIO", "NotALightningCheckpoint", "SCHEME", "PATH_KEY"]
