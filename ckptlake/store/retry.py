"""The single retry layer: any Store, retried on TransientError with capped, fully jittered backoff.

Why here and not in botocore: one layer sees every backend, counts attempts once, reports each
retry as a progress event, and turns "gave up" into one TransferError naming the object, the
attempts and the last cause.  Full jitter (AWS architecture blog, "Exponential Backoff and
Jitter") spreads the retries of many worker threads hitting the same SlowDown apart.

Only TransientError is retried.  NotFound, PreconditionFailed, AccessDenied and permanent
TransferErrors are answers, not hiccups: retrying them would only delay the same answer.

Inside a bounded_map worker whose pool is stopped (Ctrl-C, or a Checkpointer's exit deadline
cutting its upload off: stops.py `stop_event`) no new attempt is started and a backoff
ends at once, with Interrupted: the caller has given the work up, and a retry loop that goes on
(5 attempts of a stalled request: minutes) is what kept a preempted trainer from exiting.  The
attempt in flight is not cut short; it ends as it ends.
"""
from __future__ import annotations

import random
import time
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

from ..errors import (Interrupted, NotFound, OutcomeUnknown, PreconditionFailed, TransferError,
                      TransientError, UsageError)
from ..stops import stop_event
from .base import MultipartUpload, ObjectInfo, Store

T = TypeVar("T")
# The first backoff after a "slow down" (SlowDown, 429) of a chunk transfer, doubling as any
# other (so 5 attempts wait up to ~15 s, ~7.5 s on average, rather than ~3 s): S3 throttles a
# prefix for seconds while it scales, and a hiccup's backoff gave up inside such a burst.
THROTTLED_BASE_DELAY = 1.0
OnRetry = Callable[[str, int, str, float], None]


