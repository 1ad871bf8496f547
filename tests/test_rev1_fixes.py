"""Review findings on `rm` of a latest version and verify's tombstone check.

A. `watch` pushed a step again whose version was deleted: the README's leaked-secret recipe
   (`rm` the version) ended with the secret back in the lake at the next pass.  A deleted
   step is now never pushed again (a note once per step), a deleted latest step blocks no
   later checkpoint, and keep_local never prunes the local copy of a step `rm` deleted (one a
   retention rule deleted is pruned as before: review 2, at the end).
B. verify called a tombstone of a newer ckptlake "not a readable tombstone" (advice: restore a
   backup), and read an unpadded tombstone key (`@tomb/8.json`) at the padded key, so it was
   skipped in silence.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
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


# ---- review 2: keep_local and retention; what a watch reads of the tombstones -----------------

def retain_last_2(lake: Any) -> None:
    """The checkpointer's retention after each commit (gc's deleter, rule 'keep_last=2
    (checkpointer)'): a tombstone for every version it deletes."""
    from ckptlake.core.gc import retain
    from ckptlake.policy.retention import RetentionPolicy

    retain(lake.store, ART, RetentionPolicy(), keep_last=2)


def local_steps(d: Path) -> list[int]:
    return sorted(int(p.name.split("_")[1]) for p in d.iterdir())


def test_keep_local_prunes_a_step_retention_deleted(local_lake_url: str,
                                                    tmp_path: Path) -> None:
    """keep_local kept the local copy of every step whose version was deleted, retention's
    too: with keep_last=2 retention after each commit, ten steps left all ten on disk (the
    disk fills).  A step retention deleted is pruned as before; one `rm` deleted is kept."""
    d = tmp_path / "wdir"
    events: list[Any] = []
    with ckptlake.open(local_lake_url) as lake:
        w = Watcher(lake, d, ART, step_regex=r"step_(\d+)", settle=0, keep_local=3,
                    on_event=events.append)
        for step in range(1, 11):
            write(d / f"step_{step}" / "w.bin", f"weights {step}".encode())
            assert w.poll_once() == 1
            retain_last_2(lake)
    assert local_steps(d) == [8, 9, 10]
    pruned = [e for e in events if e.kind == "pruned"]
    assert sorted(e.step for e in pruned) == list(range(1, 8))
    assert "until a retention rule deleted it" in pruned[0].message
    assert steps(local_lake_url) == [(9, 9), (10, 10)]


def test_keep_local_of_restarted_watches_prunes_by_the_identity_in_the_tombstone(
        local_lake_url: str, tmp_path: Path) -> None:
    """A cron `watch --once` is a new watcher each time: a step retention deleted before it
    left the newest N is pruned by the entry identity its tombstone kept (as a live version's
    is); a step `ckptlake rm` deleted stays (the only copy left, the user decides)."""
    d = tmp_path / "wdir"
    pruned: list[int] = []
    with ckptlake.open(local_lake_url) as lake:
        for step in range(1, 11):
            write(d / f"step_{step}" / "w.bin", f"weights {step}".encode())
            w = Watcher(lake, d, ART, step_regex=r"step_(\d+)", settle=0, keep_local=3,
                        on_event=lambda e: pruned.append(e.step) if e.kind == "pruned" else None)
            assert w.poll_once() == 1
            retain_last_2(lake)
            if step == 4:  # live: v3, v4; step 3 held a secret
                lake.delete(f"{ART}@v3", reason="secret")
    assert local_steps(d) == [3, 8, 9, 10]
    assert sorted(pruned) == [1, 2, 4, 5, 6, 7]


class TombCounting:
    """Wraps a MemoryStore: counts GETs of tombstone keys; with `barrier`, every such GET
    waits for the others (a watch that reads them one at a time breaks it)."""

    def __init__(self) -> None:
        from ckptlake.store.memory import MemoryStore

        self.store = MemoryStore()
        self.gets: dict[str, int] = {}
        self.barrier: Any = None

    def install(self) -> None:
        inner = self.store.get

        def get(key: str) -> bytes:
            if layout.parse_tombstone_key(key):
                self.gets[key] = self.gets.get(key, 0) + 1
                if self.barrier is not None:
                    self.barrier.wait()
            return inner(key)

        self.store.get = get  # type: ignore[method-assign]


