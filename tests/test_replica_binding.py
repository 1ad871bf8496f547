"""A replica is one lake's (review of regional replicas): its marker binds it to the lake, a
replica that is another lake's or is a lake is refused before anything is written or swept
there, replica checks use the manifest's hash, and the smaller fixes around them.

Local lakes only (in-memory origins, file:// replicas); the CLI is run in a subprocess once.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ckptlake.core.gc_guard import RECORD_FORMAT
from ckptlake.core.identity import iso, utcnow
from ckptlake.core.replicas import ReplicaSet, keep_manifest, replicate
from ckptlake.errors import (EXIT_INTEGRITY, EXIT_NOT_FOUND, EXIT_USAGE, MissingChunk, NotFound,
                             UsageError)
from ckptlake.format import layout
from ckptlake.format.header import LakeHeader
from ckptlake.lake import Lake
from ckptlake.policy.replicas import ReplicaSpec, check_not_origin
from ckptlake.store import open_store
from ckptlake.store.memory import MemoryStore

from test_replicas import POLICY, FlakyOrigin, memory_lake, replica_chunks, write_src

MiB = 1 << 20
MARKER = "ckptlake-replica.json"


def lake_on(tmp_path: Path, origin: MemoryStore, name: str = "eu") -> Lake:
    """A lake whose replica is tmp_path/<name>, read by a client in its region."""
    spec = ReplicaSpec(name=name, url=(tmp_path / name).as_uri(), region="eu-west-1")
    return Lake(origin, chunk_size=1 * MiB,
                replicas=ReplicaSet([spec], client_region="eu-west-1"))


def named_origin(name: str) -> FlakyOrigin:
    origin = FlakyOrigin()
    origin.url = f"memory://{name}"
    return origin


def manifest_copies(root: Path) -> list[str]:
    base = root / "artifacts"
    return sorted(p.relative_to(root).as_posix() for p in base.rglob("*.json")) \
        if base.exists() else []


# ---- 1: another lake named as a replica -----------------------------------------------------

def test_cli_gc_refuses_a_replica_that_is_another_lake(tmp_path: Path) -> None:
    """The review's repro: lake B named as lake A's replica; A's gc deleted B's versions."""
    lake_a, lake_b = tmp_path / "lakeA", tmp_path / "lakeB"
    cfg = tmp_path / "ckptlake.yaml"
    cfg.write_text(f"lake: {lake_a.as_uri()}\nreplicas:\n  - name: us\n"
                   f"    url: {lake_b.as_uri()}\n    region: us-east-1\n")
    env = {**os.environ, "CKPTLAKE_CONFIG": str(cfg)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ckptlake", *args], capture_output=True,
                              text=True, env=env, cwd=tmp_path, timeout=60)

    assert run("push", str(write_src(tmp_path / "b", 2, MiB)), "m/b", "--lake", str(lake_b),
               "-q").returncode == 0
    assert run("push", str(write_src(tmp_path / "a", 1, MiB)), "m/a", "-q").returncode == 0
    gc = run("gc", "--yes")
    assert gc.returncode == EXIT_USAGE, gc.stderr
    assert "replica 'us'" in gc.stderr and "is another lake" in gc.stderr
    assert (lake_b / "artifacts" / "m" / "b" / "@v" / "0000000001.json").is_file()
    assert not (lake_b / MARKER).exists()


def test_library_gc_does_not_sweep_a_replica_that_is_another_lake(tmp_path: Path) -> None:
    other = open_store((tmp_path / "eu").as_uri())
    Lake(other, chunk_size=1 * MiB).push(write_src(tmp_path / "b", 2, MiB), "m/b")
    lake = memory_lake(tmp_path)
    lake.push(write_src(tmp_path / "a", 1, MiB), "m/a")
    lake.push(write_src(tmp_path / "a2", 3, MiB), "m/a")
    before = set(replica_chunks(tmp_path))
    result = lake.gc(lake.gc_plan(POLICY))
    assert result.versions_deleted == ["m/a@v1"] and result.replicas == []
    assert any("replica eu" in w and "not swept" in w and "another lake" in w
               for w in result.warnings)
    assert manifest_copies(tmp_path / "eu") == ["artifacts/m/b/@v/0000000001.json"]
    assert set(replica_chunks(tmp_path)) == before


def test_a_replica_holding_lake_records_but_no_header_is_refused(tmp_path: Path) -> None:
    """A lake whose header was lost still is one: its aliases and tombstones say so."""
    other = open_store((tmp_path / "eu").as_uri())
    Lake(other, chunk_size=1 * MiB).push(write_src(tmp_path / "b", 2, MiB), "m/b",
                                        aliases=["prod"])
    other.delete([layout.HEADER_KEY])
    lake = memory_lake(tmp_path)
    lake.push(write_src(tmp_path / "a", 1, MiB), "m/a")
    with pytest.raises(UsageError, match="is another lake.*@alias") as err:
        lake.replicate("m/a", "eu")
    assert err.value.exit_code == EXIT_USAGE
    assert not (tmp_path / "eu" / MARKER).exists()


def test_a_replica_at_a_symlink_to_the_lake_is_the_lake(tmp_path: Path) -> None:
    (tmp_path / "lake").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "lake")
    (tmp_path / "lake" / "sub").mkdir()
    for url in ((tmp_path / "link").as_uri(), (tmp_path / "link" / "sub").as_uri()):
        spec = ReplicaSpec(name="eu", url=url, region="eu-west-1")
        with pytest.raises(UsageError, match="replica 'eu'"):
            check_not_origin(spec, (tmp_path / "lake").as_uri(), None)


# ---- 3: two lakes sharing one replica -------------------------------------------------------

def test_two_lakes_sharing_a_replica(tmp_path: Path) -> None:
    """The replica is bound to the first lake that wrote into it: the second one's pulls read
    its own origin (with a warning) and write nothing there, its gc leaves the first lake's
    chunks and manifest copies alone, and an offline pull never serves the first lake's
    checkpoint as the second's."""
    origin_a, origin_b = named_origin("lake-a"), named_origin("lake-b")
    a, b = lake_on(tmp_path, origin_a), lake_on(tmp_path, origin_b)
    src_a, src_b = write_src(tmp_path / "sa", 1, 2 * MiB), write_src(tmp_path / "sb", 2, 2 * MiB)
    a.push(src_a, "m/a")
    b.push(src_b, "m/a")  # the same artifact name, another checkpoint
    a.pull("m/a", tmp_path / "oa")  # through the replica: bound to lake A, manifest copied
    marker = json.loads((tmp_path / "eu" / MARKER).read_bytes())
    assert marker["origin"] == "memory://lake-a" and marker["lake"]["created"]
    held = set(replica_chunks(tmp_path))
    copies = manifest_copies(tmp_path / "eu")
    assert copies == ["artifacts/m/a/@v/0000000001.json"]

    r = b.pull("m/a", tmp_path / "ob")
    assert (tmp_path / "ob" / "w.bin").read_bytes() == (src_b / "w.bin").read_bytes()
    assert r.replica["replica_down"] and any("not used" in w and "another lake" in w
                                             for w in r.warnings)
    assert set(replica_chunks(tmp_path)) == held  # nothing of lake B's was written there

    b.push(write_src(tmp_path / "sb2", 3, MiB), "m/a")
    result = b.gc(b.gc_plan(POLICY))
    assert result.replicas == [] and any("not swept" in w for w in result.warnings)
    assert set(replica_chunks(tmp_path)) == held
    assert manifest_copies(tmp_path / "eu") == copies

    origin_b.down = True
    with pytest.raises(UsageError, match="belongs to another lake") as err:
        b.pull("m/a@v1", tmp_path / "ob2", offline_replica=True)
    assert err.value.exit_code == EXIT_USAGE and not (tmp_path / "ob2").exists()
    origin_a.down = True  # lake A's own offline pull is served
    assert a.pull("m/a@v1", tmp_path / "oa2", offline_replica=True).version == 1


