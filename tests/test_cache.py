"""The local chunk cache (issue 14, item 6): a second pull through it takes nothing from the
store; a corrupt or truncated entry is dropped and downloaded again, never returned; a failing
cache write fails the cache, not the pull; concurrent processes share it; LRU keeps its bound;
`ckptlake cache ls|prune`; the cache: config key."""
from __future__ import annotations

import errno
import json
import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.core import cache as cache_mod
from ckptlake.core.cache import ChunkCache
from ckptlake.errors import ConfigError
from ckptlake.format.header import digest
from ckptlake.lake import Lake
from ckptlake.policy.config import _parse, resolve_cache

from test_pull_reuse import ChunkCountingStore

MiB = 1024 * 1024
ART = "ca/run/ckpt"


def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    rnd = random.Random(3)
    (src / "model.bin").write_bytes(rnd.randbytes(4 * MiB + 123))
    (src / "sub" / "small.json").write_text('{"a": 1}')
    return src


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Lake, ChunkCountingStore, Path, Path]:
    store = ChunkCountingStore()
    cache_dir = tmp_path / "cache"
    lake = Lake(store, chunk_size=MiB, concurrency=3, cache=ChunkCache(cache_dir, 64 * MiB))
    src = source(tmp_path)
    lake.push(src, ART)
    return lake, store, src, cache_dir


def entry_files(cache_dir: Path) -> list[Path]:
    return sorted(p for p in (cache_dir / "chunks").rglob("*") if p.is_file())


