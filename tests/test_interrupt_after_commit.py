"""An interrupt (Ctrl-C, or a CI cancel's SIGTERM) after a push's manifest was written: the
run reported "Interrupted" with no version, so a retry pushed it again, and it left no listing
summary (which is what tells a lost manifest later)."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ckptlake.cli.app import app
from ckptlake.core import catalog
from ckptlake.lake import Lake


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_while_indexing_finishes_the_indexes_and_names_the_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sig: int) -> None:
    real, calls = Lake._after_commit, []

    def after_commit(self: Lake, *args: Any) -> Any:
        calls.append(args)
        if len(calls) == 1:
            os.kill(os.getpid(), sig)
        return real(self, *args)

    monkeypatch.setattr(Lake, "_after_commit", after_commit)
    (tmp_path / "m.bin").write_bytes(b"weights")
    lake = tmp_path / "lake"
    r = CliRunner().invoke(app, ["push", str(tmp_path / "m.bin"), "ci/model", "--lake",
                                 str(lake), "--json"])
    assert r.exit_code == 130, r.output
    err = json.loads(r.stdout)["error"]
    assert err["type"] == "Interrupted" and (err["artifact"], err["version"]) == ("ci/model", 1)
    assert "interrupted after ci/model@v1 was committed" in err["message"]
    assert list((lake / "artifacts" / "ci" / "model" / "@s").iterdir()), "no listing summary"


def test_an_interrupt_while_setting_an_alias_names_the_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = catalog.set_alias

    def set_alias(*args: Any, **kw: Any) -> Any:
        raise KeyboardInterrupt

    from ckptlake.core import catalog as cat_mod

    monkeypatch.setattr(cat_mod, "set_alias", set_alias)
    (tmp_path / "m.bin").write_bytes(b"weights")
    lake = tmp_path / "lake"
    r = CliRunner().invoke(app, ["push", str(tmp_path / "m.bin"), "ci/model", "--alias", "prod",
                                 "--lake", str(lake), "--json"])
    monkeypatch.setattr(cat_mod, "set_alias", real)
    assert r.exit_code == 130, r.output
    err = json.loads(r.stdout)["error"]
    assert err["type"] == "Interrupted" and (err["artifact"], err["version"]) == ("ci/model", 1)
    assert "ci/model@v1 is committed, but alias prod could not be set" in err["message"]
    assert list((lake / "artifacts" / "ci" / "model" / "@s").iterdir())


@pytest.mark.parametrize("alias", [[], ["--alias", "prod"]])
def test_an_interrupt_in_the_guards_check_after_the_commit_names_the_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, alias: list[str]) -> None:
    """The gc guard's step 3 (after the manifest) escaped as a bare KeyboardInterrupt: no
    version named, no listing summary."""
    from ckptlake.core import gc_guard

    def interrupted(*args: Any, **kw: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(gc_guard, "_settings_after_commit", interrupted)
    (tmp_path / "m.bin").write_bytes(b"weights")
    lake = tmp_path / "lake"
    r = CliRunner().invoke(app, ["push", str(tmp_path / "m.bin"), "ci/model", *alias,
                                 "--lake", str(lake), "--json"])
    assert r.exit_code == 130, r.output
    err = json.loads(r.stdout)["error"]
    assert err["type"] == "Interrupted" and (err["artifact"], err["version"]) == ("ci/model", 1)
    assert "ci/model@v1 is committed" in err["message"], err
    assert list((lake / "artifacts" / "ci" / "model" / "@s").iterdir())
    assert not (lake / "artifacts" / "ci" / "model" / "@alias").exists() or not alias
