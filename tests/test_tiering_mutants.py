"""Tiering plan checks found missing by mutation testing (core/tiering.py, cli/gc.py's
rendering and `--yes` refusal).  Each test pins a number an ops user reads off `gc --dry-run`
to decide on a `tier:` rule."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from test_tiering import DAY, GB, MiB, _tiered_lake, cli, tb

from ckptlake.cli.gc import plan_text, tiering_rows
from ckptlake.core.gc import plan_gc
from ckptlake.format import layout
from ckptlake.format.manifest import ChunkRef, FileEntry, Manifest
from ckptlake.policy.retention import (DEFAULT_CLASS_PRICES, MIN_TIER_OBJECT, RetentionPolicy,
                                       Rule, Tier)

NOW = tb.NOW
IT = "INTELLIGENT_TIERING"


def _sparse_lake(chunks_per_version: list[list[int]], *, classes: bool = True,
                 age_days: float = 100) -> Any:
    """A SparseStore lake: artifact a/ckpt, version n+1 with its own chunks of the given
    (declared, never stored) sizes, all `age_days` old; the last version is the latest (hot)."""
    store = tb.SparseStore()
    store.supports_storage_classes = classes
    for n, sizes in enumerate(chunks_per_version, start=1):
        refs = []
        for i, size in enumerate(sizes):
            d = tb.digest("own", n, i)
            store.add_chunk(d, size)
            refs.append(ChunkRef(d, size))
        files = tuple(FileEntry(f"f{i}", r.size, chunks=(r,)) for i, r in enumerate(refs))
        m = Manifest(artifact="a/ckpt", version=n, kind="dir", hash="sha256", files=files,
                     step=n, created=NOW - timedelta(days=age_days))
        store.put(layout.version_key("a/ckpt", n), m.encode())
    return store


def _tier_policy(cls: str) -> RetentionPolicy:
    return RetentionPolicy(rules=(Rule(match="*/ckpt", keep_all=True,
                                       tier=Tier(30 * DAY, cls), index=0),), grace_period=0)


def _table(t: Any) -> dict[str, tuple[int, int]]:
    return {c: (u.objects, u.bytes) for c, u in t.items()}


def test_lake_without_storage_classes_plans_after_equal_to_before() -> None:
    """A file:// lake (no storage classes) moves nothing: its class table after must be the
    table before and it saves $0.  Showing the S3 moves in `after` would promise an ops user
    savings (here dollars a month, on 40 GiB) that the lake can never get."""
    store = _sparse_lake([[1 * GB] * 10, [1 * GB] * 10, [1 * GB] * 10, [1 * GB] * 10],
                         classes=False)
    t = plan_gc(store, _tier_policy("GLACIER_IR"), now=NOW).tiering
    assert t is not None and not t.supported
    assert t.moves["GLACIER_IR"].objects == 30  # what S3 would move, shown as such
    assert _table(t.after) == _table(t.before) == {"STANDARD": (40, 40 * GB)}
    assert t.usd_month_after == t.usd_month_before == round(40 * 0.023, 4)
    assert t.usd_month_saved == 0 and t.payback_days is None


def _early_deletion_setup(days_since_move: float
                          ) -> tuple[Any, RetentionPolicy, list[str], datetime]:
    """test_tiering's test_early_deletion_and_objects_too_large_to_copy: ckpt v1's own
    256 MiB chunks moved to GLACIER_IR `days_since_move` days ago, then a policy keeping only
    the newest ckpt (v1's chunks are deleted)."""
    from ckptlake.core.catalog import resolve

    store = tb.SparseStore()
    tb.build(store, ckpts=10, models=2)
    pol = tb.policy()
    v2 = set(resolve(store, "team/llm/ckpt@v2").chunk_digests())
    own = [layout.chunk_key(d) for d in resolve(store, "team/llm/ckpt@v1").chunk_digests()
           if store.sizes[layout.chunk_key(d)] == 256 * MiB and d not in v2]
    for key in own:
        store.set_storage_class(key, "GLACIER_IR")
    keep1 = RetentionPolicy(rules=(replace(pol.rules[0], keep_all=False, keep_last=1,
                                           keep_best=None), pol.rules[1]))
    now = max(i.modified for i in store.list("")) + timedelta(days=days_since_move)
    return store, keep1, own, now


def test_no_early_deletion_fee_once_the_minimum_duration_is_over() -> None:
    """Chunks 100 days in GLACIER_IR (90-day minimum) that gc deletes owe nothing more: the
    plan must show no early-deletion objects and $0, or an ops user would think deleting
    old Glacier IR data is penalised and keep paying for it."""
    store, keep1, own, now = _early_deletion_setup(100)
    assert len(own) > 0
    t = plan_gc(store, keep1, now=now).tiering
    assert t.early_deletion.objects == 0 and t.early_deletion.bytes == 0
    assert t.early_deletion_usd == 0
    assert "early deletion" not in plan_text(plan_gc(store, keep1, now=now))


def test_intelligent_tiering_after_cost_includes_the_monitoring_fee() -> None:
    """INTELLIGENT_TIERING bills a monitoring fee per 1,000 objects a month on top of the
    storage: leaving it out makes a rule tiering many chunks look cheaper than it is."""
    n = 400
    store = _sparse_lake([[256 * MiB] * n, [256 * MiB]])
    t = plan_gc(store, _tier_policy(IT), now=NOW).tiering
    p = DEFAULT_CLASS_PRICES[IT]
    assert (t.moves[IT].objects, t.moves[IT].bytes) == (n, n * 256 * MiB)
    expect = round(n * 256 * MiB / GB * p.price_per_gb_month
                   + n / 1000 * p.monitoring_per_1000_month, 4)
    assert p.monitoring_per_1000_month > 0
    assert t.after[IT].usd_month == expect
    assert t.moves[IT].usd_month == expect


def test_intelligent_tiering_of_small_chunks_costs_more_and_never_pays_back() -> None:
    """Chunks of 150 KiB in INTELLIGENT_TIERING: the monitoring fee exceeds the storage
    saved, so the plan loses money each month and has no payback; a negative 'paid back in
    -N days' would read as a bargain to an ops user."""
    n = 2000
    store = _sparse_lake([[150 * 1024] * n, [150 * 1024]])
    plan = plan_gc(store, _tier_policy(IT), now=NOW)
    t = plan.tiering
    assert t.moves[IT].objects == n
    assert t.usd_month_saved < 0
    assert t.payback_days is None
    text = plan_text(plan)
    assert "paid back" not in text
    assert "in -" not in text
    assert f"COSTS {-t.usd_month_saved:.4f} MORE" in text and "saves -" not in text
    assert -t.usd_month_saved < 0.005  # shown to 4 places: 2 would read "COSTS 0.00 MORE"


def test_chunk_of_exactly_128_kib_moves_one_byte_less_is_too_small() -> None:
    """IA and Glacier IR bill objects below 128 KiB as 128 KiB: a chunk of exactly 128 KiB is
    worth moving, one byte less is left in place (counted too small)."""
    store = _sparse_lake([[MIN_TIER_OBJECT, MIN_TIER_OBJECT - 1], [MIN_TIER_OBJECT]])
    t = plan_gc(store, _tier_policy("STANDARD_IA"), now=NOW).tiering
    assert [size for _, _, size, _ in t.todo] == [MIN_TIER_OBJECT]
    assert (t.moves["STANDARD_IA"].objects, t.moves["STANDARD_IA"].bytes) == \
        (1, MIN_TIER_OBJECT)
    assert (t.too_small.objects, t.too_small.bytes) == (1, MIN_TIER_OBJECT - 1)


def test_tier_table_dollar_cells_are_before_then_after() -> None:
    """The per-class table: $/MONTH BEFORE and $/MONTH AFTER must be the plan's before and
    after of that class, or an ops user reads STANDARD's cost as going up."""
    store = _sparse_lake([[1 * GB] * 30, [1 * GB] * 10])
    plan = plan_gc(store, _tier_policy("STANDARD_IA"), now=NOW)
    t = plan.tiering
    rows = tiering_rows(plan)
    assert [r[0] for r in rows] == ["STANDARD", "STANDARD_IA"]
    for cls, _, _, before, after in rows:
        b, a = t.before.get(cls), t.after.get(cls)
        assert before == (f"{b.usd_month:.2f}" if b else "0.00")
        assert after == (f"{a.usd_month:.2f}" if a else "0.00")
    assert rows[0][3:] == [f"{40 * 0.023:.2f}", f"{10 * 0.023:.2f}"]
    assert rows[1][3:] == ["0.00", f"{30 * 0.0125:.2f}"]


def test_gc_without_yes_refuses_a_plan_of_only_tier_moves_and_names_them(
        moto_store: Any, tmp_path: Path) -> None:
    """With nothing to delete but chunks to move, `gc` without --yes and without a terminal
    still changes storage classes (and bills minimum durations): it must refuse (exit 7) and
    say what it would move, not 'delete 0 versions and sweep 0 B'."""
    _tiered_lake(moto_store, tmp_path / "src")
    pol = tmp_path / "policy.yaml"
    pol.write_text("retention:\n  grace_period: 0s\n  rules:\n    - match: '*/ckpt'\n"
                   "      keep_all: true\n      tier: {after: 0s, class: STANDARD_IA}\n")
    r = cli("gc", "--lake", f"s3://{moto_store.bucket}/lake/root", "--policy", pol)
    assert r.exit_code == 7, (r.stdout, r.stderr)
    assert "move 2 chunks to colder storage classes" in r.stderr
    assert "nothing was changed" in r.stderr
    assert {i.storage_class for i in moto_store.list(layout.CHUNKS_PREFIX)} == {"STANDARD"}


def test_plan_text_shows_the_early_deletion_fee() -> None:
    """Chunks 10 days into GLACIER_IR's 90-day minimum that gc deletes are billed for the
    other 80 days: the dry run must say so, or the ops user finds it on the bill."""
    store, keep1, own, now = _early_deletion_setup(10)
    plan = plan_gc(store, keep1, now=now)
    t = plan.tiering
    assert t.early_deletion.objects == len(own) > 0
    text = plan_text(plan)
    line = (f"  early deletion: gc deletes {t.early_deletion.objects} "
            f"({_fmt(t.early_deletion.bytes)}) of cold chunks before their class's minimum "
            f"storage duration: ${t.early_deletion_usd:.2f} billed for the rest of it")
    assert line in text.splitlines()


def _fmt(n: int) -> str:
    from ckptlake.cli.output import format_bytes

    return format_bytes(n)
