"""Reading chunk objects: the one place that turns a stored object into verified raw bytes.

Every read path (pull, cat, LakeFile, tensor reads, verify --read-data, the cache) goes through
`open_object`, so a frame is decoded and checked the same way everywhere: the bytes handed on
are the ones whose digest names the chunk, or the caller gets IntegrityError (exit 5) naming
the object and the version.  Encoding rules: docs/format.md, "Chunk encodings".
"""
from __future__ import annotations

import mmap
import threading
from typing import Callable

from ..errors import CkptlakeError, IntegrityError, MissingChunk, NewerEncoding, NotFound
from ..forks import reset_in_child
from ..format import codecs, layout
from ..format.header import digest as hash_digest
from ..store.base import Store


_MMAP_FIXED = False
# Set by the CLI, which owns its process.  A library caller (a training process) keeps its
# allocator as it is: mallopt is process-wide.
TUNE_MALLOC = False


def fix_mmap_threshold() -> None:
    """Have glibc serve (and return) every allocation of 1 MiB and more with mmap.

    Why: encoding allocates chunk-sized planes and frames in several threads.  glibc raises
    its mmap threshold after each large free (up to 32 MiB), after which such buffers come from
    per-thread arenas that keep the freed memory: measured on a 1 GiB fp32 push, peak RSS
    314 MiB with the default, 248 MiB with a fixed 1 MiB threshold, at ~4 s more system time
    per GiB (page faults of fresh mappings); a pull of it, 611 -> 261 MiB together with the
    bounded decoders (docs/benchmarks.md).  Only in the CLI (TUNE_MALLOC), only once chunks
    are encoded or decoded; nothing happens on other C libraries."""
    global _MMAP_FIXED
    if _MMAP_FIXED or not TUNE_MALLOC:
        return
    _MMAP_FIXED = True
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD (fixing it also stops the adjustment)
    except (OSError, AttributeError):
        pass


def anonymous(n: int) -> mmap.mmap:
    """A zero-filled, page-aligned buffer of n bytes of private anonymous memory.

    Why not mmap.mmap(-1, n): Python maps it MAP_SHARED, i.e. shmem, whose page faults go
    through the page cache (shmem_get_folio, LRU): with perf on a whole-file torch load, 6.5 %
    of the client's CPU was shmem_get_folio_gfp; writing 512 MiB into a fresh buffer here cost
    0.58 CPU-s/GiB shared, 0.49 private.  Private memory faults as cheaply as malloc's.
    (Not MADV_HUGEPAGE: with THP's defrag in "madvise" mode the faults of such a buffer
    compact memory synchronously; once measured here: 13 system CPU-s per GiB.)"""
    flags = getattr(mmap, "MAP_PRIVATE", 0)
    return mmap.mmap(-1, n, flags=flags) if flags else mmap.mmap(-1, n)


# Decoding holds a chunk-sized result (and any plane it could not decode in place, see
# codecs.decode) until it is written: at most this many at a time keeps a pull's memory bound
# (concurrency x chunk, plus this many x 1-1.75 chunks).
# Not the number of cores: a slot is held through the chunk's write as well, so with 2 slots
# (2 cores) fetch threads sat waiting for a slot while the slots waited on the disk.  Measured
# on a 2 GiB bf16 pull, 2 cores (docs/benchmarks.md, "Decode slots"): 2 slots 3.91 s at 197 MiB
# peak RSS, 4 slots 3.36 s at 253 MiB, 6 slots 3.33 s at 300 MiB.  With planes decoded in
# place and the chunks' unaligned edges written in batches (pull._Leftovers), 4 slots peak at
# 214 MiB and 6 at 246 MiB; 6 measured 0-4 % faster (medians of 5-6 interleaved pulls): kept 4.
DECODERS = threading.BoundedSemaphore(4)


