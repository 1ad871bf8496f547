"""The push side of the gc protocol: what a push re-checks around its commit.

gc never takes a lock (docs/format.md, "Deleting (gc)").  It condemns unreferenced chunks in
records under `gc/condemned/`, and sweeps a record only after the grace period, using a listing
of the roots that is never older than `sweep_window` seconds.  A push that deduplicated
against (or uploaded) a chunk that a sweep then deleted is caught here:

0. The push *pins* every chunk it references: a `gc/pins/` object listing them, which every gc
   that lists its roots from then on counts as a root (it lists the pins before the manifests,
   and the pin goes only after the commit, so a listing sees the pin or the manifest).
1. The records are listed (after the pin, and so are the settings): `at_risk` = referenced
   chunks named in any record (every one if a record is unreadable).  If there are any, wait
   until `sweep_window` (+1 s) has passed since the pin -- a sweep whose listing predates the
   pin has stopped deleting by then, and later ones see the pin -- HEAD each and re-upload the
   missing ones from the push's source.  A push that has run for `record_retention -
   sweep_window` or longer also HEADs every other referenced chunk (a deletion older than
   the records still listed), without a wait.
2. `commit()` writes the manifest: every chunk it names is there, and stays.
3. For a gc from before pins (which does not read them), the check after the commit that
   came before them: the records are listed again and, if any names a referenced chunk, the
   push waits `sweep_window` from the commit and restores what is missing.  Then the pin goes.

Why that is enough: a sweep that deletes chunk K after step 1's listing listed its roots before
the pin (otherwise K would be in L).  Its record was written before that listing, and is
retained `record_retention` after the sweep, so step 1 lists it: K is at risk.  The sweep
deletes only within `sweep_window` of its listing, so after the wait K is either present or
visibly missing, and is restored; a chunk restored then is in every later listing's L (the pin,
then the manifest).  A deletion before step 1's listing is found by its HEAD: of the at-risk
chunks (after the wait), or of every chunk once the records of such deletions may be gone.
A push that dies after its commit therefore leaves a whole version, and a pull of a version
as soon as it is listed finds every chunk.  Assumptions and the residual risk are in docs/format.md.

Time: "how long the push has run" is the larger of two estimates, core.clock.now() (counts
suspended time) and the wall clock, since overestimating it only checks more chunks; "how long
since the pin / the commit" (the waits) is core.clock.now() alone, since overestimating that
would cut the wait short.

This module is imported by push: it stays small and imports nothing heavy.
"""
from __future__ import annotations

import json
import logging
import math
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable, TypeVar

from ..errors import (AccessDenied, CkptlakeError, IntegrityError, Interrupted, NotFound,
                      OutcomeUnknown, TransferError)
from ..units import reported_count
from ..format import layout
from ..format.header import is_format
from ..format.times import parse_time
from ..policy.retention import (DEFAULT_GRACE_PERIOD, DEFAULT_RECORD_RETENTION,
                                DEFAULT_SWEEP_WINDOW, MAX_RECORD_RETENTION, MAX_SWEEP_WINDOW,
                                MIN_SWEEP_WINDOW, format_duration)
from ..store.base import Store
from ..transfer.pool import bounded_map
from . import clock as _clock
from .identity import iso, user_at_host, utcnow

M = TypeVar("M")

SETTINGS_FORMAT = 1
RECORD_FORMAT = 1
WAIT_MARGIN = 1.0  # seconds added to sweep_window: clock-rate drift, request latency
PIN_FORMAT = 1
# A push commits under its pin only while the pin is younger than this by its own clock, and
# gc removes pins last modified longer ago than PIN_EXPIRY (the server's time against gc's
# clock): the day and a half between them absorbs clock skew, and a push spends minutes between
# its pin and its commit (the wait is at most sweep_window, an hour).
PIN_MAX_AGE = 12 * 3600.0
PIN_EXPIRY = 2 * 86400.0
log = logging.getLogger("ckptlake")
_WORKERS = 16


