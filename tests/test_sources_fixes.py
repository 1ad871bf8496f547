"""Push sources and pull placement: symlinks through directory symlinks already in the
destination, links below a followed directory, trees deeper than PATH_MAX, unreadable
sources, a lake inside its own source, --exclude spellings, control characters in `ls`."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ckptlake.cli.app import app
from ckptlake.core.scan import scan
from ckptlake.errors import Conflict, UnsafeManifest, UsageError
from ckptlake.lake import Lake
from ckptlake.store.memory import MemoryStore


def _lake() -> Lake:
    return Lake(MemoryStore(), chunk_size=1 << 20, concurrency=2)


def _tree(dest: Path) -> dict[str, str]:
    """Everything under dest: link targets and file contents (the proof nothing was written)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(dest):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, dest)
            out[rel] = ("-> " + os.readlink(p)) if os.path.islink(p) else \
                ("dir" if os.path.isdir(p) else Path(p).read_text())
    return out


# ---- pull: the version's links are not placed through the destination's directory links ----

def test_merge_pull_refuses_a_link_that_leaves_through_an_aliasing_dir_link(
        tmp_path: Path) -> None:
    lake = _lake()
    src = tmp_path / "s"
    (src / "a" / "b").mkdir(parents=True)
    (src / "x").write_text("in")
    os.symlink("../../x", src / "a" / "b" / "L")
    lake.push(src, "e")
    dest = tmp_path / "d"
    (dest / "q").mkdir(parents=True)
    os.symlink("q/..", dest / "a")  # `a` is dest itself: a/b/L would land in b/, ../../x outside
    before = _tree(dest)
    with pytest.raises(UnsafeManifest, match="outside"):
        lake.pull("e", dest)
    assert _tree(dest) == before


def test_merge_pull_refuses_a_link_that_leaves_through_a_dot_link(tmp_path: Path) -> None:
    lake = _lake()
    src = tmp_path / "s"
    (src / "sub").mkdir(parents=True)
    (src / "file.txt").write_text("hello")
    os.symlink("../file.txt", src / "sub" / "link_up")
    lake.push(src, "e")
    dest = tmp_path / "d"
    dest.mkdir()
    os.symlink(".", dest / "sub")
    before = _tree(dest)
    with pytest.raises(UnsafeManifest, match="outside"):
        lake.pull("e", dest)
    assert _tree(dest) == before


def test_merge_pull_refuses_a_link_that_would_name_another_file(tmp_path: Path) -> None:
    lake = _lake()
    src = tmp_path / "s"
    (src / "sub").mkdir(parents=True)
    (src / "file.txt").write_text("hello")
    os.symlink("../file.txt", src / "sub" / "link_up")
    lake.push(src, "e")
    dest = tmp_path / "d"
    (dest / "x" / "y" / "realsub").mkdir(parents=True)
    (dest / "x" / "y" / "file.txt").write_text("EVIL")
    os.symlink("x/y/realsub", dest / "sub")
    before = _tree(dest)
    with pytest.raises(Conflict, match="sub") as info:
        lake.pull("e", dest)
    assert _tree(dest) == before and "force=True" in (info.value.hint or "")  # the library
    # --force replaces the directory symlink (not what it points to) with a directory
    lake.pull("e", dest, force=True)
    assert os.path.isdir(dest / "sub") and not os.path.islink(dest / "sub")
    assert (dest / "sub" / "link_up").read_text() == "hello"
    assert (dest / "x" / "y" / "file.txt").read_text() == "EVIL"


def test_merge_pull_still_puts_files_through_a_dir_link_inside(tmp_path: Path) -> None:
    lake = _lake()
    src = tmp_path / "s"
    (src / "data").mkdir(parents=True)
    (src / "data" / "model.bin").write_text("weights")
    os.symlink("data/model.bin", src / "cur")  # at the top: not below the directory link
    lake.push(src, "e")
    dest = tmp_path / "d"
    (dest / "store" / "data").mkdir(parents=True)
    os.symlink("store/data", dest / "data")
    lake.pull("e", dest)
    assert (dest / "store" / "data" / "model.bin").read_text() == "weights"
    assert (dest / "cur").read_text() == "weights"


