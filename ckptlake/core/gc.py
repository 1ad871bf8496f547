"""gc: delete the versions a retention policy no longer keeps, then collect unreferenced chunks.

Plan, then execute (restic's PlanPrune/Execute): `plan_gc` only reads and returns a
`GcPlan` that says exactly what would go and why; `execute` carries a plan out.  The protocol
(docs/format.md, "Deleting (gc)") is lock-free:

1. **Retention** -- for each version the plan deletes: re-read the aliases (a version aliased
   meanwhile is kept), write its tombstone (create-if-absent), re-read the aliases once more,
   then delete the manifest.  Tombstone first: lineage never loses a version.
2. **Mark** -- list every pin (gc/pins/, a committing push's chunks; pins 2 days old are
   removed first), then every manifest; L = the chunks they reference.  The time at which the
   listing *started* is remembered, on core.clock (counts suspended time) and the wall clock;
   its age is the larger of the two.
3. **Sweep** -- for each ripe (older than grace_period), unswept condemnation record: delete its
   chunks that are not in L, in batches of at most 1000 keys, never with a listing older than
   `sweep_window` (else mark again first); then rewrite the record with `swept_at`.  Records
   swept more than `record_retention` ago are removed.
4. **Condemn** -- chunks not in L, last modified before now - grace_period, and in no unswept
   record, are written into new records (<= 100,000 digests each).  Zero-byte records (a PUT
   cut after its head: they condemn nothing, and their random keys are never written again)
   are removed once older than `record_retention` and at least an hour.  With grace_period 0
   the new
   records are ripe at once: they are swept in the same run, after a fresh mark whose listing
   starts after the records were written.  Incomplete multipart uploads of lake keys older than
   the grace period are aborted.

gc deletes only what the lake's format owns (format/layout.is_lake_key): chunk keys it condemned,
manifests the plan named, its own records, pins older than 2 days.  Anything else under the
prefix is reported in the plan, never deleted.

Memory is bounded (docs/gc-at-scale.md): every per-chunk structure -- L, the survivors' and
the deleted versions' chunks, the chunks of unswept records, the digests of the versions being
decided -- is a core.digestset structure that keeps at most SPILL_AT digests in memory and
spills sorted runs to a private temporary directory beyond that, removed when gc returns or
fails.  Records are held as key and dates; their chunk lists are read again when swept.
Every listing is paged; what still grows with the lake is per *version* (the listing of
manifests, the plan's VersionPlans), not per chunk.
"""
from __future__ import annotations

import fnmatch
import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Iterator

from ..errors import (IntegrityError, NotFound, PreconditionFailed, TransferError,
                      TransientError, UsageError)
from ..format import layout
from ..format.times import parse_time
from ..policy.retention import (Decision, RetentionPolicy, Rule, VersionFacts,
                                format_duration, select)
from ..results import _Result
from ..store.base import Store
from ..transfer.pool import bounded_map
from . import clock as _clock
from . import tombstones as tombs
from .catalog import aliases as read_aliases
from .createonce import create_once
from .digestset import DEFAULT_MEMORY_LIMIT, DigestMap, DigestSet, Spool
from .gc_guard import (PIN_EXPIRY, RECORD_FORMAT, GcSettings, Record, decode_record, read_pin,
                       read_record, record_keys)
from .identity import iso, user_at_host, utcnow
from .lakeheader import check_known
from .tiering import TieringPlan, TieringPlanner, execute_tiering

GB = 1 << 30
DELETE_BATCH = 1000  # DeleteObjects' limit
RECORD_MAX_CHUNKS = 100_000
FOREIGN_SHOWN = 50
_META_WORKERS = 16
_RECORD_WORKERS = 4  # a record is up to ~7 MB of JSON: few in flight
_REMARK_ATTEMPTS = 3
_DELETE_ATTEMPTS = 5
# A zero-byte condemnation record is removed only once at least this old (and older than
# record_retention): its age is the only guard (see _Execution._remove_empty_record).
EMPTY_RECORD_MIN_AGE = 3600.0
# Digests each per-chunk structure keeps in memory before it spills a sorted run to disk, and
# where (None: the system's temporary directory).  Tests set a tiny SPILL_AT so that the
# on-disk path runs on small lakes.
SPILL_AT = DEFAULT_MEMORY_LIMIT
SCRATCH_DIR: str | None = None

Event = Callable[[str], None]


def settings_of(policy: RetentionPolicy) -> GcSettings:
    return GcSettings(grace_period=policy.grace_period, sweep_window=policy.sweep_window,
                      record_retention=policy.record_retention)


# ---- reading manifests leniently ---------------------------------------------------------

@dataclass(frozen=True)
class _Read:
    facts: VersionFacts
    total_bytes: int
    files: int
    digests: tuple[int, int] = (0, 0)  # where the chunks it references are in the Spool


class _Scratch:
    """The spilling per-chunk structures of one plan or run: closed together, which removes
    their files, when the plan or run ends -- failed or not."""

    def __init__(self) -> None:
        self._open: list[DigestSet | Spool] = []

    def set(self) -> DigestSet:
        self._open.append(DigestSet(SPILL_AT, directory=SCRATCH_DIR))
        return self._open[-1]  # type: ignore[return-value]

    def map(self) -> DigestMap:
        self._open.append(DigestMap(SPILL_AT, directory=SCRATCH_DIR))
        return self._open[-1]  # type: ignore[return-value]

    def spool(self) -> Spool:
        self._open.append(Spool(SPILL_AT, directory=SCRATCH_DIR))
        return self._open[-1]  # type: ignore[return-value]

    def close(self) -> None:
        for item in self._open:
            item.close()
        self._open = []


def _digests_of(raw: Any, key: str) -> set[bytes]:
    """Every chunk a manifest references, read without the path checks a puller needs: gc must
    count a chunk as referenced even if the manifest around it is one pull would refuse."""
    out: set[bytes] = set()
    try:
        for f in raw.get("files") or ():
            for c in f.get("chunks") or ():
                out.add(bytes.fromhex(c[0]))
    except (AttributeError, TypeError, ValueError, IndexError):
        raise IntegrityError(f"gc cannot read the chunk list of {key}",
                             hint=_unreadable_hint(key)) from None
    return out


def _unreadable_hint(key: str) -> str:
    """`rm` deletes a version whose manifest no reader accepts (a tombstone, then the
    manifest); removing the manifest by hand left its number free and, its summary still there,
    the version lost."""
    parsed = layout.parse_version_key(key)
    way = f"delete the version: ckptlake rm {parsed[0]}@v{parsed[1]}" if parsed else \
        "delete the version with ckptlake rm"
    return f"gc deletes nothing while a manifest is unreadable; repair it, or {way}"


def _load_json(store: Store, key: str) -> Any | None:
    try:
        data = store.get(key)
    except NotFound:
        return None  # deleted between the listing and now (another gc)
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raw = None
    if not isinstance(raw, dict):
        raise IntegrityError(f"gc cannot read {key}: not a JSON manifest",
                             hint=_unreadable_hint(key))
    return raw


def _read_version(store: Store, artifact: str, number: int
                  ) -> tuple[_Read, set[bytes]] | None:
    key = layout.version_key(artifact, number)
    raw = _load_json(store, key)
    if raw is None:
        return None
    step = raw.get("step")
    metrics = raw.get("metrics") if isinstance(raw.get("metrics"), dict) else {}
    try:
        created = parse_time(raw.get("created"))
    except ValueError:
        # Unknown age: as new as can be, so no age rule (keep_within) deletes it.  "As old as
        # can be" deleted a version stamped 9999-12-31T23:00:00-05:00 (past UTC's range) as
        # 20,794 days old; every reader refuses that manifest (exit 5) until it is put right.
        created, known = datetime.now(timezone.utc), False
    else:
        known = True
    files = raw.get("files") if isinstance(raw.get("files"), list) else []
    total = sum(f.get("size", 0) for f in files
                if isinstance(f, dict) and isinstance(f.get("size"), int))
    facts = VersionFacts(artifact=artifact, version=number,
                         step=step if isinstance(step, int) and not isinstance(step, bool)
                         else None, created=created,
                         metrics={k: v for k, v in metrics.items()
                                  if isinstance(v, (int, float)) and not isinstance(v, bool)},
                         created_known=known)
    return _Read(facts, total, len(files)), _digests_of(raw, key)


