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

import _signal
import contextlib
import queue
import signal
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Generic, Iterable, Iterator, TypeVar

from ..stops import _worker, stop_event, stopped_by  # noqa: F401 - re-exported

T = TypeVar("T")
R = TypeVar("R")


def new_stop() -> "_Stop":
    """A stop event for work this thread hands to other threads: a child of this thread's own
    (stopping the map whose item this thread runs stops that work too), else a fresh one."""
    parent = stop_event()
    return parent.child() if isinstance(parent, _Stop) else _Stop()


# Those the kernel sends to the thread that caused them (a fault; abort()): blocked there, they
# would kill the process without running its handler (faulthandler's traceback).
# (And SIGKILL and SIGSTOP cannot be blocked.)
_SYNCHRONOUS = ("SIGSEGV", "SIGBUS", "SIGFPE", "SIGILL", "SIGTRAP", "SIGSYS", "SIGABRT",
                "SIGKILL", "SIGSTOP")
_ASYNC_SIGNALS = frozenset(int(s) for s in signal.valid_signals()
                           if s not in {getattr(signal, n) for n in _SYNCHRONOUS
                                        if hasattr(signal, n)}) \
    if hasattr(signal, "pthread_sigmask") else frozenset()  # (none to block on Windows)
# signal.pthread_sigmask() turns every signal of the mask it returns into a Signals enum:
# ~70 us per call in a thread that blocks them all, against ~1 us for the C function it wraps
_sigmask = getattr(_signal, "pthread_sigmask", None)


@contextlib.contextmanager
def signals_blocked() -> Iterator[None]:
    """The asynchronous signals blocked in this thread meanwhile: a thread started inside
    inherits the mask, and keeps them blocked for good.  A signal that arrives meanwhile
    waits, and its handler (a Ctrl-C's KeyboardInterrupt) runs as the mask is restored.

    Also what makes a short step safe from a Ctrl-C in the middle: Python runs a signal's
    handler between any two bytecodes, and one that raises there can leave a lock taken
    (`with condition:` raised in after Condition.__enter__ took the lock, before the block
    began) or a structure half-updated, and a worker then waits for good."""
    if not _ASYNC_SIGNALS:
        yield
        return
    # the mask as it is, read before anything is blocked: a handler that raises after this
    # leaves nothing to undo, one after the SIG_BLOCK is inside the try
    previous = _sigmask(signal.SIG_BLOCK, ())
    if _ASYNC_SIGNALS <= previous:  # (our own threads, and blocks nested in one: already)
        yield
        return
    # The mask alone does not keep a Ctrl-C out of the block: the kernel then hands the SIGINT
    # to any thread that does not block it (numpy's OpenBLAS thread, torch's OpenMP ones,
    # rich's refresh thread, a notebook's), Python flags it, and the main thread raises at its
    # next bytecode -- inside the block.  So in the main thread a SIGINT with Python's default
    # handler is deferred to the end of the block (`_deferring_int`); a handler of the user's
    # own is left alone, and so is any other signal's.
    main = threading.get_ident() == _MAIN_IDENT
    if main and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _deferring_int)
    try:
        _sigmask(signal.SIG_BLOCK, _ASYNC_SIGNALS)
        if main:
            _deferred.depth += 1
        try:
            yield
        finally:
            if main:
                _deferred.depth -= 1
    finally:
        _sigmask(signal.SIG_SETMASK, previous)
        if main and _deferred.depth == 0 and _deferred.pending:
            _deferred.pending = False
            raise KeyboardInterrupt


class _Deferred:
    depth = 0  # signals_blocked blocks the main thread is in
    pending = False  # a SIGINT came meanwhile


_deferred = _Deferred()
_MAIN_IDENT = threading.main_thread().ident


def _deferring_int(signum: int, frame: Any) -> None:
    """Python's default SIGINT handler (KeyboardInterrupt), except inside signals_blocked in
    the main thread, where the KeyboardInterrupt waits for the end of the block.  The CLI's
    SIGTERM/SIGHUP handler (cli/main.py) is this too: a CI cancel must not cut a step a
    Ctrl-C would not."""
    if _deferred.depth:
        _deferred.pending = True
        return
    raise KeyboardInterrupt


def interrupt(signum: int, frame: Any) -> None:
    """A signal handler that ends the program as Ctrl-C does (see _deferring_int)."""
    _deferring_int(signum, frame)


def start_thread(thread: threading.Thread) -> None:
    """`thread.start()`, the new thread (and every thread it starts) blocking the asynchronous
    signals: see the module doc.  (It inherits the mask of the thread that starts it.)"""
    with signals_blocked():
        thread.start()


