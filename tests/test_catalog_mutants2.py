"""More checks of the catalog's expired listing, tombstone reads, listing summaries, empty
manifests and the --sort warning that no test held the code to (mutation testing): each test
fails if the check it names is taken out."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

import ckptlake
from ckptlake.core import catalog, query
from ckptlake.core import tombstones as tombs
from ckptlake.errors import IntegrityError, NotFound
from ckptlake.format import layout
from ckptlake.lake import Lake
from ckptlake.store.memory import MemoryStore
from test_catalog_mutants import forge_summary, src_dir
from test_rm import cli

MiB = 1 << 20


def two_versions(tmp_path: Path, store: Any = None, **meta: str) -> Lake:
    """a@v1 (loss absent) and a@v2, each with metadata {"team": "x"} unless told."""
    lake = Lake(store if store is not None else MemoryStore(), chunk_size=MiB)
    lake.push(src_dir(tmp_path / "s1", 101, seed=1), "a", step=10,
              metadata=meta or {"team": "x"})
    lake.push(src_dir(tmp_path / "s2", 102, seed=2), "a", step=20, metrics={"loss": 1.0},
              metadata=meta or {"team": "x"})
    return lake


def interrupted_gc(store: Any, number: int = 1) -> None:
    """gc wrote v`number`'s tombstone, then died before deleting its manifest."""
    m = catalog.load_manifest(store, "a", number)
    assert tombs.write(store, tombs.from_manifest(m, deleted=datetime.now(timezone.utc),
                                                  rule="keep_last", reason="test"))
    t = tombs.load(store, "a", number)
    assert t is not None and (t.artifact, t.version) == ("a", number)


# ---- 1. and 2. a tombstone next to a live manifest is not an expired version --------------------

@pytest.fixture
def file_lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Lake:
    monkeypatch.chdir(tmp_path)
    url = "file://" + str(tmp_path / "lake")
    monkeypatch.setenv("CKPTLAKE_LAKE", url)
    lake = ckptlake.open(url)
    lake.push(src_dir(tmp_path / "s1", 101, seed=1), "a", step=10)
    lake.push(src_dir(tmp_path / "s2", 102, seed=2), "a", step=20)
    interrupted_gc(lake.store)
    return lake


