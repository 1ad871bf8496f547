"""Checks of the catalog (refs, aliases, listing summaries) and of the egress guard that no test
held the code to (mutation testing): each test fails if the check it names is taken out."""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import pytest

from ckptlake.core import catalog, clock, summary
from ckptlake.core import tombstones as tombs
from ckptlake.errors import IntegrityError, NotFound, PolicyRefusal
from ckptlake.format import layout
from ckptlake.lake import Lake
from ckptlake.policy.egress import EgressPolicy
from ckptlake.store.memory import MemoryStore
from test_egress import FakeBucket as Bucket

MiB = 1 << 20
ART = "p/ckpt"


def src_dir(root: Path, size: int = 1000, seed: int = 0) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "w.bin").write_bytes(bytes([seed % 256]) * size)
    return root


class AliasHooks(MemoryStore):
    """A MemoryStore with one-shot hooks around alias records: `after_alias_read` runs right
    after a get_with_etag of one (whether it was found or not), `after_alias_put` right after
    a successful write of one (the hooks of tests/test_alias_gc_race.py and test_rm.py)."""

    def __init__(self) -> None:
        super().__init__()
        self.after_alias_read: Callable[[], None] | None = None
        self.after_alias_put: Callable[[], None] | None = None

    def _fire(self, name: str) -> None:
        hook = getattr(self, name)
        if hook is not None:
            setattr(self, name, None)
            hook()

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        try:
            return super().get_with_etag(key)
        finally:
            if layout.parse_alias_key(key):
                self._fire("after_alias_read")

    def put(self, key, data, **kw):  # type: ignore[no-untyped-def]
        etag = super().put(key, data, **kw)
        if layout.parse_alias_key(key):
            self._fire("after_alias_put")
        return etag


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    """p/ckpt v1..v3 (steps 10, 20, 30; loss 3.0, 2.0, 1.0) on a hooked in-memory store."""
    lake = Lake(AliasHooks(), chunk_size=MiB)
    for i, loss in enumerate((3.0, 2.0, 1.0), start=1):
        lake.push(src_dir(tmp_path / f"s{i}", 100 + i, seed=i), ART, step=10 * i,
                  metrics={"loss": loss})
    return lake


def summary_key_of(store: MemoryStore, artifact: str, version: int) -> str:
    [key] = [i.key for i in store.list(layout.summaries_prefix(artifact))
             if (p := layout.parse_summary_key(i.key)) and p[1] == version]
    return key


def forge_summary(store: MemoryStore, artifact: str, version: int,
                  edit: Callable[[dict[str, Any]], None]) -> str:
    """Replace a version's listing summary by an edited one (written now, so it is usable)."""
    old = summary_key_of(store, artifact, version)
    doc = summary._unpack(layout.parse_summary_key(old)[2])
    edit(doc)
    forged = layout.summary_key(artifact, version, summary._pack(doc))
    store.put(forged, b"")
    store.delete([old])
    return forged


# ---- 1. a manifest at another version's key ---------------------------------------------------

def test_a_manifest_copied_to_another_versions_key_is_refused(lake: Lake, tmp_path: Path) -> None:
    """v1's manifest written at v2's key (a bad copy, a restore gone wrong): `a@v2` must not
    silently give v1's files -- a user pulling v2 would train on, or ship, the wrong weights."""
    store = lake.store
    store.put(layout.version_key(ART, 2), store.get(layout.version_key(ART, 1)))
    with pytest.raises(IntegrityError, match=r"claims to be p/ckpt@v1"):
        catalog.resolve(store, f"{ART}@v2")
    with pytest.raises(IntegrityError, match=r"claims to be p/ckpt@v1"):
        lake.pull(f"{ART}@v2", tmp_path / "out")
    assert not (tmp_path / "out").exists(), "nothing written"


# ---- 2. step=N: the newest version with that step ---------------------------------------------

def test_step_names_the_newest_version_with_that_step_past_one_batch(tmp_path: Path) -> None:
    """`a@step=100` is the newest version at step 100 (a re-run of the step after a restart);
    with more versions than one batch of manifest reads, reading oldest first named v1, the
    checkpoint the restart replaced."""
    lake = Lake(MemoryStore(), chunk_size=MiB)
    src = src_dir(tmp_path / "s")
    for i in range(1, 21):
        lake.push(src, "a", step=100 if i in (1, 20) else 1000 + i)
    assert catalog._META_WORKERS < 20
    assert catalog.resolve(lake.store, "a@step=100").version == 20
    assert lake.resolve("a@step=100").version == 20


# (3. @min: and a stale summary of a reused number: tests/test_show_ls.py
# test_summary_of_a_deleted_version_is_not_used_for_its_reused_number)

# ---- 4. alias records whose version is not a positive int -------------------------------------

