"""Checks in pull, the lake-file reader, verify, the codecs and the chunk cache, each pinned by
the damage it exists for.

A mutation review found checks whose removal no other test noticed: a destination file that
only grew, a manifest that cuts a good pack at the wrong offset, a missing chunk that sorts
after every listed one, a chunk deleted while --read-data runs, two manifests that disagree on
a chunk's size or on the hash that names it, a frame another pusher stored, a frame or a cache
entry claiming a terabyte, the cache's stale temporary files and its non-files, a pull into
the lake it reads.  Each test stages that damage in a local lake or a MemoryStore and asserts
what a user sees: the exit code or exception, the bytes placed, verify's verdict.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake import errors
from ckptlake.cli.app import app
from ckptlake.core import chunkio
from ckptlake.core.catalog import load_manifest
from ckptlake.core.pull import staging_dir
from ckptlake.core.cache import ChunkCache
from ckptlake.errors import EXIT_INTEGRITY, EXIT_USAGE, Conflict, IntegrityError
from ckptlake.format import codecs, layout
from ckptlake.lake import Lake
from ckptlake.store.memory import MemoryStore

MiB = 1 << 20
ART = "art"


def cli(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def manifest(lake: Lake, artifact: str = ART, version: int = 1) -> dict[str, Any]:
    return json.loads(lake.store.get(layout.version_key(artifact, version)))


def rewrite(lake: Lake, raw: dict[str, Any], artifact: str = ART, version: int = 1) -> None:
    """Replace a stored manifest (what damage, or someone with write access, does)."""
    lake.store.put(layout.version_key(artifact, version), json.dumps(raw).encode())


def listing(root: Path) -> list[str]:
    """Every directory and file under root (relative), dirs included."""
    out = []
    for here, dirs, files in os.walk(root):
        out += [os.path.relpath(os.path.join(here, n), root) + "/" for n in dirs]
        out += [os.path.relpath(os.path.join(here, n), root) for n in files]
    return sorted(out)


# ---- 1. pull: a destination file that only grew is not "identical" ---------------------------

def test_a_pulled_file_that_grew_is_a_conflict_not_kept(local_lake_url: str,
                                                        tmp_path: Path) -> None:
    """_matches compares the size first: a file checked chunk by chunk (no whole-file digest)
    still starts with every chunk of the version after bytes were appended, so without the
    size check the grown file was kept as identical and the pull reported success."""
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(3 * MiB + 5)
    (src / "w.bin").write_bytes(data)
    lake = ckptlake.open(local_lake_url, chunk_size=MiB)
    lake.push(src, ART)
    assert manifest(lake)["files"][0].get("digest") is None  # checked chunk by chunk
    dest = tmp_path / "dest"
    lake.pull(ART, dest)
    with open(dest / "w.bin", "ab") as fh:
        fh.write(b"appended")
    with pytest.raises(Conflict):
        lake.pull(ART, dest)
    assert (dest / "w.bin").read_bytes() == data + b"appended"  # a refused pull changes nothing
    lake.pull(ART, dest, force=True)
    assert (dest / "w.bin").read_bytes() == data


# ---- 2, 3. a manifest that cuts a good pack at the wrong offset -------------------------------

@pytest.fixture
def misread_pack(local_lake_url: str, tmp_path: Path) -> tuple[str, Lake]:
    """a.txt and b.txt packed in one chunk; the manifest then says a.txt starts where b.txt
    does.  The pack itself is intact (its digest matches): only a.txt's own digest catches it."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"A" * 1000)
    (src / "b.txt").write_bytes(b"B" * 1000)
    lake = ckptlake.open(local_lake_url, chunk_size=MiB)
    lake.push(src, ART)
    raw = manifest(lake)
    a, b = (next(f for f in raw["files"] if f["path"] == name) for name in ("a.txt", "b.txt"))
    assert len(a["chunks"]) == 1 and len(a["chunks"][0]) == 3  # packed: [digest, size, offset]
    assert a["chunks"][0][0] == b["chunks"][0][0] and a["chunks"][0][2] != b["chunks"][0][2]
    a["chunks"][0][2] = b["chunks"][0][2]
    rewrite(lake, raw)
    return local_lake_url, lake


def test_pull_refuses_a_packed_file_whose_bytes_do_not_match_its_digest(
        misread_pack: tuple[str, Lake], tmp_path: Path) -> None:
    """_write_targets checks each packed file's slice against the file's digest: without it
    the pull wrote b.txt's bytes as a.txt and exited 0."""
    url, _ = misread_pack
    dest = tmp_path / "out"
    r = cli("pull", ART, dest, "--lake", url)
    assert r.exit_code == EXIT_INTEGRITY, r.output
    assert not dest.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []  # no staging


