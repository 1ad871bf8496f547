"""Tests for the survivors of this session's mutation review (each names the mutation it
kills): the real "shrank" path next to the /proc one, an empty file whose probe read fails,
`ls V .` of an empty version, a blank config name, a bytes path, the `sk-` token rules, and a
pull into a DEST whose directory is a link leading out."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.core import push as push_module
from ckptlake.core import scan as scan_module
from ckptlake.errors import SourceChanged, UnsafeManifest
from ckptlake.redact import redact


def _src(tmp_path: Path) -> Path:
    src = tmp_path / "s"
    src.mkdir()
    (src / "w.bin").write_bytes(b"w" * 5000)
    (src / "a").write_bytes(b"a")
    return src


def _reads_of(name: str, then):  # type: ignore[no-untyped-def]
    """os.preadv that runs `then(fd)` for reads of `name` (returning its answer)."""
    real = os.preadv

    def preadv(fd: int, bufs, off: int):  # type: ignore[no-untyped-def]
        if os.readlink(f"/proc/self/fd/{fd}").endswith(name):
            got = then(fd, bufs, off, real)
            if got is not None:
                return got
        return real(fd, bufs, off)
    return preadv


@pytest.mark.parametrize("writer", ["truncates", "touches"])
def test_a_short_read_with_a_writer_is_a_change_not_a_pseudo_file(
        tmp_path: Path, local_lake_url: str, monkeypatch: pytest.MonkeyPatch,
        writer: str) -> None:
    """A file truncated mid-push, or read short while its mtime moved, is a writer at work:
    SourceChanged "shrank" (exit 6); only size and mtime both unchanged make a /proc file
    (the mutations: always the pseudo-file branch; size compared without mtime)."""
    src = _src(tmp_path)
    f = src / "w.bin"

    def act(fd, bufs, off, real):  # type: ignore[no-untyped-def]
        if writer == "truncates":
            if os.path.getsize(f) == 5000:
                os.truncate(f, 10)
            return None
        st = os.stat(f)
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        return 0

    monkeypatch.setattr(push_module.os, "preadv", _reads_of("w.bin", act))
    with ckptlake.open(local_lake_url) as lake:
        with pytest.raises(SourceChanged, match="shrank while it was being pushed"):
            lake.push(src, "w/x")


def test_an_empty_file_whose_probe_read_fails_still_pushes(
        tmp_path: Path, local_lake_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The /proc probe is one read of an empty file; an error there is no refusal (the
    mutation: an OSError taken for "holds bytes")."""
    src = _src(tmp_path)
    (src / "e.bin").write_bytes(b"")
    real = os.read

    def read(fd: int, n: int) -> bytes:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("e.bin"):
            raise OSError(errno.EIO, "I/O error")
        return real(fd, n)

    monkeypatch.setattr(scan_module.os, "read", read)
    with ckptlake.open(local_lake_url) as lake:
        assert lake.push(src, "e/x").files == 3


def test_ls_dot_of_an_empty_version_is_an_empty_listing(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    lake = str(tmp_path / "lake")
    assert CliRunner().invoke(app, ["push", str(empty), "e/a", "--lake", lake]).exit_code == 0
    for path in (".", "./"):
        r = CliRunner().invoke(app, ["ls", "e/a@v1", path, "--lake", lake, "--json"])
        assert r.exit_code == 0 and '"files": []' in r.stdout, r.output


def test_a_blank_config_name_and_a_bytes_path_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(ckptlake.UsageError, match="the config file's name is empty"):
        ckptlake.open(str(tmp_path / "l"), config="  ")

    class BytesPath:
        def __fspath__(self) -> bytes:
            return os.fsencode(str(tmp_path / "lake"))

    with pytest.raises(ckptlake.UsageError, match="lake must be a URL or a path"):
        ckptlake.open(BytesPath())  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["sk-" + "AbCd" * 9,  # no digit
                                  "sk-" + "ABCD1234" * 5])  # no small letter
def test_an_sk_name_without_a_keys_mix_is_kept(text: str) -> None:
    assert redact(text) == text
    assert redact("sk-" + "Ab3d" * 9) == "***"


def test_a_pull_never_writes_through_a_dest_directory_linking_out(
        tmp_path: Path, local_lake_url: str) -> None:
    """DEST/sub is a link to a directory outside DEST; the version has sub/x.txt (the
    mutation: the plan's realpath cache not resolving links wrote it outside)."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "x.txt").write_text("x")
    (src / "top.txt").write_text("t")
    outside, dest = tmp_path / "outside", tmp_path / "dest"
    outside.mkdir()
    dest.mkdir()
    (dest / "sub").symlink_to(outside)
    with ckptlake.open(local_lake_url) as lake:
        lake.push(src, "p/a")
        for force in (False, True):
            with pytest.raises(UnsafeManifest, match="through the symlink .*sub"):
                lake.pull("p/a", dest, force=force)
    assert list(outside.iterdir()) == []