def test_replicate_refuses_a_replica_bound_to_another_lake(tmp_path: Path) -> None:
    a = lake_on(tmp_path, named_origin("lake-a"))
    b = lake_on(tmp_path, named_origin("lake-b"))
    a.push(write_src(tmp_path / "sa", 1, MiB), "m/a")
    b.push(write_src(tmp_path / "sb", 2, MiB), "m/a")
    a.replicate("m/a", "eu")
    held = set(replica_chunks(tmp_path))
    with pytest.raises(UsageError, match="belongs to another lake: its ckptlake-replica.json "
                                         "names memory://lake-a") as err:
        b.replicate("m/a", "eu")
    assert err.value.exit_code == EXIT_USAGE
    assert set(replica_chunks(tmp_path)) == held


def test_a_replica_from_before_markers_is_adopted_and_an_empty_marker_replaced(
        tmp_path: Path) -> None:
    lake = lake_on(tmp_path, named_origin("lake-a"))
    lake.push(write_src(tmp_path / "s", 1, MiB), "m/a")
    lake.replicate("m/a", "eu")
    (tmp_path / "eu" / MARKER).unlink()  # as a replica filled before markers existed
    lake2 = lake_on(tmp_path, lake.store)  # type: ignore[arg-type]
    lake2.replicate("m/a", "eu")
    doc = json.loads((tmp_path / "eu" / MARKER).read_bytes())
    assert doc["format"] == 1 and doc["origin"] == "memory://lake-a"
    (tmp_path / "eu" / MARKER).write_bytes(b"")  # a cut PUT
    lake3 = lake_on(tmp_path, lake.store)  # type: ignore[arg-type]
    lake3.replicate("m/a", "eu")
    assert json.loads((tmp_path / "eu" / MARKER).read_bytes()) == doc


