"""gc --dry-run over a big synthetic lake on SeaweedFS (not a test; issue 4's scale check).

    python bench/gc_bench.py                       # 10,000 versions / 200,000 chunks
    python bench/gc_bench.py --versions 1000 --chunks 20000   # a quick look
    python bench/gc_bench.py --endpoint http://127.0.0.1:8333 --bucket b   # an existing server

It starts a throw-away SeaweedFS (bench/server.py) unless --endpoint is given, builds the lake
with direct store writes -- small synthetic chunks (64 bytes: the object count is what matters
to gc, not the bytes) and manifests that reference them, each version sharing half its chunks
with the previous one, plus 5% unreferenced chunks (a crashed push's leftovers) -- then times:

* `ckptlake gc --dry-run --json` as a subprocess (what an operator runs), with its peak RSS;
* the same plan through the library, split into its phases (manifests, the full listing).

Building is the slow part (one PUT per object); it prints its progress.  With --execute it also
times a real `gc --yes` run (grace_period 0s) afterwards.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

POLICY = """\
lake: {lake}
endpoint_url: {endpoint}
retention:
  grace_period: {grace}
  rules:
    - match: "bench/*/ckpt"
      keep_last: 50
      keep_every_steps: 10000
      keep_best: {{metric: val_loss, mode: min, count: 5}}
