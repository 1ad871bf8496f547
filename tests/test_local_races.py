"""A local lake's writers racing its deleters, aborters and each other, each race staged at the
exact point a multi-process stress review caught it (a push failing with a false key clash, gc
leaking part directories forever, a stale compare-and-swap succeeding, a listing losing a
subtree).  Deterministic: the competing action runs from inside a patched call."""
from __future__ import annotations

import contextlib
import errno
import os
import time
import types
from pathlib import Path
from typing import Any, Iterator

import pytest
from typer.testing import CliRunner

from ckptlake.cli.app import app
from ckptlake.errors import (CkptlakeError, NotFound, PreconditionFailed, TransientError,
                             UsageError)
from ckptlake.store import local
from ckptlake.store.local import MULTIPART_DIR, TEMP_UPLOAD_KEY, LocalStore

HOURS_AGO = time.time() - 2 * 3600


def _old(path: Path) -> Path:
    os.utime(path, (HOURS_AGO, HOURS_AGO))
    return path


# ---- 1. a directory another writer made and a deleter pruned is no key clash -------------------

def test_a_write_retries_when_the_directory_it_found_existing_is_pruned_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(tmp_path / "lake")
    store.put("gc/settings.json", b"{}")
    original = Path.mkdir
    staged: list[Path] = []

    def mkdir(self: Path, *args: Any, **kwargs: Any) -> None:
        if self.name == "pins" and not staged:
            staged.append(self)
            original(self)  # another writer makes gc/pins/ first ...
            try:
                original(self, *args, **kwargs)  # ... so ours fails with EEXIST ...
            except FileExistsError:
                self.rmdir()  # ... and that writer's delete prunes it before we look
                raise
        original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    store.put("gc/pins/p.json", b"pin")  # was: UsageError "cannot hold both 'a' and 'a/...'"
    assert staged, "the race was not staged: the test proves nothing"
    assert store.get("gc/pins/p.json") == b"pin"


# ---- 2. an abort racing a part write leaks nothing ---------------------------------------------

def test_a_part_written_after_its_upload_was_aborted_is_not_found_and_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(tmp_path / "lake")
    upload_id = store.create_multipart("k")
    original = LocalStore._upload_meta
    aborted: list[str] = []

    def upload_meta(self: LocalStore, key: str, uid: str) -> dict[str, str]:
        meta = original(self, key, uid)
        if not aborted:
            aborted.append(uid)  # gc's abort lands between the part's meta check and its write
            self.abort_multipart(key, uid)
        return meta

    monkeypatch.setattr(LocalStore, "_upload_meta", upload_meta)
    with pytest.raises(NotFound, match=f"multipart upload {upload_id} not found"):
        store.upload_part("k", upload_id, 1, b"part")  # S3: NoSuchUpload
    assert aborted == [upload_id]
    assert list((store.root / MULTIPART_DIR).iterdir()) == []  # nothing left to leak


def test_an_abort_that_loses_to_a_part_write_leaves_only_what_gc_collects(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(tmp_path / "lake")
    upload_id = store.create_multipart("k")
    store.upload_part("k", upload_id, 1, b"part")
    base = store.root / MULTIPART_DIR
    real_rmdir = os.rmdir
    staged: list[Path] = []

    def rmdir(path: Any, *args: Any, **kwargs: Any) -> None:
        p = Path(os.fsdecode(path))
        if p.parent == base and not staged:
            staged.append(p)  # a part write's temp file lands after rmtree emptied it
            (p / f".tmp-{os.getpid()}-{'0' * 16}").write_bytes(b"late part")
        real_rmdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "rmdir", rmdir)
    store.abort_multipart("k", upload_id)
    monkeypatch.undo()
    assert staged, "the race was not staged: the test proves nothing"
    assert not (base / upload_id).exists()  # no directory under the id for a writer to reuse
    assert not list(store.list_multipart(""))  # the leftover is young: a writer may own it
    for leftover in base.iterdir():
        _old(leftover)
    [stale] = store.list_multipart("")
    assert stale.key == TEMP_UPLOAD_KEY and store.multipart_bytes(stale.key, stale.upload_id) == 9
    store.abort_multipart(stale.key, stale.upload_id)
    assert list(base.iterdir()) == []


