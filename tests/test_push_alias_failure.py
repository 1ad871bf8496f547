"""An alias that cannot be set after the version is committed: the push used to fail with the
alias write's bare error (exit 8), never saying the version was committed, so the natural
re-run committed a second one.  Now the error says it, and how to set the alias; the version's
indexes are written all the same."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.core import catalog
from ckptlake.errors import EXIT_TRANSFER, TransferError
from ckptlake.format import layout


def _refuse(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    real = catalog.set_alias

    def set_alias(store: Any, artifact: str, alias: str, version: int) -> Any:
        if alias == name:
            raise TransferError(f"PUT artifacts/{artifact}/@alias/{alias}.json: 503 Slow Down "
                                "(5 attempts)")
        return real(store, artifact, alias, version)

    monkeypatch.setattr(catalog, "set_alias", set_alias)


def test_cli_push_says_the_version_is_committed(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "s"
    src.mkdir()
    (src / "w.bin").write_bytes(os.urandom(1000))
    url = f"file://{tmp_path / 'lake'}"
    _refuse(monkeypatch, "best")
    r = CliRunner().invoke(app, ["push", str(src), "a/b", "--alias", "ok", "--alias", "best",
                                 "--lake", url], catch_exceptions=False)
    assert r.exit_code == EXIT_TRANSFER, (r.stdout, r.stderr)
    assert "a/b@v1 is committed, but alias best could not be set" in r.stderr
    assert "ckptlake alias a/b@v1 best" in r.stderr
    with ckptlake.open(url) as lake:
        assert [v.version for v in lake.versions("a/b")] == [1]
        assert catalog.aliases(lake.store, "a/b") == {"ok": 1}
        summaries = [i.key for i in lake.store.list(layout.ARTIFACTS_PREFIX) if "/@s/" in i.key]
        assert summaries, "the version's listing summary was written"


def test_writer_says_the_version_is_committed(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    _refuse(monkeypatch, "prod")
    with ckptlake.open(f"file://{tmp_path / 'lake'}") as lake:
        with pytest.raises(TransferError, match=r"a/w@v1 is committed, but alias prod"):
            with lake.writer("a/w", "model.pt", aliases=["prod"]) as f:
                f.write(b"x" * 1000)
        assert [v.version for v in lake.versions("a/w")] == [1]


def test_writer_finish_commits_and_a_failed_commit_is_raised_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """finish() on a lake writer closed it without committing, and the close after it was a
    silent no-op; a close() retried after a failed commit was one too."""
    with ckptlake.open(f"file://{tmp_path / 'lake'}") as lake:
        with lake.writer("a/f", "model.pt", step=1) as f:
            f.write(b"x" * 3000)
            entry = f.finish()
        assert entry.size == 3000 and f.result is not None and f.result.version == 1
        assert [v.version for v in lake.versions("a/f")] == [1]
        _refuse(monkeypatch, "prod")
        w = lake.writer("a/f", "model.pt", aliases=["prod"])
        w.write(b"y" * 10)
        for _ in range(2):
            with pytest.raises(TransferError, match="a/f@v2 is committed"):
                w.close()
        assert [v.version for v in lake.versions("a/f")] == [1, 2]
