"""How a large file is cut into chunks: from the file's layout to (offset, length) cuts.

Readers never assume where chunks begin (a manifest lists each chunk's size, in file order), so
where to cut is the pusher's choice, and what is chosen here changes only how much a re-push
deduplicates.  Fixed offsets (0, chunk_size, 2 x chunk_size, ...) serve a file whose bytes change
in place, but one byte inserted near the start moves every later boundary: re-saving a
safetensors file with one more `__metadata__` key (+40 header bytes) re-uploaded all of it.

Model files are made of items (tensors, zip entries) whose bytes do not move relative to their
own first byte when something before them grows, so cuts are placed relative to each item:

- the file's own header (safetensors: 8-byte length + JSON; npy: magic + dict; a torch
  archive: its data.pkl) is a chunk of its own, so a changed header costs exactly that chunk;
  so is a zip's tail (the central directory, which changes whenever any entry does);
- a large item (>= 1 MiB, or the chunk size if smaller) is cut at fixed offsets from its first
  byte: its chunks are the same bytes wherever the item sits in the file;
- small items, and the bytes between items (zip local headers, npy headers inside an npz),
  are packed into runs of at most chunk_size, like small files into packs: a run ends before a
  large item, when the next piece would not fit, or before an item whose crc32(name) & 31 is 0
  once it holds chunk_size / 8 (so adding one small tensor disturbs one or two runs, not all
  that follow).  The bytes between two large items (a zip local header) are therefore a tiny
  run of their own: they hold the entry's CRC and alignment padding, which change when earlier
  entries move, and must not drag the item's data chunks along.

Layouts are found by content (magic bytes, a header that parses), not by file name, from
bounded reads: the first bytes (safetensors, npy), or the end of central directory, the
central directory and one local header per entry (zip: torch.save archives, npz; plus a
torch archive's data.pkl, for the storages' dtypes).  A header that lies (offsets past the
end, overlapping items, JSON that does not parse) is not trusted: the file is cut at fixed
offsets as before, and a debug note says why.  Every plan is checked to cover the file
exactly, once, in order, before it is used; one that does not is replaced by fixed offsets,
so a wrong layout can cost dedup, never bytes.

Each cut may carry a dtype hint (safetensors names: "F32", "BF16", ...) for a codec: set when
the cut's bytes are elements of that one little-endian dtype counted from the cut's first byte.
Pure functions of the bytes handed in; reading the file is the caller's (`read(offset, n)`).
"""
from __future__ import annotations

import io
import logging
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .safetensors import ITEMSIZE, header_length, parse_header

log = logging.getLogger("ckptlake")

# Items below this are packed into runs: the same threshold as small files (core/push.py).
SMALL = 1024 * 1024
# Bounds on what is read to find a layout; a file that needs more is cut at fixed offsets.
MAX_NPY_HEADER = 1024 * 1024
# A zip's central directory (and the end-of-directory search): ~80,000 entries of a torch
# archive; the parsed entries (~0.5 KiB each) stay within push's memory bound.
MAX_ZIP_META = 8 * 1024 * 1024
# torch's data.pkl, read to learn the storages' dtypes: ~30 opcodes per tensor, so ~15,000
# tensors; a larger one (or one of more opcodes, each of which may build an object) gives no
# dtype hints, which costs nothing but the hints.
MAX_PICKLE = 16 * 1024 * 1024
MAX_PICKLE_OPS = 500_000

Read = Callable[[int, int], bytes]


@dataclass(frozen=True)
class Cut:
    """Bytes [offset, offset + length) of the file, stored as one chunk object."""

    offset: int
    length: int
    dtype: str | None = None


@dataclass(frozen=True)
class Item:
    """A run of the file's bytes that keeps its contents when earlier bytes move."""

    start: int
    end: int
    name: str = ""
    dtype: str | None = None


@dataclass(frozen=True)
class Layout:
    kind: str  # "safetensors" | "npy" | "torch" | "npz" | "zip"
    head: int  # bytes [0, head) are the file's header: chunks of their own
    items: tuple[Item, ...]  # sorted, disjoint, within [head, tail)
    tail: int | None = None  # bytes [tail, size) (a zip's directory): chunks of their own


@dataclass(frozen=True)
class Plan:
    kind: str  # a Layout kind, or "fixed"
    cuts: tuple[Cut, ...]
    note: str | None = None  # why a file that looked structured was cut at fixed offsets


class Lying(Exception):
    """A header that cannot describe this file; the message says why."""


# --- the rules ----------------------------------------------------------------------------------

