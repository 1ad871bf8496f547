"""Checks of watch, pull and redaction that no test held the code to (mutation testing: a
sibling directory whose name starts with the destination's, a step deleted between a pass's
look and its push, a checkpoint rewritten after its push, a secret in a --json warning, a stop
asked for in the middle of a pass)."""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ckptlake.lake  # noqa: F401 (monkeypatched below: not imported by `import ckptlake`)
from ckptlake.cli.app import app
from ckptlake.errors import EXIT_INTEGRITY, TransferError, UnsafeManifest
from ckptlake.lake import Lake
from ckptlake.store.memory import MemoryStore
from ckptlake.watch import WatchEvent, Watcher

ART = "w/ckpt"


def cli(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def write(path: Path, data: bytes, mtime: float = 1.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))  # settled long ago


def memory_lake() -> Lake:
    return Lake(MemoryStore(), chunk_size=1 << 20)


# ---- 1. pull: a symlink to a sibling whose name starts with the destination's -------------------

def test_pull_never_writes_through_a_symlink_into_a_sibling_named_like_the_destination(
        tmp_path: Path) -> None:
    """`dest/sub -> ../dest-sibling` leads outside `dest`, though `dest-sibling` starts with
    `dest`: a prefix test without the separator took it for inside, and `pull --force`
    overwrote the user's file in the sibling directory."""
    src = tmp_path / "src"
    write(src / "sub" / "victim.txt", b"from the version")
    lake = memory_lake()
    lake.push(src, ART, step=1)
    dest, sibling = tmp_path / "dest", tmp_path / "dest-sibling"
    dest.mkdir()
    write(sibling / "victim.txt", b"PRECIOUS")
    os.symlink("../dest-sibling", dest / "sub")
    for force in (False, True):
        with pytest.raises(UnsafeManifest, match="leads outside") as info:
            lake.pull(ART, dest, force=force)
        assert "would be written through the symlink" in str(info.value)
        assert (sibling / "victim.txt").read_bytes() == b"PRECIOUS", force
    url = f"file://{tmp_path / 'lake'}"
    assert cli("push", src, ART, "--step", "1", "--lake", url).exit_code == 0
    for extra in ([], ["--force"]):
        r = cli("pull", ART, dest, "--lake", url, *extra)
        assert r.exit_code == EXIT_INTEGRITY, (extra, r.output)
        assert "leads outside" in r.stderr
        assert (sibling / "victim.txt").read_bytes() == b"PRECIOUS", extra


# ---- 2. watch: a step deleted between the pass's look and its push ------------------------------

def test_watch_never_pushes_a_step_deleted_after_its_last_look_at_the_lake(
        tmp_path: Path) -> None:
    """Another writer pushed step 2 and `rm` deleted it (a leaked secret) after this watcher
    last listed the lake: the push's own fresh look must still see the deletion, or the
    secret's step goes back into the lake as v3."""
    lake = memory_lake()
    wdir = tmp_path / "w"
    write(wdir / "step_1" / "w.bin", b"weights 1")
    events: list[WatchEvent] = []
    watcher = Watcher(lake, wdir, ART, settle=0.0, on_event=events.append)
    assert watcher.poll_once() == 1
    other = tmp_path / "other"
    write(other / "w.bin", b"weights 2 with a secret")
    assert lake.push(other, ART, step=2).version == 2
    assert lake.delete(f"{ART}@v2", reason="leaked secret").deleted
    write(wdir / "step_2" / "w.bin", b"weights 2 with a secret")
    assert watcher.poll_once() == 0
    assert [v.step for v in lake.versions(ART)] == [1]
    assert [e.step for e in events if e.kind == "pushed"] == [1]
    assert [e.step for e in events if e.kind == "deleted"] == [2]


# ---- 3. keep_local: a checkpoint rewritten after its push ---------------------------------------

def test_keep_local_keeps_a_checkpoint_rewritten_after_its_push(tmp_path: Path) -> None:
    """step_1 was rewritten in place after it was pushed (same size, other bytes): the local
    bytes are in no version, so pruning it as "in the lake" deletes the only copy."""
    lake = memory_lake()
    wdir = tmp_path / "w"
    write(wdir / "step_1" / "w.bin", b"A" * 64)
    os.utime(wdir / "step_1", (1, 1))
    events: list[WatchEvent] = []
    watcher = Watcher(lake, wdir, ART, settle=0.0, keep_local=1, on_event=events.append)
    assert watcher.poll_once() == 1
    write(wdir / "step_1" / "w.bin", b"B" * 64, mtime=2.0)  # same size, later mtime
    write(wdir / "step_2" / "w.bin", b"C" * 64)
    assert watcher.poll_once() == 1
    assert [v.step for v in lake.versions(ART)] == [1, 2]
    assert (wdir / "step_1" / "w.bin").read_bytes() == b"B" * 64
    assert not [e for e in events if e.kind == "pruned" and e.name == "step_1"]
    assert any(e.kind == "skipped" and e.name == "step_1" and "changed after it was pushed"
               in e.message for e in events), [e.message for e in events]


# ---- 4. watch --json: a failed push's warning is redacted ---------------------------------------

def test_a_failed_push_warning_never_shows_a_secret_also_with_json(
        local_lake_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A watch runs unattended with its stderr in a log: a transfer error that quotes a URL
    with user info or a presigned signature must not put them there, in either output
    mode (with --json the warning takes another path to stderr)."""
    d = tmp_path / "ck"
    write(d / "step_1" / "w.bin", b"x")

    def fail(self: Any, *a: Any, **kw: Any) -> Any:
        raise TransferError("PUT https://ak:SeCrEtK3y@proxy.example/x?X-Amz-Signature=SIGSIGSIG "
                            "failed")

    monkeypatch.setattr(ckptlake.lake.Lake, "push", fail)
    for extra in ([], ["--json"]):
        r = cli("watch", d, "a/b", "--once", "--settle", "0", "--lake", local_lake_url, *extra)
        assert r.exit_code == 8, r.output
        assert "warning: push of step_1 failed" in r.stderr, (extra, r.stderr)
        for secret in ("SeCrEtK3y", "SIGSIGSIG"):
            assert secret not in r.stdout and secret not in r.stderr, (extra, r.output)


# ---- 6. poll_once stops between checkpoints -----------------------------------------------------

def test_poll_once_pushes_nothing_more_once_stop_is_set(tmp_path: Path) -> None:
    """A SIGTERM during a pass (the stop event) must end the watch after the upload under
    way, not after every complete checkpoint of a backlog: the drain deadline would cut a
    later upload short and the watch would not stop when asked."""
    lake = memory_lake()
    wdir = tmp_path / "w"
    for step in (1, 2):
        write(wdir / f"step_{step}" / "w.bin", f"weights {step}".encode())
    stop = threading.Event()

    def on_event(event: WatchEvent) -> None:
        if event.kind == "pushed":
            stop.set()

    watcher = Watcher(lake, wdir, ART, settle=0.0, on_event=on_event)
    assert watcher.poll_once(stop) == 1
    assert [v.step for v in lake.versions(ART)] == [1]
