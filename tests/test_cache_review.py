"""The chunk cache deletes only what it names, from a review: `cache prune --dir` on a project
directory deleted its files at any depth (and the dry run said 0), and a cache set to a local
lake's directory deleted the lake's chunks (verify: versions lost)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.core.cache import ChunkCache
from ckptlake.errors import UsageError

NO_ENV = {"CKPTLAKE_CACHE": "", "CKPTLAKE_CONFIG": ""}


def files_under(root: Path) -> dict[str, bytes]:
    """Every file but the eviction lock a prune takes (`.lock`, empty)."""
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


def test_prune_of_a_directory_that_is_no_cache_deletes_nothing(tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    for rel, data in {"chunks/part1/sub/notes.txt": b"important", "chunks/data.bin": b"d",
                      "chunks/corpus/a.txt": b"x", "chunks/part1/ab/readme": b"r",
                      "chunks/sha256/docs/readme.txt": b"a hash's name, not a fan's",
                      "chunks/my-data/ab/abcdef01": b"hex under a name no hash has",
                      "chunks/ab/" + "ab" * 32: b"a lake-shaped chunk",
                      "tmp/notes.txt": b"old notes"}.items():
        (proj / rel).parent.mkdir(parents=True, exist_ok=True)
        (proj / rel).write_bytes(data)
    os.utime(proj / "tmp" / "notes.txt", (1, 1))  # older than any temporary file lives
    (proj / "chunks" / "sha256" / "docs2").symlink_to(tmp_path)  # not a fan name: left alone
    before = files_under(proj)
    for extra in (["--dry-run"], [], ["--all"]):
        r = CliRunner().invoke(app, ["cache", "prune", "--dir", str(proj), "--json", *extra],
                               env=NO_ENV)
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["entries_removed"] == 0
    assert files_under(proj) == before
    assert (proj / "chunks" / "sha256" / "docs2").is_symlink()


def test_what_the_cache_names_is_still_pruned(tmp_path: Path) -> None:
    """Entries, a directory in an entry's place, a link in a fan directory's place."""
    from ckptlake.format.header import digest

    c = ChunkCache(tmp_path / "c", 10 << 20)
    data = os.urandom(1000)
    name = digest("sha256", data)
    c.put("sha256", name, data)
    fan = tmp_path / "c" / "chunks" / "sha256" / name[:2]
    other = "ee" + name[2:]
    (fan.parent / "ee").mkdir()
    (fan.parent / "ee" / other).mkdir()  # a directory named as an entry
    (fan.parent / "ff").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "keep.txt").write_text("kept")
    r = CliRunner().invoke(app, ["cache", "prune", "--all", "--dir", str(tmp_path / "c"),
                                 "--json"], env=NO_ENV)
    assert r.exit_code == 0 and json.loads(r.stdout)["entries_removed"] == 1, r.output
    assert not (fan / name).exists() and not (fan.parent / "ee" / other).exists()
    assert not os.path.lexists(fan.parent / "ff")
    assert (tmp_path / "elsewhere" / "keep.txt").read_text() == "kept"


@pytest.mark.parametrize("where", ["lake", "lake/cache"])
def test_a_cache_in_a_local_lake_is_refused_and_the_lake_keeps_its_chunks(
        tmp_path: Path, where: str) -> None:
    lake_dir = tmp_path / "lake"
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(100_000))
    with ckptlake.open(lake_dir.as_uri()) as lake:
        lake.push(src, "a/b")
    cache = tmp_path / where
    env = {"CKPTLAKE_CACHE": str(cache), "CKPTLAKE_CONFIG": ""}
    r = CliRunner().invoke(app, ["pull", "a/b", str(tmp_path / "out"), "--lake",
                                 lake_dir.as_uri()], env=env)
    assert r.exit_code == 2 and "a local lake" in r.output, r.output
    for args in ([["cache", "prune", "--all", "--dir", str(cache)]] if cache.is_dir() else []) \
            + [["cache", "prune", "--all"], ["cache", "ls"]]:
        r = CliRunner().invoke(app, args, env=env)
        assert r.exit_code == 2 and "local lake" in r.output, (args, r.output)
    r = CliRunner().invoke(app, ["verify", "--lake", lake_dir.as_uri()], env=NO_ENV)
    assert r.exit_code == 0, r.output
    with pytest.raises(UsageError, match="give the cache a directory of its own"):
        ChunkCache(cache)


def test_a_trim_never_follows_a_tmp_link_and_deletes_only_its_own_temporaries(
        tmp_path: Path) -> None:
    """A `tmp -> elsewhere` link in a shared cache: every trimming pull deleted the old files
    of the directory it led to (review of the fix above)."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "data.csv").write_text("keep me")
    (victim / "0123456789abcdef.12.34").write_text("named like a temporary, still not ours")
    for p in victim.iterdir():
        os.utime(p, (1, 1))
    c1 = tmp_path / "c1"
    (c1 / "chunks" / "sha256").mkdir(parents=True)  # a cache (a trim skips a directory that is none)
    (c1 / "tmp").symlink_to(victim, target_is_directory=True)
    ChunkCache(c1, 1 << 20).trim(0)
    assert (victim / "data.csv").read_text() == "keep me" and (c1 / "tmp").is_symlink()
    assert (victim / "0123456789abcdef.12.34").exists()
    c2 = tmp_path / "c2"
    (c2 / "tmp").mkdir(parents=True)
    (c2 / "chunks" / "blake3").mkdir(parents=True)
    dead, other = c2 / "tmp" / ("0123456789abcdef.12.34"), c2 / "tmp" / "notes.txt"
    for p in (dead, other):
        p.write_bytes(b"x")
        os.utime(p, (1, 1))
    ChunkCache(c2, 1 << 20).trim(0)
    assert not dead.exists() and other.exists()


