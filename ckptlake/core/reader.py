"""Reading one file of a version in place: a seekable, read-only file object over ranged GETs.

Why: `torch.load`, `zipfile`, `tarfile` and `json.load` want a file object, and pulling a whole
checkpoint to disk first costs a full copy and the disk space.  `LakeFile` serves the bytes of
one file of a version straight from the chunk objects.

The rule of every reader holds here too: no byte reaches the caller before it was verified.
The unit of verification decides the unit of fetching:

- a file stored as whole chunks (large files): each chunk object is fetched whole and checked
  against its digest, then kept while it is read;
- a packed file (small files, a range of a pack object): the file's ranges of the packs are
  fetched and checked against the file's own `digest` as one segment.

Read-ahead: when reads move forward from one segment into the next, the `readahead` segments
after it are fetched by background threads while the caller works on the current one.  The
first read and every jump (torch.load reading the zip's central directory at the end, a seek
back or far ahead) prefetch nothing, so random access costs no more than the chunks it touches.
The last KEEP (3) segments read are kept: torch.load and zipfile read the start, then the end
of the file (the zip's central directory, which may straddle the last two chunks), then go back
to the start, and would otherwise fetch the first chunk twice.  Memory: at most
(KEEP + readahead) segments are held, i.e. (3 + readahead) x chunk size (default readahead 2:
80 MiB at 16 MiB chunks).  A prefetched chunk that fails verification
raises only if and when its bytes are read.  close() cancels prefetches and releases it all.

Reads never return short before the end of the file (tarfile and pickle expect exact reads), so
the object behaves like a buffered file without a second buffer.
"""
from __future__ import annotations

import bisect
import difflib
import mmap
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Sequence

from ..errors import IntegrityError, NotFound, UsageError
from ..format import layout
from ..format.header import digest as hash_digest
from ..format.manifest import FileEntry, Manifest, TensorInfo
from ..format.safetensors import is_safetensors
from ..store.base import Store
from ..transfer.parts import Parts
from ..transfer.throttle import Throttle
from ..forks import reset_in_child
from ..transfer.pool import Executor, cancel, signals_blocked, wait_result
from . import chunkio
from .rawio import SeekableReader

DEFAULT_READAHEAD = 2
_Held = tuple["bytes | memoryview", "tuple[mmap.mmap, ...]"]  # a segment and its buffers
KEEP = 3  # segments kept after reading (the current one included)
TORCH_SUFFIXES = (".pt", ".pth", ".bin")  # torch.save's zip archives, by convention


