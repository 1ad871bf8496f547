"""Mixed-version fleets (audit D): what older ckptlake versions leave in a lake must not make
the current one lose, misnumber or misreport checkpoints.

The older writers are simulated by writing what they write (a manifest numbered past an empty
one, a header without `compression` or with another hash, settings outside today's bounds),
so each case is fast and deterministic; the audit ran the real old code (/tmp/audit-D).
"""
from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ckptlake
import ckptlake.core.push as push_mod
from ckptlake.cli.app import app
from ckptlake.core import catalog
from ckptlake.core.gc import execute, plan_gc, retain
from ckptlake.core.gc_guard import GcSettings
from ckptlake.core.identity import utcnow
from ckptlake.errors import OutcomeUnknown
from ckptlake.format import layout
from ckptlake.lake import Lake
from ckptlake.policy.retention import RetentionPolicy
from ckptlake.store.memory import MemoryStore

MiB = 1 << 20
ART = "run/ckpt"


def cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def lake(store: MemoryStore) -> Lake:
    return Lake(store, chunk_size=MiB, concurrency=2)


def _src(tmp_path: Path, name: str, data: bytes | None = None) -> Path:
    src = tmp_path / name
    src.mkdir()
    # compressible (auto stores it as a frame) unless given
    (src / "a.txt").write_bytes(data if data is not None else
                                b"".join(b"step %06d %s\n" % (i, name.encode())
                                         for i in range(20_000)))
    return src


def _old_pusher_commits(store: MemoryStore, number: int, step: int) -> None:
    """What a first-release pusher does next to an empty vN: it counts it as a version and
    commits its own checkpoint at N+1 (here: a copy of v1's manifest with that number)."""
    m = catalog.load_manifest(store, ART, 1)
    store.put(layout.version_key(ART, number), replace(m, version=number, step=step).encode(),
              if_none_match=True)


def _keep_last_one(store: MemoryStore) -> list[str]:
    """The Checkpointer's retention right after a commit: what keep_last=1 deletes."""
    return retain(store, ART, RetentionPolicy(rules=()), keep_last=1).versions_deleted


# ---- F7: an empty vN is not taken over below a later version ------------------------------

def test_an_empty_manifest_below_a_later_version_is_left_alone(
        lake: Lake, store: MemoryStore, tmp_path: Path) -> None:
    lake.push(_src(tmp_path, "s1"), ART, step=100)
    store.put(layout.version_key(ART, 2), b"")  # a current pusher's cut manifest PUT
    _old_pusher_commits(store, 3, step=200)  # an old pusher counted the empty v2
    result = lake.push(_src(tmp_path, "s3"), ART, step=300)
    assert result.version == 4  # not 2: the checkpoint committed last is the latest
    assert store.get(layout.version_key(ART, 2)) == b""
    assert lake.resolve(f"{ART}@latest").step == 300
    assert f"{ART}@v4" not in _keep_last_one(store)
    report = lake.verify()
    assert report.problems == []
    assert any("@v/0000000002" in w and "left alone" in w for w in report.warnings), \
        report.warnings


class _OldPusherBetween(MemoryStore):
    """Lets an old pusher commit v3 right after our pusher found the empty v2 (its read of
    the object), before the takeover."""

    def get_with_etag(self, key: str):  # type: ignore[no-untyped-def]
        got = super().get_with_etag(key)
        if key == layout.version_key(ART, 2) and not self.exists(layout.version_key(ART, 3)):
            _old_pusher_commits(self, 3, step=200)
        return got


def test_an_empty_manifest_is_not_taken_over_once_a_later_version_appeared(
        tmp_path: Path) -> None:
    store = _OldPusherBetween()
    lake = Lake(store, chunk_size=MiB, concurrency=2)
    lake.push(_src(tmp_path, "s1"), ART, step=100)
    store.put(layout.version_key(ART, 2), b"")
    assert lake.push(_src(tmp_path, "s3"), ART, step=300).version == 4
    assert store.get(layout.version_key(ART, 2)) == b""
    assert lake.resolve(f"{ART}@latest").step == 300


