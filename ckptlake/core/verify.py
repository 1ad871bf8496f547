"""verify: can every version be restored?  (restic's `check`.)

What is checked, always with the readers pull and gc use (never a second parser of the format):

* the lake header (format/header.py);
* every manifest under `@v/` decodes and validates as pull validates it, and names itself
  (its `artifact` and `version` match its key); its chunks are checked with its own `hash`,
  as pull reads them (one that differs from the header's is a warning: a lost header
  rewritten by an older ckptlake; one this ckptlake cannot hash with, unknown or BLAKE3
  without the blake3 package, makes the version unrestorable, as pull stops on it);
* every chunk a manifest references exists, with a size that can hold what the manifests say:
  a chunk referenced whole (a slice) must be exactly that size; a pack must reach at least the
  end of every file read from it (a sharded commit may keep a file from one rank's pack and
  drop the same file from another's, so a pack may be longer than its references: the format
  guarantees only the lower bound);
* the listing summary (`@s/` key) readers would use for a version agrees with its manifest
  (whole lake or one artifact: they come with the listing); one that does not is a warning
  naming its key: `ls` shows it, and deleting the key makes readers read the manifest;
* tombstones decode and name their own version (an unreadable one is a problem: readers skip
  it, and a sharded step committed as that version could be committed again);
* aliases parse and point at a version whose manifest exists (one gc deleted is a problem:
  pulls of it fail);
* shard records and claims parse, committed claims point at their manifest (or its tombstone),
  and the chunks of steps not committed yet exist (gc keeps them as roots, so they must);
  pending steps are classified like `ls --pending` (stale/failed ones are warnings);
* condemnation records, pins (gc_guard) and gc/settings.json parse; incomplete multipart
  uploads of lake keys are listed (gc aborts them after its grace period: not a problem);
* orphan chunks (referenced by no manifest and no uncommitted shard record) are counted, not
  reported as problems: gc collects them.  Not while a manifest is unreadable, though: its
  chunks may be among them, and gc refuses to run until it is repaired or removed (its
  problem says so: `blocks_gc`).

`read_data` downloads each referenced chunk once and re-hashes it (and the files packed in it
against their own digests); `subset` does that for a reproducible subset of the distinct
chunks: a chunk is chosen by SHA-256(seed, digest), so the same seed picks the same chunks, and
`N/M` subsets of one seed partition the chunks (1/5 .. 5/5 read everything once).

Problems are reported per version: a version is *unrestorable* when its manifest is unusable
or one of its chunks is missing, the wrong size or corrupt.  Working out which versions a bad
chunk hurts re-reads the manifests, only when some chunk is bad.

Cost: one listing of `artifacts/` (of the scope), one GET per manifest, tombstone, alias, shard
record and claim, one listing of `chunks/` (whole lake; for one artifact or version, only while
listing is cheaper than one HEAD per chunk, else HEADs for the rest).  No chunk is read
without `read_data`.

Memory: the distinct referenced chunks, as 32-byte digests with one int of required size each,
plus one sorted list of them: 125 bytes per chunk (tracemalloc, 400k chunks: 50 MB; ~125 MB for
a lake of 1M chunks).  The listing of `artifacts/` keeps one entry per version, alias and shard
step, and each version's summary key (usually under 200 characters, at most 800); manifests
are decoded 16 at a time (as gc reads them) and dropped.  With `read_data`, also the (offset,
size, digest) of each file packed in a chosen pack (~100 bytes per small file), and one chunk
buffer per worker (concurrency x chunk size, as pull).
"""
from __future__ import annotations

import hashlib
import json
import mmap
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterator

from ..errors import CkptlakeError, IntegrityError, NewerEncoding, NotFound, UsageError
from ..format import layout
from ..format.header import (LEGACY_HASH, SUPPORTED_HASHES, LakeHeader, check_hash,
                             decode_header)
from ..format.header import digest as hash_of
from ..format.manifest import Manifest, decode_manifest
from ..format.refs import Ref, parse_ref, validate_alias, validate_artifact
from ..results import VerifyResult
from ..store.base import ObjectInfo, Store
from ..transfer.parts import Parts
from ..transfer.pool import bounded_map
from ..transfer.progress import NullProgress, Progress
from ..transfer.throttle import Throttle
from ..format.codecs import frame_rawlen, looks_framed
from .chunkio import DECODERS, ChunkBuffers, anonymous, fix_mmap_threshold, open_object
from .createonce import EMPTY_NOTE, EMPTY_RECORD_NOTE
from .identity import iso, utcnow

_META_WORKERS = 16
# A listing page (1000 keys) costs about 8 HEADs (core/push.py): a scoped verify lists
# chunks/ only while that stays cheaper than a HEAD per referenced chunk.
_HEADS_PER_LIST_PAGE = 8
_LIST_PAGE_KEYS = 1000
_SHOWN = 5  # chunk keys named in one problem message
_UPLOADS_SHOWN = 100


# ---- --read-data-subset ----------------------------------------------------------------------

_PERCENT = re.compile(r"([0-9]+(?:\.[0-9]+)?)%")
_PART = re.compile(r"([0-9]+)/([0-9]+)")


@dataclass(frozen=True)
class Subset:
    """Which distinct chunks `--read-data-subset` reads: a fraction, or part n of m."""

    text: str
    fraction: float | None = None
    part: tuple[int, int] | None = None

    def keeps(self, chunk: bytes, seed: int) -> bool:
        h = int.from_bytes(hashlib.sha256(f"{seed}\0".encode() + chunk).digest()[:8], "big")
        if self.part is not None:
            n, m = self.part
            return h % m == n - 1
        assert self.fraction is not None
        return h < self.fraction * 2 ** 64


def parse_subset(value: "str | float | Subset") -> Subset:
    """'5%' (0 < p <= 100), 'N/M' (1 <= N <= M) or a fraction 0 < f <= 1."""
    if isinstance(value, Subset):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not 0 < value <= 1:
            raise UsageError(f"read-data subset fraction must be in (0, 1], got {value}")
        return Subset(text=f"{value * 100:g}%", fraction=float(value))
    text = str(value).strip()
    if m := _PERCENT.fullmatch(text):
        p = float(m.group(1))
        if not 0 < p <= 100:
            raise UsageError(f"--read-data-subset {text}: the percentage must be in (0, 100]")
        return Subset(text=text, fraction=p / 100)
    if m := _PART.fullmatch(text):
        n, total = int(m.group(1)), int(m.group(2))
        if not 1 <= n <= total:
            raise UsageError(f"--read-data-subset {text}: N/M needs 1 <= N <= M",
                             hint="e.g. 1/5 .. 5/5 read every chunk once over five runs")
        return Subset(text=text, part=(n, total))
    raise UsageError(f"--read-data-subset {text!r}: expected N% or N/M",
                     hint="e.g. --read-data-subset 5% or --read-data-subset 2/7")


# ---- what the manifests require of each chunk ------------------------------------------------

def _need(size: int, offset: int | None) -> int:
    """A requirement as one int: (bytes << 1) | exact.  A slice needs exactly its size; a pack
    at least the end of the file read from it."""
    return (size << 1) | 1 if offset is None else (offset + size) << 1


def _fits(need: int, actual: int) -> bool:
    return actual == need >> 1 if need & 1 else actual >= need >> 1


