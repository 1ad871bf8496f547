"""Sets of chunk digests whose memory does not grow with the lake: gc's mark and sweep at scale.

A CPython `set` of 32-byte `bytes` costs ~100-165 bytes per digest, ~16 GiB for a lake of 100M
chunks.  A `DigestSet` keeps at most `memory_limit` digests in memory; past that it sorts them
and spills them as a *run*: a file of fixed-width 32-byte records in ascending byte order, in a
private directory (tempfile.mkdtemp) that `close()` removes.  Before the first lookup after a
spill (or on `compact()`) the runs are merged (k-way, heapq.merge over buffered readers) into
one sorted, deduplicated file.  Runs spilled later (gc's incremental re-mark) are merged into
another file, looked up next to the first, so a re-mark does not rewrite the whole set; past a
few such files they are merged into one.  A lookup reads one block of 2048 records (pread)
and keeps it: gc asks in listing order (chunk keys list in digest order, and hex sorts like
the bytes), so lookups walk the file block after block, a merge-join in effect; out of order,
a lookup costs a binary search over the blocks.

A `DigestMap` is the same with a 4-byte value per digest (gc's "which artifact's deleted
version frees this chunk"); of several values added for one digest it keeps the smallest, like
`dict.setdefault` over values added in increasing order.

Digests of another width than 32 bytes (only a lenient read of a foreign manifest makes them)
stay in a small in-memory side set: correctness first, and they are not expected at scale.
Adding never forgets: the structures only grow, as gc's L does.
"""
from __future__ import annotations

import heapq
import os
import shutil
import tempfile
from bisect import bisect_left
from typing import IO, Iterable, Iterator

WIDTH = 32
VALUE = 4  # DigestMap's value: big-endian unsigned, so the smallest sorts first
DEFAULT_MEMORY_LIMIT = 100_000  # digests held before a spill: ~11 MB of CPython dict
_MERGE_FAN = 64  # runs merged at once when they pile up (open files stay few)
_MAX_SORTED = 4  # merged files looked up side by side before they are merged into one
_BLOCK = 2048  # records a lookup reads at once (64 KiB of digests)
_READ_RECORDS = 8192  # records per read while merging


