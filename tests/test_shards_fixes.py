"""Sharded commits after failures an audit found: an owner whose commit fails with a storage
error releases its claim (a re-run takes over at once, and never commits twice), a wait for
another owner is visible without a progress, aliases survive a death between the commit and
setting them, and refusing a re-run of a step names the step and the earlier save."""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import ckptlake
from ckptlake.core import shards
from ckptlake.core.identity import utcnow
from ckptlake.errors import Conflict, OutcomeUnknown, TransferError
from ckptlake.format import layout
from ckptlake.format.manifest import decode_manifest

ART = "fix/run"


@pytest.fixture
def lake(local_lake_url: str):
    with ckptlake.open(local_lake_url) as lk:
        yield lk


def rank_dir(root: Path, rank: int, *, seed: int = 0, name: str | None = None) -> Path:
    d = root / f"rank{rank}-{seed}-{name}"
    d.mkdir(parents=True, exist_ok=True)
    data = __import__("random").Random(rank * 100 + seed).randbytes(20_000)
    (d / (name or f"__{rank}_0.distcp")).write_bytes(data)
    return d


def claim_of(lake: ckptlake.Lake, step: int) -> shards.Claim:
    key = layout.shard_claim_key(ART, step)
    return shards.decode_claim(lake.store.get(key), key=key)


def fail_manifest_puts(monkeypatch, lake: ckptlake.Lake, error: Exception, *,
                       land: bool) -> list[str]:
    """The manifest PUT fails after its retries (land: it reached the store all the same, as
    an OutcomeUnknown write may have)."""
    real, tried = lake.store.put, []

    def put(key: str, data: Any, **kw: Any) -> str:
        if "/@v/" in key:
            tried.append(key)
            if land:
                real(key, data, **kw)
            raise error
        return real(key, data, **kw)

    monkeypatch.setattr(lake.store, "put", put)
    return tried


# ---- F2: a failed commit releases the claim ------------------------------------------------

@pytest.mark.parametrize("error, land", [
    (TransferError("PUT @v/1: 503 SlowDown after 5 attempts"), False),
    (OutcomeUnknown("PUT @v/1: no answer after 5 attempts; it may have landed"), True),
], ids=["failed", "outcome-unknown-landed"])
def test_storage_error_in_the_owner_releases_the_claim_and_a_rerun_takes_over_at_once(
        lake, tmp_path, monkeypatch, error, land) -> None:
    dirs = [rank_dir(tmp_path, r) for r in range(2)]
    lake.push_shard(dirs[0], ART, step=5, rank=0, world=2)
    with monkeypatch.context() as m:
        tried = fail_manifest_puts(m, lake, error, land=land)
        with pytest.raises(TransferError):
            lake.push_shard(dirs[1], ART, step=5, rank=1, world=2)
    assert tried
    [p] = lake.pending()  # takeable now, not "committing" for stale_after
    assert p.state == "stale" and "storage error" in (p.error or "")
    assert p.claim_age_seconds is None  # a marker, not an age
    claim = claim_of(lake, 5)
    # released, not abandoned: same commit id and intent, so a takeover tries N first
    assert claim.released and claim.state == "committing" and claim.version == 1
    # The re-run (default stale_after of 300 s) takes over now; without the release it would
    # wait for the claim to go stale and give up after wait_seconds.
    again = lake.push_shard(dirs[0], ART, step=5, rank=0, world=2, wait_seconds=10)
    assert again.repeated and again.version == 1
    [v] = lake.versions(ART)  # exactly once, also when the failed write had landed
    m_ = decode_manifest(lake.store.get(layout.version_key(ART, 1)))
    assert m_.metadata[shards.META_COMMIT_ID] == claim.commit_id
    assert claim_of(lake, 5).state == "committed" and lake.pending() == []


