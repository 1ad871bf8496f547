"""Sharded steps and gc: a step committed and then deleted by gc stays deleted.

A rank pushed again (a job restarted from an old step), or an owner taking over a claim whose
commit it finds already made and deleted, must neither report the version as in the lake nor
commit it again under the number gc deleted (docs/format.md, "Sharded commits" and "Deleting
(gc)").  Also: a rank waiting for another owner's commit says so.
"""
from __future__ import annotations

import re
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

import ckptlake
from ckptlake.core import shards
from ckptlake.core.identity import utcnow
from ckptlake.errors import NotFound
from ckptlake.format import layout
from ckptlake.policy.retention import RetentionPolicy, Rule

ART = "res/ck"
POLICY = RetentionPolicy(rules=(Rule(match="res/*", keep_last=1),), grace_period=0,
                         sweep_window=1, record_retention=2)


@pytest.fixture
def lake(local_lake_url: str):
    with ckptlake.open(local_lake_url) as lk:
        yield lk


def rank_dir(root: Path, rank: int, size: int = 200_000) -> Path:
    d = root / f"rank{rank}"
    d.mkdir(parents=True)
    (d / f"__{rank}_0.distcp").write_bytes(__import__("random").Random(rank).randbytes(size))
    return d


class _Crash(BaseException):
    """The committing rank dies (SIGKILL) right before marking the claim committed."""


def die_before_committed(lake, dirs: list[Path], art: str, monkeypatch, *, step: int = 1,
                         aliases: tuple[str, ...] = ()) -> None:
    """Rank 0 then rank 1 of `step`; the committer (rank 1) dies after writing the manifest,
    before its claim says committed (tests/test_rm.py and test_shards_discard.py use it
    too)."""
    lake.push_shard(dirs[0], art, step=step, rank=0, world=2)
    real_cas = shards._cas

    def dying_cas(store, key, claim, etag):  # type: ignore[no-untyped-def]
        if claim.state == "committed":
            raise _Crash()
        return real_cas(store, key, claim, etag)

    monkeypatch.setattr(shards, "_cas", dying_cas)
    with pytest.raises(_Crash):
        lake.push_shard(dirs[1], art, step=step, rank=1, world=2, aliases=list(aliases))
    monkeypatch.setattr(shards, "_cas", real_cas)


def _claim(lake) -> shards.Claim:
    key = layout.shard_claim_key(ART, 1)
    return shards.decode_claim(lake.store.get(key), key=key)


def _chunk_keys(lake) -> set[str]:
    return {i.key for i in lake.store.list("chunks/")}


def test_takeover_does_not_bring_back_a_version_gc_deleted(lake, tmp_path, monkeypatch) -> None:
    dirs = [rank_dir(tmp_path, r) for r in range(2)]
    die_before_committed(lake, dirs, ART, monkeypatch)
    assert lake.store.exists(layout.version_key(ART, 1))
    assert _claim(lake).state == "committing"

    other = tmp_path / "other"
    other.mkdir()
    (other / "f.bin").write_bytes(b"step two")
    assert lake.push(other, ART, step=2).version == 2
    result = lake.gc(lake.gc_plan(POLICY))
    assert result.versions_deleted == [f"{ART}@v1"]

    key = layout.shard_claim_key(ART, 1)  # the dead owner's claim goes stale
    lake.store.put(key, replace(_claim(lake), updated=utcnow() - timedelta(hours=1)).encode())
    with pytest.raises(NotFound, match=r"res/ck step 1 was committed as v1, which was deleted "
                                       r"by gc on .* under rules\[0\]"):
        lake.push_shard(dirs[1], ART, step=1, rank=1, world=2, stale_after=60)
    assert not lake.store.exists(layout.version_key(ART, 1))  # v1 stays deleted
    assert [v.version for v in lake.versions(ART)] == [2]
    assert (_claim(lake).state, _claim(lake).version) == ("committed", 1)
    assert lake.pending() == []
    # Pushed once more: the same answer, without taking anything over.
    with pytest.raises(NotFound, match="committed as v1, which was deleted by gc"):
        lake.push_shard(dirs[0], ART, step=1, rank=0, world=2)


