"""Compare two versions (of one artifact or of two): metadata, files, shared bytes, tensors.

Everything but `values` comes from the two manifests alone: files are compared by their chunk
digests (or whole-file digest), shared bytes by chunk digests, and tensors of `.safetensors`
files by the per-tensor records push wrote (format/safetensors.py).  So a diff of two 100 GB
checkpoints reads two manifests and no tensor data.

`values=True` then fetches only the tensors whose data changed (same dtype and shape), with
ranged GETs of the chunks that hold them, a window at a time (memory stays bounded whatever the
tensor size), verifies each against its recorded digest, and reports the largest absolute
difference and the relative L2 change ||b - a|| / ||a||.  It needs numpy (a base dependency).
Exactly `values_to_fetch(value_pairs(a, b))` bytes are fetched (both sides of each changed
tensor of a comparable dtype; nothing else), which is what the egress guard prices
(core/egress.py, `estimate_diff`) before the first ranged GET.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, Iterator

from ..errors import IntegrityError, UsageError
from ..format import layout
from ..format.manifest import FileEntry, Manifest, TensorInfo
from ..format.safetensors import TensorDigest, is_safetensors
from ..results import _Result
from ..store.base import Store
from ..transfer.pool import bounded_map
from . import chunkio
from .chunkio import RangeReader

WINDOW = 4 * 1024 * 1024  # bytes per side held in memory per tensor compared
_VALUE_WORKERS = 4

# little-endian numpy dtypes for safetensors dtypes (BF16 is widened by hand)
_NUMPY = {"F16": "<f2", "F32": "<f4", "F64": "<f8", "I8": "i1", "U8": "u1", "I16": "<i2",
          "U16": "<u2", "I32": "<i4", "U32": "<u4", "I64": "<i8", "U64": "<u8", "BOOL": "?",
          "BF16": "<u2"}


@dataclass(frozen=True)
class DiffResult(_Result):
    a: dict[str, Any]  # {"artifact", "version", "step"}
    b: dict[str, Any]
    identical: bool  # same kind, files, empty directories, step, metrics and metadata (time
    #                  and provenance aside)
    step: dict[str, Any]  # {"a", "b", "changed"}
    # {"a", "b", "changed"}: "dir", or "file" (a single pushed file, restored as a file)
    kind: dict[str, Any]
    metrics: dict[str, Any]  # {"added": {k: v}, "removed": {k: v}, "changed": {k: {a,b,delta}},
    #                           "unchanged": {k: v}}
    metadata: dict[str, Any]  # {"added": {k: v}, "removed": {k: v}, "changed": {k: {a, b}}}
    files: dict[str, Any]  # {"added", "removed", "modified", "unchanged"}: lists with sizes
    #                        (modified ones with "content": changed | mode | unknown, see
    #                        _content); {"dirs_added", "dirs_removed"}: empty directories' paths
    bytes: dict[str, Any]  # {"total", "shared", "to_fetch", "chunks", "chunks_shared"} of B
    tensors: dict[str, Any]  # {"added", "removed", "reshaped", "retyped", "changed",
    #                           "unchanged", "files", "untracked_files"}
    values: dict[str, Any] | None = None  # {"bytes_fetched", "tensors"} with values=True
    # per modified file but those whose bytes are the same ("mode"): {"path", "kind",
    # "inspected", ...} (core/contents.py)
    contents: list[dict[str, Any]] | None = None

    @property
    def different(self) -> bool:
        return not self.identical


def _ref(m: Manifest) -> dict[str, Any]:
    return {"artifact": m.artifact, "version": m.version, "step": m.step,
            "ref": f"{m.artifact}@v{m.version}"}


def _same_bytes(ea: FileEntry, eb: FileEntry) -> bool | None:
    """Whether two regular files hold the same bytes, as far as their manifest entries tell;
    None when they cannot: the versions cut the file into chunks differently (another chunk
    size, a ckptlake that cuts structured files anew, a file packed on one side only), and equal
    bytes cut differently have different chunk digests.  Compared by chunk lists alone, such a
    file was "modified" and `diff --exit-code` said 1 for a byte-identical file."""
    if ea.size != eb.size:
        return False
    if ea.digest is not None and eb.digest is not None:  # whole-file digests (packed files)
        return ea.digest == eb.digest
    ca = [(c.digest, c.size) for c in ea.chunks]
    cb = [(c.digest, c.size) for c in eb.chunks]
    if ca == cb:
        return True
    if ea.digest is None and eb.digest is None and [n for _, n in ca] == [n for _, n in cb]:
        return False  # cut alike, so a chunk whose digest differs holds other bytes
    return None


def _content(ea: FileEntry, eb: FileEntry) -> str:
    """How an entry present in both versions compares: "same" (unchanged), "changed" (its
    bytes or its link target), "mode" (only the executable bit), "unknown" (its bytes
    not comparable from the manifests, see _same_bytes; the executable bit may differ too)."""
    if ea.symlink is not None or eb.symlink is not None:
        return "same" if ea.symlink == eb.symlink else "changed"
    same = _same_bytes(ea, eb)
    if same is False:
        return "changed"
    if same is None:
        return "unknown"
    return "same" if ea.executable == eb.executable else "mode"


def _dict_diff(a: dict[str, Any], b: dict[str, Any], *, numeric: bool) -> dict[str, Any]:
    changed: dict[str, Any] = {}
    for k in sorted(a.keys() & b.keys()):
        if a[k] != b[k]:
            changed[k] = {"a": a[k], "b": b[k]}
            if numeric:
                # two finite metrics can differ by more than a float holds (1e308 -> -1e308):
                # at least that much, as a finite number (--json output is strict JSON)
                changed[k]["delta"] = max(-sys.float_info.max,
                                          min(sys.float_info.max, b[k] - a[k]))
    out = {"added": {k: b[k] for k in sorted(b.keys() - a.keys())},
           "removed": {k: a[k] for k in sorted(a.keys() - b.keys())}, "changed": changed}
    if numeric:
        out["unchanged"] = {k: a[k] for k in sorted(a.keys() & b.keys()) if a[k] == b[k]}
    return out


def _files(a: Manifest, b: Manifest) -> dict[str, Any]:
    fa, fb = {e.path: e for e in a.files}, {e.path: e for e in b.files}

    def size(e: FileEntry) -> int | None:
        return None if e.symlink is not None else e.size

    out: dict[str, list[dict[str, Any]]] = {"added": [], "removed": [], "modified": [],
                                             "unchanged": []}
    for path in sorted(fa.keys() | fb.keys()):
        ea, eb = fa.get(path), fb.get(path)
        if ea is None:
            out["added"].append({"path": path, "size": size(eb)})  # type: ignore[arg-type]
        elif eb is None:
            out["removed"].append({"path": path, "size": size(ea)})
        elif (content := _content(ea, eb)) != "same":
            out["modified"].append({"path": path, "size_a": size(ea), "size_b": size(eb),
                                    "content": content})
        else:
            out["unchanged"].append({"path": path, "size": size(eb)})
    out["dirs_added"], out["dirs_removed"] = _dirs(b, a), _dirs(a, b)
    return out


def _dirs(m: Manifest, other: Manifest) -> list[str]:
    """The empty directories of `m` that `other` lacks: a pull of one would not create them.
    A directory `other` holds files in is there too (just not empty), and is not listed."""
    there = set(other.dirs)
    for path in [e.path for e in other.files] + list(other.dirs):
        parts = path.split("/")
        there.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return sorted(set(m.dirs) - there)


def _bytes(a: Manifest, b: Manifest) -> dict[str, Any]:
    """What of B's stored bytes A already has: the cost of pulling B next to A."""
    have = a.chunk_digests()
    pieces = {(c.digest, c.offset, c.size) for e in b.files for c in e.chunks}
    total = sum(p[2] for p in pieces)
    shared = sum(p[2] for p in pieces if p[0] in have)
    objects = {p[0] for p in pieces}
    return {"total": total, "shared": shared, "to_fetch": total - shared,
            "chunks": len(objects), "chunks_shared": len(objects & have)}


