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
  a pull that finds it taken leaves the eviction to its holder instead of waiting for it (a
  `cache prune` or a pull stopped with Ctrl-Z may hold it indefinitely); a reader that
  already opened an evicted entry keeps reading it (POSIX unlink semantics), one that comes
  later sees a miss;
* anything but a regular file in an entry's place (a directory, a FIFO, a device, a socket)
  is dropped like a corrupt entry, without being read: opening a FIFO would block the pull.
  A symlink is followed: its target is hashed like any entry, so it can only serve the
  right bytes;
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
import re
import shutil
import stat
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator
from datetime import datetime, timezone

from ..errors import Interrupted, UsageError
from ..format.header import digest as _digest
from ..format.layout import HEADER_KEY, REPLICA_MARKER_KEY
from ..transfer.pool import stop_event

GiB = 2**30
DEFAULT_CACHE_SIZE = 20 * GiB
_TMP_MAX_AGE = 3600.0  # seconds: a temporary entry this old belongs to a process that died
# After an eviction the cache holds at most this fraction of its bound: evicting a little more
# than needed keeps a cache near its bound from rescanning on every insert.
_TRIM_TO = 0.9
# A handle counts its own writes; other processes' only a scan of the directory sees.  Scanned
# again once this handle has added this share of the bound since it last looked: N pulls at
# once then overshoot by about N x that share, where counting only their own writes let them
# hold N x the bound between them.
_RESCAN_SHARE = 0.1
# How long a pull waits for another one that is fetching the same chunk into the cache (a
# 1 GiB chunk at 50 MiB/s takes 20 s) before fetching it itself.
_FILL_WAIT = 120.0
# How long `cache prune` waits for another process that holds the eviction lock (a pull
# evicting takes well under a second; a holder stopped with Ctrl-Z never lets go).
_EVICT_WAIT = 30.0
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
        if (lake := _lake_holding(self.dir)) is not None:
            where = "is" if lake == self.dir else f"is inside {lake}, which is"
            raise UsageError(f"the chunk cache directory {self.dir} {where} a local lake (or "
                             "a replica): a cache there would write into it",
                             hint="give the cache a directory of its own (cache: dir: in "
                                  "ckptlake.yaml, $CKPTLAKE_CACHE or --dir)")
        self.max_size = max_size
        self._lock = threading.Lock()
        self._size: int | None = None  # this process's running estimate, scanned lazily
        self._unscanned = 0  # bytes this handle added since its estimate was last scanned
        self.dropped = 0  # entries found corrupt and deleted
        self.failure: str | None = None  # why writing was switched off, if it was
        self.failure_errno: int | None = None  # the OSError's errno behind `failure`, if any
        # Entries this handle's trims leave alone: a pull's chunks that were cached when it
        # began (its egress estimate counted them as free).  Its own downloads went over the
        # bound and evicted them, least recently used, before it read them: the pull paid for
        # them after all.  At most the cache's size, so the bound still holds but for them.
        self.protect: frozenset[str] = frozenset()

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
        the entry is larger); None if absent, or dropped as corrupt or as no regular file."""
        path = self.entry_path(algo, digest)
        try:
            # O_NONBLOCK: a FIFO in the entry's place would block the open until a writer came
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            # a socket, a link loop, a dangling link: never an entry; any other error, a miss
            if e.errno in (errno.ENXIO, errno.ELOOP) or (e.errno == errno.ENOENT
                                                         and os.path.islink(path)):
                self._drop(path)
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                os.close(fd)
                fd = -1
                self._drop(path)
                return None
            size = st.st_size
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
            return None  # an I/O error: a miss, not a verdict
        finally:
            if fd >= 0:
                os.close(fd)
        if got != size or _digest(algo, view) != digest:
            self._drop(path)
            return None
        with contextlib.suppress(OSError, NotImplementedError):
            # LRU: this entry was just used.  Its own time, as eviction reads it (lstat): not
            # the time of a file outside the cache an entry that is a symlink points at
            os.utime(path, follow_symlinks=False)
        return view

    def _drop(self, path: str) -> None:
        with contextlib.suppress(OSError):
            _remove(path)
        with self._lock:
            self.dropped += 1

    def put(self, algo: str, digest: str, data: memoryview | bytes) -> None:
        """Store verified bytes under their digest.  Never raises for the filesystem's sake:
        a failure switches writing off for this handle and is kept in `failure`."""
        if self.failure is not None or len(data) > self.max_size:
            return
        path = self.entry_path(algo, digest)
        if os.path.isfile(path):
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
            try:
                os.replace(tmp, path)
            except IsADirectoryError:  # a directory in the entry's place: it is not one
                _remove(path)
                os.replace(tmp, path)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            what = ("no space left on its device" if e.errno in (errno.ENOSPC, errno.EDQUOT)
                    else e.strerror or str(e))
            self._fail(f"could not write to the chunk cache {self.dir}: {what}", e.errno)
            return
        self._added(len(data))

    @contextlib.contextmanager
    def filling(self, algo: str, digest: str) -> Iterator[None]:
        """Hold the right to fetch and store this entry, so concurrent pulls (other processes,
        other threads) of the same chunk download it once: the others wait here, then find it
        in the cache.

        An flock on one of 4096 lock files (by the digest's first 3 hex digits: a collision
        only serialises two fetches).  Waiting is bounded by _FILL_WAIT, polled, so a stuck
        holder never hangs this pull; past it, the chunk is fetched anyway.  A worker of an
        interrupted pull (transfer/pool.py, `stop_event`) stops waiting at once and raises
        Interrupted, as throttle.py does: Ctrl-C must not sit out another process's fetch.
        Any problem with the lock files means no lock, never a failed pull.
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
                with contextlib.suppress(OSError):  # a filesystem without flock: no lock
                    _flock_polled(fd, _FILL_WAIT)  # False: waited long enough, fetch anyway
            yield
        finally:
            if fd is not None:
                os.close(fd)  # releases the lock

    def _fail(self, message: str, err: int | None = None) -> None:
        with self._lock:
            if self.failure is None:
                self.failure, self.failure_errno = message, err

    def _added(self, n: int) -> None:
        with self._lock:
            self._unscanned += n
            scan = self._size is None or self._unscanned > self.max_size * _RESCAN_SHARE
            if scan:
                self._unscanned = 0
            else:
                self._size += n  # type: ignore[operator]
                over = self._size > self.max_size
        if scan:
            # Outside the lock: the other download threads' puts need not wait for the
            # directory walk.  An entry renamed in during it may be counted again by its own
            # _added: the estimate runs high by a few chunks until the next scan, and a trim
            # (which counts afresh) starts early, never late.
            total = sum(e.size for e in self.entries())
            with self._lock:
                self._size = total
            over = total > self.max_size
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
        first; records with none of their chunks left are deleted.

        A chunk counts as cached only if its entry is at least the size the record gives it
        (a truncated entry is a miss: the pull drops it and downloads the chunk).  The record
        has the end of the last file read from each chunk, exact for a slice, a lower bound
        for a pack (a sharded merge may keep a pack longer than its references), so a slice
        entry that is too long is counted; reading it drops it."""
        present = {(e.algo, e.digest): e.size
                   for e in (self.entries() if entries is None else entries)}
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
                cached = sum(int(n) for d, n in chunks.items()
                             if present.get((algo, d), -1) >= int(n))
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
        return self._scan()[0]

    def _scan(self) -> tuple[list[CacheEntry], list[str]]:
        """(the entries, the paths of what sits where the cache's own layout puts an entry or
        a directory but cannot be one: a directory or FIFO named like an entry, a symlink in
        a hash's or fan's directory place).  A symlink named like an entry counts as an entry
        at its own size: deleting it frees no more.

        A name is an entry only if it is a lowercase hex digest (of its hash's length, for a
        hash this ckptlake knows) under its first two digits: a pull looks nothing else up, so
        anything else would be counted against the bound, and shown, but never used.  Only
        in a known hash's fan directory (`chunks/sha256/ab/`, the cache's own) is anything
        else a stray; what lies elsewhere (`chunks/<other>/...`, a local lake's `chunks/<2
        hex>/<digest>`, a `--dir` that is no cache at all) is neither, and no trim deletes it:
        one did, and a mistyped `cache prune --dir` removed a project's files at any depth."""
        found: list[CacheEntry] = []
        strays: list[str] = []
        root = os.path.join(self.dir, "chunks")

        def subdirs(parent: str, named: Callable[[str], bool]) -> list[str]:
            """Real directories only.  A symlink in a directory's place is a stray if it is
            named as the cache names that directory (its link removed, never followed):
            through `chunks/<algo>/zz -> /home/you`, eviction deleted the files of whatever
            it pointed at, and a cache is often shared."""
            out = []
            for name in _listdir(parent):
                path = os.path.join(parent, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    out.append(name)
                elif stat.S_ISLNK(st.st_mode) and named(name):
                    strays.append(path)
            return out

        def is_fan(name: str) -> bool:
            return len(name) == 2 and set(name) <= _HEX

        for algo in subdirs(root, _DIGEST_HEX.__contains__):
            if algo not in _DIGEST_HEX and not _algo_name(algo):
                continue  # not a hash's directory (a lake's `chunks/ab/`): not the cache's
            for fan in subdirs(os.path.join(root, algo), is_fan):
                if not is_fan(fan):
                    continue
                for name in _listdir(os.path.join(root, algo, fan)):
                    path = os.path.join(root, algo, fan, name)
                    if not _entry_name(algo, fan, name):
                        # In a known hash's fan directory, the cache's own, whatever is no
                        # entry goes; under a name a newer ckptlake may use, nothing does.
                        if algo in _DIGEST_HEX:
                            strays.append(path)
                        continue
                    try:
                        st = os.lstat(path)
                    except OSError:
                        continue
                    if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                        found.append(CacheEntry(path, algo, name, st.st_size, st.st_mtime))
                    else:
                        strays.append(path)  # a directory or FIFO in an entry's place
        found.sort(key=lambda e: (e.used, e.path))
        return found, strays

    def stats(self, entries: list[CacheEntry] | None = None) -> CacheStats:
        entries = self.entries() if entries is None else entries
        return CacheStats(dir=self.dir, max_size=self.max_size, entries=len(entries),
                          bytes=sum(e.size for e in entries),
                          oldest_used=entries[0].used if entries else None,
                          newest_used=max(e.used for e in entries) if entries else None)

    def holds_cache(self, *, strict: bool = False) -> bool:
        """Has a cache ever been made in `dir`?  One with none of the layout's names holds no
        entry to evict, and a trim must not leave a `.lock` in a directory that is no cache.
        `strict` (`cache --dir`, a user's typo to catch): by names only a cache makes
        (`chunks/` of a hash, the eviction lock, the fetch locks), not `tmp/` or `versions/`,
        which a project may hold; a trim still cleans a cache whose first pull died in
        `tmp/` before any chunk landed."""
        names = ["chunks/sha256", "chunks/blake3", ".lock", "locks"]
        if not strict:
            names += ["chunks", "tmp", "versions"]
        return any(os.path.lexists(os.path.join(self.dir, n)) for n in names)

    @contextlib.contextmanager
    def _evicting(self, wait: float, on_wait: Callable[[], None] | None = None
                  ) -> Iterator[bool]:
        """Hold the eviction lock; yields False if another process still held it after
        `wait` seconds."""
        os.makedirs(self.dir, exist_ok=True)
        fd = os.open(os.path.join(self.dir, ".lock"), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC,
                     0o644)
        try:
            yield _flock_polled(fd, wait, on_wait)
        finally:
            os.close(fd)

    def trim(self, max_size: int, *, dry_run: bool = False, wait: bool = False,
             on_wait: Callable[[], None] | None = None) -> PruneResult:
        """Delete least recently used entries until at most `max_size` bytes are left (0: all),
        and temporary files that a dead process left.

        If another process is evicting, a pull (wait False) leaves it to that one and deletes
        nothing; `cache prune` (wait True) waits up to _EVICT_WAIT for it, then fails.
        `on_wait` is called once if that wait begins: half a minute of silence looks like a
        hang, and the library never prints."""
        if dry_run or not self.holds_cache():  # a mistyped --dir is not created, nor
            return self._plan(max_size, dry_run=dry_run, delete=False)  # given a .lock
        try:
            with self._evicting(_EVICT_WAIT if wait else 0.0, on_wait) as held:
                if held:
                    return self._plan(max_size, dry_run=False, delete=True)
            if wait:
                self._fail(f"another process is evicting from the chunk cache {self.dir} "
                           f"(it holds {os.path.join(self.dir, '.lock')})", errno.EWOULDBLOCK)
        except OSError as e:
            self._fail(f"could not evict from the chunk cache {self.dir}: {e.strerror or e}",
                       e.errno)
        return PruneResult(self.dir, False, 0, 0, 0, 0)

    def _plan(self, max_size: int, *, dry_run: bool, delete: bool) -> PruneResult:
        """One entry that cannot be deleted is a failure noted, not the end of the trim: the
        others still make room."""
        entries, strays = self._scan()
        total = sum(e.size for e in entries)
        removed = removed_bytes = 0
        kept = 0  # bytes of entries that could not be deleted
        for e in entries:
            if total - removed_bytes - kept <= max_size:
                break
            if e.digest in self.protect:
                kept += e.size
                continue
            if delete:
                try:
                    os.unlink(e.path)
                except FileNotFoundError:
                    pass  # a pull dropped it meanwhile
                except OSError as err:
                    self._fail(f"could not evict from the chunk cache {self.dir}: "
                               f"{err.strerror or err}", err.errno)
                    kept += e.size
                    continue
            removed += 1
            removed_bytes += e.size
        if delete:
            for path in strays:  # never an entry: a pull would drop it when it looked
                try:
                    _remove(path)
                except OSError as err:
                    self._fail(f"could not evict from the chunk cache {self.dir}: "
                               f"{err.strerror or err}", err.errno)
            cutoff = time.time() - _TMP_MAX_AGE
            tmp_dir = os.path.join(self.dir, "tmp")
            # Only a real directory (a link there leads elsewhere: another user's files, in
            # a shared cache), opened once without following a link and then used by its
            # descriptor, and only files named as put() names them, as for the strays.
            with contextlib.suppress(OSError):
                dfd = os.open(tmp_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                              | os.O_CLOEXEC)
                try:
                    for name in sorted(os.listdir(dfd)):
                        with contextlib.suppress(OSError):
                            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                            if _TEMP_NAME.fullmatch(name) and stat.S_ISREG(st.st_mode) \
                                    and st.st_mtime < cutoff:
                                os.unlink(name, dir_fd=dfd)
                finally:
                    os.close(dfd)
            with self._lock:
                self._size, self._unscanned = total - removed_bytes, 0
        return PruneResult(self.dir, dry_run, removed, removed_bytes, len(entries) - removed,
                           total - removed_bytes)


# hex digits of a digest, per hash (format/header.py SUPPORTED_HASHES); a hash not listed
# here (a newer ckptlake's, sharing the cache) is checked for hex only
_DIGEST_HEX = {"sha256": 64, "blake3": 64}
_HEX = frozenset("0123456789abcdef")


# put()'s temporary names: <16 hex digits of the digest>.<pid>.<thread id>
_TEMP_NAME = re.compile(r"[0-9a-f]{16}\.[0-9]+\.[0-9]+")


def _lake_holding(directory: str) -> str | None:
    """The local lake (or replica) `directory` is, or lies inside: a root holding a lake
    header or a replica marker that reads as one (a file of that name with other content, a
    saved `--json` output say, is no lake).  Walked as written and as resolved: a link to a
    directory inside a lake leads into it too."""
    for start in dict.fromkeys((directory, os.path.realpath(directory))):
        path = start
        while True:
            if _lake_mark(path):
                return path
            parent = os.path.dirname(path)
            if parent == path:
                break
            path = parent
    return None


def _lake_mark(path: str) -> bool:
    for mark, key in ((HEADER_KEY, "ckptlake_lake"), (REPLICA_MARKER_KEY, "origin")):
        try:
            # O_NONBLOCK, then fstat: a FIFO put there (even after a check) must not hang
            fd = os.open(os.path.join(path, mark), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            doc = json.loads(os.read(fd, 1 << 20))
        except (OSError, ValueError, RecursionError):
            continue
        finally:
            os.close(fd)
        if isinstance(doc, dict) and key in doc:
            return True
    return False


def _algo_name(name: str) -> bool:
    """A hash name a newer ckptlake may use (lowercase letters and digits, starting with a
    letter): never a lake's 2-hex fan directory."""
    return 3 <= len(name) <= 16 and name[0].isalpha() and name.isascii() and name.isalnum() \
        and name.islower()


def _entry_name(algo: str, fan: str, name: str) -> bool:
    """Whether `name` under chunks/<algo>/<fan>/ is where a pull would look for a chunk."""
    want = _DIGEST_HEX.get(algo)
    return (len(name) == want if want is not None else len(name) > 2) \
        and name[:2] == fan and set(name) <= _HEX


def _flock_polled(fd: int, wait: float, on_wait: Callable[[], None] | None = None) -> bool:
    """Take an exclusive flock on `fd`, polling for up to `wait` seconds: whether it is held.

    Polled, never a blocking flock: a worker thread blocked in flock() would keep a pull alive
    past Ctrl-C for as long as another process holds the lock.  In an interrupted pull's worker
    (transfer/pool.py) it raises Interrupted at once.  OSError for an error other than
    "taken" (a filesystem without flock).  `on_wait`: called once, when the lock is found
    taken and there is time to wait for it."""
    deadline = time.monotonic() + wait
    delay = 0.002
    stop = stop_event()
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            if on_wait is not None:
                on_wait()
                on_wait = None
        if stop is None:
            time.sleep(delay)
        elif stop.wait(delay):
            raise Interrupted("interrupted while waiting for a lock of the chunk cache")
        delay = min(delay * 2, 0.05)


def _remove(path: str) -> None:
    """Delete what is at `path`, whatever it is (a directory too; a symlink itself, never
    its target).  Raises OSError."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except (IsADirectoryError, PermissionError):
        # unlink() of a directory: EISDIR on Linux, EPERM on macOS
        if not os.path.isdir(path) or os.path.islink(path):
            raise
        shutil.rmtree(path)


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
