"""Large chunk objects in parts: multipart uploads and parallel ranged reads.

Why: a chunk is one object, moved by one request over one connection.  At the default 16 MiB
chunk size that is right: a file's chunks already travel in parallel, and a failed request
re-sends 16 MiB.  A lake with large chunks (up to 1 GiB, chosen for fewer objects and requests)
would otherwise move a one-chunk file over a single connection and re-send a whole chunk after
any failure.  So an object of at least `threshold` bytes goes up as a multipart upload and comes
down as ranged GETs straight into the chunk buffer, `part_size` bytes each, up to `workers` at a
time.  A failed part is retried alone (by the store's retry layer); an upload that fails for good
is aborted here, and one a killed process leaves behind is aborted by gc after its grace period.

A chunk in parts is stopped as a chunk in one request is (transfer/pool.py `stop_event`: Ctrl-C,
a Checkpointer's exit deadline): its parts run under the stop of the map whose item moves the
chunk, so no part starts after the stop and the retry layer starts no new attempt of a running
one; an upload given up is not completed, and is aborted once its running parts have ended.  A
part stalled in its request is not waited for at exit: part workers are daemon threads, like
bounded_map's, and `close` does not join them.  The upload of such a part is left to gc's
clean-up of incomplete uploads (docs/format.md, gc step 8).

The whole chunk is still held in memory while its parts move: its key is the digest of all its
bytes, known only once it was read (push), and verified only once all of it arrived (pull).  The
memory bound (transfer/config.py) is therefore unchanged: concurrency x chunk_size.

Parts are not free: SigV4 over plain http signs each part's SHA-256, and no digest of a part
exists to hand to the signer (a whole chunk's does), so a push in parts costs ~0.6-1.0 more
client CPU-s per GiB; on loopback, where one connection is not the limit, 64 MiB chunks pushed
15% slower in parts.  Hence the 256 MiB default threshold (docs/benchmarks.md).
"""
from __future__ import annotations

import contextlib
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Sequence, TypeVar

from ..errors import CkptlakeError, Interrupted
from ..forks import reset_in_child
from ..policy.config import DEFAULT_MULTIPART_THRESHOLD, DEFAULT_PART_SIZE, MIN_PART_SIZE
from ..store.base import Store
from .pool import (Completions, _DaemonPool, signals_blocked, failure, new_stop, outcome,
                   stop_event, stopped_by)

MAX_PARTS = 10_000  # S3: parts per upload

R = TypeVar("R")


