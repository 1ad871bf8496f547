"""Save identity of sharded pushes (`push --shard --save-id`, `Lake.push_shard(save_id=)`):
records of different saves never commit together, so the re-run of a crashed save is refused
at the crashed save's leftover records instead of committing a mix of both (docs/format.md,
"Save identity")."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.core import shards
from ckptlake.errors import Conflict, IntegrityError, NotFound, UsageError
from ckptlake.format import layout
from ckptlake.lake import Lake
from test_shards_discard import claim_of, rank_dir, records_only, step_keys

ART = "dd/ckpt"


@pytest.fixture
def lake(lake_url: str):
    with ckptlake.open(lake_url) as lk:
        yield lk


def chunk_keys(lake: Lake) -> set[str]:
    return {i.key for i in lake.store.list("chunks/")}


def crashed_save(lake: Lake, tmp_path: Path, save: str | None, ranks=(0, 1), world: int = 3,
                 step: int = 5) -> None:
    """Ranks `ranks` of a save of `world` ranks pushed, the others never did (a crash)."""
    for r in ranks:
        assert lake.push_shard(rank_dir(tmp_path, r, seed=1), ART, step=step, rank=r,
                               world=world, save_id=save).version is None


def test_a_rerun_never_completes_a_crashed_saves_records(lake, tmp_path) -> None:
    """The hazard without ids: a re-run's rank the crashed save never wrote completes the set
    (ranks 0-1 of the crashed save, rank 2 of the re-run) and commits that mix.  With ids the
    rank is refused before it uploads anything; after the discard the re-run commits alone."""
    crashed_save(lake, tmp_path, None, step=4)
    mixed = lake.push_shard(rank_dir(tmp_path, 2, seed=2), ART, step=4, rank=2, world=3)
    assert mixed.version == 1  # what --save-id exists for: rank 2 of another save went in

    crashed_save(lake, tmp_path, "job7.0")
    keys, chunks = step_keys(lake, 5), chunk_keys(lake)
    with pytest.raises(Conflict) as info:
        lake.push_shard(rank_dir(tmp_path, 2, seed=2), ART, step=5, rank=2, world=3,
                        save_id="job7.1")
    msg = str(info.value)
    assert "rank 0: save 'job7.0'" in msg and "this rank is of save 'job7.1'" in msg, msg
    assert "2 of 3 shard records in" in msg
    assert f"ckptlake rm {ART}@step=5 --pending --yes" in (info.value.hint or "")
    assert (step_keys(lake, 5), chunk_keys(lake)) == (keys, chunks)  # nothing uploaded
    assert [v.version for v in lake.versions(ART)] == [1]

    lake.discard_pending(ART, 5, force=True)
    for r in range(3):
        got = lake.push_shard(rank_dir(tmp_path, r, seed=2), ART, step=5, rank=r, world=3,
                              save_id="job7.1")
        assert got.save_id == "job7.1"
    assert got.version == 2 and got.committed_here
    meta = lake.show(f"{ART}@v2").metadata
    assert meta[shards.META_SAVE] == "job7.1"


def test_the_committer_refuses_records_of_two_saves(lake, tmp_path, monkeypatch) -> None:
    """Records racing past the ranks' own checks (more than 64 ranks skip the pre-check; a
    rank of the crashed save still running after a discard): the step fails, never mixed."""
    monkeypatch.setattr(shards, "PRECHECK_MAX_WORLD", 0)  # as for a world of 65 and more
    records_only(lake, [(rank_dir(tmp_path, 0, seed=1), 0)], 6, 2)
    rec = shards.decode_record(lake.store.get(layout.shard_record_key(ART, 6, 0, 2)), key="r0")
    stray = shards.ShardRecord(artifact=ART, step=6, rank=1, world=2, manifest=rec.manifest,
                               save="zombie.0")
    lake.store.put(layout.shard_record_key(ART, 6, 1, 2), stray.encode())
    with pytest.raises(Conflict, match="come from different saves"):
        # a repeated push of rank 0 sees the full set and commits, or tries to
        lake.push_shard(rank_dir(tmp_path, 0, seed=1), ART, step=6, rank=0, world=2)
    claim = claim_of(lake, 6)
    assert claim.state == "failed"
    assert "rank 0: a save without a save id; rank 1: save 'zombie.0'" in (claim.error or "")
    assert "ckptlake ls" not in (claim.error or "") and len(claim.error or "") < 300
    assert not [i.key for i in lake.store.list("artifacts/") if "/@v/" in i.key]
    assert [(p.step, p.state) for p in lake.pending(ART)] == [(6, "failed")]


def test_a_rank_checks_every_record_before_writing_its_own(lake, tmp_path,
                                                           monkeypatch) -> None:
    """The first record (lowest rank) is read before the upload; a later rank of another save
    is found by the check of all records before the rank writes its own."""
    crashed_save(lake, tmp_path, "a.0", ranks=(0,), world=4, step=8)
    stray = shards.decode_record(lake.store.get(layout.shard_record_key(ART, 8, 0, 4)),
                                 key="r0")
    lake.store.put(layout.shard_record_key(ART, 8, 2, 4),
                   shards.ShardRecord(artifact=ART, step=8, rank=2, world=4,
                                      manifest=stray.manifest, save="b.0").encode())
    keys = step_keys(lake, 8)
    with pytest.raises(Conflict, match="rank 2: save 'b.0'; this rank is of save 'a.0'"):
        lake.push_shard(rank_dir(tmp_path, 1, seed=1), ART, step=8, rank=1, world=4,
                        save_id="a.0")
    assert step_keys(lake, 8) == keys  # its record was not written
    # nobody can push it to a failed state: verify says it is stuck
    warnings = lake.verify(ART).warnings
    assert any("holds shard records of 2 saves: it cannot commit" in w for w in warnings)


def test_repeats_and_committed_steps(lake, tmp_path) -> None:
    d0, d1 = rank_dir(tmp_path, 0), rank_dir(tmp_path, 1)
    assert lake.push_shard(d0, ART, step=3, rank=0, world=2, save_id="s.0").version is None
    # the same rank again under another id, same files: another save's record, not a repeat
    with pytest.raises(Conflict, match="rank 0: save 's.0'; this rank is of save 's.1'"):
        lake.push_shard(d0, ART, step=3, rank=0, world=2, save_id="s.1")
    with pytest.raises(Conflict, match="this rank is of a save without a save id"):
        lake.push_shard(d0, ART, step=3, rank=0, world=2)
    again = lake.push_shard(d0, ART, step=3, rank=0, world=2, save_id="s.0")
    assert again.repeated and again.version is None
    done = lake.push_shard(d1, ART, step=3, rank=1, world=2, save_id="s.0")
    assert done.version == 1
    assert lake.push_shard(d1, ART, step=3, rank=1, world=2, save_id="s.0").version == 1
    # Committed, the step can no longer mix saves: a requeued job (a new id) pushing the same
    # files again is a repeat, as without ids; other files are refused as without ids.
    requeued = lake.push_shard(d1, ART, step=3, rank=1, world=2, save_id="s.1")
    assert (requeued.version, requeued.repeated) == (1, True)
    assert lake.push_shard(d0, ART, step=3, rank=0, world=2).version == 1
    with pytest.raises(Conflict, match="already pushed with other files") as info:
        lake.push_shard(rank_dir(tmp_path, 1, seed=5), ART, step=3, rank=1, world=2,
                        save_id="s.1")
    assert "--pending --yes" not in (info.value.hint or "")  # a committed step stays


def test_a_deleted_committed_step_says_so_whatever_the_save(lake, tmp_path) -> None:
    """A restarted job pushing a step gc or rm deleted since: not found (exit 3) before it
    uploads, as without ids, not a conflict with the deleted save's records."""
    for r in range(2):
        lake.push_shard(rank_dir(tmp_path, r), ART, step=7, rank=r, world=2, save_id="a.0")
    lake.push(rank_dir(tmp_path, 9, seed=9), ART)
    lake.delete(f"{ART}@v1")
    with pytest.raises(NotFound, match="was committed as v1, which was deleted"):
        lake.push_shard(rank_dir(tmp_path, 0, seed=4), ART, step=7, rank=0, world=2,
                        save_id="a.1")


