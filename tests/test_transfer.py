"""Engine building blocks: the bounded pool and the bandwidth throttle."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from ckptlake.transfer.config import BASE_MEMORY, TransferConfig
from ckptlake.transfer.pool import bounded_map
from ckptlake.transfer.throttle import Throttle


def test_bounded_map_never_exceeds_workers_and_returns_everything() -> None:
    running = 0
    peak = 0
    lock = threading.Lock()
    submitted = []

    def items():
        for i in range(50):
            submitted.append(i)
            yield i

    def work(i: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.002)
        with lock:
            running -= 1
        return i * 2

    assert sorted(bounded_map(work, items(), workers=3)) == [i * 2 for i in range(50)]
    assert peak <= 3


def test_bounded_map_takes_no_item_beyond_the_workers_and_the_one_that_waits() -> None:
    """The submitting loop, not the pool, is what bounds a map (module doc): an item taken
    from the iterable while no slot is free is queued and held for nothing, and a generator
    that does work per item it yields runs ahead of the map.  The peak-of-running-items check
    above cannot see that (the pool's threads cap it anyway).  When the first result comes out,
    `workers` items were submitted and one more is waiting for a slot."""
    pulled = []

    def items():
        for i in range(10):
            pulled.append(i)
            yield i

    results = bounded_map(lambda i: i, items(), workers=3)
    first = next(results)
    assert len(pulled) == 3 + 1
    assert sorted([first, *results]) == list(range(10))


def test_bounded_map_stops_submitting_after_a_failure() -> None:
    started = []

    def work(i: int) -> int:
        started.append(i)
        if i == 2:
            raise ValueError("boom")
        time.sleep(0.01)
        return i

    with pytest.raises(ValueError, match="boom"):
        list(bounded_map(work, range(1000), workers=2))
    assert len(started) < 20


def test_throttle_spaces_requests_to_the_rate() -> None:
    now = [0.0]
    slept = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    t = Throttle(100.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        t.acquire(50)  # 250 bytes at 100 B/s: the last one may go at t=2.5, the first at 0.5
    assert slept == pytest.approx([0.5] * 5)  # never more than rate x t sent by time t
    Throttle(None, clock=lambda: now[0], sleep=sleep).acquire(10**9)
    assert len(slept) == 5


def test_ctrl_c_ends_the_bandwidth_waits_of_that_transfer_only() -> None:
    """Each running item of an interrupted pool sat out its turn under --max-bandwidth and
    then sent its chunk anyway (a capped push took 7.8 s to exit on Ctrl-C); now it stops
    waiting.  Another transfer's waits (a background upload) are not touched."""
    from ckptlake.errors import Interrupted

    throttle = Throttle(1000.0)  # each item below waits its 4 s turn
    outcomes: list[str] = []
    started = threading.Barrier(3)

    def send(n: int) -> None:
        started.wait()
        try:
            throttle.acquire(4000)
            outcomes.append("sent")
        except Interrupted:
            outcomes.append("stopped")

    def items():  # the main thread is interrupted once both items are running
        yield 1
        yield 2
        started.wait()
        raise KeyboardInterrupt

    other = Throttle(1e9)  # another transfer's: it still waits and sends
    background: list[str] = []
    worker = threading.Thread(target=lambda: list(bounded_map(
        lambda _: (other.acquire(1), background.append("sent")), [0], workers=1)))
    with pytest.raises(KeyboardInterrupt):
        list(bounded_map(send, items(), workers=2))
    worker.start()
    worker.join()
    assert outcomes == ["stopped", "stopped"] and background == ["sent"]


_INTERRUPTED_MAPS = r"""
import os, random, signal, sys, threading, time
import _signal
from ckptlake.transfer.pool import Completions, Executor, bounded_map

seed, mode, rounds = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
if mode == "alarm":  # a handler raising KeyboardInterrupt in the main thread, on a timer
    armed = False

    def interrupt(signum, frame):
        if armed:
            raise KeyboardInterrupt

    signal.signal(signal.SIGALRM, interrupt)

    def interrupted(fn, delay):
        global armed
        try:
            armed = True
            signal.setitimer(signal.ITIMER_REAL, delay)  # (one shot)
            fn()
            armed = False  # (a signal after this is ignored: it can only land in the try)
            return 0
        except KeyboardInterrupt:
            armed = False
            return 1
else:  # a real SIGINT, with a thread that does not block it (numpy's, rich's, a notebook's):
    # the kernel may hand it the Ctrl-C while the main thread blocks the signals
    threading.Thread(target=time.sleep, args=(1e6,), daemon=True).start()
    fire, sent, delay = threading.Semaphore(0), threading.Event(), [0.0]

    def ctrl_c():
        while True:
            fire.acquire()
            time.sleep(delay[0])
            os.kill(os.getpid(), signal.SIGINT)
            sent.set()

    _signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    threading.Thread(target=ctrl_c, daemon=True).start()  # (it blocks SIGINT itself)
    _signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

    def interrupted(fn, d):
        # Every Ctrl-C is waited for here, however late a loaded machine delivers it (one
        # landing after this returned escaped the script: a flaky failure, not a hang), and it
        # must arrive: one that never does was swallowed.
        inside = False
        try:
            sent.clear()
            delay[0] = d
            inside = True
            fire.release()
            fn()
            inside = False
            sent.wait()
            time.sleep(30)  # the Ctrl-C was sent: it interrupts this
            sys.exit("a Ctrl-C was lost")
        except KeyboardInterrupt:
            sent.wait()
            return 1 if inside else 0

def whole_map():
    for _ in bounded_map(lambda x: x, range(40), workers=8):
        pass

pool = Executor(8)

def wait_for_futures():
    for _ in range(64):
        waiting.add(pool.submit(time.sleep, 0.0002))
    while waiting:
        waiting.next()

rng = random.Random(seed)
maps = sum(interrupted(whole_map, rng.uniform(0.0001, 0.0015)) for _ in range(150))
waits = 0
for _ in range(rounds):
    waiting = Completions()
    waits += interrupted(wait_for_futures, rng.uniform(0.00005, 0.0008))
    waiting.drain()  # every worker still finishes its future
print(maps, waits)
"""


def run_interrupted_maps(mode: str, seed: int, rounds: int) -> None:
    """150 maps and `rounds` waits for futures, each interrupted at a random point, in a
    subprocess that must not hang; the interruptions must land in both."""
    env = {**os.environ, "PYTHONFAULTHANDLER": ""}
    try:
        done = subprocess.run([sys.executable, "-c", _INTERRUPTED_MAPS, str(seed), mode,
                               str(rounds)], env=env, capture_output=True, text=True,
                              timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("an interrupted map hung")
    assert done.returncode == 0, done.stderr
    assert all(int(n) > 0 for n in done.stdout.split())


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="POSIX interval timers")
def test_a_ctrl_c_anywhere_in_a_map_never_hangs_it() -> None:
    """A Ctrl-C raised in the main thread as it started a worker left that worker uncounted:
    it took one of the pool's end markers and a counted worker waited for ever (the old pool
    hung in 6 of 6 runs of this).  And concurrent.futures.wait(), interrupted while it takes
    the futures' locks, leaves some held, so the worker finishing such a future blocks for
    good (3 of 4 runs hung with wait() in place of Completions)."""
    run_interrupted_maps("alarm", 7, 1000)


def test_a_ctrl_c_taken_by_a_foreign_thread_never_hangs_a_map() -> None:
    """With a thread that does not block SIGINT (numpy and torch start some, rich's progress
    bar one), the kernel handed it the Ctrl-C while the main thread blocked the signals, and
    the KeyboardInterrupt was raised inside the block anyway: the map hung as before (3 of 3
    runs; 4 of 30 Ctrl-Cs of a push on a terminal).  The default SIGINT handler now defers it
    to the end of the block in the main thread."""
    run_interrupted_maps("sigint", 3, 300)


def test_memory_bound_formula() -> None:
    MiB = 1024 * 1024
    assert TransferConfig().memory_bound() == BASE_MEMORY + 8 * 16 * MiB * 2
    assert TransferConfig(concurrency=4).memory_bound(64 * MiB) == BASE_MEMORY + 4 * 64 * MiB * 2


def test_stopping_a_bounded_map_stops_the_maps_inside_its_items() -> None:
    """catalog reads run aliases() (a bounded_map) as an item of another: a stop (Ctrl-C, a
    Checkpointer's exit deadline) reached only the outer map's items, and the inner items
    waited out their retries and back-offs."""
    from ckptlake.transfer.pool import stop_event

    inner_waits: list[bool] = []
    outer_stop: list[Any] = []
    started = threading.Event()

    def inner_item(_: int) -> None:
        stop = stop_event()
        assert stop is not None
        started.set()
        inner_waits.append(stop.wait(30))  # a back-off that a stop ends at once

    def outer_item(i: int) -> None:
        if i == 0:
            outer_stop.append(stop_event())
            list(bounded_map(inner_item, range(2), workers=2))

    setter = threading.Thread(target=lambda: (started.wait(10), outer_stop[0].set()))
    setter.start()
    list(bounded_map(outer_item, range(2), workers=2))
    setter.join()
    assert inner_waits == [True, True]
