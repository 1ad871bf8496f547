"""Copying a version into another lake, or under another name in the same one (`cp`).

Why: a model trained against one lake is published in another (a team's staging lake to the
production one, a lake in the training region to one where it is served), or promoted under
another artifact in the same lake (MLflow's copy_model_version).  Pull-then-push does it with a
local copy and loses what the version says about itself (step, metrics, metadata, inputs, the
training run's provenance); this copies the chunk objects the destination lacks, as they are
stored, each verified against its digest first, then commits the same manifest as a new version
at the destination.

When the two lakes hash chunks differently (a SHA-256 lake and a BLAKE3 one) no chunk key is
shared: the caller (Lake.copy) goes through a local copy and a push instead, and says so.

The commit is a push's: the destination's gc guard (core/gc_guard.guard_commit) restores a
chunk a concurrent sweep of the destination removed, by copying it again from the source, and
the version number is claimed with If-None-Match (core/push.commit_version).  A copy stopped
at any point leaves chunks (a re-run copies only what is still missing; gc collects them after
its grace period), never a version.

Into a lake whose header says `compression: none` (a lake kept readable by ckptlakes that know
no frames), encoded chunks are written decoded, as a push there would store them.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..errors import NotFound, PreconditionFailed
from ..format import codecs, layout
from ..format.header import COMPRESSION_NONE
from ..format.manifest import Manifest
from ..results import PushResult, _Result
from ..store.base import Store
from ..transfer.pool import Counter, bounded_map
from ..transfer.progress import NullProgress, Progress
from ..transfer.throttle import Throttle


@dataclass(frozen=True)
class CopyResult(_Result):
    lake: str  # the source
    artifact: str
    version: int
    to_lake: str
    to_artifact: str
    to_version: int
    files: int
    bytes: int  # logical bytes of the version
    chunks: int  # distinct chunk objects it references
    chunks_present: int  # already in the destination lake
    chunks_copied: int
    bytes_copied: int  # bytes of the objects written to the destination (as stored there)
    bytes_stored: int | None  # the new version's chunk objects as stored at the destination
    aliases: list[str]
    seconds: float
    # through a local copy and a push (the lakes hash chunks differently): the counts are the
    # push's (chunks_copied: the chunks it uploaded)
    rechunked: bool = False
    warnings: list[str] = field(default_factory=list)


def copy_fields(m: Manifest, *, source_url: str, same_lake: bool) -> dict[str, Any]:
    """The new version's lineage and provenance: the source's inputs and provenance (how the
    checkpoint was made) plus where it was copied from.  A parent edge only within one lake:
    the source's own parents name versions of its lake, which the destination's lineage would
    read as its own artifacts of the same names."""
    from ..redact import redact

    origin = {"lake": redact(source_url), "artifact": m.artifact, "version": m.version,
              "created": m.created.isoformat().replace("+00:00", "Z")}
    fields: dict[str, Any] = {
        "inputs": tuple(m.inputs),
        "provenance": {**m.provenance, "copied_from": origin},
        "parents": ({"artifact": m.artifact, "version": m.version,
                     "relation": "derived-from"},) if same_lake else (),
    }
    return fields


class _Copier:
    """Moves chunk objects from `src` to `dst`, and stands in for a push's uploader in its
    commit (core/push.commit_upload): `stored`, the counters, and `reupload` for the guard."""

    def __init__(self, src: Store, dst: Store, m: Manifest, *, decode: bool,
                 concurrency: int, progress: Progress, throttle: Throttle | None) -> None:
        from .browse import object_sizes

        self.src, self.dst, self.m = src, dst, m
        self.decode = decode  # write frames decoded (a compression: none destination)
        self.concurrency = concurrency
        self.progress = progress
        self.throttle = throttle
        self.sizes = object_sizes(m)  # digest -> raw length (a pack: at least)
        self.stored: dict[str, int] = {}
        self.uploaded, self.sent, self.deduplicated = Counter(), Counter(), Counter()
        self._lock = threading.Lock()

    def presence(self) -> dict[str, int]:
        """digest -> size of the object the destination holds for it, for those it holds.
        An empty object is what an upload cut after its head leaves: absent."""
        def one(d: str) -> tuple[str, int | None]:
            try:
                return d, self.dst.stat(layout.chunk_key(d)).size
            except NotFound:
                return d, None

        found: dict[str, int] = {}
        for d, size in bounded_map(one, sorted(self.sizes), workers=self.concurrency,
                                   name="ckptlake-cp"):
            if size:
                found[d] = size
        return found

    def note_present(self, d: str, size: int) -> None:
        n = self.sizes[d]
        if size < n or self.m.stored.get(d) == size:
            self.stored[d] = size  # a frame (what the source's hint says, for a long pack)
        self.deduplicated.add(n)
        self.progress.advance(n)

    def copy(self, d: str) -> int:
        """Copy chunk d's object, verified; the bytes written (0: another writer was first)."""
        from .catalog import deleted_meanwhile
        from .chunkio import missing, open_object

        key = layout.chunk_key(d)
        where = f"{self.m.artifact}@v{self.m.version}"
        try:
            data = self.src.get(key)
        except NotFound:
            raise deleted_meanwhile(self.src, self.m.artifact, self.m.version,
                                    missing(d, where), doing="being copied") from None
        # every byte written is verified first (IntegrityError naming the chunk and version)
        raw = open_object(self.m.hash, d, data, raw_size=None, where=where, key=key)
        framed = codecs.looks_framed(data) and len(data) < len(raw)
        body = data if framed and not self.decode else raw
        n = self.sizes[d]
        if self.throttle is not None:
            self.throttle.acquire(len(body))
        try:
            self.dst.put(key, body, if_none_match=True)
        except PreconditionFailed:
            # written meanwhile (by a pusher or another copy): content-addressed, the same
            # bytes; or an empty object an upload cut after its head left, replaced
            if self.dst.stat(key).size:
                self.deduplicated.add(n)
                self.progress.advance(n)
                return 0
            self.dst.put(key, body)
        with self._lock:
            if len(body) < len(raw):
                self.stored[d] = len(body)
        self.uploaded.add(n)
        self.sent.add(len(body))
        self.progress.advance(n)
        return len(body)

    def copy_all(self, digests: Sequence[str]) -> None:
        for _ in bounded_map(self.copy, sorted(digests), workers=self.concurrency,
                             name="ckptlake-cp"):
            pass

    # -- what core/push.commit_upload asks of an uploader -------------------------------------

    def before_commit(self) -> None:
        """The source is a lake: every chunk can be copied again, nothing to check."""

    def release(self) -> None:
        """Nothing held."""

    def reupload(self, digests: set[str]) -> None:
        """Copy these again: a concurrent gc of the destination swept them."""
        self.copy_all(sorted(digests))


