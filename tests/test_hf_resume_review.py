"""Review of the HF Trainer resume path: pull_for_resume leaves nothing of another run in the
checkpoint directory (the Trainer loads scaler.pt / rng_state_<rank>.pth whenever present), and a
pull's conflict names the version and the spelling of `force` its caller can use.

The Trainer tests use a 2-layer GPT-2 built from a config on CPU (as tests/test_torch_hf.py);
the conflict wording tests need no torch.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import ckptlake
from ckptlake.errors import EXIT_CONFLICT, Conflict

ART = "tiny/run"


def _hf() -> tuple[Any, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    return torch, transformers


@pytest.fixture
def trained(tmp_path: Path, local_lake_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A lake holding the Trainer's checkpoint of step 2 (pushed by LakeTrainerCallback)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch, transformers = _hf()
    from ckptlake.torch import LakeTrainerCallback

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        lake = ckptlake.open(local_lake_url)
        cb = LakeTrainerCallback(lake, ART)
        _trainer(tmp_path / "a", [cb], max_steps=2).train()
        yield lake
    finally:
        torch.set_num_threads(threads)


class _Data:
    def __init__(self) -> None:
        torch, _ = _hf()
        g = torch.Generator().manual_seed(0)
        self.x = torch.randint(0, 64, (16, 16), generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.x[i], "labels": self.x[i]}


def _trainer(out: Path, callbacks: list[Any], *, max_steps: int) -> Any:
    torch, transformers = _hf()
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=2,
                                     n_head=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                     bos_token_id=0, eos_token_id=0)
    targs = transformers.TrainingArguments(
        output_dir=str(out), max_steps=max_steps, save_steps=2, logging_steps=1,
        per_device_train_batch_size=4, learning_rate=1e-2, report_to=[], use_cpu=True, seed=0,
        disable_tqdm=True)
    return transformers.Trainer(model=transformers.GPT2LMHeadModel(config), args=targs,
                                train_dataset=_Data(), callbacks=callbacks)


def _version_files(lake: Any) -> set[str]:
    return {e["path"] for e in lake.show(f"{ART}@step=2").files}


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if not p.is_dir()}


def _leftovers(ckpt: Path) -> None:
    """What an earlier run left in checkpoint-2: files the Trainer loads if present."""
    ckpt.mkdir(parents=True)
    (ckpt / "scaler.pt").write_bytes(b"junk scaler of another run")
    (ckpt / "rng_state_0.pth").write_bytes(b"old rng state")
    (ckpt / "global_step2").mkdir()
    (ckpt / "global_step2" / "zero_pp_rank_0.pt").write_bytes(b"old deepspeed state")


def test_pull_for_resume_refuses_files_the_version_lacks(trained: Any, tmp_path: Path) -> None:
    from ckptlake.torch import pull_for_resume

    ckpt = tmp_path / "b" / "checkpoint-2"
    _leftovers(ckpt)
    before = _tree(ckpt)
    with pytest.raises(Conflict) as info:
        pull_for_resume(trained, f"{ART}@step=2", tmp_path / "b")
    message = str(info.value)
    assert info.value.exit_code == EXIT_CONFLICT
    assert f"{ART}@v1" in message and "is not part of" in message, message
    assert str(ckpt / "rng_state_0.pth") in message and "(and 2 more)" in message, message
    assert "force=True" in message and "--force" not in message, message
    assert "\n" not in message
    assert _tree(ckpt) == before  # refused before anything was placed


def test_pull_for_resume_force_leaves_exactly_the_version(trained: Any, tmp_path: Path) -> None:
    from ckptlake.torch import pull_for_resume

    ckpt = tmp_path / "b" / "checkpoint-2"
    _leftovers(ckpt)
    (ckpt / "trainer_state.json").write_text("{}")  # a file the version has, differing
    path = pull_for_resume(trained, f"{ART}@step=2", tmp_path / "b", force=True)
    assert path == str(ckpt)
    assert _tree(ckpt) == _version_files(trained)
    assert not (ckpt / "global_step2").exists()
    # a re-run finds nothing to refuse; an interrupted pull's staging is no leftover
    staging = ckpt / ".ckptlake-pull-0123456789ab"
    staging.mkdir()
    assert pull_for_resume(trained, f"{ART}@step=2", tmp_path / "b") == path
    assert staging.is_dir()
    staging.rmdir()
    # and the Trainer resumes from it
    resumed = _trainer(tmp_path / "b", [], max_steps=3)
    resumed.train(resume_from_checkpoint=path)
    assert resumed.state.global_step == 3


# ---- item 2: the conflict names the version and the caller's spelling of force ---------------

@pytest.fixture
def pulled(tmp_path: Path, local_lake_url: str) -> tuple[Any, Path]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.safetensors").write_bytes(b"weights v1" * 100)
    (src / "config.json").write_text("{}")
    lake = ckptlake.open(local_lake_url)
    lake.push(src, "gpt2/ckpt", step=9)
    dest = tmp_path / "out"
    lake.pull("gpt2/ckpt@step=9", dest)
    (dest / "model.safetensors").write_bytes(b"edited locally")
    return lake, dest


def test_library_conflict_names_the_version_and_force_keyword(pulled: tuple[Any, Path]) -> None:
    lake, dest = pulled
    with pytest.raises(Conflict) as info:
        lake.pull("gpt2/ckpt@step=9", dest)
    message = str(info.value)
    assert "gpt2/ckpt@v1" in message and str(dest / "model.safetensors") in message, message
    assert "use force=True to overwrite" in message and "--force" not in message, message
    assert (dest / "model.safetensors").read_bytes() == b"edited locally"


def test_cli_spelling_of_force_is_passed_through(pulled: tuple[Any, Path]) -> None:
    """The CLI's spelling reaches the hint (cli/pull.py passes _force_flag="--force")."""
    lake, dest = pulled
    with pytest.raises(Conflict) as info:
        lake.pull("gpt2/ckpt@step=9", dest, _force_flag="--force")
    message = str(info.value)
    assert "gpt2/ckpt@v1" in message and "use --force to overwrite" in message, message
    assert "force=True" not in message


def test_force_keeps_the_files_placed_through_a_link_to_a_directory_inside(
        tmp_path: Path, local_lake_url: str) -> None:
    """A link in checkpoint-N to a directory inside it is that directory to the pull, which
    put the version's sub/ files in the link's target; force then removed the target as a
    leftover, and the files with it."""
    pytest.importorskip("transformers")
    import ckptlake
    from ckptlake.torch.hf import pull_for_resume

    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "trainer_state.json").write_text("{}")
    (src / "sub" / "a.bin").write_bytes(b"weights")
    with ckptlake.open(local_lake_url) as lake:
        lake.push(src, "hf/run", step=2)
        ckpt = tmp_path / "out" / "checkpoint-2"
        (ckpt / "real_sub").mkdir(parents=True)
        (ckpt / "sub").symlink_to("real_sub")
        (ckpt / "stray.pt").write_bytes(b"x")
        pull_for_resume(lake, "hf/run@v1", tmp_path / "out", force=True)
    assert (ckpt / "sub" / "a.bin").read_bytes() == b"weights"
    assert not (ckpt / "stray.pt").exists()
