"""A review of a training process's long life with the Checkpointer found:

1. An upload stayed "running" for a while after its future resolved (the snapshot was still
   being removed): a loop that waited for `.result()` and saved at once had that save dropped
   under on_busy="skip", `pending` said 1, and the exit hook waited for a committed version.
2. `retention_errors` kept every failure with its traceback, whose frames held the artifact's
   version lists: RSS grew 0.14 MiB a commit when a rule failed after each.
3. A snapshot that found its disk full was a bare OSError (no path, no exit code) logged with
   a traceback; a push into a full local lake was exit 8 ("storage failing") where the README
   says 2 (a destination that cannot take the version).
"""
from __future__ import annotations

import errno
import logging
import sys
import time
from typing import Any
from pathlib import Path

import pytest

import ckptlake
from ckptlake import checkpointer as ck_mod
from ckptlake.errors import UsageError

np = pytest.importorskip("numpy")
ART = "run/ck"


@pytest.fixture
def lake(local_lake_url: str):
    with ckptlake.open(local_lake_url) as lk:
        yield lk


def test_a_save_right_after_the_last_one_resolved_is_not_skipped(
        lake, monkeypatch: pytest.MonkeyPatch) -> None:
    removing = ck_mod.rmtree

    def slow_removal(path: str) -> None:  # a big snapshot takes a while to remove
        time.sleep(0.3)
        removing(path)

    monkeypatch.setattr(ck_mod, "rmtree", slow_removal)
    with lake.checkpointer(ART, on_busy="skip", keep_last=None) as ck:
        for step in (1, 2, 3):
            future = ck.save_state({"w": np.full(1000, step, np.float32)}, step=step)
            assert future is not None, f"step {step} skipped: {ck.skipped}"
            assert future.result().version == step
            assert ck.pending == 0
    assert ck.skipped == []


def test_retention_errors_keep_no_frames_and_only_the_last(
        lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ck_mod, "RETENTION_ERRORS_KEPT", 3)
    policy = tmp_path / "policy.yaml"
    policy.write_text("retention:\n  rules:\n    - match: '*'\n      keep_best: {metric: "
                      "val_loss, mode: min, count: 1, keep_missing: false}\n")
    with lake.checkpointer(ART, retention=str(policy)) as ck:
        for step in range(5):
            ck.save_state({"w": np.zeros(10, np.float32)}, step=step).result()
    assert len(ck.retention_errors) == 3
    for exc in ck.retention_errors:
        e: BaseException | None = exc
        while e is not None:
            assert e.__traceback__ is None
            e = e.__cause__ or e.__context__


