"""Checks of the lake header, times, layout keys, value checks, provenance, the cache size and
the throttle that a mutation review found no test exercised (each fails with its mutant)."""
from __future__ import annotations

import json
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pytest
from test_newer_format import cli

from ckptlake.core.lakeheader import open_or_create_header, versions_hash
from ckptlake.core.provenance import git_state
from ckptlake.core.values import check_inputs, check_metrics
from ckptlake.errors import EXIT_INTEGRITY, IntegrityError, NotFound, UsageError
from ckptlake.format import layout
from ckptlake.format.header import (MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, LakeHeader,
                                    decode_header)
from ckptlake.format.times import parse_time
from ckptlake.lake import Lake
from ckptlake.policy.config import Config, resolve_cache
from ckptlake.store.memory import MemoryStore
from ckptlake.transfer.throttle import Throttle

MiB = 1024 * 1024
WINNER = LakeHeader(hash="blake3", chunk_size=16 * MiB, created="", compression="auto").encode()


class RacyHeaderStore(MemoryStore):
    """Another writer creates a BLAKE3 header just before this writer's first header PUT."""

    def __init__(self) -> None:
        super().__init__()
        self.raced = False

    def put(self, key, data, **kw):  # type: ignore[no-untyped-def,override]
        if key == layout.HEADER_KEY and not self.raced:
            self.raced = True
            super().put(key, WINNER, if_none_match=True)
        return super().put(key, data, **kw)


def test_a_header_race_lost_is_settled_by_the_winners_header() -> None:
    """Two first pushes race to create a lake: the loser must obey the header that won, not
    return its own (a SHA-256 pusher would name chunks differently from the BLAKE3 lake, and
    a `compression none` pusher would report a header nobody stored)."""
    s = RacyHeaderStore()
    with pytest.raises(UsageError, match="blake3"):
        open_or_create_header(s, hash="sha256")
    s = RacyHeaderStore()
    header, wrote = open_or_create_header(s, compression="none")
    assert header == decode_header(WINNER) and header.compression == "auto"
    assert header.created == "" and wrote == ""


def test_a_header_race_lost_leaves_the_winners_header_stored() -> None:
    """The header is created once: a loser that overwrote it would change the hash (and
    compression) of a lake whose winner has already pushed chunks under the old one."""
    s = RacyHeaderStore()
    open_or_create_header(s, compression="none")
    assert s.get(layout.HEADER_KEY) == WINNER


def _header(**fields: object) -> bytes:
    raw = {"ckptlake_lake": 1, "hash": "sha256", "chunk_size": 16 * MiB, "created": ""}
    raw.update(fields)
    return json.dumps(raw).encode()


def test_header_chunk_size_bounds_are_inclusive() -> None:
    """A header with the smallest or largest chunk size a pusher accepts is a valid lake (a
    lake created with --chunk-size 1GiB must stay readable); one byte outside is damage."""
    assert decode_header(_header(chunk_size=MIN_CHUNK_SIZE)).chunk_size == MIN_CHUNK_SIZE
    assert decode_header(_header(chunk_size=MAX_CHUNK_SIZE)).chunk_size == MAX_CHUNK_SIZE
    assert MIN_CHUNK_SIZE == MiB and MAX_CHUNK_SIZE == 1024 * MiB
    for bad in (MIN_CHUNK_SIZE - 1, MAX_CHUNK_SIZE + 1):
        with pytest.raises(IntegrityError, match="chunk_size"):
            decode_header(_header(chunk_size=bad))


def test_throttle_gives_no_credit_for_idle_time() -> None:
    """After a pause, a transfer still goes at the rate: idle time counted as credit would let
    the next burst run at full speed past --max-bandwidth (fake clock, no real waits)."""
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    t = Throttle(100.0, clock=lambda: now[0], sleep=sleep)
    t.acquire(100)
    assert slept == pytest.approx([1.0])
    now[0] += 600  # idle for ten minutes
    t.acquire(5000)
    assert sum(slept[1:]) >= 50 - 1e-9


