"""A mutation review of tests/test_format_rules.py's fixes: artifact segments of the local temp
form (hidden on a local lake as directories, gc sweeping their chunks), frames a re-push reused
that decode refuses, non-dict and loosely typed lake objects, 63/65-hex chunk references, and
the hints of format errors."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from ckptlake.errors import IntegrityError, UsageError
from ckptlake.format import codecs, layout
from ckptlake.store.local import LocalStore

from test_format_rules import _chunk_files, _lake, _orphan, _policy, _src, _tree, run

TEMP_SEGMENT = ".tmp-1-0123456789abcdef"


# ---- 1. a directory of the temp form is an ordinary directory on a local lake ---------------

def test_an_artifact_moved_to_a_temp_form_segment_is_listed_pulled_and_kept_by_gc(
        tmp_path: Path) -> None:
    """An S3 lake copied to a directory may hold `a/.tmp-1-<16 hex>`: a local lake hid that
    directory from every listing, so ls showed nothing and gc swept the version's chunks."""
    from ckptlake.lake import Lake
    from ckptlake.store.memory import MemoryStore

    root, url = _lake(tmp_path)
    files = {"w.bin": bytes(range(256)) * 6000, "small.txt": b"hello"}
    name = f"a/{TEMP_SEGMENT}"
    s3 = MemoryStore()
    Lake(s3).push(_src(tmp_path, "src", files), name)
    for obj in s3.list():  # `aws s3 sync` of the bucket to a directory
        (root / obj.key).parent.mkdir(parents=True, exist_ok=True)
        (root / obj.key).write_bytes(s3.get(obj.key))
    assert (root / "artifacts" / "a" / TEMP_SEGMENT).is_dir()
    chunks = _chunk_files(root)
    assert chunks
    r = run("ls", "--lake", url, "--json")
    assert r.exit_code == 0, r.output
    assert name in r.stdout, r.stdout
    orphan = _orphan(root)
    r = run("gc", "--policy", _policy(tmp_path), "--lake", url, "--yes")
    assert r.exit_code == 0, r.output
    assert not (root / orphan).exists(), "gc swept nothing: the check below proves nothing"
    assert _chunk_files(root) == chunks
    r = run("pull", name, tmp_path / "out", "--lake", url)
    assert r.exit_code == 0, r.output
    assert _tree(tmp_path / "out") == files


def test_a_temp_form_artifact_pushes_lists_and_removes_on_a_local_lake(tmp_path: Path) -> None:
    root, url = _lake(tmp_path)
    files = {"w.bin": b"w" * 5000}
    src = _src(tmp_path, "src", files)
    name = f"team/{TEMP_SEGMENT}"
    for _ in range(2):
        r = run("push", src, name, "--lake", url)
        assert r.exit_code == 0, r.output
    store = LocalStore(root)
    assert [o.key for o in store.list(f"artifacts/{name}/@v/")] == [
        layout.version_key(name, 1), layout.version_key(name, 2)]
    r = run("rm", f"{name}@v1", "--lake", url, "--yes")
    assert r.exit_code == 0, r.output
    assert [o.key for o in store.list(f"artifacts/{name}/@v/")] == [layout.version_key(name, 2)]


def test_a_stale_temp_file_inside_a_temp_form_directory_is_removed_by_gc(
        tmp_path: Path) -> None:
    """The stale-temp walk entered no directory of the temp form: a killed writer's temp file
    inside one was never found, and gc never removed it."""
    root, url = _lake(tmp_path)
    assert run("push", _src(tmp_path, "src", {"w.bin": b"w" * 5000}), "a/b",
               "--lake", url).exit_code == 0
    d = root / "artifacts" / "a" / TEMP_SEGMENT / "@v"
    d.mkdir(parents=True)
    (d / "keep.txt").write_bytes(b"k")
    temp = d / ".tmp-7-fedcba9876543210"
    temp.write_bytes(b"x")
    os.utime(temp, (1_000_000_000, 1_000_000_000))
    old_dir = root / "artifacts" / "a" / (".tmp-8-" + "ab" * 8)  # a directory, even if old
    old_dir.mkdir()
    (old_dir / "f.txt").write_bytes(b"f")
    os.utime(old_dir, (1_000_000_000, 1_000_000_000))
    ids = [u.upload_id for u in LocalStore(root).list_multipart() if u.key == "ckptlake.json"]
    assert ids == [f"artifacts/a/{TEMP_SEGMENT}/@v/.tmp-7-fedcba9876543210"]
    r = run("gc", "--policy", _policy(tmp_path), "--lake", url, "--yes")
    assert r.exit_code == 0, r.output
    assert not temp.exists()
    assert (d / "keep.txt").read_bytes() == b"k"
    assert (old_dir / "f.txt").read_bytes() == b"f"


