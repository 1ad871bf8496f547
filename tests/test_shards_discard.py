"""Discarding a sharded step that never committed (`ckptlake rm ARTIFACT@step=N --pending`,
`Lake.discard_pending`): a crashed save stops blocking its re-run and stops holding its chunks
as gc roots, while live and committed steps are refused (docs/format.md, "Discarding a pending
step")."""
from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterable

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.core import shards
from ckptlake.core.identity import utcnow
from ckptlake.errors import Conflict, NotFound, PolicyRefusal, TransferError
from ckptlake.format import layout
from ckptlake.lake import Lake
from ckptlake.policy.retention import RetentionPolicy, Rule
from ckptlake.store.memory import MemoryStore
from test_shards_gc import die_before_committed

ART = "dd/ckpt"


@pytest.fixture
def lake(local_lake_url: str):
    with ckptlake.open(local_lake_url) as lk:
        yield lk


def rank_dir(root: Path, rank: int, *, seed: int = 0, name: str | None = None,
             size: int = 150_000, extra: dict[str, bytes] | None = None) -> Path:
    """One rank's DCP-like files: `__<rank>_0.distcp` (random, by seed), or `name`."""
    d = root / f"r{rank}-s{seed}-{name or 'x'}-{random.random()}"
    d.mkdir(parents=True)
    (d / (name or f"__{rank}_0.distcp")).write_bytes(random.Random(seed * 1000 + rank)
                                                     .randbytes(size))
    for n, data in (extra or {}).items():
        (d / n).write_bytes(data)
    return d


def paths(lake: Lake, ref: str) -> list[str]:
    return [f["path"] for f in lake.files(ref)["files"]]


def step_keys(lake: Lake, step: int) -> set[str]:
    return {i.key for i in lake.store.list(layout.shard_step_prefix(ART, step))}


def claim_of(lake: Lake, step: int) -> shards.Claim:
    key = layout.shard_claim_key(ART, step)
    return shards.decode_claim(lake.store.get(key), key=key)


def put_claim(lake: Lake, step: int, world: int, **kw: Any) -> None:
    claim = shards.Claim(artifact=ART, step=step, world=world, commit_id="c0ffee",
                         owner="trainer@node-3:77:abc", updated=utcnow(), **kw)
    lake.store.put(layout.shard_claim_key(ART, step), claim.encode())


def records_only(lake: Lake, dirs: Iterable[tuple[Path, int]], step: int, world: int) -> None:
    """Records in, nobody committing (a crash right after the last record)."""
    real = shards.finish_step
    shards.finish_step = lambda *a, **kw: (None, False)  # type: ignore[assignment]
    try:
        for d, rank in dirs:
            lake.push_shard(d, ART, step=step, rank=rank, world=world)
    finally:
        shards.finish_step = real  # type: ignore[assignment]


# ---- the library ------------------------------------------------------------------------------

def test_crashed_step_is_discarded_and_saved_again_with_other_contents(lake, tmp_path) -> None:
    """A DCP-shaped save of 2 ranks (world 3: two .distcp records and .metadata) that crashed
    after rank 0: its re-run with other bytes is refused until the step is discarded."""
    assert lake.push_shard(rank_dir(tmp_path, 0), ART, step=7, rank=0, world=3).version is None
    with pytest.raises(Conflict, match="already pushed with other files") as info:
        lake.push_shard(rank_dir(tmp_path, 0, seed=1), ART, step=7, rank=0, world=3)
    assert f"ckptlake rm {ART}@step=7 --pending --yes" in (info.value.hint or "")

    plan = lake.discard_pending(ART, 7, dry_run=True, force=True)
    assert (plan.state, plan.world, plan.ranks, plan.records, plan.discarded) == (
        "incomplete", 3, [0], 1, False)
    assert len(step_keys(lake, 7)) == 1  # the dry run wrote nothing
    done = lake.discard_pending(ART, 7, reason="rank 1 was OOM-killed", force=True)
    assert (done.discarded, done.records, done.reason) == (True, 1, "rank 1 was OOM-killed")
    assert done.keys == [layout.shard_record_key(ART, 7, 0, 3)]
    assert step_keys(lake, 7) == set() and lake.pending() == []
    with pytest.raises(NotFound, match=f"{ART} has no pending step 7"):
        lake.discard_pending(ART, 7, force=True)

    # The re-run, another world size (1 rank + .metadata) and other bytes: one fresh commit.
    r0 = lake.push_shard(rank_dir(tmp_path, 0, seed=1), ART, step=7, rank=0, world=2)
    meta = lake.push_shard(rank_dir(tmp_path, 1, seed=1, name=".metadata", size=300), ART,
                           step=7, rank=1, world=2)
    assert (r0.version, meta.version, meta.committed_here) == (None, 1, True)
    assert paths(lake, f"{ART}@step=7") == [".metadata", "__0_0.distcp"]
    assert claim_of(lake, 7).state == "committed"
    checked = lake.verify(ART)
    assert checked.ok and checked.pending_steps == [] and checked.shard_steps_checked == 1


