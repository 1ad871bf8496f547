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
from ckptlake.errors import IntegrityError, OutcomeUnknown, UsageError
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
    # and so does a sharded push (push --shard; the DCP writer has no compression option)
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
    """Its age is the only guard (on S3 an empty object's ETag is the same before and after a
    swap to empty, so nothing can pin it): at least record_retention and an hour."""
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
    later = utcnow() + timedelta(seconds=61)  # past record_retention, not an hour old
    assert execute(store, plan_gc(store, policy, now=later),
                   now=lambda: later).records_removed == 0
    assert store.get(empty) == b""
    later = utcnow() + timedelta(seconds=3601)
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


# ---- review R4: manifests naming a hash this ckptlake cannot use -------------------------------

def _rename_hash(store: MemoryStore, artifact: str, n: int, name: str) -> None:
    key = layout.version_key(artifact, n)
    store.put(key, json.dumps({**json.loads(store.get(key)), "hash": name}).encode())


def test_verify_reports_a_manifest_hash_it_cannot_use(lake: Lake, store: MemoryStore,
                                                      tmp_path: Path) -> None:
    """A manifest naming an unknown hash (a newer writer's): pull stops on it (exit 5), so
    verify must not call it restorable, nor judge a chunk another version shares with it."""
    same = b"x" * 5000
    lake.push(_src(tmp_path, "a", same), ART, compression="none")
    lake.push(_src(tmp_path, "b", same), "other", compression="none")  # the same chunk
    _rename_hash(store, ART, 1, "sha3-256")
    with pytest.raises(IntegrityError):
        lake.pull(ART, tmp_path / "out")
    for read_data in (False, True):
        report = lake.verify(read_data=read_data)
        assert [(u["artifact"], u["version"]) for u in report.unrestorable] == [(ART, 1)], \
            (read_data, report.problems)
        assert "'sha3-256'" in report.unrestorable[0]["message"]
        assert "upgrade ckptlake" in report.unrestorable[0]["message"]
        assert report.chunks_corrupt == 0 and report.orphan_chunks == 0
    url = f"file://{tmp_path / 'lake'}"
    assert cli("push", _src(tmp_path, "c"), ART, "--lake", url, "-q").exit_code == 0
    (tmp_path / "lake" / layout.version_key(ART, 1)).write_text(json.dumps(
        {**json.loads((tmp_path / "lake" / layout.version_key(ART, 1)).read_text()),
         "hash": "sha3-256"}))
    r = cli("verify", "--lake", url)
    assert r.exit_code == 5 and "sha3-256" in r.stdout + r.stderr, (r.stdout, r.stderr)


def test_verify_reports_blake3_versions_without_the_package(
        lake: Lake, store: MemoryStore, tmp_path: Path, monkeypatch) -> None:
    """Without the blake3 package pull stops on a BLAKE3 manifest (exit 2, pip install
    blake3): verify says so for that version instead of calling it restorable."""
    import ckptlake.format.header as header_mod

    lake.push(_src(tmp_path, "a"), ART, hash="sha256")
    _rename_hash(store, ART, 1, "blake3")  # as a BLAKE3 pusher's manifest would say

    def missing():
        raise UsageError("blake3 package is not installed", hint="pip install blake3")

    monkeypatch.setattr(header_mod, "_blake3_class", missing)
    report = lake.verify(read_data=True)
    assert [(u["artifact"], u["version"]) for u in report.unrestorable] == [(ART, 1)]
    assert "pip install blake3" in report.unrestorable[0]["message"]


def test_verify_judges_a_shared_chunk_with_each_versions_hash(
        lake: Lake, store: MemoryStore, tmp_path: Path) -> None:
    """Two manifests name one digest with different hashes: --read-data reads the chunk once
    and calls it corrupt only for the version whose hash it does not match."""
    pytest.importorskip("blake3")
    same = b"y" * 5000
    lake.push(_src(tmp_path, "a", same), ART, hash="sha256", compression="none")
    lake.push(_src(tmp_path, "b", same), "other", compression="none")
    _rename_hash(store, "other", 1, "blake3")  # a lying manifest: its digest is SHA-256's
    report = lake.verify(read_data=True)
    assert [(u["artifact"], u["version"]) for u in report.unrestorable] == [("other", 1)], \
        report.problems
    assert report.unrestorable[0]["corrupt_chunks"] == 1 and report.chunks_corrupt == 1
    lake.pull(ART, tmp_path / "out")  # the healthy one restores, as verify says


# ---- review R4: rewriting a lost header -------------------------------------------------------

def test_a_lost_header_keeps_the_hash_past_an_unreadable_first_manifest(
        lake: Lake, store: MemoryStore, tmp_path: Path) -> None:
    lake.push(_src(tmp_path, "a", b"a" * 100), "a", hash="sha256")
    lake.push(_src(tmp_path, "m", b"m" * 100), "m")
    store.put(layout.version_key("a", 1), b"{garbage")  # listed first
    store.delete([layout.HEADER_KEY])
    result = lake.push(_src(tmp_path, "m2", b"n" * 100), "m")
    assert json.loads(store.get(layout.HEADER_KEY))["hash"] == "sha256"
    assert "keeps their hash (sha256)" in result.warnings[0], result.warnings