def test_a_file_named_like_a_lake_header_that_is_none_does_not_refuse_the_cache(
        tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "ckptlake.json").write_text('{"note": "saved --json output"}')
    (proj / "ckptlake-replica.json").write_text("[]")
    assert ChunkCache(proj / ".cache").dir == str(proj / ".cache")


def test_a_cache_reached_through_a_link_into_a_lake_is_refused(tmp_path: Path) -> None:
    lake_dir = tmp_path / "lake"
    src = tmp_path / "f"
    src.write_bytes(b"x")
    with ckptlake.open(lake_dir.as_uri()) as lake:
        lake.push(src, "a/b")
    link = tmp_path / "clink"
    link.symlink_to(lake_dir / "artifacts", target_is_directory=True)
    with pytest.raises(UsageError, match="local lake"):
        ChunkCache(link)


def test_a_fifo_named_like_a_lake_header_in_an_ancestor_does_not_hang(tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    os.mkfifo(proj / "ckptlake.json")
    assert ChunkCache(proj / ".cache").dir == str(proj / ".cache")  # no hang, no refusal


def test_a_replica_marker_in_an_ancestor_refuses_the_cache(tmp_path: Path) -> None:
    rep = tmp_path / "rep"
    rep.mkdir()
    (rep / "ckptlake-replica.json").write_text('{"format": 1, "origin": "file:///x"}')
    with pytest.raises(UsageError, match="local lake \\(or a replica\\)"):
        ChunkCache(rep / "c")


def test_prune_or_ls_of_a_directory_with_no_cache_in_it_is_refused_and_writes_nothing(
        tmp_path: Path) -> None:
    """`cache prune --dir ~/work` (a typo) said "deleted 0 chunks", exit 0, and left a
    `.lock` there; now a directory that holds none of a cache's names is exit 3, untouched.
    An empty directory is an empty cache (one configured and never filled)."""
    work = tmp_path / "work"
    (work / "src").mkdir(parents=True)
    (work / "tmp").mkdir()  # a project's own tmp/ and versions/ make no cache (a review)
    (work / "versions").mkdir()
    (work / "train.py").write_text("print()\n")
    before = sorted(p.relative_to(work).as_posix() for p in work.rglob("*"))
    for args in (["prune"], ["prune", "--all"], ["prune", "--dry-run"], ["ls"]):
        r = CliRunner().invoke(app, ["cache", *args, "--dir", str(work)], env=NO_ENV)
        assert r.exit_code == 3, (args, r.output)
        assert f"{work} holds no chunk cache" in r.output
    assert sorted(p.relative_to(work).as_posix() for p in work.rglob("*")) == before
    # the library's trim of a directory with none of a cache's names takes no lock either
    shutil.rmtree(work / "tmp")
    shutil.rmtree(work / "versions")
    assert ChunkCache(str(work), 1).trim(0).entries_removed == 0
    assert not (work / ".lock").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    r = CliRunner().invoke(app, ["cache", "prune", "--dir", str(empty)], env=NO_ENV)
    assert r.exit_code == 0 and "deleted 0 chunks" in r.output, r.output
