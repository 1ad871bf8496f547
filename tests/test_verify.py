"""`ckptlake verify` / Lake.verify: what it catches (missing, wrong-size and corrupt chunks,
unusable manifests, dangling aliases, broken shard and gc records), per version, with exit 5;
what it does not call a problem (orphans, pending steps); what it reads (no chunk without
--read-data; a reproducible subset with --read-data-subset; one version for a REF)."""
from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.core import tombstones
from ckptlake.core.catalog import load_manifest
from ckptlake.core.identity import utcnow
from ckptlake.core.push import commit_version
from ckptlake.core.verify import parse_subset
from ckptlake.errors import EXIT_INTEGRITY, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE, NotFound, \
    UsageError
from ckptlake.format import layout
from ckptlake.format.manifest import ChunkRef, FileEntry, Manifest
from ckptlake.lake import Lake
from ckptlake.store.memory import MemoryStore

MiB = 1 << 20
ART = "g/run/ckpt"


def cli(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def verify_json(url: str, *args: Any) -> tuple[int, dict[str, Any]]:
    r = cli("verify", "--lake", url, "--json", *args)
    return r.exit_code, json.loads(r.stdout)


class Counting:
    """The store, recording (method, key) of every call: what verify reads."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.calls = inner, []
        self.url = inner.url

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        def call(*args: Any, **kw: Any) -> Any:
            self.calls.append((name, args[0] if args and isinstance(args[0], str) else ""))
            return attr(*args, **kw)
        return call

    def chunk_reads(self) -> list[str]:
        return [k for m, k in self.calls if m in ("get", "get_into", "get_range",
                                                   "get_range_into") and k.startswith("chunks/")]

    def count(self, method: str, prefix: str = "") -> int:
        return sum(1 for m, k in self.calls if m == method and k.startswith(prefix))


def tree(root: Path, seed: int, *, big: int = 2 * MiB + 1000, tag: str = "") -> Path:
    """big.bin (3 slices at 1 MiB chunks) and three small packed files (names after `tag`)."""
    rng = random.Random(seed)
    root.mkdir()
    (root / f"{tag}big.bin").write_bytes(rng.randbytes(big))
    for name in ("a.txt", "b.txt", "c.json"):
        (root / f"{tag}{name}").write_bytes(rng.randbytes(300))
    return root


@pytest.fixture
def two_versions(lake_url: str, tmp_path: Path) -> tuple[str, Lake]:
    """v1 and v2 of ART sharing big.bin's first slice; alias prod -> v1."""
    lake = ckptlake.open(lake_url, chunk_size=MiB)
    src = tree(tmp_path / "s1", 1)
    lake.push(src, ART, step=1)
    data = bytearray((src / "big.bin").read_bytes())
    data[MiB + 5] ^= 0xFF  # v2: second slice changes, first and third stay
    (src / "big.bin").write_bytes(bytes(data))
    (src / "a.txt").write_bytes(b"changed")
    lake.push(src, ART, step=2)
    lake.alias(f"{ART}@v1", "prod")
    yield lake_url, lake
    lake.close()


def chunks_of(lake: Lake, version: int) -> dict[str, tuple[int, int | None]]:
    """chunk key -> (size, offset) as the manifest references it."""
    m = load_manifest(lake.store, ART, version)
    return {layout.chunk_key(c.digest): (c.size, c.offset) for f in m.files for c in f.chunks}


def only_in(lake: Lake, version: int, *, packed: bool = False) -> str:
    other = chunks_of(lake, 3 - version)
    return next(k for k, (_, off) in sorted(chunks_of(lake, version).items())
                if k not in other and (off is not None) == packed)


def shared_slice(lake: Lake) -> str:
    two = chunks_of(lake, 2)
    return next(k for k, (_, off) in sorted(chunks_of(lake, 1).items())
                if k in two and off is None)


# ---- on both backends ---------------------------------------------------------------------------

def test_clean_lake(two_versions: tuple[str, Lake]) -> None:
    url, lake = two_versions
    code, doc = verify_json(url)
    assert code == EXIT_OK, doc
    listed = [o for o in lake.store.list("chunks/")]
    assert doc["scope"] == "lake" and doc["lake"] == lake.url
    assert (doc["versions_checked"], doc["versions_ok"], doc["aliases_checked"]) == (2, 2, 1)
    assert doc["chunks_checked"] == len(listed) == len(set(chunks_of(lake, 1))
                                                       | set(chunks_of(lake, 2)))
    assert doc["bytes_checked"] == sum(o.size for o in listed)
    assert (doc["orphan_chunks"], doc["orphan_bytes"]) == (0, 0)
    assert (doc["chunks_read"], doc["bytes_read"]) == (0, 0)
    assert doc["problems"] == [] and doc["unrestorable"] == []
    r = cli("verify", "--lake", url)
    assert r.exit_code == 0 and "no problems found" in r.stdout
    assert "2 versions (2 restorable), 1 alias" in r.stdout
    counted = Counting(lake.store)
    assert Lake(counted).verify().ok  # type: ignore[arg-type]
    assert counted.chunk_reads() == [] and counted.count("stat") == 0
    assert counted.count("list", "chunks/") == 1 and counted.count("list", "artifacts/") == 1
    assert counted.count("get", "artifacts/") == 3  # two manifests, one alias
    # and: the header, gc/settings.json, the listings of gc/condemned/, gc/pins/ and uploads
    assert counted.count("list", "gc/pins/") == 1
    assert len(counted.calls) == 10


def test_missing_chunk_names_the_versions(two_versions: tuple[str, Lake]) -> None:
    url, lake = two_versions
    lake.store.delete([only_in(lake, 2)])
    code, doc = verify_json(url)
    assert code == EXIT_INTEGRITY
    assert [(u["artifact"], u["version"], u["missing_chunks"]) for u in doc["unrestorable"]] \
        == [(ART, 2, 1)]
    assert doc["unrestorable"][0]["message"].startswith(
        f"v2 of {ART} cannot be restored: 1 chunk missing")
    assert doc["versions_ok"] == 1 and doc["chunks_missing"] == 1
    assert [p["kind"] for p in doc["problems"]] == ["chunks"]
    lake.store.delete([shared_slice(lake)])
    r = cli("verify", "--lake", url)
    assert r.exit_code == EXIT_INTEGRITY
    assert f"v1 of {ART} cannot be restored: 1 chunk missing" in r.stdout
    assert f"v2 of {ART} cannot be restored: 2 chunks missing" in r.stdout
    assert "(aliases: prod)" in r.stdout
    assert r.stderr.splitlines()[-1].startswith("ckptlake: error: verify found 2 problems: v1 ")
    r = cli("verify", "--lake", url, "--quiet")
    assert r.exit_code == EXIT_INTEGRITY and r.stdout == ""
    assert r.stderr.splitlines() == [
        "ckptlake: error: verify found 2 problems: " + doc_first_line(url) + " (and 1 more)"]


def doc_first_line(url: str) -> str:
    return verify_json(url)[1]["problems"][0]["message"]


def test_corrupt_chunk_of_the_same_size_needs_read_data(two_versions: tuple[str, Lake]
                                                        ) -> None:
    url, lake = two_versions
    key = only_in(lake, 1)
    size = lake.store.stat(key).size
    lake.store.put(key, bytes(size))
    assert verify_json(url)[0] == EXIT_OK  # sizes only: cannot tell
    code, doc = verify_json(url, "--read-data")
    assert code == EXIT_INTEGRITY
    assert [(u["version"], u["corrupt_chunks"], u["missing_chunks"])
            for u in doc["unrestorable"]] == [(1, 1, 0)]
    listed = list(lake.store.list("chunks/"))
    assert doc["chunks_read"] == len(listed)
    assert doc["bytes_read"] == sum(o.size for o in listed)  # each chunk read once


def test_wrong_size_is_caught_without_reading(two_versions: tuple[str, Lake]) -> None:
    url, lake = two_versions
    for key in (only_in(lake, 2), only_in(lake, 2, packed=True)):
        lake.store.put(key, lake.store.get(key)[:-1])
    code, doc = verify_json(url)
    assert code == EXIT_INTEGRITY and doc["chunks_read"] == 0
    assert [(u["version"], u["corrupt_chunks"]) for u in doc["unrestorable"]] == [(2, 2)]


def test_ref_checks_only_that_version(two_versions: tuple[str, Lake]) -> None:
    url, lake = two_versions
    lake.store.delete([only_in(lake, 2)])
    code, doc = verify_json(url, f"{ART}@prod")
    assert code == EXIT_OK and doc["scope"] == f"{ART}@v1" and doc["versions_checked"] == 1
    assert doc["aliases_checked"] == 1
    assert doc["chunks_checked"] == len(chunks_of(lake, 1)) and doc["orphan_chunks"] is None
    code, doc = verify_json(url, f"{ART}@step=2")
    assert code == EXIT_INTEGRITY and doc["unrestorable"][0]["version"] == 2
    code, doc = verify_json(url, ART)
    assert code == EXIT_INTEGRITY and doc["versions_checked"] == 2


def test_not_found_and_usage(two_versions: tuple[str, Lake], tmp_path: Path) -> None:
    url, _ = two_versions
    for target in ("nope/ckpt", f"{ART}@v9", f"{ART}@nope"):
        code, doc = verify_json(url, target)
        assert code == EXIT_NOT_FOUND and doc["error"]["type"] == "NotFound", target
    r = cli("verify", "--lake", tmp_path / "no-lake")
    assert r.exit_code == EXIT_NOT_FOUND and "no lake at" in r.stderr
    for args in (["--read-data-subset", "0%"], ["--read-data-subset", "3/2"],
                 ["--read-data-subset", "x"], ["--seed", "3"], [f"{ART}@"],
                 ["--read-data", "--read-data-subset", "5%"]):  # (--read-data was ignored)
        assert cli("verify", "--lake", url, *args).exit_code == EXIT_USAGE, args


# ---- local lakes --------------------------------------------------------------------------------

@pytest.fixture
def local(local_lake_url: str, tmp_path: Path) -> tuple[str, Lake]:
    lake = ckptlake.open(local_lake_url, chunk_size=MiB)
    src = tree(tmp_path / "s1", 1)
    lake.push(src, ART, step=1)
    (src / "a.txt").write_bytes(b"changed")
    lake.push(src, ART, step=2)
    yield local_lake_url, lake
    lake.close()


def test_orphan_chunk_is_reported_not_a_problem(local: tuple[str, Lake]) -> None:
    url, lake = local
    data = b"left behind by a crashed push"
    lake.store.put(layout.chunk_key(hashlib.sha256(data).hexdigest()), data)
    code, doc = verify_json(url)
    assert code == EXIT_OK and (doc["orphan_chunks"], doc["orphan_bytes"]) == (1, len(data))
    assert "orphan chunks: 1 (29 B)" in cli("verify", "--lake", url).stdout


def test_manifest_that_names_another_artifact_or_does_not_parse(local: tuple[str, Lake]
                                                                ) -> None:
    url, lake = local
    v1 = lake.store.get(layout.version_key(ART, 1))
    lake.store.put(layout.version_key("other/ckpt", 1), v1)  # copied: says it is g/run/ckpt
    code, doc = verify_json(url)
    assert code == EXIT_INTEGRITY
    assert [(p["kind"], p["artifact"], p["version"]) for p in doc["problems"]] == \
        [("manifest", "other/ckpt", 1)]
    assert f"claims to be {ART}@v1" in doc["problems"][0]["message"]
    assert doc["orphan_chunks"] == 0
    lake.store.put(layout.version_key(ART, 3), b'{"ckptlake_manifest": 1, "files": [')
    code, doc = verify_json(url)
    assert code == EXIT_INTEGRITY
    assert sorted((u["artifact"], u["version"]) for u in doc["unrestorable"]) == \
        [(ART, 3), ("other/ckpt", 1)]
    assert "not valid JSON" in doc["problems"][-1]["message"] or \
        any("not valid JSON" in p["message"] for p in doc["problems"])
    assert doc["versions_checked"] == 4 and doc["versions_ok"] == 2


def test_manifest_nested_too_deep_is_unrestorable_not_an_internal_error(
        local: tuple[str, Lake]) -> None:
    url, lake = local
    v1 = lake.store.get(layout.version_key(ART, 1))
    deep = v1[:-1] + b',"provenance":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    lake.store.put(layout.version_key(ART, 1), deep)
    code, doc = verify_json(url)
    assert code == EXIT_INTEGRITY
    assert [(u["artifact"], u["version"]) for u in doc["unrestorable"]] == [(ART, 1)]


def test_alias_pointing_at_a_version_gc_deleted(local: tuple[str, Lake]) -> None:
    url, lake = local
    lake.alias(f"{ART}@v1", "prod")
    m = load_manifest(lake.store, ART, 1)
    tombstones.write(lake.store, tombstones.from_manifest(m, deleted=utcnow(), rule="rules[0]",
                                                          reason="not among the newest 1"))
    lake.store.delete([layout.version_key(ART, 1)])
    code, doc = verify_json(url)
    assert code == EXIT_INTEGRITY
    assert [(p["kind"], p["version"], p["alias"]) for p in doc["problems"]] == \
        [("alias", 1, "prod")]
    assert f"alias prod of {ART} points at v1, deleted by gc on" in doc["problems"][0]["message"]
    lake.alias(f"{ART}@v2", "prod")
    code, doc = verify_json(url)
    assert code == EXIT_OK and doc["orphan_chunks"] >= 1  # v1's own chunks: gc's business


def test_packed_file_digest_is_checked_with_read_data(local: tuple[str, Lake]) -> None:
    url, lake = local
    raw = json.loads(lake.store.get(layout.version_key(ART, 2)))
    entry = next(f for f in raw["files"] if f["path"] == "b.txt")
    entry["digest"] = "0" * 64  # a manifest that cuts a good pack wrongly
    raw["version"] = 3
    lake.store.put(layout.version_key(ART, 3), json.dumps(raw).encode())
    assert verify_json(url)[0] == EXIT_OK
    code, doc = verify_json(url, "--read-data")
    assert code == EXIT_INTEGRITY
    assert [(u["version"], u["corrupt_chunks"]) for u in doc["unrestorable"]] == [(3, 1)]
    assert "packed file do not match" in doc["problems"][0]["message"] or \
        "b.txt" in doc["problems"][0]["message"]


def test_shard_steps_gc_records_and_uploads(local: tuple[str, Lake], tmp_path: Path) -> None:
    url, lake = local
    rank0 = tree(tmp_path / "r0", 5, big=10)
    lake.push_shard(rank0, "g/run/dcp", step=100, rank=0, world=2)  # rank 1 never comes
    code, doc = verify_json(url)
    assert code == EXIT_OK, doc["problems"]
    assert doc["orphan_chunks"] == 0  # the pending rank's chunks are roots, as for gc
    assert [(p["step"], p["state"]) for p in doc["pending_steps"]] == [(100, "incomplete")]
    assert doc["shard_steps_checked"] == 1
    lake.store.put(layout.shard_claim_key("g/run/dcp", 100), b"{}")
    lake.store.put(layout.condemned_key("20260101T000000.000000Z", "ab" * 4), b"[]")
    lake.store.create_multipart(layout.chunk_key("cd" * 32))
    code, doc = verify_json(url)
    assert code == EXIT_INTEGRITY
    assert sorted(p["kind"] for p in doc["problems"]) == ["gc", "shard"]
    assert doc["incomplete_uploads"] == 1
    assert doc["incomplete_upload_list"][0]["key"] == layout.chunk_key("cd" * 32)
    # a pin gc cannot read stops its sweep: verify names it
    pin = layout.pin_key("20261206T000000.000000Z", "ef" * 4)
    lake.store.put(pin, b'{"ckptlake_pin": 7}')
    code, doc = verify_json(url)
    assert code == EXIT_INTEGRITY
    assert [p for p in doc["problems"] if p.get("key") == pin and p["kind"] == "gc"
            and "gc cannot read the pin" in p["message"]], doc["problems"]


def test_missing_chunk_of_a_pending_shard_is_a_problem(local: tuple[str, Lake],
                                                       tmp_path: Path) -> None:
    url, lake = local
    lake.push_shard(tree(tmp_path / "r0", 6, big=10), "g/run/dcp", step=1, rank=0, world=2)
    record = json.loads(lake.store.get(layout.shard_record_key("g/run/dcp", 1, 0, 2)))
    digest = record["manifest"]["files"][0]["chunks"][0][0]
    lake.store.delete([layout.chunk_key(digest)])
    code, doc = verify_json(url)
    assert code == EXIT_INTEGRITY and doc["unrestorable"] == []
    assert [(p["kind"], p["step"]) for p in doc["problems"]] == [("shard", 1)]
    assert "would commit a version that cannot be restored" in doc["problems"][0]["message"]


# ---- what it reads (in-memory store, counted) ---------------------------------------------------

def synthetic(store: Any, artifact: str, n_chunks: int, size: int = 100,
              lead: str = "") -> list[str]:
    """One version of `n_chunks` tiny slices (no push: fast), digests starting with `lead`."""
    keys, entries = [], []
    salt = 0
    for i in range(n_chunks):
        while True:
            data = f"{artifact}-{i}-{salt}".encode().ljust(size, b".")
            d = hashlib.sha256(data).hexdigest()
            salt += 1
            if d.startswith(lead):
                break
        store.put(layout.chunk_key(d), data)
        keys.append(layout.chunk_key(d))
        entries.append(FileEntry(path=f"f{i:04d}", size=size, chunks=(ChunkRef(d, size),)))
    from ckptlake.core.lakeheader import ensure_header

    ensure_header(store, hash="sha256")  # the chunks above are named by hashlib's SHA-256
    commit_version(store, Manifest(artifact=artifact, version=0, kind="dir", hash="sha256",
                                   files=tuple(entries)))
    return keys


def test_plain_verify_reads_no_chunk_and_lists_chunks_once() -> None:
    store = Counting(MemoryStore())
    synthetic(store.inner, ART, 40)
    r = Lake(store).verify()  # type: ignore[arg-type]
    assert r.ok and r.chunks_checked == 40
    assert store.chunk_reads() == [] and store.count("stat", "chunks/") == 0
    assert store.count("list", "chunks/") == 1 and store.count("get", "artifacts/") == 1


def test_subset_is_reproducible_and_partitions() -> None:
    store = Counting(MemoryStore())
    keys = synthetic(store.inner, ART, 60)
    lake = Lake(store)  # type: ignore[arg-type]

    def read(**kw: Any) -> set[str]:
        store.calls.clear()
        r = lake.verify(**kw)
        assert r.ok and r.chunks_read == len(set(store.chunk_reads()))
        return set(store.chunk_reads())

    a, b, c = read(subset="25%", seed=3), read(subset="25%", seed=3), read(subset="25%", seed=4)
    assert a == b and a != c and 0 < len(a) < 30
    assert read(read_data=True) == set(keys)
    parts = [read(subset=f"{i}/3", seed=9) for i in (1, 2, 3)]
    assert set().union(*parts) == set(keys) and sum(map(len, parts)) == len(keys)


def test_scoped_verify_heads_when_the_lake_is_too_big_to_list() -> None:
    store = Counting(MemoryStore())
    mine = synthetic(store.inner, ART, 3, lead="ff")  # listed last
    synthetic(store.inner, "big/other", 1100)  # listing them would cost more than 3 HEADs
    store.inner.delete([max(mine)])
    r = Lake(store).verify(f"{ART}@v1")  # type: ignore[arg-type]
    assert not r.ok and r.unrestorable[0]["missing_chunks"] == 1
    heads = store.count("stat", "chunks/") + store.count("exists", "chunks/")
    assert heads == 3 and r.orphan_chunks is None
    # only that manifest: read, then read again to say which chunks hurt it
    assert store.count("get", "artifacts/") == 2


def test_parse_subset() -> None:
    assert parse_subset("5%").fraction == 0.05 and parse_subset("2/7").part == (2, 7)
    assert parse_subset(0.5).fraction == 0.5
    for bad in ("0%", "101%", "0/3", "4/3", "1/0", "half", 0.0, 1.5):
        with pytest.raises(UsageError):
            parse_subset(bad)  # type: ignore[arg-type]


def test_library_not_found() -> None:
    lake = Lake(MemoryStore())
    with pytest.raises(NotFound):
        lake.verify()
    synthetic(lake.store, ART, 1)
    with pytest.raises(NotFound):
        lake.verify("x/y")
    assert lake.verify(ART).ok


def test_what_the_listing_missed_is_confirmed_with_a_head() -> None:
    """A listing is a moment: a chunk it did not show (restored since by a push's gc guard,
    say) is a problem only if a HEAD right after says so too."""
    class Lagging(MemoryStore):
        hidden: set[str] = set()

        def list(self, prefix: str = "", **kw: Any) -> Any:
            return (o for o in super().list(prefix, **kw) if o.key not in self.hidden)

    store = Counting(Lagging())
    keys = synthetic(store.inner, ART, 5)
    store.inner.hidden = {keys[2]}
    r = Lake(store).verify()  # type: ignore[arg-type]
    assert r.ok and store.count("stat", "chunks/") == 1
    store.inner.delete([keys[2]])
    assert Lake(store).verify().unrestorable[0]["missing_chunks"] == 1  # type: ignore[arg-type]


def test_progress_phases_cover_their_totals() -> None:
    class Recorder:
        def __init__(self) -> None:
            self.phases: dict[str, list[int]] = {}
            self.current = ""

        def start(self, *, phase: str, total_bytes: int, total_files: int) -> None:
            self.current = phase
            self.phases[phase] = [total_bytes, 0]

        def advance(self, nbytes: int) -> None:
            self.phases[self.current][1] += nbytes

        def __getattr__(self, name: str) -> Any:
            return lambda *a, **k: None

    store = MemoryStore()
    synthetic(store, ART, 10)
    rec = Recorder()
    assert Lake(store).verify(read_data=True, progress=rec).ok  # type: ignore[arg-type]
    assert list(rec.phases) == ["verify manifests", "verify chunks", "read chunks"]
    assert rec.phases["read chunks"] == [1000, 1000]
    assert all(total == done > 0 for total, done in rec.phases.values())


def test_committed_shard_step_and_its_claim(local: tuple[str, Lake], tmp_path: Path) -> None:
    url, lake = local
    for rank in (0, 1):
        r = lake.push_shard(tree(tmp_path / f"r{rank}", 10 + rank, big=10, tag=f"{rank}-"),
                            "g/run/dcp", step=7, rank=rank, world=2)
    assert r.version == 1
    code, doc = verify_json(url)
    assert code == EXIT_OK, doc["problems"]
    assert doc["shard_steps_checked"] == 1 and doc["pending_steps"] == []
    key = layout.shard_claim_key("g/run/dcp", 7)
    claim = json.loads(lake.store.get(key))
    lake.store.put(key, json.dumps({**claim, "version": 9}).encode())
    code, doc = verify_json(url)
    assert code == EXIT_INTEGRITY
    assert [(p["kind"], p["version"]) for p in doc["problems"]] == [("shard", 9)]
    assert "committed as v9, which does not exist" in doc["problems"][0]["message"]


def test_header_and_gc_settings_must_parse(local: tuple[str, Lake]) -> None:
    url, lake = local
    lake.store.put(layout.GC_SETTINGS_KEY, b'{"ckptlake_gc_settings": 1}')
    lake.store.put(layout.HEADER_KEY, b"{}")
    code, doc = verify_json(url)
    assert code == EXIT_INTEGRITY
    assert sorted(p["kind"] for p in doc["problems"]) == ["gc", "header"]
    lake.store.delete([layout.HEADER_KEY, layout.GC_SETTINGS_KEY])
    code, doc = verify_json(url)  # versions without a header: a push would make a new one
    assert code == EXIT_INTEGRITY and [p["kind"] for p in doc["problems"]] == ["header"]


def test_after_gc_nothing_is_orphaned_or_missing(local: tuple[str, Lake], tmp_path: Path
                                                 ) -> None:
    """verify's roots are gc's: after a gc with no grace period, every chunk is referenced
    and every version left can be restored."""
    from ckptlake.policy.retention import RetentionPolicy, Rule

    url, lake = local
    src = tree(tmp_path / "s3", 3)
    lake.push(src, ART, step=3)
    lake.push_shard(tree(tmp_path / "r0", 4, big=10), "g/run/dcp", step=1, rank=0, world=2)
    policy = RetentionPolicy(rules=(Rule(match="*/ckpt", keep_last=1, index=0),),
                             grace_period=0)
    result = lake.gc(lake.gc_plan(policy))
    assert result.versions_deleted and result.chunks_swept
    code, doc = verify_json(url, "--read-data")
    assert code == EXIT_OK, doc["problems"]
    assert doc["orphan_chunks"] == 0 and doc["versions_checked"] == 1


def test_large_chunks_are_read_in_parts() -> None:
    store = Counting(MemoryStore())
    lake = Lake(store, chunk_size=16 * MiB, multipart_threshold=5 * MiB,  # type: ignore[arg-type]
                part_size=5 * MiB)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "w.bin").write_bytes(random.Random(1).randbytes(11 * MiB))
        lake.push(Path(tmp) / "w.bin", ART)
    store.calls.clear()
    r = lake.verify(read_data=True)
    assert r.ok and r.chunks_read == 1 and r.bytes_read == 11 * MiB
    assert store.count("get_range_into", "chunks/") == 3
    key = next(o.key for o in store.inner.list("chunks/"))
    store.inner.put(key, bytes(11 * MiB))
    assert lake.verify(read_data=True).unrestorable[0]["corrupt_chunks"] == 1
    lake.close()