def test_forced_pull_resolves_links_below_a_link_it_replaces_by_a_directory(
        tmp_path: Path) -> None:
    lake = _lake()
    src = tmp_path / "s"
    (src / "a").mkdir(parents=True)
    (src / "x").write_text("in")
    os.symlink("../x", src / "a" / "L")
    lake.push(src, "e")
    dest = tmp_path / "d"
    (dest / "q").mkdir(parents=True)
    (dest / "q" / "f").write_text("old")
    os.symlink("q/f", dest / "a")  # a link to a file where the version has a directory
    lake.pull("e", dest, force=True)
    assert os.path.isdir(dest / "a") and not os.path.islink(dest / "a")
    assert (dest / "a" / "L").read_text() == "in"


# ---- push: links below a followed directory, and pull's checks before uploading ----------

@pytest.mark.parametrize("depth", [4, 1])
def test_links_below_a_followed_directory_are_stored_relative_to_the_tree(
        tmp_path: Path, depth: int) -> None:
    src, far = tmp_path / "s4", tmp_path.joinpath("far", *"abcd"[:depth])
    src.mkdir()
    far.mkdir(parents=True)
    (src / "x.txt").write_text("X")
    os.symlink(src / "x.txt", far / "back")
    os.symlink(far, src / "ext")
    lake = _lake()
    lake.push(src, "f", follow_symlinks=True)
    files = {f["path"]: f for f in lake.files("f@latest")["files"]}
    assert files["ext/back"]["target"] == "../x.txt"
    out = tmp_path / "out"
    lake.pull("f", out)
    assert (out / "ext" / "back").read_text() == "X"


# ---- push: what cannot be read -------------------------------------------------------------