def fixed_cuts(start: int, length: int, chunk_size: int, dtype: str | None = None,
               ) -> list[Cut]:
    """Pieces of chunk_size from `start`; the dtype hint only on pieces that start on an
    element boundary (always, unless chunk_size is not a multiple of the item size)."""
    size = ITEMSIZE.get(dtype or "", 0)
    return [Cut(start + off, min(chunk_size, length - off),
                dtype if size and off % size == 0 else None)
            for off in range(0, length, chunk_size)]


def cut_layout(layout: Layout, size: int, chunk_size: int) -> list[Cut]:
    """The cuts of a file of `size` bytes with this layout (module doc)."""
    cuts: list[Cut] = []
    cutter = Cutter(chunk_size, min(layout.head, size), cuts.append)
    for it in layout.items:
        cutter.item(it)
    cutter.finish(size if layout.tail is None else layout.tail, size)
    return cuts


class Cutter:
    """cut_layout's rules applied to items handed in one at a time, in file order, each cut
    passed to `emit` as soon as it is final: a file being written (core/streampush.py) is cut
    exactly as a push of the finished file would cut it, without holding the file.

    A large item may be announced before its end is known (`large_begins`), so that its
    fixed-size pieces can be cut while it is still being written."""

    def __init__(self, chunk_size: int, head: int, emit: Callable[[Cut], None]) -> None:
        self.chunk_size = chunk_size
        self.large = min(SMALL, chunk_size)
        self.emit = emit
        self.run: list[tuple[int, int, str | None, bool]] = []  # (start, end, dtype, is_item)
        self.pos = head  # the end of what has been handed to a cut or to the run
        for c in fixed_cuts(0, head, chunk_size):
            emit(c)

    def _close(self) -> None:
        if self.run:
            start, end = self.run[0][0], self.run[-1][1]
            self.emit(Cut(start, end - start, _run_dtype(self.run)))
            self.run.clear()

    def _add(self, name: str, pieces: list[tuple[int, int, str | None, bool]]) -> None:
        """Pack pieces (an item and the bytes leading up to it) into the current run."""
        run, chunk_size = self.run, self.chunk_size
        held = run[-1][1] - run[0][0] if run else 0
        key = zlib.crc32(name.encode("utf-8", "surrogatepass"))
        boundary = bool(name) and key & 31 == 0 and held >= chunk_size // 8
        if run and (held + pieces[-1][1] - pieces[0][0] > chunk_size or boundary):
            self._close()
        run.extend(pieces)

    def _glue(self, start: int, end: int) -> None:
        """Bytes of no item: a long stretch is cut like a large item, a short one packed."""
        if end - start >= self.large:
            self._close()
            for c in fixed_cuts(start, end - start, self.chunk_size):
                self.emit(c)
        elif end > start:
            self._add("", [(start, end, None, False)])

    def item(self, it: Item) -> None:
        if it.end - it.start >= self.large:
            self.large_begins(it.start)
            for c in fixed_cuts(it.start, it.end - it.start, self.chunk_size, it.dtype):
                self.emit(c)
            self.pos = it.end
            return
        pos = self.pos
        if it.start - pos >= self.large or it.end - pos > self.chunk_size:
            self._glue(pos, it.start)
            pos = it.start
        # the few bytes leading up to a small item (its zip header) travel with it
        lead = [(pos, it.start, None, False)] if it.start > pos else []
        self._add(it.name, lead + [(it.start, it.end, it.dtype, True)])
        self.pos = it.end

    def large_begins(self, start: int) -> None:
        """An item of at least `large` bytes starts at `start`: what precedes it is cut; the
        caller cuts the item itself (fixed_cuts from `start`) and then sets `pos` to its end."""
        self._glue(self.pos, start)  # its zip header: packed before it, never into its chunks
        self._close()
        self.pos = start

    def finish(self, tail: int, size: int) -> None:
        """What follows the last item: bytes up to `tail` packed or cut, then [tail, size) in
        fixed pieces of its own."""
        self._glue(self.pos, tail)
        self._close()
        for c in fixed_cuts(tail, size - tail, self.chunk_size):
            self.emit(c)


def _run_dtype(run: Sequence[tuple[int, int, str | None, bool]]) -> str | None:
    """The run's dtype if it is nothing but aligned items of one dtype."""
    dtypes = {d for _, _, d, item in run}
    if len(dtypes) != 1 or not all(item for *_, item in run):
        return None
    dtype = dtypes.pop()
    size = ITEMSIZE.get(dtype or "", 0)
    if not size or any((s - run[0][0]) % size for s, *_ in run):
        return None
    return dtype


