"""An interrupt (Ctrl-C, or SIGTERM/SIGHUP, which the CLI takes as one) before the command's
own guard runs: while its modules import, or while Typer builds the command group.  The
second came out as a traceback and death by SIGINT (-2); the first gave no JSON document with
--json.  Both now exit 130 with the one line, and with --json the one document."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WHILE_BUILDING = """
import typer.main
def boom(*a, **k):
    raise KeyboardInterrupt
typer.main.get_command = boom
"""
WHILE_IMPORTING = """
import importlib.abc, sys
class Stop(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "ckptlake.cli.app":
            raise KeyboardInterrupt
sys.meta_path.insert(0, Stop())
"""


def _run_main(prelude: str, args: list[str]) -> subprocess.CompletedProcess:
    """`prelude` (which plants the interrupt), then the CLI's main() on `args`, in a process
    of its own."""
    script = prelude + f"import sys\nsys.argv = ['ckptlake', *{args!r}]\n" \
        "from ckptlake.cli.main import main\nmain()\n"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "CKPTLAKE_CONFIG": ""})


@pytest.mark.parametrize("where", [WHILE_BUILDING, WHILE_IMPORTING], ids=["building", "importing"])
@pytest.mark.parametrize("as_json", [True, False], ids=["json", "text"])
def test_an_interrupt_before_the_command_runs_is_exit_130(tmp_path: Path, where: str,
                                                          as_json: bool) -> None:
    r = _run_main(where, ["ls", "--lake", str(tmp_path / "lake")]
                  + (["--json"] if as_json else []))
    assert r.returncode == 130, (r.returncode, r.stderr)
    assert r.stderr == "ckptlake: interrupted\n", r.stderr
    if as_json:
        assert json.loads(r.stdout) == {"error": {"type": "Interrupted",
                                                  "message": "interrupted", "exit_code": 130}}
    else:
        assert r.stdout == ""


WHILE_PARSING = """
from ckptlake.cli import app as app_module
import typer.core
def boom(*a, **k):
    raise KeyboardInterrupt
typer.core.TyperGroup.make_context = boom
"""
IN_A_CLASS = """
import ckptlake.cli.app as app_module
real = app_module.CkptlakeGroup.invoke
def boom(self, ctx):
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt as e:
        raise RuntimeError("Error calling __set_name__ on 'Field' instance") from e
app_module.CkptlakeGroup.invoke = boom
"""


@pytest.mark.parametrize("where", [WHILE_PARSING, IN_A_CLASS], ids=["parsing", "set_name"])
def test_an_interrupt_while_parsing_or_wrapped_by_python_is_reported(tmp_path: Path,
                                                                     where: str) -> None:
    """While the arguments were parsed, Typer made it a silent exit 130 (no line, no JSON);
    one Python wrapped in a RuntimeError (raised while a class was built in a lazy import)
    was an internal error, exit 1 (a review, by SIGTERMs 0.1-0.2 s after start)."""
    r = _run_main(where, ["ls", "--lake", str(tmp_path / "lake"), "--json"])
    assert r.returncode == 130, (r.returncode, r.stderr)
    assert r.stderr == "ckptlake: interrupted\n", r.stderr
    assert json.loads(r.stdout)["error"]["type"] == "Interrupted"


def test_a_signal_after_the_command_ends_with_its_exit_code(tmp_path: Path) -> None:
    """A SIGTERM after a push had committed and printed, during the interpreter's shutdown,
    killed the process (-15, 143 to a shell) and hid the success (a review)."""
    (tmp_path / "f").write_bytes(b"x")
    args = ["push", str(tmp_path / "f"), "a/b", "--lake", str(tmp_path / "lake"), "--json"]
    script = ("import os, signal, sys, time\n"
              f"sys.argv = ['ckptlake', *{args!r}]\n"
              "from ckptlake.cli.main import console\n"
              "try:\n    console()\n"
              "except SystemExit as e:\n    code = e.code\n"
              "os.kill(os.getpid(), signal.SIGTERM)  # as if it came during the shutdown\n"
              "time.sleep(5)\nprint('not reached')\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "CKPTLAKE_CONFIG": ""})
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert json.loads(r.stdout.strip())["version"] == 1 and "not reached" not in r.stdout


def test_a_signal_once_the_result_is_printed_ends_with_the_commands_code(tmp_path: Path) -> None:
    """A SIGTERM just after the result was printed, while the command group unwound, came
    out as a traceback and exit 130 after a committed push (a review, by a signal sent
    from gc.freeze() in _main's clean-up)."""
    (tmp_path / "f").write_bytes(b"x")
    args = ["push", str(tmp_path / "f"), "a/b", "--lake", str(tmp_path / "lake"), "--json"]
    script = ("import os, signal, sys\n"
              "real = sys.exit\n"
              "def exit(code=0):\n    os.kill(os.getpid(), signal.SIGTERM)\n    real(code)\n"
              "sys.exit = exit\n"
              f"sys.argv = ['ckptlake', *{args!r}]\n"
              "from ckptlake.cli.main import console\nconsole()\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "CKPTLAKE_CONFIG": ""})
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    docs = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    assert len(docs) == 1 and docs[0]["version"] == 1, r.stdout
