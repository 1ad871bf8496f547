"""Review of the PyTorch integrations (ckptlake/torch/*, checkpointer.py): a skipped Lightning
save keeps the checkpoint it was to replace; a closed checkpointer's SIGTERM handler passes the
signal on (and the next fit's checkpointer exists before its first save); HF metrics carry
evaluations to no other checkpoint; the final save on SIGTERM waits only up to the deadline;
numpy bf16/fp8 states load; snapshot links are probed where they go; options are checked
where they are given (a newer writer's chunk encoding: test_pull_mutants.py)."""
from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types
from pathlib import Path
from typing import Any

import pytest

np = pytest.importorskip("numpy")
torch = pytest.importorskip("torch")

import ckptlake  # noqa: E402
from ckptlake.errors import NotFound, UsageError  # noqa: E402


# ---- 1. Lightning: a skipped save stops the removal of what it was to replace --------------

def _lightning_ckpt(path: str, step: int, score: float | None) -> dict[str, Any]:
    """What ModelCheckpoint hands the plugin: its state names the top-k path and score."""
    best = {path: torch.tensor(score)} if score is not None else {}
    return {"state_dict": {"w": torch.full((4,), float(step))}, "global_step": step,
            "epoch": step // 4, "pytorch-lightning_version": "2",
            "callbacks": {"ModelCheckpoint{'monitor': 'val_loss'}":
                          {"monitor": "val_loss", "best_k_models": best}}}


def hold_push(monkeypatch: pytest.MonkeyPatch, step: int | None = None) -> threading.Event:
    """Every push (or only that of `step`) waits until the returned event is set (at most a
    minute): an upload stalled in a request."""
    from ckptlake.core import push as push_mod

    release = threading.Event()
    real = push_mod.push

    def held(*a: Any, **k: Any) -> Any:
        if step is None or k.get("step") == step:
            release.wait(60)
        return real(*a, **k)

    monkeypatch.setattr(push_mod, "push", held)
    return release


def test_lightning_skipped_save_keeps_the_checkpoint_it_was_to_replace(
        local_lake_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("lightning.pytorch")
    from ckptlake.core import push as push_mod
    from ckptlake.torch import LakeCheckpointIO

    real, held, entered = push_mod.push, threading.Event(), threading.Event()

    def slow_push(*a: Any, **k: Any) -> Any:
        if k.get("step") == 5:  # an upload still running when the next best is saved
            entered.set()
            assert held.wait(60)
        return real(*a, **k)

    monkeypatch.setattr(push_mod, "push", slow_push)
    lake = ckptlake.open(local_lake_url)
    io = LakeCheckpointIO(lake, "pl/skip", on_busy="skip")
    best0, other, best1 = (str(tmp_path / n) for n in ("epoch=0-step=4.ckpt", "other.ckpt",
                                                       "epoch=1-step=8.ckpt"))
    io.save_checkpoint(_lightning_ckpt(best0, 4, 2.0), best0)
    io.wait()
    first = lake.resolve("pl/skip@min:val_loss")
    io.save_checkpoint(_lightning_ckpt(other, 5, None), other)
    assert entered.wait(60)
    with caplog.at_level(logging.WARNING, logger="ckptlake"):
        io.save_checkpoint(_lightning_ckpt(best1, 8, 1.0), best1)  # skipped: step 5 uploads
        io.remove_checkpoint(best0)  # ModelCheckpoint drops the old best for the skipped one
        held.set()
        io.teardown()
    assert io.removed == []
    best = lake.resolve("pl/skip@min:val_loss")
    assert (best.version, best.step) == (first.version, 4)
    assert [v.step for v in lake.versions("pl/skip")] == [4, 5]
    assert "the save of epoch=1-step=8.ckpt was skipped" in caplog.text


# ---- 2. SIGTERM reaching a closed checkpointer ----------------------------------------------

def test_closed_checkpointer_passes_sigterm_to_the_previous_handler(local_lake_url: str
                                                                    ) -> None:
    """Its handler could not be restored at close (another was installed over it), and was
    put back later, as Lightning's signal connector does at the end of a fit."""
    calls: list[int] = []
    original = signal.signal(signal.SIGTERM, lambda signum, frame: calls.append(signum))
    try:
        lake = ckptlake.open(local_lake_url)
        ck = lake.checkpointer("run/sig", on_sigterm="wait", retention=False)
        handler = ck._on_sigterm
        signal.signal(signal.SIGTERM, lambda signum, frame: handler(signum, frame))
        ck.close()  # not its own handler installed: cannot restore
        signal.signal(signal.SIGTERM, handler)  # the wrapper's owner puts back what it found
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(100):  # the handler runs in this (the main) thread, soon
                if calls:
                    break
                time.sleep(0.01)
        except SystemExit as exc:  # what the closed checkpointer did: exit 143
            pytest.fail(f"a closed checkpointer terminated the process: SystemExit({exc})")
        assert calls == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, original)


