"""DCP storage: `dcp.save` / `dcp.async_save` / `dcp.load` with a lake as the storage.

Layout: the version holds exactly what torch's FileSystemWriter writes into a directory, the
`__<rank>_<n>.distcp` data files of every rank and the global `.metadata` (docs/format.md,
"DCP checkpoints"), so a pulled version loads with `FileSystemReader` too.

Writing reuses the sharded-commit protocol (core/shards.py) instead of a coordinator of our own,
with WORLD + 1 shard records: each of DCP's WORLD ranks writes its data files with
FileSystemWriter's own code (so the bytes are torch's), through a file system whose write
streams are lake writers (core/streampush.py): the bytes become chunk uploads while torch
serialises them, with no staged copy, and the rank records the finished files as record
`<rank>-of-<WORLD+1>` at the end of `write_data`, all ranks in parallel; the coordinator
records `.metadata` alone as record `<WORLD>-of-<WORLD+1>` in `finish`.  DCP gathers every
rank's write results before the coordinator's `finish`, so the metadata record is always the
last one in: its push commits the version, before DCP's closing broadcast lets any rank return.
A rank that fails or dies before its record is written leaves the step pending (no version);
a re-run of the same step (same bytes) completes it exactly once.

`dcp.async_save` writes from torch's thread, which Python lets finish when the main thread is
done, but after concurrent.futures has begun refusing new work, so the lake writes would fail
and the checkpoint be lost unseen.  An exit hook that runs first (as the Checkpointer's does)
waits for every async save under way; one that fails then is logged as LOST.  A save is known
to the hook from the caller's thread (the writer's construction, or its `stage`), because
torch's thread may reach the writer only after the main thread has finished; with a stager
of the caller's own (`async_stager=`) the construction is the only such moment.  An async save
that fails before the exit is logged at once (nobody may ever read its future); a synchronous
`dcp.save` is not tracked at all: its failure is raised to its caller.

Reading resolves the ref once (all reads come from that one version).  `read_data` gets a
rank's whole plan, every (file, offset, length) it needs: the chunks those touch are fetched
in parallel, each once and verified before use, and handed to torch as they arrive
(planread.py), so a reader with another world size (resharding) fetches what it needs.  A large
tensor item is read from those chunks straight into the tensor it loads into, where that is
exactly what torch.load + copy_ would give (itemread.py); others go through torch.load.

Reading never runs code from the lake: anyone who can push could otherwise make every loading
process run theirs.  The `.metadata` is unpickled with only DCP's metadata classes (and the
torch/builtin values they hold) allowed, never with torch's plain `pickle.load`; an object item
(BYTE_IO), which torch's planner loads with `torch.load(weights_only=False)`, reaches the
planner only once torch's weights-only load has accepted its bytes.

The ranks must agree on what they read and write, each having resolved its own ref or been
given its own step: every rank's local plan says which (artifact, version) it reads, or which
(lake, artifact, step) it writes, and the coordinator compares them in `prepare_global_plan`,
before any data is read or written (no collective of our own: the plans are gathered anyway).
A writer's target rides along in its write results too, for the coordinator to check again
before `.metadata` where the plans lost it (a planner that drops storage_data).
"""
from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import io
import logging
import os
import pickle
import re
import threading
import time
import warnings
import weakref
from typing import IO, TYPE_CHECKING, Any, Iterator

from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.filesystem import FileSystemBase, _StoragePrefix
from torch.distributed.checkpoint.metadata import StorageMeta
from torch.distributed.checkpoint.staging import BlockingAsyncStager

from ..core.exithooks import before_pools_close
from ..core.reader import DEFAULT_READAHEAD, LakeFile
from ..core.values import check_arg
from ..errors import Conflict, IntegrityError, NotFound, UsageError
from ..format import layout
from ..format.refs import Ref, validate_artifact
from ..policy.replicas import server_of
from ._args import check_lake, check_version_fields
from .planread import DEFAULT_WINDOW

if TYPE_CHECKING:
    from ..core.shards import ShardPushResult
    from ..lake import Lake

log = logging.getLogger("ckptlake")

METADATA_FILE = ".metadata"  # torch's name for the global DCP metadata file
DATA_SUFFIX = ".distcp"


class NotADcpCheckpoint(UsageError):
    """The version exists but holds no DCP `.metadata`: it was not written by `dcp.save`."""


@dataclasses.dataclass
class _LakePrefix(_StoragePrefix):
    """FileSystemWriter's per-rank file prefix plus the world size, which only the coordinator
    knows (from the number of plans); the global plan carries it to every rank."""

    world: int = 1


@dataclasses.dataclass(eq=False)
class _SaveTarget:
    """What one rank's writer saves to, in its local plan: the coordinator refuses a save whose
    ranks disagree before anything is written (each would otherwise record a pending step of
    its own, and torch would fail with an untyped error after the uploads).  Also in each
    rank's write results, for `_finish` to check where the plans could not carry it.
    eq=False: compared by value explicitly; hashed by identity for _STALE_TARGETS.

    `lake` is what identifies the lake across hosts, compared: an S3 lake's bucket, prefix
    and endpoint; None for a file:// lake, whose path says nothing (ranks may reach one
    shared directory through a symlink or another mount point).  `url`: for messages."""

    lake: str | None
    artifact: str
    step: int
    url: str = ""

    @classmethod
    def of(cls, writer: "LakeWriter") -> "_SaveTarget":
        url = writer.lake.url
        lake = None
        if url.startswith("s3://"):
            client = getattr(writer.lake.store, "_client", None)
            endpoint = getattr(getattr(client, "meta", None), "endpoint_url", None)
            server = server_of(endpoint)  # (`localhost` and 127.0.0.1 are one server)
            if server is not None:
                scheme, host, port, path = server
                url_ = f"{scheme}://{host}" + (f":{port}" if port is not None else "") + path
                lake = f"{url} at {url_}"
            else:
                lake = url
        return cls(lake, writer.artifact, writer.step, url)

    @property
    def key(self) -> tuple[str | None, str, int]:
        return (self.lake, self.artifact, self.step)


# In a rank's write results (stripped by `_finish`): the rank's _SaveTarget.
_TARGET_INDEX = "__ckptlake_save_target__"
# (lake url, artifact) -> (step, version) of the highest step this process committed: two
# dcp.async_save calls that overlap (torch runs each on an executor of its own) commit in the
# order they finish, so a later step can take the lower version number.
_TOP_COMMIT: dict[tuple[str, str], tuple[int, int]] = {}
_TOP_LOCK = threading.Lock()