class RetryingStore(Store):
    """Wraps `inner`; every call is tried up to `attempts` times.

    on_retry(key, attempt, error, delay) is called before each sleep; `attempt` is the 1-based
    number of the attempt that just failed.  It is a plain attribute so an operation can point
    it at its progress reporter for the duration of a push or pull.  `sleep`: a test's stand-in
    for the backoff (None: wait, ending the wait when this worker's pool is stopped).
    """

    def __init__(self, inner: Store, *, attempts: int = 5, base_delay: float = 0.2,
                 max_delay: float = 10.0, on_retry: OnRetry | None = None,
                 sleep: Callable[[float], None] | None = None,
                 rand: Callable[[], float] = random.random) -> None:
        if attempts < 1:
            raise UsageError(f"retry attempts must be at least 1, not {attempts}")
        self.inner = inner
        self.url = inner.url
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.on_retry = on_retry
        self._sleep = sleep
        self._rand = rand

    def __repr__(self) -> str:
        return f"RetryingStore({self.inner!r}, attempts={self.attempts})"

    def __getattr__(self, name: str) -> Any:
        # Backend extras (S3Store.bucket_region, LocalStore.root) stay reachable through the
        # wrapper; they are not retried.
        if name == "inner":  # not set yet (e.g. during unpickling): avoid infinite recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    # ---- the loop --------------------------------------------------------------------------

    def _backoff(self, key: str, failed: int, error: TransientError, *,
                 interruptible: bool = True) -> None:
        """Sleep before the next try; `failed` is the 0-based index of the attempt that failed.
        Interrupted if this worker's pool is stopped meanwhile (unless not `interruptible`)."""
        # (chunks only: a manifest's commit keeps the short backoff, which fits the grace a
        # checkpointer gives a commit under way at its exit deadline)
        base = max(self.base_delay, THROTTLED_BASE_DELAY) \
            if error.throttled and key.startswith("chunks/") else self.base_delay
        delay = self._rand() * min(self.max_delay, base * 2 ** failed)
        if self.on_retry is not None:
            self.on_retry(key, failed + 1, str(error), delay)
        stop = stop_event() if interruptible else None
        if self._sleep is not None:
            self._sleep(delay)
        elif stop is None:
            time.sleep(delay)
        elif stop.wait(delay):
            raise self._stopped(key, error)

    def _check_stop(self, key: str, error: TransientError | None = None) -> None:
        """Before an attempt: Interrupted if this worker's pool was stopped (module doc)."""
        stop = stop_event()
        if stop is not None and stop.is_set():
            raise self._stopped(key, error)

    def _stopped(self, key: str, error: TransientError | None) -> Interrupted:
        where = f"{self.url}/{key}" if key else self.url
        last = "" if error is None else \
            f" (last error: {str(error).removeprefix(f'{where}: ')})"
        return Interrupted(f"{where}: given up: the transfer was interrupted{last}")

    def _give_up(self, key: str, attempts: int, error: TransientError) -> TransferError:
        where = f"{self.url}/{key}" if key else self.url
        cause = str(error).removeprefix(f"{where}: ")  # backends name the object too
        hint = ("the storage kept asking to slow down: lower the concurrency (--concurrency, "
                "or concurrency: in the config) or rerun later (finished work is kept)"
                if error.throttled else
                "check connectivity to the storage, then rerun (finished work is kept)")
        return TransferError(f"{where}: failed after {attempts} attempts; last error: {cause}",
                             hint=hint)

    def _call(self, key: str, fn: Callable[[], T], *, interruptible: bool = True) -> T:
        last: TransientError | None = None
        for attempt in range(self.attempts):
            if interruptible:
                self._check_stop(key, last)
            try:
                return fn()
            except TransientError as exc:
                if attempt + 1 == self.attempts:
                    raise self._give_up(key, self.attempts, exc) from exc
                last = exc
                self._backoff(key, attempt, exc, interruptible=interruptible)
        raise AssertionError("unreachable")  # pragma: no cover

    # ---- reads -----------------------------------------------------------------------------

    def get(self, key: str) -> bytes:
        return self._call(key, lambda: self.inner.get(key))

    def get_into(self, key: str, buffer: bytearray) -> memoryview:
        return self._call(key, lambda: self.inner.get_into(key, buffer))

    def get_range(self, key: str, start: int, length: int) -> bytes:
        return self._call(key, lambda: self.inner.get_range(key, start, length))

    def get_range_into(self, key: str, start: int, buffer: bytearray | memoryview) -> memoryview:
        return self._call(key, lambda: self.inner.get_range_into(key, start, buffer))

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        return self._call(key, lambda: self.inner.get_with_etag(key))

    def stat(self, key: str) -> ObjectInfo:
        return self._call(key, lambda: self.inner.stat(key))

    # ---- writes ----------------------------------------------------------------------------

    def put(self, key: str, data: bytes | bytearray | memoryview, *,
            if_none_match: bool = False, if_match: str | None = None,
            sha256: str | None = None) -> str:
        """Conditional puts: a PreconditionFailed after a transient failure may be our own write.

        A request can succeed on the server while its response is lost (connection reset,
        read timeout).  The retry then finds the object present (If-None-Match) or with a new
        ETag (If-Match) and fails its precondition, although the write the caller wanted did
        happen.  So, only in that situation, the stored bytes are read back: equal to ours means
        our write landed and the put succeeded; anything else is a real lost race.

        Equal bytes from another writer are indistinguishable from ours; callers that use a
        conditional put to claim exclusive ownership (a version number, say) must make their
        bytes unique to the writer, which manifests with a writer id and timestamp already are.

        A conditional put that runs out of attempts raises OutcomeUnknown (a TransferError):
        every attempt failed in a way that may have written, so the key may hold our bytes
        although we were never told; a caller for whom that matters (a version's manifest:
        core/push.py `commit_version`) reads the key back.  An unconditional put is idempotent:
        running out of attempts there is a plain TransferError, and a rerun writes it again.
        """
        conditional = if_none_match or if_match is not None
        uncertain = False  # did an earlier attempt fail in a way that may have written?
        last: TransientError | None = None
        for attempt in range(self.attempts):
            self._check_stop(key, last)
            try:
                return self.inner.put(key, data, if_none_match=if_none_match, if_match=if_match,
                                      sha256=sha256)
            except TransientError as exc:
                if attempt + 1 == self.attempts:
                    error = self._give_up(key, self.attempts, exc)
                    if conditional:
                        raise OutcomeUnknown(error.message, hint=error.hint) from exc
                    raise error from exc
                uncertain = conditional
                last = exc
                self._backoff(key, attempt, exc)
            except PreconditionFailed:
                etag = self._etag_if_holds(key, data) if uncertain else None
                if etag is None:
                    raise
                return etag
        raise AssertionError("unreachable")  # pragma: no cover

    def _etag_if_holds(self, key: str, data: bytes | bytearray | memoryview) -> str | None:
        """The object's ETag if it currently holds exactly `data`, else None."""
        try:
            stored, etag = self.get_with_etag(key)
        except NotFound:
            return None
        return etag if stored == bytes(data) else None

    def delete(self, keys: Iterable[str]) -> None:
        # Materialised so a retry deletes the same keys even if `keys` is a one-shot iterator.
        # Deleting is idempotent, so re-sending already deleted keys is harmless.
        keys = list(keys)
        if not keys:
            return
        label = keys[0] if len(keys) == 1 else f"{keys[0]} (and {len(keys) - 1} more keys)"
        self._call(label, lambda: self.inner.delete(keys))

    # ---- listing ---------------------------------------------------------------------------

    def list(self, prefix: str = "", *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        """Resume after the last key yielded, so a long listing survives a transient failure.

        The failure budget is per stretch without progress: a listing of millions of keys may
        hit more than `attempts` hiccups in total and still complete.
        """
        last = start_after
        failed = 0
        while True:
            try:
                for info in self.inner.list(prefix, start_after=last):
                    yield info
                    last, failed = info.key, 0
                return
            except TransientError as exc:
                failed += 1
                if failed == self.attempts:
                    raise self._give_up(prefix, failed, exc) from exc
                self._backoff(prefix, failed - 1, exc)

    def _relist(self, what: str, listing: Callable[[], Iterator[T]],
                identity: Callable[[T], str]) -> Iterator[T]:
        """Restart a listing that cannot resume server-side, skipping what was already yielded.

        Identity, not position or order: some S3-compatible servers (SeaweedFS) do not return
        prefixes in strict key order, so "everything after the last one" would skip entries.
        """
        seen: set[str] = set()
        failed = 0
        while True:
            try:
                for item in listing():
                    ident = identity(item)
                    if ident in seen:
                        continue
                    seen.add(ident)
                    yield item
                    failed = 0
                return
            except TransientError as exc:
                failed += 1
                if failed == self.attempts:
                    raise self._give_up(what, failed, exc) from exc
                self._backoff(what, failed - 1, exc)

    def list_prefixes(self, prefix: str) -> Iterator[str]:
        return self._relist(prefix, lambda: self.inner.list_prefixes(prefix), lambda p: p)

    def list_multipart(self, prefix: str = "") -> Iterator[MultipartUpload]:
        return self._relist(prefix, lambda: self.inner.list_multipart(prefix),
                            lambda u: u.upload_id)

    def multipart_bytes(self, key: str, upload_id: str) -> int | None:
        return self._call(key, lambda: self.inner.multipart_bytes(key, upload_id))

    # ---- multipart -------------------------------------------------------------------------

    def create_multipart(self, key: str) -> str:
        # A retry after a lost response leaves an orphan upload; gc aborts those.
        return self._call(key, lambda: self.inner.create_multipart(key))

    def upload_part(self, key: str, upload_id: str, part_number: int,
                    data: bytes | bytearray | memoryview) -> str:
        return self._call(key, lambda: self.inner.upload_part(key, upload_id, part_number, data))

    def complete_multipart(self, key: str, upload_id: str, parts: Sequence[tuple[int, str]], *,
                           if_none_match: bool = False) -> str:
        """As with put: after a transient failure, "upload gone" may mean we completed it.

        Upload ids are unique to their creator, so once ours is no longer pending and the
        object exists, the completion that removed it was ours (or an abort racing with us,
        which only gc does, and only for long-abandoned uploads).
        """
        uncertain = False
        last: TransientError | None = None
        for attempt in range(self.attempts):
            self._check_stop(key, last)
            try:
                return self.inner.complete_multipart(key, upload_id, parts,
                                                     if_none_match=if_none_match)
            except TransientError as exc:
                if attempt + 1 == self.attempts:
                    raise self._give_up(key, self.attempts, exc) from exc
                uncertain = True
                last = exc
                self._backoff(key, attempt, exc)
            except (PreconditionFailed, NotFound):
                if uncertain and not self._pending(key, upload_id):
                    return self.stat(key).etag
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _pending(self, key: str, upload_id: str) -> bool:
        return any(u.upload_id == upload_id for u in self.list_multipart(key))

    def abort_multipart(self, key: str, upload_id: str) -> None:
        # Clean-up after a failure, an interruption too: not given up when the pool stops.
        self._call(key, lambda: self.inner.abort_multipart(key, upload_id),
                   interruptible=False)

    @property
    def supports_storage_classes(self) -> bool:  # type: ignore[override]
        return self.inner.supports_storage_classes

    def copy_in(self, source: Store, key: str, *, if_match: str | None = None) -> bool:
        # Idempotent (the same bytes under the same key): retrying one that did land is
        # harmless.  The inner store sees the unwrapped source (it compares servers).
        while isinstance(source, RetryingStore):
            source = source.inner
        return self._call(key, lambda: self.inner.copy_in(source, key, if_match=if_match))

    def set_storage_class(self, key: str, storage_class: str, *, etag: str | None = None
                          ) -> None:
        # A copy onto itself is idempotent: retrying one that did land changes nothing.
        self._call(key, lambda: self.inner.set_storage_class(key, storage_class, etag=etag))

    def check_writable(self) -> None:
        self.inner.check_writable()

    def close(self) -> None:
        self.inner.close()
