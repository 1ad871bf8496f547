"""Create-if-absent for objects written once with content, tolerant of empty leftovers.

Why: some servers (SeaweedFS) keep a zero-byte object when a PUT's connection is cut right
after the request head.  For a key written once with If-None-Match (lake header, manifest,
alias record, shard record or claim, tombstone, condemnation record) that empty object would
block every later create with 412 although it holds nothing.  The format therefore counts a
zero-byte object at such a key as absent (docs/format.md, "Empty objects"): a writer that gets
412 looks, and replaces an empty object by compare-and-swap on its ETag, so of several writers
racing for it exactly one wins, as with a plain create.

An empty *manifest* vN is taken over only while no non-empty version above N exists: a
pusher of the first release (no empty-object rule) counts the empty vN as a version and
commits vN+1, and taking vN over after that would give the checkpoint committed last the lower
number (`latest` the older one, keep_last deleting the newest).  So the versions above N are
listed again right before the takeover, and a non-empty one there leaves vN alone (the caller
takes highest + 1).  Current pushers never commit above an empty vN (catalog.version_numbers
does not count it, so their next number is N itself).
"""
from __future__ import annotations

from ..errors import NotFound, PreconditionFailed
from ..format import layout
from ..store.base import Store

EMPTY_NOTE = "empty object left by a cut upload; the next write replaces it"
# A condemnation record's key is random and never written again: gc removes an empty one
# once it is older than record_retention (core/gc.py).
EMPTY_RECORD_NOTE = ("empty object left by a cut upload (it condemns nothing; gc removes it "
                     "once it is older than record_retention and an hour)")


def later_version(store: Store, artifact: str, number: int) -> int | None:
    """The highest non-empty version of `artifact` above `number`, or None (one listing)."""
    highest = None
    for info in store.list(layout.versions_prefix(artifact)):
        parsed = layout.parse_version_key(info.key)
        if parsed and parsed[0] == artifact and parsed[1] > number and info.size > 0:
            highest = max(highest or 0, parsed[1])
    return highest


def create_once(store: Store, key: str, body: bytes) -> str:
    """Write `body` at `key` if the key is absent or holds zero bytes; return the new ETag.

    PreconditionFailed when the key holds data (someone else's create, or our own whose
    response was lost: callers that care compare the content), when another writer won the
    race for the empty object, or when the key is an empty manifest below a non-empty version
    (left alone: see the module's docstring; the key then still reads as empty).
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
        version = layout.parse_version_key(key)
        if version is not None and later_version(store, *version) is not None:
            raise PreconditionFailed(f"{key} is empty below a later version: left alone")
        # The empty object's ETag: whoever replaces it first wins; the others get 412.
        return store.put(key, body, if_match=etag)
    raise PreconditionFailed(f"{key} keeps appearing and disappearing")