class _Listing:
    """What one listing of `artifacts/` says about roots: manifests, tombstones, shard records
    and shard claims."""

    def __init__(self) -> None:
        self.versions: dict[tuple[str, int], int] = {}  # (artifact, N) -> manifest size
        self.tombs: set[tuple[str, int]] = set()
        # (artifact, step) -> (key, etag) of its records
        self.shard_records: dict[tuple[str, int], list[tuple[str, str]]] = {}
        self.claims: set[tuple[str, int]] = set()
        self.summaries: set[tuple[str, int]] = set()  # (artifact, N) with an @s/ key

    @classmethod
    def of(cls, store: Store) -> "_Listing":
        out = cls()
        for info in store.list(layout.ARTIFACTS_PREFIX):
            if parsed := layout.parse_version_key(info.key):
                # A zero-byte manifest (a PUT cut after its head) is no version and no root;
                # it is left alone: a pusher may be replacing it by CAS right now.
                if info.size > 0:
                    out.versions[parsed] = info.size
            elif tomb := layout.parse_tombstone_key(info.key):
                if info.size > 0:  # likewise: an empty tombstone is none
                    out.tombs.add(tomb)
            elif summ := layout.parse_summary_key(info.key):
                out.summaries.add(summ[:2])
            elif (shard := layout.parse_shard_key(info.key)) and info.size > 0:
                artifact, step, rank, _ = shard
                if rank is None:
                    out.claims.add((artifact, step))
                else:
                    out.shard_records.setdefault((artifact, step), []).append(
                        (info.key, info.etag))
        return out


def lost_versions(store: Store, summarized: Iterable[tuple[str, int]], versions: Any,
                  tombstones: Any) -> list[tuple[str, int]]:
    """Versions a listing shows a summary of but neither a manifest nor a tombstone: lost
    outside ckptlake (a manifest deleted by hand or by a lifecycle rule).  A summary is written
    after its manifest, and every deleter writes the tombstone before it removes the manifest,
    so none of ckptlake's own steps leaves that for longer than a moment: a deleter that spared
    a version removes its tombstone and, if another deleter took the manifest meanwhile, puts
    one back (tombstones.put_back), two requests later.  So each suspect is looked at again
    after the listing, and once more LOST_RECHECK seconds later.  (Only a deleter killed inside
    those two requests leaves a version of its own that way for good.)

    The re-checks count a tombstone only if it records this version: an empty one (a PUT cut
    after its head: the rm that wrote it failed, and the version stayed live) or a damaged one
    says nothing about whether the manifest went on purpose."""
    suspects = sorted(k for k in summarized if k not in versions and k not in tombstones)

    def gone(item: tuple[str, int]) -> tuple[str, int] | None:
        artifact, n = item
        if tombs.records_deletion(store, artifact, n):
            return None
        try:  # an empty manifest (a PUT cut after its head) is no version, as for the listing
            if store.stat(layout.version_key(artifact, n)).size > 0:
                return None
        except NotFound:
            pass
        return item

    for again in range(2):
        if again and suspects:
            time.sleep(LOST_RECHECK)
        suspects = [got for got in bounded_map(gone, suspects, workers=_META_WORKERS,
                                               name="ckptlake-gc") if got is not None]
    return suspects


# How long after its first look a lost version is looked at once more (lost_versions).
LOST_RECHECK = 1.0


def _refuse_lost(store: Store, listing: "_Listing") -> None:
    """gc sweeps nothing while a version is lost (the plan refuses before any deletion; the
    mark, for a loss since the plan): its chunks are garbage to the mark, and a sweep would make
    a manifest restored from bucket versioning or a backup point at nothing."""
    _refuse(lost_versions(store, listing.summaries, listing.versions, listing.tombs))


def _refuse(lost: list[tuple[str, int]]) -> None:
    if not lost:
        return
    artifact, n = lost[0]
    more = f" (and {len(lost) - 1} more: ckptlake verify lists them)" if len(lost) > 1 else ""
    raise IntegrityError(
        f"{artifact}@v{n} is lost: its manifest is gone and no tombstone says it was deleted "
        f"(its listing summary remains){more}",
        hint="gc sweeps nothing while a version is lost: restore its manifest "
             f"({layout.version_key(artifact, n)}) from bucket versioning or a backup; if it is "
             f"gone for good (or a ckptlake deleter was killed mid-way), record it as deleted: "
             f"ckptlake rm {artifact}@v{n}")


class _ShardRoots:
    """Chunks of a sharded step whose version is not committed yet are referenced only by the
    ranks' shard records (core/shards.py): those records are roots, like manifests.

    A step stops being a root once its claim names version N *and* the same listing showed
    N's manifest (then the manifest is the root) or N's tombstone (then gc or rm deleted the
    version on purpose), and either the claim says `committed`, or it says `committing` (the
    committer died between the manifest and its last compare-and-swap) and that manifest or
    tombstone carries the claim's commit_id: N is the only number the step's manifest can land
    on, and no owner writes it again (core/shards.py), so the step is done.  A committing
    claim whose N is free, or holds another version, is still a root.  Done steps stay done,
    and L only grows: a record read once is not read (nor yielded) again -- a record *as
    listed*, by key and ETag: a record is written once, but `rm ARTIFACT@step=N --pending`
    deletes a crashed save's records, and the step's next save writes the same keys with
    other chunks, which a cache by key alone never read (its chunks were swept under it).
    """

    def __init__(self, store: Store, *, command: str = "gc",
                 hint: str = "gc deletes nothing while a shard record is unreadable; fix or "
                             "remove it") -> None:
        # `du` reads the same roots: its error names du, not gc (command, hint)
        self.store, self.command, self.hint = store, command, hint
        self.done: set[tuple[str, int]] = set()
        self.seen: set[tuple[str, str]] = set()  # (key, etag) as listed

    def _finished(self, artifact: str, step: int, listing: _Listing) -> bool:
        raw = _load_json_any(self.store, layout.shard_claim_key(artifact, step))
        if not isinstance(raw, dict) or type(raw.get("version")) is not int:
            return False
        n = raw["version"]
        if (artifact, n) not in listing.versions and (artifact, n) not in listing.tombs:
            return False
        if raw.get("state") == "committed":
            return True
        commit_id = raw.get("commit_id")
        return raw.get("state") == "committing" and isinstance(commit_id, str) \
            and bool(commit_id) and self._carries(artifact, n, commit_id)

    def _carries(self, artifact: str, n: int, commit_id: str) -> bool:
        """Whether N's manifest, or else its tombstone (the manifest deleted since), carries
        `commit_id`; an unreadable one does not (it stays a root: gc never guesses)."""
        from .shards import META_COMMIT_ID

        raw = _load_json_any(self.store, layout.version_key(artifact, n))
        metadata = raw.get("metadata") if isinstance(raw, dict) else None
        if isinstance(metadata, dict) and metadata.get(META_COMMIT_ID) == commit_id:
            return True
        tomb = tombs.load(self.store, artifact, n)
        return tomb is not None and tomb.metadata.get(META_COMMIT_ID) == commit_id

    def _record(self, key: str, etag: str) -> set[bytes]:
        if (key, etag) in self.seen:
            return set()
        raw = _load_json_any(self.store, key)
        if raw is None:
            return set()  # removed meanwhile
        if not isinstance(raw, dict) or not isinstance(raw.get("manifest"), dict):
            raise IntegrityError(f"{self.command} cannot read the shard record {key}",
                                 hint=self.hint)
        # (what was read may be newer than the listing: then a later listing shows its
        # ETag, and it is read again; L only grows)
        self.seen.add((key, etag))
        try:
            return _digests_of(raw["manifest"], key)
        except IntegrityError:
            raise IntegrityError(f"{self.command} cannot read the chunk list of the shard "
                                 f"record {key}", hint=self.hint) from None

    def digests(self, listing: _Listing) -> Iterator[bytes]:
        """The chunks of the root shard records not yielded before (L only grows)."""
        for (artifact, step), keys in listing.shard_records.items():
            if (artifact, step) in self.done:
                continue
            if (artifact, step) in listing.claims and self._finished(artifact, step, listing):
                self.done.add((artifact, step))
                continue
            for key, etag in keys:
                yield from self._record(key, etag)


