"""Streaming writes: Lake.writer / ckptlake.torch.save store the chunks a push of the same
file would store, commit only on a clean close, and surface upload errors."""
from __future__ import annotations

import io
import json
import random
import struct
import threading
from typing import Any

import pytest

from ckptlake.errors import TransferError, UsageError
from ckptlake.format import chunking
from ckptlake.lake import Lake
from ckptlake.store.memory import MemoryStore

torch = pytest.importorskip("torch")

MiB = 1024 * 1024


def torch_bytes(seed: int = 0, n: int = 12) -> bytes:
    """torch.save into a non-seekable stream (as into a lake writer): data descriptors."""
    rng = random.Random(seed)
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, Any] = {}
    for i in range(n):
        numel = rng.choice([3, 1000, 200_000, 700_000])
        sd[f"layer{i}.w"] = torch.randn(numel, generator=g).to(
            rng.choice([torch.float32, torch.bfloat16]))
    sd["empty"] = torch.zeros(0)
    sd["step"] = 12

    class Sink:
        def __init__(self) -> None:
            self.b = bytearray()

        def write(self, d: Any) -> int:
            self.b += d
            return len(memoryview(d).cast("B"))

        def flush(self) -> None:
            pass

    sink = Sink()
    torch.save(sd, sink)
    return bytes(sink.b)


def safetensors_bytes(seed: int = 0) -> bytes:
    rng = random.Random(seed)
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    data = bytearray()
    for i in range(8):
        n = rng.choice([4, 300, 400_000])
        header[f"t{i}"] = {"dtype": "F32", "shape": [n],
                           "data_offsets": [len(data), len(data) + 4 * n]}
        data += rng.randbytes(4 * n)
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + bytes(data)


