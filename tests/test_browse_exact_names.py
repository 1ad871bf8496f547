"""A path inside a version names exactly one file: a backslash and a leading or trailing space
are parts of a name (push stores them as given).  Read as "/" and stripped, `cat REF 'a\\b'`
printed a/b's bytes and `cat REF 'x '` printed x's, with exit 0 (a new user's first hour)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app

ART = "p/bs"
FILES = {"a/b": b"I am a/b", "a\\b": b"I am a-backslash-b", "x": b"I am x",
         "x ": b"I am x-space", " lead.txt": b"leading space", "back\\slash": b"bs"}


def run(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture
def lake_url(tmp_path: Path) -> str:
    src = tmp_path / "src"
    for name, data in FILES.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    url = f"file://{tmp_path / 'lake'}"
    assert run("push", src, ART, "--lake", url).exit_code == 0
    return url


@pytest.mark.parametrize("name", sorted(FILES))
def test_cat_and_open_read_the_file_named(lake_url: str, name: str) -> None:
    r = run("cat", ART, name, "--lake", lake_url)
    assert (r.exit_code, r.stdout_bytes) == (0, FILES[name]), r.stderr
    with ckptlake.open(lake_url) as lake:
        with lake.open(ART, name) as f:
            assert f.read() == FILES[name]


def test_ls_and_pull_of_one_path_take_that_file_only(lake_url: str, tmp_path: Path) -> None:
    r = run("ls", ART, "a\\b", "--lake", lake_url, "--json")
    assert r.exit_code == 0, r.stderr
    assert [f["path"] for f in json.loads(r.stdout)["files"]] == ["a\\b"]
    r = run("ls", ART, "x ", "--lake", lake_url, "--json")
    assert [f["path"] for f in json.loads(r.stdout)["files"]] == ["x "]
    out = tmp_path / "out"
    r = run("pull", ART, out, "a\\b", "x ", "--lake", lake_url)
    assert r.exit_code == 0, r.stderr
    got = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert got == {"a\\b": FILES["a\\b"], "x ": FILES["x "]}


def test_a_leading_dot_slash_and_end_slashes_still_mean_the_same_path(lake_url: str) -> None:
    for given in ("./x", "a//b", "./a/b"):
        r = run("cat", ART, given, "--lake", lake_url)
        want = FILES["x"] if given == "./x" else FILES["a/b"]
        assert (r.exit_code, r.stdout_bytes) == (0, want), (given, r.stderr)
    r = run("ls", ART, "a/", "--lake", lake_url, "--json")
    assert [f["path"] for f in json.loads(r.stdout)["files"]] == ["a/b"]


def test_show_escapes_what_a_pusher_wrote(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Metadata and the recorded command line are text anyone who can push chose: an escape
    sequence in them drove the terminal of whoever ran `show` (diff and ls escaped already)."""
    src = tmp_path / "one"
    src.mkdir()
    (src / "f").write_bytes(b"1")
    url = f"file://{tmp_path / 'lake2'}"
    evil = "x\x1b]0;pwned\x07y\nz\u202e"
    monkeypatch.setattr("sys.argv", ["ckptlake", "push", "--meta", f"note={evil}"])
    r = run("push", src, "p/esc", "--lake", url, "--meta", f"note={evil}",
            "--meta", f"k\x1b[31m=v")
    assert r.exit_code == 0, r.stderr
    r = run("show", "p/esc", "--lake", url)
    assert r.exit_code == 0, r.stderr
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout and "\u202e" not in r.stdout
    assert "note=x\\x1b]0;pwned\\x07y\\nz\\u202e" in r.stdout
    assert "k\\x1b[31m=v" in r.stdout
    command = [line for line in r.stdout.splitlines() if line.startswith("command")]
    assert len(command) == 1 and "\\x1b" in command[0], r.stdout
    r = run("show", "p/esc", "--lake", url, "--json")
    assert json.loads(r.stdout)["metadata"]["note"] == evil  # --json keeps it exact
