"""Stored objects whose numbers or shapes a fuzzer bent: each must be exit 5 naming the object,
not an internal error (exit 1), a silent misreading or a 1 GiB allocation."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ckptlake.cli.app import app
from ckptlake.core import gc_guard
from ckptlake.errors import IntegrityError, UsageError
from ckptlake.format import layout

DIGEST = "ab" * 32


def run(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


def pushed(tmp_path: Path, files: dict[str, bytes] | None = None) -> tuple[str, Path]:
    """A file:// lake holding t/a@v1 of `files`: its URL and root."""
    root, src = tmp_path / "lake", tmp_path / "src"
    src.mkdir()
    for name, data in (files or {"w.bin": bytes(range(256)) * 20}).items():
        (src / name).write_bytes(data)
    assert run("push", src, "t/a", "--lake", f"file://{root}").exit_code == 0
    return f"file://{root}", root


# ---- 1. condemnation records -----------------------------------------------------------------

def condemned(sizes: str) -> bytes:
    return ('{"ckptlake_condemned": 1, "created": "2026-01-01T00:00:00Z", '
            f'"chunks": ["{DIGEST}"], "sizes": [{sizes}]}}').encode()


@pytest.mark.parametrize("size", ["true", '"7"', "null"])
def test_a_condemnation_record_size_that_is_no_number_is_malformed(size: str) -> None:
    with pytest.raises(IntegrityError, match="malformed"):
        gc_guard.decode_record("gc/condemned/x.json", condemned(size), "etag")


@pytest.mark.parametrize("size,read", [("7", 7), ("16777216.0", 16777216), ("1e400", 0),
                                       ("1" + "0" * 330, 0),
                                       ("Infinity", 0), ("-5", 0), ("1.9", 0)])
def test_a_condemnation_record_size_is_read_as_a_count_or_unknown(size: str, read: int) -> None:
    """Sizes are for reporting (docs/format.md): `1.0` from another writer made the whole
    record malformed (every push then waited a minute for it); 1e400 was exit 1."""
    assert gc_guard.decode_record("gc/condemned/x.json", condemned(size), "e").sizes == (read,)


def test_verify_and_push_take_an_infinite_condemned_size(tmp_path: Path) -> None:
    url, root = pushed(tmp_path)
    key = layout.condemned_key("20260101T000000.000000Z", "abcd")
    (root / key).parent.mkdir(parents=True)
    (root / key).write_bytes(condemned("1e400"))
    r = run("verify", "--lake", url)
    assert r.exit_code == 0, r.output
    assert "internal error" not in r.output and "malformed" not in r.output


# ---- 2. tombstones ---------------------------------------------------------------------------

def tombstone(**fields: str) -> bytes:
    doc = ('{"ckptlake_tombstone": 1, "artifact": "t/a", "version": 1, '
           '"created": "2026-01-01T00:00:00Z", "deleted": "2026-01-02T00:00:00Z"')
    return (doc + "".join(f', "{k}": {v}' for k, v in fields.items()) + "}").encode()


@pytest.mark.parametrize("field", ["total_bytes", "files"])
@pytest.mark.parametrize("value,read", [("Infinity", 0), ("1e400", 0), ("-1", 0), ("1.9", 0),
                                        ("1.0", 1), ("2", 2)])
def test_a_tombstone_count_is_read_as_a_count_or_unknown(field: str, value: str,
                                                         read: int) -> None:
    """`files: 1.0` made the tombstone undecodable: the rm'd version then read as lost."""
    from ckptlake.core import tombstones
    t = tombstones.decode(tombstone(**{field: value}))
    assert t is not None and getattr(t, field) == read


@pytest.mark.parametrize("field", ["total_bytes", "files"])
@pytest.mark.parametrize("value", ["true", '"7"'])
def test_a_tombstone_count_that_is_no_number_makes_it_undecodable(field: str,
                                                                  value: str) -> None:
    from ckptlake.core import tombstones
    assert tombstones.decode(tombstone(**{field: value})) is None


def test_a_tombstone_with_counts_still_decodes() -> None:
    from ckptlake.core import tombstones
    t = tombstones.decode(tombstone(total_bytes="5000", files="2"))
    assert t is not None and (t.total_bytes, t.files) == (5000, 2)


