"""Push: scan -> chunk, hash, upload what is missing -> re-check the source -> commit.

Write order (docs/format.md): chunks first, then the manifest with If-None-Match, then aliases.
A reader can therefore never see a version whose chunks are not all stored, and a push stopped
at any point leaves no version — only chunks, which the next push reuses (resume) and gc may
collect after its grace period.
"""
from __future__ import annotations

import contextlib
import os
import random
import threading
import time
import zlib
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Protocol, Sequence

from ..errors import (CkptlakeError, Interrupted, NotFound, PreconditionFailed, SourceChanged,
                      TransferError, UsageError)
from ..format import chunking, codecs, layout
from ..format.header import COMPRESSION_NONE, digest
from .chunkio import ChunkBuffers, fix_mmap_threshold
from .createonce import create_once, later_version
from .gc_guard import check_settings
from .lakeheader import REWRITTEN, open_or_create_header
from ..format.manifest import ChunkRef, FileEntry, Manifest
from ..results import PushResult
from ..store.base import Store
from ..transfer.parts import Parts
from ..transfer.pool import Counter, bounded_map
from ..transfer.progress import Progress
from ..transfer.throttle import Throttle
from .identity import tool_version, user_at_host, utcnow
from .scan import SourceFile, SourceTree

# Files below this size are packed together into one chunk object: 10,000 config shards or
# tokenizer files should not cost 10,000 requests each way.  (Tensors below it are packed into
# runs by the same measure: format/chunking.py.)
PACK_THRESHOLD = chunking.SMALL


@dataclass(frozen=True)
class _Slice:
    """A run of one large file stored as one chunk object (format/chunking.py says where)."""

    file: int
    offset: int
    length: int
    # The slice's bytes are elements of this dtype ("F32", "BF16", ... as in safetensors),
    # counted from its first byte: a hint for a codec, None when unknown or mixed.
    dtype: str | None = None


@dataclass(frozen=True)
class _Pack:
    """Several small files stored back to back in one chunk object."""

    files: tuple[int, ...]


def file_cuts(f: SourceFile, chunk_size: int) -> Sequence[chunking.Cut]:
    """Where to cut one large file: at its tensors' boundaries if its layout is known (found
    from a few bounded reads of its header), else at fixed offsets."""
    fd = f.open()
    try:
        return chunking.plan(lambda offset, n: os.pread(fd, n, offset), f.size, chunk_size,
                             name=f.path).cuts
    finally:
        os.close(fd)


def plan_units(files: Sequence[SourceFile], chunk_size: int) -> list[_Slice | _Pack]:
    """Split files into upload units: slices of large files, packs of small ones.

    Pack boundaries are partly content-defined (a hash of the path decides where a new pack may
    begin), so adding or removing one small file disturbs one or two packs, not all that follow.
    """
    units: list[_Slice | _Pack] = []
    pack: list[int] = []
    pack_bytes = 0
    for i, f in enumerate(files):
        if f.size == 0:
            continue
        if f.size >= min(PACK_THRESHOLD, chunk_size):
            units.extend(_Slice(i, c.offset, c.length, c.dtype)
                         for c in file_cuts(f, chunk_size))
            continue
        boundary = (zlib.crc32(f.path.encode()) & 31) == 0 and pack_bytes >= chunk_size // 8
        if pack and (pack_bytes + f.size > chunk_size or boundary):
            units.append(_Pack(tuple(pack)))
            pack, pack_bytes = [], 0
        pack.append(i)
        pack_bytes += f.size
    if pack:
        units.append(_Pack(tuple(pack)))
    return units


def _stored_size(store: Store, key: str) -> int | None:
    try:
        return store.stat(key).size
    except NotFound:
        return None


def _frame_of(store: Store, key: str, rawlen: int, size: int) -> bool:
    """Whether the object at `key`, of `size` bytes, is a frame of `rawlen` raw bytes, by its
    head and (a planes frame) its plane table (False if it is gone meanwhile: it is written
    again)."""
    try:
        head = store.get_range(key, 0, min(size, codecs.FRAME_PREFIX))
    except NotFound:
        return False
    return codecs.fits_frame(head, rawlen, size)


# One listing page (1000 keys on S3) is billed like ~12 HEADs and answers sequentially, so the
# lake's chunk listing replaces per-chunk HEADs only while it stays well below their number.
HEADS_PER_LIST_PAGE = 8
LIST_PAGE_KEYS = 1000


