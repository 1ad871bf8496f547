"""Create-if-absent for objects written once with content, tolerant of empty leftovers.

Why: some servers (SeaweedFS) keep a zero-byte object when a PUT's connection is cut right
after the request head.  For a key written once with If-None-Match (lake header, manifest,
alias record, shard record or claim, tombstone, condemnation record) that empty object would
block every later create with 412 although it holds nothing.  The format therefore counts a
zero-byte object at such a key as absent (docs/format.md, "Empty objects"): a writer that gets
412 looks, and replaces an empty object by compare-and-swap on its ETag, so of several writers
racing for it exactly one wins, as with a plain create.
"""
from __future__ import annotations

from ..errors import NotFound, PreconditionFailed
from ..store.base import Store

EMPTY_NOTE = "empty object left by a cut upload; the next write replaces it"


def create_once(store: Store, key: str, body: bytes) -> str:
    """Write `body` at `key` if the key is absent or holds zero bytes; return the new ETag.

    PreconditionFailed when the key holds data (someone else's create, or our own whose
    response was lost: callers that care compare the content) or when another writer won the
    race for the empty object.
    """
    if not body:
        raise ValueError("create_once needs content: an empty body counts as absent")
    for _ in range(5):
        try:
            return store.put(key, body, if_none_match=True)
        except PreconditionFailed:
            pass
        try:
            data, etag = store.get_with_etag(key)
        except NotFound:  # deleted in between: try creating it again
            continue
        if data:
            raise PreconditionFailed(f"{key} already exists")
        # The empty object's ETag: whoever replaces it first wins; the others get 412.
        return store.put(key, body, if_match=etag)
    raise PreconditionFailed(f"{key} keeps appearing and disappearing")
