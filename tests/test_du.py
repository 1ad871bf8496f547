"""`ckptlake du`: exact logical/stored/exclusive/shared numbers on a hand-built lake, the
lake-wide identity against real listings (local and SeaweedFS), "exclusive" checked against
what gc really frees, no chunk ever read, and the CLI's --json/--sort/--versions/PREFIX."""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ckptlake.cli.app import app
from ckptlake.core.du import disk_usage
from ckptlake.core.gc import execute, plan_gc
from ckptlake.format import layout
from ckptlake.core.lakeheader import ensure_header
from ckptlake.format.manifest import ChunkRef, FileEntry, Manifest
from ckptlake.lake import Lake
from ckptlake.policy.retention import RetentionPolicy
from ckptlake.store import open_store
from ckptlake.store.base import Store
from ckptlake.store.memory import MemoryStore

KEYS = ("logical_bytes", "stored_bytes", "exclusive_bytes", "shared_bytes")
NOW = datetime(2026, 12, 1, tzinfo=timezone.utc)


def chunk(store: Store, size: int, tag: str) -> str:
    data = (tag.encode() * size)[:size]
    d = hashlib.sha256(data).hexdigest()
    store.put(layout.chunk_key(d), data)
    return d


def manifest(store: Store, artifact: str, number: int, refs: list[tuple[str, int, int | None]],
             ) -> None:
    """A version whose files are `refs`: (digest, bytes used, offset in a pack or None)."""
    files = tuple(FileEntry(path=f"f{i}", size=size, chunks=(ChunkRef(d, size, off),),
                            digest=None if off is None else "0" * 64)
                  for i, (d, size, off) in enumerate(refs))
    m = Manifest(artifact=artifact, version=number, kind="dir", hash="sha256", files=files,
                 step=number * 10, created=NOW)
    store.put(layout.version_key(artifact, number), m.encode(), if_none_match=True)


def built(store: Store) -> dict[str, str]:
    """a/ckpt v1, v2 and b/ckpt v1 over chunks of distinct sizes, so every sum is unique:

      only_a1  1000  a@v1               -> exclusive to a@v1 and to a
      a12       200  a@v1, a@v2         -> exclusive to a, shared between a's versions
      ab         30  a@v2, b@v1         -> shared between artifacts
      pack     4000  a@v2 uses 10 bytes -> counts whole (4000) for a@v2, a
      b_pend      5  b@v1, pending step -> shared (a pending step is live)
      pend   70000  only the pending step
      orphan 600000  nothing
    """
    ensure_header(store, hash="sha256")  # chunk() names chunks by SHA-256
    c = {name: chunk(store, size, name) for name, size in
         [("only_a1", 1000), ("a12", 200), ("ab", 30), ("pack", 4000), ("b_pend", 5),
          ("pend", 70000), ("orphan", 600000)]}
    manifest(store, "a/ckpt", 1, [(c["only_a1"], 1000, None), (c["a12"], 200, None)])
    manifest(store, "a/ckpt", 2, [(c["a12"], 200, None), (c["ab"], 30, None),
                                  (c["pack"], 10, 100), (c["a12"], 200, None)])
    manifest(store, "b/ckpt", 1, [(c["ab"], 30, None), (c["b_pend"], 5, None)])
    record = {"ckptlake_shard": 1, "artifact": "b/ckpt", "step": 7, "rank": 0, "world": 2,
              "manifest": {"files": [{"path": "w", "size": 70005,
                                      "chunks": [[c["pend"], 70000], [c["b_pend"], 5]]}]}}
    store.put(layout.shard_record_key("b/ckpt", 7, 0, 2), json.dumps(record).encode())
    store.put("not-the-lakes.txt", b"x" * 77)
    return c


def rows(report: Any) -> dict[str, tuple[int, ...]]:
    out = {}
    for a in report.artifacts:
        out[a.artifact] = tuple(getattr(a, k) for k in KEYS)
        for v in a.versions:
            out[f"{v.artifact}@v{v.version}"] = tuple(getattr(v, k) for k in KEYS)
    return out


