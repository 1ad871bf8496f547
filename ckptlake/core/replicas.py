"""Regional replicas (issue 16): which one a client reads, copying versions into one ahead of
time (`replicate`), and sweeping them with gc.

A replica holds only chunk objects, under the same keys as the origin (`chunks/<hh>/<digest>`),
plus gc's condemnation records for its own sweep (`gc/condemned/...`), the pins of copies
into it under way (`gc/pins/...`, core/gc_guard.py), copies of the manifests of versions it
holds whole (for --offline-replica), and its marker (`ckptlake-replica.json`, naming the one
lake it serves).  It is a cache: every
chunk in it can be fetched again from the origin, so losing one costs a crossing, never a
version.  Manifests, aliases and tombstones are read from the origin only (store/replica.py),
so a replica never serves a version gc deleted or an alias that moved.

Why the marker: a replica's gc deletes manifest copies the origin lacks and sweeps chunks no
origin version references, and its manifest copies are keyed by artifact@vN alone.  Pointed
at another lake, or shared by two lakes, it would delete the other lake's versions and serve
one lake's checkpoint for the other's offline.  So every writer and gc binds the replica to
its lake first (bind_replica), and refuses one that is bound to another lake or is a lake.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import (AccessDenied, CkptlakeError, IntegrityError, NoRoom, NotFound,
                      PreconditionFailed, TransferError, TransientError, UsageError)
from ..forks import reset_in_child
from ..format import layout
from ..format.header import LEGACY_HASH
from ..format.manifest import Manifest
from ..policy.replicas import ReplicaSpec, check_not_origin, inherited_endpoint, location_key
from ..results import _Result
from ..store.base import Store
from ..store.replica import ReplicaStore
from ..transfer.pool import bounded_map
from ..transfer.progress import NullProgress, Progress

# A replica is a cache: a dead one should cost a pull seconds, not the origin's full retry
# budget, before the pull falls back to the origin.
REPLICA_RETRY_ATTEMPTS = 2
REPLICA_CONNECT_TIMEOUT = 5.0


def stored_chunk_ok(algo: str, digest: str, stored: bytes | bytearray | memoryview) -> bool:
    """Do the bytes of a stored chunk object hold the chunk `digest` names?

    THE one check of replica bytes: pull-through, repair and `replicate` call only this.  While
    chunks are stored raw it is the hash of the stored bytes; an encoded chunk format (a
    compressed frame whose key is the digest of the decoded bytes) routes it through the
    decoder here, and nowhere else."""
    from .chunkio import open_object

    try:
        open_object(algo, digest, stored, raw_size=None, where="a replica")
    except IntegrityError:
        return False
    return True


class _Verifier:
    """stored_chunk_ok with the hash of the version being read: the manifest's `hash` when the
    caller knows it (every reader verifies a manifest's chunks with that manifest's hash: a
    header may be lost, or rewritten by an old pusher), else the lake header's, read once;
    without a header, the first readable manifest's (what a push would rewrite it with), else
    LEGACY_HASH."""

    def __init__(self, origin: Store, algo: str | None = None) -> None:
        self.origin = origin
        self._algo: str | None = algo
        self._lock = threading.Lock()
        reset_in_child(self)

    def _after_fork(self) -> None:
        """(See ckptlake/forks.py.)  Its lock is held across the read of the lake header: a
        parent thread's, held at the fork, stayed held in the child."""
        self._lock = threading.Lock()

    def algo(self) -> str:
        if self._algo is None:
            with self._lock:
                if self._algo is None:
                    from .lakeheader import read_header, versions_hash

                    header = read_header(self.origin)
                    self._algo = header.hash if header is not None \
                        else versions_hash(self.origin)[1] or LEGACY_HASH
        return self._algo

    def __call__(self, digest: str, stored: bytes | bytearray | memoryview) -> bool:
        return stored_chunk_ok(self.algo(), digest, stored)


