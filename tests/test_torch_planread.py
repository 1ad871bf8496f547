"""ckptlake.torch.planread: LakeReader's planned, parallel DCP reads (single process)."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
dcp = pytest.importorskip("torch.distributed.checkpoint")

import ckptlake  # noqa: E402
from ckptlake.core import catalog  # noqa: E402
from ckptlake.format import layout  # noqa: E402
from ckptlake.torch import LakeReader, LakeWriter  # noqa: E402
from ckptlake.torch.planread import fetch_order, segments_of  # noqa: E402

MiB = 1 << 20


def _state(seed: int) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    # 4 MiB and 2 MiB tensors over 1 MiB chunks (several per request), plus small ones
    return {"a": torch.rand(1024, 1024, generator=g), "b": torch.rand(512, 1024, generator=g),
            "c": torch.arange(10), "meta": {"step": 3}}


def _save(url: str) -> tuple[Any, int]:
    lake = ckptlake.open(url, chunk_size=MiB)
    w = LakeWriter(lake, "m", step=1, thread_count=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(_state(1), storage_writer=w, no_dist=True)
    return lake, w.version


def _load(lake: Any, version: int, **kw: Any) -> tuple[dict[str, Any], LakeReader]:
    target = {"a": torch.zeros(1024, 1024), "b": torch.zeros(512, 1024),
              "c": torch.zeros(10, dtype=torch.long), "meta": {"step": 0}}
    reader = LakeReader(lake, f"m@v{version}", **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.load(target, storage_reader=reader, no_dist=True)
    return target, reader


@pytest.mark.parametrize("window", [0, 3 * MiB, 64 * MiB])
def test_any_window_loads_equal_and_fetches_each_chunk_once(local_lake_url: str,
                                                            window: int) -> None:
    lake, version = _save(local_lake_url)
    target, reader = _load(lake, version, window=window)
    src = _state(1)
    for k in "abc":
        assert torch.equal(target[k], src[k]), k
    assert target["meta"] == {"step": 3}
    m = catalog.resolve(lake.store, f"m@v{version}")
    stored = sum(m.stored.get(c.digest, c.size) for f in m.files if f.path.endswith(".distcp")
                 for c in f.chunks)
    assert reader.bytes_fetched == stored  # every data chunk once, none twice


def test_a_corrupt_chunk_fails_the_load_and_names_it(local_lake_url: str) -> None:
    lake, version = _save(local_lake_url)
    m = catalog.resolve(lake.store, f"m@v{version}")
    entry = max((f for f in m.files if f.path.endswith(".distcp")), key=lambda f: f.size)
    key = layout.chunk_key(entry.chunks[1].digest)
    path = Path(local_lake_url[len("file://"):]) / key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BaseException) as e:  # DCP wraps it in its CheckpointException
        _load(lake, version)
    assert "corrupt" in str(e.value) and key in str(e.value)


def test_segments_and_order() -> None:
    starts = [0, 10, 20, 30]
    assert segments_of(starts, 0, 0) == []
    assert segments_of(starts, 5, 5) == [0]
    assert segments_of(starts, 5, 6) == [0, 1]
    assert segments_of(starts, 12, 30) == [1, 2, 3]
    assert fetch_order([1, 2, 3, 4]) == [4, 1, 2, 3]  # a zip's end, start, then the rest
    assert fetch_order([1, 2]) == [1, 2]


@pytest.mark.parametrize("window", [-1, 1.5, True])
def test_a_bad_window_is_a_usage_error(local_lake_url: str, window: Any) -> None:
    from ckptlake.errors import UsageError

    lake, version = _save(local_lake_url)
    with pytest.raises(UsageError, match="window must be"):
        LakeReader(lake, f"m@v{version}", window=window)