@pytest.mark.parametrize("land", [False, True], ids=["cut-before", "landed"])
def test_a_ctrl_c_in_the_owner_releases_the_claim_too(lake, tmp_path, monkeypatch,
                                                       land) -> None:
    """A Ctrl-C during the commit left the claim `committing`: every re-run waited
    stale_after (5 minutes) for an owner known to have stopped."""
    dirs = [rank_dir(tmp_path, r) for r in range(2)]
    lake.push_shard(dirs[0], ART, step=6, rank=0, world=2)
    with monkeypatch.context() as m:
        fail_manifest_puts(m, lake, KeyboardInterrupt(), land=land)  # type: ignore[arg-type]
        with pytest.raises(KeyboardInterrupt):
            lake.push_shard(dirs[1], ART, step=6, rank=1, world=2)
    [p] = lake.pending()
    assert p.state == "stale" and "interrupted" in (p.error or "")
    again = lake.push_shard(dirs[0], ART, step=6, rank=0, world=2, wait_seconds=10)
    assert again.repeated and again.version == 1 and len(lake.versions(ART)) == 1


def test_release_touches_only_a_claim_this_attempt_owns(lake, tmp_path) -> None:
    dirs = [rank_dir(tmp_path, r) for r in range(2)]
    lake.push_shard(dirs[0], ART, step=6, rank=0, world=2)
    key = layout.shard_claim_key(ART, 6)
    other = shards.Claim(artifact=ART, step=6, world=2, commit_id="c0ffee", state="committing",
                         owner="alive@node:1:x", updated=utcnow(), version=3)
    lake.store.put(key, other.encode())
    shards._release(lake.store, key, "me@here:2:y", TransferError("boom"))
    assert claim_of(lake, 6) == shards.decode_claim(other.encode(), key=key)
    # a committed claim is never released, even by its owner
    done = replace(other, owner="me@here:2:y", state="committed")
    lake.store.put(key, done.encode())
    shards._release(lake.store, key, "me@here:2:y", TransferError("boom"))
    assert not claim_of(lake, 6).released


def test_waiting_for_a_live_owner_is_logged_without_a_progress(lake, tmp_path, caplog) -> None:
    dirs = [rank_dir(tmp_path, r) for r in range(2)]
    lake.push_shard(dirs[0], ART, step=7, rank=0, world=2)
    live = shards.Claim(artifact=ART, step=7, world=2, commit_id="c0ffee", state="claimed",
                        owner="alive@node-3:7:x", updated=utcnow())
    lake.store.put(layout.shard_claim_key(ART, 7), live.encode())
    caplog.set_level(logging.WARNING, logger="ckptlake")
    res = lake.push_shard(dirs[1], ART, step=7, rank=1, world=2, wait_seconds=0.2)
    assert res.version is None
    [msg] = [r.getMessage() for r in caplog.records if "waiting for the owner" in r.getMessage()]
    assert f"{ART} step 7" in msg and "alive@node-3:7:x" in msg


# ---- F5: aliases after a death between the commit and setting them -------------------------

class _Died(BaseException):
    """The committing process is killed (SIGKILL): no handler runs."""


def test_aliases_lost_to_a_death_after_the_commit_are_set_by_a_rerun_once(
        lake, tmp_path, monkeypatch) -> None:
    from ckptlake.core import catalog

    dirs = [rank_dir(tmp_path, r) for r in range(2)]
    lake.push_shard(dirs[0], ART, step=8, rank=0, world=2, aliases=["best"])

    def die(*a: Any, **kw: Any) -> None:
        raise _Died()

    with monkeypatch.context() as m:
        m.setattr(catalog, "set_alias", die)
        with pytest.raises(_Died):
            lake.push_shard(dirs[1], ART, step=8, rank=1, world=2, aliases=["best"])
    assert [v.version for v in lake.versions(ART)] == [1]
    assert [v.aliases for v in lake.versions(ART)] == [[]]
    again = lake.push_shard(dirs[1], ART, step=8, rank=1, world=2, aliases=["best"])
    assert again.repeated and again.version == 1 and not again.committed_here
    assert [v.aliases for v in lake.versions(ART)] == [["best"]]
    claim = claim_of(lake, 8)
    assert claim.state == "committed" and claim.aliases == ("best",) and claim.aliases_set
    # moved on purpose since: a later repeat leaves it where it was moved
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "f").write_text("x")
    lake.push(extra, ART)
    lake.alias(f"{ART}@v2", "best")
    lake.push_shard(dirs[0], ART, step=8, rank=0, world=2, aliases=["best"])
    assert lake.resolve(f"{ART}@best").version == 2