def test_a_failed_step_becomes_committable(lake, tmp_path) -> None:
    records_only(lake, [(rank_dir(tmp_path, 0), 0), (rank_dir(tmp_path, 1), 1)], 3, 2)
    put_claim(lake, 3, 2, state="failed", error="ranks 0 and 1 both wrote 'x' with different "
                                                "contents")
    with pytest.raises(Conflict, match="cannot be committed") as info:
        lake.push_shard(rank_dir(tmp_path, 0), ART, step=3, rank=0, world=2)
    assert f"ckptlake rm {ART}@step=3 --pending" in (info.value.hint or "")
    done = lake.discard_pending(ART, 3, force=True)
    assert (done.state, done.records, done.error) == ("failed", 2, "ranks 0 and 1 both wrote "
                                                      "'x' with different contents")
    assert done.reason.startswith("discarded by hand by ")
    assert step_keys(lake, 3) == set()
    for rank in (0, 1):
        r = lake.push_shard(rank_dir(tmp_path, rank, seed=2), ART, step=3, rank=rank, world=2)
    assert r.version == 1


def test_a_live_claim_is_refused_and_a_stale_one_discarded(lake, tmp_path) -> None:
    records_only(lake, [(rank_dir(tmp_path, 0), 0), (rank_dir(tmp_path, 1), 1)], 4, 2)
    put_claim(lake, 4, 2, state="committing", version=1)
    before = step_keys(lake, 4)
    with pytest.raises(PolicyRefusal, match=r"is being committed by trainer@node-3:77:abc .* "
                                            r"goes stale in \d+ s") as info:
        lake.discard_pending(ART, 4)
    assert info.value.exit_code == 7
    assert step_keys(lake, 4) == before and claim_of(lake, 4).state == "committing"
    # Its owner died: once stale (here: a shorter stale_after), the step is discarded.
    done = lake.discard_pending(ART, 4, stale_after=0)
    assert (done.state, done.version, done.records) == ("stale", 1, 2)
    assert step_keys(lake, 4) == set()
    assert not lake.store.exists(layout.version_key(ART, 1))


def test_a_committed_step_is_refused(lake, tmp_path) -> None:
    for rank in (0, 1):
        lake.push_shard(rank_dir(tmp_path, rank), ART, step=5, rank=rank, world=2)
    before = step_keys(lake, 5)
    with pytest.raises(PolicyRefusal, match=rf"step 5 is committed as v1: ckptlake rm "
                                            rf"{ART}@v1 deletes it") as info:
        lake.discard_pending(ART, 5)
    assert info.value.exit_code == 7 and step_keys(lake, 5) == before


def test_a_stale_commit_whose_manifest_landed_is_recorded_not_discarded(lake, tmp_path,
                                                                        monkeypatch) -> None:
    """The owner wrote v1 and died before its claim said committed: the step IS committed."""
    landed_commit(lake, tmp_path, monkeypatch, aliases=("best",))
    before = step_keys(lake, 6)
    with pytest.raises(Conflict, match=r"step 6 was committed as v1 .*nothing was discarded"
                       ) as info:
        lake.discard_pending(ART, 6, force=True)
    assert info.value.exit_code == 6
    assert step_keys(lake, 6) == before
    claim = claim_of(lake, 6)
    assert (claim.state, claim.version, claim.aliases_set) == ("committed", 1, True)
    assert lake.resolve(f"{ART}@best").version == 1  # as a takeover would have set it
    assert paths(lake, f"{ART}@v1") == ["__0_0.distcp", "__1_0.distcp"]
    assert lake.pending() == []


