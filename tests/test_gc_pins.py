"""Pins: a committing push's chunks are a gc root from before its check until after its commit
(core/gc_guard.py; docs/format.md, "The push side").  So the push checks and restores them
*before* the commit: a version is whole from the moment it is listed, and a pusher that dies
right after its commit leaves it whole (before pins it restored swept chunks only after the
commit, and a pusher dying in between left a version with a missing chunk)."""
from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ckptlake.core import gc_guard
from ckptlake.core.catalog import load_manifest
from ckptlake.core.gc import execute, plan_gc
from ckptlake.core.gc_guard import GcSettings, guard_commit, write_pin
from ckptlake.core.push import commit_version
from ckptlake.errors import (AccessDenied, IntegrityError, Interrupted, OutcomeUnknown,
                             TransferError)
from ckptlake.format import layout
from ckptlake.lake import Lake
from ckptlake.policy.retention import RetentionPolicy, Rule
from ckptlake.store.memory import MemoryStore
from test_gc_guard import SETTINGS, Clock, chunk, condemn, manifest, run, setup  # noqa: F401

POLICY = RetentionPolicy(rules=(Rule(match="*", keep_last=1),), grace_period=0,
                         sweep_window=5, record_retention=60)


def pins(store: MemoryStore) -> list[str]:
    return [i.key for i in store.list(layout.PINS_PREFIX)]


def after_the_pin(store: MemoryStore, monkeypatch, action) -> None:  # type: ignore[no-untyped-def]
    """Run action(the real put) right after each pin's PUT lands: what a racing sweep (or
    another writer) does between a push's pin and its checks."""
    real_put = store.put

    def put(key, data, **kw):  # type: ignore[no-untyped-def]
        out = real_put(key, data, **kw)
        if layout.is_pin_key(key):
            action(real_put)
        return out

    monkeypatch.setattr(store, "put", put)


def test_a_chunk_swept_after_the_pin_is_back_before_the_commit(setup, monkeypatch) -> None:
    """A sweep whose listing predates the pin deletes a chunk the push deduplicated, right
    after the pin: the push waits out that sweep's window and restores the chunk, then
    commits a whole version; the pin covered every chunk until the commit, then went."""
    store, blobs, clock = setup
    victim = sorted(blobs)[1]
    condemn(store, [victim])
    # the racing sweep's delete lands right after the pin
    after_the_pin(store, monkeypatch, lambda put: store.delete([layout.chunk_key(victim)]))
    at_commit: dict[str, object] = {}
    m = manifest(sorted(blobs), {d: len(b) for d, b in blobs.items()})

    def commit():
        at_commit["missing"] = [d for d in blobs if not store.exists(layout.chunk_key(d))]
        [key] = pins(store)
        at_commit["pinned"] = gc_guard.decode_pin(key, store.get(key))
        return commit_version(store, m)

    result, restored = run(store, blobs, clock, commit=commit)
    assert at_commit["missing"] == [], "the version was whole when it was committed"
    assert at_commit["pinned"] == set(blobs)
    assert restored[0] == {victim} and result.version == 1
    assert clock.slept[0] == pytest.approx(SETTINGS.sweep_window + 1), "waited since the pin"
    assert pins(store) == []


def test_the_pin_goes_when_the_push_fails_and_an_old_pin_commits_nothing(
        setup, monkeypatch) -> None:
    store, blobs, clock = setup

    def failing():
        raise TransferError("the manifest PUT failed")

    with pytest.raises(TransferError, match="manifest PUT failed"):
        run(store, blobs, clock, commit=failing)
    assert pins(store) == []

    # A push whose wait outlasts the pin's lifetime must not commit: gc may have removed it.
    condemn(store, [sorted(blobs)[0]])
    monkeypatch.setattr(gc_guard, "PIN_MAX_AGE", SETTINGS.sweep_window / 2)
    committed: list[int] = []
    with pytest.raises(TransferError, match="between pinning its chunks and its commit"):
        run(store, blobs, clock, commit=lambda: committed.append(1))
    assert committed == [] and pins(store) == []


