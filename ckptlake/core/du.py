"""du: what the lake stores, per artifact and per version, and what deleting one would free.

Definitions (README, "Retention and gc", and `ckptlake du --help` say the same):

* logical bytes -- the sum of the versions' file sizes (each manifest's total_bytes);
* stored bytes -- the listed sizes of the distinct chunk objects the artifact's (version's)
  versions reference; a pack counts whole, however little of it a version uses;
* exclusive bytes -- stored bytes of the chunks nothing else live references: no other
  artifact (for a version: no other version), and no shard record of a step not committed
  yet.  Deleting the artifact (version) alone, then gc, frees exactly these;
* shared bytes -- stored - exclusive.

Lake-wide, every listed chunk is in exactly one of: exclusive to one artifact, shared between
artifacts (or with a pending sharded step), only in pending shard records, or orphan (nothing
references it: gc collects it after the grace period, or a push is writing it right now).  So

    sum(exclusive over all artifacts) + shared + pending + orphan == bytes under chunks/

holds exactly, by construction, for the listing du made; manifests, aliases, summaries and the
other small objects are `metadata`, objects that are not the lake's are `foreign`.

Cost: one listing of the whole lake (chunks included) and one GET per manifest (and per shard
record of a pending step); no chunk is read.  That is gc --dry-run's work minus its second
listing, its alias reads and its records, and the manifests are read while chunks/ is still
being listed (artifacts/ sorts first, so the roots are known early).  Every chunk counted is
one the listing saw: a version committed after its artifacts/ part is not counted (its chunks
are then orphans), a version deleted meanwhile is skipped.

Memory: one dict entry per listed chunk, digest (33-byte bytes) -> one int holding the chunk's
size and who references it (one version, several versions of one artifact, several artifacts,
or nobody): 150 bytes per chunk in CPython (tracemalloc, 200,000 entries), ~150 MB per
million chunks, like gc's sets; plus the digests of manifests read ahead of the listing, at
most _MAX_BUFFERED (~45 MB), and one small row per version.  Who references a chunk needs no per-chunk set because
artifacts are read one at a time: "several artifacts" remembers the last one that saw the
chunk, which is enough to count a chunk once per artifact.  Per version and per artifact only
counters are kept.  Beyond ~100M chunks this wants gc's disk-spilled sorted digest runs
(a merge of (digest, size) from the listing with (digest, root) from the manifests).
"""
from __future__ import annotations

import json
import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterator, TypeVar

from ..errors import IntegrityError
from ..format import layout
from ..results import _Result
from ..store.base import Store
from ..transfer.pool import Executor, cancel, start_thread, wait_result
from .gc import GB, _Listing, _read_version, _ShardRoots

_META_WORKERS = 16
# Digests of manifests read before the listing of chunks/ is done wait in memory, up to this
# many (~90 bytes each: ~45 MB); past it, reading waits for the listing.
_MAX_BUFFERED = 500_000
_AFTER_ARTIFACTS = layout.ARTIFACTS_PREFIX[:-1] + chr(ord("/") + 1)  # "artifacts0"
T = TypeVar("T")
R = TypeVar("R")
SORT_KEYS = ("stored", "exclusive", "logical", "name")


@dataclass
class DuVersion(_Result):
    artifact: str
    version: int
    step: int | None
    created: datetime | None  # None: the manifest's time could not be read
    logical_bytes: int = 0
    stored_bytes: int = 0
    exclusive_bytes: int = 0
    shared_bytes: int = 0
    stored_usd_month: float = 0.0
    exclusive_usd_month: float = 0.0


@dataclass
class DuArtifact(_Result):
    artifact: str
    version_count: int = 0
    logical_bytes: int = 0
    stored_bytes: int = 0
    exclusive_bytes: int = 0
    shared_bytes: int = 0
    stored_usd_month: float = 0.0
    exclusive_usd_month: float = 0.0  # saved per month if it alone were deleted
    versions: list[DuVersion] = field(default_factory=list)  # with versions=True


@dataclass
class DuTotals(_Result):
    """The whole lake (whatever the prefix): the listing, split so that it reconciles."""
    objects: int = 0
    total_bytes: int = 0  # every listed object under the lake's root
    chunk_objects: int = 0
    chunk_bytes: int = 0
    exclusive_bytes: int = 0  # sum over all artifacts
    shared_bytes: int = 0  # chunks referenced by two or more artifacts (or a pending step)
    pending_bytes: int = 0  # chunks only shard records of uncommitted steps reference
    orphan_objects: int = 0
    orphan_bytes: int = 0  # referenced by nothing: gc collects them after the grace period
    metadata_objects: int = 0
    metadata_bytes: int = 0  # the lake's other objects: manifests, aliases, summaries, ...
    foreign_objects: int = 0
    foreign_bytes: int = 0  # not the lake's (gc never deletes them)
    artifacts: int = 0
    versions: int = 0
    logical_bytes: int = 0
    missing_chunks: int = 0  # references to chunks the listing lacks (ckptlake verify)
    # Multipart uploads never completed nor aborted (a push killed mid-upload): no object is
    # listed for them, but their parts are billed as stored until gc aborts them (once
    # older than grace_period).  None: the store could not list them or tell their size.
    incomplete_uploads: int | None = 0
    incomplete_upload_bytes: int | None = 0
    total_usd_month: float = 0.0  # the objects and the incomplete uploads' parts


