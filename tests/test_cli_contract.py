"""The output contract at its edges: closed or full standard streams, Ctrl-C in watch, the
exit code of a missing local path, an empty --endpoint-url, and warnings that must reach the
--json document (or stderr) instead of vanishing.

The stream cases run the real console entry point in a subprocess: a closed descriptor is
something only a fresh interpreter sees (Python makes the stream None at start-up)."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.lake import Lake
from ckptlake.store import open_store


@pytest.fixture
def lake(tmp_path: Path) -> str:
    """A local lake holding a/b@v1, and the source it came from at tmp_path/src."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(b"w" * 1000)
    url = "file://" + str(tmp_path / "lake")
    with Lake(open_store(url)) as handle:
        handle.push(src, "a/b")
    return url


def cli(*args: str, close: int | None = None, full: int | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`ckptlake ARGS` in a fresh interpreter, descriptor `close` closed (as `N>&-` does) or
    `full` on /dev/full; the other two captured."""
    def child() -> None:
        if close is not None:
            os.close(close)

    streams: dict[str, Any] = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    if full is not None:
        streams["stdout" if full == 1 else "stderr"] = open("/dev/full", "w")
    try:
        return subprocess.run([sys.executable, "-m", "ckptlake", *args], text=True,
                              preexec_fn=child, cwd=cwd, timeout=120, **streams)
    finally:
        for stream in streams.values():
            if stream is not subprocess.PIPE:
                stream.close()


def versions(url: str, artifact: str) -> list[int]:
    with ckptlake.open(url) as handle:
        try:
            return [v.version for v in handle.versions(artifact)]
        except ckptlake.NotFound:
            return []


needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")


# ---- stderr is best effort ---------------------------------------------------------------------

def test_a_closed_stderr_changes_neither_the_result_nor_the_exit_code(lake: str,
                                                                      tmp_path: Path) -> None:
    r = cli("ls", "--lake", lake, close=2)
    assert (r.returncode, r.stdout.split()[:2]) == (0, ["ARTIFACT", "VERSIONS"])
    assert "a/b" in r.stdout
    r = cli("ls", "nosuch/x", "--lake", lake, "--json", close=2)
    assert r.returncode == 3
    assert [json.loads(line)["error"]["type"] for line in r.stdout.splitlines()] == ["NotFound"]
    r = cli("push", str(tmp_path / "src"), "c/d", "--lake", lake, close=2)
    assert r.returncode == 0 and r.stdout.startswith("pushed c/d@v1")
    assert versions(lake, "c/d") == [1]
    r = cli("pull", "a/b", str(tmp_path / "out"), "--lake", lake, close=2)
    assert r.returncode == 0 and (tmp_path / "out" / "w.bin").read_bytes() == b"w" * 1000
    r = cli("ls", "--bogus", "--json", close=2)  # a usage error, before any command runs
    assert r.returncode == 2 and json.loads(r.stdout)["error"]["type"] == "UsageError"


@needs_dev_full
def test_a_full_stderr_keeps_the_exit_code(lake: str) -> None:
    assert cli("ls", "nosuch/x", "--lake", lake, full=2).returncode == 3
    assert cli("ls", "nosuch/x", "--lake", lake, "--debug", full=2).returncode == 3
    r = cli("ls", "--lake", lake, full=2)
    assert r.returncode == 0 and "a/b" in r.stdout


# ---- stdout that cannot take the result --------------------------------------------------------

def _only_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if not line.startswith("using lake ")]
    assert len(lines) == 1, stderr
    return lines[0]


@needs_dev_full
@pytest.mark.parametrize("args", [["--version"], ["push", "--help"]])
def test_help_and_version_to_a_full_disk_are_one_line(args: list[str]) -> None:
    """Not "internal error": the failed write dropped its buffer, so flushing again to see
    whether stdout was at fault succeeded."""
    r = cli(*args, full=1)
    assert r.returncode == 1
    assert _only_error(r.stderr).startswith("ckptlake: error: cannot write the output to stdout")


def test_a_closed_stdout_is_one_line_and_exit_1(lake: str, tmp_path: Path) -> None:
    r = cli("ls", "a/b", "--lake", lake, close=1)
    assert r.returncode == 1
    assert _only_error(r.stderr).startswith("ckptlake: error: cannot write the output to stdout")
    # the version is committed; only its document could not be written
    r = cli("push", str(tmp_path / "src"), "closed/y", "--lake", lake, "--json", close=1)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert _only_error(r.stderr).startswith(
        "ckptlake: error: pushed closed/y@v1, but cannot write the output to stdout")
    assert versions(lake, "closed/y") == [1]
    r = cli("gc", "--dry-run", "--lake", lake, close=1)  # the plan goes to stdout
    assert r.returncode == 1 and "cannot write the output to stdout" in r.stderr
    assert "internal error" not in r.stderr
    r = cli("--version", close=1)
    assert r.returncode == 1
    assert _only_error(r.stderr).startswith("ckptlake: error: cannot write the output to stdout")
    # nothing for stdout: nothing fails
    assert cli("ls", "a/b", "--lake", lake, "-q", close=1).returncode == 0
    # the error's document cannot be written either: the line and the error's code remain
    r = cli("ls", "nosuch/x", "--lake", lake, "--json", close=1)
    assert r.returncode == 3 and "artifact nosuch/x" in _only_error(r.stderr)


def test_a_closed_stdin_is_nobody_to_ask(lake: str, tmp_path: Path) -> None:
    """`ckptlake gc <&-` (cron, a daemon) with a plan that deletes, stderr on a terminal:
    nobody can answer, so gc refuses (exit 7, asking for --yes), asks nothing and deletes
    nothing.  Not a crash on a None stdin, and not a question read from whatever the closed
    descriptor turns into."""
    import pty

    r0 = cli("gc", "--lake", lake, close=0)
    assert r0.returncode == 0, r0.stderr  # nothing to delete: no question needed
    (tmp_path / "src" / "w.bin").write_bytes(b"x" * 1000)
    with Lake(open_store(lake)) as handle:
        handle.push(tmp_path / "src", "a/b")
    policy = tmp_path / "keep1.yaml"
    policy.write_text("retention:\n  rules:\n    - match: 'a/*'\n      keep_last: 1\n")
    master, slave = pty.openpty()  # stderr a terminal: only the closed stdin says "nobody"
    os.write(master, b"y\n")  # what a question read from that terminal would get
    try:
        r = subprocess.run([sys.executable, "-m", "ckptlake", "gc", "--lake", lake,
                            "--policy", str(policy)], preexec_fn=lambda: os.close(0),
                           stdout=subprocess.PIPE, stderr=slave, text=True, timeout=120)
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(master)
    err = b"".join(chunks).decode(errors="replace")
    assert r.returncode == 7, err
    assert "gc would delete 1 version" in err and "--yes" in err, err
    assert "[y/N]" not in err and "cancelled" not in err and "Traceback" not in err
    assert versions(lake, "a/b") == [1, 2]


# ---- exit codes of inputs ------------------------------------------------------------------------

def test_a_missing_meta_file_or_policy_file_is_not_found(lake: str, tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.yaml")
    for args in (("push", str(tmp_path / "src"), "x/y", "--meta-file", missing),
                 ("gc", "--policy", missing)):
        r = CliRunner().invoke(app, [*args, "--lake", lake, "--json"])
        assert r.exit_code == 3, r.output
        assert json.loads(r.stdout)["error"]["type"] == "NotFound"
        assert r.stderr.count("\n") == 1 and missing in r.stderr
    assert versions(lake, "x/y") == []


def test_an_empty_endpoint_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*a: Any, **k: Any) -> None:
        raise AssertionError("an empty --endpoint-url must be refused before opening")

    monkeypatch.setattr(ckptlake, "open", forbidden)
    for value in ("", "  "):
        r = CliRunner().invoke(app, ["ls", "--lake", "s3://bucket/p", "--endpoint-url", value])
        assert r.exit_code == 2
        assert r.stderr.startswith("ckptlake: error: --endpoint-url is empty")


# ---- warnings in the --json document -------------------------------------------------------------

def _costly(estimate: Any) -> Any:
    """The estimate of a route that costs: $5 with a warning above $1 and a confirmation above
    $2, which the tests' --yes gives: the warning must still be in the document (the cost is
    what a script that pulls with --yes most needs to know about)."""
    return dataclasses.replace(estimate, route="internet", cost_usd=5.0, warn_above_usd=1.0,
                               confirm_above_usd=2.0)


def test_the_egress_warning_is_in_pulls_json_document(lake: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    real = Lake.pull

    def pull(self: Lake, ref: Any, dest: Any, **kw: Any) -> Any:
        kw.pop("on_estimate")(_costly(self.estimate_pull(ref, dest, egress=kw["egress"])))
        return real(self, ref, dest, **kw)

    monkeypatch.setattr(Lake, "pull", pull)
    r = CliRunner().invoke(app, ["pull", "a/b", str(tmp_path / "out"), "--lake", lake, "--yes",
                                 "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert len(doc["warnings"]) == 1 and doc["warnings"][0].startswith("egress: a/b@v1")
    assert "above egress.warn_above_usd 1.00" in doc["warnings"][0]
    assert r.stderr == ""
    # without --json: the same warning, on stderr
    r = CliRunner().invoke(app, ["pull", "a/b", str(tmp_path / "out2"), "--lake", lake, "--yes"])
    assert "ckptlake: warning: egress: a/b@v1" in r.stderr


def test_the_egress_warning_is_in_diffs_json_document(lake: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    real = Lake.diff

    def diff(self: Lake, a: Any, b: Any, **kw: Any) -> Any:
        estimate = self.estimate_diff(a, b, egress=kw["egress"], values=True, inspect=False)
        kw.pop("on_estimate")(_costly(estimate))
        return real(self, a, b, **kw)

    monkeypatch.setattr(Lake, "diff", diff)
    r = CliRunner().invoke(app, ["diff", "a/b@v1", "a/b@v1", "--values", "--yes", "--lake",
                                 lake, "--json"])
    assert r.exit_code == 0, r.output
    (warning,) = json.loads(r.stdout)["warnings"]
    assert warning.startswith("egress: diff --values") and r.stderr == ""


def test_a_waiting_shard_says_so_under_json(lake: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """core/shards.py notes the wait for another rank's commit (up to minutes): with --json the
    note goes to stderr, so the rank does not look hung; with --quiet nothing does."""
    real = Lake.push_shard

    def push_shard(self: Lake, *args: Any, progress: Any = None, **kw: Any) -> Any:
        if progress is not None:
            progress.note("waiting for the owner of its commit (rank 0); taking over in 300 s")
            progress.retry(key="k", attempt=1, error="slow", delay=1.0)
        return real(self, *args, progress=progress, **kw)

    monkeypatch.setattr(Lake, "push_shard", push_shard)
    args = ["push", str(tmp_path / "src"), "s/t", "--step", "1", "--shard", "0/1", "--lake",
            lake]
    r = CliRunner().invoke(app, [*args, "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["version"] == 1
    assert r.stderr == "waiting for the owner of its commit (rank 0); taking over in 300 s\n"
    r = CliRunner().invoke(app, [*args, "--quiet"])
    assert r.exit_code == 0 and r.stderr == "" and r.stdout == ""


# ---- watch: Ctrl-C is an interruption, SIGTERM a stop --------------------------------------------

@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_watch_json_reports_ctrl_c_as_every_command_does(lake: str, tmp_path: Path, sig: int,
                                                          code: int) -> None:
    ckdir = tmp_path / "checkpoints"
    (ckdir / "step_1").mkdir(parents=True)
    (ckdir / "step_1" / "w.bin").write_bytes(b"x" * 100)
    proc = subprocess.Popen([sys.executable, "-m", "ckptlake", "watch", str(ckdir), "w/a",
                             "--marker", "done", "--poll", "0.1", "--lake", lake, "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        (ckdir / "step_1" / "done").touch()
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())  # pushed: the watch loop is running
        assert first["checkpoint"] == "step_1"
        proc.send_signal(sig)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, err
    docs = [json.loads(line) for line in rest.splitlines()]
    if sig == signal.SIGINT:
        assert docs == [{"error": {"type": "Interrupted", "message": "interrupted",
                                   "exit_code": 130}}]
        assert err.splitlines()[-1] == "ckptlake: interrupted"
    else:
        assert docs == [] and "interrupted" not in err


def test_watch_has_the_follow_symlinks_its_errors_name() -> None:
    r = CliRunner().invoke(app, ["watch", "--help"], env={"COLUMNS": "200"})
    assert "--follow-symlinks" in r.stdout


def test_the_library_refuses_an_empty_endpoint_too() -> None:
    import ckptlake
    from ckptlake.errors import UsageError

    with pytest.raises(UsageError, match="endpoint_url is empty"):
        ckptlake.open("s3://bucket/lake", endpoint_url=" ")
