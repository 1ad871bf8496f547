"""Checks of `ckptlake verify` (core/verify.py) and `ckptlake du` (core/du.py) that a mutation
review found no test exercising: each test below fails if its check is taken out.

Where the outcome depends on which of two concurrent reads verify meets first, the order is
forced, not left to thread timing: a store holds the GET of one manifest until verify has
taken in the other one (HoldGet + ReleaseOnFirst), and each order is tested."""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from ckptlake.core.du import disk_usage
from ckptlake.core.lakeheader import ensure_header
from ckptlake.errors import TransferError
from ckptlake.format import layout
from ckptlake.lake import Lake
from ckptlake.store.memory import MemoryStore
from test_du import SlowListing, built, chunk, manifest, rows
from test_rev1_fixes import delete_like_gc
from test_verify import ART, MiB, synthetic, tree


# ---- forcing the order verify reads manifests in ---------------------------------------------

class HoldGet:
    """The store, its first GET of `hold` kept waiting until `release` is set."""

    def __init__(self, inner: Any, hold: str) -> None:
        self.inner, self.url, self.hold = inner, inner.url, hold
        self.release = threading.Event()
        self.held: bool | None = None  # True once the held GET was released (not timed out)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def get(self, key: str, *args: Any, **kw: Any) -> Any:
        if key == self.hold and self.held is None:
            self.held = self.release.wait(10)
        return self.inner.get(key, *args, **kw)


class ReleaseOnFirst:
    """A progress sink that sets `event` when verify has taken in its first manifest (its
    progress advances on the thread that records the manifest's chunks, before it waits for
    the next one): the held manifest is then taken in second."""

    def __init__(self, event: threading.Event) -> None:
        self.event, self.phase = event, ""

    def start(self, *, phase: str, total_bytes: int, total_files: int) -> None:
        self.phase = phase

    def advance(self, nbytes: int) -> None:
        if self.phase == "verify manifests":
            self.event.set()

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None


def verify_in_order(store: Any, hold: str, ref: str | None = None) -> Any:
    """Lake(store).verify(ref) with the manifest at `hold` taken in last."""
    held = HoldGet(store, hold)
    res = Lake(held).verify(ref, progress=ReleaseOnFirst(held.release))  # type: ignore[arg-type]
    assert held.held, "the held manifest was not read after the other one"
    return res


# ---- 1. scoped verify past its listing budget: the HEAD's size is checked ---------------------

def test_scoped_verify_checks_the_size_a_head_returns() -> None:
    """A one-version verify in a lake too big to list checks the chunks past the listing with
    a HEAD each; a chunk one byte short there must be reported, or `verify ART@v1` says a
    version is restorable that no pull can restore."""
    store = MemoryStore()
    mine = synthetic(store, ART, 3, lead="ff")  # listed last: past the budget
    synthetic(store, "big/other", 1100)
    key = max(mine)
    store.put(key, store.get(key)[:-1])
    r = Lake(store).verify(f"{ART}@v1")
    assert not r.ok
    assert [(u["artifact"], u["version"], u["missing_chunks"], u["corrupt_chunks"])
            for u in r.unrestorable] == [(ART, 1, 0, 1)]
    assert r.chunks_corrupt == 1 and r.chunks_missing == 0


# ---- 2. a pack read beyond the end of a chunk another version takes whole ---------------------

def slice_and_pack() -> MemoryStore:
    """A 100-byte chunk: a/s@v1 takes it whole (a slice), a/p@v1 reads [0, 110) of it as a
    pack -- no object size satisfies both: a/p's manifest lies."""
    store = MemoryStore()
    ensure_header(store, hash="sha256")
    d = chunk(store, 100, "x")
    manifest(store, "a/s", 1, [(d, 100, None)])
    manifest(store, "a/p", 1, [(d, 110, 0)])
    return store