@dataclass
class ReplicaSet:
    """The configured replicas and how to open them (from ckptlake.open)."""

    specs: list[ReplicaSpec]
    client_region: str | None = None
    client_region_origin: str = "unknown"
    default: str | None = None  # `--replica` / open(replica=): a name, "none", or None (auto)
    connect_timeout: float = REPLICA_CONNECT_TIMEOUT
    read_timeout: float = 60.0
    max_connections: int = 20
    origin_endpoint: str | None = None
    # (replica name, origin URL) -> "read" or "write": the bindings this process has checked
    # (bind_replica).  A marker is written once, so a passed check stays passed.
    _bound: dict[tuple[str, str], str] = field(default_factory=dict, repr=False, compare=False)

    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    def by_name(self, name: str) -> ReplicaSpec:
        for s in self.specs:
            if s.name == name:
                return s
        known = ("replicas: " + ", ".join(self.names())) if self.specs else "none are configured"
        raise UsageError(f"no replica named {name!r} ({known})",
                         hint="replicas are declared under replicas: in ckptlake.yaml; "
                              "--replica none reads the origin")

    def select(self, choice: str | None = None) -> ReplicaSpec | None:
        """The replica to read: `choice` (a name, or "none"), else the default, else the one in
        the client's region (egress.client_region / $AWS_REGION), else none."""
        choice = choice if choice is not None else self.default
        if choice == "none":
            return None
        if choice is not None:
            return self.by_name(choice)
        if self.client_region:
            for s in self.specs:
                if s.region == self.client_region:
                    return s
        return None

    def endpoint_of(self, spec: ReplicaSpec) -> str | None:
        """Where an s3:// replica is reached: its `endpoint_url`, else the lake's (a file
        that points the lake at MinIO/SeaweedFS means its replicas there too), else None."""
        return inherited_endpoint(spec.url, spec.endpoint_url, self.origin_endpoint)

    def open_store(self, spec: ReplicaSpec) -> Store:
        from ..store import open_store

        return open_store(spec.url, endpoint_url=self.endpoint_of(spec), profile=spec.profile,
                          region=spec.region if spec.url.startswith("s3://") else None,
                          max_connections=self.max_connections,
                          retry_attempts=REPLICA_RETRY_ATTEMPTS,
                          connect_timeout=min(self.connect_timeout, REPLICA_CONNECT_TIMEOUT),
                          read_timeout=self.read_timeout)

    def wrap(self, origin: Store, spec: ReplicaSpec, replica: Store,
             on_warning: Callable[[str], None] | None = None,
             caller_verifies: bool = False, algo: str | None = None) -> ReplicaStore:
        """`origin` with chunk reads going through `replica` (store/replica.py), opened from
        `spec` by open_store.  `algo`: the hash of the manifest being read (None: the
        header's).  The replica is checked to be this lake's before its first read, and bound
        to it before its first write (bind_replica); one that is not is left unused."""
        check_not_origin(spec, origin.url, self.origin_endpoint)
        return ReplicaStore(origin, replica, name=spec.name, region=spec.region,
                            verify=_Verifier(origin, algo), chunk_digest=layout.parse_chunk_key,
                            on_warning=on_warning, caller_verifies=caller_verifies,
                            bind=self.binder(origin, spec, replica))

    def binder(self, origin: Store, spec: ReplicaSpec, replica: Store
               ) -> Callable[[bool], None]:
        """bind_replica(create=...) for a ReplicaStore, remembering what passed: a pull
        through a replica checks it once per process, not once per operation."""
        key = (spec.name, origin.url)

        def bind(create: bool) -> None:
            done = self._bound.get(key)
            if done == "write" or (done == "read" and not create):
                return
            marked = bind_replica(origin, replica, spec, create=create)
            # a marker naming this lake was there: nothing left for a write to create
            self._bound[key] = "write" if create or marked else "read"

        return bind


# ---- binding a replica to its lake ----------------------------------------------------------

MARKER_KEY = layout.REPLICA_MARKER_KEY
MARKER_FORMAT = 1


def lake_identity(origin: Store) -> dict[str, str] | None:
    """What names a lake whatever URL reaches it: its header's `created` and `hash`, both fixed
    when its first push writes the header.  None: no header (never pushed to, or lost)."""
    from .lakeheader import read_header

    header = read_header(origin)
    if header is None or not header.created:
        return None
    return {"created": header.created, "hash": header.hash}