class ChunkBuffers:
    """Page-aligned chunk-sized buffers, reused across chunks: what a pull decodes frames into
    (taken under DECODERS), what a push reads source chunks and assembles frames in.  Why not a
    fresh buffer per chunk: its pages are faulted in anew every time (under the CLI's fixed
    mmap threshold, a fresh mapping per chunk: most of a compressed pull's system time, ~1 of a
    push's ~6 client CPU-s per GiB), and it is not page-aligned, so a pull could not write the
    decoded chunk with O_DIRECT.  At most `keep` idle buffers stay: the callers bound how many
    are in use at once (decoders, upload workers)."""

    def __init__(self, capacity: int = 0, keep: int = 8) -> None:
        self.capacity = capacity
        self.keep = keep
        self._free: list[mmap.mmap] = []
        self._lock = threading.Lock()

    def take(self, n: int) -> mmap.mmap | None:
        if n > codecs.MAX_RAW:
            return None  # the decoder refuses such a frame anyway
        with self._lock:
            for i, b in enumerate(self._free):
                if len(b) >= n:
                    return self._free.pop(i)
        return anonymous(max(n, self.capacity, 1))

    def give(self, buf: mmap.mmap | None) -> None:
        if buf is not None:
            with self._lock:
                if len(self._free) < self.keep:
                    self._free.append(buf)


class CodecUnavailable(CkptlakeError):
    """A chunk needs a codec library that is not installed (the data is fine)."""


def open_object(algo: str, d: str, data: bytes | bytearray | memoryview, *,
                raw_size: int | None, where: str, key: str | None = None,
                into: bytearray | memoryview | mmap.mmap | None = None
                ) -> bytes | bytearray | memoryview:
    """The raw bytes of chunk `d` from its stored object `data`, verified against `d`.

    into: where a frame is decoded to, if big enough for it (codecs.decode); the result is
    then a view of it, valid until the caller reuses the buffer.

    raw_size: the chunk's raw length when the reader knows it (a whole-chunk reference); an
    object of exactly that size is raw.  Otherwise a frame is decoded, and an object that is
    not a frame (or whose decoding does not match) must itself hash to `d`: a raw chunk may
    start with the frame magic, and the digest decides.
    """
    reason = "it does not match its digest"
    newer: str | None = None  # a frame of an encoding this reader does not know
    if raw_size is None or len(data) != raw_size:
        if codecs.looks_framed(data) and raw_size is not None and len(data) < raw_size \
                and codecs.frame_rawlen(data) != raw_size:
            # Refused unread: decoding allocates what the head claims (up to MAX_RAW), and a
            # 32 KB object claiming 1 GiB made a pull hold 1 GiB per decode slot.  Either
            # side may be the damaged one: a manifest that understates a good chunk too.
            reason = (f"its {codecs.describe(data)} frame holds {codecs.frame_rawlen(data)} "
                      f"bytes, but the manifest says {raw_size} (the manifest or the chunk "
                      "is damaged)")
        elif codecs.looks_framed(data) and (raw_size is None or len(data) < raw_size):
            try:
                rawlen = codecs.frame_rawlen(data)
                out = codecs.decode(data, into if into is not None and len(into) >= rawlen
                                    else None)
            except codecs.MissingCodec as e:
                raise CodecUnavailable(f"chunk {key or layout.chunk_key(d)} of {where}: {e}",
                                       hint="install it and try again") from None
            except codecs.UnknownEncoding as e:
                newer = f"{codecs.describe(data)} frame: {e}"
            except codecs.CodecError as e:
                reason = f"{codecs.describe(data)} frame: {e}"
            else:
                if ((raw_size is None or len(out) == raw_size)
                        and hash_digest(algo, out) == d):
                    return out
                reason = (f"its {codecs.describe(data)} frame does not match its digest "
                          "once decoded")
    if (raw_size is None or len(data) == raw_size) and hash_digest(algo, data) == d:
        return data  # a raw chunk that happens to start like a frame
    if newer is not None:
        raise NewerEncoding(f"chunk {key or layout.chunk_key(d)} of {where} was written by a "
                            f"newer ckptlake: its {newer}",
                            hint="upgrade ckptlake (pip install -U ckptlake) to read it; "
                                 "nothing was written from it")
    raise IntegrityError(f"chunk {key or layout.chunk_key(d)} of {where} is corrupt: {reason}",
                         hint="nothing was written from it; run: ckptlake verify --read-data")


MISSING_HINT = ("run `ckptlake verify` to find every version it affects; pushing the same "
                "source again restores the chunk")


def missing(d: str, where: str) -> MissingChunk:
    return MissingChunk(f"chunk {layout.chunk_key(d)} of {where} is missing from the lake",
                        hint=MISSING_HINT)


