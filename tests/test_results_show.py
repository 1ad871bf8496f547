"""show lists empty directories and escapes names; a malformed alias record is named where it
breaks `ls ARTIFACT` and `show`, and `ckptlake alias` repairs it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.errors import IntegrityError
from ckptlake.format import layout
from ckptlake.lake import Lake
from ckptlake.store.memory import MemoryStore


@pytest.fixture
def lake(monkeypatch: pytest.MonkeyPatch) -> Lake:
    lake = Lake(MemoryStore(), chunk_size=1 << 20, concurrency=2)
    lake.close = lambda: None  # type: ignore[method-assign]
    monkeypatch.setattr(ckptlake, "open", lambda *a, **k: lake)  # for the CLI
    return lake


def run(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_show_lists_empty_directories_and_escapes_names(lake: Lake, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "logs" / "empty").mkdir(parents=True)
    (src / "w.bin").write_bytes(b"w" * 10)
    (src / "evil\nname\x1b[31m.txt").write_bytes(b"e")
    (src / "new\nline").mkdir()
    lake.push(src, "r")
    r = run("show", "r")
    assert r.exit_code == 0, r.stderr
    out = r.stdout
    assert "evil\\nname\\x1b[31m.txt" in out and "\x1b" not in out
    assert "empty directories\n" in out
    assert "  dir  logs/empty/" in out and "  dir  new\\nline/" in out
    doc = json.loads(run("show", "r", "--json").stdout)
    assert sorted(doc["dirs"]) == ["logs/empty", "new\nline"]
    assert "evil\nname\x1b[31m.txt" in [f["path"] for f in doc["files"]]


def test_a_malformed_alias_record_is_named_and_alias_repairs_it(lake: Lake,
                                                                tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(b"w")
    lake.push(src, "r/ckpt")
    lake.push(src, "r/ckpt")
    lake.alias("r/ckpt@v1", "best")
    lake.alias("r/ckpt@v2", "prod")
    key = layout.alias_key("r/ckpt", "best")
    lake.store.put(key, b'{"alias": "best", "version": true}')  # a bool is no version
    assert run("show", "r/ckpt@best").exit_code == 5
    lake.store.put(key, b'{"alias": "best", "version": "one"}')
    for args in (("ls", "r/ckpt"), ("show", "r/ckpt@v2"), ("show", "r/ckpt@best")):
        r = run(*args)
        assert r.exit_code == 5, args
        assert f"alias best of r/ckpt is unusable: malformed alias record {key}" in r.stderr
        assert "ckptlake alias r/ckpt@vN best" in r.stderr
    with pytest.raises(IntegrityError, match="alias best of r/ckpt"):
        lake.versions("r/ckpt")
    moved = run("alias", "r/ckpt@v2", "best")
    assert moved.exit_code == 0, moved.stderr
    assert lake.show("r/ckpt@v2").aliases == ["best", "prod"]
    assert run("ls", "r/ckpt").exit_code == 0
