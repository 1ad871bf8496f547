"""Reading in place: lake.open (LakeFile), lake.tensors, lake.load_state_dict."""
from __future__ import annotations

import bisect
import io
import itertools
import json
import os
import random
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

from ckptlake.errors import IntegrityError, NotFound, UsageError
from ckptlake.format import layout
from ckptlake.lake import Lake
from ckptlake.store.memory import MemoryStore

KiB, MiB = 1024, 1024 * 1024
CH = MiB  # chunk size of the test lake


class CountingStore(MemoryStore):
    """Records every GET and ranged GET: (key, bytes returned)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[tuple[str, int]] = []

    def get(self, key: str) -> bytes:
        data = super().get(key)
        self.reads.append((key, len(data)))
        return data

    def get_range(self, key: str, start: int, length: int) -> bytes:
        data = super().get_range(key, start, length)
        self.reads.append((key, len(data)))
        return data


@pytest.fixture
def store() -> CountingStore:
    return CountingStore()


@pytest.fixture
def lake(store: CountingStore) -> Lake:
    # 1 MiB chunks (the smallest allowed); files under 1 MiB are packed.
    return Lake(store, chunk_size=CH, concurrency=4)


def payload(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def test_random_seeks_and_reads_match_the_source(lake: Lake, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    data = payload(5 * CH + 12345)
    (src / "big.bin").write_bytes(data)
    (src / "small.txt").write_bytes(b"hello packed world\n" * 10)
    lake.push(src, "a/b")
    rng = random.Random(1)
    with lake.open("a/b", "big.bin") as fh:
        assert fh.readable() and fh.seekable() and fh.size == len(data)
        for _ in range(200):
            whence = rng.choice([io.SEEK_SET, io.SEEK_CUR, io.SEEK_END])
            if whence == io.SEEK_SET:
                pos = fh.seek(rng.randrange(len(data) + 10))
            elif whence == io.SEEK_CUR:
                pos = fh.seek(rng.randrange(-fh.tell(), 2 * CH), io.SEEK_CUR)
            else:
                pos = fh.seek(-rng.randrange(len(data) + 1), io.SEEK_END)
            assert fh.tell() == pos
            n = rng.choice([0, 1, 7, 4096, 300 * KiB, CH, CH + 1, 3 * CH])
            if rng.random() < 0.5:
                got = fh.read(n)
            else:
                buf = bytearray(n)
                got = bytes(buf[:fh.readinto(buf)])
            assert got == data[pos:pos + n]
            assert fh.tell() == min(pos + n, max(pos, len(data))) or pos >= len(data)
        fh.seek(0)
        assert fh.read() == data
        assert fh.read() == b"" and fh.read(10) == b""
    assert fh.closed
    with pytest.raises(ValueError):
        fh.read(1)
    with lake.open("a/b", "small.txt") as fh:  # a packed file: verified by its file digest
        fh.seek(6)
        assert fh.read(6) == b"packed"
        fh.seek(0)
        assert fh.read() == b"hello packed world\n" * 10


def test_json_tarfile_zipfile_read_in_place(lake: Lake, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    doc = {"name": "x", "values": list(range(1000))}
    (src / "config.json").write_text(json.dumps(doc))
    members = {f"m{i}.bin": payload(200 * KiB + i, seed=i) for i in range(6)}
    with tarfile.open(src / "data.tar", "w") as tar:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    with zipfile.ZipFile(src / "data.zip", "w", zipfile.ZIP_STORED) as zf:
        for name, body in members.items():
            zf.writestr(name, body)
    lake.push(src, "a/b")
    with lake.open("a/b@v1", "config.json") as fh:
        assert json.load(fh) == doc
    with lake.open("a/b", "data.tar") as fh, tarfile.open(fileobj=fh, mode="r:") as tar:
        got = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore
    assert got == members
    with lake.open("a/b", "data.zip") as fh, zipfile.ZipFile(fh) as zf:
        assert zf.read("m3.bin") == members["m3.bin"]
        assert zf.testzip() is None


def test_single_file_version_and_symlinks(lake: Lake, tmp_path: Path) -> None:
    f = tmp_path / "model.bin"
    data = payload(300 * KiB)
    f.write_bytes(data)
    lake.push(f, "one/file")
    with lake.open("one/file") as fh:
        assert fh.read() == data
    src = tmp_path / "tree"
    (src / "step_2").mkdir(parents=True)
    (src / "step_2" / "w.bin").write_bytes(data)
    os.symlink("step_2", src / "latest")
    os.symlink("../step_2/w.bin", src / "step_2" / "self")
    lake.push(src, "t/ree")
    for path in ("latest/w.bin", "step_2/self", "./step_2/w.bin"):
        with lake.open("t/ree", path) as fh:
            assert fh.read() == data, path


def test_bad_paths(lake: Lake, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "weights.bin").write_bytes(b"x" * 100)
    os.symlink("sub/nothing", src / "dangling")
    lake.push(src, "a/b")
    with pytest.raises(NotFound) as exc:
        lake.open("a/b", "sub/weight.bin")
    assert "a/b@v1" in str(exc.value) and "sub/weights.bin" in str(exc.value)  # close match
    with pytest.raises(NotFound, match="sub/nothing"):
        lake.open("a/b", "dangling")
    with pytest.raises(UsageError, match="directory"):
        lake.open("a/b", "sub")
    with pytest.raises(UsageError, match="name one"):
        lake.open("a/b")
    with pytest.raises(NotFound, match="outside"):
        lake.open("a/b", "../etc/passwd")
    with pytest.raises(NotFound):
        lake.open("a/b@v7", "sub/weights.bin")
    with pytest.raises(UsageError, match="readahead"):
        lake.open("a/b", "sub/weights.bin", readahead=-1)


def test_corrupt_chunk_raises_and_returns_nothing_of_it(lake: Lake, store: CountingStore,
                                                        tmp_path: Path) -> None:
    data = payload(8 * CH, seed=3)
    (tmp_path / "w.bin").write_bytes(data)
    lake.push(tmp_path / "w.bin", "c/x")
    m = lake.store.get(layout.version_key("c/x", 1))
    chunks = json.loads(m)["files"][0]["chunks"]
    bad = layout.chunk_key(chunks[5][0])  # bytes [5 CH, 6 CH)
    body = bytearray(store.get(bad))
    body[100] ^= 0xFF
    store.put(bad, bytes(body))
    with lake.open("c/x", readahead=4) as fh:
        assert fh.read(5 * CH - 10) == data[:5 * CH - 10]  # chunk 5 prefetched: no error yet
        buf = bytearray(100)
        with pytest.raises(IntegrityError, match="does not match"):
            fh.readinto(buf)
        assert buf[10:] == bytearray(90), "no byte of the corrupt chunk is handed over"
        assert fh.tell() == 5 * CH - 10
        fh.seek(6 * CH)
        assert fh.read(10) == data[6 * CH:6 * CH + 10]


def test_readahead_is_bounded_and_only_for_forward_reads(lake: Lake, store: CountingStore,
                                                         tmp_path: Path) -> None:
    data = payload(8 * CH, seed=4)  # 8 chunks
    (tmp_path / "w.bin").write_bytes(data)
    lake.push(tmp_path / "w.bin", "r/a")
    with lake.open("r/a", readahead=2) as fh:
        fh.seek(-10, io.SEEK_END)
        fh.read()  # a jump to the end: that chunk only
        assert (fh.requests, fh.bytes_fetched) == (1, CH)
        fh.seek(0)
        while fh.read(256 * KiB):
            assert len(fh._ahead) <= 2  # the memory bound: current + 2
        assert fh.bytes_fetched == 9 * CH  # every chunk once, plus the first jump
    with lake.open("r/a", readahead=0) as fh:  # no read-ahead: exactly what is read
        fh.seek(3 * CH)
        fh.read(CH + 1)
        assert (fh.requests, fh.bytes_fetched) == (2, 2 * CH)


def test_large_chunks_come_in_parts(tmp_path: Path) -> None:
    """Chunks at or above the multipart threshold are fetched as parallel ranged GETs, as by
    pull, and still verified whole."""
    store = CountingStore()
    lake = Lake(store, chunk_size=12 * MiB, multipart_threshold=10 * MiB, part_size=5 * MiB)
    data = payload(25 * MiB, seed=9)  # chunks of 12, 12 and 1 MiB
    (tmp_path / "w.bin").write_bytes(data)
    lake.push(tmp_path / "w.bin", "p/x")
    store.reads.clear()
    with lake.open("p/x", readahead=0) as fh:
        fh.seek(12 * MiB - 3)
        assert fh.read(6) == data[12 * MiB - 3:12 * MiB + 3]
        assert fh.requests == 6 and fh.bytes_fetched == 24 * MiB  # 3 parts per 12 MiB chunk
    assert sorted(n for k, n in store.reads if k.startswith(layout.CHUNKS_PREFIX)) == \
        [2 * MiB] * 2 + [5 * MiB] * 4
    lake.close()


# ---- lake.tensors ---------------------------------------------------------------------------

np = pytest.importorskip("numpy")


def write_safetensors(path: Path, tensors: dict[str, Any], metadata: dict[str, str] | None
                      = None) -> None:
    st = pytest.importorskip("safetensors.numpy")
    st.save_file(tensors, str(path), metadata=metadata)


def test_one_tensor_fetches_its_bytes_and_the_manifest(lake: Lake, store: CountingStore,
                                                       tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    tensors = {f"layer.{i}.w": rng.standard_normal((128, 160)).astype(np.float32)
               for i in range(64)}  # 5 MiB: 5 chunks
    tensors["tok.ids"] = np.arange(1000, dtype=np.int64)
    tensors["layer.big.w"] = rng.standard_normal((3, 160, 1000)).astype(np.float32)  # 1.8 MiB
    write_safetensors(tmp_path / "model.safetensors", tensors)
    lake.push(tmp_path / "model.safetensors", "m/st", compression="none")  # raw: ranged reads
    raw = store.get(layout.version_key("m/st", 1))
    manifest = len(raw)
    entry = json.loads(raw)["files"][0]
    starts = list(itertools.accumulate([0] + [c[1] for c in entry["chunks"]]))
    name = next(t["name"] for t in entry["tensors"]  # one across two chunks, wherever they are
                if bisect.bisect_right(starts, t["range"][0])
                != bisect.bisect_right(starts, t["range"][1] - 1))
    store.reads.clear()
    got = lake.tensors("m/st@v1", name)
    assert list(got) == [name]
    np.testing.assert_array_equal(got[name], tensors[name])
    chunk_bytes = sum(n for k, n in store.reads if k.startswith(layout.CHUNKS_PREFIX))
    assert chunk_bytes == tensors[name].nbytes, "exactly the tensor's range"
    # requests: the manifest (a @vN reference needs nothing else) plus ranged GETs
    assert sum(n for _, n in store.reads) - chunk_bytes == manifest
    assert len(store.reads) == 3, "the manifest and one ranged GET per chunk the tensor spans"
    everything = lake.tensors("m/st", framework="np")
    assert set(everything) == set(tensors)
    np.testing.assert_array_equal(everything["tok.ids"], tensors["tok.ids"])
    assert everything["tok.ids"].flags.writeable


def test_tensor_errors(lake: Lake, store: CountingStore, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    write_safetensors(src / "a.safetensors", {"encoder.weight": np.ones(4, np.float32),
                                              "shared": np.zeros(2, np.float32)})
    write_safetensors(src / "b.safetensors", {"decoder.weight": np.ones(4, np.float32),
                                              "shared": np.ones(2, np.float32)})
    (src / "notes.txt").write_text("x")
    lake.push(src, "m/two")
    with pytest.raises(NotFound) as exc:
        lake.tensors("m/two", "encoder.weights")
    assert "encoder.weight" in str(exc.value) and "did you mean" in str(exc.value)
    with pytest.raises(UsageError, match="several files"):
        lake.tensors("m/two", "shared")
    with pytest.raises(UsageError, match="several files"):
        lake.tensors("m/two")
    assert lake.tensors("m/two", "shared", path="b.safetensors")["shared"].tolist() == [1, 1]
    with pytest.raises(UsageError, match="no tensor records"):
        lake.tensors("m/two", path="notes.txt")
    with pytest.raises(UsageError, match="framework"):
        lake.tensors("m/two", "encoder.weight", framework="jax")


def test_tensor_corruption_is_caught(lake: Lake, store: CountingStore, tmp_path: Path) -> None:
    t = {"w": np.arange(1_000_000, dtype=np.float32)}  # 4 MB over 4 chunks
    write_safetensors(tmp_path / "m.safetensors", t)
    lake.push(tmp_path / "m.safetensors", "m/c", compression="none")  # raw: ranged reads
    files = json.loads(store.get(layout.version_key("m/c", 1)))["files"]
    key = layout.chunk_key(files[0]["chunks"][2][0])
    body = bytearray(store.get(key))
    body[10] ^= 1
    store.put(key, bytes(body))
    with pytest.raises(IntegrityError, match="recorded digest|does not match its digest"):
        lake.tensors("m/c", "w")


def test_bf16_needs_torch_with_numpy(lake: Lake, tmp_path: Path) -> None:
    import struct

    header = json.dumps({"x": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}).encode()
    (tmp_path / "b.safetensors").write_bytes(struct.pack("<Q", len(header)) + header
                                             + b"\x80\x3f\x00\x40")
    lake.push(tmp_path / "b.safetensors", "m/bf", compression="none")  # raw: ranged reads
    with pytest.raises(UsageError, match="ml_dtypes is not installed"):
        lake.tensors("m/bf", framework="np")
    torch = pytest.importorskip("torch")
    got = lake.tensors("m/bf", framework="pt")["x"]
    assert got.dtype == torch.bfloat16 and got.tolist() == [1.0, 2.0]


def test_import_ckptlake_imports_no_numpy_or_torch() -> None:
    code = ("import sys, ckptlake, ckptlake.lake, ckptlake.core.reader, ckptlake.core.diff; "
            "print(sorted(m for m in ('numpy', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


# ---- torch: torch.load in place, load_state_dict, diff of torch archives ----------------------

def small_model(torch: Any, seed: int = 0) -> dict[str, Any]:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.ReLU(),
                                torch.nn.Linear(1024, 1024), torch.nn.LayerNorm(1024))
    return {k: v.clone() for k, v in model.state_dict().items()}  # ~5 MiB: several chunks


def test_torch_load_in_place_and_load_state_dict(lake: Lake, store: CountingStore,
                                                 tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    sd = small_model(torch)
    sd["half"] = torch.arange(10, dtype=torch.bfloat16)
    src = tmp_path / "src"
    src.mkdir()
    torch.save(sd, src / "model.pt")
    (src / "notes.txt").write_text("n")
    lake.push(src, "t/pt")
    size = (src / "model.pt").stat().st_size
    with lake.open("t/pt", "model.pt") as fh:
        got = torch.load(fh, weights_only=True)
        assert fh.bytes_fetched <= size + 2 * CH, "each chunk about once (+ first/last again)"
    assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)
    got = lake.load_state_dict("t/pt", map_location="cpu")  # the version's only torch file
    assert all(torch.equal(got[k], sd[k]) for k in sd)
    with pytest.raises(UsageError, match="torch.load"):
        lake.load_state_dict("t/pt", "notes.txt")
    files = json.loads(store.get(layout.version_key("t/pt", 1)))["files"]
    key = layout.chunk_key(next(f for f in files if f["path"] == "model.pt")["chunks"][2][0])
    body = bytearray(store.get(key))
    body[7] ^= 1
    store.put(key, bytes(body))
    with pytest.raises(IntegrityError):  # through torch's reader, still exit 5
        lake.load_state_dict("t/pt")


def test_load_state_dict_of_safetensors(lake: Lake, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("safetensors.torch")
    sd = small_model(torch, seed=1)
    st.save_file(sd, str(tmp_path / "m.safetensors"))
    lake.push(tmp_path / "m.safetensors", "t/st")
    got = lake.load_state_dict("t/st")
    assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)
    one = lake.tensors("t/st", ["0.bias"], framework="pt")["0.bias"]
    assert torch.equal(one, sd["0.bias"])


def test_diff_of_torch_archives(lake: Lake, store: CountingStore, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    a_dir, b_dir = tmp_path / "A", tmp_path / "B"
    a_dir.mkdir()
    b_dir.mkdir()
    sd = small_model(torch)
    torch.save(sd, a_dir / "model.pt")
    changed = dict(sd)
    changed["2.weight"] = sd["2.weight"].clone()
    changed["2.weight"][3, 4] += 1.0
    torch.save(changed, b_dir / "model.pt")
    (a_dir / "blob.dat").write_bytes(payload(2 * CH, seed=1))
    (b_dir / "blob.dat").write_bytes(payload(2 * CH, seed=2))
    lake.push(a_dir, "t/d", compression="none")  # raw: ranged reads
    lake.push(b_dir, "t/d", compression="none")  # raw: ranged reads
    store.reads.clear()
    plain = lake.diff("t/d@v1", "t/d@v2")
    assert not [k for k, _ in store.reads if k.startswith(layout.CHUNKS_PREFIX)]
    assert {c["path"]: c["inspected"] for c in plain.contents} == {"blob.dat": False,
                                                                   "model.pt": False}
    r = lake.diff("t/d@v1", "t/d@v2", inspect=True)
    c = {c["path"]: c for c in r.contents}
    assert c["blob.dat"]["inspected"] is False
    pt = c["model.pt"]
    assert pt["inspected"] and pt["kind"] == "torch"
    assert len(pt["storages"]["changed"]) == 1 and pt["storages"]["unchanged"] == len(sd) - 1
    assert not pt["storages"]["added"] and not pt["storages"]["removed"]
    t = pt["tensors"]
    assert [x["name"] for x in t["changed"]] == ["2.weight"]
    assert t["changed"][0]["shape"] == [1024, 1024] and t["changed"][0]["dtype"] == "float32"
    assert t["unchanged"] == len(sd) - 1
    # what it read is what the egress estimate predicts: each side's first and last chunk
    chunk_bytes = sum(n for k, n in store.reads if k.startswith(layout.CHUNKS_PREFIX))
    assert pt["bytes_fetched"] == chunk_bytes <= 4 * CH
    from ckptlake.policy.egress import EgressPolicy

    est = lake.estimate_diff("t/d@v1", "t/d@v2", values=False, inspect=True,
                             egress=EgressPolicy())
    assert est.bytes_to_download == chunk_bytes


def test_diff_reports_safetensors_metadata(lake: Lake, tmp_path: Path) -> None:
    a_dir, b_dir = tmp_path / "A", tmp_path / "B"
    a_dir.mkdir()
    b_dir.mkdir()
    t = {"w": np.ones(10, np.float32)}
    write_safetensors(a_dir / "m.safetensors", t, {"format": "pt", "epoch": "1"})
    write_safetensors(b_dir / "m.safetensors", t, {"format": "np", "note": "x"})
    lake.push(a_dir, "s/m")
    lake.push(b_dir, "s/m")
    r = lake.diff("s/m@v1", "s/m@v2", inspect=True)
    assert r.tensors["unchanged"] == 1 and not r.tensors["changed"]
    assert r.contents == [{"path": "m.safetensors", "kind": "safetensors", "inspected": True,
                           "metadata": {"added": {"note": "x"}, "removed": {"epoch": "1"},
                                        "changed": {"format": {"a": "pt", "b": "np"}}},
                           # under 1 MiB, each side is packed: its one segment, read whole
                           "bytes_fetched": (a_dir / "m.safetensors").stat().st_size
                           + (b_dir / "m.safetensors").stat().st_size}]


def test_cli_diff_says_what_it_did_not_inspect(lake: Lake, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from ckptlake.cli.app import app

    a_dir, b_dir = tmp_path / "A", tmp_path / "B"
    a_dir.mkdir()
    b_dir.mkdir()
    for d, seed, w in ((a_dir, 1, np.ones(3, np.float32)), (b_dir, 2, np.zeros(3, np.float32))):
        (d / "weights.dat").write_bytes(payload(CH + 5, seed=seed))
        (d / "legacy.bin").write_bytes(payload(100, seed=seed))  # .bin, but no zip archive
        write_safetensors(d / "m.safetensors", {"w": w})
    lake.push(a_dir, "c/d")
    lake.push(b_dir, "c/d")
    monkeypatch.setattr(Lake, "close", lambda self: None)
    monkeypatch.setenv("CKPTLAKE_LAKE", "memory://unused")
    monkeypatch.setattr("ckptlake.cli.diff.open_lake", lambda common: lake)
    out = CliRunner().invoke(app, ["diff", "c/d@v1", "c/d@v2"])
    assert out.exit_code == 0, out.output
    assert "weights.dat  contents not inspected (not a .safetensors file or a torch archive)" \
        in out.output
    assert "legacy.bin  contents not inspected (--inspect reads its zip directory)" in out.output
    assert "tensors: 1 changed, 0 reshaped, 0 retyped, 0 added, 0 removed, 0 unchanged " \
        "(in m.safetensors)" in out.output, "the scope of the count is said"
    out = CliRunner().invoke(app, ["diff", "c/d@v1", "c/d@v2", "--json", "--inspect"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert {c["path"]: c["inspected"] for c in doc["contents"]} == {
        "legacy.bin": False, "m.safetensors": True, "weights.dat": False}
    legacy = next(c for c in doc["contents"] if c["path"] == "legacy.bin")
    assert legacy["reason"] == "not a zip archive (torch's legacy format?)"
    out = CliRunner().invoke(app, ["diff", "c/d@v1", "c/d@v2", "--inspect"])
    assert "legacy.bin  contents not inspected (not a zip archive" in out.output
    assert "m.safetensors  __metadata__ unchanged" in out.output


def hide(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    """Make `import <module>` fail, as on a machine without that extra."""
    import builtins

    real_import = builtins.__import__

    def fake(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == module or name.startswith(module + "."):
            raise ImportError(f"no {module}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)


def test_without_torch(lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    a_dir, b_dir = tmp_path / "A", tmp_path / "B"
    a_dir.mkdir()
    b_dir.mkdir()
    torch.save({"w": torch.zeros(300_000), "b": torch.ones(3)}, a_dir / "m.pth")
    torch.save({"w": torch.zeros(300_000), "b": torch.ones(4)}, b_dir / "m.pth")
    for d in (a_dir, b_dir):
        write_safetensors(d / "s.safetensors", {"x": np.ones(2, np.float32)})
    lake.push(a_dir, "n/t")
    lake.push(b_dir, "n/t")
    hide(monkeypatch, "torch")
    r = lake.diff("n/t@v1", "n/t@v2", inspect=True)
    (c,) = r.contents
    assert c["inspected"] and c["tensors"] is None and "ckptlake[torch]" in c["tensors_note"]
    assert [x["size_b"] for x in c["storages"]["changed"]] == [16]  # b: 3 -> 4 floats
    assert c["storages"]["unchanged"] == 1
    with pytest.raises(UsageError, match=r"ckptlake\[torch\]"):
        lake.tensors("n/t", framework="pt")
    with pytest.raises(UsageError, match=r"ckptlake\[torch\]"):
        lake.load_state_dict("n/t", "m.pth")
    hide(monkeypatch, "numpy")
    with pytest.raises(UsageError, match=r"ckptlake\[numpy\]"):
        lake.tensors("n/t")