def read_marker(replica: Store, spec: ReplicaSpec) -> tuple[dict[str, Any] | None, str | None]:
    """(the replica's marker, None if it has none; the ETag of an empty one).  An empty marker
    is what a cut PUT leaves: no marker, replaced by compare-and-swap on that ETag."""
    try:
        data, etag = replica.get_with_etag(MARKER_KEY)
    except NotFound:
        return None, None
    if not data:
        return None, etag
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        doc = None
    if not (isinstance(doc, dict) and isinstance(doc.get("format"), int)
            and isinstance(doc.get("origin"), str)
            and (doc.get("lake") is None or isinstance(doc.get("lake"), dict))):
        raise UsageError(f"replica {spec.name!r} ({spec.url}): its {MARKER_KEY} is not a "
                         "replica marker; nothing is written or deleted there",
                         hint=f"if the location is this lake's replica, delete {MARKER_KEY} "
                              "there (the next write names this lake in it)")
    if doc["format"] > MARKER_FORMAT:
        raise UsageError(f"replica {spec.name!r} ({spec.url}) is bound by a newer ckptlake "
                         f"(marker format {doc['format']})", hint="upgrade ckptlake")
    return doc, None


def _lake_evidence(replica: Store, *, records: bool) -> str | None:
    """What in the replica's root says it is a lake (its header; with `records`, lake records
    a replica never holds: aliases, tombstones, summaries, shard records, gc settings)."""
    try:
        replica.stat(layout.HEADER_KEY)
        return f"a lake header, {layout.HEADER_KEY}"
    except NotFound:
        pass
    if not records:
        return None
    try:
        replica.stat(layout.GC_SETTINGS_KEY)
        return f"lake records ({layout.GC_SETTINGS_KEY})"
    except NotFound:
        pass
    for info in replica.list(layout.ARTIFACTS_PREFIX):
        if layout.parse_version_key(info.key) is None and layout.is_lake_key(info.key):
            return f"lake records ({info.key})"
    return None


def _describe_marker(doc: dict[str, Any]) -> str:
    lake = doc.get("lake") or {}
    created = f", created {lake['created']}" if isinstance(lake.get("created"), str) else ""
    return f"{doc['origin']}{created}"


def _names_this_lake(doc: dict[str, Any], origin_url: str,
                     ours: dict[str, str] | None) -> bool:
    """Does a marker name this lake?  By the lakes' identities when both are known (a lake
    reached by another URL, or moved, is still itself; a lake re-created at the same URL is
    not); else by the origin's location."""
    theirs = doc.get("lake")
    if theirs and ours is not None:
        return all(theirs.get(k) == v for k, v in ours.items())
    return location_key(doc["origin"]) == location_key(origin_url)


def bind_replica(origin: Store, replica: Store, spec: ReplicaSpec, *, create: bool,
                 records: bool = False) -> bool:
    """Check that `replica` is this lake's, before writing into it or sweeping it: UsageError
    (exit 2) if its marker names another lake, or if it is a lake itself (a header, or lake
    records).  A replica without a marker (older than markers) is adopted: with `create`,
    its marker is written (create-if-absent; an empty one is replaced by compare-and-swap).

    records: also look for lake records in the replica (one listing of `artifacts/`) when it
    has a marker (gc: about to delete there); a replica without one is always looked at."""
    ours = lake_identity(origin)
    for _ in range(5):
        doc, empty_etag = read_marker(replica, spec)
        evidence = _lake_evidence(replica, records=doc is None or bool(records))
        if evidence is not None:
            raise UsageError(f"replica {spec.name!r} ({spec.url}) is another lake: it holds "
                             f"{evidence}; nothing is written or deleted there",
                             hint="a replica must be a location of its own: fix replicas: in "
                                  "ckptlake.yaml")
        if doc is not None:
            if not _names_this_lake(doc, origin.url, ours) and \
                    location_key(doc["origin"]) == location_key(origin.url):
                raise UsageError(
                    f"replica {spec.name!r} ({spec.url}) was bound to the lake at this same "
                    f"place when it had another identity (created "
                    f"{(doc.get('lake') or {}).get('created', '?')}, now "
                    f"{ours['created'] if ours else '?'}): its header was rewritten, or the "
                    "lake was made anew here; nothing is written or deleted there",
                    hint=f"if the replica's copies are this lake's, delete {MARKER_KEY} and "
                         "artifacts/ in the replica (the next write binds it again)")
            if not _names_this_lake(doc, origin.url, ours):
                raise UsageError(
                    f"replica {spec.name!r} ({spec.url}) belongs to another lake: its "
                    f"{MARKER_KEY} names {_describe_marker(doc)}, not this lake {origin.url}"
                    + (f" (created {ours['created']})" if ours else "")
                    + "; nothing is written or deleted there",
                    hint="give each lake a replica location of its own (replicas: in "
                         "ckptlake.yaml); if it is this lake's (moved, or its header "
                         f"rewritten), delete {MARKER_KEY} and artifacts/ in the replica")
            return True
        if not create:
            return False
        body = json.dumps({"format": MARKER_FORMAT, "origin": origin.url, "lake": ours},
                          indent=1).encode()
        try:
            if empty_etag is not None:
                replica.put(MARKER_KEY, body, if_match=empty_etag)
            else:
                replica.put(MARKER_KEY, body, if_none_match=True)
            return True
        except PreconditionFailed:
            continue  # another writer bound it first: read whose it is
    raise PreconditionFailed(f"{spec.url}/{MARKER_KEY} could not be read or created")


