"""Chunk encodings: how a chunk object's bytes relate to the chunk's (raw) bytes.

A chunk's identity is the digest of its raw bytes; the object under its key holds either those
bytes as they are, or a *frame* that decodes to them (docs/format.md, "Chunk encodings").  This
module is pure data: it encodes, decodes and chooses, it never talks to a store and never checks
digests (core/chunkio.py does both, so that every read path verifies the decoded bytes).

Why byte/bit planes: trained float weights have a low-entropy exponent and a noise-like
mantissa.  Interleaved, a generic compressor sees noise everywhere (zstd alone saves ~8 % on
fp32); split into planes, the exponent plane compresses ~3x and the mantissa planes are stored
as they are, which is where the ~17 % (fp32) and ~33 % (bf16) come from.

Frame (all integers little-endian), 16-byte head then payload:

    magic   4  b"CKZ\\x01"
    codec   1  1 = zstd, 2 = planes
    param   1  planes: the transform (PLANES_*); zstd: 0
    flags   2  0 (readers refuse anything else)
    rawlen  8  length of the decoded bytes
    payload    zstd: one zstd frame of rawlen bytes
               planes: count (1 byte), then per plane: mode (1 byte, 0 stored / 1 zstd),
               length (8 bytes), then the planes' bytes in order, then the last
               rawlen % width bytes of the chunk as they are (the planes cover the rest).

A frame is only ever written when it is shorter than the raw bytes, so an object whose size
equals the chunk's raw length is raw, whatever bytes it starts with.
"""
from __future__ import annotations

import mmap
import struct
import threading
from dataclasses import dataclass

MAGIC = b"CKZ\x01"
HEAD = struct.Struct("<4sBBHQ")  # magic, codec, param, flags, rawlen
PLANE = struct.Struct("<BQ")  # mode, length
CODEC_ZSTD = 1
CODEC_PLANES = 2
# Plane transforms.  BYTES2/BYTES4: byte k of every 2-/4-byte element forms plane k.
# BF16: plane 0 = the 8 exponent bits of each little-endian bf16/fp32-high-half element, plane 1
# = sign bit + 7 mantissa bits (what ZipNN does: the exponent is the only compressible part,
# and bf16's byte boundary cuts it in two).  FP32: planes 0 and 1 as for BF16 from the upper
# 16 bits of each element (exponent; sign + top 7 mantissa bits), plane 2 = byte 0 and plane
# 3 = byte 1 of the element (the low 16 mantissa bits).
PLANES_BYTES2 = 1
PLANES_BYTES4 = 2
PLANES_BF16 = 3
PLANES_FP32 = 4
_WIDTH = {PLANES_BYTES2: 2, PLANES_BYTES4: 4, PLANES_BF16: 2, PLANES_FP32: 4}
MODE_STORED = 0
MODE_ZSTD = 1
# Never encode chunks larger than this: readers size buffers from raw sizes and may read big
# chunks in ranges (multipart), which a frame does not allow; and the encoder's memory is a
# small multiple of the chunk.
MAX_ENCODED_CHUNK = 64 * 1024 * 1024
# Below this, a frame's head and a zstd frame's overhead eat the gain: stored raw.
MIN_ENCODED_CHUNK = 4096
ZSTD_LEVEL = 1
# A chunk is worth encoding only if a sample of it saves this much.
WORTH = 0.97
# A plane is stored compressed only if that saves this much of it.  Why not WORTH: a plane
# costs a zstd decode at ~1.3 GB/s of plane on every pull whatever it saves, and a plane that
# saves a few % (the second mantissa byte of uniform-random floats: 0.967; an AdamW state's
# sign+mantissa plane: 0.959) is where a pull's decode time goes for <1 % of the chunk
# (docs/benchmarks.md, "Plane threshold").  Trained weights compress only their exponent
# plane (0.29-0.33), far below either bound.
PLANE_WORTH = 0.90
SAMPLE = 256 * 1024
# The largest decoded size a frame may claim; decode refuses more (a hostile frame must not
# make a reader allocate a terabyte).
MAX_RAW = 1024 * 1024 * 1024

COMPRESSION_MODES = ("auto", "none")


