"""Pull of one data set from SeaweedFS with different numbers of decode slots
(`ckptlake.core.chunkio.DECODERS`), pull concurrency and numpy block size, interleaved: the
A/B behind "Decode slots" in docs/benchmarks.md.  Wall, peak RSS and CPU from /usr/bin/time.

    python3 bench/decode_slots_ab.py DATA_DIR VARIANTS [REPS=4]
    # VARIANTS: comma-separated SLOTS[xCONCURRENCY][bLOG2_BLOCK], e.g. 2,4,6,4x12,4b17
    python3 bench/decode_slots_ab.py bench/.work/data/bf16ckpt2g 2,3,4,6,8 4
"""
from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from server import scratch_server
from startup_bench import scrubbed_env

ROOT = Path(__file__).resolve().parent.parent
PY = ROOT / ".venv/bin/python"


def main() -> None:
    src, variants = sys.argv[1], sys.argv[2].split(",")
    reps = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    with scratch_server(ROOT, "slots-", "slots") as (scratch, weed):
        env = scrubbed_env(weed.endpoint, scratch)
        ck, lake = str(ROOT / ".venv/bin/ckptlake"), "s3://slots/lake"
        subprocess.run([ck, "push", src, "w/a", "--lake", lake, "--quiet"], env=env, check=True)
        subprocess.run([ck, "pull", "w/a", str(scratch / "warm"), "--lake", lake, "--quiet"],
                       env=env, check=True)
        shutil.rmtree(scratch / "warm")
        res: dict[str, list[tuple[float, float, float]]] = {v: [] for v in variants}
        for rep in range(reps):
            for v in variants if rep % 2 == 0 else variants[::-1]:
                head, _, block = v.partition("b")
                slots, _, concurrency = head.partition("x")
                code = ("import threading, ckptlake.core.chunkio as c\n"
                        f"c.DECODERS = threading.BoundedSemaphore({int(slots)})\n")
                if block:
                    code += f"import ckptlake.format.codecs as k\nk._BLOCK = 1 << {int(block)}\n"
                code += "from ckptlake.cli.main import main\nmain()"
                cmd = ["/usr/bin/time", "-f", "TIME %M %e %U %S", str(PY), "-c", code, "pull",
                       "w/a", str(scratch / "d"), "--lake", lake, "--quiet"]
                if concurrency:
                    cmd += ["--concurrency", concurrency]
                r = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if r.returncode != 0:
                    sys.exit(r.stderr)
                f = [x for x in r.stderr.splitlines() if x.startswith("TIME")][-1].split()
                res[v].append((float(f[2]), int(f[1]) / 1024, float(f[3]) + float(f[4])))
                shutil.rmtree(scratch / "d")
        for v, xs in res.items():
            print(f"{v}: wall {statistics.median(x[0] for x in xs):.2f} s "
                  f"({', '.join(f'{x[0]:.2f}' for x in xs)}), peak RSS "
                  f"{max(x[1] for x in xs):.0f} MiB, CPU {statistics.median(x[2] for x in xs):.2f} s")


if __name__ == "__main__":
    main()
