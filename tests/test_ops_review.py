"""Findings of an ops review that checked verify, du and `cache ls` against the storage itself:
records readers skip in silence (a malformed tombstone, a listing summary that disagrees with
its manifest) must reach verify's report; du's errors name du and refuse what ls refuses;
verify says which bytes it counts; `cache ls` counts only entries a pull could use."""
from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.core.cache import ChunkCache
from ckptlake.core.summary import _pack, _unpack
from ckptlake.errors import EXIT_INTEGRITY, EXIT_OK
from ckptlake.format import layout
from ckptlake.lake import Lake
from test_rev1_fixes import delete_like_gc

MiB = 1 << 20


def cli(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def verify_json(url: str) -> tuple[int, dict[str, Any]]:
    r = cli("verify", "--lake", url, "--json")
    return r.exit_code, json.loads(r.stdout)


def tree(root: Path, seed: int) -> Path:
    """One slice (more than a chunk's worth) and two small packed files."""
    rng = random.Random(seed)
    root.mkdir()
    (root / "big.bin").write_bytes(rng.randbytes(MiB + 100))
    for name in ("a.txt", "b.txt"):
        (root / name).write_bytes(rng.randbytes(300))
    return root


@pytest.fixture
def lake(local_lake_url: str, tmp_path: Path) -> Any:
    handle = ckptlake.open(local_lake_url, chunk_size=MiB)
    handle.push(tree(tmp_path / "a", 1), "m/a", step=1)
    handle.push(tree(tmp_path / "a2", 2), "m/a", step=2, metrics={"loss": 0.1, "epoch": 3},
                metadata={"run": "r7"})
    handle.push(tree(tmp_path / "b", 3), "m/b", step=1)
    yield local_lake_url, handle
    handle.close()


# ---- A: a malformed tombstone ------------------------------------------------------------------

def test_verify_reports_a_tombstone_it_cannot_read_or_that_names_another_version(
        lake: tuple[str, Lake]) -> None:
    url, handle = lake
    key = delete_like_gc(handle, "m/a", 1)
    assert verify_json(url)[0] == EXIT_OK  # a readable tombstone is no problem
    handle.store.put(key, b"garbage\n")
    code, doc = verify_json(url)
    assert code == EXIT_INTEGRITY
    assert [(p["kind"], p["artifact"], p["version"], p["key"]) for p in doc["problems"]] == \
        [("tombstone", "m/a", 1, key)]
    assert "not a readable tombstone" in doc["problems"][0]["message"]
    assert "do not delete it" in doc["problems"][0]["hint"]
    r = cli("verify", "--lake", url)
    assert r.exit_code == EXIT_INTEGRITY and key in r.stderr
    # one copied from another version reads fine but describes that one
    other = delete_like_gc(handle, "m/b", 1)
    handle.store.put(key, handle.store.get(other))
    code, doc = verify_json(url)
    assert code == EXIT_INTEGRITY
    assert [p["key"] for p in doc["problems"]] == [key]
    assert "claims to be m/b@v1" in doc["problems"][0]["message"]
    # scoped to the artifact, it is checked too
    r = cli("verify", "m/a", "--lake", url, "--json")
    assert r.exit_code == EXIT_INTEGRITY and json.loads(r.stdout)["problems"][0]["key"] == key


# ---- B: a listing summary that disagrees with its manifest -------------------------------------

def summary_infos(lake: Lake, artifact: str) -> list[Any]:
    return list(lake.store.list(layout.summaries_prefix(artifact)))


def test_verify_warns_on_a_listing_summary_that_disagrees_with_its_manifest(
        lake: tuple[str, Lake]) -> None:
    url, handle = lake
    [old] = [i.key for i in summary_infos(handle, "m/b")]
    real = handle.show("m/b@v1").total_bytes
    doc = _unpack(layout.parse_summary_key(old)[2])
    doc["b"] = 7
    forged = layout.summary_key("m/b", 1, _pack(doc))
    handle.store.put(forged, b"")
    handle.store.delete([old])
    assert [v.total_bytes for v in handle.versions("m/b")] == [7]  # ls trusts it
    code, out = verify_json(url)
    assert code == EXIT_OK, out["problems"]
    [warning] = [w for w in out["warnings"] if "listing summary" in w]
    assert f"total_bytes 7, manifest {real}" in warning and f"stored_bytes 7" in warning
    assert forged in warning and "m/b@v1" in warning
    assert not [w for w in out["warnings"] if "m/a@" in w]  # the true ones pass
    # the repair the warning names: without the key, readers read the manifest
    handle.store.delete([forged])
    assert [v.total_bytes for v in handle.versions("m/b")] == [real]
    code, out = verify_json(url)
    assert code == EXIT_OK and not [w for w in out["warnings"] if "listing summary" in w]


def test_a_summary_older_than_its_manifest_is_not_checked(lake: tuple[str, Lake]) -> None:
    """Readers ignore it (a deleted version's whose number was taken again): so does verify."""
    url, handle = lake
    [old] = [i.key for i in summary_infos(handle, "m/b")]
    doc = _unpack(layout.parse_summary_key(old)[2])
    doc["b"] = 7
    forged = layout.summary_key("m/b", 1, _pack(doc))
    handle.store.put(forged, b"")
    handle.store.delete([old])
    root = url[len("file://"):]
    os.utime(os.path.join(root, forged), (1_000_000, 1_000_000))
    assert [v.total_bytes for v in handle.versions("m/b")] != [7]
    code, out = verify_json(url)
    assert code == EXIT_OK and not [w for w in out["warnings"] if "listing summary" in w]


# ---- C, D: du's own errors ---------------------------------------------------------------------

def test_du_names_itself_for_an_unreadable_shard_record(lake: tuple[str, Lake],
                                                        tmp_path: Path) -> None:
    url, handle = lake
    handle.push_shard(tree(tmp_path / "r0", 4), "m/p", step=5, rank=0, world=2)
    [key] = [i.key for i in handle.store.list(layout.ARTIFACTS_PREFIX + "m/p/")
             if (s := layout.parse_shard_key(i.key)) and s[2] is not None]
    handle.store.put(key, b"garbage\n")
    r = cli("du", "--lake", url)
    assert r.exit_code == EXIT_INTEGRITY
    assert f"du cannot read the shard record {key}" in r.stderr
    assert "gc" not in r.stderr.replace("ckptlake", "")
    # a record whose manifest has no readable chunk list, likewise
    handle.store.put(key, json.dumps({"manifest": {"files": [{"chunks": [["zz"]]}]}}).encode())
    r = cli("du", "--lake", url)
    assert r.exit_code == EXIT_INTEGRITY
    assert f"du cannot read the chunk list of the shard record {key}" in r.stderr


def test_du_refuses_a_manifest_that_names_another_version(lake: tuple[str, Lake]) -> None:
    url, handle = lake
    key = layout.version_key("m/b", 1)
    raw = json.loads(handle.store.get(key))
    raw["artifact"] = "m/x"
    handle.store.put(key, json.dumps(raw).encode())
    r = cli("du", "--lake", url)
    assert r.exit_code == EXIT_INTEGRITY
    assert f"du cannot read {key}: it claims to be m/x@v1" in r.stderr
    raw["artifact"], raw["version"] = "m/b", True  # JSON true is no version number
    handle.store.put(key, json.dumps(raw).encode())
    r = cli("du", "--lake", url)
    assert r.exit_code == EXIT_INTEGRITY and "it claims to be m/b@vTrue" in r.stderr
    raw["version"] = 1
    handle.store.put(key, json.dumps(raw).encode())
    assert cli("du", "--lake", url).exit_code == EXIT_OK


# ---- E: which bytes verify counts --------------------------------------------------------------

def test_verify_says_its_bytes_are_decoded_sizes(local_lake_url: str, tmp_path: Path) -> None:
    """A compressed lake stores less than its chunks decode to; du prints the stored bytes."""
    src = tmp_path / "z"
    src.mkdir()
    (src / "zeros.bin").write_bytes(bytes(2 * MiB))
    with ckptlake.open(local_lake_url, chunk_size=MiB) as handle:
        handle.push(src, "m/z", step=1)
    r = cli("verify", "--lake", local_lake_url)
    assert r.exit_code == EXIT_OK
    assert "1 chunk (1.00 MiB decoded)" in r.stdout, r.stdout
    doc = verify_json(local_lake_url)[1]
    assert doc["bytes_checked"] == MiB  # the JSON field keeps its name and meaning


# ---- F: what `cache ls` counts -----------------------------------------------------------------

def test_cache_ls_counts_neither_truncated_entries_nor_foreign_names(tmp_path: Path) -> None:
    cache = ChunkCache(tmp_path / "cache", 10 * MiB)
    whole, cut = b"w" * 1000, b"c" * 3000
    dw, dc = (hashlib.sha256(b).hexdigest() for b in (whole, cut))
    cache.put("sha256", dw, whole)
    cache.put("sha256", dc, cut)
    cache.record_version("file:///lake", "m/a", 1, "sha256", {dw: len(whole), dc: len(cut)})
    with open(cache.entry_path("sha256", dc), "r+b") as fh:
        fh.truncate(100)  # a disk that filled up, a copy cut short
    fan = Path(cache.entry_path("sha256", dw)).parent
    (fan / "notes.txt").write_bytes(b"x" * 500)  # not a digest: no pull ever reads it
    (fan / (dw[:-1] + "Z")).write_bytes(b"y" * 50)
    r = cli("cache", "ls", "--dir", cache.dir, "--json")
    assert r.exit_code == EXIT_OK, r.output
    doc = json.loads(r.stdout)
    assert (doc["entries"], doc["bytes"]) == (2, 1000 + 100)
    [version] = doc["versions"]
    assert (version["bytes"], version["bytes_cached"]) == (4000, 1000)
    r = cli("cache", "prune", "--dir", cache.dir)  # what is no entry goes with a prune
    assert r.exit_code == EXIT_OK and not (fan / "notes.txt").exists()
    assert Path(cache.entry_path("sha256", dw)).read_bytes() == whole


@pytest.mark.parametrize("where", ["local", "seaweedfs", "memory"])
def test_du_counts_the_parts_of_incomplete_uploads(where: str, request: pytest.FixtureRequest,
                                                   tmp_path: Path) -> None:
    """A push killed mid-upload leaves parts that S3 bills as stored but lists as no object:
    du's totals left them out (5 MiB of a 17 MiB lake in the review)."""
    from ckptlake.core.du import disk_usage
    from ckptlake.lake import Lake
    from ckptlake.store.memory import MemoryStore

    if where == "memory":
        handle = Lake(MemoryStore(), chunk_size=MiB)
    else:
        handle = ckptlake.open(request.getfixturevalue(
            "local_lake_url" if where == "local" else "s3_lake_url"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(os.urandom(2 * MiB))
    handle.push(src, "m/u", compression="none")
    store = handle.store
    before = disk_usage(store, price=1.0).lake_totals
    assert (before.incomplete_uploads, before.incomplete_upload_bytes) == (0, 0)
    key = "chunks/ab/ab" + "0" * 62
    upload = store.create_multipart(key)
    store.upload_part(key, upload, 1, os.urandom(5 * MiB))
    store.upload_part(key, upload, 2, os.urandom(1000))
    after = disk_usage(store, price=1.0).lake_totals
    assert (after.incomplete_uploads, after.incomplete_upload_bytes) == (1, 5 * MiB + 1000)
    assert after.total_bytes == before.total_bytes  # no object for them
    assert after.total_usd_month == pytest.approx(
        (before.total_bytes + 5 * MiB + 1000) / (1 << 30), abs=1e-4)  # (4 decimals)
    assert after.total_usd_month > before.total_usd_month
    if where == "local":
        r = cli("du", "--lake", handle.url)
        assert r.exit_code == EXIT_OK
        assert "incomplete uploads: 1 holding 5.00 MiB" in r.stdout, r.stdout
    store.abort_multipart(key, upload)
    assert disk_usage(store).lake_totals.incomplete_uploads == 0


def test_a_forged_summary_never_makes_a_version_the_best(tmp_path: Path) -> None:
    """@min:/@max: rank the versions by their listing summaries, one listing for all: a summary
    that disagrees with its manifest (forged, damaged: verify warns of it) made `@min:loss`
    name, and pull restore, a version the manifests do not rank best.  The chosen version's
    manifest is read anyway: it must agree, else the choice is made again by it."""
    from ckptlake.store.memory import MemoryStore

    handle = Lake(MemoryStore(), chunk_size=1 << 20)
    for i, loss in enumerate((3.0, 2.0, 4.0)):
        src = tmp_path / f"s{i}"
        src.mkdir()
        (src / "w.bin").write_bytes(os.urandom(100 + i))
        handle.push(src, "m/c", metrics={"loss": loss})
    [old] = [i.key for i in summary_infos(handle, "m/c")
             if layout.parse_summary_key(i.key)[1] == 1]
    doc = _unpack(layout.parse_summary_key(old)[2])
    doc["m"] = {"loss": 0.5}  # v1 claims the best loss
    handle.store.put(layout.summary_key("m/c", 1, _pack(doc)), b"")
    handle.store.delete([old])
    assert handle.resolve("m/c@min:loss").version == 2
    assert handle.resolve("m/c@max:loss").version == 3
    handle.pull("m/c@min:loss", tmp_path / "out")
    assert (tmp_path / "out" / "w.bin").stat().st_size == 101  # v2's file


def test_integer_metrics_rank_exactly_and_a_huge_one_is_no_metric(tmp_path: Path) -> None:
    """Token counts are integers: @min:/@max: compared them as floats, so two counts that differ
    beyond 2^53 tied (the newer won whichever was larger).  And an integer beyond a float's
    range made math.isfinite raise OverflowError: a crafted manifest with a 400-digit metric
    was an internal error in every reader; it is no metric (an integrity error)."""
    from ckptlake.errors import IntegrityError
    from ckptlake.format.manifest import decode_manifest, is_metric_value
    from ckptlake.store.memory import MemoryStore

    handle = Lake(MemoryStore(), chunk_size=1 << 20)
    for i, tokens in enumerate((2**60 + 1, 2**60)):  # v2 has fewer, by 1
        src = tmp_path / f"s{i}"
        src.mkdir()
        (src / "w.bin").write_bytes(os.urandom(100 + i))
        handle.push(src, "m/t")
        # as another writer records them (ckptlake's push stores metrics as floats)
        key = layout.version_key("m/t", i + 1)
        doc = json.loads(handle.store.get(key))
        doc["metrics"] = {"tokens": tokens}
        handle.store.put(key, json.dumps(doc).encode())
    handle.store.delete([i.key for i in summary_infos(handle, "m/t")])
    assert handle.resolve("m/t@min:tokens").version == 2
    assert handle.resolve("m/t@max:tokens").version == 1
    assert not is_metric_value(10**400) and is_metric_value(2**60)
    key = layout.version_key("m/t", 1)
    doc = json.loads(handle.store.get(key))
    doc["metrics"] = {"tokens": 10**400}
    with pytest.raises(IntegrityError):
        decode_manifest(json.dumps(doc).encode(), key=key)
