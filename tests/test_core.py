"""Core operations on the in-memory store: round trips, dedup, safety rules, races."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from ckptlake.errors import (Conflict, IntegrityError, NotFound, SourceChanged, UnsafeManifest,
                             UsageError)
from ckptlake.format import layout
from ckptlake.lake import Lake
from ckptlake.store.memory import MemoryStore

MiB = 1024 * 1024


def make_tree(root: Path, *, big: int = 3 * MiB + 123, small: int = 40, seed: int = 1) -> Path:
    rnd = __import__("random").Random(seed)
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "empty_dir").mkdir()
    (root / "model.bin").write_bytes(rnd.randbytes(big))
    for i in range(small):
        (root / "sub" / f"shard_{i:03d}.json").write_bytes(rnd.randbytes(rnd.randint(0, 9000)))
    (root / "sub" / "deep" / "ünïcødé name.txt").write_text("hello")
    (root / "empty.txt").write_bytes(b"")
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    os.symlink("model.bin", root / "latest.bin")
    os.symlink("sub/deep", root / "deep_link")
    return root


def snapshot(root: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", p.read_bytes(), os.access(p, os.X_OK))
    return out


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def lake(store: MemoryStore) -> Lake:
    return Lake(store, chunk_size=MiB, concurrency=4)


def test_round_trip_is_bit_exact(lake: Lake, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    r = lake.push(src, "proj/run/ckpt", step=100, metrics={"loss": 2.5}, metadata={"lr": "3e-4"})
    assert (r.version, r.step, r.bytes_deduplicated) == (1, 100, 0)
    assert r.bytes_uploaded == r.bytes_scanned == sum(
        p.stat().st_size for p in src.rglob("*") if p.is_file() and not p.is_symlink())
    out = lake.pull("proj/run/ckpt", tmp_path / "out")
    assert out.version == 1 and out.bytes_downloaded > 0
    assert snapshot(tmp_path / "out") == snapshot(src)


def test_small_files_are_packed(lake: Lake, store: MemoryStore, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", small=200)
    r = lake.push(src, "a/b")
    # 4 slices of model.bin plus a handful of packs, not one object per small file
    assert r.chunks_uploaded < 20
    assert len([k for k in store.keys() if k.startswith("chunks/")]) == r.chunks_uploaded


def test_repush_uploads_nothing_and_partial_change_uploads_one_chunk(
        lake: Lake, store: MemoryStore, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    lake.push(src, "a/b")
    again = lake.push(src, "a/b")
    assert again.version == 2 and again.bytes_uploaded == 0
    assert again.bytes_deduplicated == again.bytes_scanned
    with open(src / "model.bin", "r+b") as fh:  # change one byte in the second 1 MiB chunk
        fh.seek(MiB + 5)
        fh.write(b"\xff" if fh.read(1) != b"\xff" else b"\x00")
    third = lake.push(src, "a/b")
    assert third.chunks_uploaded == 1 and third.bytes_uploaded == MiB


def test_single_file_round_trip(lake: Lake, tmp_path: Path) -> None:
    f = tmp_path / "weights.safetensors"
    f.write_bytes(os.urandom(2 * MiB + 7))
    lake.push(f, "m/final")
    lake.pull("m/final", tmp_path / "restored.bin")
    assert (tmp_path / "restored.bin").read_bytes() == f.read_bytes()
    (tmp_path / "into").mkdir()
    lake.pull("m/final", tmp_path / "into")  # an existing directory receives the file by name
    assert (tmp_path / "into" / "weights.safetensors").read_bytes() == f.read_bytes()


def test_selectors(lake: Lake, tmp_path: Path) -> None:
    src = tmp_path / "f.txt"
    for step in (10, 20, 20, 30):
        src.write_text(f"step {step}")
        lake.push(src, "a/ck", step=step)
    lake.alias("a/ck@v2", "best")
    assert lake.resolve("a/ck").version == 4
    assert lake.resolve("a/ck@latest").version == 4
    assert lake.resolve("a/ck@v1").step == 10
    assert lake.resolve("a/ck@step=20").version == 3  # the newest with that step
    assert lake.resolve("a/ck@best").version == 2
    moved = lake.alias("a/ck@step=30", "best")
    assert (moved.previous, moved.version) == (2, 4)
    assert [v.aliases for v in lake.versions("a/ck")] == [[], [], [], ["best"]]
    for bad, exc in [("a/ck@v9", NotFound), ("a/ck@step=99", NotFound), ("a/ck@nope", NotFound),
                     ("x/y", NotFound), ("a//ck", UsageError), ("a/../b", UsageError),
                     ("a/ck@v0", UsageError), ("a/ck@", UsageError), ("a/c k", UsageError)]:
        with pytest.raises(exc):
            lake.resolve(bad)


def test_concurrent_pushes_get_distinct_versions(lake: Lake, tmp_path: Path) -> None:
    srcs = []
    for i in range(8):
        p = tmp_path / f"s{i}.bin"
        p.write_bytes(f"payload {i}".encode() * 1000)
        srcs.append(p)
    results: list[int] = []
    barrier = threading.Barrier(8)

    def run(p: Path) -> None:
        barrier.wait()
        results.append(lake.push(p, "race/art").version)

    threads = [threading.Thread(target=run, args=(p,)) for p in srcs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(1, 9))
    restored = {lake.resolve(f"race/art@v{n}").version for n in range(1, 9)}
    assert restored == set(range(1, 9))


def test_file_changing_during_push_commits_nothing(lake: Lake, store: MemoryStore,
                                                   tmp_path: Path, monkeypatch) -> None:
    src = make_tree(tmp_path / "src")
    real_put = store.put
    touched = []

    def put(key, data, **kw):  # the trainer rewrites a file while its chunks upload
        if key.startswith("chunks/") and not touched:
            (src / "model.bin").write_bytes(os.urandom(100))
            touched.append(key)
        return real_put(key, data, **kw)

    monkeypatch.setattr(store, "put", put)
    with pytest.raises(SourceChanged):
        lake.push(src, "a/b")
    assert not [k for k in store.keys() if "/@v/" in k]


def test_interrupted_push_leaves_no_version_and_resumes(lake: Lake, store: MemoryStore,
                                                        tmp_path: Path, monkeypatch) -> None:
    src = make_tree(tmp_path / "src", big=6 * MiB)
    real_put = store.put
    calls = []

    def put(key, data, **kw):
        calls.append(key)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_put(key, data, **kw)

    monkeypatch.setattr(store, "put", put)
    with pytest.raises(KeyboardInterrupt):
        lake.push(src, "a/b")
    assert not [k for k in store.keys() if "/@v/" in k]
    stored_before = len([k for k in store.keys() if k.startswith("chunks/")])
    assert stored_before >= 1
    monkeypatch.setattr(store, "put", real_put)
    r = lake.push(src, "a/b")
    assert r.version == 1 and r.chunks_deduplicated == stored_before


def _tamper(store: MemoryStore, artifact: str, version: int, edit) -> None:
    key = layout.version_key(artifact, version)
    doc = json.loads(store.get(key))
    edit(doc)
    store.corrupt(key, json.dumps(doc).encode())


@pytest.mark.parametrize("path", ["../evil.txt", "/etc/evil", "a/../../evil", "a//b", "./x"])
def test_crafted_manifest_paths_are_refused(lake: Lake, store: MemoryStore, tmp_path: Path,
                                            path: str) -> None:
    f = tmp_path / "f.txt"
    f.write_text("x")
    lake.push(tmp_path / "f.txt", "a/b")
    lake.push(tmp_path, "a/dir")
    _tamper(store, "a/dir", 1, lambda d: d["files"][0].update(path=path))
    with pytest.raises(UnsafeManifest):
        lake.pull("a/dir", tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "evil.txt").exists()


def test_symlink_escape_in_manifest_is_refused(lake: Lake, store: MemoryStore,
                                               tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f.txt").write_text("x")
    lake.push(tmp_path / "src", "a/dir")
    _tamper(store, "a/dir", 1, lambda d: d["files"].append({"path": "l", "symlink": "../../x"}))
    with pytest.raises(UnsafeManifest):
        lake.pull("a/dir", tmp_path / "out")
    _tamper(store, "a/dir", 1, lambda d: d["files"].__setitem__(-1, {"path": "l",
                                                                      "symlink": "."}))
    _tamper(store, "a/dir", 1, lambda d: d["files"].append(
        {"path": "l/f2", "size": 0, "chunks": []}))
    with pytest.raises(UnsafeManifest):  # a file below a symlink of the same version
        lake.pull("a/dir", tmp_path / "out")


def test_existing_symlink_in_destination_is_not_followed_out(lake: Lake, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f.txt").write_text("x")
    lake.push(src, "a/dir")
    dest = tmp_path / "dest"
    dest.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, dest / "sub")
    with pytest.raises(UnsafeManifest):
        lake.pull("a/dir", dest, force=True)
    assert not (outside / "f.txt").exists()


def test_push_refuses_symlink_leaving_tree(lake: Lake, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (tmp_path / "secret").write_text("s")
    os.symlink(tmp_path / "secret", src / "link")
    with pytest.raises(UsageError, match="outside the pushed tree"):
        lake.push(src, "a/b")
    r = lake.push(src, "a/b", follow_symlinks=True)
    lake.pull("a/b", tmp_path / "out")
    assert (tmp_path / "out" / "link").read_text() == "s" and not (tmp_path / "out" /
                                                                  "link").is_symlink()
    assert r.version == 1


def test_corrupted_chunk_fails_pull_and_leaves_nothing(lake: Lake, store: MemoryStore,
                                                       tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    lake.push(src, "a/b")
    victim = [k for k in store.keys() if k.startswith("chunks/")][0]
    data = bytearray(store.get(victim))
    data[len(data) // 2] ^= 0x01
    store.corrupt(victim, bytes(data))
    with pytest.raises(IntegrityError):
        lake.pull("a/b", tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == ["src"]  # no destination, no staging left behind


def test_conflicting_destination_needs_force(lake: Lake, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    lake.push(src, "a/b")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "model.bin").write_bytes(b"something else")
    (dest / "keep.me").write_text("mine")
    with pytest.raises(Conflict):
        lake.pull("a/b", dest)
    assert (dest / "model.bin").read_bytes() == b"something else"
    lake.pull("a/b", dest, force=True)
    assert (dest / "model.bin").read_bytes() == (src / "model.bin").read_bytes()
    assert (dest / "keep.me").read_text() == "mine"  # merge: files the version lacks stay


def test_pull_reuses_identical_files(lake: Lake, store: MemoryStore, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    lake.push(src, "a/b")
    lake.pull("a/b", tmp_path / "out")
    manifest_bytes = len(store.get(layout.version_key("a/b", 1)))
    before = store.bytes_out
    again = lake.pull("a/b", tmp_path / "out")
    assert again.bytes_downloaded == 0
    assert store.bytes_out - before == manifest_bytes  # the manifest, and no chunk
    assert again.bytes_reused == again.bytes_total


def test_bad_inputs(lake: Lake, tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(NotFound):
        lake.push(tmp_path / "missing", "a/b")
    with pytest.raises(UsageError):
        lake.push(f, "a/b", step=-1)
    with pytest.raises(UsageError):
        lake.push(f, "a/b", metrics={"loss": float("nan")})
    with pytest.raises(UsageError):
        lake.push(f, "a/b", aliases=["v3"])
    with pytest.raises(UsageError):
        lake.push(f, "a/b", aliases=["latest"])
    with pytest.raises(NotFound):
        lake.versions("none/such")
    assert lake.artifacts() == []


def test_exclude(lake: Lake, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src")
    lake.push(src, "a/b", exclude=["*.json", "run.sh"])
    lake.pull("a/b", tmp_path / "out")
    names = {p.name for p in (tmp_path / "out").rglob("*")}
    assert "run.sh" not in names and not any(n.endswith(".json") for n in names)
    assert "model.bin" in names


def test_interrupted_pull_resumes_from_staged_chunks(lake: Lake, store: MemoryStore,
                                                     tmp_path: Path, monkeypatch) -> None:
    src = make_tree(tmp_path / "src", big=8 * MiB)
    lake.push(src, "a/b")
    real_get = store.get
    chunk_gets = []

    def get(key):
        if key.startswith("chunks/"):
            chunk_gets.append(key)
            if len(chunk_gets) == 6:
                raise KeyboardInterrupt
        return real_get(key)

    monkeypatch.setattr(store, "get", get)
    with pytest.raises(KeyboardInterrupt):
        lake.pull("a/b", tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing under the final name
    staged = [p for p in os.listdir(tmp_path) if ".ckptlake-pull-" in p]
    assert len(staged) == 1  # kept for the next attempt
    monkeypatch.setattr(store, "get", real_get)
    r = lake.pull("a/b", tmp_path / "out")
    assert r.bytes_resumed >= 4 * MiB and r.bytes_downloaded <= r.bytes_total - 4 * MiB
    assert snapshot(tmp_path / "out") == snapshot(src)
    assert [p for p in os.listdir(tmp_path) if ".ckptlake-pull-" in p] == []


def test_resume_refetches_a_torn_staged_chunk(lake: Lake, store: MemoryStore, tmp_path: Path,
                                              monkeypatch) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(os.urandom(4 * MiB))
    lake.push(f, "a/f")
    real_get = store.get
    n = []

    def get(key):
        if key.startswith("chunks/"):
            n.append(key)
            if len(n) == 3:
                raise KeyboardInterrupt
        return real_get(key)

    monkeypatch.setattr(store, "get", get)
    with pytest.raises(KeyboardInterrupt):
        lake.pull("a/f", tmp_path / "out.bin")
    staged_dir = next(p for p in tmp_path.iterdir() if ".ckptlake-pull-" in p.name)
    staged = next(p for p in (staged_dir / "data").iterdir())
    with open(staged, "r+b") as fh:  # damage what the journal claims is done
        fh.write(b"\0" * 1024)
    monkeypatch.setattr(store, "get", real_get)
    lake.pull("a/f", tmp_path / "out.bin")
    assert (tmp_path / "out.bin").read_bytes() == f.read_bytes()


def test_retries_reach_the_progress_reporter(tmp_path: Path) -> None:
    from ckptlake.errors import TransientError
    from ckptlake.store.retry import RetryingStore
    from ckptlake.transfer.progress import NullProgress

    inner = MemoryStore()
    real_put = inner.put
    failures = []

    def flaky_put(key, data, **kw):
        if key.startswith("chunks/") and not failures:
            failures.append(key)
            raise TransientError("503 SlowDown")
        return real_put(key, data, **kw)

    inner.put = flaky_put  # type: ignore[method-assign]
    store = RetryingStore(inner, sleep=lambda s: None)
    lake = Lake(store, chunk_size=MiB)
    seen = []

    class Watch(NullProgress):
        def retry(self, *, key, attempt, error, delay):
            seen.append((key, attempt, error))

    f = tmp_path / "f.bin"
    f.write_bytes(os.urandom(MiB + 1))
    r = lake.push(f, "a/b", progress=Watch())
    assert r.version == 1
    assert seen == [(failures[0], 1, "503 SlowDown")]


@pytest.mark.parametrize("size", [1, 4095, 4096, 4096 * 3 + 17, 2 * MiB + 1])
def test_staged_writes_direct_and_buffered_give_the_same_bytes(tmp_path: Path, size: int) -> None:
    import mmap

    from ckptlake.core.pull import _write

    data = os.urandom(size)
    buf = mmap.mmap(-1, size + 4096)
    buf[:size] = data
    for name, piece, direct in [("direct", memoryview(buf)[:size], True),
                                ("buffered", memoryview(data), False)]:
        path = tmp_path / name
        path.write_bytes(b"\0" * (8192 + size))
        _write(str(path), piece, 8192, direct=direct)
        assert path.read_bytes() == b"\0" * 8192 + data


def test_pull_warns_about_abandoned_staging_dirs(lake: Lake, tmp_path: Path) -> None:
    """A killed pull that nobody re-ran leaves a staging dir with full-size files beside the
    destination; the next pull there says so (and says nothing of one a running pull holds)."""
    import fcntl

    src = make_tree(tmp_path / "src")
    lake.push(src, "p/r/ckpt")
    dest = tmp_path / "dest"
    assert lake.pull("p/r/ckpt", dest).warnings == []
    stale = tmp_path / ".dest.ckptlake-pull-0123456789ab"
    (stale / "data").mkdir(parents=True)
    (stale / "data" / "big.bin").write_bytes(os.urandom(3 * MiB))
    (stale / ".lock").write_bytes(b"")
    busy = tmp_path / ".dest.ckptlake-pull-ba9876543210"
    busy.mkdir()
    (busy / "data.bin").write_bytes(os.urandom(MiB))
    held = os.open(busy / ".lock", os.O_CREAT | os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        warnings = lake.pull("p/r/ckpt", dest, force=True).warnings
    finally:
        os.close(held)
    assert len(warnings) == 1
    assert str(stale) in warnings[0] and "3.00 MiB" in warnings[0]
    assert str(busy) not in warnings[0]
    assert stale.exists(), "nothing is deleted on the user's behalf"


def test_library_readers_say_when_there_is_no_lake_at_all(lake: Lake, store: MemoryStore,
                                                          tmp_path: Path) -> None:
    """The CLI says "no lake at URL" for a mistyped location; the library (and the torch
    integrations on it) said "artifact m/ckpt has no versions", pointing at the artifact."""
    for call in (lambda: lake.resolve("m/ckpt"), lambda: lake.resolve("m/ckpt@v3"),
                 lambda: lake.resolve("m/ckpt@best"), lambda: lake.pull("m/ckpt", tmp_path / "o")):
        with pytest.raises(NotFound, match="no lake at memory://"):
            call()
    src = tmp_path / "s"
    src.mkdir()
    (src / "f").write_text("x")
    lake.push(src, "other/a")
    with pytest.raises(NotFound, match="artifact m/ckpt has no versions"):  # a lake: as before
        lake.resolve("m/ckpt")


def test_push_leaves_out_what_an_interrupted_pull_staged_in_the_tree(lake: Lake,
                                                                     tmp_path: Path) -> None:
    """A pull into an existing directory stages inside it (core/pull.py, staging_dir); one that
    was interrupted leaves its preallocated files there, which a push of that directory must
    not take for the user's data.  A directory merely named alike is pushed."""
    src = tmp_path / "src"
    staged = src / ".ckptlake-pull-0123456789ab"
    (staged / "data").mkdir(parents=True)
    (staged / ".lock").write_bytes(b"")
    (staged / "journal").write_text("")
    (staged / "data" / "model.bin").write_bytes(bytes(4096))
    (src / "model.bin").write_bytes(b"mine")
    (src / ".ckptlake-pull-notes").mkdir()
    (src / ".ckptlake-pull-notes" / "n.txt").write_text("kept")
    lake.push(src, "a/s")
    out = tmp_path / "out"
    lake.pull("a/s", out)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == \
        [".ckptlake-pull-notes/n.txt", "model.bin"]