def two_versions(tmp_path: Path, store=None):  # type: ignore[no-untyped-def]
    """A lake (memory by default) whose v1 retention deletes (keep_last 1): (store, v1's
    chunks, unreferenced once v1 goes)."""
    store = MemoryStore() if store is None else store
    lake = Lake(store, chunk_size=1 << 20)
    for name, size in (("a", 2 << 20), ("b", 100)):
        src = tmp_path / name
        src.mkdir()
        (src / "w.bin").write_bytes(os.urandom(size))
        lake.push(src, "p/ckpt")
    v1 = load_manifest(store, "p/ckpt", 1).chunk_digests()
    return store, v1


def chunks_left(store: MemoryStore, digests: set[str]) -> set[str]:
    return {d for d in digests if store.exists(layout.chunk_key(d))}


def test_gc_keeps_pinned_chunks_and_removes_expired_pins(tmp_path: Path) -> None:
    store, v1 = two_versions(tmp_path)
    pin = write_pin(store, v1)
    first = execute(store, plan_gc(store, POLICY))
    assert first.versions_deleted == ["p/ckpt@v1"]
    assert first.chunks_condemned == 0 and chunks_left(store, v1) == v1, "pinned: a root"
    assert pins(store) == [pin]

    later = lambda: datetime.now(timezone.utc) + timedelta(days=3)  # noqa: E731
    second = execute(store, plan_gc(store, POLICY, now=later()), now=later)
    assert second.pins_removed == 1 and pins(store) == []
    assert second.chunks_condemned == len(v1) and chunks_left(store, v1) == set()


def test_an_unreadable_pin_stops_the_sweep(tmp_path: Path) -> None:
    store, v1 = two_versions(tmp_path)
    bad = layout.pin_key("20261206T000000.000000Z", "abcdef12")
    store.put(bad, b'{"ckptlake_pin": 1, "chunks": ["not a digest"]}')
    plan = plan_gc(store, POLICY)
    assert plan.versions_deleted == 1 and plan.unreadable_pins == [bad]
    with pytest.raises(IntegrityError, match=f"gc cannot read the pin {bad}"):
        execute(store, plan)
    assert chunks_left(store, v1) == v1
    # nothing deleted at all: before, retention deleted v1 and then the mark stopped (exit 5)
    load_manifest(store, "p/ckpt", 1)
    assert not list(store.list("artifacts/p/ckpt/@tomb/"))
    assert layout.is_lake_key(bad), "a pin is the lake's, not a foreign object"
    store.delete([bad])  # fixed since the plan: the run goes ahead
    assert execute(store, plan).versions_deleted == ["p/ckpt@v1"]


def test_a_chunk_pinned_while_gc_marks_again_is_not_swept(tmp_path: Path) -> None:
    """grace 0: the run condemns v1's chunks, then marks again before sweeping them; a push
    that pinned them in between (it deduplicated against them) keeps them."""
    store, v1 = two_versions(tmp_path)
    events: list[str] = []

    def on_event(name: str) -> None:
        events.append(name)
        if name == "condemn.done":
            write_pin(store, v1)

    r = execute(store, plan_gc(store, POLICY), on_event=on_event)
    assert "condemn.done" in events and r.chunks_condemned == len(v1)
    assert r.chunks_swept == 0 and chunks_left(store, v1) == v1


def test_settings_are_read_after_the_pin(setup, monkeypatch) -> None:
    """A gc that raised sweep_window published it before the listing that missed our pin: the
    push reads the settings after writing the pin, so it waits the raised window."""
    store, blobs, clock = setup
    condemn(store, [sorted(blobs)[0]])
    store.put(layout.GC_SETTINGS_KEY, GcSettings(0, 2, 4).encode(updated="x", updated_by="y"))
    real_put = store.put

    def put(key, data, **kw):  # type: ignore[no-untyped-def]
        out = real_put(key, data, **kw)
        if layout.is_pin_key(key):
            real_put(layout.GC_SETTINGS_KEY,
                     GcSettings(0, 9, 20).encode(updated="x", updated_by="y"))
        return out

    monkeypatch.setattr(store, "put", put)
    run(store, blobs, clock, settings=None)
    assert clock.slept[0] == pytest.approx(10)


# ---- after review ------------------------------------------------------------------------------

class _NoPins(MemoryStore):
    """A role that may write chunks and manifests but not gc/pins/ (set up before pins)."""

    def put(self, key, data, **kw):  # type: ignore[no-untyped-def]
        if layout.is_pin_key(key):
            raise AccessDenied(f"PUT {key}: access denied")
        return super().put(key, data, **kw)