def test_a_temp_form_file_is_still_hidden_and_refused_as_a_last_segment(
        tmp_path: Path) -> None:
    root = tmp_path / "lake"
    store = LocalStore(root)
    store.put("artifacts/a/x.json", b"x")
    (root / "artifacts" / "a" / TEMP_SEGMENT).write_bytes(b"t")
    (root / "artifacts" / "a" / (".tmp-1-" + "0" * 32)).write_bytes(b"t")
    assert [o.key for o in store.list("artifacts/")] == ["artifacts/a/x.json"]
    for key in (f"artifacts/a/{TEMP_SEGMENT}", "artifacts/a/.tmp-1-" + "0" * 32):
        with pytest.raises(UsageError, match="reserved by local lakes"):
            store.put(key, b"")
    store.put(f"artifacts/b/{TEMP_SEGMENT}/x.json", b"ok")
    assert store.get(f"artifacts/b/{TEMP_SEGMENT}/x.json") == b"ok"
    assert f"artifacts/b/{TEMP_SEGMENT}/x.json" in [o.key for o in store.list("artifacts/b/")]


# ---- 2. a re-push reuses only a frame decode accepts -----------------------------------------

def _mixed_frame() -> tuple[bytes, bytes]:
    """A bytes4 planes frame whose planes 0 and 1 are stored (random bytes) and 2 and 3 zstd
    (zeros), with two raw bytes after the last element."""
    import random

    rnd = random.Random(7)
    data = b"".join(bytes([rnd.randrange(256), rnd.randrange(256), 0, 0])
                    for _ in range(3000)) + b"\x05\x06"
    frame = bytes(codecs.encode(data, codecs.Choice(codecs.CODEC_PLANES,
                                                    codecs.PLANES_BYTES4)))
    return data, frame


def _table(frame: bytes) -> list[tuple[int, int]]:
    return [codecs.PLANE.unpack_from(frame, codecs.HEAD.size + 1 + codecs.PLANE.size * k)
            for k in range(frame[codecs.HEAD.size])]


def _fits(frame: bytes | bytearray, rawlen: int) -> bool:
    return codecs.fits_frame(bytes(frame[:codecs.FRAME_PREFIX]), rawlen, len(frame))


@pytest.mark.parametrize("mode", [2, 3, 7, 255])
@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_an_unknown_mode_in_any_plane_does_not_fit(k: int, mode: int) -> None:
    pytest.importorskip("zstandard")
    data, frame = _mixed_frame()
    assert [m for m, _ in _table(frame)] == [codecs.MODE_STORED] * 2 + [codecs.MODE_ZSTD] * 2
    assert _fits(frame, len(data))
    bad = bytearray(frame)
    bad[codecs.HEAD.size + 1 + codecs.PLANE.size * k] = mode
    assert not _fits(bad, len(data))
    with pytest.raises(codecs.UnknownEncoding, match=f"unknown plane mode {mode}"):
        codecs.decode(bytes(bad))


def test_a_stored_plane_of_the_wrong_length_does_not_fit() -> None:
    """The frame's size still adds up (a zstd plane's length is one less), so only the stored
    plane's own length, which decode checks against the plane size, tells it apart."""
    pytest.importorskip("zstandard")
    data, frame = _mixed_frame()
    table = _table(frame)
    for stored, packed in ((0, 2), (1, 3)):
        bad = bytearray(frame)
        for k, delta in ((stored, 1), (packed, -1)):
            mode, length = table[k]
            codecs.PLANE.pack_into(bad, codecs.HEAD.size + 1 + codecs.PLANE.size * k,
                                   mode, length + delta)
        assert codecs.frame_size(bytes(bad)) is None
        assert not _fits(bad, len(data))
        with pytest.raises(codecs.CodecError, match="plane lengths do not match"):
            codecs.decode(bytes(bad))


