"""The chunk cache deletes only what it names, from a review: `cache prune --dir` on a project
directory deleted its files at any depth (and the dry run said 0), and a cache set to a local
lake's directory deleted the lake's chunks (verify: versions lost)."""
from __future__ import annotations

import json
import os
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
                      "chunks/ab/" + "ab" * 32: b"a lake-shaped chunk"}.items():
        (proj / rel).parent.mkdir(parents=True, exist_ok=True)
        (proj / rel).write_bytes(data)
    (proj / "chunks" / "sha256").mkdir()
    (proj / "chunks" / "sha256" / "docs").symlink_to(tmp_path)  # not a fan name: left alone
    before = files_under(proj)
    for extra in (["--dry-run"], [], ["--all"]):
        r = CliRunner().invoke(app, ["cache", "prune", "--dir", str(proj), "--json", *extra],
                               env=NO_ENV)
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["entries_removed"] == 0
    assert files_under(proj) == before
    assert (proj / "chunks" / "sha256" / "docs").is_symlink()


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