def test_without_the_right_to_pin_a_push_checks_after_its_commit(tmp_path: Path,
                                                                 caplog) -> None:
    """The protocol from before pins, not a failed push after its whole upload."""
    store = _NoPins()
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(os.urandom(1000))
    with caplog.at_level("WARNING", logger="ckptlake"):
        assert Lake(store).push(src, "p/ckpt").version == 1
    assert "allow PUT and DELETE on gc/pins/" in caplog.text


def test_without_the_right_to_pin_a_chunk_swept_after_the_commit_is_restored() -> None:
    """The fallback is the protocol from before pins: the check after the commit."""
    store = _NoPins()
    blobs = {d: store.get(layout.chunk_key(d))
             for d in (chunk(store, os.urandom(100 + i)) for i in range(3))}
    victim = sorted(blobs)[1]
    condemn(store, [victim])
    m = manifest(sorted(blobs), {d: len(b) for d, b in blobs.items()})

    def commit():
        committed = commit_version(store, m)
        store.delete([layout.chunk_key(victim)])  # a gc from before pins sweeps it now
        return committed

    _, restored = run(store, blobs, Clock(), commit=commit)
    assert restored[-1] == {victim} and store.get(layout.chunk_key(victim)) == blobs[victim]


@pytest.mark.parametrize("exc", [OutcomeUnknown("the manifest PUT timed out"),
                                 Interrupted("interrupted"), KeyboardInterrupt()],
                         ids=["unknown", "interrupted", "ctrl-c"])
def test_a_commit_of_unknown_outcome_keeps_its_pin(setup, exc) -> None:
    """The manifest PUT may still land: its chunks stay pinned until gc expires the pin."""
    store, blobs, clock = setup

    def unknown():
        raise exc

    with pytest.raises(type(exc)):
        run(store, blobs, clock, commit=unknown)
    [pin] = pins(store)
    assert gc_guard.decode_pin(pin, store.get(pin)) == set(blobs)


def test_a_pin_put_that_fails_after_landing_is_deleted(setup, monkeypatch) -> None:
    store, blobs, clock = setup
    real_put = store.put

    def put(key, data, **kw):  # type: ignore[no-untyped-def]
        out = real_put(key, data, **kw)
        if layout.is_pin_key(key):
            raise TransferError("PUT: connection reset (retries spent)")
        return out

    monkeypatch.setattr(store, "put", put)
    with pytest.raises(TransferError, match="connection reset"):
        run(store, blobs, clock)
    assert pins(store) == [] and not store.exists(layout.version_key("p/ckpt", 1))


def test_the_pin_age_counts_the_wall_clock_too(setup) -> None:
    """Where the clock skips a suspension (no CLOCK_BOOTTIME), the wall clock still says the
    push slept for days: gc may have expired the pin meanwhile, so nothing is committed."""
    store, blobs, clock = setup
    condemn(store, [sorted(blobs)[0]])
    walls = iter([0.0] + [3 * 86400.0] * 100)  # the pin at 0, then days later
    committed: list[int] = []
    with pytest.raises(TransferError, match="between pinning its chunks and its commit"):
        guard_commit(store, referenced=set(blobs), started=clock.t, started_wall=0.0,
                     settings=SETTINGS, clock=clock, wall=lambda: next(walls),
                     sleep=clock.sleep, reupload=lambda d: None,
                     commit=lambda: committed.append(1))
    assert committed == [] and pins(store) == []


def test_replicate_asks_for_one_wait(monkeypatch, tmp_path: Path) -> None:
    """replicate's guard call skips the check after its commit (the wiring, not only the
    parameter: a replica copy whose manifest is already a root)."""
    from ckptlake.core import replicas

    seen: list[dict] = []
    real = gc_guard.guard_commit

    def spy(*a, **kw):  # type: ignore[no-untyped-def]
        seen.append(kw)
        return real(*a, **kw)

    from ckptlake.policy.replicas import ReplicaSpec

    origin, replica = MemoryStore(), MemoryStore()
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(os.urandom(1000))
    Lake(origin).push(src, "p/ckpt")
    monkeypatch.setattr(gc_guard, "guard_commit", spy)  # replicate imports it when it runs
    spec = ReplicaSpec(name="eu", url="memory://eu", region="eu-west-1")
    replicas.replicate(origin, replica, load_manifest(origin, "p/ckpt", 1), spec=spec,
                       lake_url="memory://lake", concurrency=2)
    assert len(seen) == 1 and seen[0].get("recheck_after_commit") is False