def test_a_full_snapshot_disk_is_a_usage_error_naming_the_directory(
        lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    snapshots = tmp_path / "snaps"
    monkeypatch.setattr(ck_mod, "write_safetensors", full)
    with caplog.at_level(logging.ERROR, logger="ckptlake"):
        with lake.checkpointer(ART, snapshot_dir=snapshots) as ck:
            future = ck.save_state({"w": np.zeros(10, np.float32)}, step=1)
            err = future.exception(timeout=60)
            with pytest.raises(UsageError):
                ck.wait()
    assert isinstance(err, UsageError) and err.exit_code == 2
    assert f"no space left for the checkpoint's snapshot in {snapshots}" in str(err)
    assert "snapshot_dir=" in str(err)
    failed = [r for r in caplog.records if "failed in the background" in r.getMessage()]
    assert failed and not any(r.exc_info for r in failed)
    assert not snapshots.exists() or list(snapshots.iterdir()) == []  # gone with the failure


def test_a_full_local_lake_is_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from ckptlake.cli.app import app
    from ckptlake.store import local

    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(b"x" * 4096)

    def full(fd: int, data: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(local, "_write_all", full)
    r = CliRunner().invoke(app, ["push", str(src), "a/b", "--lake", (tmp_path / "lake").as_uri()])
    assert r.exit_code == 2, r.output
    assert "No space left on device" in r.output and "free some space on the device holding " \
        "it" in r.output, r.output
    assert not (tmp_path / "lake" / "artifacts").exists() or not list(
        (tmp_path / "lake" / "artifacts").rglob("@v/*"))


def test_a_checkpointer_dropped_without_close_is_collected_with_its_thread(lake) -> None:
    """A sweep's trial or a notebook cell run again drops its Checkpointer: its thread and its
    host copy of the state stayed for the life of the process (200 dropped: 202 threads)."""
    import gc
    import threading
    import weakref

    before = {t.ident for t in threading.enumerate()}
    ck = lake.checkpointer(ART, keep_last=None)
    assert ck.save_state({"w": np.zeros(1000, np.float32)}, step=1).result().version == 1
    ref = weakref.ref(ck)
    thread = ck._thread
    del ck
    gc.collect()
    assert ref() is None
    thread.join(10)
    assert not thread.is_alive()
    assert {t.ident for t in threading.enumerate()} <= before | {None}
    # what it committed is there, and a new one carries on
    with lake.checkpointer(ART) as ck2:
        assert ck2.save_state({"w": np.ones(1000, np.float32)}, step=2).result().version == 2


def test_an_earlier_failure_does_not_stop_the_final_save_on_sigterm(
        lake, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Step 1's upload failed while SIGTERM came: its error was raised into the final save,
    so the preempted job's last state was not saved either."""
    import os
    import signal
    import threading

    from ckptlake.errors import TransferError

    release = threading.Event()
    execute = ck_mod.Checkpointer._execute
    calls = []

    def first_fails(self, job):  # type: ignore[no-untyped-def]
        calls.append(job.step)
        if len(calls) == 1:
            release.wait(30)
            raise TransferError("simulated: the lake failed step 1's manifest")
        return execute(self, job)

    monkeypatch.setattr(ck_mod.Checkpointer, "_execute", first_fails)
    ck = None

    def final() -> None:
        release.set()  # step 1 fails now, while the final save waits for room
        ck.save_state({"w": np.full(4, 99.0)}, step=99)

    ck = lake.checkpointer(ART, on_sigterm="save", final_save=final, exit_timeout=60,
                           retention=False)
    try:
        ck.save_state({"w": np.full(4, 1.0)}, step=1)
        with caplog.at_level(logging.ERROR, logger="ckptlake"):
            with pytest.raises(SystemExit) as exited:
                os.kill(os.getpid(), signal.SIGTERM)
                end = time.monotonic() + 60
                while time.monotonic() < end:
                    time.sleep(0.05)
        assert exited.value.code == 143
    finally:
        release.set()
        ck.close() if not ck._closed else None
    assert [v.step for v in lake.versions(ART)] == [99]
    assert "simulated" in caplog.text and "final save on SIGTERM failed" not in caplog.text


def test_a_full_lake_releases_a_sharded_steps_claim(lake, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk made the manifest write a UsageError, which the sharded commit did not
    release its claim for: the rerun waited for an owner that had given up."""
    from ckptlake.store import local
    from test_shards import ART as SART, make_rank

    dirs = [make_rank(tmp_path, r, 2) for r in range(2)]
    lake.push_shard(dirs[0], SART, step=5, rank=0, world=2)
    write_temp = local.LocalStore._write_temp
    failed = []

    def full_once(self, directory, chunks, **kw):  # type: ignore[no-untyped-def]
        if "/@v" in str(directory) and not failed:
            failed.append(directory)
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_temp(self, directory, chunks, **kw)

    monkeypatch.setattr(local.LocalStore, "_write_temp", full_once)
    with pytest.raises(Exception) as err:
        lake.push_shard(dirs[1], SART, step=5, rank=1, world=2)
    assert getattr(err.value, "exit_code", None) == 2 and failed, err.value
    started = time.monotonic()
    res = lake.push_shard(dirs[1], SART, step=5, rank=1, world=2, wait_seconds=20)
    assert res.version == 1 and res.committed_here and time.monotonic() - started < 10


@pytest.mark.parametrize("on_busy", ["wait", "queue"])
def test_saves_of_a_checkpointer_let_go_of_are_still_committed(lake, on_busy: str) -> None:
    """Dropped with saves queued (a training function that returned its last future): the
    thread let go of it between jobs, so the queued saves were never uploaded and their futures
    never resolved."""
    import gc

    def train() -> list:
        extra = {"max_pending": 3} if on_busy == "queue" else {}
        ck = lake.checkpointer(ART, on_busy=on_busy, keep_last=None, **extra)
        return [ck.save_state({"w": np.full(10_000, i, np.float32)}, step=i) for i in (1, 2, 3)]

    futures = train()
    gc.collect()
    assert [f.result(timeout=60).version for f in futures] == [1, 2, 3]
    assert [v.step for v in lake.versions(ART)] == [1, 2, 3]


def _hold_uploads(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Every upload waits for the returned event (at most 30 s)."""
    import threading

    release = threading.Event()
    execute = ck_mod.Checkpointer._execute

    def held(self, job):  # type: ignore[no-untyped-def]
        release.wait(30)
        return execute(self, job)

    monkeypatch.setattr(ck_mod.Checkpointer, "_execute", held)
    return release


def test_a_cancelled_save_is_skipped_and_the_rest_go_on(lake, monkeypatch) -> None:
    """Future.cancel() on a queued save: its set_result raised in the thread, which ended;
    later saves were lost and wait() hung."""
    release = _hold_uploads(monkeypatch)
    with lake.checkpointer(ART, on_busy="queue", max_pending=4, keep_last=None) as ck:
        f1 = ck.save_state({"w": np.full(10, 1.0)}, step=1)
        f2 = ck.save_state({"w": np.full(10, 2.0)}, step=2)
        f3 = ck.save_state({"w": np.full(10, 3.0)}, step=3)
        time.sleep(0.2)
        assert not f1.cancel()  # running: it cannot be called off
        assert f2.cancel()
        release.set()
        ck.wait(timeout=30)
        assert f1.result().version == 1 and f3.result().version == 2 and f2.cancelled()
        assert ck._thread.is_alive()
        assert ck.save_state({"w": np.full(10, 4.0)}, step=4).result(timeout=30).version == 3
    assert [v.step for v in lake.versions(ART)] == [1, 3, 4]


@pytest.mark.parametrize("where", ["execute", "store"])
def test_a_checkpointer_let_go_of_after_a_failed_upload_is_collected(
        lake, monkeypatch, where: str, caplog: pytest.LogCaptureFixture) -> None:
    """The stored failure's traceback held the checkpointer in a cycle (its frames' self; in a
    real store failure, the upload workers' frames and the commit gate): thread and host
    buffers stayed until a full collection.  And its log line said `NoneType: None` where the
    traceback of a failure that is no ckptlake error belongs."""
    import gc
    import weakref

    from ckptlake.errors import TransferError
    from ckptlake.store import local

    if where == "execute":
        def fail(self, job):  # type: ignore[no-untyped-def]
            raise ValueError("simulated")

        monkeypatch.setattr(ck_mod.Checkpointer, "_execute", fail)
    else:
        put = local.LocalStore.put

        def bad_put(self, key, data, **kw):  # type: ignore[no-untyped-def]
            if key.startswith("chunks/"):
                raise OSError(errno.EIO, "Input/output error")
            return put(self, key, data, **kw)

        monkeypatch.setattr(local.LocalStore, "put", bad_put)
    ck = lake.checkpointer(ART, keep_last=None)
    with caplog.at_level(logging.ERROR, logger="ckptlake"):
        future = ck.save_state({"a": np.zeros(1 << 18, np.float32),
                                "b": np.ones(1 << 18, np.float32)}, step=1)
        assert isinstance(future.exception(timeout=30), (ValueError, OSError))
        time.sleep(0.3)  # the thread has left the job behind
    if where == "execute":
        assert "NoneType: None" not in caplog.text and "Traceback" in caplog.text, caplog.text
    ref, thread = weakref.ref(ck), ck._thread
    gc.disable()
    try:
        del ck, future
        thread.join(10)
        assert ref() is None and not thread.is_alive()
    finally:
        gc.enable()


def test_a_cancelled_save_gives_its_slot_back_at_once(lake, monkeypatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A cancelled queued save held its on_busy="queue" slot until the running upload ended,
    counted in `pending`, and was reported LOST at exit."""
    release = _hold_uploads(monkeypatch)
    with lake.checkpointer(ART, on_busy="queue", max_pending=1, keep_last=None) as ck:
        ck.save_state({"w": np.full(10, 1.0)}, step=1)
        time.sleep(0.2)
        f2 = ck.save_state({"w": np.full(10, 2.0)}, step=2)
        assert f2.cancel() and ck.pending == 1
        started = time.monotonic()
        f3 = ck.save_state({"w": np.full(10, 3.0)}, step=3)  # the slot is free: no wait
        assert time.monotonic() - started < 5 and ck.pending == 2
        release.set()
        assert f3.result(timeout=30).version == 2
    assert [v.step for v in lake.versions(ART)] == [1, 3]
