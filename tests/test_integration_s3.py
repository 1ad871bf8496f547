"""The lake-core acceptance list, end to end through the CLI as a subprocess, against SeaweedFS."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ckptlake.errors import EXIT_INTEGRITY, EXIT_OK
from ckptlake.format import layout

MiB = 1024 * 1024
pytestmark = pytest.mark.seaweedfs


def run(env: dict, *args: str, check: int | None = EXIT_OK, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "ckptlake", *args], env=env, capture_output=True,
                       text=True, timeout=600, **kw)
    if check is not None:
        assert p.returncode == check, f"exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return p


def tree_digest(root: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = (p.stat().st_size, __import__("hashlib").sha256(p.read_bytes())
                            .hexdigest(), os.access(p, os.X_OK))
    return out


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("big") / "ckpt"
    rnd = random.Random(42)
    (root / "shards" / "nested" / "deeper").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    with open(root / "model.bin", "wb") as f:
        for _ in range(200):  # 200 MiB, written in pieces to keep memory low
            f.write(rnd.randbytes(MiB))
    for i in range(500):
        sub = root / "shards" / ("nested/deeper" if i % 3 == 0 else "nested" if i % 3 else "")
        (sub / f"part-{i:04d}.json").write_bytes(rnd.randbytes(rnd.randint(0, 16384)))
    (root / "empty.bin").write_bytes(b"")
    (root / "shards" / "nested" / "日本語-ü.txt").write_text("unicode")
    (root / "train.sh").write_text("#!/bin/sh\n")
    (root / "train.sh").chmod(0o755)
    os.symlink("model.bin", root / "latest")
    return root


def test_round_trip_and_dedup(seaweedfs, s3_lake_url, big_tree, tmp_path) -> None:
    env, lake = seaweedfs.env, ["--lake", s3_lake_url]
    first = json.loads(run(env, "push", str(big_tree), "p/r/ckpt", "--step", "1", *lake,
                           "--json").stdout)
    assert first["version"] == 1 and first["bytes_uploaded"] == first["bytes_scanned"]
    out = tmp_path / "restore"
    pulled = json.loads(run(env, "pull", "p/r/ckpt", str(out), *lake, "--json").stdout)
    assert pulled["version"] == 1
    assert tree_digest(out) == tree_digest(big_tree)
    again = json.loads(run(env, "push", str(big_tree), "p/r/ckpt", "--step", "2", *lake,
                           "--json").stdout)
    assert again["version"] == 2 and again["bytes_uploaded"] == 0
    assert again["bytes_deduplicated"] == again["bytes_scanned"]


def test_eight_concurrent_pushers_all_commit(seaweedfs, s3_lake_url, tmp_path) -> None:
    procs = []
    for i in range(8):
        src = tmp_path / f"src{i}"
        src.mkdir()
        (src / "weights.bin").write_bytes(os.urandom(256 * 1024) + bytes([i]))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "ckptlake", "push", str(src), "race/ckpt", "--step", str(i),
             "--lake", s3_lake_url, "--json"], env=seaweedfs.env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    versions = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        versions.append(json.loads(out)["version"])
    assert sorted(versions) == list(range(1, 9))
    listing = json.loads(run(seaweedfs.env, "ls", "race/ckpt", "--lake", s3_lake_url,
                             "--json").stdout)
    assert sorted(v["step"] for v in listing["versions"]) == list(range(8))


def _version_keys(seaweedfs, prefix: str) -> list[str]:
    s3 = seaweedfs.client()
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=seaweedfs.bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", []) if "/@v/" in o["Key"]]


def test_killed_push_leaves_no_version_and_rerun_resumes(seaweedfs, s3_lake_url,
                                                         tmp_path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "big.bin", "wb") as f:
        for _ in range(160):
            f.write(os.urandom(MiB))
    prefix = s3_lake_url.split("/", 3)[3] + "/"
    s3 = seaweedfs.client()
    p = subprocess.Popen([sys.executable, "-m", "ckptlake", "push", str(src), "kill/ckpt",
                          "--lake", s3_lake_url, "--concurrency", "2"], env=seaweedfs.env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until some chunks are stored, then kill -9
        got = s3.list_objects_v2(Bucket=seaweedfs.bucket, Prefix=prefix + "chunks/")
        if got.get("KeyCount", 0) >= 2:
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert _version_keys(seaweedfs, prefix) == []
    r = json.loads(run(seaweedfs.env, "push", str(src), "kill/ckpt", "--lake", s3_lake_url,
                       "--json").stdout)
    assert r["version"] == 1 and r["bytes_deduplicated"] >= 2 * 16 * MiB
    assert r["bytes_uploaded"] < r["bytes_scanned"]


@pytest.mark.parametrize("evil", ["../escape.txt", "/tmp/ckptlake-abs-evil.txt", "a/../../x"])
def test_crafted_manifest_is_refused(seaweedfs, s3_lake_url, tmp_path, evil) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "ok.txt").write_text("fine")
    run(seaweedfs.env, "push", str(src), "evil/art", "--lake", s3_lake_url)
    bucket, prefix = s3_lake_url[5:].split("/", 1)
    key = f"{prefix}/{layout.version_key('evil/art', 1)}"
    s3 = seaweedfs.client()
    doc = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    doc["files"][0]["path"] = evil
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(doc).encode())
    dest = tmp_path / "dest" / "out"
    p = run(seaweedfs.env, "pull", "evil/art", str(dest), "--lake", s3_lake_url,
            check=EXIT_INTEGRITY)
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("ckptlake: error:")]
    assert "Traceback" not in p.stderr and len(errors) == 1 and "manifest" in errors[0]
    assert not dest.exists() and not (tmp_path / "dest" / "escape.txt").exists()
    assert not Path("/tmp/ckptlake-abs-evil.txt").exists()


def test_corrupted_chunk_fails_with_integrity_code(seaweedfs, s3_lake_url, tmp_path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "w.bin").write_bytes(os.urandom(3 * MiB))
    run(seaweedfs.env, "push", str(src), "corrupt/art", "--lake", s3_lake_url)
    bucket, prefix = s3_lake_url[5:].split("/", 1)
    s3 = seaweedfs.client()
    chunk = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/chunks/")["Contents"][0]["Key"]
    data = bytearray(s3.get_object(Bucket=bucket, Key=chunk)["Body"].read())
    data[100] ^= 0xFF
    s3.put_object(Bucket=bucket, Key=chunk, Body=bytes(data))
    parent = tmp_path / "dest"
    parent.mkdir()
    p = run(seaweedfs.env, "pull", "corrupt/art", str(parent / "out"), "--lake", s3_lake_url,
            check=EXIT_INTEGRITY)
    assert "corrupt" in p.stderr
    assert os.listdir(parent) == []  # neither the destination nor a staging directory
