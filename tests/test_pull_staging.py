"""Where a pull stages, and what the file system may refuse.

A destination that is a mount point (a docker volume, an NVMe mount) used to fail every pull
with exit 1 (EXDEV: the staging directory was beside it, on the parent's file system, and a
rename cannot cross file systems), leaving the whole version beside it.  Now a pull into an
existing directory stages inside it, under a hidden name: a rename never leaves that directory's
file system.  A file system that still refuses (a mount below the destination) is a usage error
found before anything is downloaded.  Read-only directories and long (legal) names are typed
errors or work, never exit 1.

Mounts are simulated: renames across a chosen directory's boundary fail with EXDEV, as
rename(2) fails across mount points (also bind mounts of one file system).
"""
from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any, Iterator

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.core import pull as pull_mod
from ckptlake.errors import EXIT_ACCESS, EXIT_INTEGRITY, EXIT_OK, EXIT_USAGE

ART = "st/run/ckpt"
MiB = 1024 * 1024


def run(*args: object) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def error_line(result: Any, code: int) -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("ckptlake: ")]
    assert len(errors) == 1 and errors[0].startswith("ckptlake: error: "), result.stderr
    return errors[0]


def pull_json(url: str, ref: str, dest: Path, *extra: object) -> dict[str, Any]:
    r = run("pull", ref, dest, "--lake", url, "--json", *extra)
    assert r.exit_code == EXIT_OK, (r.stdout, r.stderr)
    return json.loads(r.stdout)


def tree(root: Path) -> dict[str, object]:
    """Every entry under root, hidden ones included: kind, and bytes or link target."""
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", p.read_bytes(), os.stat(p).st_mode & 0o777)
    return out


def stagings(*dirs: Path) -> list[str]:
    return [str(d / n) for d in dirs if d.is_dir() for n in os.listdir(d)
            if ".ckptlake-pull-" in n]


@pytest.fixture
def src(tmp_path: Path) -> Path:
    s = tmp_path / "src"
    (s / "sub" / "deep").mkdir(parents=True)
    (s / "model.bin").write_bytes(os.urandom(3 * MiB + 5))  # 4 chunks of 1 MiB
    (s / "sub" / "deep" / "b.txt").write_bytes(b"version b")
    (s / "top.txt").write_bytes(b"version top")
    (s / "emptydir").mkdir()
    os.symlink("sub/deep/b.txt", s / "link")
    return s


@pytest.fixture
def url(tmp_path: Path, src: Path) -> str:
    lake_url = f"file://{tmp_path / 'lake'}"
    with ckptlake.open(lake_url, chunk_size=MiB) as lk:
        lk.push(src, ART)
    return lake_url


def expect_version(dest: Path, src: Path, **kept: object) -> None:
    got = tree(dest)
    for rel, value in tree(src).items():
        assert got.pop(rel) == value, rel
    assert got == kept


@pytest.fixture
def mounts(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Path]]:
    """Directories to treat as mount points: a rename whose two paths are not below the same
    one of them fails with EXDEV, as rename(2) does across mount points."""
    chosen: list[Path] = []
    real_rename, real_replace = os.rename, os.replace

    def mount_of(path: Any) -> str | None:
        p = os.path.abspath(os.fsdecode(path))
        inside = [str(m) for m in chosen if p == str(m) or p.startswith(str(m) + os.sep)]
        return max(inside, key=len, default=None)

    def guarded(real: Any) -> Any:
        def move(a: Any, b: Any, *args: Any, **kw: Any) -> None:
            if mount_of(a) != mount_of(b):
                raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), a, None, b)
            return real(a, b, *args, **kw)
        return move

    monkeypatch.setattr(os, "rename", guarded(real_rename))
    monkeypatch.setattr(os, "replace", guarded(real_replace))
    yield chosen


# ---- a destination that is a mount point ------------------------------------------------------

def test_pull_into_a_mount_point(url: str, src: Path, tmp_path: Path, mounts: list[Path]) -> None:
    """The reported case: exit 1 (EXDEV) and the whole version left beside the mount point."""
    dest = tmp_path / "mnt"
    dest.mkdir()
    mounts.append(dest)
    doc = pull_json(url, ART, dest)
    assert doc["files"] == 4  # three files and a symlink
    expect_version(dest, src)
    assert stagings(tmp_path, dest) == []


def test_merge_and_force_into_a_mount_point(url: str, src: Path, tmp_path: Path,
                                            mounts: list[Path]) -> None:
    dest = tmp_path / "mnt"
    (dest / "sub").mkdir(parents=True)
    (dest / "sub" / "mine.txt").write_bytes(b"not in the version")
    (dest / "top.txt").write_bytes(b"differs")
    mounts.append(dest)
    r = run("pull", ART, dest, "--lake", url)
    assert "destination holds different files" in error_line(r, 6)
    assert stagings(tmp_path, dest) == []
    pull_json(url, ART, dest, "--force")
    expect_version(dest, src, **{"sub/mine.txt": ("file", b"not in the version", 0o644)})
    assert stagings(tmp_path, dest) == []


