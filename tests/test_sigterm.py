"""SIGTERM and SIGHUP end a command as Ctrl-C does.  A CI job's cancel, `timeout`, a pod's stop
send SIGTERM: left at its default it killed the process on the spot, with no --json document,
no "interrupted" line and an exit status (-15) that no table documents."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def _start(args: list[str], tmp_path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ckptlake", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            env={**os.environ, "HOME": str(tmp_path / "home")})


def _wait_for_progress(proc: subprocess.Popen, lake: Path) -> None:
    """Until the push has stored a first chunk (it is well under way)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if (lake / "chunks").is_dir() and any(p.is_file() for p in (lake / "chunks").rglob("*")):
            return
        time.sleep(0.05)
    assert proc.poll() is None, "the push ended before the signal could be sent"
    raise AssertionError("the push stored no chunk within 60 s")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_push_ended_by_a_signal_reports_interrupted_and_commits_nothing(
        tmp_path: Path, sig: int) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"w{i}.bin").write_bytes(os.urandom(4 << 20))
    lake = tmp_path / "lake"
    proc = _start(["push", str(src), "ci/model", "--lake", str(lake), "--json",
                   "--max-bandwidth", "2MiB"], tmp_path)
    try:
        _wait_for_progress(proc, lake)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, (proc.returncode, err)
    assert json.loads(out) == {"error": {"type": "Interrupted", "message": "interrupted",
                                         "exit_code": 130}}
    assert "ckptlake: interrupted" in err and "Traceback" not in err
    assert [p for p in lake.rglob("*") if p.parent.name == "@v"] == []  # no version


def test_an_ignored_sighup_stays_ignored(tmp_path: Path) -> None:
    """`nohup ckptlake push ...`: a closed terminal must not stop it."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"w{i}.bin").write_bytes(os.urandom(4 << 20))
    lake = tmp_path / "lake"
    proc = subprocess.Popen(
        [sys.executable, "-c", "import signal, sys; signal.signal(signal.SIGHUP, signal.SIG_IGN);"
         " from ckptlake.cli.main import main; sys.argv = ['ckptlake'] + sys.argv[1:]; main()",
         "push", str(src), "ci/model", "--lake", str(lake), "--json", "--max-bandwidth", "2MiB"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "HOME": str(tmp_path / "home")})
    try:
        _wait_for_progress(proc, lake)
        proc.send_signal(signal.SIGHUP)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert json.loads(out)["version"] == 1


def test_the_cli_leaves_the_callers_handlers_as_they_were() -> None:
    """CliRunner runs commands in this process: the handlers are restored after each."""
    from typer.testing import CliRunner

    from ckptlake.cli.app import app

    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)
    assert CliRunner().invoke(app, ["--version"]).exit_code == 0
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGHUP)) == before


def test_a_sigterm_waits_for_the_end_of_a_step_that_must_not_be_cut() -> None:
    """signals_blocked defers a Ctrl-C to the block's end (a lock half-taken, a map hung
    otherwise); the CLI's SIGTERM raised inside it whenever some thread (numpy's, torch's)
    did not block signals and took it."""
    import threading

    from ckptlake.cli.main import restore_signals, terminate_as_interrupt
    from ckptlake.transfer.pool import signals_blocked

    stop = threading.Event()
    foreign = threading.Thread(target=stop.wait, args=(30,))  # started outside: unblocked
    foreign.start()
    ending = terminate_as_interrupt()
    where = []
    try:
        with pytest.raises(KeyboardInterrupt):
            with signals_blocked():
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(200):
                    time.sleep(0.001)
                where.append("block ran to its end")
    finally:
        restore_signals(ending)
        stop.set()
        foreign.join()
    assert where == ["block ran to its end"]