@dataclass(frozen=True)
class GcSettings:
    """The timing contract between gc and pushers, published by gc in `gc/settings.json`."""

    grace_period: float = DEFAULT_GRACE_PERIOD
    sweep_window: float = DEFAULT_SWEEP_WINDOW
    record_retention: float = DEFAULT_RECORD_RETENTION

    def to_dict(self) -> dict[str, float]:
        return {"grace_period": self.grace_period, "sweep_window": self.sweep_window,
                "record_retention": self.record_retention}

    def encode(self, *, updated: str, updated_by: str) -> bytes:
        return json.dumps({"ckptlake_gc_settings": SETTINGS_FORMAT, **self.to_dict(),
                           "updated": updated, "updated_by": updated_by}).encode()

    def problem(self) -> str | None:
        """Why these settings are outside what ckptlake accepts, or None.

        The same bounds as `retention:` in ckptlake.yaml (policy/retention.py), checked again
        here because pushers take the settings from the lake: a `gc/settings.json` written by
        hand, or by an older ckptlake without the bounds, must not make every push that touches
        a condemned chunk sleep for days after its commit.
        """
        values = self.to_dict()
        if any(not math.isfinite(v) or v < 0 for v in values.values()):
            return "has a negative or non-finite duration"
        if not MIN_SWEEP_WINDOW <= self.sweep_window <= MAX_SWEEP_WINDOW:
            return (f"sweep_window {format_duration(self.sweep_window)} is outside "
                    f"{format_duration(MIN_SWEEP_WINDOW)}..{format_duration(MAX_SWEEP_WINDOW)}")
        if self.record_retention > MAX_RECORD_RETENTION:
            return (f"record_retention {format_duration(self.record_retention)} is above "
                    f"{format_duration(MAX_RECORD_RETENTION)}")
        if self.record_retention < 2 * self.sweep_window:
            return (f"record_retention {format_duration(self.record_retention)} is less than "
                    f"twice sweep_window ({format_duration(2 * self.sweep_window)})")
        return None

    @classmethod
    def decode(cls, data: bytes) -> "GcSettings":
        hint = "run ckptlake gc (it rewrites the file from retention: in ckptlake.yaml)"
        try:
            raw = json.loads(data)
            values = {k: float(raw[k]) for k in ("grace_period", "sweep_window",
                                                 "record_retention")}
        except (ValueError, KeyError, TypeError, RecursionError, OverflowError):
            # (OverflowError: an integer too large for a float, a crafted file's)
            raise IntegrityError(f"{layout.GC_SETTINGS_KEY} is malformed", hint=hint) from None
        if not is_format(raw.get("ckptlake_gc_settings"), SETTINGS_FORMAT):
            raise IntegrityError(f"{layout.GC_SETTINGS_KEY} is malformed", hint=hint)
        out = cls(**values)
        if problem := out.problem():
            # Who wrote it: a gc from before the bounds (the first release had none) keeps
            # rewriting the file on every run, so "run ckptlake gc" alone does not last.
            who = ", ".join(f"{k} {_shown(raw.get(k))}" for k in ("updated_by", "updated"))
            raise IntegrityError(
                f"{layout.GC_SETTINGS_KEY} is refused: {problem} ({who}): a ckptlake gc "
                "older than these bounds (or a hand edit) wrote it",
                hint="fix retention: in that gc's ckptlake.yaml or upgrade its ckptlake, then "
                     "run ckptlake gc (it rewrites the file)")
        return out


def _shown(value: Any) -> str:
    """A field of the file for a one-line message: printable, bounded, or "unknown"."""
    if not isinstance(value, str) or not value:
        return "unknown"
    text = "".join(c if c.isprintable() else "?" for c in value[:80])
    return text + ("..." if len(value) > 80 else "")


# What a pusher assumes when it cannot read the settings after its commit: the slowest sweep
# ckptlake allows, and records that may already be gone (so every referenced chunk is at risk).
UNKNOWN_SETTINGS = GcSettings(grace_period=0.0, sweep_window=MAX_SWEEP_WINDOW,
                              record_retention=0.0)