Side = tuple[FileEntry, TensorInfo]


def _tensor_pairs(a: Manifest, b: Manifest) -> list[tuple[Side | None, Side | None]]:
    """The tensors of A and B, paired: first by file and name, so that a name several files
    hold (model.safetensors' and ema.safetensors' `w`) is compared file by file; then, of those
    left, a name found once on each side, whatever the files (a sharded model's tensor may
    move between shards).  A name still ambiguous pairs with nothing: added and removed."""
    def found(m: Manifest) -> dict[tuple[str, str], Side]:
        return {(e.path, t.name): (e, t) for e in m.files if e.tensors for t in e.tensors}

    ta, tb = found(a), found(b)
    pairs: list[tuple[Side | None, Side | None]] = [(ta[k], tb[k])
                                                    for k in ta.keys() & tb.keys()]
    rest_a = [k for k in ta if k not in tb]
    rest_b = [k for k in tb if k not in ta]
    by_name_a: dict[str, list[tuple[str, str]]] = {}
    by_name_b: dict[str, list[tuple[str, str]]] = {}
    for keys, by_name in ((rest_a, by_name_a), (rest_b, by_name_b)):
        for k in keys:
            by_name.setdefault(k[1], []).append(k)
    moved = {name for name in by_name_a.keys() & by_name_b.keys()
             if len(by_name_a[name]) == 1 == len(by_name_b[name])}
    pairs += [(ta[by_name_a[name][0]], tb[by_name_b[name][0]]) for name in moved]
    pairs += [(ta[k], None) for k in rest_a if k[1] not in moved]
    pairs += [(None, tb[k]) for k in rest_b if k[1] not in moved]

    def order(pair: tuple[Side | None, Side | None]) -> tuple[str, str]:
        e, t = pair[1] or pair[0]  # type: ignore[misc]
        return t.name, e.path

    return sorted(pairs, key=order)


