"""The chunk cache's checks that mutation testing found unheld: dry runs that delete nothing,
one pull's full disk that does not switch the cache off for the next, the fill lock that
makes concurrent pulls fetch a chunk once, a pull that never waits for eviction, eviction
racing a pull's drop, an I/O error that is a miss (not a corrupt entry), what counts as an
entry, and the cache part of the pull estimate."""
from __future__ import annotations

import errno
import json
import os
import random
import threading
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ckptlake.cli.app import app
from ckptlake.core import cache as cache_mod
from ckptlake.core.cache import ChunkCache
from ckptlake.format.header import digest
from ckptlake.lake import Lake
from ckptlake.policy.egress import EgressPolicy

from test_cache import ART, MiB, entry_files, setup, tree_bytes  # noqa: F401 (fixture)
from test_cache_hardening import DONE_WITHIN, hold_flock, in_thread
from test_pull_reuse import ChunkCountingStore

NO_ENV = {"CKPTLAKE_CACHE": "", "CKPTLAKE_CONFIG": ""}


def listing(root: Path) -> list[tuple[str, bool, int]]:
    return sorted((str(p.relative_to(root)), p.is_dir(), p.lstat().st_size)
                  for p in root.rglob("*"))


def blob(i: int, n: int = 3000) -> tuple[str, bytes]:
    data = bytes([i]) * n
    return digest("sha256", data), data


# ---- 2. prune --dry-run deletes nothing ------------------------------------------------------

def test_prune_dry_run_deletes_no_stray_and_no_temporary_file(tmp_path: Path) -> None:
    """`cache prune --dry-run` is how a user looks before deleting: it must not remove the
    strays (a note in a fan directory, an entry under the wrong fan directory) nor a dead
    process's temporary file that a real prune would."""
    c = ChunkCache(tmp_path / "c", 10 * MiB)
    name, data = blob(1)
    c.put("sha256", name, data)
    d = tmp_path / "c"
    (d / "chunks" / "sha256" / name[:2] / "notes.txt").write_text("mine")
    other, _ = blob(2)
    (d / "chunks" / "sha256" / "zz").mkdir()
    (d / "chunks" / "sha256" / "zz" / other).write_bytes(b"q" * 10)
    dead = d / "tmp" / "dead.1.2"
    dead.write_bytes(b"partial")
    old = os.stat(dead).st_mtime - 2 * 3600
    os.utime(dead, (old, old))
    before = listing(d)
    res = CliRunner().invoke(app, ["cache", "prune", "--all", "--dry-run", "--dir", str(d),
                                   "--json"], env=NO_ENV)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["dry_run"]
    assert listing(d) == before


# ---- 3. one pull's full disk does not switch the cache off for the next ------------------

