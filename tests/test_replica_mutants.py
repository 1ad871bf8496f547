"""Checks of regional replicas and tiering that a mutation review found no test exercised:
each test here fails if the one line it names is weakened (the review's mutant), and says what
a user would lose.

Local lakes only: in-memory origins, file:// or in-memory replicas, and in-memory stores with
storage classes for tiering.
"""
from __future__ import annotations

import hashlib
import json
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ckptlake.core.gc import plan_gc
from ckptlake.core.tiering import execute_tiering
from ckptlake.errors import NotFound, UsageError
from ckptlake.format import layout
from ckptlake.lake import Lake
from ckptlake.policy.retention import MIN_TIER_OBJECT, RetentionPolicy, Rule, Tier
from ckptlake.store import open_store
from ckptlake.store.memory import MemoryStore
from ckptlake.store.replica import ReplicaStore

from test_replicas import FlakyOrigin, memory_lake, replica_chunks, write_src
from test_tiering import DAY, NOW, TIER_ALL, D, _Refusing, _tiered_lake, _version

MiB = 1 << 20
MARKER = "ckptlake-replica.json"


def manifest_copies(root: Path) -> list[str]:
    base = root / "artifacts"
    return sorted(p.relative_to(root).as_posix() for p in base.rglob("*.json")) \
        if base.exists() else []


def pack_chunk(lake: Lake, ref: str, path: str) -> str:
    """The digest of the pack chunk holding the small file `path` (from the manifest)."""
    entry = next(f for f in lake._manifest(ref).files if f.path == path)
    assert entry.chunks and entry.chunks[0].offset is not None, "not a packed file"
    return entry.chunks[0].digest


def replica_file(tmp_path: Path, digest: str) -> Path:
    return tmp_path / "eu" / layout.chunk_key(digest)


# ---- 1: an offline pull from a replica that is another lake --------------------------------

def test_offline_pull_refuses_a_replica_location_that_is_another_lake(tmp_path: Path) -> None:
    """The replica's URL points at another lake (its header, no replica marker) while this
    lake is unreachable.  Its manifests are that lake's: serving its m/a@v1 as ours would hand
    the user another team's checkpoint under this lake's name.  The pull must refuse (exit 2)
    and place nothing."""
    other = open_store((tmp_path / "eu").as_uri())
    Lake(other, chunk_size=MiB).push(write_src(tmp_path / "b", 2, MiB), "m/a")
    assert (tmp_path / "eu" / layout.HEADER_KEY).exists()
    assert not (tmp_path / "eu" / MARKER).exists()
    origin = FlakyOrigin()
    lake = memory_lake(tmp_path, origin=origin)
    lake.push(write_src(tmp_path / "a", 1, MiB), "m/a")
    origin.down = True
    with pytest.raises(UsageError, match="is another lake") as err:
        lake.pull("m/a@v1", tmp_path / "out", offline_replica=True)
    assert err.value.exit_code == 2
    assert not (tmp_path / "out").exists()


# ---- 2: a waiting reader re-reads the replica and checks what it finds ---------------------

class _GatedOrigin(MemoryStore):
    """An origin whose chunk GETs block until `release` is set (after saying `entered`)."""

    def __init__(self) -> None:
        super().__init__("origin")
        self.entered, self.release = threading.Event(), threading.Event()

    def get(self, key: str) -> bytes:
        if key.startswith("chunks/"):
            self.entered.set()
            assert self.release.wait(30)
        return super().get(key)


