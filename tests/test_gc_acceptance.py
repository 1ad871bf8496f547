"""Issue 4's acceptance list, end to end through the CLI as a subprocess, against SeaweedFS.

30 checkpoint versions (steps 1000..30000, a val_loss metric, one aliased version, one
preemption save without val_loss), pushed one "day" apart (the manifests' `created` is set
back, as a month of training would have left it), and the policy from the issue (grace_period
0s so that one run also sweeps).
"""
from __future__ import annotations

import json
import random
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ckptlake.errors import EXIT_NOT_FOUND, EXIT_OK, EXIT_POLICY
from ckptlake.format import layout
from ckptlake.lake import Lake
from ckptlake.store import open_store

pytestmark = pytest.mark.seaweedfs

MiB = 1 << 20
ART = "gpt2/run-7/ckpt"
ALIASED = 12
# keep_last 5 -> v26..v30; keep_every_steps 10000 -> v10, v20, v30; keep_best val_loss min 2 ->
# v7, v15; keep_missing -> v3 (no val_loss); keep_within 7d -> v24..v30; alias prod -> v12.
KEPT = {3, 7, 10, 12, 15, 20, 24, 25, 26, 27, 28, 29, 30}
DELETED = set(range(1, 31)) - KEPT

CONFIG = """\
lake: {lake}
chunk_size: 1MiB
retention:
  grace_period: 0s
  storage_price_per_gb_month: 0.023
  rules:
    - match: "*/*/ckpt"
      keep_last: 5
      keep_every_steps: 10000
      keep_best: {{metric: val_loss, mode: min, count: 2}}
      keep_within: 7d
    - match: "*/*/model"
      keep_all: true
egress:
  lake_region: us-east-1
  client_region: eu-west-1
  price_per_gb: {{same_region: 0.0, inter_region: 1000.0, internet: 2000.0}}
  warn_above_usd: 1.00
  confirm_above_usd: {confirm}
"""


def run(env: dict, cwd: Path, *args: str, check: int | None = EXIT_OK
        ) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "ckptlake", *args], env=env, cwd=cwd,
                       capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    if check is not None:
        assert p.returncode == check, f"exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return p


def bucket_objects(seaweedfs, prefix: str) -> dict[str, tuple[int, str]]:
    s3 = seaweedfs.client()
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=seaweedfs.bucket, Prefix=prefix)
    return {o["Key"]: (o["Size"], o["ETag"]) for page in pages for o in page.get("Contents", [])}


def chunk_bytes(objects: dict[str, tuple[int, str]], prefix: str) -> int:
    return sum(size for key, (size, _) in objects.items() if key.startswith(prefix + "chunks/"))


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("acceptance")
    rng = random.Random(4)
    shared = rng.randbytes(MiB)
    out = {}
    for n in range(1, 31):
        src = root / f"step_{n * 1000}"
        src.mkdir()
        (src / "shared.bin").write_bytes(shared)  # one chunk every version shares
        (src / "own.bin").write_bytes(rng.randbytes(MiB + n))  # 2 chunks of its own
        (src / "meta.json").write_text(json.dumps({"step": n * 1000, "pad": "x" * n}))
        out[n] = src
    return out


def val_loss(n: int) -> float | None:
    if n == 3:
        return None  # a preemption save
    return {7: 1.0, 15: 1.5}.get(n, 3.0 + n / 10)