def test_a_cut_manifest_write_is_not_taken_over_after_a_later_commit(
        lake: Lake, store: MemoryStore, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The audit's repro (exp15): our manifest PUT at v2 is cut (an empty object, outcome
    unknown); meanwhile an old pusher commits v3; the read-back must not take v2 over."""
    lake.push(_src(tmp_path, "s1"), ART, step=100)
    real = push_mod.create_once
    cut: list[str] = []

    def cut_first(st, key, body):  # type: ignore[no-untyped-def]
        if "/@v/" in key and not cut:
            cut.append(key)
            st.put(key, b"", if_none_match=True)  # what a PUT cut after its head leaves
            _old_pusher_commits(store, 3, step=200)
            raise OutcomeUnknown(f"simulated: the write of {key} was cut")
        return real(st, key, body)

    monkeypatch.setattr(push_mod, "create_once", cut_first)
    result = lake.push(_src(tmp_path, "s3"), ART, step=300)
    assert cut == [layout.version_key(ART, 2)]
    assert result.version == 4
    assert lake.resolve(f"{ART}@latest").step == 300
    assert _keep_last_one(store) == [f"{ART}@v1", f"{ART}@v3"]  # the newest survives


def test_current_pushers_alone_take_an_empty_manifest_at_its_number(
        lake: Lake, store: MemoryStore, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Why only older pushers can cause it: a current pusher does not count an empty vN
    (catalog.version_numbers), so it commits at N itself, and the cut pusher moves on to N+1,
    last and highest."""
    lake.push(_src(tmp_path, "s1"), ART, step=100)
    real = push_mod.create_once
    cut: list[str] = []
    other = Lake(store, chunk_size=MiB, concurrency=2)

    def cut_first(st, key, body):  # type: ignore[no-untyped-def]
        if "/@v/" in key and not cut:
            cut.append(key)
            st.put(key, b"", if_none_match=True)
            assert other.push(_src(tmp_path, "s2"), ART, step=200).version == 2
            raise OutcomeUnknown(f"simulated: the write of {key} was cut")
        return real(st, key, body)

    monkeypatch.setattr(push_mod, "create_once", cut_first)
    assert lake.push(_src(tmp_path, "s3"), ART, step=300).version == 3
    assert lake.resolve(f"{ART}@latest").step == 300


# ---- F3/F4: the header's compression ---------------------------------------------------------

@pytest.mark.parametrize("loss", ["deleted", "zero-byte"])
def test_a_lost_header_is_rewritten_with_compression_none(
        lake: Lake, store: MemoryStore, tmp_path: Path, loss: str) -> None:
    """A lake an older ckptlake made (header without `compression`: none) loses its header;
    the next push must not make it an `auto` lake that its old readers cannot read, and must
    not call it a new lake."""
    lake.push(_src(tmp_path, "s1"), ART, hash="sha256")
    head = json.loads(store.get(layout.HEADER_KEY))
    head.pop("compression")  # as written before encodings existed
    store.put(layout.HEADER_KEY, json.dumps(head).encode())
    if loss == "deleted":
        store.delete([layout.HEADER_KEY])
    else:
        store.put(layout.HEADER_KEY, b"")
    result = lake.push(_src(tmp_path, "s2"), ART)
    rewritten = json.loads(store.get(layout.HEADER_KEY))
    # "none" is written as no field at all, as in the headers older ckptlake versions wrote
    assert rewritten["hash"] == "sha256" and "compression" not in rewritten
    assert result.compression == "none" and catalog.load_manifest(store, ART, 2).stored == {}
    assert len(result.warnings) == 1 and "rewrote the lost lake header" in result.warnings[0]
    assert "new lake" not in result.warnings[0]
    assert lake.verify().problems == []