def test_an_infinite_tombstone_size_is_no_internal_error(tmp_path: Path) -> None:
    url, root = pushed(tmp_path)
    assert run("rm", "t/a@v1", "--yes", "--lake", url).exit_code == 0
    key = root / layout.tombstone_key("t/a", 1)
    key.write_text(key.read_text().replace('"files":1', '"files":Infinity'))
    assert "Infinity" in key.read_text()
    r = run("verify", "--lake", url)  # a count for reporting: read as unknown
    assert r.exit_code == 0, r.output
    r = run("ls", "t/a", "--all", "--lake", url)
    assert r.exit_code == 0 and "internal error" not in r.output, r.output
    r = run("show", "t/a@v1", "--lake", url)
    assert r.exit_code == 3 and "was deleted" in r.output, r.output


# ---- 3. manifests and shard records ----------------------------------------------------------

MANIFEST = {"ckptlake_manifest": 1, "artifact": "t/a", "version": 1, "kind": "dir",
            "hash": "sha256", "created": "2026-01-01T00:00:00Z", "files": []}


def manifest_error(data: bytes) -> str:
    from ckptlake.format.manifest import decode_manifest
    with pytest.raises(IntegrityError) as e:
        decode_manifest(data, key="artifacts/t/a/@v/1.json")
    assert str(e.value).startswith("artifacts/t/a/@v/1.json: ")
    return str(e.value)


@pytest.mark.parametrize("dirs", [5, True, 1.5, "ab", {"a": 1}])
def test_dirs_that_are_not_a_list_are_malformed(dirs: Any) -> None:
    assert "malformed dirs" in manifest_error(json.dumps({**MANIFEST, "dirs": dirs}).encode())


def test_a_chunk_reference_without_a_size_is_malformed() -> None:
    doc = {**MANIFEST, "files": [{"path": "a", "size": 0, "chunks": [[DIGEST, None, 0]]}]}
    assert "malformed chunk size/offset" in manifest_error(json.dumps(doc).encode())


def test_a_packed_chunk_reference_still_decodes() -> None:
    from ckptlake.format.manifest import decode_manifest
    doc = {**MANIFEST, "files": [{"path": "a", "size": 3, "chunks": [[DIGEST, 3, 5]],
                                  "digest": DIGEST}]}
    assert decode_manifest(json.dumps(doc).encode()).files[0].chunks[0].offset == 5


def test_an_integer_past_pythons_digit_limit_is_integrity_not_value_error() -> None:
    data = json.dumps(MANIFEST).encode()[:-1] + b', "step": ' + b"9" * 5000 + b"}"
    assert "too long" in manifest_error(data)


def test_a_shard_record_with_a_huge_integer_is_integrity() -> None:
    from ckptlake.core.shards import decode_record
    with pytest.raises(IntegrityError, match="^shard-key: "):
        decode_record(b'{"ckptlake_shard": 1, "step": ' + b"9" * 5000 + b"}", key="shard-key")


def test_show_and_pull_of_a_manifest_with_numeric_dirs_say_exit_5(tmp_path: Path) -> None:
    url, root = pushed(tmp_path)
    key = root / layout.version_key("t/a", 1)
    doc = json.loads(key.read_bytes())
    key.write_text(json.dumps({**doc, "dirs": 5}))
    for args in (["show", "t/a@v1"], ["pull", "t/a@v1", tmp_path / "out"]):
        r = run(*args, "--lake", url)
        assert r.exit_code == 5 and "malformed dirs" in r.output, r.output


# ---- 4. frames claiming another raw size ------------------------------------------------------

