"""`watch` when things go wrong: step numbers two names share, a second pusher, a push that
fails (before or after its commit), a checkpoint the lake cannot store, a lake that is not
there; and what `--once` and `--json` then say and exit with."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ckptlake
import ckptlake.lake  # noqa: F401 (monkeypatched below: not imported by `import ckptlake`)
from ckptlake.cli.app import app
from ckptlake.errors import NotFound, TransferError, UsageError
from ckptlake.watch import Watcher

ART = "shell/run/ckpt"


def write(path: Path, data: bytes = b"x", *, old: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if old:  # settled long ago
        os.utime(path, (1, 1))


def steps(url: str) -> list[int | None]:
    with ckptlake.open(url) as lake:
        try:
            return [v.step for v in lake.versions(ART)]
        except NotFound:
            return []


class Flaky:
    """A lake whose push of a step fails once: "before" anything is committed, or "after"
    the commit (a lost reply)."""

    def __init__(self, lake: Any, fail: dict[int, str]) -> None:
        self.lake, self.fail = lake, fail

    def versions(self, artifact: str) -> Any:
        return self.lake.versions(artifact)

    def push(self, path: Any, artifact: str, *, step: int, **kw: Any) -> Any:
        how = self.fail.pop(step, None)
        if how == "before":
            raise TransferError("PUT chunk failed after 5 attempts: connection reset")
        result = self.lake.push(path, artifact, step=step, **kw)
        if how == "after":
            raise TransferError("PUT manifest failed after 5 attempts: read timed out")
        return result


def test_a_step_two_names_share_is_pushed_once_and_nothing_unpushed_is_pruned(
        local_lake_url, tmp_path) -> None:
    """With a regex reading the epoch of Lightning names, all three were step 0: the first was
    pushed, the other two counted as in the lake, and keep_local deleted one never pushed."""
    d = tmp_path / "ck"
    for step in (100, 200, 300):
        write(d / f"epoch=0-step={step}.ckpt", str(step).encode())
    events: list[Any] = []
    with ckptlake.open(local_lake_url) as lake:
        w = Watcher(lake, d, ART, step_regex=r"(\d+)", settle=0, keep_local=1,
                    on_event=events.append)
        assert w.poll_once() == 1
        w.poll_once()
    assert steps(local_lake_url) == [0]
    assert sorted(p.name for p in d.iterdir()) == [f"epoch=0-step={s}.ckpt"
                                                   for s in (100, 200, 300)]
    dups = [e for e in events if e.kind == "duplicate"]
    assert [e.name for e in dups] == ["epoch=0-step=200.ckpt", "epoch=0-step=300.ckpt"]
    assert "was pushed from epoch=0-step=100.ckpt" in dups[0].message


def test_the_default_step_regex_reads_what_trainers_write(local_lake_url, tmp_path) -> None:
    d = tmp_path / "ck"
    names = {"epoch=0-step=100.ckpt": 100, "epoch=3-step=400-val_loss=0.23.ckpt": 400,
             "checkpoint-500": 500, "step_600": 600, "700": 700, "global_step800": 800}
    for name in names:
        write(d / name)
    with ckptlake.open(local_lake_url) as lake:
        found = Watcher(lake, d, ART).candidates()
    assert {c.name: c.step for c in found} == names


def test_keep_local_after_a_restart_prunes_only_the_entry_that_matches_the_lake(
        local_lake_url, tmp_path) -> None:
    d = tmp_path / "ck"
    write(d / "step_100" / "w.bin", b"a" * 10)
    with ckptlake.open(local_lake_url) as lake:
        Watcher(lake, d, ART, settle=0).poll_once()  # an earlier run pushed it
        write(d / "step_100-copy" / "w.bin", b"b" * 7)  # same step, other content
        write(d / "step_200" / "w.bin", b"c")
        write(d / "step_300" / "w.bin", b"d")
        w = Watcher(lake, d, ART, settle=0, keep_local=1)
        assert w.poll_once() == 2
        # step 100 has two local entries: neither is known to be the lake's, both stay
        assert sorted(p.name for p in d.iterdir()) == ["step_100", "step_100-copy", "step_300"]
        (d / "step_100-copy" / "w.bin").unlink()
        (d / "step_100-copy").rmdir()
        write(d / "step_400" / "w.bin", b"e")
        assert w.poll_once() == 1  # now step_100 is alone, with the lake's 10 bytes
        assert sorted(p.name for p in d.iterdir()) == ["step_400"]
    assert steps(local_lake_url) == [100, 200, 300, 400]


def test_a_second_watcher_does_not_push_a_step_again(local_lake_url, tmp_path) -> None:
    """Overlapping runs (cron, and a --once by hand) read the lake's steps once, at start."""
    d = tmp_path / "ck"
    write(d / "step_100" / "w.bin")
    events: list[Any] = []
    with ckptlake.open(local_lake_url) as lake:
        first = Watcher(lake, d, ART, settle=0, on_event=events.append)
        first.learn()
        assert Watcher(lake, d, ART, settle=0).poll_once() == 1
        assert first.poll_once() == 0
    assert steps(local_lake_url) == [100]
    assert [e.kind for e in events] == ["known"]


