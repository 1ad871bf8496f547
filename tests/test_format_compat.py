"""Format evolution (issue 13, item 5): a lake written before chunk encodings existed keeps
working with this code (read, push, gc, diff), stays readable by the code that wrote it, and
that old code fails safely (exit 5, nothing placed) on a chunk stored encoded.

The fixture lake (tests/data/lake-format1.tar.gz) was written by commit 1089132 (main before
chunk encodings) with tests/data/make_format1_lake.py; the old code itself is taken from git
history for the cross-version checks.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ckptlake
from ckptlake.cli.app import app
from ckptlake.core.gc import execute, plan_gc
from ckptlake.format import layout
from ckptlake.policy.retention import RetentionPolicy, Rule

sys.path.insert(0, str(Path(__file__).parent / "data"))
from make_format1_lake import sources  # noqa: E402

DATA = Path(__file__).parent / "data"
OLD_COMMIT = "1089132"
ART = "run/ckpt"


def cli(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def old_lake(tmp_path: Path) -> str:
    with tarfile.open(DATA / "lake-format1.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    return f"file://{tmp_path / 'lake'}"


@pytest.fixture(scope="module")
def old_code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ckptlake of commit OLD_COMMIT, unpacked from this checkout's history."""
    root = Path(__file__).resolve().parent.parent
    out = tmp_path_factory.mktemp("old-ckptlake")
    try:
        archive = subprocess.run(["git", "-C", str(root), "archive", OLD_COMMIT, "ckptlake"],
                                 capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"git history with {OLD_COMMIT} is not available")
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def run_old(old_code: Path, *args: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(old_code), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "ckptlake", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=120, cwd=old_code)


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def write(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_new_code_reads_an_old_lake(old_lake: str, tmp_path: Path) -> None:
    lake = ckptlake.open(old_lake)
    raw = json.loads(lake.store.get(layout.HEADER_KEY))
    assert "compression" not in raw  # written before the setting existed
    for v in (1, 2):
        lake.pull(f"{ART}@v{v}", tmp_path / f"v{v}")
        assert tree(tmp_path / f"v{v}") == sources(v)
    assert b"".join(lake.cat(f"{ART}@best", "cfg/b.txt")) == b"version 1\n"
    with lake.open(ART, "big.log") as fh:
        fh.seek((1 << 20) + 5)
        assert fh.read(4) == b"XXXX"
    d = lake.diff(f"{ART}@v1", f"{ART}@v2")
    assert sorted(f["path"] for f in d.files["modified"]) == ["big.log", "cfg/b.txt"]
    r = cli("verify", "--lake", old_lake, "--read-data", "--json")
    assert r.exit_code == 0, r.stdout
    r = cli("show", f"{ART}@v2", "--lake", old_lake, "--json")
    doc = json.loads(r.stdout)
    assert doc["stored_bytes"] <= doc["total_bytes"]


def test_new_code_writes_an_old_lake_raw_and_old_code_still_reads_it(
        old_lake: str, old_code: Path, tmp_path: Path) -> None:
    lake = ckptlake.open(old_lake)
    header = lake.store.get(layout.HEADER_KEY)
    assert json.loads(header)["hash"] == "sha256"
    files = {**sources(2), "cfg/b.txt": b"version 3\n"}
    r = lake.push(write(tmp_path / "src3", files), ART, step=300)
    assert r.version == 3 and r.compression == "none"  # the old header means none
    m = json.loads(lake.store.get(layout.version_key(ART, 3)))
    assert "stored" not in m and m["ckptlake_manifest"] == 1
    # new lakes are BLAKE3 lakes; this one keeps its SHA-256, so v2's chunks are reused
    assert m["hash"] == "sha256" and r.chunks_deduplicated > 0
    assert lake.store.get(layout.HEADER_KEY) == header
    # the code that made the lake reads what the new code wrote
    old = run_old(old_code, "pull", f"{ART}@v3", tmp_path / "old3", "--lake", old_lake)
    assert old.returncode == 0, old.stderr
    assert tree(tmp_path / "old3") == files
    # gc by the new code: keep the latest only (v1 stays: aliased)
    policy = RetentionPolicy(rules=(Rule(match="*", keep_last=1, index=0),), grace_period=0,
                             sweep_window=30, record_retention=60)
    plan = plan_gc(lake.store, policy)
    assert [d.version for a in plan.artifacts for d in a.delete] == [2]
    execute(lake.store, plan)
    assert [v.version for v in lake.versions(ART)] == [1, 3]
    lake.pull(f"{ART}@v1", tmp_path / "v1")
    assert tree(tmp_path / "v1") == sources(1)
    old = run_old(old_code, "verify", "--read-data", "--lake", old_lake)
    assert old.returncode == 0, old.stdout + old.stderr


def test_old_code_fails_safely_on_a_compressed_chunk(old_lake: str, old_code: Path,
                                                     tmp_path: Path) -> None:
    """An old ckptlake does not know frames: it reads one as the chunk's bytes, their digest
    does not match, and it stops with exit 5 without placing anything."""
    lake = ckptlake.open(old_lake)
    files = {"log.txt": b"".join(b"line %d of a log\n" % i for i in range(100_000))}
    r = lake.push(write(tmp_path / "src", files), "logs", compression="auto")
    assert r.bytes_stored < r.bytes_scanned and r.ratio < 0.5
    lake.pull("logs", tmp_path / "new")
    assert tree(tmp_path / "new") == files
    old = run_old(old_code, "pull", "logs", tmp_path / "old", "--lake", old_lake)
    assert old.returncode == 5, old.stderr
    assert "corrupt" in old.stderr and not (tmp_path / "old").exists()
    # its verify calls the frame a chunk of the wrong size: a problem, exit 5
    old = run_old(old_code, "verify", "--lake", old_lake)
    assert old.returncode == 5, old.stdout + old.stderr
    # the old code pushing the same bytes stores them raw over the frame: both are valid
    old = run_old(old_code, "push", tmp_path / "src", "logs2", "--lake", old_lake)
    assert old.returncode == 0, old.stderr
    lake.pull("logs@v1", tmp_path / "again")
    assert tree(tmp_path / "again") == files
