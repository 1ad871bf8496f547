"""Overlapping dcp.async_save calls (torch runs each on an executor of its own) commit in the
order they finish: a later step could take the lower version number, and @latest was then the
older step with nothing said.  The commit now says so (a warning of the `ckptlake` logger)."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

pytest.importorskip("torch")
from ckptlake.torch import dcp  # noqa: E402


def _commit(lake_url: str, artifact: str, step: int, version: int) -> None:
    writer = SimpleNamespace(lake=SimpleNamespace(url=lake_url), artifact=artifact, step=step)
    dcp.LakeWriter._check_order(writer, version)  # type: ignore[arg-type]


def test_a_lower_step_committed_above_a_higher_one_is_said(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dcp, "_TOP_COMMIT", {})
    with caplog.at_level(logging.WARNING, logger="ckptlake"):
        _commit("file:///l", "a/b", 1, 1)
        _commit("file:///l", "a/b", 3, 2)  # step 3 finished first
        assert caplog.text == ""
        _commit("file:///l", "a/b", 2, 3)
        assert "a/b step 2 was committed as v3 after step 3 (v2): @latest is now the older " \
               "step" in caplog.text
        caplog.clear()
        _commit("file:///l", "a/c", 1, 1)  # another artifact, another lake: their own order
        _commit("file:///m", "a/b", 1, 1)
        _commit("file:///l", "a/b", 4, 4)
        assert caplog.text == ""
