"""The lake header: one object at the lake root, written once, that fixes the chunk hash.

Every chunk key is a digest, so the hash algorithm is part of the meaning of every key; it must
never vary between writers.  The first push creates the header with If-None-Match; everyone
after reads it and obeys.  `chunk_size` is only the default for pushers (manifests record real
sizes), so changing it later is harmless.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone

from ..errors import IntegrityError, NotFound, PreconditionFailed
from ..store.base import Store
from .layout import HEADER_KEY

LAKE_FORMAT = 1
DEFAULT_HASH = "sha256"
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
SUPPORTED_HASHES = ("sha256",)


def new_hasher(name: str):  # -> hashlib._Hash
    """A hasher for `name`; hashlib's SHA-256 uses SHA-NI where present and releases the GIL."""
    if name == "sha256":
        return hashlib.sha256()
    raise IntegrityError(f"lake uses hash {name!r}, which this ckptlake does not support",
                         hint="upgrade ckptlake")


def digest(name: str, data: bytes | bytearray | memoryview) -> str:
    h = new_hasher(name)
    h.update(data)
    return h.hexdigest()


@dataclass(frozen=True)
class LakeHeader:
    hash: str = DEFAULT_HASH
    chunk_size: int = DEFAULT_CHUNK_SIZE
    created: str = ""

    def encode(self) -> bytes:
        return json.dumps({"ckptlake_lake": LAKE_FORMAT, "hash": self.hash,
                           "chunk_size": self.chunk_size, "created": self.created},
                          indent=1).encode()


def decode_header(data: bytes) -> LakeHeader:
    try:
        raw = json.loads(data)
        fmt, algo, size = raw["ckptlake_lake"], raw["hash"], raw["chunk_size"]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise IntegrityError(f"{HEADER_KEY} is not a ckptlake lake header") from None
    if fmt != LAKE_FORMAT:
        raise IntegrityError(f"lake format {fmt} is not supported", hint="upgrade ckptlake")
    new_hasher(algo)  # refuse early if we cannot verify its chunks
    if (not isinstance(size, int) or isinstance(size, bool)
            or not MIN_CHUNK_SIZE <= size <= MAX_CHUNK_SIZE):
        raise IntegrityError(f"{HEADER_KEY}: chunk_size {size!r} is not between "
                             f"{MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE} bytes",
                             hint="the lake header is damaged; restore it or rewrite its "
                                  "chunk_size (16777216 is the default)")
    return LakeHeader(hash=algo, chunk_size=size, created=str(raw.get("created", "")))


def read_header(store: Store) -> LakeHeader | None:
    """The header, or None for a lake nobody has pushed to yet."""
    try:
        return decode_header(store.get(HEADER_KEY))
    except NotFound:
        return None


def ensure_header(store: Store, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> LakeHeader:
    """Read the header, creating it if this is the lake's first write (race-safe)."""
    return open_or_create_header(store, chunk_size=chunk_size)[0]


def open_or_create_header(store: Store, *, chunk_size: int = DEFAULT_CHUNK_SIZE
                          ) -> tuple[LakeHeader, bool]:
    """(the header, whether this call created the lake).  Creating one is worth saying: a
    mistyped lake location is otherwise a silent new lake."""
    existing = read_header(store)
    if existing is not None:
        return existing, False
    header = LakeHeader(chunk_size=chunk_size,
                        created=datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"))
    try:
        store.put(HEADER_KEY, header.encode(), if_none_match=True)
    except PreconditionFailed:  # another writer created it first: theirs wins
        return decode_header(store.get(HEADER_KEY)), False
    return header, True