def test_second_pull_takes_nothing_from_the_store(setup, tmp_path: Path) -> None:
    lake, store, src, cache_dir = setup
    r1 = lake.pull(ART, tmp_path / "a")
    assert r1.bytes_downloaded == store.chunk_bytes > 4 * MiB and r1.bytes_from_cache == 0
    assert len(entry_files(cache_dir)) == 6  # 5 slices + 1 pack
    store.chunk_bytes = 0
    r2 = lake.pull(ART, tmp_path / "b")
    assert store.chunk_bytes == 0 and r2.bytes_downloaded == 0
    assert r2.bytes_from_cache == r2.bytes_total
    assert tree_bytes(tmp_path / "b") == tree_bytes(src)
    store.chunk_bytes = 0
    r3 = lake.pull(ART, tmp_path / "c", use_cache=False)  # --no-cache
    assert r3.bytes_from_cache == 0 and store.chunk_bytes == r1.bytes_downloaded


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_corrupt_entry_is_dropped_and_refetched(setup, tmp_path: Path, damage: str) -> None:
    lake, store, src, cache_dir = setup
    lake.pull(ART, tmp_path / "a")
    victim = max(entry_files(cache_dir), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    if damage == "flip":
        data[1000] ^= 0x01
    elif damage == "truncate":
        data = data[:len(data) // 2]
    else:
        data = bytearray()
    victim.write_bytes(bytes(data))
    store.chunk_bytes = 0
    r = lake.pull(ART, tmp_path / "b")
    assert tree_bytes(tmp_path / "b") == tree_bytes(src)
    assert store.chunk_bytes == MiB == r.bytes_downloaded  # only the damaged chunk
    assert any("corrupt chunk cache entry" in w for w in r.warnings)
    # refetched and cached again, intact
    assert digest(victim.parent.parent.name, victim.read_bytes()) == victim.name  # <hash>/<hh>/


def test_cache_write_failure_fails_the_cache_not_the_pull(setup, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    lake, store, src, cache_dir = setup

    def full(fd: int, view: memoryview) -> None:
        os.write(fd, view[:100])  # a partial entry, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_mod, "_write_all", full)
    r = lake.pull(ART, tmp_path / "a")
    monkeypatch.undo()
    assert tree_bytes(tmp_path / "a") == tree_bytes(src)
    assert [w for w in r.warnings if "no space left" in w and "without caching" in w]
    assert entry_files(cache_dir) == [] and os.listdir(cache_dir / "tmp") == []


def test_unwritable_cache_directory(setup, tmp_path: Path) -> None:
    """A cache path that cannot be a directory (a file is in the way)."""
    lake, store, src, _ = setup
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    lake.cache = ChunkCache(blocker / "cache", 64 * MiB)
    r = lake.pull(ART, tmp_path / "a")
    assert tree_bytes(tmp_path / "a") == tree_bytes(src)
    assert any("could not write to the chunk cache" in w for w in r.warnings)


def test_lru_eviction_keeps_the_bound(tmp_path: Path) -> None:
    c = ChunkCache(tmp_path / "c", 10 * 1000)
    blobs = [bytes([i]) * 3000 for i in range(5)]
    names = [digest("sha256", b) for b in blobs]
    for i in range(3):  # 9000 bytes: under the bound
        c.put("sha256", names[i], blobs[i])
        os.utime(c.entry_path("sha256", names[i]), (1000 + i, 1000 + i))
    assert c.get_into("sha256", names[0], bytearray(4000)) is not None  # 0 is now the newest
    c.put("sha256", names[3], blobs[3])  # 12000 > 10000: evict LRU down to 90 %
    assert {e.digest for e in c.entries()} == {names[0], names[2], names[3]}  # 1 was oldest
    c.put("sha256", names[4], blobs[4])
    assert {e.digest for e in c.entries()} == {names[0], names[3], names[4]}
    assert sum(e.size for e in c.entries()) <= 10 * 1000


def test_oversized_chunk_is_not_cached(tmp_path: Path) -> None:
    """A chunk larger than the whole cache is not written: writing it would evict every
    entry (the small ones a user still pulls from) and then itself, for nothing."""
    c = ChunkCache(tmp_path / "c", 100)
    small = b"s" * 50
    c.put("sha256", digest("sha256", small), small)
    os.utime(c.entry_path("sha256", digest("sha256", small)), (1000, 1000))  # the LRU one
    c.put("sha256", digest("sha256", b"x" * 200), b"x" * 200)
    assert [e.digest for e in c.entries()] == [digest("sha256", small)]
    assert c.failure is None


CONCURRENT = textwrap.dedent("""
    import os, sys, time, ckptlake
    lake = ckptlake.open(sys.argv[1], cache=sys.argv[2], concurrency=2)
    lake.resolve("ca/run/ckpt")  # imports done: both start pulling together
    open(sys.argv[3] + ".ready", "w").close()
    while not os.path.exists(sys.argv[4]):
        time.sleep(0.005)
    r = lake.pull("ca/run/ckpt", sys.argv[3])
    print(r.bytes_downloaded, r.bytes_from_cache)
""")


def test_concurrent_processes_share_one_cache(tmp_path: Path) -> None:
    src = source(tmp_path)
    url = f"file://{tmp_path / 'lake'}"
    with ckptlake.open(url, chunk_size=MiB) as lk:
        lk.push(src, ART)
    cache_dir = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(Path(ckptlake.__file__).parent.parent)}
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, url, str(cache_dir),
                               str(tmp_path / f"d{i}"), str(tmp_path / "go")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"d{i}.ready").exists() for i in range(2)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.01)
    (tmp_path / "go").touch()
    downloaded = 0
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        downloaded += int(out.split()[0])
    for i in range(2):
        assert tree_bytes(tmp_path / f"d{i}") == tree_bytes(src)
    entries = entry_files(cache_dir)
    for e in entries:
        assert digest(e.parent.parent.name, e.read_bytes()) == e.name
    # each chunk came from the lake once, whichever process fetched it (ChunkCache.filling)
    assert downloaded == sum(e.stat().st_size for e in entries) > 4 * MiB
    assert os.listdir(cache_dir / "tmp") == []