def _disagreement(targets: dict[int, _SaveTarget]) -> str | None:
    """'rank 0: run step 10; rank 1: run step 11' when the ranks do not save one checkpoint."""
    groups = _by_value({i: t.key for i, t in targets.items()})
    if len(groups) < 2:
        return None
    lakes = len({lake for (lake, _, _), _ in groups}) > 1
    return "; ".join(
        f"{_ranks_text(ranks)}: {artifact} step {step}" + (f" in {lake or 'a file:// lake'}"
                                                           if lakes else "")
        for (lake, artifact, step), ranks in groups)


# Targets the coordinator has already checked.  With torch's plan caching
# (`DefaultSavePlanner(enable_plan_caching=True)`) a rank whose plan did not change sends no
# plan, and the coordinator may re-plan with the plan it cached from an earlier save, target
# and all: such a stale target says nothing about this save, so it is not compared.
_STALE_TARGETS: "weakref.WeakSet[_SaveTarget]" = weakref.WeakSet()


@dataclasses.dataclass(frozen=True)
class _ReadSource:
    """The version one rank's reader reads, in its local plan."""

    artifact: str
    version: int


def _ranks_text(ranks: list[int], limit: int = 8) -> str:
    shown = ", ".join(map(str, ranks[:limit]))
    more = f" and {len(ranks) - limit} more" if len(ranks) > limit else ""
    return f"rank{'s' if len(ranks) > 1 else ''} {shown}{more}"


def _by_value(values: dict[int, Any]) -> list[tuple[Any, list[int]]]:
    """[(value, ranks that have it)], in order of the lowest rank."""
    groups: dict[Any, list[int]] = {}
    for rank in sorted(values):
        groups.setdefault(values[rank], []).append(rank)
    return list(groups.items())


def _forget_cached_plans() -> None:
    """torch's plan caching (`DefaultSavePlanner(enable_plan_caching=True)`) sends no plan for
    a rank whose plan did not change, nor any storage_data: the coordinator would never see
    that rank's _SaveTarget, and ranks saving different steps would upload before anything
    noticed.  Forget the plans torch cached (class attributes of SavePlanner, private: a torch
    without them has nothing to forget), so every rank plans afresh with every LakeWriter save;
    it costs caching's saving of the planning collectives.  `_finish` checks the targets again
    (a planner of another kind may drop them too)."""
    try:
        from torch.distributed.checkpoint.planner import SavePlanner
    except ImportError:  # pragma: no cover
        return
    for name in ("_cached_save_plan", "_cached_all_plans", "_cached_global_plan",
                 "_cached_metadata", "_cached_final_save_plan"):
        cached = getattr(SavePlanner, name, None)
        if isinstance(cached, dict):
            cached.clear()


