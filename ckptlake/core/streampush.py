"""A file written straight into the lake: the bytes of `torch.save(obj, f)` become chunks while
they are being written, with no local copy of the file.

The chunks are those a push of the finished file would store (format/chunking.py,
StreamPlanner: the same cuts wherever the file's layout can be followed from its front, which
covers safetensors and torch.save archives; fixed offsets otherwise), stored by push's own
uploader (core/push.py: dedup against the lake, compression, one PUT per digest), so a file
written here and the same file pushed later share every chunk.

Each chunk, once all its bytes are written, goes to a bounded pool that hashes, encodes and
uploads it while the caller keeps writing: the writer blocks when `concurrency` chunks are in
flight, so memory stays within about (concurrency + 2) x chunk size whatever the file size.
Nothing is committed here: `close()` returns the file's manifest entry once every chunk is
stored, and the caller commits it (core/push.py, commit_upload), so a failed or abandoned
write leaves chunks (reused by the next write, collected by gc) but never a version.
"""
from __future__ import annotations

import io
import os
import threading
from concurrent.futures import Future
from typing import Any

from ..errors import TransferError, UsageError
from ..format import chunking, layout
from ..format.header import COMPRESSION_NONE, digest
from ..format.manifest import ChunkRef, FileEntry
from ..format.safetensors import TensorObserver, header_length, is_safetensors, parse_header
from ..store.base import Store
from ..transfer.parts import Parts
from ..transfer.progress import Progress
from ..transfer.throttle import Throttle
from ..transfer.pool import Completions, Executor, failure, outcome, signals_blocked
from .push import PACK_THRESHOLD, _Box, _Pack, _Slice, _Uploader
from .scan import SourceTree