class CodecError(Exception):
    """An object that claims to be a frame but is not one this reader can decode."""


class UnknownEncoding(CodecError):
    """A frame whose head names a codec, parameter or flag this reader does not know: what a
    newer writer's encoding looks like here (readers refuse it, docs/format.md), so the
    reader says to upgrade rather than that the chunk is corrupt."""


class MissingCodec(CodecError):
    """The frame is well-formed but needs a library that is not installed."""


def _zstd():
    try:
        import zstandard
    except ImportError:  # pragma: no cover - a dependency; kept for a clear message
        raise MissingCodec("this chunk is zstd-compressed and the `zstandard` package is not "
                           "installed (pip install zstandard)") from None
    return zstandard


# --- transforms -----------------------------------------------------------------------------


def _fill(n: int, byte: int) -> int:
    return int.from_bytes(bytes((byte,)) * n, "little")


def _numpy():
    """numpy, if installed: the bit transforms run at memory speed with it, and ~30 MB/s in
    pure Python without it (same bytes either way; the encoder avoids them without numpy)."""
    try:
        import numpy
    except ImportError:
        return None
    return numpy


def bit_planes_fast() -> bool:
    return _numpy() is not None


# Elements per block of the numpy transforms, whose temporaries are per-thread arrays of this
# size reused for every block (_block_scratch), written through `out=`: no allocation per block
# (a fresh temporary of >= 1 MiB is a fresh mmap under the CLI's fixed glibc threshold,
# core/chunkio.fix_mmap_threshold) and no copy of a result into place.  At 2^16 elements the
# three 128 KiB temporaries stay in cache while the interpreter's cost per numpy call is paid
# over 2-4x fewer blocks than at the 2^15 of fresh temporaries before: measured bf16 join
# 2.4 -> 3.0-3.3 GB/s, fp32 1.8 -> 2.5 GB/s (one core, /tmp micro); a 2 GiB bf16 pull spent
# ~0.6 of its 5.1 client CPU-s in the interpreter driving the 2^15 blocks (perf).
_BLOCK = 1 << 16
_block_local = threading.local()


def _block_scratch(np):
    """Three uint16 arrays of _BLOCK elements, this thread's own (decoders run in parallel)."""
    arrays = getattr(_block_local, "arrays", None)
    if arrays is None:
        arrays = _block_local.arrays = tuple(np.empty(_BLOCK, dtype=np.uint16)
                                             for _ in range(3))
    return arrays


def _top_halves(np, exp, sm, out, a, b) -> None:
    """out = the 16-bit top halves (sign, exponent, 7 mantissa bits) from the exponent and
    sign+mantissa planes (uint8 arrays of out's length; a, b: uint16 scratch as long)."""
    np.left_shift(exp, 7, out=a, dtype=np.uint16)
    # sm * 257 puts sm in both bytes: & 0x807F keeps its sign bit at bit 15 and its 7
    # mantissa bits at 0-6 (4 passes over the block instead of 7: join +14 %, bf16)
    np.multiply(sm, 257, out=b, dtype=np.uint16)
    b &= 0x807F
    np.bitwise_or(a, b, out=out)


class _Scratch:
    """Reusable plane-sized buffers: encoding and decoding need a few chunk-sized planes per
    chunk, and allocating them fresh for every chunk costs page faults (and, under the fixed
    mmap threshold, an mmap/munmap each).  At most `keep` idle buffers are kept, so what stays
    allocated is bounded by the callers' own concurrency (push and pull bound their encoders
    and decoders), not by the number of threads that ever encoded."""

    def __init__(self, keep: int = 8) -> None:
        self.keep = keep
        self._idle: list[bytearray] = []
        self._lock = threading.Lock()

    def take(self, n: int) -> bytearray:
        with self._lock:
            for i, b in enumerate(self._idle):
                if len(b) >= n:
                    return self._idle.pop(i)
            if self._idle and len(self._idle) >= self.keep:
                self._idle.pop(0)  # too small for what is asked now: let it go
        return bytearray(n)

    def give(self, *bufs: bytearray) -> None:
        with self._lock:
            for b in bufs:
                if len(self._idle) < self.keep:
                    self._idle.append(b)