@pytest.fixture(params=["memory", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "memory":
        return MemoryStore()
    return open_store("file://" + str(tmp_path / "lake"))


def test_exact_numbers_per_artifact_and_version(store: Store) -> None:
    built(store)
    r = disk_usage(store, versions=True, price=0.02)
    assert rows(r) == {
        #                 logical           stored                exclusive         shared
        "a/ckpt": (1200 + 440, 1000 + 200 + 30 + 4000, 1000 + 200 + 4000, 30),
        "a/ckpt@v1": (1200, 1200, 1000, 200),
        "a/ckpt@v2": (440, 200 + 30 + 4000, 4000, 230),
        "b/ckpt": (35, 35, 0, 35),
        "b/ckpt@v1": (35, 35, 0, 35),
    }
    assert [a.artifact for a in r.artifacts] == ["a/ckpt", "b/ckpt"]  # stored, largest first
    assert [v.version for v in r.artifacts[0].versions] == [2, 1]
    t = r.lake_totals
    assert (t.exclusive_bytes, t.shared_bytes, t.pending_bytes, t.orphan_bytes) == \
        (5200, 35, 70000, 600000)
    assert t.orphan_objects == 1 and t.chunk_objects == 7 and t.missing_chunks == 0
    assert t.exclusive_bytes + t.shared_bytes + t.pending_bytes + t.orphan_bytes == \
        t.chunk_bytes
    listed = list(store.list(""))
    assert t.total_bytes == sum(o.size for o in listed) == \
        t.chunk_bytes + t.metadata_bytes + t.foreign_bytes
    assert (t.foreign_objects, t.foreign_bytes) == (1, 77)
    assert t.objects == len(listed) == t.chunk_objects + t.metadata_objects + t.foreign_objects
    assert r.artifacts[0].exclusive_usd_month == round(5200 / 2**30 * 0.02, 4)


def test_a_chunk_in_many_artifacts_counts_once_in_each() -> None:
    """Three artifacts, two versions each, all referencing one chunk (and each its own)."""
    store = MemoryStore()
    common = chunk(store, 777, "common")
    for i, artifact in enumerate(("x/a", "x/b", "x/c")):
        own = chunk(store, 10 + i, artifact)
        manifest(store, artifact, 1, [(common, 777, None), (own, 10 + i, None)])
        manifest(store, artifact, 2, [(common, 777, None)])
    r = disk_usage(store, versions=True)
    assert rows(r) == {
        "x/a": (1564, 787, 10, 777), "x/a@v1": (787, 787, 10, 777), "x/a@v2": (777, 777, 0, 777),
        "x/b": (1565, 788, 11, 777), "x/b@v1": (788, 788, 11, 777), "x/b@v2": (777, 777, 0, 777),
        "x/c": (1566, 789, 12, 777), "x/c@v1": (789, 789, 12, 777), "x/c@v2": (777, 777, 0, 777),
    }
    assert (r.lake_totals.shared_bytes, r.lake_totals.exclusive_bytes) == (777, 33)


class SlowListing:
    """The store, its listing of chunks/ held back: past the first chunk key (which tells du
    the roots are known) it waits until `manifests` manifests were read, then `delay` s per
    key.  So du's reads of every manifest finish while the listing still runs: they stay
    buffered to the end and are applied only after it (du's last loop)."""

    def __init__(self, inner: Any, manifests: int, delay: float = 0.1) -> None:
        self.inner, self.url, self.manifests, self.delay = inner, inner.url, manifests, delay
        self.read = 0
        self.all_read = threading.Event()
        self.waited: bool | None = None  # whether the reads were done before the listing

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def get(self, key: str, *args: Any, **kw: Any) -> Any:
        data = self.inner.get(key, *args, **kw)
        if layout.parse_version_key(key):
            self.read += 1
            if self.read >= self.manifests:
                self.all_read.set()
        return data

    def list(self, prefix: str = "", **kw: Any) -> Any:
        first = True
        for info in self.inner.list(prefix, **kw):
            if info.key.startswith(layout.CHUNKS_PREFIX):
                if not first:
                    if self.waited is None:
                        self.waited = self.all_read.wait(10)
                    time.sleep(self.delay)
                first = False
            yield info


def test_manifests_read_ahead_of_the_listing_are_buffered_then_applied(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The numbers do not depend on when the listing of chunks/ ends: reads buffered until
    after the listing (a slow one: every manifest read while chunks/ is still listed), or
    waiting for it after one digest.  (Without the slow listing the listing of this small
    lake ended first and the reads kept till the end were never applied: every row lost.)"""
    built(store)
    expected = disk_usage(store, versions=True).to_dict()
    slow = SlowListing(store, manifests=3)
    assert disk_usage(slow, versions=True).to_dict() == expected  # type: ignore[arg-type]
    assert slow.waited  # the three manifests were read before the listing went on
    from ckptlake.core import du

    monkeypatch.setattr(du, "_MAX_BUFFERED", 1)
    assert disk_usage(store, versions=True).to_dict() == expected


def test_sort_and_prefix(store: Store) -> None:
    built(store)
    assert [a.artifact for a in disk_usage(store, sort="name").artifacts] == ["a/ckpt", "b/ckpt"]
    manifest(store, "c/big", 1, [(chunk(store, 5210, "c"), 5210, None)])
    assert [a.artifact for a in disk_usage(store).artifacts] == ["a/ckpt", "c/big", "b/ckpt"]
    assert [a.artifact for a in disk_usage(store, sort="exclusive").artifacts] == \
        ["c/big", "a/ckpt", "b/ckpt"]
    assert [a.artifact for a in disk_usage(store, sort="logical").artifacts] == \
        ["c/big", "a/ckpt", "b/ckpt"]
    r = disk_usage(store, prefix="b/")
    assert [a.artifact for a in r.artifacts] == ["b/ckpt"]
    assert r.lake_totals.exclusive_bytes == 5200 + 5210  # the totals stay lake-wide


class Counting(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.gets: list[str] = []
        self.lists: list[str] = []

    def get(self, key: str, *args: Any, **kw: Any) -> Any:
        self.gets.append(key)
        return super().get(key, *args, **kw)

    def get_range(self, key: str, *args: Any, **kw: Any) -> Any:
        self.gets.append(key)
        return super().get_range(key, *args, **kw)

    def get_into(self, key: str, *args: Any, **kw: Any) -> Any:
        self.gets.append(key)
        return super().get_into(key, *args, **kw)

    def list(self, prefix: str = "", *args: Any, **kw: Any) -> Any:
        self.lists.append(prefix)
        return super().list(prefix, *args, **kw)


def test_reads_listings_and_manifests_only() -> None:
    store = Counting()
    built(store)
    store.gets.clear()
    store.lists.clear()
    disk_usage(store, versions=True)
    assert not [k for k in store.gets if k.startswith(layout.CHUNKS_PREFIX)]
    assert sorted(store.gets) == sorted(
        [layout.version_key("a/ckpt", 1), layout.version_key("a/ckpt", 2),
         layout.version_key("b/ckpt", 1), layout.shard_record_key("b/ckpt", 7, 0, 2)])
    assert store.lists == [""]  # one listing


def _raw_listing(store: Store) -> tuple[int, int]:
    """(objects, bytes) under the lake's root from the server itself (boto3's own listing,
    not ckptlake's store) on S3; from the file system for a local lake."""
    url = store.url
    if url.startswith("s3://"):
        import boto3

        bucket, _, prefix = url[len("s3://"):].partition("/")
        client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
        n = total = 0
        for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix.rstrip("/") + "/"):
            for o in page.get("Contents", []):
                n += 1
                total += o["Size"]
        return n, total
    from ckptlake.store.local import _RESERVED_ROOT_NAMES, TMP_PREFIX

    root = Path(url[len("file://"):])
    files = [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(TMP_PREFIX)
             and p.relative_to(root).parts[0] not in _RESERVED_ROOT_NAMES]
    return len(files), sum(p.stat().st_size for p in files)


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    root.mkdir()
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


def test_reconciles_with_the_real_listing_and_gc_frees_exactly_the_exclusive_bytes(
        lake_url: str, tmp_path: Path) -> None:
    """Real pushes (chunked big files, packed small ones, dedup inside and across artifacts),
    then: exclusive + shared + pending + orphan == chunk bytes, and the totals equal the
    server's own listing; deleting b's versions and running gc frees exactly b's exclusive
    bytes (plus the orphans); deleting a@v1 frees exactly a@v1's."""
    mib = 1 << 20
    rnd = lambda n: os.urandom(n)  # noqa: E731
    big, shared_small = rnd(3 * mib + 5), rnd(700)
    store = open_store(lake_url)
    lake = Lake(store, chunk_size=mib)
    try:
        lake.push(_tree(tmp_path / "a1", {"w.bin": big, "s.json": shared_small,
                                          "own.txt": rnd(300)}), "a/ckpt")
        lake.push(_tree(tmp_path / "a2", {"w.bin": big[:2 * mib] + rnd(mib + 5),
                                          "s.json": shared_small}), "a/ckpt")
        lake.push(_tree(tmp_path / "b1", {"w.bin": big[:mib] + rnd(9000),
                                          "x.bin": rnd(mib + 17)}), "b/ckpt")
        orphan = rnd(12345)
        store.put(layout.chunk_key(hashlib.sha256(orphan).hexdigest()), orphan)
        r = lake.du(versions=True, price=0.023)
        t = r.lake_totals
        assert t.exclusive_bytes + t.shared_bytes + t.pending_bytes + t.orphan_bytes == \
            t.chunk_bytes
        assert (t.objects, t.total_bytes) == _raw_listing(store)
        assert t.orphan_bytes == 12345 and t.pending_bytes == 0 and t.missing_chunks == 0
        assert t.shared_bytes == mib  # the first MiB of w.bin: in a and in b
        got = {a.artifact: a for a in r.artifacts}
        a_versions = {v.version: v for v in got["a/ckpt"].versions}
        for row in [*r.artifacts, *a_versions.values()]:
            assert row.stored_bytes == row.exclusive_bytes + row.shared_bytes
        no_rules = RetentionPolicy(rules=(), grace_period=0, sweep_window=30,
                                   record_retention=60)

        from test_gc_mutants import unwrite  # (a manifest deleted alone: a lost version)

        unwrite(store, "a/ckpt", 1)
        freed = execute(store, plan_gc(store, no_rules)).bytes_swept
        assert freed == a_versions[1].exclusive_bytes + 12345
        unwrite(store, "b/ckpt", 1)
        freed = execute(store, plan_gc(store, no_rules)).bytes_swept
        assert freed == got["b/ckpt"].exclusive_bytes > 0
    finally:
        lake.close()


# ---- the CLI -------------------------------------------------------------------------------

def cli(*args: Any) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_cli_json_table_sort_versions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ckptlake.yaml").write_text(
        "lake: ./lake\nretention:\n  storage_price_per_gb_month: 1000\n")
    built(open_store(str(tmp_path / "lake")))
    r = cli("du", "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["storage_price_per_gb_month"] == 1000
    a = doc["artifacts"][0]
    assert a["artifact"] == "a/ckpt" and "versions" not in a
    assert {k: a[k] for k in KEYS} == dict(zip(KEYS, (1640, 5230, 5200, 30)))
    assert a["exclusive_usd_month"] == round(5200 / 2**30 * 1000, 4)
    totals = doc["lake_totals"]
    assert totals["orphan_bytes"] == 600000 and totals["pending_bytes"] == 70000
    doc = json.loads(cli("du", "--versions", "--sort", "name", "--json", "a/").stdout)
    assert [x["artifact"] for x in doc["artifacts"]] == ["a/ckpt"]
    assert [(v["version"], v["exclusive_bytes"]) for v in doc["artifacts"][0]["versions"]] == \
        [(1, 1000), (2, 4000)]
    r = cli("du", "--versions")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert lines[0].split()[:4] == ["ARTIFACT", "VERSIONS", "LOGICAL", "STORED"]
    assert lines[1].startswith("a/ckpt ") and lines[2].lstrip().startswith("@v2")
    assert "orphans 585.9 KiB (1; gc collects them)" in r.stdout
    r = cli("du", "--sort", "size")
    assert r.exit_code == 2 and "stored, exclusive, logical, name" in r.stderr
    r = cli("du", "zzz/")
    assert r.exit_code == 0 and "no artifacts starting with 'zzz/'" in r.stderr


def test_an_unreadable_manifest_is_an_integrity_error(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Its chunks would be counted as orphans or as someone else's exclusive bytes: du says so
    (exit 5) instead of printing wrong numbers."""
    monkeypatch.chdir(tmp_path)
    store = open_store(str(tmp_path / "lake"))
    built(store)
    store.put(layout.version_key("b/ckpt", 2), b"not json")
    r = cli("du", "--lake", tmp_path / "lake")
    assert r.exit_code == 5
    assert "du cannot read artifacts/b/ckpt/@v/0000000002.json" in r.stderr


def test_chunks_shared_with_a_pending_step_are_not_called_shared_between_artifacts(
        tmp_path: Path) -> None:
    """One artifact and a pending sharded step of it holding v1's bytes: du said "shared
    between artifacts" of a lake with one artifact."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(os.urandom(4096))
    url = (tmp_path / "lake").as_uri()
    runner = CliRunner()
    assert runner.invoke(app, ["--lake", url, "push", str(src), "r/sh"]).exit_code == 0
    r = runner.invoke(app, ["--lake", url, "push", str(src), "r/sh", "--step", "100",
                            "--shard", "0/2"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["--lake", url, "du"])
    assert r.exit_code == 0, r.output
    assert "shared (between artifacts, or with a pending sharded step) 4.00 KiB" in r.stdout
    assert "only in pending sharded steps 0 B" in r.stdout