class _SignallingLock:
    """The per-chunk single-flight lock, saying when a reader found it held (and will wait)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.waiting = threading.Event()

    def acquire(self, blocking: bool = True) -> bool:
        got = self.lock.acquire(blocking)
        if not got and not blocking:
            self.waiting.set()
        return got

    def release(self) -> None:
        self.lock.release()


def test_a_reader_that_waited_for_a_fetch_checks_the_replicas_copy(tmp_path: Path) -> None:
    """Reader A fetches a chunk from the origin; reader B of the same chunk waits for it, then
    looks in the replica.  What B finds there may be a cut upload's empty object (another
    client's), not A's copy.  B must check it against the digest and fetch again, never hand
    the empty bytes up as the chunk (a tensor of zeros, or a failed read, for the user)."""
    good = b"chunk bytes " * 1000
    digest = hashlib.sha256(good).hexdigest()
    key = layout.chunk_key(digest)
    origin, replica = _GatedOrigin(), MemoryStore("replica")
    origin.put(key, good)
    rs = ReplicaStore(origin, replica, name="eu", region="eu-west-1",
                      verify=lambda d, data: hashlib.sha256(bytes(data)).hexdigest() == d,
                      chunk_digest=layout.parse_chunk_key)
    gate = _SignallingLock()
    rs._inflight[digest] = gate  # type: ignore[assignment]
    got: dict[str, bytes | BaseException] = {}

    def read(name: str) -> None:
        try:
            got[name] = rs.get(key)
        except BaseException as exc:  # noqa: BLE001 - reported by the asserts below
            got[name] = exc

    a = threading.Thread(target=read, args=("a",))
    a.start()
    assert origin.entered.wait(30)  # A holds the fetch, inside the origin's GET
    b = threading.Thread(target=read, args=("b",))
    b.start()
    assert gate.waiting.wait(30)  # B missed the replica and waits for A's fetch
    replica.put(key, b"")  # a cut upload lands meanwhile
    origin.release.set()
    a.join(30)
    b.join(30)
    assert got == {"a": good, "b": good}
    assert replica.get(key) == good  # and the empty copy was replaced by verified bytes


# ---- 3: chunks of artifacts outside --match are hot ----------------------------------------

def test_gc_match_keeps_chunks_other_artifacts_use_in_place() -> None:
    """gc --match a/* still sees b/ckpt's versions as roots: a chunk a/ckpt's cold v1 shares
    with b/ckpt's latest is read by b's users every day.  Moving it to STANDARD_IA would bill
    them IA's retrieval fee on every pull; it must stay where it is."""
    store = MemoryStore(storage_classes=True)
    big = 200 * 1024
    _version(store, "a/ckpt", 1, {D("shared"): big, D("a1"): big}, 100)
    _version(store, "a/ckpt", 2, {D("a2"): big}, 99)  # a's latest: hot
    _version(store, "b/ckpt", 1, {D("shared"): big, D("b1"): big}, 100)  # b's latest: hot
    pol = RetentionPolicy(rules=(Rule(match="*/ckpt", keep_all=True,
                                      tier=Tier(30 * DAY, "STANDARD_IA")),))
    plan = plan_gc(store, pol, now=NOW, match="a/*")
    moved = {key.rsplit("/", 1)[-1] for key, *_ in plan.tiering.todo}
    assert moved == {D("a1")}
    assert D("shared") not in moved


# ---- 4: a ranged read repairs an empty copy of a pack --------------------------------------

def test_a_ranged_read_of_an_empty_pack_copy_repairs_it(tmp_path: Path) -> None:
    """A cut upload left the replica's copy of a pack chunk empty.  `cat config.json` (a
    ranged read of that pack) serves the file from the origin and must write the verified
    pack over the empty copy: else every later read of any file in the pack crosses to the
    origin again (egress charged) and an offline pull finds the replica lacking it."""
    lake = memory_lake(tmp_path)
    src = write_src(tmp_path / "src")
    lake.push(src, "m/a")
    lake.pull("m/a", tmp_path / "o1")
    victim = replica_file(tmp_path, pack_chunk(lake, "m/a", "config.json"))
    good = victim.read_bytes()
    assert good
    victim.write_bytes(b"")
    assert b"".join(lake.cat("m/a", "config.json")) == (src / "config.json").read_bytes()
    assert victim.read_bytes() == good


# ---- 5: a partial pull binds the replica before writing into it ----------------------------

def test_a_partial_pull_binds_the_replica_before_filling_it(tmp_path: Path) -> None:
    """A pull of one file through a fresh replica writes chunks there: it must write the
    replica's marker first, naming this lake.  Without it, another lake pointed at the same
    location would adopt the replica and its gc would sweep this lake's chunks."""
    lake = memory_lake(tmp_path)
    lake.push(write_src(tmp_path / "src"), "m/a")
    r = lake.pull("m/a", tmp_path / "o", paths=["w.bin"])
    assert r.replica["chunks_pulled_through"] > 0 and replica_chunks(tmp_path)
    assert (tmp_path / "eu" / MARKER).is_file(), "chunks written, no marker"
    marker = json.loads((tmp_path / "eu" / MARKER).read_bytes())
    assert marker["origin"] == lake.store.url


# ---- 6: no manifest copy while a condemnation record cannot be read ------------------------

def test_no_manifest_copy_while_a_replica_record_is_unreadable(tmp_path: Path) -> None:
    """A condemnation record in the replica that cannot be read may name a chunk of the
    version just pulled, and the replica's sweep would then delete it.  Copying the manifest
    would promise --offline-replica a version the replica may no longer hold whole (an
    offline pull failing when the lake is down, the one time it is needed)."""
    lake = memory_lake(tmp_path)
    lake.push(write_src(tmp_path / "src", 1, 2 * MiB), "m/a")
    replica = open_store((tmp_path / "eu").as_uri())
    replica.put(layout.condemned_key("20261206T000000.000000Z", "00" * 8), b"{not json")
    r = lake.pull("m/a", tmp_path / "o")  # whole, through the replica
    assert r.replica["chunks_pulled_through"] > 0
    assert manifest_copies(tmp_path / "eu") == []
    replica.delete([k.key for k in replica.list(layout.CONDEMNED_PREFIX)])
    lake.pull("m/a", tmp_path / "o2")  # the control: copied once the record is gone
    assert manifest_copies(tmp_path / "eu") == ["artifacts/m/a/@v/0000000001.json"]