def copy_version(src: Store, dst: Store, m: Manifest, artifact: str, *, aliases: Sequence[str],
                 concurrency: int, source_url: str, dest_url: str, same_lake: bool,
                 progress: Progress | None = None, throttle: Throttle | None = None,
                 open_header: Callable[[], tuple[Any, "bool | str"]],
                 before_copy: Callable[[int, int, int], None] | None = None,
                 ) -> tuple[CopyResult, PushResult | Exception]:
    """Copy version `m` of `src` to the next version of `artifact` in `dst`.

    open_header(): the destination's lake header and what opening it wrote (core/lakeheader
    open_or_create_header, with m's hash), called once the copy goes ahead.

    before_copy(bytes_total, bytes_present, bytes_to_download): told once the destination's
    holdings are known and before anything is written or read from the source (the egress
    guard: it may raise to stop the copy; a lake that did not exist is not created then).

    Returns the result and what core/push.commit_upload returned or raised as AliasNotSet (the
    caller writes the version's indexes, then raises the alias error)."""
    from . import clock
    from .gc_guard import check_settings
    from .push import AliasNotSet, commit_upload

    progress = progress or NullProgress()
    started, started_wall = clock.now(), time.time()
    check_settings(dst)  # what the commit's guard would refuse, refused before any byte moves
    copier = _Copier(src, dst, m, decode=False, concurrency=concurrency, progress=progress,
                     throttle=throttle)
    present = copier.presence()
    missing = sorted(d for d in copier.sizes if d not in present)
    # the source's stored sizes where it said them (what crosses the wire), else raw
    to_fetch = sum(m.stored.get(d, copier.sizes[d]) for d in missing)
    total = sum(m.stored.get(d, n) for d, n in copier.sizes.items())
    if before_copy is not None:
        before_copy(total, total - to_fetch, to_fetch)
    header, created = open_header()
    copier.decode = header.compression == COMPRESSION_NONE
    progress.start(phase="copy", total_bytes=sum(copier.sizes.values()),
                   total_files=len(copier.sizes))
    try:
        for d, size in present.items():
            copier.note_present(d, size)
        copier.copy_all(missing)
        try:
            pushed: PushResult | Exception = commit_upload(
                dst, artifact, header=header, created=created,
                compression=header.compression, files=m.files, dirs=m.dirs, kind=m.kind,
                up=copier, step=m.step, metrics=m.metrics, metadata=m.metadata,
                aliases=list(aliases), lake_url=dest_url,
                manifest_fields=copy_fields(m, source_url=source_url, same_lake=same_lake),
                started=started, started_wall=started_wall, bytes_scanned=m.total_bytes,
                progress=progress)
        except AliasNotSet as exc:
            pushed = exc
    finally:
        progress.finish()
    r = pushed.result if isinstance(pushed, AliasNotSet) else pushed
    assert isinstance(r, PushResult)
    result = CopyResult(
        lake=source_url, artifact=m.artifact, version=m.version, to_lake=dest_url,
        to_artifact=artifact, to_version=r.version, files=len(m.files), bytes=m.total_bytes,
        chunks=len(copier.sizes), chunks_present=copier.deduplicated.count,
        chunks_copied=copier.uploaded.count, bytes_copied=copier.sent.value,
        bytes_stored=r.bytes_stored, aliases=list(r.aliases),
        seconds=round(clock.now() - started, 3), warnings=list(r.warnings))
    return result, pushed
