"""guard_commit, the push side of the gc protocol, with deterministic interleavings."""
from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ckptlake.core.gc import execute, plan_gc
from ckptlake.core.gc_guard import GcSettings, guard_commit, read_settings
from ckptlake.core.push import commit_version
from ckptlake.format import layout
from ckptlake.format.manifest import ChunkRef, FileEntry, Manifest
from ckptlake.lake import Lake
from ckptlake.policy.retention import RetentionPolicy, Rule
from ckptlake.store.memory import MemoryStore

SETTINGS = GcSettings(grace_period=0, sweep_window=5, record_retention=60)


class Clock:
    def __init__(self) -> None:
        self.t = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds


def chunk(store: MemoryStore, data: bytes) -> str:
    d = hashlib.sha256(data).hexdigest()
    store.put(layout.chunk_key(d), data)
    return d


def manifest(digests: list[str], sizes: dict[str, int]) -> Manifest:
    files = tuple(FileEntry(path=f"f{i}", size=sizes[d], chunks=(ChunkRef(d, sizes[d]),))
                  for i, d in enumerate(digests))
    return Manifest(artifact="p/ckpt", version=0, kind="dir", hash="sha256", files=files)


def condemn(store: MemoryStore, digests: list[str], *, swept: bool = False) -> None:
    store.put(layout.condemned_key("20260101T000000.000000Z", os.urandom(4).hex()),
              json.dumps({"ckptlake_condemned": 1, "created": "2026-01-01T00:00:00Z",
                          "chunks": digests, "sizes": [0] * len(digests),
                          "swept_at": "2026-01-01T00:01:00Z" if swept else None}).encode())


@pytest.fixture
def setup() -> tuple[MemoryStore, dict[str, bytes], Clock]:
    store = MemoryStore()
    blobs = {}
    for i in range(4):
        data = os.urandom(100 + i)
        blobs[chunk(store, data)] = data
    return store, blobs, Clock()


def run(store: MemoryStore, blobs: dict[str, bytes], clock: Clock, *, commit=None,
        started: float | None = None, settings: GcSettings | None = SETTINGS):
    restored: list[set[str]] = []

    def reupload(digests: set[str]) -> None:
        restored.append(set(digests))
        for d in digests:
            store.put(layout.chunk_key(d), blobs[d])

    m = manifest(sorted(blobs), {d: len(b) for d, b in blobs.items()})
    result = guard_commit(store, referenced=set(blobs), started=clock.t if started is None
                          else started, settings=settings, clock=clock, sleep=clock.sleep,
                          reupload=reupload,
                          commit=commit or (lambda: commit_version(store, m)))
    return result, restored


def test_no_records_means_no_wait_and_no_checks(setup) -> None:
    store, blobs, clock = setup
    result, restored = run(store, blobs, clock)
    assert result.version == 1 and restored == [] and clock.slept == []
    assert store.calls["stat"] == 0, "nothing to check"


def test_chunk_swept_before_the_commit_is_restored_before_committing(setup) -> None:
    store, blobs, clock = setup
    gone = sorted(blobs)[0]
    condemn(store, [gone], swept=True)
    store.delete([layout.chunk_key(gone)])  # a sweep deleted what the push deduplicated
    order: list[str] = []

    def commit():
        order.append("commit" if store.exists(layout.chunk_key(gone)) else "commit-missing")
        return commit_version(store, manifest(sorted(blobs), {d: len(b) for d, b in
                                                              blobs.items()}))

    _, restored = run(store, blobs, clock, commit=commit)
    assert order == ["commit"], "restored before the manifest was written"
    assert restored[0] == {gone}


def test_chunk_swept_right_after_the_commit_is_restored_after_the_wait(setup) -> None:
    """The sweep listed the manifests just before our commit, so it deletes after it: the guard
    must wait out the sweep window and then find the chunk missing."""
    store, blobs, clock = setup
    victim = sorted(blobs)[1]
    condemn(store, [victim])
    m = manifest(sorted(blobs), {d: len(b) for d, b in blobs.items()})

    def commit():
        committed = commit_version(store, m)
        store.delete([layout.chunk_key(victim)])  # the racing sweep's delete lands now
        return committed

    result, restored = run(store, blobs, clock, commit=commit)
    assert clock.slept and clock.slept[-1] == pytest.approx(SETTINGS.sweep_window + 1)
    assert restored[-1] == {victim}
    assert store.get(layout.chunk_key(victim)) == blobs[victim]
    assert result.version == 1


def test_only_condemned_chunks_are_checked(setup) -> None:
    store, blobs, clock = setup
    condemn(store, [sorted(blobs)[2]], swept=True)
    store.calls.clear()
    run(store, blobs, clock)
    assert store.calls["stat"] == 2, "the one at-risk chunk, before and after the commit"


def test_a_push_older_than_record_retention_checks_every_chunk(setup) -> None:
    store, blobs, clock = setup
    gone = sorted(blobs)[3]
    store.delete([layout.chunk_key(gone)])  # swept long ago; its record is already removed
    _, restored = run(store, blobs, clock, started=clock.t - SETTINGS.record_retention)
    assert restored == [{gone}]
    assert clock.slept == [], "no record names it: no wait"


def test_unreadable_record_puts_every_chunk_at_risk(setup) -> None:
    store, blobs, clock = setup
    store.put(layout.condemned_key("20260101T000000.000000Z", "deadbeef"), b"garbage")
    store.calls.clear()
    run(store, blobs, clock)
    assert store.calls["stat"] == 2 * len(blobs) and clock.slept