def test_gc_collects_an_upload_directory_without_its_meta_and_keeps_live_uploads(
        tmp_path: Path) -> None:
    """What an older ckptlake's part write (recreating an aborted upload) or a killed abort
    left: no meta.json, so no listing showed it, and gc never removed it."""
    root = tmp_path / "lake"
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(b"w" * 5000)
    r = CliRunner().invoke(app, ["push", str(src), "a", "--lake", f"file://{root}"])
    assert r.exit_code == 0, r.output
    store = LocalStore(root)
    live = store.create_multipart("artifacts/a/@v/0000000001.json")
    _old(root / MULTIPART_DIR / live)
    orphan = root / MULTIPART_DIR / ("c" * 32)
    orphan.mkdir()
    (orphan / f"part-00001.{'d' * 32}").write_bytes(b"12345")
    _old(orphan)
    young = root / MULTIPART_DIR / ("e" * 32)  # perhaps an abort still under way
    young.mkdir()

    uploads = {(u.key, u.upload_id) for u in store.list_multipart("")}
    assert uploads == {("artifacts/a/@v/0000000001.json", live),
                       (TEMP_UPLOAD_KEY, f"{MULTIPART_DIR}/{orphan.name}")}
    assert store.multipart_bytes(TEMP_UPLOAD_KEY, f"{MULTIPART_DIR}/{orphan.name}") == 5
    store.abort_multipart(TEMP_UPLOAD_KEY, f"{MULTIPART_DIR}/{live}")  # a live one: not this way
    assert (root / MULTIPART_DIR / live / "meta.json").exists()

    policy = tmp_path / "policy.yaml"
    policy.write_text("retention:\n  grace_period: 0s\n  rules:\n    - match: '*'\n"
                      "      keep_last: 10\n")
    r = CliRunner().invoke(app, ["gc", "--policy", str(policy), "--lake", f"file://{root}",
                                 "--yes"])
    assert r.exit_code == 0, r.output
    assert not orphan.exists() and young.exists()
    assert not (root / MULTIPART_DIR / live).exists()  # older than the grace: gc's to abort


# ---- 3. compare-and-swap on a file system with whole-second timestamps ------------------------

