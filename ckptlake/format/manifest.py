"""Version manifests: the immutable JSON record that *is* a version.

A manifest is written last, with If-None-Match, under the version's key; until then nothing of the
push is visible.  Reading one back re-validates everything a puller will act on: a manifest is
data from storage, and storage may be shared with people or tools we do not trust, so paths that
are absolute, contain `..`, or reach outside the tree through a symlink are refused here, before
any byte is written to the destination.
"""
from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from ..errors import IntegrityError, UnsafeManifest, UsageError
from ..redact import redact, redact_argv, redact_data, redact_metadata
from ..units import finite_number
from .header import MAX_CHUNK_SIZE, format_hint, is_format
from .times import parse_time

MANIFEST_FORMAT = 1
# A digest of the lake's hash (chunk references, file and tensor digests): both hashes of
# format 1 give 32 bytes.  A chunk reference of another length names no chunk key (layout's
# _CHUNK_KEY), so a manifest holding one is malformed rather than read with a chunk gc ignores.
_HEX = re.compile(r"[0-9a-f]{64}")

# Bounds a reader enforces (docs/format.md, "Manifests").  A manifest is data from storage:
# whatever it says must fail here, as a malformed manifest, never later as an OSError, a
# MemoryError or a RecursionError from deep inside a pull or a listing.
MAX_NAME_BYTES = 255  # a path segment: NAME_MAX of every common local file system
MAX_PATH_BYTES = 4095  # a whole relative path: below PATH_MAX (4096, with its NUL)
MAX_JSON_DEPTH = 64  # nesting of free-form values (provenance); ckptlake writes at most 3
MAX_FILE_SIZE = (1 << 63) - 1  # off_t

# Lineage edges (docs/format.md, "Lineage").  A parent is a fixed version, never a selector:
# `@latest` is resolved at push and stored as the number it meant.
RELATIONS = ("derived-from", "resumed-from", "fine-tuned-from", "evaluated-from")
_ARTIFACT_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_DTYPE = re.compile(r"[A-Z][A-Z0-9_]{0,15}")
# Bytes per element; dtypes not listed (sub-byte floats, future ones) are recorded without a
# size check and `diff --values` reports them as unsupported.  Here, not in safetensors.py
# (which imports this module), because reading a manifest checks tensor records by it too.
ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "I16": 2,
            "U16": 2, "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8,
            "F64": 8}
# Symlinks followed while resolving one link target (Linux's MAXSYMLINKS), and the longest
# target symlink(2) accepts (PATH_MAX - 1).  Both bound a reader's work on a hostile manifest.
MAX_LINK_HOPS = 40
MAX_LINK_TARGET = 4095


@dataclass(frozen=True)
class ChunkRef:
    """A run of a file's bytes stored in a content-addressed chunk object.

    offset None: the whole chunk object, `size` bytes, verified by its digest.
    offset set: bytes [offset, offset+size) of a pack object holding several small files;
    the file's own `digest` verifies them (a slice cannot be checked against the pack's hash).
    """

    digest: str
    size: int
    offset: int | None = None

    def to_json(self) -> list[Any]:
        return [self.digest, self.size] if self.offset is None else [self.digest, self.size,
                                                                     self.offset]


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a `.safetensors` file, recorded at push (format/safetensors.py).

    `start`/`end` are absolute byte offsets of the tensor's data in the file; `digest` is the
    block digest of those bytes (the lake's hash of the concatenated hashes of its 1 MiB
    blocks, counted from its first byte: BLAKE3 or SHA-256, as the manifest's `hash`), so two
    versions can be compared tensor by tensor without reading tensor data.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int
    digest: str

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape),
                "range": [self.start, self.end], "digest": self.digest}


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int = 0
    executable: bool = False
    chunks: tuple[ChunkRef, ...] = ()
    digest: str | None = None  # hash of the whole file; present when it lives in a pack
    symlink: str | None = None  # relative target, for symlinks inside the pushed tree
    tensors: tuple[TensorInfo, ...] | None = None  # safetensors files only (None: not recorded)

    def to_json(self) -> dict[str, Any]:
        if self.symlink is not None:
            return {"path": self.path, "symlink": self.symlink}
        out: dict[str, Any] = {"path": self.path, "size": self.size,
                               "chunks": [c.to_json() for c in self.chunks]}
        if self.executable:
            out["x"] = True
        if self.digest is not None:
            out["digest"] = self.digest
        if self.tensors is not None:
            out["tensors"] = [t.to_json() for t in self.tensors]
        return out