class LakeWriter(FileSystemWriter):
    """A DCP `StorageWriter`: `dcp.save(state, storage_writer=LakeWriter(lake, "run", step=N))`.

    Every rank passes its own writer with the same artifact and step; all ranks' data become
    one version of `artifact` at `step`, committed once after every rank's files are stored,
    with the lake's chunk dedup, compression and verification.  One writer per save (the step
    is the version's identity: saving the same step again with the same state and settings
    (`thread_count`) is a harmless repeat; another `thread_count` splits the data into other
    files, and the lake refuses that as a Conflict).
    `metrics`, `metadata`, `aliases` are recorded on the version like `Lake.push`'s.
    `thread_count`: torch's writer threads, which also split a rank's data into that many
    files (written and uploaded at once, sharing the lake's concurrency).  `staging_dir` is
    deprecated and ignored: files are no longer staged (a DeprecationWarning says so).
    `cache_staged_state_dict` (`dcp.async_save` only): keep this rank's staged copy of the
    state after the save, per artifact in the process, and copy the next async save of the
    artifact into it (no fresh memory to fault in: the loop waits less); it costs one copy
    of the rank's state held between saves (ckptlake/torch/staging.py; `staging.clear_cache()`
    frees it).  False: a fresh copy per save, freed with it.
    """

    def __reduce__(self) -> Any:
        # torch's process executor (async_checkpointer_type=PROCESS) pickles the writer into
        # another process: a Lake (its connections, locks, thread pools) does not go there,
        # and the attempt failed as "cannot pickle '_thread.lock' object"
        raise UsageError("a LakeWriter works in the process that made it: use dcp.async_save "
                         "with its default thread executor (async_checkpointer_type=THREAD)")

    def __init__(self, lake: "Lake", artifact: str, *, step: int,
                 metrics: dict[str, float] | None = None, metadata: dict[str, str] | None = None,
                 aliases: tuple[str, ...] | list[str] = (), staging_dir: str | os.PathLike | None = None,
                 thread_count: int = 1, stale_after: float | None = None,
                 cache_staged_state_dict: bool = True) -> None:
        # all checked here, before any upload: torch calls _record after the rank's data
        check_lake(lake)
        validate_artifact(artifact)
        layout.check_step(step)
        self._metrics, self._metadata, self._aliases = check_version_fields(
            metrics, metadata, aliases)
        check_arg("staging_dir", staging_dir, "path", optional=True, empty=True)  # (ignored)
        thread_count = check_arg("thread_count", thread_count, "int", positive=True)
        stale_after = check_arg("stale_after", stale_after, "seconds", optional=True)
        cache_staged_state_dict = check_arg("cache_staged_state_dict", cache_staged_state_dict,
                                            "bool")
        self.lake, self.artifact, self.step = lake, artifact, step
        if staging_dir is not None:
            warnings.warn("LakeWriter(staging_dir=...) is deprecated and ignored: each rank's "
                          "files are streamed into the lake, never staged",
                          DeprecationWarning, stacklevel=2)
        self._stale_after = stale_after
        self._is_coordinator = True
        self._world = 1
        self.result: "ShardPushResult | None" = None  # this rank's data push, after the save
        self.commit_result: "ShardPushResult | None" = None  # the coordinator's .metadata push
        self._version: int | None = None  # the committed version, once learned
        self._async: _AsyncSave | None = None  # a dcp.async_save under way, for the exit hook
        super().__init__("", sync_files=False, thread_count=thread_count,
                         cache_staged_state_dict=cache_staged_state_dict, overwrite=True)
        self.fs = _LakeFS(lake)
        self.path = ""  # FileSystemWriter made it Path("."): names are relative to the version
        # Known to the exit hook from here, the caller's thread: with a stager of the caller's
        # own, torch never calls stage(), and its thread may reach this writer only after the
        # main thread has finished and the hook has looked.
        self._track()

    @property
    def version(self) -> int | None:
        """The version this save committed (None before it has).  Only the rank whose record
        completed the step learns it from its push; the others read it from the step's claim
        (docs/format.md, "Sharded commits"), which names the version the step's records became,
        once `dcp.save` has returned (the commit precedes every rank's return).  Not by
        `@step=`: another version pushed at the same step later would be the newest."""
        if self._version is not None:
            return self._version
        if self.commit_result is not None and self.commit_result.version is not None:
            self._version = self.commit_result.version
        elif self.result is None:
            return None
        elif self.result.version is not None:
            self._version = self.result.version
        else:
            self._version = self._claimed_version(self.result.world)
        return self._version

    def _claimed_version(self, world: int) -> int | None:
        from ..core import shards

        key = layout.shard_claim_key(self.artifact, self.step)
        try:
            data = self.lake.store.get(key)
        except NotFound:
            return None
        if not data:
            return None  # a claim's PUT cut short: not committed
        claim = shards.decode_claim(data, key=key)
        # the claim of a world this rank's record is part of (records are written once)
        if claim.state != "committed" or claim.world != world:
            return None
        return claim.version

    def reset(self, checkpoint_id: str | os.PathLike | None = None) -> None:
        # checkpoint_id names a directory for FileSystemWriter; here the lake, artifact and
        # step name the checkpoint, so a different id is a mistake, not a place to write.
        if checkpoint_id is not None and str(checkpoint_id) != self._checkpoint_name():
            raise UsageError(f"LakeWriter writes {self._checkpoint_name()}, not checkpoint_id "
                             f"{checkpoint_id!r}", hint="leave checkpoint_id unset")
        self.fs = _LakeFS(self.lake)
        self.path = ""
        self.save_id = ""
        self.result = self.commit_result = None
        self._version = None

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike) -> bool:
        return False  # never chosen for a bare checkpoint_id: it needs a lake and an artifact

    def _checkpoint_name(self) -> str:
        return f"{self.artifact}@step{self.step}"

    def storage_meta(self) -> StorageMeta | None:
        # torch's first call in a save, from the thread the save runs in
        self._save_started()
        # The same for every save of the artifact (no staging path, step or random save id):
        # a re-run of a step writes the same `.metadata` (its shard record is a harmless
        # repeat), and saving an unchanged state at another step uploads nothing at all.
        return StorageMeta(checkpoint_id=self.artifact, save_id="")

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        with self._async_step(last=False):
            super().set_up_storage_writer(is_coordinator, *args, **kwargs)
            if not self.use_collectives:
                raise UsageError("LakeWriter needs dcp.save with collectives "
                                 "(use_collectives=True)",
                                 hint="all ranks' files are committed as one version")
        self._is_coordinator = is_coordinator
        _forget_cached_plans()

    def prepare_local_plan(self, plan: Any) -> Any:
        plan = super().prepare_local_plan(plan)
        return dataclasses.replace(plan, storage_data=_SaveTarget.of(self))

    def prepare_global_plan(self, plans: list[Any]) -> list[Any]:
        self._check_targets(plans)
        world = len(plans)
        return [dataclasses.replace(p, storage_data=_LakePrefix(f"__{i}_", world))
                for i, p in enumerate(plans)]

    def _check_targets(self, plans: list[Any]) -> None:
        targets = {i: p.storage_data for i, p in enumerate(plans)
                   if isinstance(p.storage_data, _SaveTarget)
                   and p.storage_data not in _STALE_TARGETS}
        for t in targets.values():
            _STALE_TARGETS.add(t)
        # the coordinator's own writer counts as well: its plan may be a cached one
        targets.setdefault(self.rank or 0, _SaveTarget.of(self))
        said = _disagreement(targets)
        if said is None:
            return
        raise UsageError(f"the ranks of this dcp.save do not write the same checkpoint ({said}): "
                         "nothing was written",
                         hint="give every rank's LakeWriter the same lake, artifact and step: "
                              "the global step, not a per-rank counter")

    def write_data(self, plan: Any, planner: Any) -> Any:
        # only the coordinator has more to write (finish)
        with self._async_step(last=not self._is_coordinator):
            storage: _LakePrefix = plan.storage_data
            self._world = storage.world
            fs = self.fs = _LakeFS(self.lake, self.thread_count)
            fs.begin(self.artifact, self.step, self.rank or 0, self._world + 1)
            fut = super().write_data(plan, planner)
            fut.wait()
            # Raises here, so DCP reports this rank's failure to the coordinator (no finish).
            self.result = self._record(fs, self.rank or 0)
            # this rank's files are written and recorded: nothing reads the staged copy now
            # (not released on failure: the buffers are then dropped, never reused)
            self._release_staged()
            # where this rank saved, for the coordinator's _finish (see _check_written)
            from torch.distributed.checkpoint.metadata import MetadataIndex
            from torch.distributed.checkpoint.storage import WriteResult
            from torch.futures import Future

            done: Future = Future()
            done.set_result([*fut.value(), WriteResult(
                index=MetadataIndex(_TARGET_INDEX), size_in_bytes=0,
                storage_data=_SaveTarget.of(self))])
            return done

    def finish(self, metadata: Any, results: list[Any]) -> None:
        with self._async_step(last=True):
            self._finish(metadata, results)

    def _finish(self, metadata: Any, results: list[Any]) -> None:
        targets: dict[int, _SaveTarget] = {}
        for i, rank in enumerate(results):
            targets.update({i: r.storage_data for r in rank
                            if isinstance(r.storage_data, _SaveTarget)})
        results = [[r for r in rank if not isinstance(r.storage_data, _SaveTarget)]
                   for rank in results]
        self._check_written(targets)
        # torch lists a rank's results in the order its writer threads happened to finish,
        # and `.metadata` pickles them in that order: in file order, identical saves write
        # identical bytes (a re-run of the step repeats its record instead of conflicting, an
        # unchanged state uploads nothing), and thread_count=1 keeps the order it always had.
        results = [sorted(rank, key=lambda r: (r.storage_data.relative_path,
                                               r.storage_data.offset)) for rank in results]
        data_fs, fs = self.fs, _LakeFS(self.lake)
        self.fs = fs
        fs.begin(self.artifact, self.step, self._world, self._world + 1)
        try:
            super().finish(metadata, results)  # writes (and renames) .metadata
        finally:
            self.fs = data_fs
        result = self.commit_result = self._record(fs, self._world)
        if not result.committed:
            seen = f"{result.shards_present} of {result.world} shard records seen"
            urls = _by_value({i: t.url for i, t in targets.items()})
            if len(urls) > 1:  # file:// paths, not compared before: not one directory after all
                said = "; ".join(f"{_ranks_text(ranks)}: {url}" for url, ranks in urls)
                raise UsageError(f"{self.artifact} step {self.step}: not committed, as the "
                                 f"ranks wrote to different lakes ({said}; {seen})",
                                 hint="give every rank the same lake (one shared directory)")
            raise Conflict(f"{self.artifact} step {self.step}: not committed after every "
                           f"rank's write ({seen})",
                           hint=f"`ckptlake ls {self.artifact} --pending` shows the step; "
                                "save it again")

    def _check_written(self, targets: dict[int, _SaveTarget]) -> None:
        """The agreement check of `prepare_global_plan`, for a save whose plans did not carry
        the ranks' targets (a planner that drops or caches `storage_data`): too late to write
        nothing, but before `.metadata` is, so no version mixes the ranks' saves."""
        said = _disagreement(targets)
        if said is None:
            return
        raise UsageError(f"the ranks of this dcp.save do not write the same checkpoint ({said}): "
                         "not committed; each rank's files are recorded as a pending step",
                         hint="give every rank's LakeWriter the same lake, artifact and step: "
                              "the global step, not a per-rank counter; `ckptlake ls "
                              f"{self.artifact} --pending` lists the unfinished steps")

    def _record(self, fs: "_LakeFS", shard: int) -> "ShardPushResult":
        from ..core import shards

        lake, up = self.lake, fs.uploader
        files = fs.entries()
        result = shards.record_shard(
            lake.store, self.artifact, header=fs.header, created=fs.created, files=files,
            dirs=(), up=up, step=self.step, rank=shard, world=self._world + 1,
            metrics=self._metrics, metadata=self._metadata,
            aliases=list(self._aliases), lake_url=lake.url,
            stale_after=shards.DEFAULT_STALE_AFTER if self._stale_after is None
            else self._stale_after, wait_seconds=None, started=fs.started,
            started_wall=fs.started_wall, bytes_scanned=sum(f.size for f in files))
        if result.committed_here and result.version is not None:
            lake._after_commit(self.artifact, result.version)
            self._check_order(result.version)
        elif result.version is not None:  # a rank whose committer may have died before it
            lake._ensure_indexed(self.artifact, result.version)
        return result

    def _check_order(self, version: int) -> None:
        """Warn when this commit put an older step above a newer one: @latest (the highest
        version) is then the older step, and a resume from it repeats training."""
        key = (self.lake.url, self.artifact)
        with _TOP_LOCK:
            top = _TOP_COMMIT.get(key)
            if top is None or self.step >= top[0]:
                _TOP_COMMIT[key] = (self.step, version)
                return
        if version > top[1]:
            log.warning("ckptlake: %s step %d was committed as v%d after step %d (v%d): "
                        "@latest is now the older step.  Overlapping dcp.async_save calls "
                        "commit in the order they finish: wait for the previous save's future "
                        "before the next one", self.artifact, self.step, version, top[0],
                        top[1])

    def stage(self, state_dict: Any) -> Any:
        # dcp.async_save's copy of the state (what the loop waits for): staging.py's, one
        # threaded copy per tensor into buffers of ours, kept per artifact with
        # cache_staged_state_dict=True
        from .staging import stage

        # a previous save of this writer that never reached write_data keeps its buffers:
        # its thread might still hold them
        staged = self._staged = stage(
            state_dict, cache_key=self.artifact if self.cache_staged_state_dict else None,
            fallback=lambda sd: BlockingAsyncStager().stage(sd))  # torch's, uncached
        # known from here, not from torch's thread: that may start only after the main
        # thread has finished and the exit hook has looked
        self._track().staged()
        return staged.state

    def _release_staged(self) -> None:
        staged, self._staged = getattr(self, "_staged", None), None
        if staged is not None:
            staged.release()

    def _track(self) -> "_AsyncSave":
        """The save this writer is about to make, known to the exit hook (not yet started).
        A previous save of the writer stays known until its thread ends."""
        save = self._async
        if save is None or save.ended or save.thread is not None:
            save = self._async = _AsyncSave.begin(f"{self.artifact} step {self.step}", self)
        return save

    def _save_started(self) -> None:
        """A save reached this writer, in this thread: an async one is tracked from here to
        the end of its writes (a reused writer's from here only: nothing of it ran in the
        caller's thread); a synchronous one is not, as its caller sees how it ends."""
        save, thread = self._async, threading.current_thread()
        if save is not None and save.thread is thread and not save.ended:
            return  # the same save again (FileSystemWriter.finish asks for storage_meta too)
        staged = save is not None and save.is_staged and save.thread is None
        if not (staged or _is_torch_async_thread(thread)):
            if save is not None and save.thread is None:
                self._async = None
                save.drop()
            return
        save = self._track()
        save.thread = thread

    @contextlib.contextmanager
    def _async_step(self, *, last: bool) -> Iterator[None]:
        """Tell the exit hook when an async save's writes are over (a failure ends them)."""
        try:
            yield
        except BaseException as exc:
            self._async_over(exc)
            raise
        if last:
            self._async_over(None)

    def _async_over(self, error: BaseException | None) -> None:
        save, self._async = self._async, None
        if save is not None:
            save.end(error)