def test_an_explicit_compression_on_the_first_push_goes_into_the_header(
        tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'lake'}"
    r = cli("push", _src(tmp_path, "s1"), ART, "--hash", "sha256", "--compression", "none",
            "--lake", url)
    assert r.exit_code == 0, r.stderr
    assert "created a new lake" in r.stderr
    head = json.loads((tmp_path / "lake" / layout.HEADER_KEY).read_text())
    assert head["hash"] == "sha256" and head.get("compression", "none") == "none"
    r = cli("push", _src(tmp_path, "s2"), ART, "--lake", url, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["compression"] == "none"  # no frames for older readers
    # the library's streamed writer creates a lake the same way
    other = Lake(MemoryStore(), chunk_size=MiB)
    with other.writer(ART, "model.bin", compression="none") as f:
        f.write(b"x" * 1000)
    assert json.loads(other.store.get(layout.HEADER_KEY)).get("compression", "none") == "none"
    # and so does a sharded push (push --shard, the DCP writer's core)
    sharded = Lake(MemoryStore(), chunk_size=MiB)
    r1 = sharded.push_shard(_src(tmp_path, "s4"), ART, step=1, rank=0, world=1,
                            compression="none")
    assert json.loads(sharded.store.get(layout.HEADER_KEY)).get("compression", "none") == "none"
    assert any("created a new lake" in w for w in r1.warnings)
    # and a new lake without a choice still gets the default
    fresh = Lake(MemoryStore(), chunk_size=MiB)
    fresh.push(_src(tmp_path, "s3"), ART)
    assert json.loads(fresh.store.get(layout.HEADER_KEY))["compression"] == "auto"


# ---- F8: manifests whose hash differs from the header's ---------------------------------------

def test_verify_checks_chunks_with_the_manifests_hash(lake: Lake, store: MemoryStore,
                                                       tmp_path: Path) -> None:
    """A lost BLAKE3 header rewritten as SHA-256 by a pre-BLAKE3 pusher: pull restores the
    BLAKE3 versions (a reader verifies with the manifest's hash), so verify must too."""
    pytest.importorskip("blake3")
    lake.push(_src(tmp_path, "s1"), ART, hash="blake3")
    head = json.loads(store.get(layout.HEADER_KEY))
    store.put(layout.HEADER_KEY, json.dumps({**head, "hash": "sha256"}).encode())
    lake.push(_src(tmp_path, "s2"), ART)  # a SHA-256 version under the rewritten header
    assert catalog.load_manifest(store, ART, 2).hash == "sha256"
    for read_data in (False, True):
        report = lake.verify(read_data=read_data)
        assert report.problems == [] and report.unrestorable == [], report.problems
        assert report.versions_ok == 2
        assert [w for w in report.warnings if "'blake3'" in w and "'sha256'" in w
                and f"{ART}@v1" in w], report.warnings
    lake.pull(f"{ART}@v1", tmp_path / "out")
    assert (tmp_path / "out" / "a.txt").read_bytes() == (tmp_path / "s1" / "a.txt").read_bytes()


# ---- F6: a zero-byte condemnation record -----------------------------------------------------

def test_gc_removes_an_empty_condemnation_record_after_record_retention(
        lake: Lake, store: MemoryStore, tmp_path: Path) -> None:
    lake.push(_src(tmp_path, "s1"), ART)
    empty = layout.condemned_key("20260101T000000.000000Z", "0" * 16)
    taken = layout.condemned_key("20260101T000000.000000Z", "1" * 16)
    store.put(empty, b"")
    store.put(taken, b"")
    report = lake.verify()
    note = [w for w in report.warnings if empty in w]
    assert note and "gc removes it" in note[0] and "next write" not in note[0], note
    policy = RetentionPolicy(rules=(), grace_period=0, sweep_window=30, record_retention=60)
    assert execute(store, plan_gc(store, policy)).records_removed == 0  # too young
    assert store.get(empty) == b""
    later = utcnow() + timedelta(seconds=61)
    body = json.dumps({"ckptlake_condemned": 1, "created": "2026-01-01T00:00:00Z",
                       "created_by": "gc", "grace_period": 0, "chunks": [], "sizes": [],
                       "swept_at": None}).encode()

    def take_over(name: str) -> None:  # the cut gc's own takeover, after our listing
        if name == "sweep.done":
            store.put(taken, body)

    result = execute(store, plan_gc(store, policy, now=later), now=lambda: later,
                     on_event=take_over)
    assert result.records_removed == 1
    assert not store.exists(empty)
    assert store.get(taken) == body  # a record with content is never removed as empty
    assert not [w for w in lake.verify().warnings if "gc/condemned/" in w]


# ---- F2: settings an older gc wrote ------------------------------------------------------------

def test_refused_settings_name_who_wrote_them(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'lake'}"
    assert cli("push", _src(tmp_path, "s1"), ART, "--lake", url).exit_code == 0
    old = {"ckptlake_gc_settings": 1, **GcSettings(record_retention=2 * 86400).to_dict(),
           "updated": "2026-11-29T15:00:00Z", "updated_by": "ops@old-gc-host"}
    (tmp_path / "lake" / "gc").mkdir()
    (tmp_path / "lake" / layout.GC_SETTINGS_KEY).write_text(json.dumps(old))
    r = cli("push", _src(tmp_path, "s2"), ART, "--lake", url)
    assert r.exit_code == 5 and "Traceback" not in r.stderr
    assert "ops@old-gc-host" in r.stderr and "2026-11-29T15:00:00Z" in r.stderr
    assert "older" in r.stderr and "upgrade" in r.stderr, r.stderr
    assert [v.version for v in ckptlake.open(url).versions(ART)] == [1]  # nothing committed


def test_refused_settings_without_writer_fields() -> None:
    data = json.dumps({"ckptlake_gc_settings": 1, "grace_period": 0, "sweep_window": 7200,
                       "record_retention": 14400}).encode()
    with pytest.raises(Exception) as exc:
        GcSettings.decode(data)
    assert "updated_by unknown" in str(exc.value) and "\n" not in str(exc.value)