class LakeFile(SeekableReader):
    """The bytes of one regular file of a version; see the module docstring."""

    def __init__(self, store: Store, entry: FileEntry, algo: str, *, name: str = "",
                 readahead: int = DEFAULT_READAHEAD, parts: Parts | None = None,
                 throttle: Throttle | None = None, stored: dict[str, int] | None = None
                 ) -> None:
        """stored: the manifest's stored-size hints (Manifest.stored): chunks it names are
        encoded, so a packed file's range of one is read by fetching it whole."""
        super().__init__()
        if entry.symlink is not None:
            raise UsageError(f"{entry.path} is a symlink, not a file")
        if isinstance(readahead, bool) or not isinstance(readahead, int) or readahead < 0:
            raise UsageError(f"readahead must be a non-negative integer, got {readahead!r}")
        self.store, self.entry, self.algo = store, entry, algo
        self.name = name or entry.path
        self.readahead = readahead
        self._parts, self._throttle = parts, throttle
        self._stored = stored or {}
        # segments: (start offset in the file, [chunk refs]); packed files are one segment
        if any(c.offset is not None for c in entry.chunks):
            self._segments = [(0, list(entry.chunks))] if entry.size else []
        else:
            self._segments, pos = [], 0
            for c in entry.chunks:
                self._segments.append((pos, [c]))
                pos += c.size
        self._starts = [s for s, _ in self._segments]
        self._pos = 0
        self._lock = threading.Lock()
        # the segment being read and the ones read just before it, oldest first, each with
        # the chunk buffers it holds (given back to _free once it is dropped)
        self._recent: OrderedDict[int, _Held] = OrderedDict()
        self._ahead: dict[int, Future[_Held]] = {}
        # idle chunk buffers, to receive and decode chunks into: reused, not allocated fresh
        # for every chunk (see _fetch_held)
        self._free: list[mmap.mmap] = []
        self._free_lock = threading.Lock()
        self._capacity = max((c.size for c in entry.chunks if c.offset is None), default=0)
        self._last: int | None = None  # segment of the previous read
        self._pool: ThreadPoolExecutor | None = None
        self._stats = threading.Lock()
        self.bytes_fetched = 0  # bytes downloaded so far (prefetches included)
        self.requests = 0  # GET requests so far
        reset_in_child(self)

    def _after_fork(self) -> None:
        """(See ckptlake/forks.py.)  The readahead threads are the parent's: the child's reads
        waited for prefetches no thread would ever run."""
        self._lock, self._free_lock, self._stats = (threading.Lock(), threading.Lock(),
                                                    threading.Lock())
        self._pool, self._ahead = None, {}

    def __reduce__(self) -> Any:
        """(See Lake.__reduce__.)"""
        raise TypeError(f"an open lake file ({self.name}) cannot be pickled: open it in the "
                        "worker process with lake.open(...) (a forked worker may use this one)")

    @property
    def segment_sizes(self) -> list[int]:
        return segment_sizes(self.entry)

    def fetch_segment(self, i: int, buffer: bytearray | None = None) -> bytes | memoryview:
        """Segment i (a chunk, or a packed file whole), downloaded and verified, bypassing
        this file's own cache and readahead: for readers that schedule fetches themselves
        (ckptlake/torch/planread.py).  `buffer` (reused by the caller, at least the chunk's
        size): a whole chunk is read into it (Store.get_into: no chunk-sized allocation), and
        the result may be a view of it.  Thread-safe; counted in bytes_fetched/requests."""
        self._check_open()
        return self._fetch(i, buffer)

    # -- the file interface (SeekableReader keeps the position) -----------------------------

    @property
    def size(self) -> int:
        return self.entry.size

    def _length(self) -> int:
        return self.entry.size

    def readinto(self, buffer: Any) -> int:
        self._check_open()
        view = memoryview(buffer).cast("B")
        with self._lock:
            n, pos = 0, self._pos
            while n < len(view) and pos < self.entry.size:
                i = bisect.bisect_right(self._starts, pos) - 1
                data = self._segment(i)
                start = self._starts[i]
                take = min(len(view) - n, start + len(data) - pos)
                view[n:n + take] = data[pos - start:pos - start + take]
                n += take
                pos += take
            self._pos = pos
        return n

    def read(self, size: int | None = -1) -> bytes:
        self._check_open()
        if size is None or size < 0:
            size = max(0, self.entry.size - self._pos)
        buf = bytearray(min(size, max(0, self.entry.size - self._pos)))
        n = self.readinto(buf)
        return bytes(buf[:n]) if n < len(buf) else bytes(buf)

    def readall(self) -> bytes:
        return self.read(-1)

    def close(self) -> None:
        if self.closed:
            return
        with self._lock:
            pool, self._pool = self._pool, None
            cancel(self._ahead.values())
            self._ahead.clear()
            self._recent.clear()
        if pool is not None:
            with signals_blocked():  # (a Ctrl-C here could leave a future's lock taken)
                pool.shutdown(wait=False, cancel_futures=True)
            pool.shutdown(wait=True)
        with self._free_lock:  # after the prefetches ended: none gives a buffer back later
            self._free.clear()
        super().close()

    def __repr__(self) -> str:
        return f"<LakeFile {self.name!r} size={self.entry.size}>"

    # -- segments -----------------------------------------------------------------------------

    def _segment(self, i: int) -> bytes | memoryview:
        """Segment i, verified; called with the lock held."""
        if i in self._recent:  # the current one, or one read shortly before
            self._recent.move_to_end(i)
            self._last = i
            return self._recent[i][0]
        # forward into the next segment: a sequential reader (torch.load's storages, tar
        # members); anything else (the first read, the jump to a zip's central directory,
        # seeks back) prefetches nothing
        sequential = self._last is not None and i == self._last + 1
        self._last = i
        while len(self._recent) >= KEEP:  # released before fetching: the memory bound
            self._give(self._recent.popitem(last=False)[1][1])
        future = self._ahead.pop(i, None)
        # drop prefetches the reader has jumped past or away from (one already running keeps
        # its buffers: they are not reused, only freed with it)
        cancel([self._ahead.pop(k) for k in [k for k in self._ahead
                                             if not i < k <= i + self.readahead]])
        if sequential and self.readahead:
            for k in range(i + 1, min(i + 1 + self.readahead, len(self._segments))):
                if k not in self._ahead and k not in self._recent:
                    self._ahead[k] = self._executor().submit(self._fetch_held, k)
        held = wait_result(future) if future is not None else self._fetch_held(i)
        self._recent[i] = held
        return held[0]

    def _take(self) -> mmap.mmap:
        with self._free_lock:
            if self._free:
                return self._free.pop()
        return chunkio.anonymous(max(1, self._capacity))

    def _give(self, buffers: "tuple[mmap.mmap, ...]") -> None:
        with self._free_lock:
            for b in buffers:
                if len(self._free) < KEEP + self.readahead + 2:
                    self._free.append(b)

    def _fetch_held(self, i: int) -> "_Held":
        """Segment i as _fetch returns it, a whole chunk received into one of this file's
        reused buffers and, if stored encoded, decoded into another; with the buffer its bytes
        are in (given back when the segment is dropped).

        Why: a fresh bytes object per GET and a fresh decode buffer per chunk are page-faulted
        in anew every time, and Store.get reads an S3 body through urllib3's copies where
        get_into receives it straight into the buffer (store/s3.py)."""
        _, refs = self._segments[i]
        if not (len(refs) == 1 and refs[0].offset is None):
            return self._fetch(i), ()
        recv, dec = self._take(), self._take()
        try:
            data = self._fetch(i, recv, decode_into=dec)  # type: ignore[arg-type]
        except BaseException:
            self._give((recv, dec))
            raise
        owner = data.obj if isinstance(data, memoryview) else None
        self._give(tuple(b for b in (recv, dec) if b is not owner))
        return data, tuple(b for b in (recv, dec) if b is owner)

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = Executor(max_workers=self.readahead,
                                            thread_name_prefix="ckptlake-read")
        return self._pool

    def _count(self, requests: int, nbytes: int) -> None:
        with self._stats:
            self.requests += requests
            self.bytes_fetched += nbytes

    def _fetch(self, i: int, buffer: bytearray | None = None,
               decode_into: bytearray | mmap.mmap | None = None) -> bytes | memoryview:
        """Download segment i and verify it; nothing unverified leaves this function.
        decode_into: where a chunk stored encoded is decoded to (if large enough)."""
        _, refs = self._segments[i]
        e = self.entry
        if len(refs) == 1 and refs[0].offset is None:
            c = refs[0]
            key = layout.chunk_key(c.digest)
            if self._throttle is not None:
                self._throttle.acquire(c.size)
            if self._parts is not None and self._parts.applies(c.size):
                into = buffer if buffer is not None and len(buffer) >= c.size else None
                try:
                    data: bytes | memoryview = self._parts.get_into(
                        self.store, key, c.size, into or bytearray(c.size))
                except NotFound:  # as in one request: missing, or its version deleted
                    raise chunkio.missing_from(self.store, c.digest, self.name) from None
                self._count(len(self._parts.ranges(c.size)), len(data))
            else:
                try:
                    data = (self.store.get(key) if buffer is None or len(buffer) < c.size
                            else self.store.get_into(key, buffer))
                except NotFound:
                    raise chunkio.missing_from(self.store, c.digest, self.name) from None
                self._count(1, len(data))
            # decoded if stored encoded, and verified: IntegrityError names chunk and version
            return chunkio.open_object(self.algo, c.digest, data, raw_size=c.size,
                                       where=self.name, into=decode_into)
        data = self._packed(refs, self._stored)
        if ((len(data) != e.size or e.digest is None
             or hash_digest(self.algo, data) != e.digest)
                and chunkio.retry_whole(self._stored, [c.digest for c in refs])):
            data = self._packed(refs, chunkio.EveryChunk())  # a stale hint: packs whole
        if len(data) != e.size or e.digest is None or hash_digest(self.algo, data) != e.digest:
            raise IntegrityError(f"{e.path}: the bytes read from its pack do not match the "
                                 "file's digest", hint="the lake may be corrupt; run ckptlake "
                                                       "verify --read-data")
        return data

    def _packed(self, refs: list[Any], stored: dict[str, int]) -> bytes:
        """A packed file's ranges of its packs (a pack `stored` names: fetched whole)."""
        pieces = []
        ranges = chunkio.RangeReader(self.store, self.algo, stored, self.name,
                                     on_fetch=lambda n: self._count(1, n))
        for c in refs:
            if self._throttle is not None:
                self._throttle.acquire(stored.get(c.digest, c.size) or c.size)
            pieces.append(ranges.get_range(c.digest, c.offset or 0, c.size))
        return b"".join(pieces)


