"""Per-tensor records for `.safetensors` files, computed while push reads the bytes anyway.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON naming each
tensor's dtype, shape and `data_offsets` (relative to the end of the header), then the data.
At push we record, per tensor, its name, dtype, shape, absolute byte range and a digest, so that
`diff` can say which tensors changed without downloading any tensor data.

The digest must not depend on how push happened to cut and order the bytes: slices arrive from
worker threads in any order, and a chunk boundary may fall anywhere inside a tensor.  Nor may it
depend on where the tensor sits in the file: a tensor that did not change must keep its digest
when an earlier tensor grows or the header changes length.  So it is defined on a grid relative
to the tensor's own first byte:

    blocks(t)  = t's bytes cut every 1 MiB, counting from t's first byte
    digest(t)  = H( H(block_1) || H(block_2) || ... )   (hex; raw 32-byte inner)

where H is the lake's hash (header `hash`: SHA-256, or BLAKE3 in a blake3 lake).

Each block is hashed as soon as all its bytes have been seen.  A block that lies wholly inside
one slice is hashed straight from it; only a block cut by a slice boundary is buffered, and only
until the neighbouring slice arrives.  Push reads slices in order with at most `concurrency`
in flight, so at most about 2 x concurrency blocks wait at once: memory stays bounded by
2 x concurrency x 1 MiB whatever the tensor sizes.  The same digester, fed in order, verifies
tensor bytes fetched by `diff --values`.

The header itself is read from the file once before upload (a few KiB) and compared with the
bytes the upload then reads, so a file rewritten in between is caught.
"""
from __future__ import annotations

import bisect
import json
import os
import stat
import struct
import threading
from dataclasses import dataclass
from typing import Any, Iterable

from .header import HASH_SHA256, new_hasher
from .manifest import ITEMSIZE, TensorInfo

BLOCK = 1024 * 1024
MAX_HEADER = 100 * 1024 * 1024  # the safetensors library refuses larger headers too
SUFFIX = ".safetensors"



@dataclass(frozen=True)
class Header:
    """A parsed safetensors header: tensors sorted by offset, ranges absolute in the file."""

    raw: bytes  # the first `data_start` bytes of the file (length prefix + JSON)
    tensors: tuple[tuple[str, str, tuple[int, ...], int, int], ...]  # name, dtype, shape, s, e

    @property
    def data_start(self) -> int:
        return len(self.raw)


def is_safetensors(path: str) -> bool:
    return path.lower().endswith(SUFFIX)


# The header's free-form entry: readers (ours and the safetensors library) skip it or refuse
# the file, so a tensor written under this name is lost.
METADATA_KEY = "__metadata__"


def check_tensor_name(name: str) -> None:
    """For writers: refuse a tensor name no reader could give back (save_state's encoder
    renames a state key "__metadata__" before it gets here; a direct caller is told)."""
    from ..errors import UsageError

    if name == METADATA_KEY:
        raise UsageError(f"a safetensors tensor cannot be named {METADATA_KEY!r}: that is the "
                         "header's metadata entry", hint="rename the tensor")


def header_length(prefix: bytes) -> int | None:
    """N from the first 8 bytes, or None if they cannot start a safetensors file."""
    if len(prefix) < 8:
        return None
    (n,) = struct.unpack("<Q", prefix[:8])
    return n if 2 <= n <= MAX_HEADER else None


def parse_header(raw: bytes, file_size: int) -> Header | None:
    """Validate a header (length prefix + JSON); None if this is not a usable safetensors file.

    Not an error: a file that merely ends in .safetensors is pushed like any other file.
    """
    n = header_length(raw)
    if n is None or len(raw) != 8 + n or file_size < 8 + n:
        return None
    try:
        doc = json.loads(raw[8:])
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    start, tensors = 8 + n, []
    for name, info in doc.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict):
            return None
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if (not isinstance(dtype, str) or not isinstance(shape, list)
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                           for d in shape)
                or not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            return None
        b, e = start + offsets[0], start + offsets[1]
        if not start <= b <= e <= file_size:
            return None
        if dtype in ITEMSIZE:
            count = 1
            for d in shape:
                count *= d
            if count * ITEMSIZE[dtype] != e - b:
                return None
        tensors.append((name, dtype, tuple(shape), b, e))
    tensors.sort(key=lambda t: (t[3], t[4]))
    for prev, cur in zip(tensors, tensors[1:]):
        if cur[3] < prev[4]:  # overlapping tensors: not a file we can describe per tensor
            return None
    return Header(raw=bytes(raw), tensors=tuple(tensors))


def read_header(path: str) -> Header | None:
    """Read and parse the header of a local file (two small preads)."""
    try:
        # O_NONBLOCK: a FIFO put where the file was must not hang the push (it fails later,
        # when the pusher's own read sees that it is no longer a regular file).
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        size = st.st_size
        n = header_length(os.pread(fd, 8, 0))
        if n is None or size < 8 + n:
            return None
        raw = os.pread(fd, 8 + n, 0)
    except OSError:
        return None
    finally:
        os.close(fd)
    return parse_header(raw, size)


