"""save_state / load_state edge cases from a review of the training-state format: a state
file name a push keeps no tensor records for, numpy array subclasses, integers JSON cannot
read back, and skeletons of forms encode never writes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import ckptlake
from ckptlake import checkpointer as ckpt_module
from ckptlake.errors import UsageError
from ckptlake.format import state

from test_training_state import ART, lake  # noqa: F401  (the fixture)

np = pytest.importorskip("numpy")


def _versions(lake: ckptlake.Lake) -> list[int]:
    return [v.version for v in lake.versions(ART)] \
        if any(a.artifact == ART for a in lake.artifacts()) else []


@pytest.mark.parametrize("name", ["state.bin", "x", "model.safetensors.tmp", ".git"])
def test_a_state_file_name_without_safetensors_is_refused_before_anything_is_saved(
        lake: ckptlake.Lake, name: str) -> None:
    with lake.checkpointer(ART) as ck:
        with pytest.raises(UsageError, match="must end in .safetensors"):
            ck.save_state({"w": np.arange(4.0), "s": 1}, filename=name)
        ck.save_state({"w": np.arange(4.0)}, filename="Model.SafeTensors")  # any case
    assert _versions(lake) == [1]
    assert np.array_equal(lake.load_state(ART)["w"], np.arange(4.0))


def test_a_state_saved_under_such_a_name_before_the_check_still_loads(
        lake: ckptlake.Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    """What an older ckptlake committed (the push kept no tensor records for the file)."""
    monkeypatch.setattr(ckpt_module, "check_state_filename", lambda filename: filename)
    saved = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([True, False]),
             "step": 7, "n": {"k": np.float64(2.5)}}
    with lake.checkpointer(ART) as ck:
        ck.save_state(saved, filename="state.bin")
    files = {f["path"]: f for f in lake.show(ART).files}
    assert "tensors" not in files["state.bin"]  # as an older ckptlake pushed it
    got = lake.load_state(ART)
    assert got.keys() == saved.keys() and got["step"] == 7
    assert got["w"].dtype == np.float32 and np.array_equal(got["w"], saved["w"])
    assert np.array_equal(got["b"], saved["b"]) and got["n"]["k"] == np.float64(2.5)


def test_a_masked_array_is_refused_and_a_memmap_is_saved_as_its_values(
        lake: ckptlake.Lake, tmp_path: Path) -> None:
    masked = np.ma.array([1.0, 2.0, 3.0], mask=[0, 1, 0])
    mapped = np.memmap(tmp_path / "m.bin", dtype=np.int32, mode="w+", shape=(3,))
    mapped[:] = [4, 5, 6]
    with lake.checkpointer(ART) as ck:
        with pytest.raises(UsageError, match="MaskedArray.*subclass"):
            ck.save_state({"v": masked})
        with pytest.warns(PendingDeprecationWarning), pytest.raises(UsageError, match="matrix"):
            ck.save_state({"m": np.matrix([[1, 2]])})
        ck.save_state({"v": mapped})
    del mapped
    assert _versions(lake) == [1]
    assert np.array_equal(lake.load_state(ART)["v"], [4, 5, 6])


def test_an_integer_json_cannot_read_back_is_refused_with_its_entry(lake: ckptlake.Lake) -> None:
    big = 10 ** 5000
    with lake.checkpointer(ART) as ck:
        with pytest.raises(UsageError, match=r"opt/count.*integer"):
            ck.save_state({"opt": {"count": big}})
        with pytest.raises(UsageError, match="a dict key under opt is an integer"):
            ck.save_state({"opt": {big: 1}})
        ck.save_state({"opt": {"count": 2 ** 12_000, 2 ** 12_000: 1}})
    assert lake.load_state(ART) == {"opt": {"count": 2 ** 12_000, 2 ** 12_000: 1}}


@pytest.mark.parametrize("root", [
    "[" * 5000 + "]" * 5000,  # json.loads itself gives up (RecursionError)
    "[" * 500 + "]" * 500,  # json.loads reads it; building it would recurse 500 deep
    '{"$dict": [["a"]]}',  # a dict item that is no [key, value] pair
    '{"$dict": [[{"x": 1}, 2]]}',  # a key no encoder writes
    '{"$dict": 3}',
    '{"$tuple": {"a": 1}}',
    '{"$tensor": 5, "framework": "np"}',
    '{"$float": "NaN"}',
    '{"$dict": [], "$tuple": []}',
    '{"$dict": [], "ordered": true, "metadata": {"$float": "x"}}',  # metadata checked too
    '{"$tuple": [{"$float": "NaN"}]}',  # and a tuple's items
])
def test_a_skeleton_of_forms_encode_never_writes_is_a_usage_error(root: str) -> None:
    raw = ('{"ckptlake_state": 1, "root": ' + root + "}").encode()
    with pytest.raises(UsageError, match=r"run/state@v1: ckptlake-state.json is not a "
                                         r"training-state skeleton"):
        state.parse(raw, "run/state@v1")


def test_every_form_encode_writes_passes_the_check() -> None:
    from collections import OrderedDict

    od: OrderedDict = OrderedDict(a=1)
    od._metadata = {"": {"version": 1}}  # type: ignore[attr-defined]
    skeleton = state.encode({"t": (1, [2.0, None]), "nan": float("nan"), 3: od, None: True,
                             1.5: "x", "arr": np.zeros(2)}, lambda name, value: "np")
    parsed = state.parse(state.dumps(skeleton), "w")
    assert json.loads(state.dumps(parsed)) == json.loads(state.dumps(skeleton))


@pytest.mark.parametrize("kind", ["dict", "list", "tuple", "ordered"])
def test_a_state_nested_as_deep_as_encode_allows_loads_back(lake: ckptlake.Lake,
                                                            kind: str) -> None:
    """The reader's check counted each tuple level twice: a state 105-200 tuples deep was
    committed and then refused as 'nested too deeply' (review of the fix)."""
    from collections import OrderedDict

    value: object = {"w": np.ones(2)}
    for _ in range(195):
        if kind == "dict":
            value = {"k": value}
        elif kind == "list":
            value = [value]
        elif kind == "tuple":
            value = (value,)
        else:
            od: OrderedDict = OrderedDict(k=value)
            od._metadata = {"": {"v": 1}}  # type: ignore[attr-defined]
            value = od
    with lake.checkpointer(ART) as ck:
        ck.save_state({"s": value})
    got = lake.load_state(ART)["s"]
    for _ in range(195):
        got = got["k"] if kind in ("dict", "ordered") else got[0]
    assert np.array_equal(got["w"], np.ones(2))
