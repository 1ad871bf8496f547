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


def test_a_corrupt_chunk_read_through_torch_load_names_it(local_lake_url: str) -> None:
    """Items torch.load reads (here: under DIRECT_MIN, so not read in place): its C++ zip
    reader replaces the lake's error with one of its own; the user must still learn which
    chunk is corrupt (IntegrityError, exit code 5), not get torch's unrelated complaint."""
    from ckptlake.errors import IntegrityError
    from ckptlake.torch.itemread import DIRECT_MIN

    g = torch.Generator().manual_seed(2)
    src = {"x": torch.rand(1024, 200, generator=g), "y": torch.rand(1024, 200, generator=g)}
    assert src["x"].numel() * 4 < DIRECT_MIN
    lake = ckptlake.open(local_lake_url, chunk_size=MiB)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(src, storage_writer=LakeWriter(lake, "small", step=1), no_dist=True)
    m = catalog.resolve(lake.store, "small@v1")
    entry = next(f for f in m.files if f.path.endswith(".distcp"))
    assert len(entry.chunks) > 1
    # not the first chunk: torch.load's first look (Python, is it a zip) reads that one; a
    # later chunk is first read by the C++ reader (the item's central directory)
    key = layout.chunk_key(entry.chunks[1].digest)
    path = Path(local_lake_url[len("file://"):]) / key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    target = {"x": torch.zeros(1024, 200), "y": torch.zeros(1024, 200)}
    with pytest.raises(BaseException) as e:  # DCP wraps it in its CheckpointException
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dcp.load(target, storage_reader=LakeReader(lake, "small@v1"), no_dist=True)
    failures = getattr(e.value, "failures", None) or {0: (e.value, None)}
    errors = [exc for exc, _ in failures.values()]
    assert [type(exc) for exc in errors] == [IntegrityError], errors
    assert "corrupt" in str(errors[0]) and key in str(errors[0])


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
