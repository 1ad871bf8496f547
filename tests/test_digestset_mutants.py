"""Checks of gc's digest sets, the clock and the lost-header hash lookup that a mutation review
found no test exercised (each fails with its mutant).  A digest set that forgets a member is a
referenced chunk swept: data loss."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from test_digestset import digests
from test_gc import Versions, chunk_keys, policy

from ckptlake.core import clock as clockmod
from ckptlake.core import digestset
from ckptlake.core import lakeheader
from ckptlake.core.digestset import DigestSet
from ckptlake.core.gc import execute, plan_gc
from ckptlake.core.lakeheader import versions_hash
from ckptlake.format import layout
from ckptlake.lake import Lake
from ckptlake.policy.retention import Rule
from ckptlake.store.memory import MemoryStore

MiB = 1 << 20
SHORT = b"\xab" * 20  # a 20-byte digest: what a lenient read of a foreign manifest makes


# ---- 1. digests of another width in a set that never spilled ----------------------------------

def test_an_odd_width_digest_in_an_unspilled_set_is_a_member(tmp_path: Path) -> None:
    """A set that has not spilled keeps foreign-width digests aside (never in memory's dict):
    the shortcut "nothing on disk, so not a member" must look there too, or gc's mark set
    forgets the chunk and the sweep deletes a referenced chunk."""
    with DigestSet(100, directory=str(tmp_path)) as s:
        s.add(SHORT)
        assert not s.spilled
        assert SHORT in s
        assert b"\xab" * 19 not in s


def test_gc_keeps_an_object_named_by_a_20_byte_digest(tmp_path: Path) -> None:
    """End to end: a version whose (foreign) manifest names a chunk by a 40-hex-char (20-byte)
    digest keeps that object through repeated gc runs with no grace: gc counts what the
    manifest references however it is written, and a key of another width than 64 hex digits
    is no chunk key for gc to sweep at all.  An unreferenced chunk next to it is swept, so
    the runs do sweep.  Losing the referenced one is data loss."""
    store = MemoryStore()
    lake = Lake(store, chunk_size=MiB)
    Versions(lake, tmp_path).push()
    key = layout.version_key("p/ckpt", 1)
    doc = json.loads(store.get(key))
    short = "ab" * 20
    doc["files"].append({"path": "foreign.bin", "size": 5, "chunks": [[short, 5]]})
    store.put(key, json.dumps(doc).encode())
    store.put(layout.chunk_key(short), b"12345")
    orphan = "cd" * 32
    store.put(layout.chunk_key(orphan), b"orphan")
    p = policy(Rule(match="*/ckpt", keep_last=5, index=0), grace=0, window=1, records=2)
    for _ in range(3):
        execute(store, plan_gc(store, p))
        assert store.get(layout.chunk_key(short)) == b"12345", "a referenced object was swept"
    assert orphan not in chunk_keys(store), "gc swept nothing: the check above proves nothing"


# ---- 2. update() with a batch of mixed widths ----------------------------------------------

def test_update_with_a_foreign_width_digest_keeps_every_member(tmp_path: Path) -> None:
    """update()'s fast path puts a batch straight into memory; a batch holding a digest of
    another width must take the slow path, or the spilled run (fixed 32-byte records) is
    misaligned and its members are not found: referenced chunks swept."""
    wide = digests(7, seed=26)
    with DigestSet(4, directory=str(tmp_path)) as s:
        s.update({SHORT, *wide[:6]})
        s.add(wide[6])
        assert s.spilled
        for d in [SHORT, *wide]:
            assert d in s, d.hex()
        assert b"\0" * 32 not in s and b"\xab" * 19 not in s


# ---- 3. runs merged when they pile up -------------------------------------------------------

def test_spilled_runs_are_merged_when_they_pile_up(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Past _MERGE_FAN runs the set merges them: else a lake of many chunks leaves thousands
    of run files, and the first lookup opens them all at once (EMFILE: gc fails, or a mark set
    it cannot read)."""
    monkeypatch.setattr(digestset, "_MERGE_FAN", 4)
    members = digests(2000, seed=3)
    with DigestSet(10, directory=str(tmp_path)) as s:
        for d in members:
            s.add(d)
        assert s.spills == 200
        assert len(s._runs) < 4, f"{len(s._runs)} runs left unmerged"
        assert all(d in s for d in members)


# ---- 4. merged files merged into one past _MAX_SORTED ----------------------------------------

def test_merged_files_looked_up_side_by_side_stay_few(tmp_path: Path) -> None:
    """Each re-mark that spilled adds one merged file that every lookup searches; past
    _MAX_SORTED they are merged into one, or lookups (and open files) grow with every round."""
    members: list[bytes] = []
    with DigestSet(10, directory=str(tmp_path)) as s:
        for r in range(20):
            batch = digests(15, seed=100 + r)
            members += batch
            for d in batch:
                s.add(d)
            assert batch[0] in s  # the lookup merges the new run
            assert len(s._sorted) <= digestset._MAX_SORTED, f"round {r}: {len(s._sorted)} files"
        assert all(d in s for d in members)
        assert len(s) == len(set(members))


# ---- 5. the clock's fallback ---------------------------------------------------------------

def test_clock_without_boottime_falls_back_to_the_monotonic_clock(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without CLOCK_BOOTTIME, now() must be the monotonic clock, never the wall clock: a wall
    clock set back makes a gc's listing look fresh when it is old (a sweep with a stale
    listing deletes a chunk a push just referenced)."""
    monkeypatch.setattr(clockmod, "_BOOTTIME", None)
    monkeypatch.setattr(time, "monotonic", lambda: 777.0)
    assert clockmod.now() == 777.0


# ---- 6./7. the hash of a lake whose header is lost -------------------------------------------

def test_lost_header_hash_looks_past_a_manifest_whose_hash_is_not_a_string() -> None:
    """A manifest saying {"hash": 5} is unreadable, not a lake of hash 5: the next manifest's
    hash is the lake's, or the header is rewritten with a hash the chunks are not named by."""
    s = MemoryStore()
    s.put(layout.version_key("a/b", 1), json.dumps({"hash": 5}).encode())
    s.put(layout.version_key("a/b", 2), json.dumps({"hash": "sha256"}).encode())
    assert versions_hash(s) == (True, "sha256")


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.gets = 0

    def get(self, key: str) -> bytes:  # type: ignore[override]
        self.gets += 1
        return super().get(key)


def test_lost_header_hash_gives_up_after_a_bounded_number_of_unreadable_manifests() -> None:
    """A lake whose manifests are all damaged costs a bounded number of GETs on the push that
    rewrites its header, not one per version in the lake."""
    s = CountingStore()
    for n in range(1, 1001):
        s.put(layout.version_key("a/b", n), b"not json")
    s.gets = 0
    assert versions_hash(s) == (True, None)
    assert 0 < s.gets <= lakeheader._UNREADABLE_TRIES == 50