def bomb_lake(tmp_path: Path) -> tuple[str, str, int]:
    """A lake whose t/a@v1 holds one whole-chunk file, its object replaced by a small zstd
    frame whose head claims 64 times the chunk's raw size: URL, chunk key, raw size."""
    from ckptlake.format import codecs
    data = bytes(range(256)) * 4096  # 1 MiB: one whole chunk, not packed
    url, root = pushed(tmp_path, {"w.bin": data})
    doc = json.loads((root / layout.version_key("t/a", 1)).read_bytes())
    (d, size), = [c for f in doc["files"] for c in f["chunks"]]
    assert size == len(data)
    key = layout.chunk_key(d)
    frame = bytearray(codecs.HEAD.size) + b"\0" * 64
    codecs.HEAD.pack_into(frame, 0, codecs.MAGIC, codecs.CODEC_ZSTD, 0, 0, 64 * size)
    (root / key).write_bytes(bytes(frame))
    return url, key, size


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The raw length of every frame decoded."""
    from ckptlake.format import codecs
    seen: list[int] = []
    real = codecs.decode

    def decode(data: Any, into: Any = None) -> Any:
        seen.append(codecs.frame_rawlen(data))
        return real(data, into)
    monkeypatch.setattr(codecs, "decode", decode)
    return seen


def test_pull_refuses_a_frame_claiming_another_raw_size_before_decoding(
        tmp_path: Path, decodes: list[int]) -> None:
    url, key, size = bomb_lake(tmp_path)
    r = run("pull", "t/a@v1", tmp_path / "out", "--lake", url)
    assert r.exit_code == 5, r.output
    assert key in r.output and f"frame holds {64 * size} bytes, but the manifest says {size}" \
        in r.output
    assert decodes == []


@pytest.mark.parametrize("args", [["cat", "t/a@v1", "w.bin"], ["verify", "t/a"],
                                  ["verify", "t/a", "--read-data"]])
def test_readers_refuse_a_frame_claiming_another_raw_size_before_decoding(
        tmp_path: Path, decodes: list[int], args: list[str]) -> None:
    url, key, size = bomb_lake(tmp_path)
    r = run(*args, "--lake", url)
    assert r.exit_code == 5, r.output
    assert decodes == []


def test_cp_refuses_a_frame_claiming_another_raw_size_before_decoding(
        tmp_path: Path, decodes: list[int]) -> None:
    url, key, size = bomb_lake(tmp_path)
    r = run("cp", "t/a@v1", "--to", f"file://{tmp_path / 'other'}", "--lake", url)
    assert r.exit_code == 5, r.output
    assert decodes == []


def test_open_object_refuses_a_frame_of_another_raw_size_unread(decodes: list[int]) -> None:
    from ckptlake.core.chunkio import open_object
    from ckptlake.format import codecs
    frame = bytearray(codecs.HEAD.size) + b"\0" * 64
    codecs.HEAD.pack_into(frame, 0, codecs.MAGIC, codecs.CODEC_ZSTD, 0, 0, codecs.MAX_RAW)
    with pytest.raises(IntegrityError, match="zstd frame holds .* bytes, but the manifest says 1000"):
        open_object("sha256", DIGEST, bytes(frame), raw_size=1000, where="t/a@v1")
    assert decodes == []


# ---- 5. tensor records whose shape does not fill their byte range ----------------------------

def safetensors_bytes(tensors: dict[str, tuple[str, list[int], bytes]]) -> bytes:
    header, data = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(header).encode()
    return len(h).to_bytes(8, "little") + h + data


def test_a_tensor_record_whose_shape_does_not_fill_its_range_is_exit_5(tmp_path: Path) -> None:
    import ckptlake
    st = safetensors_bytes({"w": ("F32", [4, 4], bytes(64)), "q": ("F4", [8], bytes(4))})
    url, root = pushed(tmp_path, {"m.safetensors": st})
    key = root / layout.version_key("t/a", 1)
    doc = json.loads(key.read_bytes())
    records = {t["name"]: t for f in doc["files"] for t in f.get("tensors", [])}
    assert records["w"]["shape"] == [4, 4] and records["q"]["dtype"] == "F4"
    records["q"]["shape"] = [1000]  # a dtype of unknown size: not checked (nor readable)
    key.write_text(json.dumps(doc))
    assert run("show", "t/a@v1", "--lake", url).exit_code == 0
    with ckptlake.open(url) as lake, pytest.raises(UsageError, match="F4"):
        lake.tensors("t/a@v1", "q")  # refused as unsupported before its shape is used
    records["w"]["shape"] = [4, 2]  # 32 bytes of F32 over a 64-byte range
    key.write_text(json.dumps(doc))
    for args in (["show", "t/a@v1"], ["diff", "t/a@v1", "t/a@v1", "--values"]):
        r = run(*args, "--lake", url)
        assert r.exit_code == 5 and "tensor 'w' has a shape of F32" in r.output, r.output
    with ckptlake.open(url) as lake, pytest.raises(IntegrityError, match="'w'"):
        lake.tensors("t/a@v1", "w")


# ---- 6. a packed file made of several ranges -------------------------------------------------

def several_ranges(tmp_path: Path) -> tuple[str, bytes]:
    """t/a@v1 rewritten by another writer: one file ab.bin made of the two ranges of the pack
    that a.bin and b.bin were pushed in, in the order b then a (docs/format.md allows a packed
    file of several ranges, checked together against the file's digest): URL, its bytes."""
    from ckptlake.format.header import digest
    a, b = b"A" * 3000 + bytes(range(256)), b"B" * 2000 + bytes(range(200))
    url, root = pushed(tmp_path, {"a.bin": a, "b.bin": b})
    key = root / layout.version_key("t/a", 1)
    doc = json.loads(key.read_bytes())
    files = {f["path"]: f for f in doc["files"]}
    assert all(len(f["chunks"]) == 1 and len(f["chunks"][0]) == 3 for f in files.values())
    whole = b + a
    doc["files"] = [{"path": "ab.bin", "size": len(whole),
                     "chunks": files["b.bin"]["chunks"] + files["a.bin"]["chunks"],
                     "digest": digest(doc["hash"], whole)}]
    key.write_text(json.dumps(doc))
    for summary in (root / layout.version_key("t/a", 1)).parent.parent.glob("@s/*"):
        summary.unlink()  # says 2 files: a warning, and readers read the manifest
    return url, whole


def test_pull_and_cat_read_a_packed_file_of_several_ranges(tmp_path: Path) -> None:
    url, whole = several_ranges(tmp_path)
    r = run("cat", "t/a@v1", "ab.bin", "--lake", url)
    assert r.exit_code == 0, r.output
    r = run("pull", "t/a@v1", tmp_path / "out", "--lake", url)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out" / "ab.bin").read_bytes() == whole


def test_pull_still_refuses_a_packed_file_of_several_ranges_that_does_not_match(
        tmp_path: Path) -> None:
    url, whole = several_ranges(tmp_path)
    key = Path(url[len("file://"):]) / layout.version_key("t/a", 1)
    doc = json.loads(key.read_bytes())
    doc["files"][0]["chunks"].reverse()  # the same pieces, out of order
    key.write_text(json.dumps(doc))
    r = run("pull", "t/a@v1", tmp_path / "out", "--lake", url)
    assert r.exit_code == 5 and "packed file ab.bin of t/a@v1 does not match" in r.output, \
        r.output
    assert not (tmp_path / "out").exists()


def test_verify_reads_a_packed_file_of_several_ranges_together(tmp_path: Path) -> None:
    url, whole = several_ranges(tmp_path)
    r = run("verify", "--read-data", "--lake", url)
    assert r.exit_code == 0, r.output
    key = Path(url[len("file://"):]) / layout.version_key("t/a", 1)
    doc = json.loads(key.read_bytes())
    doc["files"][0]["chunks"].reverse()
    key.write_text(json.dumps(doc))
    r = run("verify", "--read-data", "--lake", url)
    assert r.exit_code == 5 and "ab.bin" in r.output, r.output


def test_cp_of_a_sharded_version_that_reads_part_of_a_pack(tmp_path: Path) -> None:
    """Two ranks with an identical small file: the merged version takes it from rank 0's
    pack and reads only part of rank 1's.  cp passed that part's end as the pack's raw size
    and called the healthy pack corrupt (exit 5)."""
    import ckptlake

    url = f"file://{tmp_path / 'lake'}"
    lake = ckptlake.open(url)
    for r in (0, 1):
        d = tmp_path / f"sh{r}"
        d.mkdir()
        (d / f"a_rank{r}.txt").write_bytes(os.urandom(36_000 + 6_000 * r))
        (d / "zz_common.txt").write_bytes(b"c" * 36_000)
        lake.push_shard(d, "s/run", step=10, rank=r, world=2)
    for args in (["--to", f"file://{tmp_path / 'other'}"], ["--as", "s/copy"]):
        r = run("cp", "s/run@v1", *args, "--lake", url)
        assert r.exit_code == 0, r.output
    r = run("pull", "s/copy", tmp_path / "out", "--lake", url)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out" / "zz_common.txt").read_bytes() == b"c" * 36_000
    # again: the whole pack there is no damage (it was rewritten by every cp)
    r = run("cp", "s/run@v1", "--to", f"file://{tmp_path / 'other'}", "--lake", url, "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["chunks_copied"] == 0 and doc.get("chunks_repaired", 0) == 0, doc