def test_a_push_that_failed_after_its_commit_is_not_pushed_again(local_lake_url,
                                                                 tmp_path) -> None:
    d = tmp_path / "ck"
    write(d / "step_100" / "w.bin")
    events: list[Any] = []
    with ckptlake.open(local_lake_url) as real:
        w = Watcher(Flaky(real, {100: "after"}), d, ART, settle=0, retry_delay=0,
                    on_event=events.append)
        for _ in range(3):
            w.poll_once()
        assert not w.failures
    assert steps(local_lake_url) == [100]
    assert [e.kind for e in events] == ["known"]
    assert "in the lake after all" in events[0].message


def test_a_failed_push_is_retried_before_any_later_step(local_lake_url, tmp_path) -> None:
    """A step whose push failed was overtaken by the next, then skipped as older for good."""
    d = tmp_path / "ck"
    for step in (100, 200, 300):
        write(d / f"step_{step}" / "w.bin", str(step).encode())
    events: list[Any] = []
    with ckptlake.open(local_lake_url) as real:
        w = Watcher(Flaky(real, {200: "before"}), d, ART, settle=0, retry_delay=0,
                    on_event=events.append)
        assert w.poll_once() == 1
        assert steps(local_lake_url) == [100]
        assert w.poll_once() == 2
    assert steps(local_lake_url) == [100, 200, 300]
    assert [e.kind for e in events] == ["pushed", "failed", "pushed", "pushed"]
    assert "retrying in 0 s" in events[1].message


def test_a_checkpoint_the_lake_cannot_store_is_passed_over(local_lake_url, tmp_path) -> None:
    """A FIFO in one checkpoint (or a name that is not UTF-8) ended the whole watch."""
    d = tmp_path / "ck"
    write(d / "step_1" / "w.bin")
    os.mkfifo(d / "step_1" / "pipe")
    write(d / "step_2" / "w.bin")
    write(d / "step_3" / os.fsdecode(b"bad\xffname"))
    write(d / "step_4" / "w.bin")
    events: list[Any] = []
    with ckptlake.open(local_lake_url) as lake:
        w = Watcher(lake, d, ART, settle=0, retry_delay=0, on_event=events.append)
        with pytest.raises(UsageError, match=r"could not push step_1 \(and 1 more\): .*pipe"):
            w.run(threading.Event(), once=True)
        assert steps(local_lake_url) == [2, 4]
        failed = [e for e in events if e.kind == "failed"]
        assert [e.name for e in failed] == ["step_1", "step_3"]
        assert "not a regular file" in failed[0].message and "retrying" not in failed[0].message
        w.poll_once()  # retried: the same failure is not said again
        assert [e.kind for e in events].count("failed") == 2
        # --exclude: what the hint says to do
        Watcher(lake, d, "shell/run/other", settle=0, exclude=["pipe"]).poll_once()
        assert [v.step for v in lake.versions("shell/run/other")] == [1, 2, 4]


def test_a_dir_that_is_no_directory_and_a_step_that_is_no_number(local_lake_url,
                                                                 tmp_path) -> None:
    events: list[Any] = []
    (tmp_path / "afile").write_text("x")
    write(tmp_path / "ck" / "step-\u00b2")
    with ckptlake.open(local_lake_url) as lake:
        with pytest.raises(UsageError, match="is not a directory"):
            Watcher(lake, tmp_path / "afile", ART).poll_once()
        w = Watcher(lake, tmp_path / "ck", ART, step_regex="step-(.*)", settle=0,
                    on_event=events.append)
        assert w.poll_once() == 0
    assert [e.kind for e in events] == ["skipped"] and "no number" in events[0].message


