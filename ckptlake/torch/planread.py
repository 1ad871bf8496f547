"""DCP load: the whole read plan of a rank fetched in parallel, handed to torch as it arrives.

Why: torch's FileSystemReader opens each file and seeks/reads its requests one after another,
so with `LakeFile` streams the rank waited for one chunk at a time (plus a little readahead)
and fetched nothing while torch decoded and copied.  But `read_data` gets the rank's whole
plan up front: every (file, offset, length) it needs.  Here the chunks those ranges touch are
listed once, in the order the requests will read them, and fetched by the lake's transfer
concurrency in that order while the caller's thread feeds torch the requests that are ready.

Rules kept from LakeFile (core/reader.py, whose `fetch_segment` does every download):
- a chunk is fetched whole, decoded if stored encoded and verified before any of its bytes is
  used (chunkio); a packed file is one segment checked against the file's digest;
- each segment is fetched once per load, however many requests touch it, and only segments
  some request touches are fetched (a rank loading part of a resharded tensor downloads its
  part plus chunk rounding).

Memory: segments fetched ahead of the reader are bounded by `window` bytes (at least one
segment is always in flight), read into chunk buffers that are reused once released.  A
request's middle segments are released once torch has read as many bytes of them as the
request holds (torch.load reads a large tensor's storage in one pass), its first and last
(the zip's headers and central directory) when the request is done; a segment is dropped once
every request touching it is done.  A segment read again after it was dropped (a reader that
seeks back) is fetched again, uncached: correct, only slower.
"""
from __future__ import annotations

import bisect
import io
import threading
from collections import Counter
from concurrent.futures import Future
from typing import Any, Callable

from ..core.reader import LakeFile
from ..core.rawio import SeekableReader
from ..transfer.pool import Executor, cancel, signals_blocked, wait_result

Key = tuple[str, int]  # (file path in the version, segment index)

SMALL_SEGMENT = 1 << 20  # a request keeps segments smaller than this until it is done
DEFAULT_WINDOW = 64 << 20  # bytes fetched ahead of the reader (why: docs/benchmarks.md)


class Fetcher:
    """Fetches segments in a given order with `workers` threads, at most `window` bytes ahead
    of their release; `get` jumps the queue for a segment needed before its turn."""

    def __init__(self, files: dict[str, LakeFile], order: list[Key], uses: Counter,
                 *, workers: int, window: int) -> None:
        self._files, self._order, self._uses = files, order, uses
        self._sizes = {path: f.segment_sizes for path, f in files.items()}  # (computed lists)
        self._window = window
        self._lock = threading.Lock()
        self._futures: dict[Key, Future] = {}
        self._held = 0  # bytes of segments submitted and not yet released
        # chunk buffers of released segments, reused for the next fetches: a fresh
        # chunk-sized allocation per fetch is mapped, faulted in and unmapped every time
        # (Store.get_into)
        self._buffers: dict[Key, bytearray] = {}
        self._free: list[bytearray] = []
        self._keep = 2 + window // max(1, max((self._size(k) for k in order), default=1))
        self._next = 0  # the next position of `order` to submit
        self._pool = Executor(max_workers=max(1, workers),
                                        thread_name_prefix="ckptlake-dcpread")
        with self._lock:
            self._pump()

    def _size(self, key: Key) -> int:
        return self._sizes[key[0]][key[1]]

    def _fetch(self, key: Key, buffer: bytearray | None = None) -> bytes | memoryview:
        return self._files[key[0]].fetch_segment(key[1], buffer)

    def _submit(self, key: Key) -> Future:
        size = self._size(key)
        buffer = next((b for b in self._free if len(b) >= size), None)
        if buffer is not None:
            self._free.remove(buffer)
        else:
            buffer = bytearray(size)
        fut = self._futures[key] = self._pool.submit(self._fetch, key, buffer)
        self._buffers[key] = buffer
        self._held += size
        return fut

    def _pump(self) -> None:
        """Submit segments in order while under the window; called with the lock held."""
        while self._next < len(self._order) and (self._held < self._window
                                                 or not self._futures):
            key = self._order[self._next]
            self._next += 1
            if key not in self._futures and self._uses[key] > 0:
                self._submit(key)

    def get(self, key: Key) -> bytes | memoryview:
        with self._lock:
            fut = self._futures.get(key)
            if fut is None and self._uses[key] > 0:
                fut = self._submit(key)  # needed before its turn (or the window was full)
        if fut is None:
            return self._fetch(key)  # dropped already and read again: fetched uncached, into
            # memory of its own (the caller may keep it)
        return wait_result(fut)  # (not fut.result(): pool.Completions says why)

    def release(self, key: Key) -> None:
        """One request is done with `key`; the last one frees it."""
        with self._lock:
            self._uses[key] -= 1
            if self._uses[key] <= 0:
                fut = self._futures.pop(key, None)
                buffer = self._buffers.pop(key, None)
                if fut is not None:
                    # a buffer is reused only once its fetch is over (a running one writes
                    # into it); the reader holds no view of it after release
                    with signals_blocked():  # (a future's lock: pool.Completions)
                        over = fut.cancel() or fut.done()
                    if over and buffer is not None and len(self._free) < self._keep:
                        self._free.append(buffer)
                    self._held -= self._size(key)
                self._pump()

    def close(self) -> None:
        with self._lock:
            cancel(self._futures.values())
            self._futures.clear()
            self._buffers.clear()
            self._free.clear()
            self._next = len(self._order)
        with signals_blocked():  # (its cancelling takes futures' locks: pool.Completions)
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool.shutdown(wait=True)


