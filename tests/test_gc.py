"""gc on the in-memory store and on local lakes: plan vs. execute, dry runs, grace, the sweep
window, foreign objects, tombstones, interrupted runs that converge, and the CLI."""
from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from typer.testing import CliRunner

from ckptlake.cli.app import app
from ckptlake.core import digestset
from ckptlake.core import gc as gcmod
from ckptlake.core.gc import execute, plan_gc
from ckptlake.core.lakeheader import read_header
from ckptlake.core.push import commit_version
from ckptlake.errors import ConfigError, IntegrityError, NotFound
from ckptlake.format import layout
from ckptlake.format.manifest import ChunkRef, FileEntry, Manifest
from ckptlake.lake import Lake
from ckptlake.policy.retention import MAX_DURATION, KeepBest, RetentionPolicy, Rule, Tier
from ckptlake.store import open_store
from ckptlake.store.base import Store
from ckptlake.store.memory import MemoryStore

MiB = 1 << 20
KEEP2 = Rule(match="*/ckpt", keep_last=2, index=0)


def policy(*rules: Rule, grace: float = 0, window: float = 30, records: float = 60
           ) -> RetentionPolicy:
    return RetentionPolicy(rules=rules or (KEEP2,), grace_period=grace, sweep_window=window,
                           record_retention=records)


class Versions:
    """Pushes versions sharing one chunk; remembers every version's bytes for bit-exact checks."""

    def __init__(self, lake: Lake, tmp: Path, seed: int = 0) -> None:
        self.lake, self.tmp, self.rng = lake, tmp, random.Random(seed)
        self.shared = self.rng.randbytes(MiB)  # one whole chunk every version shares
        self.trees: dict[tuple[str, int], dict[str, bytes]] = {}

    def push(self, artifact: str = "p/ckpt", n: int = 1, **kw: Any) -> list[int]:
        out = []
        for _ in range(n):
            files = {"shared.bin": self.shared,
                     "own.bin": self.rng.randbytes(MiB + self.rng.randint(1, 999)),
                     "cfg.json": self.rng.randbytes(200)}
            src = self.tmp / f"src-{len(self.trees)}"
            src.mkdir()
            for name, data in files.items():
                (src / name).write_bytes(data)
            r = self.lake.push(src, artifact, step=(len(self.trees) + 1) * 100,
                               metrics={"loss": self.rng.random()}, **kw)
            self.trees[(artifact, r.version)] = files
            out.append(r.version)
        return out

    def check_pull(self, artifact: str, version: int) -> None:
        dest = self.tmp / f"pull-{artifact.replace('/', '_')}-{version}-{random.random()}"
        self.lake.pull(f"{artifact}@v{version}", dest)
        got = {p.name: p.read_bytes() for p in dest.iterdir()}
        assert got == self.trees[(artifact, version)], f"{artifact}@v{version} differs"


def snapshot(store: Store) -> dict[str, tuple[int, str]]:
    """Every object (size, etag) and every multipart upload: what 'changes nothing' compares."""
    objs = {o.key: (o.size, o.etag) for o in store.list("")}
    objs.update({f"<upload {u.upload_id}>": (0, u.key) for u in store.list_multipart("")})
    return objs


def live_chunks(store: Store) -> set[str]:
    out: set[str] = set()
    for info in store.list(layout.ARTIFACTS_PREFIX):
        if layout.parse_version_key(info.key):
            doc = json.loads(store.get(info.key))
            out |= {c[0] for f in doc["files"] for c in f.get("chunks", [])}
    return out


def chunk_keys(store: Store) -> set[str]:
    return {d for o in store.list(layout.CHUNKS_PREFIX) if (d := layout.parse_chunk_key(o.key))}