def part_size_for(size: int, configured: int) -> int:
    """max(configured, ceil(size / 10,000)): never more parts than S3 allows (nor under 5 MiB)."""
    return max(configured, MIN_PART_SIZE, -(-size // MAX_PARTS))


def part_ranges(size: int, part_size: int) -> list[tuple[int, int, int]]:
    """(part number from 1, start, length) covering [0, size)."""
    return [(i + 1, start, min(part_size, size - start))
            for i, start in enumerate(range(0, size, part_size))]


@dataclass
class Parts:
    """Settings plus one thread pool, shared by every chunk worker of a Lake.

    Chunk workers block on their parts; part tasks never wait on anything, so a pool of its own
    (rather than the chunk workers' pool) cannot deadlock.  Its threads are daemon threads (see
    the module doc), started once, as the first parts need them.
    """

    threshold: int = DEFAULT_MULTIPART_THRESHOLD
    part_size: int = DEFAULT_PART_SIZE
    workers: int = 8
    _pool: _DaemonPool | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        reset_in_child(self)

    def _after_fork(self) -> None:
        """(See ckptlake/forks.py.)  The pool's threads are the parent's: a child's multipart
        pull waited for parts no thread would ever run."""
        self._lock, self._pool = threading.Lock(), None

    def applies(self, size: int) -> bool:
        """Whether an object of `size` bytes moves in parts (at least two of them)."""
        return size >= self.threshold and size > part_size_for(size, self.part_size)

    def ranges(self, size: int) -> list[tuple[int, int, int]]:
        return part_ranges(size, part_size_for(size, self.part_size))

    def put(self, store: Store, key: str, data: bytes | bytearray | memoryview, *,
            on_part: Callable[[int], None] | None = None) -> None:
        """Store `data` at `key` as a multipart upload; abort it if any part fails for good."""
        view = memoryview(data)
        where = f"{store.url}/{key}"
        upload_id = store.create_multipart(key)
        try:
            def send(part: tuple[int, int, int]) -> tuple[int, str]:
                number, start, length = part
                etag = store.upload_part(key, upload_id, number, view[start:start + length])
                if on_part is not None:
                    on_part(length)
                return number, etag

            etags = self._run(send, self.ranges(len(view)), where)
            _check_stop(where)  # (the retry layer checks too; a store without it would not)
            store.complete_multipart(key, upload_id, etags)
        except BaseException:
            # If the abort fails too (server down), gc aborts the upload after its grace
            # period; the error worth reporting is the one that stopped the upload.
            with contextlib.suppress(CkptlakeError):
                store.abort_multipart(key, upload_id)
            raise

    def get_into(self, store: Store, key: str, size: int, buffer: bytearray | memoryview, *,
                 on_part: Callable[[int], None] | None = None) -> memoryview:
        """The first `size` bytes of `key`, read as parallel ranged GETs into `buffer`.

        Returns a view of the bytes read: shorter than `size` if the object is (the caller's
        digest check tells what that means).
        """
        view = memoryview(buffer)[:size]

        def fetch(part: tuple[int, int, int]) -> int:
            _, start, length = part
            got = len(store.get_range_into(key, start, view[start:start + length]))
            if on_part is not None:
                on_part(got)
            return got

        ranges = self.ranges(size)
        done = self._run(fetch, ranges, f"{store.url}/{key}")
        total = 0
        for (_, start, length), got in zip(ranges, done):
            total = start + got
            if got < length:  # the object ends here
                break
        return view[:total]

    def _run(self, fn: Callable[[tuple[int, int, int]], R],
             parts: Sequence[tuple[int, int, int]], where: str) -> list[R]:
        """fn over every part on the pool, under a stop of its own that the caller's stop
        (its map's) sets too; results in part order.

        On the first failure, or a Ctrl-C in the caller's thread, that stop is set (a running
        part starts no new attempt: store/retry.py), the parts not started are cancelled, and
        the running ones are waited for -- they read or write the caller's buffer, which must
        not change under them after we return -- then that failure is raised.
        """
        stop = new_stop()

        def run(part: tuple[int, int, int]) -> R:
            with stopped_by(stop):
                _check_stop(where)
                return fn(part)

        futures: list[Future[R]] = []
        finished: Completions[R] = Completions()
        try:
            # (a Ctrl-C waits until every part is submitted and known to `finished`: none is
            # left running unseen, on the caller's buffer, after we return)
            with signals_blocked(), self._lock:  # (not shut down by a close() meanwhile)
                pool = self._executor()
                for p in parts:
                    futures.append(pool.submit(lambda p=p: run(p)))  # type: ignore[misc]
                    finished.add(futures[-1])
            while finished:
                error = failure(finished.next())
                if error is not None:
                    raise error
        except BaseException:  # the first failure, or a Ctrl-C
            _give_up(stop, finished)
            raise
        stop.set()  # (all done: lets the caller's stop drop it from its children)
        return [outcome(f) for f in futures]

    def _executor(self) -> _DaemonPool:
        """(Called with the lock held.)"""
        if self._pool is None:
            self._pool = _DaemonPool(max(1, self.workers), "ckptlake-part")
        return self._pool

    def close(self) -> None:
        """End the part workers as they finish; not waited for, as a part stalled in its request
        (abandoned at an exit deadline) would hold the caller until the request's timeout.
        Parts used after this get a new pool."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)


def _check_stop(where: str) -> None:
    """Interrupted if this thread's map was stopped: a part is not started, nor an upload
    completed, after the stop."""
    stop = stop_event()
    if stop is not None and stop.is_set():
        raise Interrupted(f"{where}: given up: the transfer was interrupted")


def _give_up(stop: threading.Event, futures: Completions[R]) -> None:
    with signals_blocked():
        stop.set()
    futures.cancel()
    futures.drain()