def _tensors(a: Manifest, b: Manifest) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    untracked = sorted({e.path for m in (a, b) for e in m.files
                        if is_safetensors(e.path) and e.symlink is None and e.tensors is None})
    out: dict[str, Any] = {"added": [], "removed": [], "reshaped": [], "retyped": [],
                           "changed": [], "unchanged": 0,
                           "files": sorted({e.path for m in (a, b) for e in m.files
                                            if e.tensors is not None}),
                           "untracked_files": untracked}
    pairs = []

    def brief(e: FileEntry, t: TensorInfo) -> dict[str, Any]:
        return {"name": t.name, "file": e.path, "dtype": t.dtype, "shape": list(t.shape),
                "bytes": t.nbytes}

    for side_a, side_b in _tensor_pairs(a, b):
        if side_b is None:
            out["removed"].append(brief(*side_a))  # type: ignore[misc]
            continue
        if side_a is None:
            out["added"].append(brief(*side_b))
            continue
        (ea, x), (eb, y) = side_a, side_b
        if x.shape != y.shape or x.dtype != y.dtype:
            kind = "reshaped" if x.shape != y.shape else "retyped"
            out[kind].append({"name": y.name, "file": eb.path, "file_a": ea.path,
                              "dtype_a": x.dtype, "dtype_b": y.dtype, "shape_a": list(x.shape),
                              "shape_b": list(y.shape), "data_changed": x.digest != y.digest})
        elif x.digest != y.digest:
            out["changed"].append({**brief(eb, y), "file_a": ea.path})
            pairs.append((ea, x, eb, y))
        else:
            out["unchanged"] += 1
    return out, pairs


