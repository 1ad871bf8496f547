"""Stopping `ckptlake watch` mid-upload, and the exit hooks that keep uploads alive at exit.

The watch runs in a fresh interpreter whose local store holds every upload after its first
chunk until the test opens a gate (a file), so "the upload is under way" is a fact the test
waits for, not a race against a bandwidth limit."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app

ART = "w/ck"

GATED_WATCH = textwrap.dedent("""
    import os, sys, time
    from ckptlake.store.local import LocalStore
    started, gate = sys.argv[1:3]
    put = LocalStore.put
    def held(self, key, *args, **kwargs):  # the first chunk lands, then the upload waits
        etag = put(self, key, *args, **kwargs)
        if key.startswith("chunks/"):
            open(started, "a").close()
            while not os.path.exists(gate):
                time.sleep(0.02)
        return etag
    LocalStore.put = held
    sys.argv = ["ckptlake", *sys.argv[3:]]
    from ckptlake.cli.main import main
    main()
""")


def _steps(url: str) -> list[Any]:
    with ckptlake.open(url) as lake:
        try:
            return [v.step for v in lake.versions(ART)]
        except ckptlake.NotFound:
            return []


def _start(tmp_path: Path, url: str, *extra: str) -> tuple[subprocess.Popen[str], Path]:
    """A watch whose upload of step_1 is under way (held) when this returns."""
    ckdir = tmp_path / "checkpoints"
    (ckdir / "step_1").mkdir(parents=True)
    (ckdir / "step_1" / "w.bin").write_bytes(b"x" * 5000)
    (ckdir / "step_1" / "done").touch()
    script, started = tmp_path / "gated_watch.py", tmp_path / "started"
    script.write_text(GATED_WATCH)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(started), str(tmp_path / "gate"), "watch",
         str(ckdir), ART, "--marker", "done", "--poll", "0.1", "--lake", url, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not started.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the upload never started"
        time.sleep(0.05)
    return proc, started


def _finish(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_a_second_ctrl_c_abandons_the_drain_at_once(local_lake_url: str,
                                                    tmp_path: Path) -> None:
    """The default --drain is 60 s (inf: forever): a second Ctrl-C must not wait for it."""
    proc, _ = _start(tmp_path, local_lake_url)
    assert proc.stderr is not None
    proc.send_signal(signal.SIGINT)
    seen = []
    for line in proc.stderr:  # the drain has begun
        seen.append(line)
        if "stopping: waiting up to 60 s" in line:
            break
    assert "Ctrl-C again to abandon it" in seen[-1], seen
    began = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = _finish(proc, timeout=20)  # not 60 s: the drain was cut short
    assert time.monotonic() - began < 20
    err = "".join(seen) + err
    assert proc.returncode == 130, err
    assert "abandoned the upload of step_1 on Ctrl-C; nothing of it was committed" in err, err
    assert err.splitlines()[-1] == "ckptlake: interrupted", err
    assert out == "" and _steps(local_lake_url) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP])
def test_ctrl_c_that_abandons_an_upload_after_drain_exits_130_with_the_document(
        local_lake_url: str, tmp_path: Path, sig: int) -> None:
    """SIGHUP (a closed terminal) as Ctrl-C: it had the CLI's plain handler, which cut the
    upload under way without the drain."""
    proc, _ = _start(tmp_path, local_lake_url, "--drain", "0.3", "--json")
    proc.send_signal(sig)
    out, err = _finish(proc, timeout=60)
    assert proc.returncode == 130, err
    assert [json.loads(line) for line in out.splitlines()] == [
        {"error": {"type": "Interrupted", "message": "interrupted", "exit_code": 130}}]
    assert "abandoned the upload of step_1 after 0.3 s" in err, err
    assert err.splitlines()[-1] == "ckptlake: interrupted", err
    assert _steps(local_lake_url) == []


def test_watch_once_puts_the_signal_handlers_back(local_lake_url: str, tmp_path: Path) -> None:
    """A library or test runner calling the CLI in-process keeps its own Ctrl-C handling."""
    def mine(signum: int, frame: Any) -> None:  # pragma: no cover - never delivered
        pass

    (tmp_path / "empty").mkdir()
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGTERM, mine)
    try:
        r = CliRunner().invoke(app, ["--lake", local_lake_url, "watch", str(tmp_path / "empty"),
                                     ART, "--once"])
        assert r.exit_code == 0, r.output
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGINT) is before[signal.SIGINT]
    finally:
        for s, h in before.items():
            signal.signal(s, h)


HOOK_SCRIPT = textwrap.dedent("""
    import sys, threading
    from concurrent.futures import ThreadPoolExecutor
    from ckptlake.core.exithooks import before_pools_close
    if sys.argv[1] == "shutting-down":
        def refuse(hook):  # what threading says once the interpreter is shutting down
            raise RuntimeError("can't register atexit after shutdown")
        threading._register_atexit = refuse
    def hook():
        try:
            with ThreadPoolExecutor(1) as pool:
                pool.submit(int).result()
            print("hook ran, pools start", flush=True)
        except RuntimeError:
            print("hook ran, pools closed", flush=True)
    before_pools_close(hook)
    before_pools_close(hook)
    print("main done", flush=True)
""")


@pytest.mark.parametrize("how,said", [("normal", "hook ran, pools start"),
                                      ("shutting-down", "hook ran, pools closed")])
def test_an_exit_hook_runs_once_and_even_when_threading_refuses_it(how: str, said: str,
                                                                    tmp_path: Path) -> None:
    script = tmp_path / "hook.py"
    script.write_text(HOOK_SCRIPT)
    p = subprocess.run([sys.executable, str(script), how], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert p.stdout.splitlines() == ["main done", said], p.stdout