class _StreamUploader(_Uploader):
    """push's uploader, fed bytes instead of reading a source tree.

    A push restores a chunk that a concurrent gc swept (after it deduplicated against it) by
    reading its source again (core/gc_guard.py); a stream has no source to read.  gc only
    sweeps chunks named in its condemnation records (docs/format.md, "Deleting"), so the bytes
    of every chunk this write deduplicated against a *condemned* chunk are kept in a temporary
    file until the commit's guard is done, and stored again from there if it asks.  Just
    before the commit the records are read again: a chunk condemned meanwhile whose bytes were
    not kept fails the write with nothing committed (a second write keeps them).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from .gc_guard import _RecordCache

        self._records = _RecordCache()
        self._condemned, self._all_at_risk = self._records.condemned(self.store)
        self._reused: set[str] = set()  # deduplicated against, bytes not kept
        self._kept: dict[str, tuple[int, int]] = {}  # digest -> (offset, length) in _spill
        self._spill: Any = None
        self._spill_lock = threading.Lock()
        self._put_keys: set[str] = set()

    def _put(self, key: str, data: bytes, d: str | None, *, progress: Any = None) -> None:
        super()._put(key, data, d, progress=progress)
        with self._lock:
            self._put_keys.add(key)

    def _store_once(self, d: str, box: _Box, unit: Any) -> None:
        data = box.data
        super()._store_once(d, box, unit)
        with self._lock:
            if layout.chunk_key(d) in self._put_keys:
                return  # stored by this write: not at gc's mercy
            at_risk = self._all_at_risk or d in self._condemned
            if not at_risk:
                self._reused.add(d)
                return
        self._keep(d, data)

    def _keep(self, d: str, data: bytes) -> None:
        import tempfile

        with self._spill_lock:
            if d in self._kept:
                return
            if self._spill is None:
                self._spill = tempfile.TemporaryFile(prefix="ckptlake-kept-")
            at = self._spill.seek(0, io.SEEK_END)
            self._spill.write(data)
            self._kept[d] = (at, len(data))

    def before_commit(self) -> None:
        condemned, unreadable = self._records.condemned(self.store)
        with self._lock:
            lost = set(self._reused) if unreadable else self._reused & condemned
        if lost:
            raise TransferError(f"a concurrent gc condemned {len(lost)} chunk(s) this write "
                                "reused after it started; nothing was committed",
                                hint="write the file again (the next write keeps their bytes "
                                     "until its commit is safe)")

    def reupload(self, digests: set[str]) -> None:
        missing = sorted(d for d in digests if d not in self._kept)
        if missing:
            raise TransferError(f"a concurrent gc removed {len(missing)} chunk(s) this write "
                                "reused and whose bytes it no longer has; nothing was committed, "
                                "unless a gc from before pins swept them after the commit: then "
                                "the version may be incomplete",
                                hint="run: ckptlake verify, then write the file again")
        for d in sorted(digests):
            at, n = self._kept[d]
            with self._spill_lock:
                self._spill.seek(at)
                data = self._spill.read(n)
            if digest(self.algo, data) != d:
                raise TransferError("a kept chunk changed on local disk before a swept chunk "
                                    "could be restored", hint="write the file again")
            self._restore(d, data)

    def release(self) -> None:
        """Drop the kept bytes (after the commit's guard)."""
        with self._spill_lock:
            if self._spill is not None:
                self._spill.close()
                self._spill = None
            self._kept.clear()


def new_uploader(store: Store, *, algo: str, progress: Progress,
                 throttle: Throttle | None = None, parts: Parts | None = None,
                 compression: str = COMPRESSION_NONE) -> _Uploader:
    """push's uploader for bytes that are written rather than read from files."""
    up = _StreamUploader(store, SourceTree(root="", kind="file"), algo, progress,
                         (), throttle, parts, compression)
    up.known = None  # size unknown: a HEAD per chunk, as push does in a large lake
    return up


class StreamWriter(io.RawIOBase):
    """A write-only, non-seekable binary file whose bytes go to the lake as chunks.

    `close()` (or `finish()`, which returns the FileEntry) waits for every chunk; `abort()`
    stops without waiting for more than the uploads already running.  An upload's error is
    raised by the next `write`/`close` (push's typed errors: TransferError, AccessDenied...),
    after which the writer is unusable.
    """

    def __init__(self, store: Store, path: str, *, algo: str, chunk_size: int,
                 concurrency: int, progress: Progress, throttle: Throttle | None = None,
                 parts: Parts | None = None, compression: str = COMPRESSION_NONE,
                 uploader: _Uploader | None = None) -> None:
        """`uploader`: share one with other files written at the same time (one dedup,
        one set of counters and stored-size hints: a DCP rank's files); None: its own."""
        super().__init__()
        self.path = path
        self._cs = chunk_size
        # push packs a file below this size whole into one chunk (with a file digest)
        self._small = min(PACK_THRESHOLD, chunk_size)
        self._planner = chunking.StreamPlanner(chunk_size)
        self._tensors: TensorObserver | None = None
        self._up = uploader or new_uploader(store, algo=algo, progress=progress,
                                            throttle=throttle, parts=parts,
                                            compression=compression)
        self._algo = algo
        self._progress = progress
        self._workers = max(1, concurrency)
        self._pool = Executor(max_workers=self._workers,
                                        thread_name_prefix="ckptlake-stream")
        self._pending: Completions[tuple[int, ChunkRef]] = Completions()
        self._refs: list[tuple[int, ChunkRef]] = []
        self._buf = bytearray()
        self._base = 0  # file offset of self._buf[0]
        self._written = 0
        self._started = False  # past the pack threshold: chunks are being cut
        self._error: BaseException | None = None
        self._entry: FileEntry | None = None
        self._lock = threading.Lock()
        progress.start(phase="push", total_bytes=0, total_files=1)

    # -- io.RawIOBase --

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._written

    def write(self, data: Any) -> int:
        if self.closed or self._entry is not None:
            raise ValueError("write to a closed lake file")
        self._raise_failure()
        with memoryview(data) as view, view.cast("B") as flat:
            n = flat.nbytes
            try:
                # a piece at a time: one write of a 2 GiB storage must not be held whole
                for pos in range(0, n, self._cs):
                    piece = flat[pos:pos + self._cs]
                    self._buf += piece
                    self._written += len(piece)
                    if not self._started and self._written >= self._small:
                        self._started = True
                    if self._started:
                        self._planner.advance(self._buf, self._base)
                        self._drain(eof=False)
            except BaseException as exc:
                # Part of `data` may be in: the file is torn.  Every later write (and the
                # finish) raises this again.  A Ctrl-C here surfaced as torch.save's
                # "RuntimeError: unexpected pos", as the next write it made went through.
                if self._error is None:
                    self._error = exc
                raise
        return n

    # -- finishing --

    def finish(self) -> FileEntry:
        """Wait for every chunk; the file's manifest entry (raises the first upload error)."""
        if self._entry is not None:
            return self._entry
        if self.closed:
            raise ValueError("the lake file was aborted")
        try:
            self._raise_failure()
            size = self._written
            file_digest = None
            if 0 < size < self._small:
                data = bytes(self._buf)
                self._buf = bytearray()
                file_digest = digest(self._algo, data)
                self._small_tensors(data)
                d = self._up._store(_Box(data), _Pack((0,)))
                self._refs.append((0, ChunkRef(d, size, 0)))
            elif size:
                self._planner.advance(self._buf, self._base, eof=True)
                self._drain(eof=True)
            self._wait_all()
            extra: dict[str, Any] = {}
            if self._tensors is not None:
                extra = self._tensors.entry_fields(self.path, size)
            self._entry = FileEntry(path=self.path, size=size,
                                    chunks=tuple(r for _, r in sorted(self._refs,
                                                                       key=lambda x: x[0])),
                                    digest=file_digest, **extra)
        except BaseException:
            self.abort()
            raise
        self._pool.shutdown(wait=True)
        self._progress.finish()
        super().close()
        return self._entry

    def close(self) -> None:
        if not self.closed:
            self.finish()

    def abort(self) -> None:
        """Stop: chunks not yet started are dropped, running uploads finish (their effect,
        a stored chunk, is harmless); nothing is returned to commit."""
        with signals_blocked():  # (a second Ctrl-C here could leave a future's lock taken)
            self._pending.cancel()
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool.shutdown(wait=True)  # (the running ones, interruptibly)
        self._buf = bytearray()
        if not self.closed:
            self._progress.finish()
            super().close()

    @property
    def uploader(self) -> _Uploader:
        """The uploader (for counters and stored-size hints, and for the commit's guard)."""
        return self._up

    @property
    def size(self) -> int:
        return self._written

    # -- internals --

    def _small_tensors(self, data: bytes) -> None:
        """A small safetensors file gets its tensor records too, as push gives it."""
        if not is_safetensors(self.path):
            return
        n = header_length(data[:8])
        header = parse_header(data[:8 + n], len(data)) if n is not None else None
        if header is not None:
            self._tensors = TensorObserver(())
            self._tensors.add(self.path, header)
            self._tensors.use_hash(self._algo)
            self._tensors.on_read(self.path, 0, data)

    def _drain(self, eof: bool) -> None:
        """Submit every cut whose bytes are all written."""
        out = self._planner.out
        end = self._base + len(self._buf)
        if self._tensors is None and self._planner.header is not None \
                and is_safetensors(self.path):
            self._tensors = TensorObserver(())
            self._tensors.add(self.path, self._planner.header)
            self._tensors.use_hash(self._algo)
        taken = 0
        while taken < len(out):
            cut = out[taken]
            if cut.offset + cut.length > end:
                break
            if cut.offset != self._base or not 0 < cut.length <= self._cs:
                raise AssertionError(f"stream cut {cut} does not follow byte {self._base}")
            with memoryview(self._buf) as view:
                data = bytes(view[:cut.length])
            del self._buf[:cut.length]
            self._base += cut.length
            taken += 1
            self._submit(cut, data)
        del out[:taken]
        if eof and self._buf:
            # cuts planned past the end (a file shorter than its header said) are void: the
            # rest goes in fixed pieces
            out.clear()
            for cut in chunking.fixed_cuts(self._base, len(self._buf), self._cs):
                with memoryview(self._buf) as view:
                    data = bytes(view[:cut.length])
                del self._buf[:cut.length]
                self._base += cut.length
                self._submit(cut, data)

    def _submit(self, cut: chunking.Cut, data: bytes) -> None:
        while len(self._pending) >= self._workers:
            self._collect([self._pending.next()])
            self._raise_failure()
        with signals_blocked():  # (not submitted and left untracked by a Ctrl-C)
            self._pending.add(self._pool.submit(self._store, cut, data))

    def _store(self, cut: chunking.Cut, data: bytes) -> tuple[int, ChunkRef]:
        if self._tensors is not None:
            self._tensors.on_read(self.path, cut.offset, data)
        unit = _Slice(0, cut.offset, cut.length, cut.dtype)
        box = _Box(data)
        del data
        return cut.offset, ChunkRef(self._up._store(box, unit), cut.length)

    def _collect(self, done: list[Future[tuple[int, ChunkRef]]]) -> None:
        for fut in done:
            exc = failure(fut)
            if exc is not None:
                if self._error is None:
                    self._error = exc
            else:
                self._refs.append(outcome(fut))

    def _wait_all(self) -> None:
        while self._pending:
            self._collect([self._pending.next()])
        self._raise_failure()

    def _raise_failure(self) -> None:
        if self._error is None:
            # collect finished uploads without blocking, so a failure shows at the next write
            self._collect(self._pending.ready())
        if self._error is not None:
            raise self._error


def check_path(path: "str | os.PathLike[str]") -> str:
    """A file name for a one-file version: a plain relative path (as a manifest holds).  A
    pathlib path is its text, as push and pull take one."""
    from ..format.manifest import check_relpath
    from .browse import _path_text

    path = _path_text(path)
    try:
        return check_relpath(path, what="file path")
    except Exception as exc:  # noqa: BLE001 - the caller's argument, not a bad manifest
        raise UsageError(f"invalid lake file path {path!r}: {str(exc).split(': ', 1)[0]}",
                         hint="give a relative path such as model.pt") from None


class CommittingWriter(StreamWriter):
    """A StreamWriter that commits on a clean close: `commit(entry, writer)` makes the version
    (its result is kept in `result`).  Leaving a `with` block by an exception aborts instead,
    and so does garbage collection of a writer never closed: a version is only ever made by
    an explicit close or a clean exit, never from a half-written file."""

    def __init__(self, *args: Any, commit: Any, release: Any = None, **kwargs: Any) -> None:
        self._commit = commit
        self._release = release  # called once, when the writer is done either way
        self.result: Any = None
        self._failed: BaseException | None = None  # the commit's error, raised again
        super().__init__(*args, **kwargs)

    def _done(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    def finish(self) -> FileEntry:
        """Wait for every chunk and commit the version, once.  StreamWriter's finish() only
        waited: called on a lake writer, it closed it, and the close after it committed
        nothing, silently.  A commit that failed is raised again by every later call: trying
        it again could commit a second version if the first one landed."""
        entry = super().finish()
        if self._failed is not None:
            raise self._failed
        if self.result is None:
            try:
                self.result = self._commit(entry, self)
            except BaseException as exc:
                self._failed = exc
                raise
            finally:
                self._done()
        return entry

    def close(self) -> None:
        if self.closed and self._entry is None:
            return  # aborted: nothing to commit
        self.finish()

    def abort(self) -> None:
        try:
            super().abort()
        finally:
            self._done()

    def __enter__(self) -> "CommittingWriter":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
        try:
            if not self.closed:
                self.abort()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
