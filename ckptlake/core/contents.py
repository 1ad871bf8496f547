"""What `diff` can say about the insides of a modified file beyond "its bytes differ".

- `.safetensors` files: tensors are compared from the manifests' tensor records (core/diff.py);
  here their `__metadata__` (not recorded in manifests) is read from both headers.
- torch archives (`.pt`, `.pth`, `.bin` written by `torch.save` since 1.6: a zip with one
  uncompressed entry `<name>/data/<key>` per storage and the pickled structure in
  `<name>/data.pkl`): the zip's central directory gives every entry's CRC-32 and size, so
  storages are compared without reading their data.  With torch installed, `data.pkl` is
  unpickled by torch's weights-only unpickler with storages left on the meta device (no data
  read, no code run), which maps tensor names to storages, dtypes and shapes.
- anything else: not inspected, and the result says so (never "0 changed" for a file nobody
  looked into).

Reading file bytes is `diff --inspect` (which the egress guard prices, `bytes_to_read`); a plain
diff reads the manifests only, and says which files it did not look into.

Every byte comes through LakeFile (core/reader.py), so it is verified by chunk (or, for a
packed file, by the file's digest) before it is parsed.  That means whole chunks: the chunk
holding the header or the central directory, and the one holding `data.pkl`, typically the
first and the last chunk of each side, without read-ahead.  The bytes fetched are reported.
CRC-32 is not a cryptographic digest: two storages with equal CRC and size are reported
unchanged (a 1-in-4-billion chance of a miss per changed storage), which is what the archive
itself records.
"""
from __future__ import annotations

import io
import json
import struct
import zipfile
from typing import Any

from ..errors import CkptlakeError
from ..format.manifest import FileEntry, Manifest
from ..format.safetensors import MAX_HEADER, is_safetensors
from ..store.base import Store
from .reader import TORCH_SUFFIXES, LakeFile, segment_sizes

NOT_INSPECTED = "contents not inspected"


def inspect_modified(store: Store, a: Manifest, b: Manifest, paths: list[str], *,
                     read: bool) -> list[dict[str, Any]]:
    """One record per modified file: {"path", "kind", "inspected", ...} (see module doc).

    read False: from the manifests alone (safetensors tensors are compared in core/diff.py;
    torch archives are then "not inspected").  read True: also the reads planned by
    `bytes_to_read`."""
    fa, fb = {e.path: e for e in a.files}, {e.path: e for e in b.files}
    return [_inspect(store, a, fa[p], b, fb[p], read) for p in paths]


def _kind(ea: FileEntry, eb: FileEntry) -> str:
    if ea.symlink is not None or eb.symlink is not None:
        return "symlink"
    if is_safetensors(eb.path):
        return "safetensors" if ea.tensors is not None and eb.tensors is not None \
            else "safetensors-untracked"
    return "torch" if eb.path.lower().endswith(TORCH_SUFFIXES) else "other"


def bytes_to_read(a: Manifest, b: Manifest, paths: list[str]) -> int:
    """What `inspect_modified(read=True)` downloads: whole segments (chunks, or a packed file),
    each side's first for a safetensors header, first and last for a torch archive (its
    `data.pkl` and central directory).  An upper bound the inspection keeps to: a torch archive
    whose directory or `data.pkl` reaches into another segment is not read further (_Priced)."""
    fa, fb = {e.path: e for e in a.files}, {e.path: e for e in b.files}
    total = 0
    for p in paths:
        kind = _kind(fa[p], fb[p])
        if kind in ("safetensors", "torch"):
            for e in (fa[p], fb[p]):
                sizes = segment_sizes(e)
                total += sum(sizes[:1]) if kind == "safetensors" else \
                    sum(sizes[:1]) + (sizes[-1] if len(sizes) > 1 else 0)
    return total


def _inspect(store: Store, a: Manifest, ea: FileEntry, b: Manifest, eb: FileEntry,
             read: bool) -> dict[str, Any]:
    path, kind = eb.path, _kind(ea, eb)
    if kind == "symlink":
        return {"path": path, "kind": kind, "inspected": False,
                "reason": "a symlink on at least one side"}
    if kind == "other":
        return {"path": path, "kind": kind, "inspected": False,
                "reason": "not a .safetensors file or a torch archive"}
    if kind == "safetensors-untracked":
        return {"path": path, "kind": "safetensors", "inspected": False,
                "reason": "no tensor records (pushed before ckptlake recorded them, or not a "
                          "valid safetensors file)"}
    if not read:
        if kind == "safetensors":  # tensors from the manifests' records (the tensors section)
            return {"path": path, "kind": kind, "inspected": True, "metadata": None}
        return {"path": path, "kind": kind, "inspected": False,
                "reason": "--inspect reads its zip directory"}
    out: dict[str, Any] = {"path": path, "kind": kind}
    files = (LakeFile(store, ea, a.hash, readahead=0, stored=a.stored),
             LakeFile(store, eb, b.hash, readahead=0, stored=b.stored))
    try:
        out.update(_safetensors(*files) if kind == "safetensors" else
                   _torch(_Priced(files[0], ea), _Priced(files[1], eb)))
    finally:
        for f in files:
            f.close()
        out["bytes_fetched"] = sum(f.bytes_fetched for f in files)
    return out


