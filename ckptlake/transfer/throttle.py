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
        """Block until `nbytes` may be sent or received without exceeding the rate.

        A request goes once the time its own bytes take at the rate has passed, not when it
        starts: counted from the start, the first chunk of every transfer (16 MiB, up to
        1 GiB) went at full speed, and a 28.6 MiB push at --max-bandwidth 2MiB ran at
        3.5 MiB/s.  Now the bytes sent by any time t are at most rate x t."""
        if not self.rate or nbytes <= 0:
            return
        with self._lock:
            now = self._clock()
            self._next_free = max(now, self._next_free) + nbytes / self.rate
            wait = self._next_free - now
        if wait > 0:
            self._sleep(wait)
