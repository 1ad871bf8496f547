"""LakeCheckpointIO review: ModelCheckpoint reused a name (`{epoch}.ckpt`) for every mid-epoch
save because nothing existed locally, and each save deleted the version before it, so top k
lost its best members; and a misspelt option was a bare TypeError."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch", reason="needs lightning (pip install -e '.[test]')")

import ckptlake  # noqa: E402
from ckptlake.errors import UsageError  # noqa: E402
from ckptlake.torch import LakeCheckpointIO  # noqa: E402
from ckptlake.torch.lightning import PATH_KEY  # noqa: E402

ART = "exp/run"
BATCHES = 10  # one epoch; validation (and a save) every 2 steps
# val_loss at each validation, mostly worsening: the first save is the best, the fourth is not
# in the top 3, the fifth drops the second (10.5) and takes its name (epoch=0-v1.ckpt).
VAL_LOSS = [8.0, 10.5, 8.5, 16.0, 9.0]


class Worsening(pl.LightningModule):

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(4, 1)
        self.validations = 0
        self.saved: dict[int, dict[str, Any]] = {}  # global_step -> state_dict saved

    def training_step(self, batch: Any, idx: int) -> Any:
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def validation_step(self, batch: Any, idx: int) -> None:
        self.log("val_loss", torch.tensor(VAL_LOSS[self.validations]))

    def on_validation_epoch_end(self) -> None:
        self.validations += 1

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.saved[checkpoint["global_step"]] = {k: v.clone() for k, v in
                                                 checkpoint["state_dict"].items()}


def _data() -> Any:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4 * BATCHES, 4, generator=g)
    ds = torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True))
    return torch.utils.data.DataLoader(ds, batch_size=4, shuffle=False)


def _fit(root: Path, plugins: list[Any]) -> tuple[Any, Any, Worsening]:
    """The reviewer's configuration."""
    mc = pl.callbacks.ModelCheckpoint(dirpath=root / "checkpoints", monitor="val_loss",
                                      save_top_k=3, filename="{epoch}",
                                      every_n_train_steps=2)
    trainer = pl.Trainer(max_epochs=1, val_check_interval=2, limit_val_batches=1,
                         plugins=plugins, callbacks=[mc], logger=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=root, accelerator="cpu", devices=1,
                         num_sanity_val_steps=0)
    model = Worsening()
    trainer.fit(model, _data(), _data())
    return trainer, mc, model


def test_reused_names_keep_what_real_files_keep(local_lake_url: str, tmp_path: Path) -> None:
    # What Lightning keeps with real files (TorchCheckpointIO): its names and scores.
    _, disk_mc, _ = _fit(tmp_path / "disk", [])
    on_disk = sorted(p.name for p in (tmp_path / "disk/checkpoints").iterdir())
    assert len(on_disk) == 3 and len(disk_mc.best_k_models) == 3
    disk_scores = {Path(p).name: float(s) for p, s in disk_mc.best_k_models.items()}

    with ckptlake.open(local_lake_url) as lake:
        io = LakeCheckpointIO(lake, ART)
        _, mc, model = _fit(tmp_path / "lake", [io])
        live = lake.versions(ART)
        # three live versions, the ones Lightning keeps, with its scores
        assert len(live) == 3
        paths = {v.metadata[PATH_KEY]: v for v in live}
        assert set(paths) == set(mc.best_k_models)
        for path, score in mc.best_k_models.items():
            assert paths[path].metrics["val_loss"] == pytest.approx(float(score))
        # the same names and scores as with real files
        assert sorted(Path(p).name for p in paths) == on_disk
        assert {Path(p).name: float(s) for p, s in mc.best_k_models.items()} == disk_scores
        # best_model_path loads the best: the first save, whose weights it holds
        best = min(live, key=lambda v: v.metrics["val_loss"])
        assert mc.best_model_path == best.metadata[PATH_KEY]
        got = io.load_checkpoint(mc.best_model_path)
        assert got["global_step"] == best.step
        for name, tensor in model.saved[best.step].items():
            assert torch.equal(got["state_dict"][name], tensor), name
        # the dropped one is expired: replaced by the save that took its name, as on disk
        (gone,) = lake.expired(ART)
        assert gone.step not in {v.step for v in live}
        assert gone.reason.startswith(f"replaced by {ART}@v") and "saved again as epoch=0-v" \
            in gone.reason
        assert sorted(p.name for p in (tmp_path / "lake/checkpoints").iterdir()) == on_disk


