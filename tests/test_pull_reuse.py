"""Chunk-level reuse on pull (issue 14, item 5): chunks already on this machine -- in the files a
forced pull replaces, in files kept as identical, under --reference DIR -- are copied and
verified, not downloaded.  Bytes are counted at the store."""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.format import layout
from ckptlake.lake import Lake
from ckptlake.store.memory import MemoryStore

MiB = 1024 * 1024
ART = "ru/run/ckpt"


class ChunkCountingStore(MemoryStore):
    """Counts the chunk-object bytes a pull fetches (manifests and records are not chunks)."""

    def __init__(self) -> None:
        super().__init__()
        self.chunk_bytes = 0

    def get(self, key: str) -> bytes:
        data = super().get(key)
        if key.startswith(layout.CHUNKS_PREFIX):
            self.chunk_bytes += len(data)
        return data

    def get_range(self, key: str, start: int, length: int) -> bytes:
        data = super().get_range(key, start, length)
        if key.startswith(layout.CHUNKS_PREFIX):
            self.chunk_bytes += len(data)
        return data


def versions(tmp_path: Path, size: int = 8 * MiB) -> tuple[Path, Path]:
    """v1 and v2 of a tree: a big file whose MiB at offset 3 MiB changed, a small file (packed)
    that changed too, and one that did not."""
    rnd = random.Random(7)
    big = bytearray(rnd.randbytes(size))
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    for d in (v1, v2):
        (d / "sub").mkdir(parents=True)
    (v1 / "model.bin").write_bytes(big)
    big[3 * MiB:4 * MiB] = rnd.randbytes(MiB)
    (v2 / "model.bin").write_bytes(big)
    (v1 / "sub" / "config.json").write_text('{"lr": 1}')
    (v2 / "sub" / "config.json").write_text('{"lr": 2}')
    for d in (v1, v2):
        (d / "sub" / "same.txt").write_text("unchanged")
    return v1, v2


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture
def lake_v1_v2(tmp_path: Path) -> tuple[Lake, ChunkCountingStore, Path, Path]:
    store = ChunkCountingStore()
    lake = Lake(store, chunk_size=MiB, concurrency=4)
    v1, v2 = versions(tmp_path)
    lake.push(v1, ART)
    lake.push(v2, ART)
    return lake, store, v1, v2


def test_pull_v2_over_v1_downloads_only_the_changed_chunk(lake_v1_v2, tmp_path: Path) -> None:
    lake, store, v1, v2 = lake_v1_v2
    dest = tmp_path / "dest"
    lake.pull(f"{ART}@v1", dest)
    store.chunk_bytes = 0
    r = lake.pull(f"{ART}@v2", dest, force=True)
    assert tree_bytes(dest) == tree_bytes(v2)
    # the changed 1 MiB chunk, plus the pack holding the changed small file
    assert store.chunk_bytes <= 2 * MiB
    assert r.bytes_downloaded == store.chunk_bytes
    assert r.bytes_reused >= 7 * MiB  # 7 of the 8 chunks copied from the old file
    assert not [n for n in os.listdir(tmp_path) if ".ckptlake-pull-" in n]


def test_reference_dir_supplies_chunks(lake_v1_v2, tmp_path: Path) -> None:
    lake, store, v1, v2 = lake_v1_v2
    store.chunk_bytes = 0
    r = lake.pull(f"{ART}@v2", tmp_path / "fresh", reference=[v1])
    assert tree_bytes(tmp_path / "fresh") == tree_bytes(v2)
    assert store.chunk_bytes <= 2 * MiB
    assert r.bytes_reused == 7 * MiB  # the pack also holds the changed file: downloaded


def test_reference_by_equal_size_when_the_path_differs(lake_v1_v2, tmp_path: Path) -> None:
    lake, store, v1, v2 = lake_v1_v2
    ref = tmp_path / "ref"
    (ref / "elsewhere").mkdir(parents=True)
    os.link(v1 / "model.bin", ref / "elsewhere" / "renamed.bin")
    store.chunk_bytes = 0
    lake.pull(f"{ART}@v2", tmp_path / "fresh", reference=[ref])
    assert tree_bytes(tmp_path / "fresh") == tree_bytes(v2)
    assert store.chunk_bytes <= 3 * MiB  # the changed chunk and the two packs


def test_modified_local_file_is_not_trusted(lake_v1_v2, tmp_path: Path) -> None:
    """A local chunk candidate whose bytes changed (or that is cut short) is downloaded."""
    lake, store, v1, v2 = lake_v1_v2
    dest = tmp_path / "dest"
    lake.pull(f"{ART}@v1", dest)
    with open(dest / "model.bin", "r+b") as fh:
        fh.seek(5 * MiB + 17)
        fh.write(b"\xff\x00\xff")  # chunk 5 no longer matches
        fh.truncate(7 * MiB + 5)  # and the last chunk is cut short
    store.chunk_bytes = 0
    r = lake.pull(f"{ART}@v2", dest, force=True)
    assert tree_bytes(dest) == tree_bytes(v2)
    assert 3 * MiB <= store.chunk_bytes <= 4 * MiB  # changed + modified + truncated (+ pack)
    assert r.bytes_downloaded == store.chunk_bytes


