"""Storage-class tiering (issue 16 item 2): the policy, the hot/cold selection, gc's plan and
its dollars, the moves on S3 (moto records classes; SeaweedFS 4.48 refuses the copy), the local
lake, and the retrieval fee in the pull estimate."""
from __future__ import annotations

import json
import random
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ckptlake.cli.app import app
from ckptlake.core.egress import estimate_pull
from ckptlake.core.gc import execute, plan_gc
from ckptlake.errors import ConfigError, StorageClassUnsupported
from ckptlake.format import layout
from ckptlake.lake import Lake
from ckptlake.policy.config import load_config
from ckptlake.policy.egress import EgressPolicy, load_egress
from ckptlake.policy.retention import (DEFAULT_CLASS_PRICES, KeepBest, RetentionPolicy, Rule,
                                       Tier, VersionFacts, cold_class, load_retention, select)
from ckptlake.store import open_store
from ckptlake.store.base import Store
from ckptlake.store.memory import MemoryStore

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import tiering_bench as tb  # noqa: E402

MiB = 1 << 20
GB = 1 << 30
DAY = 86400.0
NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)


def policy_from(tmp_path: Path, text: str) -> RetentionPolicy:
    path = tmp_path / "ckptlake.yaml"
    path.write_text(textwrap.dedent(text))
    return load_retention(load_config(str(path)))


