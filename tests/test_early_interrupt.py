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


@pytest.mark.parametrize("where", [WHILE_BUILDING, WHILE_IMPORTING], ids=["building", "importing"])
@pytest.mark.parametrize("as_json", [True, False], ids=["json", "text"])
def test_an_interrupt_before_the_command_runs_is_exit_130(tmp_path: Path, where: str,
                                                          as_json: bool) -> None:
    args = ["ls", "--lake", str(tmp_path / "lake")] + (["--json"] if as_json else [])
    script = where + f"import sys\nsys.argv = ['ckptlake', *{args!r}]\n" \
        "from ckptlake.cli.main import main\nmain()\n"
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "CKPTLAKE_CONFIG": ""})
    assert r.returncode == 130, (r.returncode, r.stderr)
    assert r.stderr == "ckptlake: interrupted\n", r.stderr
    if as_json:
        assert json.loads(r.stdout) == {"error": {"type": "Interrupted",
                                                  "message": "interrupted", "exit_code": 130}}
    else:
        assert r.stdout == ""