def test_negative_utc_offsets_are_west_of_greenwich() -> None:
    """10:00 at -05:00 is 15:00 UTC: a sign error moves every such record's time by ten
    hours, and gc's ages and `--since` filters with it."""
    t = parse_time("2026-12-05T10:00:00-05:00")
    assert t == datetime(2026, 12, 5, 15, 0, tzinfo=timezone.utc)
    assert t.utcoffset() == timedelta(hours=-5)


def test_unknown_compression_is_refused_before_the_lake_is_created(tmp_path: Path) -> None:
    """A mistyped --compression must not create a lake whose header names a mode no ckptlake
    knows (every later push would refuse it)."""
    store = MemoryStore()
    lake = Lake(store, chunk_size=MiB)
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(b"weights")
    with pytest.raises(UsageError, match="zstd"):
        lake.push(src, "a/b", compression="zstd")
    with pytest.raises(NotFound):
        store.get(layout.HEADER_KEY)
    assert lake.push(src, "a/b").version == 1
    with pytest.raises(UsageError, match="zstd"):
        open_or_create_header(MemoryStore(), compression="zstd")


def test_input_dicts_with_unknown_keys_are_refused() -> None:
    """A mistyped key ("digets") would be dropped silently and the input recorded unpinned:
    the user believes the data set's digest is recorded when it is not."""
    with pytest.raises(UsageError, match="invalid input"):
        check_inputs([{"uri": "s3://data/set", "digets": "x"}])
    assert check_inputs([{"uri": "s3://data/set", "digest": "x"}]) == (
        {"uri": "s3://data/set", "digest": "x"},)


def test_boolean_metrics_are_refused() -> None:
    """True is an int in Python: stored as 1.0, `converged: true` would be compared and
    ranked as a loss value by keep_best rules and queries."""
    with pytest.raises(UsageError, match="converged"):
        check_metrics({"converged": True})
    assert check_metrics({"loss": 1}) == {"loss": 1.0}


def test_times_without_a_zone_in_other_iso_forms_are_utc() -> None:
    """Forms parse_time hands to fromisoformat (space separator, date only) read as UTC when
    they name no zone: a naive datetime cannot be compared with the aware ones elsewhere
    (TypeError in gc/query)."""
    for text, want in (("2026-12-05 15:00:00", datetime(2026, 12, 5, 15, 0)),
                       ("2026-12-05", datetime(2026, 12, 5))):
        t = parse_time(text)
        assert t.tzinfo == timezone.utc and t == want.replace(tzinfo=timezone.utc)


@pytest.mark.parametrize("data", [b"[1]", b'"x"', b"5"])
def test_a_header_of_the_wrong_json_type_is_damage(data: bytes) -> None:
    """A header that is JSON but no object is a damaged lake (exit 5, a clear message), not a
    crash with a traceback."""
    with pytest.raises(IntegrityError, match="not a ckptlake lake header"):
        decode_header(data)


def test_cli_push_to_a_lake_whose_header_is_a_list_exits_5(tmp_path: Path) -> None:
    """The same through the CLI: exit 5 and a message, no traceback (CliRunner re-raises any
    exception the CLI did not turn into an exit code)."""
    root = tmp_path / "lake"
    root.mkdir()
    (root / layout.HEADER_KEY).write_bytes(b"[1]")
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(b"weights")
    r = cli("push", src, "a/b", "--lake", f"file://{root}")
    assert r.exit_code == EXIT_INTEGRITY, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "not a ckptlake lake header" in r.stderr


@pytest.mark.parametrize("fmt", [0, -1])
def test_older_or_nonsense_lake_formats_are_refused(fmt: int) -> None:
    """Format 1 is the only one: 0 or -1 is no format any ckptlake wrote, so the header is
    damaged and must not be read as format 1."""
    with pytest.raises(IntegrityError, match=f"lake format {fmt} is not supported"):
        decode_header(_header(ckptlake_lake=fmt))


