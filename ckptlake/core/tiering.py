"""Storage-class tiering: gc's plan for moving chunks of cold versions to cheaper S3 classes.

Retention decides which versions live; tiering decides where their chunks sit.  A kept version
is cold when its rule has `tier: {after, class}`, it is older than `after`, and no hot reason
keeps it (policy/retention.cold_class: alias, latest, keep_last, a keep_best rank).  A chunk
moves only when every live version that references it is cold: a chunk a hot version shares
stays where it is, and a chunk cold versions of two rules share goes to the warmer of their
classes.  Only chunks in STANDARD move (nothing moves back, nor between cold classes), and
only chunks of at least 128 KiB: IA and Glacier IR bill every object as at least that.

Storage classes are not part of the lake's format (docs/format.md): a chunk's bytes and key
are the same in every class, and the move is a server-side copy onto itself
(Store.set_storage_class).  Backends without classes (file:// lakes) plan nothing; servers
that refuse the copy (SeaweedFS) are found out at the first move, which changes nothing.

Memory: the hot and cold chunk sets spill like gc's other per-chunk structures; the list of
moves is held in memory (one entry per chunk to move, ~200 bytes each).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Iterable, Iterator

from ..errors import (AccessDenied, CkptlakeError, Interrupted, NotFound, PreconditionFailed,
                      StorageClassUnsupported)
from ..format import layout
from ..policy.retention import (COLD_CLASSES, MIN_TIER_OBJECT, ClassPrice, Decision,
                                RetentionPolicy, Rule, cold_class)
from ..results import _Result
from ..store.base import ObjectInfo, Store
from ..transfer.pool import bounded_map

if TYPE_CHECKING:
    from .gc import _Scratch

GB = 1 << 30
MAX_COPY_OBJECT = 5 * GB  # CopyObject's largest source; bigger objects are left in place
_WORKERS = 16
_MONTH_DAYS = 30


@dataclass
class ClassUse(_Result):
    objects: int = 0
    bytes: int = 0
    usd_month: float = 0.0

    def add(self, size: int) -> None:
        self.objects += 1
        self.bytes += size


@dataclass
class TieringPlan(_Result):
    """What gc's tiering would do, in chunks, bytes and dollars (live chunks only: the chunks
    gc deletes are not counted before or after)."""

    supported: bool  # the lake has storage classes (S3)
    note: str  # one line for the plan: what happens, or why nothing does
    rules: list[str]  # the rules with `tier`, described
    versions_hot: int = 0  # kept versions of tiering rules that stay hot
    versions_cold: int = 0
    before: dict[str, ClassUse] = field(default_factory=dict)  # class -> live chunks
    after: dict[str, ClassUse] = field(default_factory=dict)
    moves: dict[str, ClassUse] = field(default_factory=dict)  # target class -> chunks moved
    shared_hot: ClassUse = field(default_factory=ClassUse)  # cold versions' chunks a hot one uses
    too_small: ClassUse = field(default_factory=ClassUse)  # cold, below 128 KiB: left
    cold_but_hot: ClassUse = field(default_factory=ClassUse)  # already cold, used by a hot version
    too_large: ClassUse = field(default_factory=ClassUse)  # cold, above 5 GiB: left
    # Chunks in a class with a minimum duration that gc deletes (or will, after the grace
    # period) before that minimum is over: the rest of the minimum is billed anyway.
    early_deletion: ClassUse = field(default_factory=ClassUse)
    early_deletion_usd: float = 0.0  # one-time
    usd_month_before: float = 0.0
    usd_month_after: float = 0.0
    usd_month_saved: float = 0.0
    copy_requests_usd: float = 0.0  # one-time: a CopyObject per moved chunk
    # Billed even if gc deletes the moved chunks at once: bytes x price x minimum days.  A chunk
    # deleted before its class's minimum is billed for the rest of it (early deletion).
    min_duration_usd: float = 0.0
    payback_days: float | None = None  # one-time costs / daily saving

    def __post_init__(self) -> None:
        self.todo: list[tuple[str, str, int, str]] = []  # (key, etag, size, class): not in JSON

    @property
    def objects_to_move(self) -> int:
        return sum(u.objects for u in self.moves.values())


def _usd(prices: dict[str, ClassPrice], cls: str, use: ClassUse) -> float:
    """$/month of `use` in `cls`; a class the table does not know is priced as STANDARD."""
    p = prices.get(cls) or prices["STANDARD"]
    return use.bytes / GB * p.price_per_gb_month + use.objects / 1000 * p.monitoring_per_1000_month


class TieringPlanner:
    """Fed by gc's plan: each kept version's chunks (hot or cold), then each live chunk of the
    one listing; `finish` prices it."""

    def __init__(self, store: Store, policy: RetentionPolicy, scratch: "_Scratch",
                 now: datetime) -> None:
        self.store, self.policy, self.now = store, policy, now
        self.supported = bool(getattr(store, "supports_storage_classes", False))
        self.hot = scratch.set()
        self.cold = scratch.map()  # digest -> rank in COLD_CLASSES (smallest: warmest wins)
        self.plan = TieringPlan(
            supported=self.supported, note="",
            rules=[f"{r.label}: {r.tier.describe()}" for r in policy.rules if r.tier])

    def version(self, decision: Decision, rule: Rule | None, digests: Iterable[bytes]) -> None:
        cls = cold_class(decision, rule, self.now)
        if cls is None:
            self.hot.update(digests)
            if rule is not None and rule.tier is not None:
                self.plan.versions_hot += 1
            return
        self.plan.versions_cold += 1
        rank = COLD_CLASSES.index(cls)
        for d in digests:
            self.cold.add(d, rank)

    def hot_stream(self, digests: Iterable[bytes]) -> Iterator[bytes]:
        """Passes digests through, marking them hot: chunks some other root references
        (uncommitted shard records, artifacts outside --match) never move."""
        for d in digests:
            self.hot.add(d)
            yield d

    def chunk(self, info: ObjectInfo, digest: bytes) -> None:
        """A chunk some live version references."""
        plan = self.plan
        current = info.storage_class or "STANDARD"
        plan.before.setdefault(current, ClassUse()).add(info.size)
        target = current
        if digest in self.hot:
            if current in COLD_CLASSES:
                plan.cold_but_hot.add(info.size)
            elif digest in self.cold:
                plan.shared_hot.add(info.size)
        elif (rank := self.cold.get(digest)) is not None and current == "STANDARD":
            if info.size < MIN_TIER_OBJECT:
                plan.too_small.add(info.size)
            elif info.size > MAX_COPY_OBJECT:
                plan.too_large.add(info.size)
            else:
                target = COLD_CLASSES[rank]
                plan.moves.setdefault(target, ClassUse()).add(info.size)
                if self.supported:
                    plan.todo.append((info.key, info.etag, info.size, target))
        plan.after.setdefault(target if self.supported else current, ClassUse()).add(info.size)

    def freed(self, info: ObjectInfo) -> None:
        """A chunk no live version references: gc deletes it (now or after the grace period).
        If it sits in a class with a minimum duration not yet over (the move's copy set its
        LastModified), the rest of the minimum is billed: the early-deletion fee."""
        p = self.policy.class_prices.get(info.storage_class or "STANDARD")
        if p is None or not p.min_storage_days:
            return
        days = (self.now - info.modified).total_seconds() / 86400
        if days < p.min_storage_days:
            self.plan.early_deletion.add(info.size)
            self.plan.early_deletion_usd += info.size / GB * p.price_per_gb_month \
                * (p.min_storage_days - days) / _MONTH_DAYS

    def finish(self) -> TieringPlan:
        plan, prices = self.plan, dict(self.policy.class_prices)
        if not self.supported:
            plan.note = (f"{self.store.url.split(':', 1)[0]}:// lakes have no storage classes: "
                         "nothing moves (on S3 the moves shown would be made)")
        else:
            plan.note = ("moves chunks by a server-side copy onto themselves; a server without "
                         "storage classes (e.g. SeaweedFS) refuses the first copy, and then "
                         "nothing moves")
        plan.early_deletion_usd = round(plan.early_deletion_usd, 4)
        for table in (plan.before, plan.after, plan.moves):
            for cls, use in table.items():
                use.usd_month = round(_usd(prices, cls, use), 4)
        plan.usd_month_before = round(sum(u.usd_month for u in plan.before.values()), 4)
        plan.usd_month_after = round(sum(u.usd_month for u in plan.after.values()), 4)
        plan.usd_month_saved = round(plan.usd_month_before - plan.usd_month_after, 4)
        for cls, use in plan.moves.items():
            p = prices[cls]
            plan.copy_requests_usd += use.objects / 1000 * p.copy_per_1000
            plan.min_duration_usd += use.bytes / GB * p.price_per_gb_month \
                * p.min_storage_days / _MONTH_DAYS
        plan.copy_requests_usd = round(plan.copy_requests_usd, 4)
        plan.min_duration_usd = round(plan.min_duration_usd, 4)
        if plan.usd_month_saved > 0:
            plan.payback_days = round(plan.copy_requests_usd
                                      / (plan.usd_month_saved / _MONTH_DAYS), 1)
        return plan


@dataclass
class TieringResult(_Result):
    chunks_moved: int = 0
    bytes_moved: int = 0
    chunks_skipped: int = 0  # gone or changed since the plan
    unsupported: str | None = None  # the server's refusal: nothing moved
    chunks_failed: int = 0  # moves the store refused or failed (after retries)
    failed: str | None = None  # the first such failure


def execute_tiering(store: Store, plan: TieringPlan) -> TieringResult:
    """Make the plan's moves.  The first one alone: a server without storage classes refuses
    it (the object is unchanged) and nothing more is tried.  A chunk swept or replaced since
    the plan is skipped (the copy names the listed ETag)."""
    result = TieringResult()
    todo = [m for m in plan.todo if layout.parse_chunk_key(m[0]) is not None]
    if not plan.supported or not todo:
        return result

    def move(item: tuple[str, str, int, str]) -> int | None | CkptlakeError:
        key, etag, size, cls = item
        try:
            store.set_storage_class(key, cls, etag=etag or None)
        except (NotFound, PreconditionFailed):
            return None
        except (StorageClassUnsupported, Interrupted):
            raise
        except CkptlakeError as exc:
            # Tiering runs after gc's deletions and sweeps: one refused move (an IAM deny on
            # the storage class, a failing server) must not fail the run that did them, nor
            # keep the replicas from being swept.  Reported, and the next run tries again.
            return exc
        return size

    try:
        first = move(todo[0])
    except StorageClassUnsupported as exc:
        result.unsupported = str(exc)
        return result
    if isinstance(first, AccessDenied):
        result.chunks_failed, result.failed = len(todo), str(first)  # every move would be
        return result
    for got in [first, *bounded_map(move, todo[1:], workers=_WORKERS, name="ckptlake-tier")]:
        if got is None:
            result.chunks_skipped += 1
        elif isinstance(got, CkptlakeError):
            result.chunks_failed += 1
            result.failed = result.failed or str(got)
        else:
            result.chunks_moved += 1
            result.bytes_moved += got
    return result