def test_cli_cache_ls_and_prune(setup, tmp_path: Path) -> None:
    lake, store, src, cache_dir = setup
    lake.pull(ART, tmp_path / "a")
    runner = CliRunner()
    env = {"CKPTLAKE_CACHE": str(cache_dir), "CKPTLAKE_CACHE_SIZE": "64MiB",
           "CKPTLAKE_CONFIG": ""}
    res = runner.invoke(app, ["cache", "ls", "--json"], env=env)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["entries"] == 6 and doc["max_size"] == 64 * MiB
    assert doc["bytes"] == sum(p.stat().st_size for p in entry_files(cache_dir))
    assert doc["origin"] == "$CKPTLAKE_CACHE"
    [v] = doc["versions"]
    assert (v["artifact"], v["version"], v["lake"]) == (ART, 1, "memory://test")
    assert v["bytes_cached"] == v["bytes"] == doc["bytes"] and v["chunks"] == 6
    res = runner.invoke(app, ["cache", "ls"], env=env)
    assert res.exit_code == 0 and f"{ART}@v1" in res.stdout and "6 chunks" in res.stdout
    res = runner.invoke(app, ["cache", "prune", "--max-size", "2MiB", "--dry-run", "--json"],
                        env=env)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["dry_run"] and doc["bytes_left"] <= 2 * MiB and doc["entries_removed"] >= 3
    assert len(entry_files(cache_dir)) == 6
    res = runner.invoke(app, ["cache", "prune", "--max-size", "2MiB"], env=env)
    assert res.exit_code == 0 and "deleted" in res.stdout
    assert sum(p.stat().st_size for p in entry_files(cache_dir)) <= 2 * MiB
    doc = json.loads(runner.invoke(app, ["cache", "ls", "--json"], env=env).stdout)
    assert 0 < doc["versions"][0]["bytes_cached"] <= 2 * MiB < doc["versions"][0]["bytes"]
    res = runner.invoke(app, ["cache", "prune", "--all"], env=env)
    assert res.exit_code == 0 and entry_files(cache_dir) == []
    assert os.listdir(cache_dir / "versions") == []  # a record with nothing left goes too
    res = runner.invoke(app, ["cache", "ls", "--all"], env=env)
    assert res.exit_code == 2
    res = runner.invoke(app, ["cache", "nonsense"], env=env)
    assert res.exit_code == 2 and "use ls or prune" in res.stderr
    res = runner.invoke(app, ["cache", "ls"], env={"CKPTLAKE_CACHE": "", "CKPTLAKE_CONFIG": "",
                                                   "HOME": str(tmp_path),
                                                   "XDG_CONFIG_HOME": str(tmp_path)})
    assert res.exit_code == 2 and "no chunk cache is configured" in res.stderr


def test_config_cache_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CKPTLAKE_CACHE", raising=False)
    monkeypatch.delenv("CKPTLAKE_CACHE_SIZE", raising=False)
    src = str(tmp_path / "ckptlake.yaml")
    cfg = _parse("cache:\n  dir: c\n  size: 1GiB\n", src)
    setting = resolve_cache(cfg)
    assert setting.dir == str(tmp_path / "c") and setting.size == 2**30
    assert resolve_cache(_parse("cache: /x/y\n", src)).dir == "/x/y"
    assert resolve_cache(_parse("cache:\n", src)) is None
    with pytest.raises(ConfigError) as e:
        _parse("lake: /l\ncache:\n  dir: c\n  size: 10K\n", src)
    assert e.value.line == 4 and "ambiguous" in str(e.value.hint)
    with pytest.raises(ConfigError) as e:
        _parse("cache:\n  dri: c\n", src)
    assert e.value.line == 2
    with pytest.raises(ConfigError) as e:
        _parse("cache:\n  size: 1GiB\n", src)
    assert "needs dir" in str(e.value)
    with pytest.raises(ConfigError):
        _parse("cache: 12\n", src)
    monkeypatch.setenv("CKPTLAKE_CACHE", str(tmp_path / "env"))
    monkeypatch.setenv("CKPTLAKE_CACHE_SIZE", "2GiB")
    setting = resolve_cache(cfg)
    assert setting.dir == str(tmp_path / "env") and setting.size == 2 * 2**30
    monkeypatch.setenv("CKPTLAKE_CACHE_SIZE", "lots")
    with pytest.raises(ckptlake.UsageError):
        resolve_cache(cfg)