@dataclass
class DuReport(_Result):
    lake: str
    prefix: str
    sort: str
    storage_price_per_gb_month: float
    artifacts: list[DuArtifact]
    lake_totals: DuTotals


def _usd(nbytes: int, price: float) -> float:
    return round(nbytes / GB * price, 4)


class _Owners:
    """digest -> (size, who references it), packed into one int per chunk (module docstring):
    size << 40 | code, where code is

      0                  nobody
      1 + r              only root r (a version, or the pseudo-root of pending shard records)
      MULTI + a          several roots, all of artifact a
      ACROSS + a         several artifacts; a is the last one that referenced it
    """

    SHIFT = 40
    MASK = (1 << SHIFT) - 1
    MULTI = 1 << 38
    ACROSS = 1 << 39

    def __init__(self) -> None:
        self.map: dict[bytes, int] = {}
        self.art_of: list[int] = []  # root -> artifact

    def reference(self, root: int, artifact: int, digests: frozenset[bytes] | set[bytes]
                  ) -> tuple[int, int, int]:
        """Record that `root` (of `artifact`) references `digests`; returns (its stored bytes,
        the bytes new to the artifact, references to unlisted chunks).  Artifacts must come
        one at a time: all roots of one, then the next."""
        shift, mask, multi, across = self.SHIFT, self.MASK, self.MULTI, self.ACROSS
        art_of, table = self.art_of, self.map
        stored = new_to_artifact = missing = 0
        mine = 1 + root
        for d in digests:
            value = table.get(d)
            if value is None:
                missing += 1
                continue
            size, code = value >> shift, value & mask
            stored += size
            if code == 0:
                new_to_artifact += size
                code = mine
            elif code < multi:
                if code == mine:
                    continue
                if art_of[code - 1] == artifact:
                    code = multi + artifact
                else:
                    new_to_artifact += size
                    code = across + artifact
            elif code < across:
                if code - multi == artifact:
                    continue
                new_to_artifact += size
                code = across + artifact
            else:
                if code - across == artifact:
                    continue
                new_to_artifact += size
                code = across + artifact
            table[d] = (size << shift) | code
        return stored, new_to_artifact, missing


