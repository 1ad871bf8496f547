"""What CI scripts reading `--json` met: an empty SOURCE pushed (and aliased) without a word,
`rm --dry-run` saying "deleted_by": "" beside "deleted_at": null, and a push whose alias
failed after the commit naming the committed version only inside its message."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.core import catalog
from ckptlake.errors import EXIT_USAGE, UsageError


def cli(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def _lake(tmp_path: Path) -> str:
    return f"file://{tmp_path / 'lake'}"


def _no_files(warnings: list[str]) -> list[str]:
    """The empty-version warnings (a push that creates the lake says so too)."""
    return [w for w in warnings if "no files" in w]


# ---- 1. an empty version is pushed with a warning ---------------------------------------------

def test_push_of_an_empty_source_warns_in_the_json_document_and_on_stderr(
        tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    r = cli("push", empty, "ci/x", "--alias", "candidate", "--json", "--lake", _lake(tmp_path))
    assert r.exit_code == 0, (r.stdout, r.stderr)  # not refused: it can be deliberate
    doc = json.loads(r.stdout)
    assert doc["files"] == 0 and doc["aliases"] == ["candidate"]
    assert _no_files(doc["warnings"]) == [
        f"ci/x@v1 has no files: the push source {empty} is an empty directory (--alias "
        "candidate names it)"]
    r = cli("push", empty, "ci/x", "--lake", _lake(tmp_path))
    assert r.exit_code == 0, r.stderr
    assert f"ckptlake: warning: ci/x@v2 has no files: the push source {empty} is an empty " \
           "directory" in r.stderr
    (empty / "sub").mkdir()
    r = cli("push", empty, "ci/x", "--dry-run", "--json", "--lake", _lake(tmp_path))
    assert r.exit_code == 0, r.stderr
    assert _no_files(json.loads(r.stdout)["warnings"]) == [
        f"ci/x@v3 would have no files: the push source {empty} holds only empty directories"]


def test_push_whose_every_file_matched_exclude_says_so(tmp_path: Path) -> None:
    src = tmp_path / "build"
    (src / "logs").mkdir(parents=True)
    (src / "logs" / "run.log").write_bytes(b"x" * 100)
    (src / "notes.txt").write_bytes(b"y")
    why = f"every file of the push source {src} matched --exclude"
    for extra in (("--dry-run",), ()):
        r = cli("push", src, "ci/x", "--exclude", "logs/", "--exclude", "*.txt", "--json",
                "--lake", _lake(tmp_path), *extra)
        assert r.exit_code == 0, (r.stdout, r.stderr)
        doc = json.loads(r.stdout)
        verb = "would have" if extra else "has"
        assert doc["files"] == 0
        assert _no_files(doc["warnings"]) == [f"ci/x@v1 {verb} no files: {why}"]


def test_library_push_warns_of_an_empty_version_only(tmp_path: Path) -> None:
    empty, full = tmp_path / "empty", tmp_path / "full"
    empty.mkdir()
    full.mkdir()
    (full / "w.bin").write_bytes(os.urandom(1000))
    with ckptlake.open(_lake(tmp_path)) as lake:
        for dry_run in (True, False):
            r = lake.push(empty, "lib/x", dry_run=dry_run)
            assert _no_files(r.warnings) == [
                f"lib/x@v1 {'would have' if dry_run else 'has'} no files: the push source "
                f"{empty} is an empty directory"]
            assert not _no_files(lake.push(full, "lib/y", dry_run=dry_run).warnings)
        # a rank of a sharded save may rightly hold nothing
        shard = lake.push_shard(empty, "lib/s", step=1, rank=0, world=2)
        assert not _no_files(shard.warnings)


# ---- 2. rm --dry-run: deleted_by null, as deleted_at ------------------------------------------

def test_rm_dry_run_json_says_null_deleter(tmp_path: Path) -> None:
    src = tmp_path / "s"
    src.mkdir()
    url = _lake(tmp_path)
    with ckptlake.open(url) as lake:
        for _ in range(2):
            (src / "w.bin").write_bytes(os.urandom(1000))
            lake.push(src, "a/b")
    for args in (("a/b@v1",), ("a/b", "--all")):
        r = cli("rm", *args, "--dry-run", "--json", "--lake", url)
        assert r.exit_code == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["dry_run"] is True
        assert (doc["deleted_at"], doc["deleted_by"]) == (None, None), args
    with ckptlake.open(url) as lake:
        done = lake.delete("a/b@v1")
        assert done.deleted and done.deleted_by and done.deleted_at is not None


# ---- 3. the committed version's error document names it --------------------------------------

def test_alias_failed_after_commit_error_document_names_the_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = catalog.set_alias

    def set_alias(store: Any, artifact: str, alias: str, version: int) -> Any:
        if alias == "best":
            raise UsageError("alias best is reserved")
        return real(store, artifact, alias, version)

    monkeypatch.setattr(catalog, "set_alias", set_alias)
    src = tmp_path / "s"
    src.mkdir()
    (src / "w.bin").write_bytes(os.urandom(1000))
    url = _lake(tmp_path)
    r = cli("push", src, "a/b", "--alias", "best", "--json", "--lake", url)
    assert r.exit_code == EXIT_USAGE, (r.stdout, r.stderr)
    error = json.loads(r.stdout)["error"]
    assert list(error)[:3] == ["type", "message", "exit_code"]
    assert (error["type"], error["exit_code"]) == ("UsageError", EXIT_USAGE)
    assert "a/b@v1 is committed, but alias best could not be set" in error["message"]
    assert (error["artifact"], error["version"]) == ("a/b", 1)
    # any other error keeps the three members
    r = cli("pull", "a/nope", tmp_path / "d", "--json", "--lake", url)
    assert r.exit_code == 3
    assert set(json.loads(r.stdout)["error"]) == {"type", "message", "exit_code"}
