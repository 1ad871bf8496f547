"""What `gc --dry-run`'s footprint_after counts (README, "Output for scripts"): the lake once
everything the plan frees is swept, leaving out only the records gc writes itself."""
from __future__ import annotations

import random
from pathlib import Path

import ckptlake
from ckptlake.format import layout
from ckptlake.policy.retention import RetentionPolicy, Rule


def test_footprint_after_is_the_lake_after_gc_but_gcs_own_records(tmp_path: Path) -> None:
    rng = random.Random(0)
    with ckptlake.open(f"file://{tmp_path / 'lake'}", chunk_size=1 << 20) as lake:
        src = tmp_path / "src"
        src.mkdir()
        for step in range(3):
            (src / "w.bin").write_bytes(rng.randbytes(3 << 20))
            lake.push(src, "a/b", step=step)
        plan = lake.gc_plan(RetentionPolicy(rules=(Rule(match="a/*", keep_last=1),),
                                            grace_period=0, sweep_window=5,
                                            record_retention=10))
        assert plan.versions_deleted == 2
        lake.gc(plan)  # grace 0: everything the plan frees is swept now
        after = {i.key: i.size for i in lake.store.list("") if layout.is_lake_key(i.key)}
    tombs = [k for k in after if "/@tomb/" in k]
    records = [k for k in after if k.startswith("gc/")]  # condemnation record, settings
    assert len(tombs) == 2 and len(records) == 2
    gcs_own = sum(after[k] for k in tombs + records)
    assert sum(after.values()) - gcs_own == plan.footprint_after.bytes
    assert gcs_own < 4096  # "a few KiB"
    # a tombstone takes its manifest's place in the count of objects; the records are extra
    assert len(after) - len(records) == plan.footprint_after.objects
