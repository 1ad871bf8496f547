"""A write that fills the disk returns how much fit, without an error (pwrite(2)); only the
next write fails (ENOSPC).  Pull took every write for whole: on a full tmpfs it placed files
ending in zeros under their final names and exited 0 (reproduced with a 60 MiB tmpfs).  Now
every write is continued until all its bytes are out, so a short write is either finished or
turns into the full-disk error (exit 2, nothing placed, the staging kept)."""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.errors import EXIT_USAGE

ART = "sw/ckpt"
MiB = 1024 * 1024


def _source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "one.bin").write_bytes(os.urandom(3 * MiB + 123))  # one chunk
    (src / "many.bin").write_bytes(os.urandom(40 * MiB + 4097))  # several chunks, direct writes
    (src / "small.json").write_text('{"a": 1}')  # packed
    return src


def _halving(real: Any, calls: list[int], zero_after: int | None = None) -> Any:
    """pwrite that writes about half of what it is given (page-aligned, so an O_DIRECT write
    stays valid), as a filling disk does; after `zero_after` calls it writes nothing."""
    def pwrite(fd: int, data: Any, offset: int) -> int:
        calls.append(len(data))
        if zero_after is not None and len(calls) > zero_after:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = len(data)
        k = (n // 2) - (n // 2) % 4096 if n >= 8192 else max(1, n // 2)
        return real(fd, memoryview(data)[:k], offset)
    return pwrite


def test_short_writes_are_finished(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _source(tmp_path)
    url = f"file://{tmp_path / 'lake'}"
    with ckptlake.open(url) as lake:
        lake.push(src, ART)
        calls: list[int] = []
        monkeypatch.setattr(os, "pwrite", _halving(os.pwrite, calls))
        lake.pull(ART, tmp_path / "out", use_cache=False)
    assert calls, "the pull wrote nothing through pwrite: the test checks nothing"
    for name in ("one.bin", "many.bin", "small.json"):
        assert (tmp_path / "out" / name).read_bytes() == (src / name).read_bytes(), name


def test_a_full_disk_fails_the_pull_and_places_nothing(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    src = _source(tmp_path)
    url = f"file://{tmp_path / 'lake'}"
    with ckptlake.open(url) as lake:
        lake.push(src, ART)
    calls: list[int] = []
    monkeypatch.setattr(os, "pwrite", _halving(os.pwrite, calls, zero_after=3))
    r = CliRunner().invoke(app, ["pull", ART, str(tmp_path / "out"), "--lake", url],
                           catch_exceptions=False)
    assert r.exit_code == EXIT_USAGE, (r.stdout, r.stderr)
    assert "no space left" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_a_file_size_limit_is_named_as_such(tmp_path: Path) -> None:
    """`ulimit -f` fails a large file with EFBIG, as a file system's own limit does; the
    message named the file system, whose cure (another destination) does not help."""
    import subprocess
    import sys

    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(3 * MiB))
    url = f"file://{tmp_path / 'lake'}"
    with ckptlake.open(url) as lake:
        lake.push(src, ART)
    script = (f'ulimit -f 1024 && exec "{sys.executable}" -m ckptlake pull {ART} '
              f'"{tmp_path / "out"}" --lake "{url}"')
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == EXIT_USAGE, (r.stdout, r.stderr)
    assert "the file size limit" in r.stderr and "ulimit -f" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def test_staged_bytes_are_flushed_before_any_file_is_placed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a power loss a placed file must not read as zeros: the staging's file system is
    synced (syncfs, or an fsync per staged file without it) before the first rename."""
    from ckptlake.core import pull as pull_mod

    src = _source(tmp_path)
    url = f"file://{tmp_path / 'lake'}"
    out = tmp_path / "out"
    seen: list[tuple[str, bool]] = []
    real = pull_mod._flush_to_disk

    def flush(staging: str, files: list[str]) -> None:
        seen.append((staging, out.exists()))
        real(staging, files)

    monkeypatch.setattr(pull_mod, "_flush_to_disk", flush)
    with ckptlake.open(url) as lake:
        lake.push(src, ART)
        lake.pull(ART, out, use_cache=False)
        assert len(seen) == 1 and seen[0][1] is False, seen  # before the destination exists
        # without syncfs (not Linux): every staged file is fsynced
        synced: list[str] = []
        real_fsync = os.fsync
        monkeypatch.setattr(pull_mod, "_syncfs", None)
        monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(
            f"/proc/self/fd/{fd}")), real_fsync(fd))[1])
        lake.pull(ART, tmp_path / "out2", use_cache=False)
    assert sorted(os.path.basename(p) for p in synced) == ["many.bin", "one.bin", "small.json"]