def test_a_missing_bucket_stops_the_watcher_as_not_found(local_lake_url, tmp_path) -> None:
    d = tmp_path / "ck"
    write(d / "step_1" / "w.bin")

    class NoBucket:
        def versions(self, artifact: str) -> Any:
            raise NotFound("bucket nosuch does not exist")

        def push(self, *a: Any, **kw: Any) -> Any:
            raise NotFound("bucket nosuch does not exist")

    events: list[Any] = []
    w = Watcher(NoBucket(), d, ART, settle=0, on_event=events.append)  # type: ignore[arg-type]
    with pytest.raises(NotFound, match="bucket nosuch"):
        w.poll_once()
    assert not any("disappeared" in e.message for e in events)


def cli(*args: str) -> Any:
    return CliRunner().invoke(app, ["watch", *args])


def test_once_exits_with_the_code_of_a_failed_push_also_with_json(local_lake_url, tmp_path,
                                                                   monkeypatch) -> None:
    d = tmp_path / "ck"
    write(d / "step_1" / "w.bin")

    def fail(self: Any, *a: Any, **kw: Any) -> Any:
        raise TransferError("PUT chunk failed after 5 attempts: connection reset")

    monkeypatch.setattr(ckptlake.lake.Lake, "push", fail)
    for extra in ([], ["--json"]):
        r = cli(str(d), ART, "--once", "--settle", "0", "--lake", local_lake_url, *extra)
        assert r.exit_code == 8, r.output
        assert "warning: push of step_1 failed: PUT chunk" in r.stderr
        assert "retrying" not in r.output
    doc = json.loads(r.stdout.splitlines()[-1])
    assert doc["error"]["type"] == "TransferError" and "step_1" in doc["error"]["message"]

    def no_bucket(self: Any, *a: Any, **kw: Any) -> Any:
        raise NotFound("bucket nosuch does not exist", hint="create it")

    monkeypatch.setattr(ckptlake.lake.Lake, "push", no_bucket)
    for once in (["--once"], []):  # fatal, not retried forever
        r = cli(str(d), ART, *once, "--settle", "0", "--lake", local_lake_url)
        assert r.exit_code == 3 and "bucket nosuch" in r.stderr, r.output
        assert "disappeared" not in r.output


def test_json_lines_carry_the_lake_and_warnings_reach_stderr(tmp_path) -> None:
    d = tmp_path / "ck"
    write(d / "step_1" / "w.bin")
    for extra in ([], ["--json"]):  # a mistyped lake URL: push warns that it made a lake
        url = f"file://{tmp_path / f'typo-lake{len(extra)}'}"
        r = cli(str(d), ART, "--once", "--settle", "0", "--lake", url, *extra)
        assert r.exit_code == 0, r.output
        assert "warning: created a new lake" in r.stderr
    doc = json.loads(r.stdout)
    assert doc["lake_origin"] == "--lake" and doc["checkpoint"] == "step_1"


def test_once_says_why_nothing_was_pushed(local_lake_url, tmp_path) -> None:
    d = tmp_path / "ck"
    d.mkdir()
    r = cli(str(d), ART, "--once", "--pattern", "step_*", "--lake", local_lake_url)
    assert r.exit_code == 0 and "nothing to push: no entry of" in r.stderr, r.output
    write(d / "step_1" / "w.bin")
    write(d / "step_2" / "w.bin")
    r = cli(str(d), ART, "--once", "--marker", "DONE", "--lake", local_lake_url)
    assert r.exit_code == 0 and r.stdout == ""
    assert "not complete yet, left for a later run: 2 checkpoints (step_1, step_2; no DONE" \
        in r.stderr
    (d / "step_1" / "DONE").touch()
    os.symlink(d / "step_1", d / "step_9")
    r = cli(str(d), ART, "--once", "--marker", "DONE", "--lake", local_lake_url)
    assert r.exit_code == 0 and r.stdout.startswith(f"pushed {ART}@v1")
    assert "not pushing step_9: it is a symlink" in r.stderr
    assert "1 checkpoint (step_2; no DONE" in r.stderr