class _Sorted:
    """A sorted, deduplicated run file, searched a block at a time with pread: only the
    current block (_BLOCK records) is in memory, so gc's RSS stays the same however large the
    file (an mmap would count every page a merge-join touched)."""

    def __init__(self, path: str, width: int) -> None:
        self.path, self.width = path, width
        self.n = os.path.getsize(path) // width
        self.blocks = -(-self.n // _BLOCK)
        self._fd = os.open(path, os.O_RDONLY)
        self._block = -1
        self._keys: list[bytes] = []
        self._data = b""
        self._next_first: bytes | None = None  # first key of the block after the current one

    def __len__(self) -> int:
        return self.n

    def _first(self, b: int) -> bytes:
        return os.pread(self._fd, WIDTH, b * _BLOCK * self.width)

    def _load(self, b: int) -> None:
        w = self.width
        self._data = os.pread(self._fd, _BLOCK * w, b * _BLOCK * w)
        self._keys = [self._data[j:j + WIDTH] for j in range(0, len(self._data), w)]
        self._block = b
        self._next_first = self._first(b + 1) if b + 1 < self.blocks else None

    def _covers(self, key: bytes) -> bool:
        return self._block >= 0 and self._keys[0] <= key and (
            self._next_first is None or key < self._next_first)

    def find(self, key: bytes) -> bytes | None:
        """The record of `key`, or None.  Keys asked in ascending order (gc asks in listing
        order) mostly stay in the current block or move to the next one; any other order
        costs a binary search over the blocks' first keys (one pread each)."""
        if not self.n:
            return None
        if not self._covers(key):
            if self._next_first is not None and key >= self._next_first:
                self._load(self._block + 1)
            if not self._covers(key):
                lo, hi = 0, self.blocks  # the last block whose first key <= key
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    if self._first(mid) <= key:
                        lo = mid
                    else:
                        hi = mid
                if lo != self._block:
                    self._load(lo)
        i = bisect_left(self._keys, key)
        if i < len(self._keys) and self._keys[i] == key:
            return self._data[i * self.width:(i + 1) * self.width]
        return None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _records(path: str, width: int) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while block := fh.read(width * _READ_RECORDS):
            for i in range(0, len(block), width):
                yield block[i:i + width]


class DigestSet:
    """A set of digests (bytes) that spills sorted runs to disk past `memory_limit` entries.

    Not thread-safe; gc adds from its main thread.  Use as a context manager or call close().
    """

    _value = 0  # bytes of value per record (DigestMap: VALUE)

    def __init__(self, memory_limit: int = DEFAULT_MEMORY_LIMIT, *,
                 directory: str | None = None) -> None:
        self.memory_limit = max(1, memory_limit)
        self._parent = directory
        self._dir: str | None = None
        self._mem: dict[bytes, int] = {}
        self._odd: dict[bytes, int] = {}  # digests of another width: never spilled
        self._runs: list[str] = []
        self._sorted: list[_Sorted] = []  # merged runs, each sorted and deduplicated
        self._serial = 0
        self.spills = 0  # how many runs were written (tests and the benchmark read it)

    @property
    def width(self) -> int:
        return WIDTH + self._value

    # ---- adding
    def add(self, digest: bytes, value: int = 0) -> None:
        if len(digest) != WIDTH:
            self._odd.setdefault(digest, value)
            return
        if digest not in self._mem:
            self._mem[digest] = value
            if len(self._mem) >= self.memory_limit:
                self._spill()
        elif value < self._mem[digest]:
            self._mem[digest] = value

    def update(self, digests: Iterable[bytes]) -> None:
        batch = digests if isinstance(digests, (set, frozenset, list, tuple)) else list(digests)
        if self._value or set(map(len, batch)) - {WIDTH}:
            for d in batch:
                self.add(d)
            return
        self._mem.update(dict.fromkeys(batch, 0))  # at C speed: gc adds a manifest at a time
        if len(self._mem) >= self.memory_limit:
            self._spill()

    def _path(self) -> str:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="ckptlake-gc-", dir=self._parent)
        self._serial += 1
        return os.path.join(self._dir, f"run-{self._serial:06d}")

    def _spill(self) -> None:
        path = self._path()
        with open(path, "wb") as fh:
            if self._value:
                fh.write(b"".join(d + v.to_bytes(self._value, "big")
                                  for d, v in sorted(self._mem.items())))
            else:
                fh.write(b"".join(sorted(self._mem)))
        self._mem.clear()
        self._runs.append(path)
        self.spills += 1
        if len(self._runs) >= _MERGE_FAN:
            self._merge_runs()

    def _merge(self, sources: list[str]) -> _Sorted:
        """Merge sorted files into one sorted, deduplicated file (the inputs are removed)."""
        path = self._path()
        width, previous = self.width, b""
        with open(path, "wb", buffering=1 << 20) as out:
            for rec in heapq.merge(*(_records(p, width) for p in sources)):
                key = rec[:WIDTH]
                if key != previous:  # equal keys: the smallest value came first; keep it
                    out.write(rec)
                    previous = key
        for p in sources:
            os.unlink(p)
        return _Sorted(path, width)

    def _merge_runs(self) -> None:
        """The spilled runs into one sorted file, kept next to the earlier ones: a re-mark
        that spilled a little does not rewrite the whole set.  Past _MAX_SORTED files, all of
        them are merged into one."""
        if self._runs:
            self._sorted.append(self._merge(self._runs))
            self._runs = []
        if len(self._sorted) > _MAX_SORTED:
            self._merge_all()

    def _merge_all(self) -> None:
        if self._runs:
            self._sorted.append(self._merge(self._runs))
            self._runs = []
        if len(self._sorted) > 1:
            paths = [f.path for f in self._sorted]
            for f in self._sorted:
                f.close()
            self._sorted = [self._merge(paths)]

    def compact(self) -> None:
        """Merge the spilled runs now (the first lookup would do it otherwise)."""
        self._merge_runs()

    # ---- asking
    def _find(self, digest: bytes) -> tuple[bool, int]:
        if len(digest) != WIDTH:
            return (True, self._odd[digest]) if digest in self._odd else (False, 0)
        found, value = False, 0
        if digest in self._mem:
            if not self._value:
                return True, 0
            # A map's digest may also be on disk, with a smaller value added before a spill.
            found, value = True, self._mem[digest]
        if self._runs:
            self._merge_runs()
        for f in self._sorted:
            rec = f.find(digest)
            if rec is not None:
                v = int.from_bytes(rec[WIDTH:], "big")
                if not self._value:
                    return True, v
                value = v if not found else min(value, v)
                found = True
        return found, value

    def __contains__(self, digest: object) -> bool:
        if digest in self._mem:
            return True
        if not (self._sorted or self._runs or self._odd):
            return False
        return isinstance(digest, bytes) and self._find(digest)[0]

    def __len__(self) -> int:
        """Distinct digests (merges everything spilled into one file first)."""
        self._merge_all()
        if not self._sorted:
            return len(self._mem) + len(self._odd)
        f = self._sorted[0]
        return (len(f) - sum(1 for d in self._mem if f.find(d) is not None) + len(self._mem)
                + len(self._odd))

    @property
    def spilled(self) -> bool:
        return self._dir is not None

    # ---- cleaning up
    def close(self) -> None:
        """Remove the spill directory; the set is empty afterwards."""
        for f in self._sorted:
            f.close()
        self._sorted = []
        self._mem.clear()
        self._odd.clear()
        self._runs = []
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> "DigestSet":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # a forgotten close() must not leave files behind
        try:
            self.close()
        except Exception:
            pass


