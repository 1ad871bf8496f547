"""core/digestset: the sorted-run digest set gc uses for bounded memory -- membership, dedup,
merging many runs, the smallest value winning in a DigestMap, the spool, and cleanup."""
from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest

from ckptlake.core import digestset
from ckptlake.core.digestset import DigestMap, DigestSet, Spool


def digests(n: int, seed: int = 0) -> list[bytes]:
    return [hashlib.sha256(f"{seed}-{i}".encode()).digest() for i in range(n)]


def test_membership_and_dedup_across_many_runs(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(digestset, "_MERGE_FAN", 4)  # runs pile up: intermediate merges too
    monkeypatch.setattr(digestset, "_BLOCK", 8)  # lookups cross blocks, in and out of order
    rng = random.Random(1)
    members = digests(500)
    added = members * 3  # every digest three times, in random order, across many runs
    rng.shuffle(added)
    s = DigestSet(7, directory=str(tmp_path))
    for d in added:
        s.add(d)
    assert s.spills > 100 and s.spilled
    others = digests(300, seed=1)
    queries = members + others
    rng.shuffle(queries)  # random order: binary search from scratch
    assert [q in s for q in queries] == [q in set(members) for q in queries]
    assert [q in s for q in sorted(queries)] == [q in set(members) for q in sorted(queries)]
    assert len(s) == 500
    merged = list(Path(tmp_path).glob("ckptlake-gc-*/run-*"))
    assert len(merged) == 1 and merged[0].stat().st_size == 500 * 32, "one deduplicated run"
    data = merged[0].read_bytes()
    assert [data[i:i + 32] for i in range(0, len(data), 32)] == sorted(members)
    s.add(others[0])  # adding after a merge: in memory first, then another run
    assert others[0] in s and len(s) == 501
    s.close()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("block", [1, 2, 3, 2048])
def test_edges_empty_first_last_odd_widths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           block: int) -> None:
    monkeypatch.setattr(digestset, "_BLOCK", block)
    with DigestSet(2, directory=str(tmp_path)) as s:
        assert b"\0" * 32 not in s and len(s) == 0
        ds = sorted(digests(9))
        s.update(ds)
        assert ds[0] in s and ds[-1] in s
        assert all(d in s for d in ds) and all(d in s for d in reversed(ds))
        assert not any(bytes([d[0]]) + d[1:31] + bytes([d[31] ^ 1]) in s for d in ds)
        assert b"\0" * 32 not in s and b"\xff" * 32 not in s
        s.add(b"short")  # a foreign width: kept aside, never spilled
        assert b"short" in s and b"shor" not in s and "text" not in s  # type: ignore[operator]
    assert list(tmp_path.iterdir()) == []


def test_map_keeps_the_smallest_value_across_runs(tmp_path: Path) -> None:
    ds = digests(50)
    with DigestMap(3, directory=str(tmp_path)) as m:
        for value in (5, 2, 9):
            for d in ds:
                m.add(d, value + (ds.index(d) % 2))
            m.compact()  # one sorted file per round: lookups take the minimum across them
        assert m.spills > 10 and len(m._sorted) == 3
        assert [m.get(d) for d in ds] == [2 + i % 2 for i in range(50)]
        assert m.get(b"\1" * 32) is None and m.get(b"\1" * 32, -1) == -1


def test_spool_in_memory_and_on_disk(tmp_path: Path) -> None:
    for limit in (10_000, 3):
        sp = Spool(limit, directory=str(tmp_path))
        lists = [digests(i, seed=i) + [b"odd"] for i in range(6)]
        where = [sp.append(x) for x in lists]
        assert sp.spilled == (limit == 3)
        assert [list(sp.read(w)) for w in reversed(where)] == list(reversed(lists))
        sp.reset()
        w = sp.append(lists[2])
        assert list(sp.read(w)) == lists[2]
        sp.close()
        assert list(tmp_path.iterdir()) == []


def test_map_smallest_value_wins_over_a_larger_one_still_in_memory(tmp_path: Path) -> None:
    """gc adds the deleted versions' chunks artifact by artifact (increasing index): a chunk an
    earlier artifact frees may already be on disk when a later artifact adds it again."""
    ds = digests(4)
    with DigestMap(2, directory=str(tmp_path)) as m:
        m.add(ds[0], 0)
        m.add(ds[1], 0)  # spills {ds0: 0, ds1: 0}
        m.add(ds[0], 5)  # in memory now, with a larger value
        assert m.spills == 1
        assert m.get(ds[0]) == 0 and m.get(ds[1]) == 0
        m.compact()
        m.add(ds[2], 7)
        m.add(ds[1], 9)  # spills again: two files, ds1 in both
        m.compact()
        assert m.get(ds[1]) == 0 and m.get(ds[2]) == 7 and ds[3] not in m
