"""The local chunk cache: many pulls on one machine fetch a chunk from the lake once.

Opt-in (`cache:` in ckptlake.yaml, `$CKPTLAKE_CACHE`, `ckptlake.open(cache=...)`).  Layout:

    <dir>/chunks/<hash algorithm>/<first 2 hex digits>/<digest>   one file per chunk object
    <dir>/tmp/                                                    entries being written
    <dir>/.lock                                                   flock held while evicting
    <dir>/locks/<algo>-<3 hex>                                    flock held while fetching
    <dir>/versions/<id>.json                                      versions pulled through it

Why content-addressed by digest and not per lake: a digest names its bytes, so one cache serves
every lake (the same base model pulled from two buckets is cached once), and nothing in it can
be stale.  Why it is safe without trusting the files:

* every entry is hashed when read; one whose bytes do not match its name (corrupt, truncated,
  tampered with) is deleted and reported as a miss, so the pull downloads the chunk instead;
* an entry appears with one `rename` of a fully written temporary file, so concurrent
  processes filling the same entry each write their own copy and the last rename wins (both
  hold the same bytes); a reader opens either the old or the new file, never a partial one;
* eviction (least recently used first: a hit touches the entry's mtime, since atime is often
  off) runs under an exclusive flock so two evictors do not both delete down to the bound;
  a reader that already opened an evicted entry keeps reading it (POSIX unlink semantics),
  one that comes later sees a miss;
* a pull that misses takes a per-chunk flock before downloading and looks again once it holds
  it, so jobs on one node that pull the same version at the same time fetch each chunk once;
* a failed cache write (full disk, read-only directory) never fails the pull: the cache is
  switched off for the rest of that pull and the pull reports a warning.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Iterator
from datetime import datetime, timezone

from ..errors import UsageError
from ..format.header import digest as _digest

GiB = 2**30
DEFAULT_CACHE_SIZE = 20 * GiB
_TMP_MAX_AGE = 3600.0  # seconds: a temporary entry this old belongs to a process that died
# After an eviction the cache holds at most this fraction of its bound: evicting a little more
# than needed keeps a cache near its bound from rescanning on every insert.
_TRIM_TO = 0.9
# How long a pull waits for another one that is fetching the same chunk into the cache (a
# 1 GiB chunk at 50 MiB/s takes 20 s) before fetching it itself.
_FILL_WAIT = 120.0
_MAX_ENTRY = 2 * GiB  # above the largest chunk size (1 GiB, policy/config.py)


@dataclass(frozen=True)
class CacheEntry:
    path: str
    algo: str
    digest: str
    size: int
    used: float  # mtime: the last time it was written or read


@dataclass(frozen=True)
class CacheStats:
    dir: str
    max_size: int
    entries: int
    bytes: int
    oldest_used: float | None
    newest_used: float | None

    def to_dict(self) -> dict:
        return {"dir": self.dir, "max_size": self.max_size, "entries": self.entries,
                "bytes": self.bytes, "oldest_used": _iso(self.oldest_used),
                "newest_used": _iso(self.newest_used)}


@dataclass(frozen=True)
class PruneResult:
    dir: str
    dry_run: bool
    entries_removed: int
    bytes_removed: int
    entries_left: int
    bytes_left: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class ChunkCache:
    """One cache directory with a size bound.  Safe to share between threads and processes."""

    def __init__(self, directory: str | os.PathLike[str], max_size: int = DEFAULT_CACHE_SIZE
                 ) -> None:
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size <= 0:
            raise UsageError(f"cache size must be a positive number of bytes, got {max_size!r}")
        self.dir = os.path.abspath(os.path.expanduser(os.fspath(directory)))
        self.max_size = max_size
        self._lock = threading.Lock()
        self._size: int | None = None  # this process's running estimate, scanned lazily
        self.dropped = 0  # entries found corrupt and deleted
        self.failure: str | None = None  # why writing was switched off, if it was

    def __repr__(self) -> str:
        return f"ChunkCache({self.dir!r}, max_size={self.max_size})"

    # -- one pull's view ---------------------------------------------------------------------

    def session(self) -> "ChunkCache":
        """A fresh handle on the same directory for one pull: its own counters and its own
        write switch, so one pull's full disk does not turn the cache off for the next."""
        return ChunkCache(self.dir, self.max_size)

    def entry_path(self, algo: str, digest: str) -> str:
        return os.path.join(self.dir, "chunks", algo, digest[:2], digest)

    def get_into(self, algo: str, digest: str, buffer: "bytearray | memoryview | object"
                 ) -> memoryview | None:
        """The entry's bytes, verified against `digest`, read into `buffer` (a new buffer if
        the entry is larger); None if absent or dropped as corrupt."""
        path = self.entry_path(algo, digest)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            size = os.fstat(fd).st_size
            target = memoryview(buffer)  # type: ignore[arg-type]
            if size > len(target) and size <= _MAX_ENTRY:
                target = memoryview(bytearray(size))
            view = target[:size]
            got = 0
            while got < len(view):
                n = os.preadv(fd, [view[got:]], got)
                if n == 0:
                    break
                got += n
            view = view[:got]
        except OSError:
            return None  # a directory in the way, an I/O error: a miss, not a verdict
        finally:
            os.close(fd)
        if got != size or _digest(algo, view) != digest:
            self._drop(path)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # LRU: this entry was just used
        return view

    def _drop(self, path: str) -> None:
        with contextlib.suppress(OSError):
            os.unlink(path)
        with self._lock:
            self.dropped += 1

    def put(self, algo: str, digest: str, data: memoryview | bytes) -> None:
        """Store verified bytes under their digest.  Never raises for the filesystem's sake:
        a failure switches writing off for this handle and is kept in `failure`."""
        if self.failure is not None or len(data) > self.max_size:
            return
        path = self.entry_path(algo, digest)
        if os.path.exists(path):
            return  # another pull cached it meanwhile (get_into verifies it when read)
        tmp_dir = os.path.join(self.dir, "tmp")
        tmp = os.path.join(tmp_dir, f"{digest[:16]}.{os.getpid()}.{threading.get_ident()}")
        try:
            try:
                fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            except FileNotFoundError:
                os.makedirs(tmp_dir, exist_ok=True)
                fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                _write_all(fd, memoryview(data))
            finally:
                os.close(fd)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.replace(tmp, path)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            with self._lock:
                if self.failure is None:
                    what = ("no space left on its device" if e.errno in (errno.ENOSPC,
                                                                         errno.EDQUOT)
                            else e.strerror or str(e))
                    self.failure = f"could not write to the chunk cache {self.dir}: {what}"
            return
        self._added(len(data))

    @contextlib.contextmanager
    def filling(self, algo: str, digest: str) -> Iterator[None]:
        """Hold the right to fetch and store this entry, so concurrent pulls (other processes,
        other threads) of the same chunk download it once: the others wait here, then find it
        in the cache.

        An flock on one of 4096 lock files (by the digest's first 3 hex digits: a collision
        only serialises two fetches).  Waiting is bounded by _FILL_WAIT, polled, so a stuck
        holder or Ctrl-C never hangs this pull; past it, the chunk is fetched anyway.  Any
        problem with the lock files means no lock, never a failed pull.
        """
        fd = None
        if self.failure is None:
            lock = os.path.join(self.dir, "locks", f"{algo}-{digest[:3]}")
            try:
                try:
                    fd = os.open(lock, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o644)
                except FileNotFoundError:
                    os.makedirs(os.path.dirname(lock), exist_ok=True)
                    fd = os.open(lock, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o644)
            except OSError:
                fd = None
        try:
            if fd is not None:
                deadline = time.monotonic() + _FILL_WAIT
                delay = 0.002
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() >= deadline:
                            break
                        time.sleep(delay)
                        delay = min(delay * 2, 0.05)
                    except OSError:
                        break
            yield
        finally:
            if fd is not None:
                os.close(fd)  # releases the lock

    def _added(self, n: int) -> None:
        with self._lock:
            if self._size is None:
                self._size = sum(e.size for e in self.entries())
            else:
                self._size += n
            over = self._size > self.max_size
        if over:
            self.trim(int(self.max_size * _TRIM_TO))

    # -- which versions the chunks belong to (for `cache ls`, like the HF cache's snapshots) --

    def record_version(self, lake: str, artifact: str, version: int, algo: str,
                       chunks: dict[str, int]) -> None:
        """Note that a pull of this version went through the cache (`chunks`: digest -> object
        size), so `cache ls` can say how much of which version is cached.  Best effort: the
        chunks are the cache, this is only its table of contents."""
        ident = hashlib.sha256(f"{lake}\0{artifact}\0{version}".encode()).hexdigest()[:24]
        path = os.path.join(self.dir, "versions", f"{ident}.json")
        doc = {"lake": lake, "artifact": artifact, "version": version, "hash": algo,
               "pulled": _iso(time.time()), "chunks": chunks}
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(tmp, "w") as fh:
                json.dump(doc, fh)
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def versions(self, entries: list[CacheEntry] | None = None) -> list[dict]:
        """Every recorded version with the bytes of its chunks still cached, newest pull
        first; records with none of their chunks left are deleted."""
        present = {(e.algo, e.digest) for e in (self.entries() if entries is None else entries)}
        root = os.path.join(self.dir, "versions")
        out = []
        for name in _listdir(root):
            if not name.endswith(".json"):
                continue
            path = os.path.join(root, name)
            try:
                with open(path) as fh:
                    doc = json.load(fh)
                chunks = doc["chunks"]
                algo = doc["hash"]
                total = sum(int(n) for n in chunks.values())
                cached = sum(int(n) for d, n in chunks.items() if (algo, d) in present)
                row = {"lake": str(doc["lake"]), "artifact": str(doc["artifact"]),
                       "version": int(doc["version"]), "pulled": str(doc["pulled"]),
                       "chunks": len(chunks), "bytes": total, "bytes_cached": cached}
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                continue  # not a record of ours, or being replaced
            if cached == 0 and total > 0:
                with contextlib.suppress(OSError):
                    os.unlink(path)
                continue
            out.append(row)
        out.sort(key=lambda r: (r["pulled"], r["artifact"], r["version"]), reverse=True)
        return out

    # -- looking and evicting ----------------------------------------------------------------

    def entries(self) -> list[CacheEntry]:
        """Every entry, least recently used first."""
        found: list[CacheEntry] = []
        root = os.path.join(self.dir, "chunks")
        for algo in _listdir(root):
            for fan in _listdir(os.path.join(root, algo)):
                for name in _listdir(os.path.join(root, algo, fan)):
                    path = os.path.join(root, algo, fan, name)
                    try:
                        st = os.lstat(path)
                    except OSError:
                        continue
                    found.append(CacheEntry(path, algo, name, st.st_size, st.st_mtime))
        found.sort(key=lambda e: (e.used, e.path))
        return found

    def stats(self, entries: list[CacheEntry] | None = None) -> CacheStats:
        entries = self.entries() if entries is None else entries
        return CacheStats(dir=self.dir, max_size=self.max_size, entries=len(entries),
                          bytes=sum(e.size for e in entries),
                          oldest_used=entries[0].used if entries else None,
                          newest_used=max(e.used for e in entries) if entries else None)

    @contextlib.contextmanager
    def _evicting(self):
        os.makedirs(self.dir, exist_ok=True)
        fd = os.open(os.path.join(self.dir, ".lock"), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC,
                     0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def trim(self, max_size: int, *, dry_run: bool = False) -> PruneResult:
        """Delete least recently used entries until at most `max_size` bytes are left (0: all),
        and temporary files that a dead process left."""
        if dry_run or not os.path.isdir(self.dir):  # a mistyped --dir is not created
            return self._plan(max_size, dry_run=dry_run, delete=False)
        try:
            with self._evicting():
                return self._plan(max_size, dry_run=False, delete=True)
        except OSError as e:
            with self._lock:
                if self.failure is None:
                    self.failure = (f"could not evict from the chunk cache {self.dir}: "
                                    f"{e.strerror or e}")
            return PruneResult(self.dir, False, 0, 0, 0, 0)

    def _plan(self, max_size: int, *, dry_run: bool, delete: bool) -> PruneResult:
        entries = self.entries()
        total = sum(e.size for e in entries)
        removed = removed_bytes = 0
        for e in entries:
            if total - removed_bytes <= max_size:
                break
            if delete:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(e.path)
            removed += 1
            removed_bytes += e.size
        if delete:
            cutoff = time.time() - _TMP_MAX_AGE
            tmp_dir = os.path.join(self.dir, "tmp")
            for name in _listdir(tmp_dir):
                path = os.path.join(tmp_dir, name)
                with contextlib.suppress(OSError):
                    if os.lstat(path).st_mtime < cutoff:
                        os.unlink(path)
            with self._lock:
                self._size = total - removed_bytes
        return PruneResult(self.dir, dry_run, removed, removed_bytes, len(entries) - removed,
                           total - removed_bytes)


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        view = view[os.write(fd, view):]


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


def _listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except (FileNotFoundError, NotADirectoryError):
        return []