def value_pairs(a: Manifest, b: Manifest) -> list[tuple[Any, ...]]:
    """The (file A, tensor A, file B, tensor B) pairs `values=True` compares: changed data,
    same dtype and shape (from the manifests alone)."""
    return _tensors(a, b)[1]


def bytes_to_fetch(a: Manifest, b: Manifest, *, values: bool = True,
                   inspect: bool = False) -> int:
    """Everything `diff(a, b, values=, inspect=)` downloads: the changed tensors' ranges
    (values) and the chunks read inside modified safetensors and torch files (inspect,
    core/contents.py)."""
    from .contents import bytes_to_read

    total = values_to_fetch(value_pairs(a, b), {**a.stored, **b.stored}) if values else 0
    if inspect:
        modified = _files(a, b)["modified"]
        total += bytes_to_read(a, b, _to_look_into(modified))
        fa, fb = {e.path: e for e in a.files}, {e.path: e for e in b.files}
        total += sum(_read_cost(a, fa[f["path"]]) + _read_cost(b, fb[f["path"]])
                     for f in modified if f["content"] == "unknown")
    return total


def _to_look_into(modified: list[dict[str, Any]]) -> list[str]:
    """The modified files whose insides may differ: not those whose bytes are the same (only
    the executable bit changed)."""
    return [f["path"] for f in modified if f["content"] != "mode"]


def _read_cost(m: Manifest, e: FileEntry) -> int:
    """What reading file `e` of `m` whole downloads: its chunk pieces, an encoded chunk (the
    manifest's `stored` hint) whole at its stored size."""
    return sum(m.stored.get(c.digest, c.size) for c in e.chunks)


_COMPARE_BLOCK = 4 * 1024 * 1024


def _compare_bytes(store: Store, a: Manifest, ea: FileEntry, b: Manifest, eb: FileEntry
                   ) -> tuple[bool, int]:
    """(whether the two files hold the same bytes, bytes downloaded): both read through
    LakeFile (every chunk verified), block by block, up to the first difference."""
    from .reader import LakeFile

    files = (LakeFile(store, ea, a.hash, stored=a.stored),
             LakeFile(store, eb, b.hash, stored=b.stored))
    try:
        x, y = memoryview(bytearray(_COMPARE_BLOCK)), memoryview(bytearray(_COMPARE_BLOCK))
        while True:
            n, k = files[0].readinto(x), files[1].readinto(y)
            if n != k or x[:n] != y[:k]:  # (views: compared in place, not copied)
                return False, sum(f.bytes_fetched for f in files)
            if n == 0:
                return True, sum(f.bytes_fetched for f in files)
    finally:
        for f in files:
            f.close()


def _resolve_unknown(store: Store, a: Manifest, b: Manifest, files: dict[str, Any]) -> None:
    """`--inspect`: read both sides of each modified file whose bytes the manifests could not
    compare (cut into chunks differently), and settle it: unchanged (moved there), "mode"
    (only the executable bit) or "changed"; its `bytes_fetched` (kept when it moves) says
    what that read."""
    fa, fb = {e.path: e for e in a.files}, {e.path: e for e in b.files}
    for f in [f for f in files["modified"] if f["content"] == "unknown"]:
        ea, eb = fa[f["path"]], fb[f["path"]]
        same, f["bytes_fetched"] = _compare_bytes(store, a, ea, b, eb)
        if not same:
            f["content"] = "changed"
        elif ea.executable != eb.executable:
            f["content"] = "mode"
        else:
            files["modified"].remove(f)
            files["unchanged"].append({"path": f["path"], "size": f["size_b"],
                                       "bytes_fetched": f["bytes_fetched"]})
    files["unchanged"].sort(key=lambda f: f["path"])


