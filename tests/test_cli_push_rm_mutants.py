"""Command-line options a mutation review of cli/push.py and cli/rm.py found unexercised: what
--shard pushes pass on (--exclude, --metric, --meta, --alias), --relation with --parent, and a
single-version rm deleting the version its question showed."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import ckptlake
from ckptlake.lake import Lake

from test_cli_mutants import ART, cli, lake3, live  # noqa: F401  (lake3: fixture)
from test_rm import push


def _src(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(b"w" * 1000)
    (src / "secret.tmp").write_text("SECRET")
    return src


def test_a_sharded_push_passes_on_exclude_metrics_meta_and_aliases(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file excluded (a secret, a temp file) must not be committed into a sharded
    checkpoint; its metrics are what @min:/retention select on."""
    url = "file://" + (tmp_path / "lake").as_posix()
    monkeypatch.setenv("CKPTLAKE_LAKE", url)
    r = cli("push", _src(tmp_path), "sh/x", "--step", "1", "--shard", "0/1",
            "--exclude", "*.tmp", "--metric", "loss=2.5", "--meta", "k=v", "--alias", "best")
    assert r.exit_code == 0, r.output
    with ckptlake.open(url) as lake:
        m = lake._manifest("sh/x@best")
        assert [f.path for f in m.files] == ["w.bin"]
        assert m.metrics == {"loss": 2.5} and m.metadata["k"] == "v"


def test_relation_reaches_the_parent_edge(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    url = "file://" + (tmp_path / "lake").as_posix()
    monkeypatch.setenv("CKPTLAKE_LAKE", url)
    src = _src(tmp_path)
    assert cli("push", src, "base/m").exit_code == 0
    r = cli("push", src, "a/b", "--parent", "base/m@v1", "--relation", "resumed-from")
    assert r.exit_code == 0, r.output
    r = cli("push", src, "a/c", "--parent", "base/m@v1:fine-tuned-from",
            "--relation", "resumed-from")
    assert r.exit_code == 0, r.output
    with ckptlake.open(url) as lake:
        assert lake._manifest("a/b").parents[0]["relation"] == "resumed-from"
        assert lake._manifest("a/c").parents[0]["relation"] == "fine-tuned-from"


def test_rm_deletes_the_version_its_question_showed(lake3: Lake, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """`rm p/ckpt@latest` showed v3; a training job pushed v4 while the user read the
    question: v3 is deleted, and v4, never shown, stays."""
    monkeypatch.setattr("ckptlake.cli.rm.isatty", lambda stream: True)
    pushed: list[int] = []

    def push_then_yes(*a: Any, **kw: Any) -> bool:
        pushed.extend(push(lake3, tmp_path, n=1))
        return True

    monkeypatch.setattr("ckptlake.cli.rm.confirm", push_then_yes)
    r = cli("rm", f"{ART}@latest")
    assert pushed == [4]
    assert r.exit_code == 0, r.output
    assert live(lake3) == [1, 2, 4]
