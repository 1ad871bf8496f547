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


# What the chunks in flight may take: with the default 16 MiB chunks this is no bound (8
# workers x (16 MiB stored + 16 MiB decoded)); with chunks of 256 MiB and more it is.
COPY_MEMORY = 512 << 20


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
    # damaged objects at the destination written over (empty, cut short), and chunks found
    # present that a gc of the destination swept meanwhile, copied again (both in
    # chunks_copied)
    chunks_repaired: int = 0
    chunks_recopied: int = 0
    # through a local copy and a push (the lakes hash chunks differently): the counts are the
    # push's (chunks_copied: the chunks it uploaded)
    rechunked: bool = False
    warnings: list[str] = field(default_factory=list)
    # alias -> the version it named before the copy moved it (as push's)
    aliases_moved: dict[str, int] = field(default_factory=dict)


def copy_fields(m: Manifest, *, source_url: str, same_lake: bool) -> dict[str, Any]:
    """The new version's lineage and provenance: the source's inputs and provenance (how the
    checkpoint was made) plus where it was copied from.  A parent edge only within one lake:
    the source's own parents name versions of its lake, which the destination's lineage would
    read as its own artifacts of the same names."""
    from ..format.times import time_text
    from ..redact import redact

    origin = {"lake": redact(source_url), "artifact": m.artifact, "version": m.version,
              "created": time_text(m.created)}
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

    def __init__(self, src: Store, dst: Store, m: Manifest, *, concurrency: int,
                 progress: Progress, throttle: Throttle | None,
                 header: Callable[[], Any] | None = None) -> None:
        from .browse import object_sizes

        self.src, self.dst, self.m = src, dst, m
        self.concurrency = concurrency
        self.progress = progress
        self.throttle = throttle
        # the destination's lake header, written on first need (before the first chunk, or
        # the commit): a copy refused before it writes anything leaves no lake behind
        self._header = header
        self.sizes = object_sizes(m)  # digest -> raw length (of a pack: what m reads of it)
        # chunks m takes whole, whose raw length is known (a pack's may be longer than what m
        # reads of it: a sharded version takes one file from another rank's pack)
        self.whole = {c.digest for e in m.files for c in e.chunks if c.offset is None}
        self.stored: dict[str, int] = {}
        self.uploaded, self.sent, self.deduplicated = Counter(), Counter(), Counter()
        self.present: set[str] = set()
        self.copied: set[str] = set()
        self.bytes_copied = 0
        self._no_server_copy = False
        self._lock = threading.Lock()

    def presence(self) -> tuple[dict[str, int], set[str]]:
        """(digest -> size of the object the destination holds for it, for those it holds
        whole; the digests whose object there is damaged).  Push's rule (core/push.py
        _store_once): an object of the raw size, or a smaller one that reads as a frame of
        these raw bytes; an empty one (an upload cut after its head), a raw one cut short or
        one longer than the chunk is damaged, written over, never committed on."""
        from .push import _frame_of

        def one(d: str) -> tuple[str, int | None, bool]:
            key = layout.chunk_key(d)
            try:
                size = self.dst.stat(key).size
            except NotFound:
                return d, None, False
            n = self.sizes[d]
            # a pack may be longer than what this version reads of it (a sharded version
            # reads one file of another rank's pack): that is no damage
            ok = (0 < size <= n and (size == n or _frame_of(self.dst, key, n, size))) \
                or (d not in self.whole and size > n)
            return d, size if ok else None, not ok

        found: dict[str, int] = {}
        damaged: set[str] = set()
        for d, size, bad in bounded_map(one, sorted(self.sizes), workers=self.concurrency,
                                        name="ckptlake-cp"):
            if size is not None:
                found[d] = size
            elif bad:
                damaged.add(d)
        return found, damaged

    def header(self) -> Any:
        return self._header() if self._header is not None else None

    def note_present(self, d: str, size: int) -> None:
        n = self.sizes[d]
        with self._lock:
            if size < n:
                self.stored[d] = size  # a frame (presence checked its head)
            self.present.add(d)
        self.deduplicated.add(n)
        self.progress.advance(n)

    def copy(self, d: str, *, over: bool = False) -> int:
        """Copy chunk d's object, verified; the bytes written (0: another writer was first).
        over: write over what is there (a damaged object)."""
        from .catalog import deleted_meanwhile
        from .chunkio import missing, open_object

        key = layout.chunk_key(d)
        where = f"{self.m.artifact}@v{self.m.version}"
        try:
            data, etag = self.src.get_with_etag(key)
        except NotFound:
            raise deleted_meanwhile(self.src, self.m.artifact, self.m.version,
                                    missing(d, where), doing="being copied") from None
        # every byte written is verified first (IntegrityError naming the chunk and version)
        # with its raw size: a frame claiming another is refused before it is decoded
        raw = open_object(self.m.hash, d, data,
                          raw_size=self.sizes[d] if d in self.whole else None,
                          where=where, key=key)
        header = self.header()
        # into a `compression: none` lake (kept readable by ckptlakes that know no frames),
        # decoded, as a push there would store it
        decode = header is not None and header.compression == COMPRESSION_NONE
        framed = codecs.looks_framed(data) and len(data) < len(raw)
        body = data if framed and not decode else raw
        n = self.sizes[d]
        if self.throttle is not None:
            self.throttle.acquire(len(body))
        if body is data and self._server_copy(key, etag):
            self._copied(d, len(body), len(raw), n)
            return len(body)
        try:
            self.dst.put(key, body, if_none_match=not over)
        except PreconditionFailed:
            # written meanwhile (by a pusher or another copy): content-addressed, the same
            # bytes; or an empty object an upload cut after its head left, replaced
            if self.dst.stat(key).size:
                with self._lock:
                    self.present.add(d)
                self.deduplicated.add(n)
                self.progress.advance(n)
                return 0
            self.dst.put(key, body)
        self._copied(d, len(body), len(raw), n)
        return len(body)

    def _server_copy(self, key: str, etag: str) -> bool:
        """The server copies the object (two lakes on one S3 server): the bytes just verified
        (the source's ETag, if it gives one) go from bucket to bucket without passing through
        here again.  False: not possible here, or the source object changed since it was read
        (then the verified bytes are written by the caller)."""
        if self._no_server_copy:
            return False
        try:
            done = self.dst.copy_in(self.src, key, if_match=etag or None)
        except (PreconditionFailed, NotFound):
            return False
        if not done:
            self._no_server_copy = True
        return done

    def _copied(self, d: str, size: int, rawlen: int, n: int) -> None:
        with self._lock:
            if size < rawlen:
                self.stored[d] = size
            else:
                self.stored.pop(d, None)
            self.copied.add(d)
            self.bytes_copied += size
        self.uploaded.add(n)
        self.sent.add(size)
        self.progress.advance(n)

    def copy_all(self, digests: Sequence[str], *, over: set[str] = frozenset()) -> None:
        # Each worker holds one chunk object, and its decoded bytes while it is verified: a
        # lake of 1 GiB chunks copies one or two at a time, not `concurrency` GiB at once.
        largest = max((self.sizes[d] for d in digests), default=1)
        workers = max(1, min(self.concurrency, COPY_MEMORY // (2 * largest)))
        for _ in bounded_map(lambda d: self.copy(d, over=d in over), sorted(digests),
                             workers=workers, name="ckptlake-cp"):
            pass

    # -- what core/push.commit_upload asks of an uploader -------------------------------------

    def before_commit(self) -> None:
        """The source is a lake: every chunk can be copied again, nothing to check."""

    def release(self) -> None:
        """Nothing held."""

    def reupload(self, digests: set[str]) -> None:
        """Copy these again: a concurrent gc of the destination swept them."""
        self.copy_all(sorted(digests))


def _to_read(m: Manifest, sizes: dict[str, int], missing: Sequence[str]
             ) -> tuple[int, dict[str, int]]:
    """(bytes of the version's chunk objects, digest -> bytes of each of `missing`), as read
    from the source: its stored sizes where the manifest says them (what crosses the wire),
    else raw."""
    total = sum(m.stored.get(d, n) for d, n in sizes.items())
    return total, {d: m.stored.get(d, sizes[d]) for d in missing}


def objects_to_copy(src: Store, dst: Store, m: Manifest, *, concurrency: int
                    ) -> tuple[int, dict[str, int]]:
    """What a copy of `m` into `dst` would read from `src` now (as _to_read): the
    destination's holdings looked up as the copy looks them up, nothing written (cp
    --estimate)."""
    copier = _Copier(src, dst, m, concurrency=concurrency, progress=NullProgress(),
                     throttle=None)
    present, _damaged = copier.presence()
    return _to_read(m, copier.sizes, [d for d in copier.sizes if d not in present])


def copy_version(src: Store, dst: Store, m: Manifest, artifact: str, *, aliases: Sequence[str],
                 concurrency: int, source_url: str, dest_url: str, same_lake: bool,
                 progress: Progress | None = None, throttle: Throttle | None = None,
                 open_header: Callable[[], tuple[Any, "bool | str"]],
                 before_copy: Callable[[int, dict[str, int]], None] | None = None,
                 ) -> tuple[CopyResult, PushResult | Exception]:
    """Copy version `m` of `src` to the next version of `artifact` in `dst`.

    open_header(): the destination's lake header and what opening it wrote (core/lakeheader
    open_or_create_header, with m's hash), called once, before the first chunk is written (or
    the commit, if none is): a copy that fails first (a corrupt or missing chunk at the
    source) leaves no lake where there was none.

    before_copy(bytes_total, objects): told once the destination's holdings are known (objects:
    digest -> stored bytes of each chunk object to read from the source) and before anything
    is written or read from the source (the egress guard: it may raise to stop the copy; a
    lake that did not exist is not created then).

    Returns the result and what core/push.commit_upload returned or raised as AliasNotSet (the
    caller writes the version's indexes, then raises the alias error)."""
    from . import clock
    from .gc_guard import check_settings
    from .push import AliasNotSet, commit_upload

    progress = progress or NullProgress()
    started, started_wall = clock.now(), time.time()
    check_settings(dst)  # what the commit's guard would refuse, refused before any byte moves
    if same_lake:  # the copy names its source as a parent
        from .lineage import check_child_name

        check_child_name(artifact, "derived-from")
    opened: list[tuple[Any, "bool | str"]] = []
    lock = threading.Lock()

    def header() -> Any:
        with lock:
            if not opened:
                opened.append(open_header())
            return opened[0][0]

    copier = _Copier(src, dst, m, concurrency=concurrency, progress=progress,
                     throttle=throttle, header=header)
    present, damaged = copier.presence()
    missing = sorted(d for d in copier.sizes if d not in present)
    total, to_fetch = _to_read(m, copier.sizes, missing)
    if before_copy is not None:
        before_copy(total, to_fetch)
    progress.start(phase="copy", total_bytes=sum(copier.sizes.values()),
                   total_files=len(copier.sizes))
    try:
        for d, size in present.items():
            copier.note_present(d, size)
        copier.copy_all(missing, over=damaged)
        head = header()
        try:
            pushed: PushResult | Exception = commit_upload(
                dst, artifact, header=head, created=opened[0][1],
                compression=head.compression, files=m.files, dirs=m.dirs, kind=m.kind,
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
        chunks=len(copier.sizes), chunks_present=len(copier.present - copier.copied),
        chunks_copied=len(copier.copied), bytes_copied=copier.bytes_copied,
        bytes_stored=r.bytes_stored, aliases=list(r.aliases),
        seconds=round(clock.now() - started, 3),
        chunks_repaired=len(damaged & copier.copied),
        chunks_recopied=len(copier.present & copier.copied), warnings=list(r.warnings),
        aliases_moved=dict(r.aliases_moved))
    return result, pushed
