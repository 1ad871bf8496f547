"""A version whose file lies 1,200 directories deep (a manifest may hold one: `lake.writer`
takes any relative path) made pull an internal error (RecursionError, exit 1) in three places
that recursed once per level: the landing check's realpath, os.makedirs, and Python 3.11's
os.walk and shutil.rmtree.  And a tree ~975 deep passed push's first walk but not its second,
failing as "changed while it was being pushed" (exit 6): push now stops past 500 levels, exit 2."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

import ckptlake
from ckptlake.core.fswalk import rmtree, walk
from ckptlake.errors import UsageError
from ckptlake.format import layout

DEEP = "d/" * 1200 + "f"


def _deep_version(lake: ckptlake.Lake, src: Path) -> None:
    """A two-file version (a one-file version is placed as DEST itself), then its second
    file's path rewritten 1,200 directories deep: what another writer may store."""
    src.mkdir()
    (src / "a").write_bytes(b"aa")
    (src / "b").write_bytes(b"deep")
    lake.push(src, "deep/a")
    key = layout.version_key("deep/a", 1)
    doc = json.loads(lake.store.get(key))
    doc["files"][1]["path"] = DEEP
    lake.store.delete([key])
    lake.store.put(key, json.dumps(doc).encode())


def test_a_version_1200_directories_deep_pulls_and_pulls_again(lake_url: str,
                                                               tmp_path: Path) -> None:
    dest = tmp_path / "out"
    try:
        with ckptlake.open(lake_url) as lake:
            _deep_version(lake, tmp_path / "src")
            r = lake.pull("deep/a", dest)
            assert r.files == 2
            assert (dest / DEEP).read_bytes() == b"deep" and (dest / "a").read_bytes() == b"aa"
            # over itself (--force: the destination is walked), and a partial pull
            assert lake.pull("deep/a", dest, force=True).files == 2
            assert lake.pull("deep/a", tmp_path / "part", paths=[DEEP]).files == 1
            assert b"".join(lake.cat("deep/a", DEEP)) == b"deep"
        assert not [n for n in os.listdir(tmp_path) if n.startswith(".")], os.listdir(tmp_path)
        assert not [n for n in os.listdir(dest) if n.startswith(".")], os.listdir(dest)
    finally:  # pytest's own clean-up recurses as deep: a failure must not leave the tree
        for name in os.listdir(tmp_path):
            rmtree(str(tmp_path / name))
    assert not dest.exists()


def test_push_stops_past_500_levels_on_every_walk(tmp_path: Path, local_lake_url: str) -> None:
    """500 levels push; 501 are exit 2, and so from ~300 frames deep (a callback's caller):
    the walk again before the commit answered "changed" (exit 6) near Python's limit."""
    import sys

    ok, deep = tmp_path / "ok", tmp_path / "deep"
    for root, n in ((ok, 500), (deep, 501)):
        leaf = root.joinpath(*["d"] * n)
        leaf.mkdir(parents=True)
        (leaf / "f").write_bytes(b"x")

    def nested(depth: int, fn: Any) -> Any:
        return fn() if depth == 0 else nested(depth - 1, fn)

    with ckptlake.open(local_lake_url) as lake:
        assert nested(300, lambda: lake.push(ok, "deep/ok")).files == 1
        for depth in (0, 300):
            with pytest.raises(UsageError, match=r"nested too deeply to push \(more than 500 "):
                nested(depth, lambda: lake.push(deep, "deep/no"))
    assert sys.getrecursionlimit() == 1000