@pytest.mark.parametrize("first", ["pack", "slice"])
def test_a_pack_end_beyond_a_slice_is_a_conflict_in_either_order(first: str) -> None:
    """Whichever manifest verify reads first, the two requirements conflict and the chunk is
    judged per reference: a/p (whose pull fails) is unrestorable, a/s is fine.  With the pack
    read first, the check was once missing a case: the slice's exact size replaced the pack's
    larger end and a/p passed."""
    store = slice_and_pack()
    later = "a/s" if first == "pack" else "a/p"
    r = verify_in_order(store, layout.version_key(later, 1))
    assert [(u["artifact"], u["version"]) for u in r.unrestorable] == [("a/p", 1)]


# ---- 4. a short chunk gone between its HEAD and the frame probe's GET ------------------------

class GoneOnGet(MemoryStore):
    """gc sweeps `victim` just as it is read: its GET finds it gone."""

    victim: str | None = None

    def get(self, key: str) -> bytes:
        if key == self.victim:
            self.victim = None
            self.delete([key])
        return super().get(key)


def test_a_short_chunk_swept_before_its_probe_is_missing_not_fine() -> None:
    """A chunk shorter than its raw size is read to see whether it is a frame; found gone then
    (gc swept it), it is missing: counted as fine, the version it leaves unrestorable passed."""
    store = GoneOnGet()
    keys = synthetic(store, ART, 3)
    store.put(keys[1], store.get(keys[1])[:50])
    store.victim = keys[1]
    r = Lake(store).verify()
    assert store.victim is None  # the probe read it
    assert not r.ok
    assert (r.chunks_missing, r.chunks_corrupt) == (1, 0)
    assert [(u["version"], u["missing_chunks"], u["corrupt_chunks"]) for u in r.unrestorable] \
        == [(1, 1, 0)]


# ---- 5-8, 11, 12. du -----------------------------------------------------------------------------

def test_du_a_chunk_in_three_versions_of_one_artifact_counts_once() -> None:
    """v1, v2 and v3 of one artifact share one chunk: 100 bytes stored, exclusive to the
    artifact, shared with no other.  The third reference once counted it again (stored 200,
    and the chunk called shared between artifacts)."""
    store = MemoryStore()
    ensure_header(store, hash="sha256")
    d = chunk(store, 100, "one")
    for n in (1, 2, 3):
        manifest(store, "a/ckpt", n, [(d, 100, None)])
    r = disk_usage(store, versions=True)
    got = rows(r)
    assert got["a/ckpt"] == (300, 100, 100, 0)
    assert all(got[f"a/ckpt@v{n}"] == (100, 100, 0, 100) for n in (1, 2, 3))
    assert (r.lake_totals.exclusive_bytes, r.lake_totals.shared_bytes) == (100, 0)


def test_du_reads_kept_until_after_a_slow_listing_are_applied() -> None:
    """With a listing slower than the manifest reads (a big bucket), every read is kept until
    the listing ends, then applied: the rows are those of a fast store, not empty."""
    fast, inner = MemoryStore(), MemoryStore()
    built(fast)
    built(inner)
    slow = SlowListing(inner, manifests=3)
    got = disk_usage(slow, versions=True)  # type: ignore[arg-type]
    assert slow.waited
    assert got.to_dict() == disk_usage(fast, versions=True).to_dict()
    assert rows(got)["a/ckpt"][1] == 1000 + 200 + 30 + 4000


class FailingListing(MemoryStore):
    """The listing breaks at the first chunk key (a network error past the retries)."""

    def list(self, prefix: str = "", **kw: Any) -> Any:
        for info in super().list(prefix, **kw):
            if info.key.startswith(layout.CHUNKS_PREFIX):
                raise TransferError("listing failed (injected)")
            yield info


def test_du_raises_when_its_listing_fails() -> None:
    """A listing that fails must fail du: a report built on part of the listing would call
    the chunks it never saw missing and understate every number."""
    store = FailingListing()
    built(store)
    with pytest.raises(TransferError, match="injected"):
        disk_usage(store)


