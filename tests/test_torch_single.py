"""ckptlake.torch.load and Lake.open(max_buffer=...): a file read whole, every chunk in
parallel into one buffer (core/whole.py), and the streaming fallback above the bound."""
from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any

import pytest

import ckptlake
from ckptlake.core import whole
from ckptlake.core.reader import LakeFile
from ckptlake.core.whole import WholeFile, read_whole
from ckptlake.errors import IntegrityError, UsageError
from ckptlake.format import layout
from ckptlake.lake import Lake
from ckptlake.store.memory import MemoryStore

torch = pytest.importorskip("torch")

MiB = 1024 * 1024
BIG = 1 << 40  # a max_buffer every test file fits


class Custom:
    """A pickled class: weights_only=True must refuse it."""

    def __init__(self, v: int) -> None:
        self.v = v


def state(seed: int = 0) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(700_000, generator=g),  # ~2.7 MiB: several 1 MiB chunks
            "h": torch.randn(300_000, generator=g).to(torch.bfloat16),
            "zeros": torch.zeros(3 * MiB // 4),  # whole zero chunks, referenced repeatedly
            "b": torch.arange(7), "step": 3}


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k]
        for k in a)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the files read whole (read_whole spied on)."""
    seen: list[str] = []

    def spy(*args: Any, **kwargs: Any) -> WholeFile:
        seen.append(kwargs["name"])
        return read_whole(*args, **kwargs)

    monkeypatch.setattr(whole, "read_whole", spy)
    return seen


def chunks_of(lake: Lake, artifact: str, version: int, path: str) -> list[list[Any]]:
    m = json.loads(lake.store.get(layout.version_key(artifact, version)))
    return next(f for f in m["files"] if f["path"] == path)["chunks"]


@pytest.mark.parametrize("compression", ["auto", "none"])
def test_load_round_trips_read_whole(lake_url: str, compression: str,
                                     calls: list[str]) -> None:
    from ckptlake.torch import load, save

    lake = ckptlake.open(lake_url, chunk_size=MiB)
    sd = state()
    r = save(sd, lake, "m", compression=compression)
    m = json.loads(lake.store.get(layout.version_key("m", r.version)))
    assert bool(m.get("stored")) == (compression == "auto")  # encoded chunks, or none
    assert same(load(lake, "m@latest", max_buffer=None), sd)  # the memory bound: fits
    assert calls == ["m@v1:model.pt"]
    assert same(load(lake, "m@latest"), sd)  # the default streams: same tensors
    assert calls == ["m@v1:model.pt"]


def test_file_above_the_bound_streams(calls: list[str], monkeypatch: pytest.MonkeyPatch
                                      ) -> None:
    from ckptlake.torch import load, save

    lake = Lake(MemoryStore(), chunk_size=MiB)
    sd = state(1)
    save(sd, lake, "m")
    opened: list[Any] = []
    real_open = Lake.open

    def spy_open(self: Lake, *a: Any, **kw: Any) -> Any:
        f = real_open(self, *a, **kw)
        opened.append(f)
        return f

    monkeypatch.setattr(Lake, "open", spy_open)
    assert same(load(lake, "m", max_buffer=1024), sd)  # tiny bound: streamed
    assert calls == [] and isinstance(opened[-1], LakeFile)
    monkeypatch.setattr(whole, "default_max_buffer", lambda: 1024)
    assert same(load(lake, "m", max_buffer=None), sd)  # the memory bound, made tiny: streamed
    assert calls == [] and isinstance(opened[-1], LakeFile)
    monkeypatch.setattr(whole, "default_max_buffer", lambda: BIG)
    assert same(load(lake, "m", max_buffer=None), sd)
    assert calls == ["m@v1:model.pt"] and isinstance(opened[-1], WholeFile)
    assert same(load(lake, "m"), sd)  # the default: streamed
    assert isinstance(opened[-1], LakeFile)


def test_map_location_and_weights_only_pass_through(tmp_path: Path) -> None:
    from ckptlake.torch import load, save

    lake = ckptlake.open(str(tmp_path / "lake"), chunk_size=MiB)
    sd = state(2)
    save(sd, lake, "m")
    seen: list[str] = []

    def where(storage: Any, location: str) -> Any:
        seen.append(location)
        return storage

    save({"obj": Custom(5), "w": sd["w"]}, lake, "code")
    for mb in (0, BIG):  # streamed and read whole
        seen.clear()
        assert same(load(lake, "m", map_location=where, max_buffer=mb), sd)
        assert seen and set(seen) == {"cpu"}
        meta = load(lake, "m", map_location="meta", max_buffer=mb)
        assert meta["w"].device.type == "meta" and meta["w"].shape == sd["w"].shape
        with pytest.raises(pickle.UnpicklingError):
            load(lake, "code", max_buffer=mb)  # weights_only=True by default
        got = load(lake, "code", weights_only=False, max_buffer=mb)
        assert got["obj"].v == 5 and torch.equal(got["w"], sd["w"])


@pytest.mark.parametrize("where", ["local", "s3"])
def test_corrupt_chunk_raises_and_returns_nothing(where: str, request: pytest.FixtureRequest,
                                                  calls: list[str]) -> None:
    from ckptlake.torch import load, save

    url = request.getfixturevalue(f"{where}_lake_url")
    lake = ckptlake.open(url, chunk_size=MiB)
    save(state(3), lake, "m")
    stored = json.loads(lake.store.get(layout.version_key("m", 1)))["stored"]
    d = next(c[0] for c in chunks_of(lake, "m", 1, "model.pt") if c[0] in stored)  # encoded
    key = layout.chunk_key(d)
    body = bytearray(lake.store.get(key))
    body[len(body) // 2] ^= 0xFF
    lake.store.put(key, bytes(body))
    got: list[Any] = []
    for mb in (BIG, 0):  # read whole, streamed
        with pytest.raises(IntegrityError, match=rf"chunk {key} of m@v1:model\.pt is corrupt"):
            got.append(load(lake, "m", max_buffer=mb))
    assert got == [] and calls == ["m@v1:model.pt"]
    with pytest.raises(IntegrityError, match="m@v1"):
        lake.open("m", "model.pt", max_buffer=BIG)
    lake.store.delete([key])
    with pytest.raises(IntegrityError, match=rf"chunk {key} of m@v1:model\.pt is missing"):
        lake.open("m", "model.pt", max_buffer=BIG)


def test_packed_empty_and_several_chunk_files(tmp_path: Path, calls: list[str]) -> None:
    from ckptlake.torch import load

    lake = Lake(MemoryStore(), chunk_size=MiB)
    src = tmp_path / "src"
    src.mkdir()
    small = {"tiny": torch.arange(10), "step": 1}
    torch.save(small, src / "small.pt")  # packed with the other small files
    (src / "config.json").write_text('{"a": 1}')
    (src / "empty.bin").write_bytes(b"")
    sd = state(4)
    torch.save(sd, src / "model.pt")
    raw = bytes(range(256)) * (5 * MiB // 256) + b"tail"
    (src / "data.bin").write_bytes(raw + raw)  # the same chunks twice: fetched once
    lake.push(src, "d")
    assert any(len(c) > 2 for c in chunks_of(lake, "d", 1, "small.pt")), "packed"
    assert same(load(lake, "d", "small.pt", max_buffer=BIG), small)
    assert same(load(lake, "d", "model.pt", max_buffer=BIG), sd)
    assert calls == ["d@v1:small.pt", "d@v1:model.pt"]
    with lake.open("d", "config.json", max_buffer=BIG) as f:
        assert isinstance(f, WholeFile) and json.load(f) == {"a": 1}
    with lake.open("d", "empty.bin", max_buffer=BIG) as f:
        assert f.read() == b""
    with lake.open("d", "data.bin", max_buffer=BIG) as f:
        assert isinstance(f, WholeFile) and f.read() == raw + raw
        unique = {c[0] for c in chunks_of(lake, "d", 1, "data.bin")}
        assert f.requests == len(unique) < len(chunks_of(lake, "d", 1, "data.bin"))


def test_wholefile_is_a_readonly_seekable_file(tmp_path: Path) -> None:
    lake = Lake(MemoryStore(), chunk_size=MiB)
    data = bytes(range(256)) * (3 * MiB // 256 + 7)
    (tmp_path / "x.bin").write_bytes(data)
    lake.push(tmp_path / "x.bin", "x")
    f = lake.open("x", max_buffer=len(data))
    assert isinstance(f, WholeFile) and f.size == len(data) and f.seekable() and f.readable()
    assert f.read(5) == data[:5] and f.tell() == 5
    f.seek(-3, io.SEEK_END)
    buf = bytearray(10)
    assert f.readinto(buf) == 3 and buf[:3] == data[-3:] and f.readinto(buf) == 0
    f.seek(MiB - 2)
    assert f.readinto(memoryview(buf)[:4]) == 4 and bytes(buf[:4]) == data[MiB - 2:MiB + 2]
    assert f.read() == data[MiB + 2:]
    with pytest.raises(ValueError):
        f.seek(-1)
    assert not f.writable()
    f.close()
    f.close()
    with pytest.raises(ValueError, match="closed"):
        f.read(1)
    assert isinstance(lake.open("x", max_buffer=len(data) - 1), LakeFile)  # just above it
    for bad in (-1, 1.5, True, "1"):
        with pytest.raises(UsageError, match="max_buffer"):
            lake.open("x", max_buffer=bad)  # type: ignore[arg-type]


def test_encoded_chunks_without_or_with_wrong_hints(tmp_path: Path) -> None:
    """The object, not the manifest's hint, decides how a chunk is read (docs/format.md)."""
    lake = Lake(MemoryStore(), chunk_size=MiB)
    from ckptlake.core import catalog
    from ckptlake.core.reader import find_file

    def read(ref: str, stored: dict[str, int] | None) -> bytes:
        m = catalog.resolve(lake.store, ref)
        with read_whole(lake.store, find_file(m, None), m.hash, name=ref, workers=3,
                        stored=stored) as f:
            return f.read()

    sd = state(5)
    buf = io.BytesIO()
    torch.save(sd, buf)
    (tmp_path / "a.pt").write_bytes(buf.getvalue())
    lake.push(tmp_path / "a.pt", "enc", compression="auto")
    lake.push(tmp_path / "a.pt", "raw", compression="none")
    m = catalog.resolve(lake.store, "enc")
    assert m.stored, "encoded chunks"
    assert read("enc", m.stored) == buf.getvalue()
    assert read("enc", None) == buf.getvalue()  # no hints: short objects decoded anyway
    raw = catalog.resolve(lake.store, "raw")
    stale = {c.digest: 1000 for c in raw.files[0].chunks}  # claims encoded; they are raw
    assert read("raw", stale) == buf.getvalue()