# What a pusher assumes when the file is empty (a gc's write cut after its head): the slowest
# sweep, but records kept as long as this format allows.  With record_retention 0 (as above)
# every push, reusing a condemned chunk or not, waited an hour after its commit until the next
# gc rewrote the file; this way only a push that reuses a chunk a record names waits.  What it
# gives up: a record a gc removed under a shorter record_retention, while a push ran longer
# than that (docs/format.md, "Residual risks").
EMPTY_SETTINGS = GcSettings(grace_period=0.0, sweep_window=MAX_SWEEP_WINDOW,
                            record_retention=MAX_RECORD_RETENTION)


def read_settings(store: Store) -> GcSettings:
    """What the lake's gc uses; the defaults when no gc has run yet.

    An empty file (a gc's PUT cut after its head, docs/format.md "Empty objects") is no
    settings, as gc itself takes it (it rewrites it), but not "no gc has run": the cut write
    replaced settings a gc may still be sweeping with, and they are gone.  So the slowest
    sweep ckptlake allows (EMPTY_SETTINGS): an hour's wait for a condemned chunk until the
    next gc rewrites it, never a wait cut short.  Refusing it instead failed every push until
    then (exit 5)."""
    try:
        data = store.get(layout.GC_SETTINGS_KEY)
    except NotFound:
        return GcSettings()
    if not data:
        log.warning("%s is empty (a gc's write was cut): a push that reuses a chunk gc "
                    "condemned waits %s for it (the slowest gc ckptlake allows); run `ckptlake "
                    "gc` to rewrite the file", layout.GC_SETTINGS_KEY,
                    format_duration(EMPTY_SETTINGS.sweep_window))
        return EMPTY_SETTINGS
    return GcSettings.decode(data)


def check_settings(store: Store) -> None:
    """Refuse (IntegrityError) the gc settings a commit's guard would refuse, before a push
    uploads anything: read only at the commit, a damaged file failed the push after every
    chunk was sent (chunks left for gc, which refuses the same file).  An absent or empty file
    passes, as read_settings takes them."""
    try:
        data = store.get(layout.GC_SETTINGS_KEY)
    except NotFound:
        return
    if data:
        GcSettings.decode(data)


def _settings_after_commit(store: Store) -> GcSettings:
    """read_settings, for a push that has committed: failing now would leave a committed
    version unchecked, so an unreadable (or refused) file means the worst case instead."""
    try:
        return read_settings(store)
    except (IntegrityError, TransferError, AccessDenied):
        return UNKNOWN_SETTINGS


# ---- condemnation records ----------------------------------------------------------------

@dataclass(frozen=True)
class Record:
    key: str
    etag: str
    created: datetime
    chunks: tuple[str, ...]
    sizes: tuple[int, ...]  # parallel to chunks (0 where unknown)
    swept_at: datetime | None
    raw: dict[str, Any]


def decode_record(key: str, data: bytes, etag: str) -> Record:
    try:
        raw = json.loads(data)
        if not is_format(raw.get("ckptlake_condemned"), RECORD_FORMAT):
            raise ValueError("format")
        chunks = tuple(str(d) for d in raw["chunks"])
        # for reporting (units.reported_count): int() raised OverflowError (exit 1 from
        # every push, gc and verify) on 1e400
        sizes = tuple(reported_count(s) for s in raw.get("sizes") or [0] * len(chunks))
        if len(sizes) != len(chunks) or any(layout.parse_chunk_key(layout.chunk_key(d)) is None
                                            for d in chunks):
            raise ValueError("chunks")
        swept = raw.get("swept_at")
        return Record(key=key, etag=etag, created=parse_time(raw["created"]), chunks=chunks,
                      sizes=sizes, swept_at=None if swept is None else parse_time(swept), raw=raw)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise IntegrityError(f"condemnation record {key} is malformed",
                             hint="gc does not sweep it; remove it once you know why") from None


def record_keys(store: Store) -> list[str]:
    return [info.key for info in store.list(layout.CONDEMNED_PREFIX)
            if layout.is_condemned_key(info.key)]


