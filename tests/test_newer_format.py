"""A lake whose header says a newer format: push refused it, but gc, rm and alias wrote to it
(gc swept a chunk the newer format might keep alive by references this version cannot read).
Every command that deletes or rewrites records now refuses it, with exit 5 and "upgrade"."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.errors import EXIT_INTEGRITY
from ckptlake.format import layout

ART = "nf/ckpt"


def cli(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def newer(tmp_path: Path) -> tuple[str, Path]:
    url = f"file://{tmp_path / 'lake'}"
    with ckptlake.open(url) as lake:
        for n in (1, 2):
            src = tmp_path / f"s{n}"
            src.mkdir()
            (src / "w.bin").write_bytes(os.urandom(1000))
            lake.push(src, ART)
        lake.alias(f"{ART}@v2", "prod")
        lake.store.put(layout.chunk_key("ab" * 32), b"an orphan, in the old format's eyes")
        header = json.loads(lake.store.get(layout.HEADER_KEY))
        header["ckptlake_lake"] = 2
        lake.store.put(layout.HEADER_KEY, json.dumps(header).encode())
    return url, tmp_path / "lake"


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("args", [
    ("gc", "--yes"),
    ("gc", "--dry-run"),
    ("rm", f"{ART}@v1", "--yes"),
    ("alias", f"{ART}@v1", "candidate"),
    ("alias", "--delete", ART, "prod"),
    ("rm", f"{ART}@step=7", "--pending", "--yes"),
])
def test_writers_refuse_a_newer_lake_format(newer: tuple[str, Path], tmp_path: Path,
                                            args: tuple[str, ...]) -> None:
    url, root = newer
    policy = tmp_path / "policy.yaml"
    policy.write_text("retention:\n  grace_period: 0s\n  rules:\n    - match: '*'\n"
                      "      keep_last: 1\n")
    before = _files(root)
    extra = ("--policy", policy) if args[0] == "gc" else ()
    r = cli(*args, *extra, "--lake", url)
    assert r.exit_code == EXIT_INTEGRITY, (r.stdout, r.stderr)
    assert "lake format 2 is not supported" in r.stderr and "upgrade ckptlake" in r.stderr
    assert _files(root) == before, "nothing was written or deleted"