"""


def build(store, *, versions: int, chunks: int, artifacts: int, workers: int) -> dict:
    from ckptlake.format import layout
    from ckptlake.core.lakeheader import ensure_header
    from ckptlake.format.manifest import ChunkRef, FileEntry, Manifest

    ensure_header(store, hash="sha256")  # the manifests below name sha256
    rng = random.Random(1)
    garbage = chunks // 20
    referenced = chunks - garbage
    digests: list[str] = []
    t0 = time.monotonic()

    def put_chunk(i: int) -> str:
        data = i.to_bytes(8, "big") + rng.randbytes(56)
        d = hashlib.sha256(data).hexdigest()
        store.put(layout.chunk_key(d), data)
        return d

    with ThreadPoolExecutor(workers) as pool:
        for n, d in enumerate(pool.map(put_chunk, range(chunks), chunksize=64), 1):
            digests.append(d)
            if n % 20000 == 0:
                rate = n / (time.monotonic() - t0)
                print(f"  chunks: {n}/{chunks} ({rate:.0f}/s)", flush=True)
    chunk_seconds = time.monotonic() - t0
    # Version v of an artifact references `per` chunks: half shared with the previous version.
    per = max(2, 2 * referenced // versions)
    now = datetime.now(timezone.utc)
    t1 = time.monotonic()

    def put_manifest(v: int) -> None:
        artifact = f"bench/a{v % artifacts}/ckpt"
        number = v // artifacts + 1
        start = (v * per // 2) % referenced
        refs = [digests[(start + k) % referenced] for k in range(per)]
        files = tuple(FileEntry(path=f"shard-{k:03d}.bin", size=64,
                                chunks=(ChunkRef(d, 64),)) for k, d in enumerate(refs))
        m = Manifest(artifact=artifact, version=number, kind="dir", hash="sha256", files=files,
                     step=number * 100, created=now - timedelta(hours=versions - v),
                     metrics={"val_loss": rng.random()})
        store.put(layout.version_key(artifact, number), m.encode(), if_none_match=True)

    with ThreadPoolExecutor(workers) as pool:
        for n, _ in enumerate(pool.map(put_manifest, range(versions), chunksize=16), 1):
            if n % 2000 == 0:
                print(f"  manifests: {n}/{versions}", flush=True)
    return {"chunk_put_seconds": round(chunk_seconds, 1),
            "manifest_put_seconds": round(time.monotonic() - t1, 1),
            "chunks_per_manifest": per}


def _vm_hwm_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def timed_cli(args: list[str], env: dict, cwd: Path) -> tuple[float, int, str]:
    """(seconds, peak RSS in MiB of that very process, stdout).

    Not wait4's ru_maxrss: Linux carries the parent's high-water mark into a forked child
    across exec, and this process holds the whole synthetic lake's bookkeeping by now (it read
    429 MiB for a plain `ls`).  VmHWM belongs to the child's own address space; it only rises,
    so sampling it every 20 ms until exit misses at most the last 20 ms of growth.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t = time.monotonic()
        p = subprocess.Popen([sys.executable, "-m", "ckptlake", *args], env=env, cwd=cwd,
                             stdout=out, stderr=err, text=True)
        peak = 0
        while p.poll() is None:
            peak = max(peak, _vm_hwm_kib(p.pid))
            time.sleep(0.02)
        seconds = time.monotonic() - t
        out.seek(0)
        err.seek(0)
        if p.returncode != 0:
            raise SystemExit(f"ckptlake {' '.join(args)} failed ({p.returncode}):\n{err.read()}")
        return seconds, peak // 1024, out.read()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--versions", type=int, default=10_000)
    ap.add_argument("--chunks", type=int, default=200_000)
    ap.add_argument("--artifacts", type=int, default=20)
    ap.add_argument("--workers", type=int, default=32)
    ap.add_argument("--endpoint", help="use this S3 endpoint instead of starting SeaweedFS")
    ap.add_argument("--bucket", default="gcbench")
    ap.add_argument("--execute", action="store_true", help="also time a real gc --yes run")
    args = ap.parse_args()

    from ckptlake.store import open_store

    server = None
    workdir = Path(tempfile.mkdtemp(prefix="ckptlake-gc-bench-"))
    if args.endpoint is None:
        sys.path.insert(0, str(ROOT / "bench"))
        from server import SeaweedFS

        weed = Path(sys.executable).parent / "weed"
        server = SeaweedFS(weed, workdir / "server").start()
        endpoint = server.endpoint
        server.create_bucket(args.bucket)
    else:
        endpoint = args.endpoint
    env = {**os.environ, "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "bench"),
           "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "bench"),
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_DEFAULT_REGION", "AWS_EC2_METADATA_DISABLED")})
    lake = f"s3://{args.bucket}/gc-bench-{int(time.time())}"
    try:
        store = open_store(lake, endpoint_url=endpoint, max_connections=args.workers + 4)
        print(f"building {args.versions} versions / {args.chunks} chunks in {lake} "
              f"({endpoint}) ...", flush=True)
        built = build(store, versions=args.versions, chunks=args.chunks,
                      artifacts=args.artifacts, workers=args.workers)
        print(f"  built: {built}", flush=True)
        cfg = workdir / "ckptlake.yaml"
        cfg.write_text(POLICY.format(lake=lake, endpoint=endpoint, grace="24h"))

        _, base_rss, _ = timed_cli(["ls", "--json", "--config", str(cfg)], env, workdir)
        print(f"baseline: ckptlake ls peak RSS {base_rss} MiB", flush=True)
        seconds, rss, out = timed_cli(["gc", "--dry-run", "--json", "--config", str(cfg)], env,
                                      workdir)
        plan = json.loads(out)["plan"]
        print(f"ckptlake gc --dry-run: {seconds:.1f} s, peak RSS {rss} MiB; plan: "
              f"{plan['versions_total']} versions, {plan['versions_deleted']} to delete, "
              f"{plan['chunks']['objects']} chunks, {plan['freed_by_versions']['objects']} "
              f"freed by deletions, {plan['young_garbage']['objects']} unreferenced (younger "
              f"than the grace period)", flush=True)

        from ckptlake.core import gc as gcmod
        from ckptlake.policy.config import load_config
        from ckptlake.policy.retention import load_retention

        # Where the memory goes: glibc gives each of the worker threads its own malloc arena,
        # which inflates RSS well beyond the Python heap; two arenas show the difference.
        seconds2, rss2, _ = timed_cli(["gc", "--dry-run", "--json", "--config", str(cfg)],
                                      {**env, "MALLOC_ARENA_MAX": "2"}, workdir)
        print(f"ckptlake gc --dry-run with MALLOC_ARENA_MAX=2: {seconds2:.1f} s, peak RSS "
              f"{rss2} MiB", flush=True)

        import tracemalloc

        policy = load_retention(load_config(str(cfg)))
        t = time.monotonic()
        listing = gcmod._Listing.of(store)
        t_list = time.monotonic() - t
        tracemalloc.start()
        gcmod.plan_gc(store, policy)
        heap = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"library: Python heap peak of plan_gc {heap / 2**20:.1f} MiB "
              f"({heap / args.chunks:.0f} bytes per chunk)", flush=True)
        t = time.monotonic()
        gcmod.plan_gc(store, policy)
        t_plan = time.monotonic() - t
        t = time.monotonic()
        n = sum(1 for _ in store.list(""))
        t_full = time.monotonic() - t
        print(f"library: plan_gc {t_plan:.1f} s; listing artifacts/ ({len(listing.versions)} "
              f"manifests) {t_list:.1f} s; listing everything ({n} objects) {t_full:.1f} s",
              flush=True)
        if args.execute:
            cfg.write_text(POLICY.format(lake=lake, endpoint=endpoint, grace="0s"))
            seconds, rss, out = timed_cli(["gc", "--yes", "--json", "--config", str(cfg)], env,
                                          workdir)
            result = json.loads(out)["result"]
            print(f"ckptlake gc --yes (grace 0s): {seconds:.1f} s, peak RSS {rss} MiB; "
                  f"{len(result['versions_deleted'])} versions deleted, "
                  f"{result['chunks_swept']} chunks swept, {result['manifest_listings']} "
                  f"manifest listings", flush=True)
        store.close()
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