class _Refs:
    """digest -> the strictest requirement the references put on its object.

    Two requirements no single size meets (two slice sizes, a pack end beyond a slice) mean a
    manifest lies; the chunk is then checked per reference when blaming versions."""

    def __init__(self) -> None:
        self.need: dict[bytes, int] = {}
        self.conflicting: set[bytes] = set()
        # digest -> the stored size a manifest recorded for an encoded chunk (Manifest.stored):
        # an object of that size passes the size check like a raw one of the raw size
        self.hint: dict[bytes, int] = {}
        # digests two manifests recorded at different stored sizes: a push that reused a frame
        # cut short (its head intact) recorded the cut size, so the size alone proves nothing
        # and the object is read and decoded (_probe_frames)
        self.contested: set[bytes] = set()
        # Most chunks of a lake have the same size: share one int object per requirement
        # (28 bytes a chunk saved; CPython caches only ints up to 256).
        self._ints: dict[int, int] = {}

    def add(self, d: bytes, size: int, offset: int | None) -> None:
        new = _need(size, offset)
        new = self._ints.setdefault(new, new) if len(self._ints) < 4096 else new
        old = self.need.get(d)
        if old is None or old == new:
            self.need[d] = new
            return
        if old & 1 and new & 1:
            self.conflicting.add(d)
        elif old & 1:
            if (new >> 1) > (old >> 1):
                self.conflicting.add(d)
        elif new & 1:
            if (old >> 1) > (new >> 1):
                self.conflicting.add(d)
            self.need[d] = new
        elif new > old:
            self.need[d] = new

    def add_manifest(self, m: Manifest) -> None:
        for d, n in m.stored.items():
            b = bytes.fromhex(d)
            if self.hint.setdefault(b, n) != n:
                self.contested.add(b)
        for f in m.files:
            for c in f.chunks:
                self.add(bytes.fromhex(c.digest), c.size, c.offset)


# ---- the scope's objects ---------------------------------------------------------------------

@dataclass
class _Listing:
    """One listing of `artifacts/` (or of one artifact), sorted by kind."""

    versions: dict[tuple[str, int], int] = field(default_factory=dict)  # -> manifest size
    # when each manifest was written: a summary older than it is not used (summary.usable)
    written: dict[tuple[str, int], datetime] = field(default_factory=dict)
    # (artifact, N) -> the tombstone keys listed for it: zero-padded, as writers write them,
    # or not (layout.parse_tombstone_key takes both; next_number and lineage count either)
    tombs: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    # (artifact, N) -> its listing summaries (@s/ keys) as (key, time written); usually one
    summaries: dict[tuple[str, int], list[tuple[str, datetime]]] = field(default_factory=dict)
    aliases: list[tuple[str, str]] = field(default_factory=list)
    steps: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)
    # zero-byte create-once objects (a PUT cut after its head): absent, reported as warnings
    empties: list[str] = field(default_factory=list)
    # keys under @v/ or @tomb/ that name no version (`@v/42.json`, `@tomb/042.json`): every
    # reader ignores them, so one meant as a manifest or a deletion counts for nothing
    strays: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, store: Store, artifact: str | None) -> "_Listing":
        out = cls()
        prefix = layout.ARTIFACTS_PREFIX + (f"{artifact}/" if artifact else "")
        for info in store.list(prefix):
            key = info.key
            if info.size == 0 and any(p(key) for p in _CREATE_ONCE):
                if _mine(_artifact_of(key), artifact):
                    out.empties.append(key)
            elif (parsed := layout.parse_version_key(key)) and _mine(parsed[0], artifact):
                out.versions[parsed] = info.size
                out.written[parsed] = info.modified
            elif (tomb := layout.parse_tombstone_key(key)) and _mine(tomb[0], artifact):
                out.tombs.setdefault(tomb, []).append(key)
            elif (alias := layout.parse_alias_key(key)) and _mine(alias[0], artifact):
                out.aliases.append(alias)
            elif (shard := layout.parse_shard_key(key)) and _mine(shard[0], artifact):
                g = out.steps.setdefault((shard[0], shard[1]), {"records": {}, "claim": False})
                if shard[2] is None:
                    g["claim"] = True
                else:
                    g["records"][(shard[2], shard[3])] = key
            elif (summ := layout.parse_summary_key(key)) and _mine(summ[0], artifact):
                out.summaries.setdefault(summ[:2], []).append((key, info.modified))
            elif (stray := _RECORD_DIR.fullmatch(key)) and _mine(stray.group(1), artifact):
                out.strays.append(key)
        return out

    @property
    def empty(self) -> bool:
        return not (self.versions or self.tombs or self.aliases or self.steps)


_RECORD_DIR = re.compile(r"artifacts/(.+)/@(?:v|tomb)/[^/]+")

_CREATE_ONCE = (layout.parse_version_key, layout.parse_tombstone_key, layout.parse_alias_key,
                layout.parse_shard_key)


def _artifact_of(key: str) -> str:
    for parse in _CREATE_ONCE:
        if parsed := parse(key):
            return parsed[0]  # type: ignore[index,no-any-return]
    return ""


def _mine(artifact: str, scope: str | None) -> bool:
    return scope is None or artifact == scope


# ---- the run ---------------------------------------------------------------------------------

def _same_metrics(a: dict[str, float], b: dict[str, float]) -> bool:
    """Equal, a NaN equal to a NaN (another writer may record one; readers skip it)."""
    return a.keys() == b.keys() and all(
        x == y or (x != x and y != y) for x, y in ((a[k], b[k]) for k in a))