_SCRATCH = _Scratch()


def split(data: bytes | memoryview, transform: int,
          buffers: list[bytearray] | None = None) -> list[bytes | bytearray | memoryview]:
    """The planes of `data` (whose length is a multiple of the transform's width).  With
    `buffers` (one per plane, each at least len(data) // width long), the bit transforms write
    the planes into them and return views of them."""
    width = _WIDTH[transform]
    if transform in (PLANES_BYTES2, PLANES_BYTES4):
        data = bytes(data) if not isinstance(data, bytes) else data
        return [data[k::width] for k in range(width)]
    np = _numpy()
    if np is not None:
        words = np.frombuffer(data, dtype="<u2" if width == 2 else "<u4")
        n = len(words)
        count = 2 if width == 2 else 4
        planes: list = ([memoryview(b)[:n] for b in buffers] if buffers is not None
                        else [bytearray(n) for _ in range(count)])
        views = [np.frombuffer(p, dtype=np.uint8) for p in planes]
        low_bytes = np.frombuffer(data, dtype=np.uint8).reshape(-1, 4) if width == 4 else None
        a_all, b_all, c_all = _block_scratch(np)
        for s in range(0, n, _BLOCK):
            e = min(s + _BLOCK, n)
            a, b = a_all[:e - s], b_all[:e - s]
            if width == 2:
                top = words[s:e]
            else:  # the high half of each fp32 word, made contiguous (faster than strided)
                top = c_all[:e - s]
                np.right_shift(words[s:e], 16, out=top, casting="unsafe")
            # exponent = bits 7-14; sign (bit 15) and mantissa (bits 0-6) meet in the low
            # byte of m | m >> 8 with m = top & 0x807F; the casts keep the low byte
            np.right_shift(top, 7, out=views[0][s:e], casting="unsafe")
            np.bitwise_and(top, 0x807F, out=a)
            np.right_shift(a, 8, out=b)
            a |= b
            np.copyto(views[1][s:e], a, casting="unsafe")
            if low_bytes is not None:
                views[2][s:e] = low_bytes[s:e, 0]
                views[3][s:e] = low_bytes[s:e, 1]
        return planes
    data = bytes(data) if not isinstance(data, bytes) else data
    hi, lo = data[width - 1::width], data[width - 2::width]
    n = len(hi)
    h, low = int.from_bytes(hi, "little"), int.from_bytes(lo, "little")
    # exponent = low 7 bits of the top byte, then the top bit of the byte below it
    exp_i = ((h << 1) & _fill(n, 0xFE)) | ((low >> 7) & _fill(n, 0x01))
    sm_i = (h & _fill(n, 0x80)) | (low & _fill(n, 0x7F))
    out: list[bytes | bytearray] = [exp_i.to_bytes(n, "little"), sm_i.to_bytes(n, "little")]
    if transform == PLANES_FP32:
        out += [data[0::4], data[1::4]]
    return out


def join(planes: list[bytes | memoryview], transform: int, rawlen: int,
         into: bytearray | memoryview | None = None) -> bytearray | memoryview:
    """The elements the planes hold, written into `into` (a writable buffer of exactly
    `rawlen` bytes, e.g. a view into a decode buffer) if given, else into a new buffer."""
    width = _WIDTH[transform]
    n = rawlen // width
    if any(len(p) != n for p in planes):
        raise CodecError("plane lengths do not match the frame's raw length")
    if into is not None and len(into) != rawlen:
        raise ValueError(f"join into {len(into)} bytes, expected {rawlen}")
    out = into if into is not None else bytearray(rawlen)
    _join(planes, transform, n, width, out)
    return out