def test_large_chunks_come_in_parts(tmp_path: Path) -> None:
    lake = Lake(MemoryStore(), chunk_size=12 * MiB, multipart_threshold=10 * MiB,
                part_size=5 * MiB)
    data = bytes(range(251)) * (25 * MiB // 251)  # chunks of 12, 12 and ~1 MiB
    (tmp_path / "w.bin").write_bytes(data)
    lake.push(tmp_path / "w.bin", "p", compression="none")
    with lake.open("p", max_buffer=BIG) as f:
        assert f.read() == data
        assert f.requests == 3 + 3 + 1 and f.bytes_fetched == len(data)
    lake.close()


def test_memory_bound_is_a_share_of_available_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    avail = whole.memory_available()
    assert avail is None or avail > 0
    monkeypatch.setattr(whole, "memory_available", lambda: 10 * 1024 ** 3)
    assert whole.default_max_buffer() == int(10 * 1024 ** 3 * whole.MEMORY_SHARE)
    monkeypatch.setattr(whole, "memory_available", lambda: None)
    assert whole.default_max_buffer() == 0  # unknown: stream


def test_lakefile_reuses_its_chunk_buffers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    """Streaming (lake.open without max_buffer) receives and decodes into a few reused
    buffers, not fresh ones per chunk, and still returns the right bytes after reuse."""
    from ckptlake.core import chunkio, reader

    lake = Lake(MemoryStore(), chunk_size=MiB)
    sd = {f"l{i}": torch.randn(MiB // 4, generator=torch.Generator().manual_seed(i))
          for i in range(12)}  # 12 MiB of fp32: encoded chunks
    buf = io.BytesIO()
    torch.save(sd, buf)
    (tmp_path / "m.pt").write_bytes(buf.getvalue())
    lake.push(tmp_path / "m.pt", "m", compression="auto")
    made: list[int] = []
    real = chunkio.anonymous
    monkeypatch.setattr(chunkio, "anonymous", lambda n: made.append(n) or real(n))
    with lake.open("m", readahead=2) as f:
        assert isinstance(f, LakeFile)
        assert f.read() == buf.getvalue()
        f.seek(0)
        assert same(torch.load(f, weights_only=True), sd)
    chunks = len(chunks_of(lake, "m", 1, "m.pt"))
    assert chunks >= 12 and 0 < len(made) <= 2 * (reader.KEEP + 2 + 1)
