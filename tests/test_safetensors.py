"""Tensor records of .safetensors files: header parsing and split-independent digests."""
from __future__ import annotations

import hashlib
import json
import random
import struct
from pathlib import Path

import blake3
import pytest

from ckptlake.errors import SourceChanged
from ckptlake.format.manifest import decode_manifest
from ckptlake.format.safetensors import (BLOCK, MAX_HEADER, TensorDigest, TensorObserver,
                                         header_length, parse_header, read_header)
from ckptlake.lake import Lake
from ckptlake.store.memory import MemoryStore

np = pytest.importorskip("numpy")
st = pytest.importorskip("safetensors.numpy")
MiB = 1024 * 1024


def reference_digest(data: bytes, start: int, end: int, algo: str = "sha256") -> str:
    """The documented definition, computed the obvious way, with the lake's hash `algo`."""
    h = {"sha256": hashlib.sha256, "blake3": blake3.blake3}[algo]
    blocks = [h(data[lo:min(end, lo + BLOCK)]).digest() for lo in range(start, end, BLOCK)]
    return h(b"".join(blocks)).hexdigest()


def write_model(path: Path, seed: int = 0, big: bool = True) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    tensors = {
        "embed": rng.standard_normal((700, 1000)).astype(np.float32) if big  # 2.7 MiB
        else rng.standard_normal((7, 10)).astype(np.float32),
        "bias": rng.standard_normal(33).astype(np.float16),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "ids": np.arange(5000, dtype=np.int64),
        "mask": rng.integers(0, 2, 1000).astype(bool),
    }
    st.save_file(tensors, str(path), metadata={"format": "np"})
    return tensors


def test_header_parse(tmp_path: Path) -> None:
    p = tmp_path / "m.safetensors"
    write_model(p)
    h = read_header(str(p))
    assert h is not None
    names = [t[0] for t in h.tensors]
    assert sorted(names) == ["bias", "embed", "empty", "ids", "mask"]
    data = p.read_bytes()
    by_name = {t[0]: t for t in h.tensors}
    assert by_name["embed"][1:3] == ("F32", (700, 1000))
    assert by_name["embed"][4] - by_name["embed"][3] == 700 * 1000 * 4
    # ranges are absolute: the bytes there are the tensor's
    s, e = by_name["ids"][3:5]
    assert np.frombuffer(data[s:e], "<i8").tolist() == list(range(5000))


@pytest.mark.parametrize("raw", [
    b"", b"\x00" * 8, struct.pack("<Q", 10) + b"{}",  # too short
    struct.pack("<Q", 2) + b"[]",  # not an object
    struct.pack("<Q", 5) + b"notjs",
    struct.pack("<Q", 2 ** 40),  # absurd header length (also shorter than it says)
])
def test_header_parse_rejects_garbage(raw: bytes) -> None:
    assert parse_header(raw, 10 ** 9) is None


def test_header_length_above_the_limit_is_absurd() -> None:
    """A length prefix past MAX_HEADER (which the safetensors library refuses too) is no
    safetensors file: without the bound, push and the streaming planner would read and hold
    a header of up to the whole file before finding out."""
    assert header_length(struct.pack("<Q", MAX_HEADER + 1)) is None
    assert header_length(struct.pack("<Q", 2 ** 40)) is None
    assert header_length(struct.pack("<Q", MAX_HEADER)) == MAX_HEADER
    assert header_length(struct.pack("<Q", 1)) is None


def _header(doc: dict) -> bytes:
    body = json.dumps(doc).encode()
    return struct.pack("<Q", len(body)) + body


@pytest.mark.parametrize("doc", [
    {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 7]}},  # size does not match shape
    {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
     "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}},  # overlap
    {"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}},
    {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 10 ** 6]}},  # beyond the file
    {"a": "x"},
])
def test_header_parse_rejects_inconsistent_tensors(doc: dict) -> None:
    raw = _header(doc)
    assert parse_header(raw, len(raw) + 16) is None


def test_unknown_dtype_is_recorded_without_size_check() -> None:
    raw = _header({"a": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}})
    h = parse_header(raw, len(raw) + 2)
    assert h is not None and h.tensors[0][1] == "F4"


@pytest.mark.parametrize("seed", range(6))
def test_digest_is_independent_of_split_and_order(seed: int) -> None:
    rnd = random.Random(seed)
    data = rnd.randbytes(3 * MiB + 12345)
    start, end = rnd.randrange(0, MiB), rnd.randrange(2 * MiB, len(data))
    cuts = sorted({0, len(data), *(rnd.randrange(len(data)) for _ in range(rnd.randrange(1, 9)))})
    pieces = [(a, data[a:b]) for a, b in zip(cuts, cuts[1:])]
    rnd.shuffle(pieces)
    d = TensorDigest(start, end)
    for off, piece in pieces:
        d.add(off, piece)
    assert d.complete and not d._partial, "no partial block stays buffered"
    assert d.hexdigest() == reference_digest(data, start, end)
    whole = TensorDigest(start, end)
    whole.add(0, data)
    assert whole.hexdigest() == d.hexdigest()