def _load_json_any(store: Store, key: str) -> Any | None:
    try:
        data = store.get(key)
    except NotFound:
        return None
    try:
        return json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "unreadable"


@dataclass(frozen=True)
class _RecordRef:
    """A condemnation record without its chunk list (up to 100,000 digests): gc reads that
    again when it sweeps the record."""

    key: str
    created: datetime
    swept_at: datetime | None


def _stream_records(store: Store, keys: list[str] | None = None) -> Iterator[Record | str]:
    """Each readable condemnation record (of `keys`, default all), or the key of a malformed
    one, a few at a time so that gc never holds every record's chunk list at once.  A record
    deleted between list and get is skipped (records are removed only long after their
    sweep)."""
    def read(key: str) -> Record | str | None:
        return read_record(store, key)

    for got in bounded_map(read, record_keys(store) if keys is None else keys,
                           workers=_RECORD_WORKERS, name="ckptlake-gc"):
        if got is not None:
            yield got


# ---- the plan ----------------------------------------------------------------------------

@dataclass(frozen=True)
class VersionPlan(_Result):
    artifact: str
    version: int
    step: int | None
    created: datetime | None  # None: its manifest's time could not be read (kept by age)
    age_seconds: int | None
    total_bytes: int
    files: int
    keep: bool
    rule: str | None
    reason: str
    aliases: list[str] = field(default_factory=list)


@dataclass
class ArtifactPlan(_Result):
    artifact: str
    rule: str | None  # the rule that applies (None: no rule matches: kept whole)
    rule_line: int | None
    versions: int
    delete: list[VersionPlan]
    kept: list[VersionPlan]
    kept_by: dict[str, list[int]]  # clause -> versions it keeps
    # chunks the plan's deletions free, each counted once: under the first artifact (in name
    # order) whose deleted versions reference it.  A chunk the deleted versions of several
    # artifacts share (a base model two runs copied) is freed only by deleting them all, and
    # counted under the first; --match, deciding fewer artifacts, may count it elsewhere.
    bytes_freed: int = 0


@dataclass
class Tally(_Result):
    objects: int = 0
    bytes: int = 0

    def add(self, size: int) -> None:
        self.objects += 1
        self.bytes += size


@dataclass
class GcPlan(_Result):
    lake: str
    policy_source: str | None
    now: datetime
    match: str | None
    settings: dict[str, float]
    storage_price_per_gb_month: float
    artifacts: list[ArtifactPlan]
    unmatched: list[str]  # artifacts no rule matches: kept whole
    # Rules that decide nothing in this lake, each {"rule", "line", "why"}: a glob typo, a rule
    # an earlier one shadows, a keep_every_steps over versions without a step.  Not errors (a
    # rule for artifacts not pushed yet is fine), but otherwise indistinguishable in the plan
    # from a rule that keeps everything it sees.  Over the whole lake, --match or not.
    idle_rules: list[dict[str, Any]] = field(default_factory=list)
    versions_total: int = 0
    versions_deleted: int = 0
    chunks: Tally = field(default_factory=Tally)  # every chunk in the lake
    freed_by_versions: Tally = field(default_factory=Tally)  # only deleted versions use them
    # The part of freed_by_versions younger than grace_period: this run does not condemn them
    # (condemn takes only chunks older than the grace), a run after their grace does, and a
    # run a grace after that sweeps them.  They set freed_after.
    freed_by_versions_young: Tally = field(default_factory=Tally)
    garbage: Tally = field(default_factory=Tally)  # unreferenced, older than grace: condemned now
    young_garbage: Tally = field(default_factory=Tally)  # unreferenced, younger than grace
    condemned_ripe: Tally = field(default_factory=Tally)  # in records, sweepable now
    condemned_waiting: Tally = field(default_factory=Tally)  # in records, not ripe yet
    records: int = 0
    unreadable_records: list[str] = field(default_factory=list)
    # Pins of pushes committing now (gc_guard): roots, so their chunks are not garbage; the
    # expired ones (2 days old: their push died) the run removes before its mark.
    pins: int = 0
    pins_expired: int = 0
    unreadable_pins: list[str] = field(default_factory=list)  # the run stops at these
    multipart: list[dict[str, str]] = field(default_factory=list)  # to abort
    foreign: Tally = field(default_factory=Tally)
    foreign_keys: list[str] = field(default_factory=list)  # the first FOREIGN_SHOWN
    footprint_before: Tally = field(default_factory=Tally)  # lake-owned objects
    # Once the plan is carried out and everything it frees is swept: footprint_before less the
    # deleted manifests and freed chunks.  It leaves out what gc writes itself, which a plan
    # cannot size without writing it: a tombstone in each deleted manifest's place (~350
    # bytes), condemnation records (~80 bytes per condemned chunk, one object per 100,000,
    # removed record_retention after their sweep) and gc/settings.json.  Said so in README's
    # JSON table; a few KiB next to the chunks, which are MiB each.
    footprint_after: Tally = field(default_factory=Tally)
    bytes_freed: int = 0  # once everything in the plan is swept
    bytes_freed_now: int = 0  # by this run (the rest after grace_period, by later runs)
    # The earliest time by which later runs can have swept all of the rest (None with
    # grace_period 0: this run sweeps everything); a young chunk needs one run after its own
    # grace to condemn it, then one a grace after that.  See _freed_after.
    freed_after: datetime | None = None
    monthly_saving_usd: float = 0.0
    tiering: TieringPlan | None = None  # None: no rule has `tier` (core/tiering.py)

    @property
    def grace_period(self) -> float:
        return self.settings["grace_period"]

    @property
    def has_work(self) -> bool:
        return bool(self.versions_deleted or self.garbage.objects or self.condemned_ripe.objects
                    or self.freed_by_versions.objects or self.multipart
                    or (self.tiering is not None and self.tiering.todo))


def plan_gc(store: Store, policy: RetentionPolicy, *, now: datetime | None = None,
            match: str | None = None) -> GcPlan:
    """What gc would do now, and why.  Reads only; raises ConfigError for a keep_best metric
    that no version of the rule's artifacts has (naming the policy line)."""
    if now is not None and now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)  # a naive time is taken as UTC, as stored times
    check_known(store)
    scratch = _Scratch()
    try:
        return _plan(store, policy, now or utcnow(), match, scratch)
    finally:
        scratch.close()