def known_chunks(store: Store, units: int) -> dict[str, int] | None:
    """Key -> size of every chunk in the lake, if listing them is cheaper than `units` HEADs.

    A first push to a new or small lake then costs one LIST instead of a HEAD per chunk (the
    common cold case: a fresh run's first checkpoint).  In a lake too large for that, the
    listing stops after its budget and returns None: check each chunk with a HEAD.
    """
    budget = max(1, units // HEADS_PER_LIST_PAGE) * LIST_PAGE_KEYS
    sizes: dict[str, int] = {}
    for info in store.list(layout.CHUNKS_PREFIX):
        if len(sizes) >= budget:
            return None
        sizes[info.key] = info.size
    return sizes


class FileObserver(Protocol):
    """Sees every byte of the pushed files as it is read, to derive extra per-file records
    (e.g. safetensors tensor digests) without a second read of the data.

    `on_read` is called from worker threads, possibly out of file order, exactly once for each
    byte range of each file; `entry_fields` is called once per file after all its bytes were
    read and returns fields to set on its FileEntry (or {}).  `use_hash` is called once,
    before any byte is read, with the lake's hash (header `hash`) for any digest it records.
    """

    def use_hash(self, algo: str) -> None: ...

    def on_read(self, path: str, offset: int, data: bytes) -> None: ...

    def entry_fields(self, path: str, size: int) -> dict[str, Any]: ...


def resolve_compression(requested: str | None, lake_default: str) -> str:
    """The push's compression: the caller's choice, else the lake header's."""
    mode = requested or lake_default
    if mode not in codecs.COMPRESSION_MODES:
        raise UsageError(f"unknown compression {mode!r}" + ("" if requested else
                         " in the lake header (written by a newer ckptlake?)"),
                         hint="use auto or none" if requested else
                         "upgrade ckptlake, or push with --compression none")
    return mode


class _Claim:
    """One digest being stored by one worker of this push; later occurrences wait on it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.stored = False


class _Box:
    """A unit's raw bytes, held only as long as they are needed: released as soon as they are
    encoded, so that a worker then holds only the (smaller) frame while it uploads (the memory
    bound).  `on_release` hands a reused buffer back (see _Uploader._unit_bytes)."""

    def __init__(self, data: bytes | memoryview,
                 on_release: Callable[[], None] | None = None) -> None:
        self.data: Any = data
        self._on_release = on_release

    def release(self) -> None:
        if self.data is None:
            return
        if self._on_release is not None:
            self.data.release()  # a view of a reused buffer: nothing may read it after this
            self._on_release()
        self.data = None


class _Frame:
    """An encoded chunk in a reused buffer; `with` it, and the buffer goes back afterwards."""

    def __init__(self, view: memoryview | bytearray, buf: Any, pool: ChunkBuffers) -> None:
        self.view, self._buf, self._pool = view, buf, pool

    def __enter__(self) -> "_Frame":
        return self

    def __exit__(self, *exc: object) -> None:
        if isinstance(self.view, memoryview):
            self.view.release()
        self._pool.give(self._buf)


class _Uploader:
    """Reads, hashes and stores units; one instance per push, shared by the worker threads.

    Each digest is stored once per push: identical chunks (copies of one file, the zero blocks
    of a sparse file) are checked and sent by whichever worker hashes them first, and the
    other occurrences wait for that result instead of sending the same bytes again (neither
    the listing taken at the start nor a HEAD racing the first PUT would know of it).
    """

    def __init__(self, store: Store, tree: SourceTree, algo: str, progress: Progress,
                 observers: Sequence[FileObserver] = (), throttle: Throttle | None = None,
                 parts: Parts | None = None, compression: str = COMPRESSION_NONE,
                 concurrency: int = 8) -> None:
        self.store, self.tree, self.algo, self.progress = store, tree, algo, progress
        self.observers = observers
        self.throttle = throttle or Throttle(None)
        self.parts = parts
        self.compression = compression
        if compression != COMPRESSION_NONE:
            fix_mmap_threshold()
        self.uploaded = Counter()  # raw bytes of the chunks this push stored
        self.sent = Counter()  # bytes of the objects it stored (encoded or raw)
        self.deduplicated = Counter()
        # digest -> stored size of every chunk this push found or stored encoded: the
        # manifest's `stored` hint, and the stored bytes of the version
        self.stored: dict[str, int] = {}
        # Encoding is CPU work on a chunk-sized copy: at most one per core at a time keeps the
        # memory bound (concurrency x chunk, plus this many x ~2 chunks) and loses no speed.
        self._encoders = threading.BoundedSemaphore(max(1, min(4, os.cpu_count() or 1)))
        # Source chunks are read into, and frames assembled in, reused page-aligned buffers
        # (see ChunkBuffers): every worker holds at most one of each.
        self._buffers = ChunkBuffers(keep=2 * max(1, concurrency))
        self.unit_of: dict[str, _Slice | _Pack] = {}  # digest -> unit, for re-uploads
        self._claims: dict[str, _Claim] = {}  # digest -> its store in this push
        self._lock = threading.Lock()
        self.known: dict[str, int] | None = None  # chunk key -> size listed at start, if listed

    def _read(self, f: SourceFile, offset: int, into: memoryview, *,
              observe: bool = True) -> None:
        """Fill `into` with the file's bytes from `offset` (its length says how many)."""
        fd = f.open()
        try:
            got = 0
            while got < len(into):
                n = os.preadv(fd, [into[got:]], offset + got)
                if n == 0:
                    st = os.fstat(fd)
                    if (st.st_size, st.st_mtime_ns) == (f.size, f.mtime_ns):
                        # no writer: the file holds fewer bytes than its size says (`/sys`
                        # files say 4096), so no push of it can ever succeed
                        raise UsageError(
                            f"{f.abspath} says it holds {f.size} bytes yet reading it ends at "
                            f"{offset + got} (a /proc or /sys file); nothing was committed",
                            hint="copy it into a regular file first, or --exclude it")
                    raise SourceChanged(f"{f.abspath} shrank while it was being pushed; "
                                        "nothing was committed",
                                        hint="push again once the writer is done")
                got += n
        finally:
            os.close(fd)
        if observe:
            for obs in self.observers:
                obs.on_read(f.path, offset, into)

    @contextlib.contextmanager
    def _unit_bytes(self, unit: _Slice | _Pack, *, observe: bool = True) -> Iterator[_Box]:
        """A unit's bytes, read into a reused buffer that goes back when the box is released
        (at the latest on exit), so nothing may keep a reference to them beyond that:
        observers copy what they keep."""
        n = unit.length if isinstance(unit, _Slice) else \
            sum(self.tree.files[i].size for i in unit.files)
        buf = self._buffers.take(n)
        view = memoryview(buf)[:n] if buf is not None else memoryview(bytearray(n))
        box = _Box(view, lambda: self._buffers.give(buf))
        try:
            if isinstance(unit, _Slice):
                self._read(self.tree.files[unit.file], unit.offset, view, observe=observe)
            else:
                at = 0
                for i in unit.files:
                    size = self.tree.files[i].size
                    self._read(self.tree.files[i], 0, view[at:at + size], observe=observe)
                    at += size
            yield box
        finally:
            box.release()

    def _store(self, box: _Box, unit: _Slice | _Pack) -> str:
        """Store one unit's bytes, box.data (reporting them as progress); returns their digest.

        The bytes come in a box so that they can be released as soon as they are encoded:
        a worker then holds only the (smaller) frame while it uploads (the memory bound)."""
        d = digest(self.algo, box.data)
        n = len(box.data)
        while True:
            with self._lock:
                self.unit_of.setdefault(d, unit)
                first = self._claims.get(d)
                if first is None:
                    claim = self._claims[d] = _Claim()
                    break
            first.done.wait()
            if first.stored:  # this push already holds these bytes in the lake
                self.deduplicated.add(n)
                self.progress.advance(n)
                return d
            # The first occurrence failed (its error fails the push); try in its place.
        try:
            self._store_once(d, box, unit)
            claim.stored = True
        finally:
            if not claim.stored:
                with self._lock:
                    del self._claims[d]
            claim.done.set()
        return d

    def _body(self, data: bytes | memoryview, unit: _Slice | _Pack) -> "_Frame | None":
        """The frame to store for `data`, or None to store it raw (compression off, or no
        encoding saves enough: a stored object is never larger than the raw chunk)."""
        if self.compression == COMPRESSION_NONE or not (
                codecs.MIN_ENCODED_CHUNK <= len(data) <= codecs.MAX_ENCODED_CHUNK):
            return None
        with self._encoders:
            # a tensor-aware planner may say what the slice holds; else the sample decides
            frame = self._buffers.take(len(data))
            try:
                body = codecs.encode_auto(data, getattr(unit, "dtype", None), into=frame)
            except BaseException:
                self._buffers.give(frame)
                raise
            if body is None:
                self._buffers.give(frame)
                return None
            return _Frame(body, frame, self._buffers)

    def _store_once(self, d: str, box: _Box, unit: _Slice | _Pack) -> None:
        """Check (listing or HEAD) and if need be upload the first occurrence of digest d."""
        key = layout.chunk_key(d)
        # Content-addressed: an existing object of the right size holds exactly these bytes.
        # The size check matters: SeaweedFS keeps an *empty* object when a PUT's connection
        # closes right after the request head (a pusher killed at that instant), and trusting
        # mere existence would commit versions that can never be pulled.
        # A listing taken at the start stands in for the HEADs: a chunk stored since then by a
        # concurrent pusher is merely sent again (same bytes), and one swept since then by gc is
        # what the commit guard restores either way.
        # An object smaller than the raw bytes (but not empty) is a frame another pusher
        # stored: equally valid (readers decode it and check the digest), so it counts as
        # present, once its first bytes read as the head of a frame of these n bytes and, for
        # a planes frame (tensors), its plane table adds up to the object's size (one small
        # ranged GET): a raw object cut short or damaged (by hand, by a disk), or a planes
        # frame cut short, fails that and is written again, which also repairs the versions
        # that reference it; a version committed on top of it could never be pulled.  A plain
        # zstd frame's size is not in its head: one cut short behind an intact head is still
        # trusted.  No server was seen keeping a truncated object: a PUT is atomic on S3, the
        # local store renames whole files, and SeaweedFS 4.48, checked by cutting PUTs at
        # 1 MiB, 3 MiB and 5 MiB into their bodies, kept nothing (only a PUT cut right after its
        # head leaves a zero-byte object).  A reader (and verify --read-data) would still catch
        # such an object by its digest.
        n = len(box.data)
        stored = (self.known.get(key) if self.known is not None
                  else _stored_size(self.store, key))
        if stored is not None and 0 < stored < n and not _frame_of(self.store, key, n, stored):
            stored = None
        if stored is not None and 0 < stored <= n:
            if stored < n:
                with self._lock:
                    self.stored[d] = stored
            self.deduplicated.add(n)
            self.progress.advance(n)
            return
        body = self._body(box.data, unit)
        if body is None:
            self.throttle.acquire(n)
            self._put(key, box.data, d, progress=self.progress.advance)
            self.sent.add(n)
        else:
            box.release()  # the raw bytes are no longer needed: only the frame is held
            with body:
                size = len(body.view)
                self.throttle.acquire(size)
                with self._lock:
                    self.stored[d] = size
                self._put(key, body.view, None, progress=None)
            self.progress.advance(n)
            self.sent.add(size)
        self.uploaded.add(n)

    def _put(self, key: str, data: bytes, d: str | None, *,
             progress: Callable[[int], None] | None = None) -> None:
        """Upload one chunk object; `progress` hears its bytes as they land (part by part in
        parts).  d: the chunk's digest when `data` is the raw chunk (None for a frame)."""
        if self.parts is not None and self.parts.applies(len(data)):
            self.parts.put(self.store, key, data, on_part=progress)
            return
        # in a SHA-256 lake a raw chunk's digest is the body's SHA-256: an S3 signer need not
        # hash it again.  A BLAKE3 lake (the default) cannot lend it, and the signer hashes on
        # plain http; BLAKE3's cheaper hashing still wins (docs/benchmarks.md, "BLAKE3 the
        # default for new lakes").
        self.store.put(key, data, sha256=d if d is not None and self.algo == "sha256" else None)
        if progress is not None:
            progress(len(data))

    def __call__(self, unit: _Slice | _Pack) -> list[tuple[int, int, ChunkRef, str | None]]:
        """Returns (file index, offset in file, chunk ref, whole-file digest or None)."""
        with self._unit_bytes(unit) as box:
            if isinstance(unit, _Slice):
                d = self._store(box, unit)
                return [(unit.file, unit.offset, ChunkRef(d, unit.length), None)]
            files, offset = [], 0
            for i in unit.files:  # each packed file's own digest, before the pack is released
                size = self.tree.files[i].size
                files.append((i, size, offset,
                              digest(self.algo, box.data[offset:offset + size])))
                offset += size
            d = self._store(box, unit)
            return [(i, 0, ChunkRef(d, size, off), fd) for i, size, off, fd in files]

    def before_commit(self) -> None:
        """Called right before the commit's guard (core/gc_guard.guard_commit): a push can
        restore any chunk from its source, so nothing to check (see core/streampush.py)."""

    def release(self) -> None:
        """Called once the commit's guard is done (see core/streampush.py)."""

    def reupload(self, digests: set[str]) -> None:
        """Store these chunks again from the source (a concurrent gc swept them).

        The source must still hold the same bytes: they are re-hashed before upload.
        """
        for d in sorted(digests):
            with self._unit_bytes(self.unit_of[d], observe=False) as box:
                if digest(self.algo, box.data) != d:
                    raise SourceChanged("a pushed file changed before a swept chunk could be "
                                        "restored", hint="push again")
                self._restore(d, box.data)

    def _restore(self, d: str, data: bytes | memoryview) -> None:
        """Store a swept chunk again as the manifest's hint says (encoded or raw), so ranged
        readers agree."""
        body = self._body(data, self.unit_of[d]) if d in self.stored else None
        if body is None:
            self._put(layout.chunk_key(d), data, d)
        else:
            with body:
                self._put(layout.chunk_key(d), body.view, None)


class _DryRun(_Uploader):
    """Decides every chunk as a push does -- what the lake holds (the same listing or HEADs,
    the same check of a present frame), what a new chunk encodes to -- and sends nothing:
    `push --dry-run` then reports what the push would upload, in the push's own counts."""

    def _put(self, key: str, data: bytes, d: str | None, *,
             progress: Callable[[int], None] | None = None) -> None:
        if progress is not None:
            progress(len(data))


def upload_tree(store: Store, tree: SourceTree, *, algo: str, chunk_size: int, concurrency: int,
                progress: Progress, observers: Sequence[FileObserver] = (),
                throttle: Throttle | None = None, parts: Parts | None = None,
                compression: str = COMPRESSION_NONE, dry_run: bool = False
                ) -> tuple[tuple[FileEntry, ...], _Uploader]:
    """Store every byte of the tree as chunks; return manifest file entries.

    An entry added to a scanned directory during the upload fails it (SourceChanged), for a
    rank's shard too: a rank's directory still being written is the case that check is for,
    and a directory other ranks still write into is no finished checkpoint either (a file of
    theirs caught mid-write fails the push anyway).

    `parts`: how chunks of at least its threshold move (multipart); None: one PUT per chunk.
    `compression`: "auto" stores chunks encoded where that saves bytes, "none" raw.
    The uploader's `stored` holds the manifest's stored-size hints.  `dry_run`: store nothing
    (the entries and the uploader's counts are what a push would have).
    """
    for observer in observers:
        observer.use_hash(algo)
    uploader = (_DryRun if dry_run else _Uploader)(
        store, tree, algo, progress, observers, None if dry_run else throttle, parts,
        compression, concurrency)
    refs: dict[int, list[tuple[int, ChunkRef]]] = {i: [] for i in range(len(tree.files))}
    digests: dict[int, str] = {}
    progress.start(phase="push", total_bytes=tree.total_bytes, total_files=len(tree.files))
    try:
        units = plan_units(tree.files, chunk_size)
        uploader.known = known_chunks(store, len(units))
        for results in bounded_map(uploader, units, workers=concurrency, name="ckptlake-push"):
            for i, off, ref, fdigest in results:
                refs[i].append((off, ref))
                if fdigest is not None:
                    digests[i] = fdigest
        for f in tree.files:  # the bytes we stored must be the bytes that are there now
            f.check_unchanged()
        tree.check_complete()  # ... and nothing added since the scan
    finally:
        progress.finish()
    entries = []
    for i, f in enumerate(tree.files):
        extra: dict[str, Any] = {}
        for obs in observers:
            extra.update(obs.entry_fields(f.path, f.size))
        entries.append(FileEntry(path=f.path, size=f.size, executable=f.executable,
                                 chunks=tuple(r for _, r in sorted(refs[i], key=lambda x: x[0])),
                                 digest=digests.get(i), **extra))
    entries += [FileEntry(path=p, symlink=t) for p, t in tree.symlinks]
    entries.sort(key=lambda e: e.path)
    return tuple(entries), uploader


def check_next_version(artifact: str, number: int) -> int:
    """`number` if the keys can hold it: past v9999999999 an artifact is full (its key would
    have 11 digits, which no listing parses back, so the version would be invisible)."""
    if number > layout.MAX_NUMBER:
        raise UsageError(f"{artifact} has reached the largest version number, "
                         f"v{layout.MAX_NUMBER}; nothing was committed",
                         hint="push to another artifact")
    return number


def commit_version(store: Store, manifest: Manifest) -> Manifest:
    """Claim the next free version number with If-None-Match; on a lost race take the next.

    Two pushers may both see v7 as the latest and both try v8: exactly one create succeeds, the
    other re-lists and tries again, so both commit, with distinct numbers, and nothing is
    overwritten.

    A manifest write that runs out of attempts may still have landed (the server wrote it and
    then went away before answering: store/retry.py, OutcomeUnknown).  Reported as a plain
    failure, the version would exist although the caller was told it failed, and the rerun the
    error asks for would commit the same checkpoint again.  So the key is read back
    (_settle_unknown): holding our bytes, the version is ours and committed; holding another
    writer's, we lost the race and take the next number; absent, nothing was committed; and if
    it cannot be read either, the error says that vN may have been committed.

    An empty manifest at N (a PUT cut after its head) is taken over at N only while no
    non-empty version above N exists (create_once): a first-release pusher counts it as a
    version and may have committed N+1 meanwhile, and ours, committed after that, must not get
    the lower number.
    """
    from ..errors import OutcomeUnknown
    from .catalog import next_number

    n = next_number(store, manifest.artifact)
    for attempt in range(200):
        check_next_version(manifest.artifact, n)
        candidate = replace(manifest, version=n)
        key = layout.version_key(manifest.artifact, n)
        body = candidate.encode()
        try:
            # (N comes from listings made right before this write, @tomb/ last: a version
            # committed at N and deleted since would have to do both within that one request;
            # docs/format.md, Residual risks)
            # create_once: an empty object at N (a PUT cut after its head) is taken over at N,
            # unless a later version exists (then 412, and the re-listing below moves past it)
            create_once(store, key, body)
            return candidate
        except PreconditionFailed:
            pass
        except OutcomeUnknown as exc:
            if _settle_unknown(store, key, body, manifest.artifact, n, exc):
                return candidate
        time.sleep(random.random() * min(1.0, 0.01 * 2 ** min(attempt, 7)))
        n = max(n + 1, next_number(store, manifest.artifact))
    raise TransferError(f"could not claim a version number for {manifest.artifact} after 200 "
                        "attempts", hint="too many concurrent pushers; try again")


def _deleted_at(store: Store, artifact: str, number: int, body: bytes) -> bool:
    """Whether N was deleted (its tombstone is there): another writer's version committed
    there and removed by gc or `rm` (True: take a later number, N is not free), or our own
    write, landed and deleted before we could read it back -- then writing it again would undo
    someone's deletion: NotFound, saying so.  IntegrityError if the tombstone cannot be read
    (whose version N was is unknown then)."""
    from .tombstones import load_strict, present

    if not present(store, artifact, number):
        return False
    from ..format.manifest import decode_manifest

    tomb = load_strict(store, artifact, number)
    mine = decode_manifest(body, key=layout.version_key(artifact, number))
    if tomb is not None and (tomb.created, tomb.created_by) == (mine.created, mine.created_by):
        raise NotFound(f"{artifact}@v{number} was committed by this push, then "
                       f"{tomb.deleted_text()} before the push could confirm it; nothing else "
                       "was committed",
                       hint=f"see `ckptlake ls {artifact} --all`; push again only to restore "
                            "what was deleted")
    return True


# Waits before the second and later reads of a manifest whose write had an unknown outcome:
# the outage that ate the write's answer may last beyond the retry layer's own attempts.
_READBACK_WAITS = (1.0, 4.0)


def _settle_unknown(store: Store, key: str, body: bytes, artifact: str, number: int,
                    error: TransferError) -> bool:
    """After the manifest write of `artifact`@v`number` at `key` gave up with an unknown
    outcome (`error`): True if the key holds `body` (our write landed: committed), False if it
    holds another writer's manifest (a lost race: take the next number).  A key found absent
    or empty is written again (conditionally): that commits ours, or finds the late write --
    but not once a non-empty version above N exists (False: take highest + 1), since ours,
    committed after that one, would get the lower number (a first-release pusher counts an
    empty vN as a version).  Our first write landing late at an *absent* N after that would be
    a second copy at the lower number, never the newest hidden; at an empty N it cannot land
    (If-None-Match fails on the empty object).
    Raises OutcomeUnknown naming the version if it cannot be settled within a few tries
    (bounded)."""
    from ..errors import OutcomeUnknown

    last: Exception | None = None
    for wait in (0.0, *_READBACK_WAITS):
        time.sleep(wait)
        try:
            stored = store.get(key)
        except NotFound:
            stored = b""
        except TransferError as exc:  # still unreachable (after the retry layer's attempts)
            last = exc
            continue
        if stored == body:
            return True
        if stored:
            return False
        # Absent now is not "never": the timed-out write may still be on its way to the
        # server.  Writing again, conditionally, settles it: ours lands (committed), or the
        # late one did (412: read it back), and a late one after ours gets 412 itself.
        try:
            if later_version(store, artifact, number) is not None:
                return False
            if _deleted_at(store, artifact, number, body):
                return False
            create_once(store, key, body)
            return True
        except PreconditionFailed:
            try:
                stored = store.get(key)
            except (NotFound, TransferError) as exc:
                last = exc
                break
            if stored:
                return stored == body
            return False  # still empty: left alone for a later version (create_once)
        except TransferError as exc:
            last = exc
            break
    raise OutcomeUnknown(
        f"{artifact}: version v{number} may have been committed: writing its manifest failed "
        f"({error.message}) after an attempt that may have landed, and reading it back failed "
        f"too ({last})",
        hint=f"see `ckptlake ls {artifact}` before saving this checkpoint again: if "
             f"v{number} is there, it is this one, and a rerun would store it a second time"
    ) from error


def push(store: Store, tree: SourceTree, artifact: str, *, chunk_size: int | None,
         concurrency: int, step: int | None, metrics: dict[str, float],
         metadata: dict[str, str], aliases: Sequence[str], progress: Progress,
         lake_url: str, observers: Sequence[FileObserver] = (),
         manifest_fields: dict[str, Any] | None = None,
         throttle: Throttle | None = None, parts: Parts | None = None,
         compression: str | None = None, hash: str | None = None) -> PushResult:
    """Push a scanned tree as the next version of `artifact`.

    `hash`: the chunk hash if this push creates the lake (None: DEFAULT_HASH); see
    open_or_create_header.

    `observers` see the bytes as they are read (see FileObserver); `manifest_fields` sets
    further Manifest fields (lineage, provenance) on the committed version.  `compression`:
    "auto" | "none", None for the lake header's setting.
    """
    from . import clock

    # Both clocks: the guard takes the larger elapsed time (a suspended machine's monotonic
    # clock under-reports it; see core/clock.py).
    started, started_wall = clock.now(), time.time()
    # An explicit compression goes into the header of a lake this push creates, as --hash does
    header, created = open_or_create_header(
        store, **({"chunk_size": chunk_size} if chunk_size else {}), hash=hash,
        compression=compression)
    mode = resolve_compression(compression, header.compression)
    check_settings(store)
    files, up = upload_tree(store, tree, algo=header.hash,
                            chunk_size=chunk_size or header.chunk_size,
                            concurrency=concurrency, progress=progress, observers=observers,
                            throttle=throttle, parts=parts, compression=mode)
    result = commit_upload(store, artifact, header=header, created=created, compression=mode,
                           files=files, dirs=tuple(tree.empty_dirs), kind=tree.kind, up=up,
                           step=step, metrics=metrics, metadata=metadata, aliases=aliases,
                           lake_url=lake_url, manifest_fields=manifest_fields,
                           started=started, started_wall=started_wall,
                           bytes_scanned=tree.total_bytes, progress=progress)
    if tree.warnings:  # the scan's (an --exclude that matched nothing)
        result = replace(result, warnings=[*tree.warnings, *result.warnings])
    return result


def plan(store: Store, tree: SourceTree, artifact: str, *, chunk_size: int | None,
         concurrency: int, step: int | None, aliases: Sequence[str], progress: Progress,
         lake_url: str, compression: str | None = None, hash: str | None = None,
         metrics: dict[str, float] | None = None, metadata: dict[str, str] | None = None,
         manifest_fields: dict[str, Any] | None = None) -> PushResult:
    """What `push` of `tree` would do, doing nothing (`push --dry-run`): the source read and
    hashed, each chunk looked up in the lake and a new one encoded exactly as a push would, the
    version number the push would take now (another push landing first takes it), and no
    byte written -- no chunk, no manifest, no lake header (a lake that does not exist yet is
    a warning saying the push would create it).  The manifest the push would commit, with
    `metrics`, `metadata` and `manifest_fields` (lineage, provenance), is encoded too: a
    value the push cannot store fails here as it would fail the push's commit, after its
    upload (a dry run said OK to a push that then failed)."""
    from . import clock
    from .catalog import aliases as catalog_aliases
    from .catalog import next_number

    started = clock.now()
    header, created = open_or_create_header(
        store, **({"chunk_size": chunk_size} if chunk_size else {}), hash=hash,
        compression=compression, write=False)
    if created:
        store.check_writable()  # (a local lake path that is a file: what the first write says)
    mode = resolve_compression(compression, header.compression)
    check_settings(store)
    files, up = upload_tree(store, tree, algo=header.hash,
                            chunk_size=chunk_size or header.chunk_size,
                            concurrency=concurrency, progress=progress, compression=mode,
                            dry_run=True)
    number = check_next_version(artifact, next_number(store, artifact))
    draft = Manifest(artifact=artifact, version=number, kind=tree.kind, hash=header.hash,
                     files=files, dirs=tuple(tree.empty_dirs), step=step, created=utcnow(),
                     created_by=user_at_host(), tool=tool_version(), stored=dict(up.stored),
                     metrics=dict(metrics or {}), metadata=dict(metadata or {}),
                     **(manifest_fields or {}))
    draft.encode()
    warnings = list(tree.warnings)
    if created == REWRITTEN:
        warnings.append(f"the lake header of {lake_url} is lost (it has versions but no "
                        f"{layout.HEADER_KEY}): the push would write a new one, hash "
                        f"{header.hash}, compression {header.compression}")
    elif created:
        warnings.append(f"there is no lake at {lake_url} yet: the push would create it (if "
                        "you meant an existing lake, check the lake location)")
    # the aliases it would move off another version, as a real push reports them
    current = catalog_aliases(store, artifact) if aliases and not created else {}
    moved = {name: current[name] for name in aliases if name in current}
    return PushResult(
        lake=lake_url, artifact=artifact, version=number, step=step, files=len(files),
        bytes_scanned=tree.total_bytes, bytes_uploaded=up.uploaded.value,
        bytes_deduplicated=up.deduplicated.value, chunks_uploaded=up.uploaded.count,
        chunks_deduplicated=up.deduplicated.count, bytes_sent=up.sent.value,
        bytes_stored=draft.stored_bytes, compression=mode, aliases=list(aliases),
        seconds=round(clock.now() - started, 3), warnings=warnings, dry_run=True,
        aliases_moved=moved)


def commit_upload(store: Store, artifact: str, *, header: Any, created: "bool | str",
                  compression: str,
                  files: tuple[FileEntry, ...], dirs: tuple[str, ...], kind: str,
                  up: "_Uploader", step: int | None, metrics: dict[str, float],
                  metadata: dict[str, str], aliases: Sequence[str], lake_url: str,
                  manifest_fields: dict[str, Any] | None, started: float,
                  started_wall: float, bytes_scanned: int,
                  progress: Progress | None = None) -> PushResult:
    """Commit uploaded files as the next version (the second half of a push, shared with a
    stream-written file: core/streampush.py).  `started*`: when the upload began (the gc
    guard's window).  `created`: what open_or_create_header wrote (falsy: nothing)."""
    from . import clock
    from .catalog import set_alias
    from .gc_guard import CommittedInterrupt, guard_commit

    draft = Manifest(
        artifact=artifact, version=0, kind=kind, hash=header.hash, files=files,
        dirs=dirs, step=step, created=utcnow(), created_by=user_at_host(),
        tool=tool_version(), metrics=dict(metrics), metadata=dict(metadata),
        stored=dict(up.stored), **(manifest_fields or {}))
    # A concurrent gc may sweep a chunk this push deduplicated against; the guard restores
    # such chunks from our source around the commit (protocol: docs/format.md, "Deleting").
    up.before_commit()
    interrupted = False
    try:
        manifest = guard_commit(store, referenced=draft.chunk_digests(),
                                commit=lambda: commit_version(store, draft),
                                reupload=up.reupload, started=started,
                                started_wall=started_wall,
                                on_wait=getattr(progress, "note", None))
    except CommittedInterrupt as exc:  # committed, then interrupted: said with the version
        manifest, interrupted = exc.result, True
    finally:
        up.release()
    done: list[str] = []
    moved: dict[str, int] = {}
    failed: tuple[str | None, CkptlakeError] | None = None
    if interrupted:
        failed = (aliases[0] if aliases else None,
                  Interrupted("interrupted right after the commit" if not aliases else
                              "interrupted before it was set"))
    for name in aliases if not interrupted else ():
        try:
            previous = set_alias(store, artifact, name, manifest.version).previous
        except (CkptlakeError, KeyboardInterrupt) as exc:
            if isinstance(exc, (Interrupted, KeyboardInterrupt)):
                # The version is committed: an interrupt now (Ctrl-C, a CI cancel's SIGTERM)
                # must say so, or a retry pushes it again; Lake.push writes its indexes first.
                exc = Interrupted(f"interrupted while setting it (it may name v"
                                  f"{manifest.version} or not)")
            failed = (name, exc)
            break
        done.append(name)
        if previous is not None and previous != manifest.version:
            moved[name] = previous
    result = PushResult(
        lake=lake_url, artifact=artifact, version=manifest.version, step=step,
        files=sum(1 for _ in files), bytes_scanned=bytes_scanned,
        bytes_uploaded=up.uploaded.value, bytes_deduplicated=up.deduplicated.value,
        chunks_uploaded=up.uploaded.count, chunks_deduplicated=up.deduplicated.count,
        bytes_sent=up.sent.value, bytes_stored=manifest.stored_bytes,
        compression=compression,
        aliases=done, aliases_moved=moved, seconds=round(clock.now() - started, 3),
        warnings=[new_lake_warning(lake_url, created, header)] if created else [])
    if failed is not None:
        raise AliasNotSet(result, *failed)
    return result


class AliasNotSet(Exception):
    """An alias write failed after the version was committed.  Not a failed push: re-running
    it would add a second version.  The caller writes the version's indexes, then raises
    `error` saying the version is committed and how to set the alias (Lake.push)."""

    def __init__(self, result: PushResult, name: str | None, error: CkptlakeError) -> None:
        super().__init__(name)
        self.result, self.name, self.error = result, name, error

    def committed_error(self) -> CkptlakeError:
        """name None: no alias was asked for; the commit itself was interrupted after its
        manifest was written."""
        ref = f"{self.result.artifact}@v{self.result.version}"
        err = self.error
        if self.name is None:
            err.message = f"{ref} is committed, but the push was {err.message}"
            err.hint = f"pushing again would commit another version; see it with: " \
                       f"ckptlake show {ref}"
        else:
            err.message = (f"{ref} is committed, but alias {self.name} could not be set: "
                           f"{err.message}")
            err.hint = (f"set it with: ckptlake alias {ref} {self.name} (pushing again would "
                        "commit another version)")
        err.args = (err.message,)
        # a CI script sets the alias itself, or records the version, from these
        err.fields = {**getattr(err, "fields", {}), "artifact": self.result.artifact,
                      "version": self.result.version}
        return err


def empty_version_warning(result: PushResult, tree: SourceTree, source: str) -> str | None:
    """What a push (or its dry run) of `tree`, the scan of `source`, says when the version
    holds no file at all; None when it holds one.  A CI build that produced nothing would
    otherwise publish an empty version, and move its aliases to it, with exit 0 and not a
    word.  A warning, not a refusal: an empty version can be deliberate.  (Not for a sharded
    push, whose rank may rightly hold no files: it does not come here.)"""
    if result.files:
        return None
    if tree.excluded:
        why = f"every file of the push source {source} matched --exclude"
    elif tree.empty_dirs:
        why = f"the push source {source} holds only empty directories"
    else:
        why = f"the push source {source} is an empty directory"
    named = ""
    if result.aliases:
        named = (f" (--alias {', '.join(result.aliases)} "
                 f"{'would name' if result.dry_run else 'names'} it)")
    return f"{result.ref} {'would have' if result.dry_run else 'has'} no files: {why}{named}"


def new_lake_warning(lake_url: str, created: "bool | str" = True, header: Any = None) -> str:
    """What a push that wrote the lake header says (`created` from open_or_create_header;
    `header`, the one written: a rewritten header's compression is worth naming, since older
    readers of a SHA-256 lake may know no compressed chunks)."""
    from ..format.header import HASH_BLAKE3

    if created == REWRITTEN:
        said = "keeps their hash"
        if header is not None:
            said += f" ({header.hash}) and says compression {header.compression}"
            if header.compression == COMPRESSION_NONE:
                said += (", which every ckptlake can read (push --compression auto to "
                         "compress)")
            elif header.hash == HASH_BLAKE3:
                said += ", which every ckptlake that reads BLAKE3 lakes can read"
            else:
                said += (" as the push asked (a ckptlake older than compression cannot read "
                         "its compressed chunks)")
        return (f"rewrote the lost lake header of {lake_url}: it had versions but no "
                f"{layout.HEADER_KEY}; the new header {said}")
    return (f"created a new lake at {lake_url}: there was none (if you meant an existing lake, "
            "check the lake location)")