def test_single_file_version_into_a_mount_point(tmp_path: Path, mounts: list[Path]) -> None:
    f = tmp_path / "model.bin"
    f.write_bytes(os.urandom(MiB + 3))
    lake_url = f"file://{tmp_path / 'lake'}"
    with ckptlake.open(lake_url, chunk_size=MiB) as lk:
        lk.push(f, "st/file")
    dest = tmp_path / "mnt"
    dest.mkdir()
    mounts.append(dest)
    pull_json(lake_url, "st/file", dest)
    pull_json(lake_url, "st/file", dest / "renamed.bin")
    assert (dest / "model.bin").read_bytes() == (dest / "renamed.bin").read_bytes() \
        == f.read_bytes()
    assert stagings(tmp_path, dest) == []


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    real_call = pull_mod._Fetcher.__call__
    calls = []

    def call(self: Any, unit: Any) -> None:
        calls.append(unit)
        if len(calls) > n:
            raise KeyboardInterrupt
        real_call(self, unit)

    monkeypatch.setattr(pull_mod._Fetcher, "__call__", call)


def test_interrupted_pull_into_a_mount_point_resumes(url: str, src: Path, tmp_path: Path,
                                                     mounts: list[Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The staging an interrupted pull leaves is on the mount (hidden in the destination, the
    only place a rename can come from) and the next pull there finds it again."""
    dest = tmp_path / "mnt"
    dest.mkdir()
    mounts.append(dest)
    with ckptlake.open(url, concurrency=1) as lk:
        with monkeypatch.context() as mp:
            _interrupt_after(mp, 2)
            with pytest.raises(KeyboardInterrupt):
                lk.pull(ART, dest)
        assert stagings(tmp_path) == []
        left = stagings(dest)
        assert len(left) == 1 and os.path.basename(left[0]).startswith(".ckptlake-pull-")
        assert [n for n in os.listdir(dest) if not n.startswith(".")] == []  # nothing placed
        assert lk.estimate_pull(ART, dest).bytes_present >= 2 * MiB  # the journal is seen
        r = lk.pull(ART, dest)
    assert r.bytes_resumed >= 2 * MiB
    expect_version(dest, src)
    assert r.warnings == []


def test_a_mount_below_the_destination_is_refused_before_downloading(
        url: str, src: Path, tmp_path: Path, mounts: list[Path]) -> None:
    """Files bound for another file system below the destination cannot be renamed there: said
    before anything is downloaded or moved, not half way through placing (exit 1 before)."""
    dest = tmp_path / "dest"
    (dest / "sub").mkdir(parents=True)
    (dest / "keep.txt").write_bytes(b"mine")
    mounts.append(dest / "sub")
    before = tree(dest)
    line = error_line(run("pull", ART, dest, "--lake", url, "--force"), EXIT_USAGE)
    assert f"{dest / 'sub'}" in line and "another file system" in line, line
    assert tree(dest) == before
    assert stagings(tmp_path, dest) == []


def test_a_version_path_that_is_the_staging_name_is_refused(tmp_path: Path) -> None:
    """Staging inside the destination must never be one of the version's own paths (only a
    crafted version can name it: the name hashes the lake, artifact and version)."""
    from types import SimpleNamespace

    lake_url = f"file://{tmp_path / 'lake'}"
    dest = tmp_path / "dest"
    dest.mkdir()
    planned = pull_mod.staging_dir(str(dest), lake_url, SimpleNamespace(  # type: ignore[arg-type]
        artifact="st/evil", version=1, kind="dir", selection=()))
    s = tmp_path / "src"
    (s / os.path.basename(planned)).mkdir(parents=True)
    (s / os.path.basename(planned) / "journal").write_bytes(b"")
    (s / "a.txt").write_bytes(b"a")
    with ckptlake.open(lake_url) as lk:
        lk.push(s, "st/evil")
    line = error_line(run("pull", "st/evil", dest, "--lake", lake_url), EXIT_INTEGRITY)
    assert "staging" in line, line
    assert list(dest.iterdir()) == []


# ---- read-only directories ------------------------------------------------------------------

@pytest.fixture
def read_only(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Directories to treat as on a read-only file system (EROFS on creating anything there;
    as root, permission bits do not stop a write)."""
    chosen: list[Path] = []
    real_mkdir, real_open = os.mkdir, os.open

    def below(path: Any) -> bool:
        p = os.path.abspath(os.fsdecode(path))
        return any(p.startswith(str(d) + os.sep) for d in chosen)

    def mkdir(path: Any, *args: Any, **kw: Any) -> None:
        if below(path):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
        real_mkdir(path, *args, **kw)

    def open_(path: Any, flags: int, *args: Any, **kw: Any) -> int:
        if below(path) and flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
        return real_open(path, flags, *args, **kw)

    def guarded(real: Any) -> Any:
        def move(a: Any, b: Any, *args: Any, **kw: Any) -> None:
            if below(a) or below(b):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), a, None, b)
            return real(a, b, *args, **kw)
        return move

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "rename", guarded(os.rename))
    monkeypatch.setattr(os, "replace", guarded(os.replace))
    return chosen