def test_a_rank_claiming_the_step_first_wins_over_the_discard(lake, tmp_path,
                                                              monkeypatch) -> None:
    """The last rank's claim lands between the discard's read and its create: the discard
    loses the create, reads the live claim and refuses; nothing is deleted."""
    records_only(lake, [(rank_dir(tmp_path, r), r) for r in (0, 1)], 12, 2)
    before = step_keys(lake, 12)
    real = shards.create_once

    def racing(store, key, body):  # type: ignore[no-untyped-def]
        if key == layout.shard_claim_key(ART, 12) and not store.exists(key):
            put_claim(lake, 12, 2, state="claimed")
        return real(store, key, body)

    monkeypatch.setattr(shards, "create_once", racing)
    with pytest.raises(PolicyRefusal, match="is being committed by trainer@node-3"):
        lake.discard_pending(ART, 12, force=True)
    assert step_keys(lake, 12) == before | {layout.shard_claim_key(ART, 12)}
    assert claim_of(lake, 12).state == "claimed"


class FailingDelete(MemoryStore):
    """Dies (a storage error) after deleting the first record of a discard."""

    armed = True

    def delete(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        if self.armed and any("@shards/" in k for k in keys):
            super().delete(keys[:1])
            raise TransferError("connection reset while deleting")
        super().delete(keys)


def test_a_discard_cut_midway_leaves_a_failed_step_and_a_rerun_finishes_it(tmp_path) -> None:
    store = FailingDelete()
    lake = Lake(store)
    records_only(lake, [(rank_dir(tmp_path, r), r) for r in (0, 1)], 8, 3)
    with pytest.raises(TransferError):
        lake.discard_pending(ART, 8, reason="bad run", force=True)
    left = step_keys(lake, 8)
    assert len(left) == 2 and layout.shard_claim_key(ART, 8) in left  # a record and the claim
    [p] = lake.pending()
    assert (p.state, p.error) == ("failed", p.error) and p.error.endswith(": bad run")
    assert p.error.startswith("discarded by ")
    with pytest.raises(Conflict, match="cannot be committed: discarded by"):
        lake.push_shard(rank_dir(tmp_path, 2, seed=3), ART, step=8, rank=2, world=3)
    store.armed = False
    done = lake.discard_pending(ART, 8, force=True)
    assert (done.state, done.discarded) == ("failed", True)
    assert done.records == 2  # the one left, and rank 2's written before its refusal
    assert step_keys(lake, 8) == set() and lake.pending() == []
    for r in range(3):
        res = lake.push_shard(rank_dir(tmp_path, r, seed=4), ART, step=8, rank=r, world=3)
    assert res.version == 1


def test_gc_sweeps_the_chunks_only_the_discarded_step_used(tmp_path) -> None:
    lake = Lake(MemoryStore())
    big = (1 << 20) + 10  # above the pack threshold: each file its own chunks
    shared = random.Random(99).randbytes(big)
    v1 = lake.push(rank_dir(tmp_path, 0, seed=5, size=big, extra={"shared.bin": shared}), ART,
                   step=1)
    lake.push_shard(rank_dir(tmp_path, 0, seed=6, size=big, extra={"shared.bin": shared}), ART,
                    step=2, rank=0, world=2)
    rec_key = layout.shard_record_key(ART, 2, 0, 2)
    step_chunks = shards.decode_record(lake.store.get(rec_key), key=rec_key
                                       ).manifest.chunk_digests()
    kept = lake._manifest(f"{ART}@v{v1.version}").chunk_digests()
    only_step = set(step_chunks) - set(kept)
    assert only_step and set(step_chunks) & set(kept)

    def chunks() -> set[Any]:
        return {d for o in lake.store.list(layout.CHUNKS_PREFIX)
                if (d := layout.parse_chunk_key(o.key))}

    policy = RetentionPolicy(rules=(Rule(match="dd/*", keep_last=5),), grace_period=0,
                             sweep_window=1, record_retention=2)
    for _ in range(2):
        lake.gc(lake.gc_plan(policy))
    assert only_step <= chunks()  # a pending step's records are roots
    lake.discard_pending(ART, 2, force=True)
    for _ in range(2):
        lake.gc(lake.gc_plan(policy))
    assert not only_step & chunks()
    assert set(kept) <= chunks()
    dest = tmp_path / "pulled"
    lake.pull(f"{ART}@v1", dest)
    assert (dest / "shared.bin").read_bytes() == shared


def test_gc_reads_a_record_rewritten_by_the_next_save_within_one_run(tmp_path) -> None:
    """gc cached shard records by key for a whole run ("records are immutable"): a discard and
    the next save's rank 0, between gc's mark and its sweep, rewrote that key with other
    chunks, which gc then swept; rank 1 committed a version missing them."""
    lake = Lake(MemoryStore())
    big = (1 << 20) + 10
    lake.push_shard(rank_dir(tmp_path, 0, seed=1, size=big), ART, step=5, rank=0, world=2)
    policy = RetentionPolicy(rules=(Rule(match="dd/*", keep_last=5),), grace_period=0,
                             sweep_window=1, record_retention=2)
    fired: list[int] = []

    def on_event(name: str) -> None:
        if name == "mark.done" and not fired:
            fired.append(lake.discard_pending(ART, 5, force=True).records)
            lake.push_shard(rank_dir(tmp_path, 0, seed=2, size=big), ART, step=5, rank=0,
                            world=2)

    lake.gc(lake.gc_plan(policy), on_event=on_event)
    assert fired == [1]
    assert lake.push_shard(rank_dir(tmp_path, 1, seed=2, size=big), ART, step=5, rank=1,
                           world=2).version == 1
    assert lake.verify(ART).ok
    lake.pull(f"{ART}@v1", tmp_path / "out")
    assert (tmp_path / "out" / "__0_0.distcp").read_bytes() == \
        random.Random(2000).randbytes(big)


def test_library_arguments_are_checked(lake) -> None:
    from ckptlake.errors import UsageError

    for kw in ({"step": -1}, {"step": "3"}, {"step": 1, "dry_run": "yes"},
               {"step": 1, "reason": "a\x00b"}, {"step": 1, "stale_after": -5},
               {"step": 1, "force": 1}):
        with pytest.raises(UsageError):
            lake.discard_pending(ART, **kw)
    with pytest.raises(UsageError):
        lake.discard_pending("bad@name", 1)


# ---- the CLI ----------------------------------------------------------------------------------

def cli(*args: Any, input: str | None = None) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], input=input,
                              catch_exceptions=False)