def missing_from(store: Store, d: str, where: str) -> CkptlakeError:
    """missing(), unless the version `where` names ("ARTIFACT@vN" or "ARTIFACT@vN:PATH") was
    deleted meanwhile (gc or rm, then a sweep under the reader): then NotFound from its
    tombstone (catalog.deleted_meanwhile).  `store` may be a replica's wrapper: manifests are
    read from the lake through it."""
    err = missing(d, where)
    artifact, sep, number = where.split(":", 1)[0].rpartition("@v")
    if not (sep and number.isdigit()):
        return err
    from .catalog import deleted_meanwhile

    return deleted_meanwhile(store, artifact, int(number), err)


def fetch(store: Store, algo: str, d: str, *, raw_size: int | None, where: str
          ) -> bytes | bytearray | memoryview:
    """GET the whole chunk object and return its verified raw bytes."""
    try:
        data = store.get(layout.chunk_key(d))
    except NotFound:
        raise missing_from(store, d, where) from None
    return open_object(algo, d, data, raw_size=raw_size, where=where)


class EveryChunk(dict):
    """A `stored` map that names every chunk: read them all whole.  Partial readers retry with
    it when a ranged read fails its check, since a manifest's hint may be stale (a chunk
    re-stored encoded after the manifest was written, or a version whose pusher did not
    record hints): the object, not the hint, decides (docs/format.md, "Chunk encodings")."""

    def __contains__(self, d: object) -> bool:
        return True

    def get(self, d: object, default: object = None) -> object:
        return default


def retry_whole(stored: dict[str, int], digests: "set[str] | list[str]") -> bool:
    """Is reading every chunk whole worth a second try after a failed check?  Only when
    some of these chunks were read by range (else the data really is bad)."""
    return not isinstance(stored, EveryChunk) and any(d not in stored for d in digests)


class RangeReader:
    """Byte ranges of chunk objects for readers that read part of a chunk (packed files, single
    tensors).  A raw chunk is read with a ranged GET as before; a chunk the manifest records
    as stored encoded is fetched whole, decoded and verified once, then served from memory
    (`keep` decoded chunks, the most recent ones)."""

    def __init__(self, store: Store, algo: str, stored: dict[str, int], where: str,
                 keep: int = 2, on_fetch: Callable[[int], None] | None = None) -> None:
        self.store, self.algo, self.stored, self.where = store, algo, stored, where
        self.keep, self.on_fetch = keep, on_fetch
        self._decoded: dict[str, bytes | bytearray | memoryview] = {}  # least recent first
        self._lock = threading.Lock()
        self._fetching: dict[str, threading.Lock] = {}  # one fetch per digest at a time
        reset_in_child(self)

    def _after_fork(self) -> None:
        """(See ckptlake/forks.py.)  A fetch's gate held by a parent thread at the fork would
        stay held in the child."""
        self._lock, self._fetching = threading.Lock(), {}

    def encoded(self, d: str) -> bool:
        return d in self.stored

    def whole(self, d: str, count: Callable[[int], None] | None = None
              ) -> bytes | bytearray | memoryview:
        """Thread-safe: concurrent readers of one chunk wait for a single fetch.  `count`
        (else on_fetch) hears the bytes fetched, if this call fetched."""
        with self._lock:
            gate = self._fetching.setdefault(d, threading.Lock())
        with gate:
            with self._lock:
                data = self._decoded.pop(d, None)
                if data is not None:
                    self._decoded[d] = data  # most recently used
                    return data
            data = fetch(self.store, self.algo, d, raw_size=None, where=self.where)
            report = count or self.on_fetch
            if report is not None:
                report(self.stored.get(d, len(data)))
            with self._lock:
                while len(self._decoded) >= self.keep:
                    self._decoded.pop(next(iter(self._decoded)))
                self._decoded[d] = data
            return data

    def get_range(self, d: str, start: int, length: int,
                  count: Callable[[int], None] | None = None) -> bytes | memoryview:
        if self.encoded(d):
            return memoryview(self.whole(d, count))[start:start + length]
        try:
            data = self.store.get_range(layout.chunk_key(d), start, length)
        except NotFound:
            raise missing_from(self.store, d, self.where) from None
        report = count or self.on_fetch
        if report is not None:
            report(len(data))
        return data
