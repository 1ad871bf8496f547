"""A sharded commit's listing summary was written only by the process that committed: one
that died between its manifest and its summary left a version nothing records, which cannot be
told lost if its manifest goes (tests/test_lost_review.py).  A rank that finds the step
committed writes it if it is missing."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import ckptlake
from ckptlake.lake import Lake


def _summaries(root: Path) -> list[str]:
    d = root / "artifacts" / "s" / "t" / "@s"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def test_a_rank_that_finds_its_step_committed_writes_a_missing_summary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "lake"
    srcs = []
    for rank in (0, 1):
        src = tmp_path / f"r{rank}"
        src.mkdir()
        (src / f"part{rank}.bin").write_bytes(bytes([rank]) * 1000)
        srcs.append(src)
    real = Lake._after_commit
    monkeypatch.setattr(Lake, "_after_commit", lambda self, *a: [])  # the committer "dies"
    with ckptlake.open(root.as_uri()) as lake:
        assert lake.push_shard(srcs[0], "s/t", step=1, rank=0, world=2).version is None
        done = lake.push_shard(srcs[1], "s/t", step=1, rank=1, world=2)
        assert done.committed_here and done.version == 1
        assert _summaries(root) == []
        monkeypatch.setattr(Lake, "_after_commit", real)
        again = lake.push_shard(srcs[0], "s/t", step=1, rank=0, world=2)  # its retry
        assert not again.committed_here and again.version == 1
        assert len(_summaries(root)) == 1
        calls: list[Any] = []
        monkeypatch.setattr(Lake, "_after_commit", lambda self, *a: calls.append(a) or [])
        lake.push_shard(srcs[1], "s/t", step=1, rank=1, world=2)  # summary there: no rewrite
        assert calls == []
