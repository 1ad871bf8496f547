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

    with ckptlake.open(url) as lk, pytest.raises(Conflict, match="changed while") as info:
        lk.pull(ART, dst, progress=Intruder())
    assert (dst / "emptydir").read_bytes() == b"late"
    # every directory is made before a file takes its final name: none was placed, and the
    # staging is kept for the re-run
    assert "now holds part of" not in str(info.value)
    assert [p.name for p in dst.rglob("*") if p.is_file() and ".ckptlake-pull" not in str(p)] \
        == ["emptydir"]
    assert len(stagings(dst)) == 1
    (dst / "emptydir").unlink()
    with ckptlake.open(url) as lk:
        assert lk.pull(ART, dst).bytes_downloaded == 0
    expect_version(dst, kept={})


class Writer:
    """A progress that writes `path` (once) while the version is being downloaded: a user, or
    another pull, putting a file where the plan found nothing."""

    def __new__(cls, path: Path) -> object:
        from ckptlake.transfer.progress import NullProgress

        class _Writer(NullProgress):
            def advance(self, nbytes: int) -> None:
                if not path.exists():
                    path.write_bytes(b"late")
        return _Writer()


@pytest.mark.parametrize("links", [True, False], ids=["hard-links", "no-hard-links"])
def test_a_file_appearing_where_the_plan_found_nothing_is_kept(
        url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, links: bool) -> None:
    """Data loss before: rename(2) silently replaced the user's file with the version's."""
    import errno

    from ckptlake.errors import Conflict

    if not links:  # a file system without hard links: the name is checked again instead
        def no_link(*args: object, **kw: object) -> None:
            raise OSError(errno.EPERM, os.strerror(errno.EPERM))
        monkeypatch.setattr(os, "link", no_link)
    dst = tmp_path / "dst"
    dst.mkdir()
    with ckptlake.open(url) as lk, pytest.raises(Conflict, match="appeared during the pull"):
        lk.pull(ART, dst, progress=Writer(dst / "top.txt"))
    assert (dst / "top.txt").read_bytes() == b"late"
    assert len(stagings(dst)) == 1  # kept: the re-run need not download again
    (dst / "top.txt").unlink()
    with ckptlake.open(url) as lk:
        assert lk.pull(ART, dst).bytes_downloaded == 0
    expect_version(dst, kept={})


def test_a_symlink_appearing_where_the_plan_found_nothing_is_kept(url: str,
                                                                  tmp_path: Path) -> None:
    from ckptlake.errors import Conflict

    dst = tmp_path / "dst"
    dst.mkdir()
    with ckptlake.open(url) as lk, pytest.raises(Conflict, match="link appeared during"):
        lk.pull(ART, dst, progress=Writer(dst / "link"))
    assert (dst / "link").read_bytes() == b"late"


def test_a_single_file_appearing_during_its_pull_is_kept(tmp_path: Path) -> None:
    from ckptlake.errors import Conflict

    f = tmp_path / "model.bin"
    f.write_bytes(b"weights")
    lake_url = f"file://{tmp_path / 'lake'}"
    with ckptlake.open(lake_url) as lk:
        lk.push(f, "pl/file")
    out = tmp_path / "out.bin"
    with ckptlake.open(lake_url) as lk, pytest.raises(Conflict, match="appeared during"):
        lk.pull("pl/file", out, progress=Writer(out))
    assert out.read_bytes() == b"late"
    assert len(stagings(out)) == 1


def test_two_pulls_of_different_versions_into_one_directory(tmp_path: Path) -> None:
    """Both exited 0 before, one having silently overwritten the other's files."""
    from ckptlake.errors import Conflict
    from ckptlake.transfer.progress import NullProgress

    src = tmp_path / "src"
    src.mkdir()
    lake_url = f"file://{tmp_path / 'lake'}"
    with ckptlake.open(lake_url) as lk:
        for text in (b"one", b"two"):
            (src / "f.bin").write_bytes(text)
            lk.push(src, "pl/two")
    dst = tmp_path / "dst"
    dst.mkdir()

    class Other(NullProgress):  # v2 is pulled while v1 downloads
        def advance(self, nbytes: int) -> None:
            if not (dst / "f.bin").exists():
                with ckptlake.open(lake_url) as other:
                    other.pull("pl/two@v2", dst)

    with ckptlake.open(lake_url) as lk, pytest.raises(Conflict, match="appeared during"):
        lk.pull("pl/two@v1", dst, progress=Other())
    assert (dst / "f.bin").read_bytes() == b"two"


# ---- a failure half way through placing -------------------------------------------------------

