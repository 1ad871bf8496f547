"""A local lake's write racing another writer's delete, which prunes the directories it emptied.

Two DCP ranks on one host share the lake's `gc/pins/`: one deleted its pin (and so pruned the
emptied `gc/pins/` and `gc/`) while the other was creating `gc/pins/` for its own, and the
other's save failed with "not found" (seen under load in test_torch_dcp_fixes)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from ckptlake.store.local import LocalStore


def test_a_write_survives_a_prune_of_the_directory_above_the_one_it_creates(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(tmp_path / "lake")
    store.put("gc/old", b"x")  # leaves gc/ ...
    store.delete(["gc/old"])  # ... pruned: re-make it empty, as a deleter is about to prune it
    (tmp_path / "lake" / "gc").mkdir()
    original = Path.mkdir
    pruned: list[Path] = []

    def mkdir(self: Path, *args: object, **kwargs: object) -> None:
        if self.name == "pins" and not pruned:
            # the other writer's prune lands between our is_dir() of gc/ and our mkdir below it
            self.parent.rmdir()
            pruned.append(self.parent)
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", mkdir)
    store.put("gc/pins/p.json", b"pin")
    assert pruned, "the race was not staged: the test proves nothing"
    assert store.get("gc/pins/p.json") == b"pin"


def test_a_write_gives_up_on_a_directory_that_keeps_vanishing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The retry is bounded: a parent that vanishes on every attempt fails the write, as a
    race the retry layer tries again (TransientError), not as a missing key (exit 3)."""
    from ckptlake.errors import TransientError

    store = LocalStore(tmp_path / "lake")
    (tmp_path / "lake" / "gc").mkdir(parents=True)
    original = Path.mkdir
    calls: list[Path] = []

    def mkdir(self: Path, *args: object, **kwargs: object) -> None:
        if self.name == "pins":
            calls.append(self)
            if self.parent.is_dir():
                self.parent.rmdir()
        original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "mkdir", mkdir)
    with pytest.raises(TransientError, match="removed by concurrent deletes"):
        store.put("gc/pins/p.json", b"pin")
    assert 1 < len(calls) <= 10


def test_a_lake_directory_the_file_system_cannot_hold_is_no_race(tmp_path: Path) -> None:
    """`--lake file:///proc/lakex`: mkdir there is ENOENT with /proc present, which was retried
    as "removed by concurrent deletes" five times and ended as exit 8 "check connectivity"."""
    from typer.testing import CliRunner

    from ckptlake.cli.app import app

    if not os.path.isdir("/proc/self"):
        pytest.skip("needs a /proc file system")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a").write_text("x")
    r = CliRunner().invoke(app, ["push", str(tmp_path / "src"), "art", "--lake",
                                 "file:///proc/ckptlake-test-lake"])
    assert r.exit_code == 2, r.output
    assert "cannot create the lake directory /proc/ckptlake-test-lake" in r.stderr
    assert "retry" not in r.stderr
