"""Reading one file of a version whole: every chunk fetched in parallel into one buffer.

Why: a reader that consumes the whole file (torch.load of a torch.save archive) gains nothing
from LakeFile's chunk-by-chunk streaming (core/reader.py) and pays for it: chunks arrive one
readahead window at a time, each decoded into a fresh buffer, then copied again into the
caller's.  Here all of the file's chunk objects are fetched at the lake's concurrency, each
received or decoded straight into its final slice of ONE page-aligned anonymous mapping of the
file's size, and verified there; the caller reads from that buffer (`WholeFile.readinto`: one
copy, into torch's storages).

The rule of every reader holds: no byte is handed out before it was verified.  `read_whole`
returns only once every chunk matched its digest; on the first that does not, the
IntegrityError names the chunk and the version (as LakeFile's does) and the buffer is dropped.

Memory: the whole file, for as long as the WholeFile is open (a torch.load holds it and the
tensors it builds: about twice the file at the peak), plus one receive buffer per worker for
chunks stored encoded.  Hence the bound (`Lake.open(max_buffer=)`, `default_max_buffer`):
above it callers stream (LakeFile), so a file larger than memory still loads.

Cost: the fresh file-sized buffer is page-faulted in once (populated per chunk, see
_populate), which streaming through LakeFile's reused chunk buffers does not pay: on the
2-core test machine a 1 GiB torch.load took ~0.3 CPU-s/GiB more this way, and the parallel
fetch bought no time there, the client's CPU being the limit (docs/benchmarks.md, "whole-file
load").  Hence opt-in: it is for readers limited by fetch latency, not CPU.
"""
from __future__ import annotations

import mmap
import os
import threading
from typing import Any

from ..errors import IntegrityError, NotFound, UsageError
from ..format import codecs, layout
from ..format.manifest import FileEntry
from ..store.base import Store
from ..transfer.parts import Parts
from ..transfer.pool import bounded_map
from ..transfer.throttle import Throttle
from . import chunkio
from .rawio import SeekableReader

# The share of available memory a whole-file buffer may take: torch.load then holds the
# buffer and the tensors it builds from it (~2x the file), so the peak stays under 80 % of
# what was available when the load started.
MEMORY_SHARE = 0.4


class WholeFile(SeekableReader):
    """A read-only, seekable binary file object over a file's verified bytes in memory (what
    `read_whole` returns).  readinto copies straight from the buffer into the caller's (torch's
    storages), read returns bytes; close() releases the buffer."""

    def __init__(self, buffer: mmap.mmap | bytes, size: int, name: str) -> None:
        super().__init__()
        self.name, self._size = name, size
        self._buffer: mmap.mmap | bytes | None = buffer
        self._view: memoryview | None = memoryview(buffer)[:size]
        self._pos = 0
        self.bytes_fetched = 0  # bytes downloaded (as LakeFile counts them)
        self.requests = 0  # GET requests

    @property
    def size(self) -> int:
        return self._size

    def _length(self) -> int:
        return self._size

    def readinto(self, buffer: Any) -> int:
        self._check_open()
        assert self._view is not None
        with memoryview(buffer) as raw, raw.cast("B") as out:
            n = max(0, min(len(out), self._size - self._pos))
            if n:
                out[:n] = self._view[self._pos:self._pos + n]
        self._pos += n
        return n

    def read(self, size: int | None = -1) -> bytes:
        self._check_open()
        assert self._view is not None
        left = max(0, self._size - self._pos)
        n = left if size is None or size < 0 else min(size, left)
        data = self._view[self._pos:self._pos + n].tobytes()
        self._pos += n
        return data

    def readall(self) -> bytes:
        return self.read(-1)

    def close(self) -> None:
        if self.closed:
            return
        view, buffer, self._view, self._buffer = self._view, self._buffer, None, None
        if view is not None:
            view.release()
        if isinstance(buffer, mmap.mmap):
            try:
                buffer.close()  # unmapped now rather than whenever the object is collected
            except BufferError:
                pass  # a view of it is still alive somewhere: freed with the last one
        super().close()

    def __repr__(self) -> str:
        return f"<WholeFile {self.name!r} size={self._size}>"


