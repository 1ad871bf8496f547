"""Reading and creating the lake header (its format: format/header.py)."""
from __future__ import annotations

import json
from datetime import datetime, timezone

from ..errors import IntegrityError, NotFound, PreconditionFailed, UsageError
from ..format.codecs import COMPRESSION_MODES
from ..format.header import (COMPRESSION_AUTO, COMPRESSION_NONE, DEFAULT_CHUNK_SIZE,
                             DEFAULT_COMPRESSION, DEFAULT_HASH, HASH_BLAKE3, SUPPORTED_HASHES,
                             LakeHeader, check_hash, decode_header)
from ..format.layout import ARTIFACTS_PREFIX, HEADER_KEY, REPLICA_MARKER_KEY, parse_version_key
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


def check_known(store: Store) -> None:
    """Refuse (IntegrityError, exit 5: "upgrade ckptlake") a lake whose header this ckptlake
    cannot read, before anything that deletes or rewrites records: a newer format may keep
    chunks alive by references this version does not know of (gc would sweep them), or read
    records differently.  Push refuses by the same check; a lake without a header passes."""
    read_header(store)


# What open_or_create_header says it did (falsy: nothing was written).
NEW_LAKE = "new"
REWRITTEN = "rewritten"


def ensure_header(store: Store, *, chunk_size: int = DEFAULT_CHUNK_SIZE,
                  compression: str | None = None,
                  hash: str | None = None) -> LakeHeader:
    """Read the header, creating it if this is the lake's first write (race-safe; `hash` and
    `compression` as for open_or_create_header)."""
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


# Unreadable manifests versions_hash looks past before it gives up: a lake whose first
# fifty manifests are all damaged needs a person anyway.
_UNREADABLE_TRIES = 50


def versions_hash(store: Store) -> tuple[bool, str | None]:
    """(whether a lake without a header has versions, the hash the first readable version
    manifest names: None if none of the first few names one).  A header lost (deleted, or cut
    to zero bytes) under existing versions must be rewritten with their hash, not with the
    default for new lakes: a SHA-256 lake would otherwise turn into a BLAKE3 one under its own
    SHA-256 manifests.  So an unreadable manifest is looked past, as one deleted since the
    listing is.  Zero-byte manifests are no versions.  One listing, and one GET per manifest
    until one is readable: only on the push that writes a header."""
    has_versions, unreadable = False, 0
    for obj in store.list(ARTIFACTS_PREFIX):
        if obj.size == 0 or parse_version_key(obj.key) is None:
            continue
        has_versions = True
        try:
            algo = json.loads(store.get(obj.key)).get("hash")
        except NotFound:  # deleted since the listing (gc): look on
            continue
        except (ValueError, AttributeError, RecursionError):
            algo = None
        if isinstance(algo, str) and algo:
            return True, algo
        unreadable += 1
        if unreadable >= _UNREADABLE_TRIES:
            break
    return has_versions, None


def _refuse_a_replica(store: Store) -> None:
    """A replica's location is no lake: a header written there (a push or `cp --to` naming
    it) made pulls skip the replica and gc refuse it, and its manifest copies would have been
    taken for a lost header's versions."""
    try:
        marked = store.stat(REPLICA_MARKER_KEY).size > 0  # empty: a cut PUT, no marker
    except NotFound:
        marked = False
    if marked:
        raise UsageError(f"{store.url} is a regional replica of a lake ({REPLICA_MARKER_KEY}), "
                         "not a lake: nothing is pushed or copied into it",
                         hint="push to the lake it serves (which replicates to it), or "
                              "choose another location for a new lake")


def _check_same_hash(lake: str, asked: str | None) -> None:
    if asked is not None and lake != asked:
        raise UsageError(f"this lake's chunks are named by {lake} digests, not {asked}: a "
                         "lake's hash is fixed when its first push creates it",
                         hint="push without --hash, or to a new lake location")


def open_or_create_header(store: Store, *, chunk_size: int = DEFAULT_CHUNK_SIZE,
                          compression: str | None = None,
                          hash: str | None = None, write: bool = True
                          ) -> tuple[LakeHeader, str]:
    """(the header, what this call wrote: "" nothing, NEW_LAKE, or REWRITTEN -- a lost header
    under existing versions).  Writing one is worth saying: a mistyped lake location is
    otherwise a silent new lake.

    `hash`: the chunk hash a new lake gets (None: DEFAULT_HASH, blake3).  It only chooses for
    a new lake: an existing lake with another hash is refused (exit 2) rather than silently
    used, since the caller asked for something this lake cannot give; an existing lake
    without `hash` named keeps its own, whatever the default has become.

    `compression`: the pusher's explicit choice (None: none made), which a new lake keeps as
    its default (DEFAULT_COMPRESSION without one): a lake created with `--compression none`
    for a fleet of older readers must not start storing frames at the next push without the
    option.  A header rewritten under existing versions keeps their hash (`hash` may choose
    only when no manifest says it: else the push is refused, exit 5) and, unless the push
    names a compression, says `none` under SHA-256 versions (the lost one may have been an
    older ckptlake's `none` lake, read by ckptlakes that know no frames) and `auto` under
    BLAKE3 ones (every ckptlake that reads BLAKE3 lakes decodes frames: compression came
    first, so `none` would protect no reader).

    `write=False` (push --dry-run): every check, and the header a push would write returned
    with what it would say, but nothing written."""
    if hash is not None:
        check_requested_hash(hash)
    if compression is not None and compression not in COMPRESSION_MODES:
        raise UsageError(f"unknown compression {compression!r}", hint="use auto or none")
    for _ in range(5):
        existing = read_header(store)
        if existing is not None:
            _check_same_hash(existing.hash, hash)
            return existing, ""
        # No header: a new lake, or one whose header was lost under its versions, which
        # keeps their hash.  Only now is the default needed (and blake3 checked for).
        _refuse_a_replica(store)
        has_versions, kept = versions_hash(store)
        if kept is not None:
            _check_same_hash(check_hash(kept), hash)
        elif has_versions and hash is None:
            # the default would be a guess: BLAKE3 under SHA-256 versions names every new
            # chunk differently from theirs (and the other way round)
            raise IntegrityError(
                "the lake header is lost and no manifest says which hash it used (the first "
                "version manifests are unreadable)",
                hint=f"restore {HEADER_KEY} or push --hash {'|'.join(SUPPORTED_HASHES)}")
        algo = kept or hash or check_requested_hash(DEFAULT_HASH)
        if compression is not None:
            mode = compression
        elif has_versions:
            mode = COMPRESSION_AUTO if algo == HASH_BLAKE3 else COMPRESSION_NONE
        else:
            mode = DEFAULT_COMPRESSION
        header = LakeHeader(hash=algo, chunk_size=chunk_size, compression=mode,
                            created=datetime.now(timezone.utc).isoformat().replace("+00:00",
                                                                                   "Z"))
        if not write:
            return header, REWRITTEN if has_versions else NEW_LAKE
        try:
            create_once(store, HEADER_KEY, header.encode())
        except PreconditionFailed:  # another writer created it first: theirs wins
            continue
        return header, REWRITTEN if has_versions else NEW_LAKE
    raise PreconditionFailed(f"{HEADER_KEY} could not be read or created")
