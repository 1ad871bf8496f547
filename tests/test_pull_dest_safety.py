"""What a pull must never write over: the local lake it reads (`pull --force` into the lake
replaced its header with a version's `ckptlake.json`), and FIFOs, sockets and device nodes
(`pull ART /dev/null --force` as root replaced /dev/null with a file)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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
