"""Reading and creating the lake header (its format: format/header.py)."""
from __future__ import annotations

import json
from datetime import datetime, timezone

from ..errors import NotFound, PreconditionFailed, UsageError
from ..format.header import (DEFAULT_CHUNK_SIZE, DEFAULT_COMPRESSION, DEFAULT_HASH,
                             SUPPORTED_HASHES, LakeHeader, check_hash, decode_header)
from ..format.layout import ARTIFACTS_PREFIX, HEADER_KEY, parse_version_key
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
                  compression: str = DEFAULT_COMPRESSION,
                  hash: str | None = None) -> LakeHeader:
    """Read the header, creating it if this is the lake's first write (race-safe; `hash` as
    for open_or_create_header)."""
    return open_or_create_header(store, chunk_size=chunk_size, compression=compression,
                                 hash=hash)[0]


def check_requested_hash(name: str) -> str:
    """A hash a pusher asked for: known, and hashable here (blake3 installed), before anything
    is written -- a lake must never be created with a hash its creator cannot compute."""
    if name not in SUPPORTED_HASHES:
        raise UsageError(f"unknown hash {name!r}", hint=f"use {' or '.join(SUPPORTED_HASHES)}")
    try:
        return check_hash(name)
    except UsageError:  # blake3 missing: say what would be created, and the way around it
        raise UsageError(f"cannot create a {name} lake: the {name} package is not installed",
                         hint=f"pip install {name}, or create a SHA-256 lake "
                              "(push --hash sha256)") from None


def versions_hash(store: Store) -> str | None:
    """The hash the first version manifest of a lake without a header names (None: no
    version, or the first one unreadable).  A header lost (deleted, or cut to zero bytes)
    under existing versions must be rewritten with their hash, not with the default for new
    lakes: a SHA-256 lake would otherwise turn into a BLAKE3 one under its own SHA-256
    manifests.  One listing, and one GET if it finds a version: only on the push that writes
    a header."""
    for obj in store.list(ARTIFACTS_PREFIX):
        if parse_version_key(obj.key) is None:
            continue
        try:
            algo = json.loads(store.get(obj.key)).get("hash")
        except (NotFound, ValueError, AttributeError, RecursionError):
            return None
        return algo if isinstance(algo, str) else None
    return None


def _check_same_hash(lake: str, asked: str | None) -> None:
    if asked is not None and lake != asked:
        raise UsageError(f"this lake's chunks are named by {lake} digests, not {asked}: a "
                         "lake's hash is fixed when its first push creates it",
                         hint="push without --hash, or to a new lake location")


def open_or_create_header(store: Store, *, chunk_size: int = DEFAULT_CHUNK_SIZE,
                          compression: str = DEFAULT_COMPRESSION,
                          hash: str | None = None) -> tuple[LakeHeader, bool]:
    """(the header, whether this call created the lake).  Creating one is worth saying: a
    mistyped lake location is otherwise a silent new lake.

    `hash`: the chunk hash a new lake gets (None: DEFAULT_HASH, blake3).  It only chooses for
    a new lake: an existing lake with another hash is refused (exit 2) rather than silently
    used, since the caller asked for something this lake cannot give; an existing lake
    without `hash` named keeps its own, whatever the default has become."""
    if hash is not None:
        check_requested_hash(hash)
    for _ in range(5):
        existing = read_header(store)
        if existing is not None:
            _check_same_hash(existing.hash, hash)
            return existing, False
        # No header: a new lake, or one whose header was lost under its versions, which
        # keeps their hash.  Only now is the default needed (and blake3 checked for).
        kept = versions_hash(store)
        if kept is not None:
            _check_same_hash(check_hash(kept), hash)
        algo = kept or hash or check_requested_hash(DEFAULT_HASH)
        header = LakeHeader(hash=algo, chunk_size=chunk_size,
                            compression=compression,
                            created=datetime.now(timezone.utc).isoformat().replace("+00:00",
                                                                                   "Z"))
        try:
            create_once(store, HEADER_KEY, header.encode())
        except PreconditionFailed:  # another writer created it first: theirs wins
            continue
        return header, True
    raise PreconditionFailed(f"{HEADER_KEY} could not be read or created")
