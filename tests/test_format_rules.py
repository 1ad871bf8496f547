"""Rules of docs/format.md a second implementer's review found the code did not keep: artifact
names a local lake took for its temp files (hidden from ls, swept by gc), non-chunks under
chunks/ swept by gc, header fields missing or of the wrong type, format numbers of `true`/`1.0`,
and a re-push trusting a frame it cannot decode."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from test_local_store_review import _policy, run

from ckptlake.errors import IntegrityError, UsageError
from ckptlake.core import gc_guard, tombstones
from ckptlake.format import codecs, layout
from ckptlake.store.local import LocalStore

MiB = 1 << 20


def _src(tmp_path: Path, name: str, files: dict[str, bytes]) -> Path:
    d = tmp_path / name
    d.mkdir()
    for rel, data in files.items():
        (d / rel).write_bytes(data)
    return d


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _lake(tmp_path: Path) -> tuple[Path, str]:
    root = tmp_path / "lake"
    return root, f"file://{root}"


def _chunk_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in (root / "chunks").rglob("*") if p.is_file()}


def _orphan(root: Path, fill: str = "cd") -> str:
    """An unreferenced object at a real chunk key: gone after gc proves gc swept."""
    key = layout.chunk_key(fill * 32)
    (root / key).parent.mkdir(parents=True, exist_ok=True)
    (root / key).write_bytes(b"orphan")
    return key


# ---- 1. `.tmp-` artifact segments on a local lake -----------------------------------------

def test_a_dot_tmp_artifact_is_listed_pulled_and_kept_by_gc_on_a_local_lake(
        tmp_path: Path) -> None:
    """A version of `team/.tmp-run` on a local lake was hidden from ls, and gc swept its
    chunks (on S3 the name was always ordinary: a lake synced to a directory held one)."""
    root, url = _lake(tmp_path)
    files = {"w.bin": bytes(range(256)) * 6000, "small.txt": b"hello"}
    src = _src(tmp_path, "src", files)
    r = run("push", src, "team/.tmp-run", "--lake", url)
    assert r.exit_code == 0, r.output
    chunks = _chunk_files(root)
    assert chunks
    r = run("ls", "--lake", url, "--json")
    assert r.exit_code == 0, r.output
    assert "team/.tmp-run" in r.stdout
    orphan = _orphan(root)
    r = run("gc", "--policy", _policy(tmp_path), "--lake", url, "--yes")
    assert r.exit_code == 0, r.output
    assert not (root / orphan).exists(), "gc swept nothing: the check below proves nothing"
    assert _chunk_files(root) == chunks
    r = run("pull", "team/.tmp-run", tmp_path / "out", "--lake", url)
    assert r.exit_code == 0, r.output
    assert _tree(tmp_path / "out") == files


def test_a_real_temp_name_is_still_hidden_and_refused(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "lake")
    store.put("chunks/ab/x", b"x")
    (tmp_path / "lake" / "chunks" / "ab" / ".tmp-12-0123456789abcdef").write_bytes(b"t")
    (tmp_path / "lake" / "chunks" / "ab" / ".tmp-draft.txt").write_bytes(b"d")
    assert [o.key for o in store.list("chunks/")] == ["chunks/ab/.tmp-draft.txt", "chunks/ab/x"]
    with pytest.raises(UsageError, match="reserved by local lakes"):
        store.put("artifacts/a/.tmp-1-" + "0" * 32, b"")
    with pytest.raises(UsageError, match="reserved by local lakes"):
        store.put("artifacts/a/.tmp-1-" + "0" * 16, b"")
    store.put("artifacts/a/.tmp-run/x", b"ok")
    assert store.get("artifacts/a/.tmp-run/x") == b"ok"


def test_a_stale_temp_under_a_dot_tmp_artifact_is_found_and_removed(tmp_path: Path) -> None:
    """A killed writer's temp file inside `artifacts/team/.tmp-run/` is gc's to remove like
    any other: the stale-temp walk must enter that directory, and only real temp names count."""
    store = LocalStore(tmp_path / "lake")
    d = tmp_path / "lake" / "artifacts" / "team" / ".tmp-run" / "@v"
    d.mkdir(parents=True)
    (d / "keep.json").write_bytes(b"{}")
    temp, other = d / ".tmp-7-0123456789abcdef", d / ".tmp-7-draft"
    for p in (temp, other):
        p.write_bytes(b"x")
        os.utime(p, (1_000_000_000, 1_000_000_000))
    uploads = [u for u in store.list_multipart() if u.key == "ckptlake.json"]
    assert [u.upload_id for u in uploads] == [
        "artifacts/team/.tmp-run/@v/.tmp-7-0123456789abcdef"]
    store.abort_multipart("ckptlake.json", uploads[0].upload_id)
    assert not temp.exists() and other.exists()
    assert store.get("artifacts/team/.tmp-run/@v/keep.json") == b"{}"


def test_a_temp_named_artifact_is_ordinary_on_a_local_lake_and_on_s3(
        tmp_path: Path) -> None:
    """A segment of the exact temp form is a directory on a local lake, which hides only temp
    FILES: a push there works and ls lists it; on an S3 lake it is an ordinary name that every
    command reads (refusing it in the artifact grammar stranded versions already there)."""
    from ckptlake.lake import Lake
    from ckptlake.store.memory import MemoryStore

    root, url = _lake(tmp_path)
    files = {"w.bin": b"w" * 5000}
    src = _src(tmp_path, "src", files)
    name = "a/.tmp-1-0123456789abcdef"
    r = run("push", src, name, "--lake", url)
    assert r.exit_code == 0, r.output
    r = run("ls", "--lake", url, "--json")
    assert r.exit_code == 0 and name in r.stdout, r.output
    lake = Lake(MemoryStore())
    lake.push(src, name)
    assert [v.version for v in lake.versions(name)] == [1]
    lake.pull(name, tmp_path / "out")
    assert _tree(tmp_path / "out") == files


# ---- 2. only 64-hex keys under chunks/ are chunks -----------------------------------------

def test_gc_leaves_objects_under_chunks_of_another_digest_length(tmp_path: Path) -> None:
    root, url = _lake(tmp_path)
    assert run("push", _src(tmp_path, "src", {"w.bin": b"w" * 5000}), "a/b",
               "--lake", url).exit_code == 0
    foreign = ["chunks/ab/ab" + "0" * 38, "chunks/ab/ab" + "0" * 64]
    for key in foreign:
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(b"not a chunk")
    orphan = _orphan(root)
    r = run("gc", "--policy", _policy(tmp_path), "--lake", url, "--yes")
    assert r.exit_code == 0, r.output
    assert not (root / orphan).exists(), "gc swept nothing: the check below proves nothing"
    for key in foreign:
        assert (root / key).read_bytes() == b"not a chunk", key


def test_a_manifest_naming_a_40_hex_chunk_is_malformed(tmp_path: Path) -> None:
    root, url = _lake(tmp_path)
    assert run("push", _src(tmp_path, "src", {"w.bin": b"w" * 5000}), "a/b",
               "--lake", url).exit_code == 0
    path = root / layout.version_key("a/b", 1)
    doc = json.loads(path.read_text())
    doc["files"].append({"path": "odd.bin", "size": 5, "chunks": [["ab" * 20, 5]]})
    path.write_text(json.dumps(doc))
    r = run("pull", "a/b", tmp_path / "out", "--lake", url)
    assert r.exit_code == 5, r.output
    assert "malformed chunk digest" in r.output


# ---- 3. and 4. the lake header's fields ---------------------------------------------------

def _header(root: Path, **change: Any) -> None:
    path = root / layout.HEADER_KEY
    doc = json.loads(path.read_text())
    for k, v in change.items():
        if v is _DROP:
            del doc[k]
        else:
            doc[k] = v
    path.write_text(json.dumps(doc))


_DROP = object()


@pytest.mark.parametrize("field", ["chunk_size", "hash", "ckptlake_lake"])
def test_a_header_without_a_required_field_names_it(tmp_path: Path, field: str) -> None:
    root, url = _lake(tmp_path)
    src = _src(tmp_path, "src", {"w.bin": b"w" * 5000})
    assert run("push", src, "a/b", "--lake", url).exit_code == 0
    _header(root, **{field: _DROP})
    for args in (("push", src, "a/b"), ("gc", "--policy", _policy(tmp_path), "--yes"),
                 ("verify",)):
        r = run(*args, "--lake", url)
        assert r.exit_code == 5, (args, r.output)
        assert f"the lake header has no {field}" in r.output, (args, r.output)
        assert "Traceback" not in r.output


@pytest.mark.parametrize("value", [None, {"mode": "auto"}, ["auto"], 1])
def test_a_non_string_compression_is_an_unknown_mode(tmp_path: Path, value: Any) -> None:
    root, url = _lake(tmp_path)
    files = {"w.bin": b"w" * 5000}
    src = _src(tmp_path, "src", files)
    assert run("push", src, "a/b", "--lake", url).exit_code == 0
    _header(root, compression=value)
    r = run("push", src, "a/b", "--lake", url)
    assert r.exit_code == 2, r.output
    assert "unknown compression" in r.output and "in the lake header" in r.output, r.output
    r = run("push", src, "a/b", "--lake", url, "--compression", "none")
    assert r.exit_code == 0, r.output
    r = run("gc", "--policy", _policy(tmp_path), "--lake", url, "--dry-run")
    assert r.exit_code == 0, r.output
    r = run("verify", "--lake", url)
    assert r.exit_code == 0, r.output
    r = run("pull", "a/b", tmp_path / "out", "--lake", url)
    assert r.exit_code == 0, r.output
    assert _tree(tmp_path / "out") == files


# ---- 5. format numbers are the JSON integer 1 ---------------------------------------------

@pytest.mark.parametrize("value", [True, 1.0])
def test_a_manifest_of_format_true_is_malformed(tmp_path: Path, value: Any) -> None:
    root, url = _lake(tmp_path)
    assert run("push", _src(tmp_path, "src", {"w.bin": b"w" * 5000}), "a/b",
               "--lake", url).exit_code == 0
    path = root / layout.version_key("a/b", 1)
    doc = json.loads(path.read_text())
    doc["ckptlake_manifest"] = value
    path.write_text(json.dumps(doc))
    r = run("pull", "a/b@v1", tmp_path / "out", "--lake", url)
    assert r.exit_code == 5, r.output
    assert "not a ckptlake manifest" in r.output
    r = run("verify", "--lake", url, "--json")
    assert r.exit_code == 5, r.output
    assert any(layout.version_key("a/b", 1) in json.dumps(p)
               for p in json.loads(r.stdout)["problems"]), r.stdout


def _pin() -> tuple[bytes, Any]:
    def decode(data: bytes) -> Any:
        return gc_guard.decode_pin("gc/pins/x.json", data)
    return gc_guard.encode_pin(["ab" * 32]), decode


def _record() -> tuple[bytes, Any]:
    doc = {"ckptlake_condemned": 1, "created": "2026-01-01T00:00:00Z", "chunks": ["ab" * 32]}

    def decode(data: bytes) -> Any:
        return gc_guard.decode_record("gc/condemned/x.json", data, '"e"')
    return json.dumps(doc).encode(), decode


def _settings() -> tuple[bytes, Any]:
    return (gc_guard.GcSettings().encode(updated="2026-01-01T00:00:00Z", updated_by="me"),
            gc_guard.GcSettings.decode)


def _tombstone() -> tuple[bytes, Any]:
    doc = {"ckptlake_tombstone": 1, "artifact": "a/b", "version": 1,
           "created": "2026-01-01T00:00:00Z", "deleted": "2026-01-02T00:00:00Z"}

    def decode(data: bytes) -> Any:
        if tombstones.decode(data) is None:
            raise ValueError("not shown")
        return True
    return json.dumps(doc).encode(), decode


@pytest.mark.parametrize("value", [True, 1.0])
@pytest.mark.parametrize("kind", [_pin, _record, _settings, _tombstone])
def test_other_lake_objects_of_format_true_are_not_read(kind: Any, value: Any) -> None:
    data, decode = kind()
    decode(data)  # the format 1 the writer wrote is read
    doc = json.loads(data)
    field = next(k for k in doc if k.startswith("ckptlake_"))
    doc[field] = value
    with pytest.raises((IntegrityError, ValueError)):
        decode(json.dumps(doc).encode())


# ---- 6. a frame this reader cannot decode is not reused ------------------------------------

def test_a_push_rewrites_a_chunk_framed_with_an_unknown_zstd_parameter(tmp_path: Path) -> None:
    zstd = pytest.importorskip("zstandard")
    root, url = _lake(tmp_path)
    raw = (b"0123456789abcdef" * 4096) * 24  # 1.5 MiB: one chunk, not packed
    files = {"w.bin": raw}
    src = _src(tmp_path, "src", files)
    r = run("push", src, "a/b", "--lake", url, "--compression", "none", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads((root / layout.version_key("a/b", 1)).read_text())
    [[digest, size]] = doc["files"][0]["chunks"]
    assert size == len(raw)
    frame = codecs.HEAD.pack(codecs.MAGIC, codecs.CODEC_ZSTD, 9, 0, len(raw)) \
        + zstd.ZstdCompressor().compress(raw)
    assert len(frame) < len(raw)
    (root / layout.chunk_key(digest)).write_bytes(frame)
    r = run("push", src, "a/b", "--lake", url, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["chunks_uploaded"] == 1, r.stdout
    for ref in ("a/b@v2", "a/b@v1"):
        out = tmp_path / ref.replace("/", "_")
        r = run("pull", ref, out, "--lake", url)
        assert r.exit_code == 0, r.output
        assert _tree(out) == files


def test_a_planes_frame_with_an_unknown_plane_mode_does_not_fit() -> None:
    pytest.importorskip("zstandard")
    data = bytes(range(256)) * 64 + b"\0" * 4096
    frame = bytes(codecs.encode(data, codecs.Choice(codecs.CODEC_PLANES, codecs.PLANES_BYTES2)))
    assert codecs.fits_frame(frame[:codecs.FRAME_PREFIX], len(data), len(frame))
    bad = bytearray(frame)
    bad[codecs.HEAD.size + 1] = 7  # the first plane's mode
    assert not codecs.fits_frame(bytes(bad[:codecs.FRAME_PREFIX]), len(data), len(bad))


def test_a_zstd_frame_fits_only_with_parameter_0() -> None:
    pytest.importorskip("zstandard")
    data = b"abc" * 4000
    frame = bytes(codecs.encode(data, codecs.Choice(codecs.CODEC_ZSTD)))
    assert codecs.fits_frame(frame, len(data), len(frame))
    bad = bytearray(frame)
    bad[5] = 9  # param
    assert not codecs.fits_frame(bytes(bad), len(data), len(bad))


# ---- review of the above: a newer header, loose tombstone types, the format's hint ---------

def test_a_newer_format_header_is_told_to_upgrade_not_to_restore() -> None:
    """A newer format may name its fields otherwise: its missing `chunk_size` is no damage."""
    from ckptlake.format.header import decode_header

    for doc in ({"ckptlake_lake": 2, "hash": "sha256", "chunks": {}},
                {"ckptlake_lake": 2, "digest": "sha3"}):
        with pytest.raises(IntegrityError) as info:
            decode_header(json.dumps(doc).encode())
        assert "lake format 2 is not supported" in str(info.value)
        assert (info.value.hint or "").startswith("upgrade ckptlake")
        assert "restore" not in (info.value.hint or "")


@pytest.mark.parametrize("field,value", [("version", "1"), ("version", 1.9), ("version", True),
                                         ("artifact", 5), ("artifact", None)])
def test_a_tombstone_of_the_wrong_types_is_undecodable(field: str, value: Any) -> None:
    """A `"version": 1.9` tombstone read as v1's counted, for gc's lost-version re-check, as
    the record of v1's deletion."""
    doc = {"ckptlake_tombstone": 1, "artifact": "a/b", "version": 1, "step": 3,
           "created": "2026-01-01T00:00:00Z", "deleted": "2026-01-02T00:00:00Z"}
    good = tombstones.decode(json.dumps(doc).encode())
    assert good is not None and (good.artifact, good.version, good.step) == ("a/b", 1, 3)
    doc[field] = value
    assert tombstones.decode(json.dumps(doc).encode()) is None


def test_a_tombstone_step_that_is_a_bool_is_no_step() -> None:
    doc = {"ckptlake_tombstone": 1, "artifact": "a/b", "version": 1, "step": True,
           "created": "2026-01-01T00:00:00Z", "deleted": "2026-01-02T00:00:00Z"}
    t = tombstones.decode(json.dumps(doc).encode())
    assert t is not None and t.step is None


@pytest.mark.parametrize("value,hint", [(2, "upgrade ckptlake"),
                                        (1.0, "not the integer 1: damaged, or written by "
                                              "another tool"),
                                        (True, "not the integer 1")])
def test_a_manifest_format_hint_says_upgrade_only_for_a_newer_integer(value: Any,
                                                                       hint: str) -> None:
    from ckptlake.format.manifest import decode_manifest

    with pytest.raises(IntegrityError) as info:
        decode_manifest(json.dumps({"ckptlake_manifest": value}).encode(), key="k")
    assert hint in (info.value.hint or "")
    if value != 2:
        assert "upgrade" not in (info.value.hint or "")
