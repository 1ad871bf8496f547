"""ckptlake.torch.staging: the copy `dcp.async_save` stages with LakeWriter."""
from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")

from ckptlake.torch import staging  # noqa: E402


@pytest.fixture(autouse=True)
def _empty_cache() -> Any:
    staging.clear_cache()
    yield
    staging.clear_cache()


def _state() -> dict[str, Any]:
    big = torch.arange(3 * (staging.SLICE_BYTES // 4) + 5, dtype=torch.float32)  # sliced copy
    return {"model": {"w": big, "p": torch.nn.Parameter(torch.ones(4, 3)),
                      "t": torch.arange(12.0).reshape(3, 4).t()},  # not contiguous
            "optim": [{"step": 7, "m": torch.zeros(5)}], "name": "run", "pair": (1, torch.ones(2))}


def _tensors(v: Any) -> list[Any]:
    if isinstance(v, dict):
        return [t for x in v.values() for t in _tensors(x)]
    if isinstance(v, (list, tuple)):
        return [t for x in v for t in _tensors(x)]
    return [v] if isinstance(v, torch.Tensor) else []


def _unreachable(_: Any) -> Any:
    raise AssertionError("fallback used")


@pytest.mark.parametrize("threads", [1, 3])
def test_staged_copy_is_equal_and_never_aliases_the_source(threads: int) -> None:
    src = _state()
    st = staging.stage(src, cache_key=None, fallback=_unreachable, threads=threads)
    out = st.state
    assert out["name"] == "run" and out["optim"][0]["step"] == 7 and out["pair"][0] == 1
    for a, b in zip(_tensors(src), _tensors(out), strict=True):
        assert torch.equal(a, b) and a.dtype == b.dtype
        assert a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr()
        assert not b.requires_grad
    # the training loop goes on mutating its tensors: the staged copy does not change
    for t in _tensors(src):
        with torch.no_grad():
            t.add_(1)
    assert torch.equal(out["model"]["w"][:3], torch.tensor([0.0, 1.0, 2.0]))
    assert torch.equal(out["model"]["p"], torch.ones(4, 3))


def test_cached_buffers_are_reused_only_after_release() -> None:
    first = staging.stage(_state(), cache_key="run", fallback=_unreachable)
    ptr = first.state["model"]["w"].data_ptr()
    # a second save while the first is still being written gets buffers of its own
    second = staging.stage(_state(), cache_key="run", fallback=_unreachable)
    assert second.state["model"]["w"].data_ptr() != ptr
    first.release()
    src = _state()
    with torch.no_grad():
        src["model"]["w"].mul_(2)
    third = staging.stage(src, cache_key="run", fallback=_unreachable)
    assert third.state["model"]["w"].data_ptr() == ptr  # the released set, refilled
    assert torch.equal(third.state["model"]["w"], src["model"]["w"])
    # a tensor whose shape changed gets a new buffer
    third.release()
    src["model"]["w"] = torch.ones(10)
    fourth = staging.stage(src, cache_key="run", fallback=_unreachable)
    assert torch.equal(fourth.state["model"]["w"], torch.ones(10))
    staging.clear_cache("run")
    fourth.release()
    staging.clear_cache("run")
    assert staging.stage(_state(), cache_key="run", fallback=_unreachable).state[
        "model"]["w"].data_ptr() != ptr


def test_unknown_tensor_subclasses_go_through_the_fallback() -> None:
    class Odd(torch.Tensor):
        pass

    src = {"x": torch.ones(3).as_subclass(Odd)}
    st = staging.stage(src, cache_key="run", fallback=lambda sd: {"fallback": sd})
    assert "fallback" in st.state
    st.release()  # nothing to keep
    assert "run" not in staging._CACHE


def _resident() -> int:
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="Linux madvise")
def test_a_fresh_buffer_is_populated_in_one_call_before_its_copy() -> None:
    """populate maps a fresh tensor's pages without touching them (what the copy would fault in
    page by page); on a kernel without MADV_POPULATE_WRITE it turns itself off."""
    size = 64 << 20
    t = torch.empty(size, dtype=torch.uint8)  # fresh mapping: nothing resident yet
    before = _resident()
    staging._madvise = None
    staging.populate(t)
    if staging._madvise is False:
        pytest.skip("this kernel has no MADV_POPULATE_WRITE")
    assert _resident() - before >= size - (1 << 20)
    src = torch.arange(size // 8, dtype=torch.int64)
    dst = torch.empty_like(src)
    staging.copy_all([(dst, src, True)], threads=2)
    assert torch.equal(dst, src)


def test_values_that_are_no_tensor_are_copied_as_torch_copies_them() -> None:
    """Passed by reference, a value the loop changed after async_save returned was saved with
    its later value (a dataclass's step, a numpy statistic) beside the earlier tensors."""
    import dataclasses

    np = pytest.importorskip("numpy")

    @dataclasses.dataclass
    class TrainState:
        step: int

    src = {"w": torch.ones(3), "train": TrainState(100), "hist": np.zeros(3), "tags": {"a"},
           "name": "run", "n": 7, "none": None, "blob": bytearray(b"ab")}
    out = staging.stage(src, cache_key=None, fallback=_unreachable).state
    src["train"].step = 101
    src["hist"][:] = 1
    src["tags"].add("b")
    src["blob"][0] = 0
    assert out["train"] == TrainState(100) and out["tags"] == {"a"}
    assert out["hist"].tolist() == [0.0, 0.0, 0.0] and out["blob"] == bytearray(b"ab")
    assert out["name"] is src["name"] and out["n"] == 7 and out["none"] is None


def test_a_value_that_cannot_be_copied_goes_through_the_fallback() -> None:
    import threading

    src = {"w": torch.ones(2), "lock": threading.Lock()}
    got = staging.stage(src, cache_key=None, fallback=lambda s: "torch's stager").state
    assert got == "torch's stager"


def test_async_save_to_the_lake_keeps_the_values_it_was_called_with(local_lake_url: str
                                                                     ) -> None:
    import torch.distributed.checkpoint as dcp

    import ckptlake
    from ckptlake.torch import LakeReader, LakeWriter

    np = pytest.importorskip("numpy")
    lake = ckptlake.open(local_lake_url)
    state = {"w": torch.randn(200, 100), "hist": np.zeros(3), "meta": {"step": 100}}
    fut = dcp.async_save(state, storage_writer=LakeWriter(lake, "run/dcp", step=100))
    state["hist"][:] = 1  # training goes on before the upload is done
    state["meta"]["step"] = 101
    fut.result()
    out = {"w": torch.zeros(200, 100), "hist": None, "meta": {"step": None}}
    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed it
    with torch.serialization.safe_globals([np.ndarray, np.dtype, type(np.dtype("float64")),
                                           core.multiarray._reconstruct]):
        dcp.load(out, storage_reader=LakeReader(lake, "run/dcp@step=100"))
    assert out["meta"]["step"] == 100 and out["hist"].tolist() == [0.0, 0.0, 0.0]
    assert torch.equal(out["w"], state["w"])
