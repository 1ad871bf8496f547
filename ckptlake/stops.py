"""The stop event of the work a thread runs: what an item of a map still waits for (a bandwidth
wait, a retry's backoff) it need not wait for once its map is interrupted (Ctrl-C) or cut off (a
Checkpointer's exit deadline).

A leaf module, beside errors.py: the store's retry layer (store/retry.py) reads the event, and
the pool that sets it (transfer/pool.py) sits above the store; reading it from there made the
bottom layer import a layer above it.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

_worker = threading.local()


def stop_event() -> threading.Event | None:
    """Set once the bounded_map whose item this thread runs is interrupted (Ctrl-C) or cut off
    (a Checkpointer's exit deadline): what the item still has to wait for (transfer/throttle.py)
    it need not wait for any more, and the retry layer (store/retry.py) starts no further
    attempt."""
    return getattr(_worker, "stop", None)


@contextlib.contextmanager
def stopped_by(stop: threading.Event) -> Iterator[None]:
    """Run the enclosed work as an item of a map with this stop event (`stop_event()`)."""
    outer = getattr(_worker, "stop", None)
    _worker.stop = stop
    try:
        yield
    finally:
        _worker.stop = outer