def test_a_frame_that_fits_never_fails_decode_but_on_zstd_content() -> None:
    """Every frame an encode makes, damaged at each byte of its head and plane table (one byte
    at a time, several values): whenever fits_frame takes it for a whole frame of the chunk,
    decode either returns bytes (the chunk's digest then judges them) or raises a CodecError
    about the zstd data inside it ("zstd data ..."), never UnknownEncoding, another CodecError
    (plane count, lengths, truncation) or any other exception."""
    pytest.importorskip("zstandard")
    import random

    rnd = random.Random(11)
    noise = bytes(rnd.randrange(256) for _ in range(8000))
    frames = [_mixed_frame()]
    for transform in (codecs.PLANES_BYTES2, codecs.PLANES_BF16, codecs.PLANES_FP32):
        data = bytes(b if i % 4 < 2 else 0 for i, b in enumerate(noise)) + b"\x01"
        frames.append((data, bytes(codecs.encode(data, codecs.Choice(codecs.CODEC_PLANES,
                                                                     transform)))))
    data = b"abc" * 3000
    frames.append((data, bytes(codecs.encode(data, codecs.Choice(codecs.CODEC_ZSTD)))))
    fitted = 0
    for data, frame in frames:
        assert _fits(frame, len(data)) and bytes(codecs.decode(frame)) == data
        planes = frame[codecs.HEAD.size] if frame[4] == codecs.CODEC_PLANES else -1
        end = codecs.HEAD.size + 1 + codecs.PLANE.size * planes if planes > 0 \
            else codecs.HEAD.size
        for pos in range(end):
            for value in {0, 1, 2, 3, 4, 255, frame[pos] ^ 1, frame[pos] ^ 0x80} - {frame[pos]}:
                bad = bytearray(frame)
                bad[pos] = value
                if not _fits(bad, len(data)):
                    continue
                fitted += 1
                try:
                    codecs.decode(bytes(bad))
                except codecs.CodecError as exc:
                    assert not isinstance(exc, codecs.UnknownEncoding), (pos, value, exc)
                    assert str(exc).startswith("zstd data"), (pos, value, exc)
    # (8 today: a stored plane marked zstd, a transform swapped for another of its width)
    assert fitted >= 5, "almost nothing fitted: the loop proves nothing"


# ---- 4. format `true`/`1.0` in shard claims, records and training-state skeletons ------------

def _claim_doc(**change: Any) -> dict[str, Any]:
    doc = {"ckptlake_shard_claim": 1, "artifact": "a/b", "step": 3, "world": 2,
           "commit_id": "c", "state": "committed", "owner": "o",
           "updated": "2026-12-05T15:00:00Z", "version": 4}
    doc.update(change)
    return doc


@pytest.mark.parametrize("value", [True, 1.0])
def test_a_shard_claim_of_format_true_is_malformed(value: Any) -> None:
    from ckptlake.core import shards

    claim = shards.decode_claim(json.dumps(_claim_doc()).encode(), key="k")
    assert (claim.step, claim.world, claim.version) == (3, 2, 4)
    with pytest.raises(IntegrityError, match="k: malformed shard claim"):
        shards.decode_claim(json.dumps(_claim_doc(ckptlake_shard_claim=value)).encode(),
                            key="k")


@pytest.mark.parametrize("field,value", [("version", True), ("version", 1.0), ("version", 0),
                                         ("version", "4"), ("step", 2.9), ("step", True),
                                         ("step", "3"), ("world", True), ("world", 2.0),
                                         ("world", None)])
def test_a_shard_claim_of_loose_types_is_malformed(field: str, value: Any) -> None:
    """`"step": 2.9` was read as the claim of step 2, `"version": true` as v1, `"world": true`
    as a world of 1."""
    from ckptlake.core import shards

    with pytest.raises(IntegrityError, match="malformed shard claim"):
        shards.decode_claim(json.dumps(_claim_doc(**{field: value})).encode(), key="k")
    assert shards.decode_claim(json.dumps(_claim_doc(version=None)).encode(),
                               key="k").version is None