LIGHTNING_TWO_FITS = textwrap.dedent("""
    import logging, os, signal, sys
    import torch
    import lightning.pytorch as pl
    import ckptlake
    from ckptlake.torch import LakeCheckpointIO

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)
        def training_step(self, batch, idx):
            x, y = batch
            return torch.nn.functional.mse_loss(self.layer(x), y)
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    class Term(pl.Callback):
        def on_train_start(self, trainer, module):
            print("sigterm", flush=True)
            os.kill(os.getpid(), signal.SIGTERM)

    def data():
        x = torch.randn(8, 2)
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, True)),
                                           batch_size=4)

    def trainer(callbacks):
        return pl.Trainer(max_epochs=1, plugins=[io], callbacks=callbacks, logger=False,
                          enable_checkpointing=False, enable_progress_bar=False,
                          enable_model_summary=False, accelerator="cpu", devices=1,
                          default_root_dir=sys.argv[2])

    final = lambda: io.save_checkpoint({"state_dict": {}, "global_step": 99}, "final.ckpt")
    io = LakeCheckpointIO(ckptlake.open(sys.argv[1]), "pl/term", on_sigterm="save",
                          final_save=final, exit_timeout=60)
    trainer([]).fit(Tiny(), data())
    print("fit 1 done", flush=True)
    trainer([Term()]).fit(Tiny(), data())   # SIGTERM before its first save
    print("not reached", flush=True)
""")


def test_lightning_sigterm_in_the_next_fit_before_its_first_save_takes_the_final_save(
        tmp_path: Path) -> None:
    from test_lightning_step_guard import run_fit

    done, url = run_fit(tmp_path, LIGHTNING_TWO_FITS, str(tmp_path / "root"))
    assert "fit 1 done" in done.stdout and "sigterm" in done.stdout, done.stderr[-3000:]
    assert "not reached" not in done.stdout
    assert done.returncode == 143, done.stderr[-3000:]
    with ckptlake.open(url) as lake:
        assert [v.step for v in lake.versions("pl/term")] == [99], done.stderr[-3000:]


# ---- 3. HF metrics: an evaluation belongs to its own step ------------------------------------

def test_hf_latest_metrics_records_evaluations_only_at_their_step() -> None:
    pytest.importorskip("transformers")
    from ckptlake.torch.hf import latest_metrics

    history = [
        {"loss": 2.0, "grad_norm": 1.0, "learning_rate": 0.01, "epoch": 0.25, "step": 1},
        {"loss": 1.5, "epoch": 0.5, "step": 2},
        {"eval_loss": 1.25, "eval_runtime": 0.1, "eval_samples_per_second": 80.0,
         "epoch": 0.5, "step": 2},
        {"test_loss": 0.75, "test_runtime": 0.1, "step": 2},  # evaluate(metric_key_prefix=)
        {"loss": 1.25, "epoch": 0.75, "step": 3},
        {"loss": 1.0, "epoch": 1.0, "step": 4},
    ]
    at2 = latest_metrics(history, 2)
    assert at2["eval_loss"] == 1.25 and at2["test_loss"] == 0.75 and at2["loss"] == 1.5
    at4 = latest_metrics(history, 4)
    assert not any(k.startswith(("eval_", "test_")) for k in at4), at4
    assert at4 == {"loss": 1.0, "grad_norm": 1.0, "learning_rate": 0.01, "epoch": 1.0}