# ---- 4: the manifest's hash, not the header's -----------------------------------------------

@pytest.mark.parametrize("header", ["deleted", "rewritten sha256"])
def test_replica_checks_use_the_manifests_hash(tmp_path: Path, header: str) -> None:
    lake = lake_on(tmp_path, named_origin("lake-a"))
    lake.push(write_src(tmp_path / "s", 1, 2 * MiB), "m/a", hash="blake3")
    lake.push(write_src(tmp_path / "s2", 2, 2 * MiB), "m/b")
    if header == "deleted":
        lake.store.delete([layout.HEADER_KEY])
    else:  # an old pusher that knew only SHA-256 rewrote a lost header
        lake.store.put(layout.HEADER_KEY, LakeHeader(hash="sha256", created="x").encode())
    r = lake.replicate("m/a", "eu")
    assert r.chunks_copied == r.chunks > 0
    pulled = lake.pull("m/b", tmp_path / "o")
    assert pulled.replica["chunks_pulled_through"] > 0
    assert pulled.replica["chunks_from_origin"] == 0


# ---- 6: an empty manifest copy --------------------------------------------------------------

def test_an_empty_manifest_copy_is_replaced(tmp_path: Path) -> None:
    lake = lake_on(tmp_path, named_origin("lake-a"))
    lake.push(write_src(tmp_path / "s", 1, MiB), "m/a")
    m = lake._manifest("m/a")
    replica = open_store((tmp_path / "eu").as_uri())
    key = layout.version_key("m/a", 1)
    replica.put(key, b"")  # a cut PUT
    assert keep_manifest(lake.store, replica, m)
    assert replica.get(key) == lake.store.get(key)


# ---- 8: a chunk gone at the origin ----------------------------------------------------------