def cli(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


# ---- the policy --------------------------------------------------------------------------

def test_tier_and_price_table_load(tmp_path: Path) -> None:
    p = policy_from(tmp_path, """
        retention:
          storage_price_per_gb_month: 0.02
          storage_classes:
            GLACIER_IR: {retrieval_per_gb: 0.05, min_storage_days: 120}
          rules:
            - match: "*/ckpt"
              keep_last: 3
              tier: {after: 30d, class: STANDARD_IA}
            - match: "*/model"
              keep_all: true
    """)
    assert p.rules[0].tier == Tier(after=30 * DAY, storage_class="STANDARD_IA")
    assert p.rules[1].tier is None and p.tiers
    assert p.class_prices["STANDARD"].price_per_gb_month == 0.02
    glacier = p.class_prices["GLACIER_IR"]
    assert (glacier.retrieval_per_gb, glacier.min_storage_days) == (0.05, 120)
    assert glacier.price_per_gb_month == DEFAULT_CLASS_PRICES["GLACIER_IR"].price_per_gb_month
    ia = p.class_prices["STANDARD_IA"]
    assert (ia.price_per_gb_month, ia.min_storage_days, ia.retrieval_per_gb) == (0.0125, 30, 0.01)


@pytest.mark.parametrize("tier, line, key, words", [
    ("{after: 30d, class: GLACIER}", 6, "retention.rules[0].tier.class", "need a restore step"),
    ("{after: 30d, class: DEEP_ARCHIVE}", 6, "retention.rules[0].tier.class",
     "need a restore step"),
    ("{after: 30d, class: COLD}", 6, "retention.rules[0].tier.class", "must be one of"),
    ("{class: STANDARD_IA}", 6, "retention.rules[0].tier", "needs `after`"),
    ("{after: 30, class: STANDARD_IA}", 6, "retention.rules[0].tier.after", "duration"),
    ("{after: 30d, class: STANDARD_IA, when: x}", 6, "retention.rules[0].tier.when",
     "unknown key"),
])
def test_tier_errors_name_file_line_and_key(tmp_path: Path, tier: str, line: int, key: str,
                                            words: str) -> None:
    with pytest.raises(ConfigError) as info:
        policy_from(tmp_path, f"""
            retention:
              rules:
                - match: "*/ckpt"
                  keep_all: true
                  tier: {tier}
        """)
    text = str(info.value)
    assert f"ckptlake.yaml:{line}: {key}:" in text and words in text
    assert "\n" not in text


def test_price_table_errors(tmp_path: Path) -> None:
    for body, words in [("storage_classes: {COLD: {price_per_gb_month: 1}}", "unknown storage"),
                        ("storage_classes: {STANDARD_IA: {price_per_gb_month: -1}}", ">= 0"),
                        ("storage_classes: {STANDARD_IA: {retrieval: 1}}", "unknown key")]:
        with pytest.raises(ConfigError, match=words):
            policy_from(tmp_path, f"retention:\n  {body}\n")


def test_cli_refuses_glacier_with_exit_2_and_file_line(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import ckptlake

    monkeypatch.setattr(ckptlake, "open", lambda *a, **k: pytest.fail("lake opened"))
    bad = tmp_path / "policy.yaml"
    bad.write_text("retention:\n  rules:\n    - match: a\n      keep_all: true\n"
                   "      tier: {after: 7d, class: DEEP_ARCHIVE}\n")
    r = cli("gc", "--policy", bad, "--dry-run")
    assert r.exit_code == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and f"{bad}:5: retention.rules[0].tier.class: DEEP_ARCHIVE" in err[0]


# ---- hot and cold ------------------------------------------------------------------------

def test_what_is_hot() -> None:
    tier = Tier(after=30 * DAY, storage_class="STANDARD_IA")
    rule = Rule(match="*", keep_all=True, keep_last=2, keep_every_steps=1000,
                keep_best=KeepBest(metric="loss", count=1), tier=tier)
    old = NOW - timedelta(days=60)
    facts = [VersionFacts("a/ckpt", n, n * 100, old + timedelta(hours=n),
                          {} if n == 3 else {"loss": float(n)})
             for n in range(1, 9)]
    facts.append(VersionFacts("a/ckpt", 9, 900, NOW - timedelta(days=1), {"loss": 9.0}))
    decisions = {d.version: d for d in select(facts, [rule], {"a/ckpt": {"prod": 5}}, NOW)}
    cold = {n: cold_class(d, rule, NOW) for n, d in decisions.items()}
    assert cold[1] is None  # keep_best #1 (loss 1.0)
    assert cold[3] == "STANDARD_IA"  # kept by keep_missing only: not a rank
    assert cold[5] is None  # aliased
    assert cold[8] is None and cold[9] is None  # keep_last 2 (9 is also young and latest)
    assert cold[2] == cold[4] == cold[6] == cold[7] == "STANDARD_IA"  # keep_all, every 1000
    # Younger than `after`: hot whatever keeps it; no tier: never cold.
    assert cold_class(decisions[2], Rule(match="*", keep_all=True,
                                         tier=Tier(90 * DAY, "GLACIER_IR")), NOW) is None
    assert cold_class(decisions[2], Rule(match="*", keep_all=True), NOW) is None


def _version(store: Store, artifact: str, n: int, chunks: dict[str, int], age_days: float,
             ) -> None:
    from ckptlake.format.manifest import ChunkRef, FileEntry, Manifest

    for d, size in chunks.items():
        if not store.exists(layout.chunk_key(d)):
            store.put(layout.chunk_key(d), random.Random(d).randbytes(size))
    files = tuple(FileEntry(f"f{i}", size, chunks=(ChunkRef(d, size),))
                  for i, (d, size) in enumerate(chunks.items()))
    m = Manifest(artifact=artifact, version=n, kind="dir", hash="sha256", files=files,
                 step=n, created=NOW - timedelta(days=age_days))
    store.put(layout.version_key(artifact, n), m.encode())


def D(name: str) -> str:
    import hashlib

    return hashlib.sha256(name.encode()).hexdigest()


def test_shared_chunks_stay_hot_aliases_stay_hot_and_the_warmer_class_wins() -> None:
    from ckptlake.core.catalog import set_alias

    store = MemoryStore(storage_classes=True)
    big = 200 * 1024
    # a/ckpt v1, v2: old and cold; v3: latest (hot).  v1 shares "s" with v3.
    _version(store, "a/ckpt", 1, {D("s"): big, D("a1"): big, D("tiny"): 1000}, 100)
    _version(store, "a/ckpt", 2, {D("a2"): big, D("x"): big}, 99)
    _version(store, "a/ckpt", 3, {D("s"): big, D("a3"): big}, 98)
    # b/model v1 (cold, GLACIER_IR) shares "x" with a/ckpt v2 (cold, STANDARD_IA); v2 is
    # aliased, v3 latest.
    _version(store, "b/model", 1, {D("x"): big, D("b1"): big}, 100)
    _version(store, "b/model", 2, {D("b2"): big}, 100)
    _version(store, "b/model", 3, {D("b3"): big}, 100)
    set_alias(store, "b/model", "prod", 2)
    pol = RetentionPolicy(rules=(
        Rule(match="*/ckpt", keep_all=True, tier=Tier(30 * DAY, "STANDARD_IA"), index=0),
        Rule(match="*/model", keep_all=True, tier=Tier(30 * DAY, "GLACIER_IR"), index=1)))
    plan = plan_gc(store, pol, now=NOW)
    t = plan.tiering
    assert t is not None and t.supported
    moved = {key.rsplit("/", 1)[-1]: cls for key, _, _, cls in t.todo}
    assert moved == {D("a1"): "STANDARD_IA", D("a2"): "STANDARD_IA",
                     D("x"): "STANDARD_IA",  # IA (ckpt) is warmer than GLACIER_IR (model)
                     D("b1"): "GLACIER_IR"}
    assert (t.versions_cold, t.versions_hot) == (3, 3)
    assert t.shared_hot.objects == 1 and t.too_small.objects == 1  # "s"; "tiny"
    # A chunk gc deletes is not tiered: keep only a/ckpt's latest, and v1/v2's chunks go.
    pol2 = RetentionPolicy(rules=(
        Rule(match="*/ckpt", keep_last=1, tier=Tier(30 * DAY, "STANDARD_IA"), index=0),
        Rule(match="*/model", keep_all=True, tier=Tier(30 * DAY, "GLACIER_IR"), index=1)))
    moved2 = {key.rsplit("/", 1)[-1]: cls for key, _, _, cls in plan_gc(
        store, pol2, now=NOW).tiering.todo}
    assert moved2 == {D("x"): "GLACIER_IR", D("b1"): "GLACIER_IR"}


def test_plan_for_1000_versions_matches_an_independent_count() -> None:
    store = tb.SparseStore()
    tb.build(store)
    pol = tb.policy()
    plan = plan_gc(store, pol, now=tb.NOW)
    t = plan.tiering
    assert plan.versions_total == 1000 and plan.versions_deleted == 0
    # The oracle: every version's chunks and temperature, from the manifests, by set algebra.
    from ckptlake.format.manifest import decode_manifest

    hot: set[str] = set()
    cold: dict[str, set[str]] = {}
    aliases = {("team/llm/ckpt", 100), ("team/llm/model", 50)}
    best = sorted(range(1, 801), key=lambda n: (json.loads(store.get(layout.version_key(
        "team/llm/ckpt", n)))["metrics"]["val_loss"], -n))[:3]
    for artifact, count, after, cls in [("team/llm/ckpt", 800, 30, "STANDARD_IA"),
                                        ("team/llm/model", 200, 90, "GLACIER_IR")]:
        for n in range(1, count + 1):
            m = decode_manifest(store.get(layout.version_key(artifact, n)))
            is_hot = (artifact, n) in aliases or n == count \
                or (artifact.endswith("ckpt") and (n > 795 or n in best)) \
                or NOW_AGE(m.created) < after * DAY
            for d in m.chunk_digests():
                (hot.add(d) if is_hot else cold.setdefault(d, set()).add(cls))
    sizes = {layout.parse_chunk_key(k): s for k, s in store.sizes.items()}
    expect: dict[str, list[int]] = {}
    for d, classes in cold.items():
        if d in hot or sizes[d] < 128 * 1024:
            continue
        target = "STANDARD_IA" if "STANDARD_IA" in classes else "GLACIER_IR"
        expect.setdefault(target, []).append(sizes[d])
    assert {c: (u.objects, u.bytes) for c, u in t.moves.items()} == \
        {c: (len(v), sum(v)) for c, v in expect.items()}
    assert t.versions_cold == 679 + 109  # ckpt v1..v680 but v100; model v1..v110 but v50
    # Dollars: before = everything in STANDARD; after = the rest + the moves at their prices.
    total = sum(sizes.values())
    moved = {c: sum(v) for c, v in expect.items()}
    before = total / GB * 0.023
    after = (total - sum(moved.values())) / GB * 0.023 + moved["STANDARD_IA"] / GB * 0.0125 \
        + moved["GLACIER_IR"] / GB * 0.004
    assert t.usd_month_before == pytest.approx(before, abs=1e-3)
    assert t.usd_month_after == pytest.approx(after, abs=1e-3)
    assert t.usd_month_saved == pytest.approx(before - after, abs=2e-3)
    assert t.copy_requests_usd == pytest.approx(
        len(expect["STANDARD_IA"]) * 0.01 / 1000 + len(expect["GLACIER_IR"]) * 0.02 / 1000,
        abs=1e-4)
    assert t.min_duration_usd == pytest.approx(
        moved["STANDARD_IA"] / GB * 0.0125 + moved["GLACIER_IR"] / GB * 0.004 * 3, abs=1e-3)
    # The same numbers in the dry run's text and JSON.
    from ckptlake.cli.gc import plan_text

    text = plan_text(plan)
    assert f"$/month {t.usd_month_before:.2f} -> {t.usd_month_after:.2f}" in text
    assert "GLACIER_IR" in text and "STANDARD_IA" in text
    doc = plan.to_dict()["tiering"]
    assert doc["moves"]["GLACIER_IR"]["objects"] == len(expect["GLACIER_IR"])
    assert "todo" not in doc


def NOW_AGE(created: datetime) -> float:
    return (NOW - created).total_seconds()


# ---- execution ---------------------------------------------------------------------------

def _tiered_lake(store: Store, tmp_path: Path) -> tuple[Lake, dict[int, bytes]]:
    lake = Lake(store, chunk_size=MiB)
    data = {}
    for n in range(1, 4):
        src = tmp_path / f"src{n}"
        src.mkdir(parents=True)
        data[n] = random.Random(n).randbytes(300 * 1024)
        (src / "w.bin").write_bytes(data[n])
        lake.push(src, "p/ckpt", step=n)
    return lake, data


TIER_ALL = RetentionPolicy(rules=(Rule(match="*/ckpt", keep_all=True,
                                       tier=Tier(30 * DAY, "STANDARD_IA")),), grace_period=0)


def _classes(store: Store) -> dict[str, str | None]:
    return {i.key: i.storage_class for i in store.list(layout.CHUNKS_PREFIX)}


def test_moves_on_s3_with_moto_and_pulls_back_bit_exact(moto_store: Any,
                                                         tmp_path: Path) -> None:
    lake, data = _tiered_lake(moto_store, tmp_path)
    later = datetime.now(timezone.utc) + timedelta(days=60)
    plan = plan_gc(moto_store, TIER_ALL, now=later)
    assert plan.has_work and len(plan.tiering.todo) == 2  # v1, v2; v3 is the latest
    calls: list[dict[str, Any]] = []
    moto_store._client.meta.events.register(
        "provide-client-params.s3.CopyObject", lambda params, **_: calls.append(dict(params)))
    result = execute(moto_store, plan, now=lambda: later)
    assert result.tiering == {"chunks_moved": 2, "bytes_moved": 2 * 300 * 1024,
                              "chunks_skipped": 0, "unsupported": None,
                              "chunks_failed": 0, "failed": None}
    assert len(calls) == 2 and all(c["MetadataDirective"] == "COPY" and
                                   c["StorageClass"] == "STANDARD_IA" and
                                   c["CopySourceIfMatch"] for c in calls)
    from ckptlake.core.catalog import resolve

    classes = _classes(moto_store)
    v3_chunks = {layout.chunk_key(d) for d in resolve(moto_store, "p/ckpt@v3").chunk_digests()}
    assert sorted(classes.values()) == ["STANDARD", "STANDARD_IA", "STANDARD_IA"]
    assert v3_chunks and all(classes[key] == "STANDARD" for key in v3_chunks)
    for n in (1, 2, 3):
        lake.pull(f"p/ckpt@v{n}", tmp_path / f"out{n}")
        assert (tmp_path / f"out{n}" / "w.bin").read_bytes() == data[n]
    # Again: nothing left to move (only STANDARD chunks move).
    assert plan_gc(moto_store, TIER_ALL, now=later).tiering.todo == []
    # A chunk replaced since the plan (its ETag changed) is skipped, not moved.
    store2 = MemoryStore(storage_classes=True)
    _tiered_lake(store2, tmp_path / "m")
    plan2 = plan_gc(store2, TIER_ALL, now=later)
    key = plan2.tiering.todo[0][0]
    store2.put(key, store2.get(key))  # same bytes, new ETag
    got = execute(store2, plan2, now=lambda: later).tiering
    assert (got["chunks_moved"], got["chunks_skipped"]) == (1, 1)


def test_seaweedfs_refuses_the_copy_and_nothing_changes(s3_lake_url: str,
                                                        tmp_path: Path) -> None:
    """SeaweedFS 4.48 lists every object as STANDARD and answers CopyObject onto itself with a
    new StorageClass with InvalidRequest: gc warns once and moves nothing."""
    store = open_store(s3_lake_url)
    try:
        lake, data = _tiered_lake(store, tmp_path)
        later = datetime.now(timezone.utc) + timedelta(days=60)
        plan = plan_gc(store, TIER_ALL, now=later)
        assert len(plan.tiering.todo) == 2
        with pytest.raises(StorageClassUnsupported):
            store.set_storage_class(plan.tiering.todo[0][0], "STANDARD_IA")
        before = {i.key: (i.size, i.etag, i.storage_class) for i in store.list("")}
        result = execute(store, plan, now=lambda: later)
        assert result.tiering["chunks_moved"] == 0 and result.tiering["unsupported"]
        assert any("tiering skipped" in w for w in result.warnings)
        after = {i.key: (i.size, i.etag, i.storage_class) for i in store.list("")}
        assert {k: v for k, v in after.items() if k.startswith("chunks/")} == \
            {k: v for k, v in before.items() if k.startswith("chunks/")}
        lake.pull("p/ckpt@v1", tmp_path / "out")
        assert (tmp_path / "out" / "w.bin").read_bytes() == data[1]
        store.delete([i.key for i in store.list("")])
    finally:
        store.close()


def test_local_lake_plans_but_moves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ckptlake.yaml").write_text(
        "lake: ./lake\nretention:\n  grace_period: 0s\n  rules:\n"
        "    - match: '*/ckpt'\n      keep_all: true\n"
        "      tier: {after: 0s, class: GLACIER_IR}\n")
    store = open_store(str(tmp_path / "lake"))
    _tiered_lake(store, tmp_path)
    before = {i.key: (i.size, i.etag) for i in store.list("")}
    r = cli("gc", "--dry-run")
    assert r.exit_code == 0, r.stderr
    assert "file:// lakes have no storage classes: nothing moves" in r.stdout
    doc = json.loads(cli("gc", "--dry-run", "--json").stdout)
    t = doc["plan"]["tiering"]
    assert t["supported"] is False and t["usd_month_saved"] == 0
    assert t["moves"]["GLACIER_IR"]["objects"] == 2  # what S3 would move
    r = cli("gc", "--yes", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["result"]["tiering"]["chunks_moved"] == 0
    after = {i.key: (i.size, i.etag) for i in store.list("")}
    after.pop(layout.GC_SETTINGS_KEY)  # gc publishes its settings on every run
    assert after == before


# ---- the pull estimate -------------------------------------------------------------------

def test_pull_estimate_adds_retrieval_of_cold_bytes(moto_store: Any, tmp_path: Path) -> None:
    _tiered_lake(moto_store, tmp_path)
    from ckptlake.core.catalog import resolve

    m = resolve(moto_store, "p/ckpt@v1")
    keys = [layout.chunk_key(d) for d in m.chunk_digests()]
    policy = EgressPolicy(lake_region="us-east-1", client_region="us-east-1",
                          retrieval_per_gb={"STANDARD_IA": 0.01, "GLACIER_IR": 0.03})
    plain = estimate_pull(moto_store, m, str(tmp_path / "d"), policy)
    assert plain.retrieval == [] and plain.cost_usd == 0.0
    for key in keys:
        moto_store.set_storage_class(key, "GLACIER_IR")
    est = estimate_pull(moto_store, m, str(tmp_path / "d"), policy)
    n = est.bytes_to_download
    assert est.retrieval == [{"class": "GLACIER_IR", "bytes": n, "price_per_gb": 0.03,
                              "cost_usd": round(n / GB * 0.03, 6)}]
    assert est.cost_usd == round(n / GB * 0.03, 6) > 0
    # Without tiering in the policy, no class is asked (no HEADs on every pull).
    assert estimate_pull(moto_store, m, str(tmp_path / "d"),
                         EgressPolicy(lake_region="us-east-1",
                                      client_region="us-east-1")).retrieval == []
    from ckptlake.cli.egress import estimate_summary

    assert "retrieval of" in estimate_summary(est) and "GLACIER_IR" in estimate_summary(est)


def test_egress_policy_reads_retrieval_prices_only_when_the_policy_tiers(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("retention:\n  rules:\n    - {match: a, keep_all: true}\n")
    assert load_egress(load_config(str(path))).retrieval_per_gb is None
    path.write_text("retention:\n  storage_classes: {STANDARD_IA: {retrieval_per_gb: 0.02}}\n"
                    "  rules:\n    - {match: a, keep_all: true, tier: {after: 1d, "
                    "class: STANDARD_IA}}\n")
    assert load_egress(load_config(str(path))).retrieval_per_gb == {
        "STANDARD_IA": 0.02, "ONEZONE_IA": 0.01, "GLACIER_IR": 0.03}


def test_early_deletion_and_objects_too_large_to_copy() -> None:
    from dataclasses import replace

    store = tb.SparseStore()
    tb.build(store, ckpts=10, models=2)
    pol = tb.policy()
    big = plan_gc(store, pol, now=tb.NOW + timedelta(days=60)).tiering.todo[0][0]
    store.sizes[big] = 6 * GB  # beyond CopyObject's 5 GiB
    t = plan_gc(store, pol, now=tb.NOW + timedelta(days=60)).tiering
    assert t.too_large.objects == 1 and all(key != big for key, *_ in t.todo)
    assert t.early_deletion.objects == 0
    # Move ckpt v1's own chunks to GLACIER_IR 10 days ago; then a policy keeping only the
    # newest ckpt deletes them 80 days before Glacier IR's 90-day minimum.
    from ckptlake.core.catalog import resolve

    own = [layout.chunk_key(d) for d in resolve(store, "team/llm/ckpt@v1").chunk_digests()
           if store.sizes[layout.chunk_key(d)] == 256 * MiB and layout.chunk_key(d) != big]
    own = [k for k in own if k.rsplit("/", 1)[-1] not in
           resolve(store, "team/llm/ckpt@v2").chunk_digests()]
    for key in own:
        store.set_storage_class(key, "GLACIER_IR")
    now = max(i.modified for i in store.list("")) + timedelta(days=10)
    keep1 = RetentionPolicy(rules=(replace(pol.rules[0], keep_all=False, keep_last=1,
                                           keep_best=None), pol.rules[1]))
    t = plan_gc(store, keep1, now=now).tiering
    assert t.early_deletion.objects == len(own) > 0
    assert t.early_deletion_usd == pytest.approx(
        len(own) * 256 * MiB / GB * 0.004 * 80 / 30, abs=1e-4)


class _Refusing(MemoryStore):
    """Storage classes, but moves fail: every one (an IAM deny on the class), or only the
    ones in `fail` (a server failing after retries)."""

    def __init__(self, deny: bool = False, fail: frozenset[str] = frozenset()) -> None:
        super().__init__(storage_classes=True)
        self.deny, self.fail = deny, fail

    def set_storage_class(self, key: str, storage_class: str, *, etag: str | None = None
                          ) -> None:
        from ckptlake.errors import AccessDenied, TransferError

        if self.deny:
            raise AccessDenied(f"{key}: AccessDenied (x-amz-storage-class)")
        if key in self.fail:
            raise TransferError(f"{key}: failed after 5 attempts")
        super().set_storage_class(key, storage_class, etag=etag)


def test_a_refused_move_does_not_fail_the_gc_run(tmp_path: Path) -> None:
    """Tiering runs last, after the run's deletions and sweeps: a move the store refuses used
    to raise out of gc (exit 4), dropping the run's result and skipping the replicas' gc."""
    later = datetime.now(timezone.utc) + timedelta(days=60)
    denied = _Refusing(deny=True)
    _tiered_lake(denied, tmp_path / "d")
    result = Lake(denied).gc(plan_gc(denied, TIER_ALL, now=later))
    assert result.tiering["chunks_moved"] == 0 and result.tiering["chunks_failed"] == 2
    assert "AccessDenied" in result.tiering["failed"]
    assert any("tiering: 2 of 2 moves failed" in w for w in result.warnings)

    flaky = _Refusing()
    _tiered_lake(flaky, tmp_path / "f")
    plan = plan_gc(flaky, TIER_ALL, now=later)
    flaky.fail = frozenset({plan.tiering.todo[1][0]})
    result = execute(flaky, plan, now=lambda: later)
    assert (result.tiering["chunks_moved"], result.tiering["chunks_failed"]) == (1, 1)
    assert _classes(flaky)[plan.tiering.todo[1][0]] == "STANDARD"  # the next run moves it
    assert len(plan_gc(flaky, TIER_ALL, now=later).tiering.todo) == 1
