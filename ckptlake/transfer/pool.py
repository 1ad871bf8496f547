"""A bounded worker pool: never more than `workers` items in flight.

Why not `executor.map`: it submits every item at once, so a 20 GiB file would queue 1,280 chunk
reads and memory would follow.  Here the submitting loop blocks until a slot frees, which is what
bounds memory to `workers` chunk buffers.  On the first failure nothing new is submitted, the
running items finish (their side effects are idempotent), and the first error is re-raised.

Why not `ThreadPoolExecutor` either: its threads are joined at interpreter exit (by
concurrent.futures' exit hook, then by threading's join of every non-daemon thread), and a
worker inside a request cannot be interrupted.  A Checkpointer's exit deadline (checkpointer.py,
"Preemption") cuts off an upload whose request has stalled; with joined threads the process
could not exit until that request, and every retry after it, had timed out (minutes).  Our
workers are daemon threads: `bounded_map` itself always waits for the items it started before it
returns, so in a normal run nothing is left behind; only a worker that its caller has already
abandoned at exit (a cut-off upload, after the deadline and its grace) is not waited for.

Our threads start with the asynchronous signals blocked (`start_thread`).  The kernel hands a
signal sent to the process (SIGTERM at preemption, Ctrl-C's SIGINT) to any thread that does
not block it, and a thread that is just starting takes it as it sets its signal mask; Python
then only flags the signal for the main thread, which runs the handler at its next bytecode.
A main thread blocked in a call (a sleep, `Checkpointer.close()` waiting for a stalled upload)
is not woken, so a Checkpointer's SIGTERM handler never ran and a preempted trainer never
exited.  With ours blocking them, such signals go to the main thread, and interrupt its call.
"""
from __future__ import annotations

import contextlib
import queue
import signal
import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


_worker = threading.local()


def stop_event() -> threading.Event | None:
    """Set once the bounded_map whose item this thread runs is interrupted (Ctrl-C) or cut off
    (a Checkpointer's exit deadline): what the item still has to wait for (transfer/throttle.py)
    it need not wait for any more, and the retry layer (store/retry.py) starts no further
    attempt."""
    return getattr(_worker, "stop", None)


def new_stop() -> "_Stop":
    """A stop event for work this thread hands to other threads: a child of this thread's own
    (stopping the map whose item this thread runs stops that work too), else a fresh one."""
    parent = stop_event()
    return parent.child() if isinstance(parent, _Stop) else _Stop()


@contextlib.contextmanager
def stopped_by(stop: threading.Event) -> Iterator[None]:
    """Run the enclosed work as an item of a map with this stop event (`stop_event()`)."""
    outer = getattr(_worker, "stop", None)
    _worker.stop = stop
    try:
        yield
    finally:
        _worker.stop = outer


# Those the kernel sends to the thread that caused them (a fault; abort()): blocked there, they
# would kill the process without running its handler (faulthandler's traceback).
_SYNCHRONOUS = ("SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGTRAP", "SIGSYS", "SIGABRT")
_ASYNC_SIGNALS = (set(signal.valid_signals())
                  - {getattr(signal, n) for n in _SYNCHRONOUS if hasattr(signal, n)}
                  if hasattr(signal, "pthread_sigmask") else set())  # (none to block on Windows)


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    """The asynchronous signals blocked in this thread meanwhile: a thread started inside
    inherits the mask, and keeps them blocked for good."""
    if not _ASYNC_SIGNALS:
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _ASYNC_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def start_thread(thread: threading.Thread) -> None:
    """`thread.start()`, the new thread (and every thread it starts) blocking the asynchronous
    signals: see the module doc.  (It inherits the mask of the thread that starts it.)"""
    with _signals_blocked():
        thread.start()


class Executor(ThreadPoolExecutor):
    """A ThreadPoolExecutor whose workers block the asynchronous signals (see the module doc):
    it starts them inside `submit`, in the caller's thread, so the mask is set around that."""

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> "Future[R]":
        with _signals_blocked():
            return super().submit(fn, *args, **kwargs)


class _Stop(threading.Event):
    """A bounded_map's stop event, which also sets the stop events of the maps run inside its
    items (their workers see only their own: the thread-local is per thread)."""

    def __init__(self) -> None:
        super().__init__()
        self._children: list[_Stop] = []
        self._lock = threading.Lock()

    def child(self) -> "_Stop":
        c = _Stop()
        with self._lock:
            self._children = [x for x in self._children if not x.is_set()] + [c]
            if self.is_set():
                c.set()
        return c

    def set(self) -> None:
        super().set()
        with self._lock:
            children, self._children = self._children, []
        for c in children:
            c.set()


class _DaemonPool:
    """The little of ThreadPoolExecutor that bounded_map uses (submit, shutdown), on daemon
    threads, which the interpreter does not join at exit (see the module doc).  Also the
    shared part pool of transfer/parts.py, whose callers submit from many threads at once."""

    def __init__(self, workers: int, name: str) -> None:
        self._workers, self._name = workers, name
        self._tasks: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = \
            queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._shut = False

    def submit(self, fn: Callable[[], R]) -> "Future[R]":
        fut: Future[R] = Future()
        with self._lock:
            if self._shut:  # no thread would ever run it
                raise RuntimeError(f"{self._name}: pool already shut down")
            self._tasks.put((fut, fn))
            # one thread per item up to `workers`, unless one is idle and will take it (more
            # items than that, which only the shared part pool has, queue for the threads)
            if not self._idle.acquire(blocking=False) and len(self._threads) < self._workers:
                thread = threading.Thread(target=self._work, daemon=True,
                                          name=f"{self._name}_{len(self._threads)}")
                start_thread(thread)
                self._threads.append(thread)
        return fut

    def _work(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            _run_one(*task)
            del task  # an idle thread holds nothing of the item it ran
            self._idle.release()

    def shutdown(self, wait: bool = True) -> None:
        """Let the started items finish, then end the threads (cancelled items are skipped).
        wait=False: do not wait for that (a thread stuck in a request then ends with it)."""
        with self._lock:
            self._shut = True
            threads = list(self._threads)
            for _ in threads:
                self._tasks.put(None)
        if wait:
            for thread in threads:
                thread.join()


def _run_one(fut: "Future[Any]", fn: Callable[[], Any]) -> None:
    if not fut.set_running_or_notify_cancel():
        return  # cancelled before it started
    try:
        result = fn()
    except BaseException as exc:  # noqa: BLE001 - handed to the consumer, as an executor does
        fut.set_exception(exc)
    else:
        fut.set_result(result)


def bounded_map(fn: Callable[[T], R], items: Iterable[T], *, workers: int,
                name: str = "ckptlake") -> Iterator[R]:
    """Yield fn(item) for every item, in completion order, with at most `workers` running."""
    workers = max(1, workers)
    # Nested inside an item of another bounded_map (catalog reads run aliases() as an item,
    # which maps again): stopping the outer one stops this one too.
    stop = new_stop()

    def run(item: T) -> R:
        with stopped_by(stop):
            return fn(item)

    pool = _DaemonPool(workers, name)
    pending: set[Future[R]] = set()
    try:
        for item in items:
            if len(pending) >= workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()
            pending.add(pool.submit(lambda item=item: run(item)))  # type: ignore[misc]
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                yield fut.result()
    except KeyboardInterrupt:
        # The running items stop waiting for bandwidth and start no new attempt of a request
        # (store/retry.py); a request in flight ends as it ends.
        stop.set()
        raise
    finally:
        # Failure or interruption: drop what has not started; let running ones finish.
        for fut in pending:
            fut.cancel()
        pool.shutdown()


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