@pytest.fixture
def cli_lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    url = "file://" + str(tmp_path / "lake")
    monkeypatch.setenv("CKPTLAKE_LAKE", url)
    with ckptlake.open(url) as lk:
        lk.push_shard(rank_dir(tmp_path, 0), ART, step=9, rank=0, world=2)
        yield lk


def test_cli_pending_needs_a_step_selector(cli_lake) -> None:
    for ref in (f"{ART}@v1", ART, f"{ART}@best"):
        r = cli("rm", ref, "--pending", "--yes")
        assert r.exit_code == 2, r.stderr
        assert "REF must be ARTIFACT@step=N" in r.stderr and "Traceback" not in r.stderr
    assert len(step_keys(cli_lake, 9)) == 1


def test_cli_asks_or_needs_yes_and_dry_run_changes_nothing(cli_lake, monkeypatch) -> None:
    before = {(i.key, i.etag) for i in cli_lake.store.list("")}
    r = cli("rm", f"{ART}@step=9", "--pending", "--force", "--dry-run")
    assert r.exit_code == 0, r.stderr
    assert r.stdout.startswith(f"would discard {ART}@step=9 (incomplete: ranks 0 of 2 in, "
                               "1 shard record")
    assert "ckptlake gc --yes" in r.stdout
    doc = json.loads(cli("rm", f"{ART}@step=9", "--pending", "--force", "--dry-run", "--json").stdout)
    assert (doc["step"], doc["state"], doc["records"], doc["dry_run"], doc["discarded"]) == (
        9, "incomplete", 1, True, False)
    r = cli("rm", f"{ART}@step=9", "--pending", "--force")  # no terminal, no --yes
    assert r.exit_code == 7 and "--yes" in r.stderr
    monkeypatch.setattr("ckptlake.cli.rm.isatty", lambda stream: True)
    r = cli("rm", f"{ART}@step=9", "--pending", "--force", input="n\n")
    assert r.exit_code == 7 and "rm cancelled; nothing was changed" in r.stderr
    assert {(i.key, i.etag) for i in cli_lake.store.list("")} == before
    r = cli("rm", f"{ART}@step=9", "--pending", "--force", "--json", "--yes", "--reason", "crashed")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["artifact"], doc["step"], doc["world"], doc["ranks"], doc["records"],
            doc["discarded"], doc["reason"]) == (ART, 9, 2, [0], 1, True, "crashed")
    assert doc["keys"] == [layout.shard_record_key(ART, 9, 0, 2)] and "lake" in doc
    assert step_keys(cli_lake, 9) == set()
    r = cli("rm", f"{ART}@step=9", "--pending", "--force", "--yes")
    assert r.exit_code == 3 and f"ckptlake ls {ART} --pending" in r.stderr