def _plan(store: Store, policy: RetentionPolicy, now: datetime, match: str | None,
          scratch: _Scratch) -> GcPlan:
    settings = settings_of(policy)
    grace = timedelta(seconds=settings.grace_period)
    plan = GcPlan(lake=store.url, policy_source=policy.source, now=now, match=match,
                  settings=settings.to_dict(),
                  storage_price_per_gb_month=policy.storage_price_per_gb_month,
                  artifacts=[], unmatched=[])

    # 1. Versions, per artifact.
    listing = _Listing.of(store)
    _refuse_lost(store, listing)
    numbers: dict[str, list[int]] = {}
    for artifact, n in listing.versions:
        numbers.setdefault(artifact, []).append(n)
    manifest_sizes = listing.versions
    survivors = scratch.set()
    tier = TieringPlanner(store, policy, scratch, now) if policy.tiers else None
    shard_chunks = _ShardRoots(store).digests(listing)
    survivors.update(shard_chunks if tier is None else tier.hot_stream(shard_chunks))
    _plan_pins(store, plan, now, survivors, tier)
    doomed = scratch.map()  # digest -> index of the (first) artifact plan whose deletions free it
    spool = scratch.spool()  # the chunks of the versions of the artifact being decided
    evidence = _RuleEvidence()
    for artifact in sorted(numbers):
        spool.reset()
        reads = []
        for got in bounded_map(lambda n: _read_version(store, artifact, n),
                               sorted(numbers[artifact]), workers=_META_WORKERS,
                               name="ckptlake-gc"):
            if got is not None:
                r, digests = got
                reads.append(_Read(r.facts, r.total_bytes, r.files, spool.append(digests)))
        if not reads:
            continue
        reads.sort(key=lambda r: r.facts.version)
        plan.versions_total += len(reads)
        rule = policy.rule_for(artifact)
        considered = match is None or fnmatch.fnmatchcase(artifact, match)
        evidence.add(artifact, rule, reads, considered)
        if not considered:
            for r in reads:
                chunks = spool.read(r.digests)
                survivors.update(chunks if tier is None else tier.hot_stream(chunks))
            continue
        alias_map = read_aliases(store, artifact)
        decisions = select([r.facts for r in reads], policy, {artifact: alias_map}, now)
        ap = _artifact_plan(artifact, rule.line if rule else None, reads, decisions, alias_map,
                            now)
        if rule is None:
            plan.unmatched.append(artifact)
        index = len(plan.artifacts)
        plan.artifacts.append(ap)
        by_version = {d.version: d for d in decisions}
        for r in reads:
            if by_version[r.facts.version].keep:
                survivors.update(spool.read(r.digests))
                if tier is not None:
                    tier.version(by_version[r.facts.version], rule, spool.read(r.digests))
            else:
                for d in spool.read(r.digests):
                    doomed.add(d, index)
                plan.versions_deleted += 1
                # The manifest goes, a tombstone (a few hundred bytes, not counted) comes.
                plan.footprint_after.bytes -= manifest_sizes.get((artifact, r.facts.version), 0)
    plan.idle_rules = evidence.check(policy)

    # 2. Condemnation records.  (A chunk in a ripe and a waiting record counts as ripe: the
    # listing below asks `ripe` first.)
    ripe, waiting = scratch.set(), scratch.set()
    for rec in _stream_records(store):
        if isinstance(rec, str):
            plan.unreadable_records.append(rec)
            continue
        plan.records += 1
        if rec.swept_at is not None:
            continue
        target = ripe if rec.created <= now - grace else waiting
        target.update(bytes.fromhex(d) for d in rec.chunks)
    plan.unreadable_records.sort()

    # 3. One listing of everything: chunks by fate, the footprint, foreign objects.
    per_artifact = [0] * len(plan.artifacts)
    youngest: datetime | None = None  # the newest chunk of freed_by_versions_young
    for info in store.list(""):
        digest = layout.parse_chunk_key(info.key)
        if digest is None:
            if layout.is_lake_key(info.key):
                plan.footprint_before.add(info.size)
            else:
                plan.foreign.add(info.size)
                if len(plan.foreign_keys) < FOREIGN_SHOWN:
                    plan.foreign_keys.append(info.key)
            continue
        plan.footprint_before.add(info.size)
        plan.chunks.add(info.size)
        b = bytes.fromhex(digest)
        if b in survivors:
            if tier is not None:
                tier.chunk(info, b)
            continue
        if tier is not None:
            tier.freed(info)
        if b in ripe:
            plan.condemned_ripe.add(info.size)
        elif b in waiting:
            plan.condemned_waiting.add(info.size)
        elif (owner := doomed.get(b)) is not None:
            plan.freed_by_versions.add(info.size)
            per_artifact[owner] += info.size
            if info.modified > now - grace:  # the test condemn() applies, at this plan's now
                plan.freed_by_versions_young.add(info.size)
                youngest = info.modified if youngest is None else max(youngest, info.modified)
        elif info.modified <= now - grace:
            plan.garbage.add(info.size)
        else:
            plan.young_garbage.add(info.size)
    for ap, freed in zip(plan.artifacts, per_artifact):
        ap.bytes_freed = freed

    # 4. Multipart uploads a crashed push left behind.
    for up in store.list_multipart(""):
        if layout.is_lake_key(up.key) and up.initiated <= now - grace:
            plan.multipart.append({"key": up.key, "upload_id": up.upload_id,
                                   "initiated": iso(up.initiated)})

    freed = [plan.freed_by_versions, plan.garbage, plan.condemned_ripe, plan.condemned_waiting]
    plan.bytes_freed = sum(t.bytes for t in freed)
    plan.bytes_freed_now = plan.condemned_ripe.bytes
    if settings.grace_period == 0:
        plan.bytes_freed_now = plan.bytes_freed
    else:
        plan.freed_after = _freed_after(now, grace, youngest)
    plan.footprint_after.objects += plan.footprint_before.objects - sum(t.objects for t in freed)
    plan.footprint_after.bytes += plan.footprint_before.bytes - plan.bytes_freed
    plan.monthly_saving_usd = round(plan.bytes_freed / GB * policy.storage_price_per_gb_month, 4)
    if tier is not None:
        plan.tiering = tier.finish()
    return plan


class _RuleEvidence:
    """What the lake's versions say about each rule, for the checks a policy cannot get from
    its own text.  Gathered over every artifact a rule takes, --match or not: --match selects
    what this run may delete, and a metric or a step that only other artifacts of the rule
    carry is no typo (the manifests are read anyway, for the mark)."""

    def __init__(self) -> None:
        self.artifacts: list[str] = []
        self.applied: set[int] = set()  # rules that decide an artifact this run considers
        self.metric: dict[int, bool] = {}
        self.step: dict[int, bool] = {}

    def add(self, artifact: str, rule: Rule | None, reads: list[_Read], considered: bool
            ) -> None:
        self.artifacts.append(artifact)
        if rule is None:
            return
        if considered:
            self.applied.add(rule.index)
        if rule.keep_best is not None:
            has = any(rule.keep_best.metric in r.facts.metrics for r in reads)
            self.metric[rule.index] = self.metric.get(rule.index, False) or has
        if rule.keep_every_steps is not None:
            has = any(r.facts.step is not None for r in reads)
            self.step[rule.index] = self.step.get(rule.index, False) or has

    def check(self, policy: RetentionPolicy) -> list[dict[str, Any]]:
        """Refuse (naming the policy line) a keep_best metric nobody has (a typo) where the rule
        decides what this run deletes; return the notes for the rules that decide nothing, or
        keep nothing by a clause (keep_every_steps over versions pushed without --step)."""
        notes: list[dict[str, Any]] = []
        for rule in policy.rules:
            applies = rule.index in self.applied
            if rule.keep_best is not None and applies and self.metric.get(rule.index) is False:
                raise policy.error(
                    f"no version of the artifacts this rule matches has the metric "
                    f"{rule.keep_best.metric!r}",
                    f"retention.rules[{rule.index}].keep_best.metric",
                    "check the metric names with: ckptlake ls ARTIFACT")
            matched = [a for a in self.artifacts if rule.matches(a)]
            if not matched:
                notes.append(_rule_note(rule, "matches no artifact"))
                continue
            takers = sorted({taker.index: taker for a in matched
                             if (taker := policy.rule_for(a)) is not None}.values(),
                            key=lambda r: r.index)
            if rule.index not in {r.index for r in takers}:
                notes.append(_rule_note(rule, "never applies: " + " and ".join(
                    f"rules[{r.index}]" + (f" on line {r.line}" if r.line else "")
                    for r in takers) + f" take{'s' if len(takers) == 1 else ''} every artifact "
                    "it matches"))
                continue
            if rule.keep_every_steps is None or self.step.get(rule.index) is not False:
                continue
            # A note, not a refusal: alone, the rule deletes every version but the latest and
            # the aliased ones, which the plan lists; refusing blocked gc (the sweep too) for
            # a rule over an artifact whose one version it keeps anyway.
            notes.append(_rule_note(rule, "keeps no version by keep_every_steps: no version "
                                          "it matches has a step (push them with --step N)"))
        return notes