def check_offline(replica: Store, spec: ReplicaSpec, origin_url: str) -> None:
    """Before serving a version from the replica alone: refuse one bound to another lake, or
    that is a lake.  The origin cannot be reached, so its identity is unknown: the marker's
    `origin` must be this lake's location.  A replica without a marker is served (nothing is
    written offline)."""
    doc, _ = read_marker(replica, spec)
    evidence = _lake_evidence(replica, records=False)
    if evidence is not None:
        raise UsageError(f"replica {spec.name!r} ({spec.url}) is another lake: it holds "
                         f"{evidence}; its versions are not this lake's",
                         hint="fix replicas: in ckptlake.yaml")
    if doc is not None and location_key(doc["origin"]) != location_key(origin_url):
        raise UsageError(f"replica {spec.name!r} ({spec.url}) belongs to another lake: its "
                         f"{MARKER_KEY} names {_describe_marker(doc)}, not this lake "
                         f"{origin_url}; its versions are not this lake's",
                         hint="pull with --lake set to the lake it names, or without "
                              "--offline-replica once this lake is reachable")


# ---- replicate ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReplicateResult(_Result):
    lake: str
    replica: str
    replica_url: str
    region: str
    artifact: str
    version: int
    chunks: int  # distinct chunk objects the version references
    bytes: int
    chunks_present: int  # already in the replica (not empty; verified with --verify)
    bytes_present: int
    chunks_copied: int
    bytes_copied: int
    chunks_repaired: int  # present but wrong (size, or bytes with --verify): replaced
    # found present, then swept by a racing replica gc: copied again (the commit guard)
    chunks_recopied: int
    verified: bool
    seconds: float
    warnings: list[str] = field(default_factory=list)



def _stopped(spec: Any, exc: CkptlakeError, again: str) -> CkptlakeError:
    """Why replicate stopped, in one line (the store's own hint was nested in the message):
    a full or looping replica disk stays exit 2 (NoRoom), a refused one exit 4, each with
    the store's hint first."""
    message = f"replicate to {spec.name} ({spec.url}) stopped: {exc.message}"
    if isinstance(exc, (NoRoom, AccessDenied)):
        return type(exc)(message, hint=f"{exc.hint}; {again}" if exc.hint else again)
    return TransferError(message, hint=again)

