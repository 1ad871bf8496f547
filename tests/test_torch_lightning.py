"""ckptlake.torch.LakeCheckpointIO: real Lightning training on CPU, checkpoints as lake versions.

A tiny deterministic LightningModule (a linear layer, AdamW, StepLR, no shuffling) trains for a
few epochs; ModelCheckpoint(monitor="val_loss", save_top_k=2) saves every epoch through the
plugin.  Resuming from the lake and training on must give bit-identical weights to training
straight through, which only holds if the weights, the optimizer and scheduler state and the
loop state (global step, epoch) were all restored exactly.
"""
from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch", reason="needs lightning (pip install -e '.[test]')")

import ckptlake  # noqa: E402
from ckptlake.core import catalog  # noqa: E402
from ckptlake.errors import NotFound, TransferError, UsageError  # noqa: E402
from ckptlake.torch import LakeCheckpointIO, NotALightningCheckpoint  # noqa: E402

ART = "exp/run"
BATCHES = 4  # per epoch: global_step = 4 * epochs


class Tiny(pl.LightningModule):
    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(4, 1)
        #: global_step -> (model state, optimizer state) as handed to the checkpoint
        self.saved: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
        self.started_at: tuple[int, dict[str, Any], dict[str, Any]] | None = None

    def training_step(self, batch: Any, idx: int) -> Any:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, idx: int) -> None:
        x, y = batch
        # Rises after epoch 1 on purpose (below): top-2 by val_loss is then not "the newest".
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y)
                 + VAL_BUMP.get(self.current_epoch, 0.0))

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 2, 0.5)}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.saved[checkpoint["global_step"]] = (copy.deepcopy(checkpoint["state_dict"]),
                                                 copy.deepcopy(checkpoint["optimizer_states"]))

    def on_train_start(self) -> None:  # after a resume has restored everything
        self.started_at = (self.trainer.global_step, copy.deepcopy(self.state_dict()),
                           copy.deepcopy(self.trainer.optimizers[0].state_dict()))


# val_loss per epoch gets this added: epoch 2 is the worst, so it is never in the top 2.
VAL_BUMP = {0: 100.0, 1: 50.0, 2: 200.0, 3: 10.0, 4: 0.0}


def _data() -> Any:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8 * BATCHES, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1
    ds = torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(ds, batch_size=8, shuffle=False)


def _trainer(io: LakeCheckpointIO, root: Path, epochs: int, **ckpt: Any) -> tuple[Any, Any]:
    mc = pl.callbacks.ModelCheckpoint(dirpath=root / "checkpoints", monitor="val_loss",
                                      save_top_k=2, **ckpt)
    trainer = pl.Trainer(max_epochs=epochs, plugins=[io], callbacks=[mc], logger=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=root, accelerator="cpu", devices=1,
                         num_sanity_val_steps=0)
    return trainer, mc