class _Receive:
    """Receive buffers for encoded chunk objects (a frame cannot be decoded in place), one per
    worker at most, reused; freed with the read."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._free: list[mmap.mmap] = []
        self._lock = threading.Lock()

    def take(self) -> mmap.mmap:
        with self._lock:
            if self._free:
                return self._free.pop()
        return chunkio.anonymous(max(1, self.size))

    def give(self, buf: mmap.mmap) -> None:
        with self._lock:
            self._free.append(buf)

    def close(self) -> None:
        with self._lock:
            free, self._free = self._free, []
        for b in free:
            try:
                b.close()
            except BufferError:
                pass  # a failed read's traceback still holds a view of it: freed with it


def read_whole(store: Store, entry: FileEntry, algo: str, *, name: str, workers: int,
               parts: Parts | None = None, throttle: Throttle | None = None,
               stored: dict[str, int] | None = None) -> WholeFile:
    """Fetch, decode and verify every byte of `entry` into one buffer; see the module
    docstring.  `name` ("artifact@vN:path") is what errors name; `stored`: the manifest's
    stored-size hints (an encoded chunk is received into a buffer of that size and decoded
    into place; without a hint an object shorter than its chunk is decoded the same way)."""
    if entry.symlink is not None:
        raise UsageError(f"{entry.path} is a symlink, not a file")
    stored = stored or {}
    size = entry.size
    if size == 0:
        return WholeFile(b"", 0, name)
    if any(c.offset is not None for c in entry.chunks):
        # a packed (small) file: its ranges of the packs, checked against the file's digest,
        # exactly as LakeFile reads it
        from .reader import LakeFile

        with LakeFile(store, entry, algo, name=name, readahead=0, parts=parts,
                      throttle=throttle, stored=stored) as lf:
            data = bytes(lf.fetch_segment(0))
            out = WholeFile(data, size, name)
            out.bytes_fetched, out.requests = lf.bytes_fetched, lf.requests
            return out

    from .pull import zero_chunks

    zeros = zero_chunks([entry], algo)  # all-zero chunks: the fresh mapping holds them already
    places: dict[str, list[tuple[int, int]]] = {}  # digest -> (offset in file, size)
    pos = 0
    for c in entry.chunks:
        if c.digest not in zeros:
            places.setdefault(c.digest, []).append((pos, c.size))
        pos += c.size
    if pos != size:
        raise IntegrityError(f"{name}: its chunks add up to {pos} bytes, not {size}",
                             hint="the manifest is damaged; run ckptlake verify")
    buf = chunkio.anonymous(size)
    view = memoryview(buf)
    encoded = [stored[d] for d in places if d in stored]
    receive = _Receive(max(encoded, default=0))
    stats = threading.Lock()
    counts = [0, 0]  # requests, bytes fetched

    def count(requests: int, nbytes: int) -> None:
        with stats:
            counts[0] += requests
            counts[1] += nbytes

    def fetch(d: str) -> None:
        (offset, n), *copies = places[d]
        target = view[offset:offset + n]
        key = layout.chunk_key(d)
        wire = stored.get(d, n)
        if throttle is not None:
            throttle.acquire(wire)
        _populate(buf, offset, n)
        scratch = receive.take() if d in stored else None
        try:
            into = memoryview(scratch)[:wire] if scratch is not None else target
            try:
                if parts is not None and parts.applies(wire):
                    data = parts.get_into(store, key, wire, into)
                    count(len(parts.ranges(wire)), len(data))
                else:
                    data = store.get_into(key, into)  # type: ignore[arg-type]
                    count(1, len(data))
            except NotFound:
                raise chunkio.missing_from(store, d, name) from None
            if scratch is None and len(data) != n and getattr(data, "obj", None) is buf:
                # shorter than the chunk: an encoded object the manifest has no hint for;
                # it cannot be decoded where it lies
                data = memoryview(data.tobytes())
            if codecs.looks_framed(data) and len(data) < n:
                with chunkio.DECODERS:  # decoding is the CPU-heavy part: bounded
                    got = chunkio.open_object(algo, d, data, raw_size=n, where=name,
                                              key=key, into=target)
            else:
                got = chunkio.open_object(algo, d, data, raw_size=n, where=name, key=key)
            if not (isinstance(got, memoryview) and got.obj is buf
                    and _same_start(got, target)):
                target[:] = got  # verified elsewhere (a raw object in the receive buffer)
        finally:
            if scratch is not None:
                receive.give(scratch)
        for at, length in copies:  # the same chunk again at another offset
            view[at:at + length] = target

    try:
        for _ in bounded_map(fetch, list(places), workers=workers, name="ckptlake-whole"):
            pass
    except BaseException:
        del view
        try:
            buf.close()
        except BufferError:
            pass  # views of it live on in the traceback: freed with it
        raise
    finally:
        receive.close()
    out = WholeFile(buf, size, name)
    out.requests, out.bytes_fetched = counts
    return out


_POPULATE_WRITE = getattr(mmap, "MADV_POPULATE_WRITE", 23)  # Linux >= 5.14
_populate_ok = hasattr(mmap.mmap, "madvise")


def _populate(buf: mmap.mmap, offset: int, n: int) -> None:
    """Fault in the pages of [offset, offset+n) in one call, before the chunk is written there.

    Why: a 4 KiB page fault per first touch, taken in recv and in the decoder, costs more than
    the kernel populating the range at once: writing 512 MiB in 16 MiB pieces here (a VM)
    cost 0.49 CPU-s/GiB with faults, 0.40 after MADV_POPULATE_WRITE (0.58 in shared memory,
    see chunkio.anonymous).  Done per chunk in the workers, so it runs in parallel like the
    fetches."""
    global _populate_ok
    if not _populate_ok:
        return
    start = offset - offset % mmap.PAGESIZE
    try:
        buf.madvise(_POPULATE_WRITE, start, offset + n - start)
    except (OSError, ValueError):
        _populate_ok = False  # an older kernel: first touch faults them in as before


def _same_start(a: memoryview, b: memoryview) -> bool:
    """Do two views of one mapping start at the same byte?"""
    import ctypes

    try:
        return (ctypes.addressof(ctypes.c_char.from_buffer(a))
                == ctypes.addressof(ctypes.c_char.from_buffer(b)))
    except (TypeError, ValueError):
        return False


def memory_available() -> int | None:
    """Bytes this process may still allocate: the kernel's MemAvailable, lowered to what is
    left under a cgroup's memory limit (a container's); None if neither is known."""
    found: list[int] = []
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file) as fh:
                limit = fh.read().strip()
            with open(usage_file) as fh:
                usage = int(fh.read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:  # "max" / a huge number: no limit
            found.append(max(0, int(limit) - usage))
        break
    if not found:
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    return min(found)


def default_max_buffer() -> int:
    """The largest file `ckptlake.torch.load(max_buffer=None)` reads whole: MEMORY_SHARE of
    the memory available now (0 when unknown: stream)."""
    avail = memory_available()
    return int(avail * MEMORY_SHARE) if avail else 0
