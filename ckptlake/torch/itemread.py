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
  machine's byte order; anything else falls back to torch.load (the caller does that).
"""
from __future__ import annotations

import pickle
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
        if not _native_order(stream):
            return False
        stream.seek(0)
        meta = torch.load(stream, map_location="meta", weights_only=True)
    except (zipfile.BadZipFile, RuntimeError, pickle.UnpicklingError):
        return False  # not a zip item torch.load can describe: its own load says what is wrong
    if (type(meta) is not torch.Tensor or meta.layout != torch.strided or meta.is_conj() or meta.is_neg()
            or meta.dtype != target.dtype):
        return False
    offset = getattr(meta.untyped_storage(), "_checkpoint_offset", None)
    if not isinstance(offset, int):
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


def _native_order(stream: Any) -> bool:
    """The item's storages are in this machine's byte order (torch.load would swap them)."""
    import torch

    stream.seek(0)
    with zipfile.ZipFile(stream) as zf:
        name = next((n for n in zf.namelist() if n.rsplit("/", 1)[-1] == "byteorder"), None)
        if name is not None:
            return zf.read(name).decode() == sys.byteorder
    # no record: torch.load applies the process's load endianness setting (native by default)
    from torch.serialization import LoadEndianness, get_default_load_endianness

    order = get_default_load_endianness()
    return order is None or order == LoadEndianness.NATIVE or (
        order == LoadEndianness.LITTLE) == (sys.byteorder == "little")