def check_cuts(cuts: Sequence[Cut], size: int, chunk_size: int) -> bool:
    """True if the cuts cover [0, size) exactly once, in order, none empty or too large."""
    pos = 0
    for c in cuts:
        if c.offset != pos or not 0 < c.length <= chunk_size:
            return False
        pos += c.length
    return pos == size


def plan(read: Read, size: int, chunk_size: int, *, name: str = "") -> Plan:
    """How to cut a file of `size` bytes whose bytes `read(offset, n)` returns.

    Never raises for what the file holds: an unknown or lying layout is cut at fixed offsets
    (with a note for the latter).  `name` only labels the note.
    """
    fixed = tuple(fixed_cuts(0, size, chunk_size))
    try:
        layout = detect(read, size)
    except Lying as exc:
        note = f"{name or 'file'}: {exc}; cut at fixed offsets"
        log.debug("ckptlake: %s", note)
        return Plan("fixed", fixed, note)
    except Exception as exc:  # noqa: BLE001 - a read error or a parser bug must not fail
        # the push: the upload reads the file again and reports what is wrong with it
        note = f"{name or 'file'}: layout not readable ({type(exc).__name__}: " \
               f"{str(exc)[:80]}); cut at fixed offsets"
        log.debug("ckptlake: %s", note)
        return Plan("fixed", fixed, note)
    if layout is None:
        return Plan("fixed", fixed)
    cuts = tuple(cut_layout(layout, size, chunk_size))
    if not check_cuts(cuts, size, chunk_size):  # cannot happen for a checked layout
        note = f"{name or 'file'}: its {layout.kind} layout gave inconsistent cuts; " \
               "cut at fixed offsets"
        log.debug("ckptlake: %s", note)
        return Plan("fixed", fixed, note)
    return Plan(layout.kind, cuts)


# --- finding the layout -------------------------------------------------------------------------

def detect(read: Read, size: int) -> Layout | None:
    """The layout of the file, None for a file of no known kind, Lying for a bad header."""
    if size < 8:
        return None
    prefix = read(0, 8)
    if len(prefix) < 8:
        raise Lying("shorter than its size")
    if prefix.startswith(b"\x93NUMPY"):
        return _npy(read, size)
    if prefix.startswith(b"PK\x03\x04"):
        return _zip(read, size)
    n = header_length(prefix)
    if n is not None and read(8, 1) == b"{":
        return _safetensors(read, size, n)
    return None


def _checked(kind: str, head: int, items: list[Item], size: int, *,
             zip_directory: bool = False) -> Layout:
    """The layout, once its items are known not to overlap the header, each other or the end.

    zip_directory: what follows the last item (a zip's central directory: every entry's
    offset and CRC, so it changes whenever any entry does) is a tail of its own, not packed
    with the last small items."""
    items = sorted((i for i in items if i.end > i.start), key=lambda i: i.start)
    pos = head
    for it in items:
        if it.start < pos:
            raise Lying(f"{kind} items overlap (at byte {it.start})")
        if it.end > size:
            raise Lying(f"{kind} item {it.name!r} ends past the end of the file")
        pos = it.end
    return Layout(kind, head, tuple(items), pos if zip_directory and items else None)


def _safetensors(read: Read, size: int, n: int) -> Layout:
    if 8 + n > size:
        raise Lying("safetensors header longer than the file")
    header = parse_header(read(0, 8 + n), size)
    if header is None:
        raise Lying("safetensors header does not parse or does not fit the file "
                    "(offsets past the end, overlapping tensors, wrong sizes)")
    return _checked("safetensors", header.data_start,
                    [Item(s, e, name, dtype if dtype in ITEMSIZE else None)
                     for name, dtype, _, s, e in header.tensors], size)


# numpy dtype descriptors -> safetensors dtype names (little-endian or byte-sized only)
_NPY_DTYPES = {"<f2": "F16", "<f4": "F32", "<f8": "F64", "<i2": "I16", "<i4": "I32",
               "<i8": "I64", "<u2": "U16", "<u4": "U32", "<u8": "U64", "|i1": "I8",
               "|u1": "U8", "|b1": "BOOL"}


def _npy_header(buf: bytes) -> tuple[int, dict[str, Any]] | None:
    """(header length, header dict) of the npy bytes `buf` starts with, or None if `buf` is
    too short to hold it (Lying if it is no npy header)."""
    if len(buf) < 10:
        return None
    major = buf[6]
    if major == 1:
        (hlen,) = struct.unpack("<H", buf[8:10])
        start = 10
    elif major in (2, 3):
        if len(buf) < 12:
            return None
        (hlen,) = struct.unpack("<I", buf[8:12])
        start = 12
    else:
        raise Lying(f"npy format version {major} is unknown")
    if start + hlen > MAX_NPY_HEADER:
        raise Lying("npy header too large")
    if len(buf) < start + hlen:
        return None
    import ast

    try:
        doc = ast.literal_eval(buf[start:start + hlen].decode("latin-1"))
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise Lying("npy header does not parse") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("shape"), tuple) \
            or not all(isinstance(d, int) and d >= 0 for d in doc["shape"]):
        raise Lying("npy header has no valid shape")
    return start + hlen, doc


