"""The chunk cache against what else may sit in its directory or hold its locks: a held
eviction lock, a FIFO or a directory in an entry's place, another pull's fill lock on Ctrl-C,
a read-only cache.  None of them may hang a pull, stop eviction, or be counted as a chunk;
the estimate counts what the pull will download."""
from __future__ import annotations

import errno
import fcntl
import json
import os
import threading
from pathlib import Path
from typing import Any, Callable

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.core import cache as cache_mod
from ckptlake.core.cache import ChunkCache
from ckptlake.errors import Interrupted
from ckptlake.format.header import digest
from ckptlake.policy.egress import EgressPolicy
from ckptlake.transfer import pool

from test_cache import ART, MiB, entry_files, setup, tree_bytes  # noqa: F401 (fixture)

DONE_WITHIN = 60.0  # generous: these finish at once when right, and never when wrong


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = fn()
        except BaseException as e:  # noqa: BLE001 (handed to the test)
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def hold_flock(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another open file description: conflicts in-process too
    return fd


def cli_env(cache_dir: Path) -> dict[str, str]:
    return {"CKPTLAKE_CACHE": str(cache_dir), "CKPTLAKE_CACHE_SIZE": "64MiB",
            "CKPTLAKE_CONFIG": ""}


# ---- 1. a held eviction lock ---------------------------------------------------------------

def test_insert_does_not_wait_for_a_held_eviction_lock(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A `cache prune` running, or a pull stopped with Ctrl-Z, holds .lock: a pull over the
    bound leaves the eviction to it instead of blocking in a worker thread forever."""
    c = ChunkCache(tmp_path / "c", 10 * 1000)
    blobs = [bytes([i]) * 3000 for i in range(5)]
    names = [digest("sha256", b) for b in blobs]
    (tmp_path / "c").mkdir()
    fd = hold_flock(tmp_path / "c" / ".lock")
    try:
        t, out = in_thread(lambda: [c.put("sha256", n, b) for n, b in zip(names, blobs)])
        t.join(DONE_WITHIN)
        assert not t.is_alive(), "put waited for the eviction lock"
        assert "error" not in out and c.failure is None
        assert len(c.entries()) == 5  # over the bound until the lock is free
    finally:
        os.close(fd)
        t.join(DONE_WITHIN)
    extra = b"x" * 3000
    c.put("sha256", digest("sha256", extra), extra)
    assert sum(e.size for e in c.entries()) <= 10 * 1000  # the next insert evicts

    # prune waits for the holder, a bounded time, then says so (exit 6), deleting nothing
    monkeypatch.setattr(cache_mod, "_EVICT_WAIT", 0.2)
    fd = hold_flock(tmp_path / "c" / ".lock")
    try:
        res = CliRunner().invoke(app, ["cache", "prune", "--all", "--dir", str(tmp_path / "c")],
                                 env={"CKPTLAKE_CACHE": "", "CKPTLAKE_CONFIG": ""})
    finally:
        os.close(fd)
    assert res.exit_code == 6, res.output
    assert "another process is evicting" in res.stderr and c.entries()


# ---- 2. a FIFO in an entry's place -----------------------------------------------------------

@pytest.mark.parametrize("how", ["fifo", "symlink to a fifo"])
def test_fifo_in_an_entrys_place_does_not_hang_the_pull(setup, tmp_path: Path,
                                                        how: str) -> None:
    lake, store, src, cache_dir = setup
    lake.pull(ART, tmp_path / "a")
    victim = max(entry_files(cache_dir), key=lambda p: p.stat().st_size)
    victim.unlink()
    fifo = victim if how == "fifo" else tmp_path / "elsewhere.fifo"
    os.mkfifo(fifo)
    if how != "fifo":
        victim.symlink_to(fifo)
    store.chunk_bytes = 0
    t, out = in_thread(lambda: lake.pull(ART, tmp_path / "b"))
    try:
        t.join(DONE_WITHIN)
        assert not t.is_alive(), "the pull hung opening a FIFO"
    finally:
        if t.is_alive():  # a writer lets the blocked open() go on
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            t.join(DONE_WITHIN)
    r = out["result"]
    assert tree_bytes(tmp_path / "b") == tree_bytes(src)
    assert store.chunk_bytes == MiB == r.bytes_downloaded
    assert any("corrupt chunk cache entry" in w for w in r.warnings)
    assert victim.is_file() and not victim.is_symlink()  # cached again, for real
    assert digest(victim.parent.parent.name, victim.read_bytes()) == victim.name


# ---- 3. a directory in an entry's place ------------------------------------------------------

def test_directory_in_an_entrys_place_is_repaired_and_never_a_chunk(setup,
                                                                    tmp_path: Path) -> None:
    lake, store, src, cache_dir = setup
    lake.pull(ART, tmp_path / "a")
    entries = entry_files(cache_dir)
    victim = max(entries, key=lambda p: p.stat().st_size)
    victim.unlink()
    (victim / "inside").mkdir(parents=True)
    runner, env = CliRunner(), cli_env(cache_dir)
    doc = json.loads(runner.invoke(app, ["cache", "ls", "--json"], env=env).stdout)
    assert doc["entries"] == len(entries) - 1  # not a 4096-byte chunk
    assert doc["bytes"] == sum(p.stat().st_size for p in entry_files(cache_dir))
    # prune removes it and every chunk (it stopped at the directory, exit 2)
    res = runner.invoke(app, ["cache", "prune", "--all"], env=env)
    assert res.exit_code == 0, res.output
    assert not victim.exists() and entry_files(cache_dir) == []

    lake.pull(ART, tmp_path / "b")
    victim.unlink()
    victim.mkdir()
    store.chunk_bytes = 0
    r = lake.pull(ART, tmp_path / "c")  # downloads it once, with a warning, and repairs it
    assert tree_bytes(tmp_path / "c") == tree_bytes(src)
    assert store.chunk_bytes == MiB
    assert any("corrupt chunk cache entry" in w for w in r.warnings)
    assert victim.is_file() and digest(victim.parent.parent.name, victim.read_bytes()) == victim.name
    store.chunk_bytes = 0
    r = lake.pull(ART, tmp_path / "d")
    assert store.chunk_bytes == 0 and r.bytes_from_cache == r.bytes_total


def test_put_replaces_a_directory_in_the_entrys_place(tmp_path: Path) -> None:
    c = ChunkCache(tmp_path / "c", 10 * MiB)
    blob = b"y" * 1000
    name = digest("sha256", blob)
    os.makedirs(c.entry_path("sha256", name))
    c.put("sha256", name, blob)
    assert c.failure is None and Path(c.entry_path("sha256", name)).read_bytes() == blob


def test_eviction_goes_on_past_an_entry_it_cannot_delete(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    c = ChunkCache(tmp_path / "c", 100 * 1000)
    blobs = [bytes([i]) * 3000 for i in range(4)]
    for b in blobs:
        c.put("sha256", digest("sha256", b), b)
    stuck = c.entries()[0].path
    real_unlink = os.unlink

    def unlink(path: Any, *a: Any, **kw: Any) -> None:
        if os.fspath(path) == stuck:
            raise PermissionError(errno.EACCES, "Permission denied")
        real_unlink(path, *a, **kw)

    monkeypatch.setattr(os, "unlink", unlink)
    r = c.trim(0)
    assert r.entries_removed == 3 and [e.path for e in c.entries()] == [stuck]
    assert c.failure is not None and c.failure_errno == errno.EACCES


# ---- 4. Ctrl-C while another process holds the fill lock ------------------------------------

def test_interrupted_pull_stops_waiting_for_the_fill_lock(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_mod, "_FILL_WAIT", 3600.0)
    c = ChunkCache(tmp_path / "c", 10 * MiB)
    name = digest("sha256", b"z")
    fd = hold_flock(tmp_path / "c" / "locks" / f"sha256-{name[:3]}")
    stop = threading.Event()
    entered = threading.Event()

    def worker() -> None:  # as a bounded_map item runs (transfer/pool.py)
        pool._worker.stop = stop
        try:
            entered.set()
            with c.filling("sha256", name):
                pass
        finally:
            pool._worker.stop = None

    t, out = in_thread(worker)
    try:
        assert entered.wait(DONE_WITHIN)
        stop.set()  # Ctrl-C in the pull's main thread
        t.join(DONE_WITHIN)
        assert not t.is_alive(), "the worker sat out the other holder"
    finally:
        os.close(fd)
        t.join(DONE_WITHIN)
    assert isinstance(out.get("error"), Interrupted)


# ---- 5. the estimate counts what the pull downloads ------------------------------------------

def test_estimate_without_the_cache_and_with_a_truncated_entry(setup, tmp_path: Path) -> None:
    lake, store, src, cache_dir = setup
    r = lake.pull(ART, tmp_path / "a")
    policy = EgressPolicy()
    assert lake.estimate_pull(ART, tmp_path / "b", egress=policy).bytes_to_download == 0
    est = lake.estimate_pull(ART, tmp_path / "b", egress=policy, use_cache=False)
    assert est.bytes_to_download == r.bytes_downloaded > 4 * MiB  # as pull --no-cache
    victim = max(entry_files(cache_dir), key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[:1000])  # the pull will drop and download it
    est = lake.estimate_pull(ART, tmp_path / "b", egress=policy)
    assert est.bytes_to_download == MiB
    victim.write_bytes(b"")
    assert lake.estimate_pull(ART, tmp_path / "b", egress=policy).bytes_to_download == MiB


def test_cli_estimate_with_no_cache_counts_cached_chunks_as_downloaded(tmp_path: Path) -> None:
    """`pull --estimate --no-cache` says what that pull downloads: everything, cached or not."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(os.urandom(3 * MiB))
    url, cache_dir = (tmp_path / "lake").as_uri(), tmp_path / "cache"
    env = cli_env(cache_dir)
    runner = CliRunner()
    assert runner.invoke(app, ["--lake", url, "push", str(src), ART], env=env).exit_code == 0
    assert runner.invoke(app, ["--lake", url, "pull", ART, str(tmp_path / "a")],
                         env=env).exit_code == 0
    docs = {}
    for flag in ([], ["--no-cache"]):
        r = runner.invoke(app, ["--lake", url, "pull", ART, str(tmp_path / "b"), "--estimate",
                                "--json", *flag], env=env)
        assert r.exit_code == 0, r.output
        docs[bool(flag)] = json.loads(r.stdout)
    assert docs[False]["bytes_to_download"] == 0
    assert docs[True]["bytes_to_download"] >= 3 * MiB


# ---- 7. prune of a cache it may not write ----------------------------------------------------

def test_prune_of_a_read_only_cache_is_a_permission_error(setup, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """Exit 4, as README "Exit codes" says for permission, not 2 (a bad command line).
    (Tests may run as root, for whom chmod does not bite: unlink refuses here instead.)"""
    lake, store, src, cache_dir = setup
    lake.pull(ART, tmp_path / "a")
    chunks = str(cache_dir / "chunks")
    real_unlink = os.unlink

    def unlink(path: Any, *a: Any, **kw: Any) -> None:
        if os.fspath(path).startswith(chunks):
            raise OSError(errno.EROFS, "Read-only file system")
        real_unlink(path, *a, **kw)

    monkeypatch.setattr(os, "unlink", unlink)
    res = CliRunner().invoke(app, ["cache", "prune", "--all"], env=cli_env(cache_dir))
    assert res.exit_code == 4, res.output
    assert "could not evict from the chunk cache" in res.stderr
    assert len(entry_files(cache_dir)) == 6


# ---- 8. cache ls --dir, ckptlake.open(cache_size=) ----------------------------------------

def test_missing_dir_is_not_found(tmp_path: Path) -> None:
    env = {"CKPTLAKE_CACHE": "", "CKPTLAKE_CONFIG": ""}
    for args in (["ls"], ["prune", "--all"]):
        res = CliRunner().invoke(app, ["cache", *args, "--dir", str(tmp_path / "nope")],
                                 env=env)
        assert res.exit_code == 3, res.output
        assert "no such directory" in res.stderr
    assert not (tmp_path / "nope").exists()
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(app, ["cache", "ls", "--dir", str(tmp_path / "empty")], env=env)
    assert res.exit_code == 0 and "0 chunks" in res.stdout


def test_open_cache_size_needs_a_cache_and_a_real_bound(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CKPTLAKE_CACHE", raising=False)
    monkeypatch.delenv("CKPTLAKE_CACHE_SIZE", raising=False)
    monkeypatch.setenv("CKPTLAKE_CONFIG", "")
    url = f"file://{tmp_path / 'lake'}"
    with pytest.raises(ckptlake.UsageError, match="no cache directory is configured"):
        ckptlake.open(url, cache_size=64 * MiB)
    with pytest.raises(ckptlake.UsageError, match="cache=False"):
        ckptlake.open(url, cache=False, cache_size=64 * MiB)
    with pytest.raises(ckptlake.UsageError, match="between 1MiB"):
        ckptlake.open(url, cache=tmp_path / "c", cache_size=10)
    with ckptlake.open(url, cache=tmp_path / "c", cache_size=MiB) as lk:
        assert lk.cache.max_size == MiB
    monkeypatch.setenv("CKPTLAKE_CACHE", str(tmp_path / "env"))
    with ckptlake.open(url, cache_size=2 * MiB) as lk:  # bounds the configured one
        assert lk.cache.dir == str(tmp_path / "env") and lk.cache.max_size == 2 * MiB


@pytest.mark.parametrize("level", ["algo", "fan"])
def test_prune_never_follows_a_symlinked_directory_out_of_the_cache(tmp_path: Path,
                                                                   level: str) -> None:
    """A symlink in the place of chunks/<algo> or chunks/<algo>/<fan> (anyone who can write to
    a shared cache can make one): eviction listed the files it pointed at as entries and
    deleted them.  Now it removes the link itself, and nothing behind it."""
    victim = tmp_path / "victim"
    (victim / "ab").mkdir(parents=True)  # a subdirectory: what chunks/<algo>/<fan> looks like
    (victim / "notes.txt").write_text("precious")
    (victim / "model.safetensors").write_text("data")
    (victim / "ab" / "weights.bin").write_text("more")
    cache = tmp_path / "vc"
    if level == "algo":
        (cache / "chunks").mkdir(parents=True)
        (cache / "chunks" / "blake3").symlink_to(victim)
    else:
        (cache / "chunks" / "blake3").mkdir(parents=True)
        (cache / "chunks" / "blake3" / "zz").symlink_to(victim)
    r = CliRunner().invoke(app, ["cache", "ls", "--dir", str(cache), "--json"],
                           catch_exceptions=False)
    assert r.exit_code == 0 and json.loads(r.stdout)["entries"] == 0, r.stdout
    r = CliRunner().invoke(app, ["cache", "prune", "--all", "--dir", str(cache), "--json"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in victim.iterdir()) == ["ab", "model.safetensors", "notes.txt"]
    assert (victim / "notes.txt").read_text() == "precious"
    assert (victim / "ab" / "weights.bin").read_text() == "more"


def test_pulls_at_once_see_each_others_entries(tmp_path: Path) -> None:
    """Each pull's handle counted only its own writes: four pulls at once each stayed under
    the bound while the directory held four times it.  A handle now rescans the directory
    once it has added a tenth of the bound, so together they overshoot by about that much
    each, not by the bound each."""
    bound, size = 10_000, 1000
    handles = [ChunkCache(tmp_path / "cache", bound).session() for _ in range(4)]
    for i in range(6):  # 6000 bytes each: under the bound, 24000 between them
        for k, h in enumerate(handles):
            data = bytes([k]) * (size - 8) + i.to_bytes(8, "big")
            h.put("sha256", digest("sha256", data), data)
    total = sum(e.size for e in ChunkCache(tmp_path / "cache", bound).entries())
    assert total <= bound + 4 * (bound // 10 + size), total


def test_a_hit_on_an_entry_that_is_a_symlink_touches_no_file_outside(tmp_path: Path) -> None:
    """A hit marks the entry used (LRU).  Through a symlink entry it set the time of the file
    outside the cache the link points at, while eviction reads the link's own time."""
    cache = ChunkCache(tmp_path / "cache", 10 * MiB)
    data = b"x" * 4096
    d = digest("sha256", data)
    outside = tmp_path / "users-file"
    outside.write_bytes(data)
    os.utime(outside, (1000, 1000))
    entry = Path(cache.entry_path("sha256", d))
    entry.parent.mkdir(parents=True)
    entry.symlink_to(outside)
    os.utime(entry, (2000, 2000), follow_symlinks=False)
    assert bytes(cache.get_into("sha256", d, bytearray(len(data)))) == data
    assert outside.stat().st_mtime == 1000
    assert entry.lstat().st_mtime > 2000