def test_reading_a_packed_file_whose_bytes_do_not_match_its_digest_fails(
        misread_pack: tuple[str, Lake]) -> None:
    """LakeFile hashes a packed file's bytes against its digest before returning any: without
    that, lake.open(...).read() returned b.txt's bytes as a.txt."""
    _, lake = misread_pack
    with pytest.raises(IntegrityError):
        lake.open(ART, "a.txt").read()


# ---- 4. verify: a missing chunk that sorts after every listed one ------------------------------

def test_verify_finds_the_missing_chunk_that_sorts_last(local_lake_url: str,
                                                        tmp_path: Path) -> None:
    """verify merges the sorted referenced digests with the chunk listing: the ones after the
    last listed key never meet a listed key, and must be counted missing when the listing
    ends (without that, deleting the last-sorting chunk went unnoticed)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(os.urandom(4 * MiB))
    lake = ckptlake.open(local_lake_url, chunk_size=MiB)
    lake.push(src, ART)
    digests = sorted(c[0] for c in manifest(lake)["files"][0]["chunks"])
    assert len(digests) == 4
    lake.store.delete([layout.chunk_key(digests[-1])])
    res = lake.verify()
    assert not res.ok
    assert res.chunks_missing == 1
    assert [(u["artifact"], u["version"], u["missing_chunks"]) for u in res.unrestorable] == \
        [(ART, 1, 1)]


# ---- 5. verify --read-data: a chunk deleted after the listing ---------------------------------

class DeletesBeforeRead(MemoryStore):
    """Deletes `victim` just before the first read of it: a gc sweeping while verify runs."""

    victim: str | None = None

    def get_into(self, key: str, buffer: bytearray) -> memoryview:
        if key == self.victim:
            self.victim = None
            self.delete([key])
        return super().get_into(key, buffer)


def test_verify_read_data_counts_a_chunk_deleted_before_its_read_as_missing(
        tmp_path: Path) -> None:
    """A chunk that was listed but is gone when --read-data reads it is missing: without that
    verify skipped it and called the lake healthy."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(os.urandom(3 * MiB))
    store = DeletesBeforeRead()
    lake = Lake(store, chunk_size=MiB)
    lake.push(src, ART)
    victim = layout.chunk_key(manifest(lake)["files"][0]["chunks"][1][0])
    store.victim = victim
    res = lake.verify(read_data=True)
    assert store.victim is None and not store.exists(victim)  # it was deleted mid-verify
    assert not res.ok
    assert [(u["version"], u["missing_chunks"]) for u in res.unrestorable] == [(1, 1)]


# ---- 6. verify: two manifests claim two sizes for one chunk ------------------------------------

def test_verify_blames_the_version_whose_chunk_size_is_wrong(local_lake_url: str,
                                                             tmp_path: Path) -> None:
    """v1 and v2 reference the same chunks; v2's manifest says its last chunk is 10 bytes
    shorter.  No object size satisfies both: the chunk is judged per reference, and v2 (whose
    pull fails) is unrestorable while v1 is fine.  Without the conflict verify judged the
    object by whichever size it met first: v2 passed (or both were blamed, in the other
    order)."""
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(2 * MiB + 100)
    (src / "w.bin").write_bytes(data)
    lake = ckptlake.open(local_lake_url, chunk_size=MiB)
    lake.push(src, ART)
    lake.push(src, ART)
    raw = manifest(lake, version=2)
    f = raw["files"][0]
    assert [c[0] for c in f["chunks"]] == [c[0] for c in manifest(lake)["files"][0]["chunks"]]
    f["chunks"][-1][1] -= 10
    f["size"] -= 10
    raw["total_bytes"] -= 10
    rewrite(lake, raw, version=2)
    res = lake.verify()
    assert not res.ok
    assert [(u["artifact"], u["version"]) for u in res.unrestorable] == [(ART, 2)]
    with pytest.raises(IntegrityError):
        lake.pull(f"{ART}@v2", tmp_path / "v2")
    lake.pull(f"{ART}@v1", tmp_path / "v1")
    assert (tmp_path / "v1" / "w.bin").read_bytes() == data


# ---- 7. verify --read-data: a chunk named under another hash by another manifest --------------