# ---- after review: a rank or a discard racing a discard ---------------------------------------

def pause_before_intent(monkeypatch, then) -> None:  # type: ignore[no-untyped-def]
    """Run `then()` once, inside the claim owner's commit, just before it picks its number:
    the owner is slow (presumed dead), and meanwhile the step is discarded."""
    real = shards._next_number
    fired: list[bool] = []

    def slow(*a, **kw):  # type: ignore[no-untyped-def]
        if not fired:
            fired.append(True)
            then()
        return real(*a, **kw)

    monkeypatch.setattr(shards, "_next_number", slow)


def test_a_stale_owner_waking_after_the_discard_fails_and_leaves_no_claim(lake, tmp_path,
                                                                          monkeypatch) -> None:
    """It re-created a `claimed` claim (blocking re-runs and the discard for stale_after) and
    failed with 'claimed with 0 of 2 shard records present' (exit 5)."""
    lake.push_shard(rank_dir(tmp_path, 0), ART, step=5, rank=0, world=2)
    pause_before_intent(monkeypatch, lambda: lake.discard_pending(ART, 5, stale_after=0))
    with pytest.raises(Conflict, match="step 5 was discarded while this rank was committing "
                                       "it; save it again") as info:
        lake.push_shard(rank_dir(tmp_path, 1), ART, step=5, rank=1, world=2)
    assert info.value.exit_code == 6
    assert step_keys(lake, 5) == set() and lake.pending() == []


def test_a_stale_owner_does_not_return_the_next_saves_version(lake, tmp_path,
                                                              monkeypatch) -> None:
    """The step was discarded and saved again (S2, committed) while the owner of S1 slept: it
    followed S2's claim and returned S2's version as its own success."""
    lake.push_shard(rank_dir(tmp_path, 0), ART, step=5, rank=0, world=2)

    def discard_and_save_again() -> None:
        lake.discard_pending(ART, 5, stale_after=0)
        for r in (0, 1):
            s2 = lake.push_shard(rank_dir(tmp_path, r, seed=2), ART, step=5, rank=r, world=2)
        assert s2.version == 1

    pause_before_intent(monkeypatch, discard_and_save_again)
    with pytest.raises(Conflict, match="step 5 was discarded while this rank was committing"):
        lake.push_shard(rank_dir(tmp_path, 1), ART, step=5, rank=1, world=2)
    assert [v.version for v in lake.versions(ART)] == [1]
    assert claim_of(lake, 5).state == "committed"


def test_a_rank_that_saw_every_record_creates_no_claim_once_they_are_discarded(
        lake, tmp_path, monkeypatch) -> None:
    """Between its listing (all in) and its claim, the step was discarded: it must not claim
    an empty step ('claimed with 0 of 2 shard records present', exit 5, and a live claim)."""
    lake.push_shard(rank_dir(tmp_path, 0), ART, step=5, rank=0, world=2)
    real = shards._read_claim
    fired: list[bool] = []

    def racing(store, key):  # type: ignore[no-untyped-def]
        if not fired:
            fired.append(True)
            lake.discard_pending(ART, 5, force=True)
        return real(store, key)

    monkeypatch.setattr(shards, "_read_claim", racing)
    with pytest.raises(Conflict, match="discarded while this rank was committing it"):
        lake.push_shard(rank_dir(tmp_path, 1), ART, step=5, rank=1, world=2)
    assert fired and step_keys(lake, 5) == set()


def test_a_rank_whose_check_reads_a_record_being_discarded_gets_a_conflict(
        lake, tmp_path, monkeypatch) -> None:
    """Its pre-check listed rank 0's record, which a discard deleted before the read: a raw
    NotFound (exit 3) for a key the user never named."""
    lake.push_shard(rank_dir(tmp_path, 0), ART, step=5, rank=0, world=2)
    key0 = layout.shard_record_key(ART, 5, 0, 2)
    real = lake.store.get

    def racing(key: str) -> bytes:
        if key == key0:
            lake.discard_pending(ART, 5, force=True)
        return real(key)

    monkeypatch.setattr(lake.store, "get", racing)
    with pytest.raises(Conflict, match="discarded while this rank was pushing it"):
        lake.push_shard(rank_dir(tmp_path, 1), ART, step=5, rank=1, world=2)


