"""Bytes that are not text, locales, and output failures: undecodable bytes from the
environment in a manifest, a C-locale stdout, a result that cannot be printed after the lake
changed, plain tables of wide characters, and --json of an undecodable path."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import ckptlake
from ckptlake.lake import Lake
from ckptlake.store import open_store


def _bytes_dir(parent: Path, name: bytes) -> Path:
    path = os.path.join(os.fsencode(parent), name)
    os.mkdir(path)
    return Path(os.fsdecode(path))


@pytest.fixture
def src(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(b"w" * 1000)
    return src


# ---- 1. undecodable bytes from the environment go into the manifest escaped ------------------

def test_undecodable_argv_cwd_and_user_are_stored_escaped(src: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    cwd = _bytes_dir(tmp_path, b"wd\xff")
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["ckptlake", "push", os.fsdecode(b"caf\xe9"), "n/x"])
    monkeypatch.setenv("USER", os.fsdecode(b"u\xfe"))
    monkeypatch.setenv("LOGNAME", os.fsdecode(b"u\xfe"))
    url = "file://" + str(tmp_path / "lake")
    with Lake(open_store(url)) as lake:
        lake.push(src, "n/x")
        detail = lake.show("n/x@v1")
    prov = detail.provenance
    assert prov["command"][2] == "caf\\xe9"
    assert prov["cwd"].endswith("/wd\\xff")
    assert prov["user"] == "u\\xfe" and detail.created_by.startswith("u\\xfe@")


def test_a_dry_run_fails_as_the_push_on_what_the_manifest_cannot_hold(src: Path,
                                                                       tmp_path: Path) -> None:
    url = "file://" + str(tmp_path / "lake")
    bad = {"note": os.fsdecode(b"\xff")}
    with Lake(open_store(url)) as lake:
        # (refused when it comes in, before the upload: provenance= holds a value ...)
        with pytest.raises(ckptlake.UsageError, match="manifest cannot (hold|store)"):
            lake.push(src, "n/x", provenance=bad, dry_run=True)
        with pytest.raises(ckptlake.UsageError, match="manifest cannot (hold|store)"):
            lake.push(src, "n/x", provenance=bad)
        with pytest.raises(ckptlake.UsageError, match="input is not valid Unicode"):
            lake.push(src, "n/x", inputs=[os.fsdecode(b"s3://b/\xff")], dry_run=True)


# ---- 2. a C locale's stdout --------------------------------------------------------------------

def test_ls_in_the_c_locale_escapes_what_ascii_cannot_hold(src: Path, tmp_path: Path) -> None:
    (src / "modèle_é.txt").write_bytes(b"x")
    url = "file://" + str(tmp_path / "lake")
    with Lake(open_store(url)) as lake:
        lake.push(src, "uni/base")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONIOENCODING", "LANG",
                                                              "LC_CTYPE")}
    r = subprocess.run([sys.executable, "-m", "ckptlake", "ls", "uni/base@v1", "--lake", url],
                       capture_output=True, timeout=120,
                       env={**env, "LC_ALL": "C", "PYTHONUTF8": "0"})
    assert r.returncode == 0, r.stderr
    # the command runs again in UTF-8 mode (cli/main.utf8_mode): the name's own bytes
    assert "modèle_é.txt".encode() in r.stdout


def test_names_round_trip_as_their_bytes_in_the_c_locale(tmp_path: Path) -> None:
    """Under LC_ALL=C with PYTHONUTF8=0 a push called valid UTF-8 names "not valid UTF-8"
    (exit 2) and a pull of one was an internal error.  The CLI runs itself in UTF-8 mode
    then: names are their bytes."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "café漢.txt").write_bytes(b"x")
    url = "file://" + str(tmp_path / "lake")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONIOENCODING", "LANG",
                                                              "LC_CTYPE", "LC_ALL")}
    env.update(LC_ALL="C", PYTHONUTF8="0")
    cmd = [sys.executable, "-m", "ckptlake"]
    r = subprocess.run([*cmd, "push", str(src), "u/v", "--lake", url, "--json"],
                       capture_output=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    with Lake(open_store(url)) as lake:
        assert [f["path"] for f in lake.files("u/v")["files"]] == ["café漢.txt"]
    out = os.fsencode(str(tmp_path)) + b"/out\xfe"
    r = subprocess.run([*cmd, "pull", "u/v", out, "--lake", url], capture_output=True,
                       timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert os.listdir(out) == ["café漢.txt".encode()]
    assert out in r.stdout


# ---- 4. plain tables pad by terminal cells -----------------------------------------------------

def test_plain_tables_align_wide_and_combining_characters() -> None:
    from rich.cells import cell_len

    from ckptlake.cli.output import plain_table

    rows = [["CJK漢字😀.txt", "1 B"], ["cafe\u0301.txt", "1 B"], ["plain.txt", "1 B"]]
    lines = plain_table(["PATH", "SIZE"], rows).splitlines()
    columns = {cell_len(line[:line.index("1 B" if "1 B" in line else "SIZE")]) for line in lines}
    assert columns == {cell_len("CJK漢字😀.txt") + 2}


# ---- 3. a result that cannot be printed after the lake changed says what was done -------------

def _cli_to_full_stdout(*args: str) -> subprocess.CompletedProcess[str]:
    with open("/dev/full", "w") as full:
        return subprocess.run([sys.executable, "-m", "ckptlake", *args], text=True,
                              stdout=full, stderr=subprocess.PIPE, timeout=120)


def _error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if not line.startswith("using lake ")
             and not line.startswith("ckptlake: warning: ")]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_a_change_whose_result_cannot_be_written_says_it_was_done(src: Path,
                                                                  tmp_path: Path) -> None:
    url = "file://" + str(tmp_path / "lake")
    r = _cli_to_full_stdout("push", str(src), "a/b", "--lake", url)
    assert r.returncode == 1
    line = _error_line(r.stderr)
    assert line.startswith("ckptlake: error: pushed a/b@v1, but cannot write the output to "
                           "stdout: "), line
    assert "running the command again would do it again" in line
    with ckptlake.open(url) as lake:
        assert [v.version for v in lake.versions("a/b")] == [1]
    r = _cli_to_full_stdout("alias", "a/b@v1", "best", "--lake", url, "--json")
    assert r.returncode == 1
    assert _error_line(r.stderr).startswith(
        "ckptlake: error: set alias best -> a/b@v1 (new), but cannot write"), r.stderr
    r = _cli_to_full_stdout("cp", "a/b@v1", "--as", "c/d", "--lake", url)
    assert r.returncode == 1
    assert _error_line(r.stderr).startswith(
        "ckptlake: error: copied a/b@v1 -> c/d@v1, but cannot write"), r.stderr
    # a dry run changed nothing: the plain line; so did an alias set again, and a gc with
    # nothing to do (it said "gc deleted 0 versions and swept 0 chunks ... it is done")
    for args in (["push", str(src), "a/b", "--dry-run"], ["alias", "a/b@v1", "best"],
                 ["gc", "--yes", "--json"]):
        r = _cli_to_full_stdout(*args, "--lake", url)
        assert _error_line(r.stderr).startswith("ckptlake: error: cannot write the output"), \
            (args, r.stderr)


# ---- 5. --json of a path that is not UTF-8 is valid Unicode ------------------------------------

def test_json_shows_an_undecodable_path_as_its_escaped_bytes(src: Path, tmp_path: Path) -> None:
    url = "file://" + str(tmp_path / "lake")
    with Lake(open_store(url)) as lake:
        lake.push(src, "a/b")
    dest = os.path.join(os.fsencode(tmp_path), b"d\xfe")
    r = subprocess.run([sys.executable, "-m", "ckptlake", "pull", "a/b@v1", dest, "--lake", url,
                        "--json"], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["destination"] == str(tmp_path) + "/d\\xfe"
    missing = os.path.join(os.fsencode(tmp_path), b"gone\xff")
    r = subprocess.run([sys.executable, "-m", "ckptlake", "push", missing, "a/b", "--lake", url,
                        "--json"], capture_output=True, timeout=120)
    assert r.returncode == 3
    assert "/gone\\xff does not exist" in json.loads(r.stdout)["error"]["message"]


@pytest.mark.parametrize("bad", [float("nan"), b"raw", object(), "\udcff", {1: "a"}])
@pytest.mark.parametrize("dry_run", [True, False])
def test_a_provenance_value_json_cannot_hold_is_refused_up_front(
        src: Path, tmp_path: Path, bad: Any, dry_run: bool) -> None:
    """provenance={'x': nan} was committed as a bare NaN (then `show --json`: exit 1); bytes
    or an object were a TypeError (exit 1) after the upload."""
    url = "file://" + str(tmp_path / "lake")
    with Lake(open_store(url)) as lake:
        with pytest.raises(ckptlake.UsageError, match="provenance= holds a value"):
            lake.push(src, "p/q", provenance={"x": bad}, dry_run=dry_run)
        assert not (tmp_path / "lake" / "chunks").exists() or \
            not any(p.is_file() for p in (tmp_path / "lake" / "chunks").rglob("*"))


def test_a_long_listing_on_a_terminal_is_printed_as_plain_columns(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """rich lays a table out at ~12x the cost of plain columns: `ls ART@vN` of 100,000 files
    took ~45 s on a terminal.  Past RICH_TABLE_ROWS the terminal gets the plain columns; a
    short listing keeps the box."""
    from ckptlake.cli import output
    from ckptlake.cli.options import CommonOptions

    monkeypatch.setattr(output, "isatty", lambda stream: True)
    monkeypatch.setattr(output, "RICH_TABLE_ROWS", 3)
    out = output.Output(CommonOptions(lake=None, endpoint_url=None, profile=None, region=None,
                                      config=None, json=False, quiet=False, debug=False))
    out.table({}, ["PATH", "SIZE"], [["a", "1 B"], ["b", "2 B"], ["c", "3 B"]], empty="none")
    boxed = capsys.readouterr().out
    out.table({}, ["PATH", "SIZE"], [["a", "1 B"], ["b", "2 B"], ["c", "3 B"], ["d", "4 B"]],
              empty="none")
    plain = capsys.readouterr().out
    assert plain.splitlines()[0].split() == ["PATH", "SIZE"] and len(plain.splitlines()) == 5
    assert boxed != plain and "a" in boxed


def test_gc_done_counts_only_what_changed() -> None:
    """Every replica's run is listed in the result, changes or none: 'gc swept 1 replica ...
    it is done' was said for a gc that changed nothing."""
    from ckptlake.cli.gc import _done
    from ckptlake.core.gc import GcResult

    assert _done(GcResult(replicas=[{"replica": "eu", "chunks_swept": 0}])) is None
    assert _done(GcResult(replicas=[{"replica": "eu", "chunks_swept": 2}])) == \
        "gc swept 1 replica"
    assert _done(GcResult(pins_removed=1, chunks_condemned=3)) == \
        "gc condemned 3 chunks, removed 1 stale record"