def replicate(origin: Store, replica: Store, m: Manifest, *, spec: ReplicaSpec, lake_url: str,
              concurrency: int, verify: bool = False, progress: Progress | None = None,
              settings_override: Any = None,
              origin_endpoint: str | None = None) -> ReplicateResult:
    """Copy the chunks of version `m` that `replica` lacks, verified, create-if-absent.

    Resumable like a push: presence is looked up first (one HEAD per chunk), so a re-run after
    an interruption copies only what is still missing.  With `verify`, chunks already present
    are read and checked too, and bad ones replaced.

    A replica's gc may be sweeping some of these chunks right now, with a listing of the
    origin's manifests older than the version: found present, then swept.  So the copy ends
    with the push's commit guard (core/gc_guard.guard_commit), run against the replica's
    condemnation records: chunks a record names are checked again once any such sweep is over
    (sweep_window after the copy), and copied again if gone.  When `replicate` returns, the
    replica holds every chunk of the version, and keeps them while the version lives.

    origin_endpoint: the endpoint the origin is reached at (ReplicaSet.origin_endpoint; None:
    AWS's), for the check that the replica is not the lake nor nested in it: with None for a
    lake on a MinIO/SeaweedFS, a replica naming that server in its own `endpoint_url` looked
    like one at another server, and a replica inside the lake passed.
    """
    from . import clock as _clock
    from .browse import object_sizes
    from .gc_guard import guard_commit, read_settings

    check_not_origin(spec, origin.url, origin_endpoint)
    try:
        bind_replica(origin, replica, spec, create=True)
    except (TransientError, TransferError, AccessDenied) as exc:
        raise _stopped(spec, exc, "run it again once the replica can be written") from None
    progress = progress or NullProgress()
    started = time.monotonic()
    guard_started, guard_started_wall = _clock.now(), time.time()
    check = _Verifier(origin, m.hash)  # the manifest's hash: the header may be lost
    sizes = object_sizes(m)
    total = sum(sizes.values())
    lock = threading.Lock()
    tally = {"present": 0, "bytes_present": 0, "copied": 0, "bytes_copied": 0, "repaired": 0,
             "recopied": 0}
    progress.start(phase="replicate", total_bytes=total, total_files=len(sizes))

    def copy(key: str, digest: str, *, over: bool) -> int:
        try:
            data = origin.get(key)
        except NotFound:
            # What a pull of the version says: gone with its version (exit 3), or lost (exit 5)
            from .catalog import deleted_meanwhile
            from .chunkio import missing

            raise deleted_meanwhile(origin, m.artifact, m.version,
                                    missing(digest, f"{m.artifact}@v{m.version}"),
                                    doing="being replicated") from None
        if not check(digest, data):
            from ..errors import IntegrityError

            raise IntegrityError(f"chunk {key} is corrupt at the origin; nothing of it was "
                                 "written to the replica",
                                 hint=f"ckptlake verify {m.artifact}@v{m.version} --read-data")
        try:
            if over:
                replica.put(key, data)  # over a wrong copy: these bytes are verified
            else:
                replica.put(key, data, if_none_match=True)
        except PreconditionFailed:
            # written meanwhile by a pull-through or another replicate -- or the empty object
            # of a cut upload, which the guard counts as missing and create-if-absent would
            # never replace: then the version's manifest copy promised a chunk it lacks
            if not replica.stat(key).size:
                replica.put(key, data)
        return len(data)

    def recopy(missing: set[str]) -> None:
        for _ in bounded_map(lambda d: copy(layout.chunk_key(d), d, over=False),
                             sorted(missing), workers=concurrency, name="ckptlake-replicate"):
            pass
        with lock:
            tally["recopied"] += len(missing)

    def one(item: tuple[str, int]) -> None:
        digest, size = item
        key = layout.chunk_key(digest)
        bad = False
        try:
            info = replica.stat(key)
            # Not the manifest's size: a stored object may be an encoded frame of another
            # length.  An empty object is what a cut upload leaves: absent.  (Wrong bytes of
            # any length are found by --verify, and by every pull, which repairs them.)
            present = info.size > 0
            bad = not present
        except NotFound:
            present = False
        if present and verify:
            if check(digest, replica.get(key)):
                pass
            else:
                present, bad = False, True
        if present:
            with lock:
                tally["present"] += 1
                tally["bytes_present"] += size
            progress.advance(size)
            return
        n = copy(key, digest, over=bad)
        with lock:
            tally["copied"] += 1
            tally["bytes_copied"] += n
            tally["repaired"] += bad
        progress.advance(size)

    try:
        for _ in bounded_map(one, sorted(sizes.items()), workers=concurrency,
                             name="ckptlake-replicate"):
            pass
        # The replica's gc runs with the lake's settings (gc publishes them at the origin).
        settings = read_settings(origin) if settings_override is None else settings_override
        guard_commit(replica, referenced=set(sizes), commit=lambda: None, reupload=recopy,
                     settings=settings, started=guard_started,
                     started_wall=guard_started_wall, recheck_after_commit=False)
        keep_manifest(origin, replica, m)  # whole now: servable with --offline-replica
    except (TransientError, TransferError, AccessDenied) as exc:
        raise _stopped(spec, exc, "run it again: chunks already copied are not copied again"
                       ) from None
    finally:
        progress.finish()
    return ReplicateResult(
        lake=lake_url, replica=spec.name, replica_url=spec.url, region=spec.region,
        artifact=m.artifact, version=m.version, chunks=len(sizes), bytes=total,
        chunks_present=tally["present"], bytes_present=tally["bytes_present"],
        chunks_copied=tally["copied"], bytes_copied=tally["bytes_copied"],
        chunks_repaired=tally["repaired"], chunks_recopied=tally["recopied"], verified=verify,
        seconds=round(time.monotonic() - started, 3))