def test_a_failed_cache_write_does_not_switch_the_cache_off_for_the_next_pull(
        setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long-lived Lake handle (a training job pulling checkpoint after checkpoint): one pull
    that met a full disk would otherwise leave the cache off, with a stale warning, for every
    later pull once space was freed."""
    lake, store, src, cache_dir = setup

    def full(fd: int, view: memoryview) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_mod, "_write_all", full)
    r1 = lake.pull(ART, tmp_path / "a")
    monkeypatch.undo()
    assert any("no space left" in w for w in r1.warnings)
    (src / "model.bin").write_bytes(random.Random(11).randbytes(2 * MiB + 5))
    lake.push(src, ART)  # v2
    r2 = lake.pull(f"{ART}@v2", tmp_path / "b")
    assert tree_bytes(tmp_path / "b") == tree_bytes(src)
    assert r2.warnings == []
    assert lake.cache.failure is None
    assert len(entry_files(cache_dir)) >= 3


# ---- 4. the fill lock: concurrent pulls fetch a chunk once ---------------------------------

def test_a_pull_waits_for_the_fill_lock_and_then_reads_the_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Jobs on one node pulling the same version at once: the one that misses waits for the
    other's fetch (the per-chunk fill lock) and then reads the chunk from the cache, instead of
    downloading it a second time (N jobs, N downloads)."""
    store = ChunkCountingStore()
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(random.Random(5).randbytes(MiB // 2))
    Lake(store, chunk_size=MiB, cache=None).push(src, ART)
    # learn the single chunk's entry through a throwaway cache
    Lake(store, chunk_size=MiB, cache=ChunkCache(tmp_path / "learn", 64 * MiB)).pull(
        ART, tmp_path / "x")
    [learned] = entry_files(tmp_path / "learn")
    algo, name, data = learned.parent.parent.name, learned.name, learned.read_bytes()
    cache_dir = tmp_path / "cache"
    lake = Lake(store, chunk_size=MiB, concurrency=1, cache=ChunkCache(cache_dir, 64 * MiB))
    fd = hold_flock(cache_dir / "locks" / f"{algo}-{name[:3]}")  # another job is fetching it
    waiting = threading.Event()
    real = cache_mod._flock_polled

    def flock_polled(lfd: int, wait: float, on_wait: Any = None) -> bool:
        def found_taken() -> None:
            waiting.set()
            if on_wait is not None:
                on_wait()
        return real(lfd, wait, found_taken)

    monkeypatch.setattr(cache_mod, "_flock_polled", flock_polled)
    store.chunk_bytes = 0
    t, out = in_thread(lambda: lake.pull(ART, tmp_path / "a"))
    released = False
    try:
        while not waiting.is_set() and t.is_alive():
            waiting.wait(0.01)
        assert waiting.is_set(), f"the pull did not wait for the fill lock: {out}"
        ChunkCache(cache_dir, 64 * MiB).put(algo, name, data)  # the other job's fetch
        os.close(fd)
        released = True
        t.join(DONE_WITHIN)
        assert not t.is_alive()
    finally:
        if not released:
            os.close(fd)
        t.join(DONE_WITHIN)
    r = out["result"]
    assert r.bytes_downloaded == 0 and store.chunk_bytes == 0
    assert r.bytes_from_cache == len(data) == MiB // 2
    assert tree_bytes(tmp_path / "a") == tree_bytes(src)


# ---- 7. after a failed write, no more writes in that pull ----------------------------------

def test_after_a_full_disk_a_pull_stops_writing_to_the_cache(
        setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a cache write failed (ENOSPC), the rest of the pull goes on without the cache:
    writing every later chunk to a full disk again costs time and fills the log of errors."""
    lake, store, src, cache_dir = setup
    lake1 = Lake(store, chunk_size=MiB, concurrency=1, cache=ChunkCache(cache_dir, 64 * MiB))
    attempts = []

    def full(fd: int, view: memoryview) -> None:
        attempts.append(len(view))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_mod, "_write_all", full)
    r = lake1.pull(ART, tmp_path / "a")
    assert tree_bytes(tmp_path / "a") == tree_bytes(src)
    assert len(attempts) == 1, attempts
    assert any("no space left" in w for w in r.warnings)


# ---- 8. a pull never waits for eviction -----------------------------------------------------

def test_a_pulls_eviction_never_waits_for_the_eviction_lock(
        setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `cache prune` or a pull stopped with Ctrl-Z may hold the eviction lock indefinitely:
    a pull over the bound must leave eviction to the holder at once, not wait in a worker."""
    lake, store, src, cache_dir = setup
    lake.cache = ChunkCache(cache_dir, 2 * MiB)  # the pull goes over the bound: it evicts
    waits: list[float] = []
    real = cache_mod._flock_polled

    def flock_polled(fd: int, wait: float, on_wait: Any = None) -> bool:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(os.sep + ".lock"):
            waits.append(wait)
        return real(fd, wait, on_wait)

    monkeypatch.setattr(cache_mod, "_flock_polled", flock_polled)
    lake.pull(ART, tmp_path / "a")
    assert waits and all(w == 0 for w in waits), waits


# ---- 9. eviction racing a pull that dropped the entry ---------------------------------------

def test_an_entry_gone_during_eviction_is_no_failure(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Another pull dropped (or evicted) an entry between the scan and the unlink: that is
    what eviction wanted, not an error; counting it as one switched the cache off (and
    `cache prune` failed)."""
    c = ChunkCache(tmp_path / "c", 100 * 1000)
    for i in range(4):
        c.put("sha256", *blob(i))
    racer = c.entries()[1].path
    real_unlink = os.unlink

    def unlink(path: Any, *a: Any, **kw: Any) -> None:
        real_unlink(path, *a, **kw)
        if os.fspath(path) == racer:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")

    monkeypatch.setattr(os, "unlink", unlink)
    r = c.trim(0)
    assert c.failure is None, c.failure
    assert c.entries() == [] and r.entries_removed == 4


# ---- 11a. an I/O error is a miss, not a corrupt entry ---------------------------------------

def test_an_io_error_reading_an_entry_is_a_miss_and_keeps_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A transient read error (EIO on a flaky disk, NFS) says nothing about the entry's bytes:
    deleting it threw away a good chunk and warned of corruption that was not there."""
    c = ChunkCache(tmp_path / "c", 10 * MiB)
    name, data = blob(3)
    c.put("sha256", name, data)

    def preadv(*a: Any, **kw: Any) -> int:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "preadv", preadv)
    assert c.get_into("sha256", name, bytearray(len(data))) is None
    monkeypatch.undo()
    assert os.path.isfile(c.entry_path("sha256", name)) and c.dropped == 0
    assert bytes(c.get_into("sha256", name, bytearray(len(data)))) == data


# ---- 11b/c. what counts as an entry ---------------------------------------------------------

def test_a_symlink_entry_is_counted(tmp_path: Path) -> None:
    """A symlink in an entry's place is read (and verified) like an entry, so `cache ls` and
    the bound count it: otherwise prune deleted it as a stray while pulls used it."""
    c = ChunkCache(tmp_path / "c", 10 * MiB)
    name, data = blob(4)
    c.put("sha256", *blob(5))
    outside = tmp_path / "outside"
    outside.write_bytes(data)
    entry = Path(c.entry_path("sha256", name))
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.symlink_to(outside)
    assert {e.digest for e in c.entries()} == {name, blob(5)[0]}
    res = CliRunner().invoke(app, ["cache", "ls", "--dir", str(tmp_path / "c"), "--json"],
                             env=NO_ENV)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["entries"] == 2


def test_names_a_pull_never_looks_up_are_not_entries(tmp_path: Path) -> None:
    """A pull looks a chunk up only at chunks/<algo>/<first 2 hex>/<digest>: a file of another
    name length, or under another fan directory, is never used, so counting it would show
    chunks that are not there and let it take the bound's room."""
    c = ChunkCache(tmp_path / "c", 10 * MiB)
    name, data = blob(6)
    c.put("sha256", name, data)
    fan = tmp_path / "c" / "chunks" / "sha256" / name[:2]
    (fan / name[:40]).write_bytes(b"short name")  # hex, wrong length, right fan
    other, _ = blob(7)
    wrong = "00" if other[:2] != "00" else "01"
    (fan.parent / wrong).mkdir()
    (fan.parent / wrong / other).write_bytes(b"wrong fan")  # a valid name, wrong fan
    assert [e.digest for e in c.entries()] == [name]


# ---- 11d. the cache part of the pull estimate ------------------------------------------------

def test_estimate_counts_a_too_long_slice_entry_as_downloaded(setup, tmp_path: Path) -> None:
    """A slice entry longer than its chunk fails verification: the pull drops and downloads
    it, so the estimate (what egress will cost) must count it."""
    lake, store, src, cache_dir = setup
    lake.pull(ART, tmp_path / "a")
    victim = max(entry_files(cache_dir), key=lambda p: p.stat().st_size)
    assert victim.stat().st_size == MiB
    with open(victim, "ab") as fh:
        fh.write(b"\0")
    est = lake.estimate_pull(ART, tmp_path / "b", egress=EgressPolicy())
    assert est.bytes_to_download == MiB


def test_estimate_counts_a_directory_in_a_pack_entrys_place_as_downloaded(
        setup, tmp_path: Path) -> None:
    """A directory in an entry's place is dropped by the pull, which downloads the chunk: its
    4096-byte size must not pass for a small pack's entry."""
    lake, store, src, cache_dir = setup
    lake.pull(ART, tmp_path / "a")
    [pack] = [p for p in entry_files(cache_dir) if b'{"a": 1}' in p.read_bytes()]
    size = pack.stat().st_size
    assert size < 4096
    pack.unlink()
    pack.mkdir()
    assert pack.stat().st_size >= size
    est = lake.estimate_pull(ART, tmp_path / "b", egress=EgressPolicy())
    assert est.bytes_to_download > 0