def test_one_string_is_one_alias_pattern_input_or_parent(lake: Lake, tmp_path: Path) -> None:
    """exclude="*.txt" was iterated as "*", ".", ... and committed an empty version;
    aliases="best" made the aliases b, e, s, t."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.bin").write_bytes(b"x" * 100)
    (src / "notes.txt").write_text("n")
    base = lake.push(src, "run/base")
    r = lake.push(src, "run/ckpt", exclude="*.txt", aliases="best", inputs="s3://data/wiki",
                  parents="run/base")
    assert (r.files, r.aliases) == (1, ["best"])
    m = lake.show("run/ckpt")
    assert m.inputs == [{"uri": "s3://data/wiki"}]
    assert [(p["artifact"], p["version"]) for p in m.parents] == [("run/base", base.version)]
    ck = lake.checkpointer("run/ck", aliases="good")
    assert ck.save(src, step=1, exclude="*.txt").result().files == 1
    assert lake.resolve("run/ck@good").version == 1
    ck.close()


@pytest.mark.parametrize("bad", [[{"url": "s3://x"}], [{"uri": 3}], [None], [{"uri": "a b"}],
                                 [{"uri": "s3://x", "digest": 5}]])
def test_an_input_readers_would_refuse_is_refused_before_the_push(lake: Lake, tmp_path: Path,
                                                                  bad: list) -> None:
    """A dict stored unchecked ({"url": ...}) was committed, and every later read of the
    artifact's versions failed (IntegrityError: malformed input record)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    lake.push(src, "data/prep")
    with pytest.raises(UsageError, match="invalid input"):
        lake.push(src, "data/prep", inputs=bad)
    assert [v.version for v in lake.versions("data/prep")] == [1]
    r = lake.push(src, "data/prep", inputs=[{"uri": "s3://data#x", "digest": "sha256:ab"}])
    assert lake.show(f"data/prep@v{r.version}").inputs == \
        [{"uri": "s3://data#x", "digest": "sha256:ab"}]


def test_numpy_float_metrics_and_push_shard_timeouts(lake: Lake, tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    r = lake.push(src, "m/a", metrics={"loss": np.float32(1.5)})
    assert lake.show(f"m/a@v{r.version}").metrics == {"loss": 1.5}
    for kw in ({"stale_after": "x"}, {"wait_seconds": -5}, {"world": 0, "rank": 0}):
        args = {"step": 1, "rank": 0, "world": 1, **kw}
        with pytest.raises(UsageError):
            lake.push_shard(src, "m/s", **args)
    assert lake.pending("m/s") == []  # refused before anything was uploaded
