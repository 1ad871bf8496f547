"""gc's safety checks, each pinned by a race that loses data without it.

A mutation review found checks in core/gc.py and core/gc_guard.py whose removal (or
reordering) no other test noticed.  Each test here stages, deterministically (event hooks, fake
clocks, no real waiting), the interleaving the check exists for, and asserts what a user sees:
the version pulls, the chunks survive, the record is kept (docs/format.md, "Deleting (gc)" and
"The push side").
"""
from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

import pytest

from ckptlake.core import clock as clockmod
from ckptlake.core import gc as gcmod
from ckptlake.core import gc_guard, shards
from ckptlake.core.catalog import load_manifest
from ckptlake.core.gc import execute, plan_gc
from ckptlake.core.gc_guard import GcSettings, guard_commit, write_pin
from ckptlake.core.identity import iso, utcnow
from ckptlake.core.push import commit_version
from ckptlake.errors import TransferError
from ckptlake.format import layout
from ckptlake.lake import Lake
from ckptlake.policy.retention import RetentionPolicy, Rule
from ckptlake.store.memory import MemoryStore
from test_gc_guard import Clock, chunk

MiB = 1 << 20
ART = "p/ckpt"


def policy(*, grace: float, keep_all: bool = False, window: float = 30,
           records: float = 900) -> RetentionPolicy:
    rule = Rule(match="none/*" if keep_all else "*", keep_last=1)
    return RetentionPolicy(rules=(rule,), grace_period=grace, sweep_window=window,
                           record_retention=records)


def later(hours: float) -> Callable[[], datetime]:
    return lambda: datetime.now(timezone.utc) + timedelta(hours=hours)


def source(tmp_path: Path, name: str, size: int) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "w.bin").write_bytes(os.urandom(size))
    return d


def pulled(lake: Lake, ref: str, dest: Path) -> bytes:
    lake.pull(ref, dest)
    return (dest / "w.bin").read_bytes()


def present(store: MemoryStore, digests: set[str]) -> set[str]:
    return {d for d in digests if store.exists(layout.chunk_key(d))}


def write_record(store: MemoryStore, digests: list[str], *, created: datetime,
                 sizes: list[int] | None = None, token: str | None = None) -> str:
    """A condemnation record as a gc writes it (gc's _write_record)."""
    compact = created.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    key = layout.condemned_key(compact, token or os.urandom(8).hex())
    store.put(key, json.dumps({
        "ckptlake_condemned": 1, "created": iso(created), "created_by": "gc-b@test",
        "grace_period": 0, "chunks": digests,
        "sizes": [0] * len(digests) if sizes is None else sizes, "swept_at": None}).encode())
    return key


def hook_listing(monkeypatch: pytest.MonkeyPatch,
                 after: Callable[[], None]) -> Callable[[], None]:
    """Run `after` once, right after the next _Listing.of returns (once armed): what a pusher
    does between gc's listing of the manifests and the rest of that mark."""
    state = {"armed": False, "fired": False}
    real_of = gcmod._Listing.of

    def of(store):  # type: ignore[no-untyped-def]
        out = real_of(store)
        if state["armed"] and not state["fired"]:
            state["fired"] = True
            after()
        return out

    monkeypatch.setattr(gcmod._Listing, "of", staticmethod(of))

    def arm() -> None:
        state["armed"] = True

    arm.fired = lambda: state["fired"]  # type: ignore[attr-defined]
    return arm


def no_real_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """A push that reuses condemned chunks waits sweep_window + 1 s after its pin: here the
    wait advances core.clock instead of sleeping (the guard reads that clock per call)."""
    offset = [0.0]
    real_now = clockmod.now
    monkeypatch.setattr(clockmod, "now", lambda: real_now() + offset[0])
    real_guard = gc_guard.guard_commit

    def guard(store, **kw):  # type: ignore[no-untyped-def]
        return real_guard(store, **kw,
                          sleep=lambda s: offset.__setitem__(0, offset[0] + s))

    monkeypatch.setattr(gc_guard, "guard_commit", guard)
    monkeypatch.setattr(shards, "guard_commit", guard)


# ---- 1. the mark lists the pins before the manifests --------------------------------------------