def values_to_fetch(pairs: list[tuple[Any, ...]], stored: dict[str, int] | None = None) -> int:
    """The bytes `tensor_values(store, pairs)` downloads: each side's tensor range, once, for
    every pair whose dtype it can compare (an unsupported dtype is reported, not fetched);
    a chunk stored encoded (`stored`: the manifests' hints) is fetched whole, once for all
    the tensors in it (it is kept while they are compared: exact unless more than
    2 x _VALUE_WORKERS such chunks are in use at once, then some are fetched again)."""
    stored = stored or {}
    total = 0
    encoded: set[str] = set()
    for ea, x, eb, y in pairs:
        if x.dtype not in _NUMPY:
            continue
        for entry, t in ((ea, x), (eb, y)):
            for key, _, _, n in _pieces(entry, t.start, t.nbytes):
                d = layout.parse_chunk_key(key) or ""
                if d in stored:
                    encoded.add(d)
                else:
                    total += n
    return total + sum(stored[d] for d in encoded)


def diff(store: Store, a: Manifest, b: Manifest, *, values: bool = False,
         inspect: bool = False) -> DiffResult:
    """`contents` says, per modified file, whether and how it was looked into
    (core/contents.py).  inspect=True reads inside modified files: safetensors
    `__metadata__`, torch archives' storages and tensors (whole chunks: typically each side's
    first and last chunk of such a file; `bytes_to_fetch` counts them), and both sides, whole,
    of a file whose bytes the manifests cannot compare (content "unknown")."""
    files = _files(a, b)
    if inspect:
        _resolve_unknown(store, a, b, files)
    metrics = _dict_diff(a.metrics, b.metrics, numeric=True)
    metadata = _dict_diff(a.metadata, b.metadata, numeric=False)
    tensors, pairs = _tensors(a, b)
    identical = (a.step == b.step and not (metrics["added"] or metrics["removed"]
                                           or metrics["changed"])
                 and not (metadata["added"] or metadata["removed"] or metadata["changed"])
                 and not (files["added"] or files["removed"] or files["modified"]
                          or files["dirs_added"] or files["dirs_removed"])
                 and a.kind == b.kind)
    result_values = None
    if values:
        result_values = tensor_values(store, pairs, b.hash, {**a.stored, **b.stored},
                                      where=(f"{a.artifact}@v{a.version}",
                                             f"{b.artifact}@v{b.version}"))
        by_name = {(t["name"], t["file"]): t for t in result_values["tensors"]}
        for t in tensors["changed"]:
            t["values"] = {k: v for k, v in by_name[(t["name"], t["file"])].items()
                           if k not in ("name", "file")}
    from .contents import inspect_modified

    contents = inspect_modified(store, a, b, _to_look_into(files["modified"]), read=inspect)
    return DiffResult(a=_ref(a), b=_ref(b), identical=identical,
                      step={"a": a.step, "b": b.step, "changed": a.step != b.step},
                      kind={"a": a.kind, "b": b.kind, "changed": a.kind != b.kind},
                      metrics=metrics, metadata=metadata, files=files, bytes=_bytes(a, b),
                      tensors=tensors, values=result_values, contents=contents)


# --- values -------------------------------------------------------------------------------------

def _pieces(entry: FileEntry, start: int, length: int) -> Iterator[tuple[str, int, int, int]]:
    """(chunk key, offset in the object, offset in the file, length) of each chunk piece of the
    file's bytes [start, start+length)."""
    end, pos = start + length, 0
    for c in entry.chunks:
        lo, hi = max(start, pos), min(end, pos + c.size)
        if lo < hi:
            yield layout.chunk_key(c.digest), (c.offset or 0) + lo - pos, lo, hi - lo
        pos += c.size
        if pos >= end:
            break