def test_a_pack_cut_between_two_references_hurts_every_version_reading_it(
        local: tuple[str, Lake]) -> None:
    """A pack shared by a version that reads only its start (a sharded merge makes such
    manifests) and cut between the two ends cannot match its digest, so a pull of either
    version fails: verify must not call the one reading less restorable."""
    url, lake = local
    m = load_manifest(lake.store, ART, 1)
    first = next(f for f in m.files if f.chunks and f.chunks[0].offset == 0)
    pack = first.chunks[0].digest
    ends = [c.offset + c.size for f in m.files for c in f.chunks if c.digest == pack]
    assert max(ends) > first.size, "the pack holds more than its first file"
    commit_version(lake.store, Manifest(artifact="g/q", version=0, kind="dir", hash=m.hash,
                                        files=(first,)))
    key = layout.chunk_key(pack)
    lake.store.put(key, lake.store.get(key)[:first.size + 1])  # past g/q's end, short of v1's
    code, doc = verify_json(url, "--read-data")
    assert code == EXIT_INTEGRITY
    assert {(u["artifact"], u["version"]) for u in doc["unrestorable"]} >= {(ART, 1), ("g/q", 1)}
    with pytest.raises(Exception, match="corrupt"):
        lake.pull("g/q@v1", Path(lake.store.root).parent / "q-out")  # what verify predicts