def _pending_shard(tmp_path: Path) -> tuple[Path, str, str]:
    """A local lake holding rank 0's record of a 2-rank step 5 of `a/b` (not committed)."""
    root, url = _lake(tmp_path)
    r = run("push", _src(tmp_path, "r0", {"w.bin": b"w" * 5000}), "a/b", "--shard", "0/2",
            "--step", 5, "--lake", url)
    assert r.exit_code == 0, r.output
    key = layout.shard_record_key("a/b", 5, 0, 2)
    assert (root / key).is_file()
    return root, url, key


@pytest.mark.parametrize("value", [True, 1.0])
def test_a_shard_record_of_format_true_is_not_read(tmp_path: Path, value: Any) -> None:
    from ckptlake.core import shards

    root, _url, key = _pending_shard(tmp_path)
    doc = json.loads((root / key).read_text())
    assert shards.decode_record(json.dumps(doc).encode(), key=key).rank == 0
    doc["ckptlake_shard"] = value
    with pytest.raises(IntegrityError, match="not a ckptlake shard record") as info:
        shards.decode_record(json.dumps(doc).encode(), key=key)
    assert info.value.hint == (f"its ckptlake_shard is {json.dumps(value)}, not the integer 1: "
                               "damaged, or written by another tool")


@pytest.mark.parametrize("value", [True, 1.0])
def test_a_training_state_of_format_true_is_refused_as_damaged(value: Any) -> None:
    from ckptlake.format import state

    assert state.parse(b'{"ckptlake_state": 1, "root": null}', "r@v1")["root"] is None
    with pytest.raises(UsageError, match="training-state format") as info:
        state.parse(json.dumps({"ckptlake_state": value, "root": None}).encode(), "r@v1")
    assert "upgrade" not in (info.value.hint or "")
    assert "damaged, or written by another tool" in (info.value.hint or "")
    with pytest.raises(UsageError) as info:
        state.parse(b'{"ckptlake_state": 2, "root": null}', "r@v1")
    assert (info.value.hint or "").startswith("upgrade ckptlake")


# ---- 3. a lake object that is JSON but no object: exit 5, never an internal error ------------

@pytest.mark.parametrize("doc", [[], "x", None, 1])
def test_a_manifest_that_is_not_a_json_object_is_malformed(tmp_path: Path, doc: Any) -> None:
    from ckptlake.format.manifest import decode_manifest

    with pytest.raises(IntegrityError, match="not a ckptlake manifest") as info:
        decode_manifest(json.dumps(doc).encode(), key="k")
    assert info.value.hint == "it is not a JSON object: damaged, or written by another tool"
    root, url = _lake(tmp_path)
    assert run("push", _src(tmp_path, "src", {"w.bin": b"w" * 5000}), "a/b",
               "--lake", url).exit_code == 0
    key = layout.version_key("a/b", 1)
    (root / key).write_text(json.dumps(doc))
    r = run("pull", "a/b@v1", tmp_path / "out", "--lake", url)
    assert r.exit_code == 5, r.output
    assert "not a ckptlake manifest" in r.output and "internal error" not in r.output
    r = run("verify", "--lake", url)
    assert r.exit_code == 5, r.output
    assert key in r.output and "internal error" not in r.output


@pytest.mark.parametrize("doc", [[], "x", None])
def test_a_shard_record_that_is_not_a_json_object_fails_verify(tmp_path: Path,
                                                               doc: Any) -> None:
    from ckptlake.core import shards

    with pytest.raises(IntegrityError) as info:
        shards.decode_record(json.dumps(doc).encode(), key="k")
    assert info.value.hint == "it is not a JSON object: damaged, or written by another tool"
    root, url, key = _pending_shard(tmp_path)
    assert run("verify", "--lake", url).exit_code == 0
    (root / key).write_text(json.dumps(doc))
    r = run("verify", "--lake", url)
    assert r.exit_code == 5, r.output
    assert key in r.output and "internal error" not in r.output


# ---- 5. a chunk reference is exactly 64 hex digits --------------------------------------------

@pytest.mark.parametrize("digits", [63, 65])
def test_a_manifest_naming_a_chunk_of_63_or_65_hex_is_malformed(tmp_path: Path,
                                                                digits: int) -> None:
    root, url = _lake(tmp_path)
    assert run("push", _src(tmp_path, "src", {"w.bin": b"w" * 5000}), "a/b",
               "--lake", url).exit_code == 0
    path = root / layout.version_key("a/b", 1)
    doc = json.loads(path.read_text())
    doc["files"].append({"path": "odd.bin", "size": 5, "chunks": [["a" * digits, 5]]})
    path.write_text(json.dumps(doc))
    r = run("pull", "a/b", tmp_path / "out", "--lake", url)
    assert r.exit_code == 5, r.output
    assert "malformed chunk digest" in r.output


