"""The CLI's output contract at points a mutation review found untested: redaction of the
result (JSON and human), a reader that left the pipe, options before the command that cannot
be read there, `--` ending the options the error path looks at, and Ctrl-C under --debug.

Every case runs the real `python -m ckptlake` in a fresh interpreter (test_cli_contract.cli),
since this is what a CI script or a user's shell sees: stdout, stderr and the exit code."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from test_cli_contract import cli, lake  # noqa: F401 - `lake` is a fixture


# ---- everything printed is redacted ------------------------------------------------------------

def test_the_json_result_document_is_redacted(lake: str, tmp_path: Path) -> None:  # noqa: F811
    """A destination that quotes a credential (`out_token=SECRET1`) is echoed back in pull's
    result; a CI job that keeps `--json` output as a build artifact or log must not publish
    the secret: the document is redacted like every line on stderr."""
    dest = tmp_path / "out_token=SECRET1"
    r = cli("pull", "a/b", str(dest), "--lake", lake, "--json")
    assert r.returncode == 0, (r.stdout, r.stderr)
    doc = json.loads(r.stdout)
    assert "SECRET1" not in r.stdout
    assert "token=***" in doc["destination"]
    assert (dest / "w.bin").read_bytes() == b"w" * 1000  # written there, only shown redacted


def test_the_human_result_is_redacted(lake: str, tmp_path: Path) -> None:  # noqa: F811
    """The same pull without --json: the human summary line lands in terminals, CI logs and
    screenshots, so it must not show the credential either."""
    dest = tmp_path / "out_token=SECRET1"
    r = cli("pull", "a/b", str(dest), "--lake", lake)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "SECRET1" not in r.stdout + r.stderr
    assert "token=***" in r.stdout


# ---- a reader that left the pipe ---------------------------------------------------------------

def test_a_reader_that_left_the_pipe_is_exit_1_without_a_message(lake: str) -> None:  # noqa: F811
    """`ckptlake ls | head -0`: the reader is gone before the listing is written.  That is the
    user's choice, not a failure worth a line: exit 1 and no "cannot write the output" error
    on stderr (which a shell pipeline would show on every `| head`)."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will ever read: the child's first write gets EPIPE
    try:
        r = subprocess.run([sys.executable, "-m", "ckptlake", "ls", "--lake", lake],
                           stdout=write_end, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                           text=True, timeout=120)
    finally:
        os.close(write_end)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.splitlines()
    assert [line for line in lines if not line.startswith("using lake ")] == [], r.stderr
    assert len(lines) == 1 and lines[0].startswith("using lake "), r.stderr


# ---- options the root cannot read --------------------------------------------------------------

def test_json_before_a_double_dash_is_refused_not_dropped(lake: str) -> None:  # noqa: F811
    """`ckptlake --json -- ls`: the move of global options after the command stops at `--`, so
    --json lands on the root.  Dropping it silently would give a script human text where it
    parses JSON and exit 0; it is refused instead: exit 2 and a UsageError document."""
    r = cli("--json", "--", "ls", "--lake", lake)
    assert r.returncode == 2, (r.stdout, r.stderr)
    doc = json.loads(r.stdout)
    assert doc["error"]["type"] == "UsageError"
    assert doc["error"]["exit_code"] == 2
    assert "--json" in doc["error"]["message"]


def test_json_after_a_double_dash_is_not_the_json_flag() -> None:
    """After `--` every word is an argument, never an option: `ckptlake ls --bogus -- --json`
    is a usage error in human form (exit 2, one line on stderr) and stdout stays empty.  A
    JSON document there would tell a script the user asked for --json when they did not."""
    r = cli("ls", "--bogus", "--", "--json")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stdout == ""
    assert "--bogus" in r.stderr


# ---- Ctrl-C with --debug -----------------------------------------------------------------------

def test_ctrl_c_under_debug_is_one_line_without_a_traceback(lake: str,  # noqa: F811
                                                            tmp_path: Path) -> None:
    """--debug prints tracebacks of failures; a Ctrl-C is the user's choice, not a failure, so
    even under --debug it is the one documented line and exit 130 (a traceback would look like
    a crash to whoever pressed it, and to a CI log reader)."""
    script = (
        "import sys\n"
        "import ckptlake.lake as lake\n"
        "def artifacts(*a, **k):\n"
        "    raise KeyboardInterrupt\n"
        "lake.Lake.artifacts = artifacts\n"
        f"sys.argv = ['ckptlake', 'ls', '--lake', {lake!r}, '--debug', '--quiet']\n"
        "from ckptlake.cli.main import main\n"
        "main()\n")
    (tmp_path / "debug_ctrl_c.py").write_text(script)
    done = subprocess.run([sys.executable, "-m", "debug_ctrl_c"], capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert done.returncode == 130, (done.stdout, done.stderr)
    assert done.stderr == "ckptlake: interrupted\n"
    assert "Traceback" not in done.stderr