def disk_usage(store: Store, *, prefix: str = "", versions: bool = False,
               price: float = 0.0, sort: str = "stored") -> DuReport:
    """Per artifact (and per version), logical, stored, exclusive and shared bytes; reads
    listings and manifests only (module docstring).  prefix selects the artifacts shown; the
    sharing is always lake-wide."""
    if sort not in SORT_KEYS:
        from ..errors import UsageError

        raise UsageError(f"--sort {sort!r}: expected one of {', '.join(SORT_KEYS)}")
    totals = DuTotals()
    listing = _Listing()
    owners = _Owners()
    table, shift = owners.map, owners.SHIFT
    # 1. One listing of everything, in a thread: roots (manifests, shard records) come first
    # (artifacts/ sorts before chunks/), and the manifests are read while chunks are listed.
    lister = _Lister(store, totals, listing, table, shift)
    start_thread(lister)  # (it never takes a SIGTERM meant for the main thread)
    lister.roots_ready.wait()
    lister.check()

    numbers: dict[str, list[int]] = {}
    for artifact, n in listing.versions:
        numbers.setdefault(artifact, []).append(n)
    names = sorted(numbers)
    index = {name: a for a, name in enumerate(names)}

    # 2. The manifests, in (artifact, version) order (_Owners needs one artifact at a time);
    # references wait for the chunk sizes, buffered up to _MAX_BUFFERED digests.
    rows: list[DuArtifact] = []
    version_rows: list[DuVersion] = []  # by root number

    def apply(artifact: str, read: Any) -> None:
        a = index[artifact]
        if not rows or rows[-1].artifact != artifact:
            rows.append(DuArtifact(artifact=artifact))
        row = rows[-1]
        root = len(version_rows)
        owners.art_of.append(a)
        stored, new, missing = owners.reference(root, a, read.digests)
        row.version_count += 1
        row.logical_bytes += read.total_bytes
        row.stored_bytes += new
        totals.missing_chunks += missing
        version_rows.append(DuVersion(
            artifact=artifact, version=read.facts.version, step=read.facts.step,
            created=read.facts.created if read.facts.created_known else None,
            logical_bytes=read.total_bytes, stored_bytes=stored))

    todo = [(artifact, n) for artifact in names for n in sorted(numbers[artifact])]
    buffered: list[tuple[str, Any]] | None = []
    ahead = 0  # digests in `buffered`
    try:
        for artifact, read in _ordered_map(lambda job: (job[0], _read(store, *job)), todo,
                                           workers=_META_WORKERS):
            if read is None:
                continue  # deleted since the listing
            if buffered is None:
                apply(artifact, read)
                continue
            buffered.append((artifact, read))
            ahead += len(read.digests)
            if ahead >= _MAX_BUFFERED or not lister.is_alive():
                lister.join()
                lister.check()
                for item in buffered:
                    apply(*item)
                buffered = None
        lister.join()
        lister.check()
    finally:
        lister.stop = True  # a failure here: do not go on listing in the background
    for item in buffered or ():
        apply(*item)
    # Artifacts whose every version went meanwhile get no row; the index must still match.
    rows_by_name = {r.artifact: r for r in rows}
    rows = [rows_by_name.get(name) or DuArtifact(artifact=name) for name in names]
    pending = set(_ShardRoots(store, command="du", hint=_HINT).digests(listing))  # may repeat
    owners.art_of.append(len(names))
    owners.reference(len(version_rows), len(names), pending)

    # 3. Who keeps what: one pass over the chunks.
    mask, multi, across = owners.MASK, owners.MULTI, owners.ACROSS
    pending_root, pending_artifact = len(version_rows), len(names)
    for value in table.values():
        size, code = value >> shift, value & mask
        if code == 0:
            totals.orphan_objects += 1
            totals.orphan_bytes += size
        elif code < multi:
            root = code - 1
            if root == pending_root:
                totals.pending_bytes += size
            else:
                version_rows[root].exclusive_bytes += size
                rows[owners.art_of[root]].exclusive_bytes += size
        elif code < across:
            if code - multi == pending_artifact:
                totals.pending_bytes += size
            else:
                rows[code - multi].exclusive_bytes += size
        else:
            totals.shared_bytes += size

    for v in version_rows:
        v.shared_bytes = v.stored_bytes - v.exclusive_bytes
        v.stored_usd_month, v.exclusive_usd_month = _usd(v.stored_bytes, price), \
            _usd(v.exclusive_bytes, price)
    by_artifact: dict[str, list[DuVersion]] = {}
    if versions:
        for v in version_rows:
            by_artifact.setdefault(v.artifact, []).append(v)
    for row in rows:
        row.shared_bytes = row.stored_bytes - row.exclusive_bytes
        row.stored_usd_month = _usd(row.stored_bytes, price)
        row.exclusive_usd_month = _usd(row.exclusive_bytes, price)
        row.versions = _sorted(by_artifact.get(row.artifact, []), sort)
        totals.exclusive_bytes += row.exclusive_bytes
        totals.versions += row.version_count
        totals.logical_bytes += row.logical_bytes
    totals.artifacts = sum(1 for r in rows if r.version_count)
    _count_uploads(store, totals)
    totals.total_usd_month = _usd(totals.total_bytes + (totals.incomplete_upload_bytes or 0),
                                  price)
    shown = [r for r in rows if r.version_count and r.artifact.startswith(prefix)]
    return DuReport(lake=store.url, prefix=prefix, sort=sort,
                    storage_price_per_gb_month=price, artifacts=_sorted(shown, sort),
                    lake_totals=totals)


class _Lister(threading.Thread):
    """The listing of the whole lake, classifying as it goes; `roots_ready` is set once the
    artifacts/ keys are all seen (every later key sorts after them)."""

    def __init__(self, store: Store, totals: DuTotals, listing: _Listing, table: dict[bytes, int],
                 shift: int) -> None:
        super().__init__(name="ckptlake-du-list", daemon=True)
        self.store, self.totals, self.listing, self.table, self.shift = \
            store, totals, listing, table, shift
        self.roots_ready = threading.Event()
        self.error: BaseException | None = None
        self.stop = False

    def run(self) -> None:
        try:
            self._list()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            self.error = exc
        finally:
            self.roots_ready.set()

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def _list(self) -> None:
        totals, listing, table, shift = self.totals, self.listing, self.table, self.shift
        for info in self.store.list(""):
            if self.stop:
                return
            if info.key >= _AFTER_ARTIFACTS and not self.roots_ready.is_set():
                self.roots_ready.set()
            totals.objects += 1
            totals.total_bytes += info.size
            digest = layout.parse_chunk_key(info.key)
            if digest is not None:
                totals.chunk_objects += 1
                totals.chunk_bytes += info.size
                table[bytes.fromhex(digest)] = info.size << shift
                continue
            if not layout.is_lake_key(info.key):
                totals.foreign_objects += 1
                totals.foreign_bytes += info.size
                continue
            totals.metadata_objects += 1
            totals.metadata_bytes += info.size
            if self.roots_ready.is_set():
                continue
            # a zero-byte manifest, tombstone or shard record (a PUT cut after its head) is
            # none, as gc counts them (core/gc.py, _Listing.of)
            if parsed := layout.parse_version_key(info.key):
                if info.size > 0:
                    listing.versions[parsed] = info.size
            elif tomb := layout.parse_tombstone_key(info.key):
                if info.size > 0:
                    listing.tombs.add(tomb)
            elif (shard := layout.parse_shard_key(info.key)) and info.size > 0:
                artifact, step, rank, _ = shard
                if rank is None:
                    listing.claims.add((artifact, step))
                else:
                    listing.shard_records.setdefault((artifact, step), []).append(
                        (info.key, info.etag))