class _Run:
    def __init__(self, store: Store, *, lake_url: str, concurrency: int, parts: Parts | None,
                 throttle: Throttle | None, progress: Progress) -> None:
        self.store, self.lake_url = store, lake_url
        self.concurrency = max(1, concurrency)
        self.parts, self.throttle = parts, throttle or Throttle(None)
        self.progress = progress
        self.problems: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        # The header's, once read.  Without one: the manifests' own (collect), else SHA-256,
        # what every lake before BLAKE3 used; never DEFAULT_HASH, which is for new lakes.
        self.algo = LEGACY_HASH
        # digest -> every hash the manifests referencing it name, for digests one of them
        # names with another hash than self.algo (a header that disagrees with its
        # manifests): usually empty.  A set, not one hash: a manifest naming a wrong hash
        # must not decide how a chunk another version shares is judged.
        self.chunk_algo: dict[bytes, set[str]] = {}
        # (digest, hash) of chunks that match their digest under another hash naming them
        # but not under this one: corrupt only for the versions whose manifest names it
        self.wrong_hash: set[tuple[bytes, str]] = set()
        self._hash_why: dict[str, str | None] = {}  # hash -> why this ckptlake cannot use it
        self.header: LakeHeader | None = None
        self.refs = _Refs()
        self.live_extra: set[bytes] = set()  # unreadable manifests' chunks: not orphans
        self.good: list[tuple[str, int]] = []  # versions whose manifest is usable
        # set by blame: versions deleted while verify ran, and the missing chunks still
        # referenced (None: blame found nothing to re-read)
        self.gone: set[tuple[str, int]] = set()
        self.missing_referenced: set[bytes] | None = None
        self.bad_versions: dict[tuple[str, int], str] = {}  # -> why unusable
        self.commit_ids: dict[tuple[str, int], str] = {}
        self.root_records: list[str] = []  # shard records of uncommitted steps
        self.aliases_to: dict[tuple[str, int], list[str]] = {}
        self.aliases_checked = 0
        self.pending: list[dict[str, Any]] = []
        self.steps_checked = 0
        self.missing: set[bytes] = set()
        self.sizes: dict[bytes, int] = {}  # listed size of chunks whose size does not fit
        self.corrupt: set[bytes] = set()
        # of those (and of the wrong-sized), the ones in an encoding this ckptlake does not
        # know: a newer writer's, not damage (reported apart: upgrade, then verify again)
        self.newer: set[bytes] = set()
        # (pack, offset, size, file digest) of packed files whose bytes do not match
        self.bad_packed: set[tuple[bytes, int, int, bytes]] = set()
        self.orphans: int | None = None
        self.orphan_bytes: int | None = None
        self.chunks_read = 0
        self.bytes_read = 0
        self.bytes_referenced = 0
        self.records = 0
        self.uploads: list[dict[str, str]] = []
        self.upload_count = 0
        self._lock = threading.Lock()
        # --read-data: which chunks, and the files packed in them (None: no data is read)
        self.subset: Subset | None = None
        self.seed = 0
        self.pack_files: dict[bytes, set[tuple[int, int, bytes]]] | None = None
        # packed files of several ranges, as (hash, file digest, chunk refs in file order):
        # their digest covers the pieces together, so they are read apart (_check_assembled)
        self.assembled: set[tuple[str, bytes, tuple[Any, ...]]] = set()

    def problem(self, kind: str, message: str, *, artifact: str | None = None,
                version: int | None = None, **extra: Any) -> None:
        self.problems.append({"kind": kind, "artifact": artifact, "version": version,
                              "message": message, **extra})

    # -- header
    def check_header(self) -> bool:
        """False if the lake has no header (an empty lake, or a broken one)."""
        try:
            data = self.store.get(layout.HEADER_KEY)
            if not data:
                self.warnings.append(f"{layout.HEADER_KEY} is an {EMPTY_NOTE}")
                return False
            self.header = decode_header(data)
            self.algo = self.header.hash
            return True
        except NotFound:
            return False
        except IntegrityError as exc:
            self.problem("header", f"the lake header is unusable: {exc}", key=layout.HEADER_KEY)
            return True

    # -- manifests
    def _read_manifest(self, item: tuple[str, int]) -> tuple[tuple[str, int], Any]:
        artifact, n = item
        key = layout.version_key(artifact, n)
        try:
            data = self.store.get(key)
        except NotFound:
            return item, None  # deleted since the listing (gc): nothing to restore any more
        try:
            m = decode_manifest(data, key=key)
        except IntegrityError as exc:
            return item, (str(exc), data)
        if m.artifact != artifact or m.version != n:
            return item, (f"{key} claims to be {m.artifact}@v{m.version}", data)
        return item, m

    def read_manifests(self, versions: dict[tuple[str, int], int], *, report: bool = True
                       ) -> Iterator[tuple[tuple[str, int], Manifest]]:
        """Decode each manifest once; usable ones are yielded, the rest recorded."""
        if report:
            self.progress.start(phase="verify manifests", total_bytes=sum(versions.values()),
                                total_files=0)
        try:
            for item, got in bounded_map(self._read_manifest, sorted(versions),
                                         workers=_META_WORKERS, name="ckptlake-verify"):
                if report:
                    self.progress.advance(versions[item])
                if got is None:
                    continue
                if isinstance(got, Manifest):
                    yield item, got
                elif report:
                    why, data = got
                    self.bad_versions[item] = why
                    seen = _lenient_digests(data)
                    extra = {} if seen is not None else {"blocks_gc": True}
                    self.problem("manifest", f"v{item[1]} of {item[0]} cannot be restored: "
                                 f"its manifest is unusable: {why}", artifact=item[0],
                                 version=item[1], key=layout.version_key(*item), **extra)
                    self.live_extra.update(seen or ())
        finally:
            if report:
                self.progress.finish()

    def collect(self, versions: dict[tuple[str, int], int],
                listing: "_Listing | None" = None) -> None:
        from .shards import META_COMMIT_ID

        hashes: set[str] = set()
        # hash -> the versions whose manifest names it although the header names another
        other: dict[str, list[tuple[str, int]]] = {}
        for item, m in self.read_manifests(versions):
            if (why := self.unusable(m.hash)) is not None:
                # pull stops on this manifest before reading a chunk (exit 5, or 2 without
                # the blake3 package): not restorable here, whatever its chunks hold
                self.bad_versions[item] = why
                self.problem("manifest", f"v{item[1]} of {item[0]} cannot be restored: its "
                             f"manifest is unusable: {why}", artifact=item[0],
                             version=item[1], key=layout.version_key(*item))
                self.live_extra.update(_digests(m))  # still referenced: not orphans
                continue
            self.good.append(item)
            self.add(m)
            if listing is not None:
                self.check_summary(item, m, listing)
            hashes.add(m.hash)
            if self.header is not None and m.hash != self.header.hash:
                other.setdefault(m.hash, []).append(item)
            if META_COMMIT_ID in m.metadata:
                self.commit_ids[item] = m.metadata[META_COMMIT_ID]
        if self.header is None and len(hashes) == 1 and hashes <= set(SUPPORTED_HASHES):
            # a lost header (reported as a problem): the manifests still say how their chunks
            # are named, so --read-data does not call every chunk of a BLAKE3 lake corrupt
            self.algo = hashes.pop()
            self.chunk_algo = {d: a for d, a in self.chunk_algo.items() if a != {self.algo}}
        for algo, items in sorted(other.items()):
            # A reader verifies a manifest's chunks with the manifest's own hash (pull does):
            # such versions restore.  The usual cause: a lost BLAKE3 header rewritten as
            # SHA-256 by a ckptlake older than BLAKE3, which knows no other hash.
            assert self.header is not None
            first = min(items)
            count = f"{len(items)} version{'s' if len(items) != 1 else ''}"
            self.warnings.append(
                f"the manifests of {count} (first: {first[0]}@v{first[1]}) name hash "
                f"{algo!r}, the lake header {self.header.hash!r} (a lost header rewritten by "
                f"an older ckptlake?): their chunks are checked with {algo}, as pull reads "
                f"them; new pushes use the header's {self.header.hash}")

    def check_summary(self, item: tuple[str, int], m: Manifest, listing: _Listing) -> None:
        """Compare the listing summary readers would use for this version (the same choice
        as theirs: summary.summaries_from, then usable) with its manifest.  `ls` and step=N
        selectors trust a usable summary over the manifest, so a wrong one shows wrong sizes
        or resolves a step to the wrong version; a warning, since the manifest (what pull
        restores) is right and deleting the summary key repairs it (readers then read the
        manifest)."""
        from .summary import summaries_from, usable

        listed = listing.summaries.get(item)
        if not listed:
            return
        artifact, n = item
        infos = [ObjectInfo(key=key, size=0, etag="", modified=t) for key, t in listed]
        s = summaries_from(artifact, infos).get(n)
        if s is None or not usable(s, listing.written.get(item)):
            return  # undecodable or older than the manifest: readers ignore it
        key = next((i.key for i in infos if summaries_from(artifact, [i]).get(n) == s),
                   infos[-1].key)
        said: list[tuple[str, Any, Any]] = [
            ("step", s.step, m.step), ("created", s.created, m.created),
            ("created_by", s.created_by, m.created_by),
            ("total_bytes", s.total_bytes, m.total_bytes), ("files", s.files, len(m.files)),
            ("stored_bytes", s.stored_bytes, m.stored_bytes),
            ("metrics", s.metrics, {k: float(v) for k, v in m.metrics.items()})]
        if s.metadata is not None:
            said.append(("metadata", s.metadata, {k: str(v) for k, v in m.metadata.items()}))
        wrong = []
        for name, summary, manifest in said:
            if summary == manifest or (name == "metrics" and _same_metrics(summary, manifest)):
                continue
            if isinstance(summary, datetime):
                summary, manifest = iso(summary), iso(manifest)
            wrong.append(name if isinstance(summary, dict)
                         else f"{name} {summary!r}, manifest {manifest!r}")
        if wrong:
            self.warnings.append(
                f"the listing summary of {artifact}@v{n} disagrees with its manifest "
                f"({'; '.join(wrong)}): ls shows the summary's; delete {key} and readers "
                "read the manifest instead")

    def check_lost(self, listing: _Listing) -> None:
        """A version with a listing summary but neither a manifest nor a tombstone was lost
        outside ckptlake (gc.lost_versions): not restorable, and gc refuses to run until its
        manifest is restored or its summary deleted (its chunks would be swept)."""
        from .gc import lost_versions

        for artifact, n in lost_versions(self.store, listing.summaries, listing.versions,
                                         listing.tombs):
            self.problem("manifest", f"v{n} of {artifact} is lost: its manifest is gone and no "
                         "tombstone says it was deleted (its listing summary remains)",
                         artifact=artifact, version=n, key=layout.version_key(artifact, n),
                         blocks_gc=True,
                         hint="restore the manifest from bucket versioning or a backup before "
                              "anything else (gc refuses to run meanwhile: a sweep would take "
                              f"its chunks); if it is gone for good, record it as deleted: "
                              f"ckptlake rm {artifact}@v{n}")

    def check_tombstones(self, listing: _Listing) -> None:
        """Each tombstone must decode and name its own version.  An unreadable one is a
        problem, as an unreadable alias or shard record is: readers skip it silently (ls --all
        and lineage leave the version out, pull calls it nonexistent), and a takeover of the
        sharded step committed as that version no longer sees the step was committed, so it
        commits it again under a new number (core/shards.py, _own_tombstone).

        Each is read at the key listed: an unpadded `@tomb/8.json` (which the listing parses
        as N=8, like its readers) was once read at the padded key, found absent and skipped.
        One a newer ckptlake wrote (`ckptlake_tombstone` above ours) is a problem too, as a
        newer manifest is (this ckptlake's readers skip it just the same), but it is no
        damage: the advice is to upgrade, not to restore a backup."""
        from .tombstones import TOMBSTONE_FORMAT, decode, newer_format

        def read(item: tuple[str, int, str]) -> tuple[tuple[str, int, str], bytes | None]:
            try:
                return item, self.store.get(item[2])
            except NotFound:
                return item, None

        items = sorted((artifact, n, key) for (artifact, n), keys in listing.tombs.items()
                       for key in keys)
        for (artifact, n, key), data in bounded_map(read, items, workers=_META_WORKERS,
                                                    name="ckptlake-verify"):
            if not data:
                continue  # removed since the listing (rm replaces a stale one), or emptied
            tomb = decode(data)
            if tomb is None and (fmt := newer_format(data)) is not None:
                self.problem("tombstone", f"the tombstone of v{n} of {artifact} was written by "
                             f"a newer ckptlake (tombstone format {fmt}; this one reads "
                             f"{TOMBSTONE_FORMAT}) ({key}): this ckptlake's ls --all, lineage "
                             f"and pull do not know v{n} was deleted", artifact=artifact,
                             version=n, key=key,
                             hint="upgrade ckptlake, then verify again; do not delete or "
                                  f"replace it: it keeps v{n}'s number from being handed out "
                                  "again")
                continue
            if tomb is None:
                why = "not a readable tombstone"
            elif (tomb.artifact, tomb.version) != (artifact, n):
                why = f"it claims to be {tomb.artifact}@v{tomb.version}"
            else:
                continue
            self.problem("tombstone", f"the tombstone of v{n} of {artifact} is unusable: {why} "
                         f"({key}); ls --all, lineage and pull no longer know v{n} was deleted",
                         artifact=artifact, version=n, key=key,
                         hint=f"put a readable tombstone back at {key} (from the bucket's "
                              "object versioning or a backup); do not delete it: it keeps "
                              f"v{n}'s number from being handed out again, and a sharded step "
                              "committed as it would be committed again")

    def add(self, m: Manifest) -> None:
        """Record what `m` requires of its chunks; with --read-data also the (offset, size,
        digest) of each file packed in a chosen pack: a pack whose digest matches may still be
        cut wrongly by a manifest."""
        if self.unusable(m.hash) is not None:  # an uncommitted shard record's: cannot judge
            self.live_extra.update(_digests(m))
            return
        if m.hash != self.algo or self.chunk_algo:
            for d in _digests(m):
                named = self.chunk_algo.get(d)
                if named is None:
                    if m.hash == self.algo:
                        continue
                    # referenced before, with no entry: by manifests naming self.algo
                    named = self.chunk_algo[d] = {self.algo} if d in self.refs.need else set()
                named.add(m.hash)
        self.refs.add_manifest(m)
        if self.pack_files is None:
            return
        for f in m.files:
            if f.digest is None:
                continue
            if len(f.chunks) > 1 and any(c.offset is not None for c in f.chunks):
                if self.subset is None or any(
                        self.subset.keeps(bytes.fromhex(c.digest), self.seed) for c in f.chunks):
                    self.assembled.add((m.hash, bytes.fromhex(f.digest), f.chunks))
                continue
            for c in f.chunks:
                if c.offset is None:
                    continue
                d = bytes.fromhex(c.digest)
                if self.subset is None or self.subset.keeps(d, self.seed):
                    self.pack_files.setdefault(d, set()).add(
                        (c.offset, c.size, bytes.fromhex(f.digest)))

    # -- aliases
    def check_aliases(self, listing: _Listing) -> None:
        from .catalog import _decode_alias

        def read(item: tuple[str, str]) -> tuple[tuple[str, str], Any]:
            try:
                return item, self.store.get(layout.alias_key(*item))
            except NotFound:
                return item, None

        for (artifact, name), data in bounded_map(read, listing.aliases, workers=_META_WORKERS,
                                                  name="ckptlake-verify"):
            if not data:
                continue  # removed since the listing, or emptied: no alias (alias --delete)
            self.aliases_checked += 1
            key = layout.alias_key(artifact, name)
            try:
                validate_alias(name, existing=True)  # (set before the rule took case in)
                n = _decode_alias(data)
            except (UsageError, IntegrityError) as exc:
                self.problem("alias", f"alias {name} of {artifact} is unusable: {exc}",
                             artifact=artifact, key=key, alias=name)
                continue
            self.aliases_to.setdefault((artifact, n), []).append(name)
            if (artifact, n) in listing.versions or self._exists(layout.version_key(artifact, n)):
                continue
            where = "which does not exist"
            if (artifact, n) in listing.tombs or self._exists(
                    layout.tombstone_key(artifact, n)):
                from .tombstones import load

                tomb = load(self.store, artifact, n)
                where = f"{tomb.deleted_text()}" if tomb is not None else "deleted by gc"
            self.problem("alias", f"alias {name} of {artifact} points at v{n}, {where}",
                         artifact=artifact, version=n, key=key, alias=name,
                         hint=f"move it: ckptlake alias {artifact}@vN {name}")

    def _exists(self, key: str) -> bool:
        """Whether `key` exists now: something written after our listing is not a problem."""
        return self.store.exists(key)

    # -- sharded steps
    def check_steps(self, listing: _Listing) -> None:
        from .shards import classify_step, decode_claim, decode_record

        now = utcnow()

        def read(item: tuple[tuple[str, int], dict[str, Any]]) -> dict[str, Any]:
            (artifact, step), g = item
            got: dict[str, Any] = {"artifact": artifact, "step": step, "claim": None,
                                   "errors": [], "records": {}}
            if g["claim"]:
                key = layout.shard_claim_key(artifact, step)
                try:
                    got["claim"] = decode_claim(self.store.get(key), key=key)
                except NotFound:
                    pass
                except IntegrityError as exc:
                    got["errors"].append((key, str(exc)))
            for rw, key in sorted(g["records"].items()):
                try:
                    got["records"][rw] = (key, decode_record(self.store.get(key), key=key))
                except NotFound:
                    pass
                except IntegrityError as exc:
                    got["errors"].append((key, str(exc)))
            return got

        for got in bounded_map(read, sorted(listing.steps.items()), workers=_META_WORKERS,
                               name="ckptlake-verify"):
            artifact, step, claim = got["artifact"], got["step"], got["claim"]
            self.steps_checked += 1
            for key, why in got["errors"]:
                self.problem("shard", f"step {step} of {artifact}: {why}", artifact=artifact,
                             key=key, step=step)
            committed = claim is not None and claim.state == "committed"
            if committed and claim.version is not None:
                n = claim.version
                if (artifact, n) in listing.versions:
                    cid = self.commit_ids.get((artifact, n))
                    if (artifact, n) not in self.bad_versions and cid != claim.commit_id:
                        self.problem("shard", f"step {step} of {artifact} is committed as v{n}, "
                                     f"but v{n} is another commit", artifact=artifact,
                                     version=n, step=step,
                                     key=layout.shard_claim_key(artifact, step))
                    continue
                if (artifact, n) in listing.tombs:
                    continue  # committed, then deleted by gc
                if self._exists(layout.version_key(artifact, n)) or self._exists(
                        layout.tombstone_key(artifact, n)):
                    continue  # committed after our listing
                self.problem("shard", f"step {step} of {artifact} is committed as v{n}, which "
                             "does not exist", artifact=artifact, version=n, step=step,
                             key=layout.shard_claim_key(artifact, step))
            elif committed:
                self.problem("shard", f"step {step} of {artifact}: committed claim without a "
                             "version", artifact=artifact, step=step,
                             key=layout.shard_claim_key(artifact, step))
            # Not committed (or committed without a manifest): its records are roots (gc keeps
            # their chunks), so their chunks must exist.
            for key, record in got["records"].values():
                self.add(record.manifest)
                self.root_records.append(key)
            state = classify_step(artifact, step, set(got["records"]), claim, now=now)
            if state is None:
                continue
            saves = {record.save for _, record in got["records"].values()}
            if len(saves) > 1 and not committed:
                # every push of either save is refused, so nothing ever marks the step failed
                self.warnings.append(
                    f"step {step} of {artifact} holds shard records of {len(saves)} saves: it "
                    f"cannot commit; `ckptlake rm {artifact}@step={step} --pending --yes` "
                    "discards it (with every rank of both stopped)")
            self.pending.append(state.to_dict())
            if state.state in ("stale", "failed", "conflict"):
                discard = (f"`ckptlake rm {artifact}@step={step} --pending --yes` discards it; "
                           "then push every rank again")
                what = {"stale": "its commit looks abandoned: push any rank again to take over",
                        "failed": f"its commit failed ({state.error}): {discard}",
                        "conflict": f"{state.error}: {discard}"}[state.state]
                self.warnings.append(f"step {step} of {artifact} is {state.state}: {what}")

    # -- gc's records
    def check_gc(self) -> None:
        from .gc_guard import GcSettings, read_pin, read_records

        keys = []
        for info in self.store.list(layout.CONDEMNED_PREFIX):
            if not layout.is_condemned_key(info.key):
                continue  # (the prefix itself: a directory marker)
            if info.size == 0:
                self.warnings.append(f"{info.key} is an {EMPTY_RECORD_NOTE}")
            else:
                keys.append(info.key)
        records, bad = read_records(self.store, keys, lenient=True)
        self.records = len(records)
        for key in bad:
            self.problem("gc", f"condemnation record {key} is malformed (gc neither sweeps nor "
                         "removes it)", key=key)
        for info in self.store.list(layout.PINS_PREFIX):
            if layout.is_pin_key(info.key):
                try:
                    read_pin(self.store, info.key)
                except IntegrityError as exc:
                    self.problem("gc", f"{exc} (gc sweeps nothing while it is there, until "
                                 "it expires 2 days after it was written)",
                                 key=info.key)
        try:
            settings = self.store.get(layout.GC_SETTINGS_KEY)
            if not settings:
                self.warnings.append(
                    f"{layout.GC_SETTINGS_KEY} is empty (a gc's write cut after its head): "
                    "pushes assume the slowest gc until the next gc rewrites it")
            else:
                GcSettings.decode(settings)
        except NotFound:
            pass
        except IntegrityError as exc:
            self.problem("gc", str(exc), key=layout.GC_SETTINGS_KEY)
        for up in self.store.list_multipart(""):
            if layout.is_lake_key(up.key):
                self.upload_count += 1
                if len(self.uploads) < _UPLOADS_SHOWN:
                    self.uploads.append({"key": up.key, "upload_id": up.upload_id,
                                         "initiated": iso(up.initiated)})

    # -- chunks
    def check_chunks(self, *, whole_lake: bool) -> None:
        """One merge of the sorted referenced digests with the key-ordered chunk listing.

        In a scoped run the listing stops after its budget; referenced chunks beyond the last
        listed key are then checked with a HEAD each."""
        need = self.refs.need
        order = sorted(need)
        self.bytes_referenced = sum(v >> 1 for v in need.values())
        budget = None if whole_lake else \
            max(1, len(order) // _HEADS_PER_LIST_PAGE) * _LIST_PAGE_KEYS
        self.progress.start(phase="verify chunks", total_bytes=self.bytes_referenced,
                            total_files=0)
        orphans = orphan_bytes = listed = foreign = 0
        first_foreign = ""
        i = 0
        complete = True
        try:
            if order or whole_lake:
                for info in self.store.list(layout.CHUNKS_PREFIX):
                    listed += 1
                    if budget is not None and listed > budget:
                        complete = False
                        break
                    hexd = layout.parse_chunk_key(info.key)
                    if hexd is None or len(hexd) % 2:
                        foreign += 1
                        first_foreign = first_foreign or info.key
                        continue
                    d = bytes.fromhex(hexd)
                    while i < len(order) and order[i] < d:
                        self.missing.add(order[i])
                        i += 1
                    if i < len(order) and order[i] == d:
                        self._sized(d, info.size)
                        i += 1
                    elif d not in self.live_extra:
                        orphans += 1
                        orphan_bytes += info.size
            rest = order[i:]
            if complete:
                self.missing.update(rest)
                self._confirm()
            else:
                self._confirm()  # what the listing found; the HEADs below are fresh
                def stat(d: bytes) -> tuple[bytes, int | None]:
                    try:
                        return d, self.store.stat(layout.chunk_key(d.hex())).size
                    except NotFound:
                        return d, None

                for d, size in bounded_map(stat, rest, workers=_META_WORKERS,
                                           name="ckptlake-verify"):
                    if size is None:
                        self.missing.add(d)
                    else:
                        self._sized(d, size)
                self._probe_frames()
        finally:
            self.progress.finish()
        if foreign:
            what = "keys under {} are not chunk keys" if foreign != 1 else \
                "key under {} is not a chunk key"
            self.warnings.append(f"{foreign} {what.format(layout.CHUNKS_PREFIX)} (first: "
                                 f"{first_foreign}); not the lake's, gc leaves them alone")
        if whole_lake:
            self.orphans, self.orphan_bytes = orphans, orphan_bytes

    def _confirm(self) -> None:
        """HEAD each chunk the listing found missing or of the wrong size once more: only what
        is still wrong is a problem (a listing is a moment; a chunk a push's gc guard restored
        since, say, is fine).  Only bad chunks cost a request."""
        suspects = sorted(self.missing | set(self.sizes))

        def stat(d: bytes) -> tuple[bytes, int | None]:
            try:
                return d, self.store.stat(layout.chunk_key(d.hex())).size
            except NotFound:
                return d, None

        for d, size in bounded_map(stat, suspects, workers=_META_WORKERS,
                                   name="ckptlake-verify"):
            if size is None:
                self.sizes.pop(d, None)
                self.missing.add(d)
                continue
            self.missing.discard(d)
            self.sizes.pop(d, None)
            if not self._size_ok(d, size):
                self.sizes[d] = size
        self._probe_frames()

    def unusable(self, name: str) -> str | None:
        """Why this ckptlake cannot hash with `name` (pull's check, once per hash), or None."""
        if name not in self._hash_why:
            try:
                check_hash(name)
                self._hash_why[name] = None
            except CkptlakeError as exc:
                self._hash_why[name] = (f"it names hash {name!r}, which this ckptlake "
                                        f"cannot use: {exc.hint or exc.message}")
        return self._hash_why[name]

    def algos_of(self, d: bytes) -> list[str]:
        """The hashes that named chunk `d`: its manifests' (see chunk_algo)."""
        named = self.chunk_algo.get(d)
        return sorted(named) if named else [self.algo]

    def _size_ok(self, d: bytes, size: int) -> bool:
        if d in self.refs.conflicting:
            return False
        need = self.refs.need[d]
        if self.refs.hint.get(d) == size and d not in self.refs.contested:
            return True
        if not need & 1 and size > need >> 1:
            # A pack longer than every file read from it: bytes appended to a raw pack (its
            # size is in no manifest), which a whole pull refuses by its digest; or one only
            # partly read (shared after a sharded merge).  Read and hashed to tell them apart.
            return False
        return _fits(need, size)

    def _probe_frames(self) -> None:
        """A chunk smaller than its raw size that no manifest recorded at that size may be a
        frame another pusher stored (docs/format.md, "Chunk encodings"), one manifests
        recorded at different sizes may be a frame cut short, and a pack longer than every
        file read from it may have bytes appended: read and decode (or hash) those few before
        calling them corrupt (or fine)."""
        suspects = [d for d, size in self.sizes.items()
                    if d not in self.refs.conflicting and (
                        0 < size < self.refs.need[d] >> 1
                        or (not self.refs.need[d] & 1 and size > self.refs.need[d] >> 1))]

        def check(d: bytes) -> tuple[bytes, bool | str | None]:
            try:
                data = self.store.get(layout.chunk_key(d.hex()))
            except NotFound:  # gone since its HEAD (gc swept it): missing, not corrupt
                return d, "gone"
            newer = False
            # known when a file takes it whole: a frame claiming another size is then refused
            # before decoding allocates what it claims (up to 1 GiB)
            need = self.refs.need[d]
            raw = need >> 1 if need & 1 else None
            for algo in self.algos_of(d):
                try:
                    open_object(algo, d.hex(), data, raw_size=raw, where="the lake")
                    return d, True
                except NewerEncoding:
                    newer = True
                except IntegrityError:
                    pass
            return d, None if newer else False

        for d, ok in bounded_map(check, suspects, workers=_META_WORKERS,
                                 name="ckptlake-verify"):
            if ok == "gone":
                self.sizes.pop(d, None)
                self.missing.add(d)
            elif ok:
                self.sizes.pop(d, None)
            elif ok is None:
                self.newer.add(d)

    def _sized(self, d: bytes, size: int) -> None:
        need = self.refs.need[d]
        if not self._size_ok(d, size):
            self.sizes[d] = size
        self.progress.advance(need >> 1)

    # -- --read-data
    def read_data(self) -> None:
        need = self.refs.need
        subset, seed, pack_files = self.subset, self.seed, self.pack_files or {}
        chosen = [d for d in sorted(need) if d not in self.missing and d not in self.sizes
                  and (subset is None or subset.keeps(d, seed))]
        total = sum(need[d] >> 1 for d in chosen)
        capacity = max((need[d] >> 1 for d in chosen), default=1)
        local = threading.local()
        self.progress.start(phase="read chunks", total_bytes=total, total_files=0)

        def check(d: bytes) -> None:
            buf = getattr(local, "buffer", None)
            if buf is None:  # one per worker, reused (as pull); mmap: pages only as touched
                buf = local.buffer = anonymous(max(capacity, 1))
            key = layout.chunk_key(d.hex())
            size = need[d] >> 1
            self.throttle.acquire(size)
            try:
                if self.parts is not None and self.parts.applies(size) and need[d] & 1:
                    data = self.parts.get_into(self.store, key, size, buf)
                else:
                    data = self.store.get_into(key, buf)
            except NotFound:
                with self._lock:
                    self.missing.add(d)  # deleted since the listing
                return
            stored = len(data)
            if looks_framed(data):
                with DECODERS:  # the decoded copy is chunk-sized: a bounded number at once
                    into = decode.take(frame_rawlen(data))
                    try:
                        self._check_read(d, data, size, stored, pack_files, into)
                    finally:
                        decode.give(into)
            else:
                self._check_read(d, data, size, stored, pack_files)
            self.progress.advance(size)

        decode = ChunkBuffers()
        if any(self.refs.hint):
            fix_mmap_threshold()  # decoding allocates chunk-sized buffers (see there)
        try:
            for _ in bounded_map(check, chosen, workers=self.concurrency,
                                 name="ckptlake-verify"):
                pass
        finally:
            self.progress.finish()
        self._check_assembled()

    def _check_assembled(self) -> None:
        """Read each packed file of several ranges as `cat` does, its pieces in file order,
        and hash them together against the file's digest: checking each piece against it
        alone called valid data corrupt.  Rare (no ckptlake pusher writes them), so read
        again rather than held from the pass above.  Files with a chunk already found
        missing, corrupt or of the wrong size are reported by that."""
        from .chunkio import EveryChunk, RangeReader

        for algo, fd, refs in sorted(self.assembled, key=lambda a: (a[0], a[1])):
            digests = [bytes.fromhex(c.digest) for c in refs]
            if any(d in self.missing or d in self.corrupt or d in self.sizes for d in digests):
                continue
            ranges = RangeReader(self.store, algo, EveryChunk(), "the lake")
            try:
                data = b"".join(bytes(ranges.get_range(c.digest, c.offset or 0, c.size))
                                for c in refs)
            except NotFound:  # deleted since the listing (gc): as for chunks read above
                continue
            except IntegrityError:  # a chunk that no longer matches: the file cannot either
                data = b""
            if hash_of(algo, data) != fd.hex():
                with self._lock:
                    self.bad_packed.update((d, c.offset, c.size, fd)
                                           for d, c in zip(digests, refs) if c.offset is not None)

    def _check_read(self, d: bytes, data: Any, size: int, stored: int,
                    pack_files: dict[bytes, Any], into: Any = None) -> None:
        """Decode (if a frame, into `into`) and hash one chunk read by --read-data; record
        the verdict."""
        algos = self.algos_of(d)
        ok = newer = False
        wrong = []
        for i, algo in enumerate(algos):  # one, unless manifests disagree on the hash
            try:  # decoded if it is a frame, then checked against its digest
                data = open_object(algo, d.hex(), data,
                                   raw_size=size if self.refs.need[d] & 1 else None,
                                   where="the lake", into=into)
            except NewerEncoding:
                newer = True
                wrong.append((d, algo))
                continue
            except IntegrityError:
                wrong.append((d, algo))
                continue
            ok = True
            # the others judged on the decoded bytes (decoding again would reuse `into`)
            wrong += [(d, a) for a in algos[i + 1:] if hash_of(a, data) != d.hex()]
            break
        bad = []
        if ok:
            for off, length, fd in pack_files.get(d, ()):
                piece = data[off:off + length]
                if len(piece) != length or hash_of(algo, piece) != fd.hex():
                    bad.append((d, off, length, fd))
        with self._lock:
            self.chunks_read += 1
            self.bytes_read += stored
            if not ok:
                self.corrupt.add(d)
                if newer:
                    self.newer.add(d)
            else:
                self.wrong_hash.update(wrong)
            self.bad_packed.update(bad)

    # -- per version
    def blame(self, versions: dict[tuple[str, int], int]) -> list[dict[str, Any]]:
        """Which versions the bad chunks hurt: re-reads the usable manifests (only called
        when some chunk is bad), and the uncommitted shard records."""
        unrestorable: dict[tuple[str, int], dict[str, Any]] = {}
        for item, why in sorted(self.bad_versions.items()):
            unrestorable[item] = self._entry(item, 0, 0, f"v{item[1]} of {item[0]} cannot be "
                                                         f"restored: its manifest is unusable: "
                                                         f"{why}")
        if not (self.missing or self.sizes or self.corrupt or self.bad_packed
                or self.wrong_hash):
            return list(unrestorable.values())
        wanted = {item: versions.get(item, 0) for item in self.good}
        # What the versions and records still there reference: a version gc deleted (and
        # swept) while verify ran is no problem, and its chunks are not counted as missing.
        self.gone = set(wanted)
        self.missing_referenced = set()
        for item, m in self.read_manifests(wanted, report=False):
            self.gone.discard(item)
            missing, corrupt, files = self._hurt(m)
            self.missing_referenced |= missing
            if not (missing or corrupt or files):
                continue
            what = []
            if missing:
                what.append(f"{len(missing)} chunk{'s' if len(missing) != 1 else ''} missing")
            damaged, newer = corrupt - self.newer, corrupt & self.newer
            if damaged:
                what.append(f"{len(damaged)} chunk{'s' if len(damaged) != 1 else ''} "
                            "corrupt")
            if newer:
                what.append(f"{len(newer)} chunk{'s' if len(newer) != 1 else ''} in an "
                            "encoding of a newer ckptlake (upgrade ckptlake, then verify "
                            "again)")
            if files:
                what.append(f"{len(files)} packed file{'s' if len(files) != 1 else ''} "
                            "do not match their digest")
            keys = [layout.chunk_key(d.hex()) for d in sorted(missing | corrupt)[:_SHOWN]]
            message = (f"v{item[1]} of {item[0]} cannot be restored: {', '.join(what)}"
                       + (f" ({', '.join(keys)})" if keys else "")
                       + (f" [{', '.join(sorted(files)[:_SHOWN])}]" if files else ""))
            entry = unrestorable[item] = self._entry(item, len(missing),
                                                     len(corrupt) + len(files), message)
            self.problem("chunks", entry["message"], artifact=item[0], version=item[1],
                         missing_chunks=len(missing), corrupt_chunks=len(corrupt),
                         chunks=keys)
        from .shards import decode_record

        for key in self.root_records:
            try:
                record = decode_record(self.store.get(key), key=key)
            except (NotFound, IntegrityError):
                continue
            missing, corrupt, files = self._hurt(record.manifest)
            self.missing_referenced |= missing
            if missing or corrupt or files:
                self.problem("shard", f"rank {record.rank} of step {record.step} of "
                             f"{record.artifact} references {len(missing)} missing and "
                             f"{len(corrupt) + len(files)} corrupt chunks: the step would "
                             "commit a version that cannot be restored",
                             artifact=record.artifact, step=record.step, key=key,
                             missing_chunks=len(missing), corrupt_chunks=len(corrupt))
        return [unrestorable[k] for k in sorted(unrestorable)]

    def _hurt(self, m: Manifest) -> tuple[set[bytes], set[bytes], set[str]]:
        missing: set[bytes] = set()
        corrupt: set[bytes] = set()
        files: set[str] = set()
        for f in m.files:
            for c in f.chunks:
                d = bytes.fromhex(c.digest)
                if d in self.missing:
                    missing.add(d)
                elif d in self.corrupt or (d, m.hash) in self.wrong_hash or (
                        d in self.sizes and (d not in self.refs.conflicting or not _fits(
                            _need(c.size, c.offset), self.sizes[d]))):
                    # An object too short for the strictest reference cannot match its
                    # digest, so a pull of every version reading it fails, also of one that
                    # reads only its start (a pack shared after a sharded merge).  Only where
                    # the references disagree (a manifest lies) does each count alone.
                    corrupt.add(d)
                elif c.offset is not None and f.digest is not None and (
                        d, c.offset, c.size, bytes.fromhex(f.digest)) in self.bad_packed:
                    files.add(f.path)
        return missing, corrupt, files

    def _entry(self, item: tuple[str, int], missing: int, corrupt: int,
               message: str) -> dict[str, Any]:
        aliases = sorted(self.aliases_to.get(item, []))
        if aliases:
            message += f" (aliases: {', '.join(aliases)})"
        return {"artifact": item[0], "version": item[1], "missing_chunks": missing,
                "corrupt_chunks": corrupt, "message": message, "aliases": aliases}


def _digests(m: Manifest) -> Iterator[bytes]:
    for f in m.files:
        for c in f.chunks:
            yield bytes.fromhex(c.digest)


def _lenient_digests(data: bytes) -> set[bytes] | None:
    """The chunks an unusable manifest seems to reference (gc counts them as live too), so
    they are not called orphans; None if gc cannot read its chunk list either: gc then
    deletes nothing (core/gc.py), and which chunks are orphans is not known."""
    from .gc import _digests_of

    try:
        raw = json.loads(data)
        return _digests_of(raw, "manifest") if isinstance(raw, dict) else None
    except (ValueError, IntegrityError, RecursionError):  # RecursionError: nested too deep
        return None


def verify(store: Store, ref: "str | Ref | None" = None, *, lake_url: str, concurrency: int,
           read_data: bool = False, subset: "str | float | Subset | None" = None,
           seed: int | None = None, parts: Parts | None = None,
           throttle: Throttle | None = None, progress: Progress | None = None) -> VerifyResult:
    """Check the whole lake (ref None), an artifact ("a/b": every version, alias and shard
    step of it) or one version ("a/b@v3", any selector).  Problems are returned, not raised;
    NotFound only if the scope does not exist."""
    started = time.monotonic()
    chosen = parse_subset(subset) if subset is not None else None
    seed = 0 if seed is None else seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UsageError(f"seed must be an integer, got {seed!r}")
    reading = read_data or chosen is not None
    run = _Run(store, lake_url=lake_url, concurrency=concurrency, parts=parts,
               throttle=throttle, progress=progress or NullProgress())
    if reading:
        run.subset, run.seed, run.pack_files = chosen, seed, {}
    artifact, selected, scope = _scope(ref)
    has_header = run.check_header()
    listing: _Listing | None = None
    if selected is None:
        listing = _Listing.of(store, artifact)
        if artifact is None and not has_header and listing.empty \
                and next(iter(store.list(layout.CHUNKS_PREFIX)), None) is None:
            # (no header, no version, no chunk) in the words of Lake.absent_error: the location
            # may come from the config, the environment or the embedded default, not --lake
            raise NotFound(f"no lake at {lake_url}: nothing was ever pushed there",
                           hint="check the lake location; the first push creates a lake")
        if artifact is not None and listing.empty:
            raise NotFound(f"artifact {artifact} has no versions in this lake",
                           hint="list artifacts with: ckptlake ls")
        versions = listing.versions
    else:
        assert artifact is not None
        if selected.kind == "alias":
            run.aliases_checked = 1  # read and decoded by _resolve
        number = _resolve(store, artifact, selected)
        scope = f"{artifact}@v{number}"
        versions = {(artifact, number): 0}
    if not has_header and versions:
        run.problem("header", f"the lake has versions but no {layout.HEADER_KEY}",
                    key=layout.HEADER_KEY)
    if listing is not None:
        # An empty alias record is what every `alias --delete` leaves (core/catalog.remove_alias)
        # and no alias, by design: a warning on it in every later verify would be noise.
        run.warnings += [f"{key} is an {_empty_note(key, listing)}" for key in listing.empties
                         if not layout.parse_alias_key(key)]
        if listing.strays:
            n = len(listing.strays)
            run.warnings.append(
                f"{n} object{'s' if n != 1 else ''} under @v/ or @tomb/ name{'' if n != 1 else 's'}"
                f" no version (first: {listing.strays[0]}): ckptlake reads neither a manifest "
                "nor a tombstone there (keys are 10-digit zero-padded numbers; a tombstone's may "
                "be unpadded), so whatever it was meant to record counts for nothing")
    run.collect(versions, listing)
    if listing is not None:
        run.check_lost(listing)
        run.check_tombstones(listing)
        run.check_aliases(listing)
        run.check_steps(listing)
    if artifact is None:
        run.check_gc()
    run.check_chunks(whole_lake=artifact is None)
    if reading:
        run.read_data()
    unrestorable = run.blame(versions)
    hurt = {(u["artifact"], u["version"]) for u in unrestorable}
    checked = len(run.good) - len(run.gone) + len(run.bad_versions)
    if run.gone:
        run.warnings.append(f"{len(run.gone)} version{'s were' if len(run.gone) != 1 else ' was'}"
                            " deleted while verify ran (gc or ckptlake rm): not counted")
    missing = run.missing if run.missing_referenced is None else run.missing_referenced
    return VerifyResult(
        lake=lake_url, scope=scope, versions_checked=checked,
        versions_ok=checked - len(hurt), chunks_checked=len(run.refs.need),
        chunks_read=run.chunks_read, bytes_read=run.bytes_read,
        orphan_chunks=run.orphans, orphan_bytes=run.orphan_bytes,
        problems=sorted(run.problems, key=lambda p: (p["artifact"] is not None,
                                                     p["artifact"] or "", p["version"] or 0)),
        unrestorable=unrestorable,
        aliases_checked=run.aliases_checked, seconds=round(time.monotonic() - started, 3),
        read_data=(chosen.text if chosen else "all") if reading else None,
        seed=seed, bytes_checked=run.bytes_referenced, chunks_missing=len(missing),
        chunks_corrupt=len(run.corrupt | set(run.sizes) | {d for d, _ in run.wrong_hash}),
        shard_steps_checked=run.steps_checked,
        pending_steps=run.pending, condemnation_records=run.records,
        incomplete_uploads=run.upload_count, incomplete_upload_list=run.uploads,
        warnings=run.warnings)


def _empty_note(key: str, listing: _Listing) -> str:
    """What becomes of an empty create-once object: the next write replaces it, except an
    empty manifest below a version (no push takes it over: core/createonce.py)."""
    parsed = layout.parse_version_key(key)
    if parsed is not None and any(a == parsed[0] and n > parsed[1]
                                  for a, n in listing.versions):
        return ("empty object left by a cut upload; no version, and left alone (a later "
                "version exists, so no push takes this number over)")
    return EMPTY_NOTE


def _scope(ref: "str | Ref | None") -> tuple[str | None, Ref | None, str]:
    if ref is None:
        return None, None, "lake"
    if isinstance(ref, str):
        if "@" not in ref:
            return validate_artifact(ref.strip()), None, ref.strip()
        ref = parse_ref(ref)
    return ref.artifact, ref, str(ref)


def _resolve(store: Store, artifact: str, ref: Ref) -> int:
    """The version number a reference names, without validating its manifest (verify reports
    a broken one instead of refusing it)."""
    from . import catalog

    if ref.kind == "version":
        n = int(ref.value)  # type: ignore[arg-type]
        if n not in catalog.version_numbers(store, artifact):
            catalog.load_manifest(store, artifact, n)  # raises NotFound, saying why
        return n
    if ref.kind == "alias":
        try:
            data = store.get(layout.alias_key(artifact, str(ref.value)))
        except NotFound:
            data = b""
        if not data:  # absent, or empty (a removed alias, a cut PUT): no alias, as for show
            catalog.resolve(store, ref)  # raises NotFound naming the known aliases
            raise NotFound(f"{artifact} has no alias {ref.value!r}")  # set meanwhile: rare
        n = catalog._decode_alias(data, artifact, str(ref.value))
        if n not in catalog.version_numbers(store, artifact):
            catalog.load_manifest(store, artifact, n)  # raises NotFound, saying why
        return n
    if ref.kind == "latest":
        numbers = catalog.version_numbers(store, artifact)
        if not numbers:
            raise NotFound(f"artifact {artifact} has no versions in this lake",
                           hint="list artifacts with: ckptlake ls")
        return numbers[-1]
    return catalog.resolve(store, ref).version


__all__ = ["verify", "parse_subset", "Subset", "VerifyResult"]
