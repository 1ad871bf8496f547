"""Sharded commits: exactly one version per step once all WORLD ranks are in, none before.

The protocol (docs/format.md, "Sharded commits") is exercised on a local lake in-process (fast,
including the crash/takeover cases, built by writing the records a crashed rank leaves), and
end to end with 8 concurrent `ckptlake push --shard` processes against SeaweedFS.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

import ckptlake
from ckptlake.core import shards
from ckptlake.core.identity import utcnow
from ckptlake.errors import EXIT_NOT_FOUND, EXIT_OK, Conflict, UsageError
from ckptlake.format import layout
from ckptlake.format.manifest import decode_manifest

ART = "dist/run/ckpt"


def make_rank(root: Path, rank: int, world: int, *, big: int = 300_000) -> Path:
    """What one rank of a DCP-like writer leaves: distinct file names per rank, one shared
    directory, and (rank 0 only) the metadata file."""
    d = root / f"rank{rank}"
    (d / "shards").mkdir(parents=True)
    rnd = __import__("random").Random(rank)
    (d / "shards" / f"__{rank}_0.distcp").write_bytes(rnd.randbytes(big + rank))
    (d / "shards" / f"__{rank}_1.distcp").write_bytes(rnd.randbytes(1000 + rank))
    (d / f"empty-{rank}.bin").write_bytes(b"")
    if rank == 0:
        (d / ".metadata").write_bytes(json.dumps({"world": world}).encode())
    (d / "same.json").write_text('{"identical": "on every rank"}')
    return d


def tree_files(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def union(dirs: list[Path]) -> dict[str, str]:
    out: dict[str, str] = {}
    for d in dirs:
        out.update(tree_files(d))
    return out


@pytest.fixture
def lake(local_lake_url: str):
    with ckptlake.open(local_lake_url) as lk:
        yield lk


def test_seven_of_eight_commit_nothing_then_the_eighth_commits_once(lake, tmp_path) -> None:
    world = 8
    dirs = [make_rank(tmp_path, r, world) for r in range(world)]
    for r in range(7):
        res = lake.push_shard(dirs[r], ART, step=100, rank=r, world=world)
        assert res.version is None and res.shards_present == r + 1
    assert not lake.artifacts()
    [p] = lake.pending()
    assert (p.artifact, p.step, p.world, p.ranks, p.missing, p.state) == \
        (ART, 100, 8, list(range(7)), [7], "incomplete")
    last = lake.push_shard(dirs[7], ART, step=100, rank=7, world=world, metrics={"loss": 1.5})
    assert last.version == 1 and last.committed_here and last.shards_present == 8
    assert lake.pending() == []
    [v] = lake.versions(ART)
    assert (v.version, v.step, v.metrics) == (1, 100, {"loss": 1.5})
    out = tmp_path / "restore"
    lake.pull(ART, out)
    assert tree_files(out) == union(dirs)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("empty-")) == \
        [f"empty-{r}.bin" for r in range(world)]


def test_a_rank_pushing_twice_is_idempotent(lake, tmp_path) -> None:
    dirs = [make_rank(tmp_path, r, 2) for r in range(2)]
    first = lake.push_shard(dirs[0], ART, step=1, rank=0, world=2)
    again = lake.push_shard(dirs[0], ART, step=1, rank=0, world=2)
    assert again.repeated and not first.repeated and again.version is None
    assert again.bytes_uploaded == 0
    done = lake.push_shard(dirs[1], ART, step=1, rank=1, world=2)
    assert done.version == 1
    for d, r in ((dirs[0], 0), (dirs[1], 1), (dirs[1], 1)):  # after the commit: same version
        res = lake.push_shard(d, ART, step=1, rank=r, world=2)
        assert (res.version, res.committed_here, res.repeated) == (1, False, True)
    assert [v.version for v in lake.versions(ART)] == [1]


def test_a_rank_pushing_other_files_for_the_same_step_conflicts(lake, tmp_path) -> None:
    d = make_rank(tmp_path, 0, 2)
    lake.push_shard(d, ART, step=1, rank=0, world=2)
    (d / "shards" / "__0_1.distcp").write_bytes(b"changed")
    with pytest.raises(Conflict, match="already pushed with other files"):
        lake.push_shard(d, ART, step=1, rank=0, world=2)


def test_colliding_paths_are_refused_before_the_record_is_written(lake, tmp_path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "weights.bin").write_bytes(b"rank 0")
    (b / "weights.bin").write_bytes(b"rank 1")
    lake.push_shard(a, ART, step=3, rank=0, world=2)
    with pytest.raises(Conflict, match="different contents"):
        lake.push_shard(b, ART, step=3, rank=1, world=2)
    assert lake.pending()[0].ranks == [0]


def test_merge_refuses_file_against_directory_and_keeps_identical_duplicates(lake) -> None:
    from ckptlake.format.manifest import ChunkRef, FileEntry, Manifest

    def rec(rank: int, *files: FileEntry) -> shards.ShardRecord:
        m = Manifest(artifact=ART, version=0, kind="dir", hash="sha256", files=files, step=1)
        return shards.ShardRecord(ART, 1, rank, 2, m)

    d1, d2 = "a" * 64, "b" * 64
    same0 = FileEntry("cfg.json", 3, chunks=(ChunkRef(d1, 3, 0),), digest=d2)
    same1 = FileEntry("cfg.json", 3, chunks=(ChunkRef(d2, 3, 10),), digest=d2)  # other pack
    m = shards.merge_records([rec(0, same0), rec(1, same1)], artifact=ART, step=1, world=2,
                             hash_algo="sha256", commit_id="c")
    assert [f.path for f in m.files] == ["cfg.json"]
    with pytest.raises(Conflict, match="file in one rank and a directory"):
        shards.merge_records([rec(0, FileEntry("x", 3, chunks=(ChunkRef(d1, 3),))),
                              rec(1, FileEntry("x/y", 3, chunks=(ChunkRef(d1, 3),)))],
                             artifact=ART, step=1, world=2, hash_algo="sha256", commit_id="c")


def test_other_world_size_for_the_same_step_conflicts(lake, tmp_path) -> None:
    d = make_rank(tmp_path, 0, 4)
    lake.push_shard(d, ART, step=9, rank=0, world=4)
    with pytest.raises(Conflict, match="world of 4"):
        lake.push_shard(d, ART, step=9, rank=0, world=2)


def test_bad_rank_is_a_usage_error(lake, tmp_path) -> None:
    with pytest.raises(UsageError):
        lake.push_shard(tmp_path, ART, step=1, rank=2, world=2)


def _records_only(lake, dirs: list[Path], step: int, world: int) -> None:
    """Every rank's record written, nobody committed: what ranks that crashed right after
    writing their record leave."""
    real = shards.finish_step
    shards.finish_step = lambda *a, **kw: (None, False)  # the crash: no claim, no commit
    try:
        for r, d in enumerate(dirs):
            lake.push_shard(d, ART, step=step, rank=r, world=world)
    finally:
        shards.finish_step = real
    assert not lake.store.exists(layout.shard_claim_key(ART, step))


def _claim(lake, step: int, world: int, **kw) -> None:
    c = shards.Claim(artifact=ART, step=step, world=world, commit_id="dead0000",
                     state="claimed", owner="ghost@nowhere:1:x",
                     updated=utcnow() - timedelta(hours=1))
    lake.store.put(layout.shard_claim_key(ART, step), replace(c, **kw).encode())


def test_complete_step_without_claim_is_ready_and_any_rank_commits_it(lake, tmp_path) -> None:
    dirs = [make_rank(tmp_path, r, 2) for r in range(2)]
    _records_only(lake, dirs, 5, 2)
    assert [p.state for p in lake.pending()] == ["ready"]
    res = lake.push_shard(dirs[0], ART, step=5, rank=0, world=2)
    assert res.version is not None and res.committed_here
    assert len(lake.versions(ART)) == 1


def test_stale_claim_is_taken_over(lake, tmp_path) -> None:
    dirs = [make_rank(tmp_path, r, 2) for r in range(2)]
    _records_only(lake, dirs, 5, 2)
    _claim(lake, 5, 2)  # the winner crashed right after claiming
    [p] = lake.pending()
    assert p.state == "stale" and p.owner == "ghost@nowhere:1:x"
    res = lake.push_shard(dirs[1], ART, step=5, rank=1, world=2, stale_after=60)
    assert res.committed_here and res.version is not None
    [v] = lake.versions(ART)
    m = decode_manifest(lake.store.get(layout.version_key(ART, v.version)))
    assert m.metadata[shards.META_COMMIT_ID] == "dead0000"  # the claim's commit id is kept


def test_live_claim_is_waited_for_not_taken_over(lake, tmp_path) -> None:
    dirs = [make_rank(tmp_path, r, 2) for r in range(2)]
    _records_only(lake, dirs, 5, 2)
    _claim(lake, 5, 2, updated=utcnow())
    res = lake.push_shard(dirs[1], ART, step=5, rank=1, world=2, wait_seconds=0.3)
    assert res.version is None and not res.committed_here
    assert [p.state for p in lake.pending()] == ["claimed"]


def test_takeover_finds_the_manifest_the_dead_owner_wrote(lake, tmp_path) -> None:
    """The owner wrote @v/N and died before marking the claim committed: no second version."""
    dirs = [make_rank(tmp_path, r, 2) for r in range(2)]
    res = None
    for r in range(2):
        res = lake.push_shard(dirs[r], ART, step=7, rank=r, world=2)
    assert res is not None and res.version == 1
    key = layout.shard_claim_key(ART, 7)
    claim = shards.decode_claim(lake.store.get(key), key=key)
    lake.store.put(key, replace(claim, state="committing", owner="ghost@nowhere:1:x",
                                updated=utcnow() - timedelta(hours=1)).encode())
    again = lake.push_shard(dirs[0], ART, step=7, rank=0, world=2, stale_after=60)
    assert again.version == 1
    assert [v.version for v in lake.versions(ART)] == [1]
    assert shards.decode_claim(lake.store.get(key), key=key).state == "committed"


def test_takeover_moves_past_a_foreign_version_at_the_intent(lake, tmp_path) -> None:
    dirs = [make_rank(tmp_path, r, 2) for r in range(2)]
    _records_only(lake, dirs, 8, 2)
    other = tmp_path / "other"
    other.mkdir()
    (other / "f").write_text("x")
    foreign = lake.push(other, ART)  # an ordinary push took the number the owner intended
    _claim(lake, 8, 2, state="committing", version=foreign.version)
    res = lake.push_shard(dirs[0], ART, step=8, rank=0, world=2, stale_after=60)
    assert res.version == foreign.version + 1
    assert [v.step for v in lake.versions(ART)] == [None, 8]


def test_concurrent_finishers_commit_exactly_once(lake, tmp_path) -> None:
    dirs = [make_rank(tmp_path, r, 4) for r in range(4)]
    _records_only(lake, dirs, 11, 4)
    got: list[tuple[int | None, bool]] = []
    barrier = threading.Barrier(6)

    def finish() -> None:
        barrier.wait()
        got.append(shards.finish_step(lake.store, ART, 11, 4, stale_after=300,
                                      wait_seconds=30, poll=0.01))

    threads = [threading.Thread(target=finish) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({v for v, _ in got}) == 1 and sum(here for _, here in got) == 1
    assert len(lake.versions(ART)) == 1


# ---- the CLI, 8 processes against SeaweedFS ---------------------------------------------------

def _cli(env: dict, *args: str) -> list[str]:
    return [sys.executable, "-m", "ckptlake", *args]


def test_eight_processes_commit_exactly_one_version_and_pull_restores_the_union(
        seaweedfs, s3_lake_url, tmp_path) -> None:
    world = 8
    dirs = [make_rank(tmp_path / "src", r, world, big=2_500_000) for r in range(world)]
    lake = ["--lake", s3_lake_url]
    procs = [subprocess.Popen(_cli(seaweedfs.env, "push", str(d), ART, "--step", "2000",
                                   "--shard", f"{r}/{world}", "--json", *lake),
                              env=seaweedfs.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for r, d in enumerate(dirs)]
    docs = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == EXIT_OK, err
        docs.append(json.loads(out))
    committed = [d for d in docs if d["version"] is not None]
    assert sum(d["committed_here"] for d in docs) == 1
    assert {d["version"] for d in committed} == {1}
    ls = subprocess.run(_cli(seaweedfs.env, "ls", ART, "--json", *lake), env=seaweedfs.env,
                        capture_output=True, text=True, timeout=120)
    assert [v["step"] for v in json.loads(ls.stdout)["versions"]] == [2000]
    # Ranks that had not seen the full set return at once; pushing one again reports v1.
    again = subprocess.run(_cli(seaweedfs.env, "push", str(dirs[3]), ART, "--step", "2000",
                                "--shard", f"3/{world}", "--json", *lake), env=seaweedfs.env,
                           capture_output=True, text=True, timeout=120)
    assert json.loads(again.stdout)["version"] == 1
    out = tmp_path / "restore"
    pulled = subprocess.run(_cli(seaweedfs.env, "pull", ART, str(out), *lake),
                            env=seaweedfs.env, capture_output=True, text=True, timeout=120)
    assert pulled.returncode == EXIT_OK, pulled.stderr
    assert tree_files(out) == union(dirs)


def test_seven_of_eight_processes_commit_nothing_and_ls_pending_says_so(
        seaweedfs, s3_lake_url, tmp_path) -> None:
    world = 8
    dirs = [make_rank(tmp_path / "src", r, world, big=50_000) for r in range(world)]
    lake = ["--lake", s3_lake_url]
    procs = [subprocess.Popen(_cli(seaweedfs.env, "push", str(d), ART, "--step", "7",
                                   "--shard", f"{r}/{world}", "--quiet", *lake),
                              env=seaweedfs.env, stderr=subprocess.PIPE, text=True)
             for r, d in enumerate(dirs) if r != 5]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == EXIT_OK, err
    ls = subprocess.run(_cli(seaweedfs.env, "ls", ART, *lake), env=seaweedfs.env,
                        capture_output=True, text=True, timeout=120)
    assert ls.returncode == EXIT_NOT_FOUND  # no version at all
    pending = subprocess.run(_cli(seaweedfs.env, "ls", "--pending", *lake), env=seaweedfs.env,
                             capture_output=True, text=True, timeout=120)
    assert pending.returncode == EXIT_OK, pending.stderr
    row = [line.split() for line in pending.stdout.splitlines() if line.startswith(ART)]
    assert row == [[ART, "7", "7/8", "incomplete", "5", "-"]]
    doc = json.loads(subprocess.run(_cli(seaweedfs.env, "ls", ART, "--pending", "--json",
                                         *lake), env=seaweedfs.env, capture_output=True,
                                    text=True, timeout=120).stdout)
    assert [(p["step"], p["missing"]) for p in doc["pending"]] == [(7, [5])]


def test_cli_shard_option_is_validated(local_lake_url, tmp_path) -> None:
    from typer.testing import CliRunner

    from ckptlake.cli.app import app

    for bad in ("3", "8/8", "a/b", "-1/2"):
        r = CliRunner().invoke(app, ["push", str(tmp_path), ART, "--step", "1", "--shard", bad,
                                     "--lake", local_lake_url])
        assert r.exit_code == 2, (bad, r.output)
    r = CliRunner().invoke(app, ["push", str(tmp_path), ART, "--shard", "0/2",
                                 "--lake", local_lake_url])
    assert r.exit_code == 2 and "--step" in r.output
    assert os.path.isdir(tmp_path)