def test_open_cache_argument(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CKPTLAKE_CACHE", str(tmp_path / "env"))
    url = f"file://{tmp_path / 'lake'}"
    with ckptlake.open(url) as lk:
        assert lk.cache is not None and lk.cache.dir == str(tmp_path / "env")
    with ckptlake.open(url, cache=False) as lk:
        assert lk.cache is None
    with ckptlake.open(url, cache=tmp_path / "x", cache_size=5 * MiB) as lk:
        assert lk.cache.dir == str(tmp_path / "x") and lk.cache.max_size == 5 * MiB
    with pytest.raises(ckptlake.UsageError):
        ckptlake.open(url, cache_size=0)


def test_egress_estimate_counts_cached_chunks_as_present(setup, tmp_path: Path) -> None:
    from ckptlake.policy.egress import EgressPolicy

    lake, store, src, cache_dir = setup
    before = lake.estimate_pull(ART, tmp_path / "a", egress=EgressPolicy())
    lake.pull(ART, tmp_path / "a")
    after = lake.estimate_pull(ART, tmp_path / "b", egress=EgressPolicy())
    assert before.bytes_to_download > 4 * MiB and after.bytes_to_download == 0


def test_cli_pull_through_the_env_cache_and_no_cache(tmp_path: Path) -> None:
    src = source(tmp_path)
    url = f"file://{tmp_path / 'lake'}"
    with ckptlake.open(url, chunk_size=MiB, cache=False) as lk:
        lk.push(src, ART)
    env = {"CKPTLAKE_CACHE": str(tmp_path / "cache"), "CKPTLAKE_CONFIG": ""}
    runner = CliRunner()
    docs = []
    for dest, extra in (("a", []), ("b", []), ("c", ["--no-cache"])):
        res = runner.invoke(app, ["pull", ART, str(tmp_path / dest), "--lake", url, "--json",
                                  *extra], env=env)
        assert res.exit_code == 0, res.output
        docs.append(json.loads(res.stdout))
        assert tree_bytes(tmp_path / dest) == tree_bytes(src)
    assert docs[0]["bytes_from_cache"] == 0 and docs[0]["bytes_downloaded"] > 4 * MiB
    assert docs[1]["bytes_from_cache"] == docs[1]["bytes_total"]
    assert docs[1]["bytes_downloaded"] == 0
    assert docs[2]["bytes_from_cache"] == 0
    assert docs[2]["bytes_downloaded"] == docs[0]["bytes_downloaded"]
    res = runner.invoke(app, ["pull", ART, str(tmp_path / "d"), "--lake", url], env=env)
    assert res.exit_code == 0 and "chunk cache" in res.stderr and "from the cache" in res.stdout


def test_a_pull_does_not_evict_its_own_cached_chunks(tmp_path: Path) -> None:
    """The egress estimate counts a version's cached chunks as free; with a cache smaller than
    cached + downloaded, the pull's own downloads evicted them (least recently used) before it
    read them, and it downloaded them after all (12 MiB against an estimate of 8).  Only the
    chunks cached when the pull began are spared: its own downloads are still evicted, so the
    cache ends at most its bound plus those (8 MiB of its own against a 5 MiB bound)."""
    store = ChunkCountingStore()
    lake = Lake(store, chunk_size=MiB, concurrency=1, cache=ChunkCache(tmp_path / "c", 5 * MiB))
    rnd = random.Random(7)
    shared, own = rnd.randbytes(4 * MiB), rnd.randbytes(8 * MiB)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "big2.bin").write_bytes(shared)
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "big1.bin").write_bytes(own)
    (tmp_path / "demo" / "big2.bin").write_bytes(shared)
    lake.push(tmp_path / "other", "c/other")
    lake.push(tmp_path / "demo", "c/demo")
    lake.pull("c/other", tmp_path / "o1")  # caches the 4 shared chunks
    est = lake.estimate_pull("c/demo", tmp_path / "o2")
    assert est.bytes_to_download == 8 * MiB
    got = lake.pull("c/demo", tmp_path / "o2")
    assert got.bytes_downloaded == est.bytes_to_download, (got.bytes_downloaded,
                                                          got.bytes_from_cache)
    assert tree_bytes(tmp_path / "o2") == {"big1.bin": own, "big2.bin": shared}
    assert sum(e.size for e in lake.cache.entries()) <= 5 * MiB + 4 * MiB  # bound + protected