def test_a_replica_copy_waits_once(setup) -> None:
    """Its manifest is a root before the pin: no second wait after a commit that is none."""
    store, blobs, clock = setup
    condemn(store, [sorted(blobs)[0]])
    guard_commit(store, referenced=set(blobs), started=clock.t, settings=SETTINGS, clock=clock,
                 sleep=clock.sleep, reupload=lambda d: None, commit=lambda: None,
                 recheck_after_commit=False)
    assert clock.slept == [pytest.approx(SETTINGS.sweep_window + 1)] and pins(store) == []


def _one_record_of_two_chunks(monkeypatch):  # type: ignore[no-untyped-def]
    """Record R = [X, J] on a memory lake, swept one chunk per batch; (store, blobs, J, policy,
    a clock 2000 s later: beyond record_retention, so a run then removes R once swept)."""
    from ckptlake.core import gc as gcmod

    monkeypatch.setattr(gcmod, "DELETE_BATCH", 1)
    store = MemoryStore()
    blobs = {chunk(store, os.urandom(100)): b"" for _ in range(2)}
    blobs = {d: store.get(layout.chunk_key(d)) for d in blobs}
    x, j = sorted(blobs)
    store.put(layout.condemned_key("20260101T000000.000000Z", "abcd1234"),
              json.dumps({"ckptlake_condemned": 1, "created": "2026-01-01T00:00:00Z",
                          "chunks": [x, j], "sizes": [100, 100], "swept_at": None}).encode())
    policy = RetentionPolicy(rules=(Rule(match="none", keep_last=1),), grace_period=3600,
                             sweep_window=30, record_retention=900)
    later = lambda: datetime.now(timezone.utc) + timedelta(seconds=2000)  # noqa: E731
    return store, blobs, j, policy, later


def _other_gc_sweeps_then_a_push_commits_j(  # type: ignore[no-untyped-def]
        store, blobs, j, policy, later) -> None:
    """Another gc sweeps R whole, a run record_retention later removes it, and a push
    re-uploads J and commits, finding J in no record: it does not wait."""
    from ckptlake.format.manifest import ChunkRef, FileEntry, Manifest

    assert execute(store, plan_gc(store, policy)).chunks_swept >= 1
    assert execute(store, plan_gc(store, policy, now=later()), now=later).records_removed
    store.put(layout.chunk_key(j), blobs[j])
    m = Manifest(artifact="p/ckpt", version=0, kind="dir", hash="sha256",
                 files=(FileEntry(path="f", size=100, chunks=(ChunkRef(j, 100),)),))
    clock = Clock()
    guard_commit(store, referenced={j}, commit=lambda: commit_version(store, m),
                 reupload=lambda ds: None, settings=GcSettings(3600, 30, 900),
                 started=clock.t, clock=clock, sleep=clock.sleep)
    assert clock.slept == [], "J is in no listed record"


def test_a_gc_stops_sweeping_a_record_another_gc_swept(monkeypatch) -> None:
    """Two runs sweep record R = [X, J]; between the slow one's batches the other sweeps R
    whole, R is removed as old, and a push re-uploads J, finds it in no record, and commits
    without waiting: the slow run's next batch must not delete J (invariant 5)."""
    store, blobs, j, policy, later = _one_record_of_two_chunks(monkeypatch)
    fired: list[int] = []

    def between_batches(name: str) -> None:
        if name == "sweep.batch" and not fired:
            fired.append(1)
            _other_gc_sweeps_then_a_push_commits_j(store, blobs, j, policy, later)

    execute(store, plan_gc(store, policy), on_event=between_batches)
    assert fired and store.exists(layout.chunk_key(j)), "the committed version's chunk"