@pytest.fixture(params=["memory", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    """The in-memory store with gc's digest sets in memory; a local lake with them spilled to
    disk after 2 digests (the path a lake of millions of chunks takes), in a scratch dir that
    must be empty again after every test: gc removes its temporary files."""
    if request.param == "memory":
        yield MemoryStore()
        return
    scratch = tmp_path / "gc-scratch"
    scratch.mkdir()
    monkeypatch.setattr(gcmod, "SPILL_AT", 2)
    monkeypatch.setattr(gcmod, "SCRATCH_DIR", str(scratch))
    monkeypatch.setattr(digestset, "_BLOCK", 2)
    yield open_store("file://" + str(tmp_path / "lake"))
    assert list(scratch.iterdir()) == []


@pytest.fixture
def lake(store: Store) -> Lake:
    return Lake(store, chunk_size=MiB)


# ---- plan and execute ------------------------------------------------------------------------

def test_dry_run_plan_changes_nothing(lake: Lake, store: Store, tmp_path: Path) -> None:
    v = Versions(lake, tmp_path)
    v.push(n=5)
    store.put("notes.txt", b"not the lake's")
    store.create_multipart(layout.chunk_key("ab" * 32))
    before = snapshot(store)
    plan = plan_gc(store, policy())
    assert plan.versions_deleted == 3 and plan.has_work and plan.multipart
    assert snapshot(store) == before


def test_execute_deletes_exactly_the_plan_and_frees_the_predicted_bytes(
        lake: Lake, store: Store, tmp_path: Path) -> None:
    v = Versions(lake, tmp_path)
    v.push(n=5)
    v.push("q/model", n=2)  # no rule matches: kept whole
    lake.alias("p/ckpt@v2", "prod")
    plan = plan_gc(store, policy())
    assert [x.version for x in plan.artifacts[0].delete] == [1, 3]
    assert plan.unmatched == ["q/model"] and not plan.artifacts[1].delete
    sizes_before = {o.key: o.size for o in store.list(layout.CHUNKS_PREFIX)}
    result = execute(store, plan)
    sizes_after = {o.key: o.size for o in store.list(layout.CHUNKS_PREFIX)}
    assert sorted(result.versions_deleted) == ["p/ckpt@v1", "p/ckpt@v3"]
    assert sum(sizes_before.values()) - sum(sizes_after.values()) == plan.bytes_freed_now \
        == plan.bytes_freed == result.bytes_swept > 0
    assert chunk_keys(store) == live_chunks(store), "every unreferenced chunk is gone"
    for artifact, version in [("p/ckpt", 2), ("p/ckpt", 4), ("p/ckpt", 5), ("q/model", 1),
                              ("q/model", 2)]:
        v.check_pull(artifact, version)
    assert [t.version for t in lake.expired("p/ckpt")] == [1, 3]
    again = plan_gc(store, policy())
    assert not again.has_work and again.bytes_freed == 0, "nothing more to do"


def test_plan_reports_reasons_and_footprint(lake: Lake, store: Store, tmp_path: Path) -> None:
    v = Versions(lake, tmp_path)
    v.push(n=4)
    plan = plan_gc(store, policy(Rule(match="*/ckpt", keep_last=1,
                                      keep_best=KeepBest("loss", "min", 1), index=0)),
                   now=datetime.now(timezone.utc) + timedelta(days=3))
    ap = plan.artifacts[0]
    assert ap.rule == "rules[0] (match '*/ckpt')"
    assert all(x.age_seconds >= 3 * 86400 and x.total_bytes > MiB for x in ap.delete)
    assert all("not among the newest 1" in x.reason for x in ap.delete)
    assert set(ap.kept_by) >= {"keep_last 1", "latest", "keep_best loss min"}
    assert plan.footprint_after.bytes == plan.footprint_before.bytes - plan.bytes_freed - sum(
        len(store.get(layout.version_key("p/ckpt", x.version))) for x in ap.delete)
    assert plan.monthly_saving_usd == round(plan.bytes_freed / (1 << 30) * 0.023, 4)
    doc = plan.to_dict()
    json.dumps(doc)
    assert doc["artifacts"][0]["delete"][0]["reason"] == ap.delete[0].reason


def test_foreign_objects_are_reported_and_never_deleted(lake: Lake, store: Store,
                                                        tmp_path: Path) -> None:
    Versions(lake, tmp_path).push(n=3)
    misplaced = "chunks/ab/" + "cd" * 32  # a digest under the wrong fan-out directory
    foreign = ["notes.txt", "chunks/readme.md", misplaced, "artifacts/p/README",
               "gc/notes.json"]
    # Every object under gc/condemned/ is a record, whatever its name (docs/format.md): this
    # one is an unreadable record, reported as such, never deleted.
    not_a_record = "gc/condemned/not-a-record.json"
    for key in foreign + [not_a_record]:
        store.put(key, b"someone else's")
    old = datetime.now(timezone.utc) + timedelta(days=30)
    plan = plan_gc(store, policy(grace=3600), now=old)
    assert sorted(plan.foreign_keys) == sorted(foreign) and plan.foreign.objects == len(foreign)
    assert plan.unreadable_records == [not_a_record]
    for _ in range(3):
        execute(store, plan_gc(store, policy(grace=0)))
    keys = {o.key for o in store.list("")}
    assert set(foreign) | {not_a_record} <= keys


def test_unreadable_manifest_stops_gc_before_anything_is_deleted(lake: Lake, store: Store,
                                                                 tmp_path: Path) -> None:
    Versions(lake, tmp_path).push(n=3)
    store.put(layout.version_key("p/ckpt", 9), b"{not json")
    before = snapshot(store)
    with pytest.raises(IntegrityError, match="0000000009"):
        plan_gc(store, policy())
    assert snapshot(store) == before


def test_keep_best_metric_nobody_has_is_a_config_error(lake: Lake, store: Store,
                                                       tmp_path: Path) -> None:
    Versions(lake, tmp_path).push(n=2)
    p = replace(policy(Rule(match="*/ckpt", keep_best=KeepBest("val_los", "min", 1), index=0)),
                source="/etc/ckptlake.yaml",
                lines={"retention.rules[0].keep_best.metric": 12})
    with pytest.raises(ConfigError) as info:
        plan_gc(store, p)
    assert str(info.value).startswith("/etc/ckptlake.yaml:12: retention.rules[0].keep_best.metric")


def test_match_limits_the_artifacts_considered(lake: Lake, store: Store, tmp_path: Path) -> None:
    v = Versions(lake, tmp_path)
    v.push("a/ckpt", n=3)
    v.push("b/ckpt", n=3)
    plan = plan_gc(store, policy(), match="a/*")
    assert [ap.artifact for ap in plan.artifacts] == ["a/ckpt"] and plan.versions_deleted == 1
    execute(store, plan)
    assert [x.version for x in lake.versions("b/ckpt")] == [1, 2, 3]
    assert [x.version for x in lake.versions("a/ckpt")] == [2, 3]
    v.check_pull("b/ckpt", 1)


def test_a_version_aliased_after_planning_is_spared(lake: Lake, store: Store,
                                                    tmp_path: Path) -> None:
    v = Versions(lake, tmp_path)
    v.push(n=4)
    plan = plan_gc(store, policy())
    lake.alias("p/ckpt@v1", "candidate")
    result = execute(store, plan)
    assert result.versions_spared == ["p/ckpt@v1"] and result.versions_deleted == ["p/ckpt@v2"]
    v.check_pull("p/ckpt", 1)
    assert [t.version for t in lake.expired("p/ckpt")] == [2]


def test_deleted_version_messages_and_tombstones(lake: Lake, store: Store, tmp_path: Path) -> None:
    v = Versions(lake, tmp_path)
    v.push(n=3)
    execute(store, plan_gc(store, policy()))
    with pytest.raises(NotFound, match=r"p/ckpt@v1 was deleted by gc on \d{4}-\d\d-\d\d .* under "
                                       r"rules\[0\] \(match '\*/ckpt'\)"):
        lake.pull("p/ckpt@v1", tmp_path / "x")
    with pytest.raises(NotFound, match=r"p/ckpt@step=100 \(v1\) was deleted by gc"):
        lake.pull("p/ckpt@step=100", tmp_path / "x")
    with pytest.raises(NotFound, match="does not exist"):
        lake.pull("p/ckpt@v9", tmp_path / "x")
    [tomb] = lake.expired("p/ckpt")
    assert (tomb.version, tomb.step, tomb.state) == (1, 100, "expired")
    assert "loss" in tomb.metrics and tomb.total_bytes > MiB and tomb.files == 3
    assert tomb.reason == "not among the newest 2"
    assert lake.expired_counts() == {"p/ckpt": 1}


# ---- grace period, records, the sweep window --------------------------------------------------

def later(hours: float) -> Callable[[], datetime]:
    return lambda: datetime.now(timezone.utc) + timedelta(hours=hours)


def test_grace_period_condemns_first_and_sweeps_a_later_run(lake: Lake, store: Store,
                                                            tmp_path: Path) -> None:
    v = Versions(lake, tmp_path)
    v.push(n=3)
    p = policy(grace=3600)
    plan = plan_gc(store, p)
    assert plan.freed_after is not None and plan.bytes_freed_now == 0
    young = execute(store, plan)  # chunks are minutes old: nothing condemned yet
    assert young.versions_deleted == ["p/ckpt@v1"] and young.chunks_condemned == 0
    doomed = chunk_keys(store) - live_chunks(store)
    assert doomed
    first = execute(store, plan_gc(store, p, now=later(2)()), now=later(2))
    assert first.chunks_condemned == len(doomed) and first.chunks_swept == 0
    assert chunk_keys(store) >= doomed, "condemned, not swept: the record is not ripe yet"
    assert plan_gc(store, p, now=later(2)()).condemned_waiting.objects == len(doomed)
    ripe = plan_gc(store, p, now=later(4)())
    assert ripe.condemned_ripe.objects == len(doomed) and ripe.bytes_freed_now > 0
    second = execute(store, ripe, now=later(4))
    assert second.chunks_swept == len(doomed) and not chunk_keys(store) & doomed
    assert second.bytes_swept == ripe.bytes_freed_now
    assert len(list(store.list(layout.CONDEMNED_PREFIX))) == 1, "swept record kept a while"
    third = execute(store, plan_gc(store, p, now=later(5)()), now=later(5))
    assert third.records_removed == 1 and not list(store.list(layout.CONDEMNED_PREFIX))
    v.check_pull("p/ckpt", 2)
    v.check_pull("p/ckpt", 3)


def backdate(store: Store, key: str, when: datetime) -> None:
    """Set an object's last-modified time (what condemn and the plan compare with the grace)."""
    if isinstance(store, MemoryStore):
        data, etag, _ = store._objects[key]
        store._objects[key] = (data, etag, when)
    else:
        os.utime(getattr(store, "inner", store)._path(key), (when.timestamp(),) * 2)


def chunks_of(store: Store, artifact: str, version: int) -> set[str]:
    doc = json.loads(store.get(layout.version_key(artifact, version)))
    return {c[0] for f in doc["files"] for c in f.get("chunks", [])}


def test_freed_after_is_when_the_youngest_freed_chunk_can_be_swept(lake: Lake, store: Store,
                                                                   tmp_path: Path) -> None:
    """A chunk only deleted versions use but younger than the grace period is not condemned by
    this run: the first run after its grace condemns it and a run a grace later sweeps it.  The
    plan's freed_after is that time for the youngest such chunk (it used to say now + grace for
    all), and not a moment later or earlier: runs at the right times free every announced byte
    by freed_after, and the last of them not before."""
    v = Versions(lake, tmp_path)
    v.push(n=3)
    doomed = chunks_of(store, "p/ckpt", 1) - chunks_of(store, "p/ckpt", 2) \
        - chunks_of(store, "p/ckpt", 3)
    assert len(doomed) >= 2
    young, *old = sorted(doomed)
    t0 = datetime.now(timezone.utc)
    for d in old:
        backdate(store, layout.chunk_key(d), t0 - timedelta(hours=5))
    info = {layout.parse_chunk_key(o.key): o for o in store.list(layout.CHUNKS_PREFIX)}
    m = info[young].modified
    hour = timedelta(hours=1)
    p = policy(grace=3600)

    plan = plan_gc(store, p, now=t0)
    assert plan.freed_after == m + 2 * hour > t0 + hour
    assert plan.freed_by_versions.objects == len(doomed) and plan.bytes_freed_now == 0
    assert (plan.freed_by_versions_young.objects, plan.freed_by_versions_young.bytes) == \
        (1, info[young].size)
    assert plan.to_dict()["freed_by_versions_young"] == {"objects": 1, "bytes": info[young].size}
    assert plan.bytes_freed == sum(info[d].size for d in doomed)
    later_plan = plan_gc(store, p, now=t0 + 5 * hour)  # every chunk older than the grace
    assert later_plan.freed_after == t0 + 6 * hour
    assert later_plan.freed_by_versions_young.objects == 0

    def run(at: datetime) -> Any:
        return execute(store, plan_gc(store, p, now=at), now=lambda: at)

    assert execute(store, plan, now=lambda: t0).chunks_condemned == len(old)
    at_grace = run(m + hour)  # the old ones' record is not ripe yet; the young one is condemned
    assert (at_grace.chunks_swept, at_grace.chunks_condemned) == (0, 1)
    before = run(plan.freed_after - timedelta(microseconds=1))
    assert before.bytes_swept == plan.bytes_freed - info[young].size
    assert young in chunk_keys(store)
    last = run(plan.freed_after)
    assert last.bytes_swept == info[young].size and not chunk_keys(store) & doomed
    v.check_pull("p/ckpt", 2)
    v.check_pull("p/ckpt", 3)


def test_the_longest_durations_plan_and_run(lake: Lake, store: Store, tmp_path: Path) -> None:
    """100 years (retention.MAX_DURATION) in every duration still fits gc's datetime arithmetic:
    now - grace, keep_within, tier.after, and freed_after = modified + 2 x grace."""
    v = Versions(lake, tmp_path)
    v.push(n=3)
    rule = Rule(match="*/ckpt", keep_last=1, keep_within=MAX_DURATION,
                tier=Tier(MAX_DURATION, "STANDARD_IA"), index=0)
    p = policy(rule, grace=MAX_DURATION)
    now = datetime.now(timezone.utc)
    plan = plan_gc(store, p, now=now)
    assert plan.versions_deleted == 0 and plan.freed_after == now + timedelta(days=36500)
    execute(store, plan)
    p = policy(replace(rule, keep_within=None), grace=MAX_DURATION)
    plan = plan_gc(store, p, now=now)
    assert plan.versions_deleted == 2
    assert plan.freed_after > now + timedelta(days=2 * 36500 - 1)
    assert execute(store, plan).chunks_condemned == 0


def test_a_condemned_chunk_referenced_again_is_rescued(lake: Lake, store: Store,
                                                       tmp_path: Path) -> None:
    v = Versions(lake, tmp_path)
    v.push(n=3)
    # a short sweep_window: the push below waits it out twice (before and after its commit)
    p = policy(grace=3600, window=1, records=2)
    execute(store, plan_gc(store, p))
    execute(store, plan_gc(store, p, now=later(2)()), now=later(2))  # condemns v1's chunks
    doomed = chunk_keys(store) - live_chunks(store)
    # A push deduplicates against the condemned chunks: re-push v1's exact bytes.
    src = tmp_path / "again"
    src.mkdir()
    for name, data in v.trees[("p/ckpt", 1)].items():
        (src / name).write_bytes(data)
    r = lake.push(src, "p/ckpt")
    assert r.bytes_uploaded == 0, "deduplicated against condemned chunks"
    v.trees[("p/ckpt", r.version)] = v.trees[("p/ckpt", 1)]
    result = execute(store, plan_gc(store, p, now=later(4)()), now=later(4))
    assert result.chunks_rescued == len(doomed) and result.chunks_swept == 0
    v.check_pull("p/ckpt", r.version)


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_sweep_never_deletes_with_a_listing_older_than_the_window(
        lake: Lake, store: Store, tmp_path: Path) -> None:
    """A manifest committed after the mark, referencing a condemned chunk, is seen because the
    sweep re-marks once its listing is older than sweep_window."""
    v = Versions(lake, tmp_path)
    v.push(n=3)
    p = policy(grace=3600, window=10)
    execute(store, plan_gc(store, p))
    execute(store, plan_gc(store, p, now=later(2)()), now=later(2))
    doomed = chunk_keys(store) - live_chunks(store)
    clock = FakeClock()
    v1 = json.loads(store.get(layout.tombstone_key("p/ckpt", 1)))
    files = tuple(FileEntry(path=f"c{i}", size=1, chunks=(ChunkRef(d, 1),))
                  for i, d in enumerate(sorted(doomed)))

    def on_event(name: str) -> None:
        if name == "mark.done":  # a push commits right after our listing, then time passes
            algo = read_header(store).hash  # type: ignore[union-attr]
            commit_version(store, Manifest(artifact="p/ckpt", version=0, kind="dir",
                                           hash=algo, files=files, metrics=v1["metrics"]))
            clock.t += 11

    result = execute(store, plan_gc(store, p, now=later(4)()), now=later(4), clock=clock,
                     on_event=on_event)
    assert result.manifest_listings >= 2 and result.chunks_swept == 0
    assert chunk_keys(store) >= doomed


def test_a_sweep_batch_whose_lookups_outlast_the_window_is_asked_again(
        lake: Lake, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """L can be on disk: if looking a batch up in it takes the listing past its budget, the
    batch is looked up again after a fresh mark, which sees a push committed meanwhile."""
    v = Versions(lake, tmp_path)
    v.push(n=3)
    p = policy(grace=3600, window=10)
    execute(store, plan_gc(store, p))
    execute(store, plan_gc(store, p, now=later(2)()), now=later(2))
    doomed = chunk_keys(store) - live_chunks(store)
    assert doomed
    clock = FakeClock()
    v1 = json.loads(store.get(layout.tombstone_key("p/ckpt", 1)))
    files = tuple(FileEntry(path=f"c{i}", size=1, chunks=(ChunkRef(d, 1),))
                  for i, d in enumerate(sorted(doomed)))
    plan = plan_gc(store, p, now=later(4)())
    real_contains = gcmod.DigestSet.__contains__
    slow = [True]

    def contains(self: Any, digest: object) -> bool:
        if slow and slow.pop():  # the first lookup of the sweep: slow, and a push commits
            algo = read_header(store).hash  # type: ignore[union-attr]
            commit_version(store, Manifest(artifact="p/ckpt", version=0, kind="dir",
                                           hash=algo, files=files, metrics=v1["metrics"]))
            clock.t += 11
        return real_contains(self, digest)

    monkeypatch.setattr(gcmod.DigestSet, "__contains__", contains)
    result = execute(store, plan, now=later(4), clock=clock)
    assert result.manifest_listings >= 2 and result.chunks_swept == 0
    assert result.chunks_rescued == len(doomed)
    assert chunk_keys(store) >= doomed


def test_a_listing_that_stays_too_old_stops_the_sweep(lake: Lake, store: Store,
                                                      tmp_path: Path) -> None:
    v = Versions(lake, tmp_path)
    v.push(n=3)

    class Slow(FakeClock):
        def __call__(self) -> float:  # every look at the clock costs 20 s
            self.t += 20
            return self.t

    with pytest.raises(gcmod.TransferError, match="sweep_window"):
        execute(store, plan_gc(store, policy(window=10)), clock=Slow())
    assert chunk_keys(store) >= live_chunks(store)
    v.check_pull("p/ckpt", 3)


def test_stale_multipart_uploads_of_lake_keys_are_aborted(lake: Lake, store: Store,
                                                          tmp_path: Path) -> None:
    Versions(lake, tmp_path).push(n=1)
    ours = store.create_multipart(layout.chunk_key("ab" * 32))
    theirs = store.create_multipart("backups/db.tar")
    assert execute(store, plan_gc(store, policy(grace=3600))).multipart_aborted == 0
    result = execute(store, plan_gc(store, policy(grace=3600), now=later(2)()), now=later(2))
    assert result.multipart_aborted == 1
    assert [u.upload_id for u in store.list_multipart("")] == [theirs] != [ours]


def test_unreferenced_leftovers_of_a_crashed_push_are_collected(lake: Lake, store: Store,
                                                                tmp_path: Path) -> None:
    Versions(lake, tmp_path).push(n=1)
    orphan = os.urandom(1000)
    d = hashlib.sha256(orphan).hexdigest()
    store.put(layout.chunk_key(d), orphan)
    plan = plan_gc(store, policy(grace=3600), now=later(2)())
    assert plan.garbage.objects == 1 and plan.garbage.bytes == 1000
    assert plan_gc(store, policy(grace=3600)).young_garbage.objects == 1
    execute(store, plan_gc(store, policy()))
    assert d not in chunk_keys(store)


def test_shard_records_of_uncommitted_steps_are_roots(lake: Lake, store: Store,
                                                      tmp_path: Path) -> None:
    Versions(lake, tmp_path).push(n=1)
    data = os.urandom(500)
    d = hashlib.sha256(data).hexdigest()
    store.put(layout.chunk_key(d), data)
    record = {"ckptlake_shard": 1, "artifact": "p/ckpt", "step": 7, "rank": 0, "world": 2,
              "manifest": {"files": [{"path": "w", "size": 500, "chunks": [[d, 500]]}]}}
    store.put(layout.shard_record_key("p/ckpt", 7, 0, 2), json.dumps(record).encode())
    execute(store, plan_gc(store, policy()))
    assert d in chunk_keys(store), "a pending step's chunks are live"
    # Committed, and that version later deleted (tombstone): the record roots nothing.
    store.put(layout.shard_claim_key("p/ckpt", 7),
              json.dumps({"state": "committed", "version": 5}).encode())
    store.put(layout.tombstone_key("p/ckpt", 5), b"{}")
    execute(store, plan_gc(store, policy()))
    assert d not in chunk_keys(store)


# ---- interrupted runs converge -----------------------------------------------------------------

class Stop(Exception):
    pass


def stop_at(name: str, nth: int = 1) -> Callable[[str], None]:
    seen = {"n": 0}

    def hook(event: str) -> None:
        if event == name:
            seen["n"] += 1
            if seen["n"] == nth:
                raise Stop(event)

    return hook


def final_state(store: Store) -> tuple[set[str], set[str], set[str]]:
    keys = {o.key for o in store.list("")}
    return ({k for k in keys if layout.parse_version_key(k)},
            {k for k in keys if layout.parse_tombstone_key(k)},
            {d for k in keys if (d := layout.parse_chunk_key(k))})


@pytest.mark.parametrize("grace", [0, 3600])
@pytest.mark.parametrize("point", [("retention.tombstone", 2), ("retention.artifact", 1),
                                   ("mark.done", 1), ("sweep.batch", 2), ("sweep.record", 1),
                                   ("condemn.record", 1)])
def test_gc_killed_at_any_point_converges_with_nothing_lost(
        point: tuple[str, int], grace: int, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Stop a run at `point` (after the nth such event), run gc again: the lake ends exactly
    as after uninterrupted runs, and every surviving version pulls bit-exact."""
    monkeypatch.setattr(gcmod, "DELETE_BATCH", 3)  # several batches: "half the sweep" exists
    monkeypatch.setattr(gcmod, "RECORD_MAX_CHUNKS", 4)
    results = []
    for kill in (False, True):
        store = MemoryStore()
        lake = Lake(store, chunk_size=MiB)
        work = tmp_path / f"run-{kill}"
        work.mkdir()
        v = Versions(lake, work, seed=7)
        v.push("a/ckpt", n=5)
        v.push("b/ckpt", n=4)
        hook = stop_at(*point) if kill else None
        stopped = 0
        for hours in (2, 4, 6, 8, 10):  # with grace 1h: condemn, then sweep on the next run
            try:
                execute(store, plan_gc(store, policy(grace=grace), now=later(hours)()),
                        now=later(hours), on_event=hook)
            except Stop:
                stopped += 1
        assert stopped == kill, f"the run was {'not ' if kill else ''}stopped at {point}"
        state = final_state(store)
        assert state[2] == live_chunks(store), "exactly the referenced chunks remain"
        for artifact, version in v.trees:
            if layout.version_key(artifact, version) in state[0]:
                v.check_pull(artifact, version)
            else:
                assert layout.tombstone_key(artifact, version) in state[1]
        results.append(state)
    assert results[0] == results[1]


# ---- the CLI -----------------------------------------------------------------------------------

def cli(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def cli_lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Lake, Versions]:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ckptlake.yaml").write_text(
        "lake: ./lake\nretention:\n  grace_period: 0s\n  rules:\n"
        "    - match: '*/ckpt'\n      keep_last: 2\n")
    lake = Lake(open_store(str(tmp_path / "lake")), chunk_size=MiB)
    v = Versions(lake, tmp_path)
    v.push(n=4)
    return tmp_path, lake, v


def test_cli_dry_run_json_and_refusal_then_yes(cli_lake: tuple[Path, Lake, Versions]) -> None:
    root, lake, v = cli_lake
    before = snapshot(lake.store)
    r = cli("gc", "--dry-run")
    assert r.exit_code == 0, r.stderr
    assert "p/ckpt: delete 2 of 4 versions under rules[0] (match '*/ckpt'), line 5" in r.stdout
    assert "v1" in r.stdout and "not among the newest 2" in r.stdout
    doc = json.loads(cli("gc", "--dry-run", "--json").stdout)
    assert doc["dry_run"] is True and doc["plan"]["versions_deleted"] == 2
    assert [x["version"] for x in doc["plan"]["artifacts"][0]["delete"]] == [1, 2]
    assert snapshot(lake.store) == before
    r = cli("gc")  # not a terminal, no --yes
    assert r.exit_code == 7 and "--yes" in r.stderr
    assert snapshot(lake.store) == before
    r = cli("gc", "--json")
    assert r.exit_code == 7 and json.loads(r.stdout)["error"]["type"] == "PolicyRefusal"
    r = cli("gc", "--yes", "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["result"]["versions_deleted"] == ["p/ckpt@v1", "p/ckpt@v2"]
    assert doc["result"]["bytes_swept"] == doc["plan"]["bytes_freed"]
    r = cli("ls", "p/ckpt", "--all")
    lines = r.stdout.splitlines()
    assert lines[0].split()[-1] == "STATE"
    assert lines[1].startswith("v1") and "expired" in lines[1]
    assert lines[3].startswith("v3") and lines[3].endswith("live")
    doc = json.loads(cli("ls", "p/ckpt", "--all", "--json").stdout)
    assert [t["version"] for t in doc["expired"]] == [1, 2]
    assert [x["version"] for x in doc["versions"]] == [3, 4]
    r = cli("pull", "p/ckpt@v1", root / "out")
    assert r.exit_code == 3 and "deleted by gc on" in r.stderr
    assert "rules[0] (match '*/ckpt')" in r.stderr


def test_cli_policy_errors_exit_2_before_the_lake_is_opened(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    import ckptlake

    monkeypatch.setattr(ckptlake, "open", lambda *a, **k: pytest.fail("lake opened"))
    bad = tmp_path / "policy.yaml"
    bad.write_text("retention:\n  rules:\n    - match: a\n      keep_last: 0\n")
    r = cli("gc", "--policy", bad, "--dry-run")
    assert r.exit_code == 2
    assert f"{bad}:3: retention.rules[0]: this rule keeps nothing" in r.stderr


def test_cli_a_duration_beyond_100_years_exits_2(tmp_path: Path) -> None:
    """It used to reach gc's datetime arithmetic: 'internal error: OverflowError', exit 1."""
    bad = tmp_path / "policy.yaml"
    bad.write_text("retention:\n  grace_period: 100000000w\n  rules:\n    - match: c\n"
                   "      keep_last: 1\n")
    r = cli("gc", "--policy", bad, "--dry-run", "--lake", tmp_path / "lake")
    assert r.exit_code == 2, r.stderr
    assert f"{bad}:2: retention.grace_period: must be at most 36500d (100 years), got " \
           "100000000w" in r.stderr


def test_cli_policy_file_and_match(cli_lake: tuple[Path, Lake, Versions]) -> None:
    root, lake, v = cli_lake
    v.push("other/ckpt", n=3)
    (root / "keep1.yaml").write_text("retention:\n  grace_period: 0s\n  rules:\n"
                                     "    - {match: '*', keep_last: 1}\n")
    doc = json.loads(cli("gc", "--policy", root / "keep1.yaml", "--match", "other/*",
                         "--dry-run", "--json").stdout)
    assert [(a["artifact"], len(a["delete"])) for a in doc["plan"]["artifacts"]] == \
        [("other/ckpt", 2)]


def test_cli_nothing_to_do_runs_without_yes(cli_lake: tuple[Path, Lake, Versions]) -> None:
    root, lake, v = cli_lake
    assert cli("gc", "--yes", "-q").exit_code == 0
    r = cli("gc")
    assert r.exit_code == 0, r.stderr
    assert "deleted 0 versions" in r.stdout


def test_everything_a_push_writes_is_the_lakes_own(lake: Lake, store: Store,
                                                  tmp_path: Path) -> None:
    """Indexes (summaries, lineage markers), aliases, tombstones, records: none is 'foreign'."""
    v = Versions(lake, tmp_path)
    v.push(n=2)
    v.push("q/ckpt", n=1, parents=["p/ckpt@v1"])
    lake.alias("p/ckpt@v1", "prod")
    execute(store, plan_gc(store, policy(Rule(match="*", keep_last=1, index=0))))
    plan = plan_gc(store, policy())
    assert plan.foreign.objects == 0, plan.foreign_keys
    assert all(layout.is_lake_key(o.key) for o in store.list(""))


def test_plan_headings_count_versions_in_english() -> None:
    from types import SimpleNamespace

    from ckptlake.cli.gc import artifact_heading

    one = SimpleNamespace(artifact="a/b", rule=None, versions=1, rule_line=None, delete=[],
                          bytes_freed=0)
    assert artifact_heading(one) == "a/b: kept whole (1 version): no retention rule matches"
    two = SimpleNamespace(**{**vars(one), "rule": "keep_last: 3", "rule_line": 4, "versions": 2})
    assert artifact_heading(two) == "a/b: nothing to delete (2 versions) under keep_last: 3, line 4"


# ---- bounded memory: the on-disk digest sets --------------------------------------------------

def _two_lakes(tmp_path: Path) -> list[tuple[Store, Versions]]:
    """Two lakes with the same history: versions, aliases, an orphan, a pending record."""
    out = []
    for name in ("in-memory", "spilled"):
        store = MemoryStore()
        lake = Lake(store, chunk_size=MiB)
        (tmp_path / name).mkdir()
        v = Versions(lake, tmp_path / name, seed=7)
        both = tmp_path / name / "both"  # one chunk the deletions of two artifacts free
        both.mkdir()
        (both / "both.bin").write_bytes(random.Random(3).randbytes(MiB))
        lake.push(both, "p/ckpt")
        v.push(n=6)
        lake.push(both, "q/ckpt")
        v.push("q/ckpt", n=4)
        lake.alias("p/ckpt@v2", "prod")
        store.put(layout.chunk_key(hashlib.sha256(b"orphan").hexdigest()), b"orphan")
        out.append((store, v))
    return out


def _timeless(doc: Any) -> Any:
    """A plan without its times (the two lakes were pushed moments apart)."""
    if isinstance(doc, dict):
        return {k: _timeless(v) for k, v in doc.items()
                if k not in ("now", "freed_after", "created", "age_seconds")}
    if isinstance(doc, list):
        return [_timeless(x) for x in doc]
    return doc


def test_spilled_digest_sets_give_exactly_the_in_memory_plan_and_result(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (mem_store, _), (disk_store, disk_v) = _two_lakes(tmp_path)
    p = policy(grace=3600)
    spills: list[int] = []
    real_spill = gcmod.DigestSet._spill

    def counting_spill(self: Any) -> None:
        spills.append(1)
        real_spill(self)

    def run(store: Store, spill_at: int) -> tuple[list[dict], list[dict], set[str]]:
        monkeypatch.setattr(gcmod, "SPILL_AT", spill_at)
        plans, results = [], []
        for hours in (0, 2, 4):  # retention; condemn; sweep the ripe record
            plan = plan_gc(store, p, now=later(hours)())
            plans.append(_timeless(plan.to_dict()))
            r = execute(store, plan, now=later(hours)).to_dict()
            r.pop("seconds")
            results.append(r)
        return plans, results, {o.key for o in store.list("")
                                if layout.parse_chunk_key(o.key) or layout.parse_version_key(o.key)
                                or layout.parse_tombstone_key(o.key)}

    mem = run(mem_store, 1_000_000)
    assert not spills
    monkeypatch.setattr(digestset, "_BLOCK", 3)
    monkeypatch.setattr(gcmod.DigestSet, "_spill", counting_spill)
    disk = run(disk_store, 2)
    assert len(spills) > 10, "the small limit made gc spill"
    assert mem[0] == disk[0] and mem[1] == disk[1]
    assert mem[2] == disk[2], "the same chunks, manifests and tombstones are left"
    assert sum(r["chunks_swept"] for r in disk[1]) > 0
    assert mem[0][0]["artifacts"][0]["bytes_freed"] > mem[0][0]["artifacts"][1]["bytes_freed"]
    for version in (2, 6, 7):
        disk_v.check_pull("p/ckpt", version)


def test_gc_removes_its_temporary_files_when_it_fails(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    store = MemoryStore()
    Versions(Lake(store, chunk_size=MiB), tmp_path).push(n=4)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(gcmod, "SPILL_AT", 2)
    monkeypatch.setattr(gcmod, "SCRATCH_DIR", str(scratch))
    seen: list[list[str]] = []
    real_list = store.list

    def failing_list(prefix: str = "", **kw: Any) -> Any:
        if prefix in ("", layout.CHUNKS_PREFIX):  # plan's full listing; execute's condemn
            seen.append([p.name for p in scratch.iterdir()])
            raise NotFound("the listing failed")
        return real_list(prefix, **kw)

    plan = plan_gc(store, policy())
    monkeypatch.setattr(store, "list", failing_list)
    with pytest.raises(NotFound):
        plan_gc(store, policy())
    with pytest.raises(NotFound):
        execute(store, plan)
    assert len(seen) == 2 and all(seen), "spill files existed when the listing failed"
    assert list(scratch.iterdir()) == []
