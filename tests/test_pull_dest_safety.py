"""What a pull must never write over: the local lake it reads (`pull --force` into the lake
replaced its header with a version's `ckptlake.json`), and FIFOs, sockets and device nodes
(`pull ART /dev/null --force` as root replaced /dev/null with a file)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ckptlake.cli.app import app
from ckptlake.errors import EXIT_CONFLICT, EXIT_OK, EXIT_USAGE


def cli(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def _lake_files(lake: Path) -> dict[str, bytes]:
    return {str(p.relative_to(lake)): p.read_bytes() for p in lake.rglob("*") if p.is_file()}


def test_pull_never_writes_into_the_lake_it_reads(tmp_path: Path) -> None:
    evil = tmp_path / "evil"
    (evil / "lake").mkdir(parents=True)
    (evil / "ckptlake.json").write_text('{"not": "a header"}')
    (evil / "lake" / "ckptlake.json").write_text('{"not": "a header"}')
    lake = tmp_path / "proj" / "lake"
    url = f"file://{lake}"
    assert cli("push", evil, "x/evil", "--lake", url).exit_code == EXIT_OK
    before = _lake_files(lake)
    for dest in (lake, lake / "sub", tmp_path / "proj"):  # the lake, inside it, its parent
        r = cli("pull", "x/evil", dest, "--lake", url, "--force")
        assert r.exit_code == EXIT_USAGE, (dest, r.stdout, r.stderr)
        assert "the lake's own files" in r.stderr
        assert _lake_files(lake) == before
    # the lake's parent is fine for a version with nothing at the lake's place
    (evil / "lake" / "ckptlake.json").unlink()
    (evil / "lake").rmdir()
    assert cli("push", evil, "x/ok", "--lake", url).exit_code == EXIT_OK
    before = _lake_files(lake)
    r = cli("pull", "x/ok", tmp_path / "proj", "--lake", url)
    assert r.exit_code == EXIT_OK, r.stderr
    assert (tmp_path / "proj" / "ckptlake.json").read_text() == '{"not": "a header"}'
    assert _lake_files(lake) == before


def test_force_never_replaces_a_fifo(tmp_path: Path) -> None:
    src = tmp_path / "w.bin"
    src.write_bytes(os.urandom(100))
    url = f"file://{tmp_path / 'lake'}"
    assert cli("push", src, "x/one", "--lake", url).exit_code == EXIT_OK
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "d").mkdir()
    os.mkfifo(tmp_path / "d" / "w.bin")
    for dest in (fifo, tmp_path / "d"):
        r = cli("pull", "x/one", dest, "--lake", url, "--force")
        assert r.exit_code == EXIT_CONFLICT, (r.stdout, r.stderr)
        assert "not a regular file" in r.stderr
    assert fifo.is_fifo() and (tmp_path / "d" / "w.bin").is_fifo()


def test_pull_never_writes_into_the_lake_through_a_symlink_in_dest(tmp_path: Path) -> None:
    """DEST/sub -> the lake: the version's sub/ckptlake.json replaced the lake's header."""
    evil = tmp_path / "evil"
    (evil / "sub").mkdir(parents=True)
    (evil / "sub" / "ckptlake.json").write_text('{"evil": 1}')
    lake = tmp_path / "d" / "thelake"
    url = f"file://{lake}"
    assert cli("push", evil, "x/w", "--lake", url).exit_code == EXIT_OK
    before = _lake_files(lake)
    (tmp_path / "d" / "sub").symlink_to("thelake")
    r = cli("pull", "x/w", tmp_path / "d", "--lake", url, "--force")
    assert r.exit_code == EXIT_USAGE, (r.stdout, r.stderr)
    assert "inside the lake" in r.stderr
    assert _lake_files(lake) == before


def test_force_never_replaces_a_fifo_where_the_version_has_a_directory(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "ctl").mkdir(parents=True)
    (src / "ctl" / "f.bin").write_bytes(b"x" * 10)
    url = f"file://{tmp_path / 'lake'}"
    assert cli("push", src, "x/d", "--lake", url).exit_code == EXIT_OK
    dest = tmp_path / "dest"
    dest.mkdir()
    os.mkfifo(dest / "ctl")
    r = cli("pull", "x/d", dest, "--lake", url, "--force")
    assert r.exit_code == EXIT_CONFLICT, (r.stdout, r.stderr)
    assert "not a regular file" in r.stderr and (dest / "ctl").is_fifo()


def test_a_failing_syncfs_is_one_line_and_places_nothing(tmp_path: Path,
                                                        monkeypatch: Any) -> None:
    """syncfs failing with EIO: the bytes may not be on the disk; a second pull in a process
    raised UnboundLocalError (ctypes imported inside the function)."""
    import errno as errno_mod

    from ckptlake.core import pull as pull_mod

    src = tmp_path / "w.bin"
    src.write_bytes(os.urandom(100))
    url = f"file://{tmp_path / 'lake'}"
    assert cli("push", src, "x/one", "--lake", url).exit_code == EXIT_OK
    assert cli("pull", "x/one", tmp_path / "o1", "--lake", url).exit_code == EXIT_OK

    def failing(fd: int) -> int:
        import ctypes

        ctypes.set_errno(errno_mod.EIO)
        return -1

    monkeypatch.setattr(pull_mod, "_syncfs", failing)
    r = cli("pull", "x/one", tmp_path / "o2", "--lake", url)
    assert r.exit_code == 5 and "could not flush the pulled files" in r.stderr, r.stderr
    assert not (tmp_path / "o2").exists()


def _kept_staging(tmp_path: Path, artifact: str) -> tuple[Path, str, Path, str]:
    """`artifact`@v1 (one file, w.bin) in a local lake, and the empty staging directory an
    interrupted pull of it into tmp_path/dest would have kept: (source, lake URL, dest, it)."""
    import ckptlake
    from ckptlake.core.catalog import load_manifest
    from ckptlake.core.pull import staging_dir

    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(os.urandom(50_000))
    url = f"file://{tmp_path / 'lake'}"
    assert cli("push", src, artifact, "--lake", url).exit_code == EXIT_OK
    dest = tmp_path / "dest"
    with ckptlake.open(url) as lake:
        stage = staging_dir(str(dest), lake.url, load_manifest(lake.store, artifact, 1))
    os.mkdir(stage, 0o700)
    return src, url, dest, stage


@pytest.mark.parametrize("entry", [".lock", "journal", "data", "links", "modes", "data/sub"])
def test_a_symlink_in_a_kept_staging_directory_is_refused(tmp_path: Path, entry: str) -> None:
    """The staging directory an interrupted pull keeps is reused by the next pull of the same
    version.  A symlink in it had the journal appended wherever it led (a file outside the
    destination), staged files written through a linked directory below data (a file outside
    overwritten), a resumed placement unlink a file outside (links, modes), and the lock's
    made the pull an internal error.  Now: where no pull makes a symlink, exit 6, a one-line
    error saying to remove it, nothing written through the link, nothing placed; below data,
    where a pull makes the version's own just before its last rename, the link is removed,
    never followed, and the pull goes on."""
    src, url, dest, stage = _kept_staging(tmp_path, "t/a")
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "precious").write_bytes(b"precious")
    os.makedirs(os.path.dirname(os.path.join(stage, entry)), exist_ok=True)
    os.symlink(target, os.path.join(stage, entry))
    r = cli("pull", "t/a", dest, "--lake", url)
    if entry == "data/sub":
        assert r.exit_code == EXIT_OK, r.output
        assert os.listdir(target) == ["precious"]
        assert (target / "precious").read_bytes() == b"precious"
        assert (dest / "w.bin").read_bytes() == (src / "w.bin").read_bytes()
        assert not (dest / "sub").exists()
        return
    assert r.exit_code == EXIT_CONFLICT, r.output
    assert f"{entry} in it is a symlink" in r.stderr and "rm -rf" in r.stderr
    assert "internal error" not in r.stderr and "Traceback" not in r.output
    assert os.listdir(target) == ["precious"] and not dest.exists()
    assert (target / "precious").read_bytes() == b"precious"
    os.unlink(os.path.join(stage, entry))  # as the message says: then the pull goes through
    assert cli("pull", "t/a", dest, "--lake", url).exit_code == EXIT_OK
    assert (dest / "w.bin").read_bytes() == (src / "w.bin").read_bytes()


def test_a_pull_interrupted_before_its_last_rename_resumes(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A pull makes the version's symlinks in its staging directory just before the rename
    that places it; interrupted there (Ctrl-C, or DEST appearing meanwhile), the next pull must
    resume from the staged bytes, not refuse the symlinks as planted."""
    import ckptlake
    from ckptlake.errors import Conflict

    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "a.bin").write_bytes(os.urandom(50_000))
    (src / "run.sh").write_bytes(b"#!/bin/sh\n")
    os.chmod(src / "run.sh", 0o755)
    os.symlink("a.bin", src / "lnk")
    os.symlink("../a.bin", src / "sub" / "l2")
    url = f"file://{tmp_path / 'lake'}"
    dest = tmp_path / "dest"
    with ckptlake.open(url) as lake:
        lake.push(src, "t/links")
        real = os.rename

        def appears(a: Any, b: Any, *args: Any, **kw: Any) -> Any:
            if os.fspath(b) == str(dest):
                dest.mkdir()  # DEST appears right before the placing rename
                (dest / "x").write_bytes(b"x")
            return real(a, b, *args, **kw)

        monkeypatch.setattr(os, "rename", appears)
        with pytest.raises(Conflict, match="appeared while the version was being pulled"):
            lake.pull("t/links", dest)
        monkeypatch.setattr(os, "rename", real)
        staged = [p for p in tmp_path.iterdir() if ".ckptlake-pull-" in p.name]
        assert len(staged) == 1 and os.path.islink(staged[0] / "data" / "lnk")  # kept
        (dest / "x").unlink()
        dest.rmdir()
        done = lake.pull("t/links", dest)
    assert done.bytes_downloaded == 0  # resumed from the staged bytes
    assert sorted(os.listdir(dest)) == ["a.bin", "empty", "lnk", "run.sh", "sub"]
    assert os.readlink(dest / "lnk") == "a.bin" and os.readlink(dest / "sub" / "l2") == "../a.bin"
    assert os.access(dest / "run.sh", os.X_OK)