def test_a_repeat_leaves_an_alias_the_run_moved_on_since(lake, tmp_path, monkeypatch,
                                                         caplog) -> None:
    """The committer of step 5 dies after setting `best` but before recording it; step 6
    moves `best` on; a straggler re-push of step 5 must not move it back (nor fail when it
    cannot set an alias: the step is committed)."""
    from ckptlake.core import catalog

    first = tmp_path / "first"
    first.mkdir()
    (first / "f").write_text("x")
    lake.push(first, ART)  # v1
    d5 = [rank_dir(tmp_path, r, seed=5) for r in range(2)]
    lake.push_shard(d5[0], ART, step=5, rank=0, world=2, aliases=["best", "s5"])
    real_cas = shards._cas

    def cas(store: Any, key: str, claim: shards.Claim, etag: str) -> str:
        if claim.state == "committed" and claim.aliases_set is True:
            raise _Died()  # killed between setting the aliases and recording it
        return real_cas(store, key, claim, etag)

    with monkeypatch.context() as m:
        m.setattr(shards, "_cas", cas)
        with pytest.raises(_Died):
            lake.push_shard(d5[1], ART, step=5, rank=1, world=2, aliases=["best", "s5"])
    assert lake.resolve(f"{ART}@best").version == 2 and claim_of(lake, 5).aliases_set is False
    d6 = [rank_dir(tmp_path, r, seed=6) for r in range(2)]
    for r in range(2):
        lake.push_shard(d6[r], ART, step=6, rank=r, world=2, aliases=["best"])
    assert lake.resolve(f"{ART}@best").version == 3
    lake.alias(f"{ART}@v1", "s5")  # moved by hand to an older version, after the commit

    def fail(*a: Any, **kw: Any) -> None:
        raise TransferError("alias PUT failed")

    again = lake.push_shard(d5[0], ART, step=5, rank=0, world=2, aliases=["best", "s5"])
    assert again.repeated and again.version == 2
    assert lake.resolve(f"{ART}@best").version == 3 and lake.resolve(f"{ART}@s5").version == 1
    assert claim_of(lake, 5).aliases_set is True

    # a repeat that must set an alias and cannot: logged, the push still succeeds
    lake.store.put(layout.shard_claim_key(ART, 5),
                   replace(claim_of(lake, 5), aliases=("best", "new"), aliases_set=False).encode())
    monkeypatch.setattr(catalog, "set_alias", fail)
    with caplog.at_level(logging.WARNING, logger="ckptlake"):
        again = lake.push_shard(d5[1], ART, step=5, rank=1, world=2, aliases=["best", "new"])
    assert again.repeated and again.version == 2
    assert f"{ART} step 5 (v2): could not set alias new: alias PUT failed" in caplog.text
    assert claim_of(lake, 5).aliases_set is False  # the next repeat tries again
    assert lake.resolve(f"{ART}@best").version == 3


