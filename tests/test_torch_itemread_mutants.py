"""Checks of ckptlake.torch.itemread / planread that mutation testing found without a test:
a damaged zip local header is declined (not read past), and a planned DCP read over
full-size (>= SMALL_SEGMENT) chunks keeps a request's first and last segments until the
request is done, so no stored byte is fetched twice."""
from __future__ import annotations

import io
import warnings
import zipfile
from typing import Any

import pytest

torch = pytest.importorskip("torch")
dcp = pytest.importorskip("torch.distributed.checkpoint")

import ckptlake  # noqa: E402
from ckptlake.core import catalog  # noqa: E402
from ckptlake.torch import LakeReader, LakeWriter  # noqa: E402
from ckptlake.torch.itemread import DIRECT_MIN, read_into  # noqa: E402
from ckptlake.torch.planread import SMALL_SEGMENT  # noqa: E402

from test_torch_itemread import _item, _sample, _whole  # noqa: E402
from test_torch_planread import MiB  # noqa: E402


def test_a_local_header_without_its_signature_is_declined() -> None:
    """A stored record's data offset is computed from its local header (name and extra
    lengths); a header that does not start with PK\\x03\\x04 is not a local header, so the
    offset computed from it would point at arbitrary bytes.  read_into must decline (False,
    torch.load then names the damage) and write nothing, rather than trust the lengths."""
    x = _sample(torch.float32, (1024, 512))
    assert x.numel() * x.element_size() >= DIRECT_MIN
    data = bytearray(_item(x).getvalue())
    with zipfile.ZipFile(_item(x)) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith("/data/0"))
    at = info.header_offset
    assert data[at:at + 4] == b"PK\x03\x04"
    data[at:at + 4] = b"XXXX"
    target = torch.zeros_like(x)
    assert read_into(io.BytesIO(bytes(data)), _whole(x), target, name="t") is False
    assert not target.any()  # nothing written


def test_a_request_alone_in_its_end_segment_fetches_each_chunk_once(
        local_lake_url: str) -> None:
    """A request's last segment can hold only a few hundred bytes of it (the zip's trailer,
    read several times by torch before the tensor's data): were it released once that many
    bytes were read, the later reads would fetch it again.  Loading only "a" (not "b", which
    fills the rest of that 1 MiB segment) makes this request its only user, so only pinning
    the first and last segments until the request is done fetches every chunk once."""
    g = torch.Generator().manual_seed(5)
    src = {"a": torch.rand(1024, 1024, generator=g), "b": torch.rand(512, 1024, generator=g)}
    lake = ckptlake.open(local_lake_url, chunk_size=MiB)
    w = LakeWriter(lake, "m", step=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(src, storage_writer=w, no_dist=True)
    reader = LakeReader(lake, f"m@v{w.version}")
    target = {"a": torch.zeros(1024, 1024)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.load(target, storage_reader=reader, no_dist=True)
    assert torch.equal(target["a"], src["a"])
    info = next(v for k, v in reader.storage_data.items() if k.fqn == "a")
    m = catalog.resolve(lake.store, f"m@v{w.version}")
    entry = next(f for f in m.files if f.path == info.relative_path)
    touched, pos, last_end = [], 0, 0
    for c in entry.chunks:
        if pos < info.offset + info.length and pos + c.size > info.offset:
            touched.append(c)
            last_end = pos + c.size
        pos += c.size
    big = [c for c in touched if c.size >= SMALL_SEGMENT]
    assert len(big) >= 3 and touched[-1].size >= SMALL_SEGMENT  # the end segment: full-size
    assert last_end > info.offset + info.length  # ... holding "b"'s bytes too
    assert reader.bytes_fetched == sum(m.stored.get(c.digest, c.size) for c in touched)