@dataclass(frozen=True)
class Manifest:
    artifact: str
    version: int
    kind: str  # "dir" or "file" (a single pushed file restores as a file)
    hash: str  # chunk hash algorithm, as in the lake header
    files: tuple[FileEntry, ...]
    dirs: tuple[str, ...] = ()  # empty directories, so they round-trip
    step: int | None = None
    created: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    created_by: str = ""
    tool: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    # [{"artifact": str, "version": int, "relation": one of RELATIONS}], fixed numbers
    parents: tuple[dict[str, Any], ...] = ()
    inputs: tuple[dict[str, str], ...] = ()  # [{"uri": str, "digest"?: str}] datasets etc.
    provenance: dict[str, Any] = field(default_factory=dict)  # git, command, host, versions
    # digest -> size of its stored object, for the chunks the pusher found or stored encoded
    # (smaller than their raw bytes).  A hint, not a promise (the object decides how it is
    # read, docs/format.md "Chunk encodings"): readers of part of a chunk fetch these whole,
    # and show/ls/du count stored bytes with it.  Raw chunks are not listed.
    stored: dict[str, int] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def chunk_digests(self) -> set[str]:
        return {c.digest for f in self.files for c in f.chunks}

    def raw_sizes(self) -> dict[str, int]:
        """digest -> raw length of each chunk object, as far as this version tells (a pack
        is at least as long as the last of its files here)."""
        out: dict[str, int] = {}
        for f in self.files:
            for c in f.chunks:
                end = (c.offset or 0) + c.size
                if end > out.get(c.digest, 0):
                    out[c.digest] = end
        return out

    @property
    def stored_bytes(self) -> int:
        """Bytes of the distinct chunk objects this version references, as stored (encoded
        chunks at their recorded size, the rest raw)."""
        return sum(self.stored.get(d, n) for d, n in self.raw_sizes().items())

    def to_json(self) -> dict[str, Any]:
        out = {
            "ckptlake_manifest": MANIFEST_FORMAT,
            "artifact": self.artifact,
            "version": self.version,
            "step": self.step,
            "created": self.created.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"),
            "created_by": redact(self.created_by),
            "tool": self.tool,
            "metrics": self.metrics,
            "metadata": redact_metadata(self.metadata),
            "parents": list(self.parents),
            "kind": self.kind,
            "hash": self.hash,
            "total_bytes": self.total_bytes,
            "file_count": len(self.files),
            "dirs": list(self.dirs),
            "files": [f.to_json() for f in self.files],
        }
        # Optional fields are written only when set, so manifests without lineage stay as
        # they were (older readers ignore unknown fields).  Whatever a user or the environment
        # supplied is stored redacted (ckptlake/redact.py): a lake is shared, secrets are not.
        if self.inputs:
            out["inputs"] = [{k: redact(v) for k, v in i.items()} for i in self.inputs]
        if self.provenance:
            out["provenance"] = _redact_provenance(self.provenance)
        if self.stored:
            out["stored"] = dict(sorted(self.stored.items()))
        return out

    def encode(self) -> bytes:
        """The manifest's bytes; UsageError for a text UTF-8 cannot hold (a lone surrogate in
        a program's provenance=, say): a bare UnicodeEncodeError was an internal error."""
        try:
            text = json.dumps(self.to_json(), separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False)
        except (ValueError, TypeError) as exc:  # (values are checked when they come in)
            raise UsageError(f"{self.artifact}: the version's manifest cannot hold a value: "
                             f"{exc}") from None
        try:
            return text.encode()
        except UnicodeEncodeError as exc:
            bad = text[exc.start:exc.end].encode("utf-8", "backslashreplace").decode()
            raise UsageError(f"{self.artifact}: the version's manifest cannot hold {bad} (a "
                             "lone surrogate: bytes that are not UTF-8 text)",
                             hint="pass text, not raw bytes (decode it, or use its hex)"
                             ) from None


