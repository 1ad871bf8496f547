"""save_state edge cases an audit found: a state key named like safetensors' own header entry
("__metadata__"), and strings UTF-8 cannot encode (lone surrogates)."""
from __future__ import annotations

import json
import struct
from typing import Iterator

import pytest

import ckptlake
from ckptlake.errors import UsageError
from ckptlake.format import state as state_format
from ckptlake.format.safetensors import check_tensor_name

np = pytest.importorskip("numpy")


@pytest.fixture
def lake(local_lake_url: str) -> Iterator[ckptlake.Lake]:
    with ckptlake.open(local_lake_url) as lk:
        yield lk


def _names(state: object) -> list[str]:
    seen: list[str] = []
    state_format.encode(state, lambda name, value: seen.append(name) or "np")
    return seen


def test_metadata_key_round_trips_and_the_file_stays_readable(lake, tmp_path) -> None:
    state = {"__metadata__": np.ones(2, dtype=np.float32), "w": np.zeros(3, dtype=np.int64),
             "inner": {"__metadata__": np.arange(4, dtype=np.int16)},
             "__metadata__~~2": np.full(1, 7, dtype=np.uint8)}
    with lake.checkpointer("m", retention=False) as ck:
        ck.save_state(state, step=1).result()
    back = lake.load_state("m@v1")
    assert list(back) == list(state)
    for k in ("__metadata__", "w", "__metadata__~~2"):
        assert back[k].dtype == state[k].dtype and (back[k] == state[k]).all()
    assert (back["inner"]["__metadata__"] == state["inner"]["__metadata__"]).all()
    # The file itself: the header's own entry is the format, and every tensor is listed.
    out = tmp_path / "out"
    lake.pull("m@v1", str(out))
    raw = (out / "model.safetensors").read_bytes()
    header = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
    assert header.pop("__metadata__") == {"format": "np"}
    assert len(header) == 4


def test_encoder_never_names_a_tensor_metadata() -> None:
    names = _names({"__metadata__": np.ones(1), "a": {"__metadata__": np.ones(1)}})
    assert names == ["__metadata__~~2", "a/__metadata__"]
    # the escaped key "~" -> "~0" can never collide with the generated suffix
    assert _names({"__metadata__~~2": np.ones(1), "__metadata__": np.ones(1)}) == \
        ["__metadata__~0~02", "__metadata__~~2"]


def test_safetensors_writer_check_refuses_the_header_entry_name() -> None:
    with pytest.raises(UsageError, match="__metadata__"):
        check_tensor_name("__metadata__")
    check_tensor_name("__metadata__~~2")
    check_tensor_name("w")


@pytest.mark.parametrize("state, where", [
    ({"hparams": {"name": "x\udcff"}}, "string at hparams/name"),
    ({"hparams": {"k\ud800": 1}}, "dict key at hparams/k\\ud800"),
    ({"l": [1, ("a", "\udc80")]}, "string at l/1/1"),
])
def test_lone_surrogate_is_a_usage_error_naming_its_path_and_nothing_is_uploaded(
        lake, state, where) -> None:
    with lake.checkpointer("s", retention=False) as ck:
        with pytest.raises(UsageError) as info:
            ck.save_state({**state, "w": np.ones(3)}, step=1)
    msg = str(info.value)
    assert where in msg and "surrogate" in msg
    msg.encode("utf-8")  # the message itself prints on a UTF-8 stderr
    assert not lake.artifacts()
    assert not [i for i in lake.store.list("chunks/")]


def test_write_safetensors_refuses_the_header_entry_name(tmp_path) -> None:
    from ckptlake.checkpointer import write_safetensors

    with pytest.raises(UsageError, match="__metadata__"):
        write_safetensors(str(tmp_path / "x.safetensors"),
                          [("__metadata__", "F32", (1,), np.ones(1, dtype=np.float32))])
    assert not (tmp_path / "x.safetensors").exists()
