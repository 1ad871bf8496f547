"""Checks in push, scan, streampush, shards, replicas and the Checkpointer that no other test
exercised (mutation review: each was deleted or weakened and the suite still passed).

Each test below fails with its check removed.  The interleavings are made with hooks at exact
points (a wrapped store call, a monkeypatched function), never with thread timing.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import random
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import ckptlake.core.push as push_mod
from ckptlake.core import catalog
from ckptlake.errors import (IntegrityError, OutcomeUnknown, SourceChanged,
                             TransferError, UsageError)
from ckptlake.format import layout
from ckptlake.lake import Lake
from ckptlake.store.memory import MemoryStore

MiB = 1 << 20
OLD = 1_600_000_000  # an mtime well in the past: an in-place write surely moves it


def _versions(store: MemoryStore) -> list[str]:
    return [k for k in store.keys() if "/@v/" in k]


def _chunk_keys(store: MemoryStore) -> list[str]:
    return [k for k in store.keys() if k.startswith(layout.CHUNKS_PREFIX)]


# ---- push: the source re-check before the commit ----------------------------------------------

def test_same_size_in_place_rewrite_during_push_is_refused(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """A writer rewriting files in place with bytes of the same size (a trainer reusing its
    checkpoint files) moves neither the size nor the inode: reading never fails, and only the
    final size/mtime/inode check before the commit sees it.  Without that check the version
    would hold a mix of old and new bytes the source never held at once."""
    store = MemoryStore()
    lake = Lake(store, chunk_size=MiB, concurrency=2)
    src = tmp_path / "src"
    src.mkdir()
    rng = random.Random(11)
    for name in ("a.bin", "b.bin"):
        (src / name).write_bytes(rng.randbytes(2 * MiB))
        os.utime(src / name, (OLD, OLD))
    real_put = store.put
    rewritten: list[str] = []
    first = threading.Lock()  # held for good by the first chunk PUT (workers race to it)

    def put(key: str, data: Any, **kw: Any) -> str:
        if key.startswith(layout.CHUNKS_PREFIX) and first.acquire(blocking=False):
            for name in ("a.bin", "b.bin"):  # same size, in place: size and inode unchanged
                fd = os.open(src / name, os.O_WRONLY)
                try:
                    os.pwrite(fd, rng.randbytes(MiB), 0)
                finally:
                    os.close(fd)
                rewritten.append(name)
        return real_put(key, data, **kw)

    monkeypatch.setattr(store, "put", put)
    with pytest.raises(SourceChanged, match="changed while it was being pushed"):
        lake.push(src, "p/a")
    assert rewritten == ["a.bin", "b.bin"]
    assert all((src / n).stat().st_size == 2 * MiB for n in rewritten)
    assert _versions(store) == []


def test_reupload_refuses_a_source_changed_since_the_upload(tmp_path: Path) -> None:
    """A swept chunk is restored from the source only if the source still holds its bytes
    (re-hashed): else the chunk key would hold bytes of another digest, and the committed
    version could never be pulled."""
    from ckptlake.format.header import DEFAULT_HASH
    from ckptlake.core.scan import scan
    from ckptlake.transfer.progress import NullProgress

    store = MemoryStore()
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(random.Random(12).randbytes(2 * MiB))
    files, up = push_mod.upload_tree(store, scan(src), algo=DEFAULT_HASH, chunk_size=MiB,
                                     concurrency=2, progress=NullProgress())
    (entry,) = files
    d = entry.chunks[0].digest
    key = layout.chunk_key(d)
    store.delete([key])  # as a concurrent gc's sweep would
    fd = os.open(src / "w.bin", os.O_WRONLY)
    try:
        os.pwrite(fd, b"0123456789", 100)
    finally:
        os.close(fd)
    with pytest.raises(SourceChanged, match="changed before a swept chunk could be restored"):
        up.reupload({d})
    assert not store.exists(key)  # no wrong bytes under the digest's key


def test_an_oversized_object_at_a_chunk_key_is_written_again(tmp_path: Path) -> None:
    """Content addressing trusts an existing object only if its size can be this chunk's
    (raw, or a smaller frame): an object larger than the raw bytes (damaged, appended to) is
    stored again, else the version would reference bytes no reader accepts."""
    src = tmp_path / "src"
    src.mkdir()
    data = random.Random(13).randbytes(MiB)
    (src / "w.bin").write_bytes(data)
    scratch = MemoryStore()  # learns the chunk's key and object the push stores
    Lake(scratch, chunk_size=MiB).push(src, "p/a")
    (key,) = _chunk_keys(scratch)
    good = scratch.get(key)
    store = MemoryStore()
    store.put(key, good + b"garbage")
    lake = Lake(store, chunk_size=MiB)
    r = lake.push(src, "p/a")
    assert r.chunks_uploaded == 1 and r.chunks_deduplicated == 0
    assert store.get(key) == good
    lake.pull("p/a", tmp_path / "out")
    assert (tmp_path / "out" / "w.bin").read_bytes() == data


def test_outcome_unknown_manifest_write_does_not_take_a_number_below_a_later_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Our manifest write at v2 gives up with an unknown outcome and landed nothing, while an
    old pusher commits v3.  Writing v2 again on the read-back would give the checkpoint
    committed last a lower number than an older one (latest would not be ours): it must take
    v4."""
    art = "run/ckpt"
    store = MemoryStore()
    lake = Lake(store, chunk_size=MiB, concurrency=2)

    def src(name: str) -> Path:
        p = tmp_path / name
        p.mkdir()
        (p / "a.txt").write_bytes(name.encode() * 1000)
        return p

    lake.push(src("s1"), art, step=100)
    real = push_mod.create_once
    cut: list[str] = []

    def lost_write(st: Any, key: str, body: bytes) -> None:
        if "/@v/" in key and not cut:
            cut.append(key)  # nothing lands; an old pusher commits v3 meanwhile
            m = catalog.load_manifest(store, art, 1)
            store.put(layout.version_key(art, 3), replace(m, version=3, step=200).encode(),
                      if_none_match=True)
            raise OutcomeUnknown(f"simulated: the write of {key} timed out")
        return real(st, key, body)

    monkeypatch.setattr(push_mod, "create_once", lost_write)
    result = lake.push(src("s3"), art, step=300)
    assert cut == [layout.version_key(art, 2)]
    assert result.version == 4
    assert not store.exists(layout.version_key(art, 2))
    assert lake.resolve(f"{art}@latest").step == 300