def test_a_push_that_unpins_after_the_manifest_listing_keeps_its_chunks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A push deletes its pin only after its commit, so a listing that lists the pins first
    sees either the pin or the manifest ("The push side", step 0 and the argument under it).
    Here the push pins v1's chunks while gc (grace 0) re-marks before sweeping them, and
    commits and unpins right after that re-mark listed the manifests: a mark listing the
    manifests first sees neither, and sweeps chunks the new version references."""
    store = MemoryStore()
    lake = Lake(store, chunk_size=MiB)
    first = source(tmp_path, "a", 2 * MiB + 100)
    lake.push(first, ART)
    lake.push(source(tmp_path, "b", 1000), ART)
    v1 = load_manifest(store, ART, 1)
    pin: list[str] = []

    def commit_and_unpin() -> None:
        commit_version(store, replace(v1, version=0))  # v3: v1's chunks again
        store.delete(pin)

    arm = hook_listing(monkeypatch, commit_and_unpin)

    def on_event(name: str) -> None:
        if name == "condemn.done":  # v1's chunks condemned; the re-mark comes next
            pin.append(write_pin(store, v1.chunk_digests()))
            arm()

    r = execute(store, plan_gc(store, policy(grace=0)), on_event=on_event)
    assert arm.fired()  # type: ignore[attr-defined]
    assert r.versions_deleted == [f"{ART}@v1"] and r.chunks_condemned == len(v1.chunk_digests())
    assert pulled(lake, f"{ART}@v3", tmp_path / "out") == (first / "w.bin").read_bytes()
    assert present(store, v1.chunk_digests()) == v1.chunk_digests()
    assert r.chunks_swept == 0


# ---- 2. records are read before the mark ---------------------------------------------------------

def unwrite(store: Any, artifact: str, n: int) -> None:
    """Version n as if never written: its manifest and its listing summaries (written after
    it) gone.  A manifest deleted alone is a lost version, and gc refuses to run."""
    summaries = [i.key for i in store.list(f"{layout.ARTIFACTS_PREFIX}{artifact}/@s/")
                 if (p := layout.parse_summary_key(i.key)) and p[1] == n]
    store.delete([layout.version_key(artifact, n), *summaries])


def test_a_record_written_after_the_mark_listing_is_not_swept_with_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Invariant 4: a chunk is deleted only if its record was written before the mark listing
    started.  Here, right after gc A's listing, a push commits v3 reusing v1's chunks (no
    record named them yet: it does not wait), and gc B, whose own listing predates v3,
    condemns them.  A, reading the records only after its listing, would sweep B's ripe
    record (grace 0) with a listing that misses v3."""
    store = MemoryStore()
    lake = Lake(store, chunk_size=MiB)
    first = source(tmp_path, "a", 2 * MiB + 100)
    lake.push(first, ART)
    lake.push(source(tmp_path, "b", 1000), ART)
    v1 = load_manifest(store, ART, 1)
    unwrite(store, ART, 1)  # v1's chunks are referenced by nothing
    fired: list[str] = []

    def on_event(name: str) -> None:
        if name == "mark.done" and not fired:
            fired.append(name)
            assert commit_version(store, replace(v1, version=0)).version == 3
            write_record(store, sorted(v1.chunk_digests()),  # gc B's
                         created=utcnow() - timedelta(seconds=1))

    r = execute(store, plan_gc(store, policy(grace=0, keep_all=True)), on_event=on_event)
    assert fired
    assert pulled(lake, f"{ART}@v3", tmp_path / "out") == (first / "w.bin").read_bytes()
    assert present(store, v1.chunk_digests()) == v1.chunk_digests()
    assert r.chunks_swept == 0 and r.chunks_rescued == len(v1.chunk_digests())


# ---- 3, 4. shard records stay roots until their version is listed -------------------------------

def condemned_shard_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                           ) -> tuple[MemoryStore, Lake, Path, set[str], RetentionPolicy]:
    """X pushed as v1, whose manifest is then deleted by hand, and a gc 2 h later (grace 1 h)
    condemns X's 3 chunks: (store, lake, X, its chunks, the policy)."""
    no_real_waits(monkeypatch)
    store = MemoryStore()
    lake = Lake(store, chunk_size=MiB)
    x = source(tmp_path, "x", 2 * MiB + 100)
    lake.push(x, ART)
    digests = load_manifest(store, ART, 1).chunk_digests()
    assert len(digests) == 3
    unwrite(store, ART, 1)
    pol = policy(grace=3600, keep_all=True)
    r = execute(store, plan_gc(store, pol, now=later(2)()), now=later(2))
    assert r.chunks_condemned == 3
    return store, lake, x, digests, pol


