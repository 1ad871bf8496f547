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


def bounded_map(fn: Callable[[T], R], items: Iterable[T], *, workers: int,
                name: str = "ckptlake") -> Iterator[R]:
    """Yield fn(item) for every item, in completion order, with at most `workers` running."""
    workers = max(1, workers)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name) as pool:
        pending: set[Future[R]] = set()
        try:
            for item in items:
                if len(pending) >= workers:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        yield fut.result()
                pending.add(pool.submit(fn, item))
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()
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