def test_verify_read_data_judges_a_chunk_under_every_hash_that_names_it(
        local_lake_url: str, tmp_path: Path) -> None:
    """x/w and y/w hold the same file; y/w's manifest says its digests are SHA-256 while the
    chunk is named by its BLAKE3 digest.  The chunk's bytes are right for x/w and wrong for
    y/w: --read-data must judge them under both hashes, or y/w (which cannot be pulled) passes."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(os.urandom(MiB + 7))
    lake = ckptlake.open(local_lake_url, chunk_size=MiB)
    lake.push(src, "x/w")
    lake.push(src, "y/w")
    raw = manifest(lake, "y/w")
    assert raw["hash"] == "blake3"  # the lake's: the other one sorts after it
    raw["hash"] = "sha256"
    rewrite(lake, raw, "y/w")
    assert lake.verify().ok  # sizes alone cannot tell
    res = lake.verify(read_data=True)
    assert not res.ok
    assert [(u["artifact"], u["version"]) for u in res.unrestorable] == [("y/w", 1)]
    with pytest.raises(IntegrityError):
        lake.pull("y/w", tmp_path / "y")


# ---- 8. verify: a chunk another pusher stored as a frame ---------------------------------------

def test_verify_accepts_a_chunk_stored_as_a_frame_no_manifest_recorded(
        local_lake_url: str, tmp_path: Path) -> None:
    """A lake pushed uncompressed, then one chunk re-stored as its frame (another pusher's
    compressed copy: docs/format.md, "Chunk encodings").  The object is smaller than the raw
    chunk and no manifest records that size; verify decodes it, finds the right bytes, and
    must not call it corrupt.  The pull restores the same bytes."""
    src = tmp_path / "src"
    src.mkdir()
    data = bytes(range(256)) * (MiB // 256) + os.urandom(MiB)  # chunk 0 compresses
    (src / "w.bin").write_bytes(data)
    lake = ckptlake.open(local_lake_url, chunk_size=MiB)
    lake.push(src, ART, compression="none")
    raw = manifest(lake)
    assert not raw.get("stored")
    first = raw["files"][0]["chunks"][0][0]
    frame = codecs.encode_auto(data[:MiB])
    assert frame is not None and len(frame) < MiB
    lake.store.put(layout.chunk_key(first), bytes(frame))
    res = lake.verify()
    assert res.ok, res.problems
    lake.pull(ART, tmp_path / "out")
    assert (tmp_path / "out" / "w.bin").read_bytes() == data


# ---- 9. codecs: a planes frame claiming 4 EiB ----------------------------------------------------

def test_a_planes_frame_claiming_a_huge_raw_length_is_corrupt_not_a_memory_error() -> None:
    """An fp32 planes frame whose four planes are all zstd passes every layout check whatever
    rawlen its head claims (no stored plane has to be rawlen/4 long): only the MAX_RAW bound
    stops the decoder from allocating rawlen bytes (MemoryError instead of exit 5)."""
    z = codecs._zstd().ZstdCompressor().compress(b"\0" * 64)
    count = len(codecs.split(b"\0" * 4, codecs.PLANES_FP32))
    frame = (codecs.HEAD.pack(codecs.MAGIC, codecs.CODEC_PLANES, codecs.PLANES_FP32, 0, 2**62)
             + bytes([count])
             + b"".join(codecs.PLANE.pack(codecs.MODE_ZSTD, len(z)) for _ in range(count))
             + z * count)
    with pytest.raises(IntegrityError):
        chunkio.open_object("sha256", "0" * 64, frame, raw_size=None, where="art@v1")


# ---- 10-12. the chunk cache ------------------------------------------------------------------

def cache_entry(cache: ChunkCache, digest: str = "ab" * 32) -> str:
    path = cache.entry_path("blake3", digest)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def test_a_cache_entry_of_a_terabyte_is_dropped_without_allocating_it(tmp_path: Path) -> None:
    """An entry larger than any chunk (a sparse 1 TiB file) is read into the caller's buffer
    only, found short, and dropped: without the _MAX_ENTRY bound the cache allocated a buffer
    of the entry's size (MemoryError in the middle of a pull)."""
    cache = ChunkCache(tmp_path / "cache")
    path = cache_entry(cache)
    with open(path, "wb"):
        pass
    os.truncate(path, 1 << 40)
    assert cache.get_into("blake3", "ab" * 32, bytearray(MiB)) is None
    assert cache.dropped == 1 and not os.path.lexists(path)


def test_trim_removes_stale_temporary_files_and_keeps_fresh_ones(tmp_path: Path) -> None:
    """A temporary entry two hours old belongs to a process that died: trim deletes it.  A
    fresh one is being written by a running pull right now: deleting it would fail that
    pull's cache write."""
    cache = ChunkCache(tmp_path / "cache")
    tmp = tmp_path / "cache" / "tmp"
    tmp.mkdir(parents=True)
    # put()'s names: <16 hex of the digest>.<pid>.<thread id> (a trim deletes no other)
    stale, fresh = tmp / "0123456789abcdef.1.2", tmp / "fedcba9876543210.3.4"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    cache.trim(1 << 30)
    assert not stale.exists()
    assert fresh.read_bytes() == b"y"