@pytest.mark.parametrize("kind", ["directory", "fifo"])
def test_a_lock_that_is_no_file_in_a_kept_staging_directory_is_refused(tmp_path: Path,
                                                                       kind: str) -> None:
    """A `.lock` that is a directory was an internal error (IsADirectoryError), and a FIFO was
    taken for the lock: both are refused as what no pull makes (exit 6)."""
    _, url, dest, stage = _kept_staging(tmp_path, "t/l")
    lock = os.path.join(stage, ".lock")
    os.mkdir(lock) if kind == "directory" else os.mkfifo(lock)
    r = cli("pull", "t/l", dest, "--lake", url)
    assert r.exit_code == EXIT_CONFLICT, r.output
    assert ".lock in it is of the wrong type" in r.stderr and "internal error" not in r.stderr
    assert not dest.exists()


@pytest.mark.parametrize("kind", ["dir", "file"])
def test_a_failed_pull_leaves_no_parents_it_made(tmp_path: Path, kind: str) -> None:
    """A pull that fails with nothing to resume (a chunk missing: exit 5) removed DEST but left
    the parents it had made for it; parents that were there before stay, and so does a parent
    that holds something else by then."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("hello")
    url = f"file://{tmp_path / 'lake'}"
    assert cli("push", src if kind == "dir" else src / "a.txt", "art", "--lake", url
               ).exit_code == EXIT_OK
    for chunk in (tmp_path / "lake" / "chunks").rglob("*"):
        if chunk.is_file():
            chunk.unlink()
    (tmp_path / "out").mkdir()
    r = cli("pull", "art", tmp_path / "out" / "x" / "y" / "z", "--lake", url)
    assert r.exit_code == 5, r.stderr
    assert os.listdir(tmp_path / "out") == []
    (tmp_path / "out" / "x").mkdir()
    (tmp_path / "out" / "x" / "keep").write_text("mine")
    r = cli("pull", "art", tmp_path / "out" / "x" / "y" / "z", "--lake", url)
    assert r.exit_code == 5, r.stderr
    assert os.listdir(tmp_path / "out" / "x") == ["keep"]


def test_a_failed_pull_removing_a_parent_does_not_fail_a_concurrent_pull(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pull A (a chunk missing) makes DEST's parent `p`; pull B into `p/other` finds `p`
    there; A fails and removes `p` before B's staging is in it: B failed, exit 2 ("cannot
    write to p"), until it made `p` again."""
    import threading

    import ckptlake
    from ckptlake.core import pull as pull_mod

    url = f"file://{tmp_path / 'lake'}"
    lake = ckptlake.open(url)
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "a.txt").write_text("good")
    lake.push(tmp_path / "good", "good/x")
    (tmp_path / "bad.bin").write_bytes(os.urandom(5000))
    lake.push(tmp_path / "bad.bin", "bad/x")
    for chunk in (tmp_path / "lake" / "chunks").rglob("*"):
        if chunk.is_file() and chunk.stat().st_size == 5000:
            chunk.unlink()
    b_there, a_done = threading.Event(), threading.Event()
    real = pull_mod._Staging.__init__

    def staging(self: Any, *a: Any, **k: Any) -> None:
        name = threading.current_thread().name
        if name == "A":
            b_there.wait(10)
        elif name == "B" and not b_there.is_set():
            b_there.set()
            a_done.wait(10)
        real(self, *a, **k)

    monkeypatch.setattr(pull_mod._Staging, "__init__", staging)
    got: dict[str, Any] = {}

    def pull(name: str, art: str, dest: Path) -> None:
        try:
            got[name] = ckptlake.open(url).pull(art, dest).version
        except Exception as exc:  # noqa: BLE001 - reported below
            got[name] = f"{type(exc).__name__}: {exc}"
        if name == "A":
            a_done.set()

    a = threading.Thread(target=pull, args=("A", "bad/x", tmp_path / "p" / "destA"), name="A")
    a.start()
    for _ in range(1000):  # A made `p` and waits for B in its staging
        if (tmp_path / "p").is_dir():
            break
        threading.Event().wait(0.01)
    b = threading.Thread(target=pull, args=("B", "good/x", tmp_path / "p" / "destB"), name="B")
    b.start()
    a.join(30)
    b.join(30)
    assert "MissingChunk" in str(got["A"]) or "missing" in str(got["A"]), got
    assert got["B"] == 1, got
    assert (tmp_path / "p" / "destB" / "a.txt").read_text() == "good"


