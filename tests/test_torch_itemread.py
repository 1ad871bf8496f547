"""ckptlake.torch.itemread: a DCP tensor item read straight into its destination gives what
torch.load + copy_ gives, and declines (False) whatever it cannot read exactly."""
from __future__ import annotations

import io
import sys
import types
import warnings
from typing import Any

import pytest

torch = pytest.importorskip("torch")
dcp = pytest.importorskip("torch.distributed.checkpoint")

import ckptlake  # noqa: E402
from ckptlake.errors import IntegrityError  # noqa: E402
from ckptlake.torch import LakeReader, LakeWriter, itemread  # noqa: E402
from ckptlake.torch.itemread import read_into  # noqa: E402


def _item(t: Any) -> io.BytesIO:
    buf = io.BytesIO()
    torch.save(t, buf)
    buf.seek(0)
    return buf


def _req(offsets: list[int], lengths: list[int]) -> Any:
    return types.SimpleNamespace(storage_offsets=offsets, lengths=lengths, storage_index="x")


def _whole(t: Any) -> Any:
    return _req([0] * t.dim(), list(t.shape))


def _sample(dtype: Any, shape: tuple[int, ...] = (64, 48)) -> Any:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(shape, generator=g) * 100
    if dtype == torch.bool:
        return x > 0
    if dtype.is_complex:
        return torch.complex(x, -x).to(dtype)
    return x.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64,
                                   torch.int64, torch.int8, torch.uint8, torch.bool,
                                   torch.complex64, torch.float8_e4m3fn])
def test_every_dtype_reads_bit_exact(dtype: Any) -> None:
    x = _sample(dtype)
    target = torch.zeros_like(x)
    assert read_into(_item(x), _whole(x), target, name="t")
    assert torch.equal(target.view(torch.uint8), x.view(torch.uint8))


def test_a_part_along_the_first_dim_and_a_view_into_a_larger_storage() -> None:
    x = _sample(torch.float32, (40, 8, 3))
    target = torch.zeros(5, 8, 3)
    assert read_into(_item(x), _req([7, 0, 0], [5, 8, 3]), target, name="t")
    assert torch.equal(target, x[7:12])
    base = _sample(torch.bfloat16, (100, 16))
    view = base[10:30]  # torch.save keeps the whole storage and the view's offset
    target = torch.zeros(20, 16, dtype=torch.bfloat16)
    assert read_into(_item(view), _whole(view), target, name="t")
    assert torch.equal(target, base[10:30])


def test_short_reads_are_completed() -> None:
    class Trickle(io.BytesIO):
        def readinto(self, b: Any) -> int:  # the tensor's bytes: at most 1000 a call
            return super().readinto(memoryview(b)[:1000] if len(b) > 4096 else b)

    x = _sample(torch.float32, (100, 100))
    target = torch.zeros_like(x)
    assert read_into(Trickle(_item(x).getvalue()), _whole(x), target, name="t")
    assert torch.equal(target, x)


def test_a_stream_ending_inside_the_tensor_is_an_integrity_error() -> None:
    x = _sample(torch.float32, (100, 100))
    data = _item(x).getvalue()

    class Ends(io.BytesIO):
        def readinto(self, b: Any) -> int:
            if len(b) > 4096:  # the tensor's bytes (not the zip's records)
                return 0
            return super().readinto(b)

    with pytest.raises(IntegrityError, match="ends after 0 of its 40000 bytes"):
        read_into(Ends(data), _whole(x), torch.zeros_like(x), name="m@v1")


@pytest.mark.parametrize("case", ["part along dim 1", "transposed source", "transposed target",
                                  "other dtype", "parameter", "not a tensor", "other order",
                                  "empty"])
