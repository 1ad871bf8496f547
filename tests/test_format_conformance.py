"""docs/format.md as a second implementation reads it: objects built by hand from the doc's
rules, and what this ckptlake must make of them (a conformance review's findings).

- gc's records and pins are found by their prefix, not by the shape of their names;
- times in records parse the same on every Python (3.10's fromisoformat took only 0/3/6
  fraction digits);
- an empty gc/settings.json is no settings, read as the worst case (not an error);
- unknown fields are ignored (an `inputs` record with an extra key refused its artifact);
- shard record keys, the header's format marker, manifest steps: one canonical form.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import ckptlake
from ckptlake.core import gc_guard, shards, summary, tombstones
from ckptlake.core.gc import execute, plan_gc
from ckptlake.core.gc_guard import GcSettings, read_settings
from ckptlake.errors import IntegrityError
from ckptlake.format import codecs, layout
from ckptlake.format.header import decode_header
from ckptlake.format.manifest import decode_manifest
from ckptlake.store.memory import MemoryStore
from test_gc_guard import SETTINGS, Clock, run, setup  # noqa: F401
from test_gc_pins import POLICY, chunks_left, two_versions

DIGEST = "ab" * 32


def record(chunks: list[str], *, created: str = "2026-01-01T00:00:00Z", **extra) -> bytes:
    """A condemnation record with the fields docs/format.md requires, and no more."""
    return json.dumps({"ckptlake_condemned": 1, "created": created, "chunks": chunks,
                       **extra}).encode()


# ---- 1. gc's records and pins: every key under their prefixes ------------------------------

OTHER_NAMES = ["20260101T000000.000000Z-ABCDEF12.json",  # uppercase hex
               "20260101T000000Z-0123456789abcdef0123456789abcdef01.json",  # no fraction, 34
               "other-gc/0001.json", "record"]


@pytest.mark.parametrize("name", OTHER_NAMES)
def test_a_record_under_any_name_makes_a_push_wait_for_its_chunks(setup, name: str) -> None:
    """A record another gc names its own way condemns chunks all the same: a push that reuses
    one must wait out the sweep window and check it (skipped, the push committed a version
    whose chunk that gc was sweeping)."""
    store, blobs, clock = setup
    victim = sorted(blobs)[0]
    store.put(layout.CONDEMNED_PREFIX + name, record([victim]))
    assert layout.is_condemned_key(layout.CONDEMNED_PREFIX + name)
    store.calls.clear()
    run(store, blobs, clock)
    assert clock.slept and clock.slept[0] == pytest.approx(SETTINGS.sweep_window + 1)
    assert store.calls["stat"] >= 1, "the condemned chunk was checked"


@pytest.mark.parametrize("name", OTHER_NAMES)
def test_a_pin_under_any_name_is_a_gc_root(tmp_path: Path, name: str) -> None:
    store, v1 = two_versions(tmp_path)
    key = layout.PINS_PREFIX + name
    store.put(key, json.dumps({"ckptlake_pin": 1, "created": "2026-12-06T15:00:00Z",
                               "chunks": sorted(v1)}).encode())
    assert layout.is_pin_key(key) and layout.is_lake_key(key)
    plan = plan_gc(store, POLICY)
    assert plan.pins == 1 and plan.garbage.objects == 0
    result = execute(store, plan)
    assert result.versions_deleted == ["p/ckpt@v1"]
    assert chunks_left(store, v1) == v1, "pinned chunks are not swept (grace 0)"


def test_gc_sweeps_a_record_written_under_another_name(tmp_path: Path) -> None:
    """Nothing is read from a record's name: ripeness is its `created` and this run's
    grace_period, not the record's own `grace_period` (informational); `sizes` is optional."""
    store, v1 = two_versions(tmp_path)
    execute(store, plan_gc(store, POLICY))  # deletes v1 and condemns + sweeps its chunks
    orphan = os.urandom(64)
    d = hashlib.sha256(orphan).hexdigest()
    store.put(layout.chunk_key(d), orphan)
    key = layout.CONDEMNED_PREFIX + "by-another-gc.json"
    an_hour_ago = datetime.now(timezone.utc) - timedelta(hours=1)
    store.put(key, record([d], created=an_hour_ago.isoformat(), grace_period=10 ** 9))
    plan = plan_gc(store, POLICY)
    assert plan.records >= 1 and plan.condemned_ripe.objects == 1
    execute(store, plan)
    assert not store.exists(layout.chunk_key(d))
    assert json.loads(store.get(key))["swept_at"] is not None