def test_records_keep_their_format_and_bad_ids_are_refused(lake, tmp_path) -> None:
    lake.push_shard(rank_dir(tmp_path, 0), ART, step=1, rank=0, world=2)
    key = layout.shard_record_key(ART, 1, 0, 2)
    raw = json.loads(lake.store.get(key))
    assert "save" not in raw  # a record without an id is byte-for-byte what it was
    assert shards.decode_record(lake.store.get(key), key=key).save is None
    for bad in ("", "-x", "a b", "x" * 129, "é"):
        with pytest.raises(UsageError, match="invalid save id"):
            lake.push_shard(tmp_path, ART, step=2, rank=0, world=2, save_id=bad)
    # read leniently: an id another tool wrote must not make every push of the step fail
    for bad in (7, "", "x" * 257, ["a"]):
        with pytest.raises(IntegrityError, match="malformed shard record"):
            shards.decode_record(json.dumps({**raw, "save": bad}).encode(), key=key)
    assert shards.decode_record(json.dumps({**raw, "save": "a b/é"}).encode(),
                                key=key).save == "a b/é"
    assert step_keys(lake, 2) == set()
    good = "4711.2:run=7@node-3+x_y-z"
    rec = shards.decode_record(json.dumps({**raw, "save": good}).encode(), key=key)
    assert rec.save == good and json.loads(rec.encode())["save"] == good


# ---- the CLI ----------------------------------------------------------------------------------

def cli(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_cli_save_id(local_lake_url, tmp_path) -> None:
    d0, d1 = rank_dir(tmp_path, 0), rank_dir(tmp_path, 1)
    lake = ("--lake", local_lake_url)
    r = cli("push", d0, ART, "--step", 2, "--save-id", "j.0", *lake)
    assert r.exit_code == 2 and "--save-id needs --shard" in r.stderr, r.stderr
    r = cli("push", d0, ART, "--step", 2, "--shard", "0/2", "--save-id", "no spaces", *lake)
    assert r.exit_code == 2 and "invalid save id 'no spaces'" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) <= 2
    r = cli("push", d0, ART, "--step", 2, "--shard", "0/2", "--save-id", "j.0", "--json", *lake)
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["save_id"] == "j.0"
    r = cli("push", d1, ART, "--step", 2, "--shard", "1/2", "--save-id", "j.1", *lake)
    assert r.exit_code == 6, r.stderr
    assert "rank 0: save 'j.0'; this rank is of save 'j.1'" in r.stderr
    r = cli("push", d1, ART, "--step", 2, "--shard", "1/2", "--save-id", "j.0", "--json", *lake)
    assert r.exit_code == 0 and json.loads(r.stdout)["version"] == 1, r.stderr