def test_a_watch_reads_tombstones_only_when_needed_in_parallel_and_once(tmp_path: Path) -> None:
    """learn() read every tombstone of the artifact, one GET after another, in every new
    watcher (3000 tombstones: 3000 GETs before a cron `--once` run's first pass), and read
    the unreadable ones again at every learn().  Now a watch with no complete checkpoint of
    a step no live version has reads none; the first that has one reads each tombstone
    once, all at a time; none is read again.  (An unusable one stops the watch: see
    test_an_unusable_tombstone_stops_the_watch_it_may_be_the_deleted_step_s.)"""
    import shutil
    import threading

    from ckptlake.lake import Lake

    counting = TombCounting()
    lake = Lake(counting.store, chunk_size=1 << 20, concurrency=4)
    d = tmp_path / "wdir"
    for step in range(1, 6):
        write(d / f"step_{step}" / "w.bin", f"weights {step}".encode())
        write(d / f"step_{step}" / "DONE", b"")
        lake.push(d / f"step_{step}", ART, step=step)
        retain_last_2(lake)  # deletes v1..v3: three tombstones
    tomb_keys = sorted(i.key for i in counting.store.list(layout.tombstones_prefix(ART)))
    assert len(tomb_keys) == 3
    for step in (1, 2, 3):  # their local copies were pruned (keep_local)
        shutil.rmtree(d / f"step_{step}")
    counting.install()
    write(d / "step_6" / "w.bin", b"weights 6")  # being written: no marker yet

    def watcher() -> Watcher:
        return Watcher(lake, d, ART, step_regex=r"step_(\d+)", marker="DONE", keep_local=5)

    # steps 4, 5 live, 6 incomplete: no tombstone needed, none read
    for _ in range(2):  # two cron runs, each a new watcher
        w = watcher()
        w.run(threading.Event(), once=True)
        assert counting.gets == {}
    w = watcher()
    assert w.poll_once() == 0 and counting.gets == {}
    # step 6 completes: it must be told from a deleted step, so the tombstones are read,
    # each once, in parallel (a barrier all three GETs must reach together)
    counting.barrier = threading.Barrier(len(tomb_keys), timeout=5)
    write(d / "step_6" / "DONE", b"")
    assert w.poll_once() == 1
    assert sorted(counting.gets) == tomb_keys and set(counting.gets.values()) == {1}
    counting.barrier = None
    # later passes and pushes (a learn() each) read none again
    write(d / "step_1" / "w.bin", b"weights 1")  # a deleted step comes back locally
    write(d / "step_1" / "DONE", b"")
    for step in (7, 8):
        write(d / f"step_{step}" / "w.bin", f"weights {step}".encode())
        write(d / f"step_{step}" / "DONE", b"")
        assert w.poll_once() == 1
    assert sorted(counting.gets) == tomb_keys and set(counting.gets.values()) == {1}
    assert [v.step for v in lake.versions(ART)] == [4, 5, 6, 7, 8]


@pytest.mark.parametrize("damage", ["garbage", "other version", "newer format"])
def test_an_unusable_tombstone_stops_the_watch_it_may_be_the_deleted_step_s(
        local_lake_url: str, tmp_path: Path, damage: str) -> None:
    """An unusable tombstone counted as no deletion: after `rm` of a step that held a secret,
    a damaged (or newer-format) tombstone let the next watch push the step back.  Which step
    it deleted is unknown, so a watch with a complete checkpoint no live version holds stops
    (exit 5, naming the key and what to do), pushing nothing; once the tombstone is put right
    it goes on, and the deleted step stays deleted."""
    d = trainer_dir(tmp_path, 100, 200)
    watch = ("watch", d, ART, "--once", "--settle", "0", "--lake", local_lake_url)
    assert cli(*watch).exit_code == EXIT_OK
    r = cli("rm", f"{ART}@latest", "--reason", "secret", "--yes", "--lake", local_lake_url)
    assert r.exit_code == EXIT_OK, r.output
    key = layout.tombstone_key(ART, 2)
    with ckptlake.open(local_lake_url) as lake:
        good = lake.store.get(key)
        doc = json.loads(good)
        if damage == "garbage":
            bad = b"{not json"
        elif damage == "other version":
            bad = json.dumps({**doc, "version": 7}).encode()
        else:
            bad = json.dumps({**doc, "ckptlake_tombstone": 2}).encode()
        lake.store.put(key, bad)
    write(d / "step_300" / "w.bin", b"weights 300")
    for _ in range(2):  # a restarted watch, twice: each reads the tombstone again
        r = cli(*watch)
        assert r.exit_code == EXIT_INTEGRITY, r.output
        assert steps(local_lake_url) == [(1, 100)]
        assert f"the tombstone {key} is unusable" in r.stderr
        assert "Traceback" not in r.output
        assert ("upgrade ckptlake" in r.stderr) == (damage == "newer format")
    with ckptlake.open(local_lake_url) as lake:
        lake.store.put(key, good)
    r = cli(*watch)
    assert r.exit_code == EXIT_OK, r.output
    assert steps(local_lake_url) == [(1, 100), (3, 300)]
    assert "step 200 of w/ckpt was in the lake as v2, deleted with ckptlake rm" in r.stderr


def test_keep_local_never_prunes_a_step_rm_deleted_during_the_next_push(tmp_path: Path) -> None:
    """The prune worked from what the lake held before the upload: a version deleted while the
    next checkpoint uploaded (an rm of a leaked secret) still counted as in the lake, and its
    local copy -- the only one left -- was deleted, "step 2 is in the lake"."""
    from ckptlake.lake import Lake
    from ckptlake.store.memory import MemoryStore
    from ckptlake.watch import Watcher

    lake = Lake(MemoryStore(), chunk_size=1 << 20)
    wdir = tmp_path / "w"
    wdir.mkdir()
    events: list[Any] = []
    watcher = Watcher(lake, wdir, "w/ckpt", keep_local=1, settle=0.0, on_event=events.append)
    for step in (1, 2):
        d = wdir / f"step_{step}"
        d.mkdir()
        (d / "w.bin").write_bytes(os.urandom(100))
        watcher.poll_once()
    assert [v.step for v in lake.versions("w/ckpt")] == [1, 2]
    real = lake.push

    def push_after_an_rm(*a: Any, **k: Any) -> Any:
        if k.get("step") == 3:
            assert lake.delete("w/ckpt@v2", reason="leaked secret").deleted
        return real(*a, **k)

    lake.push = push_after_an_rm  # type: ignore[method-assign]
    d = wdir / "step_3"
    d.mkdir()
    (d / "w.bin").write_bytes(os.urandom(100))
    watcher.poll_once()
    assert [v.step for v in lake.versions("w/ckpt")] == [1, 3]
    assert (wdir / "step_2").exists(), [e.message for e in events if e.kind == "pruned"]
    assert not (wdir / "step_1").exists()  # in the lake, older than the newest 1: pruned