# ---- 3. times ----------------------------------------------------------------------------

_PY310 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(.[0-9]{2}(:[0-9]{2}(:[0-9]{2}"
                    r"(\.([0-9]{3}|[0-9]{6}))?)?)?([+-][0-9]{2}:[0-9]{2})?)?")


class Py310Datetime(datetime):
    """datetime whose fromisoformat accepts what Python 3.10's does, and no more."""

    @classmethod
    def fromisoformat(cls, text: str):  # type: ignore[override]
        if not _PY310.fullmatch(text):
            raise ValueError(f"Invalid isoformat string: {text!r}")
        return datetime.fromisoformat(text)


@pytest.fixture
def python310(monkeypatch: pytest.MonkeyPatch) -> None:
    import ckptlake.core.gc
    import ckptlake.format.manifest

    modules = [ckptlake.format.manifest, gc_guard, tombstones, summary, shards, ckptlake.core.gc]
    try:
        from ckptlake.format import times
        modules.append(times)
    except ImportError:
        pass
    for module in modules:
        monkeypatch.setattr(module, "datetime", Py310Datetime)


NANOS = "2026-12-05T15:00:00.123456789Z"
TENTH = "2026-12-05T15:00:00.5Z"


def hand_manifest(**fields) -> bytes:
    """A manifest with the fields docs/format.md marks required, and no more."""
    doc = {"ckptlake_manifest": 1, "artifact": "a/b", "version": 1, "kind": "dir",
           "hash": "sha256", "created": "2026-12-05T15:00:00Z",
           "files": [{"path": "f", "size": 3, "chunks": [[DIGEST, 3]]}]}
    doc.update(fields)
    return json.dumps(doc).encode()


@pytest.mark.parametrize("created", [NANOS, TENTH, "2026-12-05T15:00:00+00:00"])
def test_times_with_any_fraction_read_the_same_on_python_310(python310, created: str) -> None:
    m = decode_manifest(hand_manifest(created=created))
    assert m.created.tzinfo is not None and m.created.replace(microsecond=0) == \
        datetime(2026, 12, 5, 15, tzinfo=timezone.utc)
    claim = shards.decode_claim(json.dumps({
        "ckptlake_shard_claim": 1, "artifact": "a/b", "step": 1, "world": 2, "commit_id": "c",
        "state": "claimed", "owner": "o", "updated": created}).encode(), key="k")
    assert claim.updated == m.created
    rec = gc_guard.decode_record("k", record([DIGEST], created=created, swept_at=created), "e")
    assert rec.created == rec.swept_at == m.created
    tomb = tombstones.decode(json.dumps({
        "ckptlake_tombstone": 1, "artifact": "a/b", "version": 1, "created": created,
        "deleted": created}).encode())
    assert tomb is not None and tomb.deleted == m.created
    s = summary._decode(summary._pack({"c": created, "b": 3, "f": 1, "m": {}}))
    assert s.created == m.created


def test_time_parser_forms() -> None:
    from ckptlake.format.times import parse_time

    utc = timezone.utc
    assert parse_time(NANOS) == datetime(2026, 12, 5, 15, 0, 0, 123456, tzinfo=utc)
    assert parse_time(TENTH) == datetime(2026, 12, 5, 15, 0, 0, 500000, tzinfo=utc)
    assert parse_time("2026-12-05T15:00:00") == datetime(2026, 12, 5, 15, tzinfo=utc)
    assert parse_time("2026-12-05T16:00:00+01:00") == datetime(2026, 12, 5, 15, tzinfo=utc)
    assert parse_time("2026-12-05 15:00:00.123+00:00").microsecond == 123000  # as before
    for bad in ("", "None", "2026-13-05T15:00:00Z", "2026-12-05T15:00:00+24:00"):
        with pytest.raises(ValueError):
            parse_time(bad)


def test_one_time_parser() -> None:
    """Every reader of a lake's times goes through format/times.py (the local backend's own
    bookkeeping aside), so none can be stricter on one Python than on another."""
    root = Path(ckptlake.__file__).parent
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if "fromisoformat" in p.read_text()
                 and p.relative_to(root).as_posix() not in ("format/times.py", "store/local.py")]
    assert offenders == []


# ---- 4. an empty gc/settings.json -------------------------------------------------------

def test_empty_settings_are_the_slowest_sweep_not_an_error(setup) -> None:
    """Empty settings: a push reusing a condemned chunk waits the slowest sweep (an hour) for
    it; one that reuses none does not wait at all (with record_retention 0, every push waited
    an hour after its commit)."""
    store, blobs, clock = setup
    store.put(layout.GC_SETTINGS_KEY, b"")
    assert read_settings(store) == gc_guard.EMPTY_SETTINGS
    result, _ = run(store, blobs, clock, settings=None)
    assert result.version == 1 and clock.slept == [], "no record names its chunks: no wait"
    victim = sorted(blobs)[0]
    store.put(layout.condemned_key("20260101T000000.000000Z", "ab" * 4), record([victim]))
    result, _ = run(store, blobs, clock, settings=None)
    assert result.version == 2, "the push commits"
    assert clock.slept[0] == pytest.approx(gc_guard.EMPTY_SETTINGS.sweep_window + 1)


def test_gc_rewrites_an_empty_settings_file(tmp_path: Path) -> None:
    store, _ = two_versions(tmp_path)
    store.put(layout.GC_SETTINGS_KEY, b"")
    execute(store, plan_gc(store, POLICY))
    assert GcSettings.decode(store.get(layout.GC_SETTINGS_KEY)) == GcSettings(0, 5, 60)


# ---- 5, 10. manifests: unknown fields ignored, required fields, steps --------------------

def test_a_manifest_with_only_the_required_fields_decodes() -> None:
    m = decode_manifest(hand_manifest())
    assert (m.step, m.metrics, m.metadata, m.parents, m.inputs, m.dirs, m.stored) == \
        (None, {}, {}, (), (), (), {})


@pytest.mark.parametrize("field", ["ckptlake_manifest", "artifact", "version", "kind", "hash",
                                   "created", "files"])
def test_each_required_manifest_field_is_required(field: str) -> None:
    doc = json.loads(hand_manifest())
    del doc[field]
    with pytest.raises(IntegrityError):
        decode_manifest(json.dumps(doc).encode())


def test_unknown_fields_are_ignored_everywhere_in_a_manifest() -> None:
    doc = json.loads(hand_manifest(
        inputs=[{"uri": "s3://data/wiki", "digest": "sha256:ab", "size": 5, "note": {"x": 1}}],
        parents=[], later_field={"a": 1}))
    doc["files"][0]["later"] = [1, 2]
    m = decode_manifest(json.dumps(doc).encode())
    assert m.inputs == ({"uri": "s3://data/wiki", "digest": "sha256:ab"},)
    assert "note" not in m.encode().decode(), "unknown input fields are not written back"


def test_a_negative_step_is_refused() -> None:
    assert decode_manifest(hand_manifest(step=0)).step == 0
    with pytest.raises(IntegrityError, match="malformed step"):
        decode_manifest(hand_manifest(step=-1))


# ---- 8. shard record keys ------------------------------------------------------------------

def test_shard_record_keys_are_canonical() -> None:
    base = "artifacts/a/b/@shards/0000002000/"
    assert layout.parse_shard_key(base + "3-of-8.json") == ("a/b", 2000, 3, 8)
    assert layout.parse_shard_key(base + "0-of-1.json") == ("a/b", 2000, 0, 1)
    assert layout.parse_shard_key(base + "commit.json") == ("a/b", 2000, None, None)
    for name in ("03-of-08.json", "3-of-08.json", "00-of-1.json", "0-of-0.json",
                 "+3-of-8.json"):
        assert layout.parse_shard_key(base + name) is None, name
        assert not layout.is_lake_key(base + name), "foreign: reported, never deleted"


def test_a_non_canonical_record_key_is_no_record() -> None:
    store = MemoryStore()
    store.put("artifacts/a/b/@shards/0000002000/03-of-08.json", b'{"ckptlake_shard": 1}')
    assert shards.pending(store) == []
    assert shards._list_step(store, "a/b", 2000) == ({}, False)


# ---- 13. the header's format marker ---------------------------------------------------------

@pytest.mark.parametrize("fmt", [True, 1.0, "1"])
def test_the_header_format_must_be_the_integer_1(fmt: object) -> None:
    doc = {"ckptlake_lake": 1, "hash": "sha256", "chunk_size": 1 << 24,
           "created": "2026-12-05T15:00:00Z"}
    assert decode_header(json.dumps(doc).encode()).hash == "sha256"
    with pytest.raises(IntegrityError):
        decode_header(json.dumps({**doc, "ckptlake_lake": fmt}).encode())


# ---- 6, 7. summaries and zstd frames, as documented -----------------------------------------

def test_a_summary_needs_c_b_f_m_and_reads_t() -> None:
    required = {"c": "2026-12-05T15:00:00Z", "b": 10, "f": 1, "m": {"loss": 1.5}}
    s = summary._decode(summary._pack(required))
    assert (s.step, s.created_by, s.metadata, s.stored_bytes) == (None, "", None, 10)
    assert summary._decode(summary._pack({**required, "t": 4})).stored_bytes == 4
    for key in required:
        with pytest.raises((KeyError, ValueError)):
            summary._decode(summary._pack({k: v for k, v in required.items() if k != key}))


def test_zstd_frames_need_a_window_of_at_most_2_27_and_no_dictionary() -> None:
    zstd = pytest.importorskip("zstandard")
    data = os.urandom(1 << 16) * 4

    def frame(body: bytes) -> bytes:
        return codecs.HEAD.pack(codecs.MAGIC, codecs.CODEC_ZSTD, 0, 0, len(data)) + body

    def streamed(window_log: int) -> bytes:
        params = zstd.ZstdCompressionParameters(window_log=window_log, compression_level=1,
                                                write_content_size=False)
        out = io.BytesIO()
        with zstd.ZstdCompressor(compression_params=params).stream_writer(
                out, closefd=False) as w:
            w.write(data)
        return out.getvalue()

    assert bytes(codecs.decode(frame(streamed(27)))) == data
    with pytest.raises(codecs.CodecError):
        codecs.decode(frame(streamed(28)))
    samples = [os.urandom(64) + b"ckptlake" * 40 for _ in range(200)]
    with_dict = zstd.ZstdCompressor(dict_data=zstd.train_dictionary(4096, samples)).compress(data)
    with pytest.raises(codecs.CodecError):
        codecs.decode(frame(with_dict))


def test_replica_identity_is_the_headers_created_and_hash() -> None:
    """The marker's `lake` is the header's `created` and `hash`, compared as strings; a header
    without `created` gives no identity (matching falls back to the URL)."""
    from ckptlake.core import replicas

    store = MemoryStore()
    store.put(layout.HEADER_KEY, json.dumps({"ckptlake_lake": 1, "hash": "sha256",
                                             "chunk_size": 1 << 24}).encode())
    assert replicas.lake_identity(store) is None
    created = "2026-06-01T09:30:00.123456Z"
    store.put(layout.HEADER_KEY, json.dumps({"ckptlake_lake": 1, "hash": "sha256",
                                             "chunk_size": 1 << 24,
                                             "created": created}).encode())
    assert replicas.lake_identity(store) == {"created": created, "hash": "sha256"}



@pytest.mark.parametrize("prefix", ["gc/condemned/", "gc/pins/"])
def test_a_folder_marker_under_gc_is_no_record_nor_pin(prefix: str, tmp_path: Path) -> None:
    """S3 consoles, s3fs and Cyberduck create "folders" as keys ending in "/": read as a
    record or pin, `gc/condemned/archive/` stopped every push and every gc (no store reads
    such a key)."""
    from ckptlake.lake import Lake

    from ckptlake.store.local import validate_key

    store, _ = two_versions(tmp_path)
    store.put(prefix + "archive/", b"")
    for name in ("get", "get_with_etag"):  # as the S3 store does: it refuses such keys
        real = getattr(store, name)
        setattr(store, name, lambda key, *a, _real=real, **kw: _real(validate_key(key), *a, **kw))
    assert not layout.is_condemned_key(prefix + "archive/")
    assert not layout.is_pin_key(prefix + "archive/")
    execute(store, plan_gc(store, POLICY))
    src = tmp_path / "again"
    src.mkdir()
    (src / "f").write_bytes(b"x" * 100)
    Lake(store).push(src, "c/after")
