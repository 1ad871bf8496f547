"""The lake header: one object at the lake root, written once, that fixes the chunk hash.

Every chunk key is a digest, so the hash algorithm is part of the meaning of every key; it must
never vary between writers.  The first push creates the header with If-None-Match; everyone
after reads it and obeys (reading and creating it is core/lakeheader.py: format/ does not call
the store).  `chunk_size` is only the default for pushers (manifests record real
sizes), so changing it later is harmless.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from ..errors import IntegrityError, UsageError
from .layout import HEADER_KEY

LAKE_FORMAT = 1
# 16 MiB: small enough that a partly changed file re-uploads little and that memory in flight
# (concurrency x chunk) stays low, large enough that per-request latency is amortised and a
# 100 GB checkpoint is ~6,400 objects (well within S3's 3,500 PUT/s per prefix).
DEFAULT_CHUNK_SIZE = 16 * 1024 * 1024
# What a pusher accepts (--chunk-size, chunk_size:) and therefore what a header may say: a
# header is data from storage, and `chunk_size: 1` would make every push cut a file into one
# object per byte.  Manifests refuse chunk references beyond MAX_CHUNK_SIZE for the same reason
# (a reader sizes its buffers from them).
MIN_CHUNK_SIZE = 1024 * 1024
MAX_CHUNK_SIZE = 1024 * 1024 * 1024
HASH_SHA256 = "sha256"
# BLAKE3 (32-byte output, the crate's default): one core hashes 6.6 GB/s against SHA-256's
# 1.17 GB/s here, and every verified byte (pull, push, verify --read-data, DCP, torch.load, the
# cache) pays the hash (docs/benchmarks.md "BLAKE3 the default for new lakes").  A base
# dependency, still imported only when a lake says so: a SHA-256 lake never loads it.
HASH_BLAKE3 = "blake3"
SUPPORTED_HASHES = (HASH_SHA256, HASH_BLAKE3)
# The hash of a lake a push creates when nobody names one.  It decides nothing for an existing
# lake: its header fixes its hash for life.
DEFAULT_HASH = HASH_BLAKE3
# What a lake without a usable header is read as: every lake made before BLAKE3 existed is
# SHA-256, and so are the older ckptlakes' defaults.  Never DEFAULT_HASH, which may move on.
LEGACY_HASH = HASH_SHA256
COMPRESSION_NONE = "none"
COMPRESSION_AUTO = "auto"
# New lakes compress: trained float weights store ~17 % (fp32) to ~33 % (bf16) smaller, which
# is bytes not paid for in storage and in every pull (docs/benchmarks.md "Chunk compression").
DEFAULT_COMPRESSION = COMPRESSION_AUTO


_blake3: Any = None


def _blake3_class() -> Any:
    """blake3.blake3, imported on first use: a SHA-256 lake never needs the package.

    Missing (a base dependency, but an install with --no-deps skips it), it is an install
    problem (exit 2), not damaged data: the lake is fine."""
    global _blake3
    if _blake3 is None:
        try:
            from blake3 import blake3
        except ImportError:
            raise UsageError("this lake's chunks are named by BLAKE3 digests, and the blake3 "
                             "package is not installed",
                             hint="pip install blake3") from None
        _blake3 = blake3
    return _blake3


def check_hash(name: str) -> str:
    """`name` if this ckptlake can hash with it, else the error a reader or pusher must stop
    with (before any chunk is read or written)."""
    new_hasher(name)
    return name


def new_hasher(name: str):  # -> hashlib._Hash or blake3.blake3
    """A hasher for `name` (update/digest/hexdigest).  hashlib's SHA-256 uses SHA-NI where
    present; both release the GIL on large inputs, so pull's worker threads hash in parallel.
    BLAKE3 runs single-threaded per chunk: its own threads would only compete with the other
    workers for the same cores and cost as much CPU."""
    if name == HASH_SHA256:
        return hashlib.sha256()
    if name == HASH_BLAKE3:
        return _blake3_class()()
    raise IntegrityError(f"lake uses hash {name!r}, which this ckptlake does not support",
                         hint="upgrade ckptlake (this one knows "
                              f"{', '.join(SUPPORTED_HASHES)})")


def digest(name: str, data: bytes | bytearray | memoryview) -> str:
    h = new_hasher(name)
    h.update(data)
    return h.hexdigest()


@dataclass(frozen=True)
class LakeHeader:
    hash: str = DEFAULT_HASH
    chunk_size: int = DEFAULT_CHUNK_SIZE
    created: str = ""
    # What pushers do by default (docs/format.md "Chunk encodings"): "auto" stores chunks
    # encoded when that saves bytes, "none" stores them raw.  A header without the field
    # (every lake made before encodings existed) means "none": such a lake stays readable by
    # the ckptlake that made it, whoever pushes to it next.  Readers ignore the setting: any
    # chunk object may be a frame.
    compression: str = COMPRESSION_NONE

    def encode(self) -> bytes:
        out = {"ckptlake_lake": LAKE_FORMAT, "hash": self.hash, "chunk_size": self.chunk_size,
               "created": self.created}
        if self.compression != COMPRESSION_NONE:
            out["compression"] = self.compression
        return json.dumps(out, indent=1).encode()


def is_format(value: object, known: int) -> bool:
    """Whether a lake object's format field is the JSON integer `known`.  `true == 1` in
    Python (and 1.0 == 1): only the integer counts, or an object another tool wrote as
    `"ckptlake_manifest": true` would be read by us as format 1 and refused by others."""
    return type(value) is int and value == known


def shown(value: object) -> str:
    """A value from a damaged object, as JSON, cut short: a crafted one would otherwise fill
    the terminal (and every log line) with its megabytes.  An array or object is named, not
    encoded: one nested just below the parser's limit would fail to encode here (the encoder
    runs frames deeper than the parse did) and turn a damaged object into an internal error."""
    if isinstance(value, (list, dict)):
        return "a JSON array" if isinstance(value, list) else "a JSON object"
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def format_hint(doc: object, field: str) -> str:
    """What to do about a document (parsed JSON) whose format `field` is not the integer 1
    this reader knows: upgrade only for a higher integer (a newer ckptlake's); anything else
    (`true`, `1.0`, 0, no such field, not an object) no ckptlake ever wrote, so it is damaged
    or another tool's, and an upgrade would not help."""
    if not isinstance(doc, dict):
        problem = "it is not a JSON object"
    elif field not in doc:
        problem = f"it has no {field} field"
    elif type(doc[field]) is int and doc[field] > 1:
        return "upgrade ckptlake: a newer one wrote it"
    else:
        problem = f"its {field} is {shown(doc[field])}, not the integer 1"
    return f"{problem}: damaged, or written by another tool"


# Read by every command: one missing is named, not reported as no header at all.
_REQUIRED = ("ckptlake_lake", "hash", "chunk_size")


def decode_header(data: bytes) -> LakeHeader:
    try:
        raw = json.loads(data)
    except (ValueError, RecursionError):
        raw = None
    if not isinstance(raw, dict):
        raise IntegrityError(f"{HEADER_KEY} is not a ckptlake lake header")
    # The format first: a newer format may name its fields otherwise, and the answer to it is
    # "upgrade", not "restore a damaged header".
    if "ckptlake_lake" not in raw:
        raise IntegrityError(f"{HEADER_KEY}: the lake header has no ckptlake_lake (damaged, or "
                             "not written by ckptlake)",
                             hint=f"restore {HEADER_KEY} from a copy of the lake")
    fmt = raw["ckptlake_lake"]
    if type(fmt) is not int:
        raise IntegrityError(f"{HEADER_KEY}: ckptlake_lake is {shown(fmt)}, not an integer "
                             "format version", hint=format_hint(raw, "ckptlake_lake"))
    if not is_format(fmt, LAKE_FORMAT):
        raise IntegrityError(f"lake format {fmt} is not supported",
                             hint=format_hint(raw, "ckptlake_lake"))
    for name in _REQUIRED:
        if name not in raw:
            raise IntegrityError(f"{HEADER_KEY}: the lake header has no {name} (damaged, or "
                                 "not written by ckptlake)",
                                 hint=f'restore it, or add "chunk_size": {DEFAULT_CHUNK_SIZE} '
                                 "(the default)" if name == "chunk_size" else
                                 f"restore {HEADER_KEY} from a copy of the lake")
    algo, size = raw["hash"], raw["chunk_size"]
    new_hasher(algo)  # refuse early if we cannot verify its chunks
    if (not isinstance(size, int) or isinstance(size, bool)
            or not MIN_CHUNK_SIZE <= size <= MAX_CHUNK_SIZE):
        raise IntegrityError(f"{HEADER_KEY}: chunk_size {size!r} is not between "
                             f"{MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE} bytes",
                             hint="the lake header is damaged; restore it or rewrite its "
                                  "chunk_size (16777216 is the default)")
    compression = raw.get("compression", COMPRESSION_NONE)
    if not isinstance(compression, str):
        # Kept as its JSON text, which names no known mode: readers, gc and verify ignore the
        # setting as they ignore a newer writer's mode, and a push that relies on it refuses
        # it by the same message (one that names its own mode works).
        compression = json.dumps(compression)
    return LakeHeader(hash=algo, chunk_size=size, created=str(raw.get("created", "")),
                      compression=compression)