def segment_sizes(entry: FileEntry) -> list[int]:
    """The bytes LakeFile downloads per segment of `entry`: each chunk, or a packed file's
    ranges of its packs as one segment."""
    if any(c.offset is not None for c in entry.chunks):
        return [entry.size] if entry.size else []
    return [c.size for c in entry.chunks]


# --- finding a file of a version -----------------------------------------------------------------

def find_file(m: Manifest, path: str | None) -> FileEntry:
    """The regular file `path` names in version `m`, following the version's own symlinks
    (a link in the version leads where a pull would make it lead; the manifest's links were
    checked to stay inside the tree when it was decoded).

    path None: the file of a single-file version.  NotFound names the version and close
    matches; a directory or a dangling link is a UsageError / NotFound.
    """
    ref = f"{m.artifact}@v{m.version}"
    regular = {e.path: e for e in m.files if e.symlink is None}
    if path is not None:
        from .browse import _path_text

        path = _path_text(path)  # a pathlib.Path too
    if path is None:
        if m.kind == "file":
            return m.files[0]
        raise UsageError(f"{ref} is a directory of {len(regular)} files: name one",
                         hint=_some(regular))
    from .browse import names_a_directory, version_dirs, walk_path

    links = {e.path: e.symlink for e in m.files if e.symlink is not None}
    cur = walk_path(path, links, ref, follow_last=True, dirs=lambda: version_dirs(m))
    target = "/".join(cur)
    if target in regular:
        if names_a_directory(path):
            raise NotFound(f"{path!r}: {target} in {ref} is a file, not a directory",
                           hint=f"name the file: {target}")
        return regular[target]
    if m.kind == "file" and not cur:
        return m.files[0]
    if not target or target in m.dirs or any(p.startswith(target + "/") for p in regular):
        raise UsageError(f"{path!r} is a directory in {ref}, not a file",
                         hint="name a file in it")
    close = difflib.get_close_matches(path, list(regular) + list(links), n=3)
    hint = "did you mean " + ", ".join(close) + "?" if close else _some(regular)
    if target != path.strip("/"):
        raise NotFound(f"{path!r} in {ref} leads to {target!r}, which the version does not "
                       "hold", hint=hint)
    raise NotFound(f"{ref} has no file {path!r}", hint=hint)