def test_a_gc_rechecks_the_record_right_before_each_delete(monkeypatch) -> None:
    """As above, but the other gc sweeps and removes the record while the slow run re-marks
    before a batch (its listing aged): checked between batches only, the run deleted J.
    (Found by the second review.)"""
    from ckptlake.core import gc as gcmod

    store, blobs, j, policy, later = _one_record_of_two_chunks(monkeypatch)
    gc_clock = [0.0]
    state = {"armed": False, "fired": False}
    real_mark = gcmod._Marker.mark

    def mark(self):  # type: ignore[no-untyped-def]
        real_mark(self)  # the slow run's re-mark before batch 2, then the race
        if state["armed"] and not state["fired"]:
            state["fired"] = True
            _other_gc_sweeps_then_a_push_commits_j(store, blobs, j, policy, later)

    monkeypatch.setattr(gcmod._Marker, "mark", mark)

    def on_event(name: str) -> None:
        if name == "sweep.batch" and not state["armed"]:
            state["armed"] = True
            gc_clock[0] += 1000  # the listing is old now: batch 2 re-marks (slow lookups, say)

    execute(store, plan_gc(store, policy), clock=lambda: gc_clock[0], on_event=on_event)
    assert state["fired"]
    assert store.exists(layout.chunk_key(j)), "the committed version's chunk was deleted"


def test_the_dry_run_counts_pinned_chunks_as_kept(tmp_path: Path) -> None:
    """gc --dry-run said pinned chunks would be freed; the run keeps them (and says so)."""
    from typer.testing import CliRunner

    from ckptlake.cli.app import app
    from ckptlake.store.local import LocalStore

    url = (tmp_path / "lake").as_uri()
    store, v1 = two_versions(tmp_path, LocalStore(tmp_path / "lake"))
    write_pin(store, v1)
    (tmp_path / "ckptlake.yaml").write_text(
        "retention:\n  grace_period: 0s\n  sweep_window: 5s\n  rules:\n"
        "    - match: '*'\n      keep_last: 1\n")
    r = CliRunner().invoke(app, ["gc", "--dry-run", "--json", "--lake", url,
                                 "--config", str(tmp_path / "ckptlake.yaml")])
    assert r.exit_code == 0, r.output
    plan = json.loads(r.stdout)["plan"]
    assert (plan["pins"], plan["pins_expired"], plan["unreadable_pins"]) == (1, 0, [])
    assert plan["freed_by_versions"]["objects"] == 0, "v1's chunks are pinned"
    r = CliRunner().invoke(app, ["gc", "--dry-run", "--lake", url,
                                 "--config", str(tmp_path / "ckptlake.yaml")])
    assert "pins of pushes committing now (their chunks are kept): 1" in r.stdout, r.stdout


def test_an_empty_object_left_where_a_swept_chunk_was_is_restored(setup, monkeypatch) -> None:
    """A sweep deletes a chunk the push deduplicated, and another writer's cut re-upload leaves
    an empty object at its key (SeaweedFS keeps a PUT cut after its head as 0 bytes): the
    guard's check took it for present and committed a version no pull could read."""
    store, blobs, clock = setup
    victim = sorted(blobs)[1]
    condemn(store, [victim])
    # swept, then a cut PUT's empty object, right after the pin
    after_the_pin(store, monkeypatch, lambda put: put(layout.chunk_key(victim), b""))
    m = manifest(sorted(blobs), {d: len(b) for d, b in blobs.items()})
    result, restored = run(store, blobs, clock, commit=lambda: commit_version(store, m))
    assert restored and victim in restored[0]
    assert store.get(layout.chunk_key(victim)) == blobs[victim]
    assert result.version == 1


def test_a_plan_that_frees_nothing_names_no_later_run(tmp_path: Path) -> None:
    """'frees 0 B (0 B by this run, the rest by the first gc run after ...)': there is no rest."""
    import dataclasses

    from ckptlake.cli.gc import summary_lines

    store, _ = two_versions(tmp_path)
    plan = plan_gc(store, RetentionPolicy(rules=(Rule(match="*", keep_last=5),),
                                          grace_period=3600, sweep_window=5,
                                          record_retention=60))
    plan = dataclasses.replace(plan, freed_after=plan.now + timedelta(hours=2))
    [line] = [x for x in summary_lines(plan) if x.startswith("footprint")]
    assert plan.bytes_freed == plan.bytes_freed_now == 0
    assert "frees 0 B (by this run)" in line and "the rest" not in line
