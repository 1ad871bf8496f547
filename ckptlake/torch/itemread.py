"""A DCP tensor item read straight into the tensor it is loaded into.

Why: FileSystemReader loads every item with `torch.load` into a fresh tensor and then copies
that into the destination.  For a large tensor the fresh storage is memory the kernel must
map and zero page by page (perf: clear_page ~25% of a 2 GiB DCP load's CPU) before a second
full copy.  An item is a `torch.save` zip whose storage record is stored uncompressed, so its
bytes can instead be read from the (verified) stream into the destination's own memory.

What makes that safe to do instead of torch.load:
- the item's structure (dtype, size, strides, storage offset) comes from torch itself:
  `torch.load(map_location="meta", weights_only=True)` unpickles it (no code runs, no data
  is read) and gives each storage's record offset in the zip;
- it is used only when the result is the same as torch.load + `copy_` would give: one plain
  tensor, the requested part of it contiguous in the record, destination a contiguous CPU
  tensor of the same dtype and size, no conjugate/negative view bits, the record in this
  machine's byte order, stored uncompressed and holding the whole storage (read from the
  zip's own headers, not taken from the pickle); anything else falls back to torch.load (the
  caller does that), whose error then names what is wrong.
"""
from __future__ import annotations

import pickle
import struct
import sys
import zipfile
from typing import Any

from ..errors import IntegrityError

DIRECT_MIN = 1 << 20  # smaller items: torch.load is as cheap as the structure read below


def read_into(stream: Any, req: Any, target: Any, *, name: str) -> bool:
    """Read request `req`'s tensor bytes from `stream` (a seekable item) into `target`;
    False (stream position undefined) when the item is not one this can read exactly."""
    import torch
    from torch.distributed._shard._utils import narrow_tensor_by_index

    if (target.device.type != "cpu" or target.layout != torch.strided or target.is_quantized
            or not target.is_contiguous() or target.is_conj() or target.is_neg()
            or target.numel() == 0):
        return False
    # the byte order first: torch.load swaps a foreign-order storage even on the meta device
    try:
        native, records = _zip_facts(stream)
        if not native:
            return False
        stream.seek(0)
        meta = torch.load(stream, map_location="meta", weights_only=True)
    except (zipfile.BadZipFile, RuntimeError, pickle.UnpicklingError):
        return False  # not a zip item torch.load can describe: its own load says what is wrong
    if (type(meta) is not torch.Tensor or meta.layout != torch.strided or meta.is_conj()
            or meta.is_neg() or meta.dtype != target.dtype):
        return False
    offset = getattr(meta.untyped_storage(), "_checkpoint_offset", None)
    # the storage's bytes are all inside one stored (uncompressed) record starting there, as
    # torch.load would insist when reading it
    if not isinstance(offset, int) or records.get(offset, -1) < meta.untyped_storage().nbytes():
        return False
    part = narrow_tensor_by_index(meta, req.storage_offsets, req.lengths)
    if part.size() != target.size():
        raise AssertionError(f"req {req.storage_index} mismatch sizes "
                             f"{target.size()} vs {part.size()}")
    if not part.is_contiguous():
        return False
    size = part.element_size()
    start, nbytes = offset + part.storage_offset() * size, part.numel() * size
    if part.storage_offset() * size + nbytes > meta.untyped_storage().nbytes():
        return False  # not within its storage: torch.load would say what is wrong
    view = memoryview(target.reshape(-1).view(torch.uint8).numpy()).cast("B")
    stream.seek(start)
    got = 0
    while got < nbytes:
        n = stream.readinto(view[got:])
        if not n:
            raise IntegrityError(f"{name}: tensor item {req.storage_index} ends after {got} "
                                 f"of its {nbytes} bytes", hint="the checkpoint is damaged")
        got += n
    return True


def _zip_facts(stream: Any) -> tuple[bool, dict[int, int]]:
    """Whether the item's storages are in this machine's byte order (torch.load would swap
    them), and {offset of a stored record's data in the item: its length}."""
    stream.seek(0)
    with zipfile.ZipFile(stream) as zf:
        infos = zf.infolist()
        order = next((i for i in infos if i.filename.rsplit("/", 1)[-1] == "byteorder"), None)
        native = zf.read(order).decode() == sys.byteorder if order is not None \
            else _native_by_default()
        records = {}
        for info in infos:
            if info.compress_type == zipfile.ZIP_STORED and "/data/" in info.filename:
                stream.seek(info.header_offset)
                head = stream.read(_LOCAL_HEAD.size)
                if len(head) != _LOCAL_HEAD.size or head[:4] != b"PK\x03\x04":
                    raise zipfile.BadZipFile("bad local header")
                name_len, extra_len = _LOCAL_HEAD.unpack(head)[-2:]
                records[info.header_offset + _LOCAL_HEAD.size + name_len + extra_len] = \
                    info.file_size
    return native, records


_LOCAL_HEAD = struct.Struct("<4s5H3I2H")  # a zip local file header, up to its name


def _native_by_default() -> bool:
    """No byteorder record: torch.load applies the process's load endianness setting."""
    from torch.serialization import LoadEndianness, get_default_load_endianness

    order = get_default_load_endianness()
    return order is None or order == LoadEndianness.NATIVE or (
        order == LoadEndianness.LITTLE) == (sys.byteorder == "little")