def test_read_only_parent_is_access_denied(url: str, tmp_path: Path,
                                           read_only: list[Path]) -> None:
    """exit 1 (OSError EROFS) before; push says exit 4 for the same."""
    rodir = tmp_path / "rodir"
    rodir.mkdir()
    read_only.append(rodir)
    line = error_line(run("pull", ART, rodir / "x", "--lake", url), EXIT_ACCESS)
    assert "Read-only file system" in line and str(rodir) in line, line
    assert ".ckptlake-pull-" not in line  # the user's directory, not an internal name
    assert list(rodir.iterdir()) == []


def test_read_only_destination_is_access_denied(url: str, tmp_path: Path,
                                                read_only: list[Path]) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "keep.txt").write_bytes(b"mine")
    read_only.append(dest)
    line = error_line(run("pull", ART, dest, "--lake", url), EXIT_ACCESS)
    assert "Read-only file system" in line and str(dest) in line, line
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]
    assert stagings(tmp_path) == []


def test_up_to_date_read_only_destination_pulls_without_staging(
        url: str, src: Path, tmp_path: Path, read_only: list[Path]) -> None:
    """A regression: staging was made inside the destination even with nothing to write, so
    an up-to-date read-only destination (a read-only model cache) failed with exit 4."""
    dest = tmp_path / "dest"
    first = pull_json(url, ART, dest)
    read_only.append(dest)
    again = pull_json(url, ART, dest)
    assert again["bytes_downloaded"] == 0 and again["bytes_reused"] == first["bytes_total"]
    assert again["warnings"] == []
    expect_version(dest, src)
    # something to do still needs the staging, and says why it cannot make it
    (dest / "top.txt").unlink()
    line = error_line(run("pull", ART, dest, "--lake", url), EXIT_ACCESS)
    assert "Read-only file system" in line, line


def test_a_version_folder_named_like_a_staging_is_not_offered_for_deletion(
        tmp_path: Path) -> None:
    """`.ckptlake-pull-notes` of the user's own (no `.lock`, as core/scan.py tells) was
    reported as an abandoned staging, with the advice to delete it."""
    s = tmp_path / "src"
    (s / ".ckptlake-pull-notes").mkdir(parents=True)
    (s / ".ckptlake-pull-notes" / "n.txt").write_bytes(b"my notes" * 1000)
    (s / "a.txt").write_bytes(b"a")
    lake_url = f"file://{tmp_path / 'lake'}"
    dest = tmp_path / "dest"
    with ckptlake.open(lake_url) as lk:
        lk.push(s, "st/notes")
        assert lk.pull("st/notes", dest).warnings == []
        assert lk.pull("st/notes", dest).warnings == []
        (dest / "a.txt").unlink()
        assert lk.pull("st/notes", dest).warnings == []
    assert (dest / ".ckptlake-pull-notes" / "n.txt").read_bytes() == b"my notes" * 1000
    assert pull_mod.abandoned_stagings(str(dest)) == []


# ---- names as long as a file system allows ----------------------------------------------------

@pytest.mark.parametrize("name", ["n" * 250, "é" * 127], ids=["250-chars", "254-bytes-utf8"])
def test_destination_name_of_legal_length(url: str, src: Path, tmp_path: Path,
                                          name: str) -> None:
    """exit 1 (ENAMETOOLONG) before: the staging directory's name added 28 characters."""
    dest = tmp_path / name
    doc = pull_json(url, ART, dest)
    assert doc["destination"] == str(dest)
    expect_version(dest, src)
    assert stagings(tmp_path) == []