def test_a_claim_without_alias_fields_never_sets_aliases_on_a_repeat(lake, tmp_path) -> None:
    """A step committed by an older ckptlake: whether its aliases were set is unknown."""
    dirs = [rank_dir(tmp_path, r) for r in range(2)]
    for r in range(2):
        lake.push_shard(dirs[r], ART, step=9, rank=r, world=2, aliases=["top"])
    assert lake.resolve(f"{ART}@top").version == 1
    key = layout.shard_claim_key(ART, 9)
    lake.store.put(key, replace(claim_of(lake, 9), aliases=None, aliases_set=None).encode())
    lake.store.delete([layout.alias_key(ART, "top")])  # removed on purpose
    lake.push_shard(dirs[0], ART, step=9, rank=0, world=2, aliases=["top"])
    assert "top" not in {a for v in lake.versions(ART) for a in v.aliases}


# ---- F3: a re-run of a step with another state or world size -------------------------------

def test_rerun_with_other_files_names_the_step_and_the_unfinished_save(lake, tmp_path) -> None:
    lake.push_shard(rank_dir(tmp_path, 0), ART, step=10, rank=0, world=3)
    with pytest.raises(Conflict) as info:
        lake.push_shard(rank_dir(tmp_path, 0, seed=1), ART, step=10, rank=0, world=3)
    e = info.value
    assert e.message == (f"{ART} step 10: shard record 0 of 3 was already pushed with other "
                         "files, by an earlier save that did not finish (1 of 3 shard records "
                         "in)")
    assert "save this checkpoint as another step" in (e.hint or "")
    assert layout.shard_step_prefix(ART, 10) in (e.hint or "")  # no claim: safe to delete
    assert f"ckptlake ls {ART} --pending" in (e.hint or "")


def test_rerun_with_another_world_names_both_sizes(lake, tmp_path) -> None:
    lake.push_shard(rank_dir(tmp_path, 0), ART, step=11, rank=0, world=3)
    lake.push_shard(rank_dir(tmp_path, 1), ART, step=11, rank=1, world=3)
    with pytest.raises(Conflict) as info:
        lake.push_shard(rank_dir(tmp_path, 0), ART, step=11, rank=0, world=4)
    assert info.value.message == (
        f"{ART} step 11 is held by an earlier save that did not finish (2 of 3 shard records "
        "in): it was written by a world of 3 shard records, this save by 4")
    # committed: the step is taken for good, and nothing suggests deleting its records
    lake.push_shard(rank_dir(tmp_path, 2), ART, step=11, rank=2, world=3)
    with pytest.raises(Conflict) as info:
        lake.push_shard(rank_dir(tmp_path, 0), ART, step=11, rank=0, world=2)
    assert info.value.message == (f"{ART} step 11 is held by the save committed as v1: it was "
                                  "written by a world of 3 shard records, this save by 2")
    assert "@shards" not in (info.value.hint or "")


def test_a_rank_pushed_again_while_the_step_commits_is_not_told_the_save_did_not_finish(
        lake, tmp_path, monkeypatch) -> None:
    """Every record in and a live claim: the save is committing (it did, milliseconds later,
    in the review's run); 'an earlier save that did not finish' sent the user to discard it."""
    import uuid

    real_finish = shards.finish_step
    monkeypatch.setattr(shards, "finish_step", lambda *a, **k: (None, False))
    for r in range(2):
        lake.push_shard(rank_dir(tmp_path, r), ART, step=12, rank=r, world=2)
    claim = shards.Claim(artifact=ART, step=12, world=2, commit_id=uuid.uuid4().hex,
                         state="claimed", owner="host-a:1", updated=utcnow())
    lake.store.put(layout.shard_claim_key(ART, 12), claim.encode())  # its committer at work
    monkeypatch.setattr(shards, "finish_step", real_finish)
    with pytest.raises(Conflict) as info:
        lake.push_shard(rank_dir(tmp_path, 1, seed=1), ART, step=12, rank=1, world=2)
    assert info.value.message == (
        f"{ART} step 12: shard record 1 of 2 was already pushed with other files, by an earlier "
        "save whose commit was under way when this rank looked (2 of 2 shard records in)")
    assert "did not finish" not in info.value.message