def test_digest_of_empty_and_incomplete_ranges() -> None:
    assert TensorDigest(10, 10).hexdigest() == hashlib.sha256(b"").hexdigest()
    d = TensorDigest(0, 100)
    d.add(0, b"x" * 50)
    assert not d.complete
    with pytest.raises(ValueError):
        d.hexdigest()


def test_partial_blocks_are_the_only_buffered_bytes() -> None:
    """Memory stays bounded: pieces cut by a slice boundary wait, whole blocks never do."""
    data = random.Random(1).randbytes(5 * MiB)
    d = TensorDigest(100, len(data))  # blocks start at 100, 100 + 1 MiB, ...
    d.add(MiB + 110, data[MiB + 110:3 * MiB + 120])  # block 2 whole, blocks 1 and 3 partly
    assert set(d._blocks) == {2}
    assert sum(len(p) for ps in d._partial.values() for _, p in ps) == (MiB - 10) + 20


def test_digest_does_not_depend_on_the_position_in_the_file() -> None:
    body = random.Random(2).randbytes(2 * MiB + 5)
    digests = set()
    for pad in (0, 1, 4096, MiB - 3):
        data = b"h" * pad + body
        d = TensorDigest(pad, pad + len(body))
        d.add(0, data)
        digests.add(d.hexdigest())
    assert len(digests) == 1


def _observe(path: Path, rel: str, chunk: int, shuffle: bool) -> dict:
    data = path.read_bytes()
    obs = TensorObserver([(rel, str(path))])
    pieces = [(o, data[o:o + chunk]) for o in range(0, len(data), chunk)]
    if shuffle:
        random.Random(chunk).shuffle(pieces)
    for off, piece in pieces:
        obs.on_read(rel, off, piece)
    return {t.name: t for t in obs.entry_fields(rel, len(data))["tensors"]}


def test_observer_records_every_tensor(tmp_path: Path) -> None:
    p = tmp_path / "model.safetensors"
    write_model(p)
    data = p.read_bytes()
    a = _observe(p, "model.safetensors", len(data), shuffle=False)
    b = _observe(p, "model.safetensors", 100_003, shuffle=True)
    assert a == b
    assert a["embed"].shape == (700, 1000) and a["embed"].dtype == "F32"
    for t in a.values():
        assert t.digest == reference_digest(data, t.start, t.end)


def test_observer_ignores_other_files_and_invalid_safetensors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"this is not a safetensors file at all")
    other = tmp_path / "x.bin"
    other.write_bytes(b"\x00" * 100)
    obs = TensorObserver([("bad.safetensors", str(bad)), ("x.bin", str(other))])
    assert not obs
    obs.on_read("bad.safetensors", 0, bad.read_bytes())
    assert obs.entry_fields("bad.safetensors", 37) == {}


def test_observer_notices_a_rewritten_header(tmp_path: Path) -> None:
    p = tmp_path / "m.safetensors"
    write_model(p, big=False)
    obs = TensorObserver([("m.safetensors", str(p))])
    write_model(p, big=True)  # rewritten after the header was read, before the upload
    data = p.read_bytes()
    obs.on_read("m.safetensors", 0, data)
    with pytest.raises(SourceChanged):
        obs.entry_fields("m.safetensors", len(data))


@pytest.mark.parametrize("chunk_size", [MiB, MiB + 12345])
def test_push_records_tensors_whatever_the_chunking(tmp_path: Path, chunk_size: int) -> None:
    src = tmp_path / "src"
    (src / "shards").mkdir(parents=True)
    write_model(src / "shards" / "big.safetensors")
    write_model(src / "small.safetensors", seed=3, big=False)  # packed with other small files
    (src / "notes.txt").write_text("hi")
    store = MemoryStore()
    lake = Lake(store, chunk_size=chunk_size, concurrency=4)
    r = lake.push(src, "m/ckpt")
    m = decode_manifest(store.get(f"artifacts/m/ckpt/@v/{r.version:010d}.json"))
    entries = {e.path: e for e in m.files}
    assert entries["notes.txt"].tensors is None
    assert entries["shards/big.safetensors"].digest is None, "sliced, not packed"
    assert entries["small.safetensors"].digest is not None, "packed"
    for path in ("shards/big.safetensors", "small.safetensors"):
        data = (src / path).read_bytes()
        tensors = entries[path].tensors
        assert tensors is not None and {t.name for t in tensors} == {
            "bias", "embed", "empty", "ids", "mask"}
        for t in tensors:
            assert t.digest == reference_digest(data, t.start, t.end, m.hash)
    # the same bytes pushed with another chunk size give the same tensor digests
    other = Lake(MemoryStore(), chunk_size=3 * MiB, concurrency=2)
    r2 = other.push(src, "m/ckpt")
    m2 = decode_manifest(other.store.get(f"artifacts/m/ckpt/@v/{r2.version:010d}.json"))
    assert {e.path: e.tensors for e in m2.files} == {e.path: e.tensors for e in m.files}
