"""A store that reads chunks from a regional replica and everything else from the origin.

Why a store and not a feature of the pull: every reader of chunk bytes (pull, cat, open,
tensors, diff --values) goes through a Store, so wrapping the store gives all of them the
replica's bytes and its repair rules at once, and the pull code does not change.

The rules (docs/format.md, "Replicas"):

* **Truth stays at the origin.**  Only reads of chunk keys (`chunks/<hh>/<digest>`) go to the
  replica; manifests, aliases, tombstones, listings, stats and every write go to the origin.
  A version gc deleted is therefore never resolved, so its chunks are never asked for.
* **Pull-through.**  A chunk missing in the replica is fetched once from the origin (one
  fetch per chunk per process: concurrent readers of the same chunk wait for it), verified
  against its digest, written into the replica with create-if-absent, and served.
* **Nothing unverified is written, nothing unverified is served by a whole read.**  A whole
  chunk read from the replica is checked against its digest; one that does not match (bit
  rot, a cut upload's empty object, tampering) is refetched from the origin, verified and
  written over the bad copy.  A pull, which hashes every chunk anyway, opens this store with
  `caller_verifies` (one hash per byte, not two) and calls `refetch_into` on a mismatch: the
  same refetch and repair.  Ranged reads of a chunk the pull fetches in parts are covered the
  same way.  Ranged reads (packed small files, tensor ranges, large chunks
  in parts) cannot be checked here: the replica's bytes go to the caller, which checks them
  against the file's or tensor's digest as for any store (a mismatch is an IntegrityError
  there, and `ckptlake replicate --verify` repairs the replica).
* **A cache never fails a read.**  A replica that cannot be read (unreachable, refused)
  is switched off for the rest of this store's life and the origin serves; one that refuses
  writes keeps serving what it holds and stops being filled.  Each is one warning.
* **One lake's replica.**  Before its first read the replica is checked to be this lake's,
  and before its first write it is bound to it (`bind`, handed in by core: the replica's
  marker).  One bound to another lake, or that is a lake, is switched off like an unreadable
  one: the pull reads the origin, with one warning, and nothing is written there.

The digest check is a function handed in by core (`verify(digest, stored_bytes) -> bool`),
not a hash here: the stored object's bytes are what a chunk key names only while chunks are
stored raw, and core knows how they are encoded.  Chunk keys are recognised by `chunk_digest`,
also handed in, so this module stays below format/.
"""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from ..errors import (AccessDenied, CkptlakeError, NotFound, PreconditionFailed, TransferError,
                      TransientError)
from ..forks import reset_in_child
from .base import ForwardingStore, Store

Verify = Callable[[str, "bytes | bytearray | memoryview"], bool]
ChunkDigest = Callable[[str], "str | None"]

_READ_FAILURES = (TransientError, TransferError, AccessDenied)


@dataclass
class ReplicaStats:
    """What one replica store served, and from where (the egress estimate's sources)."""

    name: str
    region: str
    chunks_from_replica: int = 0
    bytes_from_replica: int = 0
    chunks_pulled_through: int = 0  # fetched from the origin and written into the replica
    bytes_pulled_through: int = 0
    chunks_from_origin: int = 0  # fetched from the origin, not (or not successfully) cached
    bytes_from_origin: int = 0
    chunks_repaired: int = 0  # corrupt in the replica, replaced by verified origin bytes
    replica_down: str | None = None  # why reads went to the origin
    writes_off: str | None = None  # why the replica stopped being filled
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "warnings"}


