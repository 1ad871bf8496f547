"""A token bucket shared by all transfer workers, for --max-bandwidth.

Why a bucket and not a per-worker sleep: the limit is for the whole process (what the network
link or the provider's fair share sees), while workers finish at uneven times.

Why a wait can be cut short: under a limit, every worker of a transfer waits its turn, up to
concurrency x chunk / rate (8 x 16 MiB at 20 MiB/s: 6.4 s).  On Ctrl-C the worker pool lets
running items finish, so each would sit out its wait and then send a chunk nobody wants any
more (a capped push took 7.8 s to exit).  A worker of an interrupted pool (transfer/pool.py,
`stop_event`) stops waiting instead; other transfers of the process (a Checkpointer's upload in
the background) keep theirs.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

from ..errors import Interrupted
from .pool import stop_event


class Throttle:
    def __init__(self, bytes_per_second: float | None, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] | None = None) -> None:
        self.rate = bytes_per_second
        self._clock, self._sleep = clock, sleep  # sleep: a test's stand-in for the wait
        self._lock = threading.Lock()
        self._next_free = clock()  # when the bandwidth already promised runs out

    def acquire(self, nbytes: int) -> None:
        """Block until `nbytes` may be sent or received without exceeding the rate.

        A request goes once the time its own bytes take at the rate has passed, not when it
        starts: counted from the start, the first chunk of every transfer (16 MiB, up to
        1 GiB) went at full speed, and a 28.6 MiB push at --max-bandwidth 2MiB ran at
        3.5 MiB/s.  Now the bytes sent by any time t are at most rate x t.

        Interrupted if this worker's pool is interrupted meanwhile."""
        if not self.rate or nbytes <= 0:
            return
        with self._lock:
            now = self._clock()
            self._next_free = max(now, self._next_free) + nbytes / self.rate
            wait = self._next_free - now
        if wait <= 0:
            return
        if self._sleep is not None:
            self._sleep(wait)
            return
        stop = stop_event()
        if stop is None:
            time.sleep(wait)
        elif stop.wait(wait):
            raise Interrupted("interrupted while waiting for --max-bandwidth")
