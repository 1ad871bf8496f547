"""Reading and creating the lake header (its format: format/header.py)."""
from __future__ import annotations

from datetime import datetime, timezone

from ..errors import NotFound, PreconditionFailed
from ..format.header import (DEFAULT_CHUNK_SIZE, DEFAULT_COMPRESSION, LakeHeader,
                             decode_header)
from ..format.layout import HEADER_KEY
from ..store.base import Store
from .createonce import create_once


def read_header(store: Store) -> LakeHeader | None:
    """The header, or None for a lake nobody has pushed to yet.

    A zero-byte header is what a first push's PUT cut after its head leaves on some servers: it
    holds nothing and counts as no header (the next push writes it, docs/format.md).
    """
    try:
        data = store.get(HEADER_KEY)
    except NotFound:
        return None
    return decode_header(data) if data else None


def ensure_header(store: Store, *, chunk_size: int = DEFAULT_CHUNK_SIZE,
                  compression: str = DEFAULT_COMPRESSION) -> LakeHeader:
    """Read the header, creating it if this is the lake's first write (race-safe)."""
    return open_or_create_header(store, chunk_size=chunk_size, compression=compression)[0]


def open_or_create_header(store: Store, *, chunk_size: int = DEFAULT_CHUNK_SIZE,
                          compression: str = DEFAULT_COMPRESSION
                          ) -> tuple[LakeHeader, bool]:
    """(the header, whether this call created the lake).  Creating one is worth saying: a
    mistyped lake location is otherwise a silent new lake."""
    for _ in range(5):
        existing = read_header(store)
        if existing is not None:
            return existing, False
        header = LakeHeader(chunk_size=chunk_size, compression=compression,
                            created=datetime.now(timezone.utc).isoformat().replace("+00:00",
                                                                                   "Z"))
        try:
            create_once(store, HEADER_KEY, header.encode())
        except PreconditionFailed:  # another writer created it first: theirs wins
            continue
        return header, True
    raise PreconditionFailed(f"{HEADER_KEY} could not be read or created")
