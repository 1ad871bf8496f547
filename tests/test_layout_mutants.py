"""Checks of format/layout.py, format/refs.py and units.py that mutation testing found untested:
the chunk key's digest length, bools as steps, '.'/'..' in lineage markers, negative numbers in
keys, the artifact name length, the alias length, and where format_bytes switches units."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ckptlake.core.gc import execute, plan_gc
from ckptlake.errors import UsageError
from ckptlake.format import layout
from ckptlake.format.refs import MAX_ALIAS, validate_alias, validate_artifact
from ckptlake.lake import Lake
from ckptlake.store.base import Store
from ckptlake.store.memory import MemoryStore
from ckptlake.units import format_bytes
from test_gc import Versions, lake, policy, store  # noqa: F401  (fixtures)

ART = "p/ckpt"


# --- 1. a chunk key's digest has 16 to 128 hex digits ------------------------------------------

def test_short_hex_names_under_chunks_are_foreign_and_kept_by_gc(lake: Lake, store: Store,
                                                                 tmp_path: Path) -> None:
    """A digest is at least 16 hex digits: "chunks/ab/abcd" (or 15 digits) is not a chunk but
    someone else's object, which gc reports as foreign and must never delete as unreferenced."""
    Versions(lake, tmp_path).push(n=3)
    foreign = ["chunks/ab/abcd", "chunks/ab/ab" + "0" * 13]
    for key in foreign:
        store.put(key, b"someone else's")
    old = datetime.now(timezone.utc) + timedelta(days=30)
    plan = plan_gc(store, policy(grace=3600), now=old)
    assert sorted(plan.foreign_keys) == sorted(foreign)
    for _ in range(3):
        execute(store, plan_gc(store, policy(grace=0)))
    keys = {o.key for o in store.list("")}
    assert set(foreign) <= keys


def test_parse_chunk_key_needs_exactly_64_hex_digits() -> None:
    """Both hashes give 64 hex digits; an object under chunks/ of another width is not the
    lake's (gc must never condemn it), so parse_chunk_key gives None for it."""
    assert layout.parse_chunk_key("chunks/ab/ab" + "0" * 61) is None
    assert layout.parse_chunk_key("chunks/ab/ab" + "0" * 63) is None
    assert layout.parse_chunk_key("chunks/ab/ab" + "0" * 14) is None
    assert layout.parse_chunk_key("chunks/ab/abcd") is None
    assert layout.parse_chunk_key("chunks/ab/ab" + "0" * 62) == "ab" + "0" * 62


# --- 2. a bool is no step -----------------------------------------------------------------------

def test_a_bool_step_is_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    """True == 1 and False == 0 as ints, but a bool step is a caller's bug (a flag passed in the
    wrong place): push and Checkpointer.save refuse it before writing anything."""
    store = MemoryStore()
    lk = Lake(store)
    f = tmp_path / "f"
    f.write_bytes(b"x")
    for bad in (True, False):
        with pytest.raises(UsageError, match="0 to 9999999999"):
            lk.push(f, ART, step=bad)
        with pytest.raises(UsageError, match="0 to 9999999999"):
            layout.check_step(bad)
        ck = lk.checkpointer(ART)
        try:
            with pytest.raises(UsageError, match="0 to 9999999999"):
                ck.save(f, step=bad)
        finally:
            ck.close()
    assert store._objects == {}


# --- 3. lineage markers naming '.' or '..' children -------------------------------------------

@pytest.mark.parametrize("child", ["a/../../x", "a/./x", "../x", "a/.."])
def test_a_child_marker_with_dot_segments_is_not_parsed(child: str) -> None:
    """A marker's child name with a '.' or '..' segment names no artifact (it could climb out of
    its place in the lake): parse_child_key reads such a marker as nothing."""
    key = layout.child_key("p", 1, child, 1, "derived-from")
    assert key.startswith(layout.children_prefix("p", 1))
    assert layout.parse_child_key("p", key) is None
    # the same marker with a valid child parses (so the None above is the dot segments)
    good = layout.child_key("p", 1, "a/b/x", 1, "derived-from")
    assert layout.parse_child_key("p", good) == (1, "a/b/x", 1, "derived-from")


def test_the_brief_marker_with_double_dots_is_not_parsed() -> None:
    """The literal key a crafted writer could leave: '!' is '/', so the child is a/../../x."""
    key = "artifacts/p/@children/0000000001.a!..!..!x@0000000001.derived-from"
    assert layout.parse_child_key("p", key) is None


# --- 4. a negative number fits no key ---------------------------------------------------------

def test_a_negative_number_makes_no_key() -> None:
    """f"{-1:010d}" is "-000000001", a key no parser reads back: _digits refuses it."""
    with pytest.raises(UsageError, match="does not fit"):
        layout.version_key("a", -1)
    with pytest.raises(UsageError, match="does not fit"):
        layout.tombstone_key("a", -5)
    assert layout.version_key("a", 0).endswith("/@v/0000000000.json")


# --- 5. artifact names are at most 512 characters ---------------------------------------------

def test_an_artifact_name_longer_than_512_characters_is_refused() -> None:
    """Each segment may be valid and under 255, yet the whole name is capped at 512."""
    with pytest.raises(UsageError, match="longer than 512"):
        validate_artifact("/".join(["x" * 200] * 3))
    with pytest.raises(UsageError, match="longer than 512"):
        validate_artifact("/".join(["x" * 200, "y" * 200, "z" * 111]))  # 513
    name = "/".join(["x" * 200, "y" * 200, "z" * 110])  # exactly 512
    assert len(name) == 512 and validate_artifact(name) == name


# --- 6. aliases are at most 128 characters ----------------------------------------------------

def test_alias_length_limit_is_exactly_128() -> None:
    """The documented limit is 128 characters: 128 passes, 129 is refused for its length."""
    assert MAX_ALIAS == 128
    assert validate_alias("a" * 128) == "a" * 128
    with pytest.raises(UsageError, match="limit is 128"):
        validate_alias("a" * 129)


# --- 7. format_bytes switches unit at 1024, not 1000 ------------------------------------------

def test_format_bytes_switches_units_at_1024() -> None:
    """Binary units: 1000 KiB is still KiB (not 0.98 MiB), 1000 B still bytes."""
    assert format_bytes(1000 * 1024) == "1000.0 KiB"
    assert format_bytes(1023 * 1024) == "1023.0 KiB"
    assert format_bytes(1024 * 1024) == "1.00 MiB"
    assert format_bytes(1000) == "1000 B"
    assert format_bytes(1023) == "1023 B"
    assert format_bytes(1024) == "1.00 KiB"