def test_settings_come_from_the_lake(setup) -> None:
    store, blobs, clock = setup
    assert read_settings(store) == GcSettings()
    store.put(layout.GC_SETTINGS_KEY, GcSettings(0, 2, 4).encode(updated="x", updated_by="y"))
    assert read_settings(store) == GcSettings(0, 2, 4)
    condemn(store, [sorted(blobs)[0]])
    run(store, blobs, clock, settings=None)
    # sweep_window 2 s + 1: before the commit (since the pin), and again after it (for a gc
    # from before pins)
    assert clock.slept == [pytest.approx(3), pytest.approx(3)]


def test_guarded_push_survives_a_gc_that_sweeps_its_deduplicated_chunks(tmp_path: Path) -> None:
    """End to end on one store: v1 deleted by retention, its chunks condemned; a push of the
    same bytes deduplicates against them; gc sweeps them in the middle of that push (between
    its dedup check and its commit).  With the guard the version is whole afterwards."""
    store = MemoryStore()
    lake = Lake(store, chunk_size=1 << 20)
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(os.urandom(3 << 20))
    lake.push(src, "p/ckpt")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "w.bin").write_bytes(os.urandom(100))
    lake.push(tmp_path / "other", "p/ckpt")
    policy = RetentionPolicy(rules=(Rule(match="*", keep_last=1),), grace_period=3600,
                             sweep_window=5, record_retention=60)
    execute(store, plan_gc(store, policy))  # v1 deleted; its chunks too young to condemn
    t2 = lambda: datetime.now(timezone.utc) + timedelta(hours=2)  # noqa: E731
    execute(store, plan_gc(store, policy, now=t2()), now=t2)  # condemned
    t4 = lambda: datetime.now(timezone.utc) + timedelta(hours=4)  # noqa: E731

    from ckptlake.core import push as pushmod
    from ckptlake.core.scan import scan
    from ckptlake.transfer.progress import NullProgress

    from ckptlake.core.lakeheader import read_header

    algo = read_header(store).hash  # the lake's, as core.push uses
    tree = scan(src)
    files, up = pushmod.upload_tree(store, tree, algo=algo, chunk_size=1 << 20,
                                    concurrency=2, progress=NullProgress())
    assert up.deduplicated.value == 3 << 20, "the push deduplicated against condemned chunks"
    swept = execute(store, plan_gc(store, policy, now=t4()), now=t4)  # gc runs mid-push
    assert swept.chunks_swept == 3
    draft = Manifest(artifact="p/ckpt", version=0, kind="dir", hash=algo, files=files)
    clock = Clock()
    m = guard_commit(store, referenced=draft.chunk_digests(),
                     commit=lambda: commit_version(store, draft), reupload=up.reupload,
                     started=clock.t, clock=clock, sleep=clock.sleep)
    out = tmp_path / "out"
    lake.pull(f"p/ckpt@v{m.version}", out)
    assert (out / "w.bin").read_bytes() == (src / "w.bin").read_bytes()


def test_the_wait_after_the_commit_is_said_and_names_an_unreadable_record(setup) -> None:
    """An unreadable record makes every push wait sweep_window (up to an hour) after its
    commit: a push said nothing, looked hung, and the record was never named."""
    store, blobs, clock = setup
    condemn(store, [sorted(blobs)[0]])
    told: list[str] = []
    m = manifest(sorted(blobs), {d: len(b) for d, b in blobs.items()})
    guard_commit(store, referenced=set(blobs), started=clock.t, settings=SETTINGS, clock=clock,
                 sleep=clock.sleep, reupload=lambda d: None, on_wait=told.append,
                 commit=lambda: commit_version(store, m))
    assert len(told) == 2 and "waiting 6 s to check 1 chunk" in told[0]
    assert "waiting 6 s more to check the 1 chunk again after the commit" in told[1]
    bad = layout.condemned_key("20260102T000000.000000Z", "abcd1234")
    store.put(bad, b'{"ckptlake_condemned": 1, "created": "gar')
    told.clear()
    m2 = manifest(sorted(blobs), {d: len(b) for d, b in blobs.items()})
    guard_commit(store, referenced=set(blobs), started=clock.t, settings=SETTINGS, clock=clock,
                 sleep=clock.sleep, reupload=lambda d: None, on_wait=told.append,
                 commit=lambda: commit_version(store, m2))
    assert len(told) == 2 and bad in told[0] and "unreadable" in told[0]
    assert f"{len(blobs)} chunks" in told[0]


def test_cli_push_says_it_waits_for_an_unreadable_record(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ckptlake.cli.app import app
    from ckptlake.store.local import LocalStore

    url = (tmp_path / "lake").as_uri()
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(b"w" * 1000)
    runner = CliRunner()
    assert runner.invoke(app, ["--lake", url, "push", str(src), "a/b"]).exit_code == 0
    store = LocalStore(tmp_path / "lake")
    store.put(layout.GC_SETTINGS_KEY, GcSettings(0, 1, 2).encode(updated="x", updated_by="y"))
    bad = layout.condemned_key("20260102T000000.000000Z", "abcd1234")
    store.put(bad, b'{"ckptlake_condemned": 1, "created": "gar')
    r = runner.invoke(app, ["--lake", url, "push", str(src), "a/b"])
    assert r.exit_code == 0, r.output
    assert "waiting" in r.stderr and bad in r.stderr, r.stderr


def test_settings_with_a_number_too_large_for_a_float_are_malformed() -> None:
    """float() of a 400-digit integer raises OverflowError, which escaped as an internal
    error from every push and gc that read gc/settings.json."""
    import json as _json

    from ckptlake.core.gc_guard import GcSettings
    from ckptlake.errors import IntegrityError

    doc = {"ckptlake_gc_settings": 1, "grace_period": int("9" * 400), "sweep_window": 3600,
           "record_retention": 86400}
    with pytest.raises(IntegrityError, match="is malformed"):
        GcSettings.decode(_json.dumps(doc).encode())