# ---- interpreter exit ---------------------------------------------------------------------------

# How long the exit hook waits for a staged async save to reach this process's writer: torch's
# thread gets there within moments; a save that never does (torch's process executor, which
# cannot take a LakeWriter) must not hold the exit up for long.
START_GRACE = 10.0

# The name torch's thread executor gives its one thread (dcp.async_save's default): a save in it
# is an async one, and while it is alive a writer not yet reached may still be (it ends after
# its save, so waiting for it costs nothing: Python would join it before exiting anyway).
_TORCH_ASYNC_THREAD = "AsyncCheckpointExecutor"

_SAVES: "set[_AsyncSave]" = set()
_SAVES_COND = threading.Condition()


def _is_torch_async_thread(thread: threading.Thread) -> bool:
    return thread.name.startswith(_TORCH_ASYNC_THREAD)


def _reason(error: BaseException) -> str:
    first = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {first}"


class _AsyncSave:
    """One `dcp.async_save` to a LakeWriter, from the writer's construction (or staging) to the
    end of its writes."""

    def __init__(self, name: str, writer: Any) -> None:
        self.name = name
        # a writer gone can run no save: its entry is dropped (the set stays bounded)
        self.writer = weakref.ref(writer)
        self.thread: threading.Thread | None = None  # torch's, once the save reaches us
        self.error: BaseException | None = None
        self.ended = False
        self.is_staged = False  # the writer staged it (dcp.async_save without a stager of its own)
        self.awaited = False  # the exit hook waits for it and reports how it ends
        self.staged_at = time.monotonic()

    @classmethod
    def begin(cls, name: str, writer: Any) -> "_AsyncSave":
        save = cls(name, writer)
        before_pools_close(_at_exit)
        with _SAVES_COND:
            for gone in [s for s in _SAVES if s.writer() is None
                         or (s.thread is not None and not s.thread.is_alive())]:
                _SAVES.discard(gone)  # (its thread ended without our say: it is over)
            _SAVES.add(save)
        return save

    def staged(self) -> None:
        self.is_staged, self.staged_at = True, time.monotonic()

    def drop(self) -> None:
        """Not (or no longer) a save for the exit hook to wait for."""
        with _SAVES_COND:
            _SAVES.discard(self)
            _SAVES_COND.notify_all()

    def end(self, error: BaseException | None) -> None:
        thread = self.thread or threading.current_thread()
        with _SAVES_COND:
            self.ended, self.error = True, error
            _SAVES.discard(self)
            _SAVES_COND.notify_all()
            report = not self.awaited
        # An async save's failure sits in a future nobody may read: said at once, as the
        # Checkpointer says a background failure (the exit hook says it of one it waits for);
        # a synchronous save's is raised to its caller.
        if error is not None and report and (self.is_staged or _is_torch_async_thread(thread)):
            log.error("ckptlake: dcp.async_save of %s failed: %s (not committed)",
                      self.name, _reason(error))

    def over(self) -> bool:
        # a thread that ends without our say failed before writing (or another rank failed):
        # nothing more of ours runs; the exiting thread itself is never saving
        if self.ended or self.writer() is None:
            return True
        me = threading.current_thread()
        if self.thread is None:
            # only a thread Python will join can still run it: torch's executor thread, or
            # (for a save this writer staged) any such thread for a few moments
            if any(_is_torch_async_thread(t) and t.is_alive() and t is not me
                   for t in threading.enumerate()):
                return False
            if not self.is_staged:
                return True  # an unused writer, or a save run synchronously elsewhere
            others = any(not t.daemon and t.is_alive() and t is not me
                         for t in threading.enumerate())
            return not others or time.monotonic() - self.staged_at > START_GRACE
        return not self.thread.is_alive() or self.thread is me

    def loss(self) -> str | None:
        if self.error is not None:
            return f"its dcp.async_save failed ({_reason(self.error)})"
        if self.ended:
            return None
        if self.thread is None:
            if not self.is_staged:
                return None  # never used for a save that reached this process's writer
            return "its dcp.async_save never started writing in this process"
        return "its dcp.async_save ended without committing it (wait on its future for why)"