def read_range(store: Store, entry: FileEntry, start: int, length: int,
               ranges: RangeReader | None = None, count: Any = None) -> Iterator[bytes]:
    """Bytes [start, start+length) of a stored file, one ranged GET per chunk it touches (an
    encoded chunk is fetched whole once, decoded and verified, through `ranges`)."""
    for key, obj_offset, _, n in _pieces(entry, start, length):
        if ranges is not None:
            data = ranges.get_range(layout.parse_chunk_key(key) or "", obj_offset, n, count)
        else:
            data = store.get_range(key, obj_offset, n)
        if len(data) != n:
            raise IntegrityError(f"chunk {key.rsplit('/', 1)[-1][:12]} of {entry.path} is "
                                 "shorter than its manifest says")
        yield data


def check_tensor(t: TensorInfo, dig: TensorDigest, where: str = "") -> None:
    """The bytes fed to `dig` must be the tensor's recorded bytes."""
    if not dig.complete or dig.hexdigest() != t.digest:
        of = f" of {where}" if where else ""
        raise IntegrityError(f"tensor {t.name}{of}: bytes read do not match its recorded "
                             "digest", hint="the lake may be corrupt; run: ckptlake verify "
                                            "--read-data")


def read_tensor_into(store: Store, entry: FileEntry, t: TensorInfo, buffer: bytearray, *,
                     workers: int = _VALUE_WORKERS, stored: dict[str, int] | None = None,
                     algo: str, where: str = "") -> int:
    """Every byte of tensor `t` into `buffer` (len t.nbytes): exactly its range, one ranged GET
    per chunk piece (up to `workers` at a time), verified against its block digest before
    returning (IntegrityError, and the buffer must not be used, if they differ).  Returns the
    bytes fetched.  A chunk `stored` (the manifest's hints) names as encoded is fetched whole,
    decoded and verified against its own digest first."""
    stored = stored or {}
    try:
        return _read_tensor_into(store, entry, t, buffer, workers, stored, algo, where)
    except IntegrityError:
        touched = [layout.parse_chunk_key(p[0]) or "" for p in _pieces(entry, t.start,
                                                                       t.nbytes)]
        if not chunkio.retry_whole(stored, touched):
            raise
        # a stale hint: some chunk read by range is stored encoded; read them whole
        return _read_tensor_into(store, entry, t, buffer, workers, chunkio.EveryChunk(),
                                 algo, where)


def _read_tensor_into(store: Store, entry: FileEntry, t: TensorInfo, buffer: bytearray,
                      workers: int, stored: dict[str, int], algo: str, where: str) -> int:
    view = memoryview(buffer)
    dig = TensorDigest(t.start, t.end, algo)

    def fetch(piece: tuple[str, int, int, int]) -> int:
        key, obj_offset, file_offset, n = piece
        d = layout.parse_chunk_key(key) or ""
        target = view[file_offset - t.start:file_offset - t.start + n]
        if d in stored:
            whole = memoryview(chunkio.fetch(store, algo, d, raw_size=None,
                                             where=where or entry.path))
            got = whole[obj_offset:obj_offset + n]
            target[:len(got)] = got
            dig.add(file_offset, got)
            if len(got) != n:
                raise IntegrityError(f"chunk {d[:12]} of {entry.path} is shorter than its "
                                     "manifest says")
            return stored.get(d, len(whole))
        got = store.get_range_into(key, obj_offset, target)
        if len(got) != n:
            raise IntegrityError(f"chunk {key.rsplit('/', 1)[-1][:12]} of {entry.path} is "
                                 "shorter than its manifest says")
        dig.add(file_offset, got)
        return n

    pieces = [p for piece in _pieces(entry, t.start, t.nbytes)
              for p in ([piece] if (layout.parse_chunk_key(piece[0]) or "") in stored
                        else _split(piece))]
    fetched = sum(bounded_map(fetch, pieces, workers=workers, name="ckptlake-tensor"))
    check_tensor(t, dig, where)
    return fetched


