"""A file added to a directory while it is pushed fails the push (SourceChanged, nothing
committed), as a file rewritten does: before, the version committed without it, and `watch`
(whose settle rule had taken the directory for complete) never pushed that step again."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

import ckptlake
from ckptlake.core import scan as scan_module
from ckptlake.errors import SourceChanged
from ckptlake.watch import Watcher

ART = "run/ckpt"


def _during_upload(monkeypatch: pytest.MonkeyPatch, action) -> list[bool]:  # type: ignore[no-untyped-def]
    """Run `action` once, after the bytes are stored and before the commit (where a trainer's
    next file lands while a large upload runs)."""
    done: list[bool] = []
    real = scan_module.SourceFile.check_unchanged

    def check_unchanged(self: Any) -> None:
        if not done:
            done.append(True)
            action()
        real(self)

    monkeypatch.setattr(scan_module.SourceFile, "check_unchanged", check_unchanged)
    return done


@pytest.mark.parametrize("added", ["optimizer.pt", "sub/rng.json", "emptydir/", "link"])
def test_an_entry_added_during_the_push_fails_it_and_commits_nothing(
        lake_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, added: str) -> None:
    src = tmp_path / "step_100"
    src.mkdir()
    (src / "model.bin").write_bytes(os.urandom(300_000))

    def add() -> None:
        target = src / added
        if added.endswith("/"):
            target.mkdir()
        elif added == "link":
            target.symlink_to("model.bin")
        else:
            target.parent.mkdir(exist_ok=True)
            target.write_bytes(b"written late")

    staged = _during_upload(monkeypatch, add)
    with ckptlake.open(lake_url) as lake:
        with pytest.raises(SourceChanged, match=r"appeared while the directory was being "
                                                r"pushed; nothing was committed"):
            lake.push(src, ART, step=100)
        assert staged
        with pytest.raises(ckptlake.NotFound):
            lake.versions(ART)
        monkeypatch.undo()
        v = lake.push(src, ART, step=100)  # the writer is done: the push takes it all
        paths = {f["path"] for f in lake.show(v.ref).files} | set(lake.show(v.ref).dirs)
        assert added.rstrip("/") in paths


def test_an_unchanged_directory_pushes_as_before(tmp_path: Path, local_lake_url: str) -> None:
    src = tmp_path / "d"
    (src / "a").mkdir(parents=True)
    (src / "a" / "x").write_bytes(b"x")
    (src / "empty").mkdir()
    (src / "skip.tmp").write_bytes(b"left out")
    with ckptlake.open(local_lake_url) as lake:
        v = lake.push(src, ART, exclude=["*.tmp"])
        assert {f["path"] for f in lake.show(v.ref).files} == {"a/x"}


def test_watch_retries_a_step_that_gained_a_file_during_its_upload(
        local_lake_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "ck"
    step = d / "step_100"
    step.mkdir(parents=True)
    (step / "model.bin").write_bytes(os.urandom(200_000))
    for p in (step / "model.bin", step):
        os.utime(p, (900.0, 900.0))
    now = [1000.0]
    events: list[Any] = []
    late = step / "optimizer.pt"
    staged = _during_upload(monkeypatch, lambda: late.write_bytes(b"the trainer's next file"))
    with ckptlake.open(local_lake_url) as lake:
        w = Watcher(lake, d, ART, pattern="step_*", step_regex=r"step_(\d+)", settle=30,
                    clock=lambda: now[0], on_event=events.append)
        assert w.poll_once() == 0 and staged
        assert [e.kind for e in events] == ["failed"]
        assert "appeared while the directory was being pushed" in events[0].message
        for p in (late, step):
            os.utime(p, (1000.0, 1000.0))
        now[0] = 1100.0  # settled again
        time.sleep(1.1)  # the watch's back-off after a changed source (1 s)
        assert w.poll_once() == 1
        [v] = lake.versions(ART)
        assert {f["path"] for f in lake.show(f"{ART}@v{v.version}").files} == \
            {"model.bin", "optimizer.pt"}


def test_a_ranks_shard_push_fails_too_when_its_directory_gains_a_file(
        local_lake_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A first form of the fix exempted shard pushes (ranks may share a directory); the
    README's recipe pushes each rank's directory, and the exemption committed a step without
    the file that landed during the upload (review of the fix)."""
    src = tmp_path / "step_7"
    src.mkdir()
    (src / "model.bin").write_bytes(os.urandom(100_000))
    staged = _during_upload(monkeypatch, lambda: (src / "optimizer.pt").write_bytes(b"late"))
    with ckptlake.open(local_lake_url) as lake:
        with pytest.raises(SourceChanged, match="optimizer.pt appeared"):
            lake.push_shard(src, ART, step=7, rank=0, world=1)
        assert staged
        with pytest.raises(ckptlake.NotFound):
            lake.versions(ART)
        monkeypatch.undo()
        r = lake.push_shard(src, ART, step=7, rank=0, world=1)
        assert {f["path"] for f in lake.show(f"{ART}@v{r.version}").files} == {
            "model.bin", "optimizer.pt"}


