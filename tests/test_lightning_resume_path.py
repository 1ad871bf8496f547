"""LakeCheckpointIO.resume_path(): the `ckpt_path` of a job that resumes when it can.

`ckpt_path="last"` is resolved by Lightning in each node's own `dirpath` (only global rank 0
writes placeholders there), so the nodes of a multi-node run disagreed; `lake://ARTIFACT` failed
the first run of an auto-resuming job (no version yet)."""
from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch", reason="needs lightning (pip install -e '.[test]')")

import ckptlake  # noqa: E402
from ckptlake.errors import NotFound, UsageError  # noqa: E402
from ckptlake.torch import LakeCheckpointIO  # noqa: E402
from test_torch_lightning import ART, Tiny, _data, _trainer  # noqa: E402


def test_first_run_starts_fresh_and_the_next_resumes_the_pinned_version(tmp_path: Path) -> None:
    lake = ckptlake.open(f"file://{tmp_path / 'lake'}")
    io = LakeCheckpointIO(lake, ART, async_upload=False)
    assert io.resume_path() is None  # nothing to resume: the first run starts fresh
    trainer, _ = _trainer(io, tmp_path / "node0", 2)
    trainer.fit(Tiny(), _data(), _data(), ckpt_path=io.resume_path())
    latest = lake.versions(ART)[-1]

    # the next job, on a node whose own dirpath is empty (another node, a new pod)
    io2 = LakeCheckpointIO(lake, ART, async_upload=False)
    path = io2.resume_path()
    assert path == f"lake://{ART}@v{latest.version}"
    assert io2.resume_path(f"step={latest.step}") == path
    trainer2, _ = _trainer(io2, tmp_path / "node1", 3)
    resumed = Tiny()
    trainer2.fit(resumed, _data(), _data(), ckpt_path=path)
    assert resumed.started_at is not None and resumed.started_at[0] == latest.step
    assert trainer2.global_step > latest.step


def test_a_selector_naming_nothing_is_an_error_not_a_fresh_start(tmp_path: Path) -> None:
    lake = ckptlake.open(f"file://{tmp_path / 'lake'}")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    io = LakeCheckpointIO(lake, ART, async_upload=False)
    assert io.resume_path("step=5") is None  # no version at all: still a first run
    lake.push(src, ART, step=1)
    with pytest.raises(NotFound):
        io.resume_path("step=5")
    with pytest.raises(UsageError):
        io.resume_path("bad selector")
    lake.delete(f"{ART}@v1")
    assert io.resume_path() is None  # every version deleted: nothing to resume


def test_no_lake_at_the_url_starts_fresh_with_a_warning(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """A mistyped URL, or one node without the lake's mount, looks like a first run: said."""
    io = LakeCheckpointIO(f"file://{tmp_path / 'nowhere' / 'lake'}", ART, async_upload=False)
    with caplog.at_level("WARNING", logger="ckptlake"):
        assert io.resume_path() is None
    assert "no lake at" in caplog.text and "check the lake's URL" in caplog.text
    lake = ckptlake.open(f"file://{tmp_path / 'lake'}")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    lake.push(src, "other", step=1)  # a lake, without this artifact: a first run, no warning
    caplog.clear()
    with caplog.at_level("WARNING", logger="ckptlake"):
        assert LakeCheckpointIO(lake, ART, async_upload=False).resume_path() is None
    assert "no lake at" not in caplog.text


def test_a_latest_version_that_is_no_lightning_checkpoint_is_refused_before_fit(
        tmp_path: Path) -> None:
    from ckptlake.torch import NotALightningCheckpoint

    lake = ckptlake.open(f"file://{tmp_path / 'lake'}")
    src = tmp_path / "src"
    src.mkdir()
    (src / "notes.txt").write_bytes(b"eval results")
    lake.push(src, ART, step=1)  # an eval job's push into the training artifact
    with pytest.raises(NotALightningCheckpoint):
        LakeCheckpointIO(lake, ART, async_upload=False).resume_path()