def test_a_committed_claim_whose_manifest_the_listing_missed_keeps_its_records_as_roots(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A step's shard records stop being roots only once the *same* listing showed its
    version's manifest (or tombstone): the manifest is then the root.  A committed claim read
    after the listing proves that N exists now, not that the listing saw it.  Here the
    listing predates the manifest's write; dropping the records then would let a ripe record
    sweep the chunks of a version being committed (invariant 4: no root listed references
    them)."""
    store, lake, x, digests, pol = condemned_shard_source(tmp_path, monkeypatch)
    res = lake.push_shard(x, ART, step=7, rank=0, world=1)  # deduplicates against X's chunks
    assert res.version == 1
    claim = shards.decode_claim(store.get(layout.shard_claim_key(ART, 7)),
                                key=layout.shard_claim_key(ART, 7))
    assert (claim.state, claim.version) == ("committed", 1)
    vkey = layout.version_key(ART, 1)
    manifest = store.get(vkey)
    unwrite(store, ART, 1)  # not written yet when gc lists the manifests
    plan = plan_gc(store, pol, now=later(4)())
    arm = hook_listing(monkeypatch, lambda: store.put(vkey, manifest))
    arm()
    r = execute(store, plan, now=later(4))
    assert arm.fired()  # type: ignore[attr-defined]
    assert pulled(lake, f"{ART}@v1", tmp_path / "out") == (x / "w.bin").read_bytes()
    assert present(store, digests) == digests
    assert r.chunks_swept == 0 and r.chunks_rescued == 3


def test_a_committing_claim_whose_number_holds_another_version_keeps_its_records_as_roots(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A committing claim ends a step only if N's manifest (or tombstone) carries the claim's
    commit_id ("Sharded commits"): N taken by another version means the step's manifest is not
    written, so its rank records are the only roots of its chunks.  Without that check the
    pending step's chunks, condemned earlier, were swept."""
    store, lake, x, digests, pol = condemned_shard_source(tmp_path, monkeypatch)
    assert lake.push(source(tmp_path, "other", 1000), ART).version == 1  # the foreign v1
    res = lake.push_shard(x, ART, step=7, rank=0, world=2)  # deduplicates; rank 1 is missing
    assert res.version is None
    key = layout.shard_claim_key(ART, 7)
    store.put(key, shards.Claim(artifact=ART, step=7, world=2, commit_id="c0ffee",
                                state="committing", owner="ghost@nowhere:1:x",
                                updated=utcnow(), version=1).encode())
    r = execute(store, plan_gc(store, pol, now=later(4)()), now=later(4))
    checked = lake.verify()
    assert checked.problems == [] and checked.unrestorable == [], checked.problems
    assert lake.pending()  # still a pending step, whose record names the chunks
    assert present(store, digests) == digests
    assert r.chunks_swept == 0 and r.chunks_rescued == 3


# ---- 5. a swept record stays listed for record_retention ----------------------------------------

def test_a_swept_record_stays_listed_for_record_retention(tmp_path: Path) -> None:
    """Invariant 5: a pusher that reuses a swept chunk finds it at risk only through the
    record, so the record must outlive its sweep by record_retention (pushes that ran longer
    check every chunk instead).  A run right after the sweep keeps it; one past
    record_retention removes it."""
    store = MemoryStore()
    lake = Lake(store, chunk_size=MiB)
    lake.push(source(tmp_path, "a", 1000), ART)
    lake.push(source(tmp_path, "b", 1000), ART)
    pol = policy(grace=0, records=900)
    first = execute(store, plan_gc(store, pol))
    assert first.records_swept == 1 and first.chunks_swept >= 1
    [record] = gc_guard.record_keys(store)
    again = execute(store, plan_gc(store, pol))
    assert gc_guard.record_keys(store) == [record], "removed right after its sweep"
    assert again.records_removed == 0
    past = lambda: datetime.now(timezone.utc) + timedelta(seconds=1000)  # noqa: E731
    last = execute(store, plan_gc(store, pol, now=past()), now=past)
    assert last.records_removed == 1 and gc_guard.record_keys(store) == []


# ---- 6. the slowest delete counts against the sweep window --------------------------------------

def test_no_delete_finishes_beyond_sweep_window_after_its_listing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A push that reuses a condemned chunk waits sweep_window + 1 s from its pin, then checks
    it: a sweep whose listing predates the pin must have finished deleting by then.  So a
    delete must finish within sweep_window of its listing, and gc budgets for the slowest
    delete batch seen: here each delete takes 6 s of a 10 s window, and a second one started
    6 s after the listing would finish 12 s after it."""
    monkeypatch.setattr(gcmod, "DELETE_BATCH", 1)
    store = MemoryStore()
    digests = sorted(chunk(store, os.urandom(100 + i)) for i in range(3))
    write_record(store, digests, created=utcnow() - timedelta(hours=2), sizes=[100] * 3)
    gc_clock = [1000.0]
    listings: list[float] = []
    deletes: list[float] = []  # when each chunk delete finished, on gc's clock
    real_mark, real_delete = gcmod._Marker.mark, store.delete

    def mark(self):  # type: ignore[no-untyped-def]
        real_mark(self)
        listings.append(self.started)

    def delete(keys):  # type: ignore[no-untyped-def]
        keys = list(keys)
        real_delete(keys)
        if any(layout.parse_chunk_key(k) for k in keys):
            gc_clock[0] += 6.0  # a slow DeleteObjects
            deletes.append(gc_clock[0] - listings[-1])

    monkeypatch.setattr(gcmod._Marker, "mark", mark)
    monkeypatch.setattr(store, "delete", delete)
    pol = policy(grace=3600, keep_all=True, window=10, records=60)
    warnings: list[str] = []
    try:
        warnings = execute(store, plan_gc(store, pol), clock=lambda: gc_clock[0]).warnings
    except TransferError as exc:  # it may stop instead: what is deleted is what counts
        assert "sweep_window" in str(exc)
    assert deletes, "the sweep deleted something"
    assert max(deletes) <= 10.0, f"deletes finished {deletes} s after their listing"
    assert not [w for w in warnings if "beyond sweep_window" in w], warnings


# ---- 7. a record whose sizes do not match its chunks is malformed -------------------------------

def test_a_record_with_more_sizes_than_chunks_is_neither_swept_nor_trusted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A record gc cannot fully read is not swept (invariant 1: gc deletes only what its own
    well-formed records name), and a pusher treats it as unreadable: every chunk it references
    is at risk, so it waits and checks them all ("The push side", step 1)."""
    store = MemoryStore()
    d = chunk(store, os.urandom(100))
    other = chunk(store, os.urandom(101))
    key = write_record(store, [d], created=utcnow() - timedelta(hours=2), sizes=[10, 20])
    r = execute(store, plan_gc(store, policy(grace=3600, keep_all=True)))
    assert store.exists(layout.chunk_key(d)) and r.chunks_swept == 0
    assert f"{key} is malformed: not swept, not removed" in r.warnings
    # A push of `other` (named in no record) waits, as for an unreadable record.
    clock = Clock()
    guard_commit(store, referenced={other}, commit=lambda: None, reupload=lambda ds: None,
                 settings=GcSettings(3600, 30, 900), started=clock.t, clock=clock,
                 sleep=clock.sleep, recheck_after_commit=False)
    assert clock.slept == [pytest.approx(31)]


# ---- 8. a record another gc swept meanwhile is not swept again ----------------------------------

def test_a_record_another_gc_swept_meanwhile_is_not_swept_again() -> None:
    """Invariant 5: once another gc has swept a record, no sweep deletes for it again.  Here
    another run sweeps record R between this run's reading of the records and its sweep; R as
    re-read carries swept_at, and sweeping it anyway would delete for R after the sweep that
    started R's record_retention (and rewrite swept_at, and report the other run's work)."""
    store = MemoryStore()
    digests = sorted(chunk(store, os.urandom(100 + i)) for i in range(2))
    key = write_record(store, digests, created=utcnow() - timedelta(hours=2), sizes=[100, 101])
    pol = policy(grace=3600, keep_all=True)
    other: list = []

    def on_event(name: str) -> None:
        if name == "mark.done" and not other:
            other.append(execute(store, plan_gc(store, pol)))
            other.append(json.loads(store.get(key))["swept_at"])

    r = execute(store, plan_gc(store, pol), on_event=on_event)
    assert other and other[0].records_swept == 1 and other[0].chunks_swept == 2
    swept_at = other[1]
    assert swept_at is not None
    assert r.records_swept == 0 and r.chunks_swept == 0
    assert json.loads(store.get(key))["swept_at"] == swept_at