def test_a_source_deeper_than_path_max_is_a_short_usage_error(tmp_path: Path) -> None:
    src = tmp_path / "deep"
    src.mkdir()
    fd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(24):  # 24 x 201 bytes: beyond PATH_MAX (4096), made relative to fds
            os.mkdir("d" * 200, dir_fd=fd)
            nxt = os.open("d" * 200, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        with open(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as fh:
            fh.write("x")
    finally:
        os.close(fd)
    try:
        with pytest.raises(UsageError) as info:
            scan(src)
        assert len(info.value.message) < 400 and "..." in info.value.message
        r = CliRunner().invoke(app, ["push", str(src), "a", "--lake", str(tmp_path / "lake")])
        assert r.exit_code == 2 and len(r.stderr) < 600, r.stderr
    finally:
        shutil.rmtree(src)  # file-descriptor based: removes what is deeper than PATH_MAX


def test_an_unreadable_source_is_exit_4_like_an_unreadable_file_inside(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "model.bin"
    src.write_text("w")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False
                        if os.fspath(p) == str(src) else real_access(p, mode, *a, **k))
    r = CliRunner().invoke(app, ["push", str(src), "a", "--lake", str(tmp_path / "lake")])
    assert r.exit_code == 4, r.output
    assert "permission denied" in r.stderr


# ---- push: a lake inside SOURCE ------------------------------------------------------------

def test_push_refuses_a_local_lake_inside_its_source(tmp_path: Path) -> None:
    src = tmp_path / "selfp"
    src.mkdir()
    (src / "w.bin").write_text("w")
    for lake in (str(src / "lake"), f"file://{src / 'lake'}"):
        r = CliRunner().invoke(app, ["push", str(src), "t/x", "--lake", lake])
        assert r.exit_code == 2 and "inside SOURCE" in r.stderr, r.output
    r = CliRunner().invoke(app, ["push", str(src), "t/x", "--lake", str(src), "--json"])
    assert r.exit_code == 2, r.output
    r = CliRunner().invoke(app, ["push", str(src), "t/x", "--lake", str(src / "lake"),
                                 "--exclude", "lake/", "--json"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["ls", "t/x@v1", "--lake", str(src / "lake"), "--json"])
    assert [f["path"] for f in json.loads(r.stdout)["files"]] == ["w.bin"]


# ---- push: --exclude spellings -------------------------------------------------------------

def test_exclude_trailing_slash_leading_dot_and_slash(tmp_path: Path) -> None:
    src = tmp_path / "s"
    (src / "sub" / "in").mkdir(parents=True)
    (src / "sub" / "in" / "f").write_text("1")
    (src / "a" / "sub").mkdir(parents=True)
    (src / "a" / "sub" / "g").write_text("2")
    (src / "b").mkdir()
    (src / "b" / "sub").write_text("a file named sub")
    (src / "keep").write_text("3")

    def paths(*exclude: str) -> list[str]:
        tree = scan(src, exclude=exclude)
        return sorted([f.path for f in tree.files] + tree.empty_dirs
                      + [link for link, _ in tree.symlinks])

    # directories only, at any depth (`a` stays, empty, as with any exclude)
    assert paths("sub/") == ["a", "b/sub", "keep"]
    assert paths("./sub") == paths("/sub") == ["a/sub/g", "b/sub", "keep"]  # anchored
    assert paths("/sub/") == ["a/sub/g", "b/sub", "keep"]
    assert paths("sub") == ["a", "b", "keep"]
    os.symlink("sub", src / "lnk")  # a link to a directory counts as one
    assert paths("lnk/", "sub/") == ["a", "b/sub", "keep"]
    with pytest.raises(UsageError, match="whole push source"):
        scan(src, exclude=("./",))


def test_an_exclude_that_matched_nothing_is_a_warning(tmp_path: Path) -> None:
    src = tmp_path / "s"
    src.mkdir()
    (src / "f.txt").write_text("x")
    tree = scan(src, exclude=("*.txt", "logs/", "nothing*"))
    assert tree.files == []
    assert len(tree.warnings) == 2
    assert "'logs/'" in tree.warnings[0] and "'nothing*'" in tree.warnings[1]


def test_an_unmatched_exclude_reaches_push_and_watch_says_it_once(tmp_path: Path) -> None:
    """The scan's warning is the push result's (text and --json); a watch, which passes one
    --exclude to every checkpoint (a glob for one checkpoint's stray file matches nothing in
    the others), does not report it at all (stderr, nor its --json documents)."""
    url = (tmp_path / "lake").as_uri()
    src = tmp_path / "s"
    src.mkdir()
    (src / "f.bin").write_bytes(b"x")
    r = CliRunner().invoke(app, ["--lake", url, "push", str(src), "a/b", "--exclude", "logs/",
                                 "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["warnings"][0] == "--exclude 'logs/' matched nothing"
    d = tmp_path / "d"
    for step in (1, 2, 3):
        (d / f"step_{step}").mkdir(parents=True)
        (d / f"step_{step}" / "w.bin").write_bytes(bytes([step]))
        os.utime(d / f"step_{step}" / "w.bin", (0, 0))
        os.utime(d / f"step_{step}", (0, 0))
    r = CliRunner().invoke(app, ["--lake", url, "watch", str(d), "w/x", "--once", "--settle",
                                 "0", "--exclude", "logs/"])
    assert r.exit_code == 0, r.output
    assert "matched nothing" not in r.stderr, r.stderr
    assert r.stdout.count("<- step_") == 3, r.stdout
    for step in (4, 5):
        (d / f"step_{step}").mkdir(parents=True)
        (d / f"step_{step}" / "w.bin").write_bytes(bytes([step]))
        os.utime(d / f"step_{step}" / "w.bin", (0, 0))
        os.utime(d / f"step_{step}", (0, 0))
    r = CliRunner().invoke(app, ["--lake", url, "watch", str(d), "w/x", "--once", "--settle",
                                 "0", "--exclude", "logs/", "--json"])
    assert r.exit_code == 0, r.output
    docs = [json.loads(line) for line in r.stdout.splitlines()]
    assert [doc["checkpoint"] for doc in docs] == ["step_4", "step_5"]
    assert all(doc["warnings"] == [] for doc in docs), docs
    assert "matched nothing" not in r.stderr, r.stderr


# ---- ls: names are shown escaped -----------------------------------------------------------

def test_ls_escapes_control_characters_in_names(tmp_path: Path) -> None:
    src = tmp_path / "s"
    src.mkdir()
    (src / "a\nb").write_text("1")
    (src / "\x1b[31mred").write_text("2")
    os.symlink("a\nb", src / "lnk")
    lake = str(tmp_path / "lake")
    assert CliRunner().invoke(app, ["push", str(src), "t", "--lake", lake]).exit_code == 0
    for extra in ([], ["--tree"]):
        r = CliRunner().invoke(app, ["ls", "t@v1", "--lake", lake, *extra])
        assert r.exit_code == 0, r.output
        assert "\x1b" not in r.stdout and "a\\nb" in r.stdout and "\\x1b[31mred" in r.stdout
        assert len(r.stdout.splitlines()) == 4  # a header and 3 rows
    r = CliRunner().invoke(app, ["ls", "t@v1", "--lake", lake, "--json"])
    assert {f["path"] for f in json.loads(r.stdout)["files"]} == {"a\nb", "\x1b[31mred", "lnk"}
