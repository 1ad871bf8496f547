"""ckptlake.torch + HF transformers: LakeTrainerCallback and pull_for_resume with a real Trainer.

The model is a 2-layer GPT-2 built from a config (vocab 64, hidden 32, no dropout) on CPU, the
data a fixed in-memory set of token sequences: nothing is downloaded (HF_HUB_OFFLINE=1) and
nothing is reported (report_to=[]).
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # the Trainer needs it

import ckptlake  # noqa: E402
from ckptlake.errors import EXIT_NOT_FOUND, EXIT_USAGE, NotFound, TransferError  # noqa: E402
from ckptlake.torch import (LakeTrainerCallback, NotATrainerCheckpoint,  # noqa: E402
                            pull_for_resume)
from ckptlake.torch.hf import latest_metrics  # noqa: E402

ART = "tiny/run"


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: more threads only contend on a shared machine
    yield
    torch.set_num_threads(threads)


class _Data(torch.utils.data.Dataset):
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randint(0, 64, (32, 16), generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.x[i], "labels": self.x[i]}


def _model() -> Any:
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=2,
                                     n_head=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                     bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config)


def _trainer(out: Path, callbacks: list[Any], *, max_steps: int = 4, save_steps: int = 2,
             **args: Any) -> Any:
    targs = transformers.TrainingArguments(
        output_dir=str(out), max_steps=max_steps, save_steps=save_steps, logging_steps=1,
        per_device_train_batch_size=4, learning_rate=1e-2, report_to=[], use_cpu=True, seed=0,
        disable_tqdm=True, **args)
    return transformers.Trainer(model=_model(), args=targs, train_dataset=_Data(),
                                callbacks=callbacks)


class _Capture(transformers.TrainerCallback):
    """Model and optimizer state at each save (the run that saves) or at the first step (the
    run that resumes)."""

    def __init__(self) -> None:
        self.saved: dict[int, dict[str, Any]] = {}
        self.first_step: dict[str, Any] | None = None

    @staticmethod
    def _state(step: int, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {"step": step,
                "model": copy.deepcopy(kwargs["model"].state_dict()),
                "optim": copy.deepcopy(kwargs["optimizer"].state_dict())}

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.saved[state.global_step] = self._state(state.global_step, kwargs)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.first_step is None:
            self.first_step = self._state(state.global_step, kwargs)


def _assert_equal(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _assert_equal(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_equal(x, y, f"{where}/{i}")
    else:
        assert a == b, where


# ---- pushing every checkpoint, resuming from one ----------------------------------------------

def test_every_checkpoint_is_a_version_and_training_resumes_from_one(lake_url: str,
                                                                     tmp_path: Path) -> None:
    lake = ckptlake.open(lake_url)
    cb, cap = LakeTrainerCallback(lake, ART, aliases=["hf-latest"]), _Capture()
    # save_total_limit=1: the Trainer deletes each older local directory right before the
    # next on_save; the lake must still get every checkpoint, whole.
    trainer = _trainer(tmp_path / "a", [cb, cap], save_total_limit=1)
    trainer.train()
    assert sorted(os.listdir(tmp_path / "a")) == ["checkpoint-4"]  # nothing of ours left there

    versions = lake.versions(ART)
    assert [(v.version, v.step) for v in versions] == [(1, 2), (2, 4)]
    assert [r.step for r in cb.results] == [2, 4]
    history = trainer.state.log_history
    for v in versions:
        logged = [e for e in history if e.get("step") == v.step and "loss" in e][-1]
        assert v.metrics["loss"] == pytest.approx(logged["loss"])
        assert v.metrics["learning_rate"] == pytest.approx(logged["learning_rate"])
        assert v.metrics["epoch"] == pytest.approx(logged["epoch"])
        assert "step" not in v.metrics
        assert v.metadata["framework"] == f"transformers {transformers.__version__}"
    assert lake.resolve(f"{ART}@hf-latest").step == 4
    files = {f["path"] for f in lake.files(f"{ART}@step=2")["files"]}
    assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json",
            "rng_state.pth"} <= files

    # Resume from step 2 (its local directory is gone) into a fresh output dir.
    path = pull_for_resume(lake, f"{ART}@step=2", tmp_path / "b")
    assert path == str(tmp_path / "b" / "checkpoint-2")
    cap_b = _Capture()
    resumed = _trainer(tmp_path / "b", [cap_b])
    resumed.train(resume_from_checkpoint=path)
    assert cap_b.first_step is not None and cap_b.first_step["step"] == 2
    _assert_equal(cap_b.first_step["model"], cap.saved[2]["model"], "model")
    _assert_equal(cap_b.first_step["optim"], cap.saved[2]["optim"], "optim")
    assert resumed.state.global_step == 4
    # Same data order, RNG and scheduler: the resumed run ends where the uninterrupted one did.
    _assert_equal(resumed.model.state_dict(), trainer.model.state_dict(), "final")


def test_local_rotation_during_uploads_and_lake_retention(local_lake_url: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from ckptlake.core import push as push_mod

    real, gone_before_upload = push_mod.push, {}

    def slow_push(store: Any, tree: Any, artifact: str, **kw: Any) -> Any:
        # Upload steps 1 and 2 only once save_total_limit=1 has deleted their directories
        # (the Trainer does so when it saves the next step, while this upload is pending).
        local = tmp_path / "a" / f"checkpoint-{kw['step']}"
        for _ in range(600):
            if kw["step"] == 3 or not local.exists():
                break
            time.sleep(0.05)
        gone_before_upload[kw["step"]] = not local.exists()
        return real(store, tree, artifact, **kw)

    monkeypatch.setattr(push_mod, "push", slow_push)
    lake = ckptlake.open(local_lake_url)
    cb = LakeTrainerCallback(lake, ART, keep_last=2)
    _trainer(tmp_path / "a", [cb], max_steps=3, save_steps=1, save_total_limit=1).train()
    assert gone_before_upload == {1: True, 2: True, 3: False}
    assert [v.step for v in lake.versions(ART)] == [2, 3]  # keep_last, after each commit
    # Whole, although its local copy was deleted before its upload began: step 2 verifies and
    # holds the Trainer's state of step 2.
    assert lake.verify(f"{ART}@step=2", read_data=True).ok
    pulled = Path(pull_for_resume(lake, f"{ART}@step=2", tmp_path / "check"))
    assert json.loads((pulled / "trainer_state.json").read_text())["global_step"] == 2
    assert len(cb.results) == 3
    assert sorted(os.listdir(tmp_path / "a")) == ["checkpoint-3"]
    # Pulled into the output dir: resume_from_checkpoint=True finds it, like a local one.
    out = tmp_path / "b"
    assert pull_for_resume(lake, f"{ART}@step=2", out).endswith("checkpoint-2")
    assert pull_for_resume(lake, f"{ART}@step=2", out).endswith("checkpoint-2")  # idempotent
    cap = _Capture()
    _trainer(out, [cap], max_steps=3, save_steps=10).train(resume_from_checkpoint=True)
    assert cap.first_step is not None and cap.first_step["step"] == 2


# ---- failures ----------------------------------------------------------------------------------

def _failing_push(monkeypatch: pytest.MonkeyPatch, fail_steps: set[int]) -> list[int]:
    from ckptlake.core import push as push_mod

    real, attempted = push_mod.push, []

    def push(store: Any, tree: Any, artifact: str, **kw: Any) -> Any:
        attempted.append(kw["step"])
        if kw["step"] in fail_steps:
            raise TransferError(f"injected: the lake is down at step {kw['step']}")
        return real(store, tree, artifact, **kw)

    monkeypatch.setattr(push_mod, "push", push)
    return attempted


def test_a_failed_upload_is_raised_by_the_next_save(local_lake_url: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    attempted = _failing_push(monkeypatch, {1})
    lake = ckptlake.open(local_lake_url)
    cb = LakeTrainerCallback(lake, ART)
    with pytest.raises(TransferError, match="lake is down at step 1") as info:
        _trainer(tmp_path / "a", [cb], max_steps=3, save_steps=1).train()
    assert any("background upload of tiny/run step 1" in n
               for n in getattr(info.value, "__notes__", []))
    assert attempted == [1]  # raised at step 2's on_save, before it was taken
    assert not lake.exists() or lake.versions(ART) == []


def test_a_failed_last_upload_is_raised_by_train_end(local_lake_url: str, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    attempted = _failing_push(monkeypatch, {2})
    lake = ckptlake.open(local_lake_url)
    cb = LakeTrainerCallback(lake, ART)
    with pytest.raises(TransferError, match="lake is down at step 2"):
        _trainer(tmp_path / "a", [cb], max_steps=2, save_steps=1).train()
    assert attempted == [1, 2]
    assert [v.step for v in lake.versions(ART)] == [1]
    assert [r.step for r in cb.results] == [1]


def test_resume_refs_that_do_not_work_are_typed_errors(local_lake_url: str,
                                                       tmp_path: Path) -> None:
    lake = ckptlake.open(local_lake_url)
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "weights.bin").write_bytes(b"x" * 100)
    lake.push(plain, ART, step=7)
    with pytest.raises(NotFound, match=r"tiny/run has no version with step 9") as e:
        pull_for_resume(lake, f"{ART}@step=9", tmp_path / "out")
    assert e.value.exit_code == EXIT_NOT_FOUND
    with pytest.raises(NotFound, match="no/such"):  # a lake URL works as well as a Lake
        pull_for_resume(local_lake_url, "no/such", tmp_path / "out")
    with pytest.raises(NotATrainerCheckpoint, match=r"tiny/run@v1 .*no trainer_state.json") as e:
        pull_for_resume(lake, ART, tmp_path / "out")
    assert e.value.exit_code == EXIT_USAGE
    assert not (tmp_path / "out").exists()  # nothing pulled for a ref that cannot resume
    with pytest.raises(ckptlake.UsageError, match="segment"):
        LakeTrainerCallback(lake, "bad name")
    with pytest.raises(ckptlake.UsageError, match="keep_lats"):
        LakeTrainerCallback(lake, ART, keep_lats=3)
    # A bad option value fails when training begins, before any step or checkpoint.
    with pytest.raises(ckptlake.UsageError, match="keep_last must be an integer >= 1"):
        _trainer(tmp_path / "t", [LakeTrainerCallback(lake, ART, keep_last=0)],
                 max_steps=1, save_steps=1).train()
    assert not list((tmp_path / "t").glob("checkpoint-*"))


# ---- small pieces ------------------------------------------------------------------------------

def test_latest_metrics_keeps_the_newest_finite_value_of_each() -> None:
    history = [{"loss": 3.0, "learning_rate": 0.1, "epoch": 0.1, "step": 1},
               {"eval_loss": 2.5, "epoch": 0.2, "step": 2},
               {"loss": float("nan"), "grad_norm": 1.0, "tag": "x", "flag": True, "step": 3},
               {"loss": 1.0, "step": 9}]
    # an evaluation's metrics belong to its own step only (test_torch_review.py)
    assert latest_metrics(history, 3) == {"learning_rate": 0.1, "epoch": 0.2,
                                          "grad_norm": 1.0}
    assert latest_metrics(history, 2)["eval_loss"] == 2.5
    assert latest_metrics(history, 9)["loss"] == 1.0


def test_ckptlake_torch_needs_transformers_only_for_its_names() -> None:
    # In a process where transformers cannot be imported: ckptlake.torch (DCP) still works,
    # and the Trainer names fail with an ImportError that says what to install.
    code = "\n".join([
        "import sys",
        "class Block:",
        "    def find_spec(self, name, path=None, target=None):",
        "        if name.split('.')[0] in ('transformers', 'accelerate'):",
        "            raise ImportError('blocked: ' + name)",
        "sys.meta_path.insert(0, Block())",
        "import ckptlake.torch",
        "from ckptlake.torch import LakeWriter",
        "try:",
        "    from ckptlake.torch import LakeTrainerCallback",
        "except ImportError as e:",
        "    print('ImportError:', e)",
        "assert 'transformers' not in sys.modules"])
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    assert "pip install 'ckptlake[hf]'" in out, out


def test_a_failure_raised_by_on_save_closes_the_checkpointer(
        local_lake_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Training ends with the raised failure, so on_train_end never closes the checkpointer:
    on_save does, leaving no snapshot directory in output_dir."""
    _failing_push(monkeypatch, {1})
    cb = LakeTrainerCallback(ckptlake.open(local_lake_url), ART)
    with pytest.raises(TransferError, match="lake is down at step 1"):
        _trainer(tmp_path / "a", [cb], max_steps=3, save_steps=1).train()
    assert cb._ck is None
    assert not (tmp_path / "a" / ".ckptlake-snapshots").exists()
    assert cb.close() == []  # nothing left to wait for, nothing raised again