# ---- manifests for --offline-replica --------------------------------------------------------

def keep_manifest(origin: Store, replica: Store, m: Manifest) -> bool:
    """Copy version `m`'s manifest into the replica (create-if-absent), once the replica holds
    the whole version (after a whole pull through it, or `replicate`), so that a pull with
    `offline_replica` can serve it when the origin cannot be reached.  Readers online never
    read it: the origin's manifests are the truth.  Best effort: False if not copied."""
    if getattr(m, "selection", ()):
        return False  # a partial pull: the replica may not hold the rest
    key = layout.version_key(m.artifact, m.version)
    try:
        data = origin.get(key)
        if not data:
            return False
        try:
            replica.put(key, data, if_none_match=True)
            return True
        except PreconditionFailed:
            pass
        # A copy is there: ours, another writer's -- or the empty object of a cut PUT, which
        # offline readers skip and create-if-absent would never replace.  The origin's bytes
        # are the truth: anything else there is replaced by compare-and-swap.
        held, etag = replica.get_with_etag(key)
        if held == data:
            return True
        replica.put(key, data, if_match=etag)
    except PreconditionFailed:
        return True  # replaced meanwhile by another writer of the same bytes
    except CkptlakeError:
        return False
    return True


def keep_pulled_manifest(origin: Store, replica: Store, m: Manifest) -> bool:
    """keep_manifest after a whole pull through the replica, which (unlike `replicate`) ran
    no commit guard: a replica sweep may have deleted a chunk the pull read from it, and a
    manifest copy would then promise offline readers a version the replica no longer holds
    whole.  A sweep deletes only chunks a condemnation record names, and a live version's
    chunks are not condemned anew, so: no copy while a record there names one of its chunks
    (or one cannot be read).  The copy is best effort; `replicate` makes it under the guard."""
    from .browse import object_sizes
    from .gc_guard import read_records

    key = layout.version_key(m.artifact, m.version)
    try:  # the same copy there already (a warm pull): nothing to write, no records to read
        held = replica.get(key)
        if held and held == origin.get(key):
            return True
    except CkptlakeError:
        pass
    try:
        records, unreadable = read_records(replica, lenient=True)
    except CkptlakeError:
        return False
    if unreadable:
        return False
    chunks = set(object_sizes(m))
    if any(chunks.intersection(r.chunks) for r in records):
        return False
    return keep_manifest(origin, replica, m)


def resolve_offline(replica: Store, ref: Any, *, name: str | None = None) -> Manifest:
    """The manifest `ref` names among the copies the replica holds (latest, vN, step=N,
    min:/max: -- aliases live only at the origin).  `name`: the replica's, for the messages.

    What the replica lacks is a TransferError (exit 8), not NotFound (exit 3): the alias, or
    the version the replica holds no copy of, may well exist; what is missing is the lake that
    holds it (a script retrying on exit 8 is right to; one taking exit 3 as "no such version"
    would be wrong)."""
    from ..format.refs import parse_ref
    from .catalog import resolve, version_numbers

    parsed = parse_ref(ref) if isinstance(ref, str) else ref
    replica_name = f"replica {name}" if name else "the replica"

    def newest() -> str:
        try:
            held = version_numbers(replica, parsed.artifact)
        except CkptlakeError:
            held = []
        return (f"the newest version {replica_name} holds is {parsed.artifact}@v{held[-1]}"
                if held else f"{replica_name} holds no version of {parsed.artifact}")

    if parsed.kind == "alias":
        raise TransferError(f"the lake cannot be reached, and aliases live only there: "
                            f"{parsed.artifact}@{parsed.value} cannot be resolved offline",
                            hint=f"name a version (@vN) instead; {newest()}")
    try:
        return resolve(replica, parsed)
    except NotFound as exc:  # its reason too: "no live version has the metric 'x'"
        raise TransferError(
            f"the lake cannot be reached, and {replica_name} holds no copy of {parsed} "
            f"({exc.message}): it may exist at the lake",
            hint=f"{newest()}; when the lake is back, pull it again, or copy it into the "
                 f"replica ahead of time: ckptlake replicate {parsed} --to {name or 'NAME'}"
        ) from None