def _some(files: dict[str, Any]) -> str:
    names = sorted(files)
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return "its files: " + ", ".join(names[:5]) + more if names else "it holds no files"


# --- tensors of safetensors files -------------------------------------------------------------

FRAMEWORKS = ("np", "pt")


def select_tensors(m: Manifest, names: Sequence[str] | None, path: str | None
                   ) -> list[tuple[FileEntry, TensorInfo]]:
    """The (file, tensor record) pairs `Lake.tensors` fetches, in the order asked for (names
    given) or in file and offset order (names None)."""
    ref = f"{m.artifact}@v{m.version}"
    if path is not None:
        entry = find_file(m, path)
        if entry.tensors is None:
            what = ("pushed before ckptlake recorded tensors, or not a valid safetensors file"
                    if is_safetensors(entry.path) else "not a .safetensors file")
            raise UsageError(f"{entry.path} in {ref} has no tensor records ({what})",
                             hint="read it with lake.open() instead")
        files = [entry]
    else:
        files = [e for e in m.files if e.tensors is not None]
        if not files:
            raise NotFound(f"{ref} has no safetensors files with tensor records",
                           hint="lake.open() reads any file; lake.load_state_dict() reads "
                                "torch files")
    by_name: dict[str, list[tuple[FileEntry, TensorInfo]]] = {}
    for e in files:
        for t in e.tensors or ():
            by_name.setdefault(t.name, []).append((e, t))
    if names is None:
        dup = sorted(n for n, found in by_name.items() if len(found) > 1)
        if dup:
            raise UsageError(f"tensor {dup[0]!r} is in several files of {ref}: "
                             + ", ".join(e.path for e, _ in by_name[dup[0]]),
                             hint="pass path= to choose one file")
        return [(e, t) for e in files for t in e.tensors or ()]
    if isinstance(names, str):
        names = [names]
    out = []
    for name in names:
        found = by_name.get(name)
        if not found:
            close = difflib.get_close_matches(name, list(by_name), n=3)
            where = f"{path} of {ref}" if path is not None else ref
            raise NotFound(f"no tensor {name!r} in {where}",
                           hint=("did you mean " + ", ".join(close) + "?") if close
                           else _some_tensors(list(by_name)))
        if len(found) > 1:
            raise UsageError(f"tensor {name!r} is in several files of {ref}: "
                             + ", ".join(e.path for e, _ in found),
                             hint="pass path= to choose one file")
        out.append(found[0])
    return out