def _npy_item(read: Read, start: int, length: int, name: str) -> tuple[int, Item | None]:
    """(header length, data item) of the npy array stored in bytes [start, start+length)."""
    got = _npy_header(read(start, min(length, 4096)))
    if got is None:
        got = _npy_header(read(start, min(length, MAX_NPY_HEADER)))
    if got is None:
        raise Lying(f"{name or 'npy'}: header runs past the end")
    hlen, doc = got
    descr = doc.get("descr")
    if not isinstance(descr, str):  # a structured dtype: a layout of its own, no hint
        return hlen, Item(start + hlen, start + length, name)
    if "O" in descr:  # pickled Python objects: bytes of no fixed layout
        return hlen, None
    dtype = _NPY_DTYPES.get(descr)
    m = re.fullmatch(r"[<>|=]([fiucbSVU])(\d+)", descr)
    if m:
        itemsize = int(m.group(2)) * (4 if m.group(1) == "U" else 1)
        count = 1
        for d in doc["shape"]:
            count *= d
        if count * itemsize != length - hlen:
            raise Lying(f"{name or 'npy'}: shape and dtype do not match the data length")
    return hlen, Item(start + hlen, start + length, name, dtype)


def _npy(read: Read, size: int) -> Layout:
    hlen, item = _npy_item(read, 0, size, "")
    return _checked("npy", hlen, [item] if item else [], size)


class _Window(io.RawIOBase):
    """A read-only file over `read`, for zipfile, that refuses to read more than a budget."""

    def __init__(self, read: Read, size: int, budget: int) -> None:
        super().__init__()
        self._read, self._size, self._budget, self._pos = read, size, budget, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, b: Any) -> int:
        n = max(0, min(len(b), self._size - self._pos))
        if n > self._budget:
            raise Lying(f"zip directory larger than the {MAX_ZIP_META >> 20} MiB read to plan "
                        "its cuts")
        self._budget -= n
        data = self._read(self._pos, n) if n else b""
        b[:len(data)] = data
        self._pos += len(data)
        return len(data)


def _zip(read: Read, size: int) -> Layout:
    import zipfile

    try:
        zf = zipfile.ZipFile(io.BufferedReader(_Window(read, size, MAX_ZIP_META),
                                               buffer_size=64 * 1024))
        infos = zf.infolist()
    except Lying:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError,
            struct.error, IndexError, OverflowError) as exc:
        raise Lying(f"zip directory does not parse ({str(exc)[:80]})") from None
    entries: list[tuple[Any, int, int]] = []  # (ZipInfo, data start, data end)
    for info in infos:
        if not 0 <= info.header_offset <= size - 30:
            raise Lying(f"zip entry {info.filename!r} starts past the end")
        lh = read(info.header_offset, 30)
        if len(lh) != 30 or lh[:4] != b"PK\x03\x04":
            raise Lying(f"zip entry {info.filename!r} has no local header where the "
                        "directory says")
        n, m = struct.unpack("<HH", lh[26:30])
        start = info.header_offset + 30 + n + m
        end = start + info.compress_size
        if end > size:
            raise Lying(f"zip entry {info.filename!r} ends past the end")
        entries.append((info, start, end))
    names = [info.filename for info, _, _ in entries]
    pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
    if len(pkl) == 1:
        return _torch(read, size, entries, pkl[0][:-len("data.pkl")])
    if entries and all(n.endswith(".npy") for n in names):
        items = []
        for info, start, end in entries:
            if info.compress_type != zipfile.ZIP_STORED:
                items.append(Item(start, end, info.filename))
                continue
            hlen, item = _npy_item(read, start, end - start, info.filename)
            items.append(item or Item(start, end, info.filename))
        return _checked("npz", 0, items, size, zip_directory=True)
    return _checked("zip", 0, [Item(s, e, i.filename) for i, s, e in entries], size,
                    zip_directory=True)