def _drop_stale_manifests(origin: Store, replica: Store) -> int:
    """Delete the replica's manifest copies whose version the origin no longer has (gc deleted
    it).  The replica is listed first, the origin second: a copy made after our listing is not
    looked at, and a version live at the origin when we look is kept."""
    copies = [(info.key, parsed) for info in replica.list(layout.ARTIFACTS_PREFIX)
              if (parsed := layout.parse_version_key(info.key))]
    if not copies:
        return 0
    live = {parsed for info in origin.list(layout.ARTIFACTS_PREFIX)
            if (parsed := layout.parse_version_key(info.key)) and info.size > 0}
    stale = [key for key, parsed in copies if parsed not in live]
    if stale:
        replica.delete(stale)
    return len(stale)


# ---- where a pull's bytes come from (the egress estimate) -----------------------------------

def replica_presence(replica: Store, digests: dict[str, int], workers: int = 16
                     ) -> tuple[int, int]:
    """(bytes of these chunk objects the replica holds, bytes it lacks): one HEAD each.
    A replica that cannot be asked counts as holding nothing (the pull would fall back), and
    so does a copy of another size than the object the pull expects (a copy cut short or
    damaged: the pull fetches it from the origin, so its bytes cross the origin's route)."""
    def has(item: tuple[str, int]) -> tuple[int, bool]:
        digest, size = item
        try:
            return size, replica.stat(layout.chunk_key(digest)).size == size
        except NotFound:
            return size, False

    held = lacking = 0
    try:
        for size, ok in bounded_map(has, list(digests.items()), workers=workers,
                                    name="ckptlake-estimate"):
            if ok:
                held += size
            else:
                lacking += size
    except CkptlakeError:
        return 0, sum(digests.values())
    return held, lacking


# ---- gc -------------------------------------------------------------------------------------

def gc_replica(origin: Store, replica: Store, spec: ReplicaSpec, settings: Any, *,
               on_event: Callable[[str], None] | None = None, now: Any = None,
               clock: Any = None, origin_endpoint: str | None = None) -> dict[str, Any]:
    """Sweep one replica with gc's own protocol (docs/format.md, "Replicas"): its records
    live in the replica (`gc/condemned/`), its mark lists the *origin's* roots.  Chunks no live
    origin version (or pending shard) references are condemned once older than grace_period
    (by the replica's LastModified), and swept a grace period later with a mark listing no
    older than sweep_window.  Returns the run's GcResult as a dict, with the replica named.
    origin_endpoint: as for `replicate`."""
    from . import clock as _clock
    from .gc import _Execution
    from .identity import utcnow

    check_not_origin(spec, origin.url, origin_endpoint)
    # Before anything is deleted there: a replica bound to another lake, or that is a lake,
    # holds that lake's chunks and manifests, which this lake's roots do not name.
    bind_replica(origin, replica, spec, create=True, records=True)
    if clock is None:
        def clock() -> float:
            return _clock.now()
    started = clock()
    run = _Execution(origin, None, settings, now or utcnow, clock, on_event,  # type: ignore
                     data=replica)
    try:
        run.collect(malformed=f"replica {spec.name}: {{key}} is malformed: not swept")
        manifests_dropped = _drop_stale_manifests(origin, replica)
    finally:
        run.scratch.close()
    run.result.manifest_listings = run.marker.listings
    run.result.seconds = round(clock() - started, 3)
    run.event("done")
    return {"replica": spec.name, "url": spec.url, "region": spec.region,
            **run.result.to_dict(), "manifests_dropped": manifests_dropped}