def read_record(store: Store, key: str, *, lenient: bool = True) -> Record | str | None:
    """One condemnation record; None if it is gone (deleted between list and get) or empty
    (a PUT cut after its head, docs/format.md "Empty objects": it condemns nothing); its key
    if it is malformed and `lenient`, else the IntegrityError."""
    try:
        data, etag = store.get_with_etag(key)
    except NotFound:
        return None
    if not data:
        return None
    try:
        return decode_record(key, data, etag)
    except IntegrityError:
        if not lenient:
            raise
        return key


def read_records(store: Store, keys: Iterable[str] | None = None, *,
                 lenient: bool = False) -> tuple[list[Record], list[str]]:
    """(records, keys that could not be read).  A record deleted between list and get is
    skipped silently (records are removed only long after their sweep).  lenient=False raises
    on a malformed record."""
    keys = record_keys(store) if keys is None else list(keys)

    def read(key: str) -> Record | str | None:
        return read_record(store, key, lenient=lenient)

    records, bad = [], []
    for got in bounded_map(read, keys, workers=_WORKERS, name="ckptlake-gc"):
        if isinstance(got, Record):
            records.append(got)
        elif isinstance(got, str):
            bad.append(got)
    records.sort(key=lambda r: r.key)
    return records, sorted(bad)


class _RecordCache:
    """Chunk sets of records by key: a record's chunk list never changes (only swept_at does)."""

    def __init__(self) -> None:
        self.chunks: dict[str, frozenset[str]] = {}
        self.unreadable: list[str] = []  # keys of the last listing's unreadable records

    def condemned(self, store: Store) -> tuple[set[str], bool]:
        """(every chunk named in a listed record, whether some record was unreadable)."""
        keys = record_keys(store)
        new = [k for k in keys if k not in self.chunks]
        records, bad = read_records(store, new, lenient=True)
        self.unreadable = bad
        for r in records:
            self.chunks[r.key] = frozenset(r.chunks)
        out: set[str] = set()
        for k in keys:
            out.update(self.chunks.get(k, ()))
        return out, bool(bad)


# ---- the guard ---------------------------------------------------------------------------

def _wait_message(wait: float, chunks: int, unreadable: list[str], again: bool = False) -> str:
    what = f"{chunks} chunk{'s' if chunks != 1 else ''}"
    if again:
        return (f"waiting {wait:.0f} s more to check the {what} again after the commit, for a "
                "gc older than pins (docs/format.md, \"The push side\")")
    if unreadable:
        return (f"waiting {wait:.0f} s to check the {what} of this version: the condemnation "
                f"record {unreadable[0]} is unreadable, so a gc may have swept any of them "
                "(every push waits until it is removed; `ckptlake verify` names it)")
    return (f"waiting {wait:.0f} s to check {what} of this version that a concurrent gc "
            "condemned (docs/format.md, \"The push side\")")


def missing_chunks(store: Store, digests: Iterable[str]) -> set[str]:
    """The chunks to upload again: absent, or empty.  An empty object is what a PUT cut after
    its head leaves on some servers (SeaweedFS; docs/format.md, "Empty objects"), e.g. another
    writer's re-upload of a chunk a sweep had just deleted; taken for present, it committed a
    version whose chunk no pull can read."""
    def absent(d: str) -> str | None:
        try:
            return d if store.stat(layout.chunk_key(d)).size == 0 else None
        except NotFound:
            return d

    return {d for d in bounded_map(absent, sorted(digests), workers=_WORKERS,
                                   name="ckptlake-guard") if d is not None}


# ---- pins -----------------------------------------------------------------------------------

def encode_pin(chunks: Iterable[str]) -> bytes:
    return json.dumps({"ckptlake_pin": PIN_FORMAT, "created": iso(utcnow()),
                       "created_by": user_at_host(), "chunks": sorted(chunks)},
                      separators=(",", ":")).encode()