def test_what_it_cannot_read_exactly_it_declines(case: str, monkeypatch: Any) -> None:
    x = _sample(torch.float32, (32, 16))
    item, req, target = x, _whole(x), torch.zeros(32, 16)
    if case == "part along dim 1":
        req, target = _req([0, 4], [32, 8]), torch.zeros(32, 8)
    elif case == "transposed source":
        item = x.t().contiguous().t()  # same values, column-major storage
    elif case == "transposed target":
        target = torch.zeros(16, 32).t()
    elif case == "other dtype":
        target = torch.zeros(32, 16, dtype=torch.float64)
    elif case == "parameter":
        item = torch.nn.Parameter(x)
    elif case == "not a tensor":
        item = {"w": x}
    elif case == "empty":
        item = x[:0]
        req, target = _whole(item), torch.zeros(0, 16)
    stream = _item(item)
    if case == "other order":  # saved here, loaded on a machine of the other byte order
        monkeypatch.setattr(sys, "byteorder", "big" if sys.byteorder == "little" else "little")
    before = target.clone()
    assert read_into(stream, req, target, name="t") is False
    assert torch.equal(target, before)  # nothing written when it declines


def test_a_size_mismatch_is_torchs_error() -> None:
    x = _sample(torch.float32, (32, 16))
    with pytest.raises(AssertionError, match="mismatch sizes"):
        read_into(_item(x), _whole(x), torch.zeros(16, 16), name="t")


def test_dcp_load_reads_large_items_directly_and_others_through_torch(
        local_lake_url: str, monkeypatch: Any) -> None:
    """End to end: what the direct reads load equals the state saved, and they were used for
    the large contiguous items only (the transposed destination and small ones through
    torch.load)."""
    g = torch.Generator().manual_seed(3)
    src = {"big": torch.randn(1024, 512, generator=g).to(torch.bfloat16),  # 1 MiB
           "f32": torch.randn(600, 600, generator=g),
           "cols": torch.randn(512, 1024, generator=g),
           "small": torch.arange(100), "step": 7}
    lake = ckptlake.open(local_lake_url, chunk_size=1 << 20)
    w = LakeWriter(lake, "d", step=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(src, storage_writer=w, no_dist=True)
    calls: list[bool] = []

    def spy(*a: Any, **k: Any) -> bool:
        calls.append(read_into(*a, **k))
        return calls[-1]

    monkeypatch.setattr(itemread, "read_into", spy)
    target = {"big": torch.zeros(1024, 512, dtype=torch.bfloat16), "f32": torch.zeros(600, 600),
              "cols": torch.zeros(1024, 512).t(), "small": torch.zeros(100, dtype=torch.long),
              "step": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.load(target, storage_reader=LakeReader(lake, f"d@v{w.version}"), no_dist=True)
    for k in ("big", "f32", "cols", "small"):
        assert torch.equal(target[k], src[k]), k
    assert target["step"] == 7
    assert sorted(calls) == [False, True, True]  # cols declined; small never tried


def test_an_item_that_is_no_zip_is_declined() -> None:
    x = _sample(torch.float32, (32, 16))
    legacy = io.BytesIO()
    torch.save(x, legacy, _use_new_zipfile_serialization=False)
    legacy.seek(0)
    assert read_into(legacy, _whole(x), torch.zeros_like(x), name="t") is False


def _rezip(item: io.BytesIO, *, deflate: bool = False, cut: int = 0) -> io.BytesIO:
    """The same archive written again by Python's zipfile: records deflated, or the tensor's
    record `cut` bytes short."""
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(item) as src, zipfile.ZipFile(
            out, "w", zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if "/data/" in info.filename and cut:
                data = data[:-cut]
            dst.writestr(info.filename, data)
    out.seek(0)
    return out


@pytest.mark.parametrize("how", ["deflated", "short record"])
def test_a_record_that_is_not_the_whole_storage_stored_is_declined(how: str) -> None:
    x = _sample(torch.float32, (256, 64))
    item = _rezip(_item(x), deflate=how == "deflated", cut=4 if how == "short record" else 0)
    target = torch.zeros_like(x)
    assert read_into(item, _whole(x), target, name="t") is False
    assert not target.any()