def test_a_tombstone_beside_a_live_manifest_is_not_listed_as_expired(file_lake: Lake) -> None:
    """An interrupted gc leaves v1's tombstone next to v1's manifest: v1 is still live and
    pullable, so `ls a --all` must not also list it as expired (a user would think v1 gone,
    and see it twice)."""
    assert [v.version for v in file_lake.versions("a")] == [1, 2]
    assert file_lake.expired("a") == []
    r = cli("ls", "a", "--all", "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [v["version"] for v in doc["versions"]] == [1, 2]
    assert doc.get("expired", []) == []


def test_a_tombstone_beside_a_live_manifest_is_not_counted_as_expired(file_lake: Lake) -> None:
    """Same interrupted gc: `ls --all` counts expired versions per artifact; v1 is live, so
    the EXPIRED column must read 0, not 1 (the lake would claim a deletion that did not
    happen)."""
    assert file_lake.expired_counts("") == {}
    r = cli("ls", "--all", "--json")
    assert r.exit_code == 0, r.stderr
    [art] = json.loads(r.stdout)["artifacts"]
    assert (art["artifact"], art["versions"], art["expired"]) == ("a", 2, 0)


# ---- 3. an empty tombstone at the padded key: the unpadded one is read -------------------------

def test_an_empty_padded_tombstone_falls_through_to_the_unpadded_key(tmp_path: Path) -> None:
    """v1 deleted; its tombstone sits at the unpadded key (docs/format.md allows another
    writer that) and the padded key holds an empty object (a PUT cut after its head).
    The empty object must be skipped: reading it as "no tombstone" hid the deletion, so
    `ls --all` lost v1 and a shard takeover could commit its step again."""
    lake = two_versions(tmp_path)
    store = lake.store
    lake.delete("a@v1")
    padded = layout.tombstone_key("a", 1)
    plain = f"{layout.tombstones_prefix('a')}1.json"
    assert plain != padded
    store.put(plain, store.get(padded))
    store.put(padded, b"")
    t = tombs.load(store, "a", 1)
    assert t is not None and (t.artifact, t.version) == ("a", 1)
    assert [t.version for t in lake.expired("a")] == [1]
    with pytest.raises(NotFound, match="deleted"):
        catalog.resolve(store, "a@v1")


# ---- 4. and 5. load_strict: another version's tombstone; an empty one -------------------------

def test_strict_tombstone_read_refuses_another_versions_tombstone(tmp_path: Path) -> None:
    """v1's tombstone bytes at v2's tombstone key (a bad copy): a shard takeover reading it
    as v2's would decide whose step v2 was from v1's record; it must be refused, naming
    what the record claims to be."""
    lake = two_versions(tmp_path)
    store = lake.store
    interrupted_gc(store, 1)
    store.put(layout.tombstone_key("a", 2), store.get(layout.tombstone_key("a", 1)))
    with pytest.raises(IntegrityError, match=r"claims to be a@v1"):
        tombs.load_strict(store, "a", 2)
    assert tombs.load_strict(store, "a", 1).version == 1  # type: ignore[union-attr]


def test_strict_tombstone_read_takes_an_empty_tombstone_as_none(tmp_path: Path) -> None:
    """An empty tombstone (a PUT cut after its head) records nothing: load_strict returns
    None for it rather than raising "damaged", which would stop every push and takeover at
    that number until someone deleted the object by hand."""
    lake = two_versions(tmp_path)
    lake.store.put(layout.tombstone_key("a", 3), b"")
    assert tombs.load_strict(lake.store, "a", 3) is None


# ---- 6. a summary whose metadata is not a mapping ----------------------------------------------

@pytest.mark.parametrize("bad", [["team", "x"], "team=x"], ids=["list", "string"])
def test_a_summary_with_non_mapping_metadata_falls_back_to_the_manifest(
        tmp_path: Path, bad: Any) -> None:
    """A listing summary whose metadata ("d") is a list or a string (damaged, or another
    writer's): `ls` must read that version's manifest instead, not crash for the whole
    artifact."""
    lake = two_versions(tmp_path)

    def edit(doc: dict[str, Any]) -> None:
        doc["d"] = bad

    forge_summary(lake.store, "a", 1, edit)
    got = lake.versions("a")
    assert [(v.version, v.metadata) for v in got] == [(1, {"team": "x"}), (2, {"team": "x"})]


# ---- 7. empty manifests above: not a later version ---------------------------------------------

def test_push_over_empty_manifests_commits_as_v1(tmp_path: Path) -> None:
    """Empty objects at v1 and v2 (cut uploads, nothing committed): the first push must take
    v1 over; counting the empty v2 as a later version left v1 empty and made the push
    v2, though the artifact had no version at all (`a@v1` then names nothing)."""
    store = MemoryStore()
    store.put(layout.version_key("a", 1), b"")
    store.put(layout.version_key("a", 2), b"")
    lake = Lake(store, chunk_size=MiB)
    v = lake.push(src_dir(tmp_path / "s", 100), "a", step=1)
    assert v.version == 1
    assert len(store.get(layout.version_key("a", 1))) > 0
    assert [x.version for x in lake.versions("a")] == [1]


# ---- 8. --sort by a metric only some versions have ---------------------------------------------

def test_sort_by_a_metric_some_versions_have_gives_no_warning(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    """v1 has no loss, v2 has: `ls a --sort loss` sorts by it, so warning "no version ... has
    metric 'loss'" would be false (and tell the user their sort did nothing)."""
    monkeypatch.chdir(tmp_path)
    url = "file://" + str(tmp_path / "lake")
    monkeypatch.setenv("CKPTLAKE_LAKE", url)
    lake = two_versions(tmp_path, ckptlake.open(url).store)
    versions = lake.versions("a")
    assert ["loss" in v.metrics for v in versions] == [False, True]
    assert query.unknown_sort_key(versions, "loss") is None
    assert query.unknown_sort_key(versions, "nope") == "nope"
    r = cli("ls", "a", "--sort", "loss")
    assert r.exit_code == 0, r.stderr
    assert "has metric" not in r.stdout + r.stderr
