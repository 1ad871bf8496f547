"""Pull into an existing directory: every placement conflict is found before anything moves
(issue 12, defect 9).

Before, a file where the version has an (empty) directory let `pull --force` move some files and
then crash (exit 1, FileExistsError) leaving the staging directory and no symlinks; a file where
the version needs a directory crashed with NotADirectoryError even with --force.  Now: without
--force both are conflicts (exit 6) and the destination is unchanged byte for byte; with
--force the file is replaced by the version's directory.  A directory in the way is never
removed, with or without --force.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.errors import EXIT_CONFLICT, EXIT_OK

ART = "pl/run/ckpt"


def snapshot(root: Path) -> dict[str, tuple[str, object]]:
    """Every entry under root (not following symlinks): kind and content, link target or mode."""
    out: dict[str, tuple[str, object]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = ("link", os.readlink(p))
            elif os.path.isdir(p):
                out[rel] = ("dir", None)
            else:
                with open(p, "rb") as fh:
                    out[rel] = ("file", fh.read())
    return out


def stagings(dst: Path) -> list[str]:
    """Staging directories beside dst, and inside it (where a pull into an existing directory
    stages)."""
    return [n for d in (dst.parent, dst) if d.is_dir() for n in os.listdir(d)
            if ".ckptlake-pull-" in n]


@pytest.fixture
def url(tmp_path: Path) -> str:
    """A lake holding one version with nested files, an empty directory and a symlink."""
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "a.bin").write_bytes(b"version a")
    (src / "sub" / "deep").mkdir(parents=True)
    (src / "sub" / "deep" / "b.bin").write_bytes(b"version b")
    (src / "emptydir").mkdir()
    (src / "top.txt").write_bytes(b"version top")
    os.symlink("d/a.bin", src / "link")
    lake_url = f"file://{tmp_path / 'lake'}"
    with ckptlake.open(lake_url) as lk:
        lk.push(src, ART)
    return lake_url


def pull(url: str, dst: Path, *extra: str) -> tuple[int, list[str], str]:
    r = CliRunner().invoke(app, ["pull", ART, str(dst), "--lake", url, *extra])
    errors = [line for line in r.output.splitlines() if line.startswith("ckptlake: ")]
    return r.exit_code, errors, r.output


def expect_refused(url: str, dst: Path, *extra: str, says: str) -> None:
    before = snapshot(dst)
    code, errors, output = pull(url, dst, *extra)
    assert code == EXIT_CONFLICT, output
    assert len(errors) == 1 and says in errors[0], output
    assert "Traceback" not in output and "internal error" not in output
    assert snapshot(dst) == before
    assert stagings(dst) == []


def expect_version(dst: Path, *, kept: dict[str, tuple[str, object]]) -> None:
    snap = snapshot(dst)
    assert snap["d/a.bin"] == ("file", b"version a")
    assert snap["sub/deep/b.bin"] == ("file", b"version b")
    assert snap["top.txt"] == ("file", b"version top")
    assert snap["emptydir"] == ("dir", None)
    assert snap["link"] == ("link", "d/a.bin")
    for rel, value in kept.items():
        assert snap[rel] == value
    assert stagings(dst) == []


def test_file_where_the_version_has_an_empty_directory(url: str, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "emptydir").write_bytes(b"mine")
    (dst / "top.txt").write_bytes(b"mine too")  # differs as well: both are named at once
    (dst / "unrelated.txt").write_bytes(b"keep me")
    expect_refused(url, dst, says="emptydir (the version has a directory there) and 1 more")
    code, errors, output = pull(url, dst, "--force")
    assert code == EXIT_OK, output
    expect_version(dst, kept={"unrelated.txt": ("file", b"keep me")})


def test_force_straight_away_places_everything(url: str, tmp_path: Path) -> None:
    """The reported case: --force into a directory with a file where the version has an empty
    directory used to move the files, crash before the symlinks and keep the staging."""
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "emptydir").write_bytes(b"mine")
    code, errors, output = pull(url, dst, "--force")
    assert code == EXIT_OK and errors == [], output
    expect_version(dst, kept={})


def test_file_where_the_version_needs_a_parent_directory(url: str, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "sub").write_bytes(b"a file, not a directory")
    (dst / "top.txt").write_bytes(b"version top")  # identical: kept
    expect_refused(url, dst, says="sub (the version has a directory there)")
    code, errors, output = pull(url, dst, "--force")
    assert code == EXIT_OK, output
    expect_version(dst, kept={})


def test_symlink_where_the_version_needs_a_directory(url: str, tmp_path: Path) -> None:
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "notes.txt").write_bytes(b"keep me")
    os.symlink("notes.txt", dst / "d")  # a link to a file where the version has d/
    expect_refused(url, dst, says="d (the version has a directory there)")
    code, errors, output = pull(url, dst, "--force")
    assert code == EXIT_OK, output
    expect_version(dst, kept={"notes.txt": ("file", b"keep me")})  # the link went, not its file


@pytest.mark.parametrize("where, what", [("top.txt", "file"), ("link", "symlink")])
def test_directory_where_the_version_has_a_file_is_never_removed(
        url: str, tmp_path: Path, where: str, what: str) -> None:
    dst = tmp_path / "dst"
    (dst / where).mkdir(parents=True)
    (dst / where / "precious.bin").write_bytes(b"not in the version")
    (dst / "emptydir").write_bytes(b"force would replace this")
    (dst / "sub").mkdir()
    (dst / "sub" / "deep").write_bytes(b"and this")
    for extra in ((), ("--force",)):
        expect_refused(url, dst, *extra, says=f"is a directory; the version has a {what} there")


def test_fresh_and_merging_pulls_still_place_everything(url: str, tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    assert pull(url, fresh)[0] == EXIT_OK
    expect_version(fresh, kept={})
    merged = tmp_path / "merged"
    (merged / "d").mkdir(parents=True)
    (merged / "d" / "other.bin").write_bytes(b"keep me")
    code, _, output = pull(url, merged)
    assert code == EXIT_OK, output
    expect_version(merged, kept={"d/other.bin": ("file", b"keep me")})


def test_single_file_version_whose_parent_path_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "model.bin"
    f.write_bytes(b"weights")
    lake_url = f"file://{tmp_path / 'lake'}"
    with ckptlake.open(lake_url) as lk:
        lk.push(f, "pl/file")
    blocker = tmp_path / "out"
    blocker.write_bytes(b"a file")
    r = CliRunner().invoke(app, ["pull", "pl/file", str(blocker / "model.bin"), "--lake",
                                 lake_url, "--force"])
    assert r.exit_code == EXIT_CONFLICT and "a file is in the way" in r.output, r.output
    assert blocker.read_bytes() == b"a file"
    assert stagings(blocker) == []


def test_something_appearing_in_the_way_during_the_pull_is_a_conflict(url: str,
                                                                      tmp_path: Path) -> None:
    from ckptlake.errors import Conflict
    from ckptlake.transfer.progress import NullProgress

    dst = tmp_path / "dst"
    dst.mkdir()

    class Intruder(NullProgress):
        def advance(self, nbytes: int) -> None:  # a writer puts a file where a directory goes
            if not (dst / "emptydir").exists():
                (dst / "emptydir").write_bytes(b"late")

    with ckptlake.open(url) as lk, pytest.raises(Conflict, match="changed while"):
        lk.pull(ART, dst, progress=Intruder())
    assert (dst / "emptydir").read_bytes() == b"late"
    assert stagings(dst) == []


# ---- executable bits --------------------------------------------------------------------------

def executable(p: Path) -> bool:
    return bool(p.stat().st_mode & 0o100)


@pytest.fixture
def xurl(tmp_path: Path) -> str:
    """pl/x@v1: run.sh executable; @v2: the same bytes, not executable."""
    xs = tmp_path / "xs"
    xs.mkdir()
    (xs / "run.sh").write_bytes(b"#!/bin/sh\n")
    (xs / "data.bin").write_bytes(b"data")
    (xs / "run.sh").chmod(0o755)
    lake_url = f"file://{tmp_path / 'lake'}"
    with ckptlake.open(lake_url) as lk:
        lk.push(xs, "pl/x")
        (xs / "run.sh").chmod(0o644)
        assert lk.push(xs, "pl/x").version == 2
    return lake_url


def xpull(url: str, ref: str, dst: Path, *extra: str) -> tuple[int, list[str], str]:
    r = CliRunner().invoke(app, ["pull", ref, str(dst), "--lake", url, "--json", *extra])
    errors = [line for line in r.output.splitlines() if line.startswith("ckptlake: ")]
    return r.exit_code, errors, r.output


def test_force_restores_the_executable_bit_of_identical_bytes(xurl: str, tmp_path: Path) -> None:
    """The reported case: v1 over v2 with --force left run.sh -rw-r--r-- (its bytes matched,
    so it was kept as identical, mode and all)."""
    o = tmp_path / "o"
    assert xpull(xurl, "pl/x@v2", o)[0] == EXIT_OK
    assert not executable(o / "run.sh")
    code, errors, output = xpull(xurl, "pl/x@v1", o, "--force")
    assert code == EXIT_OK, output
    assert executable(o / "run.sh") and (o / "run.sh").stat().st_mode & 0o777 == 0o755
    assert '"bytes_downloaded": 0' in output  # the bit, not the bytes
    assert xpull(xurl, "pl/x@v2", o, "--force")[0] == EXIT_OK
    assert (o / "run.sh").stat().st_mode & 0o777 == 0o644
    assert stagings(o) == []


@pytest.mark.parametrize("have, want", [("pl/x@v2", "pl/x@v1"), ("pl/x@v1", "pl/x@v2")])
def test_an_executable_bit_that_differs_is_a_conflict_without_force(
        xurl: str, tmp_path: Path, have: str, want: str) -> None:
    """A merge pull (exit 0 before, the bit left as it was): the file differs from the
    version, so, as for bytes that differ, nothing changes without --force."""
    o = tmp_path / "o"
    assert xpull(xurl, have, o)[0] == EXIT_OK
    (o / "mine.txt").write_bytes(b"keep me")
    mode = (o / "run.sh").stat().st_mode
    before = snapshot(o)
    code, errors, output = xpull(xurl, want, o)
    assert code == EXIT_CONFLICT, output
    assert len(errors) == 1 and "run.sh (its executable bit differs)" in errors[0], output
    assert snapshot(o) == before and (o / "run.sh").stat().st_mode == mode
    assert stagings(o) == []
    assert xpull(xurl, want, o, "--force")[0] == EXIT_OK
    assert executable(o / "run.sh") == (want == "pl/x@v1")
    assert (o / "mine.txt").read_bytes() == b"keep me"


def test_single_file_version_executable_bit(tmp_path: Path) -> None:
    f = tmp_path / "tool"
    f.write_bytes(b"#!/bin/sh\n")
    f.chmod(0o755)
    lake_url = f"file://{tmp_path / 'lake'}"
    with ckptlake.open(lake_url) as lk:
        lk.push(f, "pl/tool")
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["pull", "pl/tool", str(out), "--lake", lake_url])
    assert r.exit_code == EXIT_OK and executable(out), r.output
    out.chmod(0o600)
    r = CliRunner().invoke(app, ["pull", "pl/tool", str(out), "--lake", lake_url])
    assert r.exit_code == EXIT_CONFLICT and "executable bit" in r.output, r.output
    r = CliRunner().invoke(app, ["pull", "pl/tool", str(out), "--lake", lake_url, "--force"])
    assert r.exit_code == EXIT_OK, r.output
    assert out.stat().st_mode & 0o777 == 0o700  # executable where readable, nothing more