def _assert_same(a: Any, b: Any, path: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{path}: {set(a)} != {set(b)}"
        for k in a:
            _assert_same(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{path}/{i}")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


@pytest.fixture
def lake(lake_url: str) -> Iterator[ckptlake.Lake]:
    with ckptlake.open(lake_url) as lk:
        yield lk


def test_fit_topk_and_exact_resume(lake: ckptlake.Lake, tmp_path: Path) -> None:
    # Straight through: 5 epochs, a checkpoint per epoch, top 2 by val_loss kept.
    io = LakeCheckpointIO(lake, ART)
    trainer, mc = _trainer(io, tmp_path / "a", 5)
    straight = Tiny()
    trainer.fit(straight, _data(), _data())  # teardown waited for uploads and removals

    live = lake.versions(ART)
    # val_loss + bump per epoch: epoch 2 never enters the top 2 (no version), epochs 3 and 4
    # push out 0 and 1, whose versions are removed.
    assert [(v.version, v.step) for v in live] == [(3, 16), (4, 20)]
    assert [v.metadata["lightning.path"] for v in live] == [
        str(tmp_path / "a/checkpoints/epoch=3-step=16.ckpt"),
        str(tmp_path / "a/checkpoints/epoch=4-step=20.ckpt")]
    for v in live:
        assert v.metrics["val_loss"] == pytest.approx(
            float(mc.best_k_models[v.metadata["lightning.path"]]))
    assert mc.best_model_path == live[1].metadata["lightning.path"]
    # The removed ones are gone through gc's deleter: tombstones say why.
    expired = {t.version: t for t in lake.expired(ART)}
    assert sorted(expired) == [1, 2]
    assert [expired[n].step for n in (1, 2)] == [4, 8]
    assert expired[1].reason == "removed by Lightning (epoch=0-step=4.ckpt)"
    assert sorted(io.removed) == [f"{ART}@v1", f"{ART}@v2"]

    # Resume from epoch 3's version by ref and train to epoch 5 again: bit-identical result.
    io2 = LakeCheckpointIO(lake.url, ART)
    trainer2, _ = _trainer(io2, tmp_path / "b", 5)
    resumed = Tiny(lr=0.5)  # hyper-parameters differ: the checkpoint's weights and optimizer win
    trainer2.fit(resumed, _data(), _data(), ckpt_path=f"lake://{ART}@step=16")
    assert resumed.started_at is not None
    step, weights, optim = resumed.started_at
    assert step == 16
    _assert_same(weights, straight.saved[16][0])
    _assert_same(optim, straight.saved[16][1][0])
    assert trainer2.global_step == 20
    for name, p in straight.state_dict().items():
        assert torch.equal(p, resumed.state_dict()[name]), name
    # The resumed run's versions name where it came from.
    new = lake.versions(ART)[-1]
    assert (new.version, new.step) == (5, 20)
    parents = lake.show(f"{ART}@v5").parents
    assert [(p["artifact"], p["version"], p["relation"]) for p in parents] == \
        [(ART, 3, "resumed-from")]


def test_best_path_last_and_bad_refs(lake: ckptlake.Lake, tmp_path: Path) -> None:
    io = LakeCheckpointIO(lake, ART, async_upload=False)
    trainer, mc = _trainer(io, tmp_path, 2, save_last=True)
    trainer.fit(Tiny(), _data(), _data())
    # last.ckpt is saved at every epoch and replaces its previous version (as the file would).
    # Saves: epoch=0 (v1), last (v2), epoch=1 (v3), last (v4, replacing v2).
    live = {v.version: v.metadata["lightning.path"] for v in lake.versions(ART)}
    assert live == {1: str(tmp_path / "checkpoints/epoch=0-step=4.ckpt"),
                    3: str(tmp_path / "checkpoints/epoch=1-step=8.ckpt"),
                    4: str(tmp_path / "checkpoints/last.ckpt")}
    assert [(t.version, t.reason) for t in lake.expired(ART)] == \
        [(2, f"replaced by {ART}@v4 (saved again as last.ckpt)")]
    assert lake.resolve(f"{ART}@v4").metrics == {}  # not in the top k: no score to record
    # ckpt_path="best" resolves to ModelCheckpoint's best_model_path: a path the plugin saved.
    assert io.version_of(mc.best_model_path) is not None
    got = io.load_checkpoint(mc.best_model_path)
    assert got["global_step"] == int(mc.best_model_path.rsplit("step=", 1)[1].split(".")[0])
    assert isinstance(got["state_dict"]["layer.weight"], torch.Tensor)
    assert got["optimizer_states"][0]["state"][0]["step"] is not None  # int keys survive
    trainer.validate(Tiny(), _data(), ckpt_path="best", verbose=False)

    # Resume the same run (same dirpath) from its latest version, last.ckpt (v4): the next
    # last.ckpt does not delete it, as Lightning keeps the file it resumed from.
    io2 = LakeCheckpointIO(lake, ART)
    trainer2, mc2 = _trainer(io2, tmp_path, 3, save_last=True)
    trainer2.fit(Tiny(), _data(), _data(), ckpt_path="lake://")
    assert trainer2.global_step == 12
    live = {v.version: v for v in lake.versions(ART)}
    assert sorted(live) == [1, 3, 4, 5]  # epoch 2 (val_loss + 200) is not in the top 2
    assert live[5].metadata["lightning.path"] == str(tmp_path / "checkpoints/last.ckpt")
    assert [p["version"] for p in lake.show(f"{ART}@v5").parents] == [4]
    assert set(mc2.best_k_models) == {live[1].metadata["lightning.path"],
                                      live[3].metadata["lightning.path"]}

    # A ref that names nothing: NotFound naming it, before any training step.
    trainer3, _ = _trainer(LakeCheckpointIO(lake, ART), tmp_path / "c", 3)
    with pytest.raises(NotFound, match=r"lake://exp/run@step=999"):
        trainer3.fit(Tiny(), _data(), _data(), ckpt_path=f"lake://{ART}@step=999")
    with pytest.raises(NotFound, match="no-such/run"):
        io.load_checkpoint("lake://no-such/run")
    with pytest.raises(NotFound, match=r"never-saved\.ckpt"):
        io.load_checkpoint(tmp_path / "never-saved.ckpt")
    with pytest.raises(UsageError, match="selector"):
        io.load_checkpoint(f"lake://{ART}@bad selector")


def test_not_a_lightning_checkpoint(lake: ckptlake.Lake, tmp_path: Path) -> None:
    src = tmp_path / "files"
    src.mkdir()
    (src / "weights.bin").write_bytes(b"\0" * 100)
    pushed = lake.push(src, "other/files")
    with lake.checkpointer("other/state") as ck:
        ck.save_state({"model": {"w": torch.ones(3)}, "step": 3}, step=3)
    io = LakeCheckpointIO(lake, ART)
    with pytest.raises(NotALightningCheckpoint, match=rf"other/files@v{pushed.version}.*no "
                                                      r"training state"):
        io.load_checkpoint("lake://other/files")
    with pytest.raises(NotALightningCheckpoint, match=r"other/state@v1.*state_dict"):
        io.load_checkpoint("lake://other/state@step=3")
    assert issubclass(NotALightningCheckpoint, UsageError)  # exit code 2 in scripts
    trainer, _ = _trainer(io, tmp_path, 1)
    with pytest.raises(NotALightningCheckpoint):
        trainer.fit(Tiny(), _data(), _data(), ckpt_path="lake://other/state")
    io.teardown()


def test_save_refuses_objects_and_takes_storage_options(
        local_lake_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lake = ckptlake.open(local_lake_url)
    io = LakeCheckpointIO(lake, ART, async_upload=False)
    ckpt = {"global_step": 7, "epoch": 1, "state_dict": {"w": torch.zeros(2)},
            "hyper_parameters": {"tokenizer": object()}}
    with pytest.raises(UsageError, match="hyper_parameters/tokenizer"):  # never pickled
        io.save_checkpoint(ckpt, tmp_path / "x.ckpt")
    assert lake.artifacts() == []
    del ckpt["hyper_parameters"]
    with pytest.raises(UsageError, match="storage_options"):
        io.save_checkpoint(ckpt, tmp_path / "x.ckpt", storage_options={"compress": True})
    io.save_checkpoint(ckpt, "rel.ckpt", storage_options={"metrics": {"acc": 0.5},
                                                          "aliases": "candidate"})
    v = lake.resolve(f"{ART}@candidate")
    assert (v.step, v.metrics, v.metadata["lightning.path"]) == \
        (7, {"acc": 0.5}, os.path.abspath("rel.ckpt"))
    # The alias protects it: Lightning's removal spares it (and says so), nothing else breaks.
    io.save_checkpoint({**ckpt, "global_step": 8}, tmp_path / "y.ckpt")
    io.remove_checkpoint("rel.ckpt")
    assert [x.version for x in lake.versions(ART)] == [1, 2]
    # The latest version is never deleted by retention: kept, until it is not the latest.
    io.remove_checkpoint(tmp_path / "y.ckpt")
    assert [x.version for x in lake.versions(ART)] == [1, 2]
    io.save_checkpoint({**ckpt, "global_step": 9}, tmp_path / "z.ckpt")
    io.remove_checkpoint(tmp_path / "y.ckpt")
    assert [x.version for x in lake.versions(ART)] == [1, 3]
    assert io.removed == [f"{ART}@v2"]
    io.remove_checkpoint(tmp_path / "nothing-there.ckpt")  # no version: nothing to do
    io.teardown()
    assert io.removal_errors == []

    # A removal that cannot reach the lake loses nothing: logged, kept, never raised.
    io3 = LakeCheckpointIO(lake, ART, async_upload=False)
    io3.save_checkpoint({**ckpt, "global_step": 10}, tmp_path / "w.ckpt")  # v4

    def unreachable(*a: Any, **k: Any) -> Any:
        raise TransferError("lake unreachable")

    monkeypatch.setattr(catalog, "version_numbers", unreachable)
    io3.remove_checkpoint(tmp_path / "z.ckpt")
    io3.teardown()
    assert [str(e) for e in io3.removal_errors] == ["lake unreachable"]
    monkeypatch.undo()
    assert [x.version for x in lake.versions(ART)] == [1, 3, 4]
    assert io3.version_of(tmp_path / "z.ckpt") == 3  # still known: a later removal retries
    io3.remove_checkpoint(tmp_path / "z.ckpt")
    assert [x.version for x in lake.versions(ART)] == [1, 4]


def test_import_stays_lazy() -> None:
    code = ("import sys, ckptlake, ckptlake.torch; assert 'lightning' not in sys.modules; "
            "from ckptlake.torch import LakeCheckpointIO; assert 'lightning' in sys.modules; "
            "import lightning.pytorch as pl; "
            "assert issubclass(LakeCheckpointIO, pl.plugins.io.CheckpointIO)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_removal_waits_for_the_upload_it_follows(local_lake_url: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Lightning removes a checkpoint right after saving the next one; with slow uploads the
    removed one may not even be committed yet.  The removal must still find and delete it."""
    import threading

    from ckptlake.core import push as push_mod

    real, gate = push_mod.push, threading.Event()

    def slow_push(*a: Any, **k: Any) -> Any:
        gate.wait(30)  # every upload waits until the removals have been requested
        return real(*a, **k)

    monkeypatch.setattr(push_mod, "push", slow_push)
    lake = ckptlake.open(local_lake_url)
    io = LakeCheckpointIO(lake, ART)
    ckpt = {"global_step": 1, "state_dict": {"w": torch.zeros(2)}}
    io.save_checkpoint(ckpt, tmp_path / "a.ckpt")
    io.save_checkpoint({**ckpt, "global_step": 2}, tmp_path / "b.ckpt")
    io.save_checkpoint({**ckpt, "global_step": 3}, tmp_path / "c.ckpt")
    io.remove_checkpoint(tmp_path / "a.ckpt")
    io.remove_checkpoint(tmp_path / "b.ckpt")
    assert io.results == []  # nothing committed yet: both removals wait for their uploads
    gate.set()
    io.teardown()
    assert [(v.version, v.step) for v in lake.versions(ART)] == [(3, 3)]
    assert io.removed == [f"{ART}@v1", f"{ART}@v2"]