def v1_pulled_v2_adds_a_copy(tmp_path: Path, seed: int
                             ) -> tuple[ChunkCountingStore, Lake, Path, bytes]:
    """(store, lake, dest, data): v1 holds a.bin, v2 adds b.bin, a copy of it; v1 is pulled
    into dest."""
    store = ChunkCountingStore()
    lake = Lake(store, chunk_size=MiB, concurrency=2)
    src = tmp_path / "src"
    src.mkdir()
    data = random.Random(seed).randbytes(3 * MiB)
    (src / "a.bin").write_bytes(data)
    lake.push(src, ART)
    (src / "b.bin").write_bytes(data)
    lake.push(src, ART)
    dest = tmp_path / "dest"
    lake.pull(f"{ART}@v1", dest)
    return store, lake, dest, data


def test_identical_kept_file_supplies_a_shared_chunk(tmp_path: Path) -> None:
    """v2 adds a copy of a file the destination already holds: found through the manifest."""
    store, lake, dest, data = v1_pulled_v2_adds_a_copy(tmp_path, seed=1)
    store.chunk_bytes = 0
    r = lake.pull(f"{ART}@v2", dest)  # no --force needed: nothing differs, b.bin is new
    assert (dest / "b.bin").read_bytes() == data
    assert store.chunk_bytes == 0 and r.bytes_downloaded == 0
    assert r.bytes_reused == 6 * MiB


def test_single_file_artifact_over_its_old_version(tmp_path: Path) -> None:
    store = ChunkCountingStore()
    lake = Lake(store, chunk_size=MiB, concurrency=2)
    f = tmp_path / "w.bin"
    data = bytearray(random.Random(2).randbytes(4 * MiB))
    f.write_bytes(data)
    lake.push(f, "ru/file")
    data[:10] = b"0123456789"
    f.write_bytes(data)
    lake.push(f, "ru/file")
    out = tmp_path / "out.bin"
    lake.pull("ru/file@v1", out)
    store.chunk_bytes = 0
    lake.pull("ru/file@v2", out, force=True)
    assert out.read_bytes() == bytes(data) and store.chunk_bytes == MiB


def test_cli_reference_and_json(lake_v1_v2, tmp_path: Path) -> None:
    """--reference on the command line (repeatable), and a missing one is not found (exit 3, a
    missing local path in the README's table; it was 2)."""
    _, _, v1, v2 = lake_v1_v2
    url = f"file://{tmp_path / 'lake'}"
    with ckptlake.open(url, chunk_size=MiB) as lk:
        lk.push(v1, ART)
        lk.push(v2, ART)
    runner = CliRunner()
    res = runner.invoke(app, ["pull", f"{ART}@v2", str(tmp_path / "o"), "--lake", url,
                              "--reference", str(v1), "--reference", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["bytes_downloaded"] <= 2 * MiB and doc["bytes_reused"] >= 7 * MiB
    assert doc["bytes_from_cache"] == 0
    assert tree_bytes(tmp_path / "o") == tree_bytes(v2)
    res = runner.invoke(app, ["pull", f"{ART}@v2", str(tmp_path / "o2"), "--lake", url,
                              "--reference", str(tmp_path / "nope")])
    assert res.exit_code == 3 and "reference" in res.stderr
    assert not (tmp_path / "o2").exists()


def test_unrelated_old_file_is_given_up_after_a_few_chunks(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """--force over a different model: the old file is read for a few chunks, not all."""
    from ckptlake.core import reuse

    reads: list[str] = []
    real = reuse._read_verified

    def counting(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        reads.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(reuse, "_read_verified", counting)
    store = ChunkCountingStore()
    lake = Lake(store, chunk_size=MiB, concurrency=1)
    src = tmp_path / "src"
    src.mkdir()
    (src / "m.bin").write_bytes(random.Random(5).randbytes(20 * MiB))
    lake.push(src, ART)
    (src / "m.bin").write_bytes(random.Random(6).randbytes(20 * MiB))
    lake.push(src, ART)
    dest = tmp_path / "dest"
    lake.pull(f"{ART}@v1", dest)
    reads.clear()
    r = lake.pull(f"{ART}@v2", dest, force=True)
    assert r.bytes_downloaded == 20 * MiB
    assert len(reads) == reuse._GIVE_UP_AFTER
    assert (dest / "m.bin").read_bytes() == (src / "m.bin").read_bytes()