def unrecorded_tensors(data: bytes, names: Sequence[str], framework: str, lib: Any,
                       where: str) -> dict[str, Any]:
    """The named tensors of a whole safetensors file whose version kept no tensor records
    (its name did not end in .safetensors), parsed here.  `data` came through verified chunk
    reads; without records there is no per-tensor digest to check as well."""
    from ..format.safetensors import header_length, parse_header

    n = header_length(data[:8])
    header = parse_header(data[:8 + n], len(data)) if n is not None else None
    if header is None:
        raise UsageError(f"{where} is not a valid safetensors file")
    found = {t[0]: t for t in header.tensors}
    out: dict[str, Any] = {}
    for name in names:
        if name not in found:
            raise UsageError(f"{where} has no tensor {name!r}, which the state names")
        _, dtype, shape, start, end = found[name]
        t = TensorInfo(name, dtype, shape, start, end, "")
        check_dtype(t, framework, lib)
        out[name] = as_array(bytearray(data[start:end]), t, framework, lib)
    return out


def _some_tensors(names: list[str]) -> str:
    """A few of the names, in the hint itself: nothing else lists a version's tensor names
    (show and ls count them; diff names the changed ones), so naming some is the way to
    show what a name looks like here ("model.embed.weight" or "embed.weight")."""
    if not names:
        return "it holds no tensors"
    names = sorted(names)
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    count = "1 tensor" if len(names) == 1 else f"{len(names)} tensors"
    return f"it holds {count}: " + ", ".join(names[:5]) + more


# safetensors dtype -> numpy dtype / torch dtype attribute name
_NP_DTYPES = {"F16": "<f2", "F32": "<f4", "F64": "<f8", "I8": "i1", "U8": "u1", "I16": "<i2",
              "U16": "<u2", "I32": "<i4", "U32": "<u4", "I64": "<i8", "U64": "<u8", "BOOL": "?"}
_PT_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64",
              "I8": "int8", "U8": "uint8", "I16": "int16", "U16": "uint16", "I32": "int32",
              "U32": "uint32", "I64": "int64", "U64": "uint64", "BOOL": "bool",
              "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


def require(framework: str) -> Any:
    """The array library for `framework`, imported now (never by `import ckptlake`)."""
    if framework not in FRAMEWORKS:
        raise UsageError(f"framework must be one of {', '.join(FRAMEWORKS)}, got {framework!r}")
    try:
        if framework == "np":
            import numpy

            return numpy
        import torch

        return torch
    except ImportError:
        module = "numpy" if framework == "np" else "torch"
        raise UsageError(f"framework={framework!r} needs {module}",
                         hint=f"pip install 'ckptlake[{module}]'") from None


# safetensors dtype -> ml_dtypes attribute: numpy's view of them, when ml_dtypes is installed
_ML_DTYPES = {"BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


def _ml_dtype(dtype: str) -> Any:
    """The ml_dtypes dtype of a BF16/F8 tensor; None without ml_dtypes (or another dtype).
    Why: `Checkpointer.save_state` stores ml_dtypes arrays (framework "np"), and
    `load_safetensors` returns them so; load_state refused them."""
    name = _ML_DTYPES.get(dtype)
    if name is None:
        return None
    try:
        import ml_dtypes  # type: ignore[import-not-found]
    except ImportError:
        return None
    return getattr(ml_dtypes, name, None)


def check_dtype(t: TensorInfo, framework: str, lib: Any) -> None:
    """Refuse, before anything is fetched, a dtype the framework cannot represent."""
    if framework == "np" and t.dtype not in _NP_DTYPES and _ml_dtype(t.dtype) is None:
        if t.dtype in _ML_DTYPES:
            raise UsageError(f"tensor {t.name} is {t.dtype}, which numpy reads through "
                             "ml_dtypes, and ml_dtypes is not installed",
                             hint="pip install ml_dtypes (or read it with framework='pt')")
        raise UsageError(f"tensor {t.name} is {t.dtype}, which numpy has no dtype for",
                         hint="use framework='pt' (torch)")
    if framework == "pt" and not hasattr(lib, _PT_DTYPES.get(t.dtype, "-")):
        raise UsageError(f"tensor {t.name} is {t.dtype}, which this torch has no dtype for")


def as_array(buffer: bytearray, t: TensorInfo, framework: str, lib: Any) -> Any:
    """A writable array over `buffer` (no copy), little-endian as safetensors stores it."""
    if framework == "np":
        dtype = _NP_DTYPES.get(t.dtype) or _ml_dtype(t.dtype)
        return lib.frombuffer(buffer, dtype=dtype).reshape(t.shape)
    dtype = getattr(lib, _PT_DTYPES[t.dtype])
    if not buffer:
        return lib.empty(t.shape, dtype=dtype)
    return lib.frombuffer(buffer, dtype=dtype).reshape(t.shape)  # little-endian hosts only