def test_a_version_path_past_path_max_is_named_as_such(tmp_path: Path) -> None:
    """A 4,065-byte path (allowed: under 4,096) pushed fine; its pull failed with "cannot
    write /tmp: File name too long (pull into a directory with a shorter path)", and pulled
    into `/x` the error named `/`.  It now says which length passed the limit."""
    src = tmp_path / "src"
    src.mkdir()
    # a path that fits below SOURCE (the push reads it) and not below DEST's staging
    left = 4095 - len(os.fsencode(str(src))) - 1 - 8
    fd = os.open(src, os.O_RDONLY)
    try:
        i = 0
        while left > 255:
            name = f"d{i:02d}" + "x" * 250
            os.mkdir(name, dir_fd=fd)
            sub = os.open(name, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd, left, i = sub, left - len(name) - 1, i + 1
        f = os.open("f" * left, os.O_CREAT | os.O_WRONLY, dir_fd=fd)
        os.write(f, b"hi")
        os.close(f)
    finally:
        os.close(fd)
    url = f"file://{tmp_path / 'lake'}"
    assert cli("push", src, "long/a", "--lake", url).exit_code == EXIT_OK
    r = cli("pull", "long/a", tmp_path / "out", "--lake", url)
    assert r.exit_code == EXIT_USAGE, r.output
    assert "bytes long while staged, past the system's limit of 4095" in r.stderr, r.stderr
    assert "ckptlake cat" in r.stderr
