"""A lake in a local (or network-mounted) directory, with the same semantics as S3.

Why bother matching S3 exactly: the lake's correctness argument (immutable chunks, version
files claimed with create-if-absent, aliases moved with compare-and-swap) must hold on every
backend, so a lake tested on a laptop behaves the same in a bucket.  The mapping:

* atomic replace  -> write a temp file in the target directory, fsync, ``os.replace``;
* If-None-Match   -> ``os.link(tmp, final)``, which fails atomically if ``final`` exists;
* If-Match (CAS)  -> check-then-replace under an ``fcntl.flock`` on a per-key-stripe lock file,
  which plain puts and deletes also take so they cannot slip between the check and the replace;
* ETag            -> derived from (inode, mtime_ns, size); every write gets a fresh inode (the temp
  file) and an mtime we set explicitly from the nanosecond clock, made later than the replaced
  file's under the key's lock: freed inodes are reused at once, so only a strictly increasing
  mtime makes a replacement always change it, even where timestamps are whole seconds.

One difference cannot be hidden: a directory tree cannot hold both ``a`` and ``a/b``.  Writing
such a pair raises UsageError rather than silently losing one of them.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import secrets
import re
import shlex
import shutil
import stat as stat_mode
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from ..errors import (AccessDenied, CkptlakeError, NoRoom, NotFound, PreconditionFailed,
                      TransferError, TransientError, UsageError)
from .base import MultipartUpload, ObjectInfo, Store, part_numbers

LOCK_DIR = ".ckptlake-locks"
MULTIPART_DIR = ".ckptlake-multipart"
TMP_PREFIX = ".tmp-"
_RESERVED_ROOT_NAMES = frozenset({LOCK_DIR, MULTIPART_DIR})
# Few enough files to never clutter the lake, enough that unrelated keys rarely share a lock.
_LOCK_STRIPES = 256
# S3's own limits, enforced here too so code that works locally also works against a bucket.
MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PART_NUMBER = 10_000
_MKDIR_ATTEMPTS = 5
_TRANSIENT_ERRNOS = frozenset({errno.EAGAIN, errno.EMFILE, errno.ENFILE, errno.EBUSY,
                               errno.ESTALE, errno.ETIMEDOUT, errno.EINTR})
# A writer killed mid-write leaves its temp file (or multipart staging directory) behind, never
# listed.  list_multipart reports those as uploads so that gc's abort of stale uploads removes
# them (and verify and du count them).  Only once this old, whatever gc's grace period: a live
# writer keeps its temp file's mtime fresh, so a younger one may still be in use.
STALE_TEMP_SECONDS = 3600
# gc and verify take only uploads of lake keys; a temp file's final key is unknown (often a
# chunk whose name is its digest), so they are filed under the one key every lake has.
TEMP_UPLOAD_KEY = "ckptlake.json"


def validate_key(key: str) -> str:
    """Reject keys that would escape the root or mean different things on different backends.

    S3 would accept '//' or '..', but a directory cannot represent them faithfully, and a lake
    must be movable between backends, so every backend refuses them.
    """
    if not isinstance(key, str) or not key:
        raise UsageError(f"invalid object key {key!r}: must be a non-empty string")
    if "\x00" in key:
        raise UsageError(f"invalid object key {key!r}: contains a NUL character")
    if key.startswith("/"):
        raise UsageError(f"invalid object key {key!r}: must not start with '/'")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise UsageError(f"invalid object key {key!r}: empty, '.' or '..' path segment")
    return key


def _validate_local_key(key: str) -> str:
    """Also refuse the names this backend keeps for itself (they are never listed).

    Only the exact temp pattern is ours: `team/.tmp-run` is a valid artifact (an S3 lake
    synced to a directory may hold one), and a key refused or hidden here for a mere `.tmp-`
    prefix would be a version whose manifest stays while gc sweeps its unlisted chunks.
    (ckptlake before 2026-12-07 hid every `.tmp-` name: docs/format.md, Residual risks.)
    And only as a key's last segment: our temp files are files, so a directory of that form
    (an S3 artifact segment `a/.tmp-1-<hex>`) is listed like any other and its keys are fine."""
    validate_key(key)
    segments = key.split("/")
    if segments[0] in _RESERVED_ROOT_NAMES or _TEMP_NAME.fullmatch(segments[-1]):
        raise UsageError(f"invalid object key {key!r}: '{LOCK_DIR}', '{MULTIPART_DIR}' and "
                         f"'{TMP_PREFIX}<pid>-<hex>' names are reserved by local lakes")
    return key


def _validate_prefix(prefix: str) -> str:
    """A prefix may end mid-segment, but its complete segments must be valid key segments."""
    if not isinstance(prefix, str) or "\x00" in prefix or prefix.startswith("/"):
        raise UsageError(f"invalid prefix {prefix!r}")
    for segment in prefix.split("/")[:-1]:
        if segment in ("", ".", ".."):
            raise UsageError(f"invalid prefix {prefix!r}: empty, '.' or '..' path segment")
    return prefix


def _quoted_etag(st: os.stat_result) -> str:
    return f'"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"'


def _modified(st: os.stat_result) -> datetime:
    return datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=timezone.utc)


def _map_os_error(exc: OSError, what: str) -> CkptlakeError:
    """Translate an OSError on `what` (a URL) into the store's error vocabulary."""
    cause = exc.strerror or type(exc).__name__
    if exc.errno == errno.ENOENT:
        return NotFound(f"{what}: not found")
    # (the hints name no lake: a replica's store says the same, and replicate passes them on)
    if exc.errno == errno.EROFS:
        return AccessDenied(f"{what}: {cause}", hint="its file system is mounted read-only")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return AccessDenied(f"{what}: {cause}", hint="check the directory's permissions")
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        # no retry helps, and the README's exit 2: "a destination that cannot take the
        # version (no space left...)", as a pull's full destination (it was exit 8, storage
        # failing)
        return NoRoom(f"{what}: {cause}",
                      hint="free some space on the device holding it; what was stored already "
                           "is not sent again")
    if exc.errno == errno.ELOOP:
        return NoRoom(f"{what}: {cause}",
                      hint="a symbolic link on the way to it leads back to itself: fix the link")
    if exc.errno in _TRANSIENT_ERRNOS:
        return TransientError(f"{what}: {cause}")
    return TransferError(f"{what}: {cause}")


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data).cast("B")
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(path: Path) -> None:
    """Make a rename durable; best effort because some file systems refuse fsync on dirs."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _make_dirs(directory: Path) -> None:
    """mkdir -p, fsyncing the parent of each directory made: a new directory's entry in its
    parent is not durable until then, and a chunk written into it would vanish with it on a
    power loss while a committed manifest names it.  A directory a concurrent writer made is
    synced too, since that writer may not have done it yet when our write returns.

    A FileExistsError for a directory that is gone by the time we look means another writer
    made it and a deleter (or gc's temp cleanup) pruned it at once: the same race as a pruned
    ancestor, so FileNotFoundError (retried by _write_temp), never the key-clash UsageError."""
    missing = []
    p = directory
    while not p.is_dir() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            if not d.is_dir():
                if not os.path.lexists(d):
                    raise FileNotFoundError(errno.ENOENT, "pruned by a concurrent delete",
                                            str(d)) from None
                raise
        _fsync_dir(d.parent)


def _mtime_after(tmp: Path, st: os.stat_result, previous_ns: int) -> os.stat_result:
    """Give the temp file about to replace a key an mtime later than the replaced file's.

    The ETag is (inode, mtime, size), and a freed inode is reused at once: where the file
    system keeps whole seconds (ext3, FAT, HFS+, some NFS; ext4 with 128-byte inodes), two
    same-size rewrites within a second could give back the very ETag a reader saw before
    both, and its stale compare-and-swap would succeed.  Called under the key's lock, so each
    write's mtime strictly exceeds the last; the step grows for 2-second (FAT) granularity."""
    if st.st_mtime_ns > previous_ns:
        return st
    fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
    try:
        for step in (1, 2, 4):
            mtime = previous_ns + step * 1_000_000_000
            os.utime(fd, ns=(mtime, mtime))
            st = os.fstat(fd)
            if st.st_mtime_ns > previous_ns:
                break
        os.fsync(fd)
    finally:
        os.close(fd)
    return st


def _pread_into(fd: int, view: memoryview, offset: int) -> memoryview:
    """Fill `view` from the file at `offset`, straight into the caller's buffer; a view of what
    was read (shorter only at end of file)."""
    got = 0
    while got < len(view):
        n = os.preadv(fd, [view[got:]], offset + got)
        if not n:
            break
        got += n
    return view[:got]


class LocalStore(Store):
    """Store over a directory; safe for concurrent threads and processes on one host.

    Cross-host use over NFS is only as safe as the mount's support for flock, link and rename.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(os.path.abspath(os.path.expanduser(str(root))))
        self.url = "file://" + self.root.as_posix()

    def __repr__(self) -> str:
        return f"LocalStore({self.url!r})"

    # ---- paths and errors ------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*_validate_local_key(key).split("/"))

    def _describe(self, key: str) -> str:
        return f"{self.url}/{key}"

    @contextlib.contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        try:
            yield
        except (IsADirectoryError, NotADirectoryError):
            # Reading 'a' while 'a/' is a directory (or 'a/b' while 'a' is a file): on S3 the
            # object simply does not exist.
            raise NotFound(f"{self._describe(key)}: not found") from None
        except OSError as exc:
            raise _map_os_error(exc, self._describe(key)) from exc

    def check_writable(self) -> None:
        if (blocker := self.root_blocker()) is not None:
            what, hint = blocker
            raise UsageError(f"the lake location {self.url} cannot be a directory: {what}",
                             hint=hint)

    @contextlib.contextmanager
    def _write_errors(self, key: str) -> Iterator[None]:
        try:
            yield
        except (IsADirectoryError, NotADirectoryError, FileExistsError) as exc:
            self.check_writable()
            raise UsageError(
                f"{self._describe(key)}: cannot be written: {exc.strerror}",
                hint="a local lake cannot hold both 'a' and 'a/...' keys") from exc
        except OSError as exc:
            raise _map_os_error(exc, self._describe(key)) from exc

    def root_blocker(self) -> tuple[str, str] | None:
        """(what is in the way, what to do) when the lake's root, or its nearest existing
        ancestor, is no directory (`/x is a file`): then no key can be written, and the
        key-clash message would mislead.  A link to nowhere (an unmounted volume's path) is
        said as such."""
        p = self.root
        while not os.path.lexists(p) and p != p.parent:
            p = p.parent
        if os.path.isdir(p):
            return None
        if os.path.islink(p):
            try:
                os.stat(p)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    return (f"{p} is a loop of symbolic links",
                            "fix the links so that they lead to a directory")
                # the end of the chain, resolved: what is missing (an unmounted volume's path)
                return (f"{p} is a symbolic link to {os.path.realpath(p)}, which does not "
                        "exist", "mount or create the link's target, or point the link "
                                 "elsewhere")
        return f"{p} is a file, not a directory", "a local lake is a directory (file:///path)"

    # ---- locking ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        """Serialise mutations of `key` across threads and processes.

        A fresh open file description per acquisition: flock on a shared fd would not exclude
        other threads of this process.
        """
        stripe = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=2).digest(), "big")
        lock_dir = self.root / LOCK_DIR
        lock_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_dir / f"{stripe % _LOCK_STRIPES:03d}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    # ---- temp files ------------------------------------------------------------------------

    def _check_root_can_be_made(self) -> None:
        """A missing lake directory whose parent is there yet cannot be made (ENOENT: /proc,
        some FUSE mounts) is no race: deleters prune only inside the lake.  It was retried as
        "removed by concurrent deletes" five times over and ended as exit 8."""
        if self.root.is_dir():
            return
        p = self.root
        while not p.is_dir() and p != p.parent:
            p = p.parent
        try:
            (p / self.root.relative_to(p).parts[0]).mkdir()
        except FileNotFoundError:
            raise UsageError(f"cannot create the lake directory {self.root}: the file system "
                             f"at {p} does not allow it",
                             hint="put the lake on a regular file system") from None
        except OSError:
            return  # made meanwhile, or another failure the write itself reports

    def _write_temp(self, directory: Path, chunks: Iterable[bytes | bytearray | memoryview],
                    *, make_dirs: bool = True) -> tuple[Path, os.stat_result]:
        """Durably write a temp file in `directory`; returns its path and final stat.

        The parent is (re)created in a loop because a concurrent delete may prune it as empty
        between our mkdir and our open, or prune an ancestor while _make_dirs creates what
        is below it (its mkdir then fails with ENOENT: two DCP ranks' pins on one host,
        one deleting its own as the other writes, failed a save that way).  Without
        make_dirs a missing directory is FileNotFoundError at once: a multipart upload's
        directory that is gone was aborted or completed, and recreating it would leak it.
        """
        for attempt in range(_MKDIR_ATTEMPTS):
            tmp = directory / f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}"
            try:
                if make_dirs:
                    _make_dirs(directory)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
                break
            except FileNotFoundError:
                if not make_dirs:
                    raise
                self._check_root_can_be_made()
                if attempt == _MKDIR_ATTEMPTS - 1:
                    # a race, not a missing key: the retry layer tries the write again
                    raise TransientError(f"{directory}: removed by concurrent deletes (pruning "
                                         f"emptied directories) {_MKDIR_ATTEMPTS} times while "
                                         "it was being created") from None
        try:
            for chunk in chunks:
                _write_all(fd, chunk)
            now = time.time_ns()
            os.utime(fd, ns=(now, now))  # precise mtime: part of the ETag, see module docstring
            os.fsync(fd)
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        os.close(fd)
        return tmp, st

    def _place(self, tmp: Path, st: os.stat_result, final: Path, key: str, *,
               if_none_match: bool = False, if_match: str | None = None) -> os.stat_result:
        """Move a finished temp file (whose stat is `st`) to `final` with the requested
        condition; always consumes tmp.  Returns the placed file's stat: its ETag's source."""
        try:
            if if_none_match:
                self._link_new(tmp, final, key)
            else:
                with self._locked(key):
                    try:
                        current: os.stat_result | None = os.stat(final)
                    except (FileNotFoundError, NotADirectoryError):
                        current = None
                    if if_match is not None:
                        self._check_etag(current, key, if_match)
                    if current is not None and stat_mode.S_ISREG(current.st_mode):
                        st = _mtime_after(tmp, st, current.st_mtime_ns)
                    os.replace(tmp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        _fsync_dir(final.parent)
        return st

    def _link_new(self, tmp: Path, final: Path, key: str) -> None:
        try:
            os.link(tmp, final)
        except FileExistsError:
            if final.is_dir():  # not an existing object: a directory of other keys is in the way
                raise
            raise PreconditionFailed(f"{self._describe(key)}: already exists") from None
        except OSError as exc:
            # We just created tmp in this directory, so EPERM here means "no hard links on
            # this file system" (FAT, some FUSE/SMB mounts), not a permission problem.
            if exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise TransferError(
                    f"{self._describe(key)}: create-if-absent needs hard links, which this file "
                    f"system refuses ({exc.strerror})",
                    hint="put the lake on a local POSIX file system (ext4, xfs, apfs, ...)"
                ) from exc
            raise

    def _check_etag(self, st: os.stat_result | None, key: str, expected: str) -> None:
        if st is None:
            raise PreconditionFailed(f"{self._describe(key)}: does not exist "
                                     f"(expected ETag {expected})")
        if _quoted_etag(st) != expected:
            raise PreconditionFailed(f"{self._describe(key)}: changed "
                                     f"(expected ETag {expected}, found {_quoted_etag(st)})")

    # ---- reads -----------------------------------------------------------------------------

    def get(self, key: str) -> bytes:
        return self.get_with_etag(key)[0]

    def _open_object(self, key: str, path: Path) -> int:
        """A read-only descriptor of the regular file at `path`; NotFound for anything else,
        as `stat` and the listings take it.  Opened non-blocking: a FIFO planted at a key
        (by whoever can write a shared lake directory) blocked the open for ever, and a pull
        waiting on it ignored SIGTERM and Ctrl-C; a device (/dev/zero) read without end."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
        except OSError as exc:  # a socket is refused by open itself (ENXIO)
            if exc.errno in (errno.ENXIO, errno.EOPNOTSUPP):
                raise NotFound(f"{self._describe(key)}: not found (not a regular file)"
                               ) from None
            raise
        if not stat_mode.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise NotFound(f"{self._describe(key)}: not found (not a regular file)")
        return fd

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        path = self._path(key)
        with self._errors(key):
            with os.fdopen(self._open_object(key, path), "rb") as f:
                # fstat of the open file: the ETag belongs to exactly the bytes we read, even if
                # the key is replaced meanwhile (replacement swaps inodes, ours stays intact).
                st = os.fstat(f.fileno())
                return f.read(), _quoted_etag(st)

    def get_into(self, key: str, buffer: bytearray) -> memoryview:
        path = self._path(key)
        with self._errors(key):
            fd = self._open_object(key, path)
            try:
                size = os.fstat(fd).st_size
                if size > len(buffer):
                    return memoryview(self.get(key))
                return _pread_into(fd, memoryview(buffer)[:size], 0)
            finally:
                os.close(fd)

    def get_range_into(self, key: str, start: int, buffer: bytearray | memoryview) -> memoryview:
        if start < 0:
            raise UsageError(f"invalid range start={start} for {key!r}")
        path = self._path(key)
        with self._errors(key):
            fd = self._open_object(key, path)
            try:
                return _pread_into(fd, memoryview(buffer), start)
            finally:
                os.close(fd)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        if start < 0 or length < 0:
            raise UsageError(f"invalid range start={start} length={length} for {key!r}")
        path = self._path(key)
        with self._errors(key):
            fd = self._open_object(key, path)
            try:
                parts: list[bytes] = []
                got = 0
                while got < length:
                    chunk = os.pread(fd, length - got, start + got)
                    if not chunk:
                        break
                    parts.append(chunk)
                    got += len(chunk)
                return b"".join(parts)
            finally:
                os.close(fd)

    def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        with self._errors(key):
            st = os.stat(path)
        if not stat_mode.S_ISREG(st.st_mode):
            raise NotFound(f"{self._describe(key)}: not found")
        return ObjectInfo(key=key, size=st.st_size, etag=_quoted_etag(st), modified=_modified(st))

    # ---- writes ----------------------------------------------------------------------------

    def put(self, key: str, data: bytes | bytearray | memoryview, *,
            if_none_match: bool = False, if_match: str | None = None,
            sha256: str | None = None) -> str:
        if if_none_match and if_match is not None:
            raise UsageError("put: if_none_match and if_match are mutually exclusive")
        final = self._path(key)
        with self._write_errors(key):
            tmp, st = self._write_temp(final.parent, [data])
            st = self._place(tmp, st, final, key, if_none_match=if_none_match, if_match=if_match)
        return _quoted_etag(st)

    def delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            path = self._path(key)
            if not os.path.lexists(path):
                continue  # nothing to serialise with: absent keys are not an error
            with self._errors(key), self._locked(key):
                try:
                    os.unlink(path)
                except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                    continue
            self._prune_empty_parents(path.parent)

    def _prune_empty_parents(self, directory: Path) -> None:
        """Best effort: S3 has no directories, so none should linger once their keys are gone."""
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    # ---- listing ---------------------------------------------------------------------------

    def list(self, prefix: str = "", *, start_after: str | None = None) -> Iterator[ObjectInfo]:
        _validate_prefix(prefix)
        for key, entry in self._walk(self.root, "", prefix, start_after):
            try:
                st = entry.stat()
            except FileNotFoundError:
                if entry.is_symlink() and not _gone(entry.path):
                    # the link is there, its target went away since it was typed: as if it
                    # had been gone then (refused where versions live, else no object)
                    self._kind(entry, key.rpartition("/")[0] + "/" if "/" in key else "")
                continue  # deleted while we listed: S3 would not show it either
            except OSError as exc:
                raise _map_os_error(exc, self._describe(key)) from exc
            yield ObjectInfo(key=key, size=st.st_size, etag=_quoted_etag(st),
                             modified=_modified(st))

    def _walk(self, directory: Path, rel: str, prefix: str, start_after: str | None
              ) -> Iterator[tuple[str, os.DirEntry[str]]]:
        """Yield (key, entry) of files below `directory` in S3 key (code point) order.

        Entries are sorted with a '/' appended to directory names because every key inside
        directory 'a' starts with 'a/', which sorts after 'a-b' and 'a.b' but before 'a0'.
        """
        for sort_key, entry, is_dir in self._sorted_entries(directory, rel):
            if isinstance(is_dir, CkptlakeError):
                # an entry that could not be typed (no '/' on its key): raised only if this
                # listing needs it, `artifacts/team` not for a listing of `artifacts/team2/`
                if sort_key.startswith(prefix) or prefix.startswith(sort_key + "/"):
                    raise is_dir
                continue
            if not (sort_key.startswith(prefix) or prefix.startswith(sort_key)):
                continue
            if start_after is not None and sort_key <= start_after \
                    and not (is_dir and start_after.startswith(sort_key)):
                continue
            if is_dir:
                yield from self._walk(Path(entry.path), sort_key, prefix, start_after)
            elif sort_key.startswith(prefix):
                yield sort_key, entry

    def _sorted_entries(self, directory: Path, rel: str
                        ) -> list[tuple[str, os.DirEntry[str], "bool | CkptlakeError"]]:
        """(sort key, entry, is_dir) of the objects and directories in `directory`, in key
        order.  An entry that could not be typed carries the error instead of is_dir: the
        caller raises it only if its listing needs that entry, so one unreadable foreign
        entry does not fail the listings of unrelated prefixes (a push to another artifact),
        while one that may hide a version or a pin never drops out of gc's view."""
        try:
            with os.scandir(directory) as it:
                raw = list(it)
        except (FileNotFoundError, NotADirectoryError):
            return []  # missing root, or a directory pruned while we walked
        except OSError as exc:
            raise _map_os_error(exc, f"{self.url}/{rel}") from exc
        entries: list[tuple[str, os.DirEntry[str], bool | CkptlakeError]] = []
        for entry in raw:
            if not rel and entry.name in _RESERVED_ROOT_NAMES:
                continue
            try:
                kind = self._kind(entry, rel)
            except (FileNotFoundError, NotADirectoryError):
                continue  # deleted while we listed (or its directory replaced by a file)
            except OSError as exc:
                if _TEMP_NAME.fullmatch(entry.name) and _gone(entry.path):
                    continue  # a writer's temp, renamed away (ESTALE on NFS): never listed
                # Without d_type (some NFS/FUSE) typing stats: an ESTALE or EIO skipped here
                # would drop a whole subtree (an artifact's @v/) and gc condemn its chunks.
                entries.append((rel + entry.name, entry,
                                _map_os_error(exc, self._describe(rel + entry.name))))
                continue
            except CkptlakeError as exc:
                entries.append((rel + entry.name, entry, exc))
                continue
            if kind is None:
                continue  # sockets, fifos, foreign links: not objects
            if kind == "file" and _TEMP_NAME.fullmatch(entry.name):
                # Only a temp FILE is hidden: outside the (unlisted) multipart area ours are all
                # files, and a directory of that form is an S3 artifact's segment
                # (`a/.tmp-1-<hex>/`), which hidden here would have gc sweep its chunks.
                continue
            is_dir = kind == "dir"
            entries.append((rel + entry.name + ("/" if is_dir else ""), entry, is_dir))
        entries.sort(key=lambda e: e[0])
        return entries

    def _kind(self, entry: os.DirEntry[str], rel: str) -> str | None:
        """"dir", "file" (an object), or None (not one: a socket, a FIFO, a foreign link).

        A symlink is an object only if it leads to a regular file, and listings never follow
        one to a directory.  Where the lake keeps versions and gc's records (under
        `artifacts/` and `gc/`) any other link is refused: gc would not see the versions or
        pins behind it (nor behind a link that leads nowhere on this host: an absent mount,
        a target this user cannot read), and would sweep their chunks while pulls still read
        them.  Elsewhere (the root, `chunks/`) such a link is no object: a chunk gc does not
        see is one it keeps."""
        if not entry.is_symlink():
            if entry.is_dir(follow_symlinks=False):
                return "dir"
            return "file" if entry.is_file(follow_symlinks=False) else None
        guarded = (rel or entry.name).split("/", 1)[0] in ("artifacts", "gc")
        try:
            st = os.stat(entry.path)
        except OSError as exc:
            if not guarded:
                return None
            if _gone(entry.path):
                raise FileNotFoundError(errno.ENOENT, "deleted while listed") from None
            where, target = self._describe(rel + entry.name), _link_target(entry.path)
            if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.ENAMETOOLONG):
                raise UsageError(f"{where} is a symbolic link to {target}, which leads nowhere "
                                 f"on this host ({exc.strerror}): what it should hold is "
                                 "invisible to listings, and gc would sweep its chunks",
                                 hint="mount or restore its target, or remove the link if it "
                                      "is not the lake's") from None
            raise _map_os_error(exc, f"{where} (a symbolic link to {target})") from exc
        if stat_mode.S_ISREG(st.st_mode):
            return "file"
        if not guarded:
            return None
        where, target = self._describe(rel + entry.name), _link_target(entry.path)
        what = "a directory" if stat_mode.S_ISDIR(st.st_mode) else "no regular file"
        raise UsageError(f"{where} is a symbolic link to {target} ({what}), which a local lake "
                         "does not follow: listings, gc's among them, would not see the "
                         "versions or records behind it",
                         hint=f"bind-mount {shlex.quote(target)} at {shlex.quote(entry.path)} "
                              "instead of the link, or move it there in the link's place"
                         if what == "a directory" else "remove the link if it is not the lake's")

    def list_prefixes(self, prefix: str) -> Iterator[str]:
        if prefix and not prefix.endswith("/"):
            raise UsageError(f"list_prefixes: prefix {prefix!r} must end with '/'")
        _validate_prefix(prefix)
        directory = self.root.joinpath(*prefix.split("/")[:-1])
        for sort_key, entry, is_dir in self._sorted_entries(directory, prefix):
            if isinstance(is_dir, CkptlakeError):
                raise is_dir
            # Like S3, a 'directory' exists only while some object lives under it.
            if is_dir and next(self._walk(Path(entry.path), sort_key, sort_key, None), None):
                yield sort_key

    # ---- multipart -------------------------------------------------------------------------

    def _upload_dir(self, upload_id: str) -> Path:
        if not upload_id or not all(c in "0123456789abcdef" for c in upload_id):
            raise NotFound(f"multipart upload {upload_id!r}: not found")
        return self.root / MULTIPART_DIR / upload_id

    def _upload_meta(self, key: str, upload_id: str) -> dict[str, str]:
        path = self._upload_dir(upload_id) / "meta.json"
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError):
            meta = None
        except (OSError, ValueError) as exc:
            raise TransferError(f"{self._describe(key)}: unreadable multipart upload "
                                f"{upload_id}: {exc}") from exc
        if not isinstance(meta, dict) or meta.get("key") != key:
            raise NotFound(f"{self._describe(key)}: multipart upload {upload_id} not found")
        return meta

    def create_multipart(self, key: str) -> str:
        self._path(key)  # validate now rather than at completion
        upload_id = secrets.token_hex(16)
        base = self.root / MULTIPART_DIR
        meta = {"key": key, "initiated": datetime.now(timezone.utc).isoformat()}
        with self._write_errors(key):
            # Built under a temp name and renamed, so list_multipart never sees a half-made one.
            staging = base / f"{TMP_PREFIX}{os.getpid()}-{upload_id}"
            staging.mkdir(parents=True)
            tmp, _ = self._write_temp(staging, [json.dumps(meta).encode()])
            os.replace(tmp, staging / "meta.json")
            os.rename(staging, base / upload_id)
        return upload_id

    def upload_part(self, key: str, upload_id: str, part_number: int,
                    data: bytes | bytearray | memoryview) -> str:
        if not 1 <= part_number <= MAX_PART_NUMBER:
            raise UsageError(f"part number {part_number} outside 1..{MAX_PART_NUMBER}")
        self._upload_meta(key, upload_id)
        directory = self._upload_dir(upload_id)
        # S3's part ETag is the part's MD5.  It is also the file name, so a re-uploaded part
        # never pairs new bytes with an old ETag; completion picks the file the caller names.
        digest = hashlib.md5(data, usedforsecurity=False).hexdigest()
        with self._errors(key):
            try:
                # Into the upload's directory as it is, never recreated: an abort or completion
                # since our meta check removed it (S3's NoSuchUpload), and a directory made
                # again here would hold parts without meta.json that nothing lists or removes.
                tmp, _ = self._write_temp(directory, [data], make_dirs=False)
                try:
                    os.replace(tmp, directory / f"part-{part_number:05d}.{digest}")
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
                    raise
            except FileNotFoundError:
                raise NotFound(f"{self._describe(key)}: multipart upload {upload_id} not found "
                               "(aborted or completed while this part was written)") from None
        return f'"{digest}"'

    def _checked_parts(self, key: str, upload_id: str, parts: Sequence[tuple[int, str]]
                       ) -> list[Path]:
        """The part files to join, refusing what S3 refuses (order, ETag, size)."""
        part_numbers(self._describe(key), parts)
        directory = self._upload_dir(upload_id)
        paths = []
        for i, (number, etag) in enumerate(parts):
            digest = etag.strip('"').lower()
            path = directory / f"part-{number:05d}.{digest}"
            try:
                size = path.stat().st_size if _is_md5_hex(digest) else None
            except FileNotFoundError:
                size = None
            if size is None:
                raise TransferError(f"{self._describe(key)}: part {number} missing or its ETag "
                                    f"does not match (InvalidPart)")
            if i < len(parts) - 1 and size < MIN_PART_SIZE:
                raise TransferError(f"{self._describe(key)}: part {number} is {size} bytes; all "
                                    f"parts but the last need {MIN_PART_SIZE} (EntityTooSmall)")
            paths.append(path)
        return paths

    def complete_multipart(self, key: str, upload_id: str, parts: Sequence[tuple[int, str]], *,
                           if_none_match: bool = False) -> str:
        self._upload_meta(key, upload_id)
        paths = self._checked_parts(key, upload_id, parts)
        final = self._path(key)
        with self._write_errors(key):
            try:
                tmp, st = self._write_temp(final.parent, _read_files(paths))
            except FileNotFoundError:
                # a part gone since _checked_parts: gc's abort of this upload, or another
                # completion of it that won (either renames its directory away), not a
                # missing object at `key`
                raise NotFound(f"{self._describe(key)}: multipart upload {upload_id} not found "
                               "(aborted, or completed by another call, while this call "
                               "completed it)") from None
            st = self._place(tmp, st, final, key, if_none_match=if_none_match)
        # Only after the object is in place: a failed precondition leaves the upload abortable.
        self._discard_upload(upload_id)
        return _quoted_etag(st)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        if key == TEMP_UPLOAD_KEY and (segments := _temp_segments(upload_id)) is not None:
            self._remove_stale_temp(segments)
            return
        try:
            self._upload_meta(key, upload_id)
        except NotFound:
            return
        self._discard_upload(upload_id)

    def _discard_upload(self, upload_id: str) -> None:
        """Remove an upload's directory, first renaming it to a staging temp name.

        Removed in place, a part written meanwhile would keep it (rmdir: not empty) without
        its meta.json under the upload's id, where nothing lists it.  Renamed, no writer can
        add to it under that id, and whatever it keeps is a staging temp that gc collects."""
        base = self.root / MULTIPART_DIR
        doomed = base / f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(16)}"
        try:
            os.rename(self._upload_dir(upload_id), doomed)
        except OSError:
            return  # gone already (another abort or completion got there first): best effort
        shutil.rmtree(doomed, ignore_errors=True)

    def multipart_bytes(self, key: str, upload_id: str) -> int | None:
        if key == TEMP_UPLOAD_KEY and (segments := _temp_segments(upload_id)) is not None:
            return self._temp_bytes(segments)
        self._upload_meta(key, upload_id)
        total = 0
        with self._errors(key):
            for entry in os.scandir(self._upload_dir(upload_id)):
                if entry.name.startswith("part-") and entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
        return total

    def list_multipart(self, prefix: str = "") -> Iterator[MultipartUpload]:
        _validate_prefix(prefix)
        base = self.root / MULTIPART_DIR
        try:
            names = [n for n in os.listdir(base) if not n.startswith(TMP_PREFIX)]
        except FileNotFoundError:
            names = []
        except OSError as exc:
            raise _map_os_error(exc, f"{self.url}/{MULTIPART_DIR}") from exc
        uploads = []
        for upload_id in names:
            upload = self._read_upload(base / upload_id / "meta.json", upload_id)
            if upload is not None and upload.key.startswith(prefix):
                uploads.append(upload)
        if TEMP_UPLOAD_KEY.startswith(prefix):
            uploads.extend(self._stale_temps())
        uploads.sort(key=lambda u: (u.key, u.initiated, u.upload_id))  # S3's order
        yield from uploads

    def _stale_temps(self) -> list[MultipartUpload]:
        """What killed writers left: `.tmp-` files anywhere in the tree and staging directories
        at the top of MULTIPART_DIR, older than STALE_TEMP_SECONDS.  Temp files inside a real
        upload's directory go when that upload is completed or aborted, so are not walked.

        An upload directory without meta.json is a leftover too (an abort killed midway, or an
        older ckptlake's part write that recreated an aborted upload's directory): no listing
        shows it as an upload, so it is reported here, under its path like a staging one."""
        cutoff = time.time_ns() - STALE_TEMP_SECONDS * 1_000_000_000
        found = []
        stack = [(self.root, "")]
        while stack:
            directory, rel = stack.pop()
            try:
                with os.scandir(directory) as it:
                    raw = list(it)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                raise _map_os_error(exc, f"{self.url}/{rel}") from exc
            in_multipart = rel == MULTIPART_DIR + "/"
            for entry in raw:
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                    # Outside the multipart area a directory of the temp form is no temp of
                    # ours (we make only files there) but an ordinary one, walked below.
                    if _is_our_temp(entry.name, staging=in_multipart) and is_dir == in_multipart:
                        kind_ok = is_dir or entry.is_file(follow_symlinks=False)
                        st = entry.stat(follow_symlinks=False)
                        if kind_ok and st.st_mtime_ns <= cutoff:
                            found.append(MultipartUpload(key=TEMP_UPLOAD_KEY,
                                                         upload_id=rel + entry.name,
                                                         initiated=_modified(st)))
                    elif in_multipart and is_dir and _is_upload_id(entry.name) \
                            and _lacks_meta(Path(entry.path)):
                        st = entry.stat(follow_symlinks=False)
                        if st.st_mtime_ns <= cutoff:
                            found.append(MultipartUpload(key=TEMP_UPLOAD_KEY,
                                                         upload_id=rel + entry.name,
                                                         initiated=_modified(st)))
                    elif is_dir and not in_multipart and (rel or entry.name in _OWNED_TOP):
                        # only what the lake's format writes: a directory of anyone else's
                        # under the lake root is foreign, and gc never deletes from it
                        stack.append((Path(entry.path), rel + entry.name + "/"))
                except OSError:
                    continue  # gone while we looked
        return found

    def _open_parent(self, segments: Sequence[str]) -> int:
        """A descriptor of the directory holding a temp entry, reached without following a
        symlink, so that removing it never touches anything outside the lake."""
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for segment in segments[:-1]:
                child = os.open(segment, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                                | os.O_CLOEXEC, dir_fd=fd)
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _remove_stale_temp(self, segments: Sequence[str]) -> None:
        """Best effort, as aborting a real upload is: an entry we cannot remove (a symlink on
        the way, no permission) is left for the next gc rather than failing this one."""
        name = segments[-1]
        try:
            fd = self._open_parent(segments)
        except OSError:
            return
        try:
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            # Checked again at removal: an entry the listing saw may have been replaced since.
            if st.st_mtime_ns > time.time_ns() - STALE_TEMP_SECONDS * 1_000_000_000:
                return
            if stat_mode.S_ISREG(st.st_mode):
                os.unlink(name, dir_fd=fd)
            elif stat_mode.S_ISDIR(st.st_mode) and segments[0] == MULTIPART_DIR:
                if _is_upload_id(name) and not _lacks_meta(self.root / MULTIPART_DIR / name):
                    return  # a live upload after all: only its own abort removes it
                _remove_flat_dir(name, fd)
            else:
                return
        except OSError:
            return
        finally:
            os.close(fd)
        if segments[0] != MULTIPART_DIR:
            self._prune_empty_parents(self.root.joinpath(*segments[:-1]))

    def _temp_bytes(self, segments: Sequence[str]) -> int:
        path = self.root.joinpath(*segments)
        with self._errors("/".join(segments)):
            st = os.lstat(path)
            if not stat_mode.S_ISDIR(st.st_mode):
                return st.st_size if stat_mode.S_ISREG(st.st_mode) else 0
            return sum(e.stat(follow_symlinks=False).st_size for e in os.scandir(path)
                       if e.is_file(follow_symlinks=False))

    @staticmethod
    def _read_upload(meta_path: Path, upload_id: str) -> MultipartUpload | None:
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            return MultipartUpload(key=meta["key"], upload_id=upload_id,
                                   initiated=datetime.fromisoformat(meta["initiated"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None  # completed/aborted while we looked, or not ours


# The lake root's directories a ckptlake writes into (format/layout.py's chunks/, artifacts/,
# gc/; the store does not import the format) and the multipart area: the only places a temp
# file of ours can be.
_OWNED_TOP = frozenset({"chunks", "artifacts", "gc", MULTIPART_DIR})
# Our temp names exactly: `.tmp-<pid>-<16 hex>` (_write_temp) and, as multipart staging
# directories, `.tmp-<pid>-<32 hex>` (create_multipart).  A `.tmp-draft.txt` of a user's is
# no temp of ours, and gc must not remove it.
_TEMP_NAME = re.compile(r"\.tmp-[0-9]+-([0-9a-f]{16}|[0-9a-f]{32})")


def _remove_flat_dir(name: str, parent_fd: int) -> None:
    """Remove the directory `name` (in `parent_fd`) and the files in it, never following a
    symlink: a multipart staging directory holds meta.json and temp files, nothing deeper.
    (shutil.rmtree takes dir_fd only from Python 3.11.)"""
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                 dir_fd=parent_fd)
    try:
        for entry in os.listdir(fd):
            with contextlib.suppress(OSError):
                os.unlink(entry, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent_fd)


def _link_target(path: str) -> str:
    """A link's target as an absolute path, for messages a user acts on from anywhere (a
    relative target is relative to the link's directory, not to the working directory)."""
    try:
        os.readlink(path)
    except OSError:
        return "(unreadable)"
    # resolved, not normalised: `..` after a linked lake root names the link's real parent
    return os.path.realpath(path)


def _gone(path: str) -> bool:
    """Surely absent now (os.path.lexists says False on any error, ESTALE included)."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return False


def _is_upload_id(name: str) -> bool:
    """The name of a real upload's directory (as _upload_dir accepts it)."""
    return bool(name) and all(c in "0123456789abcdef" for c in name)


def _lacks_meta(upload_dir: Path) -> bool:
    """Only a meta.json that is surely absent: one we merely failed to stat (ESTALE, EACCES)
    may belong to a live upload, which gc must not take for a leftover."""
    try:
        os.lstat(upload_dir / "meta.json")
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return False


def _is_our_temp(name: str, *, staging: bool) -> bool:
    m = _TEMP_NAME.fullmatch(name)
    return m is not None and len(m.group(1)) == (32 if staging else 16)


def _temp_segments(upload_id: str) -> list[str] | None:
    """The path segments of a temp entry's upload id (its path in the lake, see _stale_temps),
    None for any other id.  Real ids are hex, so neither can be taken for the other."""
    if not isinstance(upload_id, str) or "\x00" in upload_id:
        return None
    segments = upload_id.split("/")
    if len(segments) == 2 and segments[0] == MULTIPART_DIR and _is_upload_id(segments[1]):
        return segments  # an upload directory without meta.json (_remove_stale_temp checks)
    if any(s in ("", ".", "..") for s in segments) \
            or not _is_our_temp(segments[-1], staging=segments[0] == MULTIPART_DIR) \
            or segments[0] == LOCK_DIR \
            or (len(segments) > 1 and segments[0] not in _OWNED_TOP):
        return None
    if segments[0] == MULTIPART_DIR and len(segments) != 2:
        return None  # inside a real upload: aborting that upload removes it
    return segments


def _is_md5_hex(text: str) -> bool:
    return len(text) == 32 and all(c in "0123456789abcdef" for c in text)


def _read_files(paths: Sequence[Path], block: int = 8 * 1024 * 1024) -> Iterator[bytes]:
    for path in paths:
        with open(path, "rb") as f:
            while chunk := f.read(block):
                yield chunk