@pytest.mark.parametrize("value", [True, 0, "1", 1.0], ids=["true", "zero", "string", "float"])
def test_an_alias_record_naming_no_integer_version_is_refused(lake: Lake, value: Any) -> None:
    """{"version": true} is an int to Python (and == 1): read as v1, `pull a@prod` would
    deploy a version nobody aliased.  Any version that is not an int >= 1 is an unusable
    record, named with its repair."""
    store = lake.store
    store.put(layout.alias_key(ART, "prod"),
              json.dumps({"alias": "prod", "version": value}).encode())
    with pytest.raises(IntegrityError, match=r"alias prod of p/ckpt is unusable: malformed "
                                             r"alias record"):
        catalog.resolve(store, f"{ART}@prod")


# ---- 5. undoing an alias gc made dangling, when someone else moved it ---------------------------

def test_a_writer_who_created_the_alias_meanwhile_keeps_it(lake: Lake) -> None:
    """No alias before ours; gc deletes the version right after our write and another writer
    sets the alias to v3: undoing ours must not delete theirs (production would lose `prod`,
    which their command reported as set)."""
    store = lake.store
    m = catalog.load_manifest(store, ART, 2)
    assert tombs.write(store, tombs.from_manifest(m, deleted=datetime.now(timezone.utc),
                                                  rule="rules[0]", reason="test"))

    def gc_then_another_mover() -> None:
        store.delete([layout.version_key(ART, 2)])
        catalog.set_alias(store, ART, "prod", 3)

    store.after_alias_put = gc_then_another_mover
    with pytest.raises(NotFound, match="moved by someone else"):
        lake.alias(f"{ART}@v2", "prod")
    assert catalog.aliases(store, ART) == {"prod": 3}


# ---- 6. set_alias's compare-and-swap when there is no alias yet ------------------------------

@pytest.mark.parametrize("record", [None, b""], ids=["absent", "empty"])
def test_a_move_between_our_read_and_our_write_is_seen(lake: Lake, record: bytes | None) -> None:
    """Another writer sets prod -> v3 between our read (no alias: absent, or an empty record)
    and our write.  Our write must be conditional on what we read, so it retries and reports
    the move it replaced (previous 3); unconditional, it overwrites their alias unreported."""
    store = lake.store
    key = layout.alias_key(ART, "prod")
    if record is not None:
        store.put(key, record)
    store.after_alias_read = lambda: catalog.set_alias(store, ART, "prod", 3)
    result = lake.alias(f"{ART}@v1", "prod")
    assert result.previous == 3, "the move is seen"
    assert catalog.aliases(store, ART) == {"prod": 1}


# ---- 7, 8, 11. the egress guard -----------------------------------------------------------------

def bucket_lake(tmp_path: Path, store: Bucket) -> Lake:
    lake = Lake(store, chunk_size=MiB)
    src = tmp_path / "src"
    src.mkdir()
    (src / "big.bin").write_bytes(os.urandom(3 * MiB + 5))  # ~0.00293 GB
    lake.push(src, ART)
    return lake


# inter-region far above internet: ~3 MiB cost $2.93 inter-region, $0.0003 at internet's price
SKEWED = {"same_region": 0.0, "inter_region": 1000.0, "internet": 0.09}


def test_a_costly_inter_region_pull_is_refused_when_internet_is_cheaper(tmp_path: Path) -> None:
    """With inter-region priced above internet, a pull across regions costs $2.93, above
    confirm_above_usd 1: refused, naming the route the bucket says.  The shortcut that skips
    asking the bucket's region must price the bytes at the highest price, not internet's."""
    lake = bucket_lake(tmp_path, Bucket("us-east-1"))
    policy = EgressPolicy(client_region="eu-west-1", price_per_gb=SKEWED, confirm_above_usd=1)
    seen: list[Any] = []
    with pytest.raises(PolicyRefusal, match=r"us-east-1 -> eu-west-1 \(inter-region\)"):
        lake.pull(ART, tmp_path / "out", egress=policy, on_estimate=seen.append)
    assert not (tmp_path / "out").exists()
    assert seen[0].route == "inter_region" and 2.9 < seen[0].cost_usd < 3.0


def test_a_free_same_region_pull_is_not_refused_when_internet_is_cheaper(tmp_path: Path) -> None:
    """The same prices, the client in the bucket's region: the pull is free and must go
    through.  A shortcut bounding the cost with internet's price skipped asking the region,
    and the unknown route (priced at the highest, $1000/GB) refused a free pull."""
    store = Bucket("us-east-1")
    lake = bucket_lake(tmp_path, store)
    policy = EgressPolicy(client_region="us-east-1", price_per_gb=SKEWED, confirm_above_usd=1)
    seen: list[Any] = []
    lake.pull(ART, tmp_path / "out", egress=policy, on_estimate=seen.append)
    assert seen[0].route == "same_region" and seen[0].cost_usd == 0
    assert store.region_asked == 1
    assert (tmp_path / "out" / "big.bin").stat().st_size == 3 * MiB + 5