def test_a_rank_following_the_discards_claim_whose_record_went_gets_a_conflict(
        lake, tmp_path, monkeypatch) -> None:
    """A rank that saw the discard's claim (not every record) reads it once deleted: pending
    is the answer only if its own record outlived the discard."""
    lake.push_shard(rank_dir(tmp_path, 0), ART, step=5, rank=0, world=3)
    real = shards.finish_step

    def discard_first(*a, **kw):  # type: ignore[no-untyped-def]
        lake.discard_pending(ART, 5, force=True)
        return real(*a, **kw)

    lake.store.put(layout.shard_claim_key(ART, 5), shards.Claim(
        artifact=ART, step=5, world=3, commit_id="c", state="failed", owner="o",
        updated=utcnow(), error="discarded by ops@h").encode())
    monkeypatch.setattr(shards, "finish_step", discard_first)
    with pytest.raises(Conflict, match="discarded while this rank was pushing it"):
        lake.push_shard(rank_dir(tmp_path, 1), ART, step=5, rank=1, world=3)
    assert step_keys(lake, 5) == set()


def test_young_records_are_refused_unless_forced(lake, tmp_path) -> None:
    """A rank of the crashed save still uploading writes its record after the discard; the
    re-run then commits it with its own ranks' (a version mixing two saves)."""
    lake.push_shard(rank_dir(tmp_path, 0), ART, step=5, rank=0, world=2)
    before = step_keys(lake, 5)
    for dry_run in (True, False):
        with pytest.raises(PolicyRefusal, match=r"step 5: its newest shard record was written "
                                                r"\d+ s ago, .* refused until it is 300 s old, "
                                                r"in \d+ s") as info:
            lake.discard_pending(ART, 5, dry_run=dry_run)
        assert info.value.exit_code == 7 and "--force" in (info.value.hint or "")
    assert step_keys(lake, 5) == before
    assert lake.discard_pending(ART, 5, stale_after=3600, force=True).records == 1
    assert step_keys(lake, 5) == set()


def test_a_second_discard_does_not_delete_the_next_saves_step(lake, tmp_path,
                                                              monkeypatch) -> None:
    """Two discards of one step: the second took the claim from the first, finished, and the
    next save committed; the first went on deleting that save's records and claim."""
    lake.push_shard(rank_dir(tmp_path, 0), ART, step=5, rank=0, world=2)
    real = shards.create_once
    fired: list[bool] = []

    def racing(store, key, body):  # type: ignore[no-untyped-def]
        etag = real(store, key, body)
        if key == layout.shard_claim_key(ART, 5) and not fired:
            fired.append(True)  # the first discard has just taken the step
            lake.discard_pending(ART, 5, force=True, reason="second")
            for r in (0, 1):
                lake.push_shard(rank_dir(tmp_path, r, seed=2), ART, step=5, rank=r, world=2)
        return etag

    monkeypatch.setattr(shards, "create_once", racing)
    with pytest.raises(Conflict, match="another discard .* took the step while this one ran "
                                       r"\(its claim is committed, .*stopped after deleting "
                                       "0 shard records"):
        lake.discard_pending(ART, 5, force=True, reason="first")
    assert step_keys(lake, 5) == {layout.shard_record_key(ART, 5, r, 2) for r in (0, 1)} | {
        layout.shard_claim_key(ART, 5)}
    assert claim_of(lake, 5).state == "committed" and lake.verify(ART).ok


def test_a_rerun_discard_keeps_the_first_reason(tmp_path) -> None:
    store = FailingDelete()
    lake = Lake(store)
    records_only(lake, [(rank_dir(tmp_path, r), r) for r in (0, 1)], 8, 3)
    with pytest.raises(TransferError):
        lake.discard_pending(ART, 8, reason="rank 2 OOM-killed", force=True)
    with pytest.raises(TransferError):
        lake.discard_pending(ART, 8, reason="again", force=True)
    assert claim_of(lake, 8).error.endswith(": rank 2 OOM-killed")
    store.armed = False
    done = lake.discard_pending(ART, 8, force=True)
    assert done.reason.endswith(": rank 2 OOM-killed") and done.discarded


