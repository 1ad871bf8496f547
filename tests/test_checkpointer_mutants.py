"""Checks of ckptlake/checkpointer.py that a mutation review found unexercised: the host
buffers a queued save copies into, the final save on SIGTERM under on_busy="skip" and after a
slow host copy, `with` raising a background failure, the SIGTERM handler left to whoever
replaced it, a commit in progress at the exit deadline, the "auto" snapshot learning from a
failed link snapshot, and the snapshots of checkpoints dropped at exit.

Uploads are held at a Gate (tests/test_checkpointer.py), opened in a `finally` so that a
failing assertion cannot leave a background thread waiting.  SIGTERM is sent in-process only
while the checkpointer's handler is installed (as tests/test_torch_review.py does).
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

import pytest

import ckptlake
from ckptlake import checkpointer as ck_mod
from ckptlake.errors import SourceChanged

from test_checkpointer import (ART, Gate, save_then_rewrite_under_the_link, write_atomic,
                               write_in_place)

np = pytest.importorskip("numpy")


@pytest.fixture
def lake(local_lake_url: str):
    with ckptlake.open(local_lake_url) as lk:
        yield lk


def _sigterm_until_exit() -> None:
    """Send SIGTERM to this process (the checkpointer's handler is installed: it raises
    SystemExit in the main thread) and wait for the handler to run."""
    os.kill(os.getpid(), signal.SIGTERM)
    end = time.monotonic() + 60
    while time.monotonic() < end:
        time.sleep(0.05)
    raise AssertionError("the SIGTERM handler did not exit")


# ---- 1. reuse_buffers with queued saves ----------------------------------------------------

def test_queued_save_states_each_keep_their_own_host_copy(lake) -> None:
    """on_busy="queue" with reuse_buffers: a save takes the free host buffers for itself.  Had
    it left them in the pool, the next queued save would copy into the same buffers, and the
    checkpoint of step 3 (not yet written to disk) would be uploaded with step 4's values:
    a checkpoint silently holding another step's weights."""
    gate = Gate()
    with lake.checkpointer(ART, on_busy="queue", max_pending=2, progress=gate,
                           retention=False) as ck:
        ck.save_state({"w": np.full(4, 1.0)}, step=1).result(60)  # fills the buffer pool
        gate.close()
        try:
            ck.save_state({"w": np.full(4, 2.0)}, step=2)
            assert gate.reached.wait(30)  # step 2 is uploading; 3 and 4 queue behind it
            ck.save_state({"w": np.full(4, 3.0)}, step=3)
            ck.save_state({"w": np.full(4, 4.0)}, step=4)
        finally:
            gate.open()
        ck.wait()
    versions = lake.versions(ART)
    assert [v.step for v in versions] == [1, 2, 3, 4]
    for v in versions:
        got = lake.load_state(f"{ART}@v{v.version}")["w"]
        assert np.array_equal(got, np.full(4, float(v.step))), (v.step, got)


# ---- 2. the final save is never skipped -----------------------------------------------------

def test_final_save_on_sigterm_is_taken_even_with_on_busy_skip(lake, tmp_path) -> None:
    """on_busy="skip" drops a save while an upload runs, but the final save on SIGTERM is the
    last state of a preempted job: skipping it would lose all training since the last
    checkpoint.  It is queued behind the running upload and both commit."""
    gate = Gate()
    ck: Any = None

    def final() -> None:
        ck.save_state({"w": np.full(4, 99.0)}, step=99)
        gate.open()  # the running upload of step 1 may finish now

    ck = lake.checkpointer(ART, on_busy="skip", on_sigterm="save", final_save=final,
                           exit_timeout=60, progress=gate, retention=False)
    try:
        gate.close()
        ck.save_state({"w": np.full(4, 1.0)}, step=1)
        assert gate.reached.wait(30)  # step 1 is uploading: the checkpointer is busy
        with pytest.raises(SystemExit) as exited:
            _sigterm_until_exit()
        assert exited.value.code == 143
    finally:
        gate.open()
        ck.close()
    assert ck.skipped == []
    assert [v.step for v in lake.versions(ART)] == [1, 99]


# ---- 3. the final save's host copy extends the exit deadline --------------------------------

