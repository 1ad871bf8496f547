"""Time in the gc protocol (issue 12): which settings bound a push's wait after its commit,
which clock measures elapsed time across a suspended machine, and the bounds on the settings.

Deterministic: fake clocks and sleep hooks, suspensions simulated by shifting the clocks that
count them, no real waiting."""
from __future__ import annotations

import hashlib
import json
import os
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import pytest

from ckptlake.core import clock as clockmod
from ckptlake.core import gc_guard
from ckptlake.core.catalog import resolve, version_numbers
from ckptlake.core.gc import execute, plan_gc
from ckptlake.core.gc_guard import GcSettings, guard_commit, read_settings
from ckptlake.core.lakeheader import read_header
from ckptlake.core.push import commit_version
from ckptlake.errors import ConfigError, IntegrityError, UsageError
from ckptlake.format import layout
from ckptlake.format.manifest import ChunkRef, FileEntry, Manifest
from ckptlake.lake import Lake
from ckptlake.policy.config import load_config
from ckptlake.policy.retention import (MAX_SWEEP_WINDOW, RetentionPolicy, Rule,
                                       load_retention)
from ckptlake.store.memory import MemoryStore

MiB = 1 << 20


class Clock:
    """An elapsed-time clock; sleep() advances it and runs what was scheduled meanwhile."""

    def __init__(self) -> None:
        self.t = 100.0
        self.slept: list[float] = []
        self.events: list[tuple[float, Callable[[], None]]] = []

    def __call__(self) -> float:
        return self.t

    def at(self, t: float, fn: Callable[[], None]) -> None:
        self.events.append((t, fn))

    def advance(self, seconds: float) -> None:
        self.t += seconds
        due = sorted((e for e in self.events if e[0] <= self.t), key=lambda e: e[0])
        self.events = [e for e in self.events if e[0] > self.t]
        for _, fn in due:
            fn()

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)


def publish(store: MemoryStore, settings: GcSettings) -> None:
    store.put(layout.GC_SETTINGS_KEY, settings.encode(updated="x", updated_by="gc@test"))


def condemn(store: MemoryStore, digests: list[str]) -> None:
    store.put(layout.condemned_key("20260101T000000.000000Z", os.urandom(4).hex()),
              json.dumps({"ckptlake_condemned": 1, "created": "2026-01-01T00:00:00Z",
                          "chunks": digests, "sizes": [0] * len(digests),
                          "swept_at": None}).encode())


@pytest.fixture
def blobs() -> tuple[MemoryStore, dict[str, bytes]]:
    store = MemoryStore()
    out = {}
    for i in range(3):
        data = os.urandom(50 + i)
        d = hashlib.sha256(data).hexdigest()
        store.put(layout.chunk_key(d), data)
        out[d] = data
    return store, out


def manifest_of(blobs: dict[str, bytes]) -> Manifest:
    files = tuple(FileEntry(path=f"f{i}", size=len(blobs[d]), chunks=(ChunkRef(d, len(blobs[d])),))
                  for i, d in enumerate(sorted(blobs)))
    return Manifest(artifact="p/ckpt", version=0, kind="dir", hash="sha256", files=files)


def reuploader(store: MemoryStore, blobs: dict[str, bytes]) -> Callable[[set[str]], None]:
    def reupload(digests: set[str]) -> None:
        for d in digests:
            store.put(layout.chunk_key(d), blobs[d])
    return reupload


# ---- 1. the settings that bound the wait are read after the commit ----------------------------

def test_the_wait_uses_a_sweep_window_raised_while_the_push_was_committing(blobs) -> None:
    """The push reads sweep_window 5 s; a gc raised to 20 s publishes its settings, lists the
    manifests (ours not yet among them), we commit, and its sweep deletes our chunk 10 s later:
    inside the new window, after the old one.  Waiting the old window would miss it."""
    store, data = blobs
    clock = Clock()
    publish(store, GcSettings(grace_period=0, sweep_window=5, record_retention=60))
    victim = sorted(data)[0]
    condemn(store, [victim])

    def commit() -> Manifest:
        publish(store, GcSettings(grace_period=0, sweep_window=20, record_retention=60))
        out = commit_version(store, manifest_of(data))
        clock.at(clock.t + 10, lambda: store.delete([layout.chunk_key(victim)]))
        return out

    guard_commit(store, referenced=set(data), commit=commit, reupload=reuploader(store, data),
                 started=clock.t, clock=clock, sleep=clock.sleep)
    clock.advance(3600)  # whatever else that sweep does, long after
    # 5 + 1 s before the commit (since the pin), then 20 + 1 s after it: the raised window
    assert clock.slept == [pytest.approx(6), pytest.approx(21)]
    assert store.get(layout.chunk_key(victim)) == data[victim], "the swept chunk was restored"


