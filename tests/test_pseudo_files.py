"""Kernel pseudo-files (`/proc/cpuinfo` says 0 bytes, a `/sys` file 4096) hold other than
their size says.  A push stores a file's size's worth of bytes, so `/proc/cpuinfo` committed
as an empty file with exit 0: a version that silently lacks what was pushed.  Now both refuse,
exit 2, with nothing committed, and the hint says what to do."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ckptlake.cli.app import app

EMPTY_BUT_FULL = "/proc/self/status"
SHORTER = [p for p in ("/sys/kernel/mm/transparent_hugepage/enabled",
                       "/sys/devices/system/cpu/online", "/sys/kernel/kexec_loaded")
           if os.path.isfile(p) and os.access(p, os.R_OK)
           and os.path.getsize(p) > len(open(p, "rb").read())]


def _push(lake: Path, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, ["push", *args, "--lake", str(lake)])


@pytest.mark.skipif(not os.path.isfile(EMPTY_BUT_FULL), reason="needs Linux /proc")
def test_a_file_that_says_empty_but_reads_bytes_is_refused(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    ok = tmp_path / "ok"
    ok.mkdir()
    (ok / "a.txt").write_bytes(b"a")
    assert _push(lake, str(ok), "x/ok").exit_code == 0
    r = _push(lake, EMPTY_BUT_FULL, "x/proc")
    assert r.exit_code == 2, r.output
    assert "says it is empty yet reading it returns bytes" in r.output
    assert "copy it into a regular file first, or --exclude it" in r.output
    assert "Traceback" not in r.output
    # inside a directory (a symlink to it, followed) too, and nothing new is written
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(b"w" * 100)
    (src / "status").symlink_to(EMPTY_BUT_FULL)
    r = _push(lake, str(src), "x/dir", "--follow-symlinks")
    assert r.exit_code == 2 and "status says it is empty" in r.output, r.output
    assert [p for p in sorted(lake.rglob("*")) if "/x/dir" in str(p) or "/x/proc" in str(p)] \
        == [], sorted(lake.rglob("*"))
    # a real empty file is no such thing
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "e.txt").write_bytes(b"")
    assert _push(lake, str(tmp_path / "empty"), "x/empty").exit_code == 0


@pytest.mark.skipif(not SHORTER, reason="no readable /sys file shorter than its size here")
def test_a_file_that_holds_fewer_bytes_than_its_size_is_refused(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    r = _push(lake, SHORTER[0], "x/sys")
    assert r.exit_code == 2, r.output
    assert f"says it holds {os.path.getsize(SHORTER[0])} bytes yet reading it ends at" in r.output
    assert "nothing was committed" in r.output and "shrank" not in r.output
    assert not any("x/sys" in str(p) or "x!sys" in str(p) for p in lake.rglob("*"))


def test_a_regular_file_copied_from_one_pushes_whole(tmp_path: Path) -> None:
    """The hint's way out works."""
    if not os.path.isfile(EMPTY_BUT_FULL):
        pytest.skip("needs Linux /proc")
    copy = tmp_path / "status.txt"
    shutil.copyfile(EMPTY_BUT_FULL, copy)
    lake = tmp_path / "lake"
    assert _push(lake, str(copy), "x/copy").exit_code == 0
    out = tmp_path / "out"
    r = CliRunner().invoke(app, ["pull", "x/copy", str(out), "--lake", str(lake)])
    assert r.exit_code == 0, r.output
    got = out if out.is_file() else out / "status.txt"
    assert got.read_bytes() == copy.read_bytes() and copy.stat().st_size > 0


def test_a_file_written_between_the_scans_stat_and_its_read_is_a_change(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer filling a file it created empty, just after the scan's stat, was refused as a
    /proc file (exit 2); it is a change (exit 6), which a push again mends (a review)."""
    from ckptlake.core import scan as scan_module

    src = tmp_path / "src"
    src.mkdir()
    (src / "growing.bin").write_bytes(b"")
    real = scan_module._holds_bytes

    def holds_bytes(path: str) -> bool:
        with open(path, "ab") as f:  # the writer's first bytes land now
            f.write(b"first bytes")
        return real(path)

    monkeypatch.setattr(scan_module, "_holds_bytes", holds_bytes)
    r = _push(tmp_path / "lake", str(src), "x/grow")
    assert r.exit_code == 6 and "changed while it was being scanned" in r.output, r.output