def test_final_save_host_copy_time_is_added_to_the_exit_deadline(lake, monkeypatch,
                                                                  caplog) -> None:
    """The final save's own time (its host copy) comes on top of exit_timeout: otherwise a
    copy longer than exit_timeout left the final checkpoint no time at all, and it was cut off
    at once and LOST.  The upload of step 99 is held until the exit drain starts waiting, so
    the drain decides before the upload can commit: only a deadline that still has time left
    lets it commit."""
    monkeypatch.setattr(ck_mod, "CUTOFF_GRACE", 0.5)
    gate = Gate()
    ck: Any = None

    def final() -> None:
        time.sleep(1.5)  # a slow device-to-host copy, longer than exit_timeout
        gate.close()
        ck.save_state({"w": np.full(4, 99.0)}, step=99)

    ck = lake.checkpointer(ART, on_sigterm="save", final_save=final, exit_timeout=1.0,
                           progress=gate, retention=False)
    real_wait = ck._cond.wait

    def wait(timeout: float | None = None) -> bool:
        if ck._terminating and threading.current_thread() is threading.main_thread():
            gate.open()  # the drain (or the cut-off's grace) is waiting: let the upload go
        return real_wait(timeout)

    ck._cond.wait = wait
    try:
        with caplog.at_level(logging.INFO, logger="ckptlake"), \
                pytest.raises(SystemExit) as exited:
            _sigterm_until_exit()
        assert exited.value.code == 143
    finally:
        gate.open()
        ck.close()
    assert "LOST" not in caplog.text, caplog.text
    assert [v.step for v in lake.versions(ART)] == [99]


# ---- 4. `with` raises a background failure --------------------------------------------------

def test_with_block_raises_the_background_failure_on_a_clean_exit(lake, tmp_path) -> None:
    """Leaving a `with lake.checkpointer(...)` block normally closes it, and close raises a
    background failure not raised yet: the script must learn that its last checkpoint (here a
    link snapshot rewritten in place) was not committed.  Only an exception already
    propagating out of the block makes that failure a log line."""
    src = tmp_path / "latest"
    src.mkdir()
    write_in_place(src / "w.bin", b"A" * 5000)
    gate = Gate()
    with pytest.raises(SourceChanged):
        with lake.checkpointer(ART, snapshot="link", progress=gate) as ck:
            save_then_rewrite_under_the_link(ck, gate, src)
    with pytest.raises(ckptlake.NotFound):
        lake.versions(ART)


# ---- 5. close leaves a handler installed over its own ----------------------------------------

def test_close_keeps_a_sigterm_handler_installed_after_the_checkpointer(lake) -> None:
    """close restores the handler the checkpointer replaced only while its own is still the
    installed one.  A handler installed after it (Lightning's signal connector, the user's
    own) must stay: putting back the old one would silently uninstall it, and a later SIGTERM
    would not reach it."""
    original = signal.getsignal(signal.SIGTERM)
    try:
        ck = lake.checkpointer(ART, on_sigterm="wait")

        def mine(signum: int, frame: Any) -> None:
            pass

        signal.signal(signal.SIGTERM, mine)
        ck.close()
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, original)


# ---- 6. a commit in progress at the exit deadline is not reported lost -------------------------

def test_commit_in_progress_at_the_deadline_is_not_reported_lost(lake, monkeypatch,
                                                                 caplog) -> None:
    """An upload past its last check is writing its manifest at the exit deadline: it is let
    finish, and the log says it may or may not be committed.  Reporting it as LOST (cut off,
    nothing committed) would be false: the version does appear, and a user who re-ran the
    step from that log line would get it twice."""
    monkeypatch.setattr(ck_mod, "CUTOFF_GRACE", 0.2)
    inner = lake.store.inner
    real_put = inner.put
    entered, release = threading.Event(), threading.Event()

    def put(key: str, *a: Any, **k: Any) -> Any:
        if "/@v/" in key:  # the manifest: the commit itself
            entered.set()
            release.wait(60)
        return real_put(key, *a, **k)

    monkeypatch.setattr(inner, "put", put)
    ck = lake.checkpointer(ART, exit_timeout=0.1, retention=False)
    try:
        fut = ck.save_state({"w": np.full(4, 1.0)}, step=1)
        assert entered.wait(60)  # past the last check, writing the manifest
        with caplog.at_level(logging.INFO, logger="ckptlake"):
            ck._drain_at_exit()
    finally:
        release.set()
    fut.result(60)
    ck._shut_down()
    assert "may or may not be committed" in caplog.text, caplog.text
    assert "LOST" not in caplog.text, caplog.text
    assert [v.step for v in lake.versions(ART)] == [1]


# ---- 7. a failed link snapshot makes "auto" copy from then on ---------------------------------

