"""Regional replicas (issue 16): config, pull-through, repair, fallback, replicate, gc.

Most tests run on local lakes (an in-memory origin where the bytes it serves are counted, a
file:// replica); the S3 ones put origin and replica under two prefixes of the SeaweedFS
fixture's bucket, and the race test runs pushes, pulls through the replica, replicate and gc
passes at once against it.
"""
from __future__ import annotations

import errno
import json
import os
import random
import threading
import time
from pathlib import Path

import pytest

import ckptlake
from ckptlake.core.lakeheader import read_header
from ckptlake.core.replicas import ReplicaSet, replicate, stored_chunk_ok
from ckptlake.errors import (AccessDenied, CkptlakeError, ConfigError, NotFound, TransferError,
                             UsageError)
from ckptlake.format import layout
from ckptlake.lake import Lake
from ckptlake.policy.config import load_config
from ckptlake.policy.replicas import ReplicaSpec, load_replicas
from ckptlake.policy.retention import RetentionPolicy, Rule
from ckptlake.store import open_store
from ckptlake.store.memory import MemoryStore

MiB = 1 << 20


# ---- helpers ------------------------------------------------------------------------------

def write_src(root: Path, seed: int = 0, size: int = 5 * MiB) -> Path:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "w.bin").write_bytes(rng.randbytes(size))
    (root / "config.json").write_text(json.dumps({"seed": seed}))
    return root


def same_tree(a: Path, b: Path) -> bool:
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    return files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file()) and all(
        (a / f).read_bytes() == (b / f).read_bytes() for f in files)


def chunk_bytes(store: MemoryStore) -> int:
    return sum(len(store._objects[k][0]) for k in store.keys() if k.startswith("chunks/"))


class CountingOrigin(MemoryStore):
    """An in-memory origin that counts the chunk bytes it serves (the egress)."""

    def __init__(self) -> None:
        super().__init__("origin")
        self.chunk_bytes_out = 0

    def get(self, key: str) -> bytes:
        data = super().get(key)
        if key.startswith("chunks/"):
            self.chunk_bytes_out += len(data)
        return data

    def get_range(self, key: str, start: int, length: int) -> bytes:
        data = super().get_range(key, start, length)
        if key.startswith("chunks/"):
            self.chunk_bytes_out += len(data)
        return data


def memory_lake(tmp_path: Path, *, region: str | None = "eu-west-1", replica_url: str | None = None,
                origin: MemoryStore | None = None, choice: str | None = None) -> Lake:
    spec = ReplicaSpec(name="eu", url=replica_url or (tmp_path / "eu").as_uri(),
                       region="eu-west-1")
    rs = ReplicaSet([spec], client_region=region, default=choice)
    return Lake(origin or CountingOrigin(), chunk_size=1 * MiB, replicas=rs)


def replica_chunks(tmp_path: Path) -> dict[str, bytes]:
    root = tmp_path / "eu" / "chunks"
    return {p.name: p.read_bytes() for p in root.rglob("*") if p.is_file()} \
        if root.exists() else {}


# ---- config -------------------------------------------------------------------------------