def _split(piece: tuple[str, int, int, int]) -> Iterator[tuple[str, int, int, int]]:
    """A chunk piece cut into WINDOW-sized ranged GETs (more of them in flight for a tensor
    held by one large chunk)."""
    key, obj_offset, file_offset, n = piece
    for o in range(0, n, WINDOW):
        yield key, obj_offset + o, file_offset + o, min(WINDOW, n - o)


def require_numpy() -> Any:
    try:
        import numpy
    except ImportError:
        raise UsageError("diff --values needs numpy (a dependency of ckptlake: this "
                         "installation left it out)", hint="pip install numpy") from None
    return numpy


def _as_array(np: Any, data: bytes, dtype: str) -> Any:
    x = np.frombuffer(data, dtype=_NUMPY[dtype])
    if dtype == "BF16":  # bfloat16 is the top half of a float32
        x = (x.astype(np.uint32) << 16).view(np.float32)
    return x


def _delta(np: Any, a: Any, b: Any) -> tuple[Any, Any, int]:
    """(A as float64 with NaN/inf as 0, B - A as float64, how many elements changed to or from
    NaN/inf).  The difference leaves out unchanged elements (a NaN in both, inf in both) and
    those non-finite changes, which only the count reports.

    Integers are subtracted before anything becomes a float: a float64 holds 53 bits, so
    2**62 + 1 and 2**62 were one value and the change was lost.  Their difference, taken in
    the unsigned type of the same width, is exact modulo 2**bits, and |B - A| < 2**bits: it
    is the magnitude, the comparison gives the sign (no int64 overflow, uint64 included)."""
    if a.dtype.kind in "iu":
        unsigned = a.dtype.str.replace("i", "u")
        ua, ub = a.view(unsigned), b.view(unsigned)
        up = b >= a
        size = np.where(up, ub - ua, ua - ub).astype(np.float64)
        return a.astype(np.float64), np.where(up, size, -size), 0
    va, vb = a.astype(np.float64), b.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        d = vb - va
    changed = ~((va == vb) | (np.isnan(va) & np.isnan(vb)))
    # by the values, not by their difference: 1e308 -> -1e308 is a finite change whose
    # difference overflows (kept, at the largest float: "at least that much")
    nonfinite = changed & ~(np.isfinite(va) & np.isfinite(vb))
    big = np.finfo(np.float64).max
    d = np.clip(np.where(changed & ~nonfinite, d, 0.0), -big, big)
    return np.where(np.isfinite(va), va, 0.0), d, int(np.count_nonzero(nonfinite))


def _compare(store: Store, pair: tuple[FileEntry, TensorInfo, FileEntry, TensorInfo],
             ranges: tuple[RangeReader, RangeReader]) -> dict[str, Any]:
    """ranges: one per side (_side_readers), shared by the pairs of one diff, so that a
    chunk stored encoded is fetched (whole) once however many of its tensors are compared,
    on either side."""
    np = require_numpy()
    ea, x, eb, y = pair
    wire = [0]  # bytes this pair made cross the wire

    def count(n: int) -> None:
        wire[0] += n

    out: dict[str, Any] = {"name": y.name, "file": eb.path}
    if x.dtype not in _NUMPY:
        return {**out, "error": f"unsupported dtype {x.dtype}", "bytes_fetched": 0}
    # tensor digests use the lake's hash, as its chunk digests do
    algo = ranges[0].algo
    digests = (TensorDigest(x.start, x.end, algo), TensorDigest(y.start, y.end, algo))
    max_abs, ss_diff, ss_a, nonfinite = 0.0, 0.0, 0.0, 0
    for w in range(0, x.nbytes, WINDOW):
        n = min(WINDOW, x.nbytes - w)
        sides = []
        for entry, t, dig, side in ((ea, x, digests[0], ranges[0]),
                                    (eb, y, digests[1], ranges[1])):
            data = b"".join(read_range(store, entry, t.start + w, n, side, count))
            dig.add(t.start + w, data)
            sides.append(_as_array(np, data, t.dtype))
        va, d, bad = _delta(np, *sides)
        nonfinite += bad
        if d.size:
            max_abs = max(max_abs, float(np.abs(d).max()))
        with np.errstate(over="ignore", invalid="ignore"):  # huge values: inf, handled below
            ss_diff += float(np.dot(d, d))
            ss_a += float(np.dot(va, va))
    for t, dig, side in ((x, digests[0], ranges[0]), (y, digests[1], ranges[1])):
        check_tensor(t, dig, side.where)
    if not (math.isfinite(ss_diff) and math.isfinite(ss_a)):
        rel: float | None = None  # sums of squares beyond float64: not a number we can give
    elif ss_a > 0:
        rel = math.sqrt(ss_diff) / math.sqrt(ss_a)
    else:
        rel = 0.0 if ss_diff == 0 else None  # relative to zero: undefined
    out.update(max_abs_diff=max_abs, rel_l2=rel, bytes_fetched=wire[0])
    if nonfinite:
        out["nonfinite"] = nonfinite  # changes to or from NaN/inf, left out of the numbers
    return out