def test_auto_copies_for_good_after_a_link_snapshot_was_rewritten(lake, tmp_path) -> None:
    """snapshot="auto": a writer seen replacing its files gets link snapshots; if it then
    rewrites a file in place while that snapshot uploads, that checkpoint fails, and the path
    must switch to copies.  Left on links, every later checkpoint of an in-place writer would
    fail the same way."""
    src = tmp_path / "latest"
    src.mkdir()
    gate = Gate()
    with lake.checkpointer(ART, progress=gate, retention=False) as ck:
        write_atomic(src / "w.bin", b"1" * 4000)
        ck.save(src, step=1).result(60)
        write_atomic(src / "w.bin", b"2" * 4000)
        ck.save(src, step=2).result(60)
        assert ck._writer[str(src)] == "replaces"
        write_atomic(src / "w.bin", b"3" * 4000)
        gate.close()
        try:
            fut = ck.save(src, step=3)  # a link snapshot
            assert gate.reached.wait(30)
            write_in_place(src / "w.bin", b"X" * 4001)  # under the link
        finally:
            gate.open()
        with pytest.raises(SourceChanged):
            ck.wait()
        assert isinstance(fut.exception(), SourceChanged)
        assert ck._writer[str(src)] == "in-place"
    assert [v.step for v in lake.versions(ART)] == [1, 2]


# ---- 8. checkpoints dropped at exit leave no snapshot behind --------------------------------

def test_checkpoints_dropped_at_exit_leave_no_snapshots(lake, tmp_path, monkeypatch) -> None:
    """At the exit deadline the queued checkpoints are dropped: their snapshots (a full host
    copy each) must be removed then, since no thread will ever upload them; left behind they
    fill the snapshot directory (often a local SSD) at every preemption."""
    monkeypatch.setattr(ck_mod, "CUTOFF_GRACE", 0.2)
    snaps = tmp_path / "snaps"
    gate = Gate()
    ck = lake.checkpointer(ART, on_busy="queue", exit_timeout=0.2, progress=gate,
                           snapshot_dir=snaps, retention=False)
    gate.close()
    try:
        ck.save_state({"w": np.full(4, 1.0)}, step=1)
        assert gate.reached.wait(30)  # step 1 uploads (held); 2 and 3 queue
        ck.save_state({"w": np.full(4, 2.0)}, step=2)
        ck.save_state({"w": np.full(4, 3.0)}, step=3)
        assert len(list(snaps.iterdir())) == 3
        ck._drain_at_exit()
        ck._shut_down()
        assert not snaps.exists() or list(snaps.iterdir()) == []
    finally:
        gate.open()
    with pytest.raises(ckptlake.NotFound):
        lake.versions(ART)


def test_a_final_save_at_a_step_already_saved_is_not_taken(lake, caplog) -> None:
    """`final_save=lambda: ck.save_state(last_state, step=last_step)` saves the live tensors,
    which a SIGTERM after the next optimizer step has moved on, under the last saved step:
    committed, that mixed state became the latest.  The checkpoint taken at that step stands;
    a final save of a new step is taken."""
    live = {"w": np.full(4, 1.0)}
    last = {"step": 0}
    ck: Any = None

    def final() -> None:
        ck.save_state(live, step=last["step"])

    ck = lake.checkpointer(ART, on_sigterm="save", final_save=final, exit_timeout=60,
                           retention=False)
    try:
        for step in (1, 2):
            live["w"][:] = step
            ck.save_state(live, step=step)
            last["step"] = step
        ck.wait()
        live["w"][:] = 2.5  # the next optimizer step ran; the signal comes before its save
        with caplog.at_level(logging.WARNING, logger="ckptlake"), \
                pytest.raises(SystemExit) as exited:
            _sigterm_until_exit()
        assert exited.value.code == 143
    finally:
        ck.close()
    assert ck.skipped == [2]
    assert "the final save of" in caplog.text
    assert "the last checkpoint taken was of that step" in caplog.text
    assert [v.step for v in lake.versions(ART)] == [1, 2]
    assert np.array_equal(lake.load_state(f"{ART}@latest")["w"], np.full(4, 2.0))


def test_a_final_save_at_the_step_of_a_refused_save_is_taken(lake) -> None:
    """A save refused before it was queued (an entry that cannot be stored, an earlier
    upload's failure raised) took no checkpoint of its step: the final save of that step is
    the only one, and is taken."""
    live = {"w": np.full(4, 1.0)}
    ck: Any = None

    def final() -> None:
        ck.save_state(live, step=2)

    ck = lake.checkpointer(ART, on_sigterm="save", final_save=final, exit_timeout=60,
                           retention=False)
    try:
        ck.save_state(live, step=1)
        with pytest.raises(ckptlake.UsageError):
            ck.save_state({"w": live["w"], "bad": object()}, step=2)
        live["w"][:] = 2.0
        with pytest.raises(SystemExit):
            _sigterm_until_exit()
    finally:
        ck.close()
    assert ck.skipped == []
    assert [v.step for v in lake.versions(ART)] == [1, 2]