# ---- 7: a marker from a newer ckptlake -----------------------------------------------------

def test_replicate_refuses_a_replica_bound_by_a_newer_ckptlake(tmp_path: Path) -> None:
    """A marker of a format this ckptlake does not know may bind the replica by rules it
    cannot check: writing into it (or sweeping it) could break the newer client's lake.
    replicate must refuse (exit 2, saying to upgrade) and write nothing."""
    lake = memory_lake(tmp_path)
    lake.push(write_src(tmp_path / "src", 1, MiB), "m/a")
    (tmp_path / "eu").mkdir()
    (tmp_path / "eu" / MARKER).write_text(json.dumps(
        {"format": 2, "origin": lake.store.url, "lake": None}))
    with pytest.raises(UsageError, match="newer ckptlake") as err:
        lake.replicate("m/a", "eu")
    assert err.value.exit_code == 2 and "upgrade" in (err.value.hint or "")
    assert replica_chunks(tmp_path) == {}


# ---- 8: tombstones are read from the origin ------------------------------------------------

def test_a_missing_chunk_of_a_deleted_version_names_its_tombstones_reason(
        tmp_path: Path) -> None:
    """A reader through a replica whose version was deleted under it (rm, then a sweep) is
    told the version was deleted, and why: the tombstone lives at the origin only.  Read from
    the replica it is not found, and the user loses the recorded reason ("bad run")."""
    lake = memory_lake(tmp_path)
    lake.push(write_src(tmp_path / "src", 1, MiB), "m/a")
    lake.push(write_src(tmp_path / "src2", 2, MiB), "m/a")
    lake.delete("m/a@v1", reason="bad run")
    from ckptlake.core.chunkio import missing_from

    data = lake._data("eu")
    assert isinstance(data, ReplicaStore)
    err = missing_from(data, "0" * 64, "m/a@v1")
    assert isinstance(err, NotFound)
    text = f"{err} {err.hint or ''}"
    assert "m/a@v1 was deleted" in text and "bad run" in text


# ---- 9, 10: tiering's moves ----------------------------------------------------------------

class _CountingDenied(_Refusing):
    def __init__(self) -> None:
        super().__init__(deny=True)
        self.moves = 0

    def set_storage_class(self, key: str, storage_class: str, *, etag: str | None = None
                          ) -> None:
        self.moves += 1
        super().set_storage_class(key, storage_class, etag=etag)


def test_a_denied_move_stops_tiering_after_one_request(tmp_path: Path) -> None:
    """An IAM deny on the storage class refuses every move alike: after the first refusal
    nothing more is tried (a lake of a million chunks would otherwise send a million refused
    CopyObject requests, each billed and logged, on every gc run)."""
    store = _CountingDenied()
    _tiered_lake(store, tmp_path)
    later = datetime.now(timezone.utc) + timedelta(days=60)
    plan = plan_gc(store, TIER_ALL, now=later).tiering
    assert len(plan.todo) >= 2
    result = execute_tiering(store, plan)
    assert store.moves == 1
    assert result.chunks_failed == len(plan.todo) and "AccessDenied" in (result.failed or "")


def test_a_chunk_of_exactly_128_kib_moves() -> None:
    """IA and Glacier IR bill every object as at least 128 KiB (docs/format.md: chunks "of at
    least 128 KiB" move): one of exactly 128 KiB is billed for what it holds, and leaving it
    in STANDARD loses the saving for nothing."""
    store = MemoryStore(storage_classes=True)
    assert MIN_TIER_OBJECT == 128 * 1024
    _version(store, "a/ckpt", 1, {D("edge"): MIN_TIER_OBJECT, D("below"): MIN_TIER_OBJECT - 1},
             100)
    _version(store, "a/ckpt", 2, {D("latest"): MIN_TIER_OBJECT}, 99)
    pol = RetentionPolicy(rules=(Rule(match="*/ckpt", keep_all=True,
                                      tier=Tier(30 * DAY, "STANDARD_IA")),))
    t = plan_gc(store, pol, now=NOW).tiering
    assert {key.rsplit("/", 1)[-1]: cls for key, _, _, cls in t.todo} == \
        {D("edge"): "STANDARD_IA"}
    assert t.too_small.objects == 1 and t.too_small.bytes == MIN_TIER_OBJECT - 1