class DigestMap(DigestSet):
    """digest -> small non-negative int (< 2**32); the smallest value added for a digest wins."""

    _value = VALUE

    def get(self, digest: bytes, default: int | None = None) -> int | None:
        found, value = self._find(digest)
        return value if found else default


class Spool:
    """Lists of digests written once and read back once: the chunks of each version of the
    artifact gc is deciding, kept until the policy has decided which versions stay.

    In memory as packed bytes (1 length byte + the digest: 33 bytes for sha256, against ~100
    for a set entry) up to `memory_limit` digests, in a file of the same bytes beyond.
    """

    def __init__(self, memory_limit: int = DEFAULT_MEMORY_LIMIT, *,
                 directory: str | None = None) -> None:
        self.memory_limit = max(1, memory_limit)
        self._parent = directory
        self._buf = bytearray()
        self._dir: str | None = None
        self._fh: IO[bytes] | None = None
        self._size = 0

    def append(self, digests: Iterable[bytes]) -> tuple[int, int]:
        """Store digests; returns where they are, for read()."""
        data = b"".join(len(d).to_bytes(1, "big") + d for d in digests)
        where = (self._size, len(data))
        self._size += len(data)
        if self._fh is not None:
            self._fh.seek(0, os.SEEK_END)
            self._fh.write(data)
        else:
            self._buf += data
            if len(self._buf) > self.memory_limit * (WIDTH + 1):
                self._dir = tempfile.mkdtemp(prefix="ckptlake-gc-", dir=self._parent)
                self._fh = open(os.path.join(self._dir, "spool"), "w+b")
                self._fh.write(self._buf)
                self._buf = bytearray()
        return where

    def read(self, where: tuple[int, int]) -> Iterator[bytes]:
        offset, size = where
        if self._fh is not None:
            self._fh.seek(offset)
            data = self._fh.read(size)
        else:
            data = bytes(self._buf[offset:offset + size])
        i = 0
        while i < size:
            n = data[i]
            yield data[i + 1:i + 1 + n]
            i += 1 + n

    def reset(self) -> None:
        """Forget everything (the next artifact); the file, if any, is truncated and reused."""
        self._buf = bytearray()
        self._size = 0
        if self._fh is not None:
            self._fh.seek(0)
            self._fh.truncate()

    @property
    def spilled(self) -> bool:
        return self._dir is not None

    def close(self) -> None:
        self._buf = bytearray()
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
