"""A bounded worker pool: never more than `workers` items in flight.

Why not `executor.map`: it submits every item at once, so a 20 GiB file would queue 1,280 chunk
reads and memory would follow.  Here the submitting loop blocks until a slot frees, which is what
bounds memory to `workers` chunk buffers.  On the first failure nothing new is submitted, the
running items finish (their side effects are idempotent), and the first error is re-raised.
"""
from __future__ import annotations

import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


_worker = threading.local()


def stop_event() -> threading.Event | None:
    """Set once the bounded_map whose item this thread runs is interrupted (Ctrl-C): what the
    item still has to wait for (transfer/throttle.py) it need not wait for any more."""
    return getattr(_worker, "stop", None)


def bounded_map(fn: Callable[[T], R], items: Iterable[T], *, workers: int,
                name: str = "ckptlake") -> Iterator[R]:
    """Yield fn(item) for every item, in completion order, with at most `workers` running."""
    workers = max(1, workers)
    stop = threading.Event()

    def run(item: T) -> R:
        outer = getattr(_worker, "stop", None)
        _worker.stop = stop
        try:
            return fn(item)
        finally:
            _worker.stop = outer

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name) as pool:
        pending: set[Future[R]] = set()
        try:
            for item in items:
                if len(pending) >= workers:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        yield fut.result()
                pending.add(pool.submit(run, item))
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()
        except KeyboardInterrupt:
            stop.set()  # the running items stop waiting for bandwidth (they still finish)
            raise
        finally:
            # Failure or interruption: drop what has not started; let running ones finish.
            for fut in pending:
                fut.cancel()


class Counter:
    """A thread-safe running total (bytes uploaded, deduplicated, ...)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0
        self.count = 0

    def add(self, n: int) -> None:
        with self._lock:
            self.value += n
            self.count += 1