# ---- 6. the hints of format errors -------------------------------------------------------------

@pytest.mark.parametrize("value,message,hint", [
    (True, "ckptlake.json: ckptlake_lake is true, not an integer format version",
     "its ckptlake_lake is true, not the integer 1: damaged, or written by another tool"),
    (1.0, "ckptlake.json: ckptlake_lake is 1.0, not an integer format version",
     "its ckptlake_lake is 1.0, not the integer 1: damaged, or written by another tool"),
    (0, "lake format 0 is not supported",
     "its ckptlake_lake is 0, not the integer 1: damaged, or written by another tool"),
    (-1, "lake format -1 is not supported",
     "its ckptlake_lake is -1, not the integer 1: damaged, or written by another tool"),
    (2, "lake format 2 is not supported", "upgrade ckptlake: a newer one wrote it"),
])
def test_a_header_format_hint_says_upgrade_only_for_a_newer_integer(value: Any, message: str,
                                                                    hint: str) -> None:
    from ckptlake.format.header import decode_header

    doc = {"ckptlake_lake": value, "hash": "sha256", "chunk_size": 16 << 20}
    with pytest.raises(IntegrityError) as info:
        decode_header(json.dumps(doc).encode())
    assert info.value.message == message
    assert info.value.hint == hint


def test_a_manifest_of_format_2_0_is_damaged_not_newer() -> None:
    from ckptlake.format.manifest import decode_manifest

    for doc, hint in (({"ckptlake_manifest": 2.0},
                       "its ckptlake_manifest is 2.0, not the integer 1"),
                      ({"kind": "dir"}, "it has no ckptlake_manifest field")):
        with pytest.raises(IntegrityError) as info:
            decode_manifest(json.dumps(doc).encode(), key="k")
        assert info.value.message == "k: not a ckptlake manifest of format 1"
        assert info.value.hint == f"{hint}: damaged, or written by another tool"


@pytest.mark.parametrize("field,hint", [
    ("chunk_size", 'restore it, or add "chunk_size": 16777216 (the default)'),
    ("hash", "restore ckptlake.json from a copy of the lake"),
])
def test_a_header_missing_chunk_size_or_hash_gets_its_own_hint(field: str, hint: str) -> None:
    from ckptlake.format.header import decode_header

    doc = {"ckptlake_lake": 1, "hash": "sha256", "chunk_size": 16 << 20}
    del doc[field]
    with pytest.raises(IntegrityError) as info:
        decode_header(json.dumps(doc).encode())
    assert info.value.message == (f"ckptlake.json: the lake header has no {field} (damaged, or "
                               "not written by ckptlake)")
    assert info.value.hint == hint


def test_a_huge_format_value_is_cut_short_in_the_hint() -> None:
    """A crafted 100,000-character format field gave a 100,078-character hint."""
    from ckptlake.format.header import decode_header
    from ckptlake.format.manifest import decode_manifest

    for decode, field in ((decode_manifest, "ckptlake_manifest"), (decode_header, "ckptlake_lake")):
        with pytest.raises(IntegrityError) as info:
            decode(json.dumps({field: "x" * 100_000, "hash": "sha256",
                               "chunk_size": 1 << 24}).encode())
        assert len(str(info.value)) < 300, str(info.value)[:400]


def test_a_format_value_nested_near_the_parsers_limit_is_no_internal_error() -> None:
    """The hint encoded the value again, deeper than the parse: one nesting level below the
    limit turned a damaged manifest into a RecursionError."""
    from ckptlake.format.manifest import decode_manifest

    for depth in range(600, 1100):
        data = ('{"ckptlake_manifest": ' + "[" * depth + "]" * depth + "}").encode()
        with pytest.raises(IntegrityError):
            decode_manifest(data, key="k")


def test_a_huge_training_state_format_is_cut_short() -> None:
    from ckptlake.format import state

    with pytest.raises(UsageError) as info:
        state.parse(json.dumps({"ckptlake_state": "A" * 100_000, "root": {}}).encode(), "r@v1")
    assert len(str(info.value)) < 400