@pytest.mark.parametrize("after", [
    b"{not json",
    GcSettings(grace_period=0, sweep_window=30 * 86400, record_retention=60 * 86400).encode(
        updated="x", updated_by="hand"),
], ids=["malformed", "30d"])
def test_settings_unusable_after_the_commit_mean_the_longest_wait_on_every_chunk(
        blobs, after: bytes) -> None:
    """The commit has happened: failing now would leave the version unchecked, so the guard
    assumes the slowest sweep ckptlake allows, and that records may be gone."""
    store, data = blobs
    clock = Clock()

    def commit() -> Manifest:
        out = commit_version(store, manifest_of(data))
        store.put(layout.GC_SETTINGS_KEY, after)
        store.calls.clear()
        return out

    guard_commit(store, referenced=set(data), commit=commit, reupload=reuploader(store, data),
                 started=clock.t, clock=clock, sleep=clock.sleep)
    assert clock.slept == [pytest.approx(MAX_SWEEP_WINDOW + 1)]
    assert store.calls["stat"] == len(data), "every referenced chunk checked after the wait"


# ---- 3. bounds ----------------------------------------------------------------------------------

def test_a_settings_file_with_a_30_day_window_is_refused_before_anything_is_committed(
        blobs, tmp_path: Path) -> None:
    store, _ = blobs
    store.put(layout.GC_SETTINGS_KEY, GcSettings(0, 30 * 86400, 60 * 86400).encode(
        updated="x", updated_by="hand"))
    with pytest.raises(IntegrityError, match=r"sweep_window 30d is outside 1s\.\.1h") as err:
        read_settings(store)
    assert "ckptlake gc" in (err.value.hint or "")
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(os.urandom(1000))
    with pytest.raises(IntegrityError, match="sweep_window"):
        Lake(store, chunk_size=MiB).push(src, "p/ckpt")
    assert version_numbers(store, "p/ckpt") == [], "refused before the commit"


def test_gc_refuses_settings_out_of_bounds_and_publishes_nothing() -> None:
    store = MemoryStore()
    policy = RetentionPolicy(rules=(Rule(match="*", keep_last=1),), grace_period=0,
                             sweep_window=30 * 86400, record_retention=60 * 86400)
    with pytest.raises(UsageError, match="sweep_window 30d"):
        execute(store, plan_gc(store, policy))
    assert not store.exists(layout.GC_SETTINGS_KEY)


@pytest.mark.parametrize(("text", "line", "key", "words"), [
    ("retention:\n  sweep_window: 2h\n", 2, "retention.sweep_window", "at most 1h, got 2h"),
    ("retention:\n  sweep_window: 30d\n", 2, "retention.sweep_window", "at most 1h, got 30d"),
    ("retention:\n  grace_period: 1d\n  record_retention: 2d\n", 3,
     "retention.record_retention", "at most 1d, got 2d"),
])
def test_config_bounds_name_file_line_and_key(tmp_path: Path, text: str, line: int, key: str,
                                              words: str) -> None:
    path = tmp_path / "ckptlake.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_retention(load_config(str(path)))
    assert (err.value.path, err.value.line, err.value.key) == (str(path), line, key)
    assert words in str(err.value)


def test_the_largest_settings_allowed_load(tmp_path: Path) -> None:
    path = tmp_path / "ckptlake.yaml"
    path.write_text(textwrap.dedent("""\
        retention:
          sweep_window: 1h
          record_retention: 1d
        """))
    p = load_retention(load_config(str(path)))
    assert (p.sweep_window, p.record_retention) == (3600, 86400)
    assert GcSettings(0, p.sweep_window, p.record_retention).problem() is None


# ---- 2. clocks that count suspended time --------------------------------------------------------

@pytest.mark.skipif(not hasattr(time, "CLOCK_BOOTTIME"), reason="Linux: CLOCK_BOOTTIME")
def test_clock_now_reads_the_clock_that_counts_suspended_time(monkeypatch) -> None:
    real = time.clock_gettime
    monkeypatch.setattr(time, "clock_gettime",
                        lambda which: 12345.0 if which == time.CLOCK_BOOTTIME else real(which))
    assert clockmod.now() == 12345.0