class Executor(ThreadPoolExecutor):
    """A ThreadPoolExecutor whose workers block the asynchronous signals (see the module doc):
    it starts them inside `submit`, in the caller's thread, so the mask is set around that."""

    def submit(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> "Future[R]":
        with signals_blocked():
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
        # a token per idle thread: a queue, not a threading.Semaphore, whose Python lock code a
        # Ctrl-C could interrupt with its lock taken
        self._idle: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._shut = False

    def submit(self, fn: Callable[[], R]) -> "Future[R]":
        """All of it runs inside signals_blocked (the thread that is started inherits the
        mask): a Ctrl-C that arrives meanwhile is raised as the block ends, with the task
        queued and its thread started *and* counted.  Raised between the two, the thread was
        not counted, took one of shutdown's end markers, and left a counted thread waiting for
        a marker that never came: the map hung for good (in most runs of 400 interrupted
        maps).  The threads now pass one end marker on (`_work`), so even that cannot hang."""
        fut: Future[R] = Future()
        with signals_blocked(), self._lock:
            if self._shut:  # no thread would ever run it
                raise RuntimeError(f"{self._name}: pool already shut down")
            # one thread per item up to `workers`, unless one is idle and will take it (more
            # items than that, which only the shared part pool has, queue for the threads);
            # started before the item is queued: if it cannot be (RuntimeError: can't start
            # new thread), the item is not left in the queue with no thread to run it
            if not self._idle_thread() and len(self._threads) < self._workers:
                thread = threading.Thread(target=self._work, daemon=True,
                                          name=f"{self._name}_{len(self._threads)}")
                thread.start()
                self._threads.append(thread)
            self._tasks.put((fut, fn))
        return fut

    def _idle_thread(self) -> bool:
        try:
            self._idle.get_nowait()
        except queue.Empty:
            return False
        return True

    def _work(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                # passed on to the next thread: one end marker ends them all, however many
                # there are (a Ctrl-C between starting a thread and counting it cannot leave
                # one waiting for a marker that never comes)
                self._tasks.put(None)
                return
            _run_one(*task)
            del task  # an idle thread holds nothing of the item it ran
            self._idle.put(None)

    def shutdown(self, wait: bool = True) -> None:
        """Let the started items finish, then end the threads (cancelled items are skipped).
        wait=False: do not wait for that (a thread stuck in a request then ends with it)."""
        with signals_blocked(), self._lock:
            self._shut = True
            threads = list(self._threads)
            self._tasks.put(None)  # (each thread passes it on)
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


class Completions(Generic[R]):
    """Futures in the order they finish, for a thread that a Ctrl-C may interrupt while it
    waits for them (the main thread).  Not concurrent.futures.wait(): interrupted as it takes
    the futures' locks one after the other, it leaves some taken, and the worker that then
    finishes such a future blocks for good, and with it whoever waits for that worker: a
    Ctrl-C hung the process.  Waiting here is on a queue, which no worker ever waits for, and
    whatever takes a future's lock runs with the signals blocked (`signals_blocked`).
    A future's outcome: `outcome()`, for the same reason."""

    def __init__(self) -> None:
        self._finished: queue.SimpleQueue[Future[R]] = queue.SimpleQueue()
        self.pending: set[Future[R]] = set()

    def add(self, fut: "Future[R]") -> None:
        with signals_blocked():  # (never pending without the callback that reports it)
            fut.add_done_callback(self._finished.put)
            self.pending.add(fut)

    def next(self) -> "Future[R]":
        """The next future to finish (or be cancelled); blocks while there is none."""
        fut = self._finished.get()
        self.pending.discard(fut)
        return fut

    def ready(self) -> "list[Future[R]]":
        """Those finished already, without blocking."""
        out = []
        while True:
            try:
                fut = self._finished.get_nowait()
            except queue.Empty:
                return out
            self.pending.discard(fut)
            out.append(fut)

    def cancel(self) -> None:
        """Cancel those not started."""
        cancel(self.pending)

    def drain(self) -> None:
        """Wait for every one to finish or be cancelled (`cancel()` first, or this waits for
        all of them).  (One taken from the queue by a `next()` that a Ctrl-C then cut short
        is still pending, but done: it is not waited for.)"""
        while True:
            with signals_blocked():
                self.pending = {f for f in self.pending if not f.done()}
            if not self.pending:
                return
            self.next()

    def __len__(self) -> int:
        return len(self.pending)


def outcome(fut: "Future[R]") -> R:
    """The result of a finished future, or its exception raised: see Completions."""
    with signals_blocked():
        return fut.result()


def wait_result(fut: "Future[R]") -> R:
    """`fut.result()`, waiting for it in a way a Ctrl-C can interrupt safely: see Completions
    (Future.result() waits on the future's lock)."""
    finished: queue.SimpleQueue[Future[R]] = queue.SimpleQueue()
    with signals_blocked():
        fut.add_done_callback(finished.put)
    finished.get()
    return outcome(fut)


def cancel(futures: Iterable["Future[Any]"]) -> None:
    """Cancel those not started: see Completions."""
    with signals_blocked():
        for fut in list(futures):
            fut.cancel()


def failure(fut: "Future[Any]") -> BaseException | None:
    """The exception of a finished future, if any: see Completions."""
    with signals_blocked():
        return fut.exception()


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
    pending: Completions[R] = Completions()
    try:
        for item in items:
            if len(pending) >= workers:
                yield outcome(pending.next())
            pending.add(pool.submit(lambda item=item: run(item)))  # type: ignore[misc]
        while pending:
            yield outcome(pending.next())
    except KeyboardInterrupt:
        # The running items stop waiting for bandwidth and start no new attempt of a request
        # (store/retry.py); a request in flight ends as it ends.
        with signals_blocked():
            stop.set()
        raise
    finally:
        # Failure or interruption: drop what has not started; let running ones finish.
        pending.cancel()
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
