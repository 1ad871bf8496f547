"""Load-only A/B of `ckptlake.torch.load`: the same saved file loaded by several ckptlake
checkouts (and by s3torchconnector's `S3Checkpoint` reader), interleaved, each load in a fresh
spawned process, against one SeaweedFS this script starts and stops.

Why: on a shared machine two runs of bench/torch_file_bench.py minutes apart see different
loads; here every variant of a round runs back to back on the same stored bytes, so the
comparison holds even when the absolute numbers do not.

    python bench/torch_load_ab.py --size-mib 1024 --reps 3 \\
        main=/work/main:stream branch=.:whole branch-stream=.:stream

A variant is NAME=CHECKOUT:MODE; MODE "whole" passes max_buffer=2**40 (read whole), "stream"
max_buffer=0 (or nothing, for a checkout whose load has no max_buffer).  The state is the
torch_file_bench one (float32 torch.rand), saved once per rep by the first checkout, at lake
defaults unless --compression says otherwise.  Reports per variant the median wall time and
client CPU-s per GiB of the load call, and the 1-minute load average seen.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

BUCKET = "torchloadab"


def _child(job: dict, out: str) -> None:
    os.environ.update(job["env"])
    import torch_file_bench as tfb  # (puts this checkout on sys.path: the variant's goes first)

    sys.path.insert(0, job["checkout"])

    import torch

    res: dict[str, Any] = {}
    if job["op"] == "save":
        import ckptlake
        from ckptlake.torch import save

        lake = ckptlake.open(job["url"], endpoint_url=job["endpoint"])
        opts = {"compression": job["compression"]} if job["compression"] else {}
        res["version"] = save(tfb._state(job["size_mib"], job["seed"]), lake, "ab/file",
                              **opts).version
        from s3torchconnector import S3Checkpoint, S3ClientConfig

        ckpt = S3Checkpoint(region="us-east-1",
                            s3client_config=S3ClientConfig(force_path_style=True))
        with ckpt.writer(f"s3://{BUCKET}/s3ckpt/{job['seed']}.pt") as w:
            torch.save(tfb._state(job["size_mib"], job["seed"]), w)
    elif job["mode"] == "s3checkpoint":
        from s3torchconnector import S3Checkpoint, S3ClientConfig

        ckpt = S3Checkpoint(region="us-east-1",
                            s3client_config=S3ClientConfig(force_path_style=True))

        def load() -> Any:
            with ckpt.reader(f"s3://{BUCKET}/s3ckpt/{job['seed']}.pt") as f:
                return torch.load(f, weights_only=True)

        _, res["load"] = tfb._timed(load)
    else:
        import ckptlake
        from ckptlake.torch import load as ck_load

        assert ckptlake.__file__.startswith(job["checkout"]), ckptlake.__file__
        lake = ckptlake.open(job["url"], endpoint_url=job["endpoint"])
        ref = f"ab/file@v{job['version']}"
        mb = (1 << 40) if job["mode"] == "whole" else 0

        def load() -> Any:
            try:
                return ck_load(lake, ref, max_buffer=mb)
            except TypeError:  # a checkout without max_buffer: it streams
                if job["mode"] == "whole":
                    raise
                return ck_load(lake, ref)

        got, res["load"] = tfb._timed(load)
        want = tfb._state(job["size_mib"], job["seed"])
        assert all(torch.equal(got[k], want[k]) for k in want)
    res["loadavg"] = os.getloadavg()[0]
    Path(out).write_text(json.dumps(res))
    os._exit(0)


def run(job: dict, scratch: Path) -> dict:
    out = Path(tempfile.mkdtemp(dir=scratch)) / "r.json"
    p = multiprocessing.get_context("spawn").Process(target=_child, args=(job, str(out)))
    p.start()
    p.join(1800)
    if p.exitcode != 0:
        raise SystemExit(f"{job.get('name', job['op'])} failed (exit {p.exitcode})")
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", nargs="+", help="NAME=CHECKOUT:MODE (MODE whole|stream)")
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--compression", choices=["auto", "none"], default=None)
    args = ap.parse_args()
    variants = []
    for v in args.variants:
        name, _, rest = v.partition("=")
        checkout, _, mode = rest.rpartition(":")
        if mode not in ("whole", "stream") or not checkout:
            raise SystemExit(f"bad variant {v!r}: NAME=CHECKOUT:whole|stream")
        variants.append((name, str(Path(checkout).resolve()), mode))
    from server import SeaweedFS

    scratch = Path(tempfile.mkdtemp(prefix="torchloadab-"))
    weed = SeaweedFS(Path(sys.executable).parent / "weed", scratch / "weed").start()
    try:
        weed.create_bucket(BUCKET)
        env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
               "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": weed.endpoint,
               "OMP_NUM_THREADS": "1"}
        base = {"size_mib": args.size_mib, "url": f"s3://{BUCKET}/lake",
                "endpoint": weed.endpoint, "env": env, "compression": args.compression}
        runs: dict[str, list[dict]] = {}
        for rep in range(args.reps):
            seed = rep * 10 + 1
            version = run({**base, "op": "save", "seed": seed, "checkout": variants[0][1]},
                          scratch)["version"]
            for name, checkout, mode in [*variants, ("s3checkpoint", variants[0][1],
                                                     "s3checkpoint")]:
                r = run({**base, "op": "load", "seed": seed, "version": version,
                         "checkout": checkout, "mode": mode, "name": name}, scratch)
                runs.setdefault(name, []).append(r)
                print(f"rep {rep} {name}: load {r['load']['wall']:.2f}s "
                      f"{r['load']['cpu'] / (args.size_mib / 1024):.2f} CPU-s/GiB "
                      f"(load avg {r['loadavg']:.1f})", flush=True)
        print(f"\n{args.size_mib} MiB, {args.reps} reps, medians, compression "
              f"{args.compression or 'lake default'}")
        for name, rs in runs.items():
            print(name, json.dumps({
                "load_s": round(statistics.median(r["load"]["wall"] for r in rs), 3),
                "load_cpu_per_gib": round(statistics.median(
                    r["load"]["cpu"] for r in rs) / (args.size_mib / 1024), 3),
                "loadavg": [round(r["loadavg"], 1) for r in rs]}))
    finally:
        weed.stop()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
