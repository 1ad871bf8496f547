"""Checks of lake.open (core/reader.py), chunk reading (core/chunkio.py) and chunk reuse on pull
(core/reuse.py) that mutation testing found untested: each test fails if the line it names is
broken."""
from __future__ import annotations

import concurrent.futures
import io
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from ckptlake.core import chunkio
from ckptlake.errors import EXIT_NOT_FOUND, MissingChunk, NotFound
from ckptlake.lake import Lake

from test_deleted_while_read import ART as DEL_ART
from test_deleted_while_read import _sweep_on_first_get, _two_versions
from test_pull_reuse import ART, ChunkCountingStore, MiB, v1_pulled_v2_adds_a_copy
from test_reader import CH, CountingStore, hide, payload


def test_a_kept_file_changed_after_planning_is_not_copied_unverified(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kept identical file (dest/a.bin) is where a new copy of it (b.bin) is copied from.
    If a.bin changes after the pull planned, its bytes must still be checked against the chunk
    digest: otherwise the user gets a b.bin with wrong bytes and no error."""
    from ckptlake.core import pull as pull_mod

    store, lake, dest, data = v1_pulled_v2_adds_a_copy(tmp_path, seed=11)
    real = pull_mod.local_sources

    def then_modify(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        with open(dest / "a.bin", "r+b") as fh:  # changed after the plan was made
            fh.seek(MiB + 100)
            fh.write(b"\xde\xad\xbe\xef")
        return out

    monkeypatch.setattr(pull_mod, "local_sources", then_modify)
    store.chunk_bytes = 0
    r = lake.pull(f"{ART}@v2", dest)
    assert (dest / "b.bin").read_bytes() == data
    assert r.bytes_downloaded > 0 and store.chunk_bytes > 0  # the changed chunk, downloaded


def test_open_of_a_packed_file_whose_version_was_deleted_meanwhile_is_not_found(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading a small (packed) file of a version gc/rm deleted under the reader: the user must
    be told the version was deleted (exit 3), not sent to `ckptlake verify` over a lost chunk
    (MissingChunk, exit 5)."""
    import ckptlake

    lake = ckptlake.open(f"file://{tmp_path / 'lake'}")
    _two_versions(lake, tmp_path)
    _sweep_on_first_get(lake, monkeypatch, delete=True)
    with pytest.raises(NotFound) as err:
        with lake.open(f"{DEL_ART}@v1", "config.json") as f:
            f.read()
    assert not isinstance(err.value, MissingChunk)
    assert err.value.exit_code == EXIT_NOT_FOUND
    assert "was deleted with ckptlake rm" in str(err.value)


def test_open_of_a_zstd_chunk_without_zstandard_says_install_not_corrupt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A zstd-stored chunk read where zstandard is not installed: the data is fine, the user
    must be told to install the codec (CodecUnavailable), not that the lake is corrupt."""
    store = CountingStore()
    lake = Lake(store, chunk_size=CH, concurrency=2)
    (tmp_path / "t.txt").write_bytes(b"abc" * 2**20)
    lake.push(tmp_path / "t.txt", "z/a", compression="auto")
    m = lake._manifest("z/a")
    assert m.stored, "the chunks were stored encoded"
    hide(monkeypatch, "zstandard")
    with pytest.raises(chunkio.CodecUnavailable) as err:
        with lake.open("z/a") as fh:
            fh.read()
    assert "corrupt" not in str(err.value)
    assert "zstandard" in str(err.value)


def test_jumping_away_cancels_the_prefetches_left_behind(tmp_path: Path) -> None:
    """Sequential reads in several places of a file: prefetches of a place the reader left
    are dropped, so memory stays within (KEEP + readahead) chunks instead of growing with every
    jump."""
    store = CountingStore()
    lake = Lake(store, chunk_size=CH, concurrency=2)
    data = payload(16 * CH, seed=21)
    (tmp_path / "w.bin").write_bytes(data)
    lake.push(tmp_path / "w.bin", "r/j")
    with lake.open("r/j", readahead=2) as fh:
        for base in (0, 4, 8, 12):
            fh.seek(base * CH)
            assert fh.read(2 * CH) == data[base * CH:(base + 2) * CH]
            assert len(fh._ahead) <= 2, sorted(fh._ahead)


def test_a_jump_forward_prefetches_nothing(tmp_path: Path) -> None:
    """A read far past the previous one (a zip's central directory, a seek) is random access:
    it must not start read-ahead, which would download chunks nobody reads."""
    store = CountingStore()
    lake = Lake(store, chunk_size=CH, concurrency=2)
    data = payload(12 * CH, seed=22)
    (tmp_path / "w.bin").write_bytes(data)
    lake.push(tmp_path / "w.bin", "r/f")
    fh = lake.open("r/f", readahead=2)
    try:
        assert fh.read(10) == data[:10]
        fh.seek(8 * CH, io.SEEK_SET)
        assert fh.read(10) == data[8 * CH:8 * CH + 10]
        ahead = list(fh._ahead.values())
        concurrent.futures.wait(ahead, timeout=30)  # any prefetch started: let it count
        assert not ahead
    finally:
        fh.close()
    assert fh.bytes_fetched == 2 * CH


def test_a_fifo_in_a_reference_dir_is_not_read(tmp_path: Path) -> None:
    """A named pipe where --reference has the file: opening it would block the pull forever;
    it must be skipped and the pull complete with the right bytes."""
    store = ChunkCountingStore()
    lake = Lake(store, chunk_size=MiB, concurrency=2)
    src = tmp_path / "src"
    src.mkdir()
    data = random.Random(23).randbytes(2 * MiB)
    (src / "model.bin").write_bytes(data)
    lake.push(src, ART)
    ref = tmp_path / "ref"
    ref.mkdir()
    fifo = ref / "model.bin"
    os.mkfifo(fifo)
    out = tmp_path / "out"
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(lake.pull(ART, out, reference=[ref]))
        except BaseException as e:  # noqa: BLE001 - reported below
            result.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(10)
    hung = t.is_alive()
    deadline = time.monotonic() + 30
    while t.is_alive() and time.monotonic() < deadline:  # unblock a reader stuck in open
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
        time.sleep(0.01)
    assert not hung, "the pull blocked opening a FIFO in the reference directory"
    assert result and not isinstance(result[0], BaseException), result
    assert (out / "model.bin").read_bytes() == data


def test_a_local_file_that_supplied_chunks_is_not_given_up_on(tmp_path: Path) -> None:
    """--force over an older version whose middle changed: the old file supplied chunks before
    the run of changed ones, so it must still be used for the unchanged chunks after them;
    giving up on it downloads 19 MiB the user already has."""
    store = ChunkCountingStore()
    lake = Lake(store, chunk_size=MiB, concurrency=1)
    src = tmp_path / "src"
    src.mkdir()
    data = bytearray(random.Random(24).randbytes(40 * MiB))
    (src / "m.bin").write_bytes(data)
    lake.push(src, ART)
    data[1 * MiB:21 * MiB] = random.Random(25).randbytes(20 * MiB)  # chunks 1..20 changed
    (src / "m.bin").write_bytes(data)
    lake.push(src, ART)
    dest = tmp_path / "dest"
    lake.pull(f"{ART}@v1", dest)
    r = lake.pull(f"{ART}@v2", dest, force=True)
    assert (dest / "m.bin").read_bytes() == bytes(data)
    assert r.bytes_reused >= 20 * MiB  # chunk 0 and chunks 21..39
