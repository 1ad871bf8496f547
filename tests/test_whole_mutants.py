"""core/whole.py (a file of a version read whole): checks mutation testing found untested.

Each test names what a user would lose if the line it guards went wrong: a corrupt raw chunk
handed out unverified, a negative read count after seeking past the end, a whole-file buffer
sized to the host's memory instead of the container's limit, a --max-rate ignored, the
buffer kept mapped after close()."""
from __future__ import annotations

import io
import mmap
import os
from pathlib import Path
from typing import Any

import pytest

from ckptlake.core import catalog, whole
from ckptlake.core.reader import find_file
from ckptlake.core.whole import WholeFile, read_whole
from ckptlake.errors import IntegrityError
from ckptlake.format import layout
from ckptlake.lake import Lake
from ckptlake.store.memory import MemoryStore

MiB = 1024 * 1024
BIG = 1 << 40  # a max_buffer every test file fits
GiB = 1 << 30


def raw_lake(tmp_path: Path) -> tuple[Lake, bytes]:
    """x@v1: 3 MiB + 5 random bytes stored raw (compression none): 4 chunk objects."""
    lake = Lake(MemoryStore(), chunk_size=MiB)
    data = os.urandom(3 * MiB + 5)
    (tmp_path / "x.bin").write_bytes(data)
    lake.push(tmp_path / "x.bin", "x", compression="none")
    return lake, data


def test_a_corrupt_raw_chunk_read_whole_raises_naming_chunk_and_version(tmp_path: Path) -> None:
    """A raw (not encoded) chunk is received straight into the file's buffer; it must still
    be checked against its digest there.  Without that, lake.open(max_buffer=...) hands a
    torch.load silently corrupted weights instead of an IntegrityError naming the chunk."""
    lake, data = raw_lake(tmp_path)
    m = catalog.resolve(lake.store, "x")
    assert not m.stored, "raw chunks"
    key = layout.chunk_key(m.files[0].chunks[1].digest)
    body = bytearray(lake.store.get(key))
    body[len(body) // 2] ^= 0xFF
    lake.store.put(key, bytes(body))
    with pytest.raises(IntegrityError, match=rf"chunk {key} of x@v1\S* is corrupt"):
        with lake.open("x", max_buffer=BIG) as f:
            f.read()


def test_readinto_past_the_end_reads_nothing_and_stays_put(tmp_path: Path) -> None:
    """A seek beyond the end is legal for a file; readinto there must return 0 (EOF), not
    a negative count that moves the position backwards (a reader looping until 0 would
    re-read or spin)."""
    lake, data = raw_lake(tmp_path)
    with lake.open("x", max_buffer=BIG) as f:
        assert isinstance(f, WholeFile)
        f.seek(len(data) + 10)
        buf = bytearray(4)
        assert f.readinto(buf) == 0
        assert f.tell() == len(data) + 10 and buf == bytearray(4)
        f.seek(0, io.SEEK_END)
        assert f.readinto(buf) == 0 and f.tell() == len(data)


def fake_files(monkeypatch: pytest.MonkeyPatch, files: dict[str, str]) -> None:
    """Make whole.py's open() see exactly `files` (path -> text); any other path is absent."""
    def fake_open(path: Any, *args: Any, **kwargs: Any) -> io.StringIO:
        if str(path) not in files:
            raise FileNotFoundError(path)
        return io.StringIO(files[str(path)])

    monkeypatch.setattr(whole, "open", fake_open, raising=False)


def test_memory_available_is_the_smaller_of_host_and_cgroup(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """In a container limited to 2 GiB (1 GiB used) on a 64 GiB host, only 1 GiB may still be
    allocated: the whole-file bound (40 % of it) sized to the host's 64 GiB would let a
    torch.load get the container OOM-killed."""
    meminfo = f"MemTotal: {128 * GiB // 1024} kB\nMemAvailable: {64 * GiB // 1024} kB\n"
    fake_files(monkeypatch, {"/proc/meminfo": meminfo,
                             "/sys/fs/cgroup/memory.max": f"{2 * GiB}\n",
                             "/sys/fs/cgroup/memory.current": f"{GiB}\n"})
    assert whole.memory_available() == GiB
    assert whole.default_max_buffer() == int(GiB * whole.MEMORY_SHARE)
    # no cgroup limit ("max"): what the kernel says is available
    fake_files(monkeypatch, {"/proc/meminfo": meminfo,
                             "/sys/fs/cgroup/memory.max": "max\n",
                             "/sys/fs/cgroup/memory.current": f"{GiB}\n"})
    assert whole.memory_available() == 64 * GiB


class SpyThrottle:
    """A Throttle that records what it was asked for and never waits."""

    def __init__(self) -> None:
        self.asked: list[int] = []

    def acquire(self, n: int) -> None:
        self.asked.append(n)


def test_read_whole_charges_the_throttle_for_every_chunk(tmp_path: Path) -> None:
    """--max-rate / max_rate must hold for whole-file reads too: each chunk's bytes are
    acquired from the throttle before it is fetched, else a read whole ignores the limit
    the user set to spare a shared link."""
    lake, data = raw_lake(tmp_path)
    m = catalog.resolve(lake.store, "x")
    spy = SpyThrottle()
    with read_whole(lake.store, find_file(m, None), m.hash, name="x@v1", workers=2,
                    throttle=spy) as f:  # type: ignore[arg-type]
        assert f.read() == data
        assert sum(spy.asked) == f.bytes_fetched == len(data)
    assert sorted(spy.asked) == sorted(c.size for c in m.files[0].chunks)


def test_close_unmaps_the_buffer(tmp_path: Path) -> None:
    """close() releases the file-sized mapping at once: a loop loading checkpoints one after
    another would otherwise hold each file's memory until the garbage collector ran."""
    lake, _ = raw_lake(tmp_path)
    f = lake.open("x", max_buffer=BIG)
    assert isinstance(f, WholeFile)
    buf = f._buffer
    assert isinstance(buf, mmap.mmap) and not buf.closed
    f.close()
    assert buf.closed
