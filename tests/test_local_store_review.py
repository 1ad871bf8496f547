"""The file:// lake's own guarantees, each check pinned by a test that fails without it: what
killed writers leave is collected by gc, new directories are durable, and nothing outside the
lake (symlinks, fifos, '..') is ever listed, written or removed."""
from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ckptlake.cli.app import app
from ckptlake.errors import AccessDenied, NotFound, PreconditionFailed, TransferError, UsageError
from ckptlake.format import layout
from ckptlake.store.local import LocalStore

ART = "t/review"
HOURS_AGO = time.time() - 2 * 3600
KEY = "chunks/ab/ab" + "0" * 62


def run(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


def _policy(tmp_path: Path) -> Path:
    p = tmp_path / "policy.yaml"
    p.write_text("retention:\n  grace_period: 0s\n  rules:\n    - match: '*'\n"
                 "      keep_last: 10\n")
    return p


def _lake(tmp_path: Path) -> tuple[str, Path]:
    root = tmp_path / "lake"
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(b"w" * 5000)
    url = f"file://{root}"
    r = run("push", src, ART, "--lake", url)
    assert r.exit_code == 0, r.output
    return url, root


def _files(root: Path) -> set[str]:
    """Everything in the lake but gc's own records and the lock files."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*")
            if not p.is_dir() and p.relative_to(root).parts[0] not in ("gc", ".ckptlake-locks")}


def _old(path: Path) -> Path:
    os.utime(path, (HOURS_AGO, HOURS_AGO))
    return path


# ---- 1. gc collects what killed writers leave ------------------------------------------------

def test_gc_removes_stale_temp_files_of_killed_writers_and_keeps_fresh_ones(
        tmp_path: Path) -> None:
    url, root = _lake(tmp_path)
    chunk_dir = next(p for p in (root / "chunks").iterdir() if p.is_dir())
    old_file = chunk_dir / ".tmp-999-0123456789abcdef"
    old_file.write_bytes(b"half a chunk")
    _old(old_file)
    new_dir = root / "chunks" / "ff"  # a writer's first chunk in its directory
    new_dir.mkdir()
    lone = new_dir / ".tmp-998-0123456789abcdef"
    lone.write_bytes(b"x")
    _old(lone)
    staging = root / ".ckptlake-multipart" / f".tmp-997-{'a' * 32}"
    staging.mkdir(parents=True)
    (staging / ".tmp-997-0123456789abcdef").write_bytes(b"{}")
    _old(staging)
    fresh = chunk_dir / ".tmp-996-0123456789abcdef"  # a live writer's
    fresh.write_bytes(b"in progress")
    before = _files(root)

    r = run("gc", "--policy", _policy(tmp_path), "--lake", url, "--dry-run")
    assert r.exit_code == 0, r.output
    assert "incomplete multipart uploads older than 0s to abort: 3" in r.stderr + r.stdout
    r = run("gc", "--policy", _policy(tmp_path), "--lake", url, "--dry-run", "--json")
    assert r.exit_code == 0, r.output
    assert len(json.loads(r.stdout)["plan"]["multipart"]) == 3
    r = run("verify", "--lake", url, "--json")
    assert json.loads(r.stdout)["incomplete_uploads"] == 3, r.stdout
    assert old_file.exists() and staging.exists()  # a dry run removes nothing

    r = run("gc", "--policy", _policy(tmp_path), "--lake", url, "--yes")
    assert r.exit_code == 0, r.output
    assert not old_file.exists() and not lone.exists() and not staging.exists()
    assert not new_dir.exists()  # pruned like any emptied directory
    assert fresh.read_bytes() == b"in progress"
    gone = {p.relative_to(root).as_posix() for p in (old_file, lone)} | {
        (staging / ".tmp-997-0123456789abcdef").relative_to(root).as_posix()}
    assert _files(root) == before - gone
    r = run("verify", "--lake", url, "--json")
    assert json.loads(r.stdout)["incomplete_uploads"] == 0


def test_stale_temps_are_listed_sized_and_removed_only_inside_the_lake(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "lake")
    store.put("artifacts/a/b", b"1")
    temp = store.root / "artifacts" / "a" / ".tmp-1-0123456789abcdef"
    temp.write_bytes(b"12345")
    _old(temp)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / ".tmp-2-00").write_bytes(b"keep")
    _old(outside / ".tmp-2-00")
    (store.root / "link").symlink_to(outside)  # not walked, never removed through
    (store.root / ".tmp-3-00").symlink_to(outside / ".tmp-2-00")
    [up] = store.list_multipart("")
    assert up.upload_id == "artifacts/a/.tmp-1-0123456789abcdef" and up.key == layout.HEADER_KEY
    assert not list(store.list_multipart("chunks/"))
    assert store.multipart_bytes(up.key, up.upload_id) == 5
    for bad in ("link/.tmp-2-00", "../outside/.tmp-2-00", ".tmp-3-00", "artifacts/a/.tmp-1-0123456789abcdef/.."):
        store.abort_multipart(up.key, bad)
    assert (outside / ".tmp-2-00").read_bytes() == b"keep" and temp.exists()
    store.abort_multipart("artifacts/a/b", up.upload_id)  # the id is filed under its own key only
    assert temp.exists()
    store.abort_multipart(up.key, up.upload_id)
    assert not temp.exists() and store.get("artifacts/a/b") == b"1"
    assert not list(store.list_multipart(""))


# ---- 2. a new directory's entry is synced into its parent ------------------------------------

def test_new_directories_are_synced_into_their_parents(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    store = LocalStore(tmp_path / "lake")
    monkeypatch.setattr(os, "fsync", fsync)
    store.put("a/b/c", b"x")
    for made in (store.root, store.root / "a", store.root / "a" / "b"):
        assert str(made.parent) in synced, (made, synced)
    synced.clear()
    store.put("a/b/d", b"y")  # nothing new: only the file and its directory
    assert str(store.root / "a") not in synced and str(store.root) not in synced


# ---- 3. checks no other test exercises --------------------------------------------------------

def test_a_symlink_to_an_outside_directory_is_not_listed_nor_collected(tmp_path: Path) -> None:
    url, root = _lake(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / ("cd" + "0" * 62)  # named like a chunk of chunks/cd/
    victim.write_bytes(b"precious")
    (root / "chunks" / "cd").symlink_to(outside, target_is_directory=True)
    assert not [o.key for o in LocalStore(root).list("chunks/") if o.key.startswith("chunks/cd")]
    r = run("gc", "--policy", _policy(tmp_path), "--lake", url, "--yes")
    assert r.exit_code == 0, r.output
    assert victim.read_bytes() == b"precious"


def test_a_fifo_is_not_listed(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "lake")
    store.put("a", b"1")
    os.mkfifo(store.root / "f")
    assert [o.key for o in store.list()] == ["a"]


def test_refused_create_if_absent_leaves_no_temp_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "lake")
    store.put("d/k", b"1", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.put("d/k", b"2", if_none_match=True)
    store.delete(["d/k"])
    assert not [p for p in store.root.rglob("*") if p.name.startswith(".tmp-")]


def test_delete_of_a_key_that_is_a_directory_is_a_no_op(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "lake")
    store.put("d/e", b"1")
    store.delete(["d"])  # as S3's delete of a missing key
    assert store.get("d/e") == b"1"


def test_completing_another_keys_upload_is_not_found(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "lake")
    upload_id = store.create_multipart("a")
    etag = store.upload_part("a", upload_id, 1, b"part")
    with pytest.raises(NotFound):
        store.complete_multipart("b", upload_id, [(1, etag)])
    with pytest.raises(NotFound):
        store.get("b")
    assert [u.upload_id for u in store.list_multipart("")] == [upload_id]


def test_eacces_is_access_denied_and_eperm_from_link_names_hard_links(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(tmp_path / "lake")
    store.put("k", b"1")
    real_open, real_link = os.open, os.link

    def denied_open(path: Any, *args: Any, **kwargs: Any) -> int:
        if str(path) == str(store.root / "k"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", denied_open)
    with pytest.raises(AccessDenied) as denied:
        store.get_range("k", 0, 1)
    assert denied.value.exit_code == 4
    monkeypatch.setattr(os, "open", real_open)

    def no_links(*args: Any, **kwargs: Any) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    with pytest.raises(TransferError, match="hard links") as refused:
        store.put("new", b"1", if_none_match=True)
    assert not isinstance(refused.value, AccessDenied)
    monkeypatch.setattr(os, "link", real_link)


def test_the_etag_carries_the_mtime_the_store_sets(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(tmp_path / "lake")
    now = 1_600_000_000_123_456_789
    monkeypatch.setattr(time, "time_ns", lambda: now)
    etag = store.put("k", b"same")
    assert f"-{now:x}-" in etag
    assert store.stat("k").etag == etag


def test_dot_dot_never_reaches_outside_the_lake(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "lake")
    store.put("x/y", b"1")
    with pytest.raises(UsageError):
        list(store.list_prefixes("../"))
    with pytest.raises(UsageError):
        list(store.list_prefixes("x/../"))
    meta = json.dumps({"key": "k", "initiated": "2020-01-01T00:00:00+00:00"}).encode()
    store.put("x/meta.json", meta)  # what .ckptlake-multipart/../x would read as an upload
    outside = tmp_path / "x"
    outside.mkdir()
    (outside / "meta.json").write_bytes(meta)
    store.create_multipart("other")  # so that .ckptlake-multipart/.. resolves
    store.abort_multipart("k", "../x")
    store.abort_multipart("k", "../../x")
    assert (outside / "meta.json").exists()
    assert store.get("x/y") == b"1" and store.get("x/meta.json") == meta


def test_only_our_own_temp_names_in_the_lakes_own_directories_are_stale(tmp_path: Path) -> None:
    """gc removed a user's `notes/.tmp-draft.txt` (any `.tmp-` name, anywhere under the root):
    anything gc does not own is reported, never deleted."""
    url, root = _lake(tmp_path)
    (root / "notes").mkdir()
    draft = root / "notes" / ".tmp-draft.txt"
    draft.write_bytes(b"mine")
    ours_elsewhere = root / "notes" / ".tmp-5-0123456789abcdef"  # our pattern, foreign place
    ours_elsewhere.write_bytes(b"x")
    odd = root / "chunks" / ".tmp-draft"  # our place, not our pattern
    odd.parent.mkdir(exist_ok=True)
    odd.write_bytes(b"y")
    for p in (draft, ours_elsewhere, odd):
        _old(p)
    assert list(LocalStore(root).list_multipart("")) == []
    r = run("gc", "--policy", _policy(tmp_path), "--lake", url, "--yes")
    assert r.exit_code == 0, r.output
    assert draft.read_bytes() == b"mine" and ours_elsewhere.exists() and odd.exists()


def test_the_local_stores_copies_of_the_lake_layout_match_it() -> None:
    """The store does not import the format: its names for the header key and for the lake's
    own top-level directories are copies, pinned here."""
    from ckptlake.store import local

    assert local.TEMP_UPLOAD_KEY == layout.HEADER_KEY
    owned = {p.rstrip("/") for p in (layout.CHUNKS_PREFIX, layout.ARTIFACTS_PREFIX,
                                     layout.GC_PREFIX)}
    assert owned == local._OWNED_TOP - {local.MULTIPART_DIR}