def _rule_note(rule: Rule, why: str) -> dict[str, Any]:
    return {"rule": rule.label, "line": rule.line, "why": why}


def _plan_pins(store: Store, plan: GcPlan, now: datetime, survivors: Any, tier: Any) -> None:
    """The pins as the run will see them: expired ones it removes, the others are roots."""
    expiry = now - timedelta(seconds=PIN_EXPIRY)
    for info in store.list(layout.PINS_PREFIX):
        if not layout.is_pin_key(info.key):
            continue
        if info.modified <= expiry:
            plan.pins_expired += 1
            continue
        plan.pins += 1
        try:
            chunks = [bytes.fromhex(d) for d in read_pin(store, info.key)]
        except IntegrityError:
            plan.unreadable_pins.append(info.key)
            continue
        # a committing version's: hot, like an uncommitted step's (never tiered down)
        survivors.update(chunks if tier is None else tier.hot_stream(chunks))


def _freed_after(now: datetime, grace: timedelta, youngest: datetime | None) -> datetime:
    """The earliest time by which gc runs can have swept *every* byte a plan made at `now`
    frees but this run does not (grace > 0), by the run's own rules (docs/format.md, "Order of
    a gc run"): a run at t condemns a chunk last modified at m only if m <= t - grace, into a
    record created at t; a run at t' sweeps that record only if created <= t' - grace, and it
    sweeps before it condemns, so never in the run that wrote the record.  sweep_window bounds
    the age of the listing a sweep deletes with, not which run sweeps.

    So a chunk modified at m is swept by the first run at or after max(now, m + grace) + grace,
    if a run condemned it at max(now, m + grace) (a later condemning run delays it as much).
    Chunks this run condemns (garbage, freed_by_versions older than the grace) give now + grace,
    records not ripe yet are ripe sooner, and the newest chunk of freed_by_versions_young gives
    the latest time of all: stating that keeps "the rest by the first gc run after T" true for
    all the bytes the plan announces and prices, not only for the oldest."""
    if youngest is None:
        return now + grace
    return max(now, youngest + grace) + grace


def _artifact_plan(artifact: str, rule_line: int | None, reads: list[_Read],
                   decisions: list[Decision], alias_map: dict[str, int],
                   now: datetime) -> ArtifactPlan:
    reads_by = {r.facts.version: r for r in reads}
    names: dict[int, list[str]] = {}
    for name, number in alias_map.items():
        names.setdefault(number, []).append(name)
    delete, kept = [], []
    kept_by: dict[str, list[int]] = {}
    for d in decisions:
        r = reads_by[d.version]
        known = r.facts.created_known  # else shown as unknown (null), not as "just now"
        vp = VersionPlan(artifact=artifact, version=d.version, step=d.step,
                         created=d.created if known else None,
                         age_seconds=max(0, int((now - d.created).total_seconds()))
                         if known else None,
                         total_bytes=r.total_bytes, files=r.files, keep=d.keep, rule=d.rule,
                         reason=d.reason, aliases=sorted(names.get(d.version, [])))
        (kept if d.keep else delete).append(vp)
        if d.keep:
            for reason in d.reasons:
                kept_by.setdefault(_clause(reason), []).append(d.version)
    return ArtifactPlan(artifact=artifact, rule=decisions[0].rule if decisions else None,
                        rule_line=rule_line, versions=len(decisions), delete=delete,
                        kept=kept, kept_by=kept_by)


def _clause(reason: str) -> str:
    """'keep_best val_loss min #1 (2.1)' -> 'keep_best val_loss min'; 'alias prod' -> 'alias'."""
    if reason.startswith("alias "):
        return "alias"
    if reason.startswith("keep_best "):
        return " ".join(reason.split()[:3])
    if reason.startswith("keep_every_steps "):
        return " ".join(reason.split()[:2])
    if reason.startswith("latest version"):
        return "latest"
    return reason


# ---- execution ---------------------------------------------------------------------------

@dataclass
class GcResult(_Result):
    versions_deleted: list[str] = field(default_factory=list)  # refs: a/b@v3
    versions_spared: list[str] = field(default_factory=list)  # aliased after the plan was made
    # kept because it became the artifact's latest after the plan (an rm took the one above)
    versions_kept_latest: list[str] = field(default_factory=list)
    tombstones_written: int = 0
    records_written: int = 0
    chunks_condemned: int = 0
    records_swept: int = 0
    chunks_swept: int = 0
    bytes_swept: int = 0
    chunks_rescued: int = 0  # condemned, but referenced again by the time of the sweep
    records_removed: int = 0
    pins_removed: int = 0  # left by pushes that died before deleting them (gc_guard)
    multipart_aborted: int = 0
    manifest_listings: int = 0
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    replicas: list[dict[str, Any]] = field(default_factory=list)  # each replica's sweep
    tiering: dict[str, Any] | None = None  # core/tiering.TieringResult, when the plan tiers


class _Marker:
    """L, the chunks the manifests reference, and when the listing behind it started.

    Manifests are immutable, so a re-mark lists the keys again but fetches only manifests it has
    not read yet.  Chunks of manifests deleted since stay in L: that only keeps more.
    """

    def __init__(self, store: Store, clock: Callable[[], float], scratch: _Scratch,
                 pins: Store | None = None) -> None:
        self.store, self.clock = store, clock
        # where committing pushes pin their chunks: beside the chunks (a replica's own)
        self.pins = store if pins is None else pins
        self.live = scratch.set()
        self.read: set[tuple[str, int]] = set()
        self.pins_read: set[tuple[str, str]] = set()  # (key, etag): a pin is written once
        self.shards = _ShardRoots(store)
        self.started: float | None = None
        self.started_wall = 0.0
        self.listings = 0

    def mark(self) -> None:
        started, started_wall = self.clock(), time.time()
        # Pins before the manifests: a push deletes its pin only after its commit, so a listing
        # that misses the pin (gone) sees the manifest (docs/format.md, "The push side").
        self._mark_pins()
        listing = _Listing.of(self.store)
        _refuse_lost(self.store, listing)
        new = [(a, n) for a, n in listing.versions if (a, n) not in self.read]
        vanished: list[tuple[str, int]] = []

        def digests(item: tuple[str, int]) -> set[bytes]:
            key = layout.version_key(*item)
            raw = _load_json(self.store, key)
            if raw is None:
                vanished.append(item)
                return set()
            return _digests_of(raw, key)

        for got in bounded_map(digests, new, workers=_META_WORKERS, name="ckptlake-gc"):
            self.live.update(got)
        # A manifest listed, then gone when read: a deleter's (its tombstone came first), or
        # one lost in between, whose chunks this mark would otherwise leave out of L.
        _refuse(lost_versions(self.store, vanished, (), ()))
        self.live.update(self.shards.digests(listing))
        # Merge spilled runs now, not at the first lookup of a sweep batch: the time it takes
        # counts against sweep_window either way, and _fresh() must see it.
        self.live.compact()
        self.read.update(listing.versions)
        self.started, self.started_wall = started, started_wall
        self.listings += 1

    def _mark_pins(self) -> None:
        new = [(info.key, info.etag) for info in self.pins.list(layout.PINS_PREFIX)
               if layout.is_pin_key(info.key) and info.size > 0
               and (info.key, info.etag) not in self.pins_read]

        def chunks(item: tuple[str, str]) -> set[bytes]:
            return {bytes.fromhex(d) for d in read_pin(self.pins, item[0])}

        for got in bounded_map(chunks, new, workers=_META_WORKERS, name="ckptlake-gc"):
            self.live.update(got)
        self.pins_read.update(new)

    def age(self) -> float:
        """The larger of two estimates (overestimating only re-marks sooner): the clock may skip
        a suspension where CLOCK_BOOTTIME is missing, the wall clock may be stepped back."""
        assert self.started is not None
        return max(self.clock() - self.started, time.time() - self.started_wall)