# --- safetensors ---------------------------------------------------------------------------------

def _st_metadata(fh: LakeFile) -> dict[str, str] | None:
    prefix = fh.read(8)
    if len(prefix) < 8:
        return None
    (n,) = struct.unpack("<Q", prefix)
    if not 2 <= n <= MAX_HEADER or 8 + n > fh.size:
        return None
    try:
        doc = json.loads(fh.read(n))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    meta = doc.get("__metadata__") or {}
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}


def _safetensors(fa: LakeFile, fb: LakeFile) -> dict[str, Any]:
    ma, mb = _st_metadata(fa), _st_metadata(fb)
    if ma is None or mb is None:
        return {"inspected": True, "metadata": None}
    changed = {k: {"a": ma[k], "b": mb[k]} for k in sorted(ma.keys() & mb.keys())
               if ma[k] != mb[k]}
    return {"inspected": True, "metadata": {
        "added": {k: mb[k] for k in sorted(mb.keys() - ma.keys())},
        "removed": {k: ma[k] for k in sorted(ma.keys() - mb.keys())}, "changed": changed}}


# --- torch archives ------------------------------------------------------------------------------

class _Unpriced(Exception):
    """A read outside the segments bytes_to_read counted."""


class _Priced(io.RawIOBase):
    """A torch archive read only within its first and last segment: what the egress estimate
    (bytes_to_read) counted.  Why: the guard prices the diff before anything is read; an
    archive whose zip directory (~100 bytes a storage) or data.pkl outgrows a chunk would
    otherwise read more than was priced (a 30,000-tensor archive at 1 MiB chunks read 2.65x
    its estimate)."""

    def __init__(self, fh: LakeFile, entry: FileEntry) -> None:
        super().__init__()
        self.fh, self.size = fh, entry.size
        sizes = segment_sizes(entry)
        first = sizes[0] if sizes else 0
        last = self.size - sizes[-1] if len(sizes) > 1 else first
        self.allowed = ((0, first), (last, self.size))

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.fh.seek(offset, whence)

    def tell(self) -> int:
        return self.fh.tell()

    def readinto(self, buffer: Any) -> int:
        start = self.fh.tell()
        end = min(start + len(buffer), self.size)
        if end > start and not any(lo <= start and end <= hi for lo, hi in self.allowed):
            raise _Unpriced(f"bytes {start}-{end}")
        return self.fh.readinto(buffer)


_UNPRICED = ("its zip directory or data.pkl reaches beyond the first and last chunk, which "
             "the egress estimate counted: not read further (pull both versions of the file "
             "to compare them)")


def _zip(fh: Any) -> zipfile.ZipFile | None:
    try:  # reads the end of central directory first: the file's last chunk
        return zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, ValueError, EOFError):
        return None


def _storages(zf: zipfile.ZipFile) -> tuple[str, dict[str, tuple[int, int]]] | None:
    """(archive prefix, {storage key: (crc32, size)}) or None if this is no torch archive."""
    names = zf.namelist()
    pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pkl) != 1:
        return None
    prefix = pkl[0][:-len("data.pkl")]
    return prefix, {i.filename[len(prefix) + 5:]: (i.CRC, i.file_size) for i in zf.infolist()
                    if i.filename.startswith(prefix + "data/")}