class Suspension:
    """Shift the clocks that count a suspension, from the moment `suspend` is called on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, boottime: bool, wall: bool) -> None:
        self.offset = 0.0
        if boottime:
            real_gettime = time.clock_gettime

            def gettime(which: int) -> float:
                return real_gettime(which) + (self.offset if which == time.CLOCK_BOOTTIME
                                              else 0.0)
            monkeypatch.setattr(time, "clock_gettime", gettime)
        else:  # a platform without CLOCK_BOOTTIME: core.clock falls back to the monotonic clock
            monkeypatch.setattr(clockmod, "now", time.monotonic)
        if wall:
            real_time = time.time
            monkeypatch.setattr(time, "time", lambda: real_time() + self.offset)

    def suspend(self, seconds: float) -> None:
        self.offset += seconds


SUSPENSIONS = [
    pytest.param(dict(boottime=True, wall=False), id="boottime",
                 marks=pytest.mark.skipif(not hasattr(time, "CLOCK_BOOTTIME"),
                                          reason="Linux: CLOCK_BOOTTIME")),
    pytest.param(dict(boottime=False, wall=True), id="wall-clock-only"),
]


@pytest.mark.parametrize("clocks", SUSPENSIONS)
def test_a_push_suspended_longer_than_record_retention_checks_every_chunk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clocks: dict) -> None:
    """The machine sleeps mid-push, after the dedup check, for longer than record_retention;
    meanwhile gc swept the chunks the push deduplicated against, and later removed the
    record.  The monotonic clock did not see the suspension: a push trusting it believes it is
    young, checks only chunks named in records (none) and commits a version missing them."""
    store = MemoryStore()
    lake = Lake(store, chunk_size=MiB)
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(os.urandom(2 * MiB + 10))
    v1 = lake.push(src, "p/ckpt").version
    chunks = [k for k in (o.key for o in store.list(layout.CHUNKS_PREFIX))]
    suspension = Suspension(monkeypatch, **clocks)
    real_guard = gc_guard.guard_commit

    def suspended_then_guarded(store_, **kw):
        store.delete([layout.version_key("p/ckpt", v1), *chunks])  # gc, while we slept
        suspension.suspend(GcSettings().record_retention + 8)
        return real_guard(store_, **kw)

    monkeypatch.setattr(gc_guard, "guard_commit", suspended_then_guarded)
    result = lake.push(src, "p/ckpt")
    assert result.chunks_deduplicated == len(chunks), "the push deduplicated against them"
    lake.pull(f"p/ckpt@v{result.version}", tmp_path / "out")
    assert (tmp_path / "out" / "w.bin").read_bytes() == (src / "w.bin").read_bytes()


@pytest.mark.parametrize("clocks", SUSPENSIONS)
def test_gc_does_not_sweep_with_a_listing_that_aged_while_the_machine_slept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clocks: dict) -> None:
    """gc lists the manifests; a push commits a version referencing condemned chunks; the gc
    machine sleeps past sweep_window.  On waking, its listing is too old to delete with: it
    must list again (and find the new version), which it knows only by a clock that counted
    the suspension."""
    store = MemoryStore()
    lake = Lake(store, chunk_size=MiB)
    for i in range(2):
        src = tmp_path / f"src{i}"
        src.mkdir()
        (src / "w.bin").write_bytes(os.urandom(MiB + i))
        lake.push(src, "p/ckpt")
    policy = RetentionPolicy(rules=(Rule(match="*", keep_last=1),), grace_period=3600,
                             sweep_window=30, record_retention=60)

    def later(hours: float) -> Callable[[], datetime]:
        return lambda: datetime.now(timezone.utc) + timedelta(hours=hours)

    execute(store, plan_gc(store, policy))  # v1 deleted, its chunk too young to condemn
    execute(store, plan_gc(store, policy, now=later(2)()), now=later(2))  # condemned
    doomed = {d for o in store.list(layout.CHUNKS_PREFIX)
              if (d := layout.parse_chunk_key(o.key))} - resolve(store, "p/ckpt").chunk_digests()
    assert doomed
    suspension = Suspension(monkeypatch, **clocks)

    def on_event(name: str) -> None:
        if name == "mark.done":
            files = tuple(FileEntry(path=f"c{i}", size=store.stat(layout.chunk_key(d)).size,
                                    chunks=(ChunkRef(d, store.stat(layout.chunk_key(d)).size),))
                          for i, d in enumerate(sorted(doomed)))
            algo = read_header(store).hash  # type: ignore[union-attr]
            commit_version(store, Manifest(artifact="p/ckpt", version=0, kind="dir",
                                           hash=algo, files=files))
            suspension.suspend(31)

    result = execute(store, plan_gc(store, policy, now=later(4)()), now=later(4),
                     on_event=on_event)
    assert result.chunks_swept == 0 and result.manifest_listings >= 2
    for d in doomed:
        assert store.exists(layout.chunk_key(d))
