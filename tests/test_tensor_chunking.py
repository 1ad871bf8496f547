"""Tensor-aligned chunking (format/chunking.py): a re-saved model re-uploads what changed.

Real files: safetensors from the safetensors package, archives from torch.save, npy/npz from
numpy.  Re-push costs are read from the push result and from the chunk keys the store saw
written; each rule is also checked against the old fixed-offset chunking, which must lose,
so that the tests can fail.
"""
from __future__ import annotations

import json
import logging
import os
import struct
import zlib
from pathlib import Path
from typing import Any, Sequence

import pytest

import ckptlake
from ckptlake.core import catalog
from ckptlake.core import push as pushmod
from ckptlake.core.scan import SourceFile
from ckptlake.format import chunking
from ckptlake.format import layout as lakelayout
from ckptlake.format.chunking import Cut, check_cuts, fixed_cuts, plan
from ckptlake.format.safetensors import read_header
from ckptlake.lake import Lake
from ckptlake.store.memory import MemoryStore

np = pytest.importorskip("numpy")
st = pytest.importorskip("safetensors.numpy")
MiB = 1024 * 1024
CS = MiB  # the smallest chunk size a lake accepts: small models still span many chunks


class RecordingStore(MemoryStore):
    """Remembers the chunk keys written since the last `reset()`."""

    def __init__(self) -> None:
        super().__init__()
        self.put_chunks: list[str] = []

    def put(self, key: str, data: Any, **kw: Any) -> str:  # type: ignore[override]
        if key.startswith(lakelayout.CHUNKS_PREFIX):
            self.put_chunks.append(key.rsplit("/", 1)[-1])
        return super().put(key, data, **kw)

    def reset(self) -> None:
        self.put_chunks = []


def old_plan_units(files: Sequence[SourceFile], chunk_size: int) -> list[Any]:
    """plan_units as released before tensor-aligned chunking (fixed offsets only)."""
    units: list[Any] = []
    pack: list[int] = []
    pack_bytes = 0
    for i, f in enumerate(files):
        if f.size == 0:
            continue
        if f.size >= min(pushmod.PACK_THRESHOLD, chunk_size):
            units.extend(pushmod._Slice(i, off, min(chunk_size, f.size - off))
                         for off in range(0, f.size, chunk_size))
            continue
        boundary = (zlib.crc32(f.path.encode()) & 31) == 0 and pack_bytes >= chunk_size // 8
        if pack and (pack_bytes + f.size > chunk_size or boundary):
            units.append(pushmod._Pack(tuple(pack)))
            pack, pack_bytes = [], 0
        pack.append(i)
        pack_bytes += f.size
    if pack:
        units.append(pushmod._Pack(tuple(pack)))
    return units


@pytest.fixture
def old_chunking(monkeypatch: pytest.MonkeyPatch):
    """Switch push to the old planner for the duration of a `with` block."""
    import contextlib

    @contextlib.contextmanager
    def use() -> Any:
        with monkeypatch.context() as mp:
            mp.setattr(pushmod, "plan_units", old_plan_units)
            yield
    return use


def file_plan(path: Path, chunk_size: int = CS) -> chunking.Plan:
    fd = os.open(path, os.O_RDONLY)
    try:
        return plan(lambda o, n: os.pread(fd, n, o), os.fstat(fd).st_size, chunk_size,
                    name=path.name)
    finally:
        os.close(fd)


def model(seed: int = 0) -> dict[str, Any]:
    """Large tensors (>= 1 MiB: chunks of their own) and 30 small ones (packed in runs)."""
    rng = np.random.default_rng(seed)
    out = {
        "a.embed": rng.standard_normal((600, 1000)).astype(np.float32),  # 2.3 MiB
        "b.w1": rng.standard_normal((512, 700)).astype(np.float32),  # 1.4 MiB
        "b.b1": rng.standard_normal(700).astype(np.float32),
        "c.ln": rng.standard_normal(700).astype(np.float32),
        "c.w2": rng.standard_normal((1000, 800)).astype(np.float16),  # 1.5 MiB
        "ids": np.arange(3000, dtype=np.int64),
    }
    for i in range(30):
        out[f"s.{i:02d}"] = rng.standard_normal((100, 100)).astype(np.float32)  # 39 KiB
    return out