def _torch(read: Read, size: int, entries: list[tuple[Any, int, int]],
           prefix: str) -> Layout:
    """torch.save's archive: one uncompressed entry `<prefix>data/<key>` per storage; the
    storages' dtypes come from data.pkl (read without running it; unknown: no hint)."""
    import zipfile

    by_name = {info.filename: (info, s, e) for info, s, e in entries}
    dtypes: dict[str, str] = {}
    little = True
    bo = by_name.get(prefix + "byteorder")
    if bo is not None and bo[0].compress_type == zipfile.ZIP_STORED and bo[2] - bo[1] <= 16:
        little = read(bo[1], bo[2] - bo[1]) == b"little"
    pkl, pkl_start, pkl_end = by_name[prefix + "data.pkl"]
    if little and pkl.compress_type == zipfile.ZIP_STORED and pkl_end - pkl_start <= MAX_PICKLE:
        dtypes = storage_dtypes(read(pkl_start, pkl_end - pkl_start))
    storage = prefix + "data/"
    # data.pkl (names, shapes, dtypes; torch.save writes it first) is the archive's header:
    # a chunk of its own, and the first chunk `diff --inspect` reads.  It takes the next
    # entry's local header along: that one's alignment padding changes with data.pkl's length
    # (every later entry starts on the same 64-byte boundary as before).
    head = 0
    if pkl.header_offset == 0:
        head = min((s for i, s, _ in entries if s >= pkl_end), default=pkl_end)
    # The records after the last storage (`version`, `.data/serialization_id`: derived from
    # the storages, so it changes with any of them) go with the central directory into the
    # tail, not into a run with the last tensors.
    last = max((s for i, s, _ in entries if i.filename.startswith(storage)), default=size)
    return _checked("torch", head, [
        Item(s, e, i.filename, dtypes.get(i.filename[len(storage):])
             if i.filename.startswith(storage) and i.compress_type == zipfile.ZIP_STORED
             else None)
        for i, s, e in entries if not (head and i is pkl) and s <= last], size,
        zip_directory=True)


# torch storage classes and dtypes -> safetensors dtype names
_TORCH_DTYPES = {
    "FloatStorage": "F32", "DoubleStorage": "F64", "HalfStorage": "F16",
    "BFloat16Storage": "BF16", "LongStorage": "I64", "IntStorage": "I32",
    "ShortStorage": "I16", "CharStorage": "I8", "ByteStorage": "U8", "BoolStorage": "BOOL",
    "float32": "F32", "float": "F32", "float64": "F64", "double": "F64", "float16": "F16",
    "half": "F16", "bfloat16": "BF16", "int64": "I64", "long": "I64", "int32": "I32",
    "int": "I32", "int16": "I16", "short": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
    "uint16": "U16", "uint32": "U32", "uint64": "U64", "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2", "float8_e8m0fnu": "F8_E8M0",
}


class _Stub:
    """Whatever data.pkl names: a stand-in that accepts any construction and records it."""

    module = ""
    qualname = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


def storage_dtypes(data: bytes, sizes: dict[str, int] | None = None) -> dict[str, str]:
    """Storage key -> dtype, from a torch data.pkl, without running it: every global it names
    is a _Stub class (nothing is imported, no code of the pickle's choosing runs), storages are
    the persistent ids ('storage', type, key, location, numel), and a tensor rebuilt by
    `_rebuild_tensor_v3` names its dtype as an argument (dtypes without a storage class).
    Anything unexpected, or more than MAX_PICKLE_OPS opcodes: {} (no hints).
    `sizes`, if given, receives key -> byte size of the storages whose id names a typed class
    (numel x its item size)."""
    import pickle
    import pickletools

    try:  # count first, streaming: the load below builds one object per opcode at most
        for n, _ in enumerate(pickletools.genops(data)):
            if n >= MAX_PICKLE_OPS:
                return {}
    except Exception:  # noqa: BLE001 - not a pickle we can follow
        return {}
    classes: dict[tuple[str, str], type] = {}
    keys: dict[int, str] = {}  # id(storage stub) -> key
    found: dict[str, str] = {}
    storages: list[Any] = []
    rebuilt: list[Any] = []

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            cls = classes.get((module, name))
            if cls is None:
                cls = classes[(module, name)] = type(name, (_Stub,), {
                    "module": module, "qualname": name,
                    "__init__": lambda self, *a, **k: (_Stub.__init__(self, *a),
                                                       rebuilt.append(self))[0]})
            return cls

        def persistent_load(self, pid: Any) -> Any:
            if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                    and isinstance(pid[2], str)):
                raise pickle.UnpicklingError("not a torch storage id")
            stub = _Stub()
            storages.append(stub)
            keys[id(stub)] = pid[2]
            dtype = _TORCH_DTYPES.get(getattr(pid[1], "qualname", ""))
            if dtype:
                found.setdefault(pid[2], dtype)
                if sizes is not None and type(pid[4]) is int and dtype in ITEMSIZE:
                    sizes[pid[2]] = pid[4] * ITEMSIZE[dtype]
            return stub

    try:
        Unpickler(io.BytesIO(data), encoding="utf-8").load()
    except Exception:  # noqa: BLE001 - any pickle we cannot follow: no hints
        return {}
    for obj in rebuilt:
        if obj.qualname == "_rebuild_tensor_v3" and len(obj.args) >= 7:
            key = keys.get(id(obj.args[0]))
            dtype = _TORCH_DTYPES.get(getattr(obj.args[6], "qualname", ""))
            if key is not None and dtype:
                if found.setdefault(key, dtype) != dtype:
                    found[key] = ""  # one storage, two dtypes: no hint
    return {k: v for k, v in found.items() if v}