def test_keep_local_never_prunes_a_step_rewritten_with_other_bytes_of_the_same_size(
        local_lake_url, tmp_path) -> None:
    """A resumed run rewrote step 100 with other weights of the same size: a restarted watch
    took the matching size for the lake's copy and deleted weights the lake never had.  A
    version pushed by hand (no entry recorded) is not pruned either."""
    d = tmp_path / "ck"
    write(d / "checkpoint-100" / "w.bin", b"A" * 4096)
    write(d / "checkpoint-50" / "w.bin", b"Z" * 10)
    with ckptlake.open(local_lake_url) as lake:
        lake.push(d / "checkpoint-50", ART, step=50)  # by hand, not by a watch
        Watcher(lake, d, ART, settle=0).poll_once()  # an earlier watch pushed step 100
        (d / "checkpoint-100" / "w.bin").unlink()
        (d / "checkpoint-100").rmdir()
        write(d / "checkpoint-100" / "w.bin", b"B" * 4096)  # the rerun's own step 100
        write(d / "checkpoint-200" / "w.bin", b"C" * 4096)
        w = Watcher(lake, d, ART, settle=0, keep_local=1)
        assert w.poll_once() == 1
        assert (d / "checkpoint-100" / "w.bin").read_bytes() == b"B" * 4096
        assert (d / "checkpoint-50").is_dir()
        meta = lake.resolve(f"{ART}@step=200").metadata["ckptlake.watch.entry"]
        assert meta.startswith("checkpoint-200 inode=") and meta.endswith("bytes=4096")
    assert steps(local_lake_url) == [50, 100, 200]


class Failing(Flaky):
    """A lake whose push of one step always fails (a proxy that refuses one object)."""

    def push(self, path: Any, artifact: str, *, step: int, **kw: Any) -> Any:
        if step in self.fail:
            raise TransferError("PUT chunk failed after 5 attempts: 403 from a proxy")
        return self.lake.push(path, artifact, step=step, **kw)


def test_a_push_that_keeps_failing_holds_later_steps_back_only_a_few_attempts(
        local_lake_url, tmp_path) -> None:
    """Step order held later checkpoints back for ever behind one that never went up (and
    keep_local with them: the disk filled); now for BLOCKING_ATTEMPTS attempts, backing off,
    and the warning says what waits."""
    from ckptlake.watch import BLOCKING_ATTEMPTS

    d = tmp_path / "ck"
    for step in (100, 200):
        write(d / f"step_{step}" / "w.bin", str(step).encode())
    events: list[Any] = []
    with ckptlake.open(local_lake_url) as real:
        w = Watcher(Failing(real, {100: "always"}), d, ART, settle=0, retry_delay=0,
                    on_event=events.append)
        for _ in range(BLOCKING_ATTEMPTS - 1):
            assert w.poll_once() == 0
        assert steps(local_lake_url) == []
        assert w.poll_once() == 1  # the last attempt lets step 200 go
    assert steps(local_lake_url) == [200]
    failed = [e.message for e in events if e.kind == "failed"]
    assert len(failed) == BLOCKING_ATTEMPTS
    assert all("later checkpoints wait for it" in m for m in failed[:-1])
    assert "no longer wait for it" in failed[-1]


def test_watch_follow_symlinks_stores_what_a_link_out_of_a_checkpoint_points_at(
        local_lake_url, tmp_path) -> None:
    """The hint for a link out of a checkpoint names --follow-symlinks; watch has it too."""
    outside = tmp_path / "shared.json"
    outside.write_text("{}")
    d = tmp_path / "ck"
    write(d / "step_1" / "w.bin")
    os.symlink(outside, d / "step_1" / "cfg.json")
    os.utime(d / "step_1", (1, 1))
    args = ["--lake", local_lake_url, "watch", str(d), ART, "--once", "--settle", "0"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "--follow-symlinks" in r.stderr, r.output
    r = CliRunner().invoke(app, [*args, "--follow-symlinks"])
    assert r.exit_code == 0, r.output
    with ckptlake.open(local_lake_url) as lake:
        assert lake.cat(f"{ART}@step=1", "cfg.json") is not None
        assert b"".join(lake.cat(f"{ART}@step=1", "cfg.json")) == b"{}"