class TensorDigest:
    """The block digest of the bytes [start, end) of a file, fed in pieces in any order.

    Each byte must be fed exactly once.  Thread-safe: whole blocks are hashed outside the lock.
    """

    def __init__(self, start: int, end: int, algo: str = HASH_SHA256) -> None:
        self.start, self.end, self.algo = start, end, algo
        new_hasher(algo)  # an unknown or unavailable hash fails here, not in a worker thread
        self._lock = threading.Lock()
        self._blocks: dict[int, bytes] = {}  # block index -> H(block)
        self._partial: dict[int, list[tuple[int, bytes]]] = {}  # block index -> pieces

    def _extent(self, k: int) -> tuple[int, int]:
        """File offsets of block k (counted from the tensor's first byte)."""
        return self.start + k * BLOCK, min(self.end, self.start + (k + 1) * BLOCK)

    @property
    def _count(self) -> int:
        return -(-(self.end - self.start) // BLOCK)

    def add(self, offset: int, data: bytes | memoryview) -> None:
        """Feed `data`, the file's bytes at `offset`; bytes outside [start, end) are ignored."""
        lo, hi = max(self.start, offset), min(self.end, offset + len(data))
        if lo >= hi:
            return
        view = memoryview(data)
        for k in range((lo - self.start) // BLOCK, (hi - 1 - self.start) // BLOCK + 1):
            bs, be = self._extent(k)
            ps, pe = max(bs, lo), min(be, hi)
            piece = view[ps - offset:pe - offset]
            if (ps, pe) == (bs, be):
                d = self._hash(piece)
                with self._lock:
                    self._blocks[k] = d
                continue
            with self._lock:
                pieces = self._partial.setdefault(k, [])
                pieces.append((ps, bytes(piece)))
                if sum(len(p) for _, p in pieces) < be - bs:
                    continue
                del self._partial[k]
            whole = b"".join(p for _, p in sorted(pieces))
            d = self._hash(whole)
            with self._lock:
                self._blocks[k] = d

    def _hash(self, data: bytes | memoryview) -> bytes:
        h = new_hasher(self.algo)
        h.update(data)
        return h.digest()

    @property
    def complete(self) -> bool:
        with self._lock:
            return not self._partial and len(self._blocks) == self._count

    def hexdigest(self) -> str:
        if not self.complete:
            raise ValueError("not every byte of the range was fed")
        return self._hash(b"".join(self._blocks[k] for k in range(self._count))).hex()


@dataclass
class _FilePlan:
    header: Header
    digests: list[TensorDigest]
    starts: list[int]
    changed: bool = False


class TensorObserver:
    """push's FileObserver (core/push.py) that records tensors of `.safetensors` files.

    `files` maps each pushed path to its local path; headers are read here, before the upload
    starts, so that every later slice can be routed to the tensors it overlaps.
    """

    def __init__(self, files: Iterable[tuple[str, str]]) -> None:
        self._plans: dict[str, _FilePlan] = {}
        for path, abspath in files:
            if not is_safetensors(path):
                continue
            header = read_header(abspath)
            if header is None:
                continue
            self._plans[path] = _FilePlan(
                header=header, digests=[TensorDigest(t[3], t[4]) for t in header.tensors],
                starts=[t[3] for t in header.tensors])

    def add(self, path: str, header: Header) -> None:
        """Record the tensors of `path` from a header already parsed (a file being written,
        whose header was seen first: core/streampush.py)."""
        self._plans[path] = _FilePlan(
            header=header, digests=[TensorDigest(t[3], t[4]) for t in header.tensors],
            starts=[t[3] for t in header.tensors])

    def use_hash(self, algo: str) -> None:
        """Digest tensors with the lake's hash; push calls it once it has read the lake header
        (the observer is made before), before any byte is read."""
        for plan in self._plans.values():
            plan.digests = [TensorDigest(t[3], t[4], algo) for t in plan.header.tensors]

    def __bool__(self) -> bool:
        return bool(self._plans)

    def on_read(self, path: str, offset: int, data: bytes) -> None:
        plan = self._plans.get(path)
        if plan is None:
            return
        end = offset + len(data)
        raw = plan.header.raw
        if offset < len(raw):  # the bytes uploaded must be the header we planned with
            n = min(end, len(raw)) - offset
            if data[:n] != raw[offset:offset + n]:
                plan.changed = True
        # tensors are sorted and disjoint: start from the last one beginning before `offset`
        i = max(0, bisect.bisect_right(plan.starts, offset) - 1)
        view = memoryview(data)
        while i < len(plan.digests) and plan.starts[i] < end:
            plan.digests[i].add(offset, view)
            i += 1

    def entry_fields(self, path: str, size: int) -> dict[str, Any]:
        plan = self._plans.get(path)
        if plan is None:
            return {}
        if plan.changed:
            from ..errors import SourceChanged

            raise SourceChanged(f"{path} changed while it was being pushed (its safetensors "
                                "header differs); nothing was committed",
                                hint="push again once the writer is done")
        if not all(d.complete for d in plan.digests):
            return {}  # cannot happen if every byte was observed; then record nothing
        return {"tensors": tuple(
            TensorInfo(name=t[0], dtype=t[1], shape=t[2], start=t[3], end=t[4],
                       digest=d.hexdigest())
            for t, d in zip(plan.header.tensors, plan.digests))}