def _at_exit() -> None:
    with _SAVES_COND:
        # one already over failed before the exit began: that was logged when it did
        saves = sorted((s for s in _SAVES if not s.over()), key=lambda s: s.name)
        for s in saves:
            s.awaited = True
    if not saves:
        return
    try:
        # (a writer not yet reached by torch's thread may be unused: not named unless staged)
        known = [s.name for s in saves if s.thread is not None or s.is_staged]
        log.warning("ckptlake: the process is exiting with dcp.async_save of %s under way: "
                    "waiting for it", ", ".join(known) or "a LakeWriter")
        with _SAVES_COND:
            while not all(s.over() for s in saves):
                _SAVES_COND.wait(0.2)  # polled too: a thread's end is not notified
    except KeyboardInterrupt:
        # Python would print "Exception ignored in _at_exit" and a traceback.  The interrupt
        # stops only this wait: Python joins torch's thread next, so a save under way may still
        # commit (or fail).  Say that much now, and how each ended once it has.
        running = []
        for s in saves:
            if not s.ended:
                running.append(s)
                if s.thread is not None or s.is_staged:
                    log.warning("ckptlake: DCP checkpoint %s may be lost: still being written "
                                "when interrupted (how it ends is logged at exit)", s.name)
            elif (loss := s.loss()) is not None:
                log.error("ckptlake: LOST DCP checkpoint %s: %s", s.name, loss)
        if running:
            import atexit

            if getattr(threading.main_thread(), "_is_stopped", False):
                # run as an atexit hook already (core/exithooks.py's fallback): the threads
                # are joined, and a hook registered now would never run
                _after_interrupt(running)
            else:
                # atexit hooks run after Python has joined the non-daemon threads (torch's)
                atexit.register(_after_interrupt, running)
        return
    for s in saves:
        loss = s.loss()
        if loss is not None:
            log.error("ckptlake: LOST DCP checkpoint %s: %s", s.name, loss)


def _after_interrupt(saves: "list[_AsyncSave]") -> None:
    """How the saves an interrupted exit hook left running ended (it said they may be lost)."""
    for s in saves:
        if s.ended and s.error is None:
            log.warning("ckptlake: DCP checkpoint %s was committed after all", s.name)
            continue
        # a thread still alive now is a daemon one, stopped mid-write by the exit
        loss = s.loss() if s.over() else "still being written when the process exited"
        if loss is not None:
            log.error("ckptlake: LOST DCP checkpoint %s: %s", s.name, loss)