def test_a_lost_header_over_only_unreadable_manifests_is_not_guessed(tmp_path: Path) -> None:
    """No manifest says the hash: the default would be a guess (BLAKE3 under SHA-256
    versions), so the push stops (exit 5) until the header is restored or --hash names it."""
    url = f"file://{tmp_path / 'lake'}"
    assert cli("push", _src(tmp_path, "s1"), ART, "--hash", "sha256", "--lake", url,
               "-q").exit_code == 0
    (tmp_path / "lake" / layout.version_key(ART, 1)).write_text("{garbage")
    (tmp_path / "lake" / layout.HEADER_KEY).unlink()
    r = cli("push", _src(tmp_path, "s2"), ART, "--lake", url)
    assert r.exit_code == 5 and "Traceback" not in r.stderr, r.stderr
    assert "no manifest says which hash" in r.stderr and "--hash" in r.stderr, r.stderr
    assert not (tmp_path / "lake" / layout.HEADER_KEY).exists()
    r = cli("push", _src(tmp_path, "s3"), ART, "--hash", "sha256", "--lake", url)
    assert r.exit_code == 0, r.stderr
    assert json.loads((tmp_path / "lake" / layout.HEADER_KEY).read_text())["hash"] == "sha256"


def test_a_lost_blake3_header_is_rewritten_with_compression_auto(
        lake: Lake, store: MemoryStore, tmp_path: Path) -> None:
    """Every ckptlake that reads BLAKE3 lakes decodes frames (compression came first), so
    `none` would protect no reader; an explicit choice on the rewriting push wins."""
    pytest.importorskip("blake3")
    lake.push(_src(tmp_path, "s1"), ART, hash="blake3")
    store.delete([layout.HEADER_KEY])
    result = lake.push(_src(tmp_path, "s2"), ART)
    head = json.loads(store.get(layout.HEADER_KEY))
    assert head["hash"] == "blake3" and head["compression"] == "auto"
    assert result.compression == "auto"
    assert "rewrote the lost lake header" in result.warnings[0]
    assert "compression auto" in result.warnings[0], result.warnings
    store.delete([layout.HEADER_KEY])
    lake.push(_src(tmp_path, "s3"), ART, compression="none")
    assert json.loads(store.get(layout.HEADER_KEY)).get("compression", "none") == "none"


def test_an_explicit_compression_reaches_a_rewritten_sha256_header(
        lake: Lake, store: MemoryStore, tmp_path: Path) -> None:
    lake.push(_src(tmp_path, "s1"), ART, hash="sha256")
    store.delete([layout.HEADER_KEY])
    result = lake.push(_src(tmp_path, "s2"), ART, compression="auto")
    assert json.loads(store.get(layout.HEADER_KEY))["compression"] == "auto"
    assert "as the push asked" in result.warnings[0], result.warnings


def test_a_record_write_that_loses_its_key_is_written_under_a_fresh_one(
        lake: Lake, store: MemoryStore, tmp_path: Path, monkeypatch) -> None:
    """A gc whose cut (empty) record was removed by another gc before its own takeover landed:
    the takeover's If-Match PUT fails (412 on SeaweedFS, a missing key elsewhere); gc writes
    the record under a fresh key instead of stopping with the store's message."""
    import ckptlake.core.gc as gc_mod
    from ckptlake.errors import PreconditionFailed

    lake.push(_src(tmp_path, "s1", b"one"), ART)
    lake.push(_src(tmp_path, "s2", b"two"), ART)
    real, calls = gc_mod.create_once, []

    def takeover_lost(store_, key, body):
        calls.append(key)
        if len(calls) == 1:
            store_.put(key, b"")  # the cut PUT's empty object, then another gc removes it
            store_.delete([key])
            raise PreconditionFailed(f"{key}: put: PreconditionFailed (At least one of the "
                                     "pre-conditions you specified did not hold)")
        return real(store_, key, body)

    monkeypatch.setattr(gc_mod, "create_once", takeover_lost)
    _keep_last_one(store)  # v1's chunk is unreferenced now
    policy = RetentionPolicy(rules=(), grace_period=0, sweep_window=30, record_retention=60)
    result = execute(store, plan_gc(store, policy))
    assert result.records_written == 1 and len(calls) == 2 and calls[0] != calls[1]
    assert not store.exists(calls[0]) and json.loads(store.get(calls[1]))["chunks"]


# ---- review R4: a sharded step pending across a header hash change ----------------------------

def test_a_sharded_step_across_a_header_hash_change_is_refused(
        lake: Lake, store: MemoryStore, tmp_path: Path) -> None:
    """Rank 0 uploaded under BLAKE3, then the lost header was rewritten as SHA-256 (an old
    pusher): the committed manifest would name one hash for both ranks' chunks."""
    pytest.importorskip("blake3")
    from ckptlake.core.shards import decode_record, merge_records
    from ckptlake.errors import Conflict

    lake.push(_src(tmp_path, "x", b"first"), "x", hash="blake3")
    lake.push_shard(_src(tmp_path, "r0", b"zero " * 300), ART, step=5, rank=0, world=2)
    head = json.loads(store.get(layout.HEADER_KEY))
    store.put(layout.HEADER_KEY, json.dumps({**head, "hash": "sha256"}).encode())
    with pytest.raises(Conflict) as exc:
        lake.push_shard(_src(tmp_path, "r1", b"one " * 300), ART, step=5, rank=1, world=2)
    assert "rank 0" in str(exc.value) and "'blake3'" in str(exc.value)
    assert "'sha256'" in str(exc.value) and "push every rank again" in str(exc.value)
    assert not list(store.list(layout.versions_prefix(ART)))  # nothing committed
    # the committer's own merge refuses it too (its check is the authoritative one)
    key = next(k.key for k in store.list(layout.ARTIFACTS_PREFIX)
               if (p := layout.parse_shard_key(k.key)) and p[2] == 0)
    with pytest.raises(Conflict):
        merge_records([decode_record(store.get(key), key=key)], artifact=ART, step=5,
                      world=2, hash_algo="sha256", commit_id="c")