def decode_pin(key: str, data: bytes) -> set[str]:
    """The chunk digests a pin holds; IntegrityError if it is not a pin this gc can read (gc
    then deletes nothing: the pin may be all that keeps a committing push's chunks)."""
    try:
        raw = json.loads(data)
        if not is_format(raw.get("ckptlake_pin"), PIN_FORMAT):
            raise ValueError("format")
        chunks = {str(d) for d in raw["chunks"]}
        if any(layout.parse_chunk_key(layout.chunk_key(d)) is None for d in chunks):
            raise ValueError("chunks")
        return chunks
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise IntegrityError(f"gc cannot read the pin {key}",
                             hint="gc deletes nothing while a pin is unreadable: upgrade "
                                  "ckptlake if a newer one wrote it, or delete it once no push "
                                  "is committing") from None


def read_pin(store: Store, key: str) -> set[str]:
    """A pin's chunks; none if it is gone (its push finished) or empty (a PUT cut after its
    head); IntegrityError if it is unreadable."""
    try:
        data = store.get(key)
    except NotFound:
        return set()
    return decode_pin(key, data) if data else set()


def new_pin_key() -> str:
    return layout.pin_key(utcnow().strftime("%Y%m%dT%H%M%S.%fZ"), secrets.token_hex(8))


def write_pin(store: Store, chunks: Iterable[str], key: str | None = None) -> str:
    key = key or new_pin_key()
    store.put(key, encode_pin(chunks))
    return key


def _unpin(store: Store, key: str) -> None:
    """Best effort: a pin left behind only keeps chunks a while longer (gc removes it after
    PIN_EXPIRY), so failing to delete it must not fail a push that committed."""
    try:
        store.delete([key])
    except CkptlakeError as exc:
        log.warning("could not delete the pin %s (%s); gc removes it after %s", key, exc,
                    format_duration(PIN_EXPIRY))


class CommittedInterrupt(KeyboardInterrupt):
    """A Ctrl-C (or the CLI's SIGTERM) after guard_commit's commit() returned: `result` is
    what it returned, the committed version.  A KeyboardInterrupt still, for every caller that
    does not look."""

    def __init__(self, result: Any) -> None:
        super().__init__()
        self.result = result


