"""Sharded commits: WORLD ranks each push their own files; one version appears when all are in.

There is no coordinator and no barrier.  Everything rests on the two conditional writes of the
lake (docs/format.md, "Sharded commits"):

1. Each rank uploads its chunks (`upload_tree`), then writes its *shard record*
   `@shards/<step>/<rank>-of-<world>.json` with If-None-Match.  The record holds the rank's file
   entries.  If the record already exists with the same files the push is a repeat (fine); with
   other files it is a Conflict: a step's shards are written once.
2. The rank lists the step's records.  Whoever sees all WORLD of them tries to create the step's
   *claim* `@shards/<step>/commit.json` with If-None-Match.  Several ranks may see the full set;
   exactly one create wins.
3. The claim owner merges the records into one manifest (the union of the ranks' files; two ranks
   writing one path with different bytes is a Conflict that fails the step) and commits it:
   it first records in the claim, by compare-and-swap, the version number N it is about to
   write (`intent`), then writes `@v/N` with If-None-Match.  The manifest carries the claim's
   `commit_id`.  On success the claim is moved to `committed` with N.
4. A claim that is not `committed` and older than `stale_after` seconds may be taken over by any
   rank (compare-and-swap on its ETag).  The new owner keeps the `commit_id` and the intent N,
   and tries N first: a manifest at N carrying the commit_id *is* the commit (the old owner got
   that far), so the step is never committed twice.  Only after seeing N taken by a foreign
   manifest does an owner move the intent to another number, and only by compare-and-swap, so at
   any time the only number a manifest of this step can land on is the current intent.  Timing
   therefore decides only how soon a crashed owner is replaced, never correctness.  An owner
   that is alive when its commit fails on a storage error *releases* the claim (backdates it,
   keeping commit_id and intent), so the next push takes over at once instead of waiting.
5. gc may delete the version meanwhile (tombstone, then manifest).  An inherited N with a
   tombstone is never written again: a tombstone carrying the commit_id means the step was
   committed as N and deleted, which the claim then records and the caller is told (NotFound);
   a committed claim whose manifest is gone is reported the same way, not as success.

A rank that sees the full set but loses the claim waits (polling the claim) until the step is
committed, taking over if the owner goes stale; a rank that does not see the full set returns at
once: the step is pending until the last rank arrives.

A step that never committed (a crashed save) is discarded by `discard_step` (`ckptlake rm
ARTIFACT@step=N --pending`): it fails the claim first -- a state every ckptlake obeys -- then
deletes the records and the claim, so the step can be saved again from scratch.  Records carry
a save identity only if the ranks were given one (`save`): without it a record written after
the discard would join the next save's, so the discard waits until the newest record is
`stale_after` old (or is forced), and a rank that finds its claim or records gone under it
fails (Conflict) instead of committing or following another.  Records of different saves
never commit together (merge_records refuses them).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import time
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Callable, Sequence

from ..errors import (AccessDenied, Conflict, IntegrityError, Interrupted, NotFound,
                      PreconditionFailed, TransferError, UsageError)
from ..format import layout
from ..format.header import format_hint, is_format
from ..format.manifest import FileEntry, Manifest, decode_manifest
from ..format.refs import validate_save_id
from ..format.times import parse_time
from ..results import DiscardResult, _Result
from ..store.base import Store
from ..transfer.progress import NullProgress, Progress
from . import clock
from .createonce import create_once
from .identity import iso, tool_version, user_at_host, utcnow
from .gc_guard import guard_commit
from .lakeheader import ensure_header, open_or_create_header
from .push import check_next_version, new_lake_warning, upload_tree
from .scan import SourceTree

SHARD_FORMAT = 1
CLAIM_FORMAT = 1
# Manifest metadata keys a sharded commit adds (visible in `ls --json`).
META_COMMIT_ID = "ckptlake.shard_commit"
META_WORLD = "ckptlake.shard_world"
META_SAVE = "ckptlake.shard_save"
# A claim untouched this long is presumed dead and may be taken over.  The owner needs it only
# for a few requests (read WORLD records, write one manifest), so minutes are generous.
DEFAULT_STALE_AFTER = 300.0
# Up to this many ranks, each rank checks its files against the records already in before
# writing its own (WORLD small reads per rank); above it only the committer checks.
PRECHECK_MAX_WORLD = 64
# `updated` of a claim its owner released after a storage error it saw (alive, so it knows it
# stopped): older than any `stale_after`, so the next push takes over at once, by the ordinary
# takeover (same commit_id and intent; docs/format.md, "Crashes and takeover").
RELEASED_AT = datetime(1970, 1, 1, tzinfo=timezone.utc)

log = logging.getLogger("ckptlake")


# ---- results ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ShardPushResult(_Result):
    lake: str
    artifact: str
    step: int
    rank: int
    world: int
    shards_present: int  # records seen after writing ours (WORLD once the step is complete)
    version: int | None  # the committed version, None while the step is pending
    committed_here: bool  # this call wrote the manifest
    repeated: bool  # our record was already there with the same files (a repeated push)
    files: int
    bytes_scanned: int
    bytes_uploaded: int
    bytes_deduplicated: int
    chunks_uploaded: int
    chunks_deduplicated: int
    seconds: float
    warnings: list[str] = field(default_factory=list)
    save_id: str | None = None  # the save this rank's record belongs to (--save-id)
    # alias -> the version it named before this call moved it onto the step's version, as a
    # push reports it (a CI script moving `prod` by a sharded save should see it too)
    aliases_moved: dict[str, int] = field(default_factory=dict)

    @property
    def committed(self) -> bool:
        return self.version is not None


@dataclass(frozen=True)
class PendingStep(_Result):
    """A sharded step that has no committed version (yet)."""

    artifact: str
    step: int
    world: int
    ranks: list[int]  # ranks whose record is in
    missing: list[int]
    state: str  # incomplete | ready | claimed | committing | stale | failed | conflict
    owner: str | None = None  # claim owner, if claimed
    claim_age_seconds: float | None = None
    version: int | None = None  # intended version number, if committing
    error: str | None = None

    @property
    def present(self) -> int:
        return len(self.ranks)


# ---- records ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ShardRecord:
    artifact: str
    step: int
    rank: int
    world: int
    manifest: Manifest  # the rank's files (version 0, kind "dir")
    aliases: tuple[str, ...] = ()
    # The save this record belongs to, if the ranks were given one (push --shard --save-id):
    # records of different saves never commit together (docs/format.md, "Save identity").
    save: str | None = None

    def identity(self) -> tuple[Any, ...]:
        """What must match for a repeated push to count as the same shard."""
        return (self.artifact, self.step, self.rank, self.world, self.save,
                tuple(_content_key(f) for f in self.manifest.files), self.manifest.dirs)

    def encode(self) -> bytes:
        doc: dict[str, Any] = {
            "ckptlake_shard": SHARD_FORMAT, "artifact": self.artifact, "step": self.step,
            "rank": self.rank, "world": self.world, "aliases": list(self.aliases)}
        if self.save is not None:
            doc["save"] = self.save
        doc["manifest"] = self.manifest.to_json()
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def decode_record(data: bytes, *, key: str) -> ShardRecord:
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise IntegrityError(f"{key}: not valid JSON") from None
    except ValueError:  # Python's int-string limit, which JSONDecodeError does not cover
        raise IntegrityError(f"{key}: holds an integer too long to read") from None
    if not isinstance(raw, dict) or not is_format(raw.get("ckptlake_shard"), SHARD_FORMAT):
        raise IntegrityError(f"{key}: not a ckptlake shard record of format {SHARD_FORMAT}",
                             hint=format_hint(raw, "ckptlake_shard"))
    try:
        artifact, step, rank, world = raw["artifact"], raw["step"], raw["rank"], raw["world"]
        aliases = tuple(str(a) for a in raw.get("aliases") or ())
        save = raw.get("save")
        inner = json.dumps(raw["manifest"]).encode()
    except (KeyError, TypeError):
        raise IntegrityError(f"{key}: malformed shard record") from None
    # Read leniently (any bounded string; written strictly, validate_save_id): an id another
    # tool or a later ckptlake wrote must not make every push of the step fail.
    if save is not None and (not isinstance(save, str) or not 0 < len(save) <= 256):
        raise IntegrityError(f"{key}: malformed shard record (save id)")
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in (step, rank, world)) \
            or not 0 <= rank < world:
        raise IntegrityError(f"{key}: malformed shard record")
    parsed = layout.parse_shard_key(key)
    if parsed and parsed != (artifact, step, rank, world):
        raise IntegrityError(f"{key} claims to be rank {rank} of {world} of {artifact} step "
                             f"{step}")
    return ShardRecord(artifact=artifact, step=step, rank=rank, world=world,
                       manifest=decode_manifest(inner, key=key), aliases=aliases, save=save)


def _content_key(f: FileEntry) -> tuple[Any, ...]:
    """Identity of a file's bytes that does not depend on how it was packed.

    Small files live in packs whose digest depends on their neighbours, so two ranks writing
    the same small file get different pack references; their whole-file digest is the same.
    """
    if f.symlink is not None:
        return (f.path, "symlink", f.symlink)
    if f.digest is not None:
        return (f.path, f.size, f.executable, f.digest)
    return (f.path, f.size, f.executable, tuple((c.digest, c.size) for c in f.chunks))


# ---- claims -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Claim:
    artifact: str
    step: int
    world: int
    commit_id: str  # fixed when the claim is created; carried by the committed manifest
    state: str  # claimed | committing | committed | failed
    owner: str  # user@host:pid:<token> of the current owner (unique per attempt)
    updated: datetime
    version: int | None = None  # intent while committing; the version once committed
    error: str | None = None
    # Recorded with the commit: the aliases the records ask for, and whether they have been
    # set.  None (a claim of an older ckptlake): unknown, so a repeat never sets them.
    aliases: tuple[str, ...] | None = None
    aliases_set: bool | None = None

    def encode(self) -> bytes:
        doc: dict[str, Any] = {
            "ckptlake_shard_claim": CLAIM_FORMAT, "artifact": self.artifact, "step": self.step,
            "world": self.world, "commit_id": self.commit_id, "state": self.state,
            "owner": self.owner, "updated": iso(self.updated), "version": self.version,
            "error": self.error}
        if self.aliases is not None:
            doc["aliases"] = list(self.aliases)
        if self.aliases_set is not None:
            doc["aliases_set"] = self.aliases_set
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()

    def age(self, now: datetime | None = None) -> float:
        return ((now or utcnow()) - self.updated).total_seconds()

    @property
    def released(self) -> bool:
        return self.updated <= RELEASED_AT


_STATES = ("claimed", "committing", "committed", "failed")


def decode_claim(data: bytes, *, key: str) -> Claim:
    try:
        raw = json.loads(data)
        if not is_format(raw.get("ckptlake_shard_claim"), CLAIM_FORMAT) \
                or raw["state"] not in _STATES:
            raise ValueError
        updated = parse_time(raw["updated"])
        # Exact JSON types, as for the records: `"step": 2.9` read as 2 would be the claim of
        # another step, and `"version": true` (== 1 in Python) of v1.
        version, step, world = raw.get("version"), raw["step"], raw["world"]
        if version is not None and (type(version) is not int or version < 1):
            raise ValueError
        if type(step) is not int or type(world) is not int:
            raise ValueError
        aliases, aliases_set = raw.get("aliases"), raw.get("aliases_set")
        if aliases is not None and (not isinstance(aliases, list)
                                    or not all(isinstance(a, str) for a in aliases)):
            raise ValueError
        if aliases_set is not None and not isinstance(aliases_set, bool):
            raise ValueError
        return Claim(artifact=str(raw["artifact"]), step=step,
                     world=world, commit_id=str(raw["commit_id"]),
                     state=raw["state"], owner=str(raw["owner"]),
                     updated=updated,
                     version=version, error=raw.get("error"),
                     aliases=None if aliases is None else tuple(aliases),
                     aliases_set=aliases_set)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise IntegrityError(f"{key}: malformed shard claim") from None


class _LostClaim(Exception):
    """Someone else now owns the claim (we were presumed dead); re-read and follow them."""


def _cas(store: Store, key: str, claim: Claim, etag: str) -> str:
    """Replace the claim if unchanged; return the new ETag, or raise _LostClaim.

    A 412 may also be our own write whose response was lost and whose retry then failed: if
    the object now holds exactly our bytes, the write happened.
    """
    body = claim.encode()
    try:
        return store.put(key, body, if_match=etag)
    except PreconditionFailed:
        try:
            data, current = store.get_with_etag(key)
        except NotFound:
            raise _LostClaim() from None
        if data == body:
            return current
        raise _LostClaim() from None


# ---- merging ----------------------------------------------------------------------------------

def merge_records(records: Sequence[ShardRecord], *, artifact: str, step: int, world: int,
                  hash_algo: str, commit_id: str) -> Manifest:
    """The union of the ranks' files as one manifest (version 0, to be numbered at commit).

    Two ranks may write the same path only with the same bytes (written once); a path that is a
    file in one rank and a directory in another, or different bytes under one path, is a
    Conflict.  Metrics and metadata are merged; on a key present in several ranks the lowest
    rank wins.

    A record whose hash is not `hash_algo` is a Conflict too: the manifest names one hash for
    every chunk, so a rank that uploaded under another one (the lake header lost and rewritten
    with another hash while the step was pending) would commit a version nothing can restore.
    """
    records = sorted(records, key=lambda r: r.rank)
    saves = {rec.save for rec in records}
    if len(saves) > 1:
        raise Conflict(f"{artifact} step {step}: its shard records come from different saves "
                       f"({_describe_saves(records)})",
                       hint=f"`ckptlake rm {artifact}@step={step} --pending` discards them; then "
                            "save the step again")
    for rec in records:
        if rec.manifest.hash != hash_algo:
            raise Conflict(f"{artifact} step {step}: rank {rec.rank}'s shard record names "
                           f"hash {rec.manifest.hash!r}, the lake header {hash_algo!r} (the "
                           "header changed while the step was pending)",
                           hint=f"`ckptlake rm {artifact}@step={step} --pending --yes` "
                                "discards its shard records; then push every rank again")
    by_path: dict[str, tuple[int, FileEntry]] = {}
    dirs: set[str] = set()
    metrics: dict[str, float] = {}
    metadata: dict[str, str] = {}
    for rec in records:
        for f in rec.manifest.files:
            prev = by_path.get(f.path)
            if prev is None:
                by_path[f.path] = (rec.rank, f)
            elif _content_key(prev[1]) != _content_key(f):
                raise Conflict(f"{artifact} step {step}: ranks {prev[0]} and {rec.rank} both "
                               f"wrote {f.path!r} with different contents",
                               hint="each rank must write distinct file names")
        dirs.update(rec.manifest.dirs)
        for k, v in rec.manifest.metrics.items():
            metrics.setdefault(k, v)
        for k, v in rec.manifest.metadata.items():
            metadata.setdefault(k, v)
    paths = set(by_path)
    parents: dict[str, str] = {}  # every directory implied by a path -> one path below it
    for p in paths:
        parts = p.split("/")
        for i in range(1, len(parts)):
            parents.setdefault("/".join(parts[:i]), p)
    for d, below in parents.items():
        if d in paths:
            raise Conflict(f"{artifact} step {step}: {d!r} is a file in one rank and a directory "
                           f"(holding {below!r}) in another",
                           hint="each rank must write distinct file names")
    for d in dirs:
        if d in paths:
            raise Conflict(f"{artifact} step {step}: {d!r} is a file in one rank and a directory "
                           "in another", hint="each rank must write distinct file names")
    empty_dirs = tuple(sorted(d for d in dirs if d not in parents))
    metadata.update({META_COMMIT_ID: commit_id, META_WORLD: str(world)})
    if records and records[0].save is not None:
        metadata[META_SAVE] = records[0].save
    chosen = tuple(by_path[p][1] for p in sorted(paths))
    referenced = {c.digest for f in chosen for c in f.chunks}
    stored = {d: n for rec in records for d, n in rec.manifest.stored.items() if d in referenced}
    created_by = records[0].manifest.created_by if records else user_at_host()
    manifest = Manifest(
        artifact=artifact, version=0, kind="dir", hash=hash_algo,
        files=chosen, dirs=empty_dirs, step=step,
        created=utcnow(), created_by=created_by, tool=tool_version(), metrics=metrics,
        metadata=metadata, stored=stored)
    # The checks every reader makes (symlinks, duplicates...), before anything is committed.
    decode_manifest(replace(manifest, version=1).encode(), key=f"{artifact} step {step}")
    return manifest


def _save_name(save: str | None) -> str:
    return f"save {save!r}" if save is not None else "a save without a save id"


def _describe_saves(records: Sequence[ShardRecord]) -> str:
    """rank 0, 2: save 'job7.0'; rank 1: a save without a save id"""
    by_save: dict[str | None, list[int]] = {}
    for rec in sorted(records, key=lambda r: r.rank):
        by_save.setdefault(rec.save, []).append(rec.rank)
    return "; ".join(f"rank{'s' if len(ranks) > 1 else ''} "
                     f"{', '.join(map(str, ranks[:8]))}{' ...' if len(ranks) > 8 else ''}: "
                     f"{_save_name(save)}" for save, ranks in by_save.items())


# ---- the protocol -----------------------------------------------------------------------------

def _new_owner() -> str:
    return f"{user_at_host()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def _list_step(store: Store, artifact: str, step: int
               ) -> tuple[dict[tuple[int, int], str], bool]:
    """({(rank, world): key} of the step's records, whether a claim exists)."""
    records: dict[tuple[int, int], str] = {}
    claim = False
    for info in store.list(layout.shard_step_prefix(artifact, step)):
        parsed = layout.parse_shard_key(info.key)
        if not parsed or parsed[0] != artifact or parsed[1] != step:
            continue
        if info.size == 0:  # a PUT cut after its head: counts as absent (docs/format.md)
            continue
        if parsed[2] is None:
            claim = True
        else:
            records[(parsed[2], parsed[3])] = info.key  # type: ignore[index]
    return records, claim


def _other_worlds(records: dict[tuple[int, int], str], world: int) -> set[int]:
    return {w for _, w in records if w != world}


def _load_records(store: Store, artifact: str, step: int, world: int,
                  keys: dict[tuple[int, int], str]) -> list[ShardRecord]:
    from ..transfer.pool import bounded_map

    wanted = [keys[(r, world)] for r in range(world) if (r, world) in keys]
    return list(bounded_map(lambda k: decode_record(store.get(k), key=k), wanted, workers=16,
                            name="ckptlake-meta"))


def _read_claim(store: Store, key: str) -> tuple[Claim, str] | None:
    try:
        data, etag = store.get_with_etag(key)
    except NotFound:
        return None
    if not data:  # a PUT cut after its head: no claim; create_once replaces it
        return None
    return decode_claim(data, key=key), etag


def _manifest_commit_id(store: Store, artifact: str, number: int) -> str | None:
    """The commit_id the manifest at `number` carries; None if absent/foreign/unreadable."""
    from .catalog import load_manifest

    try:
        return load_manifest(store, artifact, number).metadata.get(META_COMMIT_ID)
    except (NotFound, IntegrityError):
        return None


def _deleted_step(artifact: str, step: int, version: int, tomb: Any) -> NotFound:
    """NotFound for a step committed as `version` that gc deleted since: pushing a rank of it
    again must not look like success (the checkpoint is no longer in the lake), and must not
    commit it again under the deleted number (docs/format.md, "Deleting (gc)")."""
    when = f"was {tomb.deleted_text()}" if tomb is not None else "no longer exists"
    reason = f"{tomb.reason}; " if tomb is not None and tomb.reason else ""
    return NotFound(f"{artifact} step {step} was committed as v{version}, which {when}",
                    hint=f"{reason}push the checkpoint as another step to store it again; "
                         f"list what is left with: ckptlake ls {artifact} --all")


def _check_still_there(store: Store, artifact: str, step: int, version: int) -> None:
    """Raise _deleted_step if the committed manifest of `step` is gone.  The manifest is
    looked at before the tombstone: gc writes the tombstone first and deletes the manifest
    after, so a manifest found missing always has its tombstone by then."""
    from . import tombstones

    try:
        if store.stat(layout.version_key(artifact, version)).size > 0:
            return
    except NotFound:
        pass
    raise _deleted_step(artifact, step, version, tombstones.load(store, artifact, version))


def _own_tombstone(store: Store, claim: Claim, number: int) -> Any:
    """The tombstone at `number` if it is this step's version that gc deleted (it carries the
    manifest's metadata, so the commit_id); None if there is none, or it is a foreign one.
    IntegrityError if it cannot be read: taken for a foreign one, it let the step be committed
    again under a new number after its version was deleted."""
    from . import tombstones

    tomb = tombstones.load_strict(store, claim.artifact, number)
    if tomb is not None and tomb.metadata.get(META_COMMIT_ID) == claim.commit_id:
        return tomb
    return None


def _next_number(store: Store, artifact: str, after: int | None) -> int:
    from .catalog import next_number

    return check_next_version(artifact, max(next_number(store, artifact), (after or 0) + 1))


def _commit(store: Store, claim: Claim, etag: str, records: list[ShardRecord],
            hash_algo: str, moved: dict[str, int] | None = None) -> int:
    """Write the manifest as the claim's owner; return the version.  Raises _LostClaim if the
    claim was taken over (then the new owner finishes), Conflict if the records collide.
    `moved` gets the aliases the commit moved (see _set_step_aliases)."""
    from . import tombstones

    key = layout.shard_claim_key(claim.artifact, claim.step)
    try:
        manifest = merge_records(records, artifact=claim.artifact, step=claim.step,
                                 world=claim.world, hash_algo=hash_algo,
                                 commit_id=claim.commit_id)
    except (Conflict, IntegrityError) as exc:
        failed = replace(claim, state="failed", error=str(exc), updated=utcnow())
        try:
            _cas(store, key, failed, etag)
        except _LostClaim:
            pass
        raise
    # A committing claim carries the intent: try that number first (a previous owner may have
    # written it already).  Any other number only after seeing the intent taken by a foreign
    # version, and only by compare-and-swap.
    n = claim.version if claim.state == "committing" else None
    # An intent we inherit may be a number gc has deleted since: the version a previous owner
    # committed there (its tombstone carries our commit_id), or a foreign one.  Creating the
    # manifest there would bring a deleted number back, so it is not tried while a tombstone
    # says so.  A number we choose below is above every version and tombstone listed, but a
    # version committed there after the listing may have been deleted (rm of the latest):
    # the same check covers it.
    inherited = n is not None
    after: int | None = None
    for attempt in range(200):
        if n is None:
            try:
                n = _next_number(store, claim.artifact, after)
            except UsageError as exc:  # the artifact is full: no retry can commit the step
                with contextlib.suppress(_LostClaim):
                    _cas(store, key, replace(claim, state="failed", error=str(exc),
                                             updated=utcnow()), etag)
                raise
            claim = replace(claim, state="committing", version=n, updated=utcnow())
            etag = _cas(store, key, claim, etag)
        try:
            # (also a number we chose: a version committed there and deleted since our
            # listing leaves only its tombstone, and the number is not free)
            if tombstones.present(store, claim.artifact, n):
                raise PreconditionFailed("a tombstone holds the intended number")
            # create_once: an empty object at N (a PUT cut after its head) is taken over at N
            create_once(store, layout.version_key(claim.artifact, n),
                        replace(manifest, version=n).encode())
            break
        except PreconditionFailed:
            # The manifest first, then the tombstone: gc writes the tombstone before it deletes
            # the manifest, so a manifest gone by now has its tombstone, and one still there
            # (a gc in flight, or one that spared it for an alias) is the commit.
            if _manifest_commit_id(store, claim.artifact, n) == claim.commit_id:
                break  # a previous owner (or our own retried write) got there: that is the commit
            if (tomb := _own_tombstone(store, claim, n)) is not None:
                # Committed as N, then deleted by gc: record the commit, never redo it.
                with contextlib.suppress(_LostClaim):
                    _cas(store, key, replace(claim, state="committed", version=n,
                                             updated=utcnow(), error=None), etag)
                raise _deleted_step(claim.artifact, claim.step, n, tomb) from None
            time.sleep(random.random() * min(1.0, 0.01 * 2 ** min(attempt, 7)))
            after, n, inherited = n, None, False
    else:
        raise Conflict(f"could not claim a version number for {claim.artifact} after 200 "
                       "attempts", hint="too many concurrent pushers; push any rank again")
    aliases = tuple(sorted({a for r in records for a in r.aliases}))
    done = replace(claim, state="committed", version=n, updated=utcnow(), error=None,
                   aliases=aliases, aliases_set=not aliases)
    try:
        etag = _cas(store, key, done, etag)
    except _LostClaim:
        return n  # whoever took over finds the manifest at N carrying our commit_id (and aliases)
    _set_step_aliases(store, key, done, etag, moved=moved)
    return n


def _set_step_aliases(store: Store, key: str, claim: Claim, etag: str, *,
                      repeat: bool = False, moved: dict[str, int] | None = None) -> None:
    """Point the aliases recorded with the commit at its version, then record in the claim that
    they are set.  A process that dies in between leaves them unset, and whoever pushes a rank
    of the step again sets them; once recorded as set they are never set again, so an alias
    moved on purpose since stays where it was moved.

    `repeat`: run by a re-push of the step or a rank that followed the committer, maybe long
    after the commit (the committer may have died after setting some aliases, and the run moved
    them on since).  Such a caller leaves an alias that names a newer version, or that was
    written after the commit (its record's `updated`), where it is: moving `best` back to an old
    step would undo the run's own later choice.  Its failure to set one is logged, not raised:
    the step is committed, and the push that found it so has done its part.

    `moved` (if given) gets each alias this call moved off another version, with that version:
    the caller's result reports it, as a push's does."""
    from .catalog import set_alias

    if claim.state != "committed" or claim.version is None or claim.aliases_set is not False:
        return
    done = True
    for name in claim.aliases or ():
        try:
            if repeat and _alias_moved_since(store, claim, name):
                continue
            # (recorded: ranks of an older client may have written `V2`, refused as new now)
            previous = set_alias(store, claim.artifact, name, claim.version,
                                 recorded=True).previous
        except Exception as exc:
            if not repeat:
                raise
            done = False  # the next repeat tries again
            log.warning("ckptlake: %s step %d (v%d): could not set alias %s: %s", claim.artifact,
                        claim.step, claim.version, name, (str(exc).splitlines() or [""])[0])
            continue
        if moved is not None and previous is not None and previous != claim.version:
            moved[name] = previous
    if done:
        with contextlib.suppress(_LostClaim):  # someone else recorded it (or is about to)
            _cas(store, key, replace(claim, aliases_set=True, updated=utcnow()), etag)


def _alias_moved_since(store: Store, claim: Claim, name: str) -> bool:
    """Whether alias `name` already names the claim's version, a newer one, or was written
    after the commit (see _set_step_aliases); False for a missing or unreadable record."""
    try:
        data = store.get(layout.alias_key(claim.artifact, name))
    except NotFound:
        return False
    try:
        raw = json.loads(data)
        version, updated = raw["version"], raw.get("updated")
    except (ValueError, KeyError, TypeError, RecursionError):
        return False  # an empty or malformed record: set_alias repairs it
    if type(version) is int and version >= claim.version:
        return True
    try:
        when = parse_time(updated)
    except ValueError:
        return False
    return when > claim.updated


def _release(store: Store, key: str, owner: str, exc: BaseException) -> None:
    """Best effort, after a storage error, an unusable record or an interruption (Ctrl-C) in a
    live owner: mark our claim released so the next push takes it over at once, instead of
    everyone waiting `stale_after` for an owner that is known to have stopped.  Safe whatever
    the error hid: the release keeps the commit_id and the intent N, so a takeover tries N
    first and finds a manifest that did land (an OutcomeUnknown write, or one the Ctrl-C cut
    short of its answer), exactly as after a crash; and it is a compare-and-swap on the claim
    as read, only while we still own it.  (A second Ctrl-C meanwhile ends it: the claim then
    goes stale as after a crash.)"""
    if isinstance(exc, (KeyboardInterrupt, Interrupted)):
        why = "interrupted"
    else:
        why = ("at an unusable record: " if isinstance(exc, IntegrityError)
               else "after a storage error: ") + (
            (str(exc).splitlines() or [""])[0][:300] or type(exc).__name__)
    try:
        got = _read_claim(store, key)
        if got is None or got[0].owner != owner or got[0].state not in ("claimed", "committing"):
            return
        claim, etag = got
        _cas(store, key, replace(claim, updated=RELEASED_AT,
                                 error=f"released by its owner {why}"),
             etag)
    except Exception:  # the store is likely still failing: the claim goes stale as after a crash
        log.debug("ckptlake: could not release the claim %s", key, exc_info=True)
        return
    log.info("ckptlake: released the claim %s (%s): the next push of the step takes over "
             "at once", key, why)


# While following a live owner, how often the caller hears that we are still waiting.
WAIT_NOTE_EVERY = 60.0


def finish_step(store: Store, artifact: str, step: int, world: int, *, stale_after: float,
                wait_seconds: float, owner: str | None = None,
                poll: float = 0.2,
                on_note: Callable[[str], None] | None = None,
                saw_all: bool = True, rank: int | None = None,
                moved: dict[str, int] | None = None) -> tuple[int | None, bool]:
    """Commit a step whose WORLD records are all in (or follow whoever is committing it).

    Returns (version or None if still being committed by a live owner after `wait_seconds`,
    whether this call wrote the manifest).  Raises Conflict if the step failed, NotFound if it
    was committed and gc has deleted the version since.

    `on_note`: told when this call starts waiting for another owner (and every
    WAIT_NOTE_EVERY seconds after), and when it takes over: a dead owner is replaced only
    after `stale_after` (minutes by default), which must not look like a hang.  None: the
    `ckptlake` logger gets them as warnings (the DCP writer has no progress to tell).

    A storage error or a Ctrl-C while this call owns the claim releases it (best effort)
    before it is raised, so a re-run does not wait `stale_after` for an owner known to have
    stopped.

    `saw_all`: whether the caller saw all WORLD records (False: it came only because it saw a
    claim); `rank`: the caller's rank, whose record must still be there.  They tell a step
    discarded under this call (`rm --pending`: records and claim deleted), which is a Conflict,
    from a step that is merely pending.

    `moved`: filled with the aliases this call moved onto the version (alias -> the version it
    named before), for the caller's result.
    """
    owner = owner or _new_owner()
    key = layout.shard_claim_key(artifact, step)
    try:
        return _finish_step(store, artifact, step, world, key=key, stale_after=stale_after,
                            wait_seconds=wait_seconds, owner=owner, poll=poll,
                            note=on_note or _log_note, saw_all=saw_all, rank=rank,
                            moved=moved)
    except (TransferError, AccessDenied, IntegrityError, Interrupted, KeyboardInterrupt) as exc:
        # (IntegrityError: an unusable tombstone at the intended number, which the user is
        # told to put right and push again: the retry must not wait out `stale_after`)
        _release(store, key, owner, exc)
        raise


def _log_note(message: str) -> None:
    log.warning("ckptlake: %s", message)


def _discarded_meanwhile(artifact: str, step: int, doing: str = "committing") -> Conflict:
    """The step was discarded (`rm --pending`), and maybe saved again, while this rank was at
    it: its claim vanished or came back with another commit_id, or its records vanished.
    Never success, never a claim of ours: the records this rank would commit are gone."""
    return Conflict(f"{artifact} step {step} was discarded while this rank was {doing} it; "
                    "save it again",
                    hint=f"`ckptlake ls {artifact} --pending` shows what is left of the step; "
                         "a save that completed meanwhile is listed by `ckptlake ls "
                         f"{artifact}`")


def _finish_step(store: Store, artifact: str, step: int, world: int, *, key: str,
                 stale_after: float, wait_seconds: float, owner: str, poll: float,
                 note: Callable[[str], None], saw_all: bool = True,
                 rank: int | None = None,
                 moved: dict[str, int] | None = None) -> tuple[int | None, bool]:
    started = time.monotonic()
    deadline = started + wait_seconds
    next_note = started
    header = None
    # The commit_id of the claim this call created, took over or followed.  A claim's
    # commit_id never changes while the step lives (takeovers and releases keep it), so a
    # claim gone or bearing another one means the step was discarded under us (maybe saved
    # again since): following that claim would return another save's version as ours.
    ours: str | None = None
    while True:
        got = _read_claim(store, key)
        if got is None:
            if ours is not None:
                raise _discarded_meanwhile(artifact, step)
            # Only a rank that sees all WORLD records creates a claim, so they are listed
            # again: those this call was called for may have been discarded since.  A rank
            # that came for a claim it saw finds it deleted: only a discard deletes a claim.
            keys, _ = _list_step(store, artifact, step)
            if not saw_all:
                if rank is not None and (rank, world) not in keys:
                    raise _discarded_meanwhile(artifact, step, "pushing")
                return None, False  # our record outlived the discard: pending, as any rank
            if sum(1 for _, w in keys if w == world) < world:
                raise _discarded_meanwhile(artifact, step)
            claim = Claim(artifact=artifact, step=step, world=world,
                          commit_id=uuid.uuid4().hex, state="claimed", owner=owner,
                          updated=utcnow())
            try:
                etag = create_once(store, key, claim.encode())
            except PreconditionFailed:
                got = _read_claim(store, key)
                if got is None or got[0].owner != owner:
                    continue  # another rank won: follow it
                claim, etag = got  # our own create, retried after a lost response
        else:
            claim, etag = got
            if ours is not None and claim.commit_id != ours:
                raise _discarded_meanwhile(artifact, step)
            if claim.world != world:
                keys, _ = _list_step(store, artifact, step)
                held, removable = _earlier_save(store, artifact, step, claim.world, keys)
                raise Conflict(f"{artifact} step {step} is held by {held}: it was written by a "
                               f"world of {claim.world} shard records, this save by {world}",
                               hint=_rerun_hint(artifact, step, removable))
            if claim.state == "committed":
                if claim.version is not None:
                    _check_still_there(store, artifact, step, claim.version)
                    # a repeat after the committing process died before setting the aliases
                    _set_step_aliases(store, key, claim, etag, repeat=True, moved=moved)
                return claim.version, False
            if claim.state == "failed":
                raise Conflict(f"{artifact} step {step} cannot be committed: {claim.error}",
                               hint=f"`ckptlake rm {artifact}@step={step} --pending --yes` "
                                    "discards its shard records; then push every rank again")
            ours = claim.commit_id
            if claim.owner != owner:
                age = claim.age()
                if age < stale_after and not claim.released:
                    now = time.monotonic()
                    if now >= deadline:
                        return None, False
                    if now >= next_note:
                        next_note = now + WAIT_NOTE_EVERY
                        note(_wait_note(artifact, step, claim, age, stale_after,
                                        deadline - now))
                    time.sleep(poll * (0.5 + random.random()))
                    poll = min(poll * 1.5, 2.0)
                    continue
                # Presumed dead, or released: take over, keeping its commit_id and intent.
                mine = replace(claim, owner=owner, updated=utcnow(), error=None)
                try:
                    etag = _cas(store, key, mine, etag)
                except _LostClaim:
                    continue
                note(f"{artifact} step {step}: taking over its commit from {claim.owner} "
                     + (f"({claim.error})" if claim.released else f"(silent for {age:.0f} s)"))
                claim = mine
        ours = claim.commit_id
        keys, _ = _list_step(store, artifact, step)
        try:
            records: list[ShardRecord] | None = _load_records(store, artifact, step, world,
                                                              keys)
        except NotFound:  # listed, then deleted: a discard took the step from us
            records = None
        if records is None or len(records) != world:
            again = _read_claim(store, key)
            if again is None or again[0].commit_id != ours or again[0].state == "failed":
                continue  # discarded (or being discarded) meanwhile: the loop says so
            raise IntegrityError(f"{artifact} step {step}: claimed with "
                                 f"{len(records or ())} of {world} shard records present",
                                 hint=f"`ckptlake rm {artifact}@step={step} --pending` "
                                      "discards the step once its claim is stale")
        header = header or ensure_header(store)
        try:
            return _commit(store, claim, etag, records, header.hash, moved), True
        except _LostClaim:
            continue


def _wait_note(artifact: str, step: int, claim: Claim, age: float, stale_after: float,
               left: float) -> str:
    takeover = stale_after - age
    then = (f"taking over in {takeover:.0f} s if it is still not done" if takeover <= left
            else f"giving up in {left:.0f} s (the step stays pending; push any rank again)")
    what = "committing" if claim.state == "committing" else "claimed"
    return (f"{artifact} step {step}: waiting for the owner of its commit ({claim.owner}, "
            f"{what} {age:.0f} s ago); {then}")


def push_shard(store: Store, tree: SourceTree, artifact: str, *, step: int, rank: int,
               world: int, chunk_size: int | None, concurrency: int,
               metrics: dict[str, float], metadata: dict[str, str], aliases: Sequence[str],
               progress: Progress, lake_url: str, stale_after: float = DEFAULT_STALE_AFTER,
               wait_seconds: float | None = None, throttle: Any = None,
               observers: Sequence[Any] = (), parts: Any = None,
               compression: str | None = None, save: str | None = None) -> ShardPushResult:
    """Upload this rank's files and record them; commit the step if this rank completes it.

    `save`: the save's identity, the same for every rank of one save and another for each
    attempt; records of different saves never commit together (a re-run meeting a crashed
    save's records is refused instead of committing a mix of both).

    `compression`: as for a push (None: the lake header's); the rank's record carries the
    stored-size hints of its chunks, and the committed manifest merges them.

    `wait_seconds`: how long a rank that sees the full set but not the claim waits for the
    owner to commit (default: stale_after plus a minute, so a dead owner is replaced).
    """
    started, started_wall = clock.now(), time.time()  # both: see core/clock.py
    header, created = begin_shard(store, artifact, step=step, rank=rank, world=world,
                                  chunk_size=chunk_size, compression=compression, save=save)
    from .push import resolve_compression

    files, up = upload_tree(store, tree, algo=header.hash,
                            chunk_size=chunk_size or header.chunk_size, concurrency=concurrency,
                            progress=progress, observers=observers,
                            parts=parts, **({"throttle": throttle} if throttle else {}),
                            compression=resolve_compression(compression, header.compression))
    return record_shard(store, artifact, header=header, created=created, files=files,
                        dirs=tuple(tree.empty_dirs), up=up, step=step, rank=rank, world=world,
                        metrics=metrics, metadata=metadata, aliases=aliases,
                        lake_url=lake_url, stale_after=stale_after,
                        wait_seconds=wait_seconds, started=started,
                        started_wall=started_wall, bytes_scanned=tree.total_bytes,
                        progress=progress, save=save)


def begin_shard(store: Store, artifact: str, *, step: int, rank: int, world: int,
                chunk_size: int | None, compression: str | None = None,
                save: str | None = None) -> tuple[Any, "bool | str"]:
    """The checks before a rank uploads anything: (lake header, what open_or_create_header
    wrote).  An explicit `compression` goes into the header of a lake this creates, as a
    push's does (docs/format.md, the lake header)."""
    if world < 1 or not 0 <= rank < world:
        raise UsageError(f"shard rank must be in 0..WORLD-1, got {rank}/{world}")
    # Before anything is written: a step the keys cannot hold would leave a record that no
    # listing parses (never committed, invisible to `pending`, unprotected from gc).
    layout.check_step(step)
    header, created = open_or_create_header(
        store, **({"chunk_size": chunk_size} if chunk_size else {}), compression=compression)
    # Refuse cheaply before uploading when the step is already known to be incompatible.
    keys, has_claim = _list_step(store, artifact, step)
    if others := _other_worlds(keys, world):
        other = max(others, key=lambda w: (sum(1 for _, x in keys if x == w), w))
        held, removable = _earlier_save(store, artifact, step, other, keys)
        raise Conflict(f"{artifact} step {step} is held by {held}: it was written by a world "
                       f"of {other} shard records, this save by {world}",
                       hint=_rerun_hint(artifact, step, removable))
    if save is not None:
        validate_save_id(save)
    committed = False
    if has_claim:
        # A rank of a step committed and since deleted by gc (a job restarted from an old
        # step): say so before its bytes are uploaded as chunks nothing would reference.
        got = _read_claim(store, layout.shard_claim_key(artifact, step))
        if got is not None and got[0].state == "committed" and got[0].version is not None \
                and got[0].world == world:
            _check_still_there(store, artifact, step, got[0].version)
            committed = True
    if keys and not committed:
        # Another save's records (one read: every record of a step is meant to be one save's;
        # mixed ones are refused later, by the record's own check and the committer's).  A
        # committed step cannot mix saves any more: there a rank with the same files is a
        # repeat whatever its save (a requeued job pushing the step again), as without ids.
        first = keys[min(keys)]
        try:
            other = decode_record(store.get(first), key=first)
        except NotFound:  # listed, then deleted: only a discard deletes a record
            raise _discarded_meanwhile(artifact, step, "pushing") from None
        if other.save != save:
            _refuse_other_save(store, artifact, step, world, keys, [other], save)
    return header, created


def record_shard(store: Store, artifact: str, *, header: Any, created: "bool | str",
                 files: tuple[Any, ...], dirs: tuple[str, ...], up: Any, step: int,
                 rank: int, world: int, metrics: dict[str, float],
                 metadata: dict[str, str], aliases: Sequence[str], lake_url: str,
                 stale_after: float, wait_seconds: float | None, started: float,
                 started_wall: float, bytes_scanned: int,
                 progress: Progress | None = None, save: str | None = None
                 ) -> ShardPushResult:
    """Write this rank's record of uploaded `files` and commit the step if it completes it
    (the second half of push_shard, shared with ranks that stream their files:
    ckptlake/torch/dcp.py).  `up`: the uploader (counters, stored-size hints, reupload).
    `progress` gets a note while this rank waits for another rank's commit (without one, or
    with a NullProgress, the `ckptlake` logger gets it as a warning)."""
    record = ShardRecord(
        artifact=artifact, step=step, rank=rank, world=world, aliases=tuple(aliases), save=save,
        manifest=Manifest(artifact=artifact, version=0, kind="dir", hash=header.hash,
                          files=files, dirs=dirs, step=step,
                          created=utcnow(), created_by=user_at_host(), tool=tool_version(),
                          metrics=dict(metrics), metadata=dict(metadata),
                          stored=dict(up.stored)))
    key = layout.shard_record_key(artifact, step, rank, world)
    keys, has_claim = _list_step(store, artifact, step)
    if world <= PRECHECK_MAX_WORLD:
        # A collision with records already in would make the step uncommittable: refuse
        # before writing ours.  Best effort (records may race with ours, and the check costs
        # WORLD reads per rank, hence the bound); the committer checks again, authoritatively.
        try:
            present = [r for r in _load_records(store, artifact, step, world, keys)
                       if r.rank != rank]
        except NotFound:  # listed, then deleted: only a discard deletes a record
            raise _discarded_meanwhile(artifact, step, "pushing") from None
        foreign = [r for r in present if r.save != save]
        if foreign and not (has_claim and _committed(store, artifact, step, world)):
            _refuse_other_save(store, artifact, step, world, keys, foreign, save)
        merge_records([*present, replace(record, save=foreign[0].save) if foreign else record],
                      artifact=artifact, step=step, world=world, hash_algo=header.hash,
                      commit_id="check")
    repeated = False
    try:
        # The record is what makes gc treat this rank's chunks as live (like a manifest), so
        # it is written under the same guard as a push's commit.
        up.before_commit()
        try:
            guard_commit(store, referenced=record.manifest.chunk_digests(),
                         commit=lambda: create_once(store, key, record.encode()),
                         reupload=up.reupload, started=started, started_wall=started_wall)
        finally:
            up.release()
    except PreconditionFailed:
        try:
            existing = decode_record(store.get(key), key=key)
        except NotFound:  # there at our write, then deleted: a discard
            raise _discarded_meanwhile(artifact, step, "pushing") from None
        if existing.save != record.save:
            keys, has_claim = _list_step(store, artifact, step)
            if not (has_claim and _committed(store, artifact, step, world)):
                _refuse_other_save(store, artifact, step, world, keys, [existing], save)
            record = replace(record, save=existing.save)  # committed: the files decide
        if existing.identity() != record.identity():
            keys, _ = _list_step(store, artifact, step)
            held, removable = _earlier_save(store, artifact, step, world, keys)
            raise Conflict(f"{artifact} step {step}: shard record {rank} of {world} was "
                           f"already pushed with other files, by {held}",
                           hint="the state, or how it is split into files (e.g. thread_count), "
                                "changed since; " + _rerun_hint(artifact, step, removable)
                           ) from None
        repeated = True
    keys, has_claim = _list_step(store, artifact, step)
    if others := _other_worlds(keys, world):
        raise Conflict(f"{artifact} step {step} has shard records of a world of "
                       f"{', '.join(map(str, sorted(others)))} as well as {world}: saves of "
                       "different world sizes wrote the step",
                       hint=_rerun_hint(artifact, step,
                                        _earlier_save(store, artifact, step, world, keys)[1]))
    present_ranks = {r for r, w in keys if w == world}
    version, here = None, False
    moved: dict[str, int] = {}
    if len(present_ranks) == world or has_claim:
        # The commit sets the records' aliases (or a repeat does, if the committing process
        # died first): see _set_step_aliases.
        version, here = finish_step(
            store, artifact, step, world, stale_after=stale_after,
            wait_seconds=stale_after + 60 if wait_seconds is None else wait_seconds,
            on_note=None if progress is None or isinstance(progress, NullProgress)
            else progress.note, saw_all=len(present_ranks) == world, rank=rank, moved=moved)
    return ShardPushResult(
        lake=lake_url, artifact=artifact, step=step, rank=rank, world=world,
        shards_present=len(present_ranks), version=version, committed_here=here,
        repeated=repeated, files=len(files),
        bytes_scanned=bytes_scanned, bytes_uploaded=up.uploaded.value,
        bytes_deduplicated=up.deduplicated.value, chunks_uploaded=up.uploaded.count,
        chunks_deduplicated=up.deduplicated.count,
        seconds=round(clock.now() - started, 3),
        warnings=[new_lake_warning(lake_url, created, header)] if created else [],
        save_id=save, aliases_moved=moved)


def _earlier_save(store: Store, artifact: str, step: int, world: int,
                  keys: dict[tuple[int, int], str]) -> tuple[str, bool]:
    """How an earlier save of a world of `world` records holds the step, for a refusal, and
    whether `rm ARTIFACT@step=N --pending` may discard it (it never committed; a commit under
    way is discarded only once stale, which that command checks)."""
    n = sum(1 for _, w in keys if w == world)
    try:
        got = _read_claim(store, layout.shard_claim_key(artifact, step))
    except IntegrityError:
        got = None
    claim = got[0] if got else None
    if claim is not None and claim.state == "committed" and claim.version is not None:
        return f"the save committed as v{claim.version}", False
    if claim is not None and claim.state == "failed":
        return f"an earlier save that failed ({claim.error})", True
    if claim is not None:
        # Not "did not finish": with every record in, that save is most likely committing
        # right now (`rm --pending` refuses a step that young; a dead committer's goes stale).
        return (f"an earlier save whose commit was under way when this rank looked ({n} of "
                f"{world} shard records in)", True)
    return f"an earlier save that did not finish ({n} of {world} shard records in)", True


def _refuse_other_save(store: Store, artifact: str, step: int, world: int,
                       keys: dict[tuple[int, int], str], foreign: Sequence[ShardRecord],
                       save: str | None) -> None:
    """Conflict: the step holds records of another save than this rank's (`foreign`), which
    may be a crashed earlier save (discard it) or the live one after a discard (this rank is
    the straggler: stop it); the message says which it looks like, never guesses."""
    held, removable = _earlier_save(store, artifact, step, world, keys)
    held = held.replace("an earlier save", "another save", 1)
    hint = "a step is written by one save"
    if removable:
        hint += (f": if that save crashed (every rank of it stopped), `ckptlake rm "
                 f"{artifact}@step={step} --pending --yes` discards it, then save again; if it "
                 "is the current save, this rank is a leftover of an older one: stop it")
    raise Conflict(f"{artifact} step {step} is held by {held}, {_describe_saves(foreign)}; "
                   f"this rank is of {_save_name(save)}", hint=hint)


def _committed(store: Store, artifact: str, step: int, world: int) -> bool:
    """Whether the step's claim says committed (for this world): its records can no longer
    be mixed with another save's, so save ids stop mattering there."""
    try:
        got = _read_claim(store, layout.shard_claim_key(artifact, step))
    except IntegrityError:
        return False
    return got is not None and got[0].state == "committed" and got[0].world == world


def _rerun_hint(artifact: str, step: int, removable: bool) -> str:
    hint = "a step is written once: save this checkpoint as another step"
    if removable:
        hint += (f", or discard that save (`ckptlake rm {artifact}@step={step} --pending "
                 f"--yes` deletes its records under {layout.shard_step_prefix(artifact, step)}) "
                 "and save it again")
    return (hint + f"; `ckptlake ls {artifact} --pending` lists unfinished steps (a DCP save "
            "of R ranks writes R + 1 shard records: one per rank, one for .metadata)")


# ---- pending ----------------------------------------------------------------------------------

def describe_steps(steps: Sequence[int], limit: int = 5) -> str:
    """'step=200, step=300 ...': pending steps in a message, the first `limit` of them."""
    return ", ".join(f"step={s}" for s in steps[:limit]) + (" ..." if len(steps) > limit else "")


def pending(store: Store, artifact: str | None = None, *,
            stale_after: float = DEFAULT_STALE_AFTER) -> list[PendingStep]:
    """Sharded steps without a committed version, oldest step first (read-only).

    States: `incomplete` (ranks missing), `ready` (all in, nobody claimed: push any rank again),
    `claimed`/`committing` (an owner is at work), `stale` (its owner looks dead: push any rank
    again to take over), `failed` (records collide; see `error`), `conflict` (records of several
    world sizes).
    """
    prefix = layout.shards_prefix(artifact) if artifact else layout.ARTIFACTS_PREFIX
    groups: dict[tuple[str, int], dict[str, Any]] = {}
    for info in store.list(prefix):
        parsed = layout.parse_shard_key(info.key)
        if not parsed or (artifact is not None and parsed[0] != artifact) or info.size == 0:
            continue
        g = groups.setdefault((parsed[0], parsed[1]), {"records": set(), "claim": False})
        if parsed[2] is None:
            g["claim"] = True
        else:
            g["records"].add((parsed[2], parsed[3]))
    out: list[PendingStep] = []
    now = utcnow()
    for (art, step), g in sorted(groups.items()):
        claim = None
        if g["claim"]:
            got = _read_claim(store, layout.shard_claim_key(art, step))
            claim = got[0] if got else None
        state = classify_step(art, step, g["records"], claim, now=now, stale_after=stale_after)
        if state is not None:
            out.append(state)
    return out


def classify_step(artifact: str, step: int, records: set[tuple[int, int]],
                  claim: Claim | None, *, now: datetime,
                  stale_after: float = DEFAULT_STALE_AFTER) -> PendingStep | None:
    """The state of one sharded step from its records' (rank, world) and its claim (None:
    no claim); None once committed.  Shared by `pending` and `ckptlake verify`, which read
    the step's objects themselves."""
    worlds = {w for _, w in records}
    if claim is not None and claim.state == "committed":
        return None
    world = claim.world if claim else (max(worlds) if worlds else 0)
    ranks = sorted(r for r, w in records if w == world)
    missing = sorted(set(range(world)) - set(ranks))
    if len(worlds) > 1:
        state = "conflict"
    elif claim is None:
        state = "incomplete" if missing else "ready"
    elif claim.state == "failed":
        state = "failed"
    elif claim.age(now) >= stale_after or claim.released:
        state = "stale"
    else:
        state = claim.state
    return PendingStep(
        artifact=artifact, step=step, world=world, ranks=ranks, missing=missing, state=state,
        owner=claim.owner if claim else None,
        # a released claim's `updated` is a marker, not when it was last touched
        claim_age_seconds=round(claim.age(now), 1) if claim and not claim.released else None,
        version=claim.version if claim else None,
        error=claim.error if claim else (
            f"shards of world sizes {sorted(worlds)}" if len(worlds) > 1 else None))


# ---- discarding a pending step ----------------------------------------------------------------

# How many passes delete records that appear while a discard runs (ranks still pushing); a
# record written after the last pass belongs to a save that found the step failed and was told.
_DISCARD_PASSES = 3
# How the `error` of a claim a discard took begins ("discarded by USER@HOST: REASON").
DISCARDED_BY = "discarded by "


class LandedCommit(Conflict):
    """The step to discard is committed after all: a manifest at its claim's intent carries
    its commit_id (the owner got that far, then died before its claim said so).  A class of
    its own so that `rm --pending` can let the real run record the commit without asking:
    it deletes nothing."""


def discard_step(store: Store, artifact: str, step: int, *, lake_url: str,
                 reason: str | None = None, dry_run: bool = False,
                 stale_after: float = DEFAULT_STALE_AFTER, force: bool = False
                 ) -> DiscardResult:
    """Delete a step that never committed (its records and claim), so it can be saved again.

    Why a protocol and not a prefix delete: ranks of the save (or of its re-run) may still be
    pushing, and an owner presumed dead may still be committing.  The step is first *taken*
    with a state every ckptlake already obeys -- the claim `failed` ("discarded by ...") stops
    every committer and takeover with a Conflict -- then its records go, the claim last, so a
    crash midway leaves a failed step that running this again finishes (docs/format.md,
    "Discarding a pending step").  A live claim and a committed step are refused (exit 7); a
    commit found to have landed at the claim's intent is recorded as committed, not
    discarded (LandedCommit, exit 6).

    Records younger than `stale_after` are refused too (exit 7) unless `force`: a rank of the
    save may still be uploading, and a record it writes after the discard is not told apart
    from the next save's, which would commit it with its own (a version mixing two saves).
    """
    key = layout.shard_claim_key(artifact, step)
    for _ in range(100):
        keys, newest = _list_step_records(store, artifact, step)
        got = _read_claim_to_discard(store, key, artifact, step)
        if not keys and got is None:
            raise NotFound(f"{artifact} has no pending step {step}: no shard records and no "
                           "claim under it",
                           hint=f"`ckptlake ls {artifact} --pending` lists its pending steps")
        claim, etag = got if got is not None else (None, "")
        now = utcnow()
        if claim is not None:
            _refuse_discard(store, artifact, step, claim, now, stale_after)
        age = None if newest is None else max(0.0, (now - newest).total_seconds())
        if age is not None and age < stale_after and not force:
            _refuse_young(artifact, step, age, stale_after)
        state = classify_step(artifact, step, set(keys), claim, now=now,
                              stale_after=stale_after)
        assert state is not None  # only a committed claim classifies as None: refused above
        who = user_at_host()
        # A discard run again (one cut midway) keeps the first one's reason in the claim.
        first = claim.error if claim is not None and claim.state == "failed" \
            and (claim.error or "").startswith(DISCARDED_BY) else None
        plan = DiscardResult(
            lake=lake_url, artifact=artifact, step=step, world=state.world, state=state.state,
            ranks=state.ranks, records=len(keys), keys=sorted(keys.values()),
            reason=reason or first or f"discarded by hand by {who}", dry_run=dry_run,
            discarded=False, error=state.error if state.state == "failed" else None,
            version=state.version,
            newest_record_age_seconds=None if age is None else round(age, 1))
        if dry_run:
            if claim is not None and claim.version is not None \
                    and _manifest_commit_id(store, artifact, claim.version) == claim.commit_id:
                raise _landed(claim, would=True)  # what the real run finds (read-only here)
            return plan
        # Take the step: from here no rank commits it, and no takeover moves its intent.
        error = first or (f"{DISCARDED_BY}{who}" + (f": {reason}" if reason else ""))
        try:
            if claim is None:
                taken = Claim(artifact=artifact, step=step, world=state.world,
                              commit_id=uuid.uuid4().hex, state="failed", owner=_new_owner(),
                              updated=now, error=error)
                etag = create_once(store, key, taken.encode())
            else:
                # commit_id and intent stay: a re-run of an interrupted discard checks the
                # intent again, and so would a takeover by an older ckptlake (it never does:
                # a failed claim stops it).
                taken = replace(claim, state="failed", owner=_new_owner(), updated=now,
                                error=error)
                etag = _cas(store, key, taken, etag)
        except (PreconditionFailed, _LostClaim):
            continue  # someone created or moved the claim meanwhile: look again
        if claim is not None and claim.version is not None:
            _check_not_committed(store, claim, key, taken, etag, keys)

        def still_ours(deleted: list[str]) -> None:
            _check_still_taken(store, key, artifact, step, taken.owner, deleted)

        deleted = _delete_step_records(store, artifact, step, before_each=still_ours)
        still_ours(deleted)
        store.delete([key])
        return replace(plan, discarded=True, records=len(deleted), keys=deleted)
    raise Conflict(f"{artifact} step {step}: its claim kept changing while it was being "
                   "discarded", hint="a save of the step is running: stop it, then run this "
                                     "again")


def _read_claim_to_discard(store: Store, key: str, artifact: str, step: int
                           ) -> tuple[Claim, str] | None:
    """_read_claim, with what to do about a claim no ckptlake here can read."""
    try:
        return _read_claim(store, key)
    except IntegrityError as exc:
        raise IntegrityError(
            exc.message,
            hint="a newer ckptlake may have written it: upgrade and run this again; if it is "
                 f"damaged, with every rank of the save of {artifact} step {step} stopped, "
                 f"delete that object ({key}) with your storage's tools and run this again"
        ) from None


def _refuse_young(artifact: str, step: int, age: float, stale_after: float) -> None:
    """PolicyRefusal while the step's newest record is younger than `stale_after`."""
    from ..errors import PolicyRefusal

    raise PolicyRefusal(
        f"{artifact} step {step}: its newest shard record was written {age:.0f} s ago, so a "
        "rank of that save may still be writing (a record written after the discard would "
        "join the next save's, and be committed with it unless the saves have --save-id); "
        f"refused until it is {stale_after:.0f} s old, "
        f"in {max(1.0, stale_after - age):.0f} s",
        hint="if every rank of that save has stopped, discard it now with --force "
             "(Lake.discard_pending(..., force=True))")


def _check_still_taken(store: Store, key: str, artifact: str, step: int, owner: str,
                       deleted: list[str]) -> None:
    """Before each deletion: stop unless the claim is still the failed one this discard wrote
    (by its owner token).  Another discard may have taken it, finished, and let the next save
    write its records and claim, which this one must not delete.  Read, then delete: a claim
    that changes between the two is not seen (docs/format.md, "Discarding a pending step")."""
    got = _read_claim_to_discard(store, key, artifact, step)
    if got is not None and got[0].state == "failed" and got[0].owner == owner:
        return
    now = "gone" if got is None else f"{got[0].state}, owned by {got[0].owner}"
    raise Conflict(f"{artifact} step {step}: another discard (or a save after it) took the "
                   f"step while this one ran (its claim is {now}); this one stopped after "
                   f"deleting {_plural_records(len(deleted))}",
                   hint=f"`ckptlake ls {artifact} --pending` shows what is left of the step; "
                        "run this again if it is still pending")


def _plural_records(n: int) -> str:
    return f"{n} shard record" + ("" if n == 1 else "s")


def _refuse_discard(store: Store, artifact: str, step: int, claim: Claim, now: datetime,
                    stale_after: float) -> None:
    """PolicyRefusal for a step that is not a crashed save: committed, or an owner at work."""
    from ..errors import PolicyRefusal

    if claim.state == "committed":
        if claim.version is None:
            raise PolicyRefusal(f"{artifact} step {step} is committed; it is not pending")
        try:
            _check_still_there(store, artifact, step, claim.version)
        except NotFound as gone:
            raise PolicyRefusal(
                f"{gone.message}; a committed step is never saved again, so it is not "
                "discarded", hint=f"save the checkpoint as another step; `ckptlake ls "
                                  f"{artifact} --pending` lists the pending steps") from None
        raise PolicyRefusal(
            f"{artifact} step {step} is committed as v{claim.version}: ckptlake rm "
            f"{artifact}@v{claim.version} deletes it",
            hint="--pending discards only steps that never committed (ckptlake ls "
                 f"{artifact} --pending)")
    if claim.state in ("claimed", "committing") and not claim.released:
        age = claim.age(now)
        if age < stale_after:
            raise PolicyRefusal(
                f"{artifact} step {step} is being committed by {claim.owner} (its claim is "
                f"{claim.state}, updated {age:.0f} s ago): it goes stale in "
                f"{stale_after - age:.0f} s if that owner is dead",
                hint="wait for the commit; if no rank of the save is alive, run this again "
                     f"once `ckptlake ls {artifact} --pending` shows the step stale")


def _check_not_committed(store: Store, claim: Claim, key: str, taken: Claim, etag: str,
                         keys: dict[tuple[int, int], str]) -> None:
    """After taking the step: the claim's intent N may hold the step's commit (its owner got
    as far as the manifest).  Then the step *is* committed: record it as a takeover would
    (claim committed with N and the records' aliases, set unless moved since) and refuse.  A
    tombstone at N carrying the commit_id means committed and deleted since: nothing of it is
    left to keep, so the discard goes on.  The manifest is read before the tombstone (gc
    writes the tombstone first)."""
    n = claim.version
    assert n is not None
    if _manifest_commit_id(store, claim.artifact, n) != claim.commit_id:
        return
    try:
        records = _load_records(store, claim.artifact, claim.step, claim.world, keys)
        aliases: tuple[str, ...] | None = tuple(sorted({a for r in records for a in r.aliases}))
    except (NotFound, IntegrityError):
        aliases = None  # unknown: never set later (as for a claim of an older ckptlake)
    done = replace(claim, state="committed", version=n, updated=utcnow(), error=None,
                   aliases=aliases, aliases_set=None if aliases is None else not aliases)
    with contextlib.suppress(_LostClaim):
        etag = _cas(store, key, done, etag)
        _set_step_aliases(store, key, done, etag, repeat=True)
    raise _landed(claim, would=False)


def _landed(claim: Claim, *, would: bool) -> LandedCommit:
    """`would`: said by a dry run, which records nothing."""
    n = claim.version
    done = ("a discard would record that and delete nothing" if would
            else "nothing was discarded")
    return LandedCommit(f"{claim.artifact} step {claim.step} was committed as v{n} (its "
                        f"commit landed before its claim said so); {done}",
                        hint=f"ckptlake rm {claim.artifact}@v{n} deletes that version")


def _list_step_records(store: Store, artifact: str, step: int
                       ) -> tuple[dict[tuple[int, int], str], datetime | None]:
    """_list_step's records, and when the newest of them was written (None: no record)."""
    records: dict[tuple[int, int], str] = {}
    newest: datetime | None = None
    for info in store.list(layout.shard_step_prefix(artifact, step)):
        parsed = layout.parse_shard_key(info.key)
        if parsed and parsed[0] == artifact and parsed[1] == step and parsed[2] is not None \
                and info.size > 0:
            records[(parsed[2], parsed[3])] = info.key  # type: ignore[index]
            newest = info.modified if newest is None else max(newest, info.modified)
    return records, newest


def _delete_step_records(store: Store, artifact: str, step: int,
                         before_each: Callable[[list[str]], None]) -> list[str]:
    """Delete every shard record of the step, of every world, empty ones too (a PUT cut
    after its head); listed again after each pass, for records that came in meanwhile.
    `before_each(deleted so far)` runs before each deletion and raises to stop it."""
    deleted: list[str] = []
    for _ in range(_DISCARD_PASSES):
        found = []
        for info in store.list(layout.shard_step_prefix(artifact, step)):
            parsed = layout.parse_shard_key(info.key)
            if parsed and parsed[0] == artifact and parsed[1] == step and parsed[2] is not None:
                found.append(info.key)
        if not found:
            break
        before_each(deleted)
        store.delete(found)
        deleted.extend(k for k in found if k not in deleted)
    return sorted(deleted)
