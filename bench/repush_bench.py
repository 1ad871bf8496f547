"""What a push costs when every chunk is already in the lake (a Checkpointer saving unchanged
state, a CI job pushing the same model again): no chunk bytes move, only requests.

Since stop 29 a reused object smaller than its chunk (a compressed frame) is trusted only after
one 16-byte ranged GET of its head (core/push.py `_frame_of`: a raw chunk cut short by damage
was taken for a frame).  This measures that cost against another tree, interleaved, on a
SeaweedFS this script starts (and stops):

    git archive 0d0b4ea ckptlake | tar -x -C /tmp/base
    python bench/repush_bench.py --base /tmp/base --reps 5

Each round re-pushes SIZE MiB of float32 weights (compressible: stored as frames) with the
current tree and with --base, in a fresh process each (start-up excluded: the time is the
`lake.push` call's).  Prints medians and every repetition.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from server import scratch_server  # noqa: E402

BUCKET = "repush"
PUSH = r"""
import json, sys, time
import ckptlake
url, src, endpoint = sys.argv[1:4]
with ckptlake.open(url, endpoint_url=endpoint) as lake:
    t = time.perf_counter()
    r = lake.push(src, "r/p", compression="auto")
    print(json.dumps({"seconds": time.perf_counter() - t, "uploaded": r.chunks_uploaded,
                      "chunks": r.chunks_deduplicated, "tree": ckptlake.__file__}))
"""


def push(tree: Path, url: str, src: Path, endpoint: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "AWS_ACCESS_KEY_ID": "bench",
           "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}
    out = subprocess.run([sys.executable, "-c", PUSH, url, str(src), endpoint], env=env,
                         capture_output=True, text=True, check=True, cwd="/")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    import numpy as np

    ap = argparse.ArgumentParser()
    ap.add_argument("--base", type=Path, required=True, help="a tree holding ckptlake/")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--size-mib", type=int, default=512)
    args = ap.parse_args()
    with scratch_server(ROOT, "repush-", BUCKET) as (scratch, weed):
        src = scratch / "src"
        src.mkdir()
        rng = np.random.default_rng(0)
        for i in range(max(1, args.size_mib // 128)):
            np.save(src / f"w{i}.npy",
                    (rng.standard_normal(32 << 20) * 0.02).astype(np.float32))
        url = f"s3://{BUCKET}/lake"
        first = push(ROOT, url, src, weed.endpoint)
        times: dict[str, list[float]] = {"current": [], "base": []}
        for _ in range(args.reps):
            for name, tree in (("current", ROOT), ("base", args.base)):
                r = push(tree, url, src, weed.endpoint)
                assert r["uploaded"] == 0, r
                times[name].append(r["seconds"])
        print(f"re-push of {args.size_mib} MiB ({first['uploaded']} chunks, all reused), "
              f"{args.reps} interleaved reps")
        for name, ts in times.items():
            print(f"  {name:8s} median {statistics.median(ts):.3f} s  "
                  f"all {[round(t, 3) for t in ts]}")


if __name__ == "__main__":
    main()