def _join(planes: list[bytes | memoryview], transform: int, n: int, width: int,
          out: bytearray | memoryview) -> None:
    if transform in (PLANES_BYTES2, PLANES_BYTES4):
        for k, p in enumerate(planes):
            out[k::width] = p
        return
    # Plane 0 or 1 of a bit transform may lie in the last n bytes of `out` itself (decode):
    # block [s, e) of it is read (into scratch) before out's bytes [width*s, width*e) are
    # written, and those never reach past the plane's byte e, so nothing is overwritten unread.
    np = _numpy()
    if np is not None:
        views = [np.frombuffer(p, dtype=np.uint8) for p in planes]
        halves = np.frombuffer(out, dtype="<u2")
        a_all, b_all, c_all = _block_scratch(np)
        if width == 2:  # bf16: each 16-bit word is a top half, computed in place
            for s in range(0, n, _BLOCK):
                e = min(s + _BLOCK, n)
                _top_halves(np, views[0][s:e], views[1][s:e], halves[s:e], a_all[:e - s],
                            b_all[:e - s])
            return
        # fp32: top halves computed contiguously, then written every other 16-bit word; the
        # two low bytes are stored planes, copied into their byte columns
        tops, low_bytes = halves.reshape(-1, 2)[:, 1], np.frombuffer(out, np.uint8).reshape(-1, 4)
        for s in range(0, n, _BLOCK):
            e = min(s + _BLOCK, n)
            c = c_all[:e - s]
            _top_halves(np, views[0][s:e], views[1][s:e], c, a_all[:e - s], b_all[:e - s])
            tops[s:e] = c
            low_bytes[s:e, 0] = views[2][s:e]
            low_bytes[s:e, 1] = views[3][s:e]
        return
    exp_i, sm_i = int.from_bytes(planes[0], "little"), int.from_bytes(planes[1], "little")
    hi = (sm_i & _fill(n, 0x80)) | ((exp_i >> 1) & _fill(n, 0x7F))
    lo = ((exp_i << 7) & _fill(n, 0x80)) | (sm_i & _fill(n, 0x7F))
    out[width - 1::width] = hi.to_bytes(n, "little")
    out[width - 2::width] = lo.to_bytes(n, "little")
    if transform == PLANES_FP32:
        out[0::4], out[1::4] = planes[2], planes[3]
    return


# --- encoding -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """What the encoder decided for one chunk: a codec and its transform, from a sample."""

    codec: int  # 0 = raw
    transform: int = 0


RAW = Choice(0)
# dtype hints (safetensors / torch names) -> the transform that suits them
_HINTS = {"BF16": PLANES_BF16, "bfloat16": PLANES_BF16, "F16": PLANES_BYTES2,
          "float16": PLANES_BYTES2, "F32": PLANES_FP32, "float32": PLANES_FP32,
          "F64": None, "float64": None}