# ---- 4. the final save's wait for the running upload is bounded by the exit deadline -------

def test_final_save_wait_for_the_running_upload_ends_at_the_exit_deadline(
        local_lake_url: str, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    from ckptlake.core import push as push_mod

    real, entered = push_mod.push, threading.Event()
    ck: Any = None

    def slow_push(*a: Any, **k: Any) -> Any:
        if k.get("step") == 1:  # holds until the exit deadline cuts it off (or 20 s)
            entered.set()
            end = time.monotonic() + 20
            while not ck._active.cancelled and time.monotonic() < end:
                time.sleep(0.01)
        return real(*a, **k)

    monkeypatch.setattr(push_mod, "push", slow_push)
    lake = ckptlake.open(local_lake_url)
    ck = lake.checkpointer("run/final", on_busy="wait", on_sigterm="save", exit_timeout=0.2,
                           final_save=lambda: ck.save_state({"w": np.ones(8)}, step=2),
                           retention=False)
    ck.save_state({"w": np.zeros(8)}, step=1)
    assert entered.wait(60)
    with caplog.at_level(logging.DEBUG, logger="ckptlake"):
        with pytest.raises(SystemExit) as info:
            ck._terminate()  # what the SIGTERM handler runs
    assert info.value.code == 143
    assert ck.skipped == [2]
    text = caplog.text
    assert "the checkpoint at step 2 of run/final was not taken: the upload of step 1" in text
    # the deadline passed while the final save waited: the drain cuts step 1 off at once
    assert text.index("was not taken") < text.index("LOST checkpoint(s) of run/final: step 1")
    with pytest.raises(NotFound):
        lake.versions("run/final")


# ---- 5. numpy bf16/fp8 states -------------------------------------------------------------

def _save_np_bf16(lake: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A state whose numpy array is stored as BF16 with framework "np", as an ml_dtypes
    bfloat16 array is (here a uint16 array stands in for one)."""
    from ckptlake import checkpointer

    bits = np.arange(6, dtype=np.uint16).reshape(2, 3) + 0x3F80
    with monkeypatch.context() as m:
        m.setitem(checkpointer._NAMED_DTYPES, "uint16", ("BF16", 2))
        with lake.checkpointer("np/bf16", retention=False) as ck:
            ck.save_state({"w": bits, "step": 3}, step=3)
    assert lake.show("np/bf16").files  # committed
    return bits


def test_load_state_of_numpy_bf16_without_ml_dtypes_says_to_install_it(
        local_lake_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    lake = ckptlake.open(local_lake_url)
    _save_np_bf16(lake, monkeypatch)
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # not importable
    with pytest.raises(UsageError, match="ml_dtypes is not installed") as info:
        lake.load_state("np/bf16")
    assert "pip install ml_dtypes" in str(info.value)


def test_load_state_of_numpy_bf16_uses_ml_dtypes(local_lake_url: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """With a stand-in ml_dtypes module (the venv has none): the wiring, not its dtypes."""
    lake = ckptlake.open(local_lake_url)
    bits = _save_np_bf16(lake, monkeypatch)
    fake = types.ModuleType("ml_dtypes")
    fake.bfloat16 = np.dtype("<u2")  # type: ignore[attr-defined]
    fake.float8_e4m3fn = fake.float8_e5m2 = np.dtype("u1")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ml_dtypes", fake)
    out = lake.load_state("np/bf16")
    assert out["step"] == 3 and isinstance(out["w"], np.ndarray)
    assert out["w"].dtype == fake.bfloat16 and np.array_equal(out["w"], bits)


def test_load_state_round_trips_real_ml_dtypes_arrays(local_lake_url: str) -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="ml_dtypes is not installed in this "
                                    "environment; the stand-in test above covers the wiring")
    lake = ckptlake.open(local_lake_url)
    state = {"bf16": np.linspace(-2, 2, 6).astype(ml_dtypes.bfloat16),
             "e4m3": np.linspace(-2, 2, 6).astype(ml_dtypes.float8_e4m3fn),
             "e5m2": np.linspace(-2, 2, 6).astype(ml_dtypes.float8_e5m2)}
    with lake.checkpointer("np/ml", retention=False) as ck:
        ck.save_state(state, step=1)
    out = lake.load_state("np/ml")
    for key, value in state.items():
        assert out[key].dtype == value.dtype
        assert np.array_equal(out[key].view(np.uint8), value.view(np.uint8))


# ---- 6. HF: snapshot links probed into the snapshot directory ------------------------------

def _no_links_into(monkeypatch: pytest.MonkeyPatch, where: Path) -> None:
    """Hard links into `where` fail as across filesystems (EXDEV)."""
    real = os.link

    def link(src: Any, dst: Any, *a: Any, **k: Any) -> None:
        if os.path.abspath(os.fspath(dst)).startswith(str(where) + os.sep):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real(src, dst, *a, **k)

    monkeypatch.setattr(os, "link", link)


def _hf_save(cb: Any, out: Path, step: int) -> None:
    ckpt = out / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text("{}")
    (ckpt / "model.bin").write_bytes(os.urandom(1000))
    state = types.SimpleNamespace(is_world_process_zero=True, global_step=step,
                                  log_history=[{"loss": 1.0, "step": step}])
    cb.on_save(types.SimpleNamespace(output_dir=str(out)), state, None)


def test_hf_snapshot_link_is_probed_into_snapshot_dir(local_lake_url: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("transformers")
    from ckptlake.torch import LakeTrainerCallback

    out, snaps = tmp_path / "out", tmp_path / "elsewhere"
    _no_links_into(monkeypatch, snaps)
    cb = LakeTrainerCallback(local_lake_url, "hf/snap", snapshot_dir=str(snaps))
    _hf_save(cb, out, 2)
    assert cb._ck is not None and cb._ck.snapshot == "copy"
    cb.close()
    assert [r.step for r in cb.results] == [2]


def test_hf_auto_chosen_link_falls_back_to_copy(local_lake_url: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("transformers")
    from ckptlake.torch import LakeTrainerCallback

    out = tmp_path / "out"
    cb = LakeTrainerCallback(local_lake_url, "hf/fallback")
    cb.on_train_begin(types.SimpleNamespace(output_dir=str(out)),
                      types.SimpleNamespace(is_world_process_zero=True), None)
    assert cb._ck is not None and cb._ck.snapshot == "link"  # the probe linked
    _no_links_into(monkeypatch, out / ".ckptlake-snapshots")  # and then links fail
    _hf_save(cb, out, 2)
    cb.close()
    assert [r.step for r in cb.results] == [2]


# ---- 7. options checked where they are given -----------------------------------------------

@pytest.mark.parametrize("option", [{"keep_last": 0}, {"on_busy": "never"},
                                    {"exit_timeout": -1}, {"snapshot": "links"},
                                    {"progress": "yes"}, {"max_pending": 2}])
def test_hf_callback_checks_option_values_at_construction(local_lake_url: str,
                                                          option: dict[str, Any]) -> None:
    pytest.importorskip("transformers")
    from ckptlake.torch import LakeTrainerCallback

    with pytest.raises(UsageError, match=next(iter(option))):
        LakeTrainerCallback(local_lake_url, "hf/bad", **option)


def test_checkpointer_refuses_a_bad_progress_and_a_snapshot_dir_that_is_a_file(
        local_lake_url: str, tmp_path: Path) -> None:
    lake = ckptlake.open(local_lake_url)
    with pytest.raises(UsageError, match="progress"):
        lake.checkpointer("run/opt", progress="yes", retention=False)
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(UsageError, match="snapshot_dir .* is not a directory"):
        lake.checkpointer("run/opt", snapshot_dir=afile, retention=False)


@pytest.mark.parametrize("filename", ["a\x00b.safetensors", "x" * 250 + ".safetensors",
                                      "bad\udcff.safetensors"])
def test_save_state_refuses_a_bad_filename_before_copying(local_lake_url: str, tmp_path: Path,
                                                         filename: str) -> None:
    lake = ckptlake.open(local_lake_url)
    snaps = tmp_path / "snaps"
    with lake.checkpointer("run/fname", snapshot_dir=snaps, retention=False) as ck:
        with pytest.raises(UsageError, match="filename"):
            ck.save_state({"w": np.zeros(4)}, step=1, filename=filename)
        assert ck.pending == 0
    assert not snaps.exists() or not any(snaps.iterdir())
    with pytest.raises(NotFound):
        lake.versions("run/fname")


def test_a_torn_down_plugin_leaves_no_checkpointer_thread(local_lake_url: str) -> None:
    """Making the next checkpointer at every teardown left one thread per torn-down plugin (a
    hyperparameter sweep of 5 trials: 5 threads) and did store reads on Lightning's SIGTERM
    exit path; the next one is made by the next save, or by a SIGTERM that needs it."""
    from ckptlake.torch.lightning import LakeCheckpointIO

    def checkpointer_threads() -> int:
        return sum(1 for t in threading.enumerate() if t.name.startswith("ckptlake-checkpointer")
                   and t.is_alive())

    before = checkpointer_threads()
    lake = ckptlake.open(local_lake_url)
    for _ in range(3):
        LakeCheckpointIO(lake, "pl/trial").teardown()
    deadline = time.monotonic() + 10
    while checkpointer_threads() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert checkpointer_threads() == before


def test_a_sigterm_during_a_save_waiting_for_room_keeps_the_exit_deadline(
        local_lake_url: str, monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    """The loop's save waits for the running upload (on_busy="wait"); a SIGTERM then only set
    a flag, and the exit deadline started after that whole upload (19 s past exit_timeout 1 s
    in the review).  Now the deadline starts at the signal and the waiting save gives up."""
    from ckptlake import checkpointer as ck_mod

    monkeypatch.setattr(ck_mod, "CUTOFF_GRACE", 0.2)  # the deadline's grace: a fast test

    release = hold_push(monkeypatch, step=1)
    lake = ckptlake.open(local_lake_url)
    ck = lake.checkpointer("run/room", on_sigterm="wait", exit_timeout=0.2)
    try:
        ck.save_state({"w": [1.0]}, step=1)
        threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
        with caplog.at_level(logging.ERROR, logger="ckptlake"), \
                pytest.raises(SystemExit) as exited:
            ck.save_state({"w": [2.0]}, step=2)  # waits for step 1's upload: room
        assert exited.value.code == 143
        assert "the checkpoint at step 2 of run/room was not taken" in caplog.text
    finally:
        release.set()


def test_a_sigterm_during_a_slow_host_copy_counts_the_deadline_from_the_signal(
        local_lake_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: Any) -> None:
    """A SIGTERM while the main thread's save copies its snapshot: that save is finished, but
    the exit deadline runs from the signal, so a copy outlasting exit_timeout leaves its upload
    no time: it is cut off and logged as LOST (documented in the module docstring and README).
    A deadline restarted after the copy would let this 0.3 s upload commit."""
    from ckptlake import checkpointer as ck_mod
    from ckptlake.core import push as push_mod

    monkeypatch.setattr(ck_mod, "CUTOFF_GRACE", 0.2)
    real_materialize, real_push = ck_mod._materialize, push_mod.push

    def slow_copy(*a: Any, **k: Any) -> Any:
        time.sleep(1.0)  # the SIGTERM comes in here
        return real_materialize(*a, **k)

    def short_upload(*a: Any, **k: Any) -> Any:
        time.sleep(0.3)
        return real_push(*a, **k)

    monkeypatch.setattr(ck_mod, "_materialize", slow_copy)
    monkeypatch.setattr(push_mod, "push", short_upload)
    src = tmp_path / "ckpt"
    src.mkdir()
    (src / "w.bin").write_bytes(b"w" * 4096)
    lake = ckptlake.open(local_lake_url)
    ck = lake.checkpointer("run/slowcopy", on_sigterm="wait", exit_timeout=0.5,
                           snapshot="copy")
    timer = threading.Timer(0.2, lambda: os.kill(os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        with caplog.at_level(logging.WARNING, logger="ckptlake"), \
                pytest.raises(SystemExit) as exited:
            ck.save(src, step=1)
    finally:
        timer.cancel()
    assert exited.value.code == 143
    assert "SIGTERM during a save of run/slowcopy" in caplog.text
    assert "LOST checkpoint(s) of run/slowcopy: step 1" in caplog.text, caplog.text
    assert "from the signal" in caplog.text, caplog.text
    with pytest.raises(NotFound):
        lake.versions("run/slowcopy")


def test_close_after_the_sigterm_drain_does_not_wait_for_a_cut_off_upload(
        local_lake_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`with lake.checkpointer(...)` (and Lightning's teardown) closes on the way out of a
    SIGTERM: close() waited for the upload the drain had just cut off, stalled in a request
    (until read_timeout), past the promised exit deadline."""
    from ckptlake import checkpointer as ck_mod

    monkeypatch.setattr(ck_mod, "CUTOFF_GRACE", 0.2)  # the deadline's grace: a fast test

    release = hold_push(monkeypatch)
    watchdog = threading.Timer(15, release.set)  # ends the stall: a close waiting for it
    watchdog.start()                             # returns only after this
    lake = ckptlake.open(local_lake_url)
    closed_before_release: list[bool] = []
    try:
        with pytest.raises(SystemExit):
            with lake.checkpointer("run/stall", on_sigterm="wait", exit_timeout=0.2) as ck:
                ck.save_state({"w": [1.0]}, step=1)
                threading.Timer(0.2, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
                time.sleep(20)  # the signal interrupts this; the drain cuts step 1 off
        closed_before_release.append(not release.is_set())
    finally:
        release.set()
        watchdog.cancel()
    assert closed_before_release == [True]


def test_lightning_sync_upload_final_save_keeps_the_exit_deadline(
        local_lake_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """async_upload=False with on_sigterm="save": the final save waited for its own upload
    without bound inside save_checkpoint (8 s past exit_timeout 1 s in the review); the exit
    drain waits for it, up to the deadline."""
    pytest.importorskip("lightning.pytorch")
    from ckptlake import checkpointer as ck_mod
    from ckptlake.torch import LakeCheckpointIO

    monkeypatch.setattr(ck_mod, "CUTOFF_GRACE", 0.2)
    release = hold_push(monkeypatch, step=99)
    watchdog = threading.Timer(15, release.set)  # a wait for the stalled upload ends here
    watchdog.start()
    lake = ckptlake.open(local_lake_url)
    final = str(tmp_path / "preempt.ckpt")
    io: Any = None
    io = LakeCheckpointIO(lake, "pl/sync", async_upload=False, on_sigterm="save",
                          exit_timeout=0.2,
                          final_save=lambda: io.save_checkpoint(_lightning_ckpt(final, 99, None),
                                                                final))
    exited_before_release: list[bool] = []
    try:
        threading.Timer(0.2, lambda: os.kill(os.getpid(), signal.SIGTERM)).start()
        with pytest.raises(SystemExit) as exited:
            time.sleep(20)  # the training loop; the signal interrupts it
        exited_before_release.append(not release.is_set())
        assert exited.value.code == 143
    finally:
        release.set()
        watchdog.cancel()
    assert exited_before_release == [True]


REVIVE_TWICE = textwrap.dedent('''
    import os, signal, sys
    import ckptlake
    lake = ckptlake.open(sys.argv[1])
    finals = []
    ck1 = lake.checkpointer("c/rv", on_sigterm="save", exit_timeout=2,
                            final_save=lambda: finals.append("ck1"))
    mine = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda s, f: mine(s, f))  # a wrapper over it (Lightning's)
    ck1.close()  # cannot restore: another handler is installed
    signal.signal(signal.SIGTERM, mine)  # the wrapper puts the closed one's back

    def revive():
        os.kill(os.getpid(), signal.SIGTERM)  # a second SIGTERM while the next one is made
        ck2 = lake.checkpointer("c/rv", on_sigterm="save", exit_timeout=2,
                                final_save=lambda: (finals.append("ck2"), print("final ck2",
                                                    flush=True)))
        ck2._take_over(ck1)
        return ck2

    ck1._revive = revive
    os.kill(os.getpid(), signal.SIGTERM)
    print("not reached", flush=True)
''')


def test_a_second_sigterm_while_the_next_checkpointer_is_made_is_no_death(
        tmp_path: Path) -> None:
    """A SIGTERM reaching a closed checkpointer makes the next one (_revive); a second
    SIGTERM meanwhile found no successor and fell to the default action: death, no final
    save."""
    script = tmp_path / "revive.py"
    script.write_text(REVIVE_TWICE)
    done = subprocess.run([sys.executable, str(script), (tmp_path / "lake").as_uri()],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 143, (done.returncode, done.stdout, done.stderr[-2000:])
    assert "final ck2" in done.stdout and "not reached" not in done.stdout


def test_a_sigterm_during_a_worker_threads_save_skips_none_of_its_saves(
        local_lake_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The exit deadline started at a SIGTERM during any thread's save, but only the main
    thread's save acts on the signal: a worker's later saves waiting for room were all
    dropped ("not taken") and the process did not exit either.  Now the worker's save under
    way is let finish, its upload is waited for, and the process exits 143."""
    from ckptlake.core import push as push_mod

    real = push_mod.push

    def slow_push(*a: Any, **k: Any) -> Any:
        time.sleep(0.3)
        return real(*a, **k)

    monkeypatch.setattr(push_mod, "push", slow_push)
    lake = ckptlake.open(local_lake_url)
    ck = lake.checkpointer("run/worker", on_sigterm="wait", exit_timeout=20)
    fired = threading.Event()
    results: list[bool] = []

    real_workdir = ck._new_workdir

    def workdir(base: str) -> str:  # inside save_state, its lock held: the signal comes now
        if len(results) == 2 and not fired.is_set():
            fired.set()
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.3)  # the main thread runs the handler meanwhile
        return real_workdir(base)

    ck._new_workdir = workdir  # type: ignore[method-assign]
    stop = threading.Event()

    def worker() -> None:
        for step in range(1, 5):
            if stop.is_set():
                return
            results.append(ck.save_state({"w": [float(step)]}, step=step) is not None)

    t = threading.Thread(target=worker)
    t.start()
    deadline = time.monotonic() + 30
    with pytest.raises(SystemExit) as exited:
        while t.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)  # the main thread runs the handler here
    stop.set()
    t.join(10)
    assert exited.value.code == 143
    assert ck.skipped == []
    # the save under way at the signal (step 3) was finished and uploaded before the exit
    assert [v.step for v in lake.versions("run/worker")][:3] == [1, 2, 3]
