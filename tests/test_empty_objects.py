"""Zero-byte create-once objects count as absent (docs/format.md, "Empty objects").

SeaweedFS keeps an empty object when a PUT's connection is cut right after its head (found by
the chaos soak, bench/soak.py; reproduced against SeaweedFS in tests/test_soak.py).  Here the
empty objects are planted by hand, so each rule is checked fast and deterministically.
"""
from __future__ import annotations

import os
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ckptlake.core import catalog
from ckptlake.core.push import commit_version
from ckptlake.errors import NotFound
from ckptlake.format import layout
from ckptlake.format.header import DEFAULT_HASH, decode_header
from ckptlake.format.manifest import Manifest
from ckptlake.lake import Lake
from ckptlake.policy.retention import RetentionPolicy, Rule
from ckptlake.store.memory import MemoryStore

MiB = 1 << 20
ART = "exp/ckpt"


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def lake(store: MemoryStore) -> Lake:
    return Lake(store, chunk_size=MiB, concurrency=2)


def _src(tmp_path: Path, name: str = "src", seed: int = 0) -> Path:
    src = tmp_path / name
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(2048) + bytes([seed]))
    return src


def _keep_last(n: int) -> RetentionPolicy:
    return RetentionPolicy(rules=(Rule(match="*", keep_last=n, index=0),), grace_period=0,
                           sweep_window=30, record_retention=60)


def test_push_takes_over_an_empty_header_and_an_empty_manifest(
        lake: Lake, store: MemoryStore, tmp_path: Path) -> None:
    store.put(layout.HEADER_KEY, b"")
    store.put(layout.version_key(ART, 1), b"")
    result = lake.push(_src(tmp_path), ART)
    assert result.version == 1  # replaced at 1, not moved on to 2
    assert decode_header(store.get(layout.HEADER_KEY)).hash == DEFAULT_HASH  # a new lake's
    assert [v.version for v in lake.versions(ART)] == [1]
    assert lake.resolve(f"{ART}@latest").version == 1
    lake.gc(lake.gc_plan(_keep_last(1)))
    assert lake.verify().problems == []


def test_readers_skip_an_empty_manifest_and_the_next_push_replaces_it(
        lake: Lake, store: MemoryStore, tmp_path: Path) -> None:
    lake.push(_src(tmp_path), ART)
    store.put(layout.version_key(ART, 2), b"")
    assert [v.version for v in lake.versions(ART)] == [1]
    assert lake.resolve(f"{ART}@latest").version == 1
    with pytest.raises(NotFound):
        lake.resolve(f"{ART}@v2")
    assert [a.latest for a in lake.artifacts()] == [1]
    assert [(a.artifact, a.version_count) for a in lake.du().artifacts] == [(ART, 1)]
    plan = lake.gc_plan(_keep_last(1))  # the empty one is no version and no root
    assert plan.versions_total == 1
    lake.gc(plan)
    assert store.stat(layout.version_key(ART, 2)).size == 0  # left for the next push
    report = lake.verify()
    assert report.problems == []
    assert any("@v/" in w and "empty object left by a cut upload" in w for w in report.warnings)
    assert lake.push(_src(tmp_path, "src2", 1), ART).version == 2
    assert [v.version for v in lake.versions(ART)] == [1, 2]


class _Racing(MemoryStore):
    """Lets a second writer commit in between the first's read of the empty object and its
    compare-and-swap."""

    def __init__(self) -> None:
        super().__init__()
        self.between = None

    def get_with_etag(self, key: str):  # type: ignore[no-untyped-def]
        got = super().get_with_etag(key)
        if self.between is not None:
            hook, self.between = self.between, None
            hook()
        return got


def test_two_writers_racing_for_an_empty_manifest_one_wins_the_other_takes_the_next(
        tmp_path: Path) -> None:
    store = _Racing()
    Lake(store, chunk_size=MiB).push(_src(tmp_path), "other/x")  # a header
    store.put(layout.version_key(ART, 1), b"")
    draft = Manifest(artifact=ART, version=0, kind="dir", hash="sha256", files=(), dirs=(),
                     step=None, created=datetime(2026, 1, 1, tzinfo=timezone.utc), created_by="t",
                     tool="t")
    won: list[Manifest] = []
    store.between = lambda: won.append(commit_version(store, replace(draft, step=2)))
    first = commit_version(store, replace(draft, step=1))
    assert (won[0].version, first.version) == (1, 2)
    assert catalog.load_manifest(store, ART, 1).step == 2
    assert catalog.load_manifest(store, ART, 2).step == 1


def test_an_empty_alias_record_is_no_alias(lake: Lake, store: MemoryStore,
                                           tmp_path: Path) -> None:
    lake.push(_src(tmp_path), ART)
    store.put(layout.alias_key(ART, "best"), b"")
    assert lake.versions(ART)[0].aliases == []
    with pytest.raises(NotFound):
        lake.resolve(f"{ART}@best")
    assert lake.verify().problems == []
    assert lake.alias(f"{ART}@v1", "best").previous is None
    assert lake.resolve(f"{ART}@best").version == 1


def test_an_empty_tombstone_is_replaced_by_gc(lake: Lake, store: MemoryStore,
                                              tmp_path: Path) -> None:
    for i in range(2):
        lake.push(_src(tmp_path, f"s{i}", i), ART)
    store.put(layout.tombstone_key(ART, 1), b"")
    lake.gc(lake.gc_plan(_keep_last(1)))
    assert [t.version for t in lake.expired(ART)] == [1]


def test_empty_shard_claim_and_record_are_taken_over(lake: Lake, store: MemoryStore,
                                                     tmp_path: Path) -> None:
    store.put(layout.shard_claim_key(ART, 5), b"")
    store.put(layout.shard_record_key(ART, 5, 0, 1), b"")
    result = lake.push_shard(_src(tmp_path), ART, step=5, rank=0, world=1)
    assert result.version == 1 and result.committed_here
    assert lake.resolve(f"{ART}@step=5").version == 1
    assert lake.verify().problems == []


def test_an_empty_condemnation_record_condemns_nothing(lake: Lake, store: MemoryStore,
                                                      tmp_path: Path) -> None:
    lake.push(_src(tmp_path), ART)
    store.put(layout.condemned_key("20260101T000000.000000Z", "0" * 16), b"")
    lake.gc(lake.gc_plan(_keep_last(1)))
    report = lake.verify()
    assert report.problems == []
    assert any("gc/condemned/" in w for w in report.warnings)
    assert lake.push(_src(tmp_path, "s2", 2), ART).version == 2