def test_long_destination_name_resumes_and_is_cleaned_up(url: str, src: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The shortened staging name is found again by a re-run, and one left behind by a pull
    nobody re-ran is still reported."""
    dest = tmp_path / ("n" * 250)
    with ckptlake.open(url, concurrency=1) as lk:
        with monkeypatch.context() as mp:
            _interrupt_after(mp, 2)
            with pytest.raises(KeyboardInterrupt):
                lk.pull(ART, dest)
        left = stagings(tmp_path)
        assert len(left) == 1 and len(os.fsencode(os.path.basename(left[0]))) <= 255
        assert not dest.exists()
        assert lk.estimate_pull(ART, dest).bytes_present >= 2 * MiB
        r = lk.pull(ART, dest)
        assert r.bytes_resumed >= 2 * MiB
        expect_version(dest, src)
        assert stagings(tmp_path) == []
        # an interrupted pull of part of the version (a staging of its own), then a whole
        # pull: the partial one's staging is reported, not deleted
        other = tmp_path / ("m" * 250)
        with monkeypatch.context() as mp:
            _interrupt_after(mp, 1)
            with pytest.raises(KeyboardInterrupt):
                lk.pull(ART, other, paths=["model.bin"])
        r = lk.pull(ART, other)
        assert len(r.warnings) == 1 and "interrupted pulls left" in r.warnings[0]
        assert len(stagings(tmp_path)) == 1


def test_single_file_version_with_a_long_name(tmp_path: Path) -> None:
    f = tmp_path / ("w" * 250)
    f.write_bytes(b"weights")
    lake_url = f"file://{tmp_path / 'lake'}"
    with ckptlake.open(lake_url) as lk:
        lk.push(f, "st/file")
    dest = tmp_path / "out"
    dest.mkdir()
    pull_json(lake_url, "st/file", dest)
    assert (dest / f.name).read_bytes() == b"weights"
    assert stagings(dest) == []


def test_symlink_with_a_long_name_into_an_existing_directory(tmp_path: Path) -> None:
    """A merge pull made each symlink as NAME.link first: exit 2 (File name too long) for a
    link named with more than 250 characters."""
    s = tmp_path / "src"
    s.mkdir()
    (s / "a.txt").write_bytes(b"a")
    os.symlink("a.txt", s / ("l" * 252))
    lake_url = f"file://{tmp_path / 'lake'}"
    with ckptlake.open(lake_url) as lk:
        lk.push(s, "st/links")
    dest = tmp_path / "dest"
    dest.mkdir()
    pull_json(lake_url, "st/links", dest)
    assert os.readlink(dest / ("l" * 252)) == "a.txt"
    assert stagings(tmp_path, dest) == []


def test_a_destination_that_cannot_be_created_is_one_line(url: str, tmp_path: Path) -> None:
    """/proc refuses new entries with ENOENT: that was an internal error (exit 1)."""
    from typer.testing import CliRunner

    from ckptlake.cli.app import app

    for dest, said in (("/proc/nonexist/x", "cannot create /proc/nonexist"),
                       ("/proc/x", "cannot write to /proc")):
        r = CliRunner().invoke(app, ["pull", ART, dest, "--lake", url])
        assert r.exit_code == 2 and said in r.output and "internal" not in r.output, r.output


@pytest.mark.parametrize("new_dest", [False, True], ids=["into-existing", "beside-new"])
def test_a_planted_staging_path_is_never_followed(url: str, src: Path, tmp_path: Path,
                                                  new_dest: bool) -> None:
    """The staging name is predictable; beside a new DEST it may be in a shared directory
    (/tmp).  A symlink planted there made the pull write the version's files where it led: a
    file outside DEST was overwritten with the version's bytes (exit 0)."""
    from typer.testing import CliRunner

    from ckptlake.cli.app import app
    from ckptlake.core import catalog
    from ckptlake.core.pull import final_root, staging_dir

    dest = tmp_path / "dest"
    if not new_dest:
        dest.mkdir()
    outside = tmp_path / "outside"
    (outside / "data").mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"VICTIM")
    os.symlink(victim, outside / "data" / "top.txt")
    with ckptlake.open(url) as lk:
        m = catalog.resolve(lk.store, ART)
        planted = Path(staging_dir(final_root(m, str(dest)), lk.url, m))
    os.symlink(outside, planted)
    r = CliRunner().invoke(app, ["pull", ART, str(dest), "--lake", url])
    assert r.exit_code == 6 and "it is a symlink" in r.output, r.output
    assert victim.read_bytes() == b"VICTIM" and sorted(os.listdir(outside)) == ["data"]
    os.unlink(planted)
    if os.geteuid() == 0:  # (only root can make a directory another user's)
        planted.mkdir()
        os.chown(planted, 12345, 12345)  # a directory another user made there
        r = CliRunner().invoke(app, ["pull", ART, str(dest), "--lake", url])
        assert r.exit_code == 6 and "another user's directory" in r.output, r.output
        planted.rmdir()
    r = CliRunner().invoke(app, ["pull", ART, str(dest), "--lake", url])
    assert r.exit_code == 0, r.output
    expect_version(dest, src)