def landed_commit(lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  aliases: tuple[str, ...] = ()) -> None:
    """Step 6: its owner wrote v1 and died before its claim said committed; claim stale."""
    die_before_committed(lake, [rank_dir(tmp_path, r) for r in range(2)], ART, monkeypatch,
                         step=6, aliases=aliases)
    key = layout.shard_claim_key(ART, 6)
    lake.store.put(key, replace(claim_of(lake, 6),
                                updated=utcnow() - timedelta(hours=1)).encode())


def test_a_dry_run_reports_a_landed_commit(lake, tmp_path, monkeypatch) -> None:
    landed_commit(lake, tmp_path, monkeypatch)
    before = {(i.key, i.etag) for i in lake.store.list("")}
    with pytest.raises(shards.LandedCommit, match="step 6 was committed as v1 .*a discard would "
                                                  "record that and delete nothing") as info:
        lake.discard_pending(ART, 6, dry_run=True, force=True)
    assert info.value.exit_code == 6
    assert {(i.key, i.etag) for i in lake.store.list("")} == before


def test_a_malformed_claim_says_what_to_do(lake, tmp_path) -> None:
    lake.push_shard(rank_dir(tmp_path, 0), ART, step=5, rank=0, world=2)
    key = layout.shard_claim_key(ART, 5)
    lake.store.put(key, b'{"ckptlake_shard_claim": 2}')
    from ckptlake.errors import IntegrityError

    with pytest.raises(IntegrityError, match="malformed shard claim") as info:
        lake.discard_pending(ART, 5, force=True)
    assert info.value.exit_code == 5
    assert "upgrade" in (info.value.hint or "") and key in (info.value.hint or "")


def test_cli_force_young_records_and_landed_commits(cli_lake, tmp_path, monkeypatch) -> None:
    r = cli("rm", f"{ART}@step=9", "--pending", "--yes")
    assert r.exit_code == 7 and "its newest shard record was written" in r.stderr
    assert "--force" in r.stderr and "Traceback" not in r.stderr
    assert len(step_keys(cli_lake, 9)) == 1
    r = cli("rm", f"{ART}@v1", "--force", "--yes")
    assert r.exit_code == 2 and "--force is for rm --pending only" in r.stderr
    assert "did you mean --yes?" in r.stderr and len(r.stderr.splitlines()) == 1
    assert cli("rm", f"{ART}@step=9", "--pending", "--force", "--yes").exit_code == 0
    landed_commit(cli_lake, tmp_path, monkeypatch)
    r = cli("rm", f"{ART}@step=6", "--pending", "--force", "--dry-run")
    assert r.exit_code == 6 and "committed as v1" in r.stderr and r.stdout == ""
    assert claim_of(cli_lake, 6).state == "committing"  # the dry run recorded nothing
    r = cli("rm", f"{ART}@step=6", "--pending", "--force", "--yes")
    assert r.exit_code == 6 and "nothing was discarded" in r.stderr
    assert claim_of(cli_lake, 6).state == "committed"  # the real run recorded it


class LateRecords(MemoryStore):
    """Ranks still uploading: each of the first `late` deletions of the step's records lets
    one more record land (copied from one already there, under the next rank's key)."""

    late = 2
    template: bytes = b""

    def delete(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        super().delete(keys)
        if self.late and any("@shards/" in k and "claim" not in k for k in keys):
            rank = 3 - self.late
            self.late -= 1
            self.put(layout.shard_record_key(ART, 9, rank, 4), self.template)


def test_records_landing_while_a_discard_deletes_are_deleted_too(tmp_path) -> None:
    """A discard lists the step again after each pass of deletions: records written meanwhile
    (by ranks that had not seen the claim turn failed) go too, or the re-run would commit a
    crashed save's shard with its own."""
    store = LateRecords()
    lake = Lake(store)
    records_only(lake, [(rank_dir(tmp_path, 0), 0)], 9, 4)
    store.template = store.get(layout.shard_record_key(ART, 9, 0, 4))
    done = lake.discard_pending(ART, 9, force=True)
    assert store.late == 0
    assert done.keys == sorted(layout.shard_record_key(ART, 9, r, 4) for r in (0, 1, 2))
    assert step_keys(lake, 9) == set() and lake.pending() == []