def test_a_stale_etag_is_refused_when_the_file_system_keeps_whole_seconds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    second = 1_800_000_000 * 1_000_000_000
    monkeypatch.setattr(local, "time", types.SimpleNamespace(time_ns=lambda: second))
    real_utime = os.utime

    def utime(target: Any, times: Any = None, *, ns: Any = None, **kwargs: Any) -> None:
        if ns is not None:  # what the file system stores of the time we set
            kwargs["ns"] = tuple(t // 1_000_000_000 * 1_000_000_000 for t in ns)
        elif times is not None:
            kwargs["times"] = tuple(float(int(t)) for t in times)
        real_utime(target, **kwargs)

    monkeypatch.setattr(os, "utime", utime)
    store = LocalStore(tmp_path / "lake")
    key = "artifacts/a/@alias/latest.json"
    for attempt in range(10):  # freed inodes are reused at once: most rounds hit the same one
        store.put(key, b"v0")
        seen = store.stat(key)  # a reader's ETag ...
        first = store.put(key, b"v1", if_match=seen.etag)  # ... then two writers, same second
        second_etag = store.put(key, b"v2")
        after = store.stat(key)
        assert second_etag == after.etag  # the ETag a put returns is the placed file's
        assert first != seen.etag and after.etag not in (seen.etag, first)
        assert store.stat(key).modified > seen.modified  # each rewrite's mtime is later
        with pytest.raises(PreconditionFailed):
            store.put(key, b"stale", if_match=seen.etag)
        assert store.get(key) == b"v2", attempt


# ---- 4. a listing error other than "gone" is not a missing subtree ----------------------------

class _FlakyEntry:
    """A DirEntry whose type lookup fails, as on a readdir without d_type (some NFS/FUSE)."""

    def __init__(self, entry: os.DirEntry[str], exc: OSError) -> None:
        self._entry, self._exc = entry, exc
        self.name, self.path = entry.name, entry.path

    def is_symlink(self) -> bool:
        raise self._exc

    def is_dir(self, *, follow_symlinks: bool = True) -> bool:
        raise self._exc

    def is_file(self, *, follow_symlinks: bool = True) -> bool:
        raise self._exc

    def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
        return self._entry.stat(follow_symlinks=follow_symlinks)


def test_a_listing_fails_rather_than_drop_a_subtree_it_could_not_stat(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(tmp_path / "lake")
    store.put("artifacts/a/@v/0000000001.json", b"m")
    store.put("artifacts/a/@alias/latest.json", b"a")
    real_scandir = os.scandir
    failure: list[OSError] = []

    @contextlib.contextmanager
    def scandir(path: Any) -> Iterator[list[Any]]:
        with real_scandir(path) as it:
            yield [_FlakyEntry(e, failure[0]) if e.name == "@v" and failure else e for e in it]

    monkeypatch.setattr(os, "scandir", scandir)
    failure.append(FileNotFoundError(errno.ENOENT, "gone"))  # deleted while listed: skipped
    assert [o.key for o in store.list("artifacts/")] == ["artifacts/a/@alias/latest.json"]
    failure[0] = OSError(errno.ESTALE, "Stale file handle")
    with pytest.raises(TransientError, match="artifacts/a/@v"):
        list(store.list("artifacts/"))
    failure[0] = OSError(errno.EIO, "Input/output error")
    with pytest.raises(CkptlakeError, match="Input/output error"):
        list(store.list_prefixes("artifacts/a/"))


def test_a_foreign_link_that_cannot_be_followed_fails_no_listing(tmp_path: Path) -> None:
    """A symlink loop, or a link to a path under a file, at the lake's root or beside a
    version's keys, failed every listing (ls, pull, push, gc, verify) once a stat error
    stopped being skipped; such a link is no object, and the lake's keys are all listed."""
    import os

    from ckptlake.store.local import LocalStore

    root = tmp_path / "lake"
    store = LocalStore(root)
    store.put("artifacts/a/@v/0000000001.json", b"{}")
    store.put("chunks/ab/x", b"x")
    os.symlink("loop", root / "loop")
    os.symlink(str(root / "chunks" / "ab" / "x" / "below"), root / "notes")
    os.symlink("loop3", root / "chunks" / "ab" / "loop3")
    (root / "target.bin").write_bytes(b"t")
    os.symlink(str(root / "target.bin"), root / "chunks" / "ab" / "linked")
    assert [o.key for o in store.list()] == [
        "artifacts/a/@v/0000000001.json", "chunks/ab/linked", "chunks/ab/x", "target.bin"]
    assert [o.key for o in store.list("artifacts/a/")] == ["artifacts/a/@v/0000000001.json"]
    assert list(store.list_prefixes("")) == ["artifacts/", "chunks/"]
    # where versions live, a link that leads nowhere may hide one: refused, never skipped
    os.symlink("loop2", root / "artifacts" / "a" / "@v" / "loop2")
    with pytest.raises(UsageError, match="leads nowhere"):
        list(store.list("artifacts/a/"))
    assert [o.key for o in store.list("chunks/")] == ["chunks/ab/linked", "chunks/ab/x"]


def test_a_manifest_reached_through_a_link_fails_the_listing_on_a_stale_handle(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Skipping every error of a link's target dropped a version's manifest (a link to it on
    an NFS mount, ESTALE) from gc's view: gc swept its chunks, and the pull failed."""
    root = tmp_path / "lake"
    store = LocalStore(root)
    (tmp_path / "nfs").mkdir()
    (tmp_path / "nfs" / "m.json").write_bytes(b"m")
    (root / "artifacts" / "a" / "@v").mkdir(parents=True)
    link = root / "artifacts" / "a" / "@v" / "0000000001.json"
    os.symlink(tmp_path / "nfs" / "m.json", link)
    assert [o.key for o in store.list("artifacts/")] == ["artifacts/a/@v/0000000001.json"]
    real_stat = os.stat
    failure: list[OSError] = [OSError(errno.ESTALE, "Stale file handle")]

    def stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if str(path) == str(link) and kwargs.get("follow_symlinks", True):
            raise failure[0]
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    with pytest.raises(TransientError, match="0000000001.json"):
        list(store.list("artifacts/"))
    failure[0] = OSError(errno.ENOENT, "No such file or directory")  # the mount is absent
    with pytest.raises(UsageError, match="leads nowhere on this host"):
        list(store.list("artifacts/"))


def test_a_temp_file_renamed_away_on_nfs_fails_no_listing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(tmp_path / "lake")
    store.put("artifacts/a/@v/0000000001.json", b"m")
    temp = tmp_path / "lake" / "artifacts" / "a" / "@v" / ".tmp-4242-00112233445566ff"
    temp.write_bytes(b"half")
    real_scandir = os.scandir

    @contextlib.contextmanager
    def scandir(path: Any) -> Iterator[list[Any]]:
        with real_scandir(path) as it:
            entries = [_FlakyEntry(e, OSError(errno.ESTALE, "Stale file handle"))
                       if e.name == temp.name else e for e in it]
        if temp.exists():
            temp.unlink()  # its writer renamed it away between the readdir and the stat
        yield entries

    monkeypatch.setattr(os, "scandir", scandir)
    assert [o.key for o in store.list("artifacts/")] == ["artifacts/a/@v/0000000001.json"]


@pytest.mark.parametrize("linked", ["artifacts", "artifacts/team", "gc"])
def test_a_linked_directory_of_versions_or_records_is_refused_not_skipped(
        tmp_path: Path, linked: str) -> None:
    """`artifacts/team -> /elsewhere` was skipped by listings while pulls read through it:
    ls showed nothing and gc swept the chunks of every version behind it."""
    import shutil

    root = tmp_path / "lake"
    store = LocalStore(root)
    store.put("artifacts/team/run/@v/0000000001.json", b"m")
    store.put("gc/pins/p.json", b"p")
    store.put("chunks/ab/" + "ab" * 32, b"c")
    moved = tmp_path / "elsewhere"
    shutil.move(str(root / linked), str(moved))
    os.symlink(str(moved), root / linked)
    with pytest.raises(UsageError, match="which a local lake does not follow"):
        list(store.list())
    assert store.get("chunks/ab/" + "ab" * 32) == b"c"


def test_a_linked_chunks_directory_is_still_skipped(tmp_path: Path) -> None:
    """Chunks behind a link are unseen by gc's sweep (it condemns only what it lists): no
    loss, so such a lake keeps working as before."""
    import shutil

    root = tmp_path / "lake"
    store = LocalStore(root)
    store.put("artifacts/a/@v/0000000001.json", b"m")
    store.put("chunks/ab/" + "ab" * 32, b"c")
    shutil.move(str(root / "chunks"), str(tmp_path / "big"))
    os.symlink(str(tmp_path / "big"), root / "chunks")
    assert [o.key for o in store.list()] == ["artifacts/a/@v/0000000001.json"]


@pytest.mark.parametrize("linked", ["artifacts", "artifacts/team"])
def test_a_linked_directory_whose_target_is_absent_is_refused_not_swept(
        tmp_path: Path, linked: str) -> None:
    """The refusal fired only for a reachable target: on a gc host without the mount (or as a
    user who cannot read it) the link was skipped, ls showed nothing and gc swept the chunks."""
    import shutil

    root = tmp_path / "lake"
    store = LocalStore(root)
    store.put("artifacts/team/run/@v/0000000001.json", b"m")
    moved = tmp_path / "mnt" / "team"
    moved.parent.mkdir()
    shutil.move(str(root / linked), str(moved))
    os.symlink(str(moved), root / linked)
    shutil.rmtree(tmp_path / "mnt")  # the mount is absent on this host
    with pytest.raises(UsageError, match="leads nowhere on this host"):
        list(store.list())
    with pytest.raises(UsageError, match="leads nowhere"):
        list(store.list("artifacts/"))


def test_a_bad_link_fails_only_the_listings_that_need_it(tmp_path: Path) -> None:
    """One linked directory under artifacts/ refused every command, pushes to unrelated
    artifacts among them; and a dead mount linked at the root failed them all."""
    import errno as _errno  # noqa: F401  (documentation: ENOTCONN is what a dead FUSE gives)

    root = tmp_path / "lake"
    store = LocalStore(root)
    store.put("artifacts/other/run/@v/0000000001.json", b"o")
    (tmp_path / "elsewhere").mkdir()
    os.symlink(str(tmp_path / "elsewhere"), root / "artifacts" / "team")
    os.symlink(str(tmp_path / "gone"), root / "scratch-sshfs")
    assert [o.key for o in store.list("artifacts/other/")] == [
        "artifacts/other/run/@v/0000000001.json"]
    assert list(store.list_prefixes("artifacts/other/")) == ["artifacts/other/run/"]
    with pytest.raises(UsageError):
        list(store.list("artifacts/"))
    with pytest.raises(UsageError):
        list(store.list_prefixes("artifacts/"))


def test_a_temp_form_directory_with_a_stale_handle_is_not_dropped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A temp-form name is skipped on an error only if it is really gone: a directory of that
    form is an artifact's segment, and dropping it on ESTALE hid its versions from gc."""
    store = LocalStore(tmp_path / "lake")
    store.put("artifacts/a/.tmp-1-0123456789abcdef/@v/0000000001.json", b"m")
    real_scandir = os.scandir

    @contextlib.contextmanager
    def scandir(path: Any) -> Iterator[list[Any]]:
        with real_scandir(path) as it:
            yield [_FlakyEntry(e, OSError(errno.ESTALE, "Stale file handle"))
                   if e.name.startswith(".tmp-") else e for e in it]

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(TransientError):
        list(store.list("artifacts/"))


def test_a_bad_link_hint_names_its_target_absolutely_and_spares_similar_names(
        tmp_path: Path) -> None:
    """The hint printed a relative target as written (`mv ../t2real ...` failed from any other
    directory, after its `rm` had removed the link); `artifacts/team` failed listings of
    `artifacts/team2/` (its key has no '/')."""
    root = tmp_path / "lake"
    store = LocalStore(root)
    store.put("artifacts/team2/run/@v/0000000001.json", b"m")
    (root / "t2real").mkdir()
    os.symlink("../t2real", root / "artifacts" / "team")
    with pytest.raises(UsageError) as info:
        list(store.list("artifacts/"))
    assert f"a symbolic link to {root / 't2real'} (a directory)" in str(info.value)
    assert f"bind-mount {root / 't2real'} at {root / 'artifacts' / 'team'}" in info.value.hint
    assert [o.key for o in store.list("artifacts/team2/")] == [
        "artifacts/team2/run/@v/0000000001.json"]


def test_a_linked_manifest_deleted_during_a_listing_is_skipped_like_a_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "lake"
    store = LocalStore(root)
    store.put("artifacts/a/@v/0000000002.json", b"2")
    (tmp_path / "m1.json").write_bytes(b"1")
    os.symlink(tmp_path / "m1.json", root / "artifacts" / "a" / "@v" / "0000000001.json")
    real_scandir = os.scandir

    @contextlib.contextmanager
    def scandir(path: Any) -> Iterator[list[Any]]:
        with real_scandir(path) as it:
            entries = list(it)
        if str(path).endswith("@v"):
            store.delete(["artifacts/a/@v/0000000001.json"])  # gc deletes it meanwhile
        yield entries

    monkeypatch.setattr(os, "scandir", scandir)
    assert [o.key for o in store.list("artifacts/")] == ["artifacts/a/@v/0000000002.json"]


def test_a_linked_manifest_whose_target_goes_away_after_typing_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A target gone between the typing and the stat (a mount dropping mid-listing) was
    skipped like a deleted file, while the link stayed: gc's view lost the version."""
    root = tmp_path / "lake"
    store = LocalStore(root)
    (tmp_path / "mnt").mkdir()
    (tmp_path / "mnt" / "m.json").write_bytes(b"m")
    (root / "artifacts" / "a" / "@v").mkdir(parents=True)
    os.symlink(tmp_path / "mnt" / "m.json", root / "artifacts" / "a" / "@v" / "0000000001.json")
    real_kind = LocalStore._kind

    def kind(self: LocalStore, entry: Any, rel: str) -> Any:
        out = real_kind(self, entry, rel)
        if entry.name == "0000000001.json" and (tmp_path / "mnt").exists():
            (tmp_path / "mnt").rename(tmp_path / "unmounted")
        return out

    monkeypatch.setattr(LocalStore, "_kind", kind)
    with pytest.raises(UsageError, match="leads nowhere"):
        list(store.list("artifacts/"))


def test_a_relative_link_target_is_named_as_it_resolves_under_a_linked_lake_root(
        tmp_path: Path) -> None:
    """`..` in a link's target was collapsed as text: under a lake root reached through a
    link, the message named a directory that does not exist (or another one)."""
    (tmp_path / "disk" / "lake" / "artifacts").mkdir(parents=True)
    (tmp_path / "disk" / "shared" / "team").mkdir(parents=True)
    os.symlink(tmp_path / "disk" / "lake", tmp_path / "lake")
    os.symlink("../../shared/team", tmp_path / "disk" / "lake" / "artifacts" / "team")
    store = LocalStore(tmp_path / "lake")
    with pytest.raises(UsageError) as info:
        list(store.list())
    real = os.path.realpath(tmp_path / "disk" / "shared" / "team")
    assert f"a symbolic link to {real} (a directory)" in str(info.value)


# ---- a completion that loses to another completion of the same upload --------------------------

def test_a_completion_that_loses_to_another_completion_says_so_and_the_winner_stands(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(tmp_path / "lake")
    upload_id = store.create_multipart("k")
    etag = store.upload_part("k", upload_id, 1, b"the part")
    original = LocalStore._checked_parts
    won: list[str] = []

    def checked_parts(self: LocalStore, key: str, uid: str, parts: Any) -> list[Path]:
        paths = original(self, key, uid, parts)
        if not won:  # the other completion runs between our part check and our read
            won.append("staged")
            won.append(self.complete_multipart(key, uid, parts))
        return paths

    monkeypatch.setattr(LocalStore, "_checked_parts", checked_parts)
    with pytest.raises(NotFound, match="aborted, or completed by another call"):
        store.complete_multipart("k", upload_id, [(1, etag)])
    assert len(won) == 2, "the race was not staged: the test proves nothing"
    assert store.get("k") == b"the part" and store.stat("k").etag == won[1]
    assert list((store.root / MULTIPART_DIR).iterdir()) == []