class RangeStream(SeekableReader):
    """Bytes [offset, offset+length) of one file, read from the Fetcher's segments: what torch
    reads one request from (seekable, as torch.load needs).  close() releases its segments."""

    def __init__(self, fetcher: Fetcher, path: str, starts: list[int], sizes: list[int],
                 offset: int, length: int) -> None:
        super().__init__()
        self._f, self._path = fetcher, path
        self._starts, self._sizes = starts, sizes
        self._off, self._len = offset, length
        self._pos = 0
        self.keys = segments_of(starts, offset, length)
        # kept until close: the first and last (zip headers, central directory) and small ones
        # (zip records between tensors' data, read in many small pieces: worth no refetch)
        self._pinned = ({self.keys[0], self.keys[-1]} if self.keys else set()) | {
            i for i in self.keys if sizes[i] < SMALL_SEGMENT}
        self._released: set[int] = set()
        self._spare: tuple[int, bytes | memoryview] | None = None
        self._got: dict[int, int] = {}  # bytes read so far per segment
        self.error: BaseException | None = None  # a failed read's

    def _length(self) -> int:
        return self._len

    def readinto(self, buffer: Any) -> int:
        try:
            return self._readinto(buffer)
        except BaseException as e:
            # torch.load reads through C++, which replaces our error (IntegrityError naming
            # the chunk) with one of its own: read_plan raises this one instead
            self.error = e
            raise

    def _readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = 0
        while n < len(view) and self._pos < self._len:
            at = self._off + self._pos  # position in the file
            i = bisect.bisect_right(self._starts, at) - 1
            data = memoryview(self._segment(i))
            start = self._starts[i]
            take = min(len(view) - n, self._len - self._pos, start + len(data) - at)
            view[n:n + take] = data[at - start:at - start + take]
            data.release()
            n += take
            self._pos += take
            self._done(i, take)
        return n

    def _segment(self, i: int) -> bytes | memoryview:
        if i not in self._released:
            return self._f.get((self._path, i))
        # read again after this stream released it: keep the one re-read here, so small
        # reads going back do not fetch it again each time
        if self._spare is None or self._spare[0] != i:
            self._spare = (i, self._f.get((self._path, i)))
        return self._spare[1]

    def _done(self, i: int, n: int) -> None:
        """n more bytes of segment i were read: released once as many bytes as the request
        holds of it were (torch.load reads a large tensor's storage in one pass, after
        reading the zip's central directory at the end, which may reach into the same
        segments: being read past does not make a segment done)."""
        if i in self._pinned or i in self._released:
            return
        self._got[i] = self._got.get(i, 0) + n
        start, end = self._starts[i], self._starts[i] + self._sizes[i]
        if self._got[i] >= min(end, self._off + self._len) - max(start, self._off):
            self._released.add(i)
            self._f.release((self._path, i))

    def close(self) -> None:
        if not self.closed:
            for i in self.keys:
                if i not in self._released:
                    self._released.add(i)
                    self._f.release((self._path, i))
            self._spare = None
        super().close()


def segments_of(starts: list[int], offset: int, length: int) -> list[int]:
    """Indexes of the segments (starting at `starts`) that bytes [offset, offset+length)
    touch."""
    if length <= 0 or not starts:
        return []
    first = bisect.bisect_right(starts, offset) - 1
    last = bisect.bisect_right(starts, offset + length - 1) - 1
    return list(range(max(first, 0), last + 1))


def fetch_order(spans: list[int]) -> list[int]:
    """One request's segments in the order torch.load reads them: a zip's end (central
    directory) first, then its start, then the rest in order."""
    if len(spans) > 2:
        return [spans[-1], spans[0], *spans[1:-1]]
    return spans


def read_plan(requests: list[tuple[Any, str, int, int]], files: dict[str, LakeFile],
              handle: Callable[[Any, io.RawIOBase], None], *, workers: int,
              window: int = DEFAULT_WINDOW) -> None:
    """Serve `requests` ((request, path, offset, length), in the order to handle them) from
    `files`: `handle(request, stream)` is called for each in turn with a seekable stream of
    its bytes while the following segments are being fetched."""
    layout: dict[str, tuple[list[int], list[int]]] = {}
    for path, f in files.items():
        sizes = f.segment_sizes
        starts, pos = [], 0
        for s in sizes:
            starts.append(pos)
            pos += s
        layout[path] = (starts, sizes)
    order: list[Key] = []
    seen: set[Key] = set()
    uses: Counter = Counter()
    for _, path, offset, length in requests:
        idx = segments_of(layout[path][0], offset, length)
        for i in idx:
            uses[(path, i)] += 1
        for i in fetch_order(idx):
            if (path, i) not in seen:
                seen.add((path, i))
                order.append((path, i))
    fetcher = Fetcher(files, order, uses, workers=workers, window=window)
    try:
        for req, path, offset, length in requests:
            starts, sizes = layout[path]
            with RangeStream(fetcher, path, starts, sizes, offset, length) as stream:
                try:
                    handle(req, stream)
                except BaseException:
                    if stream.error is not None:
                        raise stream.error from None
                    raise
    finally:
        fetcher.close()