def _torch(fa: Any, fb: Any) -> dict[str, Any]:
    try:
        za, zb = _zip(fa), _zip(fb)
    except _Unpriced:
        return {"inspected": False, "reason": _UNPRICED}
    if za is None or zb is None:
        return {"inspected": False, "reason": "not a zip archive (torch's legacy format?)"}
    sa, sb = _storages(za), _storages(zb)
    if sa is None or sb is None:
        return {"inspected": False, "reason": "a zip archive, but not one written by torch.save"}
    (pa, a), (pb, b) = sa, sb
    changed = [{"key": k, "size_a": a[k][1], "size_b": b[k][1]}
               for k in sorted(a.keys() & b.keys(), key=_natural) if a[k] != b[k]]
    out: dict[str, Any] = {"inspected": True, "storages": {
        "added": [{"key": k, "size": b[k][1]} for k in sorted(b.keys() - a.keys(), key=_natural)],
        "removed": [{"key": k, "size": a[k][1]}
                    for k in sorted(a.keys() - b.keys(), key=_natural)],
        "changed": changed, "unchanged": len(a.keys() & b.keys()) - len(changed)}}
    try:
        ta, tb = _tensor_index(za, pa), _tensor_index(zb, pb)
    except _Unpriced:
        out["tensors"] = None
        out["tensors_note"] = f"data.pkl not read: {_UNPRICED}"
        return out
    except _NoTorch:
        out["tensors"] = None
        out["tensors_note"] = "tensor names need torch (pip install 'ckptlake[torch]')"
        return out
    except CkptlakeError:
        raise
    except Exception as exc:  # whatever the weights-only unpickler refuses
        out["tensors"] = None
        out["tensors_note"] = f"data.pkl not readable weights-only: {str(exc)[:200]}"
        return out
    out["tensors"] = _compare_tensors(ta, a, tb, b)
    return out


def _natural(key: str) -> tuple[int, str]:
    return (int(key), "") if key.isdigit() else (1 << 62, key)


class _NoTorch(Exception):
    pass


def _tensor_index(zf: zipfile.ZipFile, prefix: str) -> dict[str, dict[str, Any]]:
    """name -> {"storage", "dtype", "shape", "offset", "stride"} from data.pkl, weights-only,
    every storage on the meta device (nothing but data.pkl is read)."""
    try:
        import torch
        from torch import _weights_only_unpickler as wou
    except ImportError:
        raise _NoTorch() from None
    keys: dict[int, str] = {}

    def persistent_load(saved_id: Any) -> Any:
        if not isinstance(saved_id, tuple) or not saved_id or saved_id[0] != "storage":
            raise ValueError(f"unknown persistent id {str(saved_id)[:80]}")
        _, storage_type, key, _location, numel = saved_id
        dtype = getattr(storage_type, "dtype", storage_type)
        nbytes = numel * torch._utils._element_size(dtype)
        storage = torch.UntypedStorage(nbytes, device="meta")
        keys[storage._cdata] = str(key)
        return torch.storage.TypedStorage(wrap_storage=storage, dtype=dtype, _internal=True)

    unpickler = wou.Unpickler(io.BytesIO(zf.read(prefix + "data.pkl")), encoding="utf-8")
    unpickler.persistent_load = persistent_load
    obj = unpickler.load()
    out: dict[str, dict[str, Any]] = {}
    for name, t in _walk(obj, "", torch):
        out[name] = {"storage": keys.get(t.untyped_storage()._cdata),
                     "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape),
                     "offset": t.storage_offset(), "stride": list(t.stride())}
    return out


def _walk(obj: Any, prefix: str, torch: Any, depth: int = 0) -> Any:
    if depth > 50:
        return
    if isinstance(obj, torch.Tensor):
        yield prefix or "<root>", obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, f"{prefix}.{k}" if prefix else str(k), torch, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{prefix}.{i}" if prefix else str(i), torch, depth + 1)


def _compare_tensors(ta: dict[str, dict[str, Any]], sa: dict[str, tuple[int, int]],
                     tb: dict[str, dict[str, Any]], sb: dict[str, tuple[int, int]]
                     ) -> dict[str, Any]:
    """A tensor changed if its dtype, shape or view changed, or its storage's bytes did (a
    tensor that is a view of part of a storage is reported when any of the storage changed)."""
    out: dict[str, Any] = {"added": [], "removed": [], "reshaped": [], "retyped": [],
                           "changed": [], "unchanged": 0}

    def brief(name: str, t: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "dtype": t["dtype"], "shape": t["shape"], "storage": t["storage"]}

    for name in sorted(ta.keys() | tb.keys()):
        x, y = ta.get(name), tb.get(name)
        if x is None:
            out["added"].append(brief(name, y))  # type: ignore[arg-type]
        elif y is None:
            out["removed"].append(brief(name, x))
        elif x["shape"] != y["shape"]:
            out["reshaped"].append({"name": name, "dtype_a": x["dtype"], "dtype_b": y["dtype"],
                                    "shape_a": x["shape"], "shape_b": y["shape"]})
        elif x["dtype"] != y["dtype"]:
            out["retyped"].append({"name": name, "dtype_a": x["dtype"], "dtype_b": y["dtype"],
                                   "shape_a": x["shape"], "shape_b": y["shape"]})
        elif (sa.get(x["storage"]) != sb.get(y["storage"]) or sa.get(x["storage"]) is None
              or (x["offset"], x["stride"]) != (y["offset"], y["stride"])):
            out["changed"].append(brief(name, y))
        else:
            out["unchanged"] += 1
    return out