def _ckpt(step: int, **callbacks: Any) -> dict[str, Any]:
    return {"state_dict": {"w": torch.full((2,), float(step))}, "global_step": step,
            "callbacks": callbacks}


def test_a_reused_name_it_did_not_see_keeps_both(local_lake_url: str, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    with ckptlake.open(local_lake_url) as lake:
        io = LakeCheckpointIO(lake, ART, async_upload=False)
        path = tmp_path / "ck/epoch=0.ckpt"
        io.save_checkpoint(_ckpt(2), path)
        assert path.read_bytes().startswith(b"ckptlake LakeCheckpointIO placeholder\n")
        path.unlink()  # as with a new dirpath, or a URL one: nothing tells Lightning
        with caplog.at_level(logging.WARNING, logger="ckptlake"):
            io.save_checkpoint(_ckpt(4), path)
        assert [v.version for v in lake.versions(ART)] == [1, 2]
        assert f"{ART}@v2 was saved as {path}, which already names {ART}@v1: kept both" \
            in caplog.text
        # Lightning's removal of the path deletes what it means by it (the newest), only
        io.save_checkpoint(_ckpt(5), tmp_path / "ck/other.ckpt")  # v3: v2 is not the latest
        io.remove_checkpoint(path)
        assert not path.exists()
        assert [v.version for v in lake.versions(ART)] == [1, 3]
        # A path Lightning saw and chose anyway (the kth best, re-saved under its name) and
        # its last checkpoint are overwritten, as on disk.
        io.save_checkpoint(_ckpt(6), path)
        io.save_checkpoint(_ckpt(8), path)
        last = tmp_path / "ck/last.ckpt"
        state = {"ModelCheckpoint": {"last_model_path": str(last)}}
        io.save_checkpoint(_ckpt(8, **state), last)
        last.unlink()
        io.save_checkpoint(_ckpt(10, **state), last)
        io.teardown()
        assert [(v.version, v.step) for v in lake.versions(ART)] == \
            [(1, 2), (3, 5), (5, 8), (7, 10)]
        assert io.load_checkpoint(path)["global_step"] == 8


def test_unknown_option_is_a_usage_error(local_lake_url: str) -> None:
    with ckptlake.open(local_lake_url) as lake:
        with pytest.raises(UsageError, match=r"unknown option 'foo' \(accepted: "
                                             r"async_upload, keep_last, .*on_busy"):
            LakeCheckpointIO(lake, "a/b", foo=1)
        LakeCheckpointIO(lake, "a/b", keep_last=2).teardown()


def test_a_placeholder_whose_upload_never_committed(local_lake_url: str, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Preempted after the placeholder, before the commit: `ckpt_path="last"` found last.ckpt
    and every restart failed with NotFound.  For a last checkpoint the latest version is what
    was meant; any other path names one checkpoint, and is refused."""
    from ckptlake.errors import NotFound

    with ckptlake.open(local_lake_url) as lake:
        io = LakeCheckpointIO(lake, ART, async_upload=False)
        io.save_checkpoint(_ckpt(2), tmp_path / "ck/epoch=0.ckpt")
        for name in ("last.ckpt", "epoch=1.ckpt"):
            io._write_placeholder(str(tmp_path / "ck" / name))  # the save that never landed
        with caplog.at_level(logging.WARNING, logger="ckptlake"):
            assert io.load_checkpoint(tmp_path / "ck/last.ckpt")["global_step"] == 2
        assert "resuming from the latest version instead" in caplog.text
        with pytest.raises(NotFound, match="never committed"):
            io.load_checkpoint(tmp_path / "ck/epoch=1.ckpt")
        io.teardown()