@pytest.mark.parametrize("failure", ["EPERM", "EXDEV", "interrupt"])
def test_a_failure_while_placing_says_the_destination_is_partly_placed(
        url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str) -> None:
    """The second of three renames fails: one file of the version is placed, two are not.
    Before: "cannot write to .../b.bin" or a bare "interrupted", and the staging deleted on
    EXDEV/EBUSY; now the error says so and the re-run places the rest without downloading."""
    import errno
    import json

    from ckptlake.errors import EXIT_ACCESS, EXIT_INTERRUPTED, EXIT_USAGE

    dst = tmp_path / "dst"
    dst.mkdir()
    for rel in ("d/a.bin", "sub/deep/b.bin", "top.txt"):
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        (dst / rel).write_bytes(b"older")
    real_replace, calls = os.replace, []

    def replace(a: object, b: object, *args: object, **kw: object) -> None:
        if ".ckptlake-pull-" in os.fsdecode(a):  # type: ignore[arg-type]
            calls.append(b)
            if len(calls) == 2:
                if failure == "interrupt":
                    raise KeyboardInterrupt
                code = getattr(errno, failure)
                raise OSError(code, os.strerror(code), a, None, b)
        real_replace(a, b, *args, **kw)  # type: ignore[arg-type]

    with monkeypatch.context() as mp:
        mp.setattr(os, "replace", replace)
        code, errors, output = pull(url, dst, "--force")
    expected = {"EPERM": EXIT_ACCESS, "EXDEV": EXIT_USAGE, "interrupt": EXIT_INTERRUPTED}
    assert code == expected[failure], output
    assert len(errors) == 1 and f"{dst} now holds part of {ART}@v1" in errors[0], output
    assert f"ckptlake pull {ART}@v1 {dst} --force" in errors[0], output
    assert "Traceback" not in output and "internal error" not in output
    assert sorted(snapshot(dst)[r][1] == b"older" for r in  # type: ignore[index]
                  ("d/a.bin", "sub/deep/b.bin", "top.txt")) == [False, True, True]
    assert len(stagings(dst)) == 1  # kept: the rest is in it, verified
    r = CliRunner().invoke(app, ["pull", f"{ART}@v1", str(dst), "--lake", url, "--force",
                                 "--json"])
    assert r.exit_code == EXIT_OK, r.output
    assert json.loads(r.stdout)["bytes_downloaded"] == 0
    expect_version(dst, kept={})


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


def test_force_gives_a_hard_linked_file_its_own_mode(xurl: str, tmp_path: Path) -> None:
    """A `cp -al` snapshot shares the file's inode: chmod in place made the snapshot's copy
    executable too.  Now the destination gets its own copy with the version's bit."""
    o = tmp_path / "o"
    assert xpull(xurl, "pl/x@v2", o)[0] == EXIT_OK
    snap = tmp_path / "snap.sh"
    os.link(o / "run.sh", snap)
    code, errors, output = xpull(xurl, "pl/x@v1", o, "--force")
    assert code == EXIT_OK, output
    assert executable(o / "run.sh") and not executable(snap)
    assert snap.read_bytes() == (o / "run.sh").read_bytes() == b"#!/bin/sh\n"
    assert (o / "run.sh").stat().st_nlink == 1 and snap.stat().st_nlink == 1
    assert stagings(o) == []


def test_single_file_into_dest_with_trailing_slash(tmp_path: Path, monkeypatch) -> None:
    """`pull ART nd/` of a single-file version puts the file into a directory nd (made if
    missing), as cp and `aws s3 cp` do; the CLI's Path argument used to drop the "/" and
    write a file named nd.  An empty DEST is refused instead of merging into the cwd."""
    url = (tmp_path / "lake").as_uri()
    src = tmp_path / "weights.bin"
    src.write_bytes(b"single file")
    runner = CliRunner()
    assert runner.invoke(app, ["--lake", url, "push", str(src), "one/file"]).exit_code == EXIT_OK
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    r = runner.invoke(app, ["--lake", url, "pull", "one/file", "nd/"])
    assert r.exit_code == EXIT_OK, r.output
    assert (work / "nd").is_dir() and (work / "nd" / "weights.bin").read_bytes() == b"single file"
    r = runner.invoke(app, ["--lake", url, "pull", "one/file", "a/b/"])
    assert r.exit_code == EXIT_OK and (work / "a" / "b" / "weights.bin").is_file()
    before = sorted(os.listdir(work))
    r = runner.invoke(app, ["--lake", url, "pull", "one/file", ""])
    assert r.exit_code == 2 and "destination is empty" in r.output
    assert sorted(os.listdir(work)) == before
    with pytest.raises(ckptlake.UsageError):
        ckptlake.open(url).pull("one/file", "")
