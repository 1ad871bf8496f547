"""Sharded commits: checks of ckptlake/core/shards.py that mutation testing found untested
(docs/format.md, "Sharded commits"): a repeat leaves aliases alone once they were set, the
lowest rank's metrics and metadata win, a record stored under another rank's key is refused,
and a record of another world size landing while a rank uploads stops the commit."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

import ckptlake
from ckptlake.core import shards
from ckptlake.errors import Conflict, IntegrityError, NotFound
from ckptlake.format import layout
from test_shards_fixes import claim_of, rank_dir

ART = "fix/run"  # the artifact claim_of (test_shards_fixes) reads


@pytest.fixture
def lake(local_lake_url: str):
    with ckptlake.open(local_lake_url) as lk:
        yield lk


def test_a_repeat_does_not_set_again_an_alias_removed_after_it_was_set(lake, tmp_path) -> None:
    """Once the claim records the step's aliases as set (aliases_set True), a re-push of a rank
    must not set them again: `best` removed on purpose after the commit stays removed."""
    dirs = [rank_dir(tmp_path, r) for r in range(2)]
    for r in range(2):
        lake.push_shard(dirs[r], ART, step=3, rank=r, world=2, aliases=["best"])
    assert lake.resolve(f"{ART}@best").version == 1
    assert claim_of(lake, 3).aliases_set is True
    lake.remove_alias(ART, "best")
    again = lake.push_shard(dirs[0], ART, step=3, rank=0, world=2, aliases=["best"])
    assert again.repeated and again.version == 1
    assert all("best" not in v.aliases for v in lake.versions(ART))
    with pytest.raises(NotFound):
        lake.resolve(f"{ART}@best")


def test_the_lowest_ranks_metrics_and_metadata_win(lake, tmp_path) -> None:
    """docs/format.md: where ranks give the same metric or metadata key different values, the
    committed version keeps the lowest rank's (merge_records keeps the first, in rank order)."""
    dirs = [rank_dir(tmp_path, r) for r in range(2)]
    lake.push_shard(dirs[0], ART, step=4, rank=0, world=2, metrics={"loss": 1.0},
                    metadata={"tag": "zero"})
    res = lake.push_shard(dirs[1], ART, step=4, rank=1, world=2, metrics={"loss": 2.0},
                          metadata={"tag": "one"})
    assert res.version == 1
    [v] = lake.versions(ART)
    assert v.metrics["loss"] == 1.0
    assert v.metadata["tag"] == "zero"


def test_a_record_under_another_ranks_key_is_refused(lake, tmp_path) -> None:
    """A record's body must match its key: rank 1's record copied to rank 0's key would let
    rank 1's files stand in for rank 0's, so reading it is an IntegrityError."""
    dirs = [rank_dir(tmp_path, r) for r in range(3)]
    for r in range(2):
        lake.push_shard(dirs[r], ART, step=5, rank=r, world=3)
    k0, k1 = (layout.shard_record_key(ART, 5, r, 3) for r in range(2))
    lake.store.put(k0, lake.store.get(k1))  # rank 1's bytes under rank 0's key
    with pytest.raises(IntegrityError, match="claims to be rank 1"):
        lake.push_shard(dirs[2], ART, step=5, rank=2, world=3)
    assert lake.artifacts() == []


def test_a_record_of_another_world_landing_during_the_upload_stops_the_commit(
        lake, tmp_path, monkeypatch) -> None:
    """begin_shard's world check runs before the upload; a record of another world size can
    land meanwhile, and record_shard must check again after writing its own: Conflict, and
    no version (a world-2 step would otherwise commit beside a world-3 record)."""
    dirs = [rank_dir(tmp_path, r) for r in range(2)]
    lake.push_shard(dirs[0], ART, step=6, rank=0, world=2)
    k0 = layout.shard_record_key(ART, 6, 0, 2)
    rec0 = shards.decode_record(lake.store.get(k0), key=k0)
    real = shards.upload_tree

    def upload(*a: Any, **kw: Any) -> Any:
        lake.store.put(layout.shard_record_key(ART, 6, 2, 3),
                       replace(rec0, rank=2, world=3).encode())
        return real(*a, **kw)

    monkeypatch.setattr(shards, "upload_tree", upload)
    with pytest.raises(Conflict, match="different world sizes"):
        lake.push_shard(dirs[1], ART, step=6, rank=1, world=2)
    assert lake.artifacts() == []