def test_replicate_of_a_version_missing_a_chunk_is_a_missing_chunk(tmp_path: Path) -> None:
    from ckptlake.core.browse import object_sizes

    lake = lake_on(tmp_path, named_origin("lake-a"))
    lake.push(write_src(tmp_path / "s", 1, 2 * MiB), "m/a")
    lake.push(write_src(tmp_path / "s2", 2, 2 * MiB), "m/a")
    m = lake._manifest("m/a@v1")
    lost = layout.chunk_key(sorted(set(object_sizes(m))
                                   - set(object_sizes(lake._manifest("m/a@v2"))))[0])
    lake.store.delete([lost])
    spec = lake.replicas.by_name("eu")  # type: ignore[union-attr]
    replica = open_store((tmp_path / "eu").as_uri())
    with pytest.raises(MissingChunk) as err:
        replicate(lake.store, replica, m, spec=spec, lake_url=lake.url, concurrency=4)
    assert err.value.exit_code == EXIT_INTEGRITY and "m/a@v1" in str(err.value)
    assert lost in str(err.value)
    lake.delete("m/a@v1")  # deleted while it is replicated: exit 3, as for a pull
    with pytest.raises(NotFound, match="m/a@v1 was deleted.* while it was being replicated"
                       ) as err3:
        replicate(lake.store, replica, m, spec=spec, lake_url=lake.url, concurrency=4)
    assert err3.value.exit_code == EXIT_NOT_FOUND


# ---- 5: no manifest copy while a replica sweep may take a chunk -----------------------------

def test_no_manifest_copy_while_a_replica_record_names_a_chunk(tmp_path: Path) -> None:
    lake = lake_on(tmp_path, named_origin("lake-a"))
    lake.push(write_src(tmp_path / "s", 1, 2 * MiB), "m/a")
    digest = next(k for k in lake.store.keys() if k.startswith("chunks/")).rsplit("/", 1)[1]
    replica = open_store((tmp_path / "eu").as_uri())
    record = {"ckptlake_condemned": RECORD_FORMAT, "created": iso(utcnow()),
              "created_by": "gc@elsewhere", "grace_period": 0, "chunks": [digest],
              "sizes": [0], "swept_at": None}
    replica.put(layout.condemned_key("20261206T000000.000000Z", "00" * 8),
                json.dumps(record).encode())
    lake.pull("m/a", tmp_path / "o")  # whole, through the replica
    assert manifest_copies(tmp_path / "eu") == []
    replica.delete([k.key for k in replica.list(layout.CONDEMNED_PREFIX)])
    lake.pull("m/a", tmp_path / "o2")
    assert manifest_copies(tmp_path / "eu") == ["artifacts/m/a/@v/0000000001.json"]


# ---- the gc summary -------------------------------------------------------------------------

def test_gc_summary_names_manifest_copies_dropped(tmp_path: Path) -> None:
    from ckptlake.cli.gc import result_summary

    lake = memory_lake(tmp_path)
    lake.push(write_src(tmp_path / "s1", 1, MiB), "m/a")
    lake.push(write_src(tmp_path / "s2", 2, MiB), "m/a")
    lake.replicate("m/a@v1", "eu")
    lake.replicate("m/a@v2", "eu")
    plan = lake.gc_plan(POLICY)
    result = lake.gc(plan)
    assert result.replicas[0]["manifests_dropped"] == 1
    assert "dropped 1 manifest copy" in result_summary(plan, result)


# ---- the binding's own review ---------------------------------------------------------------

def test_a_warm_pull_reads_no_records_and_binds_once(tmp_path: Path) -> None:
    """Every pull through a replica read all its condemnation records (34 MB of them cost a
    warm pull a second) and bound the replica twice (read, then write), each with a GET of
    the lake's header; a manifest copy already there needs neither."""
    lake = lake_on(tmp_path, named_origin("warm"))
    lake.push(write_src(tmp_path / "s", 1), "m/a")
    lake.pull("m/a", tmp_path / "o1")  # cold: binds the replica, copies the manifest
    assert manifest_copies(tmp_path / "eu") == ["artifacts/m/a/@v/0000000001.json"]
    warm = lake_on(tmp_path, lake.store)  # a new process: nothing remembered
    calls: list[tuple[str, str]] = []
    backend = warm._replica_backend(warm.replica_for("eu"))
    for name in ("get", "get_with_etag", "get_into", "list", "stat"):
        real = getattr(backend, name)
        setattr(backend, name, lambda key="", *a, _n=name, _r=real, **kw:
                (calls.append((_n, key)), _r(key, *a, **kw))[1])
    warm._replica_backend = lambda spec: backend  # type: ignore[method-assign]
    warm.pull("m/a", tmp_path / "o2")
    assert not [c for c in calls if c[1].startswith(layout.CONDEMNED_PREFIX)], calls
    assert sum(1 for c in calls if c[1] == MARKER) == 1, calls


