"""LakeCheckpointIO fixes: a failed upload stops the removals it would have justified, and a
resume's lineage (and protection) does not carry over to a later fit of the same plugin."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch", reason="needs lightning (pip install -e '.[test]')")

import ckptlake  # noqa: E402
from ckptlake.errors import TransferError  # noqa: E402
from ckptlake.torch import LakeCheckpointIO  # noqa: E402
from ckptlake.torch.lightning import PATH_KEY  # noqa: E402

BATCHES = 4  # per epoch: global_step = 4 * epochs
VAL_LOSS = {0: 3.0, 1: 2.0, 2: 1.0, 3: 0.5}  # falls every epoch: each is the new top 1


class Falling(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch: Any, idx: int) -> Any:
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def validation_step(self, batch: Any, idx: int) -> None:
        self.log("val_loss", torch.tensor(VAL_LOSS[self.current_epoch]))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _data() -> Any:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8 * BATCHES, 4, generator=g)
    ds = torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True))
    return torch.utils.data.DataLoader(ds, batch_size=8, shuffle=False)


def _trainer(io: LakeCheckpointIO, root: Path, epochs: int, **ckpt: Any) -> Any:
    mc = pl.callbacks.ModelCheckpoint(dirpath=root / "checkpoints", monitor="val_loss",
                                      save_top_k=1, **ckpt)
    return pl.Trainer(max_epochs=epochs, plugins=[io], callbacks=[mc], logger=False,
                      enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=root, accelerator="cpu", devices=1,
                      num_sanity_val_steps=0)


def test_failed_upload_keeps_the_checkpoint_it_was_to_replace(
        local_lake_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from ckptlake.core import push as push_mod

    real, failed = push_mod.push, []

    def flaky_push(*a: Any, **k: Any) -> Any:
        if k.get("step") == 3 * BATCHES and not failed:  # epoch 2's top-1 checkpoint
            failed.append(k["step"])
            raise TransferError("injected upload failure")
        return real(*a, **k)

    monkeypatch.setattr(push_mod, "push", flaky_push)
    lake = ckptlake.open(local_lake_url)
    io = LakeCheckpointIO(lake, "pl/loss")
    with caplog.at_level(logging.WARNING, logger="ckptlake"):
        with pytest.raises(TransferError, match="injected"):
            _trainer(io, tmp_path, 3, save_last=True).fit(Falling(), _data(), _data())
        io.teardown()
    assert failed == [12]
    # The epoch-1 checkpoint (step 8), the best that reached the lake, is still there.
    best = lake.resolve("pl/loss@min:val_loss")
    assert (best.step, best.metrics["val_loss"]) == (8, 2.0)
    assert not any(r.endswith(f"@v{best.version}") for r in io.removed)
    assert "which Lightning removed: the save of epoch=2-step=12.ckpt failed" in caplog.text
    # The next fit removes again: the skip lasts until teardown only.  (Its removal of
    # epoch=0-step=4.ckpt, saved anew in that fit, goes through remove_checkpoint: a
    # re-saved path would be replaced whether or not removals were still skipped.)
    monkeypatch.setattr(push_mod, "push", real)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ckptlake"):
        _trainer(io, tmp_path, 2, save_last=True).fit(Falling(), _data(), _data())
        io.teardown()
    assert "did not delete" not in caplog.text
    assert [r for r in io.removed if r.endswith(f"@v{best.version}")]
    assert not [v.version for v in lake.versions("pl/loss")
                if v.metadata.get(PATH_KEY, "").endswith("epoch=0-step=4.ckpt")]


def test_resumed_from_does_not_carry_over_to_a_later_fit(local_lake_url: str,
                                                          tmp_path: Path) -> None:
    lake = ckptlake.open(local_lake_url)
    io = LakeCheckpointIO(lake, "pl/stale")
    _trainer(io, tmp_path, 1).fit(Falling(), _data(), _data())
    first = lake.versions("pl/stale")[-1].version
    _trainer(io, tmp_path, 2).fit(Falling(), _data(), _data(), ckpt_path="lake://pl/stale")
    resumed = lake.versions("pl/stale")[-1].version
    assert [(p["version"], p["relation"]) for p in lake.show(f"pl/stale@v{resumed}").parents] \
        == [(first, "resumed-from")]
    # A fresh model, trained from scratch by the same plugin: no parent, and the version the
    # earlier fit resumed from is no longer spared when ModelCheckpoint drops it.
    assert f"pl/stale@v{first}" not in io.removed  # spared by the fit that resumed from it
    _trainer(io, tmp_path, 2).fit(Falling(), _data(), _data())
    # Saved again as epoch=0-step=4.ckpt: the new version replaces it.
    assert f"pl/stale@v{first}" in io.removed
    fresh = [v.version for v in lake.versions("pl/stale") if v.version > resumed]
    assert fresh
    for n in fresh:
        assert lake.show(f"pl/stale@v{n}").parents == [], n