def _unretried(store: Store) -> Store:
    """The backend under the retry wrapper: a sweep must not have a delete retried after its
    window has closed, so it retries deletes itself, re-marking first."""
    from ..store.retry import RetryingStore

    return store.inner if isinstance(store, RetryingStore) else store


def delete_versions(store: Store, ap: ArtifactPlan, result: GcResult, *, deleted: datetime,
                    event: Event = lambda name: None, keep_latest: bool = True) -> set[int]:
    """gc's step 1 for one artifact: a tombstone for each version of `ap.delete`, an alias
    re-check, then the manifests.  The one deleter of versions: `gc` and the checkpointer's
    after-commit retention (`retain`) both use it; chunks are left to gc's sweep.

    keep_latest (gc, retention, Lightning; not `rm`): a plan made while vN was the latest may
    doom vN-1, and an `rm` of vN meanwhile would make the run delete the new latest, or every
    version.  So `@v/` is listed again with the aliases' last read, and a doomed version above
    every version that stays is spared (its new tombstone removed, as for a late alias).

    Returns the versions whose tombstone this call wrote: a tombstone found in place (an
    interrupted gc's, a concurrent deleter's) is kept, and `rm` must not then claim the
    deletion as its own (Lake.delete)."""
    from .catalog import load_manifest, version_numbers

    deleted_at = deleted
    aliased = set(read_aliases(store, ap.artifact).values())
    todo = [v for v in ap.delete if v.version not in aliased]
    result.versions_spared += [f"{ap.artifact}@v{v.version}" for v in ap.delete
                               if v.version in aliased]
    written: set[int] = set()
    gone: set[int] = set()
    mine: dict[int, tombs.Tombstone] = {}
    for v in todo:
        try:
            m = load_manifest(store, ap.artifact, v.version)
            tomb = tombs.from_manifest(m, deleted=deleted_at, rule=v.rule or "?",
                                       reason=v.reason)
        except NotFound:
            gone.add(v.version)  # another gc got there first
            continue
        except IntegrityError:  # a manifest pull would refuse: keep what can be read
            tomb = tombs.Tombstone(
                artifact=ap.artifact, version=v.version, step=v.step,
                created=v.created or deleted_at,  # (a tombstone holds a time; unknown: this)
                created_by="", metrics={}, parents=[],
                # the metadata, if the JSON parses: a sharded step's takeover looks for its
                # commit id there (core/shards.py), so the number is never committed again
                metadata=_raw_metadata(store, layout.version_key(ap.artifact, v.version)),
                total_bytes=v.total_bytes, files=v.files, deleted=deleted_at,
                deleted_by=user_at_host(), rule=v.rule or "?", reason=v.reason)
        mine[v.version] = tomb
        if tombs.write(store, tomb):
            written.add(v.version)
            result.tombstones_written += 1
        event("retention.tombstone")
    # Once more, right before the deletes: the window for an alias to slip in is now one
    # request long (docs/format.md, residual risks).
    aliased = set(read_aliases(store, ap.artifact).values())
    doomed = [v.version for v in todo if v.version not in gone and v.version not in aliased]
    late = [v.version for v in todo if v.version in aliased]
    kept: list[int] = []
    if keep_latest and doomed:
        # A live version with a tombstone this call did not write is going too (an rm between
        # its tombstone and its delete): tombstones are listed after the manifests, so one
        # written before this listing of @v/ is seen.  (A version that merely stays tombstoned,
        # as after an alias spared it, is then spared here once more than needed: harmless.)
        live = set(version_numbers(store, ap.artifact))
        going = set(tombs.numbers(store, ap.artifact, above=min(doomed))) - written
        top = max(live - set(doomed) - going, default=0)
        above = max((n for n in doomed if n > top), default=None)
        if above is not None:  # the artifact's latest now: an rm took the one above it
            doomed.remove(above)
            kept.append(above)
            result.versions_kept_latest.append(f"{ap.artifact}@v{above}")
    result.versions_spared += [f"{ap.artifact}@v{n}" for n in late]
    unwritten = [n for n in late + kept if n in written]
    if unwritten:
        store.delete([layout.tombstone_key(ap.artifact, n) for n in unwritten])
    store.delete([layout.version_key(ap.artifact, n) for n in doomed])
    result.versions_deleted += [f"{ap.artifact}@v{n}" for n in doomed]
    # Two deleters of one version, one of which spares it (an alias it saw) and removes its
    # tombstone while the other, which found that tombstone in place and saw no alias,
    # deletes the manifest: the version had neither, and its number was free to be handed out
    # again (a ref to vN then named another version).  Each side looks again after its own
    # step, so whichever acts last puts a tombstone back: one request per such version, none
    # in the usual case (a tombstone this call wrote, a version deleted).
    for n in unwritten:
        if not store.exists(layout.version_key(ap.artifact, n)):
            deleter = "ckptlake rm" if mine[n].rule == tombs.RM_RULE else "gc"
            tombs.put_back(store, mine[n], spared=f"{deleter} spared it " + (
                "for an alias" if n in late else "as the artifact's latest"))
            ref = f"{ap.artifact}@v{n}"  # not spared after all: deleted by the other
            for kept_refs in (result.versions_spared, result.versions_kept_latest):
                if ref in kept_refs:
                    kept_refs.remove(ref)
            result.warnings.append(f"{ref} was spared, but another deleter deleted it "
                                   "meanwhile")
    for n in doomed:
        if n not in written and n in mine and not tombs.present(store, ap.artifact, n):
            tombs.write(store, mine[n])
    event("retention.artifact")
    return written


def _raw_metadata(store: Store, key: str) -> dict[str, Any]:
    """The `metadata` object of a manifest no reader accepts, or {} (best effort)."""
    try:
        raw = json.loads(store.get(key))
    except (NotFound, TransferError, ValueError, RecursionError):
        return {}
    metadata = raw.get("metadata") if isinstance(raw, dict) else None
    return dict(metadata) if isinstance(metadata, dict) else {}


def retain(store: Store, artifact: str, policy: RetentionPolicy, *,
           keep_last: int | None = None, now: datetime | None = None) -> GcResult:
    """Retention of one artifact right after a commit (the checkpointer's): gc's selection
    (`select` with the policy's rule for `artifact`) and gc's deleter (`delete_versions`), so
    aliased versions and the latest are never deleted; chunks are left to gc's sweep.

    keep_last (the checkpointer's shortcut) replaces the rule's keep_last, its other clauses
    still keep what they keep; with no matching rule it is the whole rule.
    """
    import dataclasses

    from ..policy.retention import Rule
    from .summary import committed

    result = GcResult()
    rule = policy.rule_for(artifact)
    if rule is None and keep_last is None:
        return result
    label = None
    if keep_last is not None:
        if rule is None:
            rule = Rule(match=fnmatch_escape(artifact), keep_last=keep_last)
            label = f"keep_last={keep_last} (checkpointer)"
        else:
            rule = dataclasses.replace(rule, keep_last=keep_last)
            label = f"{rule.label}, keep_last={keep_last} (checkpointer)"
    now = now or utcnow()
    reads = [got[0] for got in bounded_map(lambda n: _read_version(store, artifact, n),
                                           sorted(committed(store, artifact)),
                                           workers=_META_WORKERS, name="ckptlake-retain")
             if got is not None]
    if not reads:
        return result
    reads.sort(key=lambda r: r.facts.version)
    # gc refuses a keep_best metric no version of the rule's artifacts has (a typo would let
    # the rule delete what it meant to keep); here only this artifact is seen, and a rule for
    # several may name a metric its siblings have.  With keep_missing (the default) versions
    # without it are kept, so nothing is deleted that gc would keep: no error after every
    # commit.  Without keep_missing a typo cannot be told apart, and nothing is deleted.
    if rule.keep_best is not None and not rule.keep_best.keep_missing \
            and not any(rule.keep_best.metric in r.facts.metrics for r in reads):
        raise policy.error(
            f"no version of {artifact} has the metric {rule.keep_best.metric!r}",
            f"retention.rules[{rule.index}].keep_best.metric",
            "check the metric names with: ckptlake ls ARTIFACT")
    alias_map = read_aliases(store, artifact)
    decisions = select([r.facts for r in reads], [rule], {artifact: alias_map}, now)
    if label is not None:
        decisions = [dataclasses.replace(d, rule=label) for d in decisions]
    ap = _artifact_plan(artifact, rule.line, reads, decisions, alias_map, now)
    if ap.delete:
        delete_versions(store, ap, result, deleted=now)
    return result