# --- cutting a file while it is written ---------------------------------------------------------

_LOCAL = b"PK\x03\x04"
_DESCRIPTOR = b"PK\x07\x08"
_DIRECTORY = (b"PK\x01\x02", b"PK\x05\x06", b"PK\x06\x06")


class StreamPlanner:
    """The cuts of a file whose bytes arrive in order and whose size is known only at the end
    (core/streampush.py), the same as `plan` gives for the finished file wherever the layout
    can be followed from the front:

    - safetensors: the header comes first and describes the whole file; `plan` runs on it
      (for the size the header implies) as soon as it is in;
    - a torch.save archive (data.pkl first): followed entry by entry.  A stream-written zip
      has no sizes in its local headers (a data descriptor follows each entry's bytes), so an
      entry ends at the first descriptor whose size field matches the distance from the
      entry's start; a large storage is cut into fixed pieces while it arrives.  The records
      after the last storage (the zip tail in `_torch`) are held until the central directory
      shows that no storage follows them;
    - anything else (including other zips and npy/npz, whose rules need the directory or the
      size): fixed offsets.

    If the bytes turn out not to be what was followed (a safetensors file longer or shorter
    than its header says, a zip entry that cannot be parsed), what was not yet cut is cut at
    fixed offsets from there: cuts that differ from push's cost dedup, never bytes.

    `advance(buf, base, eof)` sees bytes [base, base + len(buf)); `base` never passes the end
    of the cuts taken out of `out`.  Nothing is kept of `buf` but copies of a safetensors
    header or a data.pkl (bounded by MAX_HEADER / MAX_PICKLE).
    """

    def __init__(self, chunk_size: int) -> None:
        self.cs = chunk_size
        self.out: list[Cut] = []  # cuts found, in file order; the caller takes them
        self.kind = "fixed"  # "safetensors" | "torch" | "fixed" once known
        self.header: Any = None  # a parsed safetensors header (for tensor records)
        self.note: str | None = None  # why the rest of the file was cut at fixed offsets
        self._cut_to = 0  # end of the last cut found
        self._mode = "sniff"
        self._fixed_from = 0
        self._expect: int | None = None  # safetensors: the size the header implies
        # torch archive state
        self._p = 0  # where the next structure (local header / directory) starts
        self._entry: tuple[str, int, int, int | None] | None = None  # name, start, method, size
        self._scan = 0
        self._large = False  # the current entry was announced to the cutter as large
        self._pieces = 0  # fixed pieces of the current large entry cut so far
        self._cutter: Cutter | None = None
        self._prefix = ""
        self._pkl_end = 0
        self._pkl_ok = False  # data.pkl stored uncompressed and small enough to read dtypes
        self._little = True
        self._dtypes: dict[str, str] = {}
        self._sizes: dict[str, int] = {}  # storage key -> byte size data.pkl implies
        self._storages = 0
        self._deferred: list[Item] = []
        self._last_end: int | None = None  # end of the last item handed to the cutter

    def _emit(self, cut: Cut) -> None:
        self.out.append(cut)
        self._cut_to = cut.offset + cut.length

    def _fall_back(self, why: str) -> None:
        self.note = f"{why}; the rest cut at fixed offsets from byte {self._cut_to}"
        log.debug("ckptlake: %s", self.note)
        self._mode, self._fixed_from, self._cutter = "fixed", self._cut_to, None
        self._deferred = []

    def advance(self, buf: Any, base: int, eof: bool = False) -> None:
        end = base + len(buf)
        if self._mode == "sniff":
            if len(buf) < 8 and not eof:
                return
            prefix = bytes(buf[:9])
            if prefix.startswith(_LOCAL):
                self._mode, self.kind = "zip", "torch"
            elif header_length(prefix[:8]) is not None and prefix[8:9] == b"{":
                self._mode, self.kind = "safetensors", "safetensors"
            else:
                self._mode = "fixed"
        if self._mode == "safetensors":
            self._safetensors(buf, base, eof)
        if self._mode == "zip":
            self._zip(buf, base, eof)
        if self._mode == "planned" and self._expect is not None and end > self._expect:
            self.note = f"safetensors file longer than the {self._expect} bytes its header says"
            self._mode, self._fixed_from = "fixed", self._cut_to
        if self._mode == "fixed":
            while self._fixed_from + self.cs <= end:
                self._emit(Cut(self._fixed_from, self.cs))
                self._fixed_from += self.cs
            if eof and end > self._fixed_from:
                self._emit(Cut(self._fixed_from, end - self._fixed_from))
                self._fixed_from = end
        if eof and self._mode == "planned" and self._expect != end:
            self.note = f"safetensors file of {end} bytes, its header says {self._expect}"
            log.debug("ckptlake: %s", self.note)

    def _safetensors(self, buf: Any, base: int, eof: bool) -> None:
        n = header_length(bytes(buf[:8]))
        assert n is not None
        if len(buf) < 8 + n and not eof:
            return
        raw = bytes(buf[:8 + n])
        header = parse_header(raw, 1 << 62) if len(raw) == 8 + n else None
        if header is None:
            self.kind, self._mode = "fixed", "fixed"  # as `plan` does with such a header
            return
        size = max([header.data_start, *(t[4] for t in header.tensors)])

        def read(offset: int, k: int) -> bytes:
            if offset + k > len(raw):
                raise Lying("needs more than the header")
            return raw[offset:offset + k]

        p = plan(read, size, self.cs)
        self.kind = p.kind
        self.header = header if p.kind == "safetensors" else None
        self._expect = size
        for c in p.cuts:
            self._emit(c)
        self._mode = "planned"  # every cut is out; what lies past them: the caller's

    # -- torch archives --

    def _zip(self, buf: Any, base: int, eof: bool) -> None:
        end = base + len(buf)
        while self._mode == "zip":
            if self._entry is not None:
                if not self._entry_data(buf, base, end, eof):
                    return
                continue
            p = self._p
            if end - p < 30:
                if eof:
                    self._fall_back("torch archive ends inside a zip header")
                return
            sig = bytes(buf[p - base:p - base + 4])
            if sig in _DIRECTORY:
                self._directory(end, eof)
                return
            if sig != _LOCAL:
                self._fall_back(f"no zip header at byte {p}")
                return
            flags, method = struct.unpack("<HH", buf[p - base + 6:p - base + 10])
            csize, = struct.unpack("<I", buf[p - base + 18:p - base + 22])
            n, m = struct.unpack("<HH", buf[p - base + 26:p - base + 30])
            if end - p < 30 + n + m:
                if eof:
                    self._fall_back("torch archive ends inside a zip header")
                return
            name = bytes(buf[p - base + 30:p - base + 30 + n]).decode("utf-8", "replace")
            start = p + 30 + n + m
            size = None if flags & 8 else csize
            if size == 0xFFFFFFFF:
                self._fall_back(f"zip entry {name!r} is zip64 with sizes in its header")
                return
            if p == 0:
                if not (name.endswith("/data.pkl") and name.count("/") == 1):
                    self._fall_back("a zip that is no torch archive")
                    self.kind = "fixed"
                    return
                self._prefix = name[:-len("data.pkl")]
                self._pkl_ok = method == 0
            elif self._cutter is None:  # the entry after data.pkl: its header goes with it
                self._head(start)
            self._entry = (name, start, method, size)
            self._scan, self._large, self._pieces = start, False, 0

    def _head(self, head: int) -> None:
        self._cutter = Cutter(self.cs, head, self._emit)

    def _entry_data(self, buf: Any, base: int, end: int, eof: bool) -> bool:
        """Follow the current entry's bytes; True once it ended (the next header is due)."""
        name, start, method, size = self._entry  # type: ignore[misc]
        if size is not None:
            stop, after = start + size, start + size
            found = end >= stop
            self._scan = min(end, stop)
        else:
            found, stop, after = False, 0, 0
            expect = self._sizes.get(name[len(self._prefix) + len("data/"):]) \
                if self._storage(name) and method == 0 else None
            if expect is not None:
                # data.pkl says how long this storage is: look for its descriptor there
                # only, instead of searching every byte of the storage for one
                q = start + expect
                if end - q >= 24 or (eof and end - q >= 16):
                    fields = bytes(buf[q - base:q - base + 24])
                    if fields[:4] == _DESCRIPTOR and (
                            struct.unpack("<I", fields[8:12])[0] == expect
                            or (len(fields) >= 24
                                and struct.unpack("<Q", fields[8:16])[0] == expect)):
                        desc = 16 if struct.unpack("<I", fields[8:12])[0] == expect else 24
                        found, stop, after = True, q, q + desc
                    else:
                        self._fall_back(f"zip entry {name!r} is not as long as data.pkl says")
                        return False
                else:
                    self._scan = min(end, q)
                    if eof:
                        self._fall_back(f"zip entry {name!r} has no end")
                        return False
            while not found and expect is None:
                i = buf.find(_DESCRIPTOR, self._scan - base)
                if i < 0:
                    self._scan = max(self._scan, end - 3)
                    break
                q = base + i
                if end - q < 24 and not eof:
                    self._scan = q
                    break
                fields = bytes(buf[i:i + 24])
                if len(fields) >= 16 and struct.unpack("<I", fields[8:12])[0] == q - start:
                    found, stop, after = True, q, q + 16
                    break
                if len(fields) >= 24 and struct.unpack("<Q", fields[8:16])[0] == q - start:
                    found, stop, after = True, q, q + 24
                    break
                self._scan = q + 1
        known = stop if found else max(start, min(self._scan, end))  # bytes [start, known)
        if self._cutter is not None and not found and known - start >= self._cutter.large:
            self._grow_large(start, known, name, method)
        if not found:
            if eof:
                self._fall_back(f"zip entry {name!r} has no end")
            return False
        if self._cutter is None:  # data.pkl ended
            self._pkl_end = stop
            if self._pkl_ok and stop - start <= MAX_PICKLE:
                self._dtypes = storage_dtypes(bytes(buf[start - base:stop - base]),
                                              self._sizes)
        elif self._large or stop - start >= self._cutter.large:
            self._grow_large(start, stop, name, method, final=True)
        else:
            self._item(Item(start, stop, name, self._dtype(name, method)))
        self._entry, self._p = None, after
        if name.endswith("byteorder") and name == self._prefix + "byteorder" and stop - start <= 16:
            self._little = bytes(buf[start - base:stop - base]) == b"little"
        return True

    def _storage(self, name: str) -> bool:
        return name.startswith(self._prefix + "data/")

    def _dtype(self, name: str, method: int) -> str | None:
        if not self._storage(name) or method != 0 or not self._little:
            return None
        return self._dtypes.get(name[len(self._prefix) + len("data/"):])

    def _item(self, it: Item) -> None:
        """Hand a small item to the cutter, or hold it: records after the last storage belong
        to the tail, which is known only when the directory comes."""
        assert self._cutter is not None
        if self._storage(it.name):
            for held in self._deferred:
                self._cutter.item(held)
                self._last_end = held.end
            self._deferred = []
            self._storages += 1
        elif self._storages:
            if it.end > it.start:
                self._deferred.append(it)
            return
        if it.end > it.start:  # `_checked` drops empty items
            self._cutter.item(it)
            self._last_end = it.end

    def _grow_large(self, start: int, known: int, name: str, method: int,
                    final: bool = False) -> None:
        """Cut the fixed pieces of a large entry that lie within [start, known)."""
        cutter = self._cutter
        assert cutter is not None
        dtype = self._dtype(name, method)
        if not self._large:
            if self._storage(name):
                self._storages += 1
            # (a large record after the storages is not torch's layout: it is cut as an item)
            for held in self._deferred:
                cutter.item(held)
            self._deferred = []
            cutter.large_begins(start)
            self._large = True
        size = ITEMSIZE.get(dtype or "", 0)
        while True:
            off = self._pieces * self.cs
            if start + off >= known or (not final and start + off + self.cs > known):
                break
            length = min(self.cs, known - start - off)
            self._emit(Cut(start + off, length, dtype if size and off % size == 0 else None))
            self._pieces += 1
        if final:
            cutter.pos = known
            self._last_end = known

    def _directory(self, end: int, eof: bool) -> None:
        """The central directory: every record still held is tail; the tail (from the end of
        the last item) is cut at fixed offsets like the rest of the file."""
        if self._cutter is None:
            self._head(self._pkl_end)  # data.pkl alone
        cutter = self._cutter
        assert cutter is not None
        self._deferred = []
        if self._last_end is None:  # no items: `plan` packs or cuts what follows the head
            if eof:
                cutter.finish(end, end)
                self._mode = "done"
            return
        cutter.finish(self._last_end, self._last_end)
        self._mode, self._fixed_from = "fixed", self._last_end
