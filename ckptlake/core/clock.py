"""The clock gc and pushers measure elapsed time with: one that keeps counting while the machine
is suspended.

`time.monotonic()` is CLOCK_MONOTONIC on Linux, which stops while a laptop sleeps, a VM is paused
or a node is live-migrated.  The gc protocol bounds *real* time (how long a sweep may delete on
one listing, how long a push has been running against records that expire), and another machine
keeps sweeping while this one is suspended: a clock that skips the suspension makes a push believe
it is young and a gc believe its listing is fresh.  CLOCK_BOOTTIME is CLOCK_MONOTONIC plus the
time spent suspended.  Where it is missing, `now()` falls back to `time.monotonic()`; the callers
also bound elapsed time with the wall clock (docs/format.md, "Assumptions").

Callers look `now` up at call time (`clock.now()`, not `from .clock import now`), so that a test,
or another actor in the same process, can replace it.
"""
from __future__ import annotations

import time

_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", None)


def now() -> float:
    """Seconds on a clock that never goes back and counts suspended time (where the OS has one)."""
    if _BOOTTIME is not None:
        return time.clock_gettime(_BOOTTIME)
    return time.monotonic()