def fnmatch_escape(text: str) -> str:
    """A glob matching exactly `text`."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


class _Execution:
    def __init__(self, store: Store, plan: GcPlan, settings: GcSettings,
                 now: Callable[[], datetime], clock: Callable[[], float],
                 on_event: Event | None, data: Store | None = None) -> None:
        self.store, self.plan, self.settings = store, plan, settings
        # Where the chunks and the condemnation records live: the lake itself, or a replica
        # (core/replicas.py), which is marked against the lake's roots.
        self.data = store if data is None else data
        self.now, self.clock = now, clock
        self.event = on_event or (lambda name: None)
        self.result = GcResult()
        self.scratch = _Scratch()
        self.marker = _Marker(store, clock, self.scratch, pins=self.data)
        self.pending = self.scratch.set()  # the chunks of unswept records (read before the mark)
        self.raw = _unretried(self.data)
        self.batch_seconds = 0.0
        # (key, last modified) of zero-byte records, listed by read_records
        self.empty_records: list[tuple[str, datetime]] = []

    # -- 0. settings
    def publish_settings(self) -> None:
        try:
            current = GcSettings.decode(self.store.get(layout.GC_SETTINGS_KEY))
        except (NotFound, IntegrityError):
            current = None
        if current != self.settings:
            self.store.put(layout.GC_SETTINGS_KEY,
                           self.settings.encode(updated=iso(self.now()),
                                                updated_by=user_at_host()))

    # -- 1. retention
    def retention(self) -> None:
        for ap in self.plan.artifacts:
            if ap.delete:
                self._delete_versions(ap)
        self.event("retention.done")

    def _delete_versions(self, ap: ArtifactPlan) -> None:
        delete_versions(self.store, ap, self.result, deleted=self.now(), event=self.event)

    # -- records
    def read_records(self) -> tuple[list[_RecordRef], list[str]]:
        """The records (without their chunk lists) and the keys of malformed ones; the chunks
        of the unswept ones go into `pending`."""
        refs, bad = [], []
        keys = []
        for info in self.data.list(layout.CONDEMNED_PREFIX):
            if not layout.is_condemned_key(info.key):
                continue
            if info.size == 0:
                self.empty_records.append((info.key, info.modified))
            else:
                keys.append(info.key)
        for rec in _stream_records(self.data, keys):
            if isinstance(rec, str):
                bad.append(rec)
                continue
            refs.append(_RecordRef(rec.key, rec.created, rec.swept_at))
            if rec.swept_at is None:
                self.pending.update(bytes.fromhex(d) for d in rec.chunks)
        refs.sort(key=lambda r: r.key)
        return refs, sorted(bad)

    # -- 2. mark
    def mark(self) -> None:
        self.marker.mark()
        self.event("mark.done")

    def _fresh(self) -> None:
        """Make sure the listing behind L is young enough to delete with."""
        budget = self.settings.sweep_window - max(0.25 * self.settings.sweep_window,
                                                  2 * self.batch_seconds)
        for _ in range(_REMARK_ATTEMPTS):
            if self.marker.age() <= budget:
                return
            self.marker.mark()
        if self.marker.age() > budget:
            raise TransferError(
                f"gc: listing the manifests takes longer than retention.sweep_window "
                f"({format_duration(self.settings.sweep_window)}); nothing more was deleted",
                hint="raise retention.sweep_window (pushers read it from gc/settings.json)")

    # -- 3. sweep
    def sweep(self, records: list[_RecordRef], *, force_mark_after: float | None = None) -> None:
        now = self.now()
        grace = timedelta(seconds=self.settings.grace_period)
        for rec in records:
            if rec.swept_at is not None or rec.created > now - grace:
                continue
            self._sweep_record(rec)
        self.event("sweep.done")

    def _sweep_record(self, ref: _RecordRef) -> None:
        # The record as read before the mark, but for swept_at: records are written once
        # (create-if-absent, random key) and only ever rewritten to add swept_at.
        try:
            data, etag = self.data.get_with_etag(ref.key)
        except NotFound:
            return  # removed meanwhile (by another gc, long after a sweep)
        try:
            rec = decode_record(ref.key, data, etag)
        except IntegrityError:
            self.result.warnings.append(f"{ref.key} is malformed: not swept, not removed")
            return
        if rec.swept_at is not None:
            return  # another gc swept it meanwhile
        sizes = dict(zip(rec.chunks, rec.sizes))
        chunks = list(rec.chunks)
        for i in range(0, len(chunks), DELETE_BATCH):
            batch = chunks[i:i + DELETE_BATCH]
            if not self._delete_chunks(batch, sizes, rec):
                return  # another gc swept it meanwhile: that sweep's record is the one listed
            self.event("sweep.batch")
        doc = {**rec.raw, "swept_at": iso(self.now())}
        try:
            self.data.put(rec.key, json.dumps(doc).encode(), if_match=rec.etag)
        except (PreconditionFailed, NotFound):
            pass  # another gc swept (or removed) it meanwhile
        self.result.records_swept += 1
        self.event("sweep.record")

    def _still_unswept(self, rec: Record) -> bool:
        try:
            return self.data.stat(rec.key).etag == rec.etag
        except NotFound:
            return False

    def _delete_chunks(self, batch: list[str], sizes: dict[str, int],
                       rec: Record | None = None) -> bool:
        """Delete the batch's chunks not in L; False (nothing deleted) if `rec` was swept by
        another gc meanwhile.  Why check right before the delete: that gc's record is removed
        record_retention after its sweep, and a push that then finds a chunk in no record
        commits without waiting for sweeps (invariant 5); a run still deleting for the same
        record after that (its re-marks and retries took long) could delete a chunk such a push
        re-uploaded and committed."""
        for attempt in range(_DELETE_ATTEMPTS):
            self._fresh()
            doomed = [d for d in batch if bytes.fromhex(d) not in self.marker.live]
            if not doomed:
                self.result.chunks_rescued += len(batch)
                return True
            if self.marker.age() > self.settings.sweep_window - max(
                    0.25 * self.settings.sweep_window, 2 * self.batch_seconds):
                continue  # the lookups took long (a slow disk?): fresh listing, ask again
            if rec is not None and not self._still_unswept(rec):
                return False
            listing_age = self.marker.age()
            t0 = self.clock()
            try:
                self.raw.delete([layout.chunk_key(d) for d in doomed])
            except TransientError:
                if attempt == _DELETE_ATTEMPTS - 1:
                    raise
                time.sleep(min(2.0, 0.2 * 2 ** attempt))
                continue
            finally:
                self.batch_seconds = max(self.batch_seconds, self.clock() - t0)
            if listing_age + (self.clock() - t0) > self.settings.sweep_window:
                self.result.warnings.append(
                    f"a delete of {len(doomed)} chunks finished "
                    f"{listing_age + self.clock() - t0:.1f}s after its listing, beyond "
                    f"sweep_window ({self.settings.sweep_window:g}s); raise "
                    "retention.sweep_window if this repeats")
            self.result.chunks_rescued += len(batch) - len(doomed)
            self.result.chunks_swept += len(doomed)
            self.result.bytes_swept += sum(sizes.get(d, 0) for d in doomed)
            return True
        raise TransferError(
            f"gc: could not delete a batch of chunks within retention.sweep_window "
            f"({format_duration(self.settings.sweep_window)}) of a listing; nothing more was "
            "deleted", hint="raise retention.sweep_window (pushers read it from "
                            "gc/settings.json)")

    def remove_old_records(self, records: list[_RecordRef]) -> None:
        cutoff = self.now() - timedelta(seconds=self.settings.record_retention)
        old = [r.key for r in records if r.swept_at is not None and r.swept_at <= cutoff]
        if old:
            self.data.delete(old)
            self.result.records_removed += len(old)
        empty_cutoff = self.now() - timedelta(
            seconds=max(self.settings.record_retention, EMPTY_RECORD_MIN_AGE))
        for key, modified in self.empty_records:
            if modified <= empty_cutoff and self._remove_empty_record(key):
                self.result.records_removed += 1

    def remove_expired_pins(self) -> None:
        """Pins of pushes that died before deleting theirs.  A push never commits under a pin
        older than PIN_MAX_AGE by its own clock; this removes pins last modified more than
        PIN_EXPIRY ago by gc's, before the mark, so an expired pin (even an unreadable one)
        neither keeps its chunks nor stops gc."""
        cutoff = self.now() - timedelta(seconds=PIN_EXPIRY)
        old = [info.key for info in self.data.list(layout.PINS_PREFIX)
               if layout.is_pin_key(info.key) and info.modified <= cutoff]
        if old:
            self.data.delete(old)
            self.result.pins_removed += len(old)

    def _remove_empty_record(self, key: str) -> bool:
        """Delete a zero-byte record (a gc's PUT cut after its head), if it is still empty.

        Nobody else writes it (its key is random; only the gc whose PUT was cut takes it over,
        within its own retries), so without this it would stay for ever.  Nothing can lock
        it first: there is no conditional delete, and a swap to empty by compare-and-swap
        pins nothing on S3, where an empty object's ETag is the MD5 of nothing before and
        after.  Its age is the guard: that gc would have to stall for
        max(record_retention, 1 h) between its cut PUT and its takeover.  If its takeover
        lands after the delete, its If-Match PUT fails and it writes the record under a fresh
        key (_write_record); if it lands between the check below and the delete, its record
        is deleted, which loses no data: a record is read again before its sweep, and its
        chunks are condemned again by a later run."""
        try:
            if self.data.stat(key).size:
                return False  # taken over after all: an ordinary record now
            self.data.delete([key])
        except NotFound:
            return False
        return True

    # -- 4. condemn
    def condemn(self) -> list[_RecordRef]:
        pending = self.pending
        cutoff = self.now() - timedelta(seconds=self.settings.grace_period)
        written: list[_RecordRef] = []
        batch: list[tuple[str, int]] = []
        for info in self.data.list(layout.CHUNKS_PREFIX):
            digest = layout.parse_chunk_key(info.key)
            if digest is None or info.modified > cutoff:
                continue
            b = bytes.fromhex(digest)
            if b in self.marker.live or b in pending:
                continue
            batch.append((digest, info.size))
            if len(batch) == RECORD_MAX_CHUNKS:
                written.append(self._write_record(batch))
                batch = []
        if batch:
            written.append(self._write_record(batch))
        self.event("condemn.done")
        return written

    def _write_record(self, batch: list[tuple[str, int]]) -> _RecordRef:
        for attempt in range(3):
            created = self.now()
            compact = created.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
            key = layout.condemned_key(compact, secrets.token_hex(8))
            raw = {"ckptlake_condemned": RECORD_FORMAT, "created": iso(created),
                   "created_by": user_at_host(), "grace_period": self.settings.grace_period,
                   "chunks": [d for d, _ in batch], "sizes": [s for _, s in batch],
                   "swept_at": None}
            body = json.dumps(raw, separators=(",", ":")).encode()
            try:
                create_once(self.data, key, body)
                break
            except PreconditionFailed:
                # The key is random, so this is our own write whose response was lost, or
                # our takeover of our own cut (empty) write after another gc removed it as
                # an old empty record (_remove_empty_record): a fresh key then.
                try:
                    if self.data.get(key) == body:
                        break
                except NotFound:
                    pass
                if attempt == 2:
                    raise
        self.result.records_written += 1
        self.result.chunks_condemned += len(batch)
        self.event("condemn.record")
        return _RecordRef(key=key, created=created, swept_at=None)

    def collect(self, *, malformed: str) -> None:
        """Mark, sweep what is ripe, drop old records, condemn: the chunk side of a run, the
        same for the lake and for each replica (core/replicas.py)."""
        # Records first, then the mark: a record is swept only with a listing of the manifests
        # that started after the record existed (else a push committing in between could miss
        # it).
        records, bad = self.read_records()
        self.remove_expired_pins()
        self.mark()
        for key in bad:
            self.result.warnings.append(malformed.format(key=key))
        self.sweep(records)
        self.remove_old_records(records)
        fresh = self.condemn()
        if fresh and self.settings.grace_period == 0:
            # Ripe at once.  Sweep them with a listing that starts after they were written, so
            # that a push committing meanwhile either is in L or finds the record (gc_guard).
            self.marker.mark()
            self.sweep(fresh)

    def abort_uploads(self) -> None:
        cutoff = self.now() - timedelta(seconds=self.settings.grace_period)
        for up in list(self.store.list_multipart("")):
            if layout.is_lake_key(up.key) and up.initiated <= cutoff:
                self.store.abort_multipart(up.key, up.upload_id)
                self.result.multipart_aborted += 1


def execute(store: Store, plan: GcPlan, *, settings: GcSettings | None = None,
            now: Callable[[], datetime] = utcnow, clock: Callable[[], float] | None = None,
            on_event: Event | None = None) -> GcResult:
    """Carry out a plan: retention, mark, sweep, condemn (docs/format.md, "Deleting (gc)").

    Safe to interrupt at any point and to run again, and safe next to pushes that use
    core.gc_guard.guard_commit.  on_event(name) is called after each step (tests use it to
    stop a run half way).  clock: elapsed seconds, core.clock.now by default (it counts time
    the machine spends suspended).
    """
    if clock is None:
        def clock() -> float:
            return _clock.now()  # looked up per call: replaceable in tests

    started = clock()
    check_known(store)  # again: the plan may be old, and the lake upgraded since
    settings = settings or GcSettings(**plan.settings)
    if problem := settings.problem():  # pushers would refuse (or outwait) such settings
        raise UsageError(f"gc settings refused: {problem}",
                         hint="see retention: in ckptlake.example.yaml for the bounds")
    # gc deletes nothing while a pin is unreadable (gc_guard.decode_pin): the mark would stop
    # at it only after retention had deleted the plan's versions.  Read again: it may have
    # been fixed, or removed by its push, since the plan.
    for key in plan.unreadable_pins:
        read_pin(store, key)
    run = _Execution(store, plan, settings, now, clock, on_event)
    try:
        run.publish_settings()
        run.retention()
        run.collect(malformed="{key} is malformed: not swept, not removed")
        run.abort_uploads()
        if plan.tiering is not None:
            # Last: only chunks the run left alive move, and a refusal changes nothing else.
            tiered = execute_tiering(store, plan.tiering)
            run.result.tiering = tiered.to_dict()
            if tiered.unsupported:
                run.result.warnings.append(
                    f"tiering skipped: the server keeps no storage classes ({tiered.unsupported}"
                    "); no chunk was moved")
            if tiered.failed:
                run.result.warnings.append(
                    f"tiering: {tiered.chunks_failed} of {len(plan.tiering.todo)} moves failed "
                    f"({tiered.failed}); {tiered.chunks_moved} moved, the next gc tries the "
                    "rest again")
    finally:
        run.scratch.close()
    run.result.manifest_listings = run.marker.listings
    run.result.seconds = round(clock() - started, 3)
    run.event("done")
    return run.result