def test_takeover_moves_past_a_foreign_version_gc_deleted(lake, tmp_path) -> None:
    """The dead owner's intent N was taken by an ordinary push, which gc deleted since: the
    step is committed at a new number, never at N again."""
    dirs = [rank_dir(tmp_path, r) for r in range(2)]
    real = shards.finish_step
    shards.finish_step = lambda *a, **kw: (None, False)  # both records in, nobody committed
    try:
        for r in range(2):
            lake.push_shard(dirs[r], ART, step=1, rank=r, world=2)
    finally:
        shards.finish_step = real
    for n in (1, 2):
        other = tmp_path / f"other{n}"
        other.mkdir()
        (other / "f.bin").write_bytes(b"plain push %d" % n)
        lake.push(other, ART)
    lake.gc(lake.gc_plan(POLICY))
    assert [v.version for v in lake.versions(ART)] == [2]
    dead = shards.Claim(artifact=ART, step=1, world=2, commit_id="dead0000", state="committing",
                        owner="ghost@nowhere:1:x", updated=utcnow() - timedelta(hours=1),
                        version=1)
    lake.store.put(layout.shard_claim_key(ART, 1), dead.encode())
    res = lake.push_shard(dirs[0], ART, step=1, rank=0, world=2, stale_after=60)
    assert res.version == 3 and res.committed_here
    assert not lake.store.exists(layout.version_key(ART, 1))
    assert [v.version for v in lake.versions(ART)] == [2, 3]


def test_repushing_a_rank_of_a_deleted_step_fails_before_uploading(lake, tmp_path) -> None:
    dirs = [rank_dir(tmp_path, r) for r in range(3)]
    for r in range(3):
        res = lake.push_shard(dirs[r], "a/gc", step=50, rank=r, world=3)
    assert res.version == 1
    other = tmp_path / "other"
    other.mkdir()
    (other / "f.bin").write_bytes(b"step sixty")
    lake.push(other, "a/gc", step=60)
    policy = replace(POLICY, rules=(Rule(match="a/*", keep_last=1),))
    lake.gc(lake.gc_plan(policy))
    lake.gc(lake.gc_plan(policy))  # the second run sweeps v1's chunks
    before = _chunk_keys(lake)
    with pytest.raises(NotFound) as err:
        lake.push_shard(dirs[2], "a/gc", step=50, rank=2, world=3)
    assert err.value.exit_code == 3
    assert "a/gc step 50 was committed as v1, which was deleted by gc on" in str(err.value)
    assert "ckptlake ls a/gc --all" in str(err.value)
    assert _chunk_keys(lake) == before  # nothing uploaded as chunks no version references
    # The same answer where the committed claim is found after the upload (a gc racing it).
    with pytest.raises(NotFound, match="committed as v1, which was deleted by gc"):
        shards.finish_step(lake.store, "a/gc", 50, 3, stale_after=300, wait_seconds=0)


class _Notes:
    def __init__(self) -> None:
        self.notes: list[str] = []

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return lambda *a, **kw: None

    def note(self, message: str) -> None:
        self.notes.append(message)


def test_a_rank_waiting_for_another_owner_says_so(lake, tmp_path) -> None:
    dirs = [rank_dir(tmp_path, r) for r in range(2)]
    lake.push_shard(dirs[0], ART, step=1, rank=0, world=2)
    live = shards.Claim(artifact=ART, step=1, world=2, commit_id="c0ffee", state="committing",
                        owner="alive@node-3:7:x", updated=utcnow() - timedelta(seconds=30),
                        version=1)
    key = layout.shard_claim_key(ART, 1)
    lake.store.put(key, live.encode())
    seen = _Notes()
    res = lake.push_shard(dirs[1], ART, step=1, rank=1, world=2, stale_after=300,
                          wait_seconds=0.3, progress=seen)  # type: ignore[arg-type]
    assert res.version is None
    [note] = seen.notes
    assert re.fullmatch(r"res/ck step 1: waiting for the owner of its commit \(alive@node-3:7:x, "
                        r"committing 3\d s ago\); giving up in 0 s \(the step stays pending; "
                        r"push any rank again\)", note), note
    # An owner that dies: the waiting rank says when it will take over, then that it does.
    lake.store.put(key, replace(live, updated=utcnow()).encode())
    seen = _Notes()
    res = lake.push_shard(dirs[1], ART, step=1, rank=1, world=2, stale_after=1,
                          wait_seconds=120, progress=seen)  # type: ignore[arg-type]
    assert res.version == 1 and res.committed_here
    assert re.search(r"; taking over in \d+ s if it is still not done$", seen.notes[0])
    assert re.fullmatch(r"res/ck step 1: taking over its commit from alive@node-3:7:x "
                        r"\(silent for \d+ s\)", seen.notes[-1]), seen.notes