def test_a_replica_in_an_unknown_route_is_priced_as_an_upper_bound(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's region is unknown: bytes from replica "eu" cross a route nobody knows, so
    they are priced at the highest price (an upper bound), and a confirm threshold asks.  At
    the same-region price they were free, and a pull that may cost was let through unasked."""
    from ckptlake.core.replicas import ReplicaSet
    from ckptlake.policy.replicas import ReplicaSpec

    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    origin = Bucket(None)
    spec = ReplicaSpec(name="eu", url=(tmp_path / "eu").as_uri(), region="eu-west-1")
    lake = Lake(origin, chunk_size=MiB, replicas=ReplicaSet([spec], client_region=None))
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(os.urandom(2 * MiB + 7))
    lake.push(src, ART)
    lake.pull(ART, tmp_path / "o1", replica="eu")  # the replica now holds every chunk
    policy = EgressPolicy(confirm_above_usd=0.0001)
    est = lake.estimate_pull(ART, tmp_path / "new", egress=policy, replica="eu")
    [rep, org] = est.sources
    assert rep["source"] == "replica eu" and rep["bytes"] == est.bytes_to_download > 0
    assert org["bytes"] == 0
    assert rep["route"] == "unknown" and rep["price_per_gb"] == 0.09 and rep["cost_usd"] > 0
    assert est.cost_usd > 0 and est.needs_confirmation


def test_a_cheap_pull_of_cold_chunks_in_the_same_region_goes_through(tmp_path: Path) -> None:
    """Chunks gc tiered to GLACIER_IR, the client in the bucket's region: the pull costs the
    retrieval fee only ($2.93), below confirm_above_usd 4.  At the highest egress price plus
    the retrieval fee the bound ($5.86) passes 4, so the bucket's region must be asked; bounding
    with the egress price alone skipped that, priced the unknown route at $1000/GB on top of
    the retrieval, and refused a pull the user could afford."""
    store = Bucket("us-east-1", classes=True)
    lake = bucket_lake(tmp_path, store)
    for info in list(store.list(layout.CHUNKS_PREFIX)):
        store.set_storage_class(info.key, "GLACIER_IR")
    policy = EgressPolicy(client_region="us-east-1",
                          price_per_gb={"same_region": 0.0, "inter_region": 1000.0,
                                        "internet": 1000.0},
                          warn_above_usd=None, confirm_above_usd=4,
                          retrieval_per_gb={"GLACIER_IR": 1000.0})
    seen: list[Any] = []
    lake.pull(ART, tmp_path / "out", egress=policy, on_estimate=seen.append)
    est = seen[0]
    assert est.route == "same_region" and est.lake_region == "us-east-1"
    assert [r["class"] for r in est.retrieval] == ["GLACIER_IR"]
    assert 2.9 < est.cost_usd < 3.0 and not est.needs_confirmation
    assert (tmp_path / "out" / "big.bin").stat().st_size == 3 * MiB + 5


# ---- 10, 12. listing summaries that do not validate ---------------------------------------------

@pytest.mark.parametrize("bad", [True, "0.5"], ids=["bool", "string"])
def test_a_summary_with_a_non_numeric_metric_is_not_used(lake: Lake, bad: Any) -> None:
    """A summary (a key anyone with write access can forge, or a damaged one) saying v1's loss
    is `true` (1.0 as a float) or "0.5": ls must show the manifest's loss 3.0, and
    @min:loss must not pick v1 for it."""
    forge_summary(lake.store, ART, 1, lambda d: d.__setitem__("m", {"loss": bad}))
    v1 = next(v for v in lake.versions(ART) if v.version == 1)
    assert v1.metrics == {"loss": 3.0}
    assert catalog.resolve(lake.store, f"{ART}@min:loss").version == 3
    assert catalog.resolve(lake.store, f"{ART}@max:loss").version == 1


def test_a_summary_with_a_string_step_is_not_used(lake: Lake) -> None:
    """A summary saying v1's step is "10" (a string): ls shows the manifest's step, an int;
    the string broke `ls --where step>=...` and sorting by step."""
    forge_summary(lake.store, ART, 1, lambda d: d.__setitem__("s", "10"))
    v1 = next(v for v in lake.versions(ART) if v.version == 1)
    assert v1.step == 10 and type(v1.step) is int


# ---- 13. an empty tombstone is no tombstone -----------------------------------------------------

def test_an_empty_tombstone_does_not_make_alias_wait(lake: Lake,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty tombstone (a PUT cut after its head) next to a live manifest is no gc in
    flight: `alias` must not wait ALIAS_SETTLE_SECONDS for it (a deploy script's alias step
    hanging for nothing)."""
    store = lake.store
    store.put(layout.tombstone_key(ART, 2), b"")
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(catalog, "ALIAS_SETTLE_SECONDS", 30.0)
    monkeypatch.setattr(clock, "now", lambda: now[0])
    monkeypatch.setattr(catalog, "time", SimpleNamespace(sleep=sleep))
    assert lake.alias(f"{ART}@v2", "prod").version == 2
    assert sleeps == [], "no wait"
    assert catalog.aliases(store, ART) == {"prod": 2}