@pytest.mark.parametrize("value", [5, None, ["auto"]])
def test_header_compression_not_a_string_is_an_unknown_mode(value: object) -> None:
    """A non-string compression mode is a value this reader does not know, like an unknown
    string: readers ignore it, and a push without an explicit choice refuses it by its text
    (not a crash on a non-string, nor a known mode by accident)."""
    mode = decode_header(_header(compression=value)).compression
    assert isinstance(mode, str) and mode == json.dumps(value)
    assert mode not in ("none", "auto", "zstd")


class VanishingManifestStore(MemoryStore):
    """The first listed manifest is deleted (by gc) between the listing and its GET."""

    def get(self, key: str) -> bytes:
        if key == layout.version_key("a/b", 1):
            raise NotFound(key)
        return super().get(key)


def test_lost_header_hash_looks_past_a_manifest_deleted_since_the_listing() -> None:
    """With the header lost, its hash is read from the versions: one gc deleted meanwhile
    must not fail the push (or let it guess the default hash under SHA-256 versions)."""
    s = VanishingManifestStore()
    s.put(layout.version_key("a/b", 1), json.dumps({"hash": "blake3"}).encode())
    s.put(layout.version_key("a/b", 2), json.dumps({"hash": "sha256"}).encode())
    assert versions_hash(s) == (True, "sha256")


def test_git_state_of_a_repository_without_commits_is_none(tmp_path: Path) -> None:
    """`git rev-parse HEAD` in a fresh repository fails and prints "HEAD": provenance must
    record no commit rather than the word HEAD as if it were one."""
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "-C", str(repo), "init", "-q"], check=True)
    assert git_state(str(repo)) is None


@pytest.fixture
def cache_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[pytest.MonkeyPatch]:
    monkeypatch.setenv("CKPTLAKE_CACHE", str(tmp_path / "cache"))
    yield monkeypatch


@pytest.mark.parametrize("size", ["0", "1KiB"])
def test_cache_size_from_the_environment_is_range_checked(
        cache_env: pytest.MonkeyPatch, size: str) -> None:
    """$CKPTLAKE_CACHE_SIZE=0 (or a few KiB) would make a cache that evicts every chunk as it
    is written: refused, naming the variable, like the config's cache.size."""
    cache_env.setenv("CKPTLAKE_CACHE_SIZE", size)
    with pytest.raises(UsageError, match="CKPTLAKE_CACHE_SIZE"):
        resolve_cache(Config())
    cache_env.setenv("CKPTLAKE_CACHE_SIZE", "1MiB")
    assert resolve_cache(Config()).size == MiB  # type: ignore[union-attr]


def test_gc_keys_with_a_nul_byte_are_no_pins_or_records() -> None:
    """No store can hold a key with NUL: read as a pin or a condemnation record, it would be
    one nobody can read or remove, stopping every push and gc."""
    assert not layout.is_pin_key("gc/pins/a\x00b.json")
    assert not layout.is_condemned_key("gc/condemned/a\x00b.json")
    assert layout.is_pin_key("gc/pins/ab.json") and layout.is_condemned_key("gc/condemned/ab.json")


def test_child_markers_naming_dot_dot_or_empty_segments_are_no_markers() -> None:
    """A lineage marker naming `a/../b` or `/a` as a child names no artifact (artifact names
    have no such segments): read as one, lineage would show and follow a path outside the
    artifact tree."""
    parent = "p/q"
    good = layout.child_key(parent, 1, "a/b", 2, "derived-from")
    assert layout.parse_child_key(parent, good) == (1, "a/b", 2, "derived-from")
    prefix = layout.children_prefix(parent)
    for child in ("a!..!b", "!a", "a!!b", "a!.!b", "a!"):
        key = f"{prefix}0000000001.{child}@0000000002.derived-from"
        assert layout.parse_child_key(parent, key) is None, child