def _sample(data: bytes | memoryview, width: int = 4) -> bytes:
    """Up to SAMPLE bytes from the middle of `data`, element-aligned (headers and padding sit
    at the edges of a chunk; the middle is what most of it looks like)."""
    n = len(data)
    if n <= SAMPLE:
        return bytes(data[:n - n % width])
    start = (n // 2 - SAMPLE // 2) // width * width
    return bytes(data[start:start + SAMPLE])


def _plane_compressor(zstd):
    """zstd for exponent planes: a few distinct symbols, few real repeats.  Level 1 spends its
    time finding short matches that cost more than they save; a tiny hash table and the
    longest minimum match leave it mostly to the entropy coder.  Measured on trained bf16
    exponents (bench/codec_bench.py): 0.338 -> 0.296 of the plane, 260 -> 430 MB/s.  Any zstd
    decoder reads the result (parameters are the encoder's business)."""
    return zstd.ZstdCompressor(compression_params=zstd.ZstdCompressionParameters(
        window_log=20, hash_log=6, chain_log=6, search_log=1, min_match=7, target_length=0,
        strategy=zstd.STRATEGY_FAST))


def _zlen(cctx, data: bytes) -> int:
    return len(cctx.compress(data)) if data else 0


def _planes_cost(cctx, sample: bytes, transform: int) -> int:
    """Size of the sample's frame under `transform` (cctx: the plane compressor)."""
    width = _WIDTH[transform]
    sample = sample[:len(sample) - len(sample) % width]
    return sum(_plane_cost(cctx, p) for p in split(sample, transform)) + 16 + 9 * width


def _plane_cost(cctx, plane) -> int:
    packed = _zlen(cctx, plane)
    return packed if packed < len(plane) * PLANE_WORTH else len(plane)


def choose(data: bytes | memoryview, dtype: str | None = None) -> Choice:
    """Pick an encoding for `data` from a sample (and the dtype hint, if the pusher knows the
    tensor type): the candidate whose sample compresses smallest, or raw when nothing saves
    more than 3 %."""
    if not MIN_ENCODED_CHUNK <= len(data) <= MAX_ENCODED_CHUNK:
        return RAW
    zstd = _zstd()
    cctx = zstd.ZstdCompressor(level=ZSTD_LEVEL)
    pctx = _plane_compressor(zstd)
    sample = _sample(data)
    if not sample:
        return RAW
    hinted = _HINTS.get(dtype) if dtype else None
    if dtype and dtype in _HINTS and hinted is None:
        candidates = [Choice(CODEC_ZSTD), Choice(CODEC_PLANES, PLANES_BYTES4)]
    elif hinted is not None:
        if not bit_planes_fast():
            hinted = {PLANES_BF16: PLANES_BYTES2, PLANES_FP32: PLANES_BYTES4}.get(hinted, hinted)
        candidates = [Choice(CODEC_PLANES, hinted)]
    else:
        fast = bit_planes_fast()
        candidates = [Choice(CODEC_ZSTD),
                      Choice(CODEC_PLANES, PLANES_BF16 if fast else PLANES_BYTES2),
                      Choice(CODEC_PLANES, PLANES_FP32 if fast else PLANES_BYTES4)]
    best, best_cost = RAW, len(sample) * WORTH
    for c in candidates:
        if c.codec == CODEC_ZSTD:
            cost = _zlen(cctx, sample) + 16
        else:
            cost = _planes_cost(pctx, sample, c.transform)
        if cost < best_cost:
            best, best_cost = c, cost
    return best


def encode(data: bytes | memoryview, choice: Choice,
           into: bytearray | memoryview | mmap.mmap | None = None
           ) -> bytearray | memoryview | None:
    """The frame for `data` under `choice`, or None when it would not be shorter than the raw
    bytes (then the chunk is stored raw).

    into: a writable buffer of at least len(data) bytes to assemble the frame in (a frame is
    always shorter); the result is then a view of its start.  A pusher reuses a few such
    buffers instead of joining a fresh chunk-sized frame per chunk (each a fresh mapping to
    fault in, under the CLI's fixed mmap threshold).  Without it, a new bytearray."""
    if choice.codec == 0:
        return None
    n = len(data)
    if into is not None and len(into) < n:
        raise ValueError(f"encode into {len(into)} bytes, expected at least {n}")
    zstd = _zstd()
    out = memoryview(into if into is not None else bytearray(n)).cast("B")
    if choice.codec == CODEC_ZSTD:
        packed = zstd.ZstdCompressor(level=ZSTD_LEVEL).compress(data)
        size = HEAD.size + len(packed)
        if size >= n:
            return None
        HEAD.pack_into(out, 0, MAGIC, CODEC_ZSTD, 0, 0, n)
        out[HEAD.size:size] = packed
        return _frame(out, size, into)
    cctx = _plane_compressor(zstd)
    width = _WIDTH[choice.transform]
    aligned = n - n % width
    tail = memoryview(data)[aligned:]
    count = width if choice.transform in (PLANES_BYTES2, PLANES_BYTES4) else \
        (2 if width == 2 else 4)
    scratch = None
    if choice.transform in (PLANES_BF16, PLANES_FP32) and bit_planes_fast():
        scratch = [_SCRATCH.take(aligned // width) for _ in range(count)]
    try:
        planes = split(memoryview(data)[:aligned], choice.transform, scratch)
        pos = HEAD.size + 1 + PLANE.size * len(planes)  # the plane heads are written last
        for k in range(len(planes)):
            plane = planes[k]
            packed = cctx.compress(plane) if _worth(cctx, plane) else None
            if packed is not None and len(packed) < len(plane) * PLANE_WORTH:
                mode, body = MODE_ZSTD, packed
            else:
                mode, body = MODE_STORED, plane
            if pos + len(body) + len(tail) >= n:
                return None
            PLANE.pack_into(out, HEAD.size + 1 + PLANE.size * k, mode, len(body))
            out[pos:pos + len(body)] = body
            pos += len(body)
            planes[k] = b""  # released: only what is stored stays
        out[pos:pos + len(tail)] = tail
        pos += len(tail)
        HEAD.pack_into(out, 0, MAGIC, CODEC_PLANES, choice.transform, 0, n)
        out[HEAD.size] = len(planes)
        return _frame(out, pos, into)
    finally:
        if scratch is not None:
            planes = plane = None  # type: ignore[assignment]  # views into the scratch
            _SCRATCH.give(*scratch)


def _frame(out: memoryview, size: int, into: object) -> bytearray | memoryview:
    if into is not None:
        return out[:size]
    buf = out.obj
    out.release()
    del buf[size:]  # type: ignore[union-attr]  # our own bytearray: shrink it in place
    return buf  # type: ignore[return-value]


def _worth(cctx, plane: bytes) -> bool:
    """Mantissa planes are noise: skip compressing them when a sample says so."""
    if len(plane) <= 2 * SAMPLE // 4:
        return True
    sample = plane[len(plane) // 2:len(plane) // 2 + SAMPLE // 4]
    return _zlen(cctx, sample) < len(sample) * PLANE_WORTH


def encode_auto(data: bytes | memoryview, dtype: str | None = None,
                into: bytearray | memoryview | mmap.mmap | None = None
                ) -> bytearray | memoryview | None:
    """Choose and encode (into `into`, see encode): the frame, or None to store `data` raw."""
    return encode(data, choose(data, dtype), into)


# --- decoding -------------------------------------------------------------------------------


def looks_framed(data: bytes | memoryview) -> bool:
    return len(data) >= HEAD.size and bytes(data[:4]) == MAGIC


def frame_rawlen(data: bytes | memoryview) -> int:
    return HEAD.unpack_from(data)[4]


def head_of_frame(data: bytes | memoryview, rawlen: int) -> bool:
    """Whether `data` (an object's first HEAD.size bytes, or more) is the head of a frame of
    a known codec that decodes to `rawlen` bytes: what a deduplicating pusher reads of an
    object smaller than the raw chunk before trusting it (a damaged raw object fails it)."""
    if len(data) < HEAD.size:
        return False
    magic, codec, _param, flags, n = HEAD.unpack_from(data)
    return magic == MAGIC and codec in (CODEC_ZSTD, CODEC_PLANES) and flags == 0 and n == rawlen


# What a pusher reads of an object smaller than its raw chunk: the head and, for a planes frame,
# its plane table (at most 4 planes), from which the frame's exact size follows.
FRAME_PREFIX = HEAD.size + 1 + PLANE.size * 4


def frame_size(data: bytes | memoryview) -> int | None:
    """The exact size of the planes frame that `data` (its first FRAME_PREFIX bytes, or more)
    begins: the head, the plane table, the planes' stored lengths and the tail of raw bytes.
    None for a zstd frame (its size is not in its head), and for data that cannot begin a
    planes frame: an unknown transform, a plane count other than the transform's, too few
    bytes for the plane table, a plane mode this reader cannot decode, or a stored plane whose
    length is not the plane's size (decode refuses each of these, so none may pass here)."""
    if len(data) < HEAD.size + 1:
        return None
    _magic, codec, param, _flags, n = HEAD.unpack_from(data)
    width = _WIDTH.get(param)
    count = data[HEAD.size]
    # every transform stores one plane per byte of its element (bf16: exponent, sign+mantissa)
    if codec != CODEC_PLANES or width is None or count != width or \
            len(data) < HEAD.size + 1 + PLANE.size * count:
        return None
    table = [PLANE.unpack_from(data, HEAD.size + 1 + PLANE.size * k) for k in range(count)]
    if any(mode not in (MODE_STORED, MODE_ZSTD) for mode, _ in table) \
            or any(mode == MODE_STORED and length != n // width for mode, length in table):
        return None
    return HEAD.size + 1 + PLANE.size * count + sum(length for _, length in table) + n % width


def fits_frame(data: bytes | memoryview, rawlen: int, size: int) -> bool:
    """Whether an object of `size` bytes that begins with `data` (at least its first
    min(size, FRAME_PREFIX) bytes) can be a whole frame of `rawlen` raw bytes: its head says
    so and, for a planes frame, its plane table adds up to exactly `size` (a frame cut short,
    even inside its table, or with bytes after it, fails that).  A zstd frame passes on its
    head (its size is not in it).

    A frame this reader could not decode (a zstd parameter or plane mode it does not know, a
    newer writer's; a stored plane of the wrong length, a damaged one's) is no frame here: a
    push that took it for its chunk would commit a version it cannot pull.  Writing its own
    encoding over it instead is safe, as both decode to the bytes the key's digest names."""
    if not head_of_frame(data, rawlen) or rawlen > MAX_RAW:
        return False
    _magic, codec, param, _flags, _n = HEAD.unpack_from(data)
    if codec == CODEC_ZSTD:
        return param == 0
    return frame_size(data) == size


def describe(data: bytes | memoryview) -> str:
    """A frame's encoding in words (for verify and error messages)."""
    if not looks_framed(data):
        return "raw"
    _, codec, param, _, _ = HEAD.unpack_from(data)
    if codec == CODEC_ZSTD:
        return "zstd"
    names = {PLANES_BYTES2: "bytes2", PLANES_BYTES4: "bytes4", PLANES_BF16: "bf16",
             PLANES_FP32: "fp32"}
    return f"planes-{names.get(param, param)}" if codec == CODEC_PLANES else f"codec {codec}"


def decode(data: bytes | memoryview, into: bytearray | memoryview | None = None
           ) -> bytes | bytearray | memoryview:
    """The raw bytes a frame stands for.  CodecError if it is not a frame this reader knows or
    it is damaged; the caller still checks the result against the chunk's digest.

    into: a writable buffer of at least the frame's raw length (see frame_rawlen) to decode
    into, returned as a view of its first rawlen bytes: a reader that writes each chunk out
    before the next (a pull) reuses one buffer instead of faulting in a fresh chunk each time,
    and chooses its alignment (O_DIRECT writes need page-aligned memory)."""
    if not looks_framed(data):
        raise CodecError("not a ckptlake chunk frame")
    view = memoryview(data)
    magic, codec, param, flags, rawlen = HEAD.unpack_from(view)
    if flags != 0:
        raise UnknownEncoding(f"unknown frame flags {flags:#x}")
    if rawlen > MAX_RAW:
        raise CodecError(f"frame claims {rawlen} raw bytes, more than any chunk holds")
    if into is not None and len(into) < rawlen:
        raise ValueError(f"decode buffer of {len(into)} bytes for a frame of {rawlen}")
    out = memoryview(into)[:rawlen] if into is not None else None
    body = view[HEAD.size:]
    if codec == CODEC_ZSTD:
        if param != 0:
            raise UnknownEncoding(f"unknown zstd parameter {param}")
        if out is None:
            return _unzstd(body, rawlen)
        _unzstd(body, rawlen, out)
        return out
    if codec != CODEC_PLANES:
        raise UnknownEncoding(f"unknown codec id {codec}")
    if param not in _WIDTH:
        raise UnknownEncoding(f"unknown plane transform {param}")
    width = _WIDTH[param]
    count = len(split(b"\0" * width, param))
    if len(body) < 1 or body[0] != count:
        raise CodecError("wrong plane count")
    pos = 1
    metas = []
    for _ in range(count):
        if pos + PLANE.size > len(body):
            raise CodecError("frame is truncated")
        mode, length = PLANE.unpack_from(body, pos)
        pos += PLANE.size
        if mode not in (MODE_STORED, MODE_ZSTD):
            raise UnknownEncoding(f"unknown plane mode {mode}")
        metas.append((mode, length))
    n = rawlen // width
    # the layout is checked before the output is allocated: a damaged frame claiming a large
    # chunk fails without taking its memory
    end = pos + sum(length for _, length in metas)
    if end > len(body):
        raise CodecError("frame is truncated")
    if len(body) - end != rawlen % width:
        raise CodecError("wrong number of bytes after the last plane")
    if any(mode == MODE_STORED and length != n for mode, length in metas):
        raise CodecError("plane lengths do not match the frame's raw length")
    planes: list[bytes | memoryview] = []
    taken: list[bytearray] = []
    joined = n * width
    if out is None:
        out = memoryview(bytearray(rawlen))
        result: bytes | bytearray | memoryview = out.obj  # type: ignore[assignment]
    else:
        result = out
    # The first compressed one of the two top planes is decompressed into the last n bytes of
    # the output itself (see _join: every block of it is read before the output bytes over it
    # are written), the others into scratch planes: a bf16 chunk then decodes with no memory
    # beyond its output (a pull holds 8 MiB less per decode slot).
    # (bit transforms only: a byte-plane join writes strided across the whole output at once)
    in_place = next((i for i, (mode, _) in enumerate(metas[:2]) if mode == MODE_ZSTD),
                    None) if param in (PLANES_BF16, PLANES_FP32) else None
    try:
        for i, (mode, length) in enumerate(metas):
            chunk = body[pos:pos + length]
            pos += length
            if mode == MODE_STORED:
                planes.append(chunk)  # read where it lies (no copy)
            elif i == in_place:
                planes.append(_unzstd(chunk, n, out[joined - n:joined]))
            else:
                buf = _SCRATCH.take(n)
                taken.append(buf)
                planes.append(_unzstd(chunk, n, memoryview(buf)[:n]))
        tail = body[pos:]
        join(planes, param, joined, out[:joined])
        if len(tail):
            out[rawlen - len(tail):] = tail
        return result
    finally:
        planes = []
        _SCRATCH.give(*taken)


_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _zstd_frame_end(zstd, body: memoryview) -> int:
    """Where the zstd frame at the start of `body` ends (RFC 8878: its header, blocks each
    behind a 3-byte header, the last one flagged, then a 4-byte checksum if the header says
    so).  Walking the block headers costs one step per block (128 KiB of output at most)."""
    if bytes(body[:4]) != _ZSTD_MAGIC:
        raise CodecError("zstd data is corrupt (no zstd frame)")
    pos = zstd.frame_header_size(body)
    checksum = 4 if body[4] & 0x04 else 0
    while True:
        if pos + 3 > len(body):
            raise CodecError("zstd data is truncated")
        head = int.from_bytes(body[pos:pos + 3], "little")
        kind = (head >> 1) & 3
        if kind == 3:
            raise CodecError("zstd data is corrupt (reserved block type)")
        pos += 3 + (1 if kind == 1 else head >> 3)  # an RLE block stores one byte
        if head & 1:
            return pos + checksum


def _unzstd(body: memoryview, rawlen: int, into: memoryview | None = None
            ) -> bytes | memoryview:
    """One zstd frame of exactly rawlen bytes, decompressed (into `into` if given).

    Anything after the frame makes the data corrupt, on both paths: the one-shot decompressor
    stops at the frame's end and ignores the rest, the stream reader goes on and fails on it
    (or not: a few bytes of a magic pass), so `cat` and verify accepted a chunk pull refused.
    The frame's end is found first, and must be the payload's (docs/format.md)."""
    zstd = _zstd()
    try:
        end = _zstd_frame_end(zstd, body)
        if end > len(body):
            raise CodecError("zstd data is truncated")
        if end < len(body):
            raise CodecError(f"zstd data is corrupt ({len(body) - end} bytes after its frame)")
        # a frame declaring more than it may hold is refused before anything is allocated
        # (the decompressor would size its output from the declaration)
        declared = zstd.frame_content_size(body)
        if declared > rawlen:
            raise CodecError(f"zstd data declares {declared} bytes, more than the {rawlen} "
                             "expected")
        if into is None:
            out = zstd.ZstdDecompressor().decompress(body, max_output_size=rawlen)
            if len(out) != rawlen:
                raise CodecError("zstd data decodes to the wrong length")
            return out
        reader = zstd.ZstdDecompressor().stream_reader(body)
        got = 0
        while got < rawlen:
            k = reader.readinto(into[got:rawlen])
            if not k:
                break
            got += k
        if got != rawlen or reader.read(1):
            raise CodecError("zstd data decodes to the wrong length")
    except zstd.ZstdError as e:
        raise CodecError(f"zstd data is corrupt ({e})") from None
    return into[:rawlen]
