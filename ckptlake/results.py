"""Small result objects the operations return (and the CLI renders, or dumps with --json)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from .format.times import time_text


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return time_text(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


class _Result:
    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))  # type: ignore[call-overload]


@dataclass(frozen=True)
class PushResult(_Result):
    lake: str
    artifact: str
    version: int
    step: int | None
    files: int
    bytes_scanned: int  # bytes of the source read and hashed
    bytes_uploaded: int  # chunk bytes actually sent
    bytes_deduplicated: int  # chunk bytes already in the lake (not sent)
    chunks_uploaded: int
    chunks_deduplicated: int
    aliases: list[str]
    seconds: float
    # Committed, but an index derived from it (lineage markers, listing summary) failed.
    warnings: list[str] = field(default_factory=list)
    # bytes_uploaded counts the raw (logical) bytes of the chunks stored; bytes_sent what
    # crossed the wire for them (smaller when encoded).  bytes_stored: the version's chunk
    # objects as stored (its own and deduplicated ones), vs bytes_scanned logical.
    bytes_sent: int | None = None  # None: not known (a result made by hand)
    bytes_stored: int | None = None
    compression: str = "none"
    # push --dry-run: nothing was written; the counts are what the push would do, `version`
    # the number it would take now, `aliases` those it would set.
    dry_run: bool = False
    # alias -> the version it named before this push moved it (`alias` says "(was v1)"; a CI
    # script moving `prod` by a push should see what it moved it from)
    aliases_moved: dict[str, int] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.artifact}@v{self.version}"

    @property
    def ratio(self) -> float | None:
        """stored ÷ logical bytes of the version (None for an empty version)."""
        if not self.bytes_scanned or self.bytes_stored is None:
            return None
        return round(self.bytes_stored / self.bytes_scanned, 4)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "ratio": self.ratio}


@dataclass(frozen=True)
class PullResult(_Result):
    lake: str
    artifact: str
    version: int
    destination: str
    files: int
    bytes_total: int  # size of the version
    bytes_downloaded: int  # chunk bytes fetched from the lake
    # bytes already on this machine, verified: identical files kept, and chunks copied from
    # the files being replaced or from --reference directories (core/reuse.py)
    bytes_reused: int
    bytes_resumed: int  # bytes an interrupted earlier pull had staged (verified, not re-fetched)
    seconds: float
    bytes_from_cache: int = 0  # bytes read from the local chunk cache (verified)
    # Done, but something beside the destination needs a look (e.g. abandoned staging dirs).
    warnings: list[str] = field(default_factory=list)
    # Read through a regional replica: its name, region and where the bytes came from
    # (store/replica.py ReplicaStats); None when chunks came from the lake itself.
    replica: dict[str, Any] | None = None


@dataclass(frozen=True)
class VersionInfo(_Result):
    artifact: str
    version: int
    step: int | None
    created: datetime
    created_by: str
    total_bytes: int
    files: int
    metrics: dict[str, float]
    metadata: dict[str, str]
    aliases: list[str] = field(default_factory=list)
    # bytes of the version's distinct chunk objects as stored (encoded chunks at their stored
    # size); equal to total_bytes for versions listed from a summary that does not say
    stored_bytes: int | None = None


@dataclass(frozen=True)
class ArtifactInfo(_Result):
    artifact: str
    versions: int
    latest: int
    updated: datetime  # time the latest version was committed
    aliases: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class AliasResult(_Result):
    artifact: str
    alias: str
    version: int
    previous: int | None  # version it pointed at before, None if new


@dataclass(frozen=True)
class AliasRemoveResult(_Result):
    """`alias --delete`: the record is gone, so the version it named is no longer protected
    from gc's retention (nor from `rm`)."""

    artifact: str
    alias: str
    previous: int | None  # the version it pointed at; None if its record was malformed
    removed: bool = True


@dataclass(frozen=True)
class DeleteResult(_Result):
    """`rm` / `Lake.delete`: one version deleted by hand (or, with dry_run, what would be).
    Its chunks are not deleted here: gc's sweep takes those no other version uses, after
    retention.grace_period (docs/format.md, "Deleting (gc)")."""

    lake: str
    artifact: str
    version: int
    step: int | None
    created: datetime  # for an unreadable manifest: when its object was written
    created_by: str
    total_bytes: int
    files: int
    rule: str  # what the tombstone names as the deleter: "ckptlake rm"
    reason: str
    dry_run: bool
    deleted: bool  # False with dry_run
    # None when nothing was deleted (dry_run): a script tells "not deleted" by null in both,
    # where "" would read as a deleter that is unknown
    deleted_at: datetime | None = None
    deleted_by: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.artifact}@v{self.version}"