class ReplicaStore(ForwardingStore):
    def __init__(self, origin: Store, replica: Store, *, name: str, region: str,
                 verify: Verify, chunk_digest: ChunkDigest, write: bool = True,
                 on_warning: Callable[[str], None] | None = None,
                 caller_verifies: bool = False,
                 bind: Callable[[bool], None] | None = None) -> None:
        self.origin, self.replica = origin, replica
        self.inner = origin  # what is not a chunk read goes to the origin (ForwardingStore)
        self.url = origin.url
        self.name, self.region = name, region
        self._verify, self._chunk_digest = verify, chunk_digest
        self._write = write
        self._on_warning = on_warning
        # The pull hashes every chunk itself and calls refetch_into on a mismatch: hashing
        # the replica's copy here too would cost a second SHA-256 pass per byte.
        self._caller_verifies = caller_verifies
        # With caller_verifies, what each chunk's replica reads were counted as (chunks, bytes)
        # before the caller's check: a chunk that fails it is taken back out of
        # `from_replica` by refetch_into, and counted once, as pulled through.
        self._unverified: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._inflight: dict[str, threading.Lock] = {}
        self.stats = ReplicaStats(name=name, region=region)
        # bind(create): raises if the replica is not this lake's (UsageError) or cannot be
        # asked; create=True also writes its marker if it has none.  _bound: 0 not checked,
        # 1 checked for reads, 2 bound for writes.
        self._bind = bind
        self._bound = 0 if bind is not None else 2
        self._bind_lock = threading.Lock()
        reset_in_child(self)

    def _after_fork(self) -> None:
        """(See ckptlake/forks.py.)  A chunk's single-flight lock, or the bind lock, held by a
        parent thread in a request at the fork stays held in the child: its read of that
        chunk through the replica waited for ever."""
        self._lock, self._bind_lock, self._inflight = threading.Lock(), threading.Lock(), {}

    def __repr__(self) -> str:
        return f"ReplicaStore(origin={self.origin!r}, replica={self.replica!r})"

    # Backend extras (bucket_region, root) and on_retry belong to the origin.
    def __getattr__(self, name: str) -> Any:
        if name in ("origin", "replica", "inner"):
            raise AttributeError(name)
        return getattr(self.origin, name)

    @property
    def on_retry(self) -> Any:
        return getattr(self.origin, "on_retry", None)

    @on_retry.setter
    def on_retry(self, fn: Any) -> None:
        for s in (self.origin, self.replica):
            if hasattr(s, "on_retry"):
                s.on_retry = fn

    @property
    def warnings(self) -> list[str]:
        with self._lock:
            return list(self.stats.warnings)

    # ---- bookkeeping ---------------------------------------------------------------------

    def _count(self, what: str, n: int) -> None:
        with self._lock:
            setattr(self.stats, f"chunks_{what}", getattr(self.stats, f"chunks_{what}") + 1)
            setattr(self.stats, f"bytes_{what}", getattr(self.stats, f"bytes_{what}") + n)

    def _count_unverified(self, digest: str, n: int) -> None:
        """Bytes served from the replica that only the caller checks."""
        self._count("from_replica", n)
        with self._lock:
            chunks, nbytes = self._unverified.get(digest, (0, 0))
            self._unverified[digest] = (chunks + 1, nbytes + n)

    def _uncount_unverified(self, digest: str) -> None:
        with self._lock:
            chunks, nbytes = self._unverified.pop(digest, (0, 0))
            self.stats.chunks_from_replica -= chunks
            self.stats.bytes_from_replica -= nbytes

    def _warn(self, text: str) -> None:
        self.stats.warnings.append(text)
        if self._on_warning is not None:
            self._on_warning(text)

    def _down(self, exc: CkptlakeError) -> None:
        with self._lock:
            if self.stats.replica_down is None:
                self.stats.replica_down = str(exc)
                self._warn(f"replica {self.name} ({self.replica.url}) cannot be read ({exc}); "
                           "reading from the origin instead (egress charged)")

    def _writes_off(self, exc: CkptlakeError) -> None:
        with self._lock:
            if self.stats.writes_off is None:
                self.stats.writes_off = str(exc)
                self._warn(f"replica {self.name} ({self.replica.url}) refused a write ({exc}); "
                           "chunks it lacks are read from the origin and not cached")

    def _refused(self, exc: CkptlakeError) -> None:
        with self._lock:
            if self.stats.replica_down is None:
                self.stats.replica_down = str(exc)
                self._warn(f"replica {self.name} is not used: {exc}; reading from the origin "
                           "instead (egress charged)")

    def _binding(self, write: bool) -> bool:
        """Whether the replica may be read (write=False) or written (True), checking it is
        this lake's the first time each is asked."""
        need = 2 if write else 1
        if self._bound < need:
            with self._bind_lock:
                if self._bound < need and self.stats.replica_down is None \
                        and (not write or self.stats.writes_off is None):
                    try:
                        self._bind(write)  # type: ignore[misc]
                    except _READ_FAILURES as exc:
                        (self._writes_off if write else self._down)(exc)
                    except CkptlakeError as exc:  # another lake's, a lake, a bad marker
                        self._refused(exc)
                    else:
                        self._bound = need
        return self.stats.replica_down is None and (not write or self._bound >= need)

    @property
    def usable(self) -> bool:
        return self._binding(write=False)

    def writable(self) -> bool:
        """Whether something may be written into the replica now (bound to this lake first:
        a caller writing besides the pull-through, such as the manifest copy, asks this)."""
        return self._write and self.stats.writes_off is None and self._binding(write=True)

    def _single_flight(self, digest: str) -> threading.Lock:
        with self._lock:
            lock = self._inflight.get(digest)
            if lock is None:
                lock = self._inflight[digest] = threading.Lock()
            return lock

    @contextlib.contextmanager
    def _fetching(self, digest: str) -> Iterator[bool]:
        """Hold the right to fetch this chunk; yields whether another reader held it first
        (then it may be in the replica by now, worth one more look)."""
        lock = self._single_flight(digest)
        waited = not lock.acquire(blocking=False)
        if waited:
            lock.acquire()
        try:
            yield waited
        finally:
            lock.release()

    # ---- chunk reads -----------------------------------------------------------------------

    def _whole(self, key: str, digest: str, buffer: bytearray | None) -> memoryview | bytes:
        """A whole chunk object, verified: from the replica if it holds a good copy, else
        through the origin (and then into the replica)."""
        if self.usable:
            try:
                data = self.replica.get_into(key, buffer) if buffer is not None \
                    else self.replica.get(key)
            except NotFound:
                data = None
            except _READ_FAILURES as exc:
                self._down(exc)
                data = None
            if data is not None:
                if self._caller_verifies:
                    self._count_unverified(digest, len(data))
                    return data
                if self._verify(digest, data):
                    self._count("from_replica", len(data))
                    return data
                return self._through(key, digest, buffer, repair=True)
            return self._through(key, digest, buffer, repair=False)
        data = self.origin.get_into(key, buffer) if buffer is not None else self.origin.get(key)
        self._count("from_origin", len(data))
        return data

    def _through(self, key: str, digest: str, buffer: bytearray | None, *,
                 repair: bool) -> memoryview | bytes:
        """Fetch from the origin, verify, write into the replica, serve.  One fetch per chunk
        at a time: a second reader of the same chunk waits, then finds it in the replica."""
        with self._fetching(digest) as waited:
            if waited and not repair and self.usable:
                # Another thread may have pulled it through while we waited.
                try:
                    data = self.replica.get_into(key, buffer) if buffer is not None \
                        else self.replica.get(key)
                    if self._verify(digest, data):
                        self._count("from_replica", len(data))
                        return data
                    repair = True
                except NotFound:
                    pass
                except _READ_FAILURES as exc:
                    self._down(exc)
            data = self.origin.get_into(key, buffer) if buffer is not None \
                else self.origin.get(key)
            if not self._verify(digest, data):
                # The origin's copy is bad too: hand it up unverified-as-bad, the reader's own
                # check reports it (and nothing is written into the replica).
                self._count("from_origin", len(data))
                return data
            if self._store(key, data, replace=repair):
                self._count("pulled_through", len(data))
                if repair:
                    with self._lock:
                        self.stats.chunks_repaired += 1
            else:
                self._count("from_origin", len(data))
            return data

    def _store(self, key: str, data: bytes | bytearray | memoryview, *, replace: bool) -> bool:
        """Write verified bytes into the replica; False if it was not written (writes off)."""
        if not self._write or self.stats.writes_off is not None \
                or not self._binding(write=True):
            return False
        try:
            if replace:
                self.replica.put(key, data)  # over a corrupt copy: the bytes are verified
            else:
                self.replica.put(key, data, if_none_match=True)
        except PreconditionFailed:
            return True  # someone else wrote it meanwhile (verified when read)
        except (*_READ_FAILURES, CkptlakeError) as exc:
            self._writes_off(exc)
            return False
        return True

    def _range(self, key: str, digest: str, start: int, length: int) -> bytes:
        if self.usable:
            try:
                data = self.replica.get_range(key, start, length)
            except NotFound:
                data = None
            except _READ_FAILURES as exc:
                self._down(exc)
                data = None
            if data is not None and (len(data) or not length):
                if self._caller_verifies:
                    self._count_unverified(digest, len(data))
                else:
                    self._count("from_replica", len(data))
                return data
            if self.usable:
                # Missing (or an empty object a cut upload left): the whole chunk comes through
                # once, verified; later ranges of it are read from the replica.
                whole = self._through(key, digest, None, repair=data is not None)
                return bytes(memoryview(whole)[start:start + length])
        data = self.origin.get_range(key, start, length)
        self._count("from_origin", len(data))
        return data

    # ---- the Store interface ---------------------------------------------------------------

    def get(self, key: str) -> bytes:
        digest = self._chunk_digest(key)
        if digest is None:
            return self.origin.get(key)
        return bytes(self._whole(key, digest, None))

    def get_into(self, key: str, buffer: bytearray) -> memoryview:
        digest = self._chunk_digest(key)
        if digest is None:
            return self.origin.get_into(key, buffer)
        data = self._whole(key, digest, buffer)
        return data if isinstance(data, memoryview) else memoryview(data)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        digest = self._chunk_digest(key)
        if digest is None:
            return self.origin.get_range(key, start, length)
        return self._range(key, digest, start, length)

    def get_range_into(self, key: str, start: int, buffer: bytearray | memoryview) -> memoryview:
        digest = self._chunk_digest(key)
        if digest is None:
            return self.origin.get_range_into(key, start, buffer)
        data = self._range(key, digest, start, len(buffer))
        view = memoryview(buffer)[:len(data)]
        view[:] = data
        return view

    def refetch_into(self, key: str, buffer: bytearray) -> memoryview:
        """A chunk whose bytes from this store did not match its digest, read again from the
        origin (verified) and written over the replica's bad copy.  The bad copy was counted
        as served from the replica; it is not, so it is taken back out of those counts."""
        digest = self._chunk_digest(key)
        if digest is None:
            return self.origin.get_into(key, buffer)
        self._uncount_unverified(digest)
        if not self.usable:
            got = self.origin.get_into(key, buffer)
            self._count("from_origin", len(got))
            return got
        data = self._through(key, digest, buffer, repair=True)
        return data if isinstance(data, memoryview) else memoryview(data)

    def close(self) -> None:
        """Nothing: both stores belong to whoever opened them (the Lake shares one replica
        connection pool between operations, each with its own ReplicaStore and stats)."""


class OfflineReplicaStore(ForwardingStore):
    """A replica read on its own, because the origin cannot be reached (`pull
    --offline-replica`): a chunk it lacks cannot be pulled through, and the error must say
    so -- the replica lacks it and the lake is unreachable (TransferError, exit 8) -- not
    "missing from the lake", which would send the operator after a lake that was never
    asked.  Everything else is the replica's, unchanged."""

    def __init__(self, replica: Store, *, name: str, chunk_digest: ChunkDigest,
                 origin_url: str, origin_error: str) -> None:
        self.replica = self.inner = replica  # reads are the replica's; so is the rest
        self.url = replica.url
        self.name = name
        self._chunk_digest = chunk_digest
        self._origin_url, self._origin_error = origin_url, origin_error

    def __repr__(self) -> str:
        return f"OfflineReplicaStore({self.replica!r})"

    def __getattr__(self, name: str) -> Any:
        if name in ("replica", "inner"):
            raise AttributeError(name)
        return getattr(self.replica, name)

    def _lacks(self, key: str) -> TransferError:
        return TransferError(f"chunk {key} is not in replica {self.name} ({self.replica.url}), "
                             f"and the lake {self._origin_url} cannot be reached "
                             f"({self._origin_error})",
                             hint="pull again once the lake is reachable, or pull a version "
                                  "the replica holds whole (ckptlake replicate copies one)")

    @contextlib.contextmanager
    def _chunk_read(self, key: str) -> Iterator[None]:
        try:
            yield
        except NotFound:
            if self._chunk_digest(key) is None:
                raise
            raise self._lacks(key) from None

    def get(self, key: str) -> bytes:
        with self._chunk_read(key):
            return self.replica.get(key)

    def get_into(self, key: str, buffer: bytearray) -> memoryview:
        with self._chunk_read(key):
            return self.replica.get_into(key, buffer)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        with self._chunk_read(key):
            return self.replica.get_range(key, start, length)

    def get_range_into(self, key: str, start: int, buffer: bytearray | memoryview) -> memoryview:
        with self._chunk_read(key):
            return self.replica.get_range_into(key, start, buffer)

    def close(self) -> None:
        """Nothing: the replica belongs to whoever opened it (the Lake)."""
