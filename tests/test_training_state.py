"""Full training state through save_state/load_state (issue 15, item 2): nested structures with
any keys, tensors anywhere, plain values, RNG states; no pickle on the read path."""
from __future__ import annotations

import json
import math
import random
from typing import Any, Iterator

import pytest

import ckptlake
from ckptlake.checkpointer import host_copy, write_safetensors
from ckptlake.errors import NotFound, UsageError

np = pytest.importorskip("numpy")

ART = "run/state"


@pytest.fixture
def lake(local_lake_url: str) -> Iterator[ckptlake.Lake]:
    with ckptlake.open(local_lake_url) as lk:
        yield lk


def assert_same(a: Any, b: Any, path: str = "") -> None:
    """Deep equality with the types: torch.equal / array_equal on tensors, == elsewhere."""
    torch = __import__("sys").modules.get("torch")
    assert type(a) is type(b), f"{path}: {type(a)} != {type(b)}"
    if torch is not None and isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), path
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), path
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{path}: keys {list(a)} != {list(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{path}/{k!r}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}/{i}")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), path
    else:
        assert a == b, path


def torch_training_state() -> dict[str, Any]:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8),
                                torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 4)).pow(2).mean().backward()
        opt.step()
        sched.step()
    return {"model": model.state_dict(), "optim": opt.state_dict(), "sched": sched.state_dict(),
            "step": 3, "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                               "python": random.getstate()},
            "half": torch.tensor([1.5, -2.25], dtype=torch.bfloat16)}


def test_torch_model_adamw_scheduler_rng_round_trip(lake) -> None:
    torch = pytest.importorskip("torch")
    state = torch_training_state()
    assert 0 in state["optim"]["state"]  # int keys: what the old flat format refused
    with lake.checkpointer(ART) as ck:
        ck.save_state(state, step=3)
    got = lake.load_state(ART)
    assert_same(state, got)
    assert isinstance(got["optim"]["param_groups"][0]["betas"], tuple)
    assert got["model"]._metadata == state["model"]._metadata  # torch's state_dict versions
    # The tensors are in the safetensors file, named by their path (diff/partial reads).
    one = lake.tensors(ART, "optim/state/0/exp_avg", framework="pt")
    assert torch.equal(one["optim/state/0/exp_avg"], state["optim"]["state"][0]["exp_avg"])
    assert lake.load_state(ART, map_location="cpu")["model"]["0.weight"].device.type == "cpu"


def test_plain_values_numpy_and_special_floats_round_trip(lake) -> None:
    state = {"a": {1: np.arange(3, dtype=np.int16), "1": "str key", None: None, True: [1, 2.5]},
             "t": (1, (2, "x"), np.float32(0.5)), "nan": math.nan, "inf": -math.inf,
             "big": 2**70, "empty": {}, "nested": [[], [np.zeros((0, 2), np.float64)]],
             "be": np.arange(4, dtype=">i4").astype(np.int32), "u": "ünïcode/~slash"}
    with lake.checkpointer(ART) as ck:
        ck.save_state(state)
    got = lake.load_state(ART)
    assert_same(state, got)
    assert isinstance(got["t"][2], np.float32)


def test_unsupported_leaf_names_its_path(lake) -> None:
    class Thing:
        pass

    with lake.checkpointer(ART) as ck:
        with pytest.raises(UsageError, match="opt/state/0/weird"):
            ck.save_state({"opt": {"state": {0: {"weird": Thing()}}}})
        with pytest.raises(UsageError, match="key"):
            ck.save_state({"a": {(1, 2): 3}})
    with pytest.raises(NotFound):  # nothing was committed
        lake.versions(ART)


def test_second_save_of_the_same_state_uploads_no_data(lake) -> None:
    pytest.importorskip("torch")
    state = torch_training_state()
    with lake.checkpointer(ART) as ck:
        ck.save_state(state, step=3).result(60)
        second = ck.save_state(state, step=3).result(60)
    assert ck.results[0].bytes_uploaded > 0
    assert second.bytes_uploaded == 0


def test_old_flat_format_still_loads(lake, tmp_path) -> None:
    # What save_state wrote before the skeleton: one safetensors file, "."-joined names,
    # numbers as 0-d tensors, {"format": "np"} as header metadata.
    tensors, fmt = host_copy({"model": {"w": np.arange(6, dtype=np.float32)}, "step": 7})
    (tmp_path / "old").mkdir()
    write_safetensors(str(tmp_path / "old" / "model.safetensors"), tensors,
                      metadata={"format": fmt})
    lake.push(tmp_path / "old", ART)
    got = lake.load_state(ART)
    assert set(got) == {"model.w", "step"}
    assert np.array_equal(got["model.w"], np.arange(6, dtype=np.float32))
    assert int(got["step"]) == 7


def test_not_a_state_and_missing_refs_are_typed_errors(lake, tmp_path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("hello")
    lake.push(tmp_path / "d", "run/files")
    with pytest.raises(UsageError, match=r"run/files@v1 is not a training state"):
        lake.load_state("run/files")
    with pytest.raises(NotFound):
        lake.load_state("run/files@v9")
    with pytest.raises(NotFound):
        lake.load_state("run/nothing")


def test_skeleton_is_plain_json_and_never_executes(lake, tmp_path) -> None:
    with lake.checkpointer(ART) as ck:
        ck.save_state({"x": np.ones(2), "k": {3: "v"}})
    lake.pull(ART, tmp_path / "r")
    skeleton = json.loads((tmp_path / "r" / "ckptlake-state.json").read_text())
    assert skeleton == {"ckptlake_state": 1, "file": "model.safetensors", "root": {"$dict": [
        ["x", {"$tensor": "x", "framework": "np"}], ["k", {"$dict": [[3, "v"]]}]]}}


def test_skeleton_decoding_refuses_unknown_nodes_and_versions() -> None:
    from ckptlake.format import state

    what = "run/state@v1"
    with pytest.raises(UsageError, match="not supported"):
        state.parse(b'{"ckptlake_state": 2, "root": null}', what)
    with pytest.raises(UsageError, match="unknown node"):
        state.decode({"root": {"$pickle": "gASV"}}, {}, what)
    with pytest.raises(UsageError, match="missing"):
        state.decode({"root": {"$tensor": "x", "framework": "np"}}, {}, what)
    assert state.decode(state.parse(b'{"ckptlake_state": 1, "root": {"$dict": [[1, '
                                    b'{"$float": "inf"}]]}}', what), {}, what) == {1: math.inf}