def save(path: Path, tensors: dict[str, Any], **metadata: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    st.save_file(tensors, str(path), metadata={"format": "np", **metadata})


def manifest_of(store: MemoryStore, artifact: str, version: int, path: str) -> list[tuple[int,
                                                                                          Any]]:
    """(offset in file, chunk ref) of every chunk of `path` in that version."""
    m = catalog.load_manifest(store, artifact, version)
    entry = next(e for e in m.files if e.path == path)
    out, pos = [], 0
    for c in entry.chunks:
        out.append((pos, c))
        pos += c.size
    return out


def uploaded_ranges(store: RecordingStore, artifact: str, version: int,
                    path: str) -> list[tuple[int, int]]:
    """The byte ranges of `path` whose chunks this push wrote."""
    put = set(store.put_chunks)
    return [(off, off + c.size) for off, c in manifest_of(store, artifact, version, path)
            if c.digest in put]


def tensor_ranges(path: Path) -> dict[str, tuple[int, int]]:
    h = read_header(str(path))
    assert h is not None
    return {t[0]: (t[3], t[4]) for t in h.tensors}


def overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


# --- the cuts themselves --------------------------------------------------------------------------

def test_safetensors_cuts_follow_the_tensors(tmp_path: Path) -> None:
    p = tmp_path / "m.safetensors"
    save(p, model())
    pl = file_plan(p)
    assert pl.kind == "safetensors" and pl.note is None
    size = p.stat().st_size
    assert check_cuts(pl.cuts, size, CS)
    h = read_header(str(p))
    assert h is not None
    assert pl.cuts[0] == Cut(0, h.data_start, None), "the header is a chunk of its own"
    starts = {c.offset for c in pl.cuts}
    for name, dtype, _, s, e in h.tensors:
        if e - s >= MiB:  # a large tensor: cut at fixed offsets from its own first byte
            assert set(range(s, e, CS)) <= starts
            assert all(c.dtype == dtype for c in pl.cuts if s <= c.offset < e)
    # the 30 small tensors are packed: far fewer chunks than tensors
    assert len(pl.cuts) < 15
    assert all(c.length <= CS for c in pl.cuts)


def test_small_runs_start_at_name_boundaries_and_stay_within_chunk_size() -> None:
    items = tuple(chunking.Item(100 + i * 1000, 100 + (i + 1) * 1000, f"t{i}", "F32")
                  for i in range(5000))
    lay = chunking.Layout("safetensors", 100, items)
    size = 100 + 5000 * 1000
    cuts = chunking.cut_layout(lay, size, CS)
    assert check_cuts(cuts, size, CS)
    assert all(c.dtype == "F32" for c in cuts[1:])
    # inserting a small item early moves only the runs around it, not every later run
    items2 = items[:10] + (chunking.Item(10100, 11100, "new", "F32"),) + tuple(
        chunking.Item(i.start + 1000, i.end + 1000, i.name, "F32") for i in items[10:])
    cuts2 = chunking.cut_layout(chunking.Layout("safetensors", 100, items2), size + 1000, CS)
    assert check_cuts(cuts2, size + 1000, CS)
    shifted = {(c.offset - 1000, c.length) for c in cuts2 if c.offset > 20000}
    same = shifted & {(c.offset, c.length) for c in cuts}
    assert len(same) >= len(cuts) - 4


def test_mixed_runs_carry_no_dtype_hint() -> None:
    lay = chunking.Layout("safetensors", 8, (chunking.Item(8, 16, "a", "F32"),
                                            chunking.Item(16, 18, "b", "F16"),
                                            chunking.Item(18, 26, "c", "F32")))
    assert chunking.cut_layout(lay, 26, CS) == [Cut(0, 8), Cut(8, 18, None)]
    assert fixed_cuts(0, 3 * CS + 6, CS + 2, "F32")[1].dtype is None  # not element aligned
    assert fixed_cuts(0, 3 * CS, CS, "BF16")[1].dtype == "BF16"


def test_plan_reads_only_the_header(tmp_path: Path) -> None:
    p = tmp_path / "m.safetensors"
    save(p, model())
    data = p.read_bytes()
    read = []

    def counted(o: int, n: int) -> bytes:
        read.append(n)
        return data[o:o + n]
    plan(counted, len(data), CS)
    h = read_header(str(p))
    assert h is not None
    assert sum(read) <= h.data_start + 64


def test_plan_of_a_torch_archive_reads_its_directory_not_its_data(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    p = tmp_path / "m.pt"
    torch.save(torch_state(torch), p)
    data = p.read_bytes()
    read = []

    def counted(o: int, n: int) -> bytes:
        read.append((o, n))
        return data[o:o + n]
    assert plan(counted, len(data), CS).kind == "torch"
    assert sum(n for _, n in read) < len(data) // 20
    assert not any(n > 64 * 1024 for _, n in read)


# --- re-push costs: safetensors ----------------------------------------------------------------

def test_header_change_reuploads_only_the_header_chunk(tmp_path: Path, old_chunking) -> None:
    """The issue's case: the same tensors re-saved with one more __metadata__ key."""
    src = tmp_path / "src" / "model.safetensors"
    tensors = model()
    save(src, tensors)
    results = {}
    for name, ctx in (("new", None), ("old", old_chunking)):
        store = RecordingStore()
        lake = Lake(store, chunk_size=CS, concurrency=4)
        save(src, tensors)
        if ctx is None:
            lake.push(src.parent, "m/ckpt")
        else:
            with ctx():
                lake.push(src.parent, "m/ckpt")
        save(src, tensors, note="re-saved with one more metadata key, +40 bytes or so")
        store.reset()
        if ctx is None:
            results[name] = lake.push(src.parent, "m/ckpt")
        else:
            with ctx():
                results[name] = lake.push(src.parent, "m/ckpt")
        out = tmp_path / f"out-{name}"
        lake.pull("m/ckpt", out)
        assert (out / "model.safetensors").read_bytes() == src.read_bytes()
    new, old = results["new"], results["old"]
    h = read_header(str(src))
    assert h is not None
    assert new.chunks_uploaded == 1 and new.bytes_uploaded == h.data_start
    assert new.bytes_uploaded <= h.data_start + CS  # the goal: header chunk + 1 chunk
    # fixed offsets re-upload nearly everything: the reason for all this
    assert old.bytes_uploaded > 0.9 * src.stat().st_size


def test_changing_one_tensor_reuploads_only_its_chunks(tmp_path: Path) -> None:
    store = RecordingStore()
    lake = Lake(store, chunk_size=CS, concurrency=4)
    src = tmp_path / "src" / "model.safetensors"
    tensors = model()
    save(src, tensors)
    lake.push(src.parent, "m/ckpt")
    for version, name in ((2, "b.w1"), (3, "s.07")):
        tensors[name] = tensors[name] + 1
        save(src, tensors)
        store.reset()
        r = lake.push(src.parent, "m/ckpt")
        assert r.version == version
        ranges = tensor_ranges(src)
        up = uploaded_ranges(store, "m/ckpt", version, "model.safetensors")
        assert up, "the changed tensor must be uploaded"
        assert all(overlaps(u, ranges[name]) for u in up), (name, up)
        assert r.bytes_uploaded <= ranges[name][1] - ranges[name][0] + 2 * CS
        if name == "s.07":  # a small tensor: one run of at most one chunk
            assert r.chunks_uploaded == 1 and r.bytes_uploaded <= CS


@pytest.mark.parametrize("change", ["add-large", "add-small", "remove-large", "remove-small"])
def test_adding_or_removing_a_tensor_reuploads_little(tmp_path: Path, change: str) -> None:
    store = RecordingStore()
    lake = Lake(store, chunk_size=CS, concurrency=4)
    src = tmp_path / "src" / "model.safetensors"
    tensors = model()
    save(src, tensors)
    lake.push(src.parent, "m/ckpt")
    before = tensor_ranges(src)
    new_name = None
    if change == "add-large":
        new_name = "b.new"
        tensors[new_name] = np.random.default_rng(9).standard_normal((500, 800)).astype(
            np.float32)
    elif change == "add-small":
        new_name = "s.07a"
        tensors[new_name] = np.ones((10, 10), dtype=np.float32)
    else:
        del tensors["b.w1" if change == "remove-large" else "s.07"]
    save(src, tensors)
    store.reset()
    r = lake.push(src.parent, "m/ckpt")
    after = tensor_ranges(src)
    h = read_header(str(src))
    assert h is not None
    added = after[new_name][1] - after[new_name][0] if new_name else 0
    # the header, the added tensor's chunks, and at most the two runs beside the change
    assert r.bytes_uploaded <= h.data_start + added + 2 * CS
    # no chunk of a large tensor that did not change was sent again
    up = uploaded_ranges(store, "m/ckpt", 2, "model.safetensors")
    for name, rng in after.items():
        if name != new_name and rng[1] - rng[0] >= MiB:
            assert not any(overlaps(u, rng) for u in up), name
    assert r.bytes_uploaded < 0.5 * sum(e - s for s, e in before.values())
    out = tmp_path / "out"
    lake.pull("m/ckpt", out)
    assert (out / "model.safetensors").read_bytes() == src.read_bytes()


# --- torch.save archives, npy, npz ---------------------------------------------------------------

def torch_state(torch: Any, seed: int = 0) -> dict[str, Any]:
    torch.manual_seed(seed)
    m = torch.nn.Sequential(torch.nn.Linear(512, 1024), torch.nn.LayerNorm(1024),
                            torch.nn.Linear(1024, 1024, bias=False),
                            torch.nn.Linear(1024, 512, bias=False))
    sd = dict(m.state_dict())
    sd["2.weight"] = sd["2.weight"].to(torch.bfloat16)
    return sd


def test_torch_archive_cuts_at_storage_boundaries_with_dtype_hints(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    import zipfile

    p = tmp_path / "model.pt"
    torch.save(torch_state(torch), p)
    pl = file_plan(p)
    assert pl.kind == "torch" and pl.note is None
    assert check_cuts(pl.cuts, p.stat().st_size, CS)
    with zipfile.ZipFile(p) as zf, open(p, "rb") as fh:
        hints = {}
        for info in zf.infolist():
            fh.seek(info.header_offset + 26)
            n, m = struct.unpack("<HH", fh.read(4))
            start = info.header_offset + 30 + n + m
            if info.file_size >= MiB:
                cut = next(c for c in pl.cuts if c.offset == start)
                hints[info.filename.rsplit("/", 1)[-1]] = cut.dtype
    # storages 0 (F32 2 MiB), 4 (BF16 2 MiB), 5 (F32 2 MiB)
    assert sorted(hints.values()) == ["BF16", "F32", "F32"]


def test_torch_archive_with_a_tensor_added_in_front_reuploads_little(tmp_path: Path,
                                                                     old_chunking) -> None:
    """A new first tensor renumbers every storage and moves every entry."""
    torch = pytest.importorskip("torch")
    src = tmp_path / "src"
    src.mkdir()
    sd = torch_state(torch)
    costs = {}
    for name, ctx in (("new", None), ("old", old_chunking)):
        store = RecordingStore()
        lake = Lake(store, chunk_size=CS, concurrency=4)
        torch.save(sd, src / "model.pt")
        if ctx is None:
            lake.push(src, "m/ckpt")
            torch.save({"step": torch.tensor([7]), **sd}, src / "model.pt")
            costs[name] = lake.push(src, "m/ckpt").bytes_uploaded
        else:
            with ctx():
                lake.push(src, "m/ckpt")
                torch.save({"step": torch.tensor([7]), **sd}, src / "model.pt")
                costs[name] = lake.push(src, "m/ckpt").bytes_uploaded
        out = tmp_path / f"out-{name}"
        lake.pull("m/ckpt", out)
        assert (out / "model.pt").read_bytes() == (src / "model.pt").read_bytes()
        loaded = torch.load(out / "model.pt", weights_only=True)
        assert torch.equal(loaded["3.weight"], sd["3.weight"])
    size = (src / "model.pt").stat().st_size
    assert costs["new"] < 0.1 * size, costs
    assert costs["old"] > 0.8 * size, costs


def test_torch_archive_with_one_storage_changed(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    store = RecordingStore()
    lake = Lake(store, chunk_size=CS, concurrency=4)
    src = tmp_path / "src"
    src.mkdir()
    sd = torch_state(torch)
    torch.save(sd, src / "model.pt")
    lake.push(src, "m/ckpt")
    sd["3.weight"] = sd["3.weight"] * 2
    torch.save(sd, src / "model.pt")
    r = lake.push(src, "m/ckpt")
    nbytes = sd["3.weight"].numel() * 4
    # its chunks, its local header's run and the run holding the central directory
    assert nbytes <= r.bytes_uploaded <= nbytes + 2 * 64 * 1024


def test_torch_archive_storage_change_costs_its_chunks_and_the_tail(tmp_path: Path) -> None:
    """The serialization id (derived from the storages) and the central directory change with
    any storage; they sit in a tail chunk of their own, not in a run with the last tensors."""
    torch = pytest.importorskip("torch")
    src = tmp_path / "src"
    src.mkdir()
    sd = torch_state(torch)
    lake = Lake(MemoryStore(), chunk_size=CS, concurrency=4)
    torch.save(sd, src / "model.pt")
    lake.push(src, "m/ckpt")
    torch.save(sd, src / "model.pt")
    assert lake.push(src, "m/ckpt").bytes_uploaded == 0  # the same bytes: nothing
    sd["0.weight"] = sd["0.weight"] + 1  # the first storage, far from the tail
    torch.save(sd, src / "model.pt")
    r = lake.push(src, "m/ckpt")
    assert sd["0.weight"].numel() * 4 <= r.bytes_uploaded <= sd["0.weight"].numel() * 4 + 16384


def test_npy_and_npz(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((700, 1000)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    pl = file_plan(tmp_path / "a.npy")
    assert pl.kind == "npy"
    assert pl.cuts[0].length == 128 and pl.cuts[0].dtype is None
    assert [c.offset - 128 for c in pl.cuts[1:]] == list(range(0, a.nbytes, CS))
    assert {c.dtype for c in pl.cuts[1:]} == {"F32"}

    src = tmp_path / "src"
    src.mkdir()
    arrays = {"w": a, "v": rng.standard_normal(300_000), "n": np.arange(10)}
    np.savez(src / "state.npz", **arrays)
    assert file_plan(src / "state.npz").kind == "npz"
    store = RecordingStore()
    lake = Lake(store, chunk_size=CS, concurrency=4)
    lake.push(src, "m/ckpt")
    extra = rng.standard_normal(50_000).astype(np.float32)
    np.savez(src / "state.npz", first=extra, **arrays)  # a new first array moves the others
    r = lake.push(src, "m/ckpt")
    assert r.bytes_uploaded <= extra.nbytes + 64 * 1024
    np.savez_compressed(src / "c.npz", **arrays)  # deflated entries: cut per entry all the same
    assert file_plan(src / "c.npz").kind == "npz"
    out = tmp_path / "out"
    lake.push(src, "m/ckpt")
    lake.pull("m/ckpt", out)
    for f in ("state.npz", "c.npz"):
        assert (out / f).read_bytes() == (src / f).read_bytes()


# --- headers that lie --------------------------------------------------------------------------

def _st_bytes(doc: dict[str, Any], data_len: int) -> bytes:
    body = json.dumps(doc).encode()
    body += b" " * (-len(body) % 8)
    return struct.pack("<Q", len(body)) + body + os.urandom(data_len)


def _lying_files() -> dict[str, bytes]:
    n = 3 * MiB
    good = {"a": {"dtype": "F32", "shape": [n // 8], "data_offsets": [0, n // 2]},
            "b": {"dtype": "F32", "shape": [n // 8], "data_offsets": [n // 2, n]}}
    torch_like = _zip_bytes()
    eocd = torch_like.rindex(b"PK\x05\x06")
    cd_past_end = bytearray(torch_like)
    cd_past_end[eocd + 16:eocd + 20] = struct.pack("<I", len(torch_like) + 999)
    lh_moved = bytearray(torch_like)
    cd = torch_like.index(b"PK\x01\x02", 0)
    cd2 = torch_like.index(b"PK\x01\x02", cd + 4)  # the second entry's local header offset
    lh_moved[cd2 + 42:cd2 + 46] = struct.pack("<I", 12345)
    npy = bytearray(_npy_bytes())
    npy[npy.index(b"(700, 1000)"):npy.index(b"(700, 1000)") + 11] = b"(900, 1000)"
    return {
        "past-end.safetensors": _st_bytes({**good, "c": {"dtype": "F32", "shape": [MiB],
                                                         "data_offsets": [n, n + 4 * MiB]}}, n),
        "overlap.safetensors": _st_bytes({**good, "c": {"dtype": "U8", "shape": [MiB],
                                                        "data_offsets": [MiB, 2 * MiB]}}, n),
        "json.safetensors": struct.pack("<Q", 40) + b"{" + b"\x00not json" * 4 + b"!!!"
        + os.urandom(n),
        "sizes.safetensors": _st_bytes({"a": {"dtype": "F32", "shape": [7],
                                              "data_offsets": [0, n]}}, n),
        "cd-past-end.pt": bytes(cd_past_end),
        "local-header-moved.pt": bytes(lh_moved),
        "truncated.pt": torch_like[:len(torch_like) // 2],
        "shape.npy": bytes(npy),
        "bad-pickle.npy": b"\x93NUMPY\x01\x00" + struct.pack("<H", 118) + b"{'descr': "
        + b"x" * 108 + b"\n" + os.urandom(n),
    }


def _zip_bytes() -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("arch/data.pkl", b"\x80\x02}q\x00.")
        zf.writestr("arch/data/0", os.urandom(2 * MiB))
        zf.writestr("arch/data/1", os.urandom(3000))
        zf.writestr("arch/data/2", os.urandom(MiB + 5))
    return buf.getvalue()


def _npy_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.zeros((700, 1000), dtype=np.float32))
    return buf.getvalue()


@pytest.mark.parametrize("name", sorted(_lying_files()))
def test_a_lying_header_falls_back_to_fixed_offsets(tmp_path: Path, name: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    data = _lying_files()[name]
    p = tmp_path / "src" / name
    p.parent.mkdir()
    p.write_bytes(data)
    with caplog.at_level(logging.DEBUG, logger="ckptlake"):
        pl = file_plan(p)
    assert pl.kind == "fixed"
    assert pl.cuts == tuple(fixed_cuts(0, len(data), CS))
    assert pl.note and name in pl.note
    assert any(name in r.getMessage() and "fixed offsets" in r.getMessage()
               for r in caplog.records)
    lake = Lake(MemoryStore(), chunk_size=CS, concurrency=2)
    lake.push(p.parent, "m/bad")
    lake.pull("m/bad", tmp_path / "out")
    assert (tmp_path / "out" / name).read_bytes() == data


def test_files_of_no_known_layout_keep_fixed_offsets_without_a_note(tmp_path: Path) -> None:
    for name, data in {"random.bin": os.urandom(3 * MiB + 7),
                       "named.safetensors": os.urandom(3 * MiB),  # the name alone is no layout
                       "zeros.pt": bytes(3 * MiB)}.items():
        (tmp_path / name).write_bytes(data)
        pl = file_plan(tmp_path / name)
        assert (pl.kind, pl.note) == ("fixed", None), name
        assert pl.cuts == tuple(fixed_cuts(0, len(data), CS))


def test_layout_is_found_by_content_not_by_name(tmp_path: Path) -> None:
    p = tmp_path / "weights.bin"  # a safetensors file under another name
    save(p, model())
    assert file_plan(p).kind == "safetensors"


def test_a_parser_failure_never_fails_the_push(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "src" / "model.safetensors"
    save(p, model())

    def broken(read: Any, size: int) -> Any:
        raise RuntimeError("a bug in a layout parser")
    monkeypatch.setattr(chunking, "detect", broken)
    pl = file_plan(p)
    assert pl.kind == "fixed" and "RuntimeError" in (pl.note or "")
    lake = Lake(MemoryStore(), chunk_size=CS, concurrency=2)
    lake.push(p.parent, "m/x")
    lake.pull("m/x", tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == p.read_bytes()


# --- readers: pulls, partial reads, old lakes -----------------------------------------------------

def _tree(src: Path, torch: Any | None) -> None:
    save(src / "model.safetensors", model())
    np.save(src / "a.npy", np.random.default_rng(2).standard_normal((600, 900)))
    np.savez(src / "b.npz", x=np.arange(400_000), y=np.ones(10))
    if torch is not None:
        torch.save(torch_state(torch), src / "model.pt")
    (src / "bad.safetensors").write_bytes(_lying_files()["past-end.safetensors"])
    (src / "random.bin").write_bytes(os.urandom(2 * MiB + 3))
    (src / "config.json").write_text('{"a": 1}')


def _same_tree(a: Path, b: Path) -> None:
    names = sorted(p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes(), n


def test_pull_round_trips_on_local_and_s3(tmp_path: Path, lake_url: str) -> None:
    try:
        import torch
    except ImportError:
        torch = None
    src = tmp_path / "src"
    src.mkdir()
    _tree(src, torch)
    with ckptlake.open(lake_url, chunk_size=CS) as lake:
        r1 = lake.push(src, "m/ckpt")
        assert r1.chunks_uploaded > 20
        lake.pull("m/ckpt", tmp_path / "v1")
        _same_tree(src, tmp_path / "v1")
        save(src / "model.safetensors", model(), note="one more key")
        r2 = lake.push(src, "m/ckpt")
        assert r2.chunks_uploaded == 1
        lake.pull("m/ckpt@v2", tmp_path / "v2")
        _same_tree(src, tmp_path / "v2")
        # partial reads cross the uneven chunk boundaries
        data = (src / "model.safetensors").read_bytes()
        with lake.open("m/ckpt", "model.safetensors") as fh:
            for off in (0, 7, 11_000, MiB - 3, 2 * MiB + 1, len(data) - 5):
                fh.seek(off)
                assert fh.read(100_000) == data[off:off + 100_000]
        got = lake.tensors("m/ckpt", ["b.w1", "s.07"], path="model.safetensors")
        want = model()
        assert np.array_equal(got["b.w1"], want["b.w1"])
        assert np.array_equal(got["s.07"], want["s.07"])


def test_a_lake_pushed_with_fixed_offsets_still_pulls_and_repushes(tmp_path: Path,
                                                                   old_chunking) -> None:
    store = RecordingStore()
    lake = Lake(store, chunk_size=CS, concurrency=4)
    src = tmp_path / "src"
    src.mkdir()
    _tree(src, None)
    with old_chunking():
        old = lake.push(src, "m/ckpt")
    m1 = catalog.load_manifest(store, "m/ckpt", 1)
    st_entry = next(e for e in m1.files if e.path == "model.safetensors")
    assert {c.size for c in st_entry.chunks[:-1]} == {CS}, "the old rule: fixed offsets"
    first = (src / "model.safetensors").read_bytes()
    # this version's code reads it
    lake.pull("m/ckpt@v1", tmp_path / "v1")
    _same_tree(src, tmp_path / "v1")
    # and pushes over it: the first re-push cuts anew (one full upload of the structured files)
    save(src / "model.safetensors", model(), note="x")
    r2 = lake.push(src, "m/ckpt")
    assert r2.version == 2 and r2.bytes_uploaded <= old.bytes_uploaded
    save(src / "model.safetensors", model(), note="xy")
    r3 = lake.push(src, "m/ckpt")
    assert r3.chunks_uploaded == 1  # from then on, a header change costs the header
    for v in (1, 2, 3):
        dst = tmp_path / f"p{v}"
        lake.pull(f"m/ckpt@v{v}", dst)
        assert (dst / "random.bin").read_bytes() == (src / "random.bin").read_bytes()
    assert (tmp_path / "p1" / "model.safetensors").read_bytes() == first
    assert (tmp_path / "p3" / "model.safetensors").read_bytes() == \
        (src / "model.safetensors").read_bytes()
    # the unchanged raw file kept its fixed-offset chunks: deduplicated across the switch
    assert r2.chunks_deduplicated >= 3


# --- torch's data.pkl is read for dtypes, never run -----------------------------------------------

def test_data_pkl_is_parsed_without_running_it(tmp_path: Path) -> None:
    import pickle

    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self) -> Any:
            return (os.system, (f"touch {marker}",))
    data = pickle.dumps({"x": Evil()}, protocol=2)
    assert chunking.storage_dtypes(data) == {}
    assert not marker.exists()
    # and a real one gives each storage's dtype, new dtypes (rebuilt by _rebuild_tensor_v3) too
    torch = pytest.importorskip("torch")
    import zipfile

    sd = {"w": torch.ones(3), "h": torch.ones(2, dtype=torch.bfloat16),
          "f8": torch.zeros(4, dtype=torch.float8_e4m3fn), "i": torch.arange(3)}
    torch.save(sd, tmp_path / "m.pt")
    with zipfile.ZipFile(tmp_path / "m.pt") as zf:
        pkl = zf.read(next(n for n in zf.namelist() if n.endswith("/data.pkl")))
    assert sorted(chunking.storage_dtypes(pkl).values()) == ["BF16", "F32", "F8_E4M3", "I64"]


def test_a_huge_data_pkl_gives_no_hints_but_still_cuts(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(chunking, "MAX_PICKLE_OPS", 10)
    torch.save(torch_state(torch), tmp_path / "m.pt")
    pl = file_plan(tmp_path / "m.pt")
    assert pl.kind == "torch" and {c.dtype for c in pl.cuts} == {None}
    assert check_cuts(pl.cuts, (tmp_path / "m.pt").stat().st_size, CS)


def test_cli_debug_shows_the_fallback_note(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ckptlake.cli.app import app

    src = tmp_path / "src"
    src.mkdir()
    (src / "model.safetensors").write_bytes(_lying_files()["past-end.safetensors"])
    lake = "file://" + (tmp_path / "lake").as_posix()
    quiet = CliRunner().invoke(app, ["push", str(src), "m/x", "--lake", lake])
    assert quiet.exit_code == 0, quiet.stderr
    assert "fixed offsets" not in quiet.stderr  # silent by default
    (src / "other.safetensors").write_bytes(_lying_files()["overlap.safetensors"])
    r = CliRunner().invoke(app, ["push", str(src), "m/x", "--lake", lake, "--debug"])
    assert r.exit_code == 0, r.stderr
    notes = [ln for ln in r.stderr.splitlines() if "cut at fixed offsets" in ln]
    assert len(notes) == 2 and any("other.safetensors" in n for n in notes), r.stderr
    assert not logging.getLogger("ckptlake").handlers, "the handler is removed after the command"


# ---- run bounds, leads and a zip's tail (mutation review mut32) --------------------------------

def _safetensors_bytes(tensors: list[tuple[str, int, int, int]], total: int) -> bytes:
    """A hand-made safetensors file: (name, start, end, F32 count) at the given data offsets,
    zeros elsewhere (gaps are legal: the format only asks that tensors fit and not overlap)."""
    header = {name: {"dtype": "F32", "shape": [count], "data_offsets": [s, e]}
              for name, s, e, count in tensors}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    data = bytearray(total)
    for k, (_name, s, e, _count) in enumerate(tensors):
        data[s:e] = bytes([k + 1]) * (e - s)
    return struct.pack("<Q", len(raw)) + raw + bytes(data)


def _plan_of(data: bytes) -> chunking.Plan:
    return plan(lambda o, n: data[o:o + n], len(data), CS, name="m.safetensors")


def test_tensors_between_half_and_one_chunk_are_a_chunk_each() -> None:
    """A run of small tensors closes before it would pass the chunk size, not after: each of
    these fills most of a chunk, so a run of two would overflow it (and the file, cut
    inconsistently, would fall back to fixed offsets: every later chunk moves with the header)."""
    n = 150_000  # 600,000 bytes of F32
    data = _safetensors_bytes([(f"t{k}", k * 4 * n, (k + 1) * 4 * n, n) for k in range(3)],
                              3 * 4 * n)
    pl = _plan_of(data)
    assert (pl.kind, pl.note) == ("safetensors", None)
    head = pl.cuts[0].length
    assert [(c.offset - head, c.length) for c in pl.cuts[1:]] == \
        [(k * 4 * n, 4 * n) for k in range(3)]


def test_bytes_before_a_small_tensor_that_would_overflow_its_chunk_are_cut_apart() -> None:
    """Unused bytes (700,000) then a small tensor (600,000): together past one chunk, so the
    lead is a piece of its own and the tensor starts its own chunk."""
    data = _safetensors_bytes([("a", 0, 400, 100), ("b", 700_400, 1_300_400, 150_000)],
                              1_300_400)
    pl = _plan_of(data)
    assert (pl.kind, pl.note) == ("safetensors", None)
    head = pl.cuts[0].length
    assert any(c.offset == head + 700_400 and c.length == 600_000 for c in pl.cuts), pl.cuts


def test_an_npz_central_directory_is_a_chunk_of_its_own(tmp_path: Path) -> None:
    """It names every entry's offset and CRC, so it changes with any entry: packed with the
    last small arrays it would re-upload them too."""
    import zipfile

    np.savez(tmp_path / "s.npz", a=np.ones(1000, np.float32), b=np.zeros(500, np.int64))
    pl = file_plan(tmp_path / "s.npz")
    with zipfile.ZipFile(tmp_path / "s.npz") as z:
        start_dir = z.start_dir
    assert pl.kind == "npz"
    last = pl.cuts[-1]
    assert (last.offset, last.offset + last.length) == (start_dir, (tmp_path / "s.npz")
                                                        .stat().st_size)


def test_overlapping_items_are_a_lying_layout() -> None:
    """Two zip entries sharing bytes (a crafted directory) cannot both be cut at their own
    boundaries: the layout is refused, and plan() cuts the file at fixed offsets."""
    with pytest.raises(chunking.Lying, match="overlap"):
        chunking._checked("zip", 0, [chunking.Item(0, 10), chunking.Item(5, 20)], 100)
    with pytest.raises(chunking.Lying, match="ends past the end"):
        chunking._checked("zip", 0, [chunking.Item(0, 10), chunking.Item(10, 120)], 100)
    layout = chunking._checked("zip", 4, [chunking.Item(10, 20), chunking.Item(4, 10),
                                          chunking.Item(30, 30)], 100, zip_directory=True)
    assert [(i.start, i.end) for i in layout.items] == [(4, 10), (10, 20)]
    assert layout.tail == 20