# ---- the Checkpointer's exit deadline ---------------------------------------------------------

def test_upload_cut_off_at_the_exit_deadline_commits_nothing_once_its_bytes_land(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A checkpoint whose chunk PUT is still in flight at the exit deadline is cut off: the
    PUT cannot be killed, so when it lands the job's last check before the commit
    (_CommitGate.entry_fields) must stop it.  Without that check the version appears after
    the deadline, although the log said it was LOST.  The PUT is released from inside the
    drain, after the cut-off is decided (no timing race)."""
    store = MemoryStore()
    lake = Lake(store, chunk_size=MiB, concurrency=2)
    src = tmp_path / "c"
    src.mkdir()
    (src / "f.bin").write_bytes(random.Random(14).randbytes(1000))
    entered, release = threading.Event(), threading.Event()
    real_put = store.put

    def put(key: str, data: Any, **kw: Any) -> str:
        if key.startswith(layout.CHUNKS_PREFIX):
            entered.set()
            assert release.wait(30), "never released"
        return real_put(key, data, **kw)

    monkeypatch.setattr(store, "put", put)
    ck = lake.checkpointer("train/ckpt", exit_timeout=0.2)
    real_report = ck._report_cutoff

    def report(active: Any, dropped: Any) -> None:
        assert active is not None and active.cancelled  # cut off while its PUT is in flight
        release.set()
        real_report(active, dropped)

    monkeypatch.setattr(ck, "_report_cutoff", report)
    caplog.set_level(logging.WARNING)
    try:
        ck.save(src, step=1)
        assert entered.wait(30), "the chunk PUT never started"
        ck._drain_at_exit()
    finally:
        release.set()
    ck.close()  # after the drain: waits for nothing, raises nothing (the loss was logged)
    assert "LOST checkpoint(s) of train/ckpt: step 1" in caplog.text
    assert _chunk_keys(store)  # the bytes did land ...
    assert _versions(store) == []  # ... but nothing was committed


# ---- replicas ---------------------------------------------------------------------------------

def _replica_lake(tmp_path: Path) -> Lake:
    """An in-memory origin with one file:// replica "eu" in the client's region."""
    from ckptlake.core.replicas import ReplicaSet
    from ckptlake.policy.replicas import ReplicaSpec

    spec = ReplicaSpec(name="eu", url=(tmp_path / "eu").as_uri(), region="eu-west-1")
    return Lake(MemoryStore("origin"), chunk_size=MiB,
                replicas=ReplicaSet([spec], client_region="eu-west-1"))


def _replica_src(tmp_path: Path, seed: int) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(random.Random(seed).randbytes(3 * MiB))
    (src / "config.json").write_text(json.dumps({"seed": seed}))
    return src


def test_replicate_never_copies_a_corrupt_origin_chunk(tmp_path: Path) -> None:
    """replicate checks each chunk's bytes against its digest before writing it: junk of the
    right length at the origin would otherwise become the replica's copy, which pulls in the
    region then trust (it is present, of a plausible size)."""
    lake = _replica_lake(tmp_path)
    lake.push(_replica_src(tmp_path, 15), "m/a")
    origin: MemoryStore = lake.store  # type: ignore[assignment]
    key = _chunk_keys(origin)[0]
    origin.corrupt(key, b"x" * len(origin.get(key)))
    with pytest.raises(IntegrityError, match="corrupt at the origin"):
        lake.replicate("m/a", "eu")
    assert not (tmp_path / "eu" / key).exists()


def test_replicate_repairs_an_empty_object_at_a_chunk_key(tmp_path: Path) -> None:
    """An empty object is what a cut upload leaves on some servers: replicate counts it as
    absent and copies the chunk over it (a repair), instead of counting the chunk present."""
    lake = _replica_lake(tmp_path)
    lake.push(_replica_src(tmp_path, 16), "m/a")
    lake.replicate("m/a", "eu")
    origin: MemoryStore = lake.store  # type: ignore[assignment]
    key = _chunk_keys(origin)[0]
    copy = tmp_path / "eu" / key
    assert copy.read_bytes() == origin.get(key)
    copy.write_bytes(b"")
    r = lake.replicate("m/a", "eu")
    assert r.chunks_repaired == 1 and r.chunks_copied == 1
    assert copy.read_bytes() == origin.get(key)


def test_a_partial_pull_through_a_replica_copies_no_manifest_there(tmp_path: Path) -> None:
    """The replica gets a version's manifest (servable offline) only once it holds the whole
    version; a pull of one path brings only that path's chunks through it.  Here the pulled
    file's one chunk is read in three ranged parts, which count as three chunk reads: as many
    as the version has chunk objects, so only the selection check keeps the manifest out of a
    replica that lacks the other file's chunk."""
    from ckptlake.core.replicas import ReplicaSet
    from ckptlake.policy.replicas import ReplicaSpec

    spec = ReplicaSpec(name="eu", url=(tmp_path / "eu").as_uri(), region="eu-west-1")
    lake = Lake(MemoryStore("origin"), chunk_size=16 * MiB, multipart_threshold=5 * MiB,
                part_size=5 * MiB, replicas=ReplicaSet([spec], client_region="eu-west-1"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(random.Random(17).randbytes(15 * MiB))
    (src / "config.json").write_text(json.dumps({"seed": 17}))
    lake.push(src, "m/a")
    assert len(_chunk_keys(lake.store)) == 2  # type: ignore[arg-type]
    r = lake.pull("m/a", tmp_path / "o1", paths=["w.bin"])
    assert r.replica["chunks_pulled_through"] == 1
    assert (tmp_path / "o1" / "w.bin").read_bytes() == (src / "w.bin").read_bytes()
    held = [p for p in (tmp_path / "eu" / "chunks").rglob("*") if p.is_file()]
    assert len(held) == 1  # the replica lacks config.json's chunk
    assert not (tmp_path / "eu" / "artifacts").exists()
    lake.pull("m/a", tmp_path / "o2")  # a whole pull: now the copy is made
    assert (tmp_path / "eu" / "artifacts" / "m" / "a" / "@v" / "0000000001.json").is_file()


# ---- scan: symlinks ---------------------------------------------------------------------------

def test_a_link_into_a_sibling_whose_name_extends_the_roots_is_outside(tmp_path: Path) -> None:
    """src/l -> <tmp>/src2/secret: "src2" starts with "src", but is not below src/.  A prefix
    test without the separator took it for a link inside the tree (and stored it as one to
    "src2/secret", which a pull would recreate inside the destination)."""
    store = MemoryStore()
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    (tmp_path / "src2").mkdir()
    (tmp_path / "src2" / "secret").write_text("not for the lake")
    os.symlink(tmp_path / "src2" / "secret", src / "l")
    with pytest.raises(UsageError, match="points outside the pushed tree"):
        Lake(store).push(src, "p/a")
    assert _versions(store) == []


def test_following_a_dangling_link_says_it_is_broken(tmp_path: Path) -> None:
    """With --follow-symlinks, a link to nothing is a usage error naming it broken (exit 2),
    not a file that "changed while it was being scanned"."""
    from ckptlake.core.scan import scan

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    os.symlink(tmp_path / "nowhere", src / "dangling")
    with pytest.raises(UsageError, match="symlink dangling -> .* is broken"):
        scan(src, follow_symlinks=True)


def test_following_a_link_back_into_a_followed_directory_is_a_loop(tmp_path: Path) -> None:
    """src/out -> <tmp>/out, and <tmp>/out/back -> <tmp>/out: both outside the tree, so both
    are followed, and the walk would descend out/back/back/... for ever (until the kernel's
    path limit); it stops at the first directory it has already entered, naming the loop."""
    from ckptlake.core.scan import scan

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a")
    out = tmp_path / "out"
    out.mkdir()
    (out / "b.txt").write_text("b")
    os.symlink(out, out / "back")
    os.symlink(out, src / "out")
    with pytest.raises(UsageError, match="symlink loop at"):
        scan(src, follow_symlinks=True)


# ---- Checkpointer snapshots -------------------------------------------------------------------

def test_a_snapshot_dir_inside_the_saved_directory_is_refused(tmp_path: Path) -> None:
    """Snapshots inside the saved directory would be saved with it (every checkpoint holding
    the previous ones' snapshots): refused at the first save, nothing committed."""
    store = MemoryStore()
    lake = Lake(store, chunk_size=MiB)
    src = tmp_path / "c"
    src.mkdir()
    (src / "f.bin").write_bytes(b"x" * 100)
    with lake.checkpointer("train/ckpt", snapshot_dir=src / "snaps") as ck:
        with pytest.raises(UsageError, match="lies inside the saved directory"):
            ck.save(src, step=1)
    assert not (src / "snaps").exists()
    assert _versions(store) == []


def test_hard_links_failing_part_way_leave_no_file_shared_with_the_source(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first file was linked, the second link failed (EMLINK: too many links): the
    snapshot falls back to copies, and the linked first file is made a private copy too.
    Else a writer rewriting that file in place after save() returns would change the
    snapshot under the upload (a copy snapshot promises it may)."""
    from ckptlake.checkpointer import _materialize
    from ckptlake.core.scan import scan

    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    for name in ("a.bin", "b.bin", "sub/c.bin"):
        (src / name).write_bytes(name.encode() * 100)
    real_link = os.link
    calls: list[str] = []

    def link(a: Any, b: Any, *args: Any, **kw: Any) -> None:
        calls.append(str(b))
        if len(calls) == 2:
            raise OSError(errno.EMLINK, "Too many links", str(a))
        real_link(a, b, *args, **kw)

    monkeypatch.setattr(os, "link", link)
    dest = tmp_path / "snap"
    assert _materialize(scan(src), str(dest), link=True) is False
    assert len(calls) == 2  # one link made, then the failure
    for name in ("a.bin", "b.bin", "sub/c.bin"):
        assert (dest / name).read_bytes() == (src / name).read_bytes()
        assert (dest / name).stat().st_ino != (src / name).stat().st_ino, name


# ---- sharded commits --------------------------------------------------------------------------

def test_a_claimed_step_missing_a_record_commits_nothing(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The rank that completes a step reads every rank's record back before committing; one
    missing there (listed, then unreadable as a set of `world`) must not give a version
    without that rank's files."""
    from ckptlake.core import shards

    store = MemoryStore()
    lake = Lake(store, chunk_size=MiB)
    dirs = []
    for r in range(2):
        d = tmp_path / f"rank{r}"
        d.mkdir()
        (d / f"part-{r}.bin").write_bytes(random.Random(r).randbytes(5000))
        dirs.append(d)
    assert lake.push_shard(dirs[0], "dist/ckpt", step=1, rank=0, world=2).version is None
    real = shards._load_records

    def without_rank_1(*args: Any, **kw: Any) -> list[Any]:
        return [rec for rec in real(*args, **kw) if rec.rank != 1]

    monkeypatch.setattr(shards, "_load_records", without_rank_1)
    with pytest.raises(IntegrityError, match="1 of 2 shard records present"):
        lake.push_shard(dirs[1], "dist/ckpt", step=1, rank=1, world=2)
    assert _versions(store) == []


# ---- streamed writes (Lake.writer) ------------------------------------------------------------

def _condemn(store: MemoryStore, digests: list[str]) -> None:
    """A gc condemnation record naming these chunks (docs/format.md, "Records gc writes")."""
    store.put(layout.condemned_key("20260101T000000.000000Z", os.urandom(4).hex()),
              json.dumps({"ckptlake_condemned": 1, "created": "2026-01-01T00:00:00Z",
                          "chunks": digests, "sizes": [0] * len(digests),
                          "swept_at": None}).encode())


def _digests(store: MemoryStore, ref: str) -> list[str]:
    return sorted({c.digest for f in catalog.resolve(store, ref).files for c in f.chunks})


class _FakeClock:
    """The commit guard's clocks, advanced by its sleeps: its waits take no real time."""

    def __init__(self) -> None:
        import time

        from ckptlake.core import clock

        self.t, self.w = clock.now(), time.time()
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    def wall(self) -> float:
        return self.w

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.t += s
        self.w += s


def test_an_unreadable_condemnation_record_puts_every_reused_chunk_at_risk(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A record that cannot be read may name any chunk: a streamed write must keep the bytes
    of every chunk it deduplicated against (it has no source to restore them from), and then
    commits after the guard's wait.  Treating only the readable records' chunks as at risk
    left the reused chunks unkept, and the check before the commit then failed the write with
    a false "a concurrent gc condemned ..." although no gc had condemned anything since."""
    from ckptlake.core import gc_guard
    from ckptlake.core.gc_guard import GcSettings

    store = MemoryStore()
    lake = Lake(store, chunk_size=MiB, concurrency=2)
    data = random.Random(18).randbytes(2 * MiB + 3)
    with lake.writer("old", "m.bin") as f:
        f.write(data)
    store.put(layout.GC_SETTINGS_KEY, GcSettings(0, 1, 2).encode(updated="t", updated_by="t"))
    store.put(layout.condemned_key("20260101T000000.000000Z", "bad0"), b"{not json")
    fake = _FakeClock()
    real_guard = gc_guard.guard_commit

    def guard(st: Any, **kw: Any) -> Any:
        return real_guard(st, **kw, clock=fake.now, wall=fake.wall, sleep=fake.sleep)

    monkeypatch.setattr(gc_guard, "guard_commit", guard)
    with lake.writer("new", "m.bin") as f:
        f.write(data)
    assert f.result.version == 1 and f.result.bytes_uploaded == 0  # all deduplicated
    assert fake.slept  # the unreadable record made the guard wait (in fake time)
    with lake.open("new", "m.bin") as fh:
        assert fh.read() == data


def test_kept_chunk_bytes_damaged_on_disk_are_not_restored(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """A streamed write restores a swept chunk from the bytes it kept in a spill file, after
    checking them against the digest: bytes changed on local disk meanwhile must fail the
    write, not be stored under the digest's key (every reader would then refuse them)."""
    from ckptlake.core import gc_guard

    store = MemoryStore()
    lake = Lake(store, chunk_size=MiB, concurrency=2)
    data = random.Random(19).randbytes(3 * MiB + 5)
    with lake.writer("old", "m.bin") as f:
        f.write(data)
    _condemn(store, _digests(store, "old"))  # orphaned and condemned (its version deleted)
    swept: list[str] = []

    def racing(st: Any, *, referenced: set[str], commit: Any, reupload: Any,
               **kw: Any) -> Any:
        result = commit()
        st.delete([layout.chunk_key(d) for d in sorted(referenced)])  # a sweep right after
        swept.extend(sorted(referenced))
        up = reupload.__self__  # the write's uploader: damage its kept bytes on disk
        for at, n in up._kept.values():
            up._spill.seek(at)
            up._spill.write(b"\0" * n)
        up._spill.flush()
        reupload(gc_guard.missing_chunks(st, referenced))
        return result

    monkeypatch.setattr(gc_guard, "guard_commit", racing)
    with pytest.raises(TransferError, match="kept chunk changed on local disk"):
        with lake.writer("new", "m.bin") as f:
            f.write(data)
    assert swept
    assert not any(store.exists(layout.chunk_key(d)) for d in swept)  # no wrong bytes stored


def test_gc_of_a_bound_replica_holding_lake_records_is_refused(tmp_path: Path) -> None:
    """A replica already bound (its marker names this lake) that holds lake records (here an
    alias, which a replica never holds) is, or has become, another lake: its chunks are that
    lake's, which this lake's roots do not name.  gc must look for such records even with a
    marker present, and refuse before condemning or deleting anything there."""
    from ckptlake.core.gc_guard import GcSettings
    from ckptlake.core.replicas import gc_replica
    from ckptlake.store import open_store

    lake = _replica_lake(tmp_path)
    lake.push(_replica_src(tmp_path, 20), "m/a")
    lake.replicate("m/a", "eu")  # binds it: writes its marker
    replica = open_store((tmp_path / "eu").as_uri())
    try:
        replica.put(layout.alias_key("other/run", "prod"), b'{"version": 1}')
        before = sorted(i.key for i in replica.list(""))
        spec = lake.replicas.specs[0]  # type: ignore[union-attr]
        with pytest.raises(UsageError, match="is another lake"):
            gc_replica(lake.store, replica, spec,
                       GcSettings(grace_period=0, sweep_window=5, record_retention=10))
        assert sorted(i.key for i in replica.list("")) == before  # nothing written or deleted
    finally:
        replica.close()