def small_safetensors() -> bytes:
    header = {"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}}
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + bytes(12)


def stream_cuts(data: bytes, chunk_size: int, seed: int = 0) -> list[chunking.Cut]:
    """The planner fed `data` in random pieces, cuts taken as their bytes are complete."""
    rng = random.Random(seed)
    planner = chunking.StreamPlanner(chunk_size)
    buf, base, pos, got = bytearray(), 0, 0, []
    while pos < len(data):
        k = rng.choice([1, 7, 4096, 100_000, 3 * MiB])
        buf += data[pos:pos + k]
        pos += k
        planner.advance(buf, base)
        while planner.out and planner.out[0].offset + planner.out[0].length <= base + len(buf):
            cut = planner.out.pop(0)
            got.append(cut)
            del buf[:cut.offset + cut.length - base]
            base = cut.offset + cut.length
    planner.advance(buf, base, eof=True)
    return got + planner.out


@pytest.mark.parametrize("kind", ["torch", "safetensors", "random"])
@pytest.mark.parametrize("chunk_size", [MiB, 3 * MiB, 300_000])
def test_planner_cuts_like_push(kind: str, chunk_size: int) -> None:
    for seed in range(3):
        data = {"torch": torch_bytes, "safetensors": safetensors_bytes,
                "random": lambda s: random.Random(s).randbytes(5 * MiB + 17)}[kind](seed)
        want = chunking.plan(lambda o, n: data[o:o + n], len(data), chunk_size)
        assert want.kind == ("fixed" if kind == "random" else kind)
        assert stream_cuts(data, chunk_size, seed) == list(want.cuts)


def test_planner_without_storage_sizes_searches_descriptors(monkeypatch: Any) -> None:
    """data.pkl's sizes only spare the search for each storage's end: without them (an
    untyped storage, a data.pkl too large to read) the cuts are the same."""
    real = chunking.storage_dtypes
    monkeypatch.setattr(chunking, "storage_dtypes", lambda data, sizes=None: real(data))
    data = torch_bytes(5)
    want = chunking.plan(lambda o, n: data[o:o + n], len(data), MiB)
    assert stream_cuts(data, MiB, 5) == list(want.cuts)


def test_planner_truncated_torch_archive_still_covers_the_file() -> None:
    data = torch_bytes(1)[:3 * MiB + 5]  # no directory: cut what is left at fixed offsets
    cuts = stream_cuts(data, MiB)
    assert chunking.check_cuts(cuts, len(data), MiB)


def test_planner_safetensors_longer_than_its_header() -> None:
    data = safetensors_bytes(2) + random.Random(0).randbytes(5 * MiB)
    cuts = stream_cuts(data, MiB)
    assert chunking.check_cuts(cuts, len(data), MiB)


# ---- Lake.writer ---------------------------------------------------------------------------

@pytest.fixture
def lake() -> Lake:
    return Lake(MemoryStore(), chunk_size=MiB, concurrency=3)


def no_versions(lake: Lake, artifact: str) -> bool:
    from ckptlake.core.catalog import version_numbers

    return not version_numbers(lake.store, artifact)


def write_in_pieces(f: Any, data: bytes, seed: int = 0) -> None:
    rng = random.Random(seed)
    pos = 0
    while pos < len(data):
        k = rng.choice([1, 100, 65536, 2 * MiB])
        f.write(data[pos:pos + k])
        pos += k


def chunk_digests(lake: Lake, ref: str) -> list[tuple[str, int]]:
    m = lake.resolve(ref)
    from ckptlake.core import catalog

    manifest = catalog.load_manifest(lake.store, m.artifact, m.version)
    (entry,) = manifest.files
    return [(c.digest, c.size) for c in entry.chunks]


@pytest.mark.parametrize("kind", ["torch", "safetensors", "random", "small", "empty",
                                  "small-safetensors"])
def test_writer_stores_the_chunks_push_stores(lake: Lake, tmp_path: Any, kind: str) -> None:
    data = {"torch": lambda: torch_bytes(3), "safetensors": lambda: safetensors_bytes(3),
            "random": lambda: random.Random(3).randbytes(4 * MiB + 5),
            "small": lambda: b"tiny config",
            "small-safetensors": small_safetensors,
            "empty": lambda: b""}[kind]()
    name = "m.safetensors" if "safetensors" in kind else "m.pt"
    with lake.writer("streamed", name, step=5, metrics={"loss": 0.5}) as f:
        write_in_pieces(f, data)
    assert f.result.version == 1 and f.result.bytes_scanned == len(data)
    src = tmp_path / name
    src.write_bytes(data)
    pushed = lake.push(src, "pushed")
    assert pushed.bytes_uploaded == 0  # every chunk was already stored by the writer
    assert chunk_digests(lake, "streamed@v1") == chunk_digests(lake, "pushed@v1")
    from ckptlake.core import catalog

    a = catalog.load_manifest(lake.store, "streamed", 1).files[0]
    b = catalog.load_manifest(lake.store, "pushed", 1).files[0]
    assert (a.path, a.size, a.digest, a.tensors) == (b.path, b.size, b.digest, b.tensors)
    if "safetensors" in kind:
        assert a.tensors
    assert b"".join(lake.cat("streamed@v1", name)) == data
    assert lake.resolve("streamed@step=5").version == 1


def test_writer_memory_stays_bounded(lake: Lake) -> None:
    data = torch_bytes(4, n=30)
    with lake.writer("run", "m.pt") as f:
        peak = 0
        for pos in range(0, len(data), 64 * 1024):
            f.write(data[pos:pos + 64 * 1024])
            peak = max(peak, len(f._buf))
        big = random.Random(0).randbytes(30 * MiB)
        big_peak = [0]
        real_drain = f._drain

        def drain(eof: bool) -> None:
            big_peak[0] = max(big_peak[0], len(f._buf))
            real_drain(eof)

        f._drain = drain  # type: ignore[method-assign]
        f.write(big)  # one write much larger than a chunk is still taken a chunk at a time
    assert b"".join(lake.cat("run@v1", "m.pt")) == data + big
    assert len(data) > 10 * MiB and peak <= 2 * MiB + 64 * 1024
    assert big_peak[0] <= 2 * MiB


def test_exception_inside_with_commits_nothing(lake: Lake) -> None:
    with pytest.raises(RuntimeError):
        with lake.writer("run", "m.pt") as f:
            f.write(random.Random(0).randbytes(3 * MiB))
            raise RuntimeError("training crashed")
    assert no_versions(lake, "run")
    with pytest.raises(ValueError):
        f.write(b"x")


def test_a_write_cut_by_ctrl_c_fails_every_later_write(monkeypatch: Any) -> None:
    """A Ctrl-C inside write() left part of the data in; torch.save's next write went through,
    and the user got torch's "unexpected pos" RuntimeError instead of the interruption."""
    from ckptlake.core.streampush import StreamWriter

    lake = Lake(MemoryStore(), chunk_size=MiB, concurrency=2)
    real, calls = StreamWriter._drain, []

    def drain(self: Any, *, eof: bool) -> None:
        calls.append(1)
        if len(calls) == 2:  # the second piece of the write
            raise KeyboardInterrupt
        real(self, eof=eof)

    monkeypatch.setattr(StreamWriter, "_drain", drain)
    with pytest.raises(KeyboardInterrupt):
        with lake.writer("run", "m.bin") as f:
            try:
                f.write(random.Random(0).randbytes(4 * MiB))
            except KeyboardInterrupt:
                with pytest.raises(KeyboardInterrupt):
                    f.write(b"end record")  # what torch.save does next: refused itself
                raise
    assert no_versions(lake, "run")


def test_unclosed_writer_commits_nothing(lake: Lake) -> None:
    """A writer dropped without close (a crash path that never reached it) must not commit
    the half-written file when collected: io's own finalizer calls close(), which commits.
    1000 bytes keep no upload in flight, so nothing else holds the writer alive."""
    import gc
    import weakref

    f = lake.writer("run", "m.pt")
    f.write(random.Random(0).randbytes(1000))
    ref = weakref.ref(f)
    del f
    gc.collect()
    assert ref() is None
    assert no_versions(lake, "run")


class FailingStore(MemoryStore):
    def __init__(self, fail_after: int) -> None:
        super().__init__()
        self.fail_after = fail_after

    def put(self, key: str, data: Any, **kwargs: Any) -> None:
        if key.startswith("chunks/"):
            if self.fail_after <= 0:
                raise TransferError(f"PUT {key} failed: connection reset")
            self.fail_after -= 1
        super().put(key, data, **kwargs)


def test_failed_upload_raises_typed_error_and_commits_nothing() -> None:
    lake = Lake(FailingStore(fail_after=2), chunk_size=MiB, concurrency=2)
    data = random.Random(1).randbytes(20 * MiB)
    with pytest.raises(TransferError, match="connection reset"):
        with lake.writer("run", "m.bin") as f:
            write_in_pieces(f, data)
    assert no_versions(lake, "run")


def test_failed_upload_surfaces_at_close() -> None:
    lake = Lake(FailingStore(fail_after=0), chunk_size=MiB, concurrency=2)
    f = lake.writer("run", "m.bin")
    f.write(random.Random(1).randbytes(MiB + 1))  # one chunk in flight, failing
    with pytest.raises(TransferError):
        f.close()
    assert no_versions(lake, "run")


def test_chunk_swept_by_gc_during_the_write_commits_nothing(lake: Lake, monkeypatch: Any) -> None:
    """A concurrent gc swept a chunk the write reused: the written bytes are gone, so the
    guard's re-upload cannot happen and the commit is refused (a push would re-read its
    source)."""
    from ckptlake.core import gc_guard

    real = gc_guard.guard_commit

    def swept(store: Any, *, referenced: set[str], reupload: Any, **kw: Any) -> Any:
        reupload(set(sorted(referenced)[:1]))
        return real(store, referenced=referenced, reupload=reupload, **kw)

    monkeypatch.setattr(gc_guard, "guard_commit", swept)
    with pytest.raises(TransferError, match="concurrent gc"):
        with lake.writer("run", "m.bin") as f:
            f.write(random.Random(2).randbytes(3 * MiB))
    assert no_versions(lake, "run")


@pytest.mark.parametrize("path", ["", "/abs.pt", "a/../b.pt", "a//b"])
def test_bad_path_is_refused_before_writing(lake: Lake, path: str) -> None:
    with pytest.raises(UsageError, match="lake file path"):
        lake.writer("run", path)
    assert no_versions(lake, "run")


def test_torch_save_load_roundtrip(lake: Lake) -> None:
    from ckptlake.torch import load, save

    sd = {"w": torch.randn(700, 900), "b": torch.arange(7), "step": 3}
    result = save(sd, lake, "model", step=9, aliases=["best"])
    assert result.version == 1 and lake.resolve("model@best").version == 1
    out = load(lake, "model@step=9")
    assert out["step"] == 3 and all(torch.equal(out[k], sd[k]) for k in ("w", "b"))
    again = save(sd, lake, "model", step=10)  # same state: no data bytes sent again
    assert again.bytes_uploaded < 4096
    # A lock cannot be pickled: pickle raises TypeError.  (A local lambda raises AttributeError
    # on Python 3.11, the type a bug in the writer's own abort would raise too.)
    with pytest.raises(TypeError, match="cannot pickle"):
        with lake.writer("model", "model.pt", step=11) as f:
            torch.save({"bad": threading.Lock()}, f)
    assert [v.version for v in lake.versions("model")] == [1, 2]


@pytest.mark.seaweedfs
def test_writer_on_seaweedfs(s3_lake_url: str, tmp_path: Any) -> None:
    import ckptlake
    from ckptlake.torch import load, save

    lake = ckptlake.open(s3_lake_url, chunk_size=MiB)
    sd = {f"l{i}": torch.randn(300_000) for i in range(6)}
    save(sd, lake, "model", step=1)
    out = load(lake, "model@latest")
    assert all(torch.equal(out[k], sd[k]) for k in sd)
    buf = io.BytesIO()
    with lake.open("model@latest") as f:
        buf.write(f.read())
    (tmp_path / "model.pt").write_bytes(buf.getvalue())
    assert lake.push(tmp_path / "model.pt", "pushed").bytes_uploaded == 0
    assert chunk_digests(lake, "model@v1") == chunk_digests(lake, "pushed@v1")


def test_dcp_save_streams_the_layout_filesystemreader_loads(tmp_path: Any) -> None:
    """LakeWriter streams each rank's files (no staging); the version holds exactly
    FileSystemWriter's layout, so a pulled copy loads with torch's own FileSystemReader."""
    import warnings

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader

    import ckptlake
    from ckptlake.torch import LakeWriter

    lake = ckptlake.open("file://" + str(tmp_path / "lake"), chunk_size=MiB)
    state = {"w": torch.randn(900, 1000), "b": torch.arange(10.0), "n": 4}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: no process group, one process
        w = LakeWriter(lake, "dcp", step=1, thread_count=2)
        dcp.save(state, storage_writer=w)
        assert w.version == 1
        files = sorted(f["path"] for f in lake.files("dcp@v1")["files"])
        assert files == [".metadata", "__0_0.distcp", "__0_1.distcp"]
        lake.pull("dcp@v1", tmp_path / "pulled")
        loaded = {"w": torch.zeros(900, 1000), "b": torch.zeros(10), "n": 0}
        dcp.load(loaded, storage_reader=FileSystemReader(str(tmp_path / "pulled")))
        assert torch.equal(loaded["w"], state["w"]) and loaded["n"] == 4
        w2 = LakeWriter(lake, "dcp", step=2, thread_count=2)
        dcp.save(state, storage_writer=w2)  # unchanged: no data byte goes up again
    assert w2.version == 2 and w2.result.bytes_uploaded == 0


def _condemn(lake: Lake, digests: list[str]) -> None:
    """A gc condemnation record naming these chunks (docs/format.md, "Records gc writes")."""
    import os

    from ckptlake.format import layout

    lake.store.put(layout.condemned_key("20260101T000000.000000Z", os.urandom(4).hex()),
                   json.dumps({"ckptlake_condemned": 1, "created": "2026-01-01T00:00:00Z",
                               "chunks": digests, "sizes": [0] * len(digests),
                               "swept_at": None}).encode())


def _chunks(lake: Lake, ref: str) -> list[str]:
    from ckptlake.core import catalog

    return sorted({c.digest for f in catalog.resolve(lake.store, ref).files for c in f.chunks})


def test_reused_condemned_chunks_swept_after_the_commit_are_restored(
        lake: Lake, monkeypatch: Any) -> None:
    """The race a push repairs from its source: a gc whose listing predates the commit sweeps
    a condemned chunk the write deduplicated against, right after the commit.  A stream keeps
    the bytes of such chunks until the guard is done and stores them again: the committed
    version stays complete."""
    from ckptlake.core import gc_guard
    from ckptlake.format import layout

    data = random.Random(7).randbytes(3 * MiB + 5)
    with lake.writer("old", "m.bin") as f:
        f.write(data)
    _condemn(lake, _chunks(lake, "old"))  # orphaned and condemned (its version deleted)
    swept: list[str] = []

    def racing(store: Any, *, referenced: set[str], commit: Any, reupload: Any,
               **kw: Any) -> Any:
        result = commit()
        store.delete([layout.chunk_key(d) for d in sorted(referenced)])  # the sweep
        swept.extend(referenced)
        reupload(gc_guard.missing_chunks(store, referenced))
        return result

    monkeypatch.setattr(gc_guard, "guard_commit", racing)
    with lake.writer("new", "m.bin") as f:
        f.write(data)
    assert f.result.bytes_uploaded == 0 and swept  # deduplicated, then swept, then restored
    with lake.open("new", "m.bin") as fh:
        assert fh.read() == data


def test_chunks_condemned_during_the_write_fail_it_before_the_commit(lake: Lake) -> None:
    """A chunk the write reused was condemned after the write started (its bytes were not
    kept): the write fails with nothing committed, and a second write succeeds."""
    from ckptlake.core.gc_guard import GcSettings
    from ckptlake.format import layout

    data = random.Random(8).randbytes(2 * MiB + 3)
    with lake.writer("old", "m.bin") as f:
        f.write(data)
    # a short sweep_window: the second write waits it out twice (before and after its commit)
    lake.store.put(layout.GC_SETTINGS_KEY, GcSettings(0, 1, 2).encode(updated="t", updated_by="t"))
    with pytest.raises(TransferError, match="condemned"):
        with lake.writer("new", "m.bin") as f:
            f.write(data)
            _condemn(lake, _chunks(lake, "old"))
    assert no_versions(lake, "new")
    with lake.writer("new", "m.bin") as f:  # the records are read at the start now
        f.write(data)
    assert f.result.version == 1
