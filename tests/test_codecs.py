"""Chunk encodings (format/codecs.py) and the one decode path (core/chunkio.py)."""
from __future__ import annotations

import hashlib
import os
import struct

import numpy as np
import pytest

from ckptlake.core import chunkio
from ckptlake.errors import IntegrityError
from ckptlake.format import codecs


def _floats(n: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * 0.02).astype(np.float32)


def _bf16(w: np.ndarray) -> bytes:
    return (w.view(np.uint32) >> 16).astype(np.uint16).tobytes()


CASES = {
    "fp32": _floats(300_000).tobytes(),
    "bf16": _bf16(_floats(300_000, 1)),
    "fp16": _floats(300_000, 2).astype(np.float16).tobytes(),
    "text": b"".join(b'{"step": %d, "loss": 2.31}\n' % i for i in range(20_000)),
    "zeros": bytes(1 << 20),
    "random": os.urandom(1 << 20),
    "odd": _floats(100_001).tobytes()[:-1],  # not a multiple of 2 or 4
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_round_trip_and_never_larger(name: str) -> None:
    data = CASES[name]
    frame = codecs.encode_auto(data)
    if frame is None:  # stored raw
        assert name in ("random",), f"{name} should compress"
        return
    assert len(frame) < len(data)
    assert codecs.decode(frame) == data


def test_floats_use_planes_and_reach_the_expected_ratios() -> None:
    """Sampling picks the bit-plane transforms for float data without a hint; gaussian
    weights are the worst case of trained ones (no structure beyond the exponent)."""
    for name, transform, bound in (("fp32", codecs.PLANES_FP32, 0.88),
                                   ("bf16", codecs.PLANES_BF16, 0.72)):
        data = CASES[name]
        choice = codecs.choose(data)
        assert choice == codecs.Choice(codecs.CODEC_PLANES, transform)
        assert len(codecs.encode(data, choice)) / len(data) < bound


def test_every_transform_round_trips_with_and_without_numpy(monkeypatch) -> None:
    data = _floats(10_000, 3).tobytes()
    for transform in (codecs.PLANES_BYTES2, codecs.PLANES_BYTES4, codecs.PLANES_BF16,
                      codecs.PLANES_FP32):
        fast = codecs.split(data, transform)
        monkeypatch.setattr(codecs, "_numpy", lambda: None)
        slow = codecs.split(data, transform)
        assert fast == slow
        assert codecs.join(slow, transform, len(data)) == data
        monkeypatch.undo()
        assert codecs.join(fast, transform, len(data)) == data


@pytest.mark.parametrize("elements", [1, codecs._BLOCK - 1, codecs._BLOCK,
                                      2 * codecs._BLOCK + 3])
def test_bit_planes_equal_the_reference_across_blocks(monkeypatch, elements: int) -> None:
    """The numpy transforms (blocked, reused scratch) give exactly the planes of the plain
    Python reference, for every bit pattern (signs, NaNs, subnormals) and at block edges: the
    planes are the stored format."""
    rng = np.random.default_rng(elements)
    for transform, dtype in ((codecs.PLANES_BF16, np.uint16), (codecs.PLANES_FP32, np.uint32)):
        data = rng.integers(0, np.iinfo(dtype).max, elements, dtype=dtype,
                            endpoint=True).tobytes()
        fast = [bytes(p) for p in codecs.split(data, transform)]
        monkeypatch.setattr(codecs, "_numpy", lambda: None)
        slow = [bytes(p) for p in codecs.split(data, transform)]
        monkeypatch.undo()
        assert fast == slow
        out = bytearray(b"\xa5" * len(data))  # a dirty buffer: every byte must be written
        codecs.join(fast, transform, len(data), memoryview(out))
        assert out == data


def test_hints_and_limits() -> None:
    data = CASES["bf16"]
    assert codecs.choose(data, "BF16") == codecs.Choice(codecs.CODEC_PLANES, codecs.PLANES_BF16)
    assert codecs.choose(b"x" * 100) == codecs.RAW  # too small to be worth a frame
    assert codecs.encode(b"abc", codecs.RAW) is None
    # a frame that would not be smaller than the data is never produced
    assert codecs.encode(os.urandom(1 << 16), codecs.Choice(codecs.CODEC_ZSTD)) is None


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def test_open_object_raw_frame_and_raw_that_looks_like_a_frame() -> None:
    data = CASES["fp32"]
    d = _sha(data)
    frame = codecs.encode_auto(data)
    assert chunkio.open_object("sha256", d, frame, raw_size=len(data), where="a@v1") == data
    assert chunkio.open_object("sha256", d, frame, raw_size=None, where="a@v1") == data
    assert chunkio.open_object("sha256", d, data, raw_size=len(data), where="a@v1") == data
    # a raw chunk may begin with the magic: its digest decides, whatever the head says
    tricky = codecs.HEAD.pack(codecs.MAGIC, 1, 0, 0, 5) + os.urandom(100)
    assert chunkio.open_object("sha256", _sha(tricky), tricky, raw_size=None,
                               where="a@v1") == tricky
    assert chunkio.open_object("sha256", _sha(tricky), tricky, raw_size=len(tricky),
                               where="a@v1") == tricky


@pytest.mark.parametrize("damage", ["codec", "transform", "flags", "truncate", "flip",
                                    "rawlen", "plane-mode", "other-bytes"])
def test_corrupt_or_unknown_frames_are_integrity_errors(damage: str) -> None:
    data = CASES["bf16"]
    d = _sha(data)
    frame = bytearray(codecs.encode_auto(data))
    if damage == "codec":
        frame[4] = 9
    elif damage == "transform":
        frame[5] = 77
    elif damage == "flags":
        frame[6] = 1
    elif damage == "truncate":
        del frame[len(frame) // 2:]
    elif damage == "flip":
        frame[len(frame) // 2] ^= 0xFF
    elif damage == "rawlen":
        struct.pack_into("<Q", frame, 8, 1 << 40)
    elif damage == "plane-mode":
        frame[codecs.HEAD.size + 1] = 7
    elif damage == "other-bytes":
        frame = bytearray(codecs.encode_auto(CASES["fp16"]))  # a valid frame of other data
    with pytest.raises(IntegrityError) as e:
        chunkio.open_object("sha256", d, bytes(frame), raw_size=len(data), where="art@v7")
    assert "art@v7" in str(e.value) and d[:12] in str(e.value)


def test_decode_refuses_garbage_directly() -> None:
    with pytest.raises(codecs.CodecError):
        codecs.decode(b"not a frame")
    with pytest.raises(codecs.CodecError):
        codecs.decode(codecs.HEAD.pack(codecs.MAGIC, 1, 0, 0, 10) + b"garbage")


def test_a_zstd_frame_declaring_a_huge_size_is_refused_before_allocating() -> None:
    import zstandard

    body = zstandard.ZstdCompressor(level=1).compress(b"x" * 1000)
    frame = codecs.HEAD.pack(codecs.MAGIC, codecs.CODEC_ZSTD, 0, 0, 10) + body
    with pytest.raises(codecs.CodecError, match="declares 1000"):
        codecs.decode(frame)
    # a hand-made header claiming 2**50 bytes: refused, no MemoryError
    huge = bytearray(zstandard.ZstdCompressor(level=1, write_content_size=True).compress(b"y"))
    hdr = b"\x28\xb5\x2f\xfd" + bytes([0xE0]) + (1 << 50).to_bytes(8, "little")
    with pytest.raises(codecs.CodecError):
        codecs.decode(codecs.HEAD.pack(codecs.MAGIC, codecs.CODEC_ZSTD, 0, 0, 10) + hdr
                      + bytes(huge[6:]))


@pytest.mark.parametrize("name", sorted(CASES))
def test_decode_into_a_reused_buffer(name: str) -> None:
    """A pull decodes every frame into one reused, page-aligned buffer: the view it gets back
    holds exactly the chunk, whatever the buffer held before (no stale bytes past a shorter
    chunk, none from the previous one)."""
    import mmap

    frame = codecs.encode_auto(CASES[name])
    if frame is None:
        return
    buf = mmap.mmap(-1, 2 << 20)
    buf[:] = b"\xAA" * len(buf)  # what a previous chunk left behind
    for _ in range(2):
        out = codecs.decode(frame, into=buf)
        assert isinstance(out, memoryview) and out.obj is buf
        assert bytes(out) == CASES[name]
        del out
    with pytest.raises(ValueError):
        codecs.decode(frame, into=bytearray(codecs.frame_rawlen(frame) - 1))


@pytest.mark.parametrize("damage", ["truncate", "flip", "extra"])
def test_corrupt_frames_through_the_buffer_path(damage: str) -> None:
    """The buffer path reads zstd data with a stream reader: short, damaged or overlong zstd
    data must fail the same way as the one-shot path (exit 5 naming the chunk)."""
    import zstandard

    data = CASES["text"]
    body = bytearray(zstandard.ZstdCompressor(level=1).compress(data))
    if damage == "truncate":
        del body[len(body) // 2:]
    elif damage == "flip":
        body[len(body) // 2] ^= 0xFF
    else:
        body += zstandard.ZstdCompressor(level=1).compress(b"more")
    frame = codecs.HEAD.pack(codecs.MAGIC, codecs.CODEC_ZSTD, 0, 0, len(data)) + bytes(body)
    buf = bytearray(len(data) + 100)
    with pytest.raises(IntegrityError) as e:
        chunkio.open_object("sha256", _sha(data), frame, raw_size=None, where="art@v3",
                            into=buf)
    assert "art@v3" in str(e.value)


def _plane_modes(frame: bytes) -> list[int]:
    body = frame[codecs.HEAD.size:]
    return [codecs.PLANE.unpack_from(body, 1 + codecs.PLANE.size * k)[0] for k in range(body[0])]


@pytest.mark.parametrize("zeros, mode", [(0.10, codecs.MODE_STORED), (0.40, codecs.MODE_ZSTD)])
def test_a_plane_is_compressed_only_when_that_saves_a_tenth(zeros: float, mode: int) -> None:
    """fp32 whose second mantissa byte is 0 in `zeros` of the elements, else uniform: zstd saves
    ~4 % of that plane at 10 % (every pull would decode it for ~1 % of the chunk: stored as it
    is) and ~30 % at 40 % (compressed).  The exponent plane is compressed either way."""
    rng = np.random.default_rng(3)
    words = _floats(1 << 20, 4).view(np.uint32).copy()
    byte1 = rng.integers(0, 256, len(words), dtype=np.uint32)
    byte1[rng.random(len(words)) < zeros] = 0
    words = (words & ~np.uint32(0xFF00)) | (byte1 << 8)
    data = words.tobytes()
    frame = bytes(codecs.encode_auto(data, "F32"))
    assert _plane_modes(frame)[0] == codecs.MODE_ZSTD
    assert _plane_modes(frame)[3] == mode  # byte 1 of each element: the fourth plane
    assert bytes(codecs.decode(frame)) == data


def _planes_frame(data: bytes, transform: int, modes: list[int]) -> bytes:
    """A bit-plane frame of `data` whose planes are stored or zstd as `modes` says (what the
    encoder picks depends on the data; a reader must decode every combination)."""
    import zstandard

    width = codecs._WIDTH[transform]
    cut = len(data) - len(data) % width
    planes = [bytes(p) for p in codecs.split(data[:cut], transform)]
    bodies = [zstandard.ZstdCompressor(level=1).compress(p) if m == codecs.MODE_ZSTD else p
              for p, m in zip(planes, modes)]
    return (codecs.HEAD.pack(codecs.MAGIC, codecs.CODEC_PLANES, transform, 0, len(data))
            + bytes([len(planes)])
            + b"".join(codecs.PLANE.pack(m, len(b)) for m, b in zip(modes, bodies))
            + b"".join(bodies) + data[cut:])


@pytest.mark.parametrize("numpy_on", [True, False])
@pytest.mark.parametrize("transform, count", [(codecs.PLANES_BF16, 2), (codecs.PLANES_FP32, 4)])
def test_every_plane_mode_combination_decodes(monkeypatch, transform: int, count: int,
                                              numpy_on: bool) -> None:
    """The first compressed top plane is decompressed into the tail of the output it is joined
    into: whichever planes are compressed, over several numpy blocks and with bytes after the
    last element, the decoded chunk is the data (a reused dirty buffer too).  Fails if the join
    writes over plane bytes it has not read yet."""
    rng = np.random.default_rng(count)
    elements = 2 * codecs._BLOCK + 5 if numpy_on else 3001
    words = rng.integers(0, 256, elements * (4 if count == 4 else 2), dtype=np.uint8)
    data = words.tobytes() + b"\x07\x09\x0b"[: 1 + count % 3]
    if not numpy_on:
        monkeypatch.setattr(codecs, "_numpy", lambda: None)
    for bits in range(1 << count):
        modes = [codecs.MODE_ZSTD if bits >> k & 1 else codecs.MODE_STORED
                 for k in range(count)]
        frame = _planes_frame(data, transform, modes)
        assert bytes(codecs.decode(frame)) == data, modes
        buf = bytearray(b"\xa5" * (len(data) + 64))
        assert bytes(codecs.decode(frame, into=buf)) == data, modes
        # what a pusher reads of it tells its exact size (push.py: a frame cut short or
        # with bytes after it is written again)
        head = frame[:codecs.FRAME_PREFIX]
        assert codecs.frame_size(head) == len(frame), modes
        assert codecs.fits_frame(head, len(data), len(frame))
        assert not codecs.fits_frame(head, len(data), len(frame) - 1)
        assert not codecs.fits_frame(head, len(data), len(frame) + 1)
        assert not codecs.fits_frame(head, len(data) + 1, len(frame))
        # cut inside its plane table: what a pusher reads is all there is
        for cut in (codecs.HEAD.size, codecs.HEAD.size + 1 + codecs.PLANE.size * count - 1):
            assert not codecs.fits_frame(frame[:cut], len(data), cut), (modes, cut)


def test_a_damaged_plane_frame_fails_before_its_output_is_allocated() -> None:
    """A frame whose header claims a large chunk but whose planes are cut short (or leave bytes
    over) is refused from its layout alone: decoding it without a buffer must not allocate the
    claimed size first."""
    import tracemalloc

    data = _bf16(_floats(4096))
    good = _planes_frame(data, codecs.PLANES_BF16, [codecs.MODE_ZSTD, codecs.MODE_STORED])
    big = 512 << 20  # claimed raw length
    header = codecs.HEAD.pack(codecs.MAGIC, codecs.CODEC_PLANES, codecs.PLANES_BF16, 0, big)
    damaged = [header + good[codecs.HEAD.size:],  # planes far shorter than claimed
               header + good[codecs.HEAD.size:-100],  # and truncated
               good + b"\x00"]  # a byte after the last plane
    for frame in damaged:
        tracemalloc.start()
        try:
            with pytest.raises(codecs.CodecError):
                codecs.decode(frame)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 4 << 20, peak