def test_gc_acceptance(seaweedfs, s3_lake_url: str, trees: dict[int, Path],
                       tmp_path: Path) -> None:
    env = seaweedfs.env
    cfg = tmp_path / "ckptlake.yaml"
    cfg.write_text(CONFIG.format(lake=s3_lake_url, confirm=25.0))
    prefix = s3_lake_url.split("/", 3)[3] + "/"

    # 30 versions, pushed with the library (setup), then dated one day apart.
    lake = Lake(open_store(s3_lake_url), chunk_size=MiB)
    for n, src in trees.items():
        loss = val_loss(n)
        lake.push(src, ART, step=n * 1000, metrics={} if loss is None else {"val_loss": loss})
    lake.alias(f"{ART}@v{ALIASED}", "prod")
    s3 = seaweedfs.client()
    now = datetime.now(timezone.utc)
    for n in trees:
        key = prefix + layout.version_key(ART, n)
        doc = json.loads(s3.get_object(Bucket=seaweedfs.bucket, Key=key)["Body"].read())
        doc["created"] = (now - timedelta(days=30 - n, hours=1)).isoformat().replace(
            "+00:00", "Z")
        s3.put_object(Bucket=seaweedfs.bucket, Key=key, Body=json.dumps(doc).encode())
    lake.close()
    # What deleting exactly DELETED frees: the chunks only those versions reference.
    expected_freed = sum((MiB + n) + len((trees[n] / "meta.json").read_bytes()) for n in DELETED)

    # The dry run lists exactly the expected versions and changes nothing.
    before = bucket_objects(seaweedfs, prefix)
    dry = run(env, tmp_path, "gc", "--dry-run", "--config", str(cfg))
    for n in DELETED:
        assert f"\n  v{n} " in dry.stdout, f"v{n} missing from the plan"
    assert f"{ART}: delete {len(DELETED)} of 30 versions under rules[0]" in dry.stdout
    plan = json.loads(run(env, tmp_path, "gc", "--dry-run", "--json", "--config",
                          str(cfg)).stdout)["plan"]
    [ap] = plan["artifacts"]
    assert {v["version"] for v in ap["delete"]} == DELETED
    assert {v["version"] for v in ap["kept"]} == KEPT
    assert plan["bytes_freed"] == plan["bytes_freed_now"] == expected_freed
    assert all(v["age_seconds"] > 7 * 86400 and v["step"] and v["total_bytes"] > 2 * MiB
               and v["reason"] for v in ap["delete"])
    assert bucket_objects(seaweedfs, prefix) == before

    # Without --yes, in a script: refused, nothing changed.
    refused = run(env, tmp_path, "gc", "--config", str(cfg), check=EXIT_POLICY)
    assert "--yes" in refused.stderr
    assert bucket_objects(seaweedfs, prefix) == before

    # The real run deletes exactly those versions and frees the predicted bytes.
    done = json.loads(run(env, tmp_path, "gc", "--yes", "--json", "--config", str(cfg)).stdout)
    assert {int(r.rsplit("@v", 1)[1]) for r in done["result"]["versions_deleted"]} == DELETED
    after = bucket_objects(seaweedfs, prefix)
    assert chunk_bytes(before, prefix) - chunk_bytes(after, prefix) == expected_freed
    assert done["result"]["bytes_swept"] == expected_freed

    # Every survivor pulls bit-exact (the aliased one included); deleted ones say why.
    listing = json.loads(run(env, tmp_path, "ls", ART, "--json", "--config", str(cfg)).stdout)
    assert {v["version"] for v in listing["versions"]} == KEPT
    pulls = {}
    for n in sorted(KEPT):  # concurrently: ~0.6 s of interpreter start-up each
        ref = f"{ART}@prod" if n == ALIASED else f"{ART}@v{n}"
        pulls[n] = subprocess.Popen(
            [sys.executable, "-m", "ckptlake", "pull", ref, str(tmp_path / "restore" / str(n)),
             "--yes", "--config", str(cfg), "-q"], env=env, cwd=tmp_path,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for n, proc in pulls.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"pull v{n}: {err}"
        for f in trees[n].iterdir():
            got = (tmp_path / "restore" / str(n) / f.name).read_bytes()
            assert got == f.read_bytes(), f"v{n}/{f.name}"
    gone = run(env, tmp_path, "pull", f"{ART}@v1", str(tmp_path / "gone"), "--config", str(cfg),
               check=EXIT_NOT_FOUND)
    assert "was deleted by gc on" in gone.stderr and "rules[0] (match '*/*/ckpt')" in gone.stderr

    # Tombstones show in ls --all.
    full = json.loads(run(env, tmp_path, "ls", ART, "--all", "--json", "--config",
                          str(cfg)).stdout)
    assert {t["version"] for t in full["expired"]} == DELETED
    assert all(t["state"] == "expired" and t["rule"].startswith("rules[0]")
               for t in full["expired"])
    table = run(env, tmp_path, "ls", ART, "--all", "--config", str(cfg)).stdout
    assert sum(" expired " in line for line in table.splitlines()) == len(DELETED)

    # A second run has nothing left to do.
    again = json.loads(run(env, tmp_path, "gc", "--dry-run", "--json", "--config",
                           str(cfg)).stdout)["plan"]
    assert again["versions_deleted"] == 0 and again["bytes_freed"] == 0


def test_egress_guard_warns_refuses_and_proceeds(seaweedfs, s3_lake_url: str,
                                                 trees: dict[int, Path], tmp_path: Path) -> None:
    env = seaweedfs.env
    lake = Lake(open_store(s3_lake_url), chunk_size=MiB)
    lake.push(trees[1], "e/run/ckpt", step=1000)
    lake.close()
    # ~2 MiB inter-region at $1000/GB: about $1.95 -- above the warning (1.00).
    warn_cfg = tmp_path / "warn.yaml"
    warn_cfg.write_text(CONFIG.format(lake=s3_lake_url, confirm=25.0))
    strict_cfg = tmp_path / "strict.yaml"
    strict_cfg.write_text(CONFIG.format(lake=s3_lake_url, confirm=1.5))

    est = json.loads(run(env, tmp_path, "pull", "e/run/ckpt", str(tmp_path / "x"), "--estimate",
                         "--json", "--config", str(strict_cfg)).stdout)
    assert est["route"] == "inter_region" and est["lake_region"] == "us-east-1"
    assert est["client_region"] == "eu-west-1" and est["needs_confirmation"] is True
    assert est["bytes_to_download"] == est["bytes_total"] and 1.9 < est["cost_usd"] < 2.0
    assert not (tmp_path / "x").exists()

    warned = run(env, tmp_path, "pull", "e/run/ckpt", str(tmp_path / "w"), "--config",
                 str(warn_cfg))
    [line] = [ln for ln in warned.stderr.splitlines() if "warning" in ln]
    assert "egress" in line and "inter-region" in line and "$1.9" in line
    assert (tmp_path / "w" / "own.bin").read_bytes() == (trees[1] / "own.bin").read_bytes()

    refused = run(env, tmp_path, "pull", "e/run/ckpt", str(tmp_path / "r"), "--config",
                  str(strict_cfg), check=EXIT_POLICY)
    assert "confirm_above_usd" in refused.stderr and "--yes" in refused.stderr
    assert not (tmp_path / "r").exists() and not any(
        p.name.startswith(".r.") for p in tmp_path.iterdir()), "nothing downloaded or staged"

    run(env, tmp_path, "pull", "e/run/ckpt", str(tmp_path / "r"), "--yes", "--config",
        str(strict_cfg))
    assert (tmp_path / "r" / "own.bin").read_bytes() == (trees[1] / "own.bin").read_bytes()
    # Already there: nothing to download, so no confirmation needed.
    again = json.loads(run(env, tmp_path, "pull", "e/run/ckpt", str(tmp_path / "r"),
                           "--estimate", "--json", "--config", str(strict_cfg)).stdout)
    assert again["bytes_to_download"] == 0 and again["needs_confirmation"] is False