def test_a_marker_with_a_nul_origin_is_refused_not_a_crash(tmp_path: Path) -> None:
    lake = lake_on(tmp_path, named_origin("nul"))
    lake.push(write_src(tmp_path / "s", 1), "m/a")
    (tmp_path / "eu").mkdir()
    (tmp_path / "eu" / MARKER).write_text(json.dumps(
        {"format": 1, "origin": "file:///srv/lake%00", "lake": None}))
    got = lake.pull("m/a", tmp_path / "o1")  # the origin serves, with a warning
    assert any("another lake" in w for w in got.warnings), got.warnings


def test_a_rewritten_header_is_named_as_such(tmp_path: Path) -> None:
    root = tmp_path / "lake"
    spec = ReplicaSpec(name="eu", url=(tmp_path / "eu").as_uri(), region="eu-west-1")
    lake = Lake(open_store(root.as_uri()), replicas=ReplicaSet([spec], client_region="x"))
    lake.push(write_src(tmp_path / "s", 1), "m/a")
    lake.replicate("m/a", "eu")
    (root / layout.HEADER_KEY).unlink()
    lake.push(write_src(tmp_path / "s2", 2), "m/a")  # rewrites the lost header: new `created`
    with pytest.raises(UsageError, match="same place when it had another identity"):
        lake.replicate("m/a", "eu")


def test_cli_gc_runs_when_a_replica_cannot_be_opened(tmp_path: Path) -> None:
    """A replica whose store cannot be opened now (a missing AWS profile: a ConfigError) is
    the sweep's warning, as in the library; the check before the plan refused the lake's own
    gc with exit 2."""
    from typer.testing import CliRunner

    from ckptlake.cli.app import app

    lake = tmp_path / "lake"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"lake: {lake.as_uri()}\nreplicas:\n  - name: eu\n    url: s3://bk/eu\n"
                   "    region: eu-west-1\n    profile: no-such-profile-here\n"
                   "retention:\n  rules:\n    - match: '*'\n      keep_last: 1\n")
    src = write_src(tmp_path / "s", 1)
    r = CliRunner().invoke(app, ["push", str(src), "m/a", "--config", str(cfg)],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.stderr
    r = CliRunner().invoke(app, ["gc", "--yes", "--config", str(cfg)], catch_exceptions=False)
    assert r.exit_code == 0, r.stderr
    assert "not swept" in r.stderr and "no-such-profile-here" in r.stderr


def test_a_warm_pull_still_replaces_a_differing_manifest_copy(tmp_path: Path) -> None:
    """The warm-pull shortcut trusted any copy that was there; format.md says a copy that
    differs from the origin's manifest is replaced (offline readers verify against it)."""
    lake = lake_on(tmp_path, named_origin("diff"))
    lake.push(write_src(tmp_path / "s", 1), "m/a")
    lake.pull("m/a", tmp_path / "o1")
    copy = tmp_path / "eu" / "artifacts" / "m" / "a" / "@v" / "0000000001.json"
    doc = json.loads(copy.read_text())
    doc["metadata"] = {"tampered": "yes"}
    copy.write_text(json.dumps(doc))
    lake_on(tmp_path, lake.store).pull("m/a", tmp_path / "o2")
    assert copy.read_bytes() == lake.store.get(layout.version_key("m/a", 1))