class _LakeFS(FileSystemBase):
    """FileSystemWriter's file access for one rank's save: each file written is a lake
    writer (core/streampush.py) whose chunks upload while torch writes; `entries()` are the
    finished files, for the rank's shard record.  There are no directories; `rename` (of
    `.metadata.tmp`) renames the entry."""

    def __init__(self, lake: "Lake", thread_count: int = 1) -> None:
        self.lake = lake
        self._threads = max(1, thread_count)
        self._files: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.header: Any = None
        self.uploader: Any = None

    def begin(self, artifact: str, step: int, rank: int, world: int) -> None:
        """The shard's checks and the lake header, before any byte is uploaded."""
        from ..core import clock, shards
        from ..core.push import resolve_compression
        from ..core.streampush import new_uploader
        from ..transfer.progress import NullProgress

        self.started, self.started_wall = clock.now(), time.time()
        lake = self.lake
        self.header, self.created = shards.begin_shard(
            lake.store, artifact, step=step, rank=rank, world=world,
            chunk_size=lake.chunk_size)
        self.compression = resolve_compression(None, self.header.compression)
        self.uploader = new_uploader(lake.store, algo=self.header.hash,
                                     progress=NullProgress(), throttle=lake.throttle,
                                     parts=lake.parts, compression=self.compression)

    @contextlib.contextmanager
    def create_stream(self, path: str | os.PathLike, mode: str) -> Iterator[IO[bytes]]:
        from ..core.streampush import StreamWriter
        from ..transfer.progress import NullProgress

        if mode != "wb" or self.header is None:
            raise UsageError(f"LakeWriter cannot open {path} with mode {mode!r}")
        lake = self.lake
        writer = StreamWriter(lake.store, str(path), algo=self.header.hash,
                              chunk_size=lake.chunk_size or self.header.chunk_size,
                              concurrency=max(1, lake.concurrency // self._threads),
                              progress=NullProgress(), throttle=lake.throttle,
                              parts=lake.parts, compression=self.compression,
                              uploader=self.uploader)
        try:
            yield writer  # type: ignore[misc]
        except BaseException as exc:
            writer.abort()
            lake_error = writer._error
            if isinstance(exc, Exception) and lake_error is not None and exc is not lake_error:
                # torch's zip writer swallows the lake's error raised by write() and fails on
                # its own ("[enforce fail at inline_container.cc] unexpected pos"): the lake's
                # is the cause worth reporting
                raise lake_error from None
            raise
        entry = writer.finish()
        with self._lock:
            self._files[entry.path] = entry

    def entries(self) -> tuple[Any, ...]:
        with self._lock:
            return tuple(sorted(self._files.values(), key=lambda e: e.path))

    def concat_path(self, path: str | os.PathLike, suffix: str) -> str:
        return suffix if str(path) in ("", ".") else f"{path}/{suffix}"

    def init_path(self, path: str | os.PathLike) -> str:
        return str(path)

    def rename(self, path: Any, new_path: Any) -> None:
        with self._lock:
            entry = self._files.pop(str(path))
            self._files[str(new_path)] = dataclasses.replace(entry, path=str(new_path))

    def mkdir(self, path: Any) -> None:
        pass

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: Any) -> bool:
        return False

    def exists(self, path: str | os.PathLike) -> bool:
        with self._lock:
            return str(path) in self._files

    def rm_file(self, path: Any) -> None:
        with self._lock:
            self._files.pop(str(path), None)


class _VersionFS(FileSystemBase):
    """FileSystemReader's file access, answered from one version's manifest."""

    def __init__(self, lake: "Lake", manifest: Any, readahead: int) -> None:
        self.lake, self.m, self.readahead = lake, manifest, readahead
        self.files = {f.path: f for f in manifest.files}

    def _name(self) -> str:
        return f"{self.m.artifact}@v{self.m.version}"

    def create_stream(self, path: str | os.PathLike, mode: str) -> Any:
        if mode != "rb":
            raise UsageError(f"{self._name()} is read-only")
        entry = self.files.get(str(path))
        if entry is None or entry.symlink is not None:
            from ..errors import IntegrityError

            raise IntegrityError(f"{self._name()} has no file {path}, which its DCP .metadata "
                                 "refers to", hint="the checkpoint is incomplete")
        return LakeFile(self.lake.store, entry, self.m.hash, name=f"{self._name()}:{path}",
                        readahead=self.readahead, parts=self.lake.parts,
                        throttle=self.lake.throttle, stored=self.m.stored)

    def concat_path(self, path: str | os.PathLike, suffix: str) -> str:
        return suffix if not str(path) else f"{path}/{suffix}"

    def init_path(self, path: str | os.PathLike) -> str:
        return str(path)

    def rename(self, path: Any, new_path: Any) -> None:
        raise UsageError(f"{self._name()} is read-only")

    def mkdir(self, path: Any) -> None:
        raise UsageError(f"{self._name()} is read-only")

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: Any) -> bool:
        return False

    def exists(self, path: str | os.PathLike) -> bool:
        return str(path) in self.files

    def rm_file(self, path: Any) -> None:
        raise UsageError(f"{self._name()} is read-only")


# ---- unpickling without running code ---------------------------------------------------------