def test_walk_is_os_walk_without_the_recursion(tmp_path: Path) -> None:
    for rel in ("a/b/c.txt", "a/x.txt", "z/y/w.txt", "top.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(rel)
    (tmp_path / "a" / "link").symlink_to(tmp_path / "z")  # listed, not entered
    assert [(p, sorted(d), sorted(f)) for p, d, f in walk(str(tmp_path))] == \
        [(p, sorted(d), sorted(f)) for p, d, f in os.walk(tmp_path)]
    pruned = []
    for p, d, _ in walk(str(tmp_path)):
        pruned.append(p)
        d[:] = [x for x in d if x != "a"]  # pruned in place, as os.walk allows
    assert str(tmp_path / "a") not in pruned and str(tmp_path / "z" / "y") in pruned
    rmtree(str(tmp_path / "a"))
    assert not (tmp_path / "a").exists() and (tmp_path / "z" / "y" / "w.txt").exists()


def test_a_directory_that_cannot_be_made_fails_the_merge_before_any_file_is_placed(
        tmp_path: Path, local_lake_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pull into an existing DEST made each file's directory as it placed the file: the
    first that could not be made (an immutable `d/`) came after `a.txt` and `big.bin` had
    their final names (a review, with chattr +i)."""
    from ckptlake.core import pull as pull_module

    src = tmp_path / "src"
    for rel in ("a.txt", "big.bin", "d/sub/c.json", "e/f.txt"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(rel.encode() * 100)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "zz").write_text("keep")
    real = pull_module.makedirs

    def makedirs(path: str) -> None:
        if path == str(dest / "d" / "sub"):  # in DEST, not in the staging directory
            raise PermissionError(13, "Operation not permitted", path)
        real(path)

    with ckptlake.open(local_lake_url) as lake:
        lake.push(src, "m/a")
        monkeypatch.setattr(pull_module, "makedirs", makedirs)
        with pytest.raises(ckptlake.CkptlakeError):
            lake.pull("m/a", dest)
        placed = sorted(str(p.relative_to(dest)) for p in dest.rglob("*")
                        if p.is_file() and ".ckptlake-pull" not in str(p))
        assert placed == ["zz"], placed
        monkeypatch.undo()
        assert lake.pull("m/a", dest).files == 4  # the re-run completes it


def test_rmtree_never_follows_a_directory_swapped_for_a_symlink(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A path-based walk listed `b` as a directory, then deleted `b/...` through the symlink
    put in its place meanwhile: the victim's files went (a review, by a simulated race)."""
    from ckptlake.core import fswalk

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("keep")
    top = tmp_path / "top"
    for d in ("a", "b"):
        (top / d).mkdir(parents=True)
        (top / d / "f").write_text(d)
    real = os.listdir
    swapped: list[bool] = []

    def listdir(fd: int) -> list[str]:
        names = real(fd)
        if not swapped and "b" in names:  # the top's listing: b is a directory now...
            swapped.append(True)
            fswalk_rm = top / "b"
            (fswalk_rm / "f").unlink()
            fswalk_rm.rmdir()
            fswalk_rm.symlink_to(victim)  # ...and a link to the victim when it is reached
        return names

    monkeypatch.setattr(fswalk.os, "listdir", listdir)
    rmtree(str(top))
    assert swapped and not top.exists()
    assert (victim / "precious").read_text() == "keep"
    # a file or a symlink given as the top is left alone, as shutil.rmtree's refusal left it
    f = tmp_path / "run.log"
    f.write_text("log")
    (tmp_path / "link").symlink_to(victim)
    rmtree(str(f))
    rmtree(str(tmp_path / "link"))
    assert f.read_text() == "log" and (tmp_path / "link").is_symlink()


def test_a_deep_version_copied_into_a_lake_of_another_hash_is_refused_and_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """That copy pulls into $TMPDIR and pushes again: the push refused the depth, and the
    temporary directory's recursive clean-up then failed (exit 1, the copy left behind)."""
    tmpd = tmp_path / "tmpd"
    tmpd.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(tmpd))
    other = tmp_path / "other-src"
    other.mkdir()
    (other / "x").write_bytes(b"x")
    with ckptlake.open(f"file://{tmp_path / 'a'}") as a, \
            ckptlake.open(f"file://{tmp_path / 'b'}") as b:
        _deep_version(a, tmp_path / "src")
        b.push(other, "seed/x", hash="sha256")
        with pytest.raises(UsageError, match="nested too deeply .* a lake of another chunk hash"):
            a.copy("deep/a", b)
    assert os.listdir(tmpd) == []


def test_rmtree_of_a_deep_tree_under_a_low_descriptor_limit(tmp_path: Path) -> None:
    """One descriptor per level ran out at `ulimit -n` (1024 on most Linux machines, 256 on
    macOS): a 400-level tree was silently left (a review)."""
    import subprocess
    import sys

    deep = tmp_path / "deep"
    script = (
        "import os, resource, sys\n"
        "from ckptlake.core.pull import makedirs\n"
        "from ckptlake.core.fswalk import rmtree\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (64, resource.getrlimit("
        "resource.RLIMIT_NOFILE)[1]))\n"
        f"top = {str(deep)!r}\n"
        "leaf = os.path.join(top, *['d'] * 400)\n"
        "makedirs(leaf)\n"
        "open(os.path.join(leaf, 'f'), 'w').write('x')\n"
        "os.makedirs(os.path.join(top, 'side', 'x'))\n"
        "rmtree(top)\n"
        "sys.exit(1 if os.path.exists(top) else 0)\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=120)
    if deep.exists():
        rmtree(str(deep))
    assert r.returncode == 0, r.stderr


def test_rmtree_goes_on_past_a_directory_it_cannot_search(tmp_path: Path) -> None:
    """`..` from a directory without search permission fails: the whole rest of the tree was
    left (a review, as a non-root user).  Root searches anything, so the failure is made."""
    from ckptlake.core import fswalk

    top = tmp_path / "t"
    for i in range(4):
        (top / f"s{i}" / "x").mkdir(parents=True)
        (top / f"s{i}" / "x" / "f").write_text("f")
    real = os.open

    def open_(path: Any, flags: int, *a: Any, **kw: Any) -> int:
        if path == ".." and kw.get("dir_fd") is not None:
            raise PermissionError(13, "Permission denied")
        return real(path, flags, *a, **kw)

    import pytest as _pytest
    with _pytest.MonkeyPatch.context() as mp:
        mp.setattr(fswalk.os, "open", open_)
        rmtree(str(top))
    assert not top.exists(), sorted(str(p) for p in top.rglob("*"))