def test_a_version_deleted_while_verify_runs_is_not_counted(local: tuple[str, Lake],
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    """gc (or rm) deleting a version and sweeping its chunks between verify's manifest reads
    and its chunk listing: no problem, and its swept chunks are not counted as missing."""
    url, lake = local
    own = sorted(set(chunks_of(lake, 1)) - set(chunks_of(lake, 2)))
    assert own
    store_type = type(lake.store)
    real_list = store_type.list
    done: list[bool] = []

    def listing(self: Any, prefix: str = "", **kw: Any) -> Any:
        if prefix.startswith("chunks/") and not done:
            done.append(True)
            lake.delete(f"{ART}@v1")
            self.delete(own)
        return real_list(self, prefix, **kw)

    monkeypatch.setattr(store_type, "list", listing)
    code, doc = verify_json(url)
    assert done, "verify listed no chunks: the test deleted nothing"
    assert code == EXIT_OK, doc["problems"]
    assert doc["chunks_missing"] == 0 and doc["versions_checked"] == 1
    assert any("deleted while verify ran" in w for w in doc["warnings"])


def test_an_empty_gc_settings_file_is_a_warning_not_a_problem(local: tuple[str, Lake]) -> None:
    """A gc's settings PUT cut after its head (SeaweedFS keeps it as 0 bytes): pushes assume
    the slowest gc until the next gc rewrites it, which is nothing verify should fail on."""
    url, lake = local
    lake.store.put(layout.GC_SETTINGS_KEY, b"")
    code, doc = verify_json(url)
    assert code == EXIT_OK, doc["problems"]
    assert any("gc/settings.json is empty" in w for w in doc["warnings"])