class _Refused(Exception):
    def __init__(self, what: str, says: str | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.says = says or f"refers to {what}, which is not DCP metadata"


@functools.lru_cache(maxsize=1)
def _metadata_globals() -> dict[str, Any]:
    """Every global a DCP `.metadata` legitimately refers to, by pickled name: the dataclasses
    and enums of DCP's metadata module, FileSystemWriter's per-item storage record, torch's
    dtypes/layouts/memory formats and `torch.Size`, the `pathlib` path FileSystemWriter keeps
    as `checkpoint_id`, and a few harmless containers.  Found by unpickling the `.metadata` of
    real saves (tensors, DTensors, optimizer states, object items, every dtype, channels-last);
    each one, called or built with any arguments, only makes a value."""
    import collections
    import pathlib

    import torch
    from torch.distributed.checkpoint import filesystem, metadata

    allowed: dict[str, Any] = {}
    for name, obj in vars(metadata).items():
        if isinstance(obj, type) and obj.__module__ == metadata.__name__ and (
                dataclasses.is_dataclass(obj) or issubclass(obj, enum.Enum)):
            allowed[f"{metadata.__name__}.{name}"] = obj
    allowed[f"{filesystem.__name__}._StorageInfo"] = filesystem._StorageInfo
    try:  # where torch before 2.1 kept TensorProperties (older saves name it there)
        from torch.distributed._shard.sharded_tensor import metadata as old
    except ImportError:  # pragma: no cover - torch dropped it
        pass
    else:
        for name in ("TensorProperties", "MEM_FORMAT_ENCODING"):
            if isinstance(getattr(old, name, None), type):
                allowed[f"{old.__name__}.{name}"] = getattr(old, name)
    for name, obj in vars(torch).items():
        if isinstance(obj, (torch.dtype, torch.layout, torch.memory_format)):
            allowed[f"torch.{name}"] = obj
    allowed["torch.Size"] = torch.Size
    allowed["torch.serialization._get_layout"] = torch.serialization._get_layout
    for module in ("pathlib", "pathlib._local"):  # (Python 3.13 defines them in the latter)
        for name in ("PurePath", "PurePosixPath", "PureWindowsPath", "Path", "PosixPath",
                     "WindowsPath"):
            allowed[f"{module}.{name}"] = getattr(pathlib, name)
    allowed["collections.OrderedDict"] = collections.OrderedDict
    allowed["builtins.set"] = set
    allowed["builtins.frozenset"] = frozenset
    return allowed


class _MetadataUnpickler(pickle._Unpickler):  # type: ignore[name-defined]
    """pickle's pure-Python unpickler, which reaches code only through `find_class` (and
    `persistent_load`, which it refuses when not given one): allowing only
    `_metadata_globals()` there means nothing but those can be called or built.

    Not the C `pickle.Unpickler`: its BUILD opcode sets attributes on whatever object is below
    it, a class, enum member or dtype that `find_class` returned included, for the whole
    process (`GLOBAL pathlib.PurePath; (None, {'is_relative_to': ...}); BUILD` rewires every
    path of every later caller), and it cannot be overridden there.  Here BUILD is allowed
    only on an instance of an allowed dataclass, made by this load, with a state that can
    only set its fields (no dunder names, which would shadow `__setstate__` and the like).
    Costs pure-Python speed: about 0.5 s per 10,000 tensors of `.metadata`, once per load."""

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

    def find_class(self, module: str, name: str) -> Any:
        obj = _metadata_globals().get(f"{module}.{name}")
        if obj is None:
            raise _Refused(f"{module}.{name}")
        return obj

    def _load_build(self) -> None:
        inst, state = self.stack[-2], self.stack[-1]
        kind = type(inst)
        fields = _built_types().get(kind, False)
        if fields is False:
            what = (f"the class {inst.__module__}.{inst.__qualname__}" if isinstance(inst, type)
                    else f"a {kind.__module__}.{kind.__qualname__}")
            raise _Refused(what, f"sets attributes on {what} (pickle BUILD), which would "
                                 "change it for the whole process")
        if fields is not None:  # (None: the class's own __setstate__, which sets its fields)
            slots = None
            if isinstance(state, tuple) and len(state) == 2:
                state, slots = state
            for names, only_fields in ((state, False), (slots, True)):
                if not names:
                    continue
                bad = [k for k in names if not isinstance(k, str) or k.startswith("__")
                       or (only_fields and k not in fields)] if isinstance(names, dict) else [names]
                if bad:
                    what = f"{kind.__module__}.{kind.__qualname__}"
                    raise _Refused(what, f"sets {str(bad[0])[:80]!r} on a {what}, which is "
                                         "not one of its fields")
        pickle._Unpickler.load_build(self)  # type: ignore[attr-defined]

    dispatch[pickle.BUILD[0]] = _load_build


@functools.lru_cache(maxsize=1)
def _built_types() -> dict[type, frozenset[str] | None]:
    """The allowed classes whose instances a `.metadata` may set state on (BUILD): their
    field names, or None for one with a `__setstate__` of its own (TensorProperties)."""
    return {v: None if getattr(v, "__setstate__", None) is not None
            else frozenset(f.name for f in dataclasses.fields(v))
            for v in _metadata_globals().values()
            if isinstance(v, type) and dataclasses.is_dataclass(v)}


def _load_metadata(data: bytes, version: str) -> Any:
    """The DCP `Metadata` pickled in `data`, unpickled without running code; IntegrityError
    naming the version for anything else."""
    from torch.distributed.checkpoint.metadata import Metadata

    hint = ("a DCP .metadata holds only torch's checkpoint metadata: this one was not written "
            "by dcp.save, or was altered since; load only versions you trust")
    try:
        metadata = _MetadataUnpickler(io.BytesIO(data)).load()
    except _Refused as exc:
        raise IntegrityError(f"{version}: its {METADATA_FILE} {exc.says}: refused, as "
                             "unpickling it could run code", hint=hint) from None
    except Exception as exc:  # nothing of the version's ran: only values were made
        raise IntegrityError(f"{version}: its {METADATA_FILE} is not a readable DCP metadata "
                             f"({_reason(exc)})", hint=hint) from None
    if not isinstance(metadata, Metadata) or not isinstance(
            getattr(metadata, "storage_data", None), dict):
        raise IntegrityError(f"{version}: its {METADATA_FILE} holds a "
                             f"{type(metadata).__name__}, not DCP metadata", hint=hint)
    return metadata


def _check_object_item(data: bytes, where: str) -> None:
    """Raise IntegrityError unless torch's weights-only load accepts the object item `data`.
    torch's planners load object items with `torch.load(weights_only=False)`; a pickle that
    the weights-only load accepts refers to nothing but the values it allows (plus the
    user's `torch.serialization.add_safe_globals`), so loading it in full runs no more
    than that.  Costs a second unpickling of each object item (they are small)."""
    import torch

    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        text = str(exc)  # torch's is long: the refused global, or the unpickler's complaint
        if found := re.search(r"GLOBAL ([\w.]+)", text):
            why = f"refers to {found.group(1)}"
        elif found := re.search(r"WeightsUnpickler error: ([^\n]+)", text):
            why = found.group(1).strip()
        else:
            why = _reason(exc)
        raise IntegrityError(
            f"{where} is a pickled object that torch's weights-only load refuses ({why}): "
            "not loaded, as loading it could run code",
            hint="if you trust the version and the class, allow it with "
                 "torch.serialization.safe_globals([...]) around dcp.load") from None


class LakeReader(FileSystemReader):
    """A DCP `StorageReader`: `dcp.load(state, storage_reader=LakeReader(lake, "run@latest"))`.

    The ref is resolved once, here: a missing ref raises NotFound and a version without DCP
    `.metadata` raises NotADcpCheckpoint (both name the ref/version) before any collective,
    as does a `.metadata` that is not DCP metadata alone (IntegrityError naming what it refers
    to: it is read here, and never unpickled with anything else allowed).  The ranks must
    read one version: ranks whose refs resolved to different versions (a moving ref such as
    `@latest` resolved around a commit) fail the load with a Conflict before any data is read.
    Ranks may number differently from the save (DCP reshards from the metadata): each rank
    fetches only the chunks its part of the plan touches, with the lake's concurrency, at most
    `window` bytes ahead of torch (ckptlake/torch/planread.py).  `readahead`: chunks fetched
    ahead when torch reads the `.metadata` (LakeFile's).  `bytes_fetched`: what this reader
    downloaded for data so far.
    """

    def __init__(self, lake: "Lake", ref: str | Ref, *,
                 readahead: int = DEFAULT_READAHEAD, window: int = DEFAULT_WINDOW) -> None:
        check_lake(lake)
        readahead = check_arg("readahead", readahead, "int", minimum=0)
        window = check_arg("window", window, "int", minimum=0)
        m = lake._manifest(ref)  # (its NotFound says when there is no lake at all)
        entry = next((f for f in m.files if f.path == METADATA_FILE), None)
        if entry is None or entry.symlink is not None:
            raise NotADcpCheckpoint(
                f"{m.artifact}@v{m.version} is not a DCP checkpoint: it has no {METADATA_FILE}",
                hint="load versions written by dcp.save with ckptlake.torch.LakeWriter")
        self.manifest = m
        super().__init__("")
        self.fs = _VersionFS(lake, m, readahead)
        self.path = ""
        self.window = window
        self.bytes_fetched = 0
        with self.fs.create_stream(METADATA_FILE, "rb") as f:
            self._metadata_bytes = f.read()
        # checked here, before any collective; handed to torch's first read_metadata
        self._metadata: Any = _load_metadata(self._metadata_bytes, self.version)

    @property
    def version(self) -> str:
        return f"{self.manifest.artifact}@v{self.manifest.version}"

    def reset(self, checkpoint_id: str | os.PathLike | None = None) -> None:
        if checkpoint_id is not None and str(checkpoint_id) != self.version:
            raise UsageError(f"LakeReader reads {self.version}, not checkpoint_id "
                             f"{checkpoint_id!r}", hint="leave checkpoint_id unset")
        super().reset(None)

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike) -> bool:
        return False

    def read_data(self, plan: Any, planner: Any) -> Any:
        # FileSystemReader.read_data's per-request handling, with the requests served by
        # planread: this rank's chunks fetched in parallel, ahead of torch (see its docstring)
        import torch
        from torch.distributed.checkpoint.planner import LoadItemType
        from torch.distributed._shard._utils import narrow_tensor_by_index
        from torch.futures import Future

        from .itemread import DIRECT_MIN, read_into
        from .planread import read_plan

        requests = []
        for item in plan.items:
            md = self.storage_data[item.storage_index]
            requests.append((item, self.fs.concat_path(self.path, md.relative_path),
                             md.offset, md.length))
        requests.sort(key=lambda r: (r[1], r[2]))

        def handle(req: Any, stream: IO[bytes]) -> None:
            md = self.storage_data[req.storage_index]
            src = self.transforms.transform_load_stream(
                req, getattr(md, "transform_descriptors", None) or (), stream)
            if req.type == LoadItemType.BYTE_IO:
                data = src.read(-1)
                # torch's planner loads it with weights_only=False, i.e. runs whatever the
                # pickle says: only bytes torch's weights-only load accepts get there
                _check_object_item(data, f"{self.version}: item {req.dest_index.fqn}")
                planner.load_bytes(req, io.BytesIO(data))
                return
            target = planner.resolve_tensor(req).detach()
            if src is stream and md.length >= DIRECT_MIN and read_into(
                    stream, req, target, name=self.version):
                planner.commit_tensor(req, target)
                return
            seekable = src if src.seekable() else io.BytesIO(src.read(-1))
            seekable.seek(0)
            tensor = torch.load(seekable, map_location="cpu", weights_only=True)
            tensor = narrow_tensor_by_index(tensor, req.storage_offsets, req.lengths)
            if target.size() != tensor.size():
                raise AssertionError(f"req {req.storage_index} mismatch sizes "
                                     f"{target.size()} vs {tensor.size()}")
            target.copy_(tensor)
            planner.commit_tensor(req, target)

        files = {path: self.fs.create_stream(path, "rb") for path in {r[1] for r in requests}}
        try:
            read_plan(requests, files, handle, workers=self.fs.lake.concurrency,
                      window=self.window)
        finally:
            for f in files.values():
                self.bytes_fetched += f.bytes_fetched
                f.close()
        fut: Future = Future()
        fut.set_result(None)
        return fut

    def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("rank") is not None:
            raise UsageError(f"{self.version}: LakeReader reads checkpoints saved with "
                             "collectives (one global .metadata)")
        # FileSystemReader.read_metadata, without its pickle.load; a fresh object per load
        # (torch and planners may change the one they get)
        metadata, self._metadata = self._metadata, None
        if metadata is None:
            metadata = _load_metadata(self._metadata_bytes, self.version)
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata

    def prepare_local_plan(self, plan: Any) -> Any:
        plan = super().prepare_local_plan(plan)
        return dataclasses.replace(plan, storage_data=_ReadSource(self.manifest.artifact,
                                                                   self.manifest.version))

    def prepare_global_plan(self, plans: list[Any]) -> list[Any]:
        plans = super().prepare_global_plan(plans)
        sources = {i: p.storage_data for i, p in enumerate(plans)
                   if isinstance(p.storage_data, _ReadSource)}
        groups = _by_value(sources)
        if len(groups) > 1:
            said = "; ".join(f"{s.artifact}@v{s.version} on {_ranks_text(ranks)}"
                             for s, ranks in groups)
            newest = max(sources.values(), key=lambda s: s.version)
            raise Conflict(
                f"the ranks of this dcp.load resolved their refs to different versions "
                f"({said}): nothing was loaded, as the state would mix them",
                hint=f"give every rank the same version, e.g. "
                     f"LakeReader(lake, \"{newest.artifact}@v{newest.version}\") (resolve a "
                     "moving ref such as @latest once, e.g. on rank 0, and broadcast it)")
        return [dataclasses.replace(p, storage_data=None) for p in plans]