def guard_commit(store: Store, *, referenced: set[str], commit: Callable[[], M],
                 reupload: Callable[[set[str]], None], settings: GcSettings | None = None,
                 started: float | None = None, started_wall: float | None = None,
                 clock: Callable[[], float] | None = None,
                 wall: Callable[[], float] | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 on_wait: Callable[[str], None] | None = None,
                 recheck_after_commit: bool = True) -> M:
    """Commit a push so that a concurrent gc cannot leave it with a swept chunk.

    referenced: every chunk digest the manifest references.  commit(): writes the manifest and
    returns it.  reupload(digests): stores those chunks again from the push's source.
    started, started_wall: clock() and wall() when the push began (before its first chunk was
    checked or uploaded); clock defaults to core.clock.now, wall to time.time.  started=None
    means unknown, and every referenced chunk is checked before the commit.  settings: fixed
    settings (tests); None reads gc/settings.json after the pin and again after the commit.
    on_wait(message): told before each wait, which lasts up to `sweep_window` (up to an
    hour): a push must not look hung, and an unreadable record, which makes every push wait,
    must be named.  recheck_after_commit=False: no step 3 (a replica's copy, whose manifest
    was a root before the pin: a gc ignoring pins can hurt it only with a listing older than
    the pin, which step 1 waits out).
    Returns commit()'s result.
    """
    if clock is None:
        def clock() -> float:
            return _clock.now()  # looked up per call: replaceable in tests
    if wall is None:
        def wall() -> float:
            return time.time()

    def age(since: float, since_wall: float | None) -> float:
        """Elapsed time; only ever used where overestimating it is safe."""
        out = clock() - since
        return out if since_wall is None else max(out, wall() - since_wall)

    def restore(at_risk: set[str], since: float, window: float, again: bool = False) -> None:
        """Wait until `window` has passed since `since`, then put back what is missing."""
        wait = since + window + WAIT_MARGIN - clock()
        if wait > 0:
            if on_wait is not None:
                on_wait(_wait_message(wait, len(at_risk), cache.unreadable, again))
            sleep(wait)
        missing = missing_chunks(store, at_risk)
        if missing:
            reupload(missing)

    # Step 0: the pin.  Everything after it is read after it: the settings of every gc whose
    # listing predates the pin were published before that listing, so before the pin.
    pin: str | None = new_pin_key()
    try:
        write_pin(store, referenced, pin)
    except AccessDenied as exc:
        # A role that may write chunks and manifests but not gc/pins/ (set up before pins):
        # the protocol from before them, a check after the commit (docs/format.md).
        log.warning("cannot pin this push's chunks (%s): checking them after the commit "
                    "instead; allow PUT and DELETE on gc/pins/ (docs/format.md, \"The push "
                    "side\")", exc)
        pin = None
    except BaseException:
        # the PUT may have landed before it failed (retries spent, Ctrl-C): no commit follows,
        # so the pin would only keep its chunks for 2 days
        _unpin(store, pin)
        raise
    pinned, pinned_wall = clock(), wall()
    keep_pin = False
    try:
        before = settings or read_settings(store)
        cache = _RecordCache()
        # Chunks checked at `since` or later need only records younger than record_retention;
        # `since` is the start of the push, or of a check of every referenced chunk.
        since, since_wall = started, started_wall
        # Step 1.  A sweep that can still delete a chunk after this listing listed its roots
        # before the pin, so its record, written before that, is listed now: those chunks
        # are waited for.  Chunks deleted before this listing are found by a HEAD; the records
        # of such deletions may be gone once the push has run for record_retention, so then
        # every chunk is checked (without a wait: what deleted it is over).
        condemned, unreadable = cache.condemned(store)
        at_risk = set(referenced) if unreadable else referenced & condemned
        long_run = before.record_retention - before.sweep_window
        if since is None or age(since, since_wall) >= long_run:
            since, since_wall = clock(), wall()
            missing = missing_chunks(store, set(referenced) - at_risk)
            if missing:
                reupload(missing)
        if at_risk and pin is not None:
            restore(at_risk, pinned, before.sweep_window)
        elif at_risk:  # no pin: restore what is gone now, and check again after the commit
            missing = missing_chunks(store, at_risk)
            if missing:
                reupload(missing)
        if pin is not None and age(pinned, pinned_wall) > PIN_MAX_AGE:
            raise TransferError(
                f"this push spent {format_duration(age(pinned, pinned_wall))} between pinning "
                f"its chunks and its commit, longer than {format_duration(PIN_MAX_AGE)}: gc may "
                "have removed the pin, so nothing was committed", hint="push again")
        # Step 2.
        try:
            result = commit()
        except BaseException as exc:
            # A commit whose outcome is unknown (or cut short) may still land: its chunks stay
            # pinned until gc expires the pin, so a late manifest is not missing one.
            keep_pin = isinstance(exc, (OutcomeUnknown, Interrupted)) \
                or not isinstance(exc, CkptlakeError)
            raise
        committed = clock()
        try:
            if not recheck_after_commit and pin is not None:
                return result
            # Step 3, for gc runs that do not read pins: sweeps that raced the commit, bounded
            # by the settings read *now* (such a gc published its settings before the listing
            # that missed our manifest).
            after = settings or _settings_after_commit(store)
            window = max(before.sweep_window, after.sweep_window)
            retention = min(before.record_retention, after.record_retention)
            condemned, unreadable = cache.condemned(store)
            if unreadable or age(since, since_wall) >= retention:
                at_risk = set(referenced)  # records of a sweep that hit us may be gone
            else:
                at_risk = referenced & condemned
            if at_risk:
                restore(at_risk, committed, window, again=pin is not None)
            return result
        except KeyboardInterrupt as exc:
            # committed: the caller must say which version, or a retry pushes it again; the
            # pin stays (gc expires it), as step 3 may not have put back a swept chunk
            keep_pin = True
            raise CommittedInterrupt(result) from exc
    finally:
        if pin is not None and not keep_pin:
            _unpin(store, pin)
