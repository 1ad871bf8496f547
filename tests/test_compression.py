"""Chunk compression end to end (issue 13, items 2 and 6): push with compression on and off,
then pull, verify, cat, LakeFile and tensor reads, on a local lake and on SeaweedFS."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.format import codecs, layout
from ckptlake.format.header import MIN_CHUNK_SIZE

CH = MIN_CHUNK_SIZE  # 1 MiB chunks: several per file


def cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], dtype: str = "F32") -> None:
    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        b = arr.tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(len(h).to_bytes(8, "little") + h + b"".join(blobs))


def source(tmp: Path) -> Path:
    rng = np.random.default_rng(7)
    src = tmp / "src"
    (src / "cfg").mkdir(parents=True)
    w = {f"layer.{i}.w": (rng.standard_normal((256, 256)) * 0.02).astype(np.float32)
         for i in range(12)}  # 3 MiB of fp32
    write_safetensors(src / "model.safetensors", w)
    bf = (rng.standard_normal(700_000) * 0.02).astype(np.float32)
    (src / "bf16.bin").write_bytes((bf.view(np.uint32) >> 16).astype(np.uint16).tobytes())
    (src / "random.bin").write_bytes(rng.bytes(CH + 3))
    for i in range(20):
        (src / "cfg" / f"{i}.json").write_text(json.dumps({"layer": i, "lr": 3e-4}) * 50)
    return src


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("compression", ["auto", "none"])
def test_round_trip_with_compression_on_and_off(lake_url: str, tmp_path: Path,
                                                compression: str) -> None:
    src = source(tmp_path)
    lake = ckptlake.open(lake_url, chunk_size=CH)
    r = lake.push(src, "m/ckpt", compression=compression)
    m = json.loads(lake.store.get(layout.version_key("m/ckpt", 1)))
    if compression == "auto":
        assert m["stored"] and r.bytes_sent < r.bytes_uploaded == r.bytes_scanned
        assert r.bytes_stored == r.bytes_sent and r.ratio < 0.95
        for d, size in m["stored"].items():  # the hint is the object's real size
            assert lake.store.stat(layout.chunk_key(d)).size == size
    else:
        assert "stored" not in m and r.bytes_sent == r.bytes_uploaded and r.ratio == 1.0
    lake.pull("m/ckpt", tmp_path / "out")
    assert tree(tmp_path / "out") == tree(src)
    assert b"".join(lake.cat("m/ckpt", "cfg/3.json")) == (src / "cfg" / "3.json").read_bytes()
    with lake.open("m/ckpt", "bf16.bin") as fh:
        fh.seek(CH - 10)
        assert fh.read(20) == (src / "bf16.bin").read_bytes()[CH - 10:CH + 10]
    with lake.open("m/ckpt", "cfg/7.json") as fh:  # a packed file (its pack may be a frame)
        assert fh.read() == (src / "cfg" / "7.json").read_bytes()
    rng = np.random.default_rng(7)
    expected = (rng.standard_normal((256, 256)) * 0.02).astype(np.float32)  # layer.0.w
    got = lake.tensors("m/ckpt", "layer.0.w")
    np.testing.assert_array_equal(got["layer.0.w"], expected)
    assert len(lake.tensors("m/ckpt")) == 12
    v = cli("verify", "--lake", lake_url, "--read-data", "--json")
    assert v.exit_code == 0, v.stdout
    show = json.loads(cli("show", "m/ckpt", "--lake", lake_url, "--json").stdout)
    assert show["stored_bytes"] == r.bytes_stored
    ls = cli("ls", "m/ckpt", "--lake", lake_url)
    assert ("stored)" in ls.stdout) == (compression == "auto")


def test_tensor_values_match_after_compression(lake_url: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    w = {f"t{i}": (rng.standard_normal((300, 300)) * 0.02).astype(np.float32) for i in range(4)}
    write_safetensors(tmp_path / "a.safetensors", w)
    lake = ckptlake.open(lake_url, chunk_size=CH)
    lake.push(tmp_path / "a.safetensors", "m/t", compression="auto")
    got = lake.tensors("m/t")
    for k, arr in w.items():
        np.testing.assert_array_equal(got[k], arr)


def test_diff_values_reads_a_chunk_re_stored_encoded_after_its_manifest(
        local_lake_url: str, tmp_path: Path) -> None:
    """v1 is pushed raw (no `stored` hints); one of its chunks is then stored again as a
    frame, as a later `auto` push restoring a lost chunk leaves it.  Pull already reads the
    object, not the hint; diff --values must too (it reported the lake corrupt, exit 5)."""
    rng = np.random.default_rng(3)
    w = {"a": (rng.standard_normal((512, 1024)) * 0.02).astype(np.float32)}
    write_safetensors(tmp_path / "m1.safetensors", w)
    w2 = {"a": w["a"].copy()}
    w2["a"][0, 0] += 1
    write_safetensors(tmp_path / "m2.safetensors", w2)
    lake = ckptlake.open(local_lake_url, chunk_size=CH)
    lake.push(tmp_path / "m1.safetensors", "m/d", compression="none")
    lake.push(tmp_path / "m2.safetensors", "m/d", compression="none")
    m1 = json.loads(lake.store.get(layout.version_key("m/d", 1)))
    m2 = json.loads(lake.store.get(layout.version_key("m/d", 2)))
    only_v1 = [c[0] for c in m1["files"][0]["chunks"]
               if c[0] not in {c2[0] for c2 in m2["files"][0]["chunks"]}]
    assert only_v1 and not m1.get("stored")
    key = layout.chunk_key(only_v1[0])
    frame = codecs.encode_auto(lake.store.get(key), "F32")
    assert frame is not None
    lake.store.put(key, bytes(frame))
    got = lake.diff("m/d@v1", "m/d@v2", values=True)
    (changed,) = got.tensors["changed"]
    assert changed["values"]["max_abs_diff"] == pytest.approx(1.0)
    # damaged for real: still an error, naming the version the chunk belongs to
    data = bytearray(lake.store.get(key))
    data[len(data) // 2] ^= 0xFF
    lake.store.put(key, bytes(data))
    r = cli("diff", "m/d@v1", "m/d@v2", "--values", "--yes", "--lake", local_lake_url)
    assert r.exit_code == 5, r.stdout
    assert "m/d@v1" in r.stderr and "diff --values" not in r.stderr, r.stderr


def test_raw_and_encoded_pushers_dedup_against_each_other(local_lake_url: str,
                                                          tmp_path: Path) -> None:
    src = source(tmp_path)
    lake = ckptlake.open(local_lake_url, chunk_size=CH)
    first = lake.push(src, "a", compression="none")
    again = lake.push(src, "a", compression="auto")  # finds raw objects: sends nothing
    assert again.chunks_uploaded == 0 and again.bytes_stored == first.bytes_stored
    other = ckptlake.open(local_lake_url + "-2", chunk_size=CH)
    enc = other.push(src, "b", compression="auto")
    back = other.push(src, "b", compression="none")  # finds frames: sends nothing either
    assert back.chunks_uploaded == 0 and back.bytes_stored == enc.bytes_stored
    m = json.loads(other.store.get(layout.version_key("b", 2)))
    assert m["stored"]  # the frames it found are recorded as such
    other.pull("b@v2", tmp_path / "b2")
    assert tree(tmp_path / "b2") == tree(src)


def test_an_empty_chunk_object_is_stored_again_encoded(lake_url: str, tmp_path: Path) -> None:
    src = tmp_path / "s"
    src.mkdir()
    data = (np.random.default_rng(2).standard_normal(400_000) * 0.02).astype(np.float32)
    (src / "w.bin").write_bytes(data.tobytes())
    lake = ckptlake.open(lake_url, chunk_size=CH)
    lake.push(src, "e")
    m = json.loads(lake.store.get(layout.version_key("e", 1)))
    d = m["files"][0]["chunks"][0][0]
    lake.store.put(layout.chunk_key(d), b"")  # what a PUT cut after its head leaves
    r = lake.push(src, "e")
    assert r.chunks_uploaded == 1
    lake.pull("e", tmp_path / "out")
    assert (tmp_path / "out" / "w.bin").read_bytes() == data.tobytes()


@pytest.mark.parametrize("damage", ["flip", "unknown-codec", "other-frame"])
def test_a_bad_frame_fails_the_pull_with_exit_5_and_places_nothing(
        lake_url: str, tmp_path: Path, damage: str) -> None:
    src = source(tmp_path)
    lake = ckptlake.open(lake_url, chunk_size=CH)
    lake.push(src, "bad/ckpt", compression="auto")
    m = json.loads(lake.store.get(layout.version_key("bad/ckpt", 1)))
    d = sorted(m["stored"])[0]
    key = layout.chunk_key(d)
    body = bytearray(lake.store.get(key))
    if damage == "flip":
        body[len(body) // 2] ^= 0x55
    elif damage == "unknown-codec":
        body[4] = 200
    else:
        body = bytearray(codecs.encode_auto(b"another chunk entirely " * 1000))
    lake.store.put(key, bytes(body))
    r = cli("pull", "bad/ckpt", tmp_path / "dest", "--lake", lake_url)
    assert r.exit_code == 5
    assert key in r.stderr and "bad/ckpt@v1" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "dest").exists()
    v = cli("verify", "--lake", lake_url, "--read-data", "--json")
    assert v.exit_code == 5


def test_header_setting_and_cli_option(local_lake_url: str, tmp_path: Path) -> None:
    src = source(tmp_path)
    r = cli("push", src, "h", "--lake", local_lake_url, "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["compression"] == "auto" and doc["ratio"] < 1
    assert doc["bytes_stored"] < doc["bytes_scanned"]
    header = json.loads((Path(local_lake_url[7:]) / "ckptlake.json").read_text())
    assert header["compression"] == "auto"
    r = cli("push", src, "h", "--lake", local_lake_url, "--compression", "zip")
    assert r.exit_code == 2 and "auto or none" in r.stderr
    # in another lake (here it would find the frames "h" stored, and report them)
    r = cli("push", src, "h2", "--lake", local_lake_url + "-raw", "--compression", "none")
    assert r.exit_code == 0 and "stored" not in r.stdout


def test_diff_values_on_compressed_chunks_fetch_what_the_estimate_says(tmp_path: Path) -> None:
    """A tensor in an encoded chunk is read by fetching the chunk whole (once, also when both
    sides hold it); the egress estimate counts exactly that."""
    from test_diff import PRICES, ChunkCountingBucket, push_pair

    from ckptlake.lake import Lake
    from ckptlake.policy.egress import EgressPolicy

    store = ChunkCountingBucket()
    lake = Lake(store, chunk_size=CH, concurrency=4)
    a, b = push_pair(lake, tmp_path, compression="auto")
    m = json.loads(store.get(layout.version_key("run/ckpt", 2)))
    assert m["stored"]
    policy = EgressPolicy(client_region="eu-west-1", price_per_gb=PRICES)
    est = lake.estimate_diff("run/ckpt@v1", "run/ckpt@v2", egress=policy)
    r = lake.diff("run/ckpt@v1", "run/ckpt@v2", values=True)
    assert r.values is not None and r.values["bytes_fetched"] == est.bytes_to_download
    assert sum(n for _, n in store.chunk_reads) == est.bytes_to_download
    for x in r.tensors["changed"]:
        va, vb = a[x["name"]].astype(np.float64), b[x["name"]].astype(np.float64)
        assert x["values"]["max_abs_diff"] == pytest.approx(np.abs(vb - va).max())


def test_partial_reads_survive_a_stale_raw_hint(local_lake_url: str, tmp_path: Path) -> None:
    """A manifest that says nothing of a chunk that is stored encoded (a sharded push that
    found another pusher's frame, or a chunk re-stored after a gc race): ranged readers fail
    their check, read the chunk whole, decode it, and return the right bytes."""
    src = source(tmp_path)
    lake = ckptlake.open(local_lake_url, chunk_size=CH)
    lake.push(src, "s", compression="auto")
    key = layout.version_key("s", 1)
    m = json.loads(lake.store.get(key))
    assert m.pop("stored")
    lake.store.put(layout.version_key("s", 2), json.dumps({**m, "version": 2}).encode())
    assert b"".join(lake.cat("s@v2", "cfg/4.json")) == (src / "cfg" / "4.json").read_bytes()
    with lake.open("s@v2", "cfg/5.json") as fh:
        assert fh.read() == (src / "cfg" / "5.json").read_bytes()
    rng = np.random.default_rng(7)
    expected = (rng.standard_normal((256, 256)) * 0.02).astype(np.float32)
    np.testing.assert_array_equal(lake.tensors("s@v2", "layer.0.w")["layer.0.w"], expected)


def test_sharded_push_compresses_and_merges_the_hints(local_lake_url: str,
                                                      tmp_path: Path) -> None:
    lake = ckptlake.open(local_lake_url, chunk_size=CH)
    rng = np.random.default_rng(5)
    trees = {}
    for rank in (0, 1):
        d = tmp_path / f"rank{rank}"
        d.mkdir()
        write_safetensors(d / f"shard{rank}.safetensors",
                          {"w": (rng.standard_normal((512, 512)) * 0.02).astype(np.float32)})
        trees[rank] = d
        r = lake.push_shard(d, "sh/ckpt", step=10, rank=rank, world=2)
    assert r.version == 1
    m = json.loads(lake.store.get(layout.version_key("sh/ckpt", 1)))
    assert len(m["stored"]) >= 2  # both ranks' frames
    lake.pull("sh/ckpt", tmp_path / "out")
    for rank, d in trees.items():
        name = f"shard{rank}.safetensors"
        assert (tmp_path / "out" / name).read_bytes() == (d / name).read_bytes()
    assert lake.tensors("sh/ckpt", "w", path="shard1.safetensors")["w"].shape == (512, 512)


def test_a_compressed_pull_decodes_into_few_reused_aligned_buffers(
        local_lake_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every frame is decoded into a buffer of a small pool (at most one per concurrent
    decoder), and the decoded whole chunks are written with O_DIRECT (page-aligned memory).
    A fresh bytearray per chunk cost a compressed pull most of its system time and could not
    be written direct."""
    import mmap

    from ckptlake.core import chunkio, pull as pull_mod

    rng = np.random.default_rng(11)
    src = tmp_path / "src"
    src.mkdir()
    w = (rng.standard_normal(6 * CH // 4) * 0.02).astype(np.float32)  # 6 chunks of fp32
    (src / "w.bin").write_bytes(w.tobytes())
    lake = ckptlake.open(local_lake_url, chunk_size=CH, concurrency=6)
    assert lake.push(src, "m").ratio < 0.95
    made: list[int] = []
    real_mmap = mmap.mmap

    class Counted(chunkio.ChunkBuffers):
        def take(self, n: int):  # type: ignore[override]
            before = len(self._free)
            buf = super().take(n)
            if len(self._free) == before:  # none was free: a new one
                made.append(n)
            return buf

    writes: list[tuple[bool, bool]] = []
    real_write = pull_mod._write

    def spy(path, piece, offset, *, direct, **kw):  # type: ignore[no-untyped-def]
        writes.append((direct, isinstance(piece.obj, real_mmap)))
        return real_write(path, piece, offset, direct=direct, **kw)

    monkeypatch.setattr(pull_mod, "ChunkBuffers", Counted)
    monkeypatch.setattr(pull_mod, "_write", spy)
    lake.pull("m", tmp_path / "out")
    assert (tmp_path / "out" / "w.bin").read_bytes() == (src / "w.bin").read_bytes()
    assert 1 <= len(made) <= chunkio.DECODERS._initial_value  # type: ignore[attr-defined]
    assert len(writes) == 6 and all(direct and mapped for direct, mapped in writes)


def _unaligned_model(tmp_path: Path, tensors: int = 6, seed: int = 6) -> Path:
    rng = np.random.default_rng(seed)
    src = tmp_path / "src"
    src.mkdir()
    w = {f"t{i}": (rng.standard_normal(3 * CH // 4 + 1000 * i) * 0.02).astype(np.float32)
         for i in range(tensors)}  # ~3 MiB tensors at offsets that are not multiples of 4 KiB
    write_safetensors(src / "model.safetensors", w)
    return src


def _direct_io_or_skip(tmp_path: Path) -> None:
    import os

    probe = tmp_path / "probe"
    probe.write_bytes(b"")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_DIRECT))
    except (OSError, AttributeError):
        pytest.skip("this filesystem refuses O_DIRECT")
    probe.unlink()


@pytest.mark.parametrize("compression", ["auto", "none"])
def test_unaligned_tensor_chunks_are_written_direct_but_their_edges(
        local_lake_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        compression: str) -> None:
    """Tensor-aligned chunks start wherever their tensor does (a safetensors header of any
    length): a chunk's page-aligned middle still goes to the file with O_DIRECT, only its
    unaligned head and tail (< 4 KiB each) through the page cache.  Before, every such chunk
    went through the page cache: half of a 2 GiB bf16 pull's client CPU on this machine."""
    import fcntl
    import os

    from ckptlake.core import pull as pull_mod

    _direct_io_or_skip(tmp_path)
    src = _unaligned_model(tmp_path, tensors=4, seed=5)
    lake = ckptlake.open(local_lake_url, chunk_size=CH)
    lake.push(src, "m", compression=compression)
    buffered: list[int] = []
    direct: list[int] = []
    real = os.pwrite

    def spy(fd, data, offset):  # type: ignore[no-untyped-def]
        is_direct = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT
        (direct if is_direct else buffered).append(len(data))
        return real(fd, data, offset)

    monkeypatch.setattr(pull_mod.os, "pwrite", spy)
    monkeypatch.setattr(pull_mod, "_direct_ok", True)
    lake.pull("m", tmp_path / "out")
    monkeypatch.undo()
    size = (src / "model.safetensors").stat().st_size
    assert sum(direct) > size * 9 // 10
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == \
        (src / "model.safetensors").read_bytes()
    assert all(n < 4096 for n in buffered), buffered  # edges, and the (small) header chunk
    assert sum(buffered) < size // 10


@pytest.mark.parametrize("held_bytes", [1, 4 * 1024 * 1024])
def test_unaligned_edges_are_written_after_the_direct_writes(
        local_lake_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        held_bytes: int) -> None:
    """The unaligned edges of directly written chunks are held back and written in batches
    (pull._Leftovers): a buffered write between direct writes to one file waits for all of
    them (ext4's inode lock) and new ones queue behind it.  With room for all of them they go
    out in one batch after the last direct write; with room for none, one batch per chunk.
    Either way the pulled bytes are the pushed ones."""
    import fcntl
    import os

    from ckptlake.core import pull as pull_mod

    _direct_io_or_skip(tmp_path)
    src = _unaligned_model(tmp_path)
    lake = ckptlake.open(local_lake_url, chunk_size=CH, concurrency=1)
    lake.push(src, "m")
    events: list[str] = []
    real_pwrite, real_batch = os.pwrite, pull_mod._Leftovers._write

    def pwrite(fd, data, offset):  # type: ignore[no-untyped-def]
        direct = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT
        events.append("direct" if direct else "buffered")
        return real_pwrite(fd, data, offset)

    def batch(self, pieces, digests):  # type: ignore[no-untyped-def]
        events.append(f"batch {len(pieces)}")
        return real_batch(self, pieces, digests)

    monkeypatch.setattr(pull_mod.os, "pwrite", pwrite)
    monkeypatch.setattr(pull_mod._Leftovers, "_write", batch)
    monkeypatch.setattr(pull_mod, "_direct_ok", True)
    monkeypatch.setattr(pull_mod, "LEFTOVER_BYTES", held_bytes)
    lake.pull("m", tmp_path / "out")
    monkeypatch.undo()
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == \
        (src / "model.safetensors").read_bytes()
    batches = [e for e in events if e.startswith("batch") and e != "batch 0"]
    directs = [i for i, e in enumerate(events) if e == "direct"]
    assert len(directs) >= 6
    if held_bytes > 1:
        assert len(batches) == 1, events
        first_batch = events.index(batches[0])
        assert max(directs) < first_batch  # every edge after every direct write
        # and so is every buffered write (the header chunk, too small to write direct)
        assert all(i > max(directs) for i, e in enumerate(events) if e == "buffered")
        assert int(batches[0].split()[1]) >= 6  # the edges of the six unaligned tensors
    else:
        assert len(batches) >= 6, events


def test_an_interrupted_pull_journals_only_chunks_whose_edges_are_written(
        local_lake_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk whose unaligned edges are still held back is not in the journal: the journal
    claims only chunks whose every byte is staged (checked here chunk by chunk, as a resume
    would), and the resumed pull restores the file exactly."""
    import os

    from ckptlake.core import pull as pull_mod

    _direct_io_or_skip(tmp_path)
    src = _unaligned_model(tmp_path)
    lake = ckptlake.open(local_lake_url, chunk_size=CH, concurrency=1)
    lake.push(src, "m")
    monkeypatch.setattr(pull_mod, "_direct_ok", True)
    real = pull_mod._Fetcher._download
    seen: list[str] = []
    units: list = []

    def download(self, unit, key):  # type: ignore[no-untyped-def]
        if len(seen) == 8:
            raise KeyboardInterrupt
        seen.append(self.m.hash)
        units.append(unit)
        return real(self, unit, key)

    monkeypatch.setattr(pull_mod._Fetcher, "_download", download)
    monkeypatch.setattr(pull_mod, "LEFTOVER_BYTES", 5 * 4096)  # a batch every 5 chunks
    with pytest.raises(KeyboardInterrupt):
        lake.pull("m", tmp_path / "out")
    staging = next(p for p in tmp_path.iterdir() if ".ckptlake-pull-" in p.name)
    journal = pull_mod.journaled_chunks(str(staging))
    written = [u for u in units if u.digest in journal]
    assert 0 < len(written) < len(units)  # some chunks still held their edges
    for u in written:
        assert pull_mod._already_staged(u, seen[0]), u.digest
    monkeypatch.undo()
    lake.pull("m", tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == \
        (src / "model.safetensors").read_bytes()
    assert not [p for p in os.listdir(tmp_path) if ".ckptlake-pull-" in p]
