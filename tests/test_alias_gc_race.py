"""`alias` racing gc (issue 12): an alias is what production reads, so it must never be left
pointing at a version gc deleted while the alias was being written.

gc tombstones a version, reads the aliases one last time, then deletes the manifest.  An alias
written after that read is the race; these tests put gc's steps at exact points around the
alias's compare-and-swap with a store that acts for gc."""
from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pytest

from ckptlake.core import catalog
from ckptlake.core import tombstones as tombs
from ckptlake.errors import NotFound
from ckptlake.format import layout
from ckptlake.lake import Lake
from ckptlake.store.memory import MemoryStore

ART = "p/ckpt"


class GcNextDoor(MemoryStore):
    """Runs `after_alias_put` right after a successful write of an alias record, and
    `on_tomb_check` when the alias side looks for a tombstone (each once)."""

    def __init__(self) -> None:
        super().__init__()
        self.after_alias_put: Callable[[], None] | None = None
        self.on_tomb_check: Callable[[], None] | None = None

    def put(self, key, data, **kw):
        etag = super().put(key, data, **kw)
        if layout.parse_alias_key(key) and self.after_alias_put:
            hook, self.after_alias_put = self.after_alias_put, None
            hook()
        return etag

    def exists(self, key: str) -> bool:
        found = super().exists(key)
        if layout.parse_tombstone_key(key) and self.on_tomb_check:
            hook, self.on_tomb_check = self.on_tomb_check, None
            hook()
        return found


@pytest.fixture
def lake(tmp_path: Path) -> Lake:
    lake = Lake(GcNextDoor(), chunk_size=1 << 20)
    for i in range(3):
        src = tmp_path / f"s{i}"
        src.mkdir()
        (src / "w.bin").write_bytes(os.urandom(100 + i))
        lake.push(src, ART)
    return lake


def tombstone(store: MemoryStore, version: int) -> None:
    """gc's first step for a doomed version (it then reads the aliases, then deletes)."""
    m = catalog.load_manifest(store, ART, version)
    assert tombs.write(store, tombs.from_manifest(m, deleted=datetime.now(timezone.utc),
                                                  rule="rules[0]", reason="test"))


def gc_deletes(store: MemoryStore, version: int) -> Callable[[], None]:
    return lambda: store.delete([layout.version_key(ART, version)])


def alias_record(store: MemoryStore, name: str) -> int | None:
    return catalog.aliases(store, ART).get(name)


@pytest.mark.parametrize("before", [1, None], ids=["moved", "new"])
def test_gc_deleting_the_version_right_after_the_alias_write_fails_and_restores(
        lake: Lake, before: int | None) -> None:
    store = lake.store
    if before is not None:
        lake.alias(f"{ART}@v{before}", "prod")
    tombstone(store, 2)  # gc: tombstone, last read of the aliases (no prod -> v2) ...
    store.after_alias_put = gc_deletes(store, 2)  # ... and its delete lands after our write
    with pytest.raises(NotFound, match=r"p/ckpt@v2 was deleted by gc while the alias was being "
                                       r"set") as err:
        lake.alias(f"{ART}@v2", "prod")
    assert err.value.exit_code == 3
    assert alias_record(store, "prod") == before, "the alias is as it was before"
    assert ("back at v1" if before else "removed again") in str(err.value)


def test_gc_deleting_the_version_while_the_alias_side_checks_fails(
        lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    """The manifest is still there when we first look; the tombstone says a gc is deleting it;
    the delete lands while we wait."""
    monkeypatch.setattr(catalog, "_SETTLE_POLL", 0.01)
    store = lake.store
    lake.alias(f"{ART}@v1", "prod")
    tombstone(store, 2)
    store.on_tomb_check = gc_deletes(store, 2)
    with pytest.raises(NotFound, match="deleted by gc"):
        lake.alias(f"{ART}@v2", "prod")
    assert alias_record(store, "prod") == 1


def test_a_tombstone_at_the_unpadded_key_is_seen_by_the_alias_side(
        lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/format.md lets a tombstone's number go unpadded (another writer's).  The alias
    side looked only at the padded key: it saw no gc in flight, and the alias was left naming
    the version that gc then deleted."""
    monkeypatch.setattr(catalog, "_SETTLE_POLL", 0.01)
    store = lake.store
    lake.alias(f"{ART}@v1", "prod")
    tombstone(store, 2)
    padded = layout.tombstone_key(ART, 2)
    store.put(f"{layout.tombstones_prefix(ART)}2.json", store.get(padded))
    store.delete([padded])
    store.on_tomb_check = gc_deletes(store, 2)
    with pytest.raises(NotFound, match="deleted by gc"):
        lake.alias(f"{ART}@v2", "prod")
    assert alias_record(store, "prod") == 1


def test_gc_that_saw_the_alias_removes_its_tombstone_and_the_alias_stands(
        lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog, "_SETTLE_POLL", 0.01)
    store = lake.store
    tombstone(store, 2)
    store.on_tomb_check = lambda: store.delete([layout.tombstone_key(ART, 2)])
    assert lake.alias(f"{ART}@v2", "prod").version == 2
    assert alias_record(store, "prod") == 2


def test_a_tombstone_left_by_an_interrupted_gc_does_not_block_the_alias(
        lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog, "ALIAS_SETTLE_SECONDS", 0.05)
    monkeypatch.setattr(catalog, "_SETTLE_POLL", 0.01)
    tombstone(lake.store, 2)
    assert lake.alias(f"{ART}@v2", "prod").version == 2
    assert alias_record(lake.store, "prod") == 2


def test_a_writer_who_moved_the_alias_meanwhile_keeps_it(lake: Lake) -> None:
    store = lake.store
    lake.alias(f"{ART}@v1", "prod")
    tombstone(store, 2)

    def gc_then_another_mover() -> None:
        store.delete([layout.version_key(ART, 2)])
        store.after_alias_put = None
        catalog.set_alias(store, ART, "prod", 3)

    store.after_alias_put = gc_then_another_mover
    with pytest.raises(NotFound, match="moved by someone else"):
        lake.alias(f"{ART}@v2", "prod")
    assert alias_record(store, "prod") == 3