def _ordered_map(fn: Callable[[T], R], items: list[T], *, workers: int) -> Iterator[R]:
    """fn over items with `workers` threads, results in input order, at most 4 x workers
    submitted ahead (bounded memory, and parallel across artifact boundaries)."""
    with Executor(max_workers=workers, thread_name_prefix="ckptlake-du") as pool:
        window: deque[Future[R]] = deque()
        try:
            for item in items:
                window.append(pool.submit(fn, item))
                if len(window) >= 4 * workers:
                    yield wait_result(window.popleft())
            while window:
                yield wait_result(window.popleft())
        finally:
            cancel(window)


@dataclass(frozen=True)
class _Version:
    facts: Any
    total_bytes: int
    digests: frozenset[bytes]


_HINT = "its chunks would be misattributed; ckptlake verify names the problem"


class _Kept:
    """The store, keeping the bytes of the manifest gc's reader fetches: du checks that the
    manifest names its own version without a second GET."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.data: bytes | None = None

    def get(self, key: str) -> bytes:
        self.data = self.store.get(key)
        return self.data


def _read(store: Store, artifact: str, number: int) -> _Version | None:
    """gc's reader of a version's facts and chunk digests (without gc's spool: du keeps the
    digests of the versions it has read ahead of the listing, bounded by _MAX_BUFFERED).

    Unlike gc, du refuses a manifest that names another version, as ls, show and verify do:
    gc must count its chunks as live whatever it says, but du would charge them (and its
    size) to the wrong artifact.  That costs a second JSON parse of each manifest: gc's reader
    does not hand out what it parsed."""
    key = layout.version_key(artifact, number)
    kept = _Kept(store)
    try:
        got = _read_version(kept, artifact, number)  # type: ignore[arg-type]
        if got is None:
            return None
        read, digests = got
    except IntegrityError:
        raise IntegrityError(f"du cannot read {key}: not a readable manifest",
                             hint=_HINT) from None
    raw = json.loads(kept.data or b"{}")  # parsed once already by gc's reader: valid JSON
    named, n = raw.get("artifact"), raw.get("version")
    if named != artifact or type(n) is not int or n != number:
        raise IntegrityError(f"du cannot read {key}: it claims to be {named}@v{n}", hint=_HINT)
    return _Version(read.facts, read.total_bytes, frozenset(digests))


def _count_uploads(store: Store, totals: DuTotals) -> None:
    """The unfinished multipart uploads under the lake and the bytes of their parts (one
    listing, one ListParts each).  A store that cannot list them, or a server that refuses,
    leaves None (unknown), not a failed report: du's other numbers stand."""
    from ..errors import CkptlakeError, Interrupted, NotFound

    count = size = 0
    try:
        for upload in store.list_multipart(""):
            try:
                got = store.multipart_bytes(upload.key, upload.upload_id)
            except NotFound:
                continue  # completed or aborted since the listing
            count += 1
            if got is None or size is None:
                size = None
            else:
                size += got
    except Interrupted:
        raise
    except CkptlakeError:
        totals.incomplete_uploads = totals.incomplete_upload_bytes = None
        return
    totals.incomplete_uploads, totals.incomplete_upload_bytes = count, size


def _sorted(rows: list, sort: str) -> list:  # type: ignore[type-arg]
    """Largest first; by name (and version) ascending for `name` and to break ties."""
    def name(r: DuArtifact | DuVersion) -> tuple[str, int]:
        return r.artifact, getattr(r, "version", 0)

    if sort == "name":
        return sorted(rows, key=name)
    attr = f"{sort}_bytes"
    return sorted(rows, key=lambda r: (-getattr(r, attr), name(r)))
