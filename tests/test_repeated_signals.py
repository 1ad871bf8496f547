"""Repeated Ctrl-C / SIGTERM during a push, from a review: one interrupt is handled (exit 130,
one error document), but more of them a moment apart printed a second --json document and
tracebacks (raised inside the report, or inside finalizers at the interpreter's shutdown), or
killed the process (-2, -15).  From the first interrupt on, further ones change nothing."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_cli_e2e import Target, target  # noqa: F401  (the fixture)

__all__ = ["target"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_burst_of_signals_during_a_push_ends_in_one_document_and_exit_130(
        target: Target, tmp_path: Path, sig: int) -> None:  # noqa: F811
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(48 << 20))
    outcomes = []
    for attempt in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-m", "ckptlake", "push", str(big), f"burst/a{attempt}",
             "--lake", target.url, "--json", "--max-bandwidth", "16MiB"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=target.env,
            cwd=target.cwd, stdin=subprocess.DEVNULL)
        time.sleep(1.5)  # uploading by now (48 MiB at 16 MiB/s)
        for _ in range(6):
            proc.send_signal(sig)
            time.sleep(0.0005)
        out, err = proc.communicate(timeout=120)
        if proc.returncode == 0 or (out.strip() and "error" not in json.loads(out)):
            # finished before the signals: nothing to see (a push that printed its result and
            # then met a SIGTERM in the interpreter's shutdown ends -15: see the stop-36 note)
            continue
        outcomes.append(proc.returncode)
        assert proc.returncode == 130, (proc.returncode, out, err)
        docs = [json.loads(line) for line in out.splitlines() if line.strip()]
        assert [d["error"]["type"] for d in docs] == ["Interrupted"], out
        assert "Traceback" not in err and "Exception ignored" not in err, err
        assert err.count("ckptlake: interrupted") <= 1, err
    if not outcomes:
        pytest.skip("every push finished before the signals arrived")


def test_in_process_runs_after_main_get_their_handlers_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """main() (the console script) holds the signals to the process's end only after an
    interrupt; once it has run, an interrupted in-process run left SIGINT, SIGTERM and SIGHUP
    ignored for good (review of the fix)."""
    from typer.testing import CliRunner

    from ckptlake.cli import main as cli_main
    from ckptlake.cli.app import app
    from ckptlake.core import scan as scan_module

    names = ("SIGINT", "SIGTERM", "SIGHUP")

    def the_programs_own(signum: int, frame: object) -> None:  # an embedding program's
        raise KeyboardInterrupt

    original = signal.signal(signal.SIGINT, the_programs_own)
    before = {n: signal.getsignal(getattr(signal, n)) for n in names}
    url = (tmp_path / "l").as_uri()
    monkeypatch.setattr(sys, "argv", ["ckptlake", "ls", "--lake", url])
    with pytest.raises(SystemExit):
        cli_main.main()  # exit 3 (no lake there): ends without an interrupt

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    (tmp_path / "f").write_bytes(b"x")
    monkeypatch.setattr(scan_module, "scan", interrupted)
    try:
        r = CliRunner().invoke(app, ["push", str(tmp_path / "f"), "a/b", "--lake", url])
        assert r.exit_code == 130, r.output
        assert {n: signal.getsignal(getattr(signal, n)) for n in names} == before
    finally:
        signal.signal(signal.SIGINT, original)


def test_a_signal_while_the_pool_module_is_half_imported_is_an_interrupt(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Since the CLI's own handler takes Ctrl-C too, one that came while
    ckptlake.transfer.pool was being imported found the module without `interrupt` yet:
    "internal error: AttributeError: partially initialized module" (exit 1; the clean-clone
    suite's burst test)."""
    import types

    from ckptlake.cli import main as cli_main

    monkeypatch.setitem(sys.modules, "ckptlake.transfer.pool",
                        types.ModuleType("ckptlake.transfer.pool"))  # nothing defined yet
    monkeypatch.setattr(cli_main, "hold_signals", lambda: None)
    with pytest.raises(KeyboardInterrupt):
        cli_main._interrupt(signal.SIGINT, None)