@pytest.mark.parametrize("kind", ["dangling symlink", "symlink loop", "socket"])
def test_a_cache_entry_that_is_no_file_is_dropped_when_read(
        kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dangling symlink, a symlink loop or a socket at an entry's path can never be an entry
    (opening it fails with ENOENT, ELOOP, ENXIO): a read drops it and counts it, rather than
    leaving it there to fail every pull's read (and put, which skips an existing path)."""
    cache = ChunkCache(tmp_path / "cache")
    path = cache_entry(cache)
    if kind == "dangling symlink":
        os.symlink(str(tmp_path / "nowhere"), path)
    elif kind == "symlink loop":
        os.symlink(path, path)
    else:
        monkeypatch.chdir(os.path.dirname(path))  # AF_UNIX paths are limited to ~108 bytes
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(os.path.basename(path))
    assert os.path.lexists(path)
    assert cache.get_into("blake3", "ab" * 32, bytearray(MiB)) is None
    assert cache.dropped == 1
    assert not os.path.lexists(path)


# ---- 13. pull: never into the lake it reads ----------------------------------------------------

def test_pull_into_a_new_directory_inside_the_lake_creates_nothing_there(
        local_lake_url: str, tmp_path: Path) -> None:
    """`pull ART LAKE/newdir/` (a single-file version, DIR/ meaning "into DIR, made if
    missing") is refused before anything is written: the later landing check refuses too, but
    only after the directory was made inside the lake."""
    src = tmp_path / "w.bin"
    src.write_bytes(os.urandom(1000))
    lake = ckptlake.open(local_lake_url, chunk_size=MiB)
    lake.push(src, ART)
    lake_dir = Path(local_lake_url[len("file://"):])
    before = listing(lake_dir)
    r = cli("pull", ART, f"{lake_dir}/newdir/", "--lake", local_lake_url)
    assert r.exit_code == EXIT_USAGE, r.output
    assert listing(lake_dir) == before


# ---- 14. pull: never through a symlink planted in a kept staging directory ---------------------

def test_a_symlink_planted_in_a_kept_staging_is_not_written_through(local_lake_url: str,
                                                                    tmp_path: Path) -> None:
    """A staging directory's name is predictable (lake, artifact, version) and a re-run
    resumes in it: a symlink planted at staging/data/<file> (by someone who can write there,
    or left behind) must not make the pull truncate and overwrite the file it points at."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(os.urandom(3 * MiB))
    lake = ckptlake.open(local_lake_url, chunk_size=MiB)
    lake.push(src, ART)
    dest = tmp_path / "dest"
    staging = Path(staging_dir(str(dest), lake.url, load_manifest(lake.store, ART, 1)))
    (staging / "data").mkdir(parents=True, mode=0o700)
    staging.chmod(0o700)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (staging / "data" / "w.bin").symlink_to(victim)
    # Today the pull stops there (ELOOP from the O_NOFOLLOW open); a pull that replaced the
    # link and went on would be as good: what matters is where the bytes went.
    with contextlib.suppress(OSError, errors.CkptlakeError):
        lake.pull(ART, dest)
    assert victim.read_bytes() == b"precious"
    assert not (dest / "w.bin").is_symlink()


# ---- moved from test_torch_review.py (they need no torch) ---------------------------------------

@pytest.mark.parametrize("damage", ["codec", "flags"])
def test_unknown_encoding_says_newer_ckptlake(damage: str) -> None:
    import hashlib

    data = bytes(1 << 16)
    d = hashlib.sha256(data).hexdigest()
    frame = bytearray(codecs.encode_auto(data))
    if damage == "codec":
        frame[4] = 9
    else:
        frame[6] = 1
    with pytest.raises(errors.NewerEncoding) as info:
        chunkio.open_object("sha256", d, bytes(frame), raw_size=len(data), where="art@v7")
    text = str(info.value)
    assert "newer ckptlake" in text and "upgrade" in text and "corrupt" not in text
    assert info.value.exit_code == EXIT_INTEGRITY


def test_pull_of_a_chunk_in_a_newer_encoding_says_upgrade(local_lake_url: str,
                                                          tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "zeros.bin").write_bytes(bytes(1 << 20))
    lake = ckptlake.open(local_lake_url)
    lake.push(src, "new/enc", compression="auto")
    import json

    m = json.loads(lake.store.get(layout.version_key("new/enc", 1)))
    key = layout.chunk_key(sorted(m["stored"])[0])
    body = bytearray(lake.store.get(key))
    body[4] = 200  # a codec this reader does not know
    lake.store.put(key, bytes(body))
    with pytest.raises(errors.NewerEncoding, match="newer ckptlake"):
        lake.pull("new/enc", tmp_path / "dest")
    # verify --read-data: a bad chunk (exit 5), named as a newer writer's, not as damage
    res = lake.verify("new/enc", read_data=True)
    assert not res.ok
    [entry] = res.unrestorable
    assert "encoding of a newer ckptlake" in entry["message"]
    assert "corrupt" not in entry["message"], entry["message"]
