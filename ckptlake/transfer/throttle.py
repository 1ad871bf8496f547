"""A token bucket shared by all transfer workers, for --max-bandwidth.

Why a bucket and not a per-worker sleep: the limit is for the whole process (what the network
link or the provider's fair share sees), while workers finish at uneven times.
"""
from __future__ import annotations

import threading
import time
from typing import Callable


class Throttle:
    def __init__(self, bytes_per_second: float | None, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.rate = bytes_per_second
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._next_free = clock()  # when the bandwidth already promised runs out

    def acquire(self, nbytes: int) -> None:
        """Block until `nbytes` may be sent or received without exceeding the rate."""
        if not self.rate or nbytes <= 0:
            return
        with self._lock:
            now = self._clock()
            start = max(now, self._next_free)
            self._next_free = start + nbytes / self.rate
            wait = start - now
        if wait > 0:
            self._sleep(wait)