def test_du_counts_a_reference_to_a_missing_chunk() -> None:
    """A chunk a manifest references but the listing lacks is counted (ckptlake verify names
    it): du's report is the only hint that a version cannot be restored."""
    store = MemoryStore()
    c = built(store)
    store.delete([layout.chunk_key(c["only_a1"])])
    r = disk_usage(store)
    assert r.lake_totals.missing_chunks == 1


def test_du_a_committed_step_whose_version_was_deleted_is_not_pending(tmp_path: Path) -> None:
    """A sharded step committed as v1, then v1 deleted by rm: the tombstone says the step was
    committed, so its shard records (still there) are no roots and their chunks are orphans
    (gc frees them), not `pending` bytes kept for a commit that already happened."""
    store = MemoryStore()
    lake = Lake(store, chunk_size=MiB)
    for rank in (0, 1):
        r = lake.push_shard(tree(tmp_path / f"r{rank}", 10 + rank, big=10, tag=f"{rank}-"),
                            "g/run/dcp", step=7, rank=rank, world=2)
    assert r.version == 1
    lake.push(tree(tmp_path / "other", 3, big=10), ART)
    lake.delete("g/run/dcp@v1")
    assert store.exists(layout.shard_record_key("g/run/dcp", 7, 0, 2))  # the records stay
    t = disk_usage(store).lake_totals
    assert t.pending_bytes == 0 and t.orphan_bytes > 0


def test_du_ignores_an_empty_shard_record() -> None:
    """A zero-byte shard record (a PUT cut after its head) is no record, as gc counts it: du
    must not refuse to run on it."""
    store = MemoryStore()
    synthetic(store, "m/a", 2)
    store.put(layout.shard_record_key("m/a", 9, 1, 2), b"")
    t = disk_usage(store).lake_totals
    assert t.pending_bytes == 0 and t.missing_chunks == 0


# ---- 9, 10. verify: tombstones and claims that name another version / commit ----------------

def test_verify_reports_a_tombstone_copied_from_another_version_of_the_artifact() -> None:
    """v2's tombstone copied over v1's names the right artifact but the wrong version: readers
    then do not know v1 was deleted.  The artifact alone matching must not pass it."""
    store = MemoryStore()
    synthetic(store, ART, 2)
    synthetic(store, ART, 2)
    lake = Lake(store)
    k1 = delete_like_gc(lake, ART, 1)
    k2 = delete_like_gc(lake, ART, 2)
    store.put(k1, store.get(k2))
    r = lake.verify()
    assert [(p["kind"], p["version"], p["key"]) for p in r.problems] == [("tombstone", 1, k1)]
    assert f"claims to be {ART}@v2" in r.problems[0]["message"]


def test_verify_reports_a_claim_whose_version_is_another_commit(tmp_path: Path) -> None:
    """A committed claim naming v1 while v1's manifest carries another commit id: the step's
    version is not what its claim says (another writer took the number)."""
    store = MemoryStore()
    lake = Lake(store, chunk_size=MiB)
    for rank in (0, 1):
        r = lake.push_shard(tree(tmp_path / f"r{rank}", 10 + rank, big=10, tag=f"{rank}-"),
                            "g/run/dcp", step=7, rank=rank, world=2)
    assert r.version == 1 and lake.verify().ok
    key = layout.shard_claim_key("g/run/dcp", 7)
    claim = json.loads(store.get(key))
    assert claim["commit_id"] and claim["state"] == "committed"
    store.put(key, json.dumps({**claim, "commit_id": "deadbeef"}).encode())
    res = lake.verify()
    assert [(p["kind"], p["version"], p["step"]) for p in res.problems] == [("shard", 1, 7)]
    assert "but v1 is another commit" in res.problems[0]["message"]