def test_an_entry_that_could_not_be_pushed_appearing_is_a_change_not_a_usage_error(
        local_lake_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.bin").write_bytes(os.urandom(100_000))
    _during_upload(monkeypatch, lambda: os.mkfifo(src / "trainer.pipe"))
    with ckptlake.open(local_lake_url) as lake:
        with pytest.raises(SourceChanged, match=r"changed while it was being pushed \(.*"
                                                r"trainer.pipe.*nothing was committed"):
            lake.push(src, ART)


def test_an_unreadable_file_appearing_and_many_entries_appearing_are_named(
        local_lake_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second walk's AccessDenied is a change too (exit 6, not 4: the file was not there
    to read when the push began), and several entries appearing say how many besides the
    first."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.bin").write_bytes(os.urandom(100_000))
    real_access = os.access
    monkeypatch.setattr(scan_module.os, "access",
                        lambda p, mode: not str(p).endswith("secret.key") and real_access(p, mode))
    _during_upload(monkeypatch, lambda: (src / "secret.key").write_bytes(b"k"))
    with ckptlake.open(local_lake_url) as lake:
        with pytest.raises(SourceChanged, match=r"changed while it was being pushed \(cannot "
                                                r"read .*secret.key: permission denied\)"):
            lake.push(src, ART)
        (src / "secret.key").unlink()
        monkeypatch.undo()
        _during_upload(monkeypatch, lambda: [(src / f"late{i}.bin").write_bytes(b"x")
                                             for i in range(3)])
        with pytest.raises(SourceChanged, match=r"late0.bin appeared while the directory was "
                                                r"being pushed \(and 2 more\); nothing"):
            lake.push(src, ART)
        with pytest.raises(ckptlake.NotFound):
            lake.versions(ART)


@pytest.mark.parametrize("into", ["new", "existing"])
def test_a_version_rm_deletes_while_it_is_pulled_is_not_placed(
        lake_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, into: str) -> None:
    """`rm` leaves the chunks a pull reads: the pull exited 0 and placed the files of a
    version deleted for a leaked secret, where the README promises exit 3 and nothing left
    (a review)."""
    from ckptlake.core import pull as pull_module

    src = tmp_path / "src"
    src.mkdir()
    (src / "secret.bin").write_bytes(os.urandom(200_000))
    dest = tmp_path / "dest"
    if into == "existing":
        dest.mkdir()
        (dest / "mine.txt").write_text("kept")
    with ckptlake.open(lake_url) as lake:
        v = lake.push(src, ART)
        real = pull_module.local_sources

        def rm_meanwhile(*a: Any, **k: Any) -> Any:
            lake.delete(f"{ART}@v{v.version}", reason="leaked a token")
            return real(*a, **k)

        monkeypatch.setattr(pull_module, "local_sources", rm_meanwhile)
        with pytest.raises(ckptlake.NotFound, match="was deleted .* while it was being "
                                                    "pulled; nothing of it was placed"):
            lake.pull(f"{ART}@v{v.version}", dest)
    left = sorted(p.name for p in dest.iterdir()) if dest.exists() else []
    assert left == ([] if into == "new" else ["mine.txt"])


def test_a_tree_nested_deeper_than_the_walk_goes_is_a_usage_error(tmp_path: Path,
                                                                   local_lake_url: str) -> None:
    """1,500 directories deep: "internal error: RecursionError", exit 1 (a review)."""
    from ckptlake.errors import UsageError

    d = tmp_path / "deep"
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        os.mkdir("deep", dir_fd=fd)
        cur = os.open("deep", os.O_RDONLY, dir_fd=fd)
        for _ in range(1500):  # relative to a descriptor: the path outgrows PATH_MAX
            os.mkdir("d", dir_fd=cur)
            nxt = os.open("d", os.O_RDONLY, dir_fd=cur)
            os.close(cur)
            cur = nxt
        os.close(cur)
    finally:
        os.close(fd)
    try:
        with ckptlake.open(local_lake_url) as lake:
            with pytest.raises(UsageError, match="nested too deeply"):
                lake.push(d, ART)
    finally:  # shutil.rmtree (pytest's clean-up) recurses as deep: remove it level by level
        fds = [os.open(d, os.O_RDONLY)]
        for _ in range(1500):
            fds.append(os.open("d", os.O_RDONLY, dir_fd=fds[-1]))
        os.close(fds.pop())
        while fds:
            parent = fds.pop()
            os.rmdir("d", dir_fd=parent)
            os.close(parent)
        d.rmdir()
