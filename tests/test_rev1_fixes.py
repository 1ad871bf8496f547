"""Review findings on `rm` of a latest version and verify's tombstone check.

A. `watch` pushed a step again whose version was deleted: the README's leaked-secret recipe
   (`rm` the version) ended with the secret back in the lake at the next pass.  A deleted
   step is now never pushed again (a note once per step), a deleted latest step blocks no
   later checkpoint, and keep_local never prunes the local copy of a step deleted from the lake.
B. verify called a tombstone of a newer ckptlake "not a readable tombstone" (advice: restore a
   backup), and read an unpadded tombstone key (`@tomb/8.json`) at the padded key, so it was
   skipped in silence.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.core import tombstones
from ckptlake.core.catalog import load_manifest
from ckptlake.core.identity import utcnow
from ckptlake.errors import EXIT_INTEGRITY, EXIT_OK, NotFound
from ckptlake.format import layout
from ckptlake.watch import Watcher

ART = "w/ckpt"


def cli(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (1, 1))  # settled long ago


def steps(url: str) -> list[tuple[int, int | None]]:
    with ckptlake.open(url) as lake:
        try:
            return [(v.version, v.step) for v in lake.versions(ART)]
        except NotFound:
            return []


def trainer_dir(tmp_path: Path, *steps_: int) -> Path:
    d = tmp_path / "wdir"
    for step in steps_:
        write(d / f"step_{step}" / "w.bin", f"weights {step}".encode())
    return d


def delete_like_gc(lake: Any, artifact: str, n: int) -> str:
    """gc's order: the tombstone, then the manifest; returns the tombstone's key."""
    m = load_manifest(lake.store, artifact, n)
    tombstones.write(lake.store, tombstones.from_manifest(m, deleted=utcnow(), rule="rules[0]",
                                                          reason="not among the newest 1"))
    lake.store.delete([layout.version_key(artifact, n)])
    return layout.tombstone_key(artifact, n)


# ---- A: watch and deleted versions -------------------------------------------------------------

def test_watch_never_pushes_a_step_again_whose_version_rm_deleted(local_lake_url: str,
                                                                  tmp_path: Path) -> None:
    """The brief's repro: step 300 held a secret, `rm w/ckpt@latest` took it out, and the
    next `watch --once` pushed it back as v4."""
    d = trainer_dir(tmp_path, 100, 200, 300)
    write(d / "step_300" / "secret.txt", b"AKIA-not-really")
    watch = ("watch", d, ART, "--once", "--settle", "0", "--lake", local_lake_url)
    assert cli(*watch).exit_code == EXIT_OK
    assert steps(local_lake_url) == [(1, 100), (2, 200), (3, 300)]
    r = cli("rm", f"{ART}@latest", "--reason", "secret", "--yes", "--lake", local_lake_url)
    assert r.exit_code == EXIT_OK, r.output
    for _ in range(2):  # a restarted watch, twice: neither pushes it, both say why
        r = cli(*watch)
        assert r.exit_code == EXIT_OK, r.output
        assert steps(local_lake_url) == [(1, 100), (2, 200)]
        assert "step 300 of w/ckpt was in the lake as v3, deleted with ckptlake rm" in r.stderr
        assert "push it by hand" in r.stderr and "--step 300" in r.stderr
    # the trainer goes on: a later step is pushed (the deleted 300 blocks nothing)
    write(d / "step_400" / "w.bin", b"weights 400")
    r = cli(*watch)
    assert r.exit_code == EXIT_OK, r.output
    assert steps(local_lake_url) == [(1, 100), (2, 200), (4, 400)]


def test_a_deleted_stray_latest_step_blocks_no_later_checkpoint(local_lake_url: str,
                                                                tmp_path: Path) -> None:
    """The blocked rule counts live steps only: once the stray step far ahead is deleted, as
    the blocked warning's hint now says (rm can delete a latest version), the real checkpoints
    go up, and the stray entry, still in DIR, is not pushed again."""
    d = trainer_dir(tmp_path, 100, 99999)  # 99999: a stray number a broad regex took
    events: list[Any] = []
    with ckptlake.open(local_lake_url) as lake:
        w = Watcher(lake, d, ART, step_regex=r"step_(\d+)", settle=0, on_event=events.append)
        assert w.poll_once() == 2
        write(d / "step_200" / "w.bin", b"weights 200")
        w.poll_once()
        blocked = [e for e in events if e.kind == "blocked"]
        assert len(blocked) == 1 and blocked[0].step == 200
        hint = blocked[0].error.hint
        assert "never deletes" not in hint
        assert f"ckptlake rm {ART}@v2" in hint
        lake.delete(f"{ART}@v2", reason="no checkpoint")  # the hint's way out
        events.clear()
        w2 = Watcher(lake, d, ART, step_regex=r"step_(\d+)", settle=0, on_event=events.append)
        assert w2.poll_once() == 1
        assert not w2.failures
    assert steps(local_lake_url) == [(1, 100), (3, 200)]
    assert [(e.kind, e.step) for e in events] == [("known", 100), ("pushed", 200),
                                                  ("deleted", 99999)]


def test_a_step_gc_deleted_is_a_note_not_a_blocked_conflict(local_lake_url: str,
                                                            tmp_path: Path) -> None:
    """gc's retention deletes old versions (a tombstone each): their local checkpoints were
    "older than step 300" before, so a `--once` run exited 6 for nothing; they are deleted
    steps now, and two entries of one such step give one note."""
    d = trainer_dir(tmp_path, 100, 200, 300)
    watch = ("watch", d, ART, "--once", "--settle", "0", "--step-regex", r"step_(\d+)",
             "--lake", local_lake_url)
    assert cli(*watch).exit_code == EXIT_OK
    with ckptlake.open(local_lake_url) as lake:
        delete_like_gc(lake, ART, 1)
    write(d / "step_100.bak" / "w.bin", b"a copy")  # a second entry of step 100
    r = cli(*watch)
    assert r.exit_code == EXIT_OK, r.output
    assert r.stderr.count("step 100 of w/ckpt was in the lake as v1, deleted by gc on ") == 1
    assert "older than" not in r.stderr
    assert steps(local_lake_url) == [(2, 200), (3, 300)]


def test_keep_local_keeps_the_local_copy_of_a_step_deleted_from_the_lake(
        local_lake_url: str, tmp_path: Path) -> None:
    """keep_local prunes only checkpoints that are in the lake; one this watcher pushed and
    someone then `rm`-ed is the only copy left, and was pruned all the same."""
    d = trainer_dir(tmp_path, 100)
    events: list[Any] = []
    with ckptlake.open(local_lake_url) as lake:
        w = Watcher(lake, d, ART, settle=0, keep_local=1, on_event=events.append)
        assert w.poll_once() == 1
        lake.delete(f"{ART}@latest", reason="bad checkpoint")
        write(d / "step_200" / "w.bin", b"weights 200")
        assert w.poll_once() == 1
    assert steps(local_lake_url) == [(2, 200)]
    assert (d / "step_100" / "w.bin").is_file()
    assert not [e for e in events if e.kind == "pruned"]


# ---- B: verify's tombstone check ---------------------------------------------------------------

def verify_json(url: str) -> tuple[int, dict[str, Any]]:
    r = cli("verify", "--lake", url, "--json")
    return r.exit_code, json.loads(r.stdout)


def lake_with_deleted_v1(url: str, tmp_path: Path) -> str:
    d = trainer_dir(tmp_path, 1, 2)
    with ckptlake.open(url) as lake:
        lake.push(d / "step_1", ART, step=1)
        lake.push(d / "step_2", ART, step=2)
        return delete_like_gc(lake, ART, 1)


def test_verify_says_a_newer_ckptlake_wrote_a_tombstone(local_lake_url: str,
                                                        tmp_path: Path) -> None:
    """A tombstone of format 2 is a problem as a newer manifest is (this ckptlake's readers
    skip it), but the advice is to upgrade, not to put a backup back."""
    key = lake_with_deleted_v1(local_lake_url, tmp_path)
    with ckptlake.open(local_lake_url) as lake:
        doc = json.loads(lake.store.get(key))
        doc["ckptlake_tombstone"] = 2
        lake.store.put(key, json.dumps(doc).encode())
    code, out = verify_json(local_lake_url)
    assert code == EXIT_INTEGRITY
    [problem] = out["problems"]
    assert (problem["kind"], problem["version"], problem["key"]) == ("tombstone", 1, key)
    assert "written by a newer ckptlake (tombstone format 2" in problem["message"]
    assert "not a readable tombstone" not in problem["message"]
    assert problem["hint"].startswith("upgrade ckptlake")
    assert "backup" not in problem["hint"]


def test_verify_reads_an_unpadded_tombstone_key_at_that_key(local_lake_url: str,
                                                            tmp_path: Path) -> None:
    """`@tomb/8.json` is a tombstone key to the listing (layout.parse_tombstone_key), but
    verify read `@tomb/0000000008.json`, found nothing and skipped it."""
    padded = lake_with_deleted_v1(local_lake_url, tmp_path)
    unpadded = layout.tombstones_prefix(ART) + "1.json"
    with ckptlake.open(local_lake_url) as lake:
        data = lake.store.get(padded)
        lake.store.delete([padded])
        lake.store.put(unpadded, data)
        assert verify_json(local_lake_url)[0] == EXIT_OK  # readable: no problem
        lake.store.put(unpadded, b"garbage\n")
        code, out = verify_json(local_lake_url)
        assert code == EXIT_INTEGRITY
        assert [(p["kind"], p["key"]) for p in out["problems"]] == [("tombstone", unpadded)]
        assert "not a readable tombstone" in out["problems"][0]["message"]
        lake.store.put(padded, data)  # both keys of one number: each is checked
        code, out = verify_json(local_lake_url)
        assert code == EXIT_INTEGRITY
        assert [p["key"] for p in out["problems"]] == [unpadded]