def _side_readers(store: Store, algo: str, stored: Any, where: tuple[str, str]
                  ) -> tuple[RangeReader, RangeReader]:
    """A RangeReader per side, so that errors name that side's version, over one memory of
    decoded chunks: an encoded chunk both versions hold (the unchanged chunks of a large
    tensor with a few changed values) is fetched once, as values_to_fetch counts it, not once
    per side.  Together they keep as many chunks as two separate readers would."""
    a = RangeReader(store, algo, stored, where[0], keep=2 * _VALUE_WORKERS)
    b = RangeReader(store, algo, stored, where[1], keep=2 * _VALUE_WORKERS)
    b._decoded, b._lock, b._fetching = a._decoded, a._lock, a._fetching
    return a, b


def tensor_values(store: Store, pairs: list[tuple[Any, ...]], algo: str,
                  stored: dict[str, int] | None = None,
                  where: tuple[str, str] = ("diff --values", "diff --values")
                  ) -> dict[str, Any]:
    """Value statistics for changed tensors (same dtype and shape), fetching only their bytes
    (`stored`: both manifests' stored-size hints; `where`: each side's version, as errors
    name it).

    A pair whose check fails is compared again with every chunk read whole, as
    read_tensor_into does: a hint may be stale (a chunk re-stored encoded after the manifest
    was written, docs/format.md "Chunk encodings"), and only damaged data fails twice."""
    if pairs:
        require_numpy()  # fail before any request if numpy is missing
    stored = stored or {}
    ranges = _side_readers(store, algo, stored, where)
    whole = _side_readers(store, algo, chunkio.EveryChunk(), where)

    def compare(pair: tuple[Any, ...]) -> dict[str, Any]:
        try:
            return _compare(store, pair, ranges)  # type: ignore[arg-type]
        except IntegrityError:
            ea, x, eb, y = pair
            touched = [layout.parse_chunk_key(piece[0]) or ""
                       for e, t in ((ea, x), (eb, y)) for piece in _pieces(e, t.start, t.nbytes)]
            if not chunkio.retry_whole(stored, touched):
                raise
            try:
                return _compare(store, pair, whole)  # type: ignore[arg-type]
            except IntegrityError as e:  # the chunk is named; say which tensor needed it
                if e.message.startswith("tensor "):
                    raise
                raise IntegrityError(f"{e.message} (comparing tensor {y.name} of {eb.path})",
                                     hint=e.hint) from None

    stats = sorted(bounded_map(compare, pairs, workers=_VALUE_WORKERS, name="ckptlake-diff"),
                   key=lambda s: (s["file"], s["name"]))
    return {"bytes_fetched": sum(s["bytes_fetched"] for s in stats), "tensors": stats}
