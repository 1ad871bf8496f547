"""`ckptlake du` against `ckptlake gc --dry-run` on the same big synthetic lake (issue 17).

    python bench/du_bench.py                  # 10,000 versions / 200,000 chunks (gc_bench's lake)
    python bench/du_bench.py --versions 1000 --chunks 20000 --reps 3
    python bench/du_bench.py --endpoint http://127.0.0.1:8333 --lake s3://b/prefix  # built before

Builds the lake exactly as bench/gc_bench.py does (unless --lake names one already built), then
runs `du --json` and `gc --dry-run --json` as subprocesses, interleaved (alternating which goes
first), --reps times each, and prints each run and the medians (seconds, CPU seconds and peak
RSS of the child).  It also checks du's totals
against a listing of the lake (exclusive + shared + pending + orphan == chunk bytes) and
measures du's Python heap per chunk in the library (tracemalloc).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import gc_bench  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--versions", type=int, default=10_000)
    ap.add_argument("--chunks", type=int, default=200_000)
    ap.add_argument("--artifacts", type=int, default=20)
    ap.add_argument("--workers", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--endpoint", help="use this S3 endpoint instead of starting SeaweedFS")
    ap.add_argument("--bucket", default="dubench")
    ap.add_argument("--lake", help="a lake built before (with --endpoint): skip building")
    args = ap.parse_args()

    from ckptlake.store import open_store

    server = None
    workdir = Path(tempfile.mkdtemp(prefix="ckptlake-du-bench-"))
    env = {**os.environ, "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "bench"),
           "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "bench"),
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_DEFAULT_REGION", "AWS_EC2_METADATA_DISABLED")})
    try:
        if args.endpoint is None:
            from server import SeaweedFS

            server = SeaweedFS(Path(sys.executable).parent / "weed", workdir / "server").start()
            endpoint = server.endpoint
            server.create_bucket(args.bucket)
        else:
            endpoint = args.endpoint
        lake = args.lake or f"s3://{args.bucket}/du-bench-{int(time.time())}"
        store = open_store(lake, endpoint_url=endpoint, max_connections=args.workers + 4)
        if args.lake is None:
            print(f"building {args.versions} versions / {args.chunks} chunks in {lake} ...",
                  flush=True)
            print(f"  built: {gc_bench.build(store, versions=args.versions, chunks=args.chunks, artifacts=args.artifacts, workers=args.workers)}",  # noqa: E501
                  flush=True)
        cfg = workdir / "ckptlake.yaml"
        cfg.write_text(gc_bench.POLICY.format(lake=lake, endpoint=endpoint, grace="24h"))
        runs: dict[str, list[tuple[float, int, float]]] = {"du": [], "gc --dry-run": []}
        doc = None
        for rep in range(args.reps):
            order = (("du", ["du", "--json"]), ("gc --dry-run", ["gc", "--dry-run", "--json"]))
            for name, argv in order if rep % 2 == 0 else order[::-1]:
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                seconds, rss, out = gc_bench.timed_cli([*argv, "--config", str(cfg)], env,
                                                       workdir)
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                runs[name].append((seconds, rss, cpu))
                if name == "du":
                    doc = json.loads(out)
                print(f"rep {rep + 1}: ckptlake {name}: {seconds:.1f} s, CPU {cpu:.1f} s, "
                      f"peak RSS {rss} MiB", flush=True)
        for name, got in runs.items():
            print(f"median ckptlake {name}: {statistics.median(s for s, _, _ in got):.1f} s, "
                  f"CPU {statistics.median(c for _, _, c in got):.1f} s, peak RSS "
                  f"{statistics.median(r for _, r, _ in got):.0f} MiB "
                  f"(runs: {', '.join(f'{s:.1f}' for s, _, _ in got)})", flush=True)
        assert doc is not None
        t = doc["lake_totals"]
        listed = [(o.key, o.size) for o in store.list("chunks/")]
        assert t["chunk_objects"] == len(listed) and t["chunk_bytes"] == sum(s for _, s in listed)
        assert t["exclusive_bytes"] + t["shared_bytes"] + t["pending_bytes"] + \
            t["orphan_bytes"] == t["chunk_bytes"]
        print(f"du totals reconcile with the listing: {t['chunk_objects']} chunks, "
              f"{t['orphan_objects']} orphans, {t['versions']} versions", flush=True)

        import tracemalloc

        from ckptlake.core.du import disk_usage

        tracemalloc.start()
        disk_usage(store, versions=True)
        heap = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        print(f"library: Python heap peak of du --versions {heap / 2**20:.1f} MiB "
              f"({heap / t['chunk_objects']:.0f} bytes per chunk)", flush=True)
        store.close()
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