@dataclass(frozen=True)
class DeleteArtifactResult(_Result):
    """`rm ARTIFACT --all` / `Lake.delete_artifact`: every version of an artifact deleted by
    hand (or, with dry_run, what would be); each leaves a tombstone, as `rm` of one does.
    Chunks are left to gc's sweep.  `spared`: aliased while rm ran (kept); `gone`: deleted by
    another deleter meanwhile; `remaining`: versions live after the run (the spared ones, and
    any pushed after the plan: rm deletes only what its plan showed).  `lost`: those of
    `versions` that were lost (a summary, no manifest, no tombstone: they block gc), for
    which rm writes only the tombstone.  `pending`: the steps of sharded saves not committed,
    which rm leaves (a commit of one makes a new version)."""

    lake: str
    artifact: str
    versions: list[int]  # what the run deletes (dry_run: would delete)
    total_bytes: int
    files: int
    rule: str
    reason: str
    dry_run: bool
    deleted: list[int] = field(default_factory=list)
    spared: list[int] = field(default_factory=list)
    gone: list[int] = field(default_factory=list)
    remaining: list[int] = field(default_factory=list)
    deleted_at: datetime | None = None  # both None with dry_run, as in DeleteResult
    deleted_by: str | None = None
    lost: list[int] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)  # steps of sharded saves not committed


@dataclass(frozen=True)
class DiscardResult(_Result):
    """`rm ARTIFACT@step=N --pending` / `Lake.discard_pending`: a sharded step that never
    committed (a crashed save), discarded so the step can be saved again; with dry_run, what
    would go.  No chunk is deleted here: the records were gc roots, and gc's sweep takes the
    chunks nothing else references after retention.grace_period (docs/format.md, "Discarding
    a pending step")."""

    lake: str
    artifact: str
    step: int
    world: int  # of the claim, else the largest world among the records
    state: str  # as `ls --pending` said: incomplete | ready | stale | failed | conflict
    ranks: list[int]  # ranks of `world` whose record was in
    records: int  # shard records deleted (would be, with dry_run), of every world
    keys: list[str]  # their keys
    reason: str  # kept in the step's claim while the discard runs (default: who; run again,
    #              the first discard's, which the claim keeps)
    dry_run: bool
    discarded: bool  # False with dry_run
    error: str | None = None  # why an earlier commit failed, for a failed step
    version: int | None = None  # the intended version number of the commit that stopped
    newest_record_age_seconds: float | None = None  # how long ago the last record came in

    @property
    def ref(self) -> str:
        return f"{self.artifact}@step={self.step}"


@dataclass(frozen=True)
class VerifyResult(_Result):
    """What `verify` found (core/verify.py).  `problems` make the CLI exit 5; orphan chunks
    and warnings do not (gc collects orphans; warnings need a person, not a repair)."""

    lake: str
    scope: str  # "lake", an artifact, or "artifact@vN"
    versions_checked: int
    versions_ok: int
    chunks_checked: int  # distinct referenced chunks whose existence and size were checked
    chunks_read: int  # of those, downloaded and re-hashed (--read-data, --read-data-subset)
    bytes_read: int
    orphan_chunks: int | None  # None unless the whole lake was checked
    orphan_bytes: int | None
    # {"kind", "artifact", "version", "message", ...}; kind one of header, manifest, chunks,
    # tombstone, alias, shard, gc
    problems: list[dict[str, Any]]
    # {"artifact", "version", "missing_chunks", "corrupt_chunks", "message", "aliases"}
    unrestorable: list[dict[str, Any]]
    aliases_checked: int
    seconds: float
    read_data: str | None = None  # None, "all", or the subset ("5%", "2/7")
    seed: int = 0
    bytes_checked: int = 0  # bytes of the referenced chunks (at least, for packs)
    chunks_missing: int = 0
    chunks_corrupt: int = 0  # wrong size, or (read) bytes not matching the digest
    shard_steps_checked: int = 0
    pending_steps: list[dict[str, Any]] = field(default_factory=list)  # as `ls --pending`
    condemnation_records: int = 0
    incomplete_uploads: int = 0  # multipart uploads of lake keys (gc aborts them)
    incomplete_upload_list: list[dict[str, str]] = field(default_factory=list)  # first 100
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems
