"""The CLI's start-up with its collector pause (cli/main.py) and without it, interleaved: a
1 KiB `ckptlake pull` from SeaweedFS, run as `python -c "...main()"`, "before" with `gc.disable`
patched to a no-op (the collector on throughout, as before the pause).

    python3 bench/startup_gc_ab.py [REPS=21]
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from server import scratch_server
from startup_bench import scrubbed_env

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv/bin/python")
MAIN = "from ckptlake.cli.main import main; main()"
VARIANTS = {"before (collector on)": f"import gc; gc.disable = lambda: None; {MAIN}",
            "after (paused until the lake is open)": MAIN}


def main() -> None:
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 21
    with scratch_server(ROOT, "startgc-", "startgc") as (scratch, weed):
        env = scrubbed_env(weed.endpoint, scratch)
        (scratch / "f").write_bytes(os.urandom(1024))
        lake = "s3://startgc/lake"
        subprocess.run([str(ROOT / ".venv/bin/ckptlake"), "push", str(scratch / "f"), "demo/a",
                        "--lake", lake, "--quiet"], env=env, check=True)
        res: dict[str, list[float]] = {k: [] for k in VARIANTS}
        for rep in range(reps):
            for name, code in VARIANTS.items():
                dest = scratch / f"d{rep}"
                t = time.perf_counter()
                r = subprocess.run([PY, "-c", code, "pull", "demo/a", str(dest), "--lake", lake],
                                   env=env, capture_output=True)
                res[name].append(time.perf_counter() - t)
                if r.returncode != 0:
                    sys.exit(r.stderr.decode())
                if dest.is_dir():
                    shutil.rmtree(dest)
                else:
                    dest.unlink()
        for name, xs in res.items():
            print(f"{name}: median {statistics.median(xs):.3f} s, min {min(xs):.3f} s")


if __name__ == "__main__":
    main()