def _redact_provenance(provenance: dict[str, Any]) -> dict[str, Any]:
    out = redact_data(provenance)
    command = provenance.get("command")
    if isinstance(command, (list, tuple)):
        out["command"] = redact_argv([str(a) for a in command])
    return out


def check_relpath(path: str, *, what: str = "path") -> str:
    """Refuse anything that is not a plain relative path inside the tree."""
    if not isinstance(path, str) or not path:
        raise UnsafeManifest(f"manifest has an empty or non-string {what}")
    if "\x00" in path:
        raise UnsafeManifest(f"manifest {what} contains a NUL byte: {path!r}")
    if not _utf8(path):  # a JSON escape of a lone surrogate: no pusher writes one
        raise UnsafeManifest(f"manifest {what} is not valid Unicode text: "
                             f"{path.encode('utf-8', 'backslashreplace').decode()[:200]!r}")
    if path.startswith("/"):
        raise UnsafeManifest(f"manifest {what} is absolute: {path!r}",
                             hint="refusing to write outside the destination")
    for seg in path.split("/"):
        if seg in ("", ".", ".."):
            raise UnsafeManifest(f"manifest {what} has an empty, '.' or '..' segment: {path!r}",
                                 hint="refusing to write outside the destination")
        if len(seg.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
            raise IntegrityError(f"manifest {what} has a name longer than {MAX_NAME_BYTES} "
                                 f"bytes: {seg[:40]!r}...")
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise IntegrityError(f"manifest {what} is longer than {MAX_PATH_BYTES} bytes: "
                             f"{path[:40]!r}...")
    return path


def _utf8(text: str) -> bool:
    """Whether `text` is valid Unicode (no lone surrogate): a path or link target with one
    was an internal error when it was placed (UnicodeEncodeError), or in every reader of the
    manifest for a link target, and verify called such a version restorable."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_symlink(path: str, target: str) -> None:
    if (not isinstance(target, str) or not target or "\x00" in target or target.startswith("/")
            or not _utf8(target) or len(target.encode("utf-8")) > MAX_LINK_TARGET):
        shown = str(target).encode("utf-8", "backslashreplace").decode()[:200]
        raise UnsafeManifest(f"symlink {path!r} has an unsafe target {shown!r}")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(path), target))
    if resolved == ".." or resolved.startswith("../") or resolved.startswith("/"):
        raise UnsafeManifest(f"symlink {path!r} -> {target!r} points outside the tree",
                             hint="refusing to restore it")


class LinkResolver:
    """Resolves symlink targets through the tree as it will exist after a pull.

    A lexical check of each target alone is not enough: `a/b/c/d/e/L -> ../../../../..` stays
    inside, and so, lexically, does `passwd -> a/b/c/d/e/L/../../../../../../etc/passwd`, but
    on disk the `..` after `L` climbs from where `L` leads, out of the tree.  So each target is
    walked component by component from its link's directory, and every component that is itself
    a symlink (one the version creates, or via `lookup` one already at the destination) is
    replaced by its own resolution, as the kernel does.  Refused: climbing above the tree's root
    at any point, a loop, or more than MAX_LINK_HOPS links on one resolution.

    `lookup(relpath)` answers for paths the version does not make symlinks: an existing link's
    target, a target starting with "/" meaning "from the tree's root", or None.  Paths are
    '/'-separated and relative to the tree's root.
    """

    def __init__(self, links: Mapping[str, str], *, where: str = "manifest",
                 lookup: Callable[[str], str | None] | None = None) -> None:
        self.links, self.where, self.lookup = links, where, lookup
        self._done: dict[str, tuple[list[str], int]] = {}
        self._active: set[str] = set()

    def _target(self, rel: str) -> str | None:
        target = self.links.get(rel)
        if target is None and self.lookup is not None:
            target = self.lookup(rel)
        return target

    def check_all(self) -> None:
        for path in self.links:
            self.resolve(path)

    def resolve(self, path: str) -> tuple[list[str], int]:
        """(components of where the link at `path` leads, links followed on the way).

        The kernel reads a relative target from the directory the link is in on disk, so the
        link's parent is resolved first: a version's `a/b/L -> ../../x` placed through an
        existing `a -> q/..` lands in `b/`, and its `../..` then climbs out of the tree.  A
        manifest alone never has a symlink among a path's parents; `lookup` may."""
        if path in self._done:
            return self._done[path]
        if path in self._active:
            raise UnsafeManifest(f"{self.where}: symlink {path!r} is part of a symlink loop",
                                 hint="refusing to restore it")
        target = self._target(path)
        assert target is not None
        self._active.add(path)
        cur, hops = self._walk([], path.split("/")[:-1], path, target, 1)
        if target.startswith("/"):
            cur = []
        cur, hops = self._walk(cur, target.split("/"), path, target, hops)
        self._active.discard(path)
        self._done[path] = (cur, hops)
        return cur, hops

    def locate(self, path: str) -> list[str]:
        """Components of where `path` (a directory, or a path the links do not name) leads,
        each symlink on the way resolved: where a file placed at `path` would land, or what a
        path of the version names once it lies below symlinks a destination already has."""
        return self._walk([], path.split("/"), path, path, 0)[0]

    def _walk(self, cur: list[str], segments: list[str], path: str, target: str,
              hops: int) -> tuple[list[str], int]:
        """Follow `segments` from `cur` as the kernel would, resolving each symlink met."""
        for seg in segments:
            if seg in ("", "."):
                continue
            if seg == "..":
                if not cur:
                    what = repr(path) if path == target else f"symlink {path!r} -> {target[:200]!r}"
                    raise UnsafeManifest(
                        f"{self.where}: {what} leads outside the tree (resolved through the "
                        "symlinks in it)", hint="refusing to restore it")
                cur.pop()
                continue
            cur.append(seg)
            rel = "/".join(cur)
            if self._target(rel) is not None:
                resolved, more = self.resolve(rel)
                cur, hops = list(resolved), hops + more
                if hops > MAX_LINK_HOPS:
                    raise UnsafeManifest(f"{self.where}: symlink {path!r} leads through more "
                                         f"than {MAX_LINK_HOPS} symlinks (a loop?)",
                                         hint="refusing to restore it")
        return cur, hops


def check_links(links: Mapping[str, str], *, where: str = "manifest") -> None:
    """What a reader checks of a version's symlinks (each target, then every chain), for a
    writer to run before it commits: a version that pull would refuse must not be written."""
    for path, target in links.items():
        _check_symlink(path, target)
    LinkResolver(links, where=where).check_all()


def _req(obj: dict[str, Any], key: str, typ: type | tuple[type, ...], where: str) -> Any:
    if key not in obj:
        raise IntegrityError(f"{where}: missing field {key!r}")
    value = obj[key]
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise IntegrityError(f"{where}: field {key!r} has the wrong type")
    return value


def _parse_chunk(raw: Any, where: str) -> ChunkRef:
    if not isinstance(raw, list) or len(raw) not in (2, 3):
        raise IntegrityError(f"{where}: malformed chunk reference")
    digest, size = raw[0], raw[1]
    offset = raw[2] if len(raw) == 3 else None
    if not isinstance(digest, str) or not _HEX.fullmatch(digest):
        raise IntegrityError(f"{where}: malformed chunk digest")
    # Only the offset may be absent (None): a None size reached the sum below (TypeError).
    if not all(_is_int(n) and n >= 0 for n in ((size,) if offset is None else (size, offset))):
        raise IntegrityError(f"{where}: malformed chunk size/offset")
    if (offset or 0) + size > MAX_CHUNK_SIZE:  # no chunk object is larger than that
        raise IntegrityError(f"{where}: chunk reference beyond {MAX_CHUNK_SIZE} bytes "
                             f"(size {size}, offset {offset or 0})")
    return ChunkRef(digest, size, offset)


def _parse_file(raw: Any, index: int) -> FileEntry:
    where = f"manifest file #{index}"
    if not isinstance(raw, dict):
        raise IntegrityError(f"{where} is not an object")
    path = check_relpath(raw.get("path"))  # type: ignore[arg-type]
    where = f"manifest file {path!r}"
    if "symlink" in raw:
        _check_symlink(path, raw["symlink"])
        return FileEntry(path=path, symlink=raw["symlink"])
    size = _req(raw, "size", int, where)
    chunks = tuple(_parse_chunk(c, where) for c in _req(raw, "chunks", list, where))
    if not 0 <= size <= MAX_FILE_SIZE or sum(c.size for c in chunks) != size:
        raise IntegrityError(f"{where}: chunk sizes do not add up to the file size")
    digest = raw.get("digest")
    if digest is not None and (not isinstance(digest, str) or not _HEX.fullmatch(digest)):
        raise IntegrityError(f"{where}: malformed digest")
    if any(c.offset is not None for c in chunks) and digest is None:
        raise IntegrityError(f"{where}: packed file without a digest")
    tensors = None
    if "tensors" in raw:
        tensors = _parse_tensors(raw["tensors"], size, where)
    return FileEntry(path=path, size=size, executable=bool(raw.get("x", False)), chunks=chunks,
                     digest=digest, tensors=tensors)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _elements(shape: list[int], bound: int) -> int:
    """The element count of `shape`, or bound+1 once it is past `bound`: a hostile shape of
    many huge dimensions would otherwise build an enormous integer."""
    if 0 in shape:
        return 0
    count = 1
    for d in shape:
        count *= d
        if count > bound:
            return bound + 1
    return count


def _parse_tensors(raw: Any, size: int, where: str) -> tuple[TensorInfo, ...]:
    if not isinstance(raw, list):
        raise IntegrityError(f"{where}: malformed tensors")
    out, names = [], set()
    for t in raw:
        if not isinstance(t, dict):
            raise IntegrityError(f"{where}: malformed tensor record")
        name, dtype, shape, rng, dig = (t.get("name"), t.get("dtype"), t.get("shape"),
                                        t.get("range"), t.get("digest"))
        if not isinstance(name, str) or not name or name in names:
            raise IntegrityError(f"{where}: tensor with an empty or duplicate name")
        names.add(name)
        if not isinstance(dtype, str) or not _DTYPE.fullmatch(dtype):
            raise IntegrityError(f"{where}: tensor {name!r} has a malformed dtype")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise IntegrityError(f"{where}: tensor {name!r} has a malformed shape")
        if (not isinstance(rng, list) or len(rng) != 2 or not all(_is_int(x) for x in rng)
                or not 0 <= rng[0] <= rng[1] <= size):
            raise IntegrityError(f"{where}: tensor {name!r} has a malformed byte range")
        if not isinstance(dig, str) or not _HEX.fullmatch(dig):
            raise IntegrityError(f"{where}: tensor {name!r} has a malformed digest")
        # As push checks the file's header (safetensors.parse_header): a record whose shape
        # does not fill its range made `diff --values` report a reshape that was not there
        # and lake.tensors() raise numpy's ValueError.  Dtypes of unknown size pass: every
        # reader refuses them as unsupported before using the shape.
        if dtype in ITEMSIZE and _elements(shape, rng[1] - rng[0]) * ITEMSIZE[dtype] \
                != rng[1] - rng[0]:
            raise IntegrityError(f"{where}: tensor {name!r} has a shape of {dtype} that does "
                                 f"not fill its byte range of {rng[1] - rng[0]} bytes")
        out.append(TensorInfo(name, dtype, tuple(shape), rng[0], rng[1], dig))
    return tuple(out)


def _parse_parents(raw: Any, key: str) -> tuple[dict[str, Any], ...]:
    if not isinstance(raw, list):
        raise IntegrityError(f"{key}: malformed parents")
    out = []
    for p in raw:
        if not isinstance(p, dict):
            raise IntegrityError(f"{key}: malformed parent record")
        artifact, version, relation = p.get("artifact"), p.get("version"), p.get("relation")
        if (not isinstance(artifact, str) or len(artifact) > 512 or not all(
                _ARTIFACT_SEGMENT.fullmatch(s) and s not in (".", "..")
                for s in artifact.split("/"))):
            raise IntegrityError(f"{key}: parent with a malformed artifact name")
        if not _is_int(version) or version < 1:
            raise IntegrityError(f"{key}: parent {artifact} with a malformed version")
        if relation not in RELATIONS:
            raise IntegrityError(f"{key}: parent {artifact}@v{version} has an unknown relation "
                                 f"{relation!r}", hint="upgrade ckptlake")
        out.append({"artifact": artifact, "version": version, "relation": relation})
    return tuple(out)


def _parse_inputs(raw: Any, key: str) -> tuple[dict[str, str], ...]:
    if not isinstance(raw, list):
        raise IntegrityError(f"{key}: malformed inputs")
    out = []
    for i in raw:
        if (not isinstance(i, dict) or not isinstance(i.get("uri"), str) or not i["uri"]
                or not isinstance(i.get("digest", ""), str)):
            raise IntegrityError(f"{key}: malformed input record")
        # Fields this version does not know are dropped, not refused: readers ignore unknown
        # fields everywhere (docs/format.md, "Unknown fields"), and one refused here made the
        # whole artifact's `ls` fail.
        out.append({k: i[k] for k in ("uri", "digest") if k in i})
    return tuple(out)


def _parse_time(value: Any, where: str) -> datetime:
    try:
        return parse_time(value)
    except ValueError:
        raise IntegrityError(f"{where}: malformed 'created' time") from None


def is_metric_value(value: Any) -> bool:
    """A metric is a finite number (what push accepts); anything else read back from storage
    would break every comparison, sort and format that `ls`, `show` and `diff` make."""
    return finite_number(value)


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion (the value may be deep enough
    to exhaust Python's stack, which is the point of measuring it)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d)
            if d <= MAX_JSON_DEPTH:
                stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def _check_no_file_parents(key: str, files: tuple[FileEntry, ...],
                           dirs: tuple[str, ...]) -> None:
    """A regular file cannot also be a directory holding other entries: `a` and `a/b` could
    both be committed (S3 keys do not nest) but never both restored."""
    regular = {f.path for f in files if f.symlink is None}
    for path in [f.path for f in files] + list(dirs):
        parts = path.split("/")
        for i in range(1, len(parts)):
            if (parent := "/".join(parts[:i])) in regular:
                raise IntegrityError(f"{key}: {path!r} lies below the file {parent!r}")


def decode_manifest(data: bytes, *, key: str = "manifest") -> Manifest:
    """Parse and fully validate a manifest; raise IntegrityError/UnsafeManifest on anything off."""
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise IntegrityError(f"{key}: not valid JSON") from None
    except RecursionError:
        raise IntegrityError(f"{key}: JSON nested too deeply") from None
    except ValueError:  # Python's int-string limit, which JSONDecodeError does not cover
        raise IntegrityError(f"{key}: holds an integer too long to read") from None
    if not isinstance(raw, dict) or not is_format(raw.get("ckptlake_manifest"), MANIFEST_FORMAT):
        raise IntegrityError(f"{key}: not a ckptlake manifest of format {MANIFEST_FORMAT}",
                             hint=format_hint(raw, "ckptlake_manifest"))
    kind = _req(raw, "kind", str, key)
    if kind not in ("dir", "file"):
        raise IntegrityError(f"{key}: unknown kind {kind!r}")
    try:
        files = tuple(_parse_file(f, i) for i, f in enumerate(_req(raw, "files", list, key)))
        dirs_raw = raw.get("dirs") or []
        if not isinstance(dirs_raw, list):  # 5 raised TypeError; "ab" read as dirs a and b
            raise IntegrityError(f"{key}: malformed dirs")
        dirs = tuple(check_relpath(d, what="directory") for d in dirs_raw)
    except IntegrityError as e:  # say which manifest (UnsafeManifest stays UnsafeManifest)
        if e.message.startswith(key):
            raise
        raise type(e)(f"{key}: {e.message}", hint=e.hint) from None
    paths = [f.path for f in files]
    if len(set(paths)) != len(paths) or set(paths) & set(dirs):
        raise IntegrityError(f"{key}: duplicate paths")
    _check_no_file_parents(key, files, dirs)
    links = {f.path for f in files if f.symlink is not None}
    for p in list(paths) + list(dirs):
        parts = p.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in links:
                raise UnsafeManifest(f"{key}: {p!r} lies below the symlink {'/'.join(parts[:i])!r}",
                                     hint="refusing to write through a symlink")
    LinkResolver({f.path: f.symlink for f in files if f.symlink is not None},
                 where=key).check_all()
    if kind == "file" and (len(files) != 1 or files[0].symlink is not None or dirs):
        raise IntegrityError(f"{key}: a file artifact must hold exactly one regular file")
    step = raw.get("step")
    if step is not None and (not isinstance(step, int) or isinstance(step, bool) or step < 0):
        # writers refuse a negative step (layout.check_step): one read back would sort
        # before every real step and select nothing sensible with step=N
        raise IntegrityError(f"{key}: malformed step")
    metrics = raw.get("metrics") or {}
    metadata = raw.get("metadata") or {}
    if not isinstance(metrics, dict) or not isinstance(metadata, dict):
        raise IntegrityError(f"{key}: malformed metrics/metadata")
    for name, value in metrics.items():
        if not is_metric_value(value):
            raise IntegrityError(f"{key}: metric {name[:40]!r} is not a finite number")
    if not all(isinstance(v, str) for v in metadata.values()):
        raise IntegrityError(f"{key}: metadata values must be strings")
    provenance = raw.get("provenance") or {}
    if not isinstance(provenance, dict):
        raise IntegrityError(f"{key}: malformed provenance")
    if _depth(provenance) > MAX_JSON_DEPTH:
        raise IntegrityError(f"{key}: provenance nested deeper than {MAX_JSON_DEPTH} levels")
    return Manifest(
        artifact=_req(raw, "artifact", str, key), version=_req(raw, "version", int, key),
        kind=kind, hash=_req(raw, "hash", str, key), files=files, dirs=dirs, step=step,
        created=_parse_time(raw.get("created"), key), created_by=redact(str(raw.get("created_by", ""))),
        tool=str(raw.get("tool", "")), metrics=metrics, metadata=redact_metadata(metadata),
        parents=_parse_parents(raw.get("parents") or [], key),
        # Redacted on the way in as well: a manifest written before redaction, or by another
        # writer, may hold secrets, and nothing read from a lake should hand them on.
        inputs=tuple({k: redact(v) for k, v in i.items()}
                     for i in _parse_inputs(raw.get("inputs") or [], key)),
        provenance=_redact_provenance(provenance),
        stored=_parse_stored(raw.get("stored") or {}, key),
    )


def _parse_stored(raw: Any, key: str) -> dict[str, int]:
    if not isinstance(raw, dict):
        raise IntegrityError(f"{key}: malformed stored sizes")
    for d, n in raw.items():
        if not _HEX.fullmatch(d) or not _is_int(n) or not 0 < n <= MAX_CHUNK_SIZE:
            raise IntegrityError(f"{key}: malformed stored size of chunk {str(d)[:16]}")
    return dict(raw)
