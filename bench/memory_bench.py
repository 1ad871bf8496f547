"""Peak RSS of `ckptlake push` and `pull` of one big file, to show it does not grow with the size.

    python3 bench/memory_bench.py                      # 4 GiB and 20 GiB
    python3 bench/memory_bench.py --sizes 1GiB,4GiB    # a quick look

Issue 3: "peak RSS of any push or pull <= 300 MiB with default settings, independent of file
size (a 4 GiB file and a 20 GiB file use the same)".  For each size: write a file of random
bytes, push it to a fresh bucket on a throw-away SeaweedFS (bench/server.py), delete the source
(so the disk holds at most two copies), pull it back, check its SHA-256, and report wall time and
peak RSS of both commands (bench/run.py's measure(): wait4 plus a sampled process-tree RSS).
Needs ~2.1x the largest size free under bench/.work.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

import run
from datasets import sha256_file
from server import SeaweedFS
from tools import CkptLake

MiB, GiB = 1 << 20, 1 << 30


def parse_size(text: str) -> int:
    units = {"MIB": MiB, "GIB": GiB}
    for suffix, mult in units.items():
        if text.upper().endswith(suffix):
            return int(float(text[:-len(suffix)]) * mult)
    return int(text)


def write_random(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(16 * MiB, left))
            f.write(block)
            h.update(block)
            left -= len(block)
    return h.hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="4GiB,20GiB", help="comma-separated, e.g. 4GiB,20GiB")
    args = ap.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",")]
    work = run.WORK / "memory"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if shutil.disk_usage(work).free < max(sizes) * 2.1:
        sys.exit(f"need {max(sizes) * 2.1 / GiB:.1f} GiB free under {work}")
    run.ensure_venv(with_ckptlake=True)
    server = SeaweedFS(run.VENV / "bin" / "weed", run.WORK)
    rows = []
    try:
        server.start()
        env = run.tool_env(server.endpoint)
        ck = CkptLake(run.VENV / "bin", server.endpoint)
        for size in sizes:
            name = f"mem{size // MiB}m"
            src, dest = work / name, work / f"{name}-dl"
            src.mkdir()
            digest = write_random(src / "blob.bin", size)
            server.create_bucket(name)
            try:
                up = run.measure(ck.upload(src, name, name), env, work / f"{name}-up",
                                 server.proc.pid)
                shutil.rmtree(src)
                dest.mkdir()
                down = run.measure(ck.download(name, name, dest), env, work / f"{name}-down",
                                   server.proc.pid)
                ok = (up["status"] == down["status"] == "ok"
                      and sha256_file(dest / "blob.bin") == digest)
            finally:
                shutil.rmtree(src, ignore_errors=True)
                shutil.rmtree(dest, ignore_errors=True)
                server.delete_bucket(name)
            rows.append((size, up, down, ok))
            print(f"{size / GiB:5.1f} GiB  push {up['wall_s']:6.1f} s  {up['rss_mib']:5.0f} MiB"
                  f"  |  pull {down['wall_s']:6.1f} s  {down['rss_mib']:5.0f} MiB  |  "
                  f"{'bit-exact' if ok else 'FAILED: ' + up['status'] + ' / ' + down['status']}",
                  flush=True)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"`python3 bench/memory_bench.py --sizes {args.sizes}`")
    print("| file | push peak RSS | pull peak RSS | push s | pull s | result |")
    print("|--:|--:|--:|--:|--:|---|")
    for size, up, down, ok in rows:
        print(f"| {size / GiB:g} GiB | {up['rss_mib']:.0f} MiB | {down['rss_mib']:.0f} MiB | "
              f"{up['wall_s']:.1f} | {down['wall_s']:.1f} | {'bit-exact' if ok else 'FAILED'} |")


if __name__ == "__main__":
    main()