def _cfg(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "ckptlake.yaml"
    path.write_text(body)
    return path


GOOD = """lake: ./origin
replicas:
  - name: eu
    url: file:///tmp/ckptlake-test-nowhere/eu
    region: eu-west-1
    endpoint_url: null
    profile: null
  - name: ap-1
    url: s3://ckpt-ap/lakes/team
    region: ap-south-1
    endpoint_url: http://127.0.0.1:9000
"""


def test_config_in_the_issues_shape_loads(tmp_path: Path) -> None:
    specs = load_replicas(load_config(str(_cfg(tmp_path, GOOD))))
    assert [(s.name, s.region, s.endpoint_url) for s in specs] == [
        ("eu", "eu-west-1", None), ("ap-1", "ap-south-1", "http://127.0.0.1:9000")]
    assert specs[0].url == "file:///tmp/ckptlake-test-nowhere/eu"


@pytest.mark.parametrize("body, line, key, words", [
    ("  - name: eu\n    url: s3://bk/eu\n    region: eu-wst-1\n", 5, "replicas[0].region",
     "unknown region 'eu-wst-1' (did you mean eu-west-1?)"),
    ("  - name: eu\n    url: file://{origin}\n    region: eu-west-1\n", 4, "replicas[0].url",
     "is the origin lake itself"),
    ("  - name: eu\n    url: s3://bk/eu\n    region: eu-west-1\n"
     "  - name: eu2\n    url: s3://bk/eu2\n    region: eu-west-1\n", 8, "replicas[1].region",
     "a second replica in eu-west-1"),
    ("  - name: EU\n    url: s3://bk/eu\n    region: eu-west-1\n", 3, "replicas[0].name",
     "must be made of a-z, 0-9 and '-'"),
    ("  - name: eu\n    url: s3://bk/eu\n    region: eu-west-1\n"
     "  - name: eu\n    url: s3://bk/x\n    region: us-east-1\n", 6, "replicas[1].name",
     "a second replica named 'eu'"),
    ("  - name: none\n    url: s3://bk/eu\n    region: eu-west-1\n", 3, "replicas[0].name",
     "reserved"),
    ("  - name: eu\n    url: http://b/eu\n    region: eu-west-1\n", 4, "replicas[0].url",
     "must be an s3:// or file:/// URL"),
    ("  - name: eu\n    url: s3://bk/eu\n    regoin: eu-west-1\n", 5, "replicas[0].regoin",
     "unknown key"),
    ("  - name: eu\n    url: s3://bk/eu\n", 3, "replicas[0]", "needs region:"),
])
def test_config_errors_name_file_line_and_key(tmp_path: Path, body: str, line: int, key: str,
                                               words: str) -> None:
    origin = (tmp_path / "origin").as_posix()
    path = _cfg(tmp_path, "lake: ./origin\nreplicas:\n" + body.replace("{origin}", origin))
    with pytest.raises(ConfigError) as info:
        load_replicas(load_config(str(path)))
    assert info.value.line == line and info.value.key == key, str(info.value)
    assert words in str(info.value)
    assert str(info.value).startswith(f"{path}:{line}: {key}: ")


def test_a_region_the_file_declares_is_known(tmp_path: Path) -> None:
    path = _cfg(tmp_path, "egress:\n  client_region: dc-berlin\nreplicas:\n"
                          "  - {name: ber, url: 's3://bk/ber', region: dc-berlin}\n")
    assert load_replicas(load_config(str(path)))[0].region == "dc-berlin"


def test_cli_config_error_is_one_line_exit_2(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = _cfg(tmp_path, "replicas:\n  - name: eu\n    url: s3://bk/eu\n    region: mars-1\n")
    proc = subprocess.run([sys.executable, "-m", "ckptlake", "ls", "--config", str(path),
                           "--lake", str(tmp_path / "lake")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert f"{path}:4: replicas[0].region: unknown region 'mars-1'" in proc.stderr
    assert "Traceback" not in proc.stderr


# ---- pull-through -------------------------------------------------------------------------

def test_pull_through_crosses_once_per_chunk(tmp_path: Path) -> None:
    lake = memory_lake(tmp_path)
    lake.push(write_src(tmp_path / "src"), "m/a")
    origin: CountingOrigin = lake.store  # type: ignore[assignment]
    version_bytes = chunk_bytes(origin)
    results = [lake.pull("m/a", tmp_path / f"out{i}") for i in range(5)]
    for i in range(5):
        assert same_tree(tmp_path / "src", tmp_path / f"out{i}")
    # Five pulls in the replica's region: the chunks crossed from the origin once.
    assert origin.chunk_bytes_out == version_bytes
    first, *rest = [r.replica for r in results]
    assert first["bytes_pulled_through"] == version_bytes and first["bytes_from_replica"] == 0
    for r in rest:
        assert r["bytes_from_replica"] == version_bytes and r["bytes_pulled_through"] == 0
    held = replica_chunks(tmp_path)
    assert len(held) == len([k for k in origin.keys() if k.startswith("chunks/")])
    # Nothing but chunks (and, once it holds the whole version, a copy of its manifest for
    # --offline-replica) is written to a replica; each chunk holds its digest's bytes.
    algo = read_header(origin).hash  # type: ignore[union-attr]
    assert all(stored_chunk_ok(algo, d, data) for d, data in held.items())
    written = sorted(p.relative_to(tmp_path / "eu").as_posix()
                     for p in (tmp_path / "eu").rglob("*")
                     if p.is_file() and not p.relative_to(tmp_path / "eu").parts[0]
                     .startswith("."))
    assert [w for w in written if not w.startswith("chunks/")] == \
        ["artifacts/m/a/@v/0000000001.json", "ckptlake-replica.json"]


def test_manifests_and_aliases_come_from_the_origin(tmp_path: Path) -> None:
    lake = memory_lake(tmp_path)
    lake.push(write_src(tmp_path / "s1", 1), "m/a", aliases=["prod"])
    lake.pull("m/a@prod", tmp_path / "o1")
    lake.push(write_src(tmp_path / "s2", 2), "m/a")
    lake.alias("m/a@v2", "prod")  # the alias moves at the origin: the next pull follows it
    r = lake.pull("m/a@prod", tmp_path / "o2")
    assert r.version == 2 and same_tree(tmp_path / "s2", tmp_path / "o2")


def test_selection_by_region_and_override(tmp_path: Path) -> None:
    src = write_src(tmp_path / "src")
    far = memory_lake(tmp_path, region="us-east-1")
    far.push(src, "m/a")
    assert far.replica_for() is None
    assert far.pull("m/a", tmp_path / "o1").replica is None  # not in the replica's region
    assert far.pull("m/a", tmp_path / "o2", replica="eu").replica["name"] == "eu"
    near = memory_lake(tmp_path, region="eu-west-1", origin=far.store)
    assert near.replica_for().name == "eu"
    assert near.pull("m/a", tmp_path / "o3", replica="none").replica is None
    with pytest.raises(UsageError, match="no replica named 'us'"):
        near.pull("m/a", tmp_path / "o4", replica="us")
    assert not (tmp_path / "o4").exists()
    # The library's default (ckptlake.open(replica=...)) is overridden per call too.
    pinned = memory_lake(tmp_path, region=None, origin=far.store, choice="eu")
    assert pinned.replica_for().name == "eu" and pinned.replica_for("none") is None


def test_client_region_comes_from_the_egress_guard(tmp_path: Path, monkeypatch) -> None:
    cfg = _cfg(tmp_path, f"replicas:\n  - name: eu\n    url: {(tmp_path / 'eu').as_uri()}\n"
                         "    region: eu-west-1\n")
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    with ckptlake.open(str(tmp_path / "lake"), config=str(cfg)) as lake:
        assert lake.replica_for().name == "eu"
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    with ckptlake.open(str(tmp_path / "lake"), config=str(cfg)) as lake:
        assert lake.replica_for() is None
    with pytest.raises(UsageError, match="no replica named 'x'"):
        ckptlake.open(str(tmp_path / "lake"), config=str(cfg), replica="x")
    # A replica that is the lake itself is refused when chosen (the lake may come from --lake).
    with pytest.raises(UsageError, match="is the lake itself"):
        ckptlake.open(str(tmp_path / "eu"), config=str(cfg), replica="eu")


def test_cat_and_open_read_through_the_replica(tmp_path: Path) -> None:
    lake = memory_lake(tmp_path)
    src = write_src(tmp_path / "src")
    lake.push(src, "m/a")
    assert b"".join(lake.cat("m/a", "w.bin")) == (src / "w.bin").read_bytes()
    # cat of a small packed file is a ranged read: the whole pack came through once.
    assert b"".join(lake.cat("m/a", "config.json")) == (src / "config.json").read_bytes()
    origin: CountingOrigin = lake.store  # type: ignore[assignment]
    crossed = origin.chunk_bytes_out
    with lake.open("m/a", "w.bin") as fh:
        assert fh.read() == (src / "w.bin").read_bytes()
    assert b"".join(lake.cat("m/a", "config.json")) == (src / "config.json").read_bytes()
    assert origin.chunk_bytes_out == crossed  # everything is in the replica now


# ---- corruption, fallback -----------------------------------------------------------------

def test_corrupt_replica_chunk_is_detected_refetched_and_replaced(tmp_path: Path) -> None:
    lake = memory_lake(tmp_path)
    src = write_src(tmp_path / "src")
    lake.push(src, "m/a")
    lake.pull("m/a", tmp_path / "o1")
    victim = sorted(p for p in (tmp_path / "eu" / "chunks").rglob("*") if p.is_file())[-1]
    good = victim.read_bytes()
    victim.write_bytes(b"\0" * len(good))  # same size, wrong bytes
    r = lake.pull("m/a", tmp_path / "o2")
    assert same_tree(src, tmp_path / "o2")
    assert r.replica["chunks_repaired"] == 1
    assert victim.read_bytes() == good  # replaced by verified origin bytes
    # What a cut upload leaves on some servers, in a chunk of w.bin (read whole) and in the
    # pack holding config.json (a ranged read): both found from the manifest.
    files = {f.path: f for f in lake._manifest("m/a").files}
    pack = files["config.json"].chunks[0]
    assert pack.offset is not None
    cut = {tmp_path / "eu" / layout.chunk_key(d)
           for d in (files["w.bin"].chunks[-1].digest, pack.digest)}
    goods = {p: p.read_bytes() for p in cut}
    assert len(goods) == 2 and all(goods.values())
    for p in cut:
        p.write_bytes(b"")
    for path in ("w.bin", "config.json"):  # whole-chunk reads, and a ranged read of a pack
        assert b"".join(lake.cat("m/a", path)) == (src / path).read_bytes()
    assert {p: p.read_bytes() for p in cut} == goods


def test_corrupt_origin_chunk_is_never_written_into_the_replica(tmp_path: Path) -> None:
    from ckptlake.errors import IntegrityError

    lake = memory_lake(tmp_path)
    lake.push(write_src(tmp_path / "src"), "m/a")
    origin: MemoryStore = lake.store  # type: ignore[assignment]
    key = [k for k in origin.keys() if k.startswith("chunks/")][0]
    origin.corrupt(key, b"x" * len(origin._objects[key][0]))
    with pytest.raises(IntegrityError):
        lake.pull("m/a", tmp_path / "o1")
    assert key.rsplit("/", 1)[1] not in replica_chunks(tmp_path)


def test_unreachable_replica_falls_back_with_one_warning(tmp_path: Path, monkeypatch) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = ReplicaSpec(name="eu", url="s3://nowhere/eu", region="eu-west-1",
                       endpoint_url=f"http://127.0.0.1:{port}")
    lake = Lake(CountingOrigin(), chunk_size=1 * MiB,
                replicas=ReplicaSet([spec], client_region="eu-west-1", connect_timeout=1.0))
    src = write_src(tmp_path / "src")
    lake.push(src, "m/a")
    r = lake.pull("m/a", tmp_path / "o1")
    assert same_tree(src, tmp_path / "o1")
    replica_warnings = [w for w in r.warnings if "replica eu" in w]
    assert len(replica_warnings) == 1 and "cannot be read" in replica_warnings[0]
    assert r.replica["replica_down"] and r.replica["bytes_from_origin"] == r.bytes_downloaded


class RefusingReplica(MemoryStore):
    def put(self, key, data, **kw):  # type: ignore[override]
        raise AccessDenied(f"{self.url}/{key}: write refused")


def test_replica_refusing_writes_serves_from_origin_with_one_warning(tmp_path: Path,
                                                                     monkeypatch) -> None:
    refusing = RefusingReplica("eu")
    monkeypatch.setattr(ReplicaSet, "open_store", lambda self, spec: refusing)
    lake = memory_lake(tmp_path)
    src = write_src(tmp_path / "src")
    lake.push(src, "m/a")
    r = lake.pull("m/a", tmp_path / "o1")
    assert same_tree(src, tmp_path / "o1")
    assert len([w for w in r.warnings if "refused a write" in w]) == 1
    assert r.replica["writes_off"] and r.replica["bytes_from_origin"] == r.bytes_downloaded


# ---- replicate ----------------------------------------------------------------------------

class FailingAfter(MemoryStore):
    """A replica that accepts `n` chunk writes, then refuses (a replicate cut short)."""

    def __init__(self, n: int) -> None:
        super().__init__("eu")
        self.left = n

    def put(self, key, data, **kw):  # type: ignore[override]
        if key.startswith("chunks/"):
            if self.left <= 0:
                from ckptlake.errors import TransientError

                raise TransferError(f"{self.url}/{key}: connection reset")
            self.left -= 1
        return super().put(key, data, **kw)


@pytest.mark.parametrize("err, code, hint", [
    (errno.ENOSPC, 2, "free some space on the device holding it; what was stored already is "
                      "not sent again; run it again"),
    (errno.ELOOP, 2, "a symbolic link on the way to it leads back to itself: fix the link; run"),
    (errno.EROFS, 4, "its file system is mounted read-only; run it again"),
    (errno.EACCES, 4, "check the directory's permissions; run it again")])
def test_replicate_into_a_replica_that_refuses_writes(tmp_path: Path, monkeypatch,
                                                       err: int, code: int, hint: str) -> None:
    """A full, looping, read-only or forbidden local replica: the store's error was rewrapped
    as a plain TransferError (exit 8), its hint (about "the lake" and "a push") nested in the
    replicate one."""
    from ckptlake.store import local

    write_temp = local.LocalStore._write_temp

    def refuse(self, directory, chunks, **kw):  # type: ignore[no-untyped-def]
        if str(tmp_path / "eu") in str(directory):
            raise OSError(err, os.strerror(err))
        return write_temp(self, directory, chunks, **kw)

    lake = memory_lake(tmp_path)
    lake.push(write_src(tmp_path / "src", size=2 * MiB), "m/a")
    monkeypatch.setattr(local.LocalStore, "_write_temp", refuse)
    with pytest.raises(CkptlakeError) as caught:
        lake.replicate("m/a", "eu")
    text = str(caught.value)
    assert caught.value.exit_code == code and hint in text, text
    assert "the lake" not in text and "push" not in text and text.count("(") == 2, text


def test_replicate_is_resumable_and_copies_only_what_is_missing(tmp_path: Path,
                                                               monkeypatch) -> None:
    replica = FailingAfter(3)
    monkeypatch.setattr(ReplicaSet, "open_store", lambda self, spec: replica)
    lake = memory_lake(tmp_path)
    lake.push(write_src(tmp_path / "src", size=8 * MiB), "m/a")
    with pytest.raises(TransferError, match="run it again"):
        lake.replicate("m/a", "eu")
    copied = {k for k in replica.keys() if k.startswith("chunks/")}
    assert copied and len(copied) <= 3
    replica.left = 10**6
    r = lake.replicate("m/a", "eu")
    assert r.chunks_present == len(copied) and r.chunks_copied == r.chunks - len(copied)
    assert r.bytes_copied == r.bytes - r.bytes_present
    assert chunk_bytes(replica) == r.bytes  # what it copied, and what was there, no more
    again = lake.replicate("m/a", "eu")
    assert again.chunks_copied == 0 and again.chunks_present == again.chunks
    # A pull in the region now crosses nothing.
    origin: CountingOrigin = lake.store  # type: ignore[assignment]
    before = origin.chunk_bytes_out
    lake.pull("m/a", tmp_path / "o1")
    assert origin.chunk_bytes_out == before


def test_replicate_verify_replaces_a_bad_copy(tmp_path: Path) -> None:
    lake = memory_lake(tmp_path)
    lake.push(write_src(tmp_path / "src"), "m/a")
    lake.replicate("m/a", "eu")
    victim = sorted(p for p in (tmp_path / "eu" / "chunks").rglob("*") if p.is_file())[0]
    good = victim.read_bytes()
    victim.write_bytes(bytes(len(good)))
    assert lake.replicate("m/a", "eu").chunks_repaired == 0  # same size: not noticed
    r = lake.replicate("m/a", "eu", verify=True)
    assert r.chunks_repaired == 1 and victim.read_bytes() == good
    with pytest.raises(UsageError, match="no replica named 'none'"):
        lake.replicate("m/a", "none")


def test_replicate_cli_json(tmp_path: Path) -> None:
    import subprocess
    import sys

    cfg = _cfg(tmp_path, f"lake: ./origin\nreplicas:\n  - name: eu\n    url: "
                         f"{(tmp_path / 'eu').as_uri()}\n    region: eu-west-1\n")
    src = write_src(tmp_path / "src")
    env = {**os.environ, "CKPTLAKE_CONFIG": str(cfg)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ckptlake", *args], capture_output=True,
                              text=True, env=env, cwd=tmp_path)

    assert run("push", str(src), "m/a", "-q").returncode == 0
    doc = json.loads(run("replicate", "m/a", "--to", "eu", "--json").stdout)
    assert doc["chunks_copied"] == doc["chunks"] > 0 and doc["replica"] == "eu"
    doc = json.loads(run("replicate", "m/a@v1", "--to", "eu", "--json").stdout)
    assert doc["chunks_copied"] == 0 and doc["chunks_present"] == doc["chunks"]
    bad = run("replicate", "m/a", "--to", "mars")
    assert bad.returncode == 2 and "no replica named 'mars'" in bad.stderr
    pulled = run("pull", "m/a", str(tmp_path / "o"), "--replica", "eu", "--json")
    assert json.loads(pulled.stdout)["replica"]["bytes_from_replica"] > 0


# ---- gc -----------------------------------------------------------------------------------

POLICY = RetentionPolicy(rules=(Rule(match="m/*", keep_last=1),), grace_period=0,
                         sweep_window=5, record_retention=10)


def test_gc_deleted_version_is_never_served_and_its_chunks_leave_the_replica(
        tmp_path: Path) -> None:
    lake = memory_lake(tmp_path)
    lake.push(write_src(tmp_path / "s1", 1), "m/a")
    lake.push(write_src(tmp_path / "s2", 2), "m/a")
    lake.replicate("m/a@v1", "eu")
    lake.replicate("m/a@v2", "eu")
    v1_only = set(replica_chunks(tmp_path))
    lake.pull("m/a@v1", tmp_path / "o1")
    result = lake.gc(lake.gc_plan(POLICY))
    assert result.versions_deleted == ["m/a@v1"]
    [swept] = result.replicas
    assert swept["replica"] == "eu" and swept["chunks_swept"] > 0
    origin_chunks = {k.rsplit("/", 1)[1] for k in lake.store.keys() if k.startswith("chunks/")}
    assert set(replica_chunks(tmp_path)) == origin_chunks  # exactly the live version's
    assert v1_only - origin_chunks  # something was v1's alone, and it is gone
    # The replica never serves v1 again, whatever it holds: the origin says it is deleted.
    with pytest.raises(NotFound, match="deleted by gc"):
        lake.pull("m/a@v1", tmp_path / "o2")
    with pytest.raises(NotFound):
        b"".join(lake.cat("m/a@v1", "w.bin"))
    assert not (tmp_path / "o2").exists()


def test_gc_of_an_unreachable_replica_is_a_warning(tmp_path: Path) -> None:
    spec = ReplicaSpec(name="eu", url="s3://nowhere/eu", region="eu-west-1",
                       endpoint_url="http://127.0.0.1:1")
    lake = Lake(MemoryStore(), chunk_size=1 * MiB,
                replicas=ReplicaSet([spec], connect_timeout=1.0))
    lake.push(write_src(tmp_path / "s1", 1), "m/a")
    lake.push(write_src(tmp_path / "s2", 2), "m/a")
    result = lake.gc(lake.gc_plan(POLICY))
    assert result.versions_deleted == ["m/a@v1"] and result.chunks_swept > 0
    assert any("replica eu" in w and "not swept" in w for w in result.warnings)


def test_replica_sweep_waits_for_grace_and_spares_referenced_chunks(tmp_path: Path) -> None:
    """The replica gets gc's two-phase protocol: condemned in one run (records in the
    replica), swept a grace period later -- and a chunk referenced again by then survives."""
    from ckptlake.core.gc_guard import GcSettings
    from ckptlake.core.replicas import gc_replica
    from datetime import datetime, timedelta, timezone

    lake = memory_lake(tmp_path)
    lake.push(write_src(tmp_path / "s1", 1), "m/a")
    lake.replicate("m/a", "eu")
    replica = open_store((tmp_path / "eu").as_uri())
    stray = b"not referenced by anything"
    from ckptlake.format.header import digest

    d = digest(read_header(lake.store).hash, stray)  # type: ignore[union-attr]
    replica.put(layout.chunk_key(d), stray)
    t0 = datetime.now(timezone.utc)
    settings = GcSettings(grace_period=3600, sweep_window=5, record_retention=10)
    spec = lake.replicas.specs[0]  # type: ignore[union-attr]
    first = gc_replica(lake.store, replica, spec, settings, now=lambda: t0 + timedelta(hours=2))
    assert first["chunks_condemned"] == 1 and first["chunks_swept"] == 0
    assert replica.exists(layout.chunk_key(d))
    # A version referencing that chunk appears before the sweep: it is spared.
    (tmp_path / "s3").mkdir()
    (tmp_path / "s3" / "x").write_bytes(stray)
    lake.push(tmp_path / "s3", "m/b")
    later = gc_replica(lake.store, replica, spec, settings, now=lambda: t0 + timedelta(hours=4))
    assert later["chunks_swept"] == 0 and later["chunks_rescued"] == 1
    assert replica.exists(layout.chunk_key(d))
    replica.close()


def test_replicate_survives_a_sweep_racing_it(tmp_path: Path) -> None:
    """The race the commit guard of `replicate` closes, made deterministic: a replica sweep
    lists the origin's manifests, then a version referencing a condemned chunk is committed
    and replicated (the chunk is found present, nothing copied), then the sweep deletes the
    chunk.  `replicate` must not return before that sweep is over, and must copy the chunk
    again.  (With the guard removed, the chunk is missing when replicate returns.)"""
    from ckptlake.core.gc_guard import GcSettings
    from ckptlake.core.replicas import gc_replica
    from ckptlake.format.header import digest
    from datetime import datetime, timedelta, timezone

    lake = memory_lake(tmp_path)
    lake.push(write_src(tmp_path / "s1", 1), "m/a")
    replica = open_store((tmp_path / "eu").as_uri())
    payload = random.Random(9).randbytes(MiB)  # one chunk at chunk_size 1 MiB
    k = layout.chunk_key(digest(read_header(lake.store).hash, payload))  # type: ignore[union-attr]
    replica.put(k, payload)  # in the replica, referenced by nothing yet
    settings = GcSettings(grace_period=3600, sweep_window=4, record_retention=8)
    spec = lake.replicas.specs[0]  # type: ignore[union-attr]
    t0 = datetime.now(timezone.utc)
    assert gc_replica(lake.store, replica, spec, settings,
                      now=lambda: t0 + timedelta(hours=2))["chunks_condemned"] == 1
    (tmp_path / "s2").mkdir()
    (tmp_path / "s2" / "x.bin").write_bytes(payload)
    results: list = []

    def replicate_now() -> None:
        v = lake.push(tmp_path / "s2", "m/b")
        from ckptlake.core.catalog import load_manifest

        m = load_manifest(lake.store, v.artifact, v.version)
        results.append(replicate(lake.store, replica, m, spec=spec, lake_url=lake.url,
                                 concurrency=4, settings_override=settings))

    racer = threading.Thread(target=replicate_now)

    def after_mark(event: str) -> None:
        if event == "mark.done" and not racer.is_alive() and not results:
            racer.start()  # commits m/b after the sweep's listing, then replicates it
            time.sleep(1.0)  # ... and finds k present before the sweep deletes it

    swept = gc_replica(lake.store, replica, spec, settings, on_event=after_mark,
                       now=lambda: t0 + timedelta(hours=4))
    racer.join()
    assert swept["chunks_swept"] == 1  # the sweep did delete k: the race happened
    [r] = results
    assert r.chunks_present == r.chunks and r.chunks_recopied == 1
    assert replica.exists(k)  # the version is whole in the replica when replicate returns
    replica.close()


# ---- the egress estimate ------------------------------------------------------------------

class S3LikeOrigin(CountingOrigin):
    url = "s3://origin-bucket/lake"


def test_egress_estimate_names_where_bytes_come_from(tmp_path: Path) -> None:
    from ckptlake.policy.egress import EgressPolicy

    policy = EgressPolicy(lake_region="us-east-1", client_region="eu-west-1")
    origin = S3LikeOrigin()
    origin.url = "s3://origin-bucket/lake"
    lake = memory_lake(tmp_path, origin=origin)
    lake.push(write_src(tmp_path / "s1", 1, size=6 * MiB), "m/a")
    lake.pull("m/a", tmp_path / "o1")  # the replica now holds v1's chunks
    lake.push(write_src(tmp_path / "s2", 2, size=6 * MiB), "m/a")
    est = lake.estimate_pull("m/a@v1", tmp_path / "new1", egress=policy)
    [rep, org] = est.sources
    assert rep["source"] == "replica eu" and rep["bytes"] == est.bytes_to_download
    assert rep["route"] == "same_region" and rep["cost_usd"] == 0
    assert org["bytes"] == 0 and est.cost_usd == 0
    est2 = lake.estimate_pull("m/a@v2", tmp_path / "new2", egress=policy)
    rep2, org2 = est2.sources
    assert org2["bytes"] > 0 and org2["route"] == "inter_region" and org2["region"] == "us-east-1"
    assert est2.cost_usd == pytest.approx(org2["cost_usd"]) and est2.cost_usd > 0
    text = est2.sources_text()
    assert "from replica eu (eu-west-1), $0.00" in text and "through from us-east-1" in text
    plain = lake.estimate_pull("m/a@v2", tmp_path / "new2", egress=policy, replica="none")
    assert plain.sources == [] and plain.cost_usd >= est2.cost_usd
    # a replica copy cut short is not counted as held: the pull fetches it from the origin
    copy = sorted(p for p in (tmp_path / "eu" / "chunks").rglob("*") if p.is_file())[0]
    copy.write_bytes(copy.read_bytes()[:100])
    est3 = lake.estimate_pull("m/a@v1", tmp_path / "new1", egress=policy)
    rep3, org3 = est3.sources
    assert org3["bytes"] == origin.stat(layout.chunk_key(copy.name)).size > 100
    assert rep3["bytes"] == est3.bytes_to_download - org3["bytes"] and est3.cost_usd > 0


# ---- S3 (SeaweedFS): origin and replica under two prefixes --------------------------------

@pytest.fixture
def s3_pair(s3_lake_url: str, tmp_path: Path):
    replica_url = s3_lake_url + "-eu"
    spec = ReplicaSpec(name="eu", url=replica_url, region="eu-west-1")
    origin = open_store(s3_lake_url)
    lake = Lake(origin, chunk_size=1 * MiB,
                replicas=ReplicaSet([spec], client_region="eu-west-1"))
    try:
        yield lake, open_store(replica_url)
    finally:
        lake.close()


@pytest.mark.seaweedfs
def test_s3_pull_through_repair_and_gc(s3_pair, tmp_path: Path) -> None:
    lake, replica = s3_pair
    src = write_src(tmp_path / "s1", 1)
    lake.push(src, "m/a")
    first = lake.pull("m/a", tmp_path / "o1")
    second = lake.pull("m/a", tmp_path / "o2")
    assert same_tree(src, tmp_path / "o1") and same_tree(src, tmp_path / "o2")
    assert first.replica["bytes_pulled_through"] == second.replica["bytes_from_replica"] > 0
    keys = [i.key for i in replica.list("chunks/")]
    replica.put(keys[0], b"garbage")
    third = lake.pull("m/a", tmp_path / "o3")
    assert third.replica["chunks_repaired"] == 1 and same_tree(src, tmp_path / "o3")
    lake.push(write_src(tmp_path / "s2", 2), "m/a")
    lake.replicate("m/a@v2", "eu")
    result = lake.gc(lake.gc_plan(POLICY))
    assert result.versions_deleted == ["m/a@v1"] and result.replicas[0]["chunks_swept"] > 0
    live = {i.key for i in lake.store.list("chunks/")}
    assert {i.key for i in replica.list("chunks/")} == live
    with pytest.raises(NotFound, match="deleted by gc"):
        lake.pull("m/a@v1", tmp_path / "o4")
    replica.delete([i.key for i in replica.list("")])
    replica.close()


RACE_SECONDS = 15.0


class SlowDeletes:
    """The replica as gc's sweep sees it: each delete takes 0.8 s to land (a slow request,
    still within sweep_window), which widens the window where a version committed after the
    sweep's listing loses a chunk it shares with a condemned one -- the race the commit guard
    of `replicate` closes (without it this test fails)."""

    def __init__(self, store) -> None:
        self.store = store

    def delete(self, keys) -> None:
        keys = list(keys)
        time.sleep(0.8)
        self.store.delete(keys)

    def __getattr__(self, name: str):
        return getattr(self.store, name)


@pytest.mark.seaweedfs
def test_race_pushes_pulls_replicate_and_gc(s3_pair, tmp_path: Path) -> None:
    """Pushers, pullers through the replica, replicate and gc passes (lake and replica) at
    once.  Afterwards: every pull returned the version's exact bytes or "not found" (never a
    deleted version's bytes from the replica), every live version that `replicate` finished
    is whole in the replica, and a last gc leaves the replica holding only live chunks."""
    from ckptlake.core import catalog
    from ckptlake.core.gc import execute, plan_gc
    from ckptlake.core.gc_guard import GcSettings
    from ckptlake.core.replicas import gc_replica
    from ckptlake.core.summary import committed

    lake, replica = s3_pair
    policy = RetentionPolicy(rules=(Rule(match="race/*", keep_last=2),), grace_period=0,
                             sweep_window=2, record_retention=4)
    settings = GcSettings(grace_period=0, sweep_window=2, record_retention=4)
    spec = lake.replicas.specs[0]  # type: ignore[union-attr]
    rng = random.Random(5)
    base = rng.randbytes(2 * MiB)  # shared by every source: chunks that keep coming back
    sources = []
    # Each pusher draws from 3 sources of its own: with keep_last=2 its sources' own chunks
    # go unreferenced, get condemned and swept, and come back with its next push of them.
    for i in range(6):
        d = tmp_path / f"src{i}"
        d.mkdir()
        (d / "base.bin").write_bytes(base)
        (d / "own.bin").write_bytes(rng.randbytes(MiB))
        sources.append(d)
    contents = {}  # (artifact, version) -> source index
    replicated: list[tuple[str, int]] = []
    errors: list[str] = []
    stop = time.monotonic() + RACE_SECONDS
    lock = threading.Lock()

    def pusher(who: int) -> None:
        r = random.Random(who)
        while time.monotonic() < stop:
            i = 3 * who + r.randrange(3)
            res = lake.push(sources[i], f"race/p{who}")
            with lock:
                contents[(res.artifact, res.version)] = i
            try:
                lake.replicate(res.ref, "eu")
            except NotFound:
                continue  # deleted by gc already (keep_last=2 and a fast pusher)
            with lock:
                replicated.append((res.artifact, res.version))
            # Right away: every chunk is in the replica -- unless gc deleted the version
            # meanwhile (looked at after the chunks, so a live answer covers them).
            m = catalog.load_manifest(lake.store, res.artifact, res.version)
            lost = [c.digest for f in m.files for c in f.chunks
                    if not replica.exists(layout.chunk_key(c.digest))]
            if lost and res.version in committed(lake.store, res.artifact):
                errors.append(f"{res.ref} was replicated but lost {len(lost)} chunks")

    def puller(who: int) -> None:
        r = random.Random(100 + who)
        n = 0
        while time.monotonic() < stop:
            with lock:
                known = list(contents.items())
            if not known:
                time.sleep(0.05)
                continue
            (artifact, version), i = r.choice(known)
            dest = tmp_path / f"pull{who}-{n}"
            n += 1
            try:
                lake.pull(f"{artifact}@v{version}", dest)
            except NotFound:
                continue
            if not same_tree(sources[i], dest):
                errors.append(f"{artifact}@v{version} pulled wrong bytes")

    def collector() -> None:
        while time.monotonic() < stop:
            execute(lake.store, plan_gc(lake.store, policy))
            gc_replica(lake.store, SlowDeletes(replica), spec, settings)

    threads = [threading.Thread(target=pusher, args=(w,)) for w in range(2)] + \
        [threading.Thread(target=puller, args=(w,)) for w in range(2)] + \
        [threading.Thread(target=collector) for _ in range(2)]
    failures: list[BaseException] = []

    def wrap(t: threading.Thread) -> threading.Thread:
        target = t._target  # type: ignore[attr-defined]

        def run(*a: object) -> None:
            try:
                target(*a)
            except BaseException as exc:  # noqa: BLE001 -- reported below
                failures.append(exc)
        t._target = run  # type: ignore[attr-defined]
        return t

    for t in threads:
        wrap(t).start()
    for t in threads:
        t.join()
    assert not failures, failures
    assert not errors, errors
    assert len(replicated) >= 4, "the race did too little to prove anything"
    live = {(a, n) for a in {a for a, _ in contents} for n in committed(lake.store, a)}
    held = {i.key for i in replica.list("chunks/")}
    for artifact, version in replicated:
        if (artifact, version) not in live:
            continue
        m = catalog.load_manifest(lake.store, artifact, version)
        missing = {layout.chunk_key(c.digest) for f in m.files for c in f.chunks} - held
        assert not missing, f"{artifact}@v{version} was replicated but lost {len(missing)}"
    gc_replica(lake.store, replica, spec, settings)
    referenced = set()
    for artifact, version in live:
        m = catalog.load_manifest(lake.store, artifact, version)
        referenced |= {layout.chunk_key(c.digest) for f in m.files for c in f.chunks}
    assert {i.key for i in replica.list("chunks/")} <= referenced
    replica.delete([i.key for i in replica.list("")])
    replica.close()


# ---- --offline-replica --------------------------------------------------------------------

class FlakyOrigin(CountingOrigin):
    """An origin that can be taken off the network."""

    down = False

    def _check(self) -> None:
        if self.down:
            raise TransferError(f"{self.url}: failed after 5 attempts; last error: "
                                "connection refused")

    def get(self, key: str) -> bytes:
        self._check()
        return super().get(key)

    def get_range(self, key: str, start: int, length: int) -> bytes:
        self._check()
        return super().get_range(key, start, length)

    def stat(self, key: str):  # type: ignore[no-untyped-def]
        self._check()
        return super().stat(key)

    def list(self, prefix: str = "", *, start_after: str | None = None):  # type: ignore[no-untyped-def]
        self._check()
        return super().list(prefix, start_after=start_after)


def test_offline_replica_serves_what_the_replica_holds_and_says_so(tmp_path: Path) -> None:
    origin = FlakyOrigin()
    lake = memory_lake(tmp_path, origin=origin)
    s1, s2 = write_src(tmp_path / "s1", 1), write_src(tmp_path / "s2", 2)
    lake.push(s1, "m/a", aliases=["prod"])
    lake.pull("m/a", tmp_path / "o1")  # whole, through the replica: v1 is servable offline
    lake.push(s2, "m/a")  # never pulled in this region
    origin.down = True
    with pytest.raises(TransferError):
        lake.pull("m/a", tmp_path / "o2")  # without the flag, an unreachable lake fails
    r = lake.pull("m/a", tmp_path / "o3", offline_replica=True)
    assert r.version == 1 and same_tree(s1, tmp_path / "o3")
    assert "cannot be reached" in r.warnings[0] and "--offline-replica" in r.warnings[0]
    assert r.replica["offline"] is True
    # it may exist at the unreachable lake: a transfer failure (exit 8), not "not found"
    with pytest.raises(TransferError, match="holds no copy of m/a@v2"):
        lake.pull("m/a@v2", tmp_path / "o4", offline_replica=True)
    with pytest.raises(TransferError, match="aliases live only there"):
        lake.pull("m/a@prod", tmp_path / "o5", offline_replica=True)
    origin.down = False
    # Online again: the origin is the truth (latest is v2), and gc's deletions reach the
    # replica's manifest copies too.
    assert lake.pull("m/a", tmp_path / "o6").version == 2
    lake.alias("m/a@v2", "prod")  # else the alias keeps v1
    result = lake.gc(lake.gc_plan(POLICY))
    assert "m/a@v1" in result.versions_deleted
    assert result.replicas[0]["manifests_dropped"] == 1
    origin.down = True
    r = lake.pull("m/a", tmp_path / "o7", offline_replica=True)
    assert r.version == 2  # v1's copy went with gc; v2 was pulled whole through the replica


def test_offline_replica_with_no_replica_for_this_region_says_so(tmp_path: Path) -> None:
    """The lake down, a replica configured for another region, no --replica: the pull failed
    as if --offline-replica had not been given, without a word on why it served nothing."""
    origin = FlakyOrigin()
    lake = memory_lake(tmp_path, region="us-east-1", origin=origin)
    lake.push(write_src(tmp_path / "s1", 1), "m/a")
    lake.pull("m/a", tmp_path / "o1", replica="eu")
    origin.down = True
    with pytest.raises(TransferError) as err:
        lake.pull("m/a", tmp_path / "o2", offline_replica=True)
    assert "--offline-replica found no replica in this client's region (us-east-1); name " \
        "one with --replica eu" in str(err.value), str(err.value)
    with pytest.raises(TransferError) as err:
        lake.pull("m/a", tmp_path / "o2", offline_replica=True, replica="none")
    assert "nothing to fall back on with --replica none" in str(err.value), str(err.value)
    with pytest.raises(TransferError) as err:
        lake.pull("m/a", tmp_path / "o2")
    assert "--offline-replica" not in str(err.value)
    assert lake.pull("m/a", tmp_path / "o3", offline_replica=True, replica="eu").version == 1


# ---- two SeaweedFS servers: the replica in a "region" of its own --------------------------

@pytest.fixture(scope="module")
def seaweedfs_eu(tmp_path_factory: pytest.TempPathFactory, seaweedfs):  # type: ignore[no-untyped-def]
    """A second SeaweedFS server (the replica's region), started like the session's (bound to
    127.0.0.1) and stopped by its PID; tests may stop it early to cut the replica off."""
    import subprocess

    from conftest import _free_ports, _stop, _wait_ready, _weed_binary

    weed = _weed_binary()
    base = tmp_path_factory.mktemp("seaweedfs-eu")
    (base / "data").mkdir()
    log_path = base / "weed.log"
    s3, master, volume, filer = _free_ports(4)
    cmd = [str(weed), f"-logdir={base}", "server", "-s3", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           f"-s3.port={s3}", f"-master.port={master}", f"-volume.port={volume}",
           f"-filer.port={filer}", f"-dir={base / 'data'}", "-volume.max=0",
           "-master.volumeSizeLimitMB=256", "-master.telemetry=false",
           "-s3.port.iceberg=0", "-s3.port.lance=0", "-volume.preStopSeconds=0",
           f"-master.port.grpc={master + 10000}", f"-volume.port.grpc={volume + 10000}",
           f"-filer.port.grpc={filer + 10000}", f"-s3.port.grpc={s3 + 10000}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=base, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    endpoint = f"http://127.0.0.1:{s3}"
    try:
        _wait_ready(proc, endpoint, log_path)
        yield endpoint, proc
    finally:
        _stop(proc)


@pytest.mark.seaweedfs
def test_two_servers_pull_through_then_the_replica_dies(seaweedfs_eu, s3_lake_url: str,
                                                         tmp_path: Path) -> None:
    """Origin on the session's server, replica on a second one: pull-through fills the second
    server; then it is stopped, and the next pull reads the origin with exactly one warning
    (the estimate prices every byte from the origin), and gc's replica sweep is a warning."""
    from conftest import SEAWEED_BUCKET, _stop, unique_prefix
    from ckptlake.policy.egress import EgressPolicy

    endpoint, proc = seaweedfs_eu
    spec = ReplicaSpec(name="eu", url=f"s3://{SEAWEED_BUCKET}/{unique_prefix()}",
                       region="eu-west-1", endpoint_url=endpoint)
    lake = Lake(open_store(s3_lake_url), chunk_size=1 * MiB,
                replicas=ReplicaSet([spec], client_region="eu-west-1", connect_timeout=2.0))
    replica = open_store(spec.url, endpoint_url=endpoint)
    try:
        src = write_src(tmp_path / "s1", 1)
        lake.push(src, "m/a")
        first = lake.pull("m/a", tmp_path / "o1")
        second = lake.pull("m/a", tmp_path / "o2")
        assert same_tree(src, tmp_path / "o2")
        assert second.replica["bytes_from_replica"] == first.replica["bytes_pulled_through"] > 0
        held = {i.key for i in replica.list("chunks/")}
        assert held == {i.key for i in lake.store.list("chunks/")}
        policy = EgressPolicy(lake_region="us-east-1", client_region="eu-west-1")
        est = lake.estimate_pull("m/a", tmp_path / "new", egress=policy)
        assert est.sources[0]["bytes"] == est.bytes_to_download and est.cost_usd == 0
        _stop(proc)  # the replica's region goes dark
        est = lake.estimate_pull("m/a", tmp_path / "new", egress=policy)
        assert est.sources[1]["bytes"] == est.bytes_to_download and est.cost_usd > 0
        third = lake.pull("m/a", tmp_path / "o3")
        assert same_tree(src, tmp_path / "o3")
        assert len([w for w in third.warnings if "replica eu" in w]) == 1
        assert third.replica["bytes_from_origin"] == third.bytes_downloaded
        lake.push(write_src(tmp_path / "s2", 2), "m/a")
        result = lake.gc(lake.gc_plan(POLICY))
        assert result.versions_deleted == ["m/a@v1"]
        assert any("replica eu" in w and "not swept" in w for w in result.warnings)
    finally:
        replica.close()
        lake.close()


def test_cli_offline_replica_when_the_lake_is_unreachable(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    replica_url = (tmp_path / "eu").as_uri()
    cfg = _cfg(tmp_path, f"replicas:\n  - name: eu\n    url: {replica_url}\n"
                         "    region: eu-west-1\n")
    src = write_src(tmp_path / "src")
    env = {**os.environ, "CKPTLAKE_CONFIG": str(cfg)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "ckptlake", *args], capture_output=True,
                              text=True, env=env, cwd=tmp_path, timeout=120)

    local = str(tmp_path / "lake")
    assert run("push", str(src), "m/a", "--lake", local, "-q").returncode == 0
    assert run("pull", "m/a", str(tmp_path / "o1"), "--lake", local, "--replica", "eu",
               "-q").returncode == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = ["--lake", "s3://bk/lake", "--endpoint-url", f"http://127.0.0.1:{port}"]
    down = run("pull", "m/a", str(tmp_path / "o2"), *dead, "--replica", "eu")
    assert down.returncode == 8, down.stderr  # storage unreachable, not some other failure
    assert not (tmp_path / "o2").exists()
    # the replica is bound to the lake at `local`: another URL's offline pull is refused...
    refused = run("pull", "m/a", str(tmp_path / "o3"), *dead, "--replica", "eu",
                  "--offline-replica")
    assert refused.returncode == 2 and "belongs to another lake" in refused.stderr
    # ...so the unreachable lake stands in for it by the marker's origin
    marker = tmp_path / "eu" / "ckptlake-replica.json"
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "origin": "s3://bk/lake"}))
    offline = run("pull", "m/a", str(tmp_path / "o3"), *dead, "--replica", "eu",
                  "--offline-replica", "--json")
    assert offline.returncode == 0, offline.stderr
    doc = json.loads(offline.stdout)
    assert doc["version"] == 1 and doc["replica"]["offline"] is True
    assert "cannot be reached" in doc["warnings"][0]
    assert "served m/a@v1 from replica eu" in doc["warnings"][0]
    assert same_tree(src, tmp_path / "o3")


def test_manifest_copied_only_when_the_replica_holds_the_whole_version(tmp_path: Path) -> None:
    lake = memory_lake(tmp_path)
    src = write_src(tmp_path / "src")
    lake.push(src, "m/a")
    lake.pull("m/a", tmp_path / "o1", replica="none")
    lake.pull("m/a", tmp_path / "o1")  # everything already at the destination: nothing fetched
    lake.pull("m/a", tmp_path / "o2", paths=["config.json"])  # part of the version
    assert not (tmp_path / "eu" / "artifacts").exists()
    lake.pull("m/a", tmp_path / "o3")
    assert (tmp_path / "eu" / "artifacts" / "m" / "a" / "@v" / "0000000001.json").is_file()
