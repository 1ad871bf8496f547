"""Tombstones: the small record gc leaves where it deleted a version, so lineage survives gc.

`artifacts/<artifact>/@tomb/<N>.json` holds what a reader needs to show the version as expired
(number, step, metrics, parents, when it was created) and why it went (when, which rule, the
reasons).  gc writes it with create-if-absent *before* deleting the manifest, so there is never a
moment when a version has neither.  A tombstone next to a live manifest (gc stopped between the
two writes, or the version was aliased in between) is ignored: the manifest wins.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator

from ..errors import IntegrityError, NotFound, PreconditionFailed
from ..units import reported_count
from ..format import layout
from ..format.header import is_format
from ..format.manifest import Manifest, is_metric_value
from ..format.times import parse_time
from ..redact import redact, redact_metadata
from ..results import _Result
from ..store.base import Store
from ..transfer.pool import bounded_map
from .createonce import create_once
from .identity import iso, user_at_host

TOMBSTONE_FORMAT = 1
# The `rule` of a tombstone `ckptlake rm` (Lake.delete) wrote: a version deleted by hand, by
# gc's deleter, is told apart from gc's by this alone (the record is the same).
RM_RULE = "ckptlake rm"
# The `rule` of a tombstone put back by a deleter that spared the version (an alias it saw)
# after another deleter, which saw none, deleted the manifest: which one (rm, gc) is unknown.
OTHER_RULE = "another deleter"
_WORKERS = 16


@dataclass(frozen=True)
class Tombstone(_Result):
    artifact: str
    version: int
    step: int | None
    created: datetime
    created_by: str
    metrics: dict[str, float]
    metadata: dict[str, str]
    parents: list[Any]
    total_bytes: int
    files: int
    deleted: datetime
    deleted_by: str
    rule: str
    reason: str
    state: str = field(default="expired")

    @property
    def aliases(self) -> list[str]:
        """An expired version has no aliases (gc never deletes an aliased version)."""
        return []

    def encode(self) -> bytes:
        doc = {"ckptlake_tombstone": TOMBSTONE_FORMAT, **self.to_dict()}
        doc.pop("state")
        # stored redacted, as a manifest is: a tombstone outlives the version `rm` took out
        # for the secret it held, and copies its created_by and metadata
        for name in ("created_by", "deleted_by", "reason"):
            doc[name] = redact(str(doc[name]))
        doc["metadata"] = redact_metadata(doc["metadata"])
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()

    def deleted_text(self) -> str:
        """'deleted by gc on 2026-05-01 12:00:00Z under rules[0] (match '*/*/ckpt')', or for
        one deleted by hand, 'deleted with ckptlake rm on 2026-05-01 12:00:00Z by ops@host'."""
        when = self.deleted.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
        if self.rule == RM_RULE:
            return f"deleted with {RM_RULE} on {when} by {self.deleted_by or '?'}"
        if self.rule == OTHER_RULE:
            return f"deleted by a deleter (gc or ckptlake rm) around {when}"
        return f"deleted by gc on {when} under {self.rule}"


def put_back(store: Store, tomb: Tombstone, spared: str) -> None:
    """Write a tombstone for a version this deleter spared but found deleted since (another
    deleter, which found this one's tombstone in place and saw no alias, deleted the
    manifest while this one removed its tombstone): the version must not be left with
    neither, its number free again.  Its rule says the deleter is unknown (OTHER_RULE): not
    this one, which kept the version (`spared`: how, for the reason), and readers must not
    take it for retention's; nor is `deleted_by` this one's."""
    import dataclasses

    write(store, dataclasses.replace(
        tomb, rule=OTHER_RULE, deleted_by="",
        reason=f"deleted by another deleter while {spared}"))


def from_manifest(m: Manifest, *, deleted: datetime, rule: str, reason: str) -> Tombstone:
    return Tombstone(
        artifact=m.artifact, version=m.version, step=m.step, created=m.created,
        created_by=m.created_by, metrics=dict(m.metrics), metadata=dict(m.metadata),
        parents=list(m.parents), total_bytes=m.total_bytes, files=len(m.files),
        deleted=deleted, deleted_by=user_at_host(), rule=rule, reason=reason)


def decode(data: bytes) -> Tombstone | None:
    """None for anything that is not a readable tombstone (it is then simply not shown)."""
    try:
        raw = json.loads(data)
        if not is_format(raw.get("ckptlake_tombstone"), TOMBSTONE_FORMAT):
            return None
        # Exactly the types docs/format.md requires: a version of "2" or 2.9 read as 2 would
        # count, for gc's lost-version re-check, as the record of v2's deletion.
        artifact, version, step = raw["artifact"], raw["version"], raw.get("step")
        if not isinstance(artifact, str) or type(version) is not int:
            return None
        # Counts for reporting (units.reported_count): int() raised OverflowError on
        # Infinity, which this except does not catch (ls --all, show, verify and pull of the
        # version ended in exit 1); no number at all makes the tombstone undecodable.
        total_bytes = reported_count(raw.get("total_bytes", 0))
        files = reported_count(raw.get("files", 0))
        return Tombstone(
            artifact=artifact, version=version,
            step=step if type(step) is int else None,
            created=parse_time(raw["created"]),
            created_by=redact(str(raw.get("created_by", ""))),
            metrics={k: v for k, v in dict(raw.get("metrics") or {}).items()
                     if is_metric_value(v)},
            metadata=redact_metadata(dict(raw.get("metadata") or {})),
            parents=list(raw.get("parents") or []), total_bytes=total_bytes,
            files=files, deleted=parse_time(raw["deleted"]),
            deleted_by=redact(str(raw.get("deleted_by", ""))), rule=str(raw.get("rule", "?")),
            reason=redact(str(raw.get("reason", ""))))
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None


def newer_format(data: bytes) -> int | None:
    """The `ckptlake_tombstone` format number of a tombstone a newer ckptlake wrote (above
    TOMBSTONE_FORMAT), else None: `decode` returns None for it as for a damaged one, but it
    is no damage (verify says to upgrade, not to restore a backup)."""
    try:
        raw = json.loads(data)
    except (ValueError, RecursionError):
        return None
    fmt = raw.get("ckptlake_tombstone") if isinstance(raw, dict) else None
    if isinstance(fmt, int) and not isinstance(fmt, bool) and fmt > TOMBSTONE_FORMAT:
        return fmt
    return None


def write(store: Store, tomb: Tombstone) -> bool:
    """Create the tombstone; False if one exists already (an earlier, interrupted gc wrote it:
    it describes the same immutable version, so it is kept)."""
    try:
        # create_once: an empty tombstone (a PUT cut after its head) is replaced, not kept
        create_once(store, layout.tombstone_key(tomb.artifact, tomb.version), tomb.encode())
        return True
    except PreconditionFailed:
        return False


def keys(artifact: str, number: int) -> list[str]:
    """Where N's tombstone may be: ckptlake writes the zero-padded key; docs/format.md lets
    another writer leave the number unpadded."""
    padded = layout.tombstone_key(artifact, number)
    plain = f"{layout.tombstones_prefix(artifact)}{number}.json"
    return [padded] if plain == padded else [padded, plain]


def load(store: Store, artifact: str, number: int) -> Tombstone | None:
    """N's tombstone, at its padded key or else its unpadded one (a shard takeover, an alias
    re-check and `ls --all` read it here: one they missed let a deleted step be committed
    again, or showed v3 twice)."""
    return next((tomb for _, _, tomb in _records(store, artifact, number)), None)


def _records(store: Store, artifact: str, number: int
             ) -> Iterator[tuple[str, bytes, Tombstone | None]]:
    """(key, bytes, decoded or None) of each non-empty tombstone object of N: an empty one (a
    PUT cut after its head) records nothing."""
    for key in keys(artifact, number):
        try:
            data = store.get(key)
        except NotFound:
            continue
        if data:
            yield key, data, decode(data)


def records_deletion(store: Store, artifact: str, number: int) -> bool:
    """Whether N has a tombstone that records its deletion: one this ckptlake reads as N's, or
    one a newer ckptlake wrote (its deleters write tombstones first, as ours do).  gc's
    lost-version re-check: an empty or damaged one says nothing about whether the manifest
    went on purpose."""
    return any((tomb is not None and (tomb.artifact, tomb.version) == (artifact, number))
               or (tomb is None and newer_format(data) is not None)
               for _, data, tomb in _records(store, artifact, number))


def load_strict(store: Store, artifact: str, number: int) -> Tombstone | None:
    """As `load`, for a caller that must know whose version N was before it writes (a shard
    takeover: our step's, deleted, or another's; a push settling a lost write): a tombstone
    there that is unusable (damaged, another version's, a newer format) raises IntegrityError
    naming its key.  `load` returns None for it, and read as "another's" it let a takeover
    commit a deleted step again."""
    for key, data, tomb in _records(store, artifact, number):
        if tomb is not None and (tomb.artifact, tomb.version) == (artifact, number):
            return tomb
        fmt = newer_format(data) if tomb is None else None
        why = (f"a newer ckptlake wrote it (tombstone format {fmt})" if fmt is not None else
               "it is damaged" if tomb is None else
               f"it claims to be {tomb.artifact}@v{tomb.version}")
        raise IntegrityError(
            f"the tombstone of {artifact}@v{number} ({key}) is unusable: {why}; whose version "
            f"v{number} was cannot be told, so nothing was committed",
            hint="upgrade ckptlake" if fmt is not None else
                 f"ckptlake verify reports it; put a readable tombstone back at {key} (from "
                 "the bucket's object versioning or a backup), then push again")
    return None


def present(store: Store, artifact: str, number: int) -> bool:
    """Whether N has a tombstone (of any size: a number with one is not free), padded or not."""
    return any(store.exists(key) for key in keys(artifact, number))


def numbers(store: Store, artifact: str, *, above: int = 0, nonempty: bool = False
            ) -> list[int]:
    """The numbers that have a tombstone (of any size, or with `nonempty` not empty: an empty
    one claims its number but records no deletion), ascending.  above: only those keys
    after N's padded key are listed (unpadded ones sort after the padded, so a number above N
    is never missed; a few at or below N may come too)."""
    out = set()
    start = layout.tombstone_key(artifact, above) if above else None
    for info in store.list(layout.tombstones_prefix(artifact), start_after=start):
        parsed = layout.parse_tombstone_key(info.key)
        if parsed and parsed[0] == artifact and (info.size > 0 or not nonempty):
            out.add(parsed[1])
    return sorted(out)


def load_all(store: Store, artifact: str, *, skip: set[int] | frozenset[int] = frozenset()
             ) -> list[Tombstone]:
    """Every readable tombstone of an artifact, except for numbers in `skip` (live versions)."""
    wanted = [n for n in numbers(store, artifact) if n not in skip]
    got = bounded_map(lambda n: load(store, artifact, n), wanted, workers=_WORKERS,
                      name="ckptlake-meta")
    return sorted((t for t in got if t is not None), key=lambda t: t.version)


def deleted_at(t: Tombstone) -> str:
    return iso(t.deleted)
